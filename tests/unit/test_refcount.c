/* SPDX-License-Identifier: MIT */
/*
 * test_refcount.c - refcount entries of every width (qcow2_refcount_block_get()), and the
 * refcount table and blocks of open images (qcow2_image_refcount(),
 * qcow2_image_used_clusters()), compared with the counts imgbuild keeps.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "imgbuild.h"
#include "image/image.h"
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
	qcow2_image_unload(qi);
	imgbuild_free(img);
}

TestSuite(refcount, .init = setup, .fini = teardown);

struct order_case {
	uint32_t order;
};

ParameterizedTestParameters(refcount, block_entries_of_every_width_decode)
{
	static struct order_case cases[] = {{0}, {1}, {2}, {3}, {4}, {5}, {6}};
	return cr_make_param_array(struct order_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct order_case *c, refcount, block_entries_of_every_width_decode)
{
	uint32_t bits = 1u << c->order;
	uint64_t max = bits == 64 ? UINT64_MAX : (1ull << bits) - 1;
	uint64_t n = 4096 * 8 / bits, i, seed = 42 + c->order;
	uint64_t *want = calloc(n, sizeof(*want));
	uint8_t *block = calloc(1, 4096);

	cr_assert(want && block);
	for (i = 0; i < n; i++) {
		want[i] = imgbuild_rand(&seed) & max;
		if (i % 97 == 0)
			want[i] = max; /* all bits set */
		if (i % 89 == 0)
			want[i] = 0;
		testutil_put_refcount(block, c->order, i, want[i]);
	}
	for (i = 0; i < n; i++)
		cr_assert_eq(qcow2_refcount_block_get(block, c->order, i), want[i],
			     "order %u entry %llu", c->order, (unsigned long long)i);
	free(want);
	free(block);
}

Test(refcount, sub_byte_entries_start_at_the_least_significant_bit)
{
	static const uint8_t one_bit[] = {0x01, 0x80};
	static const uint8_t two_bits[] = {0x1b}; /* 00 01 10 11 */
	static const uint8_t four_bits[] = {0x21, 0xf0};

	cr_assert_eq(qcow2_refcount_block_get(one_bit, 0, 0), 1);
	cr_assert_eq(qcow2_refcount_block_get(one_bit, 0, 1), 0);
	cr_assert_eq(qcow2_refcount_block_get(one_bit, 0, 7), 0);
	cr_assert_eq(qcow2_refcount_block_get(one_bit, 0, 8), 0);
	cr_assert_eq(qcow2_refcount_block_get(one_bit, 0, 15), 1);
	cr_assert_eq(qcow2_refcount_block_get(two_bits, 1, 0), 3);
	cr_assert_eq(qcow2_refcount_block_get(two_bits, 1, 1), 2);
	cr_assert_eq(qcow2_refcount_block_get(two_bits, 1, 2), 1);
	cr_assert_eq(qcow2_refcount_block_get(two_bits, 1, 3), 0);
	cr_assert_eq(qcow2_refcount_block_get(four_bits, 2, 0), 1);
	cr_assert_eq(qcow2_refcount_block_get(four_bits, 2, 1), 2);
	cr_assert_eq(qcow2_refcount_block_get(four_bits, 2, 2), 0);
	cr_assert_eq(qcow2_refcount_block_get(four_bits, 2, 3), 15);
}

Test(refcount, wide_entries_are_big_endian)
{
	static const uint8_t b[] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
				    0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10};

	cr_assert_eq(qcow2_refcount_block_get(b, 3, 1), 0x02);
	cr_assert_eq(qcow2_refcount_block_get(b, 4, 1), 0x0304);
	cr_assert_eq(qcow2_refcount_block_get(b, 5, 1), 0x05060708);
	cr_assert_eq(qcow2_refcount_block_get(b, 6, 1), 0x090a0b0c0d0e0f10ull);
}

/* ---- images ---- */

struct image_case {
	uint32_t order;
	uint32_t cluster_bits;
};

ParameterizedTestParameters(refcount, image_refcounts_match_the_builder)
{
	static struct image_case cases[] = {
	    {0, 9},  {1, 9},  {2, 9},  {3, 9},	{4, 9},	 {5, 9},  {6, 9},
	    {0, 16}, {1, 16}, {2, 16}, {3, 16}, {4, 16}, {5, 16}, {6, 16},
	};
	return cr_make_param_array(struct image_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct image_case *c, refcount, image_refcounts_match_the_builder)
{
	struct imgbuild_opts o = imgbuild_defaults();
	uint64_t cs, idx, rc, used = 0, want_used = 0, seed = c->order;
	uint8_t *buf;
	int i;

	o.refcount_order = c->order;
	o.cluster_bits = c->cluster_bits;
	o.size = 2 << 20;
	img = imgbuild_new(&o);
	cs = img->cluster_bytes;
	buf = malloc(cs);
	/* Data, compressed clusters packed into shared host clusters, and (where refcounts can
	 * exceed 1) snapshots sharing everything. */
	for (i = 0; i < 40; i++) {
		uint64_t off = (imgbuild_rand(&seed) % (o.size / cs)) * cs;

		imgbuild_pattern(buf, cs, off, (uint8_t)i);
		if (i % 3 == 0)
			cr_assert_eq(imgbuild_write_compressed(img, off, buf, NULL, NULL), 0);
		else
			cr_assert_eq(imgbuild_write(img, off, buf, cs), 0);
		if (i % 15 == 14 && c->order > 0) {
			int r = imgbuild_snapshot_add(img, NULL);
			cr_assert(r == 0 || r == -ERANGE, "snapshot: %d", r); /* narrow refcounts */
		}
	}
	free(buf);
	cr_assert_eq(imgbuild_load(img, &qi), 0, "%s", qcow2_last_error());
	for (idx = 0; idx < img->len / cs; idx++) {
		cr_assert_eq(qcow2_image_refcount(qi, idx, &rc), 0, "%s", qcow2_last_error());
		cr_assert_eq(rc, imgbuild_refcount(img, idx), "cluster %llu",
			     (unsigned long long)idx);
		want_used += rc != 0;
	}
	cr_assert_eq(qcow2_image_refcount(qi, 0, &rc), 0);
	cr_assert_eq(rc, 1, "the header cluster");
	cr_assert_eq(qcow2_image_refcount(qi, img->len / cs + 5, &rc), 0);
	cr_assert_eq(rc, 0, "past the end of the file");
	cr_assert_eq(qcow2_image_refcount(qi, UINT64_MAX / 2, &rc), 0);
	cr_assert_eq(rc, 0, "past the refcount table");
	cr_assert_eq(qcow2_image_used_clusters(qi, &used), 0, "%s", qcow2_last_error());
	cr_assert_eq(used, want_used);
}

Test(refcount, snapshots_share_clusters)
{
	struct qcow2_image_opts none = {0};
	uint64_t rc, host, l2;

	img = imgbuild_new(NULL);
	cr_assert_eq(imgbuild_fill(img, 0, 0x5a, 4096), 0);
	host = imgbuild_host_cluster(img, 0);
	l2 = imgbuild_get_be64(img, img->l1_off) & QCOW2_L1E_OFFSET_MASK;
	cr_assert_eq(imgbuild_snapshot_add(img, NULL), 0);
	cr_assert_eq(imgbuild_snapshot_add(img, NULL), 0);
	cr_assert_eq(qcow2_image_load(imgbuild_io(img), "mem", &none, &qi), 0, "%s",
		     qcow2_last_error());
	cr_assert_eq(qcow2_image_refcount(qi, host / img->cluster_bytes, &rc), 0);
	cr_assert_eq(rc, 3, "active + two snapshots");
	cr_assert_eq(qcow2_image_refcount(qi, l2 / img->cluster_bytes, &rc), 0);
	cr_assert_eq(rc, 3);
	cr_assert_eq(qcow2_image_refcount(qi, img->snaps[0].l1_off / img->cluster_bytes, &rc), 0);
	cr_assert_eq(rc, 1, "a snapshot's own L1 table");
}

Test(refcount, packed_compressed_clusters_count_each_user)
{
	uint64_t rc, a, b, cs;
	uint8_t *buf;

	img = imgbuild_new(NULL);
	cs = img->cluster_bytes;
	buf = calloc(1, cs);
	cr_assert_eq(imgbuild_write_compressed(img, 0, buf, &a, NULL), 0);
	cr_assert_eq(imgbuild_write_compressed(img, cs, buf, &b, NULL), 0);
	free(buf);
	cr_assert_eq(a / cs, b / cs, "both in one host cluster");
	cr_assert_eq(imgbuild_load(img, &qi), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_refcount(qi, a / cs, &rc), 0);
	cr_assert_eq(rc, 2);
}

/* The refcount table may be loaded when the image opens or on first use: either way a bad
 * table must surface as -EUCLEAN, and never as a wrong count. */
static int open_then_refcount(uint64_t idx, uint64_t *rc)
{
	int r = imgbuild_load(img, &qi);

	if (r < 0)
		return r;
	return qcow2_image_refcount(qi, idx, rc);
}

Test(refcount, misaligned_refcount_table_entry_is_corruption)
{
	uint64_t rc = 77, used;

	img = imgbuild_new(NULL);
	imgbuild_put_be64(img, img->reftable_off, imgbuild_get_be64(img, img->reftable_off) + 512);
	cr_assert_eq(open_then_refcount(0, &rc), -EUCLEAN);
	if (qi)
		cr_assert_eq(qcow2_image_used_clusters(qi, &used), -EUCLEAN);
}

Test(refcount, refcount_table_entry_with_low_bits_is_corruption)
{
	uint64_t rc = 77;

	img = imgbuild_new(NULL);
	imgbuild_put_be64(img, img->reftable_off, imgbuild_get_be64(img, img->reftable_off) | 1);
	cr_assert_eq(open_then_refcount(0, &rc), -EUCLEAN);
}

Test(refcount, refcount_block_past_end_of_file_is_corruption)
{
	uint64_t rc = 77, used;

	img = imgbuild_new(NULL);
	imgbuild_put_be64(img, img->reftable_off, img->len + img->cluster_bytes);
	cr_assert_eq(open_then_refcount(0, &rc), -EUCLEAN);
	cr_assert_not_null(qi, "the block is only read on use");
	cr_assert_eq(qcow2_image_used_clusters(qi, &used), -EUCLEAN);
	/* the message names the structure, not only the read that failed */
	assert_error_mentions("refcount block 0 at");
	assert_error_mentions("is outside the image");
}

/* An entry so large that no read can reach it: named the same way. */
Test(refcount, refcount_block_out_of_range_is_named)
{
	uint64_t rc = 77, used;

	img = imgbuild_new(NULL);
	imgbuild_put_be64(img, img->reftable_off, 0x8000000000040000ull);
	cr_assert_lt(open_then_refcount(0, &rc), 0);
	assert_error_mentions("refcount block 0 at 0x8000000000040000 is outside the image");
	if (qi) {
		cr_assert_lt(qcow2_image_used_clusters(qi, &used), 0);
		assert_error_mentions("refcount block 0 at 0x8000000000040000 is outside");
	}
}

Test(refcount, read_errors_on_refcount_blocks_propagate)
{
	uint64_t rc = 77, used = 77;
	unsigned nth;

	img = imgbuild_new(NULL);
	cr_assert_eq(imgbuild_load(img, &qi), 0, "%s", qcow2_last_error());
	/* Whatever read the lookup makes first (the table, if loaded lazily, or the block). */
	for (nth = 1; nth <= 3; nth++) {
		qcow2_io_mem_fail_nth(qcow2_image_io(qi), QCOW2_IO_READ, nth, -EIO);
		int r = qcow2_image_refcount(qi, 0, &rc);
		if (r == 0) {
			cr_assert_eq(rc, 1);
			qcow2_io_mem_fail_nth(qcow2_image_io(qi), QCOW2_IO_READ, 0, 0);
			break;
		}
		cr_assert_eq(r, -EIO, "nth=%u: %s", nth, qcow2_last_error());
	}
	qcow2_io_mem_fail_nth(qcow2_image_io(qi), QCOW2_IO_READ, 1, -EIO);
	cr_assert_eq(qcow2_image_used_clusters(qi, &used), -EIO);
	cr_assert_eq(used, 77, "untouched on failure");
	cr_assert_eq(qcow2_image_refcount(qi, 0, &rc), 0, "a failed read leaves no trace");
	cr_assert_eq(rc, 1);
}
