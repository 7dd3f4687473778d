/* SPDX-License-Identifier: MIT */
/*
 * overlap-tables.c - the entries of the active L2 tables, checked before the first change of an
 * open writes anywhere (qcow2_overlap_check_table(), qcow2_overlap_check_tables()) and before a
 * dirty image's refcounts are rebuilt (qcow2_overlap_check_meta()): no guest data lies in live
 * metadata (overlap.c's structure says where it lies), every data cluster has a refcount, of 1
 * where COPIED says the image owns it alone, and no cluster is named twice where one entry says
 * COPIED. A table refused marks the image corrupt, as a write the guard refuses does (QEMU marks
 * an image corrupt where it finds such an entry).
 *
 * Locking: w->lock held (the write side's), overlap.c's lock taken through its functions.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/engine.h"

struct host_ref {
	uint64_t cluster;
	uint32_t idx;
	bool copied;
};

static int cmp_host_ref(const void *a, const void *b)
{
	const struct host_ref *x = a, *y = b;

	return x->cluster < y->cluster ? -1 : x->cluster > y->cluster;
}

/* Refuse a change of the table at @l2_off because of its entry @idx: the corrupt bit goes to
 * disk and the image takes no more changes, as for a write the guard refuses (QEMU marks an
 * image corrupt where it finds such an entry). */
static int refuse_table(struct qcow2_image *img, uint64_t l2_off, uint32_t idx, const char *why)
{
	qcow2_overlap_refused(img);
	return qcow2_set_error(-EIO,
			       "'%s': L2 table at %#" PRIx64 ", entry %" PRIu32
			       ": %s: image marked "
			       "corrupt, read-only from now on (repair it with 'qcowctl check "
			       "--repair')",
			       img->name, l2_off, idx, why);
}

/* One entry of a table being checked: where its data lies (standard entries go to @refs). */
static int check_entry(struct qcow2_image *img, uint64_t l2_off, uint32_t idx, uint64_t e,
		       bool exempt, struct host_ref *refs, size_t *n_refs)
{
	uint32_t cb = img->h.cluster_bits;
	uint64_t host, bytes, c, c1, v, at;
	const char *what = "metadata";
	char why[160];
	int r;

	if (e & QCOW2_OFLAG_COMPRESSED) {
		if (qcow2_map_compressed(img, e, &host, &bytes) < 0)
			return 0; /* unreadable: reads fail, a write rewrites it whole */
		host &= ~511ull;
	} else if ((host = e & QCOW2_L2E_OFFSET_MASK) && !(host & (img->cluster_bytes - 1))) {
		bytes = img->cluster_bytes;
	} else {
		return 0; /* unallocated, or misaligned (reads and writes of it fail) */
	}
	c = host >> cb;
	c1 = (host + bytes - 1) >> cb;
	at = qcow2_overlap_held(img, c, c1 - c + 1, 0, &what);
	if (at != UINT64_MAX && !exempt) {
		snprintf(why, sizeof(why), "guest data at %#" PRIx64 " lies in the %s at %#" PRIx64,
			 host, what, at << cb);
		if (!refs) /* qcow2_overlap_check_meta(): nothing changes */
			return qcow2_set_error(-EUCLEAN,
					       "'%s': L2 table at %#" PRIx64 ", entry %" PRIu32
					       ": %s: refusing to write the image (repair it with "
					       "'qcowctl check --repair')",
					       img->name, l2_off, idx, why);
		return refuse_table(img, l2_off, idx, why);
	}
	if (at != UINT64_MAX)
		return 1; /* the change drops or rewrites it (a write there meets the guard) */
	if (!refs)
		return 0;
	for (; c <= c1; c++) {
		r = qcow2_refcount_get_w(img, c, &v);
		if (r < 0)
			return r;
		if (v == 0 ||
		    (v != 1 && (e & QCOW2_OFLAG_COPIED) && !(e & QCOW2_OFLAG_COMPRESSED))) {
			snprintf(why, sizeof(why),
				 "data cluster %#" PRIx64 " has refcount %" PRIu64 "%s", c << cb, v,
				 v ? " but is marked as owned alone (COPIED)" : "");
			return refuse_table(img, l2_off, idx, why);
		}
	}
	if (!(e & QCOW2_OFLAG_COMPRESSED))
		refs[(*n_refs)++] = (struct host_ref){host >> cb, idx, !!(e & QCOW2_OFLAG_COPIED)};
	return 0;
}

int qcow2_overlap_check_table(struct qcow2_image *img, uint64_t l2_off, const uint64_t *t,
			      uint32_t first, uint32_t n)
{
	uint32_t ew = img->l2_entry_words, i;
	const char *what = "metadata";
	struct host_ref *refs;
	size_t n_refs = 0, j;
	bool exempted = false;
	char why[96];
	int r = 0;

	if (!img->w || !img->w->ol || qcow2_overlap_table_checked(img, l2_off))
		return 0;
	if (qcow2_overlap_held(img, l2_off >> img->h.cluster_bits, 1, QCOW2_OL_L2, &what) !=
	    UINT64_MAX) {
		snprintf(why, sizeof(why), "the table lies in the %s", what);
		return refuse_table(img, l2_off, 0, why);
	}
	if (img->h.incompat & QCOW2_INCOMPAT_DATA_FILE)
		return 0; /* data clusters lie in another file, with no refcounts */
	refs = malloc((size_t)img->l2_entries * sizeof(*refs));
	if (!refs)
		return qcow2_oom();
	for (i = 0; i < img->l2_entries && r >= 0; i++) {
		r = check_entry(img, l2_off, i, t[(size_t)i * ew], i >= first && i - first < n,
				refs, &n_refs);
		exempted |= r == 1;
	}
	/* one cluster named twice, once as owned alone: a write in place there changes both */
	if (r >= 0 && n_refs > 1) {
		qsort(refs, n_refs, sizeof(*refs), cmp_host_ref);
		for (j = 1; j < n_refs && r >= 0; j++)
			if (refs[j].cluster == refs[j - 1].cluster &&
			    (refs[j].copied || refs[j - 1].copied))
				r = refuse_table(img, l2_off,
						 refs[j].copied ? refs[j].idx : refs[j - 1].idx,
						 "its data cluster is named twice in the table, "
						 "yet marked as owned alone (COPIED)");
	}
	free(refs);
	if (r < 0)
		return r;
	if (!exempted)
		qcow2_overlap_set_checked(img, l2_off);
	return 0;
}

uint32_t qcow2_exempt(const struct qcow2_image *img, uint32_t i, uint32_t l1_idx, uint32_t n)
{
	return i == l1_idx && (img->l1.entries[i] & QCOW2_OFLAG_COPIED) ? n : 0;
}

int qcow2_overlap_check_tables(struct qcow2_image *img, uint32_t l1_idx, uint32_t first, uint32_t n)
{
	uint32_t cb = img->h.cluster_bits, i;
	bool all = true;
	uint64_t *t;
	int r = 0;

	if (qcow2_overlap_all_checked(img))
		return 0;
	t = malloc(img->cluster_bytes);
	if (!t)
		return qcow2_oom();
	for (i = 0; i < img->l1.n && r == 0; i++) {
		uint64_t off = img->l1.entries[i] & QCOW2_L1E_OFFSET_MASK;

		if (!off || qcow2_overlap_table_checked(img, off))
			continue;
		if ((off & (img->cluster_bytes - 1)) || (off >> cb) >= img->end_cluster) {
			all = false; /* unreadable: a write through it fails */
			continue;
		}
		r = qcow2_l2cache_get(img->l2cache, img->io, off, 0,
				      (uint32_t)(img->cluster_bytes / 8), t);
		if (r == 0)
			r = qcow2_overlap_check_table(img, off, t, first,
						      qcow2_exempt(img, i, l1_idx, n));
		all &= r == 0 && qcow2_overlap_table_checked(img, off);
	}
	free(t);
	if (r == 0 && all)
		qcow2_overlap_set_all_checked(img);
	return r;
}

int qcow2_overlap_check_meta(struct qcow2_image *img)
{
	uint32_t cb = img->h.cluster_bits, ew = img->l2_entry_words, i, j;
	uint64_t *t;
	int r = 0;

	if (!img->w || !img->w->ol)
		return 0;
	t = malloc(img->cluster_bytes);
	if (!t)
		return qcow2_oom();
	for (i = 0; i < img->l1.n && r == 0; i++) {
		uint64_t off = img->l1.entries[i] & QCOW2_L1E_OFFSET_MASK;

		if (!off || (off & (img->cluster_bytes - 1)) || (off >> cb) >= img->end_cluster)
			continue;
		r = qcow2_l2cache_get(img->l2cache, img->io, off, 0,
				      (uint32_t)(img->cluster_bytes / 8), t);
		for (j = 0; j < img->l2_entries && r == 0; j++)
			r = check_entry(img, off, j, t[(size_t)j * ew], false, NULL, NULL);
	}
	free(t);
	return r;
}
