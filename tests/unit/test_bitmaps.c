/* SPDX-License-Identifier: MIT */
/*
 * test_bitmaps.c - persistent bitmaps kept valid by writes (engine/bitmaps.c): the first change
 * marks them in use, durably, before any data; guest writes, zeroing and discards set the bits
 * at the bitmap's granularity; a clean close stores them and clears the flag; a crash at any
 * write leaves either bitmaps in use or valid ones that hold every change that reached the
 * file; a directory QEMU would refuse stops every write; a bitmap in use at open is left alone.
 * Images are imgbuild's (one bitmap, 64 KiB granularity) in a mkdtemp() directory, opened by
 * path so that the file hook can crash them at the Nth write.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "imgbuild.h"
#include "engine/engine.h"

#define GRAN  (64u << 10)
#define NBITS 64 /* 4 MiB at 64 KiB */

static struct imgbuild *img;
static char dir[64], path[PATH_MAX];

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/qcowfs-bitmaps-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/d.qcow2", dir);
	img = NULL;
}

static void teardown(void)
{
	qcow2_io_fail_files(QCOW2_IO_WRITE, 0, 0, false);
	qcow2_io_fail_files(QCOW2_IO_FLUSH, 0, 0, false);
	unlink(path);
	rmdir(dir);
	imgbuild_free(img);
}

TestSuite(bitmaps, .init = setup, .fini = teardown);

/* The imgbuild image with its bitmap's flags set to @flags, written to @path. */
static void build(uint32_t flags)
{
	struct imgbuild_opts o = imgbuild_defaults();
	FILE *f;

	o.bitmaps = true;
	img = imgbuild_new(&o);
	imgbuild_put_be32(img, img->bitmap_dir_off + 12, flags);
	f = fopen(path, "wb");
	cr_assert_not_null(f);
	cr_assert_eq(fwrite(img->bytes, 1, img->len, f), img->len);
	cr_assert_eq(fclose(f), 0);
}

static struct qcow2_image *open_img(bool writable)
{
	struct qcow2_image_opts o = {.writable = writable};
	struct qcow2_image *q;
	struct qcow2_io *io;

	cr_assert_eq(qcow2_io_open_file(path, writable, &io), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_open(io, path, &o, &q), 0, "%s", qcow2_last_error());
	return q;
}

/* The bitmap as the file holds it now: its entry, and its bits (NULL when in use). */
static void bitmap_now(struct qcow2_bitmap *out, uint8_t **bits)
{
	struct qcow2_image *q = open_img(false);
	struct qcow2_bitmap *b;
	uint64_t nbits;
	uint32_t n;

	cr_assert_eq(qcow2_image_bitmaps(q, false, &b, &n), 0, "%s", qcow2_last_error());
	cr_assert_eq(n, 1);
	*out = b[0];
	out->name = NULL;
	*bits = NULL;
	if (!(b[0].flags & QCOW2_BITMAP_IN_USE)) {
		cr_assert_eq(qcow2_image_bitmap_read(q, &b[0], bits, &nbits), 0, "%s",
			     qcow2_last_error());
		cr_assert_eq(nbits, NBITS);
	}
	qcow2_bitmaps_free(b, n);
	qcow2_image_close(q);
}

static void assert_clean(bool leaks_ok)
{
	struct qcow2_image *q = open_img(false);
	struct qcow2_check_result res;

	cr_assert_eq(qcow2_image_check(q, &res), 0, "%s", qcow2_last_error());
	cr_assert_eq(res.corruptions, 0, "%lu corruptions", (unsigned long)res.corruptions);
	if (!leaks_ok)
		cr_assert_eq(res.leaks, 0, "%lu leaked clusters", (unsigned long)res.leaks);
	qcow2_image_close(q);
}

static bool bit(const uint8_t *bits, unsigned i)
{
	return bits[i / 8] >> (i % 8) & 1;
}

/* The changes of the tests: a write across a granule boundary, a small write, a zeroing, a
 * discard (a zeroing with nothing below, as the views discard) and the unmapping of an overlay
 * emptied after a commit, which changes nothing the chain shows and marks nothing, as in QEMU;
 * @model gets the granules each one covers. */
static int changes(struct qcow2_image *q, bool *model)
{
	static uint8_t buf[8192];
	int r;

	memset(buf, 0xa7, sizeof(buf));
	if (model) {
		model[15] = model[16] = true; /* [1 MiB - 4 KiB, 1 MiB + 4 KiB) */
		model[40] = true;	      /* 1 byte at 2.5 MiB + 17 */
		model[48] = model[49] = true; /* zeros over [3 MiB, 3 MiB + 128 KiB) */
		model[60] = true;	      /* discard of [60 * 64 KiB, + 64 KiB) */
	}
	r = qcow2_image_write(q, buf, sizeof(buf), (1u << 20) - 4096, NULL);
	if (r == 0)
		r = qcow2_image_write(q, buf, 1, (5u << 19) + 17, NULL);
	if (r == 0)
		r = qcow2_image_zero(q, 3u << 20, 128u << 10, NULL);
	if (r == 0)
		r = qcow2_image_zero(q, 60ull * GRAN, GRAN, NULL);
	if (r == 0)
		r = qcow2_image_unmap(q, 62ull * GRAN, GRAN);
	return r;
}

Test(bitmaps, writes_zeroing_and_discards_set_the_bits_of_an_enabled_bitmap)
{
	bool model[NBITS] = {false};
	struct qcow2_image *q;
	struct qcow2_bitmap b;
	uint8_t *bits;
	unsigned i;

	build(QCOW2_BITMAP_AUTO);
	q = open_img(true);
	cr_assert_eq(changes(q, model), 0, "%s", qcow2_last_error());
	bitmap_now(&b, &bits);
	cr_assert(b.flags & QCOW2_BITMAP_IN_USE, "in use while the image is written");
	qcow2_image_close(q);
	bitmap_now(&b, &bits);
	cr_assert_eq(b.flags, QCOW2_BITMAP_AUTO, "flags after a clean close: %#x", b.flags);
	cr_assert_not_null(bits);
	for (i = 0; i < NBITS; i++)
		cr_assert_eq(bit(bits, i), model[i], "granule %u", i);
	free(bits);
	assert_clean(false);
}

Test(bitmaps, a_disabled_bitmap_is_in_use_while_written_and_unchanged_after)
{
	struct qcow2_image *q;
	struct qcow2_bitmap b;
	uint8_t *bits;
	unsigned i;

	build(0);
	q = open_img(true);
	cr_assert_eq(changes(q, NULL), 0, "%s", qcow2_last_error());
	bitmap_now(&b, &bits);
	cr_assert(b.flags & QCOW2_BITMAP_IN_USE, "in use while written, as QEMU marks it");
	qcow2_image_close(q);
	bitmap_now(&b, &bits);
	cr_assert_eq(b.flags, 0);
	cr_assert_eq(b.table_off, img->bitmap_table_off, "its table is kept");
	for (i = 0; i < NBITS; i++)
		cr_assert_not(bit(bits, i), "granule %u", i);
	free(bits);
	assert_clean(false);
}

Test(bitmaps, a_bitmap_in_use_at_open_is_left_in_use)
{
	struct qcow2_image *q;
	struct qcow2_bitmap b;
	uint8_t *bits;

	build(QCOW2_BITMAP_AUTO | QCOW2_BITMAP_IN_USE);
	q = open_img(true);
	cr_assert_eq(changes(q, NULL), 0, "%s", qcow2_last_error());
	qcow2_image_close(q);
	bitmap_now(&b, &bits);
	cr_assert_eq(b.flags, QCOW2_BITMAP_AUTO | QCOW2_BITMAP_IN_USE);
	cr_assert_eq(b.table_off, img->bitmap_table_off);
	assert_clean(false);
}

Test(bitmaps, a_directory_qemu_refuses_refuses_every_write)
{
	struct qcow2_image *q;
	uint8_t buf[512] = {1}, *before = NULL, *after;
	size_t len;
	FILE *f;

	build(QCOW2_BITMAP_AUTO | (1u << 5)); /* a reserved flag */
	before = malloc(img->len);
	memcpy(before, img->bytes, img->len);
	q = open_img(true);
	cr_assert_eq(qcow2_image_write(q, buf, sizeof(buf), 0, NULL), -EUCLEAN);
	cr_assert(strstr(qcow2_last_error(), "reserved flags"), "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_write(q, buf, sizeof(buf), 0, NULL), -EUCLEAN, "still refused");
	qcow2_image_close(q);
	after = malloc(img->len + 1);
	f = fopen(path, "rb");
	len = fread(after, 1, img->len + 1, f);
	fclose(f);
	cr_assert_eq(len, img->len, "the file did not change size");
	cr_assert_arr_eq(after, before, len, "nothing written");
	free(before);
	free(after);
}

/* Crash (every write and flush fails from the Nth write on) during the writes or during the
 * close: the file then has its bitmap in use, or one holding every change whose data reached
 * the file (the pattern of the first write is found in the file). Never a corruption. */
Test(bitmaps, a_crash_at_any_write_leaves_the_bitmap_in_use_or_right)
{
	bool model[NBITS] = {false};
	unsigned k, seen = 0, phase;
	uint8_t pattern[4096];

	memset(pattern, 0xa7, sizeof(pattern));
	for (phase = 0; phase < 2; phase++) {
		for (k = 1;; k++) {
			struct qcow2_image *q;
			struct qcow2_bitmap b;
			uint8_t *bits, *file;
			size_t len;
			bool landed;
			FILE *f;

			imgbuild_free(img);
			build(QCOW2_BITMAP_AUTO);
			q = open_img(true);
			if (phase == 1)
				cr_assert_eq(changes(q, model), 0, "%s", qcow2_last_error());
			qcow2_io_fail_files(QCOW2_IO_WRITE, k, -EIO, true);
			if (phase == 0)
				changes(q, model);
			qcow2_image_close(q);
			seen = qcow2_io_fail_files_seen(QCOW2_IO_WRITE);
			qcow2_io_fail_files(QCOW2_IO_WRITE, 0, 0, false);
			qcow2_io_fail_files(QCOW2_IO_FLUSH, 0, 0, false);
			file = malloc(4u << 20 << 1);
			f = fopen(path, "rb");
			len = fread(file, 1, 8u << 20, f);
			fclose(f);
			landed = memmem(file, len, pattern, sizeof(pattern)) != NULL;
			free(file);
			bitmap_now(&b, &bits);
			if (!(b.flags & QCOW2_BITMAP_IN_USE) && landed)
				cr_assert(bits && bit(bits, 15) && bit(bits, 16),
					  "phase %u, crash at write %u: data written, bitmap "
					  "neither in use nor marked",
					  phase, k);
			free(bits);
			assert_clean(true);
			if (seen < k)
				break; /* the whole run went through: every write point tried */
		}
		cr_assert_gt(k, 3, "phase %u: too few writes to crash at", phase);
	}
}

/* The store of the bitmap commands: a bitmap added with bits beside the one kept, then every
 * bitmap removed (the extension goes); each time the file checks clean, with no leak. */
Test(bitmaps, the_store_adds_keeps_and_removes_bitmaps)
{
	struct qcow2_image *q, *r;
	struct qcow2_bitmap *b, nb[2];
	uint8_t bits[NBITS / 8] = {0}, *got, *keep[2];
	uint64_t nbits;
	uint32_t n;

	build(QCOW2_BITMAP_AUTO);
	q = open_img(true);
	cr_assert_eq(qcow2_image_bitmaps(q, false, &b, &n), 0, "%s", qcow2_last_error());
	nb[0] = b[0];
	nb[1] = (struct qcow2_bitmap){.name = "added", .flags = 0, .granularity_bits = 16};
	bits[1] = 0x81; /* granules 8 and 15 */
	keep[0] = NULL;
	keep[1] = bits;
	cr_assert_eq(qcow2_image_bitmaps_store(q, nb, 2, keep), 0, "%s", qcow2_last_error());
	qcow2_bitmaps_free(b, n);
	/* right after the store (the clean close stores the bitmaps it tracks anew, as QEMU) */
	cr_assert_eq(qcow2_image_bitmaps(q, false, &b, &n), 0, "%s", qcow2_last_error());
	cr_assert_eq(b[0].table_off, img->bitmap_table_off, "the first keeps its table");
	qcow2_bitmaps_free(b, n);
	qcow2_image_close(q);
	r = open_img(false);
	cr_assert_eq(qcow2_image_bitmaps(r, false, &b, &n), 0, "%s", qcow2_last_error());
	cr_assert_eq(n, 2);
	cr_assert_str_eq(b[0].name, "bitmap0");
	cr_assert_str_eq(b[1].name, "added");
	cr_assert_eq(qcow2_image_bitmap_read(r, &b[1], &got, &nbits), 0, "%s", qcow2_last_error());
	cr_assert_arr_eq(got, bits, sizeof(bits));
	free(got);
	qcow2_bitmaps_free(b, n);
	qcow2_image_close(r);
	assert_clean(false);

	q = open_img(true);
	cr_assert_eq(qcow2_image_bitmaps_store(q, NULL, 0, NULL), 0, "%s", qcow2_last_error());
	qcow2_image_close(q);
	r = open_img(false);
	cr_assert_not(qcow2_image_header(r)->has_bitmaps_ext, "no extension left");
	cr_assert_not(qcow2_image_header(r)->autoclear & QCOW2_AUTOCLEAR_BITMAPS);
	qcow2_image_close(r);
	assert_clean(false);
}

/* A directory entry QEMU refuses is dropped by storing the others (a repair's way). */
Test(bitmaps, the_store_drops_an_entry_qemu_refuses)
{
	struct qcow2_image *q;

	build(QCOW2_BITMAP_AUTO | (1u << 5));
	q = open_img(true);
	cr_assert_eq(qcow2_image_bitmaps_store(q, NULL, 0, NULL), 0, "%s", qcow2_last_error());
	qcow2_image_close(q);
	assert_clean(false);
}

/* Guest writes of this open have marked the bitmaps: a store would lose them. */
Test(bitmaps, the_store_is_refused_once_writes_marked_the_bitmaps)
{
	struct qcow2_image *q;

	build(QCOW2_BITMAP_AUTO);
	q = open_img(true);
	cr_assert_eq(changes(q, NULL), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_bitmaps_store(q, NULL, 0, NULL), -EBUSY);
	qcow2_image_close(q);
	assert_clean(false);
}

/* A crash at any write of a store (a bitmap added) or of the close after it: no corruption; the
 * directory is the old one, the new one (in use if the crash came after the store), or,
 * between the header writes, out of force (as QEMU leaves it). */
Test(bitmaps, a_crash_during_a_store_leaves_the_old_directory_or_the_new)
{
	uint8_t bits[NBITS / 8] = {0x0f}, *keep[2] = {NULL, bits};
	unsigned k, seen = 0;

	for (k = 1;; k++) {
		struct qcow2_image *q;
		struct qcow2_bitmap *b, nb[2];
		uint32_t n;

		imgbuild_free(img);
		build(QCOW2_BITMAP_AUTO);
		q = open_img(true);
		cr_assert_eq(qcow2_image_bitmaps(q, false, &b, &n), 0, "%s", qcow2_last_error());
		nb[0] = b[0];
		nb[1] = (struct qcow2_bitmap){.name = "added", .granularity_bits = 16};
		qcow2_io_fail_files(QCOW2_IO_WRITE, k, -EIO, true);
		qcow2_image_bitmaps_store(q, nb, 2, keep);
		qcow2_bitmaps_free(b, n);
		qcow2_image_close(q);
		seen = qcow2_io_fail_files_seen(QCOW2_IO_WRITE);
		qcow2_io_fail_files(QCOW2_IO_WRITE, 0, 0, false);
		qcow2_io_fail_files(QCOW2_IO_FLUSH, 0, 0, false);
		q = open_img(false);
		cr_assert_eq(qcow2_image_bitmaps(q, false, &b, &n), 0, "crash at write %u: %s", k,
			     qcow2_last_error());
		cr_assert(n <= 2, "crash at write %u: %u bitmaps", k, n);
		/* (in use: the store was done, the crash hit the open that then kept them) */
		if (n == 2 && !(b[1].flags & QCOW2_BITMAP_IN_USE)) {
			uint8_t *got;
			uint64_t nbits;

			cr_assert_eq(qcow2_image_bitmap_read(q, &b[1], &got, &nbits), 0, "%s",
				     qcow2_last_error());
			cr_assert_arr_eq(got, bits, sizeof(bits), "crash at write %u", k);
			free(got);
		}
		qcow2_bitmaps_free(b, n);
		qcow2_image_close(q);
		assert_clean(true);
		if (seen < k)
			break;
	}
	cr_assert_gt(k, 3);
}
