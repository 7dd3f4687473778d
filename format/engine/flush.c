/* SPDX-License-Identifier: MIT */
/*
 * flush.c - the write-back of a writable image (qcow2_image_flush()): what write.c, refcount.c
 * and the L2 cache changed in memory goes to disk in stages, each made durable before the next
 * (the order is explained at struct qcow2_wstate, engine.h), then the clusters the flushed
 * metadata no longer uses are counted down, with no read running (w->frees exclusive).
 *
 * Locks: qcow2_image_flush() takes w->lock for the stages, then w->frees exclusive and w->lock
 * again for the count-downs (in the order of docs/design.md); qcow2_image_flush_locked() runs
 * the stages for a caller that already holds w->lock.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/engine.h"

static uint64_t l1_entry(const struct qcow2_image *img, uint32_t i)
{
	return __atomic_load_n(&img->l1.entries[i], __ATOMIC_ACQUIRE);
}

/* ---- write-back (write.c changes, this writes them back) ---- */

static int write_l1(struct qcow2_image *img)
{
	struct qcow2_wstate *w = img->w;
	uint32_t lo = w->l1_lo, hi = w->l1_hi, i;
	int r = 0, wrote = 0;
	uint8_t *buf;

	if (w->l1_moved) {
		lo = 0;
		hi = img->l1.n;
	}
	if (lo < hi) {
		buf = malloc((size_t)(hi - lo) * 8);
		if (!buf)
			return qcow2_oom();
		for (i = lo; i < hi; i++)
			put_be64(buf + 8 * (i - lo), l1_entry(img, i));
		r = qcow2_io_pwrite_meta(img->io, buf, (size_t)(hi - lo) * 8,
					 img->h.l1_off + 8ull * lo, QCOW2_OL_L1);
		free(buf);
		if (r < 0)
			return r;
		w->l1_lo = w->l1_hi = 0;
		wrote = 1;
	}
	if (w->l1_moved) {
		/* The new table must be durable before the header points at it. */
		r = qcow2_io_flush(img->io);
		if (r < 0)
			return r;
		w->header_dirty = true;
	}
	if (w->header_dirty) {
		r = qcow2_image_write_header(img);
		if (r < 0)
			return r;
		w->header_dirty = false;
		wrote = 1;
	}
	if (w->l1_moved) {
		w->l1_moved = false;
		r = qcow2_overlap_update_tables(img); /* the old table is no longer live */
		if (r == 0 && w->old_l1.count)
			r = qcow2_refcount_defer_free(img, w->old_l1.first << img->h.cluster_bits,
						      w->old_l1.count << img->h.cluster_bits);
	}
	return r < 0 ? r : wrote;
}

/* The write-back stages, each durable before the next (struct qcow2_wstate, engine.h).
 * w->lock held. */
int qcow2_image_flush_locked(struct qcow2_image *img)
{
	struct qcow2_wstate *w = img->w;
	bool data = __atomic_exchange_n(&w->data_dirty, false, __ATOMIC_ACQ_REL);
	int r = 0, n;

	w->comp_cluster = 0; /* frees may follow this flush: pack no more into it */

	if (data && img->data_io != img->io)
		r = qcow2_io_flush(img->data_io);
	n = r < 0 ? r : qcow2_refcount_write_blocks(img);
	if (n >= 0 && (n || data))
		n = qcow2_io_flush(img->io);
	if (n >= 0)
		n = qcow2_refcount_write_table(img);
	if (n > 0)
		n = qcow2_io_flush(img->io);
	if (n >= 0)
		n = qcow2_l2cache_writeback(img->l2cache, img->io);
	if (n > 0)
		n = qcow2_io_flush(img->io);
	if (n >= 0)
		n = write_l1(img);
	if (n > 0)
		n = qcow2_io_flush(img->io);
	if (n < 0 || r < 0) {
		if (data)
			__atomic_store_n(&w->data_dirty, true, __ATOMIC_RELEASE);
		return r < 0 ? r : n;
	}
	return 0;
}

int qcow2_image_flush(struct qcow2_image *img)
{
	struct qcow2_wstate *w = img->w;
	size_t unlinked;
	int r;

	if (!w)
		return 0;
	qcow2_image_meta_lock(img);
	r = qcow2_image_flush_locked(img);
	unlinked = w->n_pending;
	qcow2_image_meta_unlock(img);
	if (r == 0 && unlinked) {
		/* Nothing on disk points at these any more; no read may still be using them. */
		qcow2_image_exclusive_begin(img);
		qcow2_image_meta_lock(img);
		r = qcow2_refcount_apply_frees(img, unlinked);
		qcow2_image_meta_unlock(img);
		qcow2_image_exclusive_end(img);
	}
	return r < 0 ? qcow2_error_prefix(r, img->name) : 0;
}
