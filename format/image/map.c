/* SPDX-License-Identifier: MIT */
/*
 * map.c - guest offset to host offset, through one image's L1 and L2 tables.
 *
 * The unit of allocation is the cluster, or the subcluster (1/32 of a cluster) with extended
 * L2 entries. qcow2_image_map() classifies the unit holding the offset and extends the extent
 * over following units of the same kind (and, for data, contiguous host offsets) up to the end
 * of the L2 table. Every L2 entry is validated as it is used: reserved bits, alignment, the
 * compressed-cluster descriptor and the subcluster bitmap. L2 tables come through the image's
 * L2 cache; no lock is held here.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "image/image.h"

#define MAX_RUN_UNITS 256 /* L2 entries examined per call (bounded stack use) */

struct unit {
	enum qcow2_extent_kind kind;
	uint64_t host; /* DATA: host offset of the unit; COMPRESSED: data offset */
	uint64_t comp_bytes;
};

/* Where the file ends for checks: a writable image grows while it is read. */
static uint64_t file_end(const struct qcow2_image *img)
{
	if (img->w)
		return __atomic_load_n(&img->end_cluster, __ATOMIC_RELAXED) << img->h.cluster_bits;
	return img->file_bytes;
}

static int classify_compressed(const struct qcow2_image *img, uint64_t e, struct unit *u)
{
	uint32_t x = 62 - (img->h.cluster_bits - 8);
	uint64_t nsect = (e & ~(QCOW2_OFLAG_COPIED | QCOW2_OFLAG_COMPRESSED)) >> x;

	if (img->h.incompat & QCOW2_INCOMPAT_DATA_FILE)
		return qcow2_set_error(-EUCLEAN, "compressed cluster in an image with a data file");
	u->kind = QCOW2_EXTENT_COMPRESSED;
	u->host = e & ((1ull << x) - 1);
	u->comp_bytes = (nsect + 1) * 512 - (u->host & 511);
	if (u->host == 0 || u->host >= file_end(img))
		return qcow2_set_error(
		    -EUCLEAN, "compressed cluster at %#" PRIx64 " lies outside the file", u->host);
	return 0;
}

int qcow2_map_compressed(const struct qcow2_image *img, uint64_t entry, uint64_t *host,
			 uint64_t *bytes)
{
	struct unit u = {0};
	int r = classify_compressed(img, entry, &u);

	*host = u.host;
	*bytes = u.comp_bytes;
	return r;
}

/* Classify unit @sc (subcluster index, 0 without extended L2) of the cluster with L2 entry @e
 * and subcluster bitmap @bm. */
static int classify(const struct qcow2_image *img, uint64_t e, uint64_t bm, uint32_t sc,
		    struct unit *u)
{
	bool ext = img->l2_entry_words == 2;
	bool data_file = img->h.incompat & QCOW2_INCOMPAT_DATA_FILE;
	uint64_t host = e & QCOW2_L2E_OFFSET_MASK;

	memset(u, 0, sizeof(*u));
	if (e & QCOW2_OFLAG_COMPRESSED)
		return classify_compressed(img, e, u);
	if (e & QCOW2_L2E_RESERVED)
		return qcow2_set_error(-EUCLEAN, "L2 entry %#" PRIx64 " has reserved bits set", e);
	if (host & (img->cluster_bytes - 1))
		return qcow2_set_error(-EUCLEAN, "L2 entry points at unaligned offset %#" PRIx64,
				       host);
	if (!ext) {
		if ((e & QCOW2_OFLAG_ZERO) && img->h.version < 3)
			return qcow2_set_error(-EUCLEAN, "zero cluster entry in a version 2 image");
		if (e & QCOW2_OFLAG_ZERO)
			u->kind = QCOW2_EXTENT_ZERO;
		else if (host || (data_file && (e & QCOW2_OFLAG_COPIED)))
			u->kind = QCOW2_EXTENT_DATA;
		else
			u->kind = QCOW2_EXTENT_UNALLOCATED;
		u->host = host;
		return 0;
	}
	bool alloc = bm >> sc & 1, zero = bm >> (32 + sc) & 1;
	if (e & QCOW2_OFLAG_ZERO)
		return qcow2_set_error(-EUCLEAN, "extended L2 entry has the zero flag set");
	if (alloc && zero)
		return qcow2_set_error(-EUCLEAN, "subcluster both allocated and zero");
	if (alloc && !host && !(data_file && (e & QCOW2_OFLAG_COPIED)))
		return qcow2_set_error(-EUCLEAN, "allocated subcluster without a host cluster");
	u->kind = alloc ? QCOW2_EXTENT_DATA : zero ? QCOW2_EXTENT_ZERO : QCOW2_EXTENT_UNALLOCATED;
	/* A subcluster of a cluster with no host cluster has no host offset either. */
	if (host || (data_file && (e & QCOW2_OFLAG_COPIED)))
		u->host = host + ((uint64_t)sc << img->sc_bits);
	return 0;
}

/* Does unit @b extend the extent ending with unit @a? Data must be contiguous on the host;
 * zero and unallocated units too when they have a host cluster (preallocated zeros, unallocated
 * subclusters of an allocated cluster: what `qemu-img map` reports with an offset), and units
 * without one only join units without one. */
static bool continues(const struct unit *a, const struct unit *b, uint64_t unit_bytes)
{
	if (a->kind != b->kind || a->kind == QCOW2_EXTENT_COMPRESSED)
		return false;
	if (a->kind != QCOW2_EXTENT_DATA && !a->host)
		return !b->host;
	return b->host == a->host + unit_bytes;
}

/* The L2 table L1 entry @l1_idx of @l1 points at (0: none), checked to lie in the file. */
static int l2_table(struct qcow2_image *img, const struct qcow2_l1 *l1, uint32_t l1_idx,
		    uint64_t *l2_off)
{
	uint64_t off = 0;

	/* Atomic: a writer may change the entry meanwhile (the old or the new table is fine). */
	if (l1_idx < l1->n)
		off = __atomic_load_n(&l1->entries[l1_idx], __ATOMIC_ACQUIRE);
	off &= QCOW2_L1E_OFFSET_MASK;
	if (off & (img->cluster_bytes - 1))
		return qcow2_set_error(-EUCLEAN, "L1 entry %u points at unaligned offset %#" PRIx64,
				       l1_idx, off);
	if (off && (off >= file_end(img) || file_end(img) - off < img->cluster_bytes))
		return qcow2_set_error(-EUCLEAN, "L2 table at %#" PRIx64 " lies outside the file",
				       off);
	*l2_off = off;
	return 0;
}

/* The end of the run of units that continue @u, from the unit at guest @pos on, @end at most;
 * @words: the L2 entries from guest cluster @cluster on. */
static int run_end(struct qcow2_image *img, const uint64_t *words, uint64_t cluster, struct unit u,
		   uint64_t pos, uint64_t end, uint64_t *out)
{
	uint32_t ew = img->l2_entry_words, per = 1u << (img->h.cluster_bits - img->sc_bits), i, sc;
	int r;

	while (pos < end) {
		struct unit next;

		i = (uint32_t)((pos >> img->h.cluster_bits) - cluster);
		sc = (uint32_t)((pos >> img->sc_bits) & (per - 1));
		r = classify(img, words[i * ew], ew == 2 ? words[i * 2 + 1] : 0, sc, &next);
		if (r < 0)
			return r;
		if (!continues(&u, &next, 1ull << img->sc_bits))
			break;
		u = next;
		pos += 1ull << img->sc_bits;
	}
	*out = pos < end ? pos : end;
	return 0;
}

static int map_extent(struct qcow2_image *img, const struct qcow2_l1 *l1, uint64_t guest_off,
		      uint64_t max, struct qcow2_extent *e)
{
	uint64_t words[2 * MAX_RUN_UNITS];
	uint64_t cluster = guest_off >> img->h.cluster_bits, l2_off = 0, unit_bytes, end, pos;
	uint32_t l1_idx, l2_idx, n, units_per_cluster, sc;
	struct unit first;
	int r;

	if (!l1)
		l1 = &img->l1;
	memset(e, 0, sizeof(*e));
	e->guest_off = guest_off;
	e->layer = 0;
	end = l1->size;
	if (guest_off >= end || max == 0) {
		e->kind = QCOW2_EXTENT_UNALLOCATED;
		e->len = max;
		return 0;
	}
	if (max > end - guest_off)
		max = end - guest_off;
	l1_idx = (uint32_t)(cluster / img->l2_entries);
	l2_idx = (uint32_t)(cluster % img->l2_entries);
	/* The extent never crosses the L2 table. */
	n = img->l2_entries - l2_idx;
	if (n > MAX_RUN_UNITS)
		n = MAX_RUN_UNITS;
	{
		uint64_t table_end = (cluster + n) << img->h.cluster_bits;
		if (max > table_end - guest_off)
			max = table_end - guest_off;
	}
	r = l2_table(img, l1, l1_idx, &l2_off);
	if (r < 0)
		return r;
	if (!l2_off) {
		e->kind = QCOW2_EXTENT_UNALLOCATED;
		e->len = max;
		return 0;
	}
	/* Only fetch the entries the extent can reach. */
	{
		uint64_t need = ((guest_off + max - 1) >> img->h.cluster_bits) - cluster + 1;
		if (need < n)
			n = (uint32_t)need;
	}
	r = qcow2_l2cache_get(img->l2cache, img->io, l2_off, l2_idx * img->l2_entry_words,
			      n * img->l2_entry_words, words);
	if (r < 0)
		return r;

	unit_bytes = 1ull << img->sc_bits;
	units_per_cluster = 1u << (img->h.cluster_bits - img->sc_bits);
	sc = (uint32_t)((guest_off >> img->sc_bits) & (units_per_cluster - 1));
	r = classify(img, words[0], img->l2_entry_words == 2 ? words[1] : 0, sc, &first);
	if (r < 0)
		return r;
	if (first.kind == QCOW2_EXTENT_COMPRESSED)
		unit_bytes = img->cluster_bytes; /* a compressed cluster has no subclusters */
	pos = ((guest_off >> img->sc_bits) + 1) << img->sc_bits;
	if (first.kind == QCOW2_EXTENT_COMPRESSED)
		pos = (cluster + 1) << img->h.cluster_bits;
	e->kind = first.kind;
	/* DATA: where @guest_off's byte is; COMPRESSED: where the compressed cluster starts. */
	e->host_off = first.kind == QCOW2_EXTENT_COMPRESSED
			  ? first.host
			  : first.host + (guest_off & (unit_bytes - 1));
	if (first.kind != QCOW2_EXTENT_DATA && first.kind != QCOW2_EXTENT_COMPRESSED && !first.host)
		e->host_off = 0; /* no host cluster */
	e->comp_bytes = first.comp_bytes;
	e->io = first.kind == QCOW2_EXTENT_COMPRESSED ? img->io : img->data_io;
	r = run_end(img, words, cluster, first, pos, guest_off + max, &pos);
	if (r < 0)
		return r;
	e->len = pos - guest_off;
	if (e->kind != QCOW2_EXTENT_DATA && e->kind != QCOW2_EXTENT_COMPRESSED)
		e->io = NULL;
	return 0;
}

int qcow2_image_map(struct qcow2_image *img, const struct qcow2_l1 *l1, uint64_t guest_off,
		    uint64_t max, struct qcow2_extent *e)
{
	int r = map_extent(img, l1, guest_off, max, e);

	return r < 0 ? qcow2_error_prefix(r, img->name) : 0;
}

int qcow2_image_read_compressed(struct qcow2_image *img, const struct qcow2_extent *e,
				uint64_t skip, void *buf, size_t len)
{
	uint64_t in_len = e->comp_bytes;
	uint8_t *in = NULL, *out = NULL;
	ssize_t got;
	int r;

	if (skip > img->cluster_bytes || len > img->cluster_bytes - skip)
		return qcow2_set_error(-EINVAL, "internal: bad compressed read");
	/* The descriptor may claim more sectors than a cluster needs; never read more than
	 * twice a cluster (QEMU writes at most one cluster plus a partial sector). */
	if (in_len > 2 * img->cluster_bytes)
		in_len = 2 * img->cluster_bytes;
	in = malloc(in_len);
	out = malloc(img->cluster_bytes);
	if (!in || !out) {
		r = qcow2_oom();
		goto out;
	}
	got = qcow2_io_pread(img->io, in, in_len, e->host_off);
	if (got < 0) {
		r = (int)got;
		goto out;
	}
	r = qcow2_codec_decompress(img->h.compression_type, in, (size_t)got, out,
				   img->cluster_bytes);
	if (r < 0) {
		qcow2_error_prefix(r, img->name);
		goto out;
	}
	memcpy(buf, out + skip, len);
out:
	free(in);
	free(out);
	return r;
}
