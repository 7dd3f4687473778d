/* SPDX-License-Identifier: MIT */
/*
 * test_crypto.c - the crypto layer (format/crypto/): PBKDF2 on RFC 6070's vectors, the AF
 * splitter (round trip, and a merge against a vector computed with hashlib alone:
 * tests/unit/data/afsplit_vector.py), LUKS headers made by qemu-img (decoded, unlocked with the
 * right passphrase, refused with a wrong one, a cluster written by qemu-io decrypted by its
 * host offset), legacy AES by the guest offset, hostile headers refused, key files, and many
 * threads decrypting with one key at once. Images are made in a mkdtemp() directory; without
 * qemu-img those tests are skipped (a failure under CI=true).
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/crypto.h"

static char dir[64];

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/qcowfs-crypto-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(crypto, .init = setup, .fini = teardown);

static void unhex(const char *hex, uint8_t *out, size_t n)
{
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(sscanf(hex + 2 * i, "%2hhx", &out[i]), 1);
}

/* ---- PBKDF2: RFC 6070 (HMAC-SHA1) ---- */

struct pbkdf2_case {
	char pass[32];
	size_t pass_len;
	char salt[40];
	size_t salt_len;
	uint32_t iterations;
	char want[64];
};

ParameterizedTestParameters(crypto, pbkdf2_rfc6070)
{
	static struct pbkdf2_case cases[] = {
	    {"password", 8, "salt", 4, 1, "0c60c80f961f0e71f3a9b524af6012062fe037a6"},
	    {"password", 8, "salt", 4, 2, "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957"},
	    {"password", 8, "salt", 4, 4096, "4b007901b765489abead49d926f721d065a429c1"},
	    {"passwordPASSWORDpassword", 24, "saltSALTsaltSALTsaltSALTsaltSALTsalt", 36, 4096,
	     "3d2eec4fe41c849b80c8d83662c0e44a8b291a964cf2f07038"},
	    {"pass\0word", 9, "sa\0lt", 5, 4096, "56fa6aa75548099dcc37d7f03425e0c3"},
	};
	return cr_make_param_array(struct pbkdf2_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct pbkdf2_case *c, crypto, pbkdf2_rfc6070)
{
	uint8_t want[32], got[32];
	size_t n = strlen(c->want) / 2;

	unhex(c->want, want, n);
	cr_assert_eq(qcow2_pbkdf2("sha1", c->pass, c->pass_len, (const uint8_t *)c->salt,
				  c->salt_len, c->iterations, got, n),
		     0, "%s", qcow2_last_error());
	cr_assert_arr_eq(got, want, n);
}

Test(crypto, pbkdf2_refuses_zero_iterations_and_unknown_hashes)
{
	uint8_t out[20];

	cr_assert_eq(qcow2_pbkdf2("sha1", "p", 1, (const uint8_t *)"s", 1, 0, out, 20), -EINVAL);
	cr_assert_eq(qcow2_pbkdf2("nohash", "p", 1, (const uint8_t *)"s", 1, 1, out, 20), -ENOTSUP);
}

/* ---- the AF splitter ---- */

Test(crypto, afsplit_then_merge_gives_the_key_back)
{
	static const char *const hashes[] = {"sha256", "sha1", "sha512"};
	uint8_t key[64], back[64], *split = malloc(64 * QCOW2_LUKS_STRIPES);

	for (int i = 0; i < 64; i++)
		key[i] = (uint8_t)(i * 13 + 1);
	for (size_t h = 0; h < 3; h++) {
		memset(back, 0, sizeof(back));
		cr_assert_eq(qcow2_afsplit(hashes[h], 64, QCOW2_LUKS_STRIPES, key, split), 0);
		/* the last stripe is not the key itself */
		cr_assert_arr_neq(split + 64 * (QCOW2_LUKS_STRIPES - 1), key, 64);
		cr_assert_eq(qcow2_afmerge(hashes[h], 64, QCOW2_LUKS_STRIPES, split, back), 0);
		cr_assert_arr_eq(back, key, 64, "%s", hashes[h]);
	}
	free(split);
}

Test(crypto, afmerge_matches_an_independent_vector)
{
	/* tests/unit/data/afsplit_vector.py: 3 stripes of 40 bytes (a digest and a part) */
	static const char *const want[][2] = {
	    {"sha256", "8a4eb0cf11f4c942ca2d2b262902ae512df55813bf0c67c538d726ccc0120354385c7de83e"
		       "4b7498"},
	    {"sha1", "b95b6eb4617a89e58e4b360bcfe0ee144b19d4f9087b98061c9aaaf839c6a0316efb56c2"
		     "77dbfbc7"},
	};
	uint8_t stripes[3 * 40], key[40], exp[40];

	for (int i = 0; i < 3 * 40; i++)
		stripes[i] = (uint8_t)(i * 7 + 3);
	for (int h = 0; h < 2; h++) {
		unhex(want[h][1], exp, sizeof(exp));
		cr_assert_eq(qcow2_afmerge(want[h][0], 40, 3, stripes, key), 0);
		cr_assert_arr_eq(key, exp, sizeof(exp), "%s", want[h][0]);
	}
}

/* ---- images made by qemu-img ---- */

static bool have_qemu(void)
{
	if (system("command -v qemu-img >/dev/null && command -v qemu-io >/dev/null") == 0)
		return true;
	if (getenv("CI") && strcmp(getenv("CI"), "true") == 0)
		cr_assert_fail("qemu-img and qemu-io are needed under CI");
	return false;
}

static void run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void run(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	cr_assert_eq(system(cmd), 0, "%s", cmd);
}

static const char pass[] = "correct horse";

/* An image made by qemu-img with @opts (encrypt.*, without the prefix) and @fmt, its first
 * 64 KiB written with 0x5a by qemu-io; opened in @io with its header in @h. */
static void make_image(const char *fmt, const char *opts, struct qcow2_io **io,
		       struct qcow2_header *h)
{
	char img[128], key[128];
	FILE *f;

	snprintf(img, sizeof(img), "%s/img.qcow2", dir);
	snprintf(key, sizeof(key), "%s/key", dir);
	f = fopen(key, "w");
	cr_assert_not_null(f);
	fputs(pass, f);
	fclose(f);
	/* QEMU 7.2 measures PBKDF2 by thread CPU time and gives up ("Unable to get accurate CPU
	 * usage") when a busy machine's clock tick saw none: try again a few times */
	char cmd[1024];
	snprintf(cmd, sizeof(cmd),
		 "qemu-img create -q -f qcow2 --object secret,id=s,file=%s -o "
		 "encrypt.format=%s,encrypt.key-secret=s%s %s 1M 2>/dev/null",
		 key, fmt, opts, img);
	for (int tries = 0; system(cmd) != 0; tries++)
		cr_assert_lt(tries, 30, "%s", cmd);
	run("qemu-io --object secret,id=s,file=%s --image-opts "
	    "driver=qcow2,file.filename=%s,encrypt.key-secret=s -c 'write -P 0x5a 0 64k' "
	    ">/dev/null",
	    key, img);
	cr_assert_eq(qcow2_io_open_file(img, false, io), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_header_read(*io, h), 0, "%s", qcow2_last_error());
}

/* The host offset of guest cluster 0 (read from the tables: the test's own parse). */
static uint64_t host_of_cluster0(struct qcow2_io *io, const struct qcow2_header *h)
{
	uint8_t e[8];

	cr_assert_eq(qcow2_io_pread_full(io, e, 8, h->l1_off), 0);
	cr_assert_eq(qcow2_io_pread_full(io, e, 8, get_be64(e) & 0x00fffffffffffe00ull), 0);
	return get_be64(e) & 0x00fffffffffffe00ull;
}

static void expect_cluster0(struct qcow2_io *io, const struct qcow2_header *h,
			    const struct qcow2_crypt *c, uint64_t iv_off)
{
	size_t n = 1u << h->cluster_bits;
	uint8_t *buf = malloc(n), *want = malloc(n);
	uint64_t host = host_of_cluster0(io, h);

	memset(want, 0x5a, n);
	cr_assert_eq(qcow2_io_pread_full(io, buf, n, host), 0);
	cr_assert_arr_neq(buf, want, n, "the cluster is stored in clear");
	cr_assert_eq(qcow2_crypt_decrypt(c, iv_off == UINT64_MAX ? host : iv_off, buf, n), 0, "%s",
		     qcow2_last_error());
	cr_assert_arr_eq(buf, want, n);
	free(buf);
	free(want);
}

struct luks_case {
	char opts[160];
	char cipher_alg[16], mode[8], ivgen[8], ivhash[8], hash[12];
	uint32_t key_bytes;
};

ParameterizedTestParameters(crypto, qemu_luks_images)
{
	/* Few, since each create measures PBKDF2 for a second or more of CPU. A slow hash with
	 * cbc: QEMU 7.2's measurement gives up when the first pass is too fast to see. */
	static struct luks_case cases[] = {
	    {"", "aes-256", "xts", "plain64", "", "sha256", 64},
	    {",encrypt.cipher-alg=aes-256,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,"
	     "encrypt.hash-alg=sha512",
	     "aes-256", "cbc", "essiv", "sha256", "sha512", 32},
	    {",encrypt.cipher-alg=aes-128,encrypt.cipher-mode=xts,encrypt.ivgen-alg=plain,"
	     "encrypt.hash-alg=sha1",
	     "aes-128", "xts", "plain", "", "sha1", 32},
	};
	return cr_make_param_array(struct luks_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct luks_case *c, crypto, qemu_luks_images, .init = setup, .fini = teardown)
{
	struct qcow2_luks_info info;
	struct qcow2_crypt *crypt = NULL;
	struct qcow2_header h;
	struct qcow2_io *io;
	char opts[256];

	if (!have_qemu())
		cr_skip_test("qemu-img is not installed");
	/* iter-time 100: QEMU 7.2 may fail to measure a shorter one */
	snprintf(opts, sizeof(opts), ",encrypt.iter-time=100%s", c->opts);
	make_image("luks", opts, &io, &h);
	cr_assert_eq(h.crypt_method, QCOW2_CRYPT_LUKS);
	cr_assert_eq(qcow2_luks_read_info(io, &h, &info), 0, "%s", qcow2_last_error());
	cr_assert_str_eq(info.cipher_alg, c->cipher_alg);
	cr_assert_str_eq(info.mode, c->mode);
	cr_assert_str_eq(info.ivgen_alg, c->ivgen);
	cr_assert_str_eq(info.ivgen_hash_alg, c->ivhash);
	cr_assert_str_eq(info.hash_alg, c->hash);
	cr_assert_eq(info.key_bytes, c->key_bytes);
	cr_assert(info.slots[0].active);
	cr_assert_eq(info.slots[0].key_offset_sectors, 8);
	cr_assert_eq(info.slots[0].stripes, QCOW2_LUKS_STRIPES);
	for (int i = 1; i < QCOW2_LUKS_NUM_SLOTS; i++)
		cr_assert_not(info.slots[i].active);
	cr_assert_eq((uint64_t)info.payload_offset_sectors * 512, h.crypto_bytes);

	cr_assert_eq(qcow2_crypt_open(io, &h, "wrong", 5, &crypt), -EKEYREJECTED);
	cr_assert_null(crypt);
	cr_assert(strstr(qcow2_last_error(), "wrong key"), "%s", qcow2_last_error());
	cr_assert_eq(qcow2_crypt_open(io, &h, pass, strlen(pass), &crypt), 0, "%s",
		     qcow2_last_error());
	cr_assert(qcow2_crypt_iv_by_host(crypt));
	/* LUKS in qcow2: the IV comes from the host offset */
	expect_cluster0(io, &h, crypt, UINT64_MAX);
	qcow2_crypt_free(crypt);
	qcow2_io_close(io);
}

Test(crypto, legacy_aes_decrypts_by_the_guest_offset)
{
	struct qcow2_crypt *crypt;
	struct qcow2_header h;
	struct qcow2_io *io;

	if (!have_qemu())
		cr_skip_test("qemu-img is not installed");
	make_image("aes", "", &io, &h);
	cr_assert_eq(h.crypt_method, QCOW2_CRYPT_AES);
	cr_assert_eq(qcow2_crypt_open(io, &h, pass, strlen(pass), &crypt), 0, "%s",
		     qcow2_last_error());
	cr_assert(qcow2_crypt_is_legacy(crypt));
	cr_assert_not(qcow2_crypt_iv_by_host(crypt));
	expect_cluster0(io, &h, crypt, 0);
	qcow2_crypt_free(crypt);
	qcow2_io_close(io);
}

/* ---- hostile headers ---- */

/* A valid header in @area (@len bytes): aes-256 xts-plain64 sha256, slot 0 active. */
static void good_header(uint8_t *area, size_t len)
{
	struct qcow2_luks_info in = {0};

	memset(area, 0, len);
	strcpy(in.cipher_name, "aes");
	strcpy(in.cipher_mode, "xts-plain64");
	strcpy(in.hash_spec, "sha256");
	in.key_bytes = 64;
	in.mk_iterations = 1000;
	in.payload_offset_sectors = (uint32_t)(len / 512);
	strcpy(in.uuid, "00000000-0000-0000-0000-000000000000");
	for (int i = 0; i < QCOW2_LUKS_NUM_SLOTS; i++) {
		in.slots[i].stripes = QCOW2_LUKS_STRIPES;
		in.slots[i].key_offset_sectors = 8 + 504 * i;
	}
	in.slots[0].active = true;
	in.slots[0].iterations = 1000;
	qcow2_luks_encode(&in, area);
}

struct bad_case {
	uint32_t off, width;
	uint64_t value;
	int want;
	char text[48];
};

ParameterizedTestParameters(crypto, hostile_headers_are_refused)
{
	static struct bad_case cases[] = {
	    {0, 1, 'X', -EINVAL, "not LUKS"},
	    {6, 2, 2, -ENOTSUP, "version 2"},
	    {8, 8, 0x6161616161616161ull, 0, ""}, /* placeholder replaced below */
	    {108, 4, 0, -EUCLEAN, "master key of 0 bytes"},
	    {108, 4, 128, -EUCLEAN, "master key of 128 bytes"},
	    {108, 4, 48, -ENOTSUP, "not supported"}, /* aes with 24-byte xts halves: fine... */
	    {164, 4, 0, -EUCLEAN, "0 master key iterations"},
	    {164, 4, 0xffffffff, -EUCLEAN, "master key iterations"},
	    {208, 4, 0x12345678, -EUCLEAN, "bad state"},
	    {212, 4, 0, -EUCLEAN, "0 iterations"},
	    {248, 4, 1, -EUCLEAN, "outside the crypto header"},
	    {248, 4, 0x7fffffff, -EUCLEAN, "outside the crypto header"},
	    {252, 4, 4001, -EUCLEAN, "stripes"},
	    {252, 4, 0xffffffff, -EUCLEAN, "stripes"},
	};
	return cr_make_param_array(struct bad_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct bad_case *c, crypto, hostile_headers_are_refused, .init = setup,
		  .fini = teardown)
{
	size_t len = 4096 + 8 * 258048;
	uint8_t *area = malloc(len);
	struct qcow2_luks_info info;

	good_header(area, len);
	cr_assert_eq(qcow2_luks_decode(area, len, &info), 0, "%s", qcow2_last_error());
	if (c->off == 8) { /* a name without its NUL */
		memset(area + 8, 'a', 32);
		cr_assert_eq(qcow2_luks_decode(area, len, &info), -EUCLEAN);
		cr_assert(strstr(qcow2_last_error(), "NUL"));
		free(area);
		return;
	}
	for (uint32_t i = 0; i < c->width; i++)
		area[c->off + i] = (uint8_t)(c->value >> (8 * (c->width - 1 - i)));
	if (c->off == 108 && c->value == 48) {
		/* aes-192 in xts: QEMU writes it; decodes (OpenSSL lacks it: refused at unlock) */
		cr_assert_eq(qcow2_luks_decode(area, len, &info), 0, "%s", qcow2_last_error());
		cr_assert_str_eq(info.cipher_alg, "aes-192");
		free(area);
		return;
	}
	cr_assert_eq(qcow2_luks_decode(area, len, &info), c->want, "%s", qcow2_last_error());
	cr_assert(strstr(qcow2_last_error(), c->text), "%s", qcow2_last_error());
	free(area);
}

Test(crypto, hostile_names_and_layouts_are_refused)
{
	size_t len = 4096 + 8 * 258048;
	uint8_t *area = malloc(len);
	struct qcow2_luks_info info;

	good_header(area, len);
	/* a short area: slot 0's key material would run past it */
	cr_assert_eq(qcow2_luks_decode(area, 4096 + 1000, &info), -EUCLEAN);
	cr_assert_eq(qcow2_luks_decode(area, 100, &info), -EUCLEAN);
	/* two active slots over the same key material */
	put_be32(area + 208 + 48, QCOW2_LUKS_SLOT_ACTIVE);
	put_be32(area + 208 + 48 + 4, 1000);
	put_be32(area + 208 + 48 + 40, 100);
	cr_assert_eq(qcow2_luks_decode(area, len, &info), -EUCLEAN);
	cr_assert(strstr(qcow2_last_error(), "overlap"), "%s", qcow2_last_error());
	good_header(area, len);
	/* key material inside the phdr */
	put_be32(area + 208 + 40, 1);
	cr_assert_eq(qcow2_luks_decode(area, len, &info), -EUCLEAN);
	good_header(area, len);
	memcpy(area + 8, "des\0", 4);
	cr_assert_eq(qcow2_luks_decode(area, len, &info), -ENOTSUP);
	good_header(area, len);
	memcpy(area + 40, "xts\0", 4); /* no IV generator */
	cr_assert_eq(qcow2_luks_decode(area, len, &info), -ENOTSUP);
	good_header(area, len);
	memcpy(area + 40, "cbc-essiv\0", 10); /* essiv without its hash */
	cr_assert_eq(qcow2_luks_decode(area, len, &info), -EUCLEAN);
	good_header(area, len);
	memcpy(area + 72, "crc32\0", 6);
	cr_assert_eq(qcow2_luks_decode(area, len, &info), -ENOTSUP);
	free(area);
}

Test(crypto, twofish_is_refused_naming_the_cipher)
{
	struct qcow2_crypt *c;
	uint8_t key[64] = {1};

	/* OpenSSL 3 offers no twofish: one line naming it (were it offered, it would work) */
	if (qcow2_crypt_new("twofish", "xts-plain64", key, 64, &c) == 0) {
		qcow2_crypt_free(c);
		return;
	}
	cr_assert(strstr(qcow2_last_error(), "twofish"), "%s", qcow2_last_error());
}

/* ---- many threads, one key ---- */

struct worker {
	const struct qcow2_crypt *c;
	const uint8_t *cipher;
	int ok;
};

static void *decrypt_many(void *arg)
{
	struct worker *w = arg;
	uint8_t buf[8192];

	w->ok = 1;
	for (int round = 0; round < 200; round++) {
		memcpy(buf, w->cipher, sizeof(buf));
		if (qcow2_crypt_decrypt(w->c, 1 << 20, buf, sizeof(buf)) < 0)
			w->ok = 0;
		for (size_t i = 0; i < sizeof(buf); i++)
			if (buf[i] != (uint8_t)(i * 31))
				w->ok = 0;
	}
	return NULL;
}

Test(crypto, many_threads_decrypt_with_one_key)
{
	static const char *const modes[] = {"xts-plain64", "cbc-essiv:sha256", "cbc-plain"};
	uint8_t key[64], plain[8192], cipher[8192];
	pthread_t t[8];
	struct worker w[8];

	for (int i = 0; i < 64; i++)
		key[i] = (uint8_t)(i * 5 + 7);
	for (size_t i = 0; i < sizeof(plain); i++)
		plain[i] = (uint8_t)(i * 31);
	for (int m = 0; m < 3; m++) {
		struct qcow2_crypt *c;

		cr_assert_eq(qcow2_crypt_new("aes", modes[m], key, m ? 32 : 64, &c), 0, "%s",
			     qcow2_last_error());
		memcpy(cipher, plain, sizeof(plain));
		cr_assert_eq(qcow2_crypt_encrypt(c, 1 << 20, cipher, sizeof(cipher)), 0);
		cr_assert_arr_neq(cipher, plain, sizeof(plain));
		/* sectors differ: the IV changes per sector */
		cr_assert_arr_neq(cipher, cipher + 512, 512);
		for (int i = 0; i < 8; i++) {
			w[i] = (struct worker){c, cipher, 0};
			pthread_create(&t[i], NULL, decrypt_many, &w[i]);
		}
		for (int i = 0; i < 8; i++) {
			pthread_join(t[i], NULL);
			cr_assert(w[i].ok, "%s: thread %d", modes[m], i);
		}
		cr_assert_eq(qcow2_crypt_decrypt(c, 1 << 20, cipher, 100), -EINVAL);
		qcow2_crypt_free(c);
	}
}

/* ---- key files ---- */

Test(crypto, key_files_are_read_whole_and_bad_ones_refused)
{
	struct qcow2_key k;
	char path[128];
	int fd;

	snprintf(path, sizeof(path), "%s/k", dir);
	fd = open(path, O_CREAT | O_WRONLY, 0600);
	cr_assert_eq(write(fd, "secret\n", 7), 7); /* the newline is part of it, as in QEMU */
	close(fd);
	cr_assert_eq(qcow2_key_file_read(path, &k), 0, "%s", qcow2_last_error());
	cr_assert_eq(k.len, 7);
	cr_assert_eq(memcmp(k.bytes, "secret\n", 7), 0);
	qcow2_key_release(&k);
	cr_assert_null(k.bytes);

	cr_assert_eq(truncate(path, 0), 0);
	cr_assert_eq(qcow2_key_file_read(path, &k), -EINVAL);
	cr_assert(strstr(qcow2_last_error(), "empty"));
	cr_assert(strstr(qcow2_last_error(), path));
	cr_assert_eq(qcow2_key_file_read(dir, &k), -EISDIR);
	snprintf(path, sizeof(path), "%s/missing", dir);
	cr_assert_eq(qcow2_key_file_read(path, &k), -ENOENT);
	snprintf(path, sizeof(path), "%s/fifo", dir);
	cr_assert_eq(mkfifo(path, 0600), 0);
	cr_assert_eq(qcow2_key_file_read(path, &k), -EINVAL); /* refused at once, not blocked */
	snprintf(path, sizeof(path), "%s/big", dir);
	fd = open(path, O_CREAT | O_WRONLY, 0600);
	cr_assert_eq(ftruncate(fd, QCOW2_MAX_KEY_FILE_BYTES + 1), 0);
	close(fd);
	cr_assert_eq(qcow2_key_file_read(path, &k), -EFBIG);
}

/* ---- new headers ---- */

Test(crypto, a_built_header_decodes_and_unlocks_to_the_same_key)
{
	static const char *const modes[][3] = {{"aes-256", "xts", "plain64"},
					       {"aes-128", "cbc", "essiv"},
					       {"aes-256", "ecb", "plain"}};
	struct qcow2_luks_params p;

	for (int m = 0; m < 3; m++) {
		struct qcow2_crypt *made, *opened;
		struct qcow2_luks_info info;
		uint8_t *area, a[4096], b[4096];
		size_t len;

		qcow2_luks_params_default(&p);
		p.cipher_alg = modes[m][0];
		p.cipher_mode = modes[m][1];
		p.ivgen_alg = modes[m][2];
		p.iter_time_ms = 1;
		cr_assert_eq(qcow2_luks_build(&p, pass, strlen(pass), &area, &len, &made), 0, "%s",
			     qcow2_last_error());
		cr_assert_eq(qcow2_luks_decode(area, len, &info), 0, "%s", qcow2_last_error());
		cr_assert_str_eq(info.cipher_alg, modes[m][0]);
		cr_assert_str_eq(info.mode, modes[m][1]);
		cr_assert_str_eq(info.ivgen_alg, modes[m][2]);
		cr_assert_eq(info.mk_iterations, 1000); /* the minimum */
		cr_assert_geq(info.slots[0].iterations, 1000);
		cr_assert_eq((uint64_t)info.payload_offset_sectors * 512, len);
		cr_assert_eq(qcow2_luks_unlock(&info, area, len, "nope", 4, &opened),
			     -EKEYREJECTED);
		cr_assert_eq(qcow2_luks_unlock(&info, area, len, pass, strlen(pass), &opened), 0,
			     "%s", qcow2_last_error());
		for (size_t i = 0; i < sizeof(a); i++)
			a[i] = (uint8_t)i;
		memcpy(b, a, sizeof(a));
		cr_assert_eq(qcow2_crypt_encrypt(made, 65536, b, sizeof(b)), 0);
		cr_assert_eq(qcow2_crypt_decrypt(opened, 65536, b, sizeof(b)), 0);
		cr_assert_arr_eq(a, b, sizeof(a));
		qcow2_crypt_free(made);
		qcow2_crypt_free(opened);
		qcow2_secure_free(area, len);
	}
}

/* An unlock repeated with the same header and passphrase (the daemon opens an image when it
 * first sees it and at each open of its view) runs no PBKDF2 again, right or wrong; a header
 * changed in any byte is unlocked afresh. */
Test(crypto, a_repeated_unlock_is_remembered_and_a_changed_header_is_not)
{
	struct qcow2_luks_params p;
	struct qcow2_crypt *made, *opened;
	struct qcow2_luks_info info;
	uint8_t *area;
	unsigned long tries;
	size_t len;

	qcow2_luks_params_default(&p);
	p.iter_time_ms = 1;
	cr_assert_eq(qcow2_luks_build(&p, pass, strlen(pass), &area, &len, &made), 0, "%s",
		     qcow2_last_error());
	qcow2_crypt_free(made);
	cr_assert_eq(qcow2_luks_decode(area, len, &info), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_luks_unlock(&info, area, len, pass, strlen(pass), &opened), 0);
	qcow2_crypt_free(opened);
	cr_assert_eq(qcow2_luks_unlock(&info, area, len, "nope", 4, &opened), -EKEYREJECTED);
	tries = qcow2_luks_slot_tries();
	cr_assert_eq(qcow2_luks_unlock(&info, area, len, pass, strlen(pass), &opened), 0);
	qcow2_crypt_free(opened);
	cr_assert_eq(qcow2_luks_unlock(&info, area, len, "nope", 4, &opened), -EKEYREJECTED);
	cr_assert_eq(qcow2_luks_slot_tries(), tries, "PBKDF2 ran again for a known unlock");
	/* slot 0's key material damaged: the passphrase no longer opens it */
	area[(size_t)info.slots[0].key_offset_sectors * 512] ^= 1;
	cr_assert_eq(qcow2_luks_unlock(&info, area, len, pass, strlen(pass), &opened),
		     -EKEYREJECTED);
	cr_assert_gt(qcow2_luks_slot_tries(), tries);
	qcow2_secure_free(area, len);
}

Test(crypto, bad_create_parameters_are_refused)
{
	struct qcow2_luks_params p;

	qcow2_luks_params_default(&p);
	p.cipher_alg = "des";
	cr_assert_eq(qcow2_luks_params_check(&p), -EINVAL);
	qcow2_luks_params_default(&p);
	p.cipher_alg = "aes-192";
	p.cipher_mode = "cbc"; /* 96000 bytes of key material: QEMU aborts on it */
	cr_assert_eq(qcow2_luks_params_check(&p), -EINVAL);
	qcow2_luks_params_default(&p);
	p.hash_alg = "crc";
	cr_assert_eq(qcow2_luks_params_check(&p), -EINVAL);
	qcow2_luks_params_default(&p);
	p.ivgen_alg = "benbi";
	cr_assert_eq(qcow2_luks_params_check(&p), -EINVAL);
}

/* plain IVs are the sector number's low 32 bits (dm-crypt's, QEMU's), plain64 all 64 */
Test(crypto, plain_ivs_wrap_at_2_to_the_32_sectors_and_plain64_ones_do_not)
{
	const uint64_t wrap = 512ull << 32;
	uint8_t key[32], a[1024], b[1024];
	struct qcow2_crypt *plain, *plain64;

	for (int i = 0; i < 32; i++)
		key[i] = (uint8_t)(200 - i);
	cr_assert_eq(qcow2_crypt_new("aes", "cbc-plain", key, 32, &plain), 0);
	cr_assert_eq(qcow2_crypt_new("aes", "cbc-plain64", key, 32, &plain64), 0);
	memset(a, 0x42, sizeof(a));
	memcpy(b, a, sizeof(a));
	cr_assert_eq(qcow2_crypt_encrypt(plain, 512, a, sizeof(a)), 0);
	cr_assert_eq(qcow2_crypt_encrypt(plain, wrap + 512, b, sizeof(b)), 0);
	cr_assert_arr_eq(a, b, sizeof(a));
	memset(a, 0x42, sizeof(a));
	memcpy(b, a, sizeof(a));
	cr_assert_eq(qcow2_crypt_encrypt(plain64, 512, a, sizeof(a)), 0);
	cr_assert_eq(qcow2_crypt_encrypt(plain64, wrap + 512, b, sizeof(b)), 0);
	cr_assert_arr_neq(a, b, sizeof(a));
	/* below 2^32 sectors the two agree */
	memset(b, 0x42, sizeof(b));
	cr_assert_eq(qcow2_crypt_encrypt(plain, 512, b, sizeof(b)), 0);
	cr_assert_arr_eq(a, b, sizeof(a));
	qcow2_crypt_free(plain);
	qcow2_crypt_free(plain64);
}

/* legacy AES: the key is the passphrase's first 16 bytes, zero padded; a NUL ends it */
Test(crypto, legacy_aes_keys_are_the_first_16_bytes_of_the_passphrase)
{
	struct qcow2_crypt *a, *b, *c;
	uint8_t x[512], y[512], z[512];

	cr_assert_eq(qcow2_aes_legacy_open("0123456789abcdefXYZ", 19, &a), 0);
	cr_assert_eq(qcow2_aes_legacy_open("0123456789abcdef", 16, &b), 0);
	cr_assert_eq(qcow2_aes_legacy_open("short\0ignored", 13, &c), 0);
	memset(x, 1, sizeof(x));
	memset(y, 1, sizeof(y));
	memset(z, 1, sizeof(z));
	cr_assert_eq(qcow2_crypt_encrypt(a, 0, x, sizeof(x)), 0);
	cr_assert_eq(qcow2_crypt_encrypt(b, 0, y, sizeof(y)), 0);
	cr_assert_arr_eq(x, y, sizeof(x));
	cr_assert_eq(qcow2_crypt_encrypt(c, 0, z, sizeof(z)), 0);
	qcow2_crypt_free(c);
	cr_assert_eq(qcow2_aes_legacy_open("short", 5, &c), 0);
	memset(y, 1, sizeof(y));
	cr_assert_eq(qcow2_crypt_encrypt(c, 0, y, sizeof(y)), 0);
	cr_assert_arr_eq(z, y, sizeof(z));
	qcow2_crypt_free(a);
	qcow2_crypt_free(b);
	qcow2_crypt_free(c);
}
