/* SPDX-License-Identifier: MIT */
/*
 * test_snapshot.c - the internal snapshot table: qcow2_snapshot_table_decode() on v2 and v3
 * entries, the limits on every field, reading the table through an io (including tables
 * larger than the first read), and the snapshot accessors of an open image.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgbuild.h"
#include "testutil.h"
#include "qcow2.h"

#define H_NB_SNAPSHOTS	60
#define H_SNAPSHOTS_OFF 64

static struct imgbuild *img;

static void setup(void)
{
	img = NULL;
}

/* Strings of entries decoded by decode(), released after each test. */
static char *decoded[64];
static size_t n_decoded;

static void teardown(void)
{
	while (n_decoded)
		free(decoded[--n_decoded]);
	imgbuild_free(img);
}

TestSuite(snapshot, .init = setup, .fini = teardown);

static void build(uint32_t version)
{
	struct imgbuild_opts o = imgbuild_defaults();

	o.version = version;
	img = imgbuild_new(&o);
	cr_assert_eq(imgbuild_fill(img, 0, 0x11, 4096), 0);
}

static void add(const struct imgbuild_snapshot_opts *so)
{
	cr_assert_eq(imgbuild_snapshot_add(img, so), 0);
}

/* Decode the builder's table from its bytes. */
static ssize_t decode(size_t len, uint32_t nb, struct qcow2_snapshot *out)
{
	ssize_t r = qcow2_snapshot_table_decode(img->bytes + img->snap_table_off, len, nb,
						img->o.version, img->o.size, out);
	uint32_t i;

	for (i = 0; r >= 0 && i < nb; i++) {
		cr_assert_lt(n_decoded + 3, sizeof(decoded) / sizeof(decoded[0]));
		decoded[n_decoded++] = out[i].id;
		decoded[n_decoded++] = out[i].name;
		decoded[n_decoded++] = out[i].invalid;
	}
	return r;
}

/* Byte offset of entry @idx inside the builder's table. */
static uint64_t entry_off(uint32_t idx)
{
	uint64_t off = img->snap_table_off;
	uint32_t i;

	for (i = 0; i < idx; i++) {
		const uint8_t *p = img->bytes + off;
		uint32_t extra = imgbuild_get_be32(img, off + 36);
		uint64_t len = 40 + extra + ((p[12] << 8) | p[13]) + ((p[14] << 8) | p[15]);
		off += (len + 7) & ~7ull;
	}
	return off;
}

static int open_image(struct qcow2_image **qi)
{
	*qi = NULL;
	return imgbuild_open(img, qi);
}

/* ---- decoding ---- */

Test(snapshot, v2_entries_without_extra_data)
{
	struct imgbuild_snapshot_opts so = {0};
	struct qcow2_snapshot s[2];
	ssize_t n;

	build(2);
	so.name = "before upgrade";
	so.date_sec = 1700000000;
	so.date_nsec = 123456789;
	so.vm_clock_nsec = 987654321000ull;
	so.vm_state_bytes = 0x12345;
	add(&so);
	so.name = "second";
	so.id = "7";
	add(&so);
	cr_assert_eq(imgbuild_get_be32(img, img->snap_table_off + 36), 0, "no extra data");

	n = decode((size_t)img->snap_table_bytes, 2, s);
	cr_assert_eq(n, (ssize_t)img->snap_table_bytes, "%s", qcow2_last_error());
	cr_assert_str_eq(s[0].id, "1");
	cr_assert_str_eq(s[0].name, "before upgrade");
	cr_assert_eq(s[0].l1_off, img->snaps[0].l1_off);
	cr_assert_eq(s[0].l1_entries, img->l1_entries);
	cr_assert_eq(s[0].date_sec, 1700000000);
	cr_assert_eq(s[0].date_nsec, 123456789);
	cr_assert_eq(s[0].vm_clock_nsec, 987654321000ull);
	cr_assert_eq(s[0].vm_state_bytes, 0x12345, "the 32-bit field");
	cr_assert_eq(s[0].disk_bytes, img->o.size, "v2: the image's size");
	cr_assert_eq(s[0].icount, ~0ull, "absent");
	cr_assert_str_eq(s[1].id, "7");
	cr_assert_str_eq(s[1].name, "second");
	cr_assert_eq(s[1].l1_off, img->snaps[1].l1_off);
}

Test(snapshot, v3_entries_take_sizes_from_extra_data)
{
	struct imgbuild_snapshot_opts so = {0};
	struct qcow2_snapshot s[2];

	build(3);
	so.vm_state_bytes = 5ull << 30; /* does not fit the 32-bit field */
	so.disk_bytes = 2 << 20;
	add(&so);
	so.extra_bytes = 24;
	so.icount = 424242;
	so.vm_state_bytes = 0;
	so.disk_bytes = 0;
	add(&so);

	cr_assert_eq(decode((size_t)img->snap_table_bytes, 2, s), (ssize_t)img->snap_table_bytes,
		     "%s", qcow2_last_error());
	cr_assert_eq(s[0].vm_state_bytes, 5ull << 30);
	cr_assert_eq(s[0].disk_bytes, 2 << 20);
	cr_assert_eq(s[0].icount, ~0ull, "16 bytes of extra data have no icount");
	cr_assert_str_eq(s[0].name, "snap1");
	cr_assert_eq(s[1].icount, 424242);
	cr_assert_eq(s[1].disk_bytes, img->o.size);
	cr_assert_str_eq(s[1].name, "snap2");
}

struct extra_case {
	uint32_t version;
	uint32_t extra;
	int want; /* 0: decodes */
};

ParameterizedTestParameters(snapshot, extra_data_sizes)
{
	static struct extra_case cases[] = {
	    {2, 0, 0},	{2, 8, 0},	     {2, 16, 0},	  {3, 16, 0}, {3, 24, 0},
	    {3, 40, 0}, {3, 1023, 0},	     {3, 1024, 0},	  {3, 0, 0},  {3, 8, 0},
	    {3, 15, 0}, {3, 1025, -EUCLEAN}, {2, 1025, -EUCLEAN},
	};
	return cr_make_param_array(struct extra_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct extra_case *c, snapshot, extra_data_sizes)
{
	struct imgbuild_snapshot_opts so = {0};
	struct qcow2_snapshot s[2];
	ssize_t n;

	build(c->version);
	so.extra_bytes = c->extra ? c->extra : (c->version == 3 ? 16 : 0);
	so.vm_state_bytes = 77;
	so.name = "first";
	add(&so);
	so.extra_bytes = 0;
	so.name = "next";
	add(&so);
	/* v3, none: patch the first entry's extra size (the builder wrote 16 bytes of it; the
	 * id and name are then read from them) */
	if (c->version == 3 && c->extra == 0)
		imgbuild_put_be32(img, img->snap_table_off + 36, 0);
	/* (with the first entry shortened, the second is not where its bytes are) */
	n = decode((size_t)img->snap_table_bytes, c->version == 3 && c->extra == 0 ? 1 : 2, s);
	if (c->want) {
		cr_assert_eq(n, c->want, "extra=%u: %s", c->extra, qcow2_last_error());
		return;
	}
	if (c->version == 3 && c->extra == 0) {
		cr_assert_gt(n, 0, "%s", qcow2_last_error());
		cr_assert(s[0].incomplete, "v3 without extra data: usable, flagged");
		cr_assert_eq(s[0].disk_bytes, img->o.size, "no disk size: the image's, as QEMU");
		return;
	}
	cr_assert_eq(n, (ssize_t)img->snap_table_bytes, "extra=%u: %s", c->extra,
		     qcow2_last_error());
	cr_assert_str_eq(s[1].name, "next", "the next entry is found after the extra data");
	cr_assert_str_eq(s[0].name, "first");
	cr_assert_eq(s[0].vm_state_bytes, 77);
	/* v3 with less than 16 bytes: usable, flagged for check (QEMU opens it too) */
	cr_assert_eq(s[0].incomplete, c->version == 3 && c->extra && c->extra < 16);
	cr_assert_null(s[0].invalid);
	if (c->extra && c->extra < 16)
		cr_assert_eq(s[0].disk_bytes, img->o.size, "no disk size: the image's, as QEMU");
}

/* A v3 entry without extra data: QEMU opens the image, the snapshot works (its disk size the
 * image's), and check reports the entry in QEMU's words. */
Test(snapshot, v3_entry_with_short_extra_data_opens_and_check_reports_it)
{
	struct imgbuild_snapshot_opts so = {0};
	struct qcow2_image *qi;
	struct qcow2_check_result res;

	build(3);
	add(NULL);
	so.extra_bytes = 8; /* the 64-bit VM state size only */
	add(&so);
	cr_assert_eq(open_image(&qi), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_snapshot_count(qi), 2);
	cr_assert(qcow2_image_snapshot(qi, 1)->incomplete);
	cr_assert_null(qcow2_image_snapshot(qi, 1)->invalid);
	cr_assert_eq(qcow2_image_snapshot(qi, 1)->disk_bytes, img->o.size);
	cr_assert(!qcow2_image_snapshot(qi, 0)->incomplete);
	cr_assert_eq(qcow2_image_check_report(qi, NULL, &res), 0, "%s", qcow2_last_error());
	cr_assert_eq(res.corruptions, 1, "one incomplete entry, one corruption (qemu-img check)");
	qcow2_image_close(qi);
}

Test(snapshot, last_entry_padding_may_be_missing_at_end_of_buffer)
{
	struct imgbuild_snapshot_opts so = {0};
	struct qcow2_snapshot s[2];
	size_t unpadded;

	build(3);
	so.name = "a";
	add(&so);
	so.name = "abc"; /* 40 + 16 + 1 + 3 = 60 bytes: 4 of padding */
	add(&so);
	unpadded = (size_t)img->snap_table_bytes - 4;
	cr_assert_eq(decode(unpadded, 2, s), (ssize_t)unpadded, "%s", qcow2_last_error());
	cr_assert_str_eq(s[1].name, "abc");
	cr_assert_eq(decode(unpadded - 1, 2, s), -EMSGSIZE, "one byte of the name missing");
}

Test(snapshot, table_without_padding_at_end_of_file_opens)
{
	struct imgbuild_snapshot_opts so = {0};
	struct qcow2_image *qi;

	build(3);
	so.name = "abc";
	add(&so);
	cr_assert_eq(img->snap_table_off + img->snap_table_cap, img->len, "table is last");
	img->len = (size_t)(img->snap_table_off + img->snap_table_bytes - 4);
	cr_assert_eq(open_image(&qi), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_snapshot_count(qi), 1);
	cr_assert_str_eq(qcow2_image_snapshot(qi, 0)->name, "abc");
	qcow2_image_close(qi);
}

/* The last entry's name runs past the end of the file: QEMU reads zeros there and opens the
 * image; that entry is disabled, the others stay usable. */
Test(snapshot, entry_running_past_end_of_file_disables_that_snapshot_only)
{
	struct imgbuild_snapshot_opts so = {0};
	struct qcow2_image *qi;
	uint64_t last, table;

	build(3);
	so.name = "first";
	add(&so);
	so.name = "second";
	add(&so);
	/* the table moved to a new last cluster, the file cut right after it */
	last = entry_off(1) - img->snap_table_off;
	table = imgbuild_alloc_cluster(img);
	memcpy(img->bytes + table, img->bytes + img->snap_table_off, img->snap_table_bytes);
	imgbuild_put_be64(img, H_SNAPSHOTS_OFF, table);
	img->len = (size_t)(table + img->snap_table_bytes);
	imgbuild_put_be16(img, table + last + 14, 0xffff); /* name_size */
	cr_assert_eq(open_image(&qi), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_snapshot_count(qi), 2);
	cr_assert_null(qcow2_image_snapshot(qi, 0)->invalid);
	cr_assert_str_eq(qcow2_image_snapshot(qi, 0)->name, "first");
	cr_assert_not_null(qcow2_image_snapshot(qi, 1)->invalid);
	cr_assert(strstr(qcow2_image_snapshot(qi, 1)->invalid, "past end of file"), "%s",
		  qcow2_image_snapshot(qi, 1)->invalid);
	cr_assert_eq(qcow2_image_find_snapshot(qi, "first"), 0);
	qcow2_image_close(qi);
}

Test(snapshot, truncated_table_is_emsgsize_when_decoding)
{
	struct qcow2_snapshot s[3];

	build(3);
	add(NULL);
	add(NULL);
	cr_assert_eq(decode((size_t)img->snap_table_bytes, 3, s), -EMSGSIZE, "an entry too many");
	cr_assert_eq(decode(39, 1, s), -EMSGSIZE, "not even the fixed part");
	cr_assert_eq(decode(0, 1, s), -EMSGSIZE);
	cr_assert_eq(decode(40 + 16, 1, s), -EMSGSIZE, "no room for the name");
	cr_assert_eq(decode(0, 0, s), 0, "no entries, no bytes");
}

Test(snapshot, truncated_table_at_end_of_file_is_refused_on_open)
{
	struct qcow2_image *qi;

	build(3);
	add(NULL);
	img->len = (size_t)(img->snap_table_off + img->snap_table_bytes);
	imgbuild_put_be32(img, H_NB_SNAPSHOTS, 2);
	cr_assert_eq(open_image(&qi), -EUCLEAN);
	assert_error_mentions("snapshot table");
	assert_error_mentions("mem.qcow2");
}

Test(snapshot, huge_count_in_a_small_file_is_refused_without_allocating)
{
	struct qcow2_image *qi;

	build(3);
	add(NULL);
	imgbuild_put_be32(img, H_NB_SNAPSHOTS, 65536);
	cr_assert_eq(open_image(&qi), -EUCLEAN);
	assert_error_mentions("snapshot table");
}

Test(snapshot, long_ids_and_names_decode)
{
	struct imgbuild_snapshot_opts so = {0};
	struct qcow2_snapshot s[1];
	char id[128], name[1024];

	memset(id, 'i', sizeof(id));
	memset(name, 'n', sizeof(name));
	id[127] = '\0';
	name[1023] = '\0';
	build(3);
	so.id = id;
	so.name = name;
	add(&so);
	cr_assert_eq(decode((size_t)img->snap_table_bytes, 1, s), (ssize_t)img->snap_table_bytes,
		     "%s", qcow2_last_error());
	cr_assert_str_eq(s[0].id, id);
	cr_assert_str_eq(s[0].name, name);
}

Test(snapshot, names_as_long_as_qemu_writes_them_do_not_refuse_the_image)
{
	struct imgbuild_snapshot_opts so = {0};
	struct qcow2_image *qi;
	char name[1501];

	/* `qemu-img snapshot -c <1500 characters>` makes a valid image (qemu-img check finds
	 * no errors); the image must still open, and its other snapshots stay usable. */
	memset(name, 'n', sizeof(name) - 1);
	name[1500] = '\0';
	build(3);
	add(NULL);
	so.name = name;
	add(&so);
	cr_assert_eq(open_image(&qi), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_snapshot_count(qi), 2);
	cr_assert_eq(qcow2_image_find_snapshot(qi, "snap1"), 0);
	qcow2_image_close(qi);
}

Test(snapshot, nul_inside_id_or_name_disables_that_entry)
{
	struct imgbuild_snapshot_opts so = {0};
	struct qcow2_snapshot s[2];
	uint64_t e;

	build(3);
	so.id = "12";
	so.name = "abcd";
	add(&so);
	add(NULL);
	e = entry_off(0);
	img->bytes[e + 40 + 16 + 2 + 1] = 0; /* inside the name */
	cr_assert_eq(decode((size_t)img->snap_table_bytes, 2, s), (ssize_t)img->snap_table_bytes);
	cr_assert_not_null(s[0].invalid);
	cr_assert_null(s[1].invalid, "the next entry is read as it is");
	cr_assert_str_eq(s[1].name, "snap2");
	img->bytes[e + 40 + 16 + 2 + 1] = 'b';
	img->bytes[e + 40 + 16] = 0; /* inside the id */
	cr_assert_eq(decode((size_t)img->snap_table_bytes, 2, s), (ssize_t)img->snap_table_bytes);
	cr_assert_not_null(s[0].invalid);
	cr_assert_null(s[1].invalid);
}

struct field_case {
	uint32_t off;	/* within the entry */
	uint32_t width; /* 4 or 8 */
	uint64_t value;
	bool bad; /* the entry decodes, marked invalid (that snapshot only) */
};

ParameterizedTestParameters(snapshot, entry_field_limits)
{
	static struct field_case cases[] = {
	    {0, 8, 0x10100, true}, /* L1 offset not sector aligned */
	    {0, 8, 0x10001, true},
	    {0, 8, 0x10200, false}, /* sector aligned decodes */
	    {8, 4, QCOW2_MAX_L1_BYTES / 8, false},
	    {8, 4, QCOW2_MAX_L1_BYTES / 8 + 1, true},
	    {8, 4, 0xffffffff, true},
	    {48, 8, QCOW2_MAX_VIRTUAL_SIZE, false}, /* disk size in extra data */
	    {48, 8, QCOW2_MAX_VIRTUAL_SIZE + 1, true},
	    {48, 8, UINT64_MAX, true},
	};
	return cr_make_param_array(struct field_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct field_case *c, snapshot, entry_field_limits)
{
	struct qcow2_snapshot s[2];

	build(3);
	add(NULL);
	add(NULL);
	if (c->width == 8)
		imgbuild_put_be64(img, entry_off(0) + c->off, c->value);
	else
		imgbuild_put_be32(img, entry_off(0) + c->off, (uint32_t)c->value);
	cr_assert_eq(decode((size_t)img->snap_table_bytes, 2, s), (ssize_t)img->snap_table_bytes,
		     "field %u = %#llx: %s", c->off, (unsigned long long)c->value,
		     qcow2_last_error());
	cr_assert_eq(s[0].invalid != NULL, c->bad, "field %u = %#llx: invalid=%s", c->off,
		     (unsigned long long)c->value, s[0].invalid ? s[0].invalid : "(null)");
	cr_assert_null(s[1].invalid, "the next entry is not touched");
	cr_assert_str_eq(s[1].name, "snap2");
	cr_assert_eq(s[1].entry_off, entry_off(1) - entry_off(0));
}

/* ---- through an io and an open image ---- */

Test(snapshot, snapshot_read_returns_the_table)
{
	struct qcow2_snapshot *s = NULL;
	struct qcow2_header h;
	struct qcow2_io *io;

	build(3);
	add(NULL);
	add(NULL);
	io = imgbuild_io(img);
	cr_assert_eq(qcow2_header_read(io, &h), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_snapshot_read(io, &h, &s), 0, "%s", qcow2_last_error());
	cr_assert_str_eq(s[0].name, "snap1");
	cr_assert_str_eq(s[1].name, "snap2");
	qcow2_snapshots_free(s, 2);

	/* No snapshots: NULL. */
	h.nb_snapshots = 0;
	s = (struct qcow2_snapshot *)1;
	cr_assert_eq(qcow2_snapshot_read(io, &h, &s), 0);
	cr_assert_null(s);

	/* A table past the end is refused, not read. */
	h.nb_snapshots = 1;
	h.snapshots_off = img->len;
	cr_assert_eq(qcow2_snapshot_read(io, &h, &s), -EUCLEAN);
	qcow2_io_close(io);
}

Test(snapshot, large_table_is_read_past_the_first_chunk)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct imgbuild_snapshot_opts so = {0};
	struct qcow2_image *qi;
	char name[80];
	uint32_t i;

	/* 1200 entries of ~128 bytes: well over the 64 KiB first read. */
	o.cluster_bits = 9;
	o.size = 64 << 10;
	img = imgbuild_new(&o);
	cr_assert_eq(imgbuild_fill(img, 0, 0x22, 1024), 0);
	for (i = 0; i < 1200; i++) {
		snprintf(name, sizeof(name),
			 "snapshot number %u with a long name to fill the table", i);
		so.name = name;
		add(&so);
	}
	cr_assert_gt(img->snap_table_bytes, 128 << 10);
	cr_assert_eq(open_image(&qi), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_snapshot_count(qi), 1200);
	cr_assert_str_eq(qcow2_image_snapshot(qi, 1199)->name,
			 "snapshot number 1199 with a long name to fill the table");
	cr_assert_str_eq(qcow2_image_snapshot(qi, 1199)->id, "1200");
	cr_assert_null(qcow2_image_snapshot(qi, 1200));
	qcow2_image_close(qi);
}

Test(snapshot, find_snapshot_matches_ids_before_names)
{
	struct imgbuild_snapshot_opts so = {0};
	struct qcow2_image *qi;

	build(3);
	so.id = "2";
	so.name = "1";
	add(&so);
	so.id = "1";
	so.name = "daily";
	add(&so);
	cr_assert_eq(open_image(&qi), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_find_snapshot(qi, "1"), 1, "id 1 wins over the name '1'");
	cr_assert_eq(qcow2_image_find_snapshot(qi, "2"), 0);
	cr_assert_eq(qcow2_image_find_snapshot(qi, "daily"), 1);
	cr_assert_eq(qcow2_image_find_snapshot(qi, "weekly"), -ENOENT);
	assert_error_mentions("weekly");
	qcow2_image_close(qi);
}

/* A bad entry disables that snapshot only; the image and the other snapshots work. */
struct bad_entry_case { /* arrays, not pointers: each test runs in its own process */
	char what[32];
	uint32_t off, width;
	int64_t delta; /* added to the field */
	char mentions[24];
	bool unreadable; /* no one can read its L1 table: a repair may drop it */
};

ParameterizedTestParameters(snapshot, bad_entry_disables_that_snapshot_only)
{
	static struct bad_entry_case cases[] = {
	    {"misaligned to the cluster", 0, 8, 512, "cluster aligned", true},
	    {"misaligned to the sector", 0, 8, 1, "not aligned", true},
	    {"too large", 8, 4, QCOW2_MAX_L1_BYTES, "too large", true},
	    {"past the end of the file", 0, 8, 1ll << 40, "past end of file", true},
	    {"too small for the disk", 8, 4, -1, "too small", false},
	};
	return cr_make_param_array(struct bad_entry_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct bad_entry_case *c, snapshot, bad_entry_disables_that_snapshot_only)
{
	const struct qcow2_l1 *l1;
	struct qcow2_image *qi;
	uint64_t e;

	build(3);
	add(NULL);
	add(NULL);
	e = entry_off(0) + c->off;
	if (c->width == 8)
		imgbuild_put_be64(img, e, img->snaps[0].l1_off + (uint64_t)c->delta);
	else
		imgbuild_put_be32(img, e, (uint32_t)(img->snaps[0].l1_entries + c->delta));
	cr_assert_eq(open_image(&qi), 0, "%s: %s", c->what, qcow2_last_error());
	cr_assert_eq(qcow2_image_snapshot_count(qi), 2);
	cr_assert_not_null(qcow2_image_snapshot(qi, 0)->invalid, "%s", c->what);
	cr_assert(strstr(qcow2_image_snapshot(qi, 0)->invalid, c->mentions), "%s: %s", c->what,
		  qcow2_image_snapshot(qi, 0)->invalid);
	cr_assert_eq(qcow2_image_snapshot(qi, 0)->unreadable, c->unreadable, "%s", c->what);
	cr_assert_null(qcow2_image_snapshot(qi, 1)->invalid);
	/* the bad one is refused by name, by id and by index, naming it and the cause */
	cr_assert_eq(qcow2_image_find_snapshot(qi, "snap1"), -EUCLEAN);
	assert_error_mentions("snap1");
	assert_error_mentions(c->mentions);
	cr_assert_eq(qcow2_image_find_snapshot(qi, "1"), -EUCLEAN);
	cr_assert_eq(qcow2_image_snapshot_l1(qi, 0, &l1), -EUCLEAN);
	/* the good one works */
	cr_assert_eq(qcow2_image_find_snapshot(qi, "snap2"), 1);
	cr_assert_eq(qcow2_image_snapshot_l1(qi, 1, &l1), 0, "%s", qcow2_last_error());
	qcow2_image_close(qi);
}

Test(snapshot, a_repeated_name_finds_the_first_usable_entry)
{
	struct imgbuild_snapshot_opts so = {0};
	struct qcow2_image *qi;

	build(3);
	so.name = "same";
	so.id = "1";
	add(&so);
	so.id = "2";
	add(&so);
	so.id = "3";
	add(&so);
	imgbuild_put_be64(img, entry_off(0), img->snaps[0].l1_off + 512);
	cr_assert_eq(open_image(&qi), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_find_snapshot(qi, "same"), 1, "the first valid one");
	cr_assert_eq(qcow2_image_find_snapshot(qi, "3"), 2, "each by its id");
	qcow2_image_close(qi);
}

Test(snapshot, snapshot_l1_is_loaded_once_and_checked)
{
	const struct qcow2_l1 *a = NULL, *b = NULL;
	struct imgbuild_snapshot_opts so = {0};
	struct qcow2_image *qi;

	build(3);
	add(NULL);
	so.name = "gone";
	add(&so);
	so.name = "small";
	add(&so);
	imgbuild_put_be64(img, entry_off(1), img->len); /* L1 past the end */
	imgbuild_put_be32(img, entry_off(2) + 8, 0);	/* no L1 for 4 MiB */
	cr_assert_eq(open_image(&qi), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_snapshot_l1(qi, 0, &a), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_snapshot_l1(qi, 0, &b), 0);
	cr_assert_eq(a, b, "cached");
	cr_assert_eq(qcow2_image_snapshot_l1(qi, 1, &a), -EUCLEAN);
	assert_error_mentions("past end of file");
	cr_assert_eq(qcow2_image_snapshot_l1(qi, 1, &a), -EUCLEAN, "failures are not cached");
	cr_assert_eq(qcow2_image_snapshot_l1(qi, 2, &a), -EUCLEAN);
	assert_error_mentions("too small");
	cr_assert_eq(qcow2_image_snapshot_l1(qi, 3, &a), -ENOENT);
	qcow2_image_close(qi);
}
