/* SPDX-License-Identifier: MIT */
/*
 * imgbuild.c - in-memory qcow2 image builder for tests (see imgbuild.h): the file's layout
 * (header and extensions, refcount table and blocks, L1 and L2 tables, bitmaps) and output.
 * Guest content (writes, zeros, compression, snapshots, the shadow) is in imgbuild_guest.c.
 *
 * Invariant after every public call: the file is a consistent qcow2 image. Refcounts count
 * references exactly as `qemu-img check` does (each L1 table that reaches a cluster, through
 * any L2 table, adds one), and the active L1 and L2 entries carry QCOW_OFLAG_COPIED exactly
 * when the cluster's refcount is 1. Clusters are only ever appended; a freed cluster keeps its
 * place with refcount 0. This code is written from qcow2.txt and does not use format/'s
 * decoders, so that the tests compare two independent readings of the spec.
 */
#include "imgbuild_priv.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EXT_BACKING_FMT	  0xe2792acau
#define EXT_FEATURE_TABLE 0x6803f857u
#define EXT_BITMAPS	  0x23852875u
#define EXT_DATA_FILE	  0x44415441u

#define BITMAP_GRANULARITY_BITS 16

void ib_die(const char *msg)
{
	fprintf(stderr, "imgbuild: %s\n", msg);
	abort();
}

void *ib_xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (!p)
		ib_die("out of memory");
	return p;
}

char *ib_xstrdup(const char *s)
{
	char *p;

	if (!s)
		return NULL;
	p = strdup(s);
	if (!p)
		ib_die("out of memory");
	return p;
}

/* ---- the byte buffers ---- */

void ib_grow(uint8_t **buf, size_t *len, size_t *cap, size_t want)
{
	size_t ncap;
	uint8_t *p;

	if (want <= *len)
		return;
	if (want > *cap) {
		ncap = *cap ? *cap : 65536;
		while (ncap < want)
			ncap *= 2;
		p = realloc(*buf, ncap);
		if (!p)
			ib_die("out of memory");
		memset(p + *cap, 0, ncap - *cap);
		*buf = p;
		*cap = ncap;
	}
	*len = want;
}

static void ensure_len(struct imgbuild *img, uint64_t want)
{
	if (want > ((uint64_t)1 << 40))
		ib_die("image would exceed 1 TiB");
	ib_grow(&img->bytes, &img->len, &img->cap, (size_t)want);
}

void imgbuild_put_bytes(struct imgbuild *img, uint64_t off, const void *p, size_t n)
{
	ensure_len(img, off + n);
	memcpy(img->bytes + off, p, n);
}

void imgbuild_put_be16(struct imgbuild *img, uint64_t off, uint16_t v)
{
	ensure_len(img, off + 2);
	wr16(img->bytes + off, v);
}

void imgbuild_put_be32(struct imgbuild *img, uint64_t off, uint32_t v)
{
	ensure_len(img, off + 4);
	wr32(img->bytes + off, v);
}

void imgbuild_put_be64(struct imgbuild *img, uint64_t off, uint64_t v)
{
	ensure_len(img, off + 8);
	wr64(img->bytes + off, v);
}

uint64_t imgbuild_get_be64(const struct imgbuild *img, uint64_t off)
{
	if (off + 8 > img->len)
		ib_die("read past the end of the image");
	return rd64(img->bytes + off);
}

uint32_t imgbuild_get_be32(const struct imgbuild *img, uint64_t off)
{
	if (off + 4 > img->len)
		ib_die("read past the end of the image");
	return (uint32_t)img->bytes[off] << 24 | (uint32_t)img->bytes[off + 1] << 16 |
	       (uint32_t)img->bytes[off + 2] << 8 | img->bytes[off + 3];
}

/* ---- refcounts ---- */

static uint64_t per_block(const struct imgbuild *img)
{
	return (img->cluster_bytes * 8) >> img->o.refcount_order;
}

uint64_t ib_max_refcount(const struct imgbuild *img)
{
	uint32_t bits = 1u << img->o.refcount_order;

	return bits == 64 ? UINT64_MAX : (1ull << bits) - 1;
}

static uint64_t block_get(const uint8_t *b, uint32_t order, uint64_t i)
{
	uint32_t bits = 1u << order;
	uint64_t v = 0;
	uint32_t k;

	if (bits < 8)
		return (b[i * bits / 8] >> (i * bits % 8)) & ((1u << bits) - 1);
	for (k = 0; k < bits / 8; k++)
		v = v << 8 | b[i * (bits / 8) + k];
	return v;
}

static void block_set(uint8_t *b, uint32_t order, uint64_t i, uint64_t v)
{
	uint32_t bits = 1u << order;
	uint32_t k;

	if (bits < 8) {
		uint8_t mask = (uint8_t)(((1u << bits) - 1) << (i * bits % 8));
		uint8_t *p = &b[i * bits / 8];
		*p = (uint8_t)((*p & ~mask) | ((v << (i * bits % 8)) & mask));
		return;
	}
	for (k = bits / 8; k-- > 0; v >>= 8)
		b[i * (bits / 8) + k] = (uint8_t)v;
}

uint64_t imgbuild_refcount(const struct imgbuild *img, uint64_t idx)
{
	uint64_t bi = idx / per_block(img), block;

	if (bi >= (uint64_t)img->reftable_clusters * img->cluster_bytes / 8)
		return 0;
	block = rd64(img->bytes + img->reftable_off + 8 * bi);
	if (!block)
		return 0;
	return block_get(img->bytes + block, img->o.refcount_order, idx % per_block(img));
}

/* Reserve @n clusters at the end of the file, without refcounts yet. */
static uint64_t reserve(struct imgbuild *img, uint64_t n)
{
	uint64_t off = img->len;

	if (off % img->cluster_bytes)
		ib_die("file length is not a multiple of the cluster size");
	ensure_len(img, off + n * img->cluster_bytes);
	memset(img->bytes + off, 0, (size_t)(n * img->cluster_bytes));
	return off;
}

void ib_set_refcount(struct imgbuild *img, uint64_t idx, uint64_t v)
{
	uint64_t bi = idx / per_block(img), rt_entry = img->reftable_off + 8 * bi, block;

	if (v > ib_max_refcount(img)) {
		if (!img->in_snapshot)
			ib_die("refcount overflow (refcount_order too small for this test)");
		img->overflow = true;
		return;
	}
	if (bi >= (uint64_t)img->reftable_clusters * img->cluster_bytes / 8)
		ib_die("refcount table too small: raise reftable_clusters");
	block = rd64(img->bytes + rt_entry);
	if (!block) {
		if (v == 0)
			return;
		block = reserve(img, 1);
		wr64(img->bytes + rt_entry, block);
		ib_set_refcount(img, block / img->cluster_bytes, 1);
	}
	block_set(img->bytes + block, img->o.refcount_order, idx % per_block(img), v);
}

void ib_ref_add(struct imgbuild *img, uint64_t host_off, int delta)
{
	uint64_t idx = host_off / img->cluster_bytes, rc = imgbuild_refcount(img, idx);

	if (delta < 0 && rc == 0)
		ib_die("refcount underflow");
	ib_set_refcount(img, idx, delta < 0 ? rc - 1 : rc + 1);
}

uint64_t ib_alloc_clusters(struct imgbuild *img, uint64_t n)
{
	uint64_t off = reserve(img, n), i;

	for (i = 0; i < n; i++)
		ib_set_refcount(img, off / img->cluster_bytes + i, 1);
	return off;
}

uint64_t imgbuild_alloc_cluster(struct imgbuild *img)
{
	return ib_alloc_clusters(img, 1);
}

uint64_t ib_clusters_for(const struct imgbuild *img, uint64_t bytes)
{
	return (bytes + img->cluster_bytes - 1) / img->cluster_bytes;
}

/* ---- compressed cluster descriptors ---- */

uint32_t ib_csize_shift(const struct imgbuild *img)
{
	return 62 - (img->o.cluster_bits - 8);
}

/* The host byte range a compressed descriptor covers, as QEMU counts it. */
void ib_comp_range(const struct imgbuild *img, uint64_t e, uint64_t *off, uint64_t *bytes)
{
	uint32_t x = ib_csize_shift(img);
	uint64_t nsect = ((e & ~(OFLAG_COPIED | OFLAG_COMPRESSED)) >> x) + 1;

	*off = e & ((1ull << x) - 1);
	*bytes = nsect * 512 - (*off & 511);
}

/* Add @delta to the refcount of every cluster the compressed data of @e touches. */
void ib_comp_ref(struct imgbuild *img, uint64_t e, int delta)
{
	uint64_t off, bytes, c;

	ib_comp_range(img, e, &off, &bytes);
	for (c = off / img->cluster_bytes; c <= (off + bytes - 1) / img->cluster_bytes; c++)
		ib_ref_add(img, c * img->cluster_bytes, delta);
}

/* ---- header ---- */

static size_t ext_add(uint8_t *hdr, size_t off, uint32_t type, const void *data, uint32_t len)
{
	wr32(hdr + off, type);
	wr32(hdr + off + 4, len);
	if (len)
		memcpy(hdr + off + 8, data, len);
	return off + 8 + ((len + 7u) & ~7u);
}

static const struct imgbuild_feature qemu_features[] = {
    {0, 0, "dirty bit"},	{0, 1, "corrupt bit"},	       {0, 2, "external data file"},
    {0, 3, "compression type"}, {0, 4, "extended L2 entries"}, {1, 0, "lazy refcounts"},
    {2, 0, "bitmaps"},		{2, 1, "raw external data"},
};
#define N_QEMU_FEATURES (sizeof(qemu_features) / sizeof(qemu_features[0]))

static uint8_t *feature_table(const struct imgbuild *img, uint32_t *len)
{
	size_t n = N_QEMU_FEATURES + img->o.n_extra_features, i;
	uint8_t *t = ib_xcalloc(n, 48);

	for (i = 0; i < n; i++) {
		const struct imgbuild_feature *f =
		    i < N_QEMU_FEATURES ? &qemu_features[i]
					: &img->o.extra_features[i - N_QEMU_FEATURES];
		t[48 * i] = f->type;
		t[48 * i + 1] = f->bit;
		strncpy((char *)t + 48 * i + 2, f->name, 46);
	}
	*len = (uint32_t)(48 * n);
	return t;
}

/* The feature name table if it fits in the header cluster with everything else (as QEMU,
 * which leaves it out of small clusters), else NULL. */
static uint8_t *fitting_feature_table(const struct imgbuild *img, uint32_t hlen, uint32_t *len)
{
	const struct imgbuild_opts *o = &img->o;
	uint64_t need = hlen + 8; /* the end marker */
	uint8_t *ft;
	size_t i;

	if (o->version < 3 || !o->feature_table)
		return NULL;
	if (img->backing_fmt)
		need += 8 + ((strlen(img->backing_fmt) + 7) & ~7u);
	if (img->data_file)
		need += 8 + ((strlen(img->data_file) + 7) & ~7u);
	if (o->bitmaps)
		need += 8 + 24;
	for (i = 0; i < o->n_exts; i++)
		need += 8 + ((o->exts[i].len + 7) & ~7u);
	if (img->backing_file)
		need += strlen(img->backing_file);
	ft = feature_table(img, len);
	if (need + 8 + *len > img->cluster_bytes) {
		free(ft);
		ft = NULL;
	}
	return ft;
}

/* Write the header extensions from @off, then the backing file name. */
static void write_extensions(struct imgbuild *img, size_t off, uint8_t *ft, uint32_t ft_len)
{
	const struct imgbuild_opts *o = &img->o;
	uint8_t *h = img->bytes, bm[24];
	size_t i, blen;

	if (img->backing_fmt)
		off = ext_add(h, off, EXT_BACKING_FMT, img->backing_fmt,
			      (uint32_t)strlen(img->backing_fmt));
	if (img->data_file)
		off = ext_add(h, off, EXT_DATA_FILE, img->data_file,
			      (uint32_t)strlen(img->data_file));
	if (ft)
		off = ext_add(h, off, EXT_FEATURE_TABLE, ft, ft_len);
	if (o->bitmaps) {
		memset(bm, 0, sizeof(bm));
		wr32(bm, 1);
		wr64(bm + 8, img->bitmap_dir_bytes);
		wr64(bm + 16, img->bitmap_dir_off);
		off = ext_add(h, off, EXT_BITMAPS, bm, sizeof(bm));
	}
	for (i = 0; i < o->n_exts; i++) {
		if (off + 8 + o->exts[i].len > img->cluster_bytes)
			ib_die("header extensions do not fit in one cluster");
		off = ext_add(h, off, o->exts[i].type, o->exts[i].data, o->exts[i].len);
	}
	off += 8; /* end marker: already zero */
	if (!img->backing_file)
		return;
	blen = strlen(img->backing_file);
	if (off + blen > img->cluster_bytes)
		ib_die("the backing file name does not fit in the header cluster");
	wr64(h + 8, off);
	wr32(h + 16, (uint32_t)blen);
	memcpy(h + off, img->backing_file, blen);
}

static void write_header(struct imgbuild *img)
{
	const struct imgbuild_opts *o = &img->o;
	uint64_t incompat = o->incompat, autoclear = o->autoclear, compat = o->compat;
	uint32_t hlen = o->version == 2 ? 72 : 112, ft_len = 0;
	uint8_t *h = img->bytes, *ft;

	if (o->compression_type != QCOW2_COMPRESSION_ZLIB)
		incompat |= QCOW2_INCOMPAT_COMPRESSION;
	if (o->extended_l2)
		incompat |= QCOW2_INCOMPAT_EXTL2;
	if (img->data_file)
		incompat |= QCOW2_INCOMPAT_DATA_FILE;
	if (img->data_file && o->data_file_raw)
		autoclear |= QCOW2_AUTOCLEAR_DATA_FILE_RAW;
	if (o->bitmaps)
		autoclear |= QCOW2_AUTOCLEAR_BITMAPS;
	if (o->lazy_refcounts)
		compat |= QCOW2_COMPAT_LAZY_REFCOUNTS;
	memset(h, 0, img->cluster_bytes);
	wr32(h + 0, QCOW2_MAGIC);
	wr32(h + 4, o->version);
	wr32(h + 20, o->cluster_bits);
	wr64(h + 24, o->size);
	wr32(h + 32, o->crypt_method);
	wr32(h + 36, img->l1_entries);
	wr64(h + 40, img->l1_off);
	wr64(h + 48, img->reftable_off);
	wr32(h + 56, img->reftable_clusters);
	wr32(h + 60, img->nb_snapshots);
	wr64(h + 64, img->snap_table_off);
	if (o->version >= 3) {
		wr64(h + 72, incompat);
		wr64(h + 80, compat);
		wr64(h + 88, autoclear);
		wr32(h + 96, o->refcount_order);
		wr32(h + 100, hlen);
		h[104] = o->compression_type;
	}
	ft = fitting_feature_table(img, hlen, &ft_len);
	write_extensions(img, hlen, ft, ft_len);
	free(ft);
}

/* Patch the snapshot fields of the header. */
void ib_write_header_snapshots(struct imgbuild *img)
{
	wr32(img->bytes + 60, img->nb_snapshots);
	wr64(img->bytes + 64, img->snap_table_off);
}

/* ---- bitmaps ---- */

static void create_bitmap(struct imgbuild *img)
{
	uint64_t bits, table_entries, dir_len;
	uint8_t *d;
	const char *name = "bitmap0";

	if (img->o.version < 3 || img->o.size == 0)
		ib_die("bitmaps need a v3 image with a non-zero size");
	bits = (img->o.size + (1ull << BITMAP_GRANULARITY_BITS) - 1) >> BITMAP_GRANULARITY_BITS;
	table_entries = ib_clusters_for(img, (bits + 7) / 8);
	img->bitmap_table_off = ib_alloc_clusters(img, ib_clusters_for(img, table_entries * 8));
	dir_len = (24 + strlen(name) + 7) & ~7ull;
	img->bitmap_dir_off = ib_alloc_clusters(img, ib_clusters_for(img, dir_len));
	img->bitmap_dir_bytes = dir_len;
	d = img->bytes + img->bitmap_dir_off;
	wr64(d, img->bitmap_table_off);
	wr32(d + 8, (uint32_t)table_entries);
	wr32(d + 12, 0); /* flags: not in use */
	d[16] = 1;	 /* dirty tracking bitmap */
	d[17] = BITMAP_GRANULARITY_BITS;
	wr16(d + 18, (uint16_t)strlen(name));
	wr32(d + 20, 0); /* no extra data */
	memcpy(d + 24, name, strlen(name));
}

/* ---- creation ---- */

struct imgbuild_opts imgbuild_defaults(void)
{
	struct imgbuild_opts o;

	memset(&o, 0, sizeof(o));
	o.version = 3;
	o.cluster_bits = 16;
	o.size = 4 << 20;
	o.refcount_order = 4;
	o.feature_table = true;
	return o;
}

static void check_opts(const struct imgbuild_opts *o)
{
	if (o->version != 2 && o->version != 3)
		ib_die("version must be 2 or 3");
	if (o->cluster_bits < 9 || o->cluster_bits > 21)
		ib_die("cluster_bits must be 9..21");
	if (o->refcount_order > 6 || (o->version == 2 && o->refcount_order != 4))
		ib_die("bad refcount_order");
	if (o->version == 2 && (o->extended_l2 || o->compression_type || o->data_file ||
				o->bitmaps || o->lazy_refcounts))
		ib_die("feature needs a v3 image");
	if (o->extended_l2 && o->cluster_bits < 14)
		ib_die("extended L2 entries need cluster_bits >= 14");
}

struct imgbuild *imgbuild_new(const struct imgbuild_opts *opts)
{
	struct imgbuild_opts o = opts ? *opts : imgbuild_defaults();
	struct imgbuild *img = ib_xcalloc(1, sizeof(*img));
	uint64_t per_l1, per_block_bytes, entries, i;

	check_opts(&o);
	img->o = o;
	img->backing_file = ib_xstrdup(o.backing_file);
	img->backing_fmt = ib_xstrdup(o.backing_fmt);
	img->data_file = ib_xstrdup(o.data_file);
	img->o.backing_file = img->backing_file;
	img->o.backing_fmt = img->backing_fmt;
	img->o.data_file = img->data_file;
	img->cluster_bytes = 1ull << o.cluster_bits;
	img->l2_entry_bytes = o.extended_l2 ? 16 : 8;
	img->l2_entries = (uint32_t)(img->cluster_bytes / img->l2_entry_bytes);
	img->subcluster_bytes = o.extended_l2 ? img->cluster_bytes / 32 : img->cluster_bytes;

	per_l1 = (uint64_t)img->l2_entries * img->cluster_bytes;
	img->l1_entries = o.l1_entries ? o.l1_entries : (uint32_t)((o.size + per_l1 - 1) / per_l1);
	if (o.reftable_clusters) {
		img->reftable_clusters = o.reftable_clusters;
	} else {
		per_block_bytes = per_block(img) * img->cluster_bytes;
		entries = ((256ull << 20) + per_block_bytes - 1) / per_block_bytes;
		img->reftable_clusters = (uint32_t)ib_clusters_for(img, entries * 8);
	}

	if (o.size <= IMGBUILD_SHADOW_MAX) {
		img->shadow = ib_xcalloc(1, (size_t)o.size);
		img->shadow_set = ib_xcalloc(
		    1, (size_t)((o.size + img->subcluster_bytes - 1) / img->subcluster_bytes));
	}
	reserve(img, 1); /* the header */
	img->reftable_off = reserve(img, img->reftable_clusters);
	for (i = 0; i <= img->reftable_clusters; i++)
		ib_set_refcount(img, i, 1);
	img->l1_off = ib_alloc_clusters(
	    img, img->l1_entries ? ib_clusters_for(img, 8ull * img->l1_entries) : 1);
	if (o.bitmaps)
		create_bitmap(img);
	write_header(img);
	return img;
}

void imgbuild_free(struct imgbuild *img)
{
	uint32_t i;

	if (!img)
		return;
	for (i = 0; i < img->nb_snapshots; i++) {
		free(img->snaps[i].id);
		free(img->snaps[i].name);
		free(img->snaps[i].shadow);
		free(img->snaps[i].shadow_set);
	}
	free(img->shadow);
	free(img->shadow_set);
	free(img->snaps);
	free(img->backing_file);
	free(img->backing_fmt);
	free(img->data_file);
	free(img->bytes);
	free(img->data_bytes);
	free(img);
}

/* ---- L1 / L2 access ---- */

void ib_check_guest(const struct imgbuild *img, uint64_t guest_off, uint64_t len)
{
	if (guest_off > img->o.size || len > img->o.size - guest_off)
		ib_die("guest range past the virtual size");
}

uint64_t imgbuild_l1_entry_off(const struct imgbuild *img, uint64_t guest_off)
{
	uint64_t l1_idx = (guest_off >> img->o.cluster_bits) / img->l2_entries;

	return img->l1_off + 8 * l1_idx;
}

uint64_t imgbuild_l2_entry_off(const struct imgbuild *img, uint64_t guest_off)
{
	uint64_t cluster = guest_off >> img->o.cluster_bits;
	uint64_t l2 = rd64(img->bytes + imgbuild_l1_entry_off(img, guest_off)) & L1E_MASK;

	if (!l2)
		return 0;
	return l2 + (cluster % img->l2_entries) * img->l2_entry_bytes;
}

uint64_t imgbuild_host_cluster(const struct imgbuild *img, uint64_t guest_off)
{
	uint64_t e = imgbuild_l2_entry_off(img, guest_off);

	if (!e)
		return 0;
	e = rd64(img->bytes + e);
	if (e & OFLAG_COMPRESSED)
		return 0;
	return e & L2E_MASK;
}

/* The active L2 table for @guest_off, allocated or copied so that it has refcount 1. */
uint64_t ib_writable_l2(struct imgbuild *img, uint64_t guest_off)
{
	uint64_t l1e_off = imgbuild_l1_entry_off(img, guest_off);
	uint64_t l2 = rd64(img->bytes + l1e_off) & L1E_MASK, copy;

	if (!l2) {
		l2 = imgbuild_alloc_cluster(img);
	} else if (imgbuild_refcount(img, l2 / img->cluster_bytes) > 1) {
		copy = imgbuild_alloc_cluster(img);
		memcpy(img->bytes + copy, img->bytes + l2, (size_t)img->cluster_bytes);
		ib_ref_add(img, l2, -1);
		l2 = copy;
	}
	wr64(img->bytes + l1e_off, l2 | OFLAG_COPIED);
	return l2 + ((guest_off >> img->o.cluster_bits) % img->l2_entries) * img->l2_entry_bytes;
}

/* Drop the active reference an L2 entry holds on its host cluster(s). */
void ib_release_entry(struct imgbuild *img, uint64_t e)
{
	uint64_t host = e & L2E_MASK;

	if (e & OFLAG_COMPRESSED)
		ib_comp_ref(img, e, -1);
	else if (host && !img->data_file)
		ib_ref_add(img, host, -1);
}

/* ---- output ---- */

struct qcow2_io *imgbuild_io(const struct imgbuild *img)
{
	struct qcow2_io *io = qcow2_io_mem_new("mem.qcow2", img->bytes, img->len);

	if (!io)
		ib_die("out of memory");
	return io;
}

struct qcow2_io *imgbuild_data_io(const struct imgbuild *img)
{
	struct qcow2_io *io = qcow2_io_mem_new(img->data_file ? img->data_file : "mem.data",
					       img->data_bytes, img->data_len);

	if (!io)
		ib_die("out of memory");
	return io;
}

int imgbuild_write_file(const char *path, const void *bytes, size_t len)
{
	const uint8_t *p = bytes;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	ssize_t n;

	if (fd < 0)
		return -errno;
	while (len) {
		n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			n = -errno;
			close(fd);
			return (int)n;
		}
		p += n;
		len -= (size_t)n;
	}
	return close(fd) < 0 ? -errno : 0;
}

int imgbuild_save(const struct imgbuild *img, const char *path)
{
	return imgbuild_write_file(path, img->bytes, img->len);
}

int imgbuild_save_data(const struct imgbuild *img, const char *path)
{
	return imgbuild_write_file(path, img->data_bytes, img->data_len);
}

void imgbuild_pattern(void *buf, size_t len, uint64_t guest_off, uint8_t tag)
{
	uint8_t *p = buf;
	size_t i;

	for (i = 0; i < len; i++) {
		uint64_t g = guest_off + i, word = (uint64_t)tag << 56 | (g & ~7ull);
		p[i] = (uint8_t)(word >> (8 * (7 - g % 8)));
	}
}
