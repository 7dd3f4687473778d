/* SPDX-License-Identifier: MIT */
/*
 * test_commit.c - qcow2_commit() (commit.c) on imgbuild chains written to a mkdtemp()
 * directory: active and intermediate commits, into the backing file or further down, with
 * --drop, into a raw base, and the refusal when another image uses the base.
 *
 * Every job is crashed at every step of commit.c's write order (jobs_harness.h: every write,
 * flush, fsync, rename and unlink it makes, one at a time): after each crash the image's view
 * and those of the layers above top still read the model's bytes, base reads, byte by byte,
 * what it held or what it receives, every image passes our check (leaks only where a crash
 * interrupted a write-back), and running the same commit again completes it: the model's final
 * bytes, the backing pointer moved, the merged layers dropped or left, the journal gone.
 */
#include "jobs_harness.h"

TestSuite(commit, .init = jh_setup, .fini = jh_teardown);

/* The views before the job, and what base must show once it is done. */
static uint8_t *top_view, *mid_view, *base_view, *base_after;
static uint64_t top_size, mid_size, base_size, base_after_size;
static struct qcow2_commit_opts opts;
static char top_arg[PATH_MAX], base_arg[PATH_MAX];

/* The commit's options: @top and @base are names in the test directory (NULL: none). */
static void set_opts(const char *top, const char *base, bool drop)
{
	memset(&opts, 0, sizeof(opts));
	if (top)
		snprintf(top_arg, sizeof(top_arg), "%s", jh_path(top));
	if (base)
		snprintf(base_arg, sizeof(base_arg), "%s", jh_path(base));
	opts.top = top ? top_arg : NULL;
	opts.base = base ? base_arg : NULL;
	opts.drop = drop;
}

static void free_views(void)
{
	free(top_view);
	free(mid_view);
	free(base_view);
	free(base_after);
}

/* base.qcow2 <- mid.qcow2 <- top.qcow2 (4 KiB clusters), each layer with data, zeros over
 * data below, and holes, so that the copy has several runs of each kind. */
static void three_layers(unsigned base_clusters, unsigned mid_clusters, unsigned top_clusters)
{
	struct imgbuild *base = jh_qcow2("base.qcow2", base_clusters, NULL, NULL);
	struct imgbuild *mid = jh_qcow2("mid.qcow2", mid_clusters, "base.qcow2", "qcow2");
	struct imgbuild *top = jh_qcow2("top.qcow2", top_clusters, "mid.qcow2", "qcow2");

	jh_data(base, 0, 12, 0xb0);
	jh_data(mid, 2, 2, 0x30);
	jh_zero(mid, 4, 1);
	jh_data(mid, 8, 1, 0x31);
	jh_data(top, 0, 1, 0x70);
	jh_data(top, 3, 1, 0x71);
	jh_zero(top, 5, 2);
	jh_data(top, 9, 2, 0x72);
	jh_data(top, 14, 1, 0x73);
	top_view = jh_model_view("top.qcow2", &top_size);
	mid_view = jh_model_view("mid.qcow2", &mid_size);
	base_view = jh_model_view("base.qcow2", &base_size);
}

static int run_commit(void)
{
	struct qcow2_plan plan;
	int r = qcow2_commit(jh_path("top.qcow2"), &opts, NULL, &plan);

	qcow2_plan_release(&plan);
	return r;
}

/* What holds for every commit of this file: the image's view never changes, its own data
 * ends up below it (active commit), and a completed job leaves no journal. */
static void check_common(enum jh_state s, const char *fault, bool active)
{
	char hidden[4096];

	jh_expect_view("top.qcow2", top_view, top_size, fault);
	jh_check_image("top.qcow2", fault[0], fault);
	if (s != JH_DONE)
		return;
	jh_hidden(hidden, sizeof(hidden));
	cr_assert_str_empty(hidden, "%s: left behind: %s", fault, hidden);
	if (active)
		cr_assert(!jh_has_data("top.qcow2"), "%s: the image was not emptied", fault);
	if (!fault[0]) {
		jh_qemu_check("top.qcow2");
		jh_qemu_compare("top.qcow2", "qcow2", top_view, top_size);
	}
}

/* ---- active commit into the backing file ---- */

static void check_active(enum jh_state s, const char *fault)
{
	check_common(s, fault, true);
	jh_expect_unchanged("base.qcow2", fault);
	jh_expect_backing("top.qcow2", "mid.qcow2", "qcow2", fault);
	jh_check_image("mid.qcow2", fault[0], fault);
	if (s == JH_DONE)
		jh_expect_view("mid.qcow2", base_after, base_after_size, fault);
	else
		jh_expect_view_between("mid.qcow2", mid_view, mid_size, base_after, base_after_size,
				       fault);
	if (s == JH_DONE && !fault[0])
		jh_qemu_check("mid.qcow2");
}

Test(commit, active_into_backing_file_survives_a_crash_at_every_step)
{
	struct jh_job j = {run_commit, check_active};

	three_layers(16, 16, 16);
	base_after = jh_model_view("top.qcow2", &base_after_size);
	set_opts(NULL, NULL, false);
	jh_sweep(&j);
	free_views();
}

/* ---- active commit two layers down, dropping the layer between ---- */

static void check_active_drop(enum jh_state s, const char *fault)
{
	check_common(s, fault, true);
	jh_check_image("base.qcow2", fault[0], fault);
	if (s == JH_DONE) {
		jh_expect_view("base.qcow2", base_after, base_after_size, fault);
		jh_expect_backing("top.qcow2", "base.qcow2", "qcow2", fault);
		cr_assert(!jh_exists("mid.qcow2"), "%s: mid.qcow2 was not dropped", fault);
		if (!fault[0])
			jh_qemu_check("base.qcow2");
		return;
	}
	jh_expect_view_between("base.qcow2", base_view, base_size, base_after, base_after_size,
			       fault);
	/* mid leaves the chain: never written, deleted only once nothing reads through it */
	if (jh_exists("mid.qcow2"))
		jh_expect_unchanged("mid.qcow2", fault);
	else
		jh_expect_backing("top.qcow2", "base.qcow2", "qcow2", fault);
}

Test(commit, active_into_base_with_drop_survives_a_crash_at_every_step)
{
	struct jh_job j = {run_commit, check_active_drop};

	three_layers(16, 16, 16);
	base_after = jh_model_view("top.qcow2", &base_after_size);
	set_opts(NULL, "base.qcow2", true);
	jh_sweep(&j);
	free_views();
}

/* ---- intermediate commit ---- */

/* base after mid is committed into it: mid's view over mid's size; past it, up to where top
 * ends, zeros (top reads them through mid there, whatever base holds); base's own bytes past
 * that. */
static void intermediate_base_after(void)
{
	uint64_t i;

	base_after_size = base_size > mid_size ? base_size : mid_size;
	base_after = calloc(1, base_after_size);
	cr_assert_not_null(base_after);
	for (i = 0; i < base_after_size; i++)
		base_after[i] = i < mid_size ? mid_view[i] : i < top_size ? 0 : base_view[i];
}

static void check_intermediate(enum jh_state s, const char *fault)
{
	check_common(s, fault, false);
	jh_check_image("base.qcow2", fault[0], fault);
	if (jh_exists("mid.qcow2")) {
		/* never written; a layer whose view stays the same while it is in a chain */
		jh_expect_unchanged("mid.qcow2", fault);
		jh_expect_view("mid.qcow2", mid_view, mid_size, fault);
	}
	if (s == JH_DONE) {
		jh_expect_view("base.qcow2", base_after, base_after_size, fault);
		jh_expect_backing("top.qcow2", "base.qcow2", "qcow2", fault);
		cr_assert(jh_exists("mid.qcow2") == !opts.drop, "%s: mid.qcow2 %s", fault,
			  opts.drop ? "was not dropped" : "is gone");
		if (!fault[0])
			jh_qemu_check("base.qcow2");
		return;
	}
	jh_expect_view_between("base.qcow2", base_view, base_size, base_after, base_after_size,
			       fault);
	if (!jh_exists("mid.qcow2"))
		jh_expect_backing("top.qcow2", "base.qcow2", "qcow2", fault);
}

Test(commit, intermediate_survives_a_crash_at_every_step)
{
	struct jh_job j = {run_commit, check_intermediate};

	three_layers(16, 16, 16);
	intermediate_base_after();
	set_opts("mid.qcow2", NULL, false);
	jh_sweep(&j);
	free_views();
}

/* Top longer than mid, mid shorter than base: base must read zeros past mid's end before top
 * is pointed at it (commit.c, zero_past_top). */
Test(commit, intermediate_with_drop_over_a_shorter_layer_survives_a_crash_at_every_step)
{
	struct jh_job j = {run_commit, check_intermediate};

	three_layers(16, 12, 20);
	intermediate_base_after();
	set_opts("mid.qcow2", "base.qcow2", true);
	jh_sweep(&j);
	free_views();
}

/* ---- active commit into a raw base ---- */

static void check_raw(enum jh_state s, const char *fault)
{
	check_common(s, fault, true);
	jh_expect_backing("top.qcow2", "base.raw", "raw", fault);
	if (s == JH_DONE)
		jh_expect_view("base.raw", base_after, base_after_size, fault);
	else
		jh_expect_view_between("base.raw", base_view, base_size, base_after,
				       base_after_size, fault);
}

Test(commit, active_into_a_shorter_raw_base_survives_a_crash_at_every_step)
{
	struct jh_job j = {run_commit, check_raw};
	struct imgbuild *top;

	jh_raw("base.raw", 12 << 12, 42);
	top = jh_qcow2("top.qcow2", 16, "base.raw", "raw");
	jh_data(top, 1, 2, 0x70);
	jh_zero(top, 4, 3); /* over raw data: punched or written as zeros */
	jh_data(top, 9, 1, 0x71);
	jh_data(top, 13, 2, 0x72); /* past the raw file's end: it grows */
	top_view = jh_model_view("top.qcow2", &top_size);
	base_view = jh_model_view("base.raw", &base_size);
	base_after = jh_model_view("top.qcow2", &base_after_size);
	set_opts(NULL, NULL, false);
	jh_sweep(&j);
	free_views();
}

/* ---- other users of base ---- */

Test(commit, refused_while_another_image_uses_the_base_and_nothing_changes)
{
	struct qcow2_plan plan;
	struct imgbuild *other;
	int r;

	three_layers(16, 16, 16);
	other = jh_qcow2("other.qcow2", 16, "mid.qcow2", "qcow2");
	jh_data(other, 7, 1, 0x99);
	jh_save_all();
	set_opts(NULL, NULL, false);
	r = qcow2_commit(jh_path("top.qcow2"), &opts, NULL, &plan);
	qcow2_plan_release(&plan);
	cr_assert_eq(r, -EBUSY);
	assert_error_mentions("other.qcow2");
	jh_expect_unchanged("top.qcow2", "refused");
	jh_expect_unchanged("mid.qcow2", "refused");
	jh_expect_unchanged("base.qcow2", "refused");
	jh_expect_unchanged("other.qcow2", "refused");
	free_views();
}
