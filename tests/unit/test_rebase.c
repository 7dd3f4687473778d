/* SPDX-License-Identifier: MIT */
/*
 * test_rebase.c - qcow2_rebase() (commit.c) on imgbuild chains written to a mkdtemp()
 * directory: onto a layer of the chain, onto an unrelated qcow2 image (only the ranges that
 * differ are copied), onto a raw file whose format is probed, onto nothing, and unsafe.
 *
 * A safe rebase writes only into the image, each range holding what the image already shows,
 * and moves the backing pointer last, in one header write (commit.c). Every rebase is crashed
 * at every write, flush and system call it makes (jobs_harness.h): after each crash the
 * image's view reads the model's bytes (an unsafe rebase: the old view or the new one, whole),
 * it passes our check, it names its old backing file or the new one, and no other file
 * changed; running the rebase again completes it.
 */
#include "jobs_harness.h"

TestSuite(rebase, .init = jh_setup, .fini = jh_teardown);

static uint8_t *top_view, *top_after; /* the image's view before, and after (unsafe) */
static uint64_t top_size, top_after_size;
static const char *old_backing, *new_backing, *new_fmt;
static const char *fmt_arg; /* the format given, NULL: probed */
static bool unsafe;

static void chain(void)
{
	struct imgbuild *base = jh_qcow2("base.qcow2", 16, NULL, NULL);
	struct imgbuild *mid = jh_qcow2("mid.qcow2", 16, "base.qcow2", "qcow2");
	struct imgbuild *top = jh_qcow2("top.qcow2", 16, "mid.qcow2", "qcow2");

	jh_data(base, 0, 10, 0xb0);
	jh_data(mid, 1, 2, 0x30);
	jh_zero(mid, 5, 1);
	jh_data(mid, 8, 3, 0x31);
	jh_data(top, 2, 1, 0x70);
	jh_zero(top, 9, 1);
	jh_data(top, 15, 1, 0x71);
	old_backing = "mid.qcow2";
	unsafe = false;
	fmt_arg = NULL;
	top_after = NULL;
}

/* other.qcow2: a standalone image that shows the same bytes as top's chain in some ranges
 * (copied from its view: the compare leaves them alone) and others elsewhere. */
static void other_image(void)
{
	struct imgbuild *other = jh_qcow2("other.qcow2", 12, NULL, NULL);
	uint64_t size;
	uint8_t *view = jh_model_view("mid.qcow2", &size);

	cr_assert_eq(imgbuild_write(other, 0, view, 4 << 12), 0);
	cr_assert_eq(imgbuild_write(other, 8 << 12, view + (8 << 12), 2 << 12), 0);
	jh_data(other, 5, 2, 0xe0);
	jh_data(other, 11, 1, 0xe1);
	free(view);
}

static int run_rebase(void)
{
	struct qcow2_plan plan;
	int r =
	    qcow2_rebase(jh_path("top.qcow2"), new_backing, fmt_arg, unsafe, false, NULL, &plan);

	qcow2_plan_release(&plan);
	return r;
}

/* The backing file name top.qcow2 stores now. */
static void stored_backing(char *out, size_t cap)
{
	struct qcow2_header h;
	struct qcow2_io *io;

	cr_assert_eq(qcow2_io_open_file(jh_path("top.qcow2"), false, &io), 0);
	cr_assert_eq(qcow2_header_read(io, &h), 0);
	qcow2_io_close(io);
	snprintf(out, cap, "%s", h.backing_file);
}

static void check_rebase(enum jh_state s, const char *fault)
{
	char hidden[4096], name[1024];
	unsigned i;

	stored_backing(name, sizeof(name));
	if (s == JH_DONE)
		jh_expect_backing("top.qcow2", new_backing, new_fmt, fault);
	else
		cr_assert(strcmp(name, old_backing) == 0 || strcmp(name, new_backing) == 0,
			  "%s: top.qcow2 names '%s'", fault, name);
	/* an unsafe rebase changes the view, with the pointer: one or the other, whole */
	if (unsafe && strcmp(name, new_backing) == 0)
		jh_expect_view("top.qcow2", top_after, top_after_size, fault);
	else
		jh_expect_view("top.qcow2", top_view, top_size, fault);
	jh_check_image("top.qcow2", fault[0], fault);
	for (i = 0; i < jh_n; i++)
		if (strcmp(jh_files[i].name, "top.qcow2") != 0)
			jh_expect_unchanged(jh_files[i].name, fault);
	jh_hidden(hidden, sizeof(hidden));
	cr_assert_str_empty(hidden, "%s: left behind: %s", fault, hidden);
	if (s == JH_DONE && !fault[0]) {
		jh_qemu_check("top.qcow2");
		if (unsafe)
			jh_qemu_compare("top.qcow2", "qcow2", top_after, top_after_size);
		else
			jh_qemu_compare("top.qcow2", "qcow2", top_view, top_size);
	}
}

static void sweep(const char *backing, const char *fmt)
{
	struct jh_job j = {run_rebase, check_rebase};

	top_view = jh_model_view("top.qcow2", &top_size);
	new_backing = backing;
	new_fmt = fmt;
	jh_sweep(&j);
	free(top_view);
	free(top_after);
}

Test(rebase, onto_a_layer_of_the_chain_survives_a_crash_at_every_step)
{
	chain();
	sweep("base.qcow2", "qcow2");
}

Test(rebase, onto_an_unrelated_image_survives_a_crash_at_every_step)
{
	chain();
	other_image();
	fmt_arg = "qcow2";
	sweep("other.qcow2", "qcow2");
}

Test(rebase, onto_a_raw_file_probed_survives_a_crash_at_every_step)
{
	chain();
	jh_raw("other.raw", 9 << 12, 3);
	sweep("other.raw", "raw");
}

Test(rebase, onto_nothing_survives_a_crash_at_every_step)
{
	chain();
	sweep("", "");
}

/* Unsafe: only the pointer moves (one header write), and with it the view. */
Test(rebase, unsafe_moves_the_pointer_and_the_view_at_once)
{
	struct jh_file *top;

	chain();
	other_image();
	unsafe = true;
	top = jh_file("top.qcow2");
	/* the model of top over other.qcow2: the same image, another backing file */
	snprintf(top->backing, sizeof(top->backing), "other.qcow2");
	top_after = jh_model_view("top.qcow2", &top_after_size);
	snprintf(top->backing, sizeof(top->backing), "mid.qcow2");
	sweep("other.qcow2", NULL);
}
