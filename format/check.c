/* SPDX-License-Identifier: MIT */
/*
 * check.c - refcounts recomputed from the metadata, and their repair.
 *
 * The expected refcount of every host cluster is counted from what points at it: the header,
 * the L1 tables (active and of every snapshot), the L2 tables and the data and compressed
 * clusters they reach, the snapshot table, the refcount table and blocks, and the bitmap
 * directory, tables and data when the bitmaps extension is valid. Counts live in one array of
 * 32-bit counters per host cluster of the file (bounded: images of more than 2^28 clusters are
 * refused here). An image left dirty by lazy refcounts (QEMU skipped refcount updates and set
 * the dirty bit) gets its refcounts rewritten from these counts before it is written.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "internal.h"

#define MAX_CHECK_CLUSTERS (1ull << 28)

/* The refcount table of a read-only image is loaded on first use (refcount.c). */
static int refs_load_for_check(struct qcow2_image *img)
{
	uint64_t v;

	return qcow2_image_refcount(img, 0, &v);
}

struct counts {
	uint32_t *c;
	uint64_t n;	  /* clusters of the file */
	uint64_t outside; /* references past the end of the file */
};

static void count_range(struct counts *k, const struct qcow2_image *img, uint64_t off,
			uint64_t bytes)
{
	uint64_t first, last, i;

	if (!bytes)
		return;
	first = off >> img->h.cluster_bits;
	last = (off + bytes - 1) >> img->h.cluster_bits;
	for (i = first; i <= last; i++) {
		if (i >= k->n)
			k->outside++;
		else if (k->c[i] < UINT32_MAX)
			k->c[i]++;
	}
}

/* Count an L1 table's L2 tables and what they reach. */
static int count_l1(struct counts *k, struct qcow2_image *img, const struct qcow2_l1 *l1)
{
	uint32_t ew = img->l2_entry_words, per = img->l2_entries, i, j;
	uint64_t cs = img->cluster_bytes, *t = malloc(cs);
	bool data_file = img->h.incompat & QCOW2_INCOMPAT_DATA_FILE;
	int r = 0;

	if (!t)
		return qcow2_set_error(-ENOMEM, "out of memory");
	for (i = 0; i < l1->n && r == 0; i++) {
		uint64_t l2 = l1->entries[i] & QCOW2_L1E_OFFSET_MASK;

		if (!l2)
			continue;
		count_range(k, img, l2, cs);
		if ((l2 >> img->h.cluster_bits) >= k->n)
			continue;
		r = qcow2_l2cache_get(img->l2cache, img->io, l2, 0, (uint32_t)(cs / 8), t);
		for (j = 0; j < per && r == 0; j++) {
			uint64_t e = t[j * ew], host, bytes;

			if (e & QCOW2_OFLAG_COMPRESSED) {
				if (qcow2_map_compressed(img, e, &host, &bytes) == 0)
					count_range(k, img, host & ~511ull, bytes);
			} else if (!data_file && (host = e & QCOW2_L2E_OFFSET_MASK)) {
				count_range(k, img, host, cs);
			}
		}
	}
	free(t);
	return r;
}

/* The bitmap directory, tables and data clusters (when the extension is in force). */
static int count_bitmaps(struct counts *k, struct qcow2_image *img)
{
	const struct qcow2_header *h = &img->h;
	uint64_t off = 0, i;
	uint8_t *dir;
	int r;

	if (!h->has_bitmaps_ext || !(h->autoclear & QCOW2_AUTOCLEAR_BITMAPS))
		return 0;
	count_range(k, img, h->bitmap_dir_off, h->bitmap_dir_bytes);
	dir = malloc(h->bitmap_dir_bytes ? h->bitmap_dir_bytes : 1);
	if (!dir)
		return qcow2_set_error(-ENOMEM, "out of memory");
	r = qcow2_io_pread_full(img->io, dir, h->bitmap_dir_bytes, h->bitmap_dir_off);
	while (r == 0 && off + 24 <= h->bitmap_dir_bytes) {
		uint64_t table = get_be64(dir + off), entries = get_be32(dir + off + 8);
		uint32_t name = get_be16(dir + off + 18), extra = get_be32(dir + off + 20);
		uint64_t *t;

		count_range(k, img, table, entries * 8);
		if (entries * 8 > (64u << 20) || table + entries * 8 > k->n << img->h.cluster_bits)
			break;
		t = malloc(entries ? entries * 8 : 1);
		if (!t) {
			r = qcow2_set_error(-ENOMEM, "out of memory");
			break;
		}
		r = qcow2_io_pread_full(img->io, t, entries * 8, table);
		for (i = 0; r == 0 && i < entries; i++) {
			uint64_t e = get_be64(&t[i]) & QCOW2_L2E_OFFSET_MASK;
			if (e)
				count_range(k, img, e, img->cluster_bytes);
		}
		free(t);
		off += (24 + (uint64_t)extra + name + 7) & ~7ull;
	}
	free(dir);
	return r;
}

/* Expected refcount of every cluster of the file. */
static int count_all(struct qcow2_image *img, struct counts *k)
{
	const struct qcow2_header *h = &img->h;
	uint64_t cs = img->cluster_bytes;
	uint32_t i;
	int r;

	k->n = img->w ? img->w->end_cluster : (img->file_bytes + cs - 1) >> h->cluster_bits;
	if (k->n > MAX_CHECK_CLUSTERS)
		return qcow2_set_error(-EFBIG, "too many clusters (%" PRIu64 ") to count", k->n);
	k->c = calloc(k->n ? k->n : 1, sizeof(*k->c));
	if (!k->c)
		return qcow2_set_error(-ENOMEM, "out of memory for the refcount check");
	count_range(k, img, 0, cs);
	count_range(k, img, h->l1_off, (uint64_t)img->l1.n * 8);
	r = count_l1(k, img, &img->l1);
	for (i = 0; r == 0 && i < h->nb_snapshots; i++) {
		const struct qcow2_l1 *l1;

		count_range(k, img, img->snaps[i].l1_off, (uint64_t)img->snaps[i].l1_entries * 8);
		r = qcow2_image_snapshot_l1(img, i, &l1);
		if (r == 0)
			r = count_l1(k, img, l1);
	}
	if (h->nb_snapshots)
		count_range(k, img, h->snapshots_off, img->snap_table_bytes);
	count_range(k, img, h->reftable_off, (uint64_t)h->reftable_clusters << h->cluster_bits);
	for (i = 0; i < img->refs.n; i++)
		count_range(k, img, img->refs.table[i], img->refs.table[i] ? cs : 0);
	if (r == 0)
		r = count_bitmaps(k, img);
	return r;
}

int qcow2_check_rebuild_dirty(struct qcow2_image *img)
{
	struct counts k = {0};
	uint64_t pb = (img->cluster_bytes * 8) >> img->refs.order, covered, i, v;
	int r;

	r = count_all(img, &k);
	/* Clusters past the end of the file keep no refcount. */
	covered = (uint64_t)img->refs.n * pb;
	for (i = k.n; r == 0 && i < covered; i++) {
		if (!img->refs.table[i / pb]) {
			i = (i / pb + 1) * pb - 1;
			continue;
		}
		r = qcow2_refcount_get_w(img, i, &v);
		if (r == 0 && v)
			r = qcow2_refcount_set_w(img, i, 0);
	}
	for (i = 0; r == 0 && i < k.n; i++) {
		r = qcow2_refcount_get_w(img, i, &v);
		if (r == 0 && v != k.c[i])
			r = qcow2_refcount_set_w(img, i, k.c[i]);
	}
	free(k.c);
	/* The fast path trusts COPIED to mean "refcount 1": make it so, as QEMU's repair does. */
	if (r == 0)
		r = qcow2_write_fix_copied(img);
	if (r == 0)
		r = qcow2_image_flush(img);
	if (r == 0) {
		/* Durable refcounts first, then the header without the dirty bit. */
		img->h.incompat &= ~QCOW2_INCOMPAT_DIRTY;
		r = qcow2_image_write_header(img);
		if (r == 0)
			r = qcow2_io_flush(img->io);
	}
	if (r < 0)
		return qcow2_set_error(r,
				       "left dirty by lazy refcounts, and rebuilding its "
				       "refcounts failed: %s",
				       qcow2_last_error());
	return 0;
}

int qcow2_image_check(struct qcow2_image *img, struct qcow2_check_result *res)
{
	struct counts k = {0};
	uint64_t i, v;
	int r;

	memset(res, 0, sizeof(*res));
	if (!img->w && (r = refs_load_for_check(img)) < 0)
		return r;
	r = count_all(img, &k);
	for (i = 0; r == 0 && i < k.n; i++) {
		r = img->w ? qcow2_refcount_get_w(img, i, &v) : qcow2_image_refcount(img, i, &v);
		if (r < 0)
			break;
		if (v < k.c[i])
			res->corruptions++;
		else if (v > k.c[i])
			res->leaks++;
	}
	res->corruptions += k.outside;
	res->clusters = k.n;
	free(k.c);
	return r < 0 ? qcow2_error_prefix(r, img->name) : 0;
}
