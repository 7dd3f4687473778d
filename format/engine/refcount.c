/* SPDX-License-Identifier: MIT */
/*
 * refcount.c - the refcounts of a writable image: allocation, count-downs deferred to after the
 * flush that unlinked what they count (applied by qcow2_refcount_apply_frees()), the growth of
 * the refcount table, and the first two write-back stages (blocks, then table entries or a moved
 * table and its header fields). The reader (load, lookups) is image/refcount.c, the cached
 * blocks refcache.c. Locks: none taken, w->lock held by the callers.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "engine/engine.h"

static uint64_t max_refcount(const struct qcow2_image *img)
{
	return img->refs.order == 6 ? UINT64_MAX : (1ull << (1u << img->refs.order)) - 1;
}

/* end_cluster is read without the lock by map.c's bounds checks: stored atomically. */
static void set_end(struct qcow2_image *img, uint64_t end)
{
	__atomic_store_n(&img->end_cluster, end, __ATOMIC_RELAXED);
}

int qcow2_refcount_init_write(struct qcow2_image *img)
{
	struct qcow2_wstate *w = img->w;
	uint32_t i;
	int r = qcow2_refcount_usable(img);

	if (r < 0)
		return r;
	for (i = 0; i < img->refs.n; i++)
		if (img->refs.table[i] &&
		    (img->refs.table[i] >= img->file_bytes ||
		     img->file_bytes - img->refs.table[i] < img->cluster_bytes))
			return qcow2_set_error(
			    -EUCLEAN, "refcount block %u at %#" PRIx64 " lies outside the file", i,
			    img->refs.table[i]);
	w->n_blocks = img->refs.n;
	w->blocks = calloc(w->n_blocks, sizeof(*w->blocks));
	w->block_dirty = calloc(w->n_blocks, sizeof(*w->block_dirty));
	w->reft_dirty = calloc(w->n_blocks, sizeof(*w->reft_dirty));
	if (!w->blocks || !w->block_dirty || !w->reft_dirty)
		return qcow2_oom_for("refcount blocks");
	set_end(img, (img->file_bytes + img->cluster_bytes - 1) >> img->h.cluster_bits);
	w->free_hint = 1; /* the header cluster is never free */
	return 0;
}

void qcow2_refcount_release_write(struct qcow2_image *img)
{
	struct qcow2_wstate *w = img->w;
	uint32_t i;

	for (i = 0; w->blocks && i < w->n_blocks; i++)
		free(w->blocks[i]);
	free(w->blocks);
	free(w->block_dirty);
	free(w->reft_dirty);
	free(w->pending);
}

int qcow2_refcount_reload_write(struct qcow2_image *img, uint64_t file_bytes)
{
	struct qcow2_wstate *w = img->w;
	int r;

	qcow2_refcount_release_write(img);
	w->blocks = NULL;
	w->block_dirty = NULL;
	w->reft_dirty = NULL;
	w->n_blocks = 0;
	w->pending = NULL;
	w->n_pending = w->cap_pending = 0;
	w->reft_moved = false;
	w->comp_cluster = w->comp_used = 0;
	qcow2_refcount_release(&img->refs);
	img->file_bytes = file_bytes;
	img->refs_broken = false;
	r = qcow2_refcount_init_write(img);
	w->ready = r == 0;
	return r;
}

static int set_refcount(struct qcow2_image *img, uint64_t idx, uint64_t v);

/* Grow the in-memory arrays that follow the refcount table to @n entries. */
static int resize_arrays(struct qcow2_image *img, uint32_t n)
{
	struct qcow2_wstate *w = img->w;
	uint64_t *t = realloc(img->refs.table, (size_t)n * 8);
	uint8_t **b;
	bool *d, *td;

	if (t)
		img->refs.table = t;
	b = t ? realloc(w->blocks, (size_t)n * sizeof(*b)) : NULL;
	if (b)
		w->blocks = b;
	d = b ? realloc(w->block_dirty, n) : NULL;
	if (d)
		w->block_dirty = d;
	td = d ? realloc(w->reft_dirty, n) : NULL;
	if (!td)
		return qcow2_oom_for("the refcount table");
	w->reft_dirty = td;
	memset(t + img->refs.n, 0, (size_t)(n - img->refs.n) * 8);
	memset(b + w->n_blocks, 0, (size_t)(n - w->n_blocks) * sizeof(*b));
	memset(d + w->n_blocks, 0, n - w->n_blocks);
	memset(td + w->n_blocks, 0, n - w->n_blocks);
	img->refs.n = n;
	w->n_blocks = n;
	return 0;
}

/* The first cluster from @from on where @n clusters hold no live metadata (overlap.c). */
static uint64_t clear_run(struct qcow2_image *img, uint64_t from, uint64_t n)
{
	uint64_t busy;

	while ((busy = qcow2_overlap_busy(img, from, n)) != UINT64_MAX)
		from = busy + 1;
	return from;
}

/* Move the refcount table to the end of the file with room for index @need (and for the
 * blocks that describe the new table itself). Written back by qcow2_refcount_write_table(). */
static int grow_table(struct qcow2_image *img, uint64_t need)
{
	struct qcow2_wstate *w = img->w;
	uint64_t pb = qcow2_refcount_per_block(img), cs = img->cluster_bytes;
	uint64_t start = img->end_cluster;
	uint64_t n = 2 * (uint64_t)img->refs.n, tc, i;
	int r;

	if (n <= need)
		n = need + 1;
	for (;;) {
		tc = (n * 8 + cs - 1) / cs;
		if (clear_run(img, start, tc) != start) { /* live metadata there: further on */
			start = clear_run(img, start, tc);
			continue;
		}
		if ((start + tc + 4) / pb < n)
			break;
		n = (start + tc + 4) / pb + 1;
	}
	n = tc * cs / 8;
	if (tc * cs > QCOW2_MAX_REFTABLE_BYTES)
		return qcow2_set_error(-EFBIG, "the refcount table would exceed %u bytes",
				       QCOW2_MAX_REFTABLE_BYTES);
	r = resize_arrays(img, (uint32_t)n);
	if (r < 0)
		return r;
	if (w->reft_moved) {
		/* The previous new table never reached the header: give it back at once. */
		qcow2_refcount_unalloc(img, img->h.reftable_off, img->h.reftable_clusters);
	} else {
		w->old_reft.first = img->h.reftable_off >> img->h.cluster_bits;
		w->old_reft.count = img->h.reftable_clusters;
	}
	w->reft_moved = true;
	set_end(img, start + tc);
	img->h.reftable_off = start << img->h.cluster_bits;
	img->h.reftable_clusters = (uint32_t)tc;
	r = qcow2_overlap_update_tables(img);
	for (i = 0; r == 0 && i < tc; i++)
		r = set_refcount(img, start + i, 1);
	return r;
}

/* A new, empty refcount block for table index @ti, placed past the end of everything. */
static int new_block(struct qcow2_image *img, uint64_t ti)
{
	struct qcow2_wstate *w = img->w;
	uint64_t at = clear_run(img, img->end_cluster, 1);
	uint8_t *b;
	int r = qcow2_overlap_reserve(img, 1);

	if (r < 0)
		return r;
	b = calloc(1, img->cluster_bytes);
	if (!b)
		return qcow2_oom_for("a refcount block");
	set_end(img, at + 1);
	qcow2_overlap_add_refblock(img, at << img->h.cluster_bits);
	free(w->blocks[ti]);
	w->blocks[ti] = b;
	w->block_dirty[ti] = true;
	img->refs.table[ti] = at << img->h.cluster_bits;
	w->reft_dirty[ti] = true;
	return set_refcount(img, at, 1);
}

static int set_refcount(struct qcow2_image *img, uint64_t idx, uint64_t v)
{
	struct qcow2_wstate *w = img->w;
	uint64_t pb = qcow2_refcount_per_block(img), ti = idx / pb;
	uint8_t *b;
	int r;

	if (v > max_refcount(img))
		return qcow2_set_error(-ERANGE, "refcount of cluster %#" PRIx64 " would overflow",
				       idx << img->h.cluster_bits);
	if (ti >= img->refs.n) {
		r = grow_table(img, ti);
		if (r < 0)
			return r;
	}
	r = qcow2_refcount_block_w(img, ti, &b);
	if (r < 0)
		return r;
	if (!b) {
		r = new_block(img, ti);
		if (r < 0)
			return r;
		b = w->blocks[ti];
	}
	qcow2_refcount_block_set(b, img->refs.order, idx % pb, v);
	w->block_dirty[ti] = true;
	return 0;
}

int qcow2_refcount_set_w(struct qcow2_image *img, uint64_t idx, uint64_t v)
{
	return set_refcount(img, idx, v);
}

int qcow2_refcount_alloc(struct qcow2_image *img, uint64_t n, uint64_t *host_off)
{
	struct qcow2_wstate *w = img->w;
	uint64_t idx = w->free_hint, start = idx, run = 0, first_free = UINT64_MAX, v, i;
	int r;

	while (run < n) {
		if (idx >= img->end_cluster) {
			/* past everything: free, unless live metadata lies there (a table an entry
			 * places past the end of the file) */
			uint64_t busy = qcow2_overlap_busy(img, idx, n - run);

			if (busy == UINT64_MAX) {
				if (run == 0)
					start = idx;
				break;
			}
			run = 0;
			idx = busy + 1;
			continue;
		}
		r = qcow2_refcount_get_w(img, idx, &v);
		if (r < 0)
			return r;
		/* Live metadata is never handed out, whatever its refcount says: a refcount of 0
		 * there is damage, and QEMU's allocator would overwrite the table. */
		if (v == 0 && qcow2_overlap_busy(img, idx, 1) != UINT64_MAX)
			v = 1;
		if (v == 0) {
			if (first_free == UINT64_MAX)
				first_free = idx;
			if (run++ == 0)
				start = idx;
		} else {
			run = 0;
		}
		idx++;
	}
	if (start + n > (1ull << (56 - img->h.cluster_bits)))
		return qcow2_set_error(-EFBIG, "image file would exceed the format's 64 PiB");
	w->free_hint = first_free == UINT64_MAX || first_free == start ? start + n : first_free;
	if (img->end_cluster < start + n)
		set_end(img, start + n);
	for (i = 0; i < n; i++) {
		r = set_refcount(img, start + i, 1);
		if (r < 0) {
			while (i--)
				set_refcount(img, start + i, 0);
			return r;
		}
	}
	*host_off = start << img->h.cluster_bits;
	return 0;
}

/* Count cluster @idx down by one. */
static int put_cluster(struct qcow2_image *img, uint64_t idx)
{
	uint64_t v;
	int r = qcow2_refcount_get_w(img, idx, &v);

	if (r < 0)
		return r;
	if (v == 0)
		return qcow2_set_error(-EUCLEAN, "cluster %#" PRIx64 " freed with refcount 0",
				       idx << img->h.cluster_bits);
	r = set_refcount(img, idx, v - 1);
	if (r == 0 && v == 1) {
		if (idx < img->w->free_hint)
			img->w->free_hint = idx;
		qcow2_l2cache_drop(img->l2cache, idx << img->h.cluster_bits);
	}
	return r;
}

void qcow2_refcount_unalloc(struct qcow2_image *img, uint64_t host_off, uint64_t n)
{
	uint64_t i;

	for (i = 0; i < n; i++)
		put_cluster(img, (host_off >> img->h.cluster_bits) + i);
}

int qcow2_refcount_defer_free(struct qcow2_image *img, uint64_t host_off, uint64_t bytes)
{
	struct qcow2_wstate *w = img->w;
	uint64_t first = host_off >> img->h.cluster_bits;
	uint64_t last = (host_off + bytes - 1) >> img->h.cluster_bits;
	struct qcow2_crange *p;

	if (!bytes)
		return 0;
	if (w->n_pending) {
		p = &w->pending[w->n_pending - 1];
		if (p->first + p->count == first) { /* coalesce sequential frees */
			p->count += last - first + 1;
			return 0;
		}
	}
	if (w->n_pending == w->cap_pending) {
		size_t cap = w->cap_pending ? 2 * w->cap_pending : 64;
		p = realloc(w->pending, cap * sizeof(*p));
		if (!p)
			return qcow2_oom();
		w->pending = p;
		w->cap_pending = cap;
	}
	w->pending[w->n_pending].first = first;
	w->pending[w->n_pending].count = last - first + 1;
	w->n_pending++;
	return 0;
}

int qcow2_refcount_write_blocks(struct qcow2_image *img)
{
	struct qcow2_wstate *w = img->w;
	uint32_t i;
	int r, wrote = 0;

	for (i = 0; i < w->n_blocks; i++) {
		if (!w->block_dirty[i])
			continue;
		r = qcow2_io_pwrite_meta(img->io, w->blocks[i], img->cluster_bytes,
					 img->refs.table[i], QCOW2_OL_REFBLOCK);
		if (r < 0)
			return r;
		w->block_dirty[i] = false;
		wrote = 1;
	}
	return wrote;
}

/* Write table entries [@lo, @hi) in place. */
static int write_entries(struct qcow2_image *img, uint32_t lo, uint32_t hi)
{
	size_t n = hi - lo, i;
	uint8_t *buf = malloc(n * 8);
	int r;

	if (!buf)
		return qcow2_oom();
	for (i = 0; i < n; i++)
		put_be64(buf + 8 * i, img->refs.table[lo + i]);
	r = qcow2_io_pwrite_meta(img->io, buf, n * 8, img->h.reftable_off + 8ull * lo,
				 QCOW2_OL_REFT);
	free(buf);
	return r;
}

int qcow2_refcount_write_table(struct qcow2_image *img)
{
	struct qcow2_wstate *w = img->w;
	uint32_t i, j;
	int r, wrote = 0;

	if (w->reft_moved) {
		r = write_entries(img, 0, img->refs.n);
		if (r == 0)
			r = qcow2_io_flush(img->io);
		if (r == 0)
			r = qcow2_image_write_header(img);
		if (r < 0)
			return r;
		/* The old table is unused once the header points at the new one. */
		r = qcow2_refcount_defer_free(img, w->old_reft.first << img->h.cluster_bits,
					      w->old_reft.count << img->h.cluster_bits);
		if (r < 0)
			return r;
		w->reft_moved = false;
		memset(w->reft_dirty, 0, w->n_blocks);
		r = qcow2_overlap_update_tables(img); /* the old table is no longer live */
		return r < 0 ? r : 1;
	}
	for (i = 0; i < w->n_blocks; i = j) {
		if (!w->reft_dirty[i]) {
			j = i + 1;
			continue;
		}
		for (j = i; j < w->n_blocks && w->reft_dirty[j]; j++)
			w->reft_dirty[j] = false;
		r = write_entries(img, i, j);
		if (r < 0) {
			while (j-- > i)
				w->reft_dirty[j] = true;
			return r;
		}
		wrote = 1;
	}
	return wrote;
}

static void punch(struct qcow2_image *img, uint64_t first, uint64_t n)
{
	if (n)
		qcow2_io_punch(img->io, first << img->h.cluster_bits, n << img->h.cluster_bits);
}

/* Is cluster @idx live metadata (overlap.c) that this count-down would free? A table an entry
 * wrongly pointed at (the entry is gone now) keeps its own reference: freed, the allocator or
 * QEMU's would overwrite it. Every table the engine stops using has left the map before its
 * count-down, so nothing else stays: at worst a leak. */
static bool keeps_live(struct qcow2_image *img, uint64_t idx)
{
	uint64_t v;

	return qcow2_refcount_get_w(img, idx, &v) == 0 && v == 1 &&
	       qcow2_overlap_busy(img, idx, 1) != UINT64_MAX;
}

int qcow2_refcount_apply_frees(struct qcow2_image *img, size_t n)
{
	struct qcow2_wstate *w = img->w;
	size_t i;
	uint64_t j;
	int r = 0, e;

	if (n > w->n_pending)
		n = w->n_pending;
	for (i = 0; i < n; i++) {
		uint64_t first = w->pending[i].first, run = 0, v;

		for (j = 0; j < w->pending[i].count; j++) {
			if (keeps_live(img, first + j)) {
				punch(img, first + j - run, run);
				run = 0;
				continue;
			}
			if ((e = put_cluster(img, first + j)) < 0 && r == 0)
				r = e;
			/* Clusters nothing uses any more go back to the host file system (du shrinks,
			 * a full disk gets room back); runs of them in one call. */
			if (e == 0 && qcow2_refcount_get_w(img, first + j, &v) == 0 && v == 0) {
				run++;
				continue;
			}
			punch(img, first + j - run, run);
			run = 0;
		}
		punch(img, first + j - run, run);
	}
	memmove(w->pending, w->pending + n, (w->n_pending - n) * sizeof(*w->pending));
	w->n_pending -= n;
	return r;
}
