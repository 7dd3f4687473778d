/* SPDX-License-Identifier: MIT */
/*
 * test_convert.c - qcow2_convert() (convert.c: qcowctl copy) on imgbuild chains written to a
 * mkdtemp() directory: a deep copy, a shallow one, a raw one, a compressed one, one that
 * replaces an existing file, one that finds the part file a killed run left, one onto a
 * backing file (-B), one of an internal snapshot, and one into an existing image (-n).
 *
 * A copy is built under a hidden name next to DEST, made durable, then renamed to DEST and
 * the directory synced (convert.c; the new file itself comes from create.c, written to an
 * unnamed file and linked to the hidden name). Every copy is crashed at every write, flush,
 * fsync, link, rename and unlink it makes (jobs_harness.h): after each crash the source's
 * files are unchanged and DEST is as it was (absent, or the file it replaces, byte for byte)
 * or complete; running the copy again leaves DEST reading the source's view, with the backing
 * file it should name, and nothing hidden behind. A copy into an existing image (-n) writes
 * it in place: after a crash it reads, byte by byte, what it held or the source's view.
 * External snapshots (also convert.c) are crashed the same way.
 */
#include "jobs_harness.h"

TestSuite(convert, .init = jh_setup, .fini = jh_teardown);

static uint8_t *want;
static uint64_t want_size;
static struct qcow2_convert_opts copts;
static const char *dest;
static bool dest_existed;
static uint8_t *old_view; /* -n: what DEST showed before */
static uint64_t old_size;

static void chain(void)
{
	struct imgbuild *base = jh_qcow2("base.qcow2", 16, NULL, NULL);
	struct imgbuild *mid = jh_qcow2("mid.qcow2", 16, "base.qcow2", "qcow2");
	struct imgbuild *top = jh_qcow2("top.qcow2", 16, "mid.qcow2", "qcow2");

	jh_data(base, 0, 8, 0xb0);
	jh_data(mid, 2, 2, 0x30);
	jh_zero(mid, 6, 1);
	jh_data(mid, 10, 1, 0x31);
	jh_data(top, 1, 1, 0x70);
	jh_zero(top, 3, 1);
	jh_data(top, 12, 2, 0x71);
	want = jh_model_view("top.qcow2", &want_size);
	memset(&copts, 0, sizeof(copts));
	dest = "dest.qcow2";
	dest_existed = false;
}

static int run_convert(void)
{
	struct qcow2_plan plan;
	int r = qcow2_convert(jh_path("top.qcow2"), jh_path(dest), &copts, NULL, &plan);

	qcow2_plan_release(&plan);
	return r;
}

/* Is every line of @hidden a file a stopped copy may leave: the part file (unless
 * @part_ok is false), or the hidden name a new file is linked to before it replaces one
 * (create.c's ".NAME.create-PID-N")? */
static bool only_leftovers(const char *hidden, bool part_ok)
{
	char part[128], copy[4096], *line, *save = NULL;

	snprintf(part, sizeof(part), ".%s.qcowctl-part", dest);
	snprintf(copy, sizeof(copy), "%s", hidden);
	for (line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		if (!(part_ok && strcmp(line, part) == 0) && !strstr(line, ".create-"))
			return false;
	return true;
}

/* Does DEST read the source's view? */
static bool reads_want(const char *when)
{
	uint64_t n;
	uint8_t *v = jh_read_view(dest, &n, when);
	bool same = v && n == want_size && memcmp(v, want, n) == 0;

	free(v);
	return same;
}

/* DEST is complete: the source's view, the backing file a copy names, consistent. */
static void check_dest(const char *fault)
{
	jh_expect_view(dest, want, want_size, fault);
	if (copts.raw)
		return;
	jh_check_image(dest, false, fault);
	if (copts.shallow)
		jh_expect_backing(dest, "mid.qcow2", "qcow2", fault);
	else if (copts.backing)
		jh_expect_backing(dest, copts.backing, "qcow2", fault);
	else
		jh_expect_backing(dest, "", "", fault);
}

static void check_convert(enum jh_state s, const char *fault)
{
	char hidden[4096];

	jh_expect_unchanged("top.qcow2", fault);
	jh_expect_unchanged("mid.qcow2", fault);
	jh_expect_unchanged("base.qcow2", fault);
	jh_hidden(hidden, sizeof(hidden));
	if (s == JH_DONE) {
		check_dest(fault);
		/* a crash between the link to a hidden name and the rename may leave that name:
		 * create.c's "at worst the hidden file" */
		cr_assert(fault[0] ? only_leftovers(hidden, false) : !hidden[0],
			  "%s: left behind: %s", fault, hidden);
	} else {
		cr_assert(only_leftovers(hidden, true), "%s: left behind: %s", fault, hidden);
		if (!jh_exists(dest))
			cr_assert(!dest_existed, "%s: the file DEST replaces is gone", fault);
		else if (dest_existed && !reads_want(fault))
			jh_expect_unchanged(dest, fault); /* the old file, byte for byte */
		else
			check_dest(fault);
	}
	if (s == JH_DONE && !fault[0] && !copts.raw) {
		jh_qemu_check(dest);
		jh_qemu_compare(dest, "qcow2", want, want_size);
	}
	if (s == JH_DONE && !fault[0] && copts.raw)
		jh_qemu_compare(dest, "raw", want, want_size);
}

static void sweep(void)
{
	struct jh_job j = {run_convert, check_convert};

	jh_sweep(&j);
	free(want);
}

/* -n: DEST reads what it held or the source's view, byte by byte, and is consistent (leaks
 * allowed after a crash); complete, it reads the source's view over the source's size and
 * what it held beyond. Here @want is that complete view, DEST's size. */
static void check_existing(enum jh_state s, const char *fault)
{
	jh_expect_unchanged("top.qcow2", fault);
	jh_expect_unchanged("mid.qcow2", fault);
	jh_expect_unchanged("base.qcow2", fault);
	if (s != JH_DONE) {
		jh_expect_view_between(dest, old_view, old_size, want, want_size, fault);
		jh_check_image(dest, true, fault);
		return;
	}
	jh_expect_view(dest, want, want_size, fault);
	jh_check_image(dest, fault[0] != 0, fault);
	if (!fault[0]) {
		jh_qemu_check(dest);
		jh_qemu_compare(dest, "qcow2", want, want_size);
	}
}

Test(convert, deep_copy_survives_a_crash_at_every_step)
{
	chain();
	sweep();
}

Test(convert, shallow_copy_survives_a_crash_at_every_step)
{
	chain();
	copts.shallow = true;
	sweep();
}

Test(convert, raw_copy_survives_a_crash_at_every_step)
{
	chain();
	dest = "dest.raw";
	copts.raw = true;
	sweep();
}

Test(convert, compressed_copy_survives_a_crash_at_every_step)
{
	chain();
	copts.compress = true;
	sweep();
}

Test(convert, copy_over_an_existing_file_survives_a_crash_at_every_step)
{
	struct imgbuild *old;

	chain();
	old = jh_qcow2("dest.qcow2", 8, NULL, NULL);
	jh_data(old, 0, 8, 0xdd);
	dest_existed = true;
	sweep();
}

/* A killed run's part file is replaced (create.c: linked to a hidden name, then renamed over
 * it). */
Test(convert, copy_over_a_stale_part_file_survives_a_crash_at_every_step)
{
	chain();
	jh_raw(".dest.qcow2.qcowctl-part", 5000, 9);
	sweep();
}

/* -B: the copy backs onto base.qcow2 and holds only what differs from it. */
Test(convert, copy_onto_a_backing_file_survives_a_crash_at_every_step)
{
	chain();
	copts.backing = "base.qcow2";
	copts.min_sparse = 4096;
	sweep();
}

/* Zero runs shorter than -S inside data are written with it. */
Test(convert, sparse_size_survives_a_crash_at_every_step)
{
	chain();
	copts.min_sparse = 8192;
	sweep();
}

/* -S 0: everything is written, holes and zeros as data. */
Test(convert, fully_allocated_copy_survives_a_crash_at_every_step)
{
	chain();
	copts.no_sparse = true;
	sweep();
}

Test(convert, a_snapshot_as_source_is_its_point_in_time)
{
	struct qcow2_chain_opts wo = {.writable = true};
	struct qcow2_chain *c;
	uint8_t buf[4096];
	struct qcow2_image *top;
	struct qcow2_layer_info li;

	chain();
	jh_save_all();
	cr_assert_eq(qcow2_chain_open(jh_path("top.qcow2"), &wo, &c), 0, "%s", qcow2_last_error());
	qcow2_chain_layer(c, 0, &li);
	top = li.image;
	cr_assert_eq(qcow2_image_snapshot_create(top, "s1"), 0, "%s", qcow2_last_error());
	memset(buf, 0x5a, sizeof(buf));
	cr_assert_eq(qcow2_chain_pwrite(c, buf, sizeof(buf), 0), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_chain_flush(c), 0);
	qcow2_chain_close(c);
	copts.snapshot = "s1";
	cr_assert_eq(run_convert(), 0, "%s", qcow2_last_error());
	jh_expect_view(dest, want, want_size, "the copy of s1");
	copts.snapshot = NULL;
	cr_assert_eq(run_convert(), 0, "%s", qcow2_last_error());
	memcpy(want, buf, sizeof(buf));
	jh_expect_view(dest, want, want_size, "the copy of the active state");
	free(want);
}

/* -n into an image larger than the source, with data of its own over all of it. */
Test(convert, copy_into_an_existing_image_survives_a_crash_at_every_step)
{
	struct jh_job j = {run_convert, check_existing};
	struct imgbuild *old;

	chain();
	old = jh_qcow2("dest.qcow2", 20, NULL, NULL);
	jh_data(old, 0, 20, 0xdd);
	old_view = jh_model_view("dest.qcow2", &old_size);
	cr_assert_gt(old_size, want_size);
	want = realloc(want, old_size);
	cr_assert_not_null(want);
	memcpy(want + want_size, old_view + want_size, old_size - want_size);
	want_size = old_size;
	copts.existing = true;
	jh_sweep(&j);
	free(want);
	free(old_view);
}

Test(convert, an_existing_image_smaller_than_the_source_is_refused)
{
	chain();
	jh_qcow2("dest.qcow2", 4, NULL, NULL);
	jh_save_all();
	copts.existing = true;
	cr_assert_eq(run_convert(), -EINVAL);
	cr_assert(strstr(qcow2_last_error(), "smaller"), "%s", qcow2_last_error());
	jh_expect_unchanged("dest.qcow2", "refused");
	free(want);
}

/* ---- external snapshots (convert.c, qcow2_snapshot_external) ----
 * The overlay is created whole (create.c: an unnamed file, made durable, then linked to its
 * name): after a crash it is absent or complete, and the image under it never changes. A
 * rerun refuses an overlay that exists, so it may only find a complete one. */

static int run_external(void)
{
	struct qcow2_plan plan;
	int r =
	    qcow2_snapshot_external(jh_path("top.qcow2"), jh_path("overlay.qcow2"), false, &plan);

	qcow2_plan_release(&plan);
	return r;
}

static void check_external(enum jh_state s, const char *fault)
{
	char hidden[4096];

	jh_expect_unchanged("top.qcow2", fault);
	jh_expect_unchanged("mid.qcow2", fault);
	jh_expect_unchanged("base.qcow2", fault);
	jh_hidden(hidden, sizeof(hidden));
	cr_assert(only_leftovers(hidden, false), "%s: left behind: %s", fault, hidden);
	if (s == JH_DONE || jh_exists("overlay.qcow2")) {
		jh_expect_view("overlay.qcow2", want, want_size, fault);
		jh_check_image("overlay.qcow2", false, fault);
		jh_expect_backing("overlay.qcow2", "top.qcow2", "qcow2", fault);
		cr_assert(!jh_has_data("overlay.qcow2"), "%s: the overlay holds data", fault);
	}
	if (s == JH_DONE && !fault[0]) {
		cr_assert_str_empty(hidden, "left behind: %s", hidden);
		jh_qemu_check("overlay.qcow2");
		jh_qemu_compare("overlay.qcow2", "qcow2", want, want_size);
	}
}

Test(convert, external_snapshot_survives_a_crash_at_every_step)
{
	struct jh_job j = {run_external, check_external};

	chain();
	jh_sweep(&j);
	free(want);
}
