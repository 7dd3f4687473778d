/* SPDX-License-Identifier: MIT */
/*
 * header-write.c - the header fields the write side rewrites, and the first change of an open.
 *
 * Header updates (qcow2_image_write_header()) rewrite bytes 24..71 (v2) or 24..95 (v3) in one
 * write, laid out by ondisk.h's OFF_* (the one home of the header layout, which header.c decodes
 * and encodes): size, L1 and refcount table placement, snapshot fields as they are, and for v3
 * the feature bits. That range lies in the first sector, which the disk writes whole.
 *
 * Locks: none taken; the callers hold w->lock (or the image alone, while it opens).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/engine.h"

int qcow2_image_write_header(struct qcow2_image *img)
{
	const struct qcow2_header *h = &img->h;
	uint8_t b[OFF_REFCOUNT_ORDER];
	size_t len;
	/* the corrupt bit may be set by another thread's refused write (overlap.c) */
	uint64_t incompat = __atomic_load_n(&h->incompat, __ATOMIC_ACQUIRE) & ~QCOW2_INCOMPAT_DIRTY;
	int r;

	if (img->w->set_dirty)
		incompat |= QCOW2_INCOMPAT_DIRTY;
	len = qcow2_header_put_mutable(h, incompat, b);
	r = qcow2_io_pwrite_meta(img->io, b + OFF_SIZE, len - OFF_SIZE, OFF_SIZE, QCOW2_OL_HEADER);
	/* a corrupt bit set while this header was being written must not be lost */
	if (r == 0 && len == OFF_REFCOUNT_ORDER && !(incompat & QCOW2_INCOMPAT_CORRUPT) &&
	    (__atomic_load_n(&h->incompat, __ATOMIC_ACQUIRE) & QCOW2_INCOMPAT_CORRUPT)) {
		put_be64(b + OFF_INCOMPAT, incompat | QCOW2_INCOMPAT_CORRUPT);
		r = qcow2_io_pwrite_meta(img->io, b + OFF_INCOMPAT, 8, OFF_INCOMPAT,
					 QCOW2_OL_HEADER);
	}
	return r;
}

/* First change to the image: clear the autoclear bits we do not maintain (bitmaps, unknown
 * ones: the format asks a writer that does not update them to do so) and, with lazy
 * refcounts, set the dirty bit; durable before any other change. w->lock held. */
int qcow2_image_begin_write(struct qcow2_image *img)
{
	struct qcow2_wstate *w = img->w;
	uint64_t autoclear = img->h.autoclear;
	bool changed = false;
	int r;

	if (w->began)
		return 0;
	if (img->h.version >= 3 && (autoclear & ~QCOW2_AUTOCLEAR_DATA_FILE_RAW)) {
		img->h.autoclear &= QCOW2_AUTOCLEAR_DATA_FILE_RAW;
		changed = true;
	}
	if (img->h.compat & QCOW2_COMPAT_LAZY_REFCOUNTS) {
		w->set_dirty = true;
		changed = true;
	}
	if (changed) {
		r = qcow2_image_write_header(img);
		if (r == 0)
			r = qcow2_io_flush(img->io);
		if (r < 0) {
			img->h.autoclear = autoclear;
			w->set_dirty = false;
			return r;
		}
	}
	/* bitmaps no longer in force: their clusters are no longer live metadata */
	if (autoclear != img->h.autoclear && (r = qcow2_overlap_update_tables(img)) < 0)
		return r;
	w->began = true;
	return 0;
}
