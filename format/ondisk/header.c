/* SPDX-License-Identifier: MIT */
/*
 * header.c - decoding and validation of the qcow2 header and its extensions.
 *
 * qcow2_header_decode() is pure (bytes in, struct out) so it can be unit-tested and fuzzed.
 * Every header field is validated here, once, with overflow-checked arithmetic, before any
 * other module trusts it; qcow2_header_check_layout() then checks the tables against the
 * file's size. All magic and version checks live in this file.
 *
 * Locks: none (pure decoding and encoding).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ondisk/ondisk.h"

#define MAX_BITMAPS	     QCOW2_BITMAP_MAX_COUNT
#define MAX_BITMAP_DIR_BYTES QCOW2_BITMAP_MAX_DIR_BYTES

bool qcow2_probe(const void *buf, size_t len)
{
	return len >= 4 && get_be32(buf) == QCOW2_MAGIC;
}

/* The format is the magic alone, as QEMU probes it (qcow2_probe() in block/qcow2.c): a file
 * that begins otherwise, or is shorter than the magic, is raw. */
int qcow2_header_probe(struct qcow2_io *io, bool *is_qcow2, struct qcow2_header *h)
{
	uint8_t magic[4];
	ssize_t got = qcow2_io_pread(io, magic, sizeof(magic), 0);

	*is_qcow2 = got >= 0 && qcow2_probe(magic, (size_t)got);
	if (got < 0)
		return (int)got;
	return *is_qcow2 && h ? qcow2_header_read(io, h) : 0;
}

/* Copy a length-counted name into a NUL-terminated field, refusing embedded NULs. */
static int copy_name(char *dst, size_t cap, const uint8_t *src, size_t len, const char *what)
{
	if (len >= cap)
		return qcow2_set_error(-EUCLEAN, "%s is too long (%zu bytes)", what, len);
	if (memchr(src, '\0', len))
		return qcow2_set_error(-EUCLEAN, "%s contains a NUL byte", what);
	memcpy(dst, src, len);
	dst[len] = '\0';
	return 0;
}

/* The name of unknown incompatible feature bits, from the feature name table if present. */
static void unknown_feature_name(const uint8_t *table, uint32_t n, uint64_t bits, char *out,
				 size_t cap)
{
	uint32_t i;

	for (i = 0; table && i < n; i++) {
		const uint8_t *e = table + 48 * (size_t)i;
		if (e[0] == 0 && e[1] < 64 && (bits & (1ull << e[1]))) {
			snprintf(out, cap, "%.46s", (const char *)e + 2);
			return;
		}
	}
	snprintf(out, cap, "%#" PRIx64, bits);
}

static int decode_fixed(const uint8_t *p, size_t len, struct qcow2_header *h)
{
	/* Which of these it is tells an operator what the file is: a raw disk or some other
	 * file (no magic), or a qcow2 image cut short. */
	if (len < 4 || get_be32(p + OFF_MAGIC) != QCOW2_MAGIC)
		return qcow2_set_error(-EINVAL, "not a qcow2 image (%s: raw?)",
				       !len	 ? "an empty file"
				       : len < 4 ? "shorter than a qcow2 header"
						 : "no qcow2 magic");
	if (len < V2_HEADER_LEN)
		return qcow2_set_error(-EINVAL, "qcow2 header cut short (%zu bytes)", len);
	memset(h, 0, sizeof(*h));
	h->version = get_be32(p + OFF_VERSION);
	if (h->version != 2 && h->version != 3)
		return qcow2_set_error(-EINVAL, "unsupported qcow2 version %u", h->version);
	h->backing_off = get_be64(p + OFF_BACKING_OFF);
	h->backing_len = get_be32(p + OFF_BACKING_LEN);
	h->cluster_bits = get_be32(p + OFF_CLUSTER_BITS);
	h->size = get_be64(p + OFF_SIZE);
	h->crypt_method = get_be32(p + OFF_CRYPT);
	h->l1_entries = get_be32(p + OFF_L1_ENTRIES);
	h->l1_off = get_be64(p + OFF_L1_OFF);
	h->reftable_off = get_be64(p + OFF_REFT_OFF);
	h->reftable_clusters = get_be32(p + OFF_REFT_CLUSTERS);
	h->nb_snapshots = get_be32(p + OFF_NB_SNAPSHOTS);
	h->snapshots_off = get_be64(p + OFF_SNAPSHOTS_OFF);
	h->refcount_order = 4;
	h->header_len = V2_HEADER_LEN;
	if (h->version == 3) {
		if (len < V3_HEADER_LEN)
			return qcow2_set_error(-EINVAL, "file too short for a qcow2 v3 header");
		h->incompat = get_be64(p + OFF_INCOMPAT);
		h->compat = get_be64(p + OFF_COMPAT);
		h->autoclear = get_be64(p + OFF_AUTOCLEAR);
		h->refcount_order = get_be32(p + OFF_REFCOUNT_ORDER);
		h->header_len = get_be32(p + OFF_HEADER_LEN);
		/* qcow2.txt asks for a multiple of 8, but QEMU opens any length from 104 to the
		 * cluster size and reads the extensions from there: so do we */
		if (h->header_len < V3_HEADER_LEN)
			return qcow2_set_error(-EUCLEAN, "invalid header length %u", h->header_len);
		if (h->header_len > V3_HEADER_LEN) {
			if (len <= OFF_COMPRESSION)
				return qcow2_set_error(-EUCLEAN, "header runs past end of file");
			h->compression_type = p[OFF_COMPRESSION];
		}
	}
	return 0;
}

static int check_fields(struct qcow2_header *h)
{
	uint64_t cs, l2_entries, per_l1, need_l1, bytes;

	if (h->cluster_bits < QCOW2_MIN_CLUSTER_BITS || h->cluster_bits > QCOW2_MAX_CLUSTER_BITS)
		return qcow2_set_error(-EINVAL, "unsupported cluster size 2^%u", h->cluster_bits);
	cs = 1ull << h->cluster_bits;
	if (h->header_len > cs)
		return qcow2_set_error(-EUCLEAN, "header length %u exceeds the cluster size",
				       h->header_len);
	if (h->refcount_order > 6)
		return qcow2_set_error(-EINVAL, "invalid refcount order %u", h->refcount_order);
	/* Encrypted images (1 legacy AES, 2 LUKS) decode: their metadata is plain; reading or
	 * writing their data needs a key, which the layers that touch data ask for. */
	if (h->crypt_method > QCOW2_CRYPT_LUKS)
		return qcow2_set_error(-EINVAL, "invalid encryption method %u", h->crypt_method);
	if ((h->incompat & QCOW2_INCOMPAT_COMPRESSION)
		? h->compression_type == QCOW2_COMPRESSION_ZLIB
		: h->compression_type != QCOW2_COMPRESSION_ZLIB)
		return qcow2_set_error(-EUCLEAN, "compression type %u disagrees with feature bits",
				       h->compression_type);
	if (h->compression_type > QCOW2_COMPRESSION_ZSTD)
		return qcow2_set_error(-ENOTSUP, "unknown compression type %u",
				       h->compression_type);
	if ((h->incompat & QCOW2_INCOMPAT_EXTL2) && h->cluster_bits < 14)
		return qcow2_set_error(-EUCLEAN,
				       "extended L2 entries need clusters of 16 KiB or more");
	if (h->size > QCOW2_MAX_VIRTUAL_SIZE)
		return qcow2_set_error(-EUCLEAN, "virtual size %" PRIu64 " is too large", h->size);
	if ((uint64_t)h->l1_entries * 8 > QCOW2_MAX_L1_BYTES)
		return qcow2_set_error(-EUCLEAN, "L1 table of %u entries is too large",
				       h->l1_entries);
	l2_entries = cs / ((h->incompat & QCOW2_INCOMPAT_EXTL2) ? 16 : 8);
	per_l1 = l2_entries << h->cluster_bits; /* <= 2^(21+18): no overflow */
	need_l1 = h->size / per_l1 + (h->size % per_l1 != 0);
	if (h->l1_entries < need_l1)
		return qcow2_set_error(-EUCLEAN,
				       "L1 table of %u entries is too small for %" PRIu64 " bytes",
				       h->l1_entries, h->size);
	if (h->l1_entries && (h->l1_off & (cs - 1) || h->l1_off == 0))
		return qcow2_set_error(-EUCLEAN, "invalid L1 table offset %#" PRIx64, h->l1_off);
	if (h->reftable_off & (cs - 1) || h->reftable_off == 0)
		return qcow2_set_error(-EUCLEAN, "invalid refcount table offset %#" PRIx64,
				       h->reftable_off);
	bytes = (uint64_t)h->reftable_clusters << h->cluster_bits;
	if (h->reftable_clusters == 0 || bytes > QCOW2_MAX_REFTABLE_BYTES)
		return qcow2_set_error(-EUCLEAN, "refcount table of %u clusters is invalid",
				       h->reftable_clusters);
	if (h->nb_snapshots > QCOW2_MAX_SNAPSHOTS)
		return qcow2_set_error(-EUCLEAN, "too many snapshots (%u)", h->nb_snapshots);
	if (h->nb_snapshots && (h->snapshots_off & (cs - 1) || h->snapshots_off == 0))
		return qcow2_set_error(-EUCLEAN, "invalid snapshot table offset %#" PRIx64,
				       h->snapshots_off);
	return 0;
}

static int decode_bitmaps_ext(struct qcow2_header *h, const uint8_t *d, uint32_t len)
{
	if (len != 24)
		return qcow2_set_error(-EUCLEAN, "bitmaps extension has length %u", len);
	h->has_bitmaps_ext = true;
	h->nb_bitmaps = get_be32(d);
	h->bitmap_dir_bytes = get_be64(d + 8);
	h->bitmap_dir_off = get_be64(d + 16);
	if (!(h->autoclear & QCOW2_AUTOCLEAR_BITMAPS))
		return 0; /* stale: ignored, as QEMU does */
	if (h->nb_bitmaps == 0 || h->nb_bitmaps > MAX_BITMAPS || get_be32(d + 4) != 0 ||
	    h->bitmap_dir_bytes > MAX_BITMAP_DIR_BYTES ||
	    h->bitmap_dir_off & ((1ull << h->cluster_bits) - 1))
		return qcow2_set_error(-EUCLEAN, "invalid bitmaps extension");
	return 0;
}

static int decode_ext(struct qcow2_header *h, uint32_t type, const uint8_t *d, uint32_t len,
		      const uint8_t **features)
{
	switch (type) {
	case EXT_BACKING_FMT:
		return copy_name(h->backing_fmt, sizeof(h->backing_fmt), d, len, "backing format");
	case EXT_FEATURE_TABLE:
		/* Informational only (names of feature bits for messages), and QEMU does not
		 * check its length: whole entries are used, a partial one at the end ignored. */
		h->nb_feature_names = len / 48;
		*features = d;
		return 0;
	case EXT_BITMAPS:
		return decode_bitmaps_ext(h, d, len);
	case EXT_CRYPTO:
		if (len != 16)
			return qcow2_set_error(-EUCLEAN, "crypto header extension has length %u",
					       len);
		h->has_crypto_ext = true;
		h->crypto_off = get_be64(d);
		h->crypto_bytes = get_be64(d + 8);
		return 0;
	case EXT_DATA_FILE:
		return copy_name(h->data_file, sizeof(h->data_file), d, len, "data file name");
	default:
		h->nb_unknown_exts++;
		return 0;
	}
}

/* Walk the header extensions between the header and @end. */
static int decode_exts(struct qcow2_header *h, const uint8_t *p, size_t end,
		       const uint8_t **features)
{
	size_t off = h->header_len;

	while (off + 8 <= end) {
		uint32_t type = get_be32(p + off), len = get_be32(p + off + 4);
		size_t padded = ((size_t)len + 7) & ~(size_t)7;
		int r;

		if (type == EXT_END)
			return 0;
		if (len > end - off - 8)
			return qcow2_set_error(-EUCLEAN, "header extension %#x runs past its area",
					       type);
		r = decode_ext(h, type, p + off + 8, len, features);
		if (r < 0)
			return r;
		if (padded > end - off - 8)
			return 0;
		off += 8 + padded;
	}
	return 0;
}

int qcow2_header_decode(const void *buf, size_t len, struct qcow2_header *h)
{
	const uint8_t *p = buf, *features = NULL;
	uint64_t cs, ext_end;
	char fname[64];
	int r;

	r = decode_fixed(p, len, h);
	if (r < 0)
		return r;
	r = check_fields(h);
	if (r < 0)
		return r;
	cs = 1ull << h->cluster_bits;
	if (h->backing_off) {
		if (h->backing_len > QCOW2_MAX_BACKING_NAME || h->backing_off > cs ||
		    h->backing_len > cs - h->backing_off)
			return qcow2_set_error(-EUCLEAN, "invalid backing file name location");
		if (h->backing_off < h->header_len)
			return qcow2_set_error(-EUCLEAN, "backing file name overlaps the header");
		if (h->backing_off + h->backing_len > len)
			return qcow2_set_error(-EUCLEAN, "backing file name runs past end of file");
		r = copy_name(h->backing_file, sizeof(h->backing_file), p + h->backing_off,
			      h->backing_len, "backing file name");
		if (r < 0)
			return r;
	}
	ext_end = h->backing_off ? h->backing_off : cs;
	if (ext_end > len)
		ext_end = len;
	r = decode_exts(h, p, (size_t)ext_end, &features);
	if (r < 0)
		return r;
	if (h->incompat & ~QCOW2_INCOMPAT_KNOWN) {
		unknown_feature_name(features, h->nb_feature_names,
				     h->incompat & ~QCOW2_INCOMPAT_KNOWN, fname, sizeof(fname));
		return qcow2_set_error(-ENOTSUP, "unsupported incompatible feature: %s", fname);
	}
	if (h->has_crypto_ext && h->crypt_method != QCOW2_CRYPT_LUKS)
		return qcow2_set_error(-EUCLEAN,
				       "crypto header extension in an image without LUKS");
	if (h->crypt_method == QCOW2_CRYPT_LUKS && !h->has_crypto_ext)
		return qcow2_set_error(-EUCLEAN,
				       "encrypted image (luks) without a crypto header extension");
	if ((h->incompat & QCOW2_INCOMPAT_DATA_FILE) && !h->data_file[0])
		return qcow2_set_error(-EUCLEAN, "external data file bit set but no file named");
	if (!(h->incompat & QCOW2_INCOMPAT_DATA_FILE) && h->data_file[0])
		return qcow2_set_error(-EUCLEAN, "data file named but its feature bit is clear");
	return 0;
}

/* Does [a, a+alen) overlap [b, b+blen)? */
static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return alen && blen && a < b + blen && b < a + alen;
}

int qcow2_header_check_layout(const struct qcow2_header *h, uint64_t file_bytes)
{
	uint64_t cs = 1ull << h->cluster_bits;
	uint64_t l1_bytes = (uint64_t)h->l1_entries * 8; /* bounded by check_fields */
	uint64_t rt_bytes = (uint64_t)h->reftable_clusters << h->cluster_bits;
	uint64_t end;

	if (__builtin_add_overflow(h->l1_off, l1_bytes, &end) || (l1_bytes && end > file_bytes))
		return qcow2_set_error(-EUCLEAN, "L1 table at %#" PRIx64 " runs past end of file",
				       h->l1_off);
	if (__builtin_add_overflow(h->reftable_off, rt_bytes, &end) || end > file_bytes)
		return qcow2_set_error(-EUCLEAN,
				       "refcount table at %#" PRIx64 " runs past end of file",
				       h->reftable_off);
	if (h->nb_snapshots && h->snapshots_off >= file_bytes)
		return qcow2_set_error(-EUCLEAN,
				       "snapshot table at %#" PRIx64 " lies past end of file",
				       h->snapshots_off);
	if ((h->autoclear & QCOW2_AUTOCLEAR_BITMAPS) && h->has_bitmaps_ext &&
	    (__builtin_add_overflow(h->bitmap_dir_off, h->bitmap_dir_bytes, &end) ||
	     end > file_bytes))
		return qcow2_set_error(-EUCLEAN, "bitmap directory runs past end of file");
	if (overlaps(0, cs, h->l1_off, l1_bytes) || overlaps(0, cs, h->reftable_off, rt_bytes) ||
	    overlaps(h->l1_off, l1_bytes, h->reftable_off, rt_bytes))
		return qcow2_set_error(-EUCLEAN, "L1 table, refcount table and header overlap");
	return 0;
}

/* Does the first @n bytes of a header (@p) hold everything qcow2_header_decode() reads, so that
 * decoding them gives what decoding the whole first cluster gives? The fixed header, the
 * backing file name, and every extension up to the end marker lie inside, each one whole. When
 * in doubt, no: the caller reads the whole cluster. */
static bool header_inside(const uint8_t *p, size_t n)
{
	uint32_t version, header_len, len;
	uint64_t backing_off, ext_end, off;

	if (n < V3_HEADER_LEN || get_be32(p + OFF_MAGIC) != QCOW2_MAGIC)
		return false;
	version = get_be32(p + OFF_VERSION);
	header_len = version == 3 ? get_be32(p + OFF_HEADER_LEN) : V2_HEADER_LEN;
	if ((version != 2 && version != 3) || header_len < V2_HEADER_LEN || header_len >= n)
		return false;
	backing_off = get_be64(p + OFF_BACKING_OFF);
	len = get_be32(p + OFF_BACKING_LEN);
	if (backing_off && (backing_off >= n || len > n - backing_off))
		return false;
	ext_end = backing_off ? backing_off : n;
	for (off = header_len; off + 8 <= ext_end && off + 8 <= n;
	     off += 8 + (((uint64_t)len + 7) & ~7ull)) {
		len = get_be32(p + off + 4);
		if (get_be32(p + off) == EXT_END)
			return true;
		if ((((uint64_t)len + 7) & ~7ull) > n - off - 8)
			return false;
	}
	return false;
}

int qcow2_header_read(struct qcow2_io *io, struct qcow2_header *h)
{
	uint64_t file_bytes, cs;
	size_t n = 4096;
	uint8_t *buf;
	int r;

	r = qcow2_io_size(io, &file_bytes);
	if (r < 0)
		return r;
	/* First the first 4 KiB, where QEMU puts the header and its extensions: a directory of
	 * 10,000 images reads 40 MiB, not 640 MiB (and no read-ahead past it). Only when they
	 * reach further is the cluster read (below), so the result is the same. */
	if (n < file_bytes && (buf = malloc(n))) {
		r = qcow2_io_pread_full(io, buf, n, 0);
		if (r == 0 && header_inside(buf, n)) {
			r = qcow2_header_decode(buf, n, h);
			if (r == 0)
				r = qcow2_header_check_layout(h, file_bytes);
			if (r < 0)
				qcow2_error_prefix(r, qcow2_io_name(io));
		}
		if (r < 0 || header_inside(buf, n)) { /* a failed read fails as below */
			free(buf);
			return r;
		}
		free(buf);
	}
	n = 65536;
	for (;;) {
		if (n > file_bytes)
			n = (size_t)file_bytes;
		buf = malloc(n ? n : 1);
		if (!buf)
			return qcow2_error_prefix(qcow2_oom(), qcow2_io_name(io));
		r = qcow2_io_pread_full(io, buf, n, 0);
		if (r < 0)
			break;
		/* The header and its extensions fill at most the first cluster. */
		if (n >= 24 && qcow2_probe(buf, n) && get_be32(buf + OFF_CLUSTER_BITS) <= 21 &&
		    (cs = 1ull << get_be32(buf + OFF_CLUSTER_BITS)) > n && n < file_bytes) {
			free(buf);
			n = (size_t)cs;
			continue;
		}
		r = qcow2_header_decode(buf, n, h);
		if (r == 0)
			r = qcow2_header_check_layout(h, file_bytes);
		if (r < 0)
			qcow2_error_prefix(r, qcow2_io_name(io));
		break;
	}
	free(buf);
	return r;
}

int qcow2_header_read_backing_name(struct qcow2_io *io, char *name, size_t cap)
{
	uint8_t fixed[V2_HEADER_LEN];
	uint64_t off;
	uint32_t len, version;
	int r;

	r = qcow2_io_pread_full(io, fixed, sizeof(fixed), 0);
	if (r < 0)
		return r;
	version = get_be32(fixed + OFF_VERSION);
	if (!qcow2_probe(fixed, sizeof(fixed)) || (version != 2 && version != 3))
		return qcow2_set_error(-EINVAL, "'%s': not a qcow2 image", qcow2_io_name(io));
	off = get_be64(fixed + OFF_BACKING_OFF);
	len = get_be32(fixed + OFF_BACKING_LEN);
	if (!off || !len)
		return 0;
	/* where a valid header could put it: after the fixed part, inside the first cluster */
	if (len > QCOW2_MAX_BACKING_NAME || len >= cap || off < V2_HEADER_LEN ||
	    off + len > (1ull << QCOW2_MAX_CLUSTER_BITS))
		return qcow2_set_error(-EUCLEAN, "'%s': invalid backing file name location",
				       qcow2_io_name(io));
	r = qcow2_io_pread_full(io, name, len, off);
	if (r < 0)
		return r;
	name[len] = '\0';
	if (strlen(name) != len)
		return qcow2_set_error(-EUCLEAN, "'%s': backing file name contains a NUL byte",
				       qcow2_io_name(io));
	return 1;
}

/* ---- encoding a new header (create.c) ---- */

/* QEMU's feature name table (block/qcow2.c), in its order: type, bit, name. */
static const struct {
	uint8_t type, bit;
	const char *name;
} feature_names[] = {
    {0, 0, "dirty bit"},	{0, 1, "corrupt bit"},	       {0, 2, "external data file"},
    {0, 3, "compression type"}, {0, 4, "extended L2 entries"}, {1, 0, "lazy refcounts"},
    {2, 0, "bitmaps"},		{2, 1, "raw external data"},
};
#define FEATURE_TABLE_BYTES (48u * sizeof(feature_names) / sizeof(feature_names[0]))

/* Append one header extension at *@off (its data padded to 8 bytes). */
static void put_ext(uint8_t *p, size_t *off, uint32_t type, const void *data, uint32_t len)
{
	put_be32(p + *off, type);
	put_be32(p + *off + 4, len);
	if (len)
		memcpy(p + *off + 8, data, len);
	*off += 8 + (((size_t)len + 7) & ~(size_t)7);
}

static void put_feature_table(uint8_t *p, size_t *off)
{
	size_t i;

	put_be32(p + *off, EXT_FEATURE_TABLE);
	put_be32(p + *off + 4, FEATURE_TABLE_BYTES);
	*off += 8;
	for (i = 0; i < sizeof(feature_names) / sizeof(feature_names[0]); i++, *off += 48) {
		p[*off] = feature_names[i].type;
		p[*off + 1] = feature_names[i].bit;
		strncpy((char *)p + *off + 2, feature_names[i].name, 46);
	}
}

size_t qcow2_header_put_mutable(const struct qcow2_header *h, uint64_t incompat, uint8_t *p)
{
	put_be64(p + OFF_SIZE, h->size);
	put_be32(p + OFF_CRYPT, h->crypt_method);
	put_be32(p + OFF_L1_ENTRIES, h->l1_entries);
	put_be64(p + OFF_L1_OFF, h->l1_off);
	put_be64(p + OFF_REFT_OFF, h->reftable_off);
	put_be32(p + OFF_REFT_CLUSTERS, h->reftable_clusters);
	put_be32(p + OFF_NB_SNAPSHOTS, h->nb_snapshots);
	put_be64(p + OFF_SNAPSHOTS_OFF, h->snapshots_off);
	if (h->version < 3)
		return V2_HEADER_LEN;
	put_be64(p + OFF_INCOMPAT, incompat);
	put_be64(p + OFF_COMPAT, h->compat);
	put_be64(p + OFF_AUTOCLEAR, h->autoclear);
	return OFF_REFCOUNT_ORDER;
}

static void put_fixed(const struct qcow2_header *h, uint8_t *p)
{
	put_be32(p + OFF_MAGIC, QCOW2_MAGIC);
	put_be32(p + OFF_VERSION, h->version);
	put_be32(p + OFF_CLUSTER_BITS, h->cluster_bits);
	if (qcow2_header_put_mutable(h, h->incompat, p) < OFF_REFCOUNT_ORDER)
		return;
	put_be32(p + OFF_REFCOUNT_ORDER, h->refcount_order);
	put_be32(p + OFF_HEADER_LEN, V3_HEADER_LEN + 8);
	p[OFF_COMPRESSION] = h->compression_type;
}

int qcow2_header_encode(const struct qcow2_header *h, void *buf, size_t cap)
{
	size_t fmt_len = strlen(h->backing_fmt), df_len = strlen(h->data_file);
	size_t name_len = strlen(h->backing_file), cs, off, need;
	uint8_t *p = buf;

	if (h->version != 2 && h->version != 3)
		return qcow2_set_error(-EINVAL, "unsupported qcow2 version %u", h->version);
	if (h->cluster_bits < QCOW2_MIN_CLUSTER_BITS || h->cluster_bits > QCOW2_MAX_CLUSTER_BITS)
		return qcow2_set_error(-EINVAL, "unsupported cluster size 2^%u", h->cluster_bits);
	if (h->has_bitmaps_ext || (h->version < 3 && df_len))
		return qcow2_set_error(-ENOTSUP, "cannot encode this header extension");
	if (name_len > QCOW2_MAX_BACKING_NAME)
		return qcow2_set_error(-EINVAL, "backing file name is too long (%zu bytes)",
				       name_len);
	cs = (size_t)1 << h->cluster_bits;
	off = h->version < 3 ? V2_HEADER_LEN : V3_HEADER_LEN + 8;
	need = off + (fmt_len ? 8 + ((fmt_len + 7) & ~(size_t)7) : 0) +
	       (df_len ? 8 + ((df_len + 7) & ~(size_t)7) : 0) + (h->has_crypto_ext ? 8 + 16 : 0) +
	       8 + name_len;
	if (need > cs || need > cap)
		return qcow2_set_error(-ENOSPC,
				       "the header and backing file name do not fit in "
				       "one cluster (%zu bytes)",
				       cs);
	memset(p, 0, need);
	put_fixed(h, p);
	if (fmt_len)
		put_ext(p, &off, EXT_BACKING_FMT, h->backing_fmt, (uint32_t)fmt_len);
	if (df_len)
		put_ext(p, &off, EXT_DATA_FILE, h->data_file, (uint32_t)df_len);
	if (h->has_crypto_ext) { /* after the data file's, as QEMU orders them */
		uint8_t crypto[16];

		put_be64(crypto, h->crypto_off);
		put_be64(crypto + 8, h->crypto_bytes);
		put_ext(p, &off, EXT_CRYPTO, crypto, sizeof(crypto));
	}
	/* The feature name table as QEMU writes it: with clusters over 4 KiB only (where it
	 * always leaves room for the longest backing file name). */
	if (h->version >= 3 && cs > 4096 && need + 8 + FEATURE_TABLE_BYTES <= cap) {
		memset(p + need, 0, 8 + FEATURE_TABLE_BYTES);
		put_feature_table(p, &off);
	}
	put_ext(p, &off, EXT_END, NULL, 0);
	if (name_len) {
		put_be64(p + OFF_BACKING_OFF, off);
		put_be32(p + OFF_BACKING_LEN, (uint32_t)name_len);
		memcpy(p + off, h->backing_file, name_len);
	}
	return (int)(off + name_len);
}
