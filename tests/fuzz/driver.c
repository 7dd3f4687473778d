/* SPDX-License-Identifier: MIT */
/*
 * driver.c - a standalone main() for a fuzz target, for compilers without libFuzzer.
 *
 *   fuzz_X                   run the built-in seeds, then deterministic mutations of them
 *                            (xorshift, fixed seed) until FUZZ_ITERATIONS (default 20000) or
 *                            FUZZ_SECONDS (default 20) runs out
 *   fuzz_X FILE|DIR...       run each file (each file of each directory) once, as libFuzzer
 *                            does when given crash files
 *   fuzz_X --write-seeds DIR write the built-in seeds to DIR (the libFuzzer corpus)
 *
 * FUZZ_TARGET (a string) names the target's seeds; it is set by meson.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fuzz.h"
#include "imgbuild.h"

#ifndef FUZZ_TARGET
#error "FUZZ_TARGET must name the target"
#endif

#define FUZZ_MAX_INPUT (4u << 20)

static int run_file(const char *path)
{
	struct stat st;
	uint8_t *buf;
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		fprintf(stderr, "fuzz: cannot open '%s': %s\n", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return 1;
	}
	buf = malloc(st.st_size ? (size_t)st.st_size : 1);
	if (!buf) {
		close(fd);
		return 1;
	}
	n = read(fd, buf, (size_t)st.st_size);
	close(fd);
	if (n < 0) {
		free(buf);
		return 1;
	}
	LLVMFuzzerTestOneInput(buf, (size_t)n);
	free(buf);
	return 0;
}

static int run_path(const char *path)
{
	struct dirent *d;
	struct stat st;
	char sub[4096];
	int bad = 0;
	DIR *dir;

	if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode))
		return run_file(path);
	dir = opendir(path);
	if (!dir)
		return 1;
	while ((d = readdir(dir))) {
		if (d->d_name[0] == '.')
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", path, d->d_name);
		bad |= run_file(sub);
	}
	closedir(dir);
	return bad;
}

static int write_seeds(const char *dir)
{
	struct fuzz_input *seeds;
	size_t n = fuzz_make_seeds(FUZZ_TARGET, &seeds), i;
	char path[4096];
	int bad = 0;

	for (i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "%s/seed-%03zu", dir, i);
		if (imgbuild_write_file(path, seeds[i].bytes, seeds[i].len) < 0) {
			fprintf(stderr, "fuzz: cannot write '%s'\n", path);
			bad = 1;
		}
	}
	fuzz_free_seeds(seeds, n);
	return bad;
}

/* Values that tend to sit on the edge of a check. */
static const uint64_t interesting[] = {
    0,
    1,
    2,
    7,
    8,
    9,
    16,
    21,
    22,
    63,
    64,
    72,
    104,
    112,
    255,
    256,
    511,
    512,
    513,
    4096,
    65535,
    65536,
    65537,
    0x7fffffff,
    0x80000000,
    0xffffffff,
    1ull << 32,
    1ull << 56,
    (1ull << 56) + 1,
    1ull << 62,
    1ull << 63,
    0x7fffffffffffffffull,
    UINT64_MAX,
};
#define N_INTERESTING (sizeof(interesting) / sizeof(interesting[0]))

static void put_be(uint8_t *p, uint64_t v, unsigned bytes)
{
	unsigned i;

	for (i = 0; i < bytes; i++)
		p[i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
}

/* Apply one random mutation to @buf (@*len bytes, room for FUZZ_MAX_INPUT). */
static void mutate(uint8_t *buf, size_t *len, uint64_t *st)
{
	size_t n = *len, off, k;
	uint64_t r = imgbuild_rand(st);

	if (n == 0) {
		buf[0] = (uint8_t)r;
		*len = 1;
		return;
	}
	off = (size_t)(imgbuild_rand(st) % n);
	switch (r % 8) {
	case 0: /* flip a bit */
		buf[off] ^= (uint8_t)(1u << (r >> 8) % 8);
		break;
	case 1: /* a random byte */
		buf[off] = (uint8_t)(r >> 16);
		break;
	case 2: /* an interesting value in a header field (they are 4 or 8 bytes, aligned) */
		off = (size_t)(imgbuild_rand(st) % 14) * 8;
		if (off + 8 <= n)
			put_be(buf + off + ((r >> 8) & 4), interesting[(r >> 16) % N_INTERESTING],
			       ((r >> 12) & 1) ? 8 : 4);
		break;
	case 3: /* an interesting value anywhere, aligned as tables are */
		off &= ~(size_t)7;
		if (off + 8 <= n)
			put_be(buf + off,
			       interesting[(r >> 16) % N_INTERESTING] | (r >> 40 & 1) << 63, 8);
		break;
	case 4: /* truncate */
		*len = off;
		break;
	case 5: /* zero a range */
		k = (size_t)((r >> 8) % 512);
		memset(buf + off, 0, k < n - off ? k : n - off);
		break;
	case 6: /* copy a range over another (moves table entries around) */
		k = (size_t)((r >> 8) % 256);
		if (k < n && off + k <= n) {
			size_t from = (size_t)(imgbuild_rand(st) % (n - k + 1));
			memmove(buf + off, buf + from, k);
		}
		break;
	default: /* grow with random bytes */
		k = (size_t)((r >> 8) % 1024);
		if (n + k <= FUZZ_MAX_INPUT) {
			size_t i;
			for (i = 0; i < k; i++)
				buf[n + i] = (uint8_t)imgbuild_rand(st);
			*len = n + k;
		}
		break;
	}
}

static unsigned long env_ulong(const char *name, unsigned long dflt)
{
	const char *v = getenv(name);

	return v && *v ? strtoul(v, NULL, 10) : dflt;
}

static int run_mutations(void)
{
	unsigned long iterations = env_ulong("FUZZ_ITERATIONS", 20000);
	unsigned long seconds = env_ulong("FUZZ_SECONDS", 20);
	struct fuzz_input *seeds;
	size_t n = fuzz_make_seeds(FUZZ_TARGET, &seeds), i, len;
	uint64_t st = 0x5eed5eed12345678ull;
	time_t start = time(NULL);
	uint8_t *buf = malloc(FUZZ_MAX_INPUT);
	unsigned long it;

	if (!buf || n == 0)
		return 1;
	for (i = 0; i < n; i++)
		LLVMFuzzerTestOneInput(seeds[i].bytes, seeds[i].len);
	for (it = 0; it < iterations; it++) {
		const struct fuzz_input *s = &seeds[imgbuild_rand(&st) % n];
		unsigned m, muts = 1 + (unsigned)(imgbuild_rand(&st) % 6);

		len = s->len < FUZZ_MAX_INPUT ? s->len : FUZZ_MAX_INPUT;
		memcpy(buf, s->bytes, len);
		for (m = 0; m < muts; m++)
			mutate(buf, &len, &st);
		LLVMFuzzerTestOneInput(buf, len);
		if (it % 64 == 0 && (unsigned long)(time(NULL) - start) >= seconds)
			break;
	}
	printf("fuzz_%s: %zu seeds, %lu mutations in %ld s\n", FUZZ_TARGET, n, it,
	       (long)(time(NULL) - start));
	free(buf);
	fuzz_free_seeds(seeds, n);
	return 0;
}

int main(int argc, char **argv)
{
	int bad = 0, i;

	if (argc == 3 && strcmp(argv[1], "--write-seeds") == 0)
		return write_seeds(argv[2]);
	if (argc == 1)
		return run_mutations();
	for (i = 1; i < argc; i++)
		bad |= run_path(argv[i]);
	return bad;
}
