/* SPDX-License-Identifier: MIT */
/*
 * grow.c - growing the virtual size of a writable image: the L1 table reallocated when it must
 * grow (the new one in fresh clusters, the old one counted down only after the flush that made
 * the header name the new one), then the header's size; durable before it returns
 * (qcow2_image_flush_locked()). Shrinking (qcow2_image_shrink()) only writes the smaller
 * size: the chain layer has unmapped what lies past it first, in QEMU's order (discard, then
 * the header), so a crash in between leaves the old size with its tail already deleted. The
 * L1 table keeps its length (its entries past the end point at empty L2 tables).
 *
 * Locking: takes w->lock; the caller holds w->frees exclusive (qcow2_image_exclusive_begin(),
 * chain-write.c), as the L1 array is replaced under it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "engine/engine.h"

static int grow_l1(struct qcow2_image *img, uint64_t need)
{
	struct qcow2_wstate *w = img->w;
	uint64_t cs = img->cluster_bytes, bytes = (need * 8 + cs - 1) & ~(cs - 1), off;
	uint64_t *t;
	int r;

	if (bytes > QCOW2_MAX_L1_BYTES)
		return qcow2_set_error(-EFBIG, "the L1 table would exceed %u bytes",
				       QCOW2_MAX_L1_BYTES);
	t = calloc(1, bytes);
	if (!t)
		return qcow2_oom_for("the L1 table");
	r = qcow2_refcount_alloc(img, bytes / cs, &off);
	if (r < 0) {
		free(t);
		return r;
	}
	if (img->l1.n)
		memcpy(t, img->l1.entries, (size_t)img->l1.n * 8);
	if (w->l1_moved) { /* the previous new table never reached the header */
		qcow2_refcount_unalloc(img, img->h.l1_off, (img->l1.n * 8ull + cs - 1) / cs);
	} else {
		w->old_l1.first = img->h.l1_off >> img->h.cluster_bits;
		w->old_l1.count = (img->l1.n * 8ull + cs - 1) / cs;
	}
	free(img->l1.entries);
	img->l1.entries = t;
	img->l1.n = (uint32_t)(bytes / 8);
	img->h.l1_off = off;
	img->h.l1_entries = img->l1.n;
	w->l1_moved = true;
	return qcow2_overlap_update_tables(img);
}

int qcow2_image_grow(struct qcow2_image *img, uint64_t new_size)
{
	uint64_t per_l1 = (uint64_t)img->l2_entries << img->h.cluster_bits, need;
	int r;

	if ((r = qcow2_overlap_writable(img)) < 0)
		return r;
	if (new_size < img->h.size)
		return qcow2_set_error(-EINVAL, "'%s': shrinking the disk is refused", img->name);
	if (new_size == img->h.size)
		return 0;
	if (new_size > QCOW2_MAX_VIRTUAL_SIZE)
		return qcow2_set_error(-EFBIG, "'%s': %" PRIu64 " bytes is too large", img->name,
				       new_size);
	need = new_size / per_l1 + (new_size % per_l1 != 0);
	qcow2_image_meta_lock(img);
	r = qcow2_overlap_check_tables(img, UINT32_MAX, 0, 0);
	if (r == 0)
		r = qcow2_image_begin_write(img);
	if (r == 0 && need > img->l1.n)
		r = grow_l1(img, need);
	if (r == 0) {
		/* the bitmaps cover the new size (the caller holds w->frees exclusive) */
		r = qcow2_bitmaps_resize(img, new_size);
	}
	if (r == 0) {
		img->h.size = new_size;
		img->l1.size = new_size;
		img->w->header_dirty = true;
		r = qcow2_image_flush_locked(img);
	}
	qcow2_image_meta_unlock(img);
	return r < 0 ? qcow2_error_prefix(r, img->name) : 0;
}

int qcow2_image_shrink_check(struct qcow2_image *img, uint64_t new_size)
{
	if (new_size > img->h.size)
		return qcow2_set_error(-EINVAL, "'%s': %" PRIu64 " bytes is not smaller", img->name,
				       new_size);
	if (img->h.version < 3 && img->h.nb_snapshots)
		return qcow2_set_error(-ENOTSUP,
				       "'%s': a version 2 image with internal snapshots "
				       "cannot shrink (as QEMU)",
				       img->name);
	if (img->h.has_bitmaps_ext && (img->h.autoclear & QCOW2_AUTOCLEAR_BITMAPS) &&
	    img->h.nb_bitmaps)
		return qcow2_set_error(-ENOTSUP,
				       "'%s' has persistent bitmaps: shrinking it "
				       "is not supported",
				       img->name);
	return 0;
}

int qcow2_image_shrink(struct qcow2_image *img, uint64_t new_size)
{
	int r;

	if ((r = qcow2_overlap_writable(img)) < 0)
		return r;
	if ((r = qcow2_image_shrink_check(img, new_size)) < 0 || new_size == img->h.size)
		return r;
	qcow2_image_meta_lock(img);
	r = qcow2_image_begin_write(img);
	if (r == 0) {
		img->h.size = new_size;
		img->l1.size = new_size;
		img->w->header_dirty = true;
		r = qcow2_image_flush_locked(img);
	}
	qcow2_image_meta_unlock(img);
	return r < 0 ? qcow2_error_prefix(r, img->name) : 0;
}
