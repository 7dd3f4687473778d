/* SPDX-License-Identifier: MIT */
/*
 * prealloc.c - preallocation: clusters allocated by a write without data (qcow2_image_write()
 * with no buffer, for fallocate(2) through the views and for new images), where the content
 * they show does not change, so nothing is copied. write.c decides which clusters qualify and
 * calls in here with w->lock held (no lock taken here; the file's length is read and set only
 * once no write pass writes with the lock dropped, qcow2_write_quiesce(), locks.c).
 *
 * Write order is the write path's: the new clusters' refcounts and L2 entries stay cached until
 * qcow2_image_flush(), and what is written here (zeros over a reused cluster, the file's new
 * length) is synced by its first stage, before any table points at the clusters.
 */
#include <errno.h>
#include <stdlib.h>

#include "engine/engine.h"

bool qcow2_prealloc_only(const struct qcow2_image *img, const uint64_t *ent, bool backing)
{
	/* (encrypted: zeros in a data cluster would decrypt to noise; the write path writes the
	 * cluster's content, encrypted, instead) */
	if ((img->h.incompat & QCOW2_INCOMPAT_DATA_FILE) || ent[0] ||
	    img->h.crypt_method != QCOW2_CRYPT_NONE)
		return false;
	return img->l2_entry_words == 2 ? ent[1] == 0 : !backing;
}

/* Back the new clusters [@host, @host + @bytes): zeros written where the file already has
 * bytes (a freed cluster reused) if they must read as zeros (@zeros); past the old end of the
 * file, the file extended over them, and their blocks reserved (fallocate, or zeros where the
 * file system cannot) unless the image asks for sparse preallocation (w->sparse_prealloc). */
static int back_new_clusters(struct qcow2_image *img, uint64_t host, uint64_t bytes, bool zeros)
{
	uint64_t eof, end = host + bytes, cs = img->cluster_bytes;
	uint8_t *zero = NULL;
	int r;

	/* No write pass writes with w->lock dropped from here on: the file's length read now
	 * stays true, and setting it never cuts off a write past the old end (write.c). */
	qcow2_write_quiesce(img);
	r = qcow2_io_size(img->io, &eof);

	eof = (eof + cs - 1) & ~(cs - 1);
	if (r == 0 && zeros && host < eof && !(zero = calloc(1, cs)))
		r = qcow2_oom();
	for (; r == 0 && zeros && host < end && host < eof; host += cs)
		r = qcow2_io_pwrite(img->io, zero, cs, host);
	free(zero);
	if (zero)
		__atomic_store_n(&img->w->data_dirty, true, __ATOMIC_RELEASE);
	if (host < eof)
		host = eof;
	if (r < 0 || host >= end)
		return r;
	r = qcow2_io_grow(img->io, end);
	if (r == 0 && !img->w->sparse_prealloc) {
		r = qcow2_io_preallocate(img->io, host, end - host, false);
		if (r == -EOPNOTSUPP)
			r = qcow2_io_preallocate(img->io, host, end - host, true);
	}
	return r;
}

int qcow2_prealloc_clusters(struct qcow2_image *img, uint64_t *ents, uint32_t i, uint32_t j)
{
	uint64_t cs = img->cluster_bytes, host, k;
	uint32_t ew = img->l2_entry_words;
	int r = qcow2_refcount_alloc(img, j - i, &host);

	if (r < 0)
		return r;
	/* extended L2: no subcluster allocated, so the clusters are never read unwritten */
	r = back_new_clusters(img, host, (j - i) * cs, ew == 1);
	if (r < 0) {
		qcow2_refcount_unalloc(img, host, j - i);
		return r;
	}
	for (k = i; k < j; k++) {
		ents[k * ew] = (host + (k - i) * cs) | QCOW2_OFLAG_COPIED;
		if (ew == 2)
			ents[k * ew + 1] = 0;
	}
	return 0;
}
