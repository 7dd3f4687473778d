/* SPDX-License-Identifier: MIT */
/*
 * test_overlap.c - writes never make a damaged image worse (overlap.c): on images built
 * in memory and then damaged on purpose, a write that would land on live metadata fails with
 * EIO, leaves the metadata byte for byte as it was, sets the corrupt bit on disk and leaves the
 * image refusing further changes; live tables whose refcount says 0 are never handed out by the
 * allocator, and a writable open refuses an image whose own metadata has refcount 0.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgbuild.h"
#include "snapshot/snapshot.h"

#define CS	     65536ull
#define OFLAG_COPIED (1ull << 63)

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

TestSuite(overlap, .init = setup, .fini = teardown);

/* A default image (64 KiB clusters, 4 MiB) with data in guest clusters 0 and 1 and, with
 * @snapshot, an internal snapshot. */
static void build(bool snapshot)
{
	img = imgbuild_new(NULL);
	cr_assert_eq(imgbuild_fill(img, 0, 0x11, 2 * CS), 0);
	if (snapshot)
		cr_assert_eq(imgbuild_snapshot_add(img, NULL), 0);
}

static int open_rw(struct qcow2_image **out)
{
	struct qcow2_image_opts o = {.writable = true};

	return qcow2_image_open(imgbuild_io(img), "mem.qcow2", &o, out);
}

/* The bytes of the image file as the library left them. */
static const uint8_t *file_bytes(struct qcow2_image *q, size_t *len)
{
	return qcow2_io_mem_bytes(qcow2_image_io(q), len);
}

static uint64_t be64_at(const uint8_t *p, uint64_t off)
{
	return get_be64(p + off);
}

enum target { T_HEADER, T_L1, T_L2, T_REFT, T_REFBLOCK, T_SNAP_TABLE, T_SNAP_L1 };

struct target_case {
	enum target t; /* (no pointers: each test runs in a process of its own) */
};

/* What the messages call each target. */
static const char *const what[] = {"header",	       "L1 table",	 "L2 table",
				   "refcount table",   "refcount block", "snapshot table",
				   "snapshot L1 table"};

static uint64_t target_off(enum target t)
{
	switch (t) {
	case T_HEADER:
		return 0;
	case T_L1:
		return img->l1_off;
	case T_L2:
		return imgbuild_l2_entry_off(img, 0) & ~(CS - 1);
	case T_REFT:
		return img->reftable_off;
	case T_REFBLOCK:
		return imgbuild_get_be64(img, img->reftable_off);
	case T_SNAP_TABLE:
		return img->snap_table_off;
	default:
		return img->snaps[0].l1_off;
	}
}

ParameterizedTestParameters(overlap, write_over_metadata_refused_and_marked_corrupt)
{
	static struct target_case cases[] = {
	    {T_L1}, {T_L2}, {T_REFT}, {T_REFBLOCK}, {T_SNAP_TABLE}, {T_SNAP_L1},
	};
	return cr_make_param_array(struct target_case, cases, sizeof(cases) / sizeof(cases[0]));
}

/* An L2 entry with the COPIED flag points at live metadata: writing that guest cluster in place
 * would overwrite it. */
ParameterizedTest(struct target_case *c, overlap, write_over_metadata_refused_and_marked_corrupt)
{
	uint8_t buf[4096], *before;
	uint64_t meta;
	const uint8_t *after;
	size_t len;
	struct qcow2_image *again;

	build(c->t == T_SNAP_TABLE || c->t == T_SNAP_L1);
	meta = target_off(c->t);
	cr_assert_neq(meta, 0);
	imgbuild_put_be64(img, imgbuild_l2_entry_off(img, CS), meta | OFLAG_COPIED);
	before = malloc(img->len);
	memcpy(before, img->bytes, img->len);

	cr_assert_eq(open_rw(&qi), 0, "%s", qcow2_last_error());
	memset(buf, 0xee, sizeof(buf));
	cr_assert_eq(qcow2_image_write(qi, buf, sizeof(buf), CS + 512, NULL), -EIO);
	/* (the guard says it; or, where the table is shared with a snapshot and would be copied
	 * first, the check of the table before anything changes) */
	cr_assert(strstr(qcow2_last_error(), "preventing write on metadata") ||
		      strstr(qcow2_last_error(), "lies in the"),
		  "%s", qcow2_last_error());
	cr_assert(strstr(qcow2_last_error(), what[c->t]), "%s", qcow2_last_error());
	cr_assert(strstr(qcow2_last_error(), "mem.qcow2"), "%s", qcow2_last_error());

	/* the metadata cluster is as it was; the header only gained the corrupt bit */
	after = file_bytes(qi, &len);
	cr_assert_arr_eq(after + meta, before + meta, CS);
	cr_assert(be64_at(after, 72) & QCOW2_INCOMPAT_CORRUPT, "corrupt bit not set on disk");
	cr_assert_eq(be64_at(after, 72) & ~QCOW2_INCOMPAT_CORRUPT, be64_at(before, 72));

	/* no more changes, anywhere */
	cr_assert_not(qcow2_image_writable(qi));
	cr_assert_eq(qcow2_image_write(qi, buf, sizeof(buf), 3 * CS, NULL), -EROFS);
	cr_assert_eq(qcow2_image_zero(qi, 0, CS, NULL), -EROFS);
	cr_assert_eq(qcow2_image_grow(qi, 8 * CS << 4), -EROFS);
	cr_assert(strstr(qcow2_last_error(), "corrupt"), "%s", qcow2_last_error());

	/* closing writes back nothing that clears the mark; a new writable open is refused */
	{
		struct qcow2_io *io = qcow2_image_io(qi);
		const void *b = qcow2_io_mem_bytes(io, &len);
		struct qcow2_image_opts o = {.writable = true};
		struct qcow2_io *copy;

		cr_assert_eq(qcow2_image_flush(qi), 0, "%s", qcow2_last_error());
		b = qcow2_io_mem_bytes(io, &len);
		copy = qcow2_io_mem_new("copy.qcow2", b, len);
		cr_assert_eq(qcow2_image_open(copy, "copy.qcow2", &o, &again), -EROFS);
	}
	free(before);
}

/* An L1 entry names the refcount block as its L2 table: the write-back of either would
 * overwrite the other, so the write is refused before the table is changed (its entries are
 * checked first), the image is marked corrupt and nothing of them changes on disk. */
Test(overlap, l2_table_on_a_refcount_block_is_not_written_back)
{
	uint64_t block;
	uint8_t buf[4096], *before;
	const uint8_t *after;
	size_t len;

	build(false);
	block = imgbuild_get_be64(img, img->reftable_off);
	imgbuild_put_be64(img, img->l1_off, block | OFLAG_COPIED);
	before = malloc(img->len);
	memcpy(before, img->bytes, img->len);
	cr_assert_eq(open_rw(&qi), 0, "%s", qcow2_last_error());
	memset(buf, 0x77, sizeof(buf));
	cr_assert_eq(qcow2_image_write(qi, buf, sizeof(buf), 0, NULL), -EIO);
	cr_assert(strstr(qcow2_last_error(), "the table lies in the refcount block"), "%s",
		  qcow2_last_error());
	cr_assert_eq(qcow2_image_flush(qi), 0, "%s", qcow2_last_error());
	after = file_bytes(qi, &len);
	cr_assert_arr_eq(after + block, before + block, CS, "refcount block overwritten");
	cr_assert(be64_at(after, 72) & QCOW2_INCOMPAT_CORRUPT, "corrupt bit not set on disk");
	free(before);
}

/* The write path that copies: an entry without COPIED is rewritten into a new cluster, which
 * must not be one of the tables either (nothing refused, nothing marked). */
Test(overlap, clean_image_writes_are_not_refused)
{
	uint8_t *buf = malloc(CS * 3);
	const uint8_t *after;
	size_t len, i;

	build(true);
	cr_assert_eq(open_rw(&qi), 0, "%s", qcow2_last_error());
	for (i = 0; i < 3 * CS; i++)
		buf[i] = (uint8_t)(i * 7);
	for (i = 0; i < 64; i++)
		cr_assert_eq(qcow2_image_write(qi, buf, 3 * CS - 1000, i * 61 * 1024, NULL), 0,
			     "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_grow(qi, 1ull << 40), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_write(qi, buf, 4096, (1ull << 40) - 4096, NULL), 0, "%s",
		     qcow2_last_error());
	cr_assert_eq(qcow2_image_snapshot_create(qi, "after"), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_write(qi, buf, 4096, 8192, NULL), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_snapshot_delete(qi, "after"), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_snapshot_apply(qi, img->snaps[0].id), 0, "%s", qcow2_last_error());
	for (i = 0; i < 16; i++) /* into the tables the snapshot brought back */
		cr_assert_eq(qcow2_image_write(qi, buf, 5000, i * 200 * 1024, NULL), 0, "%s",
			     qcow2_last_error());
	cr_assert_eq(qcow2_image_flush(qi), 0, "%s", qcow2_last_error());
	cr_assert(qcow2_image_writable(qi));
	{
		struct qcow2_check_result res;

		cr_assert_eq(qcow2_image_check(qi, &res), 0, "%s", qcow2_last_error());
		cr_assert_eq(res.corruptions, 0);
	}
	after = file_bytes(qi, &len);
	cr_assert_not(be64_at(after, 72) & QCOW2_INCOMPAT_CORRUPT);
	free(buf);
}

/* Discarding the guest cluster whose entry points at the L1 table drops the entry but not the
 * table's own reference: the image comes out consistent, not with a live table at refcount 0. */
Test(overlap, discard_of_an_entry_into_metadata_keeps_the_table)
{
	struct qcow2_check_result res;
	struct qcow2_image_opts ro = {.writable = false};
	struct qcow2_image *q;
	const uint8_t *after;
	uint8_t *l1_before = malloc(CS);
	uint64_t block, v;
	size_t len;

	build(false);
	imgbuild_put_be64(img, imgbuild_l2_entry_off(img, CS), img->l1_off | OFLAG_COPIED);
	memcpy(l1_before, img->bytes + img->l1_off, CS);
	cr_assert_eq(open_rw(&qi), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_zero(qi, CS, CS, NULL), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_flush(qi), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_flush(qi), 0, "%s", qcow2_last_error());
	after = file_bytes(qi, &len);
	block = be64_at(after, img->reftable_off);
	v = (uint64_t)after[block + 2 * (img->l1_off / CS)] << 8 |
	    after[block + 2 * (img->l1_off / CS) + 1];
	cr_assert_eq(v, 1, "the L1 table's refcount is %lu", (unsigned long)v);
	cr_assert_arr_eq(after + img->l1_off, l1_before, CS);
	cr_assert_eq(
	    qcow2_image_open(qcow2_io_mem_new("copy.qcow2", after, len), "copy.qcow2", &ro, &q), 0,
	    "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_check(q, &res), 0, "%s", qcow2_last_error());
	cr_assert_eq(res.corruptions, 0, "%lu corruptions", (unsigned long)res.corruptions);
	qcow2_image_close(q);
	free(l1_before);
}

/* While the bitmaps are in force their directory and tables are live metadata; writes keep
 * them in force (the engine updates them), so they stay in the map. */
Test(overlap, bitmaps_stay_live_across_writes)
{
	struct imgbuild_opts o = imgbuild_defaults();
	uint8_t buf[512] = {0};

	o.bitmaps = true;
	img = imgbuild_new(&o);
	cr_assert_neq(img->bitmap_table_off, 0);
	cr_assert_eq(open_rw(&qi), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_overlap_busy(qi, img->bitmap_dir_off / CS, 1), img->bitmap_dir_off / CS);
	cr_assert_eq(qcow2_overlap_busy(qi, img->bitmap_table_off / CS, 1),
		     img->bitmap_table_off / CS);
	cr_assert_eq(qcow2_image_write(qi, buf, sizeof(buf), 0, NULL), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_overlap_busy(qi, img->bitmap_dir_off / CS, 1), img->bitmap_dir_off / CS);
	cr_assert_eq(qcow2_overlap_busy(qi, img->bitmap_table_off / CS, 1),
		     img->bitmap_table_off / CS);
}

/* Version 2 has no corrupt bit: the write is refused all the same and the image takes no more
 * changes; nothing on disk changes. */
Test(overlap, version_2_write_refused_without_a_corrupt_bit)
{
	struct imgbuild_opts o = imgbuild_defaults();
	uint8_t buf[4096], *before;
	const uint8_t *after;
	size_t len;

	o.version = 2;
	o.feature_table = false;
	img = imgbuild_new(&o);
	cr_assert_eq(imgbuild_fill(img, 0, 0x11, 2 * CS), 0);
	imgbuild_put_be64(img, imgbuild_l2_entry_off(img, CS), img->l1_off | OFLAG_COPIED);
	before = malloc(img->len);
	memcpy(before, img->bytes, img->len);
	cr_assert_eq(open_rw(&qi), 0, "%s", qcow2_last_error());
	memset(buf, 0xee, sizeof(buf));
	cr_assert_eq(qcow2_image_write(qi, buf, sizeof(buf), CS, NULL), -EIO);
	cr_assert_eq(qcow2_image_write(qi, buf, sizeof(buf), 3 * CS, NULL), -EROFS);
	cr_assert_eq(qcow2_image_flush(qi), 0, "%s", qcow2_last_error());
	after = file_bytes(qi, &len);
	cr_assert_eq(len, img->len);
	cr_assert_arr_eq(after, before, len, "a version 2 image changed");
	free(before);
}

/* Set the refcount (16 bits, the first refcount block) of the cluster at @off to @v. */
static void set_refcount(uint64_t off, uint16_t v)
{
	uint64_t block = imgbuild_get_be64(img, img->reftable_off);

	imgbuild_put_be16(img, block + 2 * (off / CS), v);
}

ParameterizedTestParameters(overlap, writable_open_refuses_metadata_with_refcount_0)
{
	static struct target_case cases[] = {
	    {T_L1}, {T_L2}, {T_REFT}, {T_REFBLOCK}, {T_SNAP_TABLE}, {T_SNAP_L1},
	};
	return cr_make_param_array(struct target_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct target_case *c, overlap, writable_open_refuses_metadata_with_refcount_0)
{
	struct qcow2_image_opts ro = {.writable = false};

	build(true);
	set_refcount(target_off(c->t), 0);
	cr_assert_eq(open_rw(&qi), -EUCLEAN);
	cr_assert(strstr(qcow2_last_error(), what[c->t]), "%s", qcow2_last_error());
	cr_assert(strstr(qcow2_last_error(), "refcount 0"), "%s", qcow2_last_error());
	/* still readable */
	cr_assert_eq(qcow2_image_open(imgbuild_io(img), "mem.qcow2", &ro, &qi), 0, "%s",
		     qcow2_last_error());
}

/* Live L1 and L2 clusters whose refcount says 0 (written anyway, as a repair opens them): new
 * clusters never land on them. */
Test(overlap, allocator_never_hands_out_live_metadata)
{
	struct qcow2_image_opts o = {.writable = true, .repair = true};
	uint64_t l1 = 0, l2 = 0, e;
	uint8_t *buf = malloc(4 * CS), *l1_before = malloc(CS), *l2_before = malloc(CS);
	const uint8_t *after;
	size_t len;
	uint32_t i;

	build(false);
	l1 = img->l1_off;
	l2 = imgbuild_l2_entry_off(img, 0) & ~(CS - 1);
	set_refcount(l1, 0);
	set_refcount(l2, 0);
	memcpy(l1_before, img->bytes + l1, CS);
	memcpy(l2_before, img->bytes + l2, CS);
	cr_assert_eq(qcow2_image_open(imgbuild_io(img), "mem.qcow2", &o, &qi), 0, "%s",
		     qcow2_last_error());
	memset(buf, 0x5a, 4 * CS);
	/* one new cluster at a time (guest 2..5): each could fill a single free cluster */
	for (i = 2; i < 6; i++)
		cr_assert_eq(qcow2_image_write(qi, buf, CS, i * CS, NULL), 0, "%s",
			     qcow2_last_error());
	cr_assert_eq(qcow2_image_flush(qi), 0, "%s", qcow2_last_error());
	after = file_bytes(qi, &len);
	cr_assert_arr_eq(after + l1 + 8, l1_before + 8, CS - 8, "L1 table overwritten");
	cr_assert_eq(be64_at(after, l1) & QCOW2_L1E_OFFSET_MASK, l2);
	for (i = 2; i < 6; i++) {
		e = be64_at(after, l2 + 8 * i) & QCOW2_L2E_OFFSET_MASK;
		cr_assert_neq(e, 0);
		cr_assert_neq(e, l1, "guest cluster %u allocated over the L1 table", i);
		cr_assert_neq(e, l2, "guest cluster %u allocated over its L2 table", i);
	}
	free(buf);
	free(l1_before);
	free(l2_before);
}

struct churn_case {
	uint32_t cluster_bits;
	uint32_t refcount_order;
};

ParameterizedTestParameters(overlap, map_stays_true_through_every_change)
{
	static struct churn_case cases[] = {{16, 4}, {9, 4}, {10, 5}, {12, 6}};
	return cr_make_param_array(struct churn_case, cases, sizeof(cases) / sizeof(cases[0]));
}

/* What @q holds as live metadata is exactly what a fresh open of its bytes (flushed) finds:
 * nothing missing (a write could overwrite it), nothing stale (never reused). */
static void assert_map_true(struct qcow2_image *q, int step)
{
	struct qcow2_image_opts wo = {.writable = true};
	struct qcow2_image *fresh;
	uint64_t cs = q->cluster_bytes, n, i, busy, fresh_busy;
	const void *b;
	size_t len;

	cr_assert_eq(qcow2_image_flush(q), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_flush(q), 0, "%s", qcow2_last_error());
	b = file_bytes(q, &len);
	cr_assert_eq(
	    qcow2_image_open(qcow2_io_mem_new("fresh.qcow2", b, len), "fresh.qcow2", &wo, &fresh),
	    0, "step %d: %s", step, qcow2_last_error());
	n = (len + cs - 1) / cs + 64;
	for (i = 0; i < n; i = busy + 1) {
		busy = qcow2_overlap_busy(q, i, n - i);
		fresh_busy = qcow2_overlap_busy(fresh, i, n - i);
		cr_assert_eq(busy, fresh_busy,
			     "step %d: cluster %#lx is live metadata in one map only", step,
			     (unsigned long)(busy < fresh_busy ? busy : fresh_busy));
		if (busy == UINT64_MAX)
			break;
	}
	qcow2_image_close(fresh);
}

/* After each of a series of writes, discards, growths (L1 table moves, new refcount blocks)
 * and snapshot operations, the map of live metadata is true (assert_map_true()). */
ParameterizedTest(struct churn_case *c, overlap, map_stays_true_through_every_change)
{
	struct imgbuild_opts o = imgbuild_defaults();
	uint64_t seed = 42, cs, size;
	uint8_t *buf;
	int k;

	o.cluster_bits = c->cluster_bits;
	o.refcount_order = c->refcount_order;
	o.size = 4ull << 20;
	img = imgbuild_new(&o);
	cs = img->cluster_bytes;
	cr_assert_eq(imgbuild_fill(img, 0, 0x11, 64 * 1024), 0);
	cr_assert_eq(open_rw(&qi), 0, "%s", qcow2_last_error());
	buf = malloc(256 * 1024);
	memset(buf, 0x3c, 256 * 1024);
	for (k = 0; k < 120; k++) {
		uint64_t r = imgbuild_rand(&seed), off, len_w;

		size = qcow2_image_header(qi)->size;
		off = (r >> 8) % size;
		len_w = 1 + (r >> 40) % (256 * 1024);
		if (len_w > size - off)
			len_w = size - off;
		switch (r % 11) {
		case 0:
			cr_assert_eq(qcow2_image_zero(qi, off & ~(cs - 1), len_w & ~(cs - 1), NULL),
				     0, "%s", qcow2_last_error());
			break;
		case 1:
			cr_assert_eq(qcow2_image_grow(qi, size + (r >> 50) * cs * 8), 0, "%s",
				     qcow2_last_error());
			break;
		case 2:
			if (qcow2_image_snapshot_count(qi) < 3) {
				char name[16];

				snprintf(name, sizeof(name), "s%d", k);
				cr_assert_eq(qcow2_image_snapshot_create(qi, name), 0, "%s",
					     qcow2_last_error());
			} else {
				cr_assert_eq(
				    qcow2_image_snapshot_delete(
					qi, qcow2_image_snapshot(qi, (uint32_t)(r >> 20) % 3)->id),
				    0, "%s", qcow2_last_error());
			}
			break;
		case 3:
			if (qcow2_image_snapshot_count(qi))
				cr_assert_eq(
				    qcow2_image_snapshot_apply(qi, qcow2_image_snapshot(qi, 0)->id),
				    0, "%s", qcow2_last_error());
			break;
		case 4:
			cr_assert_eq(qcow2_image_flush(qi), 0, "%s", qcow2_last_error());
			break;
		default:
			cr_assert_eq(qcow2_image_write(qi, buf, (size_t)len_w, off, NULL), 0, "%s",
				     qcow2_last_error());
		}
		assert_map_true(qi, k);
	}
	cr_assert(qcow2_image_writable(qi));
	free(buf);
}

enum bad_entry { B_FREE_DATA, B_COPIED_SHARED, B_NAMED_TWICE, B_IN_L1 };

struct bad_entry_case {
	enum bad_entry b;
};

ParameterizedTestParameters(overlap, table_with_a_bad_entry_is_not_changed)
{
	static struct bad_entry_case cases[] = {
	    {B_FREE_DATA}, {B_COPIED_SHARED}, {B_NAMED_TWICE}, {B_IN_L1}};
	return cr_make_param_array(struct bad_entry_case, cases, sizeof(cases) / sizeof(cases[0]));
}

/* One entry of an L2 table is wrong in a way that makes changing that table, or writing in
 * place through it, harm other data: its data cluster has refcount 0 (the allocator would hand
 * it out again), COPIED on a cluster shared with a snapshot (a write in place changes the
 * snapshot), a cluster named twice with COPIED (a write in place changes the other guest
 * cluster), or data in the L1 table (QEMU's count of it is wrong, and the entry is in a table
 * that the write changes). A write to another guest cluster mapped by the same table (or to
 * the shared one) fails with EIO before anything changes but the corrupt bit, saying which
 * entry and why. */
ParameterizedTest(struct bad_entry_case *c, overlap, table_with_a_bad_entry_is_not_changed)
{
	static const char *const why[] = {"has refcount 0", "has refcount 2 but is marked",
					  "named twice", "lies in the L1 table"};
	uint8_t buf[4096], *before;
	const uint8_t *after;
	uint64_t e0, target = 2 * CS;
	size_t len;

	build(c->b == B_COPIED_SHARED);
	e0 = imgbuild_get_be64(img, imgbuild_l2_entry_off(img, 0));
	switch (c->b) {
	case B_FREE_DATA:
		set_refcount(imgbuild_host_cluster(img, 0), 0);
		break;
	case B_COPIED_SHARED:
		imgbuild_put_be64(img, imgbuild_l2_entry_off(img, 0), e0 | OFLAG_COPIED);
		target = 0;
		break;
	case B_NAMED_TWICE:
		imgbuild_put_be64(img, imgbuild_l2_entry_off(img, 3 * CS), e0 | OFLAG_COPIED);
		target = 0;
		break;
	case B_IN_L1:
		imgbuild_put_be64(img, imgbuild_l2_entry_off(img, CS), img->l1_off | OFLAG_COPIED);
		break;
	}
	before = malloc(img->len);
	memcpy(before, img->bytes, img->len);
	cr_assert_eq(open_rw(&qi), 0, "%s", qcow2_last_error());
	memset(buf, 0xee, sizeof(buf));
	cr_assert_eq(qcow2_image_write(qi, buf, sizeof(buf), target, NULL), -EIO);
	cr_assert(strstr(qcow2_last_error(), why[c->b]), "%s", qcow2_last_error());
	cr_assert(strstr(qcow2_last_error(), "mem.qcow2"), "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_write(qi, buf, sizeof(buf), 3 * CS, NULL), -EROFS);
	cr_assert_eq(qcow2_image_flush(qi), 0, "%s", qcow2_last_error());
	after = file_bytes(qi, &len);
	cr_assert_eq(len, img->len);
	cr_assert(be64_at(after, 72) & QCOW2_INCOMPAT_CORRUPT, "corrupt bit not set on disk");
	cr_assert_arr_eq(after + 80, before + 80, len - 80, "the image changed");
	free(before);
}

/* The bad entry is in another table than the one written (4 KiB clusters: a table maps 2 MiB):
 * the new cluster the write allocates could be the one with refcount 0 that guest 0 still
 * uses. Every active table is checked before the first change of an open. */
Test(overlap, bad_entry_in_another_table_refuses_the_first_change)
{
	struct imgbuild_opts o = imgbuild_defaults();
	uint8_t buf[4096], *before;
	const uint8_t *after;
	uint64_t host, block;
	size_t len;

	o.cluster_bits = 12;
	img = imgbuild_new(&o);
	cr_assert_eq(imgbuild_fill(img, 0, 0x11, 8192), 0);
	host = imgbuild_host_cluster(img, 0);
	block = imgbuild_get_be64(img, img->reftable_off);
	imgbuild_put_be16(img, block + 2 * (host >> 12), 0);
	before = malloc(img->len);
	memcpy(before, img->bytes, img->len);
	cr_assert_eq(open_rw(&qi), 0, "%s", qcow2_last_error());
	memset(buf, 0xee, sizeof(buf));
	cr_assert_eq(qcow2_image_write(qi, buf, sizeof(buf), 3 << 20, NULL), -EIO);
	cr_assert(strstr(qcow2_last_error(), "has refcount 0"), "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_grow(qi, 8 << 20), -EROFS);
	cr_assert_eq(qcow2_image_flush(qi), 0, "%s", qcow2_last_error());
	after = file_bytes(qi, &len);
	cr_assert_eq(len, img->len);
	cr_assert_arr_eq(after + 80, before + 80, len - 80, "the image changed");
	free(before);
}

/* An entry with COPIED names its own L2 table, which the active state shares with a snapshot:
 * a write there would first copy the table (the copy still naming the old one, now the
 * snapshot's alone, as data) and then write into the snapshot's table. Refused before
 * anything changes. */
Test(overlap, entry_into_a_shared_table_refused_before_the_copy)
{
	uint8_t buf[4096], *before;
	const uint8_t *after;
	uint64_t table;
	size_t len;

	build(true);
	table = imgbuild_l2_entry_off(img, 0) & ~(CS - 1);
	imgbuild_put_be64(img, imgbuild_l2_entry_off(img, CS), table | OFLAG_COPIED);
	before = malloc(img->len);
	memcpy(before, img->bytes, img->len);
	cr_assert_eq(open_rw(&qi), 0, "%s", qcow2_last_error());
	memset(buf, 0xee, sizeof(buf));
	cr_assert_eq(qcow2_image_write(qi, buf, sizeof(buf), CS, NULL), -EIO);
	cr_assert(strstr(qcow2_last_error(), "lies in the L2 table"), "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_flush(qi), 0, "%s", qcow2_last_error());
	after = file_bytes(qi, &len);
	cr_assert_eq(len, img->len);
	cr_assert(be64_at(after, 72) & QCOW2_INCOMPAT_CORRUPT, "corrupt bit not set on disk");
	cr_assert_arr_eq(after + 80, before + 80, len - 80, "the image changed");
	free(before);
}
