/* SPDX-License-Identifier: MIT */
/*
 * test_pull.c - qcow2_pull() (commit.c) on imgbuild chains written to a mkdtemp() directory:
 * pulling the layers above a base into the image, or the whole chain, from qcow2 and raw
 * backing files.
 *
 * Pull writes only into the image, each range holding what the image already shows there, and
 * moves its backing pointer last (commit.c). Every pull is crashed at every write, flush and
 * system call it makes (jobs_harness.h): after each crash the image's view reads the model's
 * bytes, it passes our check (leaks only after a crash), it names its old backing file or the
 * new one, and no other file changed; running the pull again completes it.
 */
#include "jobs_harness.h"

TestSuite(pull, .init = jh_setup, .fini = jh_teardown);

static uint8_t *top_view;
static uint64_t top_size;
static const char *base_arg;	/* the pull's base, a name in the test directory; NULL: none */
static const char *old_backing; /* what top.qcow2 names before, and after */
static const char *new_backing, *new_fmt;

static void chain(void)
{
	struct imgbuild *base = jh_qcow2("base.qcow2", 16, NULL, NULL);
	struct imgbuild *mid = jh_qcow2("mid.qcow2", 16, "base.qcow2", "qcow2");
	struct imgbuild *top = jh_qcow2("top.qcow2", 16, "mid.qcow2", "qcow2");

	jh_data(base, 0, 10, 0xb0);
	jh_data(mid, 1, 2, 0x30);
	jh_zero(mid, 5, 1);
	jh_data(mid, 8, 3, 0x31);
	jh_data(mid, 13, 1, 0x32);
	jh_data(top, 2, 1, 0x70);
	jh_zero(top, 9, 1);
	jh_data(top, 15, 1, 0x71);
	old_backing = "mid.qcow2";
}

static int run_pull(void)
{
	struct qcow2_plan plan;
	int r = qcow2_pull(jh_path("top.qcow2"), base_arg ? jh_path(base_arg) : NULL, false, NULL,
			   &plan);

	qcow2_plan_release(&plan);
	return r;
}

static void check_pull(enum jh_state s, const char *fault)
{
	char hidden[4096];
	unsigned i;

	jh_expect_view("top.qcow2", top_view, top_size, fault);
	jh_check_image("top.qcow2", fault[0], fault);
	for (i = 0; i < jh_n; i++)
		if (strcmp(jh_files[i].name, "top.qcow2") != 0)
			jh_expect_unchanged(jh_files[i].name, fault);
	jh_hidden(hidden, sizeof(hidden));
	cr_assert_str_empty(hidden, "%s: left behind: %s", fault, hidden);
	if (s == JH_DONE) {
		jh_expect_backing("top.qcow2", new_backing, new_fmt, fault);
	} else {
		struct qcow2_header h;
		struct qcow2_io *io;

		cr_assert_eq(qcow2_io_open_file(jh_path("top.qcow2"), false, &io), 0);
		cr_assert_eq(qcow2_header_read(io, &h), 0);
		qcow2_io_close(io);
		cr_assert(strcmp(h.backing_file, old_backing) == 0 ||
			      strcmp(h.backing_file, new_backing) == 0,
			  "%s: top.qcow2 names '%s'", fault, h.backing_file);
	}
	if (s == JH_DONE && !fault[0]) {
		jh_qemu_check("top.qcow2");
		jh_qemu_compare("top.qcow2", "qcow2", top_view, top_size);
	}
}

Test(pull, layers_above_a_base_survive_a_crash_at_every_step)
{
	struct jh_job j = {run_pull, check_pull};

	chain();
	top_view = jh_model_view("top.qcow2", &top_size);
	base_arg = "base.qcow2";
	new_backing = "base.qcow2";
	new_fmt = "qcow2";
	jh_sweep(&j);
	free(top_view);
}

Test(pull, the_whole_chain_survives_a_crash_at_every_step)
{
	struct jh_job j = {run_pull, check_pull};

	chain();
	top_view = jh_model_view("top.qcow2", &top_size);
	base_arg = NULL;
	new_backing = "";
	new_fmt = "";
	jh_sweep(&j);
	free(top_view);
}

/* A raw backing file shorter than the image: past its end the image reads zeros. */
Test(pull, from_a_short_raw_backing_file_survives_a_crash_at_every_step)
{
	struct jh_job j = {run_pull, check_pull};
	struct imgbuild *top;

	jh_raw("base.raw", 10 << 12, 7);
	top = jh_qcow2("top.qcow2", 16, "base.raw", "raw");
	jh_data(top, 3, 2, 0x70);
	jh_zero(top, 6, 1);
	jh_data(top, 12, 1, 0x71);
	old_backing = "base.raw";
	top_view = jh_model_view("top.qcow2", &top_size);
	base_arg = NULL;
	new_backing = "";
	new_fmt = "";
	jh_sweep(&j);
	free(top_view);
}
