/* SPDX-License-Identifier: MIT */
/*
 * rebuild.c - a new refcount structure for an image whose own is broken: a refcount table
 * entry with reserved bits set, misaligned, outside the image, or pointing at a cluster that
 * also holds other metadata (the L1 table, an L2 table, the header, another refcount block).
 * Writing refcounts through such an entry would overwrite that metadata, so, as QEMU's
 * rebuild_refcount_structure() does, the repair (repair.c) builds the structure anew and
 * never writes into the old one.
 *
 * The counts come from a scan (check.c) that leaves the old refcount table and blocks out:
 * once the header names the new table nothing points at them any more. The new blocks and
 * table are written to fresh clusters past the end of the file and past every cluster counted,
 * and describe every cluster up to their own end: each cluster's refcount is what points at it,
 * each new cluster's is 1.
 *
 * Write order (crash safety): the blocks, then the table, made durable; then one write of the
 * header fields (refcount table offset and size; within the first sector), made durable. Until
 * that write the image is the old one, byte for byte, plus clusters past its old end that
 * nothing points at; after it the new structure is complete. Nothing the old image uses is
 * written at any point.
 *
 * The write side of the image (refcount.c) is then set up again on the new structure; w->lock
 * is not taken: a repair holds the image alone and works from one thread.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "internal.h"

struct layout {
	uint64_t start;	 /* first new cluster: the blocks, then the table */
	uint64_t blocks; /* refcount blocks, covering clusters [0, end) */
	uint64_t table;	 /* clusters of the refcount table */
	uint64_t end;	 /* start + blocks + table */
};

/* Enough blocks to describe every cluster up to the end of the new structure itself. */
static int plan_layout(const struct qcow2_image *img, uint64_t start, struct layout *l)
{
	uint64_t cs = img->cluster_bytes, pb = (cs * 8) >> img->h.refcount_order;
	uint64_t b = 0, t = 0, nb, nt;

	for (;;) {
		nb = (start + b + t + pb - 1) / pb;
		nt = (nb * 8 + cs - 1) / cs;
		if (nb == b && nt == t)
			break;
		b = nb;
		t = nt;
	}
	if (t * cs > QCOW2_MAX_REFTABLE_BYTES)
		return qcow2_set_error(-EFBIG, "a new refcount table would exceed %u bytes",
				       QCOW2_MAX_REFTABLE_BYTES);
	if (start + b + t > (1ull << (56 - img->h.cluster_bits)))
		return qcow2_set_error(-EFBIG, "image file would exceed the format's 64 PiB");
	*l = (struct layout){start, b, t, start + b + t};
	return 0;
}

/* Block @j of the new structure: the counts of @s, 1 for the new clusters. */
static void fill_block(const struct qcow2_scan *s, const struct layout *l, uint64_t j, uint8_t *buf)
{
	const struct qcow2_image *img = s->img;
	uint64_t pb = (img->cluster_bytes * 8) >> img->h.refcount_order, i, c;

	memset(buf, 0, img->cluster_bytes);
	for (i = 0; i < pb; i++) {
		c = j * pb + i;
		if (c >= l->end)
			break;
		if (c >= l->start)
			qcow2_refcount_block_set(buf, img->h.refcount_order, i, 1);
		else if (c < s->n_used && s->counts[c])
			qcow2_refcount_block_set(buf, img->h.refcount_order, i, s->counts[c]);
	}
}

static int write_structure(const struct qcow2_scan *s, const struct layout *l)
{
	struct qcow2_image *img = s->img;
	uint64_t cs = img->cluster_bytes, j;
	uint8_t *buf = malloc(l->table * cs > cs ? l->table * cs : cs);
	int r = buf ? 0 : qcow2_set_error(-ENOMEM, "out of memory for a refcount block");

	for (j = 0; r == 0 && j < l->blocks; j++) {
		fill_block(s, l, j, buf);
		r = qcow2_io_pwrite(img->io, buf, cs, (l->start + j) * cs);
	}
	if (r == 0) {
		memset(buf, 0, l->table * cs);
		for (j = 0; j < l->blocks; j++)
			put_be64(buf + 8 * j, (l->start + j) * cs);
		r = qcow2_io_pwrite(img->io, buf, l->table * cs, (l->start + l->blocks) * cs);
	}
	free(buf);
	return r == 0 ? qcow2_io_flush(img->io) : r;
}

/* The write side again, on the structure the header now names. */
static int reload(struct qcow2_image *img, uint64_t file_bytes)
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

int qcow2_rebuild_refcounts(struct qcow2_image *img, const struct qcow2_check_opts *o)
{
	struct qcow2_check_result scratch = {0};
	struct qcow2_header old = img->h;
	struct qcow2_scan s;
	struct layout l = {0};
	int r;

	r = qcow2_check_init(&s, img, o, &scratch);
	s.quiet = true;
	s.skip_refs = true;
	if (r == 0)
		r = qcow2_check_count(&s);
	if (r == 0)
		r = plan_layout(img, s.n_used > s.n_file ? s.n_used : s.n_file, &l);
	if (r == 0)
		r = write_structure(&s, &l);
	if (r == 0) {
		img->h.reftable_off = (l.start + l.blocks) << img->h.cluster_bits;
		img->h.reftable_clusters = (uint32_t)l.table;
		r = qcow2_image_write_header(img);
		if (r == 0)
			r = qcow2_io_flush(img->io);
		if (r < 0) {
			img->h.reftable_off = old.reftable_off;
			img->h.reftable_clusters = old.reftable_clusters;
		}
	}
	if (r == 0)
		r = reload(img, l.end << img->h.cluster_bits);
	qcow2_check_release(&s);
	return r;
}
