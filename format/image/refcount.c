/* SPDX-License-Identifier: MIT */
/*
 * refcount.c - the refcount reader: loading the refcount table (bounded by
 * QCOW2_MAX_REFTABLE_BYTES, on first use: reading guest data never needs it), reading refcount
 * blocks, and lookups. The write side's cached blocks and allocation are the engine's
 * (engine/refcache.c, engine/refcount.c). Locking: the lazy load is under img->snap_lock.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "image/image.h"

/* Entry @i of @r has reserved bits set or is not cluster aligned. */
static bool entry_bad(const struct qcow2_refcounts *r, uint32_t i)
{
	return r->table[i] & ((1ull << r->cluster_bits) - 1);
}

int qcow2_refcount_load(struct qcow2_io *io, const struct qcow2_header *h, uint64_t file_bytes,
			struct qcow2_refcounts *r)
{
	size_t bytes = (size_t)h->reftable_clusters << h->cluster_bits; /* bounded by header.c */
	uint32_t i;
	int ret;

	(void)file_bytes;
	memset(r, 0, sizeof(*r));
	r->table = malloc(bytes);
	if (!r->table)
		return qcow2_oom_for("the refcount table");
	ret = qcow2_io_pread_full(io, r->table, bytes, h->reftable_off);
	if (ret < 0) {
		qcow2_refcount_release(r);
		return ret;
	}
	r->n = (uint32_t)(bytes / 8);
	r->order = h->refcount_order;
	r->cluster_bits = h->cluster_bits;
	r->first_bad = UINT32_MAX;
	for (i = 0; i < r->n; i++) {
		r->table[i] = get_be64(&r->table[i]);
		/* Kept as found: a check reports it as QEMU does; everything else refuses it
		 * (qcow2_refcount_usable()). */
		if (entry_bad(r, i) && r->first_bad == UINT32_MAX)
			r->first_bad = i;
	}
	return 0;
}

void qcow2_refcount_release(struct qcow2_refcounts *r)
{
	free(r->table);
	r->table = NULL;
	r->n = 0;
}

int qcow2_refcount_ready(struct qcow2_image *img)
{
	int r = 0;

	qcow2_image_snapshots_lock(img);
	if (!img->refs.table)
		r = qcow2_refcount_load(img->io, &img->h, img->file_bytes, &img->refs);
	qcow2_image_snapshots_unlock(img);
	return r < 0 ? qcow2_error_prefix(r, img->name) : 0;
}

/* The refcount table is loaded on first use: reading guest data never needs it. */
int qcow2_refcount_usable(struct qcow2_image *img)
{
	int r = qcow2_refcount_ready(img);

	if (r == 0 && img->refs.first_bad != UINT32_MAX)
		r = qcow2_set_error(-EUCLEAN, "refcount table entry %u is misaligned",
				    img->refs.first_bad);
	return r < 0 ? qcow2_error_prefix(r, img->name) : 0;
}

/* Read the refcount block of table entry @ti into @buf (a cluster). A block the file does not
 * hold is named as such: the io's own message says only where a read failed. */
int qcow2_refcount_read_block(struct qcow2_image *img, uint64_t ti, void *buf)
{
	uint64_t off = img->refs.table[ti];
	int r = qcow2_io_pread_full(img->io, buf, img->cluster_bytes, off);

	if (r == -EUCLEAN || r == -EINVAL)
		r = qcow2_set_error(
		    r, "'%s': refcount block %" PRIu64 " at %#" PRIx64 " is outside the image",
		    img->name, ti, off);
	return r;
}

int qcow2_refcount_lookup(struct qcow2_image *img, struct qcow2_refcount_cursor *c, uint64_t idx,
			  uint64_t *v)
{
	uint64_t pb = qcow2_refcount_per_block(img), ti = idx / pb;
	int r;

	*v = 0;
	if (ti >= img->refs.n || !img->refs.table[ti])
		return 0;
	if (!c->block || c->ti != ti) {
		if (!c->block && !(c->block = malloc(img->cluster_bytes)))
			return qcow2_oom();
		c->ti = UINT64_MAX;
		r = qcow2_refcount_read_block(img, ti, c->block);
		if (r < 0)
			return r;
		c->ti = ti;
	}
	*v = qcow2_refcount_block_get(c->block, img->refs.order, idx % pb);
	return 0;
}

void qcow2_refcount_cursor_release(struct qcow2_refcount_cursor *c)
{
	free(c->block);
	c->block = NULL;
	c->ti = UINT64_MAX;
}

int qcow2_image_refcount(struct qcow2_image *img, uint64_t cluster_idx, uint64_t *refcount)
{
	struct qcow2_refcount_cursor c = QCOW2_REFCOUNT_CURSOR_INIT;
	int ret = qcow2_refcount_usable(img);

	if (ret < 0)
		return ret;
	ret = qcow2_refcount_lookup(img, &c, cluster_idx, refcount);
	qcow2_refcount_cursor_release(&c);
	return ret;
}

int qcow2_image_used_clusters(struct qcow2_image *img, uint64_t *clusters)
{
	const struct qcow2_refcounts *r = &img->refs;
	uint64_t per_block, n = 0, j;
	uint8_t *block;
	uint32_t i;
	int ret = qcow2_refcount_usable(img);

	if (ret < 0)
		return ret;
	per_block = qcow2_refcount_per_block(img);

	block = malloc(img->cluster_bytes);
	if (!block)
		return qcow2_oom();
	for (i = 0; i < r->n; i++) {
		if (!r->table[i])
			continue;
		ret = qcow2_refcount_read_block(img, i, block);
		if (ret < 0)
			break;
		for (j = 0; j < per_block; j++)
			n += qcow2_refcount_block_get(block, r->order, j) != 0;
	}
	free(block);
	if (ret == 0)
		*clusters = n;
	return ret;
}
