/* SPDX-License-Identifier: MIT */
/*
 * test_snapshot_bad.c - a bad entry in the snapshot table disables that snapshot only:
 * the check reports it in qemu-img check's words and counts (one corruption; what
 * only it reaches counts as leaked, since its L1 table is not walked), and dropping it
 * (qcow2_image_snapshot_drop_unreadable(), `check --repair --drop-bad-snapshots`) followed by the
 * refcount repair leaves a clean image whose other snapshots and active state read as before.
 * And the pins that keep snapshot views true: a pin follows its entry into a table that other
 * snapshots' changes moved, and goes stale, for good, when its own entry changes or goes.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgbuild.h"
#include "integrity/integrity.h"

static struct imgbuild *img;

struct msgs {
	char text[1 << 16];
	size_t len;
};

static struct msgs msgs;

static void on_msg(void *ctx, enum qcow2_check_msg kind, const char *text)
{
	struct msgs *m = ctx;
	int n = snprintf(m->text + m->len, sizeof(m->text) - m->len, "%s\n", text);

	(void)kind;
	if (n > 0 && (size_t)n < sizeof(m->text) - m->len)
		m->len += (size_t)n;
}

static const struct qcow2_check_opts report = {NULL, on_msg, &msgs};

static void teardown(void)
{
	imgbuild_free(img);
	img = NULL;
}

TestSuite(snapshot_bad, .fini = teardown);

/* Byte offset of entry @idx of the builder's table in the file. */
static uint64_t entry_off(uint32_t idx)
{
	uint64_t off = img->snap_table_off;
	uint32_t i;

	for (i = 0; i < idx; i++) {
		const uint8_t *p = img->bytes + off;
		uint64_t len = 40 + imgbuild_get_be32(img, off + 36) +
			       ((uint64_t)p[12] << 8 | p[13]) + ((uint64_t)p[14] << 8 | p[15]);
		off += (len + 7) & ~7ull;
	}
	return off;
}

/* snap1 (0x11 everywhere it has data), then snap2 (0x22 over part of it), then 0x33 in the
 * active state; snap1 alone holds the clusters the later writes replaced. */
static void build(void)
{
	img = imgbuild_new(NULL);
	cr_assert_eq(imgbuild_fill(img, 0, 0x11, 512 << 10), 0);
	cr_assert_eq(imgbuild_snapshot_add(img, NULL), 0);
	cr_assert_eq(imgbuild_fill(img, 256 << 10, 0x22, 512 << 10), 0);
	cr_assert_eq(imgbuild_snapshot_add(img, NULL), 0);
	cr_assert_eq(imgbuild_fill(img, 64 << 10, 0x33, 64 << 10), 0);
}

static struct qcow2_image *open_bytes(const void *b, size_t len, bool writable)
{
	struct qcow2_image_opts o = {.writable = writable, .repair = writable};
	struct qcow2_io *io = qcow2_io_mem_new("mem.qcow2", b, len);
	struct qcow2_image *q;
	int r = qcow2_image_open(io, "mem.qcow2", &o, &q);

	cr_assert_eq(r, 0, "open: %s", qcow2_last_error());
	return q;
}

static struct qcow2_check_result check_it(struct qcow2_image *q)
{
	struct qcow2_check_result res;

	memset(&msgs, 0, sizeof(msgs));
	cr_assert_eq(qcow2_image_check_report(q, &report, &res), 0, "%s", qcow2_last_error());
	return res;
}

/* What the snapshot @idx (-1: active) of @q reads over the first 1 MiB. */
static void read_view(struct qcow2_image *q, int idx, uint8_t *buf)
{
	const struct qcow2_l1 *l1 = NULL;
	uint64_t off = 0, n = 1 << 20;

	if (idx >= 0)
		cr_assert_eq(qcow2_image_snapshot_l1(q, (uint32_t)idx, &l1), 0, "%s",
			     qcow2_last_error());
	while (off < n) {
		struct qcow2_extent e;

		cr_assert_eq(qcow2_image_map(q, l1, off, n - off, &e), 0, "%s", qcow2_last_error());
		if (e.kind == QCOW2_EXTENT_DATA)
			cr_assert_eq(qcow2_io_pread_full(e.io, buf + off, e.len, e.host_off), 0);
		else
			memset(buf + off, 0, e.len);
		off += e.len;
	}
}

struct bad_case { /* arrays, not pointers: each test runs in its own process */
	char what[24];
	uint32_t field, width;
	uint64_t value; /* added to the L1 offset (width 8) or set as the L1 size (width 4) */
	char line[160];
};

ParameterizedTestParameters(snapshot_bad, check_reports_it_and_a_drop_repairs_it)
{
	static struct bad_case cases[] = {
	    {"misaligned L1", 0, 8, 0x200,
	     "ERROR snapshot 1 (snap1) l1_offset=%#lx: L1 table is not cluster aligned; snapshot "
	     "table entry corrupted"},
	    {"huge L1", 8, 4, 0x10000000,
	     "ERROR snapshot 1 (snap1) l1_size=0x10000000: L1 table is too large; snapshot table "
	     "entry corrupted"},
	};
	return cr_make_param_array(struct bad_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct bad_case *c, snapshot_bad, check_reports_it_and_a_drop_repairs_it)
{
	static uint8_t before_active[1 << 20], before_snap2[1 << 20], after[1 << 20];
	struct qcow2_check_result res;
	struct qcow2_image *q, *back;
	char line[200];
	uint32_t dropped;
	size_t len;
	const void *b;

	build();
	q = open_bytes(img->bytes, img->len, false);
	read_view(q, -1, before_active);
	read_view(q, 1, before_snap2);
	qcow2_image_close(q);
	if (c->width == 8) {
		uint64_t l1 = imgbuild_get_be64(img, entry_off(0));
		imgbuild_put_be64(img, entry_off(0), l1 + c->value);
		snprintf(line, sizeof(line), c->line, (unsigned long)(l1 + c->value));
	} else {
		imgbuild_put_be32(img, entry_off(0) + c->field, (uint32_t)c->value);
		snprintf(line, sizeof(line), "%s", c->line);
	}

	/* the check: one corruption, in QEMU's words; snap1's own clusters leak */
	q = open_bytes(img->bytes, img->len, false);
	res = check_it(q);
	cr_assert_eq(res.corruptions, 1, "%s: %s", c->what, msgs.text);
	cr_assert(strstr(msgs.text, line), "%s: no '%s' in:\n%s", c->what, line, msgs.text);
	cr_assert_gt(res.leaks, 0, "%s", c->what);
	qcow2_image_close(q);

	/* the drop, then the refcount repair: clean, and the rest reads as before */
	q = open_bytes(img->bytes, img->len, true);
	cr_assert_eq(qcow2_image_snapshot_drop_unreadable(q, &dropped), 0, "%s",
		     qcow2_last_error());
	cr_assert_eq(dropped, 1);
	cr_assert_eq(qcow2_image_snapshot_count(q), 1);
	memset(&msgs, 0, sizeof(msgs));
	cr_assert_eq(qcow2_image_repair(q, &report, false, &res), 0, "%s", qcow2_last_error());
	b = qcow2_io_mem_bytes(qcow2_image_io(q), &len);
	back = open_bytes(b, len, false);
	res = check_it(back);
	cr_assert_eq(res.corruptions + res.leaks, 0, "%s: after the repair:\n%s", c->what,
		     msgs.text);
	cr_assert_eq(qcow2_image_snapshot_count(back), 1);
	cr_assert_str_eq(qcow2_image_snapshot(back, 0)->name, "snap2");
	read_view(back, -1, after);
	cr_assert_arr_eq(after, before_active, sizeof(after));
	read_view(back, 0, after);
	cr_assert_arr_eq(after, before_snap2, sizeof(after));
	qcow2_image_close(back);
	qcow2_image_close(q);
}

Test(snapshot_bad, a_valid_image_has_nothing_to_drop)
{
	struct qcow2_image *q;
	uint32_t dropped = 7;

	build();
	q = open_bytes(img->bytes, img->len, true);
	cr_assert_eq(qcow2_image_snapshot_drop_unreadable(q, &dropped), 0, "%s",
		     qcow2_last_error());
	cr_assert_eq(dropped, 0);
	cr_assert_eq(qcow2_image_snapshot_count(q), 2);
	qcow2_image_close(q);
}

Test(snapshot_bad, a_drop_keeps_an_invalid_entry_whose_l1_table_is_readable)
{
	struct qcow2_image *q;
	uint32_t dropped = 7;
	uint64_t e;

	build();
	/* a NUL in snap1's name: no view, but its data stays readable (by QEMU) */
	e = entry_off(0);
	img->bytes[e + 40 + imgbuild_get_be32(img, e + 36) + img->bytes[e + 13] + 2] = 0;
	q = open_bytes(img->bytes, img->len, true);
	cr_assert_not_null(qcow2_image_snapshot(q, 0)->invalid);
	cr_assert(!qcow2_image_snapshot(q, 0)->unreadable);
	cr_assert_eq(qcow2_image_snapshot_drop_unreadable(q, &dropped), 0, "%s",
		     qcow2_last_error());
	cr_assert_eq(dropped, 0);
	cr_assert_eq(qcow2_image_snapshot_count(q), 2);
	qcow2_image_close(q);
}

/* ---- pins: a snapshot view stays true ---- */

/* The image in memory, read-only, and a pin on its snapshot @idx. */
static struct qcow2_image *pin_snapshot(uint32_t idx, struct qcow2_snapshot_pin *p)
{
	struct qcow2_image *q = open_bytes(img->bytes, img->len, false);

	cr_assert_eq(qcow2_snapshot_pin_init(p, qcow2_image_io(q), qcow2_image_header(q),
					     qcow2_image_snapshot(q, idx)),
		     0, "%s", qcow2_last_error());
	return q;
}

static void put_be32_io(struct qcow2_io *io, uint64_t off, uint32_t v)
{
	uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};

	cr_assert_eq(qcow2_io_pwrite(io, b, 4, off), 0);
}

static void put_be64_io(struct qcow2_io *io, uint64_t off, uint64_t v)
{
	put_be32_io(io, off, (uint32_t)(v >> 32));
	put_be32_io(io, off + 4, (uint32_t)v);
}

Test(snapshot_bad, a_pin_follows_its_entry_into_a_moved_table)
{
	struct qcow2_snapshot_pin p;
	struct qcow2_image *q;
	struct qcow2_io *io;
	uint64_t table, second, moved;
	uint8_t *copy;
	size_t len;

	build();
	table = img->snap_table_off;
	second = entry_off(1);
	len = (size_t)(img->snap_table_bytes - (second - table));
	q = pin_snapshot(1, &p);
	io = qcow2_image_io(q);
	cr_assert_eq(qcow2_snapshot_pin_check(&p), 0, "%s", qcow2_last_error());

	/* the first snapshot deleted as QEMU does it: a new table (only the second entry) at the
	 * end of the file, then the header's table fields */
	copy = malloc(len);
	memcpy(copy, img->bytes + second, len);
	moved = (img->len + 65535) & ~65535ull;
	cr_assert_eq(qcow2_io_pwrite(io, copy, len, moved), 0);
	put_be32_io(io, 60, 1);
	put_be64_io(io, 64, moved);
	cr_assert_eq(qcow2_snapshot_pin_check(&p), 0, "the entry moved: %s", qcow2_last_error());

	/* the old table's bytes now mean nothing: overwrite them */
	memset(copy, 0xee, len);
	cr_assert_eq(qcow2_io_pwrite(io, copy, len, table), 0);
	cr_assert_eq(qcow2_snapshot_pin_check(&p), 0, "%s", qcow2_last_error());

	/* the entry itself changes (its L1 table moved): stale, for good */
	put_be64_io(io, moved, imgbuild_get_be64(img, second) + 65536);
	cr_assert_eq(qcow2_snapshot_pin_check(&p), -ESTALE);
	cr_assert(strstr(qcow2_last_error(), "snap2"), "%s", qcow2_last_error());
	put_be64_io(io, moved, imgbuild_get_be64(img, second));
	cr_assert_eq(qcow2_snapshot_pin_check(&p), -ESTALE, "a stale pin stays stale");
	free(copy);
	qcow2_snapshot_pin_release(&p);
	qcow2_image_close(q);
}

Test(snapshot_bad, a_pin_goes_stale_when_its_snapshot_is_deleted)
{
	struct qcow2_snapshot_pin p;
	struct qcow2_image *q;
	struct qcow2_io *io;

	build();
	q = pin_snapshot(1, &p);
	io = qcow2_image_io(q);
	/* the last snapshot deleted: the header now counts one entry, the table stays */
	put_be32_io(io, 60, 1);
	cr_assert_eq(qcow2_snapshot_pin_check(&p), -ESTALE);
	qcow2_snapshot_pin_release(&p);
	qcow2_image_close(q);
}
