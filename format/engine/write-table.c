/* SPDX-License-Identifier: MIT */
/*
 * write-table.c - the tables a change of one image rewrites: active L1 entries (stored
 * atomically, so that the read side loads them without a lock), and the L2 table of a run of
 * clusters made ready for writing (write.c, zeroing, compress.c, a repair): checked before its
 * first change (overlap-tables.c), the image's own (allocated, or copied from a table shared
 * with a snapshot, whose old copy is freed only after the next flush), pinned dirty in the L2
 * cache before anything changes. Also the COPIED flags set from the refcounts (a repair, the
 * dirty rebuild).
 *
 * Locks: takes none; every function but qcow2_write_l1_get() runs with w->lock held (the
 * caller's, engine/locks.c), the L2 cache's lock is its own (image/l2cache.c). A change that
 * finds every cached table dirty writes them back first (qcow2_image_flush_locked()).
 *
 * Write order: nothing here reaches the disk; the L2 cache and the L1 range stay dirty until
 * qcow2_image_flush() (flush.c) writes them back after the refcounts that cover them.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "engine/engine.h"

/* ---- L1 entries ---- */

uint64_t qcow2_write_l1_get(const struct qcow2_image *img, uint32_t i)
{
	return __atomic_load_n(&img->l1.entries[i], __ATOMIC_ACQUIRE);
}

void qcow2_write_l1_set(struct qcow2_image *img, uint32_t i, uint64_t v)
{
	struct qcow2_wstate *w = img->w;

	qcow2_overlap_l1_changed(img, img->l1.entries[i], v);
	__atomic_store_n(&img->l1.entries[i], v, __ATOMIC_RELEASE);
	if (w->l1_lo >= w->l1_hi) {
		w->l1_lo = i;
		w->l1_hi = i + 1;
	} else {
		if (i < w->l1_lo)
			w->l1_lo = i;
		if (i + 1 > w->l1_hi)
			w->l1_hi = i + 1;
	}
}

/* ---- L2 tables ---- */

int qcow2_write_l2_modify(struct qcow2_image *img, uint64_t l2_off, const uint64_t *init,
			  uint32_t word, uint32_t n, const uint64_t *words)
{
	int r = qcow2_l2cache_modify(img->l2cache, img->io, l2_off, init, word, n, words);

	if (r == -EAGAIN) { /* every cached table is dirty: write them back */
		r = qcow2_image_flush_locked(img);
		if (r == 0)
			r = qcow2_l2cache_modify(img->l2cache, img->io, l2_off, init, word, n,
						 words);
		if (r == -EAGAIN)
			r = qcow2_set_error(-ENOMEM, "L2 cache too small");
	}
	return r;
}

static int check_table_off(const struct qcow2_image *img, uint64_t off)
{
	if (off & (img->cluster_bytes - 1) || (off >> img->h.cluster_bits) >= img->end_cluster)
		return qcow2_set_error(-EUCLEAN, "L2 table at %#" PRIx64 " lies outside the file",
				       off);
	return 0;
}

/* The L2 table for @l1_idx, owned by this image alone: allocated, or copied from a table
 * shared with a snapshot. w->lock held. */
static int l2_for_write(struct qcow2_image *img, uint32_t l1_idx, uint64_t *l2_off)
{
	uint64_t e = qcow2_write_l1_get(img, l1_idx), old = e & QCOW2_L1E_OFFSET_MASK, fresh;
	uint64_t *init;
	int r;

	if (old && (e & QCOW2_OFLAG_COPIED)) {
		*l2_off = old;
		return check_table_off(img, old);
	}
	if (old && (r = check_table_off(img, old)) < 0)
		return r;
	r = qcow2_overlap_reserve(img, 1); /* so that the new table is always known */
	if (r < 0)
		return r;
	init = calloc(1, img->cluster_bytes);
	if (!init)
		return qcow2_oom();
	r = old ? qcow2_l2cache_get(img->l2cache, img->io, old, 0,
				    (uint32_t)(img->cluster_bytes / 8), init)
		: 0;
	if (r == 0)
		r = qcow2_refcount_alloc(img, 1, &fresh);
	if (r == 0) {
		r = qcow2_write_l2_modify(img, fresh, init, 0, 0, NULL);
		if (r < 0)
			qcow2_refcount_unalloc(img, fresh, 1);
	}
	free(init);
	if (r == 0 && old)
		r = qcow2_refcount_defer_free(img, old, img->cluster_bytes);
	if (r < 0)
		return r;
	qcow2_write_l1_set(img, l1_idx, fresh | QCOW2_OFLAG_COPIED);
	*l2_off = fresh;
	return 0;
}

/* The L2 table for @l1_idx, ready for writing and pinned in the cache (marked dirty) before
 * anything is changed: the entries changed later then cannot fail to be stored, which matters
 * because what they replace is already queued for freeing. */
static int pin_table(struct qcow2_image *img, uint32_t l1_idx, uint64_t *l2_off)
{
	int r = l2_for_write(img, l1_idx, l2_off);

	return r < 0 ? r : qcow2_write_l2_modify(img, *l2_off, NULL, 0, 0, NULL);
}

/* Clusters of [@off, @off + @n) up to the end of the L2 table, at most @max. */
uint32_t qcow2_write_run_clusters(const struct qcow2_image *img, uint64_t off, uint64_t n,
				  uint32_t max)
{
	uint64_t cs = img->cluster_bytes,
		 k = ((off & (cs - 1)) + n + cs - 1) >> img->h.cluster_bits;
	uint32_t left =
	    img->l2_entries - (uint32_t)((off >> img->h.cluster_bits) % img->l2_entries);

	if (k > left)
		k = left;
	return k > max ? max : (uint32_t)k;
}

/* Before the first change of the table @l1_idx points at (or of its copy), its entries are
 * checked (overlap.c): a change of a table whose other entries name metadata, or clusters
 * whose refcount is wrong, would rewrite what the guest reads there or hand out a cluster
 * still in use. Entries [@first, @first + @k) are the ones the change rewrites. w->lock held. */
static int check_table(struct qcow2_image *img, uint32_t l1_idx, uint32_t first, uint32_t k)
{
	uint64_t old = qcow2_write_l1_get(img, l1_idx) & QCOW2_L1E_OFFSET_MASK, *t;
	int r;

	if (!old || (r = check_table_off(img, old)) < 0 || qcow2_overlap_table_checked(img, old))
		return 0; /* (a table outside the file fails in pin_table()) */
	t = malloc(img->cluster_bytes);
	if (!t)
		return qcow2_oom();
	r = qcow2_l2cache_get(img->l2cache, img->io, old, 0, (uint32_t)(img->cluster_bytes / 8), t);
	if (r == 0)
		r = qcow2_overlap_check_table(img, old, t, first,
					      qcow2_exempt(img, l1_idx, l1_idx, k));
	free(t);
	return r;
}

/* The @k entries from @off's on, in the L2 table made ready and pinned for writing. */
int qcow2_write_load_run(struct qcow2_image *img, uint64_t off, uint32_t k, uint64_t *ents,
			 uint64_t *l2_off)
{
	uint64_t cl = off >> img->h.cluster_bits;
	uint32_t ew = img->l2_entry_words, l1_idx = (uint32_t)(cl / img->l2_entries);
	int r;

	if (l1_idx >= img->l1.n)
		return qcow2_set_error(-EIO, "offset %#" PRIx64 " beyond the L1 table", off);
	r = check_table(img, l1_idx, (uint32_t)(cl % img->l2_entries), k);
	if (r == 0)
		r = pin_table(img, l1_idx, l2_off);
	return r < 0 ? r
		     : qcow2_l2cache_get(img->l2cache, img->io, *l2_off,
					 (uint32_t)(cl % img->l2_entries) * ew, k * ew, ents);
}

/* ---- the COPIED flags, from the refcounts (a repair, the dirty rebuild) ---- */

/* The COPIED flag an entry pointing at cluster @host should carry: set iff its refcount is 1. */
static int want_copied(struct qcow2_image *img, uint64_t host, bool *copied)
{
	uint64_t v;
	int r = qcow2_refcount_get_w(img, host >> img->h.cluster_bits, &v);

	*copied = v == 1;
	return r;
}

int qcow2_write_fix_copied(struct qcow2_image *img)
{
	uint32_t ew = img->l2_entry_words, i, j, n = (uint32_t)(img->cluster_bytes / 8);
	uint64_t *t = malloc(img->cluster_bytes);
	bool c;
	int r = t ? 0 : qcow2_oom();

	for (i = 0; r == 0 && i < img->l1.n; i++) {
		uint64_t e = qcow2_write_l1_get(img, i), l2 = e & QCOW2_L1E_OFFSET_MASK;
		bool changed = false;

		if (!l2 || (r = want_copied(img, l2, &c)) < 0)
			continue;
		if (c != !!(e & QCOW2_OFLAG_COPIED))
			qcow2_write_l1_set(img, i,
					   c ? e | QCOW2_OFLAG_COPIED : e & ~QCOW2_OFLAG_COPIED);
		r = qcow2_l2cache_get(img->l2cache, img->io, l2, 0, n, t);
		for (j = 0; r == 0 && j < n; j += ew) {
			uint64_t host = t[j] & QCOW2_L2E_OFFSET_MASK;

			if (!host || (t[j] & QCOW2_OFLAG_COMPRESSED) ||
			    (img->h.incompat & QCOW2_INCOMPAT_DATA_FILE))
				continue;
			r = want_copied(img, host, &c);
			if (r == 0 && c != !!(t[j] & QCOW2_OFLAG_COPIED)) {
				t[j] ^= QCOW2_OFLAG_COPIED;
				changed = true;
			}
		}
		if (r == 0 && changed)
			r = qcow2_write_l2_modify(img, l2, t, 0, 0, NULL);
	}
	free(t);
	return r;
}
