/* SPDX-License-Identifier: MIT */
/*
 * test_snapshot_write.c - creating, applying and deleting internal snapshots (snapshot-plan.c,
 * snapshot-write.c) on images built in memory, against a model of every view kept by the test:
 * the active state and each snapshot read back byte for byte (through the same image and
 * through a reopened copy of its bytes), refcounts equal to what points at every cluster, the
 * COPIED flag set exactly where a refcount is 1, other entries of the snapshot table kept byte
 * for byte; refusals that change nothing; and each operation stopped at every one of its writes
 * and flushes (the memory backend fails the Nth one, where a crash would stop it): the bytes
 * then on "disk" open, hold no cluster whose refcount is below its references, no COPIED flag
 * on a cluster a snapshot still uses, and show either the state before or the state after;
 * and the image that saw the failure goes on working.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "imgbuild.h"
#include "integrity/integrity.h"
#include "snapshot_model.h"
#include "testutil.h"

static struct imgbuild *img;
static struct qcow2_image *qi;
static struct model m;

static void setup(void)
{
	img = NULL;
	qi = NULL;
	memset(&m, 0, sizeof(m));
}

static void teardown(void)
{
	qcow2_image_close(qi);
	imgbuild_free(img);
	model_free(&m);
}

TestSuite(snapshot_write, .init = setup, .fini = teardown);

static struct qcow2_image *open_writable(void)
{
	struct qcow2_image_opts o = {.writable = true};
	struct qcow2_image *q;

	cr_assert_eq(qcow2_image_open(imgbuild_io(img), "mem.qcow2", &o, &q), 0, "%s",
		     qcow2_last_error());
	return q;
}

/* ---- images ---- */

struct shape {
	uint32_t version, cluster_bits, refcount_order;
	bool extended_l2;
	uint64_t size;
};

/* Data of every kind (plain, compressed, zeros), a snapshot, more data, a second snapshot
 * with VM state recorded (its extra data and icount kept), and more data. */
static void build(const struct shape *s)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct imgbuild_snapshot_opts vm = {.name = "vm",
					    .extra_bytes = 24,
					    .vm_state_bytes = 765,
					    .vm_clock_nsec = 1234567890123ull,
					    .icount = 42};
	uint64_t cs = 1ull << s->cluster_bits;
	uint8_t *c = xmalloc(cs);

	o.version = s->version;
	o.cluster_bits = s->cluster_bits;
	o.refcount_order = s->refcount_order;
	o.extended_l2 = s->extended_l2;
	o.size = s->size;
	img = imgbuild_new(&o);
	cr_assert_eq(imgbuild_fill(img, 0, 0x11, (size_t)(s->size / 2)), 0);
	imgbuild_pattern(c, cs, 3 * cs, 0x5a);
	cr_assert_eq(imgbuild_write_compressed(img, 3 * cs, c, NULL, NULL), 0);
	imgbuild_pattern(c, cs, 4 * cs, 0x5b);
	cr_assert_eq(imgbuild_write_compressed(img, 4 * cs, c, NULL, NULL), 0);
	cr_assert_eq(imgbuild_snapshot_add(img, &(struct imgbuild_snapshot_opts){.name = "one"}),
		     0);
	cr_assert_eq(imgbuild_fill(img, s->size / 4, 0x22, (size_t)cs * 3 + 100), 0);
	if (s->version >= 3)
		cr_assert_eq(imgbuild_zero(img, 8 * cs, 2 * cs), 0);
	cr_assert_eq(imgbuild_snapshot_add(img, &vm), 0);
	cr_assert_eq(imgbuild_fill(img, s->size - 5000, 0x33, 5000), 0);
	free(c);
	model_from_builder(&m, img);
}

/* Writes over the active state, shared clusters included, through the same image; @x
 * follows them. */
static void write_over(struct qcow2_image *q, struct model *x, uint8_t tag)
{
	static const uint64_t offs[] = {0, 3 * 512 + 7, 70000, 200000};
	uint8_t buf[5000];
	size_t i;

	memset(buf, tag, sizeof(buf));
	for (i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
		uint64_t off = offs[i] % (x->size - sizeof(buf));

		cr_assert_eq(qcow2_image_write(q, buf, sizeof(buf), off, NULL), 0, "%s",
			     qcow2_last_error());
		memcpy(x->active + off, buf, sizeof(buf));
	}
	cr_assert_eq(qcow2_image_flush(q), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_flush(q), 0, "%s", qcow2_last_error());
}

static const struct shape default_shape = {3, 16, 4, false, 1 << 20};

static int find(struct qcow2_image *q, const char *name)
{
	uint32_t i;

	for (i = 0; i < qcow2_image_snapshot_count(q); i++)
		if (!strcmp(qcow2_image_snapshot(q, i)->name, name))
			return (int)i;
	return -1;
}

/* ---- the table entry ---- */

Test(snapshot_write, an_encoded_entry_decodes_to_the_same_fields)
{
	struct qcow2_snapshot s = {.id = "12",
				   .name = "before upgrade",
				   .l1_off = 0x50000,
				   .l1_entries = 7,
				   .date_sec = 1700000000,
				   .date_nsec = 123,
				   .vm_clock_nsec = 5,
				   .vm_state_bytes = 1ull << 33,
				   .disk_bytes = 3ull << 30,
				   .icount = ~0ull};
	struct qcow2_snapshot got;
	uint8_t buf[256];
	size_t len = qcow2_snapshot_entry_encode(&s, NULL);

	cr_assert_eq(len % 8, 0, "entries are padded to 8 bytes");
	cr_assert_eq(qcow2_snapshot_entry_encode(&s, buf), len);
	cr_assert_eq(qcow2_snapshot_entry_bytes(buf, len), (ssize_t)len);
	cr_assert_eq(qcow2_snapshot_table_decode(buf, len, 1, 3, 1, &got), (ssize_t)len);
	cr_assert_str_eq(got.id, "12");
	cr_assert_str_eq(got.name, "before upgrade");
	cr_assert_eq(got.l1_off, s.l1_off);
	cr_assert_eq(got.l1_entries, 7);
	cr_assert_eq(got.date_sec, s.date_sec);
	cr_assert_eq(got.date_nsec, 123);
	cr_assert_eq(got.vm_clock_nsec, 5);
	cr_assert_eq(got.vm_state_bytes, 1ull << 33, "the 64-bit VM state size of the extra data");
	cr_assert_eq(got.disk_bytes, 3ull << 30);
	cr_assert_eq(got.icount, ~0ull);
	cr_assert_eq(get_be32(buf + 36), QCOW2_SNAPSHOT_EXTRA_BYTES);
	qcow2_snapshot_release(&got, 1);
}

/* ---- every view through a sequence of operations ---- */

ParameterizedTestParameters(snapshot_write, every_view_stays_right_through_create_apply_delete)
{
	static struct shape cases[] = {
	    {3, 16, 4, false, 1 << 20}, {2, 16, 4, false, 1 << 20}, {3, 9, 4, false, 256 << 10},
	    {3, 16, 6, false, 1 << 20}, {3, 16, 4, true, 1 << 20},  {3, 12, 3, false, 1 << 20},
	};
	return cr_make_param_array(struct shape, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct shape *s, snapshot_write,
		  every_view_stays_right_through_create_apply_delete)
{
	build(s);
	qi = open_writable();
	assert_done(qi, &m, "as built");
	cr_assert_eq(qcow2_image_snapshot_create(qi, "new"), 0, "%s", qcow2_last_error());
	model_create(&m, "new");
	cr_assert_str_eq(qcow2_image_snapshot(qi, 2)->id, "3", "the next id, as QEMU picks it");
	assert_done(qi, &m, "created");
	write_over(qi, &m, 0x44);
	assert_done(qi, &m, "written after create");
	cr_assert_eq(qcow2_image_snapshot_apply(qi, "one"), 0, "%s", qcow2_last_error());
	model_apply(&m, 0);
	assert_done(qi, &m, "applied");
	write_over(qi, &m, 0x55);
	assert_done(qi, &m, "written after apply");
	cr_assert_eq(qcow2_image_snapshot_delete(qi, "new"), 0, "%s", qcow2_last_error());
	model_delete(&m, 2);
	assert_done(qi, &m, "deleted new");
	cr_assert_eq(qcow2_image_snapshot_apply(qi, "vm"), 0, "%s", qcow2_last_error());
	model_apply(&m, 1);
	assert_done(qi, &m, "applied vm");
	cr_assert_eq(qcow2_image_snapshot_delete(qi, "1"), 0, "by id: %s", qcow2_last_error());
	model_delete(&m, 0);
	cr_assert_eq(qcow2_image_snapshot_delete(qi, "vm"), 0, "%s", qcow2_last_error());
	model_delete(&m, 0);
	assert_done(qi, &m, "every snapshot deleted");
	cr_assert_eq(qcow2_image_header(qi)->snapshots_off, 0, "no table, as QEMU leaves it");
	write_over(qi, &m, 0x66);
	cr_assert_eq(qcow2_image_snapshot_create(qi, "again"), 0, "%s", qcow2_last_error());
	model_create(&m, "again");
	cr_assert_str_eq(qcow2_image_snapshot(qi, 0)->id, "1");
	write_over(qi, &m, 0x77);
	assert_done(qi, &m, "created again");
}

/* Snapshot a snapshot's worth of compressed clusters packed into shared host clusters: each
 * compressed cluster holds one reference to every host cluster it touches. */
Test(snapshot_write, packed_compressed_clusters_are_counted_per_reference)
{
	struct imgbuild_opts o = imgbuild_defaults();
	uint8_t c[512];
	uint64_t g;

	o.cluster_bits = 9;
	o.size = 64 << 10;
	img = imgbuild_new(&o);
	for (g = 0; g < o.size; g += 512) {
		memset(c, (int)(g / 512), sizeof(c));
		cr_assert_eq(imgbuild_write_compressed(img, g, c, NULL, NULL), 0);
	}
	model_from_builder(&m, img);
	qi = open_writable();
	cr_assert_eq(qcow2_image_snapshot_create(qi, "c"), 0, "%s", qcow2_last_error());
	model_create(&m, "c");
	assert_done(qi, &m, "created");
	write_over(qi, &m, 0x99);
	assert_done(qi, &m, "overwritten");
	cr_assert_eq(qcow2_image_snapshot_apply(qi, "c"), 0, "%s", qcow2_last_error());
	model_apply(&m, 0);
	cr_assert_eq(qcow2_image_snapshot_delete(qi, "c"), 0, "%s", qcow2_last_error());
	model_delete(&m, 0);
	assert_done(qi, &m, "applied and deleted");
}

/* Byte offset and length of the entry named @name in the table of the file in @io. */
static void entry_bytes_of(struct qcow2_image *q, const char *name, uint8_t *out, size_t *len)
{
	struct qcow2_image *back = reopen(qcow2_image_io(q), false);
	uint64_t off = qcow2_image_header(back)->snapshots_off;
	int idx = find(back, name), i;
	uint8_t head[4096];
	ssize_t n = 0;

	cr_assert_geq(idx, 0, "no snapshot '%s'", name);
	for (i = 0; i <= idx; i++) {
		off += (uint64_t)n;
		cr_assert_eq(qcow2_io_pread(qcow2_image_io(back), head, sizeof(head), off) > 40, 1);
		n = qcow2_snapshot_entry_bytes(head, sizeof(head));
		cr_assert_gt(n, 0);
	}
	memcpy(out, head, (size_t)n);
	*len = (size_t)n;
	qcow2_image_close(back);
}

Test(snapshot_write, other_entries_stay_byte_for_byte)
{
	uint8_t before[4096], after[4096];
	size_t lb, la;

	build(&default_shape);
	qi = open_writable();
	entry_bytes_of(qi, "vm", before, &lb);
	cr_assert_eq(get_be32(before + 36), 24, "the entry keeps its icount");
	cr_assert_eq(qcow2_image_snapshot_create(qi, "x"), 0, "%s", qcow2_last_error());
	entry_bytes_of(qi, "vm", after, &la);
	cr_assert_eq(la, lb);
	cr_assert_arr_eq(after, before, lb, "after a create");
	cr_assert_eq(qcow2_image_snapshot_delete(qi, "one"), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_snapshot_apply(qi, "x"), 0, "%s", qcow2_last_error());
	entry_bytes_of(qi, "vm", after, &la);
	cr_assert_arr_eq(after, before, lb, "after a delete and an apply");
	cr_assert_eq(qcow2_image_snapshot(qi, (uint32_t)find(qi, "vm"))->vm_state_bytes, 765);
}

/* ---- refusals change nothing ---- */

static void assert_unchanged(const void *bytes, size_t len)
{
	size_t now;
	const void *b = qcow2_io_mem_bytes(qcow2_image_io(qi), &now);

	cr_assert_eq(now, len, "the file's length changed");
	cr_assert_arr_eq(b, bytes, len, "the file changed");
}

Test(snapshot_write, refusals_change_nothing)
{
	size_t len;
	uint8_t *copy;

	build(&default_shape);
	qi = open_writable();
	copy = xmalloc(img->len);
	memcpy(copy, qcow2_io_mem_bytes(qcow2_image_io(qi), &len), img->len);
	cr_assert_eq(qcow2_image_snapshot_create(qi, "one"), -EEXIST);
	assert_error_mentions("exists already");
	assert_error_mentions("mem.qcow2");
	cr_assert_eq(qcow2_image_snapshot_create(qi, "2"), -EEXIST, "the id of 'vm'");
	cr_assert_eq(qcow2_image_snapshot_create(qi, ""), -EINVAL);
	cr_assert_eq(qcow2_image_snapshot_apply(qi, "nope"), -ENOENT);
	assert_error_mentions("nope");
	cr_assert_eq(qcow2_image_snapshot_delete(qi, "nope"), -ENOENT);
	assert_unchanged(copy, len);
	assert_done(qi, &m, "after the refusals");
	free(copy);
}

Test(snapshot_write, one_bit_refcounts_cannot_share_a_cluster)
{
	struct imgbuild_opts o = imgbuild_defaults();
	size_t len;
	uint8_t *copy;
	struct qcow2_snapshot_plan p;

	o.refcount_order = 0;
	img = imgbuild_new(&o);
	cr_assert_eq(imgbuild_fill(img, 0, 0x42, 100000), 0);
	model_from_builder(&m, img);
	qi = open_writable();
	copy = xmalloc(img->len);
	memcpy(copy, qcow2_io_mem_bytes(qcow2_image_io(qi), &len), img->len);
	cr_assert_eq(qcow2_image_snapshot_plan(qi, QCOW2_SNAPSHOT_CREATE, "s", &p), -ERANGE);
	cr_assert_eq(qcow2_image_snapshot_create(qi, "s"), -ERANGE);
	assert_error_mentions("1-bit refcounts");
	assert_unchanged(copy, len);
	free(copy);
	/* an empty image shares nothing: its snapshot fits */
	imgbuild_free(img);
	qcow2_image_close(qi);
	img = imgbuild_new(&o);
	qi = open_writable();
	cr_assert_eq(qcow2_image_snapshot_create(qi, "empty"), 0, "%s", qcow2_last_error());
}

Test(snapshot_write, read_only_images_and_data_files_are_refused)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_snapshot_plan p;

	img = imgbuild_new(&o);
	cr_assert_eq(imgbuild_open(img, &qi), 0);
	cr_assert_eq(qcow2_image_snapshot_create(qi, "s"), -EROFS);
	cr_assert_eq(qcow2_image_snapshot_plan(qi, QCOW2_SNAPSHOT_CREATE, "s", &p), 0,
		     "a plan needs no write access");
	qcow2_image_close(qi);
	imgbuild_free(img);
	o.data_file = "data.raw";
	img = imgbuild_new(&o);
	cr_assert_eq(imgbuild_open(img, &qi), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_snapshot_plan(qi, QCOW2_SNAPSHOT_CREATE, "s", &p), -ENOTSUP);
	assert_error_mentions("data file");
}

Test(snapshot_write, bitmaps_survive_create_and_delete_and_refuse_apply)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_image *back;

	o.bitmaps = true;
	o.autoclear = 1ull << 9; /* unknown: cleared by the first change */
	img = imgbuild_new(&o);
	cr_assert_eq(imgbuild_fill(img, 0, 0x42, 100000), 0);
	cr_assert_eq(imgbuild_snapshot_add(img, NULL), 0);
	model_from_builder(&m, img);
	qi = open_writable();
	cr_assert_eq(qcow2_image_snapshot_apply(qi, "1"), -EBUSY);
	assert_error_mentions("bitmaps");
	cr_assert_eq(qcow2_image_snapshot_create(qi, "b"), 0, "%s", qcow2_last_error());
	model_create(&m, "b");
	cr_assert_eq(qcow2_image_snapshot_delete(qi, "1"), 0, "%s", qcow2_last_error());
	model_delete(&m, 0);
	assert_done(qi, &m, "created and deleted");
	back = reopen(qcow2_image_io(qi), false);
	cr_assert_eq(qcow2_image_header(back)->autoclear, QCOW2_AUTOCLEAR_BITMAPS,
		     "the bitmaps stay valid, the unknown bit goes");
	qcow2_image_close(back);
}

/* ---- plans ---- */

Test(snapshot_write, plans_count_what_changes_and_agree_read_only_and_writable)
{
	struct qcow2_snapshot_plan ro, rw;
	struct qcow2_image *r;

	build(&default_shape);
	cr_assert_eq(imgbuild_open(img, &r), 0);
	qi = open_writable();
	cr_assert_eq(qcow2_image_snapshot_plan(r, QCOW2_SNAPSHOT_DELETE, "one", &ro), 0);
	cr_assert_eq(qcow2_image_snapshot_plan(qi, QCOW2_SNAPSHOT_DELETE, "one", &rw), 0);
	cr_assert_arr_eq(&ro, &rw, sizeof(ro));
	cr_assert_eq(qcow2_image_snapshot_plan(r, QCOW2_SNAPSHOT_CREATE, "n", &ro), 0);
	cr_assert_eq(qcow2_image_snapshot_plan(qi, QCOW2_SNAPSHOT_CREATE, "n", &rw), 0);
	qcow2_image_close(r);
	cr_assert_arr_eq(&ro, &rw, sizeof(ro));
	cr_assert_str_eq(rw.id, "3");
	cr_assert_eq(rw.nb_before, 2);
	cr_assert_eq(rw.nb_after, 3);
	cr_assert_gt(rw.raised_clusters, 8, "the active state's L2 tables and data");
	cr_assert_eq(rw.lowered_clusters, 0);
	cr_assert_eq(rw.l1_bytes, (uint64_t)qi->l1.n * 8);
	/* right after the create, deleting it frees only its L1 table and the old table */
	cr_assert_eq(qcow2_image_snapshot_create(qi, "n"), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_snapshot_plan(qi, QCOW2_SNAPSHOT_DELETE, "n", &rw), 0);
	cr_assert_eq(rw.lowered_clusters, ro.raised_clusters);
	cr_assert_eq(rw.freed_clusters, 2, "its L1 table and the snapshot table");
	/* applying a snapshot whose state is the active one changes no refcount in the end */
	cr_assert_eq(qcow2_image_snapshot_plan(qi, QCOW2_SNAPSHOT_APPLY, "n", &rw), 0);
	cr_assert_eq(rw.raised_clusters + rw.lowered_clusters, 0);
	cr_assert_eq(rw.freed_clusters, 1, "the old active L1 table");
}

/* ---- stopped at every write and flush ---- */

struct crash_case {
	enum qcow2_snapshot_op op;
	enum qcow2_io_op fail;
};

static int run(struct qcow2_image *q, enum qcow2_snapshot_op op)
{
	if (op == QCOW2_SNAPSHOT_CREATE)
		return qcow2_image_snapshot_create(q, "new");
	if (op == QCOW2_SNAPSHOT_APPLY)
		return qcow2_image_snapshot_apply(q, "one");
	return qcow2_image_snapshot_delete(q, "vm");
}

static void model_after(struct model *x, enum qcow2_snapshot_op op)
{
	if (op == QCOW2_SNAPSHOT_CREATE)
		model_create(x, "new");
	else if (op == QCOW2_SNAPSHOT_APPLY)
		model_apply(x, 0);
	else
		model_delete(x, 1);
}

/* One operation stopped at its @nth write or flush. Returns the operation's result. */
static int stop_at(const struct crash_case *c, unsigned nth)
{
	static const struct shape small = {3, 9, 4, false, 128 << 10};
	struct model after, *now;
	struct qcow2_image *back;
	char why[200], why2[200];
	int r;

	build(&small);
	memset(&after, 0, sizeof(after));
	model_from_builder(&after, img);
	model_after(&after, c->op);
	qi = open_writable();
	qcow2_io_mem_fail_nth(qcow2_image_io(qi), c->fail, nth, -EIO);
	r = run(qi, c->op);
	qcow2_io_mem_fail_nth(qcow2_image_io(qi), c->fail, 0, 0);
	/* what a crash there leaves on disk: valid, before or after, leaks at worst */
	back = reopen(qcow2_image_io(qi), false);
	assert_refcounts(back, true, "on disk");
	assert_copied(back, false, "on disk");
	cr_assert(shows(back, &m, why, sizeof(why)) || shows(back, &after, why2, sizeof(why2)),
		  "stopped at %u: neither before (%s) nor after (%s)", nth, why, why2);
	qcow2_image_close(back);
	/* and the image that saw the failure goes on: writes, a flush, the same on disk */
	now = shows(qi, &m, why, sizeof(why)) ? &m : &after;
	cr_assert(r < 0 || now == &after, "succeeded but shows the state before");
	write_over(qi, now, 0x3c);
	assert_shows(qi, now, "written after the failure");
	assert_refcounts(qi, true, "written after the failure");
	assert_copied(qi, false, "written after the failure");
	back = reopen(qcow2_image_io(qi), true);
	assert_shows(back, now, "reopened after the failure");
	qcow2_image_close(back);
	model_free(&after);
	qcow2_image_close(qi);
	qi = NULL;
	imgbuild_free(img);
	img = NULL;
	model_free(&m);
	return r;
}

ParameterizedTestParameters(snapshot_write, stopped_at_any_write_or_flush_the_image_stays_valid)
{
	static struct crash_case cases[] = {
	    {QCOW2_SNAPSHOT_CREATE, QCOW2_IO_WRITE}, {QCOW2_SNAPSHOT_CREATE, QCOW2_IO_FLUSH},
	    {QCOW2_SNAPSHOT_APPLY, QCOW2_IO_WRITE},  {QCOW2_SNAPSHOT_APPLY, QCOW2_IO_FLUSH},
	    {QCOW2_SNAPSHOT_DELETE, QCOW2_IO_WRITE}, {QCOW2_SNAPSHOT_DELETE, QCOW2_IO_FLUSH},
	};
	return cr_make_param_array(struct crash_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct crash_case *c, snapshot_write,
		  stopped_at_any_write_or_flush_the_image_stays_valid)
{
	unsigned nth, stopped = 0;

	for (nth = 1; nth < 200; nth++) {
		if (stop_at(c, nth) == 0)
			break; /* the Nth came after the operation: nothing left to stop */
		stopped++;
	}
	cr_assert_lt(nth, 200, "the operation never succeeded");
	cr_assert_geq(stopped, 3, "stopped at only %u points", stopped);
}

/* ---- a delete stopped at every write and flush, then run again ----
 * The image's "file" is in memory, its journal in a mkdtemp() directory: the journal a stopped
 * delete leaves is what a crash at that point leaves, and the rerun works on a copy of the
 * bytes then on "disk". */

struct rerun_dir {
	char dir[64], image[96], journal[160];
};

static void rerun_dir_init(struct rerun_dir *d)
{
	snprintf(d->dir, sizeof(d->dir), "/tmp/qcowfs-snapdel-XXXXXX");
	cr_assert_not_null(mkdtemp(d->dir));
	snprintf(d->image, sizeof(d->image), "%s/img.qcow2", d->dir);
	cr_assert_eq(
	    qcow2_journal_path(d->image, "snapshot-delete", d->journal, sizeof(d->journal)), 0);
}

static void rerun_dir_release(struct rerun_dir *d)
{
	unlink(d->journal);
	cr_assert_eq(rmdir(d->dir), 0, "something else was left in the directory");
}

static bool exists(const char *path)
{
	return access(path, F_OK) == 0;
}

/* Without the journal the same rerun is a missing name: -ENOENT, the image unchanged. */
static void assert_no_journal_no_guess(struct qcow2_image *q, const struct rerun_dir *d)
{
	struct qcow2_snapshot_resume res;
	char moved[192];
	size_t len, len2;
	const void *b = qcow2_io_mem_bytes(qcow2_image_io(q), &len);
	void *before = xmalloc(len);

	memcpy(before, b, len);
	snprintf(moved, sizeof(moved), "%s.away", d->journal);
	cr_assert_eq(rename(d->journal, moved), 0);
	cr_assert_eq(qcow2_image_snapshot_delete_resumable(q, "vm", d->image, &res), -ENOENT);
	cr_assert_eq(qcow2_image_flush(q), 0);
	b = qcow2_io_mem_bytes(qcow2_image_io(q), &len2);
	cr_assert(len2 == len && !memcmp(b, before, len), "a missing name changed the image");
	cr_assert_eq(rename(moved, d->journal), 0);
	free(before);
}

/* Delete "vm" stopped at its @nth @fail, then run again on the bytes left. Returns the first
 * run's result; counts the reruns that found the snapshot gone in @gone. */
static int delete_stopped_then_rerun(enum qcow2_io_op fail, unsigned nth, const struct rerun_dir *d,
				     unsigned *gone)
{
	static const struct shape small = {3, 9, 4, false, 128 << 10};
	struct qcow2_snapshot_resume res;
	struct qcow2_image *back;
	struct model after;
	bool was_gone;
	int r;

	build(&small);
	memset(&after, 0, sizeof(after));
	model_from_builder(&after, img);
	model_delete(&after, 1);
	qi = open_writable();
	qcow2_io_mem_fail_nth(qcow2_image_io(qi), fail, nth, -EIO);
	r = qcow2_image_snapshot_delete_resumable(qi, "vm", d->image, &res);
	qcow2_io_mem_fail_nth(qcow2_image_io(qi), fail, 0, 0);
	cr_assert(r < 0 || !exists(d->journal), "a delete that succeeded left its journal");
	cr_assert(r == 0 || exists(d->journal), "stopped at %u: no journal left", nth);
	if (r < 0) {
		back = reopen(qcow2_image_io(qi), true);
		was_gone = find(back, "vm") < 0;
		if (was_gone) {
			*gone += 1;
			assert_no_journal_no_guess(back, d);
			cr_assert_eq(
			    qcow2_image_snapshot_delete_resumable(back, "vn", d->image, &res),
			    -ENOENT, "a mistyped name");
			cr_assert(exists(d->journal), "a mistyped name took the journal");
		}
		cr_assert_eq(qcow2_image_snapshot_delete_resumable(back, "vm", d->image, &res), 0,
			     "stopped at %u, run again: %s", nth, qcow2_last_error());
		cr_assert_eq(res.already_deleted, was_gone, "stopped at %u", nth);
		cr_assert(!exists(d->journal), "stopped at %u: the rerun left its journal", nth);
		assert_done(back, &after, "run again");
		qcow2_image_close(back);
	}
	model_free(&after);
	qcow2_image_close(qi);
	qi = NULL;
	imgbuild_free(img);
	img = NULL;
	model_free(&m);
	return r;
}

ParameterizedTestParameters(snapshot_write, a_delete_stopped_anywhere_is_completed_by_its_rerun)
{
	static enum qcow2_io_op ops[] = {QCOW2_IO_WRITE, QCOW2_IO_FLUSH};
	return cr_make_param_array(enum qcow2_io_op, ops, sizeof(ops) / sizeof(ops[0]));
}

/* Each rerun exits 0 with the image exactly as a whole delete leaves it (no leak, every
 * COPIED flag right), says "already deleted" exactly when the snapshot was gone, and a
 * mistyped name or a missing journal changes nothing. */
ParameterizedTest(enum qcow2_io_op *fail, snapshot_write,
		  a_delete_stopped_anywhere_is_completed_by_its_rerun)
{
	struct rerun_dir d;
	unsigned nth, stopped = 0, gone = 0;

	rerun_dir_init(&d);
	for (nth = 1; nth < 200; nth++) {
		if (delete_stopped_then_rerun(*fail, nth, &d, &gone) == 0)
			break;
		stopped++;
	}
	rerun_dir_release(&d);
	cr_assert_lt(nth, 200, "the delete never succeeded");
	cr_assert_gt(gone, 0, "never stopped after the switch");
	cr_assert_gt(stopped - gone, 0, "never stopped before the switch");
}

/* Delete "vm" and stop it at the first write that comes after its switch: the bytes then on
 * "disk", reopened writable, with its journal in @d. */
static struct qcow2_image *stopped_past_the_switch(const struct rerun_dir *d)
{
	static const struct shape small = {3, 9, 4, false, 128 << 10};
	struct qcow2_snapshot_resume res;
	struct qcow2_image *back = NULL;
	unsigned nth;

	for (nth = 1; nth < 200 && !back; nth++) {
		build(&small);
		qi = open_writable();
		qcow2_io_mem_fail_nth(qcow2_image_io(qi), QCOW2_IO_WRITE, nth, -EIO);
		cr_assert_lt(qcow2_image_snapshot_delete_resumable(qi, "vm", d->image, &res), 0);
		qcow2_io_mem_fail_nth(qcow2_image_io(qi), QCOW2_IO_WRITE, 0, 0);
		back = reopen(qcow2_image_io(qi), true);
		if (find(back, "vm") >= 0) { /* before the switch: again from the start */
			qcow2_image_close(back);
			back = NULL;
			qcow2_image_close(qi);
			qi = NULL;
			imgbuild_free(img);
			img = NULL;
			model_free(&m);
		}
	}
	cr_assert_not_null(back, "never stopped after the switch");
	return back;
}

/* A journal of a delete of "vm" stopped after its switch, then a delete of "one": the first
 * delete's cleanup is finished before the second runs, so neither leaves a leak. */
Test(snapshot_write, a_delete_finishes_the_cleanup_another_one_left)
{
	struct qcow2_snapshot_resume res;
	struct qcow2_image *back;
	struct rerun_dir d;

	rerun_dir_init(&d);
	back = stopped_past_the_switch(&d);
	cr_assert_eq(qcow2_image_snapshot_delete_resumable(back, "one", d.image, &res), 0, "%s",
		     qcow2_last_error());
	cr_assert_not(res.already_deleted);
	cr_assert_gt(res.leaks_fixed + res.copied_fixed, 0, "the cleanup left was not counted");
	cr_assert(!exists(d.journal));
	model_delete(&m, 1);
	model_delete(&m, 0);
	assert_done(back, &m, "both deleted");
	qcow2_image_close(back);
	rerun_dir_release(&d);
}

/* The cleanup touches nothing but leaks and missing COPIED flags: on an image that also has a
 * refcount below its references it refuses, changes nothing and keeps the journal. */
Test(snapshot_write, the_cleanup_refuses_an_image_with_other_errors)
{
	struct qcow2_snapshot_resume res;
	struct qcow2_check_result cr;
	struct qcow2_image *back;
	struct rerun_dir d;
	size_t len, len2;
	const void *b;
	void *before;
	uint64_t l2;

	rerun_dir_init(&d);
	back = stopped_past_the_switch(&d);
	l2 = (back->l1.entries[0] & QCOW2_L1E_OFFSET_MASK) >> back->h.cluster_bits;
	cr_assert_neq(l2, 0);
	pthread_mutex_lock(&back->w->lock);
	cr_assert_eq(qcow2_refcount_set_w(back, l2, 0), 0);
	pthread_mutex_unlock(&back->w->lock);
	cr_assert_eq(qcow2_image_flush(back), 0);
	cr_assert_eq(qcow2_image_check(back, &cr), 0);
	cr_assert_gt(cr.refcount_errors, 0);
	b = qcow2_io_mem_bytes(qcow2_image_io(back), &len);
	before = xmalloc(len);
	memcpy(before, b, len);
	cr_assert_eq(qcow2_image_snapshot_delete_resumable(back, "vm", d.image, &res), -EUCLEAN);
	cr_assert(strstr(qcow2_last_error(), "check --repair"), "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_flush(back), 0);
	b = qcow2_io_mem_bytes(qcow2_image_io(back), &len2);
	cr_assert(len2 == len && !memcmp(b, before, len), "the refused cleanup changed the image");
	cr_assert(exists(d.journal), "the refused cleanup took the journal");
	free(before);
	qcow2_image_close(back);
	rerun_dir_release(&d);
}

/* A journal that is not a snapshot delete's of this image is an error naming it, not a
 * guess either way. */
Test(snapshot_write, a_journal_of_another_image_is_refused)
{
	struct qcow2_snapshot_resume res;
	struct rerun_dir d;

	rerun_dir_init(&d);
	build(&default_shape);
	qi = open_writable();
	cr_assert_eq(qcow2_journal_write(d.journal, "qcowctl snapshot delete\nimage 61\nid 31\n"
						    "name 7878\n"),
		     0);
	cr_assert_eq(qcow2_image_snapshot_delete_resumable(qi, "vm", d.image, &res), -EUCLEAN);
	cr_assert(strstr(qcow2_last_error(), d.journal), "%s", qcow2_last_error());
	cr_assert_geq(find(qi, "vm"), 0, "deleted anyway");
	cr_assert_eq(qcow2_journal_write(d.journal, "garbage"), 0);
	cr_assert_eq(qcow2_image_snapshot_delete_resumable(qi, "vm", d.image, &res), -EUCLEAN);
	rerun_dir_release(&d);
}

/* A snapshot as QEMU's savevm lays it out: the VM state in the clusters of its L1 table past
 * the disk (from the first L1 entry the disk does not need), vm_state_size set. */
static void assert_vm_state(struct qcow2_image *q, const uint8_t *want, uint64_t at, uint64_t len,
			    const char *when)
{
	const struct qcow2_l1 *l1;
	struct qcow2_l1 whole;
	uint8_t *got = xmalloc(at + len);
	int idx = find(q, "vm");

	cr_assert_geq(idx, 0, "%s: 'vm' is gone", when);
	cr_assert_eq(qcow2_image_snapshot(q, (uint32_t)idx)->vm_state_bytes, len);
	cr_assert_eq(qcow2_image_snapshot_l1(q, (uint32_t)idx, &l1), 0);
	whole = *l1;
	whole.size = at + len; /* read on past the disk */
	read_l1(q, &whole, got, at + len);
	cr_assert_arr_eq(got + at, want, len, "%s: the VM state changed", when);
	free(got);
}

Test(snapshot_write, vm_state_past_the_disk_survives_every_operation)
{
	struct imgbuild_opts o = imgbuild_defaults();
	uint64_t disk = 32 << 10, state = 32 << 10; /* 512 B clusters: 32 KiB per L1 entry */
	struct imgbuild_snapshot_opts vm = {.name = "vm",
					    .disk_bytes = disk,
					    .extra_bytes = 24,
					    .vm_state_bytes = state,
					    .icount = ~0ull};
	uint8_t *v = xmalloc(state);

	o.cluster_bits = 9;
	o.size = disk + state;
	img = imgbuild_new(&o);
	cr_assert_eq(imgbuild_fill(img, 0, 0x41, (size_t)disk), 0);
	imgbuild_pattern(v, state, disk, 0x76);
	cr_assert_eq(imgbuild_write(img, disk, v, (size_t)state), 0);
	cr_assert_eq(imgbuild_snapshot_add(img, &vm), 0);
	model_from_builder(&m, img);
	qi = open_writable();
	cr_assert_eq(qcow2_image_snapshot_create(qi, "x"), 0, "%s", qcow2_last_error());
	model_create(&m, "x");
	assert_vm_state(qi, v, disk, state, "created");
	cr_assert_eq(qcow2_image_snapshot_apply(qi, "vm"), 0, "%s", qcow2_last_error());
	model_apply(&m, 0);
	cr_assert_eq(qi->l1.n, 1, "the VM state is not copied into the active state");
	assert_done(qi, &m, "applied");
	assert_vm_state(qi, v, disk, state, "applied");
	write_over(qi, &m, 0x12);
	cr_assert_eq(qcow2_image_snapshot_delete(qi, "x"), 0, "%s", qcow2_last_error());
	model_delete(&m, 1);
	cr_assert_eq(qcow2_image_snapshot_create(qi, "y"), 0, "%s", qcow2_last_error());
	model_create(&m, "y");
	assert_done(qi, &m, "deleted and created");
	assert_vm_state(qi, v, disk, state, "deleted and created");
	free(v);
}

/* More L2 tables change their COPIED flags than the cache holds: it is written back midway. */
Test(snapshot_write, more_tables_than_the_l2_cache_holds)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_image_opts wo = {.writable = true, .l2_cache_bytes = 1}; /* 8 tables */

	o.cluster_bits = 9; /* 32 KiB per L2 table: 32 tables */
	o.size = 1 << 20;
	img = imgbuild_new(&o);
	cr_assert_eq(imgbuild_fill(img, 0, 0x61, (size_t)o.size), 0);
	cr_assert_eq(imgbuild_snapshot_add(img, &(struct imgbuild_snapshot_opts){.name = "one"}),
		     0);
	model_from_builder(&m, img);
	cr_assert_eq(qcow2_image_open(imgbuild_io(img), "mem.qcow2", &wo, &qi), 0);
	cr_assert_eq(qcow2_image_snapshot_create(qi, "two"), 0, "%s", qcow2_last_error());
	model_create(&m, "two");
	write_over(qi, &m, 0x62);
	cr_assert_eq(qcow2_image_snapshot_delete(qi, "one"), 0, "%s", qcow2_last_error());
	model_delete(&m, 0);
	cr_assert_eq(qcow2_image_snapshot_apply(qi, "two"), 0, "%s", qcow2_last_error());
	model_apply(&m, 0);
	cr_assert_eq(qcow2_image_snapshot_delete(qi, "two"), 0, "%s", qcow2_last_error());
	model_delete(&m, 0);
	assert_done(qi, &m, "after every operation");
}
