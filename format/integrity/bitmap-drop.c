/* SPDX-License-Identifier: MIT */
/*
 * bitmap-drop.c - check --repair --drop-bitmap NAME: an inconsistent persistent bitmap (marked
 * in use, an entry QEMU refuses, a table with reserved bits, misaligned or outside the file, a
 * table that does not fit the disk) taken out of the bitmap directory, explicitly, by name. A
 * consistent bitmap is refused: 'qcowctl bitmap remove' is its removal.
 *
 * Write order, as QEMU updates a directory in place (block/qcow2-bitmap.c): the bitmaps
 * extension is taken out of the header first (bitmaps out of force, durable: the directory is
 * then referenced by nothing), the shrunk directory written over the old one and made durable,
 * then the extension written again naming it, with the autoclear bit set (header-write.c). A
 * crash in between leaves no bitmap in force and leaked clusters, never a torn directory in
 * force. The dropped bitmap's table and data clusters, and the directory's clusters it no
 * longer covers, are then referenced by nothing: the repair that follows frees them as leaks
 * (a cluster the damaged table shared with live metadata keeps its other reference).
 *
 * Locks: w->frees exclusive and w->lock around the writes, as every change of the header.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "integrity/integrity.h"

/* Why bitmap @b of @img is inconsistent (copied into @why), or false when it is sound. */
static bool damaged(struct qcow2_image *img, const struct qcow2_bitmap *b, char *why, size_t cap)
{
	uint64_t *table;

	if (b->invalid)
		snprintf(why, cap, "%s", b->invalid);
	else if (b->flags & QCOW2_BITMAP_IN_USE)
		snprintf(why, cap, "is in use (inconsistent: not saved by its last writer)");
	else if (b->table_entries !=
		 qcow2_bitmap_table_entries(img->h.size, b->granularity_bits, img->h.cluster_bits))
		snprintf(why, cap, "has a table that does not fit the disk");
	else if (qcow2_image_bitmap_table(img, b, &table) < 0)
		snprintf(why, cap, "has a damaged table (%s)", qcow2_last_error());
	else {
		free(table);
		return false;
	}
	return true;
}

/* The directory without entry @drop (@n entries in @b) written over the old one and put back
 * in force. w->lock held, w->frees exclusive. */
static int rewrite(struct qcow2_image *img, const struct qcow2_bitmap *b, uint32_t n, uint32_t drop)
{
	uint64_t off = img->h.bitmap_dir_off;
	struct qcow2_bitmap *rest = NULL;
	uint8_t *dir = NULL;
	size_t len = 0;
	uint32_t i, k = 0;
	int r;

	if (n > 1) {
		rest = calloc(n - 1, sizeof(*rest));
		if (!rest)
			return qcow2_oom_for("the bitmap directory");
		for (i = 0; i < n; i++)
			if (i != drop)
				rest[k++] = b[i];
		len = qcow2_bitmap_dir_encode(rest, k, NULL);
		dir = calloc(1, len);
		if (!dir) {
			free(rest);
			return qcow2_oom_for("the bitmap directory");
		}
		qcow2_bitmap_dir_encode(rest, k, dir);
		free(rest);
	}
	r = qcow2_image_write_bitmaps_ext(img, 0, 0, 0);
	if (r == 0 && k) {
		r = qcow2_io_pwrite_meta(img->io, dir, len, off, QCOW2_OL_BITMAP_DIR);
		if (r == 0)
			r = qcow2_io_flush(img->io);
		if (r == 0)
			r = qcow2_image_write_bitmaps_ext(img, k, len, off);
	}
	if (r == 0)
		r = qcow2_overlap_reload_bitmaps(img);
	free(dir);
	return r;
}

int qcow2_image_bitmap_drop(struct qcow2_image *img, const char *name, bool dry_run, char *why,
			    size_t cap)
{
	struct qcow2_bitmap *b;
	uint32_t n, i;
	int r;

	r = qcow2_image_bitmaps(img, true, &b, &n);
	if (r < 0)
		return r;
	for (i = 0; i < n && strcmp(b[i].name, name); i++)
		;
	if (i == n)
		r = qcow2_set_error(-ENOENT, "'%s': no bitmap '%s'", img->name, name);
	else if (!damaged(img, &b[i], why, cap))
		r = qcow2_set_error(-EINVAL,
				    "'%s': bitmap '%s' is consistent: 'qcowctl bitmap remove' "
				    "removes it",
				    img->name, name);
	else if (!dry_run && !img->w)
		r = qcow2_set_error(-EROFS, "'%s' is not open for repair", img->name);
	if (r == 0 && !dry_run) {
		qcow2_image_exclusive_begin(img);
		qcow2_image_meta_lock(img);
		r = rewrite(img, b, n, i);
		qcow2_image_meta_unlock(img);
		qcow2_image_exclusive_end(img);
		if (r < 0)
			qcow2_error_prefix(r, img->name);
	}
	qcow2_bitmaps_free(b, n);
	return r;
}
