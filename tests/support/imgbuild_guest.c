/* SPDX-License-Identifier: MIT */
/*
 * imgbuild_guest.c - the guest content of images built by imgbuild (see imgbuild.h): writes
 * with QEMU's copy-on-write of clusters and L2 tables shared with snapshots, zero clusters and
 * subclusters, compressed clusters packed at byte granularity, internal snapshots, random
 * images, and the shadow that tells the tests what every guest byte should read as.
 * Every call leaves refcounts and COPIED flags exact (see imgbuild.c).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#if IMGBUILD_HAVE_ZSTD
#include <zstd.h>
#endif

#include "imgbuild_priv.h"

/* ---- decompression (to copy a compressed cluster before writing into it) ---- */

static int decompress_cluster(const struct imgbuild *img, uint64_t e, uint8_t *out)
{
	uint64_t off, bytes;

	ib_comp_range(img, e, &off, &bytes);
	if (off + bytes > img->len)
		bytes = img->len - off;
	if (img->o.compression_type == QCOW2_COMPRESSION_ZSTD) {
#if IMGBUILD_HAVE_ZSTD
		ZSTD_DCtx *d = ZSTD_createDCtx();
		ZSTD_inBuffer ib = {img->bytes + off, (size_t)bytes, 0};
		ZSTD_outBuffer ob = {out, (size_t)img->cluster_bytes, 0};
		size_t r = 1;

		while (ob.pos < ob.size && ib.pos < ib.size && r != 0 && !ZSTD_isError(r))
			r = ZSTD_decompressStream(d, &ob, &ib);
		ZSTD_freeDCtx(d);
		return ob.pos == ob.size ? 0 : -EIO;
#else
		return -ENOTSUP;
#endif
	} else {
		z_stream s;
		int r;

		memset(&s, 0, sizeof(s));
		if (inflateInit2(&s, -12) != Z_OK)
			return -ENOMEM;
		s.next_in = img->bytes + off;
		s.avail_in = (uInt)bytes;
		s.next_out = out;
		s.avail_out = (uInt)img->cluster_bytes;
		r = inflate(&s, Z_FINISH);
		inflateEnd(&s);
		return (r == Z_STREAM_END || r == Z_BUF_ERROR || r == Z_OK) && s.avail_out == 0
			   ? 0
			   : -EIO;
	}
}

/* ---- the shadow (expected guest view) ---- */

static uint64_t unit_of(const struct imgbuild *img, uint64_t guest_off)
{
	return guest_off / img->subcluster_bytes;
}

/* Record that [@off, +@n) of the cluster at @cluster_off now holds @data (NULL: zeros, by
 * the zero flag/bits), the units touched becoming decided by this image, their other bytes
 * zero if they were not. */
static void shadow_write(struct imgbuild *img, uint64_t cluster_off, uint64_t off, uint64_t n,
			 const uint8_t *data)
{
	uint8_t state = data ? IMGBUILD_DATA : IMGBUILD_ZERO;
	uint64_t u, unit = img->subcluster_bytes, first, last;

	if (!img->shadow || n == 0)
		return;
	first = unit_of(img, cluster_off + off);
	last = unit_of(img, cluster_off + off + n - 1);
	if (!img->o.extended_l2) {
		first = unit_of(img, cluster_off);
		last = first;
	}
	for (u = first; u <= last && u * unit < img->o.size; u++) {
		uint64_t end = (u + 1) * unit < img->o.size ? (u + 1) * unit : img->o.size;

		if (!img->shadow_set[u])
			memset(img->shadow + u * unit, 0, (size_t)(end - u * unit));
		img->shadow_set[u] = state;
	}
	/* The last cluster may run past the virtual size. */
	if (cluster_off + off >= img->o.size)
		return;
	if (n > img->o.size - cluster_off - off)
		n = img->o.size - cluster_off - off;
	if (data)
		memcpy(img->shadow + cluster_off + off, data, (size_t)n);
	else
		memset(img->shadow + cluster_off + off, 0, (size_t)n);
}

void imgbuild_expect(const struct imgbuild *img, int snap, uint64_t off, size_t len,
		     const uint8_t *below, uint8_t *out)
{
	const uint8_t *sh = img->shadow, *set = img->shadow_set;
	uint64_t size = img->o.size, i;

	if (snap >= 0) {
		if ((uint32_t)snap >= img->nb_snapshots)
			ib_die("no such snapshot");
		sh = img->snaps[snap].shadow;
		set = img->snaps[snap].shadow_set;
		if (img->snaps[snap].o.disk_bytes < size)
			size = img->snaps[snap].o.disk_bytes;
	}
	if (!sh)
		ib_die("no shadow for this image (too large)");
	for (i = 0; i < len;) {
		uint64_t g = off + i, u = unit_of(img, g), n;

		if (g >= size) {
			memset(out + i, 0, len - i);
			break;
		}
		n = (u + 1) * img->subcluster_bytes;
		n = (n < size ? n : size) - g;
		if (n > len - i)
			n = len - i;
		if (set[u])
			memcpy(out + i, sh + g, (size_t)n);
		else if (below)
			memcpy(out + i, below + i, (size_t)n);
		else
			memset(out + i, 0, (size_t)n);
		i += (size_t)n;
	}
}

enum imgbuild_state imgbuild_state(const struct imgbuild *img, int snap, uint64_t guest_off)
{
	const uint8_t *set = img->shadow_set;
	uint64_t size = img->o.size;

	if (snap >= 0) {
		if ((uint32_t)snap >= img->nb_snapshots)
			ib_die("no such snapshot");
		set = img->snaps[snap].shadow_set;
		if (img->snaps[snap].o.disk_bytes < size)
			size = img->snaps[snap].o.disk_bytes;
	}
	if (!set)
		ib_die("no shadow for this image (too large)");
	if (guest_off >= size)
		return IMGBUILD_UNALLOCATED;
	return (enum imgbuild_state)set[unit_of(img, guest_off)];
}

/* ---- writes ---- */

static uint8_t *host_ptr(struct imgbuild *img, uint64_t host)
{
	if (img->data_file) {
		ib_grow(&img->data_bytes, &img->data_len, &img->data_cap,
			(size_t)(host + img->cluster_bytes));
		return img->data_bytes + host;
	}
	return img->bytes + host;
}

static bool entry_allocated(const struct imgbuild *img, uint64_t e)
{
	return (e & L2E_MASK) || (img->data_file && (e & OFLAG_COPIED));
}

/* Write @n bytes at byte @in_off of the guest cluster at @cluster_off. */
static int write_cluster(struct imgbuild *img, uint64_t cluster_off, uint64_t in_off,
			 const uint8_t *data, uint64_t n)
{
	uint64_t cs = img->cluster_bytes, sc = img->subcluster_bytes, ent, e, bm = 0, host;
	uint64_t touched = 0, s;
	bool ext = img->o.extended_l2, fresh = true;
	uint8_t *buf = ib_xcalloc(1, (size_t)cs);
	int r;

	ent = ib_writable_l2(img, cluster_off);
	e = rd64(img->bytes + ent);
	if (ext)
		bm = rd64(img->bytes + ent + 8);
	host = e & L2E_MASK;
	if (e & OFLAG_COMPRESSED) {
		r = decompress_cluster(img, e, buf);
		if (r < 0) {
			free(buf);
			return r;
		}
		ib_release_entry(img, e);
		bm = 0xffffffffull; /* the whole cluster holds data now */
	} else if (entry_allocated(img, e)) {
		memcpy(buf, host_ptr(img, host), (size_t)cs);
		if (!img->data_file && imgbuild_refcount(img, host / cs) > 1)
			ib_ref_add(img, host, -1); /* shared with a snapshot: copy on write */
		else
			fresh = false;
	}
	if (!ext && (e & OFLAG_ZERO))
		memset(buf, 0, (size_t)cs);
	if (ext) {
		for (s = 0; s < 32; s++)
			if (!(bm >> s & 1))
				memset(buf + s * sc, 0, (size_t)sc);
		for (s = in_off / sc; s <= (in_off + n - 1) / sc; s++)
			touched |= 1ull << s;
	}
	memcpy(buf + in_off, data, (size_t)n);
	if (e & OFLAG_COMPRESSED)
		shadow_write(img, cluster_off, 0, cs, buf);
	else
		shadow_write(img, cluster_off, in_off, n, data);
	if (fresh)
		host = img->data_file ? cluster_off : imgbuild_alloc_cluster(img);
	memcpy(host_ptr(img, host), buf, (size_t)cs);
	free(buf);
	wr64(img->bytes + ent, host | OFLAG_COPIED);
	if (ext)
		wr64(img->bytes + ent + 8, (bm | touched) & ~(touched << 32));
	return 0;
}

int imgbuild_write(struct imgbuild *img, uint64_t guest_off, const void *data, size_t len)
{
	const uint8_t *p = data;
	uint64_t cs = img->cluster_bytes;
	int r;

	ib_check_guest(img, guest_off, len);
	while (len) {
		uint64_t in = guest_off & (cs - 1), n = cs - in;

		if (n > len)
			n = len;
		r = write_cluster(img, guest_off - in, in, p, n);
		if (r < 0)
			return r;
		p += n;
		guest_off += n;
		len -= (size_t)n;
	}
	return 0;
}

int imgbuild_fill(struct imgbuild *img, uint64_t guest_off, int byte, size_t len)
{
	uint8_t *buf = ib_xcalloc(1, len);
	int r;

	memset(buf, byte, len);
	r = imgbuild_write(img, guest_off, buf, len);
	free(buf);
	return r;
}

int imgbuild_zero(struct imgbuild *img, uint64_t guest_off, uint64_t len)
{
	uint64_t unit = img->subcluster_bytes, end = guest_off + len, cs = img->cluster_bytes;

	ib_check_guest(img, guest_off, len);
	if (img->o.version < 3 || guest_off % unit || len % unit)
		return -EINVAL;
	while (guest_off < end) {
		uint64_t ent = ib_writable_l2(img, guest_off), e = rd64(img->bytes + ent), bm,
			 mask = 0;
		uint64_t s;

		if (!img->o.extended_l2) {
			ib_release_entry(img, e);
			wr64(img->bytes + ent, OFLAG_ZERO);
			shadow_write(img, guest_off, 0, cs, NULL);
			guest_off += cs;
			continue;
		}
		if (e & OFLAG_COMPRESSED)
			return -EINVAL;
		for (s = (guest_off % cs) / unit; s < 32 && guest_off < end;
		     s++, guest_off += unit) {
			mask |= 1ull << s;
			shadow_write(img, guest_off - guest_off % cs, guest_off % cs, unit, NULL);
		}
		bm = rd64(img->bytes + ent + 8);
		wr64(img->bytes + ent + 8, (bm & ~mask) | (mask << 32));
	}
	return 0;
}

static int compress_cluster(const struct imgbuild *img, const void *data, uint8_t *out, size_t cap,
			    size_t *out_len)
{
	if (img->o.compression_type == QCOW2_COMPRESSION_ZSTD) {
#if IMGBUILD_HAVE_ZSTD
		size_t r = ZSTD_compress(out, cap, data, (size_t)img->cluster_bytes, 3);

		if (ZSTD_isError(r))
			return -EIO;
		*out_len = r;
		return 0;
#else
		return -ENOTSUP;
#endif
	} else {
		z_stream s;
		int r;

		memset(&s, 0, sizeof(s));
		if (deflateInit2(&s, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9,
				 Z_DEFAULT_STRATEGY) != Z_OK)
			return -ENOMEM;
		s.next_in = (Bytef *)(uintptr_t)data;
		s.avail_in = (uInt)img->cluster_bytes;
		s.next_out = out;
		s.avail_out = (uInt)cap;
		r = deflate(&s, Z_FINISH);
		*out_len = cap - s.avail_out;
		deflateEnd(&s);
		return r == Z_STREAM_END ? 0 : -EIO;
	}
}

/* Sectors the compressed data of @len bytes at @off spans. */
static uint64_t comp_sectors(uint64_t off, uint64_t len)
{
	return (off + len - 1) / 512 - off / 512 + 1;
}

int imgbuild_write_compressed(struct imgbuild *img, uint64_t guest_off, const void *data,
			      uint64_t *host_off, uint64_t *comp_bytes)
{
	uint64_t cs = img->cluster_bytes, max_sectors = 1ull << (62 - ib_csize_shift(img));
	uint64_t ent, e, off;
	size_t cap = (size_t)(2 * cs + 1024), clen;
	uint8_t *out;
	int r;

	ib_check_guest(img, guest_off, cs);
	if (guest_off % cs || img->data_file)
		return -EINVAL;
	out = ib_xcalloc(1, cap);
	r = compress_cluster(img, data, out, cap, &clen);
	if (r < 0 || comp_sectors(0, clen) > max_sectors) {
		free(out);
		return r < 0 ? r : -EFBIG;
	}
	ent = ib_writable_l2(img, guest_off);
	e = rd64(img->bytes + ent);
	ib_release_entry(img, e);
	off = img->comp_cursor;
	if (off && cs - off % cs >= clen && comp_sectors(off, clen) <= max_sectors &&
	    imgbuild_refcount(img, off / cs) < ib_max_refcount(img)) {
		ib_ref_add(img, off, +1);
	} else {
		off = ib_alloc_clusters(img, ib_clusters_for(img, clen));
	}
	memcpy(img->bytes + off, out, clen);
	free(out);
	shadow_write(img, guest_off, 0, cs, data);
	img->comp_cursor = (off + clen) % cs ? off + clen : 0;
	wr64(img->bytes + ent,
	     OFLAG_COMPRESSED | (comp_sectors(off, clen) - 1) << ib_csize_shift(img) | off);
	if (img->o.extended_l2)
		wr64(img->bytes + ent + 8, 0);
	if (host_off)
		*host_off = off;
	if (comp_bytes)
		*comp_bytes = clen;
	return 0;
}

/* ---- snapshots ---- */

/* Add one reference from a new snapshot to everything the active L1 table reaches, and clear
 * COPIED in the active tables where refcounts become > 1. */
static void share_active(struct imgbuild *img)
{
	uint32_t i, j;

	/* Offsets, not pointers: ib_ref_add() may grow (and move) the buffer. */
	for (i = 0; i < img->l1_entries; i++) {
		uint64_t l1e = img->l1_off + 8ull * i, l2 = rd64(img->bytes + l1e) & L1E_MASK;

		if (!l2)
			continue;
		ib_ref_add(img, l2, +1);
		wr64(img->bytes + l1e, rd64(img->bytes + l1e) & ~OFLAG_COPIED);
		for (j = 0; j < img->l2_entries; j++) {
			uint64_t p = l2 + (uint64_t)j * img->l2_entry_bytes,
				 e = rd64(img->bytes + p);

			if (e & OFLAG_COMPRESSED) {
				ib_comp_ref(img, e, +1);
			} else if ((e & L2E_MASK) && !img->data_file) {
				ib_ref_add(img, e & L2E_MASK, +1);
				wr64(img->bytes + p, e & ~OFLAG_COPIED);
			}
		}
	}
}

static uint32_t snapshot_extra(const struct imgbuild *img, const struct imgbuild_snapshot *s)
{
	if (s->o.extra_bytes)
		return s->o.extra_bytes;
	return img->o.version >= 3 ? 16 : 0;
}

static uint64_t entry_bytes(const struct imgbuild *img, const struct imgbuild_snapshot *s)
{
	return (40 + snapshot_extra(img, s) + strlen(s->id) + strlen(s->name) + 7) & ~7ull;
}

static void encode_snapshot(const struct imgbuild *img, const struct imgbuild_snapshot *s,
			    uint8_t *p)
{
	uint32_t extra = snapshot_extra(img, s);
	size_t id_len = strlen(s->id), name_len = strlen(s->name);

	wr64(p, s->l1_off);
	wr32(p + 8, s->l1_entries);
	wr16(p + 12, (uint16_t)id_len);
	wr16(p + 14, (uint16_t)name_len);
	wr32(p + 16, s->o.date_sec);
	wr32(p + 20, s->o.date_nsec);
	wr64(p + 24, s->o.vm_clock_nsec);
	wr32(p + 32, (uint32_t)s->o.vm_state_bytes);
	wr32(p + 36, extra);
	if (extra >= 8)
		wr64(p + 40, s->o.vm_state_bytes);
	if (extra >= 16)
		wr64(p + 48, s->o.disk_bytes);
	if (extra >= 24)
		wr64(p + 56, s->o.icount);
	memcpy(p + 40 + extra, s->id, id_len);
	memcpy(p + 40 + extra + id_len, s->name, name_len);
}

/* Rewrite the whole snapshot table, in place if it fits, else in new clusters. */
static void write_snapshot_table(struct imgbuild *img)
{
	uint64_t bytes = 0, off, cap, c;
	uint32_t i;

	for (i = 0; i < img->nb_snapshots; i++)
		bytes += entry_bytes(img, &img->snaps[i]);
	if (bytes > img->snap_table_cap) {
		cap = img->snap_table_cap ? 2 * img->snap_table_cap : img->cluster_bytes;
		while (cap < bytes)
			cap *= 2;
		cap = ib_clusters_for(img, cap) * img->cluster_bytes;
		off = ib_alloc_clusters(img, cap / img->cluster_bytes);
		for (c = 0; c < img->snap_table_cap / img->cluster_bytes; c++)
			ib_set_refcount(img, img->snap_table_off / img->cluster_bytes + c, 0);
		img->snap_table_off = off;
		img->snap_table_cap = cap;
	}
	memset(img->bytes + img->snap_table_off, 0, (size_t)img->snap_table_cap);
	for (off = img->snap_table_off, i = 0; i < img->nb_snapshots; i++) {
		encode_snapshot(img, &img->snaps[i], img->bytes + off);
		off += entry_bytes(img, &img->snaps[i]);
	}
	img->snap_table_bytes = bytes;
	ib_write_header_snapshots(img);
}

/* Copy the active L1 table for a snapshot and share everything it reaches. If a refcount
 * would overflow, the image is restored and -ERANGE returned. */
static int snapshot_l1(struct imgbuild *img, uint64_t *l1_off)
{
	uint8_t *saved;
	size_t saved_len = img->len;

	*l1_off = 0;
	if (!img->l1_entries)
		return 0;
	saved = ib_xcalloc(1, img->len);
	memcpy(saved, img->bytes, img->len);
	img->in_snapshot = true;
	img->overflow = false;
	*l1_off = ib_alloc_clusters(img, ib_clusters_for(img, 8ull * img->l1_entries));
	share_active(img); /* clears COPIED in the active table before it is copied */
	img->in_snapshot = false;
	if (img->overflow) {
		memcpy(img->bytes, saved, saved_len);
		img->len = saved_len;
		free(saved);
		return -ERANGE;
	}
	free(saved);
	memcpy(img->bytes + *l1_off, img->bytes + img->l1_off, 8ull * img->l1_entries);
	return 0;
}

int imgbuild_snapshot_add(struct imgbuild *img, const struct imgbuild_snapshot_opts *o)
{
	struct imgbuild_snapshot_opts so;
	struct imgbuild_snapshot *s;
	uint64_t l1_off, units;
	char id[32];

	if (img->data_file)
		return -ENOTSUP; /* QEMU refuses internal snapshots with a data file */
	if (snapshot_l1(img, &l1_off) < 0)
		return -ERANGE;
	if (o)
		so = *o;
	else
		memset(&so, 0, sizeof(so));
	if (!so.disk_bytes)
		so.disk_bytes = img->o.size;
	s = realloc(img->snaps, (img->nb_snapshots + 1) * sizeof(*s));
	if (!s)
		ib_die("out of memory");
	img->snaps = s;
	s = &img->snaps[img->nb_snapshots];
	memset(s, 0, sizeof(*s));
	snprintf(id, sizeof(id), "%u", img->nb_snapshots + 1);
	s->id = ib_xstrdup(so.id ? so.id : id);
	s->name = ib_xcalloc(1, strlen(s->id) + 5 + (so.name ? strlen(so.name) : 0));
	sprintf(s->name, so.name ? "%s" : "snap%s", so.name ? so.name : s->id);
	so.id = s->id;
	so.name = s->name;
	s->o = so;
	s->l1_off = l1_off;
	s->l1_entries = img->l1_entries;
	if (img->shadow) {
		units = (img->o.size + img->subcluster_bytes - 1) / img->subcluster_bytes;
		s->shadow = ib_xcalloc(1, (size_t)img->o.size);
		s->shadow_set = ib_xcalloc(1, (size_t)units);
		memcpy(s->shadow, img->shadow, (size_t)img->o.size);
		memcpy(s->shadow_set, img->shadow_set, (size_t)units);
	}
	img->nb_snapshots++;
	write_snapshot_table(img);
	return 0;
}

/* ---- random images ---- */

void imgbuild_scramble(struct imgbuild *img, uint64_t seed, unsigned nops, unsigned max_snapshots)
{
	uint64_t st = seed * 0x9e3779b97f4a7c15ull + 1, cs = img->cluster_bytes, size = img->o.size;
	uint64_t unit = img->subcluster_bytes;
	uint8_t *buf = ib_xcalloc(1, (size_t)(3 * cs));
	unsigned i;

	for (i = 0; i < nops && size; i++) {
		uint64_t op = imgbuild_rand(&st) % 100, off = imgbuild_rand(&st) % size, len, k;
		int r = 0;

		if (op < 50) {
			len = 1 + imgbuild_rand(&st) % (3 * cs);
			if (len > size - off)
				len = size - off;
			if (imgbuild_rand(&st) % 2) {
				imgbuild_pattern(buf, (size_t)len, off, (uint8_t)i);
			} else {
				for (k = 0; k < len; k++)
					buf[k] = imgbuild_rand(&st) % 5
						     ? (uint8_t)imgbuild_rand(&st)
						     : 0;
			}
			r = imgbuild_write(img, off, buf, (size_t)len);
		} else if (op < 65 && img->o.version >= 3) {
			off -= off % unit;
			len = unit * (1 + imgbuild_rand(&st) % 40);
			if (len > size - off)
				len = (size - off) / unit * unit;
			r = len ? imgbuild_zero(img, off, len) : 0;
			if (r == -EINVAL)
				r = 0; /* a compressed cluster with extended L2 */
		} else if (op < 85 && !img->data_file) {
			off -= off % cs;
			if (cs > size - off)
				continue;
			imgbuild_pattern(buf, (size_t)cs, off, (uint8_t)(i + 100));
			if (imgbuild_rand(&st) % 3 == 0)
				memset(buf + cs / 2, 0xab, (size_t)(cs / 2));
			r = imgbuild_write_compressed(img, off, buf, NULL, NULL);
			if (r == -ENOTSUP)
				r = 0; /* zstd not available to the builder */
		} else if (op < 92 && img->nb_snapshots < max_snapshots && !img->data_file) {
			r = imgbuild_snapshot_add(img, NULL);
			if (r == -ERANGE)
				r = 0;
		}
		if (r < 0)
			ib_die("scramble: a builder call failed");
	}
	free(buf);
}
