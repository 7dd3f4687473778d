/* SPDX-License-Identifier: MIT */
/*
 * version.c - changing an image's version (compat 0.10 <-> 1.1, qcowctl amend): the header
 * cluster encoded anew from the header in memory with its new version and feature bits, and
 * written whole in one write, then made durable: the file is either the old version or the
 * new one. The caller (jobs/amend.c) has made the image fit the new version first.
 *
 * Only the header extensions the encoder writes (backing format, data file, feature name
 * table) can be carried across; an image with any other (bitmaps, a crypto header, one QEMU
 * does not know) is refused rather than have it dropped.
 *
 * Locks: w->lock (qcow2_image_meta_lock()) around the rewrite, after a flush that takes its
 * own (flush.c).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "engine/engine.h"

/* Is every header extension in the first cluster @p one the encoder writes again? */
static int check_exts(const struct qcow2_image *img, const uint8_t *p, uint64_t cs)
{
	uint64_t off = img->h.version >= 3 ? img->h.header_len : V2_HEADER_LEN, end = cs;

	if (img->h.backing_off && img->h.backing_off < end)
		end = img->h.backing_off;
	while (off + 8 <= end) {
		uint32_t type = get_be32(p + off), len = get_be32(p + off + 4);

		if (type == EXT_END)
			return 0;
		if (type != EXT_BACKING_FMT && type != EXT_FEATURE_TABLE && type != EXT_DATA_FILE)
			return qcow2_set_error(-ENOTSUP,
					       "'%s' has a header extension %#" PRIx32
					       " that a version change would drop",
					       img->name, type);
		off += 8 + (((uint64_t)len + 7) & ~7ull);
	}
	return 0;
}

int qcow2_image_set_version(struct qcow2_image *img, const struct qcow2_header *nh)
{
	uint64_t cs = img->cluster_bytes;
	uint8_t *p = NULL, *out = NULL;
	int r;

	if ((r = qcow2_overlap_writable(img)) < 0)
		return r;
	r = qcow2_image_flush(img); /* the header on disk is then the one in memory */
	qcow2_image_meta_lock(img);
	p = calloc(1, cs);
	out = calloc(1, cs);
	if (r == 0 && (!p || !out))
		r = qcow2_oom();
	if (r == 0 && (r = (int)qcow2_io_pread(img->io, p, cs, 0)) >= 0)
		r = 0;
	if (r == 0)
		r = check_exts(img, p, cs);
	if (r == 0 && (r = qcow2_header_encode(nh, out, cs)) >= 0)
		r = 0;
	/* One write of the whole header cluster, then durable: the old version or the new. */
	if (r == 0)
		r = qcow2_io_pwrite_meta(img->io, out, (size_t)cs, 0, QCOW2_OL_HEADER);
	if (r == 0)
		r = qcow2_io_flush(img->io);
	if (r == 0) { /* what the header on disk now says */
		img->h.version = nh->version;
		img->h.incompat = nh->incompat;
		img->h.compat = nh->compat;
		img->h.autoclear = nh->autoclear;
		img->h.refcount_order = nh->refcount_order;
		img->h.compression_type = nh->compression_type;
		img->h.header_len = get_be32(out + OFF_HEADER_LEN);
		if (nh->version < 3)
			img->h.header_len = V2_HEADER_LEN;
		img->h.backing_off = get_be64(out + OFF_BACKING_OFF);
	}
	qcow2_image_meta_unlock(img);
	free(p);
	free(out);
	return r < 0 ? qcow2_error_prefix(r, img->name) : 0;
}
