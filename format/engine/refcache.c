/* SPDX-License-Identifier: MIT */
/*
 * refcache.c - the refcount blocks of a writable image, cached in w->blocks (on-disk encoding)
 * and loaded on first use: what the allocator (refcount.c) changes and the overlap checks
 * (overlap.c) read. Locks: none taken, w->lock held by the callers, except
 * qcow2_refcount_any_dirty(), which takes it (qcow2_image_meta_lock()).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "engine/engine.h"

/* The cached refcount block of table index @ti, loaded on first use; NULL (and 0) if the table
 * has no block there. */
int qcow2_refcount_block_w(struct qcow2_image *img, uint64_t ti, uint8_t **out)
{
	struct qcow2_wstate *w = img->w;
	uint8_t *b;
	int r;

	*out = NULL;
	if (ti >= w->n_blocks || !img->refs.table[ti])
		return 0;
	if (!w->blocks[ti]) {
		b = malloc(img->cluster_bytes);
		if (!b)
			return qcow2_oom_for("a refcount block");
		r = qcow2_refcount_read_block(img, ti, b);
		if (r < 0) {
			free(b);
			return r;
		}
		w->blocks[ti] = b;
	}
	*out = w->blocks[ti];
	return 0;
}

int qcow2_refcount_get_w(struct qcow2_image *img, uint64_t idx, uint64_t *v)
{
	uint64_t pb = qcow2_refcount_per_block(img);
	uint8_t *b;
	int r = qcow2_refcount_block_w(img, idx / pb, &b);

	if (r < 0)
		return r;
	*v = b ? qcow2_refcount_block_get(b, img->refs.order, idx % pb) : 0;
	return 0;
}

int qcow2_refcount_peek(struct qcow2_image *img, uint64_t idx, struct qcow2_refcount_cursor *c,
			uint64_t *v)
{
	uint64_t pb = qcow2_refcount_per_block(img), t = idx / pb;

	if (t < img->refs.n && img->refs.table[t] && t < img->w->n_blocks && img->w->blocks[t]) {
		*v = qcow2_refcount_block_get(img->w->blocks[t], img->refs.order, idx % pb);
		return 0;
	}
	return qcow2_refcount_lookup(img, c, idx, v);
}

bool qcow2_refcount_any_dirty(struct qcow2_image *img)
{
	struct qcow2_wstate *w = img->w;
	bool any = false;
	uint32_t i;

	qcow2_image_meta_lock(img);
	for (i = 0; i < w->n_blocks && !any; i++) /* an allocation dirties its block */
		any = w->block_dirty && w->block_dirty[i];
	qcow2_image_meta_unlock(img);
	return any;
}
