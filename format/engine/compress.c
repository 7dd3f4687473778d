/* SPDX-License-Identifier: MIT */
/*
 * compress.c - writing compressed clusters (copy --compress).
 *
 * A compressed cluster is stored at any byte offset; consecutive ones are packed into the
 * same host cluster (w->comp_cluster, w->comp_used) and may run on into the next host
 * cluster when the allocator hands out the one right after it. Every host cluster a
 * compressed cluster touches has its refcount raised by one for it, as qemu-img check counts.
 * Write order: the compressed bytes and the refcounts reach the disk in the first flush
 * stage, the L2 entry in a later one (flush.c), so no entry points at bytes not yet there.
 * The packing cluster is forgotten at every flush: after a flush, frees are applied and the
 * cluster could be reused, so nothing more may be appended to it.
 *
 * Locks: w->lock (qcow2_image_meta_lock()) around the placement and the entry; the caller
 * holds w->frees shared (qcow2_image_read_begin(), the chain's call).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "engine/engine.h"

/* Raise by one the refcount of host cluster @idx. */
static int ref_inc(struct qcow2_image *img, uint64_t idx)
{
	uint64_t v;
	int r = qcow2_refcount_get_w(img, idx, &v);

	return r < 0 ? r : qcow2_refcount_set_w(img, idx, v + 1);
}

/* Find @len bytes for compressed data: after what is packed into w->comp_cluster if they fit
 * (or run on into a freshly allocated next cluster), else at the start of new clusters. */
static int place(struct qcow2_image *img, uint64_t len, uint64_t *host)
{
	struct qcow2_wstate *w = img->w;
	uint64_t cs = img->cluster_bytes, fresh;
	int r;

	if (w->comp_cluster && w->comp_used < cs && w->comp_used + len <= cs) {
		*host = w->comp_cluster + w->comp_used;
		w->comp_used += len;
		return ref_inc(img, w->comp_cluster >> img->h.cluster_bits);
	}
	r = qcow2_refcount_alloc(img, 1, &fresh);
	if (r < 0)
		return r;
	if (w->comp_cluster && w->comp_used < cs && fresh == w->comp_cluster + cs) {
		/* runs on from the tail of the packing cluster into the new one */
		*host = w->comp_cluster + w->comp_used;
		r = ref_inc(img, w->comp_cluster >> img->h.cluster_bits);
		w->comp_used = w->comp_used + len - cs;
	} else {
		*host = fresh;
		w->comp_used = len;
	}
	w->comp_cluster = fresh;
	return r;
}

/* The compressed-cluster descriptor for @len bytes at @host (qcow2.txt, "Compressed Clusters
 * Descriptor"): the offset, then the count of 512-byte sectors after the first. */
static uint64_t descriptor(const struct qcow2_image *img, uint64_t host, uint64_t len)
{
	uint32_t x = 62 - (img->h.cluster_bits - 8);
	uint64_t sectors = ((host + len - 1) >> 9) - (host >> 9);

	return QCOW2_OFLAG_COMPRESSED | (sectors << x) | host;
}

static int store(struct qcow2_image *img, const uint8_t *c, size_t len, uint64_t guest_off)
{
	uint64_t host, ent[2] = {0, 0};
	int r;

	qcow2_image_meta_lock(img);
	r = qcow2_image_begin_write(img);
	if (r == 0) {
		qcow2_bitmaps_mark(img, guest_off, img->cluster_bytes);
		r = place(img, len, &host);
	}
	if (r == 0)
		r = qcow2_io_pwrite(img->io, c, len, host);
	if (r == 0) {
		__atomic_store_n(&img->w->data_dirty, true, __ATOMIC_RELEASE);
		ent[0] = descriptor(img, host, len);
		r = qcow2_write_set_entry(img, guest_off >> img->h.cluster_bits, ent);
	}
	qcow2_image_meta_unlock(img);
	return r;
}

ssize_t qcow2_image_compress(const struct qcow2_image *img, const void *buf, void *out)
{
	/* Worth it only if it saves at least a sector; the descriptor's sector count also
	 * bounds the stored length. */
	return qcow2_codec_compress(img->h.compression_type, buf, img->cluster_bytes, out,
				    img->cluster_bytes - 512);
}

int qcow2_image_write_compressed(struct qcow2_image *img, const void *buf, uint64_t guest_off)
{
	uint8_t *c = malloc(img->cluster_bytes);
	ssize_t len;
	int r;

	if (!c)
		return qcow2_oom();
	len = qcow2_image_compress(img, buf, c);
	r = len < 0 ? qcow2_error_prefix((int)len, img->name)
		    : qcow2_image_write_precompressed(img, buf, c, (size_t)len, guest_off);
	free(c);
	return r;
}

int qcow2_image_write_precompressed(struct qcow2_image *img, const void *buf, const void *comp,
				    size_t len, uint64_t guest_off)
{
	uint64_t cs = img->cluster_bytes, n;
	int r;

	if ((r = qcow2_overlap_writable(img)) < 0)
		return r;
	if (img->h.incompat & QCOW2_INCOMPAT_DATA_FILE)
		return qcow2_set_error(-ENOTSUP, "'%s': no compressed clusters with a data file",
				       img->name);
	if (img->h.crypt_method != QCOW2_CRYPT_NONE) /* as QEMU: never both */
		return qcow2_set_error(-ENOTSUP,
				       "'%s': compression and encryption are not supported "
				       "together",
				       img->name);
	if ((guest_off & (cs - 1)) || guest_off >= img->h.size)
		return qcow2_set_error(
		    -EINVAL, "'%s': compressed write at %#" PRIx64 " is not a cluster of the disk",
		    img->name, guest_off);
	if (len > cs - 512)
		return qcow2_set_error(-EINVAL, "'%s': compressed cluster of %zu bytes", img->name,
				       len);
	n = img->h.size - guest_off < cs ? img->h.size - guest_off : cs;
	if (len > 0)
		r = store(img, comp, len, guest_off);
	else
		r = qcow2_image_write(img, buf, (size_t)n, guest_off, NULL);
	return r < 0 ? qcow2_error_prefix(r, img->name) : 0;
}
