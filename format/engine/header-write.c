/* SPDX-License-Identifier: MIT */
/*
 * header-write.c - the header fields the write side rewrites, the first change of an open, and
 * the bitmaps extension switched to a new bitmap directory (bitmaps.c calls it).
 *
 * Header updates (qcow2_image_write_header()) rewrite bytes 24..71 (v2) or 24..95 (v3) in one
 * write, laid out by ondisk.h's OFF_* (the one home of the header layout, which header.c decodes
 * and encodes): size, L1 and refcount table placement, snapshot fields as they are, and for v3
 * the feature bits. That range lies in the first sector, which the disk writes whole.
 *
 * Locks: none taken; the callers hold w->lock (or the image alone, while it opens).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"

int qcow2_image_write_header(struct qcow2_image *img)
{
	const struct qcow2_header *h = &img->h;
	uint8_t b[OFF_REFCOUNT_ORDER];
	size_t len;
	/* the corrupt bit may be set by another thread's refused write (overlap.c) */
	uint64_t incompat = __atomic_load_n(&h->incompat, __ATOMIC_ACQUIRE) & ~QCOW2_INCOMPAT_DIRTY;
	int r;

	if (img->w->set_dirty)
		incompat |= QCOW2_INCOMPAT_DIRTY;
	len = qcow2_header_put_mutable(h, incompat, b);
	r = qcow2_io_pwrite_meta(img->io, b + OFF_SIZE, len - OFF_SIZE, OFF_SIZE, QCOW2_OL_HEADER);
	/* a corrupt bit set while this header was being written must not be lost */
	if (r == 0 && len == OFF_REFCOUNT_ORDER && !(incompat & QCOW2_INCOMPAT_CORRUPT) &&
	    (__atomic_load_n(&h->incompat, __ATOMIC_ACQUIRE) & QCOW2_INCOMPAT_CORRUPT)) {
		put_be64(b + OFF_INCOMPAT, incompat | QCOW2_INCOMPAT_CORRUPT);
		r = qcow2_io_pwrite_meta(img->io, b + OFF_INCOMPAT, 8, OFF_INCOMPAT,
					 QCOW2_OL_HEADER);
	}
	return r;
}

/* First change to the image: the persistent bitmaps loaded and marked in use (bitmaps.c), the
 * autoclear bits we do not maintain cleared (unknown ones, and the bitmaps' when they were
 * not in force: the format asks a writer that does not update them to do so) and, with lazy
 * refcounts, the dirty bit set; durable before any other change. w->lock held. @began is
 * published last (release): in-place writers, which hold no w->lock, read it (acquire) before
 * writing and marking bitmaps (write.c). */
int qcow2_image_begin_write(struct qcow2_image *img)
{
	struct qcow2_wstate *w = img->w;
	uint64_t autoclear = img->h.autoclear, keep = QCOW2_AUTOCLEAR_DATA_FILE_RAW;
	bool changed = false;
	int r;

	if (w->began)
		return 0;
	r = qcow2_bitmaps_begin(img);
	if (r < 0)
		return r;
	if (w->bm_loaded)
		keep |= QCOW2_AUTOCLEAR_BITMAPS;
	if (img->h.version >= 3 && (autoclear & ~keep)) {
		img->h.autoclear &= keep;
		changed = true;
	}
	if (img->h.compat & QCOW2_COMPAT_LAZY_REFCOUNTS) {
		w->set_dirty = true;
		changed = true;
	}
	if (changed) {
		r = qcow2_image_write_header(img);
		if (r == 0)
			r = qcow2_io_flush(img->io);
		if (r < 0) {
			img->h.autoclear = autoclear;
			w->set_dirty = false;
			return r;
		}
	}
	/* bitmaps no longer in force: their clusters are no longer live metadata */
	if (autoclear != img->h.autoclear && (r = qcow2_overlap_update_tables(img)) < 0)
		return r;
	__atomic_store_n(&w->began, true, __ATOMIC_RELEASE);
	return 0;
}

/* The data of the bitmaps extension in the header cluster @p: its offset, or 0 if it has none
 * (or the extensions are damaged: then the rewrite fails). */
static uint64_t find_bitmaps_ext(const struct qcow2_image *img, const uint8_t *p)
{
	const struct qcow2_header *h = &img->h;
	uint64_t off = h->header_len, end = img->cluster_bytes;

	if (h->backing_off && h->backing_off < end)
		end = h->backing_off;
	while (off + 8 <= end) {
		uint32_t type = get_be32(p + off), len = get_be32(p + off + 4);

		if (type == EXT_END)
			return 0;
		if (type == EXT_BITMAPS)
			return len == 24 && off + 32 <= end ? off + 8 : 0;
		off += 8 + (((uint64_t)len + 7) & ~7ull);
	}
	return 0;
}

/* The header cluster @p rewritten into @out: the extensions but the bitmaps', then a bitmaps
 * extension for @nb entries (none when 0), the end marker, the backing file name. */
static int rebuild_with_bitmaps(struct qcow2_image *img, const uint8_t *p, uint32_t nb,
				uint64_t dir_bytes, uint64_t dir_off, uint8_t *out)
{
	const struct qcow2_header *h = &img->h;
	uint64_t cs = img->cluster_bytes, off = h->header_len, o = off, end = cs;

	if (h->backing_off && h->backing_off < end)
		end = h->backing_off;
	memcpy(out, p, (size_t)off);
	while (off + 8 <= end) {
		uint32_t type = get_be32(p + off), len = get_be32(p + off + 4);
		uint64_t step = 8 + (((uint64_t)len + 7) & ~7ull);

		if (type == EXT_END)
			break;
		if (off + step > end || o + step + 8 > cs)
			return qcow2_set_error(-EUCLEAN,
					       "header extensions run past the first cluster");
		if (type != EXT_BITMAPS) {
			memcpy(out + o, p + off, (size_t)step);
			o += step;
		}
		off += step;
	}
	if (nb) {
		put_be32(out + o, EXT_BITMAPS);
		put_be32(out + o + 4, 24);
		put_be32(out + o + 8, nb);
		put_be32(out + o + 12, 0);
		put_be64(out + o + 16, dir_bytes);
		put_be64(out + o + 24, dir_off);
		o += 32;
	}
	put_be64(out + o, 0);
	o += 8;
	if (o + h->backing_len > cs)
		return qcow2_set_error(-ENOSPC, "no room for the bitmaps in the header cluster");
	if (h->backing_len)
		memcpy(out + o, p + h->backing_off, h->backing_len);
	put_be64(out + OFF_BACKING_OFF, h->backing_len ? o : 0);
	return 0;
}

/* Clear (@on false) or set the bitmaps' autoclear bit, durably. */
static int bitmaps_bit(struct qcow2_image *img, bool on)
{
	uint64_t was = img->h.autoclear;
	int r;

	if (on)
		img->h.autoclear |= QCOW2_AUTOCLEAR_BITMAPS;
	else
		img->h.autoclear &= ~QCOW2_AUTOCLEAR_BITMAPS;
	if (was == img->h.autoclear)
		return 0;
	r = qcow2_image_write_header(img);
	if (r == 0)
		r = qcow2_io_flush(img->io);
	if (r < 0)
		img->h.autoclear = was;
	return r;
}

int qcow2_image_write_bitmaps_ext(struct qcow2_image *img, uint32_t nb, uint64_t dir_bytes,
				  uint64_t dir_off)
{
	struct qcow2_header *h = &img->h;
	uint64_t cs = img->cluster_bytes, at = 0;
	uint8_t *p, *out = NULL, b[8];
	int r;

	p = malloc(cs);
	if (!p)
		return qcow2_oom();
	r = qcow2_io_pread_full(img->io, p, cs, 0);
	if (r == 0 && h->has_bitmaps_ext)
		at = find_bitmaps_ext(img, p);
	if (r == 0 && nb && at && nb == h->nb_bitmaps && dir_bytes == h->bitmap_dir_bytes &&
	    (h->autoclear & QCOW2_AUTOCLEAR_BITMAPS)) {
		/* Only the directory's offset changes: one 8-byte write, 8-byte aligned (the
		 * header and every extension are padded to 8 bytes), so within one sector: the
		 * disk writes it whole, old or new. */
		put_be64(b, dir_off);
		r = qcow2_io_pwrite_meta(img->io, b, 8, at + 16, QCOW2_OL_HEADER);
		if (r == 0)
			r = qcow2_io_flush(img->io);
		if (r == 0)
			h->bitmap_dir_off = dir_off;
		free(p);
		return r;
	}
	/* Otherwise as QEMU does: the bitmaps out of force first (a crash then leaves bitmaps
	 * that no reader trusts, and leaked clusters), the header cluster rewritten in one
	 * write, then the bitmaps in force again; each durable. */
	if (r == 0 && !(out = calloc(1, cs)))
		r = qcow2_oom();
	if (r == 0)
		r = bitmaps_bit(img, false);
	if (r == 0)
		r = qcow2_io_pread_full(img->io, p, cs, 0);
	if (r == 0)
		r = rebuild_with_bitmaps(img, p, nb, dir_bytes, dir_off, out);
	if (r == 0)
		r = qcow2_io_pwrite_meta(img->io, out, (size_t)cs, 0, QCOW2_OL_HEADER);
	if (r == 0)
		r = qcow2_io_flush(img->io);
	if (r == 0) {
		h->backing_off = h->backing_len ? get_be64(out + OFF_BACKING_OFF) : 0;
		h->has_bitmaps_ext = nb != 0;
		h->nb_bitmaps = nb;
		h->bitmap_dir_bytes = nb ? dir_bytes : 0;
		h->bitmap_dir_off = nb ? dir_off : 0;
		if (nb)
			r = bitmaps_bit(img, true);
	}
	free(p);
	free(out);
	return r;
}
