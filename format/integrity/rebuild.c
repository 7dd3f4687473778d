/* SPDX-License-Identifier: MIT */
/*
 * rebuild.c - a new refcount structure for an image whose own is broken: a refcount table
 * entry with reserved bits set, misaligned, outside the image, or pointing at a cluster that
 * also holds other metadata (the L1 table, an L2 table, the header, another refcount block).
 * Writing refcounts through such an entry would overwrite that metadata, so, as QEMU's
 * rebuild_refcount_structure() does, the repair (repair.c) builds the structure anew and
 * never writes into the old one.
 *
 * The counts come from a walk (engine/walk.c) that leaves the old refcount table and blocks out:
 * once the header names the new table nothing points at them any more. The new blocks and
 * table go, as QEMU places them, to the first clusters nothing counted points at, in the file
 * or past its end, except the old table and every cluster an old entry names (QEMU's check
 * still reads those); they describe every cluster up to the last new one: each cluster's
 * refcount is what points at it, each new cluster's is 1.
 *
 * Write order (crash safety): the blocks, then the table, made durable; then one write of the
 * header fields (refcount table offset and size, within the first sector), made durable. Until
 * that write the image is the old one: what was written lies in clusters nothing points at and
 * the old check does not read, so their bytes change no count. After it the new structure is
 * complete. The one thing a crash before the switch can leave: when the file had no such
 * cluster to spare, the new structure lies past the old end of the file, and those clusters
 * are then counted against the old (broken) block that describes them, if any: a leak or a
 * check error each at most, never a corruption.
 *
 * The write side of the image (refcount.c) is then set up again on the new structure; w->lock
 * is not taken: a repair holds the image alone and works from one thread.
 *
 * Locks: none.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "integrity/integrity.h"

struct layout {
	uint64_t *at;	 /* the cluster of each block */
	uint64_t blocks; /* blocks, describing clusters [0, end) */
	uint64_t table;	 /* the first cluster of the table */
	uint64_t table_clusters;
	uint64_t end;	      /* past every cluster counted, the file, and the new ones */
	const uint64_t *excl; /* clusters never used (sorted) */
	size_t n_excl;
};

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* What the old image's check still reads though nothing counted points at it: the old
 * refcount table, and every cluster an old entry names (QEMU reads a block through an entry
 * with reserved bits set; a misaligned one spans two clusters); and what is pointed at past
 * the end of the file (growing the file over it would make it counted). */
static int exclusions(const struct qcow2_scan *s, uint64_t **out, size_t *n)
{
	const struct qcow2_image *img = s->img;
	uint32_t bits = img->h.cluster_bits, i;
	uint64_t first = img->h.reftable_off >> bits, k, *v;
	size_t cap = (size_t)img->h.reftable_clusters + 2 * (size_t)img->refs.n, m = 0;

	for (k = 0; k < s->n_outside; k++)
		cap += s->outside[k].count;
	v = malloc(cap ? cap * sizeof(*v) : 1);
	if (!v)
		return qcow2_oom();
	for (k = 0; k < img->h.reftable_clusters; k++)
		v[m++] = first + k;
	for (i = 0; i < img->refs.n; i++) {
		uint64_t off = img->refs.table[i] & QCOW2_REFT_OFFSET_MASK;

		if (!off)
			continue;
		v[m++] = off >> bits;
		if (off & (img->cluster_bytes - 1))
			v[m++] = (off >> bits) + 1;
	}
	for (k = 0; k < s->n_outside; k++)
		for (i = 0; i < s->outside[k].count; i++)
			v[m++] = s->outside[k].first + i;
	qsort(v, m, sizeof(*v), cmp_u64);
	*out = v;
	*n = m;
	return 0;
}

/* Cluster @c holds nothing the old image uses, nor a part of the new structure yet. */
static bool is_free(const struct qcow2_scan *s, const struct layout *l, uint64_t c, bool table)
{
	if (c == 0 || (c < s->n_used && s->counts[c]) ||
	    (l->n_excl && bsearch(&c, l->excl, l->n_excl, sizeof(c), cmp_u64)))
		return false;
	return table || c < l->table || c >= l->table + l->table_clusters;
}

/* The first run of @n free clusters. */
static uint64_t first_free(const struct qcow2_scan *s, const struct layout *l, uint64_t n)
{
	uint64_t c = 1, run = 0;

	for (;; c++) {
		run = is_free(s, l, c, true) ? run + 1 : 0;
		if (run == n)
			return c + 1 - n;
	}
}

/* Clusters for the blocks and the table, as QEMU places them: the first unused ones, in the
 * file or past its end; enough blocks to describe every cluster up to the last new one. */
static int plan_layout(const struct qcow2_scan *s, struct layout *l)
{
	const struct qcow2_image *img = s->img;
	uint64_t cs = img->cluster_bytes, pb = (cs * 8) >> img->h.refcount_order;
	uint64_t base = s->n_used > s->n_file ? s->n_used : s->n_file, nb, nt, c, j, end;

	for (nb = (base + pb - 1) / pb;; nb = (end + pb - 1) / pb) {
		nt = (nb * 8 + cs - 1) / cs;
		if (nt * cs > QCOW2_MAX_REFTABLE_BYTES)
			return qcow2_set_error(-EFBIG, "a new refcount table would exceed %u bytes",
					       QCOW2_MAX_REFTABLE_BYTES);
		free(l->at);
		l->at = malloc(nb * sizeof(*l->at));
		if (!l->at)
			return qcow2_oom();
		l->table_clusters = 0;
		l->table = first_free(s, l, nt);
		l->table_clusters = nt;
		end = base > l->table + nt ? base : l->table + nt;
		for (j = 0, c = 1; j < nb; c++)
			if (is_free(s, l, c, false))
				l->at[j++] = c;
		if (c > end)
			end = c;
		if ((end + pb - 1) / pb <= nb)
			break;
	}
	if (end > (1ull << (56 - img->h.cluster_bits)))
		return qcow2_set_error(-EFBIG, "image file would exceed the format's 64 PiB");
	l->blocks = nb;
	l->end = nb * pb; /* every cluster the blocks describe */
	return 0;
}

static bool is_new(const struct layout *l, uint64_t c)
{
	return (c >= l->table && c < l->table + l->table_clusters) ||
	       bsearch(&c, l->at, l->blocks, sizeof(c), cmp_u64);
}

/* Block @j of the new structure: the counts of @s, 1 for the new clusters. */
static void fill_block(const struct qcow2_scan *s, const struct layout *l, uint64_t j, uint8_t *buf)
{
	const struct qcow2_image *img = s->img;
	uint64_t pb = (img->cluster_bytes * 8) >> img->h.refcount_order, i, c;

	memset(buf, 0, img->cluster_bytes);
	for (i = 0; i < pb; i++) {
		c = j * pb + i;
		if (is_new(l, c))
			qcow2_refcount_block_set(buf, img->h.refcount_order, i, 1);
		else if (c < s->n_used && s->counts[c])
			qcow2_refcount_block_set(buf, img->h.refcount_order, i, s->counts[c]);
	}
}

static int write_structure(const struct qcow2_scan *s, const struct layout *l)
{
	struct qcow2_image *img = s->img;
	uint64_t cs = img->cluster_bytes, j, tb = l->table_clusters * cs;
	uint8_t *buf = malloc(tb > cs ? tb : cs);
	int r = buf ? 0 : qcow2_oom_for("a refcount block");

	for (j = 0; r == 0 && j < l->blocks; j++) {
		fill_block(s, l, j, buf);
		r = qcow2_io_pwrite(img->io, buf, cs, l->at[j] * cs);
	}
	if (r == 0) {
		memset(buf, 0, tb);
		for (j = 0; j < l->blocks; j++)
			put_be64(buf + 8 * j, l->at[j] * cs);
		r = qcow2_io_pwrite(img->io, buf, tb, l->table * cs);
	}
	free(buf);
	return r == 0 ? qcow2_io_flush(img->io) : r;
}

int qcow2_rebuild_refcounts(struct qcow2_image *img, const struct qcow2_check_opts *o)
{
	struct qcow2_check_result scratch = {0};
	struct qcow2_header old = img->h;
	struct layout l = {0};
	uint64_t *excl = NULL, size = 0, last;
	struct qcow2_scan s;
	int r;

	r = qcow2_walk_init(&s, img, o, &scratch);
	s.quiet = true;
	s.skip_refs = true;
	if (r == 0)
		r = qcow2_walk_count(&s);
	if (r == 0)
		r = exclusions(&s, &excl, &l.n_excl);
	l.excl = excl;
	if (r == 0)
		r = plan_layout(&s, &l);
	if (r == 0)
		r = write_structure(&s, &l);
	if (r == 0) {
		img->h.reftable_off = l.table << img->h.cluster_bits;
		img->h.reftable_clusters = (uint32_t)l.table_clusters;
		r = qcow2_image_write_header(img);
		if (r == 0)
			r = qcow2_io_flush(img->io);
		if (r < 0) {
			img->h.reftable_off = old.reftable_off;
			img->h.reftable_clusters = old.reftable_clusters;
		}
	}
	if (r == 0)
		r = qcow2_io_size(img->io, &size);
	last = (l.table + l.table_clusters) << img->h.cluster_bits;
	if (r == 0)
		r = qcow2_refcount_reload_write(img, size > last ? size : last);
	qcow2_walk_release(&s);
	free(l.at);
	free(excl);
	return r;
}
