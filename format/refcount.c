/* SPDX-License-Identifier: MIT */
/*
 * refcount.c - the refcount table and blocks.
 *
 * Read side for now: loading the table (bounded by QCOW2_MAX_REFTABLE_BYTES), decoding entries
 * of every width from 1 to 64 bits, and lookups. Sub-byte widths pack from the least
 * significant bit (qcow2.txt); widths of 8 bits and more are big-endian.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "internal.h"

uint64_t qcow2_refcount_block_get(const void *block, uint32_t order, uint64_t idx)
{
	const uint8_t *b = block;

	switch (order) {
	case 0:
		return (b[idx / 8] >> (idx % 8)) & 1;
	case 1:
		return (b[idx / 4] >> (2 * (idx % 4))) & 3;
	case 2:
		return (b[idx / 2] >> (4 * (idx % 2))) & 15;
	case 3:
		return b[idx];
	case 4:
		return get_be16(b + 2 * idx);
	case 5:
		return get_be32(b + 4 * idx);
	default:
		return get_be64(b + 8 * idx);
	}
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
		return qcow2_set_error(-ENOMEM, "out of memory for the refcount table");
	ret = qcow2_io_pread_full(io, r->table, bytes, h->reftable_off);
	if (ret < 0) {
		qcow2_refcount_release(r);
		return ret;
	}
	r->n = (uint32_t)(bytes / 8);
	r->order = h->refcount_order;
	r->cluster_bits = h->cluster_bits;
	for (i = 0; i < r->n; i++) {
		r->table[i] = get_be64(&r->table[i]);
		if (r->table[i] & ~QCOW2_REFT_OFFSET_MASK ||
		    r->table[i] & ((1ull << h->cluster_bits) - 1)) {
			ret = qcow2_set_error(-EUCLEAN, "refcount table entry %u is misaligned", i);
			qcow2_refcount_release(r);
			return ret;
		}
	}
	return 0;
}

void qcow2_refcount_release(struct qcow2_refcounts *r)
{
	free(r->table);
	r->table = NULL;
	r->n = 0;
}

/* The refcount table is loaded on first use: reading guest data never needs it. */
static int refs_ready(struct qcow2_image *img)
{
	int r = 0;

	pthread_mutex_lock(&img->snap_lock);
	if (!img->refs.table)
		r = qcow2_refcount_load(img->io, &img->h, img->file_bytes, &img->refs);
	pthread_mutex_unlock(&img->snap_lock);
	return r < 0 ? qcow2_error_prefix(r, img->name) : 0;
}

int qcow2_image_refcount(struct qcow2_image *img, uint64_t cluster_idx, uint64_t *refcount)
{
	const struct qcow2_refcounts *r = &img->refs;
	uint64_t per_block, ti, bi;
	uint8_t *block;
	int ret = refs_ready(img);

	if (ret < 0)
		return ret;
	per_block = (img->cluster_bytes * 8) >> r->order;
	ti = cluster_idx / per_block;
	bi = cluster_idx % per_block;

	if (ti >= r->n || !r->table[ti]) {
		*refcount = 0;
		return 0;
	}
	block = malloc(img->cluster_bytes);
	if (!block)
		return qcow2_set_error(-ENOMEM, "out of memory");
	ret = qcow2_io_pread_full(img->io, block, img->cluster_bytes, r->table[ti]);
	if (ret == 0)
		*refcount = qcow2_refcount_block_get(block, r->order, bi);
	free(block);
	return ret;
}

int qcow2_image_used_clusters(struct qcow2_image *img, uint64_t *clusters)
{
	const struct qcow2_refcounts *r = &img->refs;
	uint64_t per_block, n = 0, j;
	uint8_t *block;
	uint32_t i;
	int ret = refs_ready(img);

	if (ret < 0)
		return ret;
	per_block = (img->cluster_bytes * 8) >> r->order;

	block = malloc(img->cluster_bytes);
	if (!block)
		return qcow2_set_error(-ENOMEM, "out of memory");
	for (i = 0; i < r->n; i++) {
		if (!r->table[i])
			continue;
		ret = qcow2_io_pread_full(img->io, block, img->cluster_bytes, r->table[i]);
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
