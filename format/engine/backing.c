/* SPDX-License-Identifier: MIT */
/*
 * backing.c - changing the backing file pointer of a writable image (commit, rebase): the
 * header cluster rewritten whole, in one write, then made durable.
 *
 * Locks: w->lock (qcow2_image_meta_lock()) around the header rewrite, after a flush that takes
 * its own (flush.c).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/engine.h"

/* Copy the header extensions of the first cluster @p (@cs bytes) to @out, leaving out the
 * backing format and adding @fmt's if not empty, and the end marker; returns the new end or
 * -EUCLEAN. */
static ssize_t rebuild_exts(const struct qcow2_header *h, const uint8_t *p, uint64_t cs,
			    const char *fmt, uint8_t *out)
{
	uint64_t off = h->version >= 3 ? h->header_len : V2_HEADER_LEN, o = off, end = cs;
	size_t flen = strlen(fmt);

	if (h->backing_off && h->backing_off < end)
		end = h->backing_off;
	memcpy(out, p, (size_t)off);
	if (flen) {
		put_be32(out + o, EXT_BACKING_FMT);
		put_be32(out + o + 4, (uint32_t)flen);
		memset(out + o + 8, 0, (flen + 7) & ~7ull);
		memcpy(out + o + 8, fmt, flen);
		o += 8 + ((flen + 7) & ~7ull);
	}
	while (off + 8 <= end) {
		uint32_t type = get_be32(p + off), len = get_be32(p + off + 4);
		uint64_t step = 8 + (((uint64_t)len + 7) & ~7ull);

		if (type == EXT_END)
			break;
		if (off + step > end || o + step + 8 > cs)
			return qcow2_set_error(-EUCLEAN,
					       "header extensions run past the first cluster");
		if (type != EXT_BACKING_FMT) {
			memcpy(out + o, p + off, (size_t)step);
			o += step;
		}
		off += step;
	}
	put_be64(out + o, 0); /* end of the extensions */
	return (ssize_t)(o + 8);
}

int qcow2_image_set_backing(struct qcow2_image *img, const char *name, const char *fmt)
{
	uint64_t cs = img->cluster_bytes, nlen = name ? strlen(name) : 0;
	uint8_t *p = NULL, *out = NULL;
	ssize_t end;
	int r;

	if ((r = qcow2_overlap_writable(img)) < 0)
		return r;
	if (nlen > QCOW2_MAX_BACKING_NAME || (fmt && strlen(fmt) >= sizeof(img->h.backing_fmt)))
		return qcow2_set_error(-ENAMETOOLONG, "'%s': backing file name too long",
				       img->name);
	r = qcow2_image_flush(img); /* the header on disk is then the one in memory */
	qcow2_image_meta_lock(img);
	p = calloc(1, cs);
	out = calloc(1, cs);
	if (r == 0 && (!p || !out))
		r = qcow2_oom();
	if (r == 0 && (r = (int)qcow2_io_pread(img->io, p, cs, 0)) >= 0)
		r = 0;
	end = r < 0 ? r : rebuild_exts(&img->h, p, cs, nlen && fmt ? fmt : "", out);
	if (end >= 0 && (uint64_t)end + nlen > cs)
		end = qcow2_set_error(-ENOSPC,
				      "'%s': no room for the backing file name in the "
				      "header cluster",
				      img->name);
	if (end >= 0) {
		memcpy(out + end, name, (size_t)nlen);
		put_be64(out + OFF_BACKING_OFF, nlen ? (uint64_t)end : 0);
		put_be32(out + OFF_BACKING_LEN, (uint32_t)nlen);
		/* One write of the whole header cluster, then durable: the pointer is either the
		 * old or the new one. */
		r = qcow2_io_pwrite_meta(img->io, out, (size_t)cs, 0, QCOW2_OL_HEADER);
		if (r == 0)
			r = qcow2_io_flush(img->io);
	} else {
		r = (int)end;
	}
	if (r == 0) {
		img->h.backing_off = nlen ? (uint64_t)end : 0;
		img->h.backing_len = (uint32_t)nlen;
		snprintf(img->h.backing_file, sizeof(img->h.backing_file), "%s", nlen ? name : "");
		snprintf(img->h.backing_fmt, sizeof(img->h.backing_fmt), "%s",
			 nlen && fmt ? fmt : "");
	}
	qcow2_image_meta_unlock(img);
	free(p);
	free(out);
	return r < 0 ? qcow2_error_prefix(r, img->name) : 0;
}
