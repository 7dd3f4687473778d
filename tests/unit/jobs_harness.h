/* SPDX-License-Identifier: MIT */
/*
 * jobs_harness.h - what the block job suites (test_commit.c, test_pull.c, test_rebase.c,
 * test_copy.c, test_convert.c) share: a model of the files in a mkdtemp() directory, views
 * read back through the public API, consistency checks (ours, and qemu-img's where it is
 * installed), and sweeps that inject a failure (jobs_fault.h) at every step of a job.
 *
 * A sweep (jh_sweep()) runs the job once counting its events of every kind, then, for every
 * kind and every N up to that count, rebuilds the files, runs the job with a crash at the Nth
 * event of that kind (it and every later write, flush and system call fail, so nothing more
 * reaches the files: what a killed process leaves), checks what the test says must hold after
 * a crash, runs the job again with nothing failing and checks the final state. A second pass
 * fails only the Nth write or flush, the job then going on (its error paths, closing). A third
 * crashes at every event again as a power loss would: what the files had not made durable by
 * then (fsync, fdatasync of a file; fsync of the directory for its names) is undone before
 * the checks, so a missing flush between two steps shows too, not only a wrong order.
 *
 * Header-only (each suite is one executable of one source file): every function is static
 * and may go unused.
 */
#ifndef JOBS_HARNESS_H
#define JOBS_HARNESS_H

#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "imgbuild.h"
#include "jobs_fault.h"
#include "qcow2.h"
#include "testutil.h"

extern char **environ;

/* ---- the model: files of the test directory ---- */

#define JH_MAX_FILES 16

struct jh_file {
	char name[64];
	struct imgbuild *img; /* NULL: a raw file */
	uint8_t *raw;
	size_t raw_len;
	char backing[64]; /* the model file below ("": none) */
};

static struct jh_file jh_files[JH_MAX_FILES];
static unsigned jh_n;

JH const char *jh_path(const char *name)
{
	static char bufs[8][PATH_MAX];
	static int next;
	char *p = bufs[next++ % 8];

	snprintf(p, PATH_MAX, "%s/%s", jh_dir, name);
	return p;
}

static int jh_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	return ftw->level > 0 ? remove(path) : 0;
}

/* Empty the test directory (the directory itself stays). */
JH void jh_clear(void)
{
	nftw(jh_dir, jh_rm, 16, FTW_DEPTH | FTW_PHYS);
}

JH void jh_setup(void)
{
	snprintf(jh_dir, sizeof(jh_dir), "/tmp/qcowfs-jobs-XXXXXX");
	snprintf(jh_aux, sizeof(jh_aux), "/tmp/qcowfs-jobs-aux-XXXXXX");
	cr_assert_not_null(mkdtemp(jh_dir));
	cr_assert_not_null(mkdtemp(jh_aux));
	jh_n = 0;
}

JH void jh_teardown(void)
{
	unsigned i;

	jh_disarm();
	jh_fault_release();
	for (i = 0; i < jh_n; i++) {
		imgbuild_free(jh_files[i].img);
		free(jh_files[i].raw);
	}
	jh_n = 0;
	jh_clear();
	rmdir(jh_dir);
	nftw(jh_aux, jh_rm, 16, FTW_DEPTH | FTW_PHYS);
	rmdir(jh_aux);
}

JH struct jh_file *jh_file(const char *name)
{
	unsigned i;

	for (i = 0; i < jh_n; i++)
		if (strcmp(jh_files[i].name, name) == 0)
			return &jh_files[i];
	cr_assert_fail("no model file '%s'", name);
	return NULL;
}

static struct jh_file *jh_add(const char *name, const char *backing)
{
	struct jh_file *f;

	cr_assert_lt(jh_n, JH_MAX_FILES);
	f = &jh_files[jh_n++];
	memset(f, 0, sizeof(*f));
	snprintf(f->name, sizeof(f->name), "%s", name);
	snprintf(f->backing, sizeof(f->backing), "%s", backing ? backing : "");
	return f;
}

/* A qcow2 image of @clusters clusters of 4 KiB named @name in the model, backed by the model
 * file @backing (stored by that name, relative; NULL: none). */
JH struct imgbuild *jh_qcow2(const char *name, unsigned clusters, const char *backing,
			     const char *backing_fmt)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct jh_file *f = jh_add(name, backing);

	o.size = (uint64_t)clusters << 12;
	o.cluster_bits = 12;
	o.backing_file = backing;
	o.backing_fmt = backing_fmt;
	f->img = imgbuild_new(&o);
	return f->img;
}

/* A raw file of @len pseudo-random bytes. */
JH void jh_raw(const char *name, size_t len, uint64_t seed)
{
	struct jh_file *f = jh_add(name, NULL);
	size_t i;

	f->raw = malloc(len ? len : 1);
	cr_assert_not_null(f->raw);
	for (i = 0; i < len; i++)
		f->raw[i] = (uint8_t)(imgbuild_rand(&seed) >> 13);
	f->raw_len = len;
}

/* Data with a recognisable pattern (guest offset and @tag) over clusters [@first, @first + @n)
 * of @img. */
JH void jh_data(struct imgbuild *img, unsigned first, unsigned n, uint8_t tag)
{
	uint8_t *buf = malloc((size_t)n << 12);

	cr_assert_not_null(buf);
	imgbuild_pattern(buf, (size_t)n << 12, (uint64_t)first << 12, tag);
	cr_assert_eq(imgbuild_write(img, (uint64_t)first << 12, buf, (size_t)n << 12), 0);
	free(buf);
}

JH void jh_zero(struct imgbuild *img, unsigned first, unsigned n)
{
	cr_assert_eq(imgbuild_zero(img, (uint64_t)first << 12, (uint64_t)n << 12), 0);
}

/* Write every file of the model into an empty test directory. */
JH void jh_save_all(void)
{
	unsigned i;

	jh_clear();
	for (i = 0; i < jh_n; i++) {
		const struct jh_file *f = &jh_files[i];

		cr_assert_eq(f->img ? imgbuild_save(f->img, jh_path(f->name))
				    : imgbuild_write_file(jh_path(f->name), f->raw, f->raw_len),
			     0, "saving '%s'", f->name);
	}
}

JH uint64_t jh_model_size(const char *name)
{
	const struct jh_file *f = jh_file(name);

	return f->img ? f->img->o.size : f->raw_len;
}

/* The flat view of the model file @name (its size in *@size): malloc'd. */
JH uint8_t *jh_model_view(const char *name, uint64_t *size)
{
	const struct jh_file *f = jh_file(name);
	uint64_t n = jh_model_size(name), bsize;
	uint8_t *out = calloc(1, n ? n : 1), *below = NULL, *b;

	cr_assert_not_null(out);
	if (!f->img) {
		memcpy(out, f->raw, n);
		*size = n;
		return out;
	}
	if (f->backing[0]) {
		b = jh_model_view(f->backing, &bsize);
		below = calloc(1, n ? n : 1);
		cr_assert_not_null(below);
		memcpy(below, b, bsize < n ? bsize : n);
		free(b);
	}
	imgbuild_expect(f->img, -1, 0, (size_t)n, below, out);
	free(below);
	*size = n;
	return out;
}

/* ---- what is on disk ---- */

JH bool jh_exists(const char *name)
{
	struct stat st;

	return lstat(jh_path(name), &st) == 0;
}

/* The flat view of the file @name read through the library (NULL if the file is missing).
 * @when says at which step, in messages. */
JH uint8_t *jh_read_view(const char *name, uint64_t *size, const char *when)
{
	struct qcow2_chain_opts o = {0};
	struct qcow2_chain *c;
	uint8_t *buf;
	int r;

	if (!jh_exists(name))
		return NULL;
	r = qcow2_chain_open(jh_path(name), &o, &c);
	cr_assert_eq(r, 0, "%s: cannot open '%s': %s", when, name, qcow2_last_error());
	*size = qcow2_chain_size(c);
	buf = malloc(*size ? *size : 1);
	cr_assert_not_null(buf);
	r = qcow2_chain_pread(c, buf, (size_t)*size, 0);
	cr_assert_eq(r, 0, "%s: cannot read '%s': %s", when, name, qcow2_last_error());
	qcow2_chain_close(c);
	return buf;
}

static long jh_first_diff(const uint8_t *a, const uint8_t *b, uint64_t n)
{
	uint64_t i;

	for (i = 0; i < n; i++)
		if (a[i] != b[i])
			return (long)i;
	return -1;
}

/* The view of @name reads exactly @want (@size bytes). @when says at which step. */
JH void jh_expect_view(const char *name, const uint8_t *want, uint64_t size, const char *when)
{
	uint64_t got_size = 0;
	uint8_t *got = jh_read_view(name, &got_size, when);
	long d;

	cr_assert_not_null(got, "%s: '%s' is missing", when, name);
	cr_assert_eq(got_size, size, "%s: '%s' has %llu bytes, not %llu", when, name,
		     (unsigned long long)got_size, (unsigned long long)size);
	d = jh_first_diff(got, want, size);
	cr_assert_eq(d, -1, "%s: the view of '%s' differs at byte %ld (%#x, want %#x)", when, name,
		     d, d >= 0 ? got[d] : 0, d >= 0 ? want[d] : 0);
	free(got);
}

/* The view of @name reads, byte by byte, either @old (@old_size) or @new (@new_size) (past
 * either's end: zeros), and its size is one of theirs: a job part way through moving it from
 * the one to the other. */
JH void jh_expect_view_between(const char *name, const uint8_t *old, uint64_t old_size,
			       const uint8_t *new, uint64_t new_size, const char *when)
{
	uint64_t got_size = 0, i;
	uint8_t *got = jh_read_view(name, &got_size, when);

	cr_assert_not_null(got, "%s: '%s' is missing", when, name);
	cr_assert(got_size == old_size || got_size == new_size,
		  "%s: '%s' has %llu bytes, neither %llu nor %llu", when, name,
		  (unsigned long long)got_size, (unsigned long long)old_size,
		  (unsigned long long)new_size);
	for (i = 0; i < got_size; i++) {
		uint8_t o = i < old_size ? old[i] : 0, n = i < new_size ? new[i] : 0;

		cr_assert(got[i] == o || got[i] == n,
			  "%s: byte %llu of '%s' is %#x: neither the old %#x nor the new %#x", when,
			  (unsigned long long)i, name, got[i], o, n);
	}
	free(got);
}

/* The file @name still holds exactly the bytes the model saved. */
JH void jh_expect_unchanged(const char *name, const char *when)
{
	const struct jh_file *f = jh_file(name);
	const uint8_t *want = f->img ? f->img->bytes : f->raw;
	size_t len = f->img ? f->img->len : f->raw_len;
	uint8_t *got = malloc(len + 1);
	ssize_t n;
	int fd = open(jh_path(name), O_RDONLY | O_CLOEXEC);

	cr_assert_geq(fd, 0, "%s: '%s' is missing", when, name);
	cr_assert_not_null(got);
	n = pread(fd, got, len + 1, 0);
	close(fd);
	cr_assert_eq(n, (ssize_t)len, "%s: '%s' changed size", when, name);
	cr_assert_eq(jh_first_diff(got, want, len), -1, "%s: '%s' changed", when, name);
	free(got);
}

/* The qcow2 image @name is consistent by our check: no corruption, no refcount or check
 * error; leaks only if @leaks_ok (what a crash may leave). */
JH void jh_check_image(const char *name, bool leaks_ok, const char *when)
{
	struct qcow2_image_opts io = {0};
	struct qcow2_check_result res;
	struct qcow2_image *img;
	struct qcow2_io *f;
	int r = qcow2_io_open_file(jh_path(name), false, &f);

	cr_assert_eq(r, 0, "%s: cannot open '%s': %s", when, name, qcow2_last_error());
	r = qcow2_image_open(f, name, &io, &img);
	cr_assert_eq(r, 0, "%s: cannot open '%s': %s", when, name, qcow2_last_error());
	r = qcow2_image_check(img, &res);
	cr_assert_eq(r, 0, "%s: check of '%s' failed: %s", when, name, qcow2_last_error());
	cr_assert_eq(res.corruptions, 0, "%s: '%s' has %llu corruptions", when, name,
		     (unsigned long long)res.corruptions);
	cr_assert_eq(res.check_errors, 0, "%s: '%s' has check errors", when, name);
	cr_assert(!res.corrupt, "%s: '%s' is marked corrupt", when, name);
	if (!leaks_ok)
		cr_assert_eq(res.leaks, 0, "%s: '%s' leaks %llu clusters", when, name,
			     (unsigned long long)res.leaks);
	qcow2_image_close(img);
}

/* The header of the qcow2 image @name names @backing ("": none) with format @fmt (NULL: not
 * checked). */
JH void jh_expect_backing(const char *name, const char *backing, const char *fmt, const char *when)
{
	struct qcow2_header h;
	struct qcow2_io *f;
	int r = qcow2_io_open_file(jh_path(name), false, &f);

	cr_assert_eq(r, 0, "%s: cannot open '%s': %s", when, name, qcow2_last_error());
	r = qcow2_header_read(f, &h);
	qcow2_io_close(f);
	cr_assert_eq(r, 0, "%s: cannot read the header of '%s': %s", when, name,
		     qcow2_last_error());
	cr_assert_str_eq(h.backing_file, backing, "%s: '%s' names '%s' as its backing file", when,
			 name, h.backing_file);
	if (fmt)
		cr_assert_str_eq(h.backing_fmt, fmt, "%s: '%s' says its backing file is '%s'", when,
				 name, h.backing_fmt);
}

/* Does the top layer of @name hold any data of its own? */
JH bool jh_has_data(const char *name)
{
	struct qcow2_chain_opts o = {0};
	struct qcow2_chain *c;
	uint64_t off = 0, size;
	bool data = false;

	cr_assert_eq(qcow2_chain_open(jh_path(name), &o, &c), 0, "%s", qcow2_last_error());
	size = qcow2_chain_size(c);
	while (off < size && !data) {
		struct qcow2_extent e;

		cr_assert_eq(qcow2_chain_map(c, off, size - off, &e), 0);
		data = e.layer == 0 &&
		       (e.kind == QCOW2_EXTENT_DATA || e.kind == QCOW2_EXTENT_COMPRESSED);
		off += e.len;
	}
	qcow2_chain_close(c);
	return data;
}

/* The names in the test directory that start with '.' (journals, copies under way), each
 * followed by a newline, in @out. */
JH void jh_hidden(char *out, size_t cap)
{
	DIR *d = opendir(jh_dir);
	struct dirent *e;
	size_t len = 0;

	cr_assert_not_null(d);
	out[0] = 0;
	while ((e = readdir(d)))
		if (e->d_name[0] == '.' && strcmp(e->d_name, ".") != 0 &&
		    strcmp(e->d_name, "..") != 0)
			len += (size_t)snprintf(out + len, cap - len, "%s\n", e->d_name);
	closedir(d);
}

/* ---- qemu-img, the oracle ---- */

/* Run @argv, its output into @out. The exit status, or -1 if it could not be run. */
static int jh_spawn(char *const argv[], char *out, size_t cap)
{
	posix_spawn_file_actions_t fa;
	char scratch[4096];
	int pipefd[2], status = 0;
	size_t len = 0, keep;
	ssize_t n;
	pid_t pid;

	cr_assert_eq(pipe(pipefd), 0);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
	posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2);
	posix_spawn_file_actions_addclose(&fa, pipefd[0]);
	posix_spawn_file_actions_addclose(&fa, pipefd[1]);
	if (posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ) != 0) {
		posix_spawn_file_actions_destroy(&fa);
		close(pipefd[0]);
		close(pipefd[1]);
		return -1;
	}
	posix_spawn_file_actions_destroy(&fa);
	close(pipefd[1]);
	/* read all of it, keeping what fits: a child blocked on a full pipe would never exit */
	for (;;) {
		n = read(pipefd[0], scratch, sizeof(scratch));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		keep = (size_t)n < cap - 1 - len ? (size_t)n : cap - 1 - len;
		memcpy(out + len, scratch, keep);
		len += keep;
	}
	out[len] = 0;
	close(pipefd[0]);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Is qemu-img there? Outside CI its absence skips the checks that need it; under CI it fails
 * the test (the setup must have installed it). */
JH bool jh_have_qemu_img(void)
{
	static int have = -1;
	char out[4096];
	char *argv[] = {"qemu-img", "--version", NULL};

	if (have < 0)
		have = jh_spawn(argv, out, sizeof(out)) == 0;
	if (!have) {
		const char *ci = getenv("CI");

		cr_assert(!ci || strcmp(ci, "true") != 0, "qemu-img is not installed");
		cr_log_warn("qemu-img is not installed: its checks are skipped");
	}
	return have;
}

/* `qemu-img check` finds nothing wrong with the qcow2 image @name. */
JH void jh_qemu_check(const char *name)
{
	char out[8192];
	char *argv[] = {"qemu-img", "check", "-f", "qcow2", (char *)jh_path(name), NULL};

	if (!jh_have_qemu_img())
		return;
	cr_assert_eq(jh_spawn(argv, out, sizeof(out)), 0, "qemu-img check '%s': %s", name, out);
}

/* `qemu-img compare` finds the flat view of @name (format @fmt) equal to @want. */
JH void jh_qemu_compare(const char *name, const char *fmt, const uint8_t *want, uint64_t size)
{
	char raw[PATH_MAX], out[8192];
	char *argv[] = {
	    "qemu-img", "compare", "-f", (char *)fmt, "-F", "raw", (char *)jh_path(name),
	    raw,	NULL};

	if (!jh_have_qemu_img())
		return;
	snprintf(raw, sizeof(raw), "%s/want.raw", jh_aux);
	cr_assert_eq(imgbuild_write_file(raw, want, (size_t)size), 0);
	cr_assert_eq(jh_spawn(argv, out, sizeof(out)), 0, "qemu-img compare '%s': %s", name, out);
}

/* ---- sweeps ---- */

enum jh_state {
	JH_DONE,    /* the job reported success */
	JH_STOPPED, /* the job failed at the injected step (nothing retried yet) */
};

struct jh_job {
	/* Run the job through the public API: 0 or -errno. */
	int (*run)(void);
	/* Check what must hold in @state: @fault says after which failure ("" for a clean
	 * run; leaks are then not allowed). */
	void (*check)(enum jh_state state, const char *fault);
};

static unsigned jh_runs;

static int jh_run_job(const struct jh_job *j)
{
	int r;

	qcow2_clear_error();
	r = j->run();
	jh_runs++;
	return r;
}

/* One run with a failure at the @n-th event of kind @k as @mode says, then a rerun. */
static void jh_inject(const struct jh_job *j, enum jh_kind k, unsigned n, enum jh_mode mode)
{
	char fault[1024];
	int r;

	snprintf(fault, sizeof(fault), "%s at %s %u", jh_mode_names[mode], jh_kind_names[k], n);
	jh_save_all();
	jh_arm(k, n, mode);
	r = jh_run_job(j);
	cr_assert(jh_fired(), "%s: the job no longer reaches it", fault);
	jh_disarm();
	if (mode == JH_POWER)
		jh_power_loss();
	if (r == 0 && mode != JH_POWER) {
		/* only a failure nothing depends on may pass unreported (a flush of frees when an
		 * image is closed): the job must then be complete */
		j->check(JH_DONE, fault);
		return;
	}
	j->check(JH_STOPPED, fault);
	r = jh_run_job(j);
	/* a rerun may refuse only a job that was complete already (its last step done, the
	 * failure in making it durable: a second run of a finished commit --drop finds its top
	 * gone, as after success) */
	if (r < 0)
		snprintf(fault + strlen(fault), sizeof(fault) - strlen(fault),
			 " (and the rerun failed: %s)", qcow2_last_error());
	j->check(JH_DONE, fault);
}

/* Run @j clean (checked, the event counts taken), then crashed at every event of every kind,
 * then failed once at every write and flush, then crashed by a power loss at every event. */
JH void jh_sweep(const struct jh_job *j)
{
	unsigned total[JH_KINDS], k, n, all = 0;
	int r;

	jh_runs = 0;
	jh_save_all();
	jh_arm(JH_WRITE, UINT_MAX, JH_CRASH);
	r = jh_run_job(j);
	for (k = 0; k < JH_KINDS; k++)
		total[k] = jh_seen(k);
	jh_disarm();
	cr_assert_eq(r, 0, "the job failed: %s", qcow2_last_error());
	j->check(JH_DONE, "");
	cr_assert_gt(total[JH_WRITE], 0, "the job wrote nothing");
	for (k = 0; k < JH_KINDS; k++)
		for (n = 1; n <= total[k]; n++)
			jh_inject(j, k, n, JH_CRASH);
	for (k = JH_WRITE; k <= JH_FLUSH; k++)
		for (n = 1; n <= total[k]; n++)
			jh_inject(j, k, n, JH_ONCE);
	for (k = 0; k < JH_KINDS; k++)
		for (n = 1; n <= total[k]; n++)
			jh_inject(j, k, n, JH_POWER);
	for (k = 0; k < JH_KINDS; k++)
		all += total[k];
	cr_log_info("%u events (%u writes, %u flushes, %u fsyncs, %u renames, %u unlinks, %u "
		    "fallocates), %u runs",
		    all, total[JH_WRITE], total[JH_FLUSH], total[JH_FSYNC], total[JH_RENAME],
		    total[JH_UNLINK], total[JH_FALLOC], jh_runs);
}

#endif
