/* SPDX-License-Identifier: MIT */
/*
 * test_copy.c - the copy engine, qcow2_chain_copy() (copy.c), driven as its callers drive it
 * (copy, then flush) on imgbuild chains written to a mkdtemp() directory: into an empty
 * image, over an image with data of its own (its holes zeroed), comparing with it, into a raw
 * file, and compressed.
 *
 * Every range the engine writes makes the destination show what the source shows there, so
 * the destination reads, byte by byte, what it held or what it receives, whatever the point a
 * crash stops it; what a crash may leak is bounded by its flushes. Every copy is crashed at
 * every write, flush and hole punch it makes (jobs_harness.h), then run again: the source's
 * files never change, the destination passes our check (leaks only after a crash), and the
 * rerun leaves it reading the source's view.
 */
#include "jobs_harness.h"

TestSuite(copy, .init = jh_setup, .fini = jh_teardown);

static uint8_t *src_view, *dst_view;
static uint64_t src_size, dst_size;
static struct qcow2_copy_opts copts;
static const char *dst_name;
static bool dst_is_raw, under_is_dst, compressed;

/* src: base.qcow2 <- top.qcow2, with data, zeros over data and holes in each layer. */
static void source(void)
{
	struct imgbuild *base = jh_qcow2("base.qcow2", 16, NULL, NULL);
	struct imgbuild *top = jh_qcow2("top.qcow2", 16, "base.qcow2", "qcow2");

	jh_data(base, 0, 6, 0xb0);
	jh_data(base, 10, 2, 0xb1);
	jh_data(top, 1, 1, 0x70);
	jh_zero(top, 3, 2);
	jh_data(top, 7, 2, 0x71);
	jh_zero(top, 11, 1);
	jh_data(top, 13, 1, 0x72);
	src_view = jh_model_view("top.qcow2", &src_size);
	memset(&copts, 0, sizeof(copts));
	copts.limit = 2;
	copts.under_is_tail = true;
	dst_is_raw = under_is_dst = compressed = false;
}

static int run_copy(void)
{
	struct qcow2_chain_opts ro = {0}, wo = {.lock = true, .writable = true};
	struct qcow2_chain *src = NULL, *dst = NULL, *under = NULL;
	struct qcow2_copy_opts o = copts;
	struct qcow2_copy_stats st;
	struct qcow2_io *raw = NULL;
	int r = qcow2_chain_open(jh_path("top.qcow2"), &ro, &src);

	if (r == 0 && dst_is_raw)
		r = qcow2_io_open_file(jh_path(dst_name), true, &raw);
	else if (r == 0)
		r = qcow2_chain_open(jh_path(dst_name), &wo, &dst);
	if (r == 0 && dst)
		r = qcow2_chain_lock_write(dst, true);
	if (r == 0 && raw)
		r = qcow2_io_grow(raw, src_size);
	if (r == 0 && raw)
		r = qcow2_chain_open(jh_path(dst_name), &ro, &under);
	o.dst = dst;
	o.dst_raw = raw;
	o.under = under_is_dst ? (dst ? dst : under) : NULL;
	if (r == 0)
		r = qcow2_chain_copy(src, &o, NULL, &st);
	if (r == 0)
		r = dst ? qcow2_chain_flush(dst) : qcow2_io_flush(raw);
	qcow2_chain_close(under);
	qcow2_chain_close(dst);
	qcow2_io_close(raw);
	qcow2_chain_close(src);
	return r;
}

static void check_copy(enum jh_state s, const char *fault)
{
	jh_expect_unchanged("top.qcow2", fault);
	jh_expect_unchanged("base.qcow2", fault);
	if (!dst_is_raw)
		jh_check_image(dst_name, fault[0], fault);
	if (s == JH_DONE)
		jh_expect_view(dst_name, src_view, src_size, fault);
	else
		jh_expect_view_between(dst_name, dst_view, dst_size, src_view, src_size, fault);
	if (s == JH_DONE && !fault[0] && !dst_is_raw) {
		jh_qemu_check(dst_name);
		jh_qemu_compare(dst_name, "qcow2", src_view, src_size);
	}
	if (s == JH_DONE && compressed) {
		struct qcow2_image_opts io = {0};
		struct qcow2_check_result res;
		struct qcow2_image *img;
		struct qcow2_io *f;

		cr_assert_eq(qcow2_io_open_file(jh_path(dst_name), false, &f), 0);
		cr_assert_eq(qcow2_image_open(f, dst_name, &io, &img), 0);
		cr_assert_eq(qcow2_image_check(img, &res), 0);
		cr_assert_gt(res.compressed_clusters, 0, "%s: nothing was compressed", fault);
		qcow2_image_close(img);
	}
}

static void sweep(const char *name)
{
	struct jh_job j = {run_copy, check_copy};

	dst_name = name;
	dst_view = jh_model_view(name, &dst_size);
	jh_sweep(&j);
	free(src_view);
	free(dst_view);
}

Test(copy, into_an_empty_image_survives_a_crash_at_every_step)
{
	source();
	jh_qcow2("dst.qcow2", 16, NULL, NULL);
	sweep("dst.qcow2");
}

/* The destination's own data under the source's holes and zeros must go: @under is the
 * destination itself, which is not the source's tail. */
Test(copy, over_an_image_with_data_survives_a_crash_at_every_step)
{
	struct imgbuild *dst;

	source();
	dst = jh_qcow2("dst.qcow2", 16, NULL, NULL);
	jh_data(dst, 0, 16, 0xd0);
	jh_zero(dst, 6, 1);
	copts.under_is_tail = false;
	under_is_dst = true;
	sweep("dst.qcow2");
}

/* With @compare only what differs is written: clusters equal to the source's are skipped. */
Test(copy, comparing_with_the_destination_survives_a_crash_at_every_step)
{
	struct imgbuild *dst;

	source();
	dst = jh_qcow2("dst.qcow2", 16, NULL, NULL);
	cr_assert_eq(imgbuild_write(dst, 0, src_view, 8 << 12), 0);
	jh_data(dst, 8, 8, 0xd0);
	copts.under_is_tail = false;
	copts.compare = true;
	under_is_dst = true;
	sweep("dst.qcow2");
}

/* A raw destination shorter than the source, with bytes of its own: grown, its bytes under the
 * source's holes punched or zeroed. */
Test(copy, into_a_raw_file_survives_a_crash_at_every_step)
{
	source();
	jh_raw("dst.raw", 12 << 12, 11);
	copts.under_is_tail = false;
	dst_is_raw = true;
	under_is_dst = true;
	sweep("dst.raw");
}

Test(copy, compressed_survives_a_crash_at_every_step)
{
	source();
	jh_qcow2("dst.qcow2", 16, NULL, NULL);
	copts.compress = true;
	compressed = true;
	sweep("dst.qcow2");
}
