/* SPDX-License-Identifier: MIT */
/*
 * test_bitmap.c - the bitmap directory decoder and encoder (ondisk/bitmap.c) and the read side of
 * persistent bitmaps (image/bitmap.c): directories written here from qcow2.txt's layout, each
 * limit QEMU puts on a field, and images whose bitmaps qemu-img and qemu-io wrote (names,
 * granularities, flags, and bits equal to a model of the ranges qemu-io wrote).
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "image/image.h"

/* ---- directories written from qcow2.txt ---- */

struct entry {
	uint64_t table_off;
	uint32_t table_entries, flags, extra;
	uint8_t type, gran;
	const char *name;
};

static void be(uint8_t *p, uint64_t v, int n)
{
	int i;

	for (i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
}

/* Lay out @n entries into @buf (zeroed first); returns the directory's length. */
static size_t layout(const struct entry *e, int n, uint8_t *buf, size_t cap)
{
	size_t off = 0, len, name;
	int i;

	memset(buf, 0, cap);
	for (i = 0; i < n; i++) {
		name = strlen(e[i].name);
		len = (24 + name + e[i].extra + 7) & ~(size_t)7;
		cr_assert_leq(off + len, cap);
		be(buf + off, e[i].table_off, 8);
		be(buf + off + 8, e[i].table_entries, 4);
		be(buf + off + 12, e[i].flags, 4);
		buf[off + 16] = e[i].type;
		buf[off + 17] = e[i].gran;
		be(buf + off + 18, name, 2);
		be(buf + off + 20, e[i].extra, 4);
		memcpy(buf + off + 24 + e[i].extra, e[i].name, name);
		off += len;
	}
	return off;
}

#define VSIZE (64ull << 20) /* 64 MiB, 64 KiB clusters: 1024 bits at 64 KiB, one table entry */

static const struct entry good[2] = {
    {0x50000, 1, QCOW2_BITMAP_AUTO, 0, 1, 16, "b1"},
    {0x70000, 1, 0, 0, 1, 9, "second-bitmap"},
};

Test(bitmap_dir, decodes_what_qcow2_txt_lays_out)
{
	uint8_t buf[256];
	size_t len = layout(good, 2, buf, sizeof(buf));
	struct qcow2_bitmap *b;

	cr_assert_eq(qcow2_bitmap_dir_decode(buf, len, 2, 16, VSIZE, false, &b), 0, "%s",
		     qcow2_last_error());
	cr_assert_str_eq(b[0].name, "b1");
	cr_assert_eq(b[0].table_off, 0x50000);
	cr_assert_eq(b[0].table_entries, 1);
	cr_assert_eq(b[0].flags, QCOW2_BITMAP_AUTO);
	cr_assert_eq(b[0].granularity_bits, 16);
	cr_assert_null(b[0].invalid);
	cr_assert_str_eq(b[1].name, "second-bitmap");
	cr_assert_eq(b[1].entry_off, 32);
	cr_assert_eq(b[1].granularity_bits, 9);
	cr_assert_eq(b[1].flags, 0);
	qcow2_bitmaps_free(b, 2);
}

Test(bitmap_dir, encodes_the_bytes_it_decodes)
{
	uint8_t want[256], got[256];
	size_t len = layout(good, 2, want, sizeof(want));
	struct qcow2_bitmap *b;

	cr_assert_eq(qcow2_bitmap_dir_decode(want, len, 2, 16, VSIZE, false, &b), 0);
	cr_assert_eq(qcow2_bitmap_dir_encode(b, 2, NULL), len);
	memset(got, 0xaa, sizeof(got));
	cr_assert_eq(qcow2_bitmap_dir_encode(b, 2, got), len);
	cr_assert_arr_eq(got, want, len);
	qcow2_bitmaps_free(b, 2);
}

Test(bitmap_dir, table_size_follows_the_disk_and_granularity)
{
	/* 64 MiB at 64 KiB: 1024 bits, 128 bytes: one cluster of 64 KiB */
	cr_assert_eq(qcow2_bitmap_table_entries(VSIZE, 16, 16), 1);
	/* 8 MiB at 512 B with 512 B clusters: 16384 bits, 2048 bytes: 4 clusters */
	cr_assert_eq(qcow2_bitmap_table_entries(8ull << 20, 9, 9), 4);
	/* one byte more needs one more bit, which spills into a fifth cluster */
	cr_assert_eq(qcow2_bitmap_table_entries((8ull << 20) + 1, 9, 9), 5);
	cr_assert_eq(qcow2_bitmap_table_entries(0, 16, 16), 0);
}

/* One change to the good directory, and what a strict and a lenient decode say (no pointers
 * in a parameter: Criterion runs each test in a new process of the binary). */
struct dir_case {
	int field; /* which change */
	uint32_t nb;
	int strict, lenient; /* lenient: 0 with entry 0 invalid, or an error */
};

enum {
	F_NONE,
	F_TABLE0,
	F_MISALIGNED,
	F_ENTRIES0,
	F_ENTRIES_HUGE,
	F_GRAN_LOW,
	F_GRAN_HIGH,
	F_FLAGS,
	F_TYPE,
	F_EXTRA,
	F_NAME_LONG,
	F_TOO_SMALL,
	F_PAST_END,
	F_TRAILING
};

static const char *const field_names[] = {
    "the header's count",
    "table at 0",
    "misaligned table",
    "empty table",
    "table over 2^27 entries",
    "granularity under 512",
    "granularity over 2^31",
    "reserved flag",
    "unknown type",
    "extra data",
    "name over 1023 bytes",
    "table too small for the disk",
    "entry past the directory",
    "bytes after the last entry",
};

ParameterizedTestParameters(bitmap_dir, hostile)
{
	static struct dir_case c[] = {
	    {F_NONE, 3, -EUCLEAN, -EUCLEAN},
	    {F_NONE, 1, -EUCLEAN, -EUCLEAN},
	    {F_NONE, 0, -EUCLEAN, -EUCLEAN},
	    {F_TABLE0, 2, -EUCLEAN, 0},
	    {F_MISALIGNED, 2, -EUCLEAN, 0},
	    {F_ENTRIES0, 2, -EUCLEAN, 0},
	    {F_ENTRIES_HUGE, 2, -EUCLEAN, 0},
	    {F_GRAN_LOW, 2, -EUCLEAN, 0},
	    {F_GRAN_HIGH, 2, -EUCLEAN, 0},
	    {F_FLAGS, 2, -EUCLEAN, 0},
	    {F_TYPE, 2, -EUCLEAN, 0},
	    {F_EXTRA, 2, -EUCLEAN, 0},
	    {F_NAME_LONG, 2, -EUCLEAN, 0},
	    {F_TOO_SMALL, 2, -EUCLEAN, 0},
	    {F_PAST_END, 2, -EUCLEAN, -EUCLEAN},
	    {F_TRAILING, 2, -EUCLEAN, -EUCLEAN},
	};
	return cr_make_param_array(struct dir_case, c, sizeof(c) / sizeof(c[0]));
}

ParameterizedTest(struct dir_case *c, bitmap_dir, hostile)
{
	static char long_name[1100];
	struct entry e[2] = {good[0], good[1]};
	uint8_t buf[2048];
	struct qcow2_bitmap *b = NULL;
	const char *what = field_names[c->field];
	uint64_t vsize = VSIZE;
	size_t len;

	memset(long_name, 'n', 1024);
	long_name[1024] = 0;
	switch (c->field) {
	case F_TABLE0:
		e[0].table_off = 0;
		break;
	case F_MISALIGNED:
		e[0].table_off = 0x50200;
		break;
	case F_ENTRIES0:
		e[0].table_entries = 0;
		break;
	case F_ENTRIES_HUGE:
		e[0].table_entries = 0x8000001;
		break;
	case F_GRAN_LOW:
		e[0].gran = 8;
		break;
	case F_GRAN_HIGH:
		e[0].gran = 32;
		break;
	case F_FLAGS:
		e[0].flags |= 4;
		break;
	case F_TYPE:
		e[0].type = 2;
		break;
	case F_EXTRA:
		e[0].extra = 8;
		break;
	case F_NAME_LONG:
		e[0].name = long_name;
		break;
	case F_TOO_SMALL: /* 8 GiB at 512 B needs 32 clusters of bits; at 1 MiB, one */
		e[0].gran = 9;
		e[1].gran = 20;
		vsize = 8ull << 30;
		break;
	default:
		break;
	}
	len = layout(e, 2, buf, sizeof(buf));
	if (c->field == F_PAST_END)
		len -= 8;
	if (c->field == F_TRAILING)
		len += 24;
	cr_assert_eq(qcow2_bitmap_dir_decode(buf, len, c->nb, 16, vsize, false, &b), c->strict,
		     "%s", what);
	cr_assert_null(b, "%s", what);
	cr_assert_neq(qcow2_last_error()[0], 0, "%s: no message", what);
	cr_assert_eq(qcow2_bitmap_dir_decode(buf, len, c->nb, 16, vsize, true, &b), c->lenient,
		     "%s (lenient)", what);
	if (c->lenient == 0) {
		cr_assert_not_null(b[0].invalid, "%s", what);
		cr_assert_null(b[1].invalid, "%s", what);
		cr_assert_str_eq(b[1].name, "second-bitmap", "%s", what);
		qcow2_bitmaps_free(b, 2);
	}
}

Test(bitmap_dir, an_in_use_bitmap_may_be_too_small_for_the_disk)
{
	struct entry e[1] = {{0x50000, 1, QCOW2_BITMAP_IN_USE, 0, 1, 9, "resized"}};
	uint8_t buf[64];
	size_t len = layout(e, 1, buf, sizeof(buf));
	struct qcow2_bitmap *b;

	/* QEMU's rule: an inconsistent bitmap may have any size (not saved after a resize) */
	cr_assert_eq(qcow2_bitmap_dir_decode(buf, len, 1, 16, VSIZE, false, &b), 0);
	qcow2_bitmaps_free(b, 1);
}

/* ---- images written by qemu-img and qemu-io ---- */

static char dir[64];

static bool have_qemu(void)
{
	if (system("command -v qemu-img >/dev/null 2>&1 && command -v qemu-io >/dev/null 2>&1") ==
	    0)
		return true;
	if (getenv("CI") && !strcmp(getenv("CI"), "true"))
		cr_assert_fail("qemu-img and qemu-io are required under CI");
	return false;
}

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	cr_assert_eq(system(cmd), 0, "failed: %s", cmd);
}

static void make_dir(void)
{
	strcpy(dir, "/tmp/test_bitmap.XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void remove_dir(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		cr_log_warn("could not remove %s", dir);
}

TestSuite(bitmap_qemu, .init = make_dir, .fini = remove_dir);

static struct qcow2_image *load(const char *file)
{
	struct qcow2_image *img;
	struct qcow2_io *io;
	char path[128];

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	cr_assert_eq(qcow2_io_open_file(path, false, &io), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_load(io, path, NULL, &img), 0, "%s", qcow2_last_error());
	return img;
}

/* Set in @model the bits of granularity @g covering [@off, @off + @len). */
static void model_set(uint8_t *model, uint64_t g, uint64_t off, uint64_t len)
{
	uint64_t i;

	for (i = off / g; i <= (off + len - 1) / g; i++)
		model[i / 8] |= (uint8_t)(1u << (i % 8));
}

struct qw {
	uint64_t off, len;
	const char *op;
};

/* What qemu-io writes (write, write -z, discard): every kind marks its range dirty. */
static const struct qw writes[] = {
    {0, 4096, "write"},		  {3 << 20, 1024, "write"},	    {(5 << 20) + 511, 2, "write"},
    {7 << 20, 65536, "write -z"}, {(1 << 20) + 1536, 512, "write"},
};

static void write_all(const char *file, const char *opts)
{
	char cmd[1024];
	size_t i, n = 0;

	n += (size_t)snprintf(cmd + n, sizeof(cmd) - n, "qemu-io %s", opts);
	for (i = 0; i < sizeof(writes) / sizeof(writes[0]); i++)
		n += (size_t)snprintf(cmd + n, sizeof(cmd) - n, " -c '%s %llu %llu'", writes[i].op,
				      (unsigned long long)writes[i].off,
				      (unsigned long long)writes[i].len);
	snprintf(cmd + n, sizeof(cmd) - n, " '%s/%s' >/dev/null", dir, file);
	sh("%s", cmd);
}

static void assert_bits(struct qcow2_image *img, const struct qcow2_bitmap *b, bool dirty)
{
	uint64_t g = 1ull << b->granularity_bits, vsize = qcow2_image_header(img)->size, nbits;
	uint64_t want_bits = (vsize + g - 1) / g;
	uint8_t *bits, *model = calloc(want_bits / 8 + 1, 1);
	size_t i;

	cr_assert_not_null(model);
	for (i = 0; dirty && i < sizeof(writes) / sizeof(writes[0]); i++)
		model_set(model, g, writes[i].off, writes[i].len);
	cr_assert_eq(qcow2_image_bitmap_read(img, b, &bits, &nbits), 0, "%s", qcow2_last_error());
	cr_assert_eq(nbits, want_bits, "bitmap '%s'", b->name);
	cr_assert_arr_eq(bits, model, (nbits + 7) / 8, "bitmap '%s' differs from the writes",
			 b->name);
	free(bits);
	free(model);
}

Test(bitmap_qemu, names_granularities_flags_and_bits_are_qemus)
{
	struct qcow2_image *img;
	struct qcow2_bitmap *b;
	uint32_t n;

	if (!have_qemu())
		cr_skip_test("qemu-img or qemu-io missing");
	sh("cd '%s' && qemu-img create -q -f qcow2 -o cluster_size=512 a.qcow2 8M && "
	   "qemu-img bitmap --add -g 512 a.qcow2 fine && "
	   "qemu-img bitmap --add -g 2M a.qcow2 coarse && "
	   "qemu-img bitmap --add --disable a.qcow2 off && "
	   "qemu-img bitmap --add a.qcow2 default",
	   dir);
	write_all("a.qcow2", "-f qcow2");
	sh("cd '%s' && qemu-img bitmap --add a.qcow2 later", dir);
	img = load("a.qcow2");
	cr_assert_eq(qcow2_image_bitmaps(img, false, &b, &n), 0, "%s", qcow2_last_error());
	cr_assert_eq(n, 5);
	cr_assert_str_eq(b[0].name, "fine");
	cr_assert_eq(b[0].granularity_bits, 9);
	cr_assert_eq(b[0].flags, QCOW2_BITMAP_AUTO);
	cr_assert_eq(b[0].table_entries, 4); /* 16384 bits in 512-byte clusters */
	cr_assert_str_eq(b[1].name, "coarse");
	cr_assert_eq(b[1].granularity_bits, 21);
	cr_assert_str_eq(b[2].name, "off");
	cr_assert_eq(b[2].flags, 0);
	cr_assert_str_eq(b[3].name, "default");
	/* qemu-img's default: the cluster size, at least 4 KiB and at most 64 KiB */
	cr_assert_eq(b[3].granularity_bits, 12);
	cr_assert_str_eq(b[4].name, "later");
	assert_bits(img, &b[0], true);
	assert_bits(img, &b[1], true);
	assert_bits(img, &b[2], false);
	assert_bits(img, &b[3], true);
	assert_bits(img, &b[4], false);
	qcow2_bitmaps_free(b, n);
	qcow2_image_unload(img);
}

Test(bitmap_qemu, an_image_without_bitmaps_has_none)
{
	struct qcow2_image *img;
	struct qcow2_bitmap *b;
	uint32_t n = 7;

	if (!have_qemu())
		cr_skip_test("qemu-img or qemu-io missing");
	sh("cd '%s' && qemu-img create -q -f qcow2 a.qcow2 1M", dir);
	img = load("a.qcow2");
	cr_assert_eq(qcow2_image_bitmaps(img, false, &b, &n), 0);
	cr_assert_eq(n, 0);
	cr_assert_null(b);
	qcow2_image_unload(img);
}

/* Patch the first table entry of the first bitmap of @file to @v. */
static void patch_first_table_entry(struct qcow2_image *img, const char *file, uint64_t v)
{
	struct qcow2_bitmap *b;
	uint8_t e[8];
	char path[128];
	uint32_t n;
	int fd;

	cr_assert_eq(qcow2_image_bitmaps(img, false, &b, &n), 0);
	snprintf(path, sizeof(path), "%s/%s", dir, file);
	fd = open(path, O_WRONLY);
	cr_assert_geq(fd, 0);
	be(e, v, 8);
	cr_assert_eq(pwrite(fd, e, 8, (off_t)b[0].table_off), 8);
	close(fd);
	qcow2_bitmaps_free(b, n);
}

Test(bitmap_qemu, table_entries_zero_ones_and_reserved_bits)
{
	struct qcow2_image *img;
	struct qcow2_bitmap *b;
	uint8_t *bits;
	uint64_t nbits, i;
	uint32_t n;

	if (!have_qemu())
		cr_skip_test("qemu-img or qemu-io missing");
	sh("cd '%s' && qemu-img create -q -f qcow2 a.qcow2 64M && "
	   "qemu-img bitmap --add -g 65536 a.qcow2 b",
	   dir);
	img = load("a.qcow2");
	patch_first_table_entry(img, "a.qcow2", QCOW2_BME_ALL_ONES);
	qcow2_image_unload(img);
	img = load("a.qcow2");
	cr_assert_eq(qcow2_image_bitmaps(img, false, &b, &n), 0);
	cr_assert_eq(qcow2_image_bitmap_read(img, &b[0], &bits, &nbits), 0, "%s",
		     qcow2_last_error());
	cr_assert_eq(nbits, 1024);
	for (i = 0; i < nbits / 8; i++)
		cr_assert_eq(bits[i], 0xff, "byte %llu", (unsigned long long)i);
	free(bits);
	qcow2_bitmaps_free(b, n);
	patch_first_table_entry(img, "a.qcow2", 0x200ull << 48); /* a reserved bit */
	qcow2_image_unload(img);
	img = load("a.qcow2");
	cr_assert_eq(qcow2_image_bitmaps(img, false, &b, &n), 0);
	cr_assert_eq(qcow2_image_bitmap_read(img, &b[0], &bits, &nbits), -EUCLEAN);
	assert_error_mentions("table entry 0");
	cr_assert_null(bits);
	qcow2_bitmaps_free(b, n);
	patch_first_table_entry(img, "a.qcow2", 1ull << 40); /* a cluster past the file */
	qcow2_image_unload(img);
	img = load("a.qcow2");
	cr_assert_eq(qcow2_image_bitmaps(img, false, &b, &n), 0);
	cr_assert_eq(qcow2_image_bitmap_read(img, &b[0], &bits, &nbits), -EUCLEAN);
	qcow2_bitmaps_free(b, n);
	qcow2_image_unload(img);
}

Test(bitmap_qemu, an_in_use_bitmap_is_not_read)
{
	struct qcow2_image *img;
	struct qcow2_bitmap *b;
	uint8_t *bits;
	uint64_t nbits;
	uint32_t n;
	uint8_t flags[4];
	char path[128];
	int fd;

	if (!have_qemu())
		cr_skip_test("qemu-img or qemu-io missing");
	sh("cd '%s' && qemu-img create -q -f qcow2 a.qcow2 64M && qemu-img bitmap --add a.qcow2 b",
	   dir);
	img = load("a.qcow2");
	cr_assert_eq(qcow2_image_bitmaps(img, false, &b, &n), 0);
	snprintf(path, sizeof(path), "%s/a.qcow2", dir);
	fd = open(path, O_WRONLY);
	cr_assert_geq(fd, 0);
	be(flags, QCOW2_BITMAP_IN_USE | QCOW2_BITMAP_AUTO, 4);
	cr_assert_eq(pwrite(fd, flags, 4, (off_t)(qcow2_image_header(img)->bitmap_dir_off + 12)),
		     4);
	close(fd);
	qcow2_bitmaps_free(b, n);
	qcow2_image_unload(img);
	img = load("a.qcow2");
	cr_assert_eq(qcow2_image_bitmaps(img, false, &b, &n), 0);
	cr_assert_eq(b[0].flags, QCOW2_BITMAP_IN_USE | QCOW2_BITMAP_AUTO);
	cr_assert_eq(qcow2_image_bitmap_read(img, &b[0], &bits, &nbits), -EUCLEAN);
	assert_error_mentions("inconsistent");
	qcow2_bitmaps_free(b, n);
	qcow2_image_unload(img);
}
