/* SPDX-License-Identifier: MIT */
/*
 * test_write.c - the write side of one image (write.c, refcount.c's allocator, check.c) on
 * images built in memory: refcount entries of every width encode as qcow2.txt says; writes
 * read back (through a reopened copy of the bytes) and leave refcounts that match what points
 * at every cluster; and a write-back interrupted at any of its writes (the memory backend
 * fails the Nth one, which is where a crash would stop it) leaves an image that opens and
 * whose refcounts are never lower than what points at them: leaks at worst.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "imgbuild.h"
#include "engine/engine.h"
#include "testutil.h"

static struct imgbuild *img;
static struct qcow2_image *qi;

static void setup(void)
{
	img = NULL;
	qi = NULL;
}

static void teardown(void)
{
	qcow2_image_close(qi);
	imgbuild_free(img);
}

TestSuite(write, .init = setup, .fini = teardown);

struct order_case {
	uint32_t order;
};

ParameterizedTestParameters(write, refcount_entries_of_every_width_encode)
{
	static struct order_case cases[] = {{0}, {1}, {2}, {3}, {4}, {5}, {6}};
	return cr_make_param_array(struct order_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct order_case *c, write, refcount_entries_of_every_width_encode)
{
	uint8_t ours[512], want[512];
	uint64_t max = c->order == 6 ? UINT64_MAX : (1ull << (1u << c->order)) - 1, i, n;

	memset(ours, 0xa5, sizeof(ours));
	memcpy(want, ours, sizeof(want));
	n = (sizeof(ours) * 8) >> c->order;
	for (i = 0; i < n; i += 3) {
		uint64_t v = (i * 0x9e3779b97f4a7c15ull) & max;
		qcow2_refcount_block_set(ours, c->order, i, v);
		testutil_put_refcount(want, c->order, i, v);
		cr_assert_eq(qcow2_refcount_block_get(ours, c->order, i), v, "order %u idx %lu",
			     c->order, (unsigned long)i);
	}
	cr_assert_arr_eq(ours, want, sizeof(want), "order %u", c->order);
}

/* Open the bytes of @io (a copy) as a new image. */
static struct qcow2_image *reopen(struct qcow2_io *io, bool writable)
{
	struct qcow2_image_opts o = {.writable = writable};
	struct qcow2_image *out;
	size_t len;
	const void *b = qcow2_io_mem_bytes(io, &len);
	struct qcow2_io *copy = qcow2_io_mem_new("copy.qcow2", b, len);
	int r = qcow2_image_open(copy, "copy.qcow2", &o, &out);

	cr_assert_eq(r, 0, "reopen: %s", qcow2_last_error());
	return out;
}

/* Read @n bytes at @off of an image without backing file. */
static void image_read(struct qcow2_image *q, uint8_t *buf, size_t n, uint64_t off)
{
	while (n) {
		struct qcow2_extent e;

		cr_assert_eq(qcow2_image_map(q, NULL, off, n, &e), 0, "%s", qcow2_last_error());
		if (e.kind == QCOW2_EXTENT_DATA)
			cr_assert_eq(qcow2_io_pread_full(e.io, buf, e.len, e.host_off), 0);
		else if (e.kind == QCOW2_EXTENT_COMPRESSED)
			cr_assert_eq(qcow2_image_read_compressed(
					 q, &e, off & (q->cluster_bytes - 1), buf, e.len),
				     0);
		else
			memset(buf, 0, e.len);
		buf += e.len;
		off += e.len;
		n -= e.len;
	}
}

static void assert_clean(struct qcow2_image *q, bool leaks_ok)
{
	struct qcow2_check_result res;

	cr_assert_eq(qcow2_image_check(q, &res), 0, "%s", qcow2_last_error());
	cr_assert_eq(res.corruptions, 0, "%lu corruptions", (unsigned long)res.corruptions);
	if (!leaks_ok)
		cr_assert_eq(res.leaks, 0, "%lu leaked clusters", (unsigned long)res.leaks);
}

static struct qcow2_image *open_writable(void)
{
	struct qcow2_image_opts o = {.writable = true};
	struct qcow2_image *q;

	cr_assert_eq(qcow2_image_open(imgbuild_io(img), "mem.qcow2", &o, &q), 0, "%s",
		     qcow2_last_error());
	return q;
}

/* Deterministic writes of every shape over the image; @model follows them. */
static int scribble(struct qcow2_image *q, uint8_t *model, uint64_t size, unsigned n, unsigned seed)
{
	static const size_t lens[] = {1, 511, 512, 4096, 5000, 65536, 70000, 200000};
	uint8_t *buf = malloc(200000);
	unsigned i;
	int r = 0;

	srand(seed);
	for (i = 0; i < n && r == 0; i++) {
		size_t len = lens[(unsigned)rand() % 8], j;
		uint64_t off = (uint64_t)rand() % (size - len);

		for (j = 0; j < len; j++)
			buf[j] = (uint8_t)(i + j * 7);
		if (i % 7 == 3) {
			r = qcow2_image_zero(q, off, len, NULL);
			memset(buf, 0, len);
		} else {
			r = qcow2_image_write(q, buf, len, off, NULL);
		}
		if (r == 0)
			memcpy(model + off, buf, len);
	}
	free(buf);
	return r;
}

struct shape_case {
	uint32_t version, cluster_bits, refcount_order;
	bool extended_l2;
};

ParameterizedTestParameters(write, writes_read_back_with_exact_refcounts)
{
	static struct shape_case cases[] = {
	    {3, 16, 4, false}, {2, 16, 4, false}, {3, 9, 4, false},  {3, 12, 0, false},
	    {3, 16, 6, false}, {3, 16, 4, true},  {3, 21, 4, false}, {2, 9, 4, false},
	};
	return cr_make_param_array(struct shape_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct shape_case *c, write, writes_read_back_with_exact_refcounts)
{
	struct imgbuild_opts o = imgbuild_defaults();
	uint64_t size = 4u << 20;
	uint8_t *model = calloc(1, size), *got = malloc(size);
	struct qcow2_image *back;

	o.version = c->version;
	o.cluster_bits = c->cluster_bits;
	o.refcount_order = c->refcount_order;
	o.extended_l2 = c->extended_l2;
	o.size = size;
	img = imgbuild_new(&o);
	cr_assert_eq(imgbuild_fill(img, 1 << 20, 0x5c, 300000), 0);
	memset(model + (1 << 20), 0x5c, 300000);
	qi = open_writable();
	cr_assert_eq(scribble(qi, model, size, 150, c->cluster_bits), 0, "%s", qcow2_last_error());
	image_read(qi, got, size, 0);
	cr_assert_arr_eq(got, model, size, "reads before the flush");
	/* The second flush writes the count-downs of what the first one unlinked. */
	cr_assert_eq(qcow2_image_flush(qi), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_flush(qi), 0, "%s", qcow2_last_error());
	assert_clean(qi, false);
	back = reopen(qcow2_image_io(qi), false);
	image_read(back, got, size, 0);
	cr_assert_arr_eq(got, model, size, "reads of the written-back image");
	assert_clean(back, false);
	qcow2_image_close(back);
	free(model);
	free(got);
}

Test(write, growth_moves_the_l1_table_and_keeps_the_data)
{
	struct imgbuild_opts o = imgbuild_defaults();
	uint8_t buf[4096], got[4096];
	struct qcow2_image *back;

	o.cluster_bits = 9; /* an L1 entry covers 32 KiB: growth needs more entries */
	o.size = 1 << 20;
	img = imgbuild_new(&o);
	qi = open_writable();
	memset(buf, 0x77, sizeof(buf));
	cr_assert_eq(qcow2_image_write(qi, buf, sizeof(buf), 12345, NULL), 0);
	cr_assert_eq(qcow2_image_grow(qi, 1000), -EINVAL, "shrinking is refused");
	cr_assert_eq(qcow2_image_grow(qi, 64 << 20), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_write(qi, buf, sizeof(buf), (64 << 20) - 4096, NULL), 0);
	cr_assert_eq(qcow2_image_flush(qi), 0);
	assert_clean(qi, true);
	back = reopen(qcow2_image_io(qi), false);
	cr_assert_eq(qcow2_image_header(back)->size, 64u << 20);
	image_read(back, got, sizeof(got), 12345);
	cr_assert_arr_eq(got, buf, sizeof(buf));
	image_read(back, got, sizeof(got), (64 << 20) - 4096);
	cr_assert_arr_eq(got, buf, sizeof(buf));
	assert_clean(back, true);
	qcow2_image_close(back);
}

Test(write, a_read_only_image_refuses_writes)
{
	struct imgbuild_opts o = imgbuild_defaults();
	uint8_t b = 1;

	img = imgbuild_new(&o);
	cr_assert_eq(qcow2_image_open(imgbuild_io(img), "mem.qcow2", NULL, &qi), 0);
	cr_assert_eq(qcow2_image_write(qi, &b, 1, 0, NULL), -EROFS);
	cr_assert_eq(qcow2_image_zero(qi, 0, 512, NULL), -EROFS);
	cr_assert_eq(qcow2_image_grow(qi, 1 << 30), -EROFS);
}

Test(write, writes_past_the_end_are_refused)
{
	struct imgbuild_opts o = imgbuild_defaults();
	uint8_t b[2] = {1, 2};

	o.size = 1 << 20;
	img = imgbuild_new(&o);
	qi = open_writable();
	cr_assert_eq(qcow2_image_write(qi, b, 2, (1 << 20) - 1, NULL), -EFBIG);
}

Test(write, the_corrupt_bit_refuses_a_writable_open)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_image_opts wo = {.writable = true};

	o.incompat = QCOW2_INCOMPAT_CORRUPT;
	img = imgbuild_new(&o);
	cr_assert_eq(qcow2_image_open(imgbuild_io(img), "mem.qcow2", &wo, &qi), -EROFS);
	qi = NULL;
}

Test(write, the_first_write_keeps_bitmaps_clears_unknown_autoclear_bits_and_sets_lazy_dirty)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_image *back;
	uint8_t b = 9;

	o.bitmaps = true;
	o.lazy_refcounts = true;
	o.autoclear = 1ull << 7; /* unknown to us: cleared too */
	img = imgbuild_new(&o);
	qi = open_writable();
	back = reopen(qcow2_image_io(qi), false);
	cr_assert_eq(qcow2_image_header(back)->autoclear, QCOW2_AUTOCLEAR_BITMAPS | 1ull << 7,
		     "opening for writing changes nothing yet");
	qcow2_image_close(back);
	cr_assert_eq(qcow2_image_write(qi, &b, 1, 4096, NULL), 0);
	back = reopen(qcow2_image_io(qi), false);
	cr_assert_eq(qcow2_image_header(back)->autoclear, QCOW2_AUTOCLEAR_BITMAPS,
		     "unknown bits cleared, the bitmaps kept in force");
	cr_assert(qcow2_image_header(back)->has_bitmaps_ext, "the extension stays");
	cr_assert(qcow2_image_header(back)->incompat & QCOW2_INCOMPAT_DIRTY);
	qcow2_image_close(back);
}

Test(write, a_dirty_image_has_its_refcounts_rebuilt_on_a_writable_open)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_image *back;
	uint64_t entry_off, entry;
	uint8_t b = 9, raw[8];

	o.lazy_refcounts = true;
	o.incompat = QCOW2_INCOMPAT_DIRTY;
	img = imgbuild_new(&o);
	cr_assert_eq(imgbuild_fill(img, 0, 0x31, 1 << 20), 0);
	/* what lazy refcounts leave after a crash: data clusters without their refcount */
	{
		uint64_t idx = imgbuild_host_cluster(img, 0) >> o.cluster_bits;
		uint64_t block = imgbuild_get_be64(img, img->reftable_off);

		imgbuild_put_be16(img, block + 2 * idx, 0); /* 16-bit refcounts */
	}
	/* and a cluster used once whose entry lost its COPIED flag */
	entry_off = imgbuild_l2_entry_off(img, 65536);
	entry = imgbuild_get_be64(img, entry_off);
	cr_assert(entry & QCOW2_OFLAG_COPIED);
	imgbuild_put_be64(img, entry_off, entry & ~QCOW2_OFLAG_COPIED);
	qi = open_writable();
	cr_assert_eq(qcow2_io_pread_full(qcow2_image_io(qi), raw, 8, entry_off), 0);
	cr_assert_eq(get_be64(raw), entry, "the COPIED flag is back");
	back = reopen(qcow2_image_io(qi), false);
	cr_assert_eq(qcow2_image_header(back)->incompat & QCOW2_INCOMPAT_DIRTY, 0);
	assert_clean(back, false);
	qcow2_image_close(back);
	cr_assert_eq(qcow2_image_write(qi, &b, 1, 4096, NULL), 0);
}

/* Fail the Nth write of a write-back: what is on "disk" then must open and hold no pointer to
 * a cluster whose refcount is too low. */
Test(write, a_write_back_stopped_at_any_write_leaves_a_consistent_image)
{
	struct imgbuild_opts o = imgbuild_defaults();
	uint64_t size = 2u << 20;
	uint8_t *model = calloc(1, size);
	unsigned nth, stopped = 0;

	o.cluster_bits = 9; /* many tables: new L2 tables, refcount blocks, a moved table */
	o.size = size;
	o.reftable_clusters = 1;
	for (nth = 1; nth < 400; nth++) {
		struct qcow2_image *back;
		int r;

		img = imgbuild_new(&o);
		qi = open_writable();
		qcow2_io_mem_fail_nth(qcow2_image_io(qi), QCOW2_IO_WRITE, nth, -EIO);
		r = scribble(qi, model, size, 40, 7);
		if (r == 0)
			r = qcow2_image_flush(qi);
		back = reopen(qcow2_image_io(qi), false);
		assert_clean(back, true);
		qcow2_image_close(back);
		qcow2_io_mem_fail_nth(qcow2_image_io(qi), QCOW2_IO_WRITE, 0, 0);
		qcow2_image_close(qi);
		qi = NULL;
		imgbuild_free(img);
		img = NULL;
		if (r == 0)
			break; /* the Nth write came after everything: nothing left to stop */
		stopped++;
	}
	cr_assert_gt(stopped, 10, "the write-back was stopped at only %u points", stopped);
	free(model);
}
