/* SPDX-License-Identifier: MIT */
/*
 * zero.c - zeroing and discard of one qcow2 image's guest ranges (qcow2_image_zero(),
 * qcow2_image_unmap()), and the entry of one cluster set outright (qcow2_write_set_entry(),
 * compress.c's): zero clusters, or unallocated ones where nothing lies below, what they
 * pointed at counted down after the next flush; zeros written where the format cannot say
 * them (write.c's qcow2_image_write()).
 *
 * Locks: each pass runs under w->lock (write.c's qcow2_write_locked_run()), held throughout:
 * it first waits (the lock dropped meanwhile) until no write pass has its clusters in flight
 * (locks.c), so that no copy-on-write stores an entry over its change, and frees are queued
 * in the same hold of the lock that stores the entries.
 *
 * Write order: write.c's (the entries stay in the L2 cache until qcow2_image_flush()).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "engine/engine.h"

static int write_zeros(struct qcow2_image *img, uint64_t off, uint64_t n,
		       const struct qcow2_fill *fill)
{
	size_t chunk = n < (1u << 20) ? (size_t)n : (1u << 20);
	uint8_t *zero = calloc(1, chunk ? chunk : 1);
	int r = 0;

	if (!zero)
		return qcow2_oom();
	while (n && r == 0) {
		size_t len = n < chunk ? (size_t)n : chunk;

		r = qcow2_image_write(img, zero, len, off, fill);
		off += len;
		n -= len;
	}
	free(zero);
	return r;
}

/* Zero whole units (clusters, or subclusters with extended L2) [@off, @off + @n) within one
 * L2 table. w->lock held. Returns bytes handled. */
static ssize_t zero_run(struct qcow2_image *img, const uint8_t *unused, size_t n, uint64_t off,
			const struct qcow2_fill *fill)
{
	uint64_t ents[2 * QCOW2_WRITE_MAX_RUN];
	uint64_t cs = img->cluster_bytes, cl = off >> img->h.cluster_bits, l2_off, e, scb;
	uint32_t ew = img->l2_entry_words, l1_idx = (uint32_t)(cl / img->l2_entries);
	uint32_t l2_idx = (uint32_t)(cl % img->l2_entries), k, i;
	bool backing = fill && fill->has_backing;
	uint64_t done = 0;
	int r;

	k = qcow2_write_run_clusters(img, off, n, QCOW2_WRITE_MAX_RUN);
	qcow2_write_inflight_wait(img, cl, k); /* no pass stores over these entries after us */
	e = l1_idx < img->l1.n ? qcow2_write_l1_get(img, l1_idx) : 0;
	if (!backing && !(e & QCOW2_L1E_OFFSET_MASK)) /* unallocated and nothing below: zeros */
		return (ssize_t)(((uint64_t)k << img->h.cluster_bits) - (off & (cs - 1)) < n
				     ? ((uint64_t)k << img->h.cluster_bits) - (off & (cs - 1))
				     : n);
	r = qcow2_write_load_run(img, off, k, ents, &l2_off);
	if (r < 0)
		return r;
	scb = 1ull << img->sc_bits;
	for (i = 0; i < k && done < n && r == 0; i++) {
		uint64_t pos = off + done, in = pos & (cs - 1), *ent = &ents[i * ew];
		uint64_t len = cs - in < n - done ? cs - in : n - done;

		if (ew == 1 || len == cs) {
			uint64_t want = backing ? QCOW2_OFLAG_ZERO : 0;

			if (ent[0] != want ||
			    (ew == 2 && ent[1] != (backing ? 0xffffffffull << 32 : 0)))
				r = qcow2_write_release_entry(img, ent[0]);
			ent[0] = ew == 2 ? 0 : want;
			if (ew == 2)
				ent[1] = backing ? 0xffffffffull << 32 : 0;
		} else if (ent[0] & QCOW2_OFLAG_COMPRESSED) {
			/* no subclusters in a compressed cluster: make it a normal one first */
			r = qcow2_write_rewrite_cluster(img, pos - in, ent, 0, 0, NULL, fill);
			continue; /* the same cluster again, now with subclusters */
		} else {
			uint32_t s0 = (uint32_t)(in / scb), s1 = (uint32_t)((in + len - 1) / scb),
				 s;

			for (s = s0; s <= s1; s++) {
				ent[1] &= ~(1ull << s);
				if (backing)
					ent[1] |= 1ull << (32 + s);
				else
					ent[1] &= ~(1ull << (32 + s));
			}
		}
		done += len;
	}
	if (r == 0)
		r = qcow2_write_l2_modify(img, l2_off, NULL, l2_idx * ew, k * ew, ents);
	return r < 0 ? r : (ssize_t)done;
}

int qcow2_image_zero(struct qcow2_image *img, uint64_t off, uint64_t n,
		     const struct qcow2_fill *fill)
{
	uint64_t unit = 1ull << img->sc_bits, end = off + n;
	bool backing = fill && fill->has_backing;
	ssize_t got;
	int r;

	if ((r = qcow2_overlap_writable(img)) < 0 || (r = qcow2_image_data_writable(img)) < 0)
		return r;
	if (off > img->h.size || n > img->h.size - off)
		return qcow2_set_error(-EFBIG, "'%s': zeroing past the end of the disk", img->name);
	/* Where zeros cannot be said in metadata, write them: an external data file must hold
	 * them (it may be read as raw), and a version 2 image has no zero flag to hide what a
	 * backing file shows. */
	if ((img->h.incompat & QCOW2_INCOMPAT_DATA_FILE) || (img->h.version < 3 && backing))
		return write_zeros(img, off, n, fill);
	while (off < end) {
		uint64_t head = off & (unit - 1), len;

		if (head || end - off < unit) {
			len = unit - head < end - off ? unit - head : end - off;
			r = write_zeros(img, off, len, fill);
			if (r < 0)
				return r;
			off += len;
			continue;
		}
		len = (end - off) & ~(unit - 1);
		got = qcow2_write_locked_run(img, zero_run, NULL, (size_t)len, off, fill, true);
		if (got < 0)
			return qcow2_error_prefix((int)got, img->name);
		off += (uint64_t)got;
	}
	return 0;
}

/* Whole units of [@off, @off + @n) made unallocated, so that what lies below shows through
 * (an overlay emptied after a commit). A partial unit is left as it is, except the last one
 * of the disk, whose tail lies past the end anyway. The bitmaps are not marked: the chain's
 * view is unchanged, and QEMU's bdrv_make_empty() does not mark them either. */
int qcow2_image_unmap(struct qcow2_image *img, uint64_t off, uint64_t n)
{
	uint64_t unit = 1ull << img->sc_bits, end = off + n;
	struct qcow2_fill none = {0}; /* "nothing below": zero_run then unallocates */
	ssize_t got;
	int r;

	if ((r = qcow2_overlap_writable(img)) < 0 || (r = qcow2_image_data_writable(img)) < 0)
		return r;
	if (off > img->h.size || n > img->h.size - off)
		return qcow2_set_error(-EFBIG, "'%s': range past the end of the disk", img->name);
	end = end == img->h.size ? (end + unit - 1) & ~(unit - 1) : end & ~(unit - 1);
	off = (off + unit - 1) & ~(unit - 1);
	while (off < end) {
		got = qcow2_write_locked_run(img, zero_run, NULL, (size_t)(end - off), off, &none,
					     false);
		if (got < 0)
			return qcow2_error_prefix((int)got, img->name);
		off += (uint64_t)got;
	}
	return 0;
}

/* Point guest cluster @guest_cl at @ent (1 or 2 words), counting down what it pointed at.
 * w->lock held, qcow2_image_begin_write() done. */
int qcow2_write_set_entry(struct qcow2_image *img, uint64_t guest_cl, const uint64_t *ent)
{
	uint32_t ew = img->l2_entry_words, l2_idx = (uint32_t)(guest_cl % img->l2_entries);
	uint64_t old[2] = {0, 0}, l2_off;
	int r;

	qcow2_write_inflight_wait(img, guest_cl, 1);
	r = qcow2_write_load_run(img, guest_cl << img->h.cluster_bits, 1, old, &l2_off);
	if (r == 0 && old[0] != ent[0])
		r = qcow2_write_release_entry(img, old[0]);
	if (r == 0)
		r = qcow2_write_l2_modify(img, l2_off, NULL, l2_idx * ew, ew, ent);
	return r < 0 ? r : qcow2_write_relieve(img);
}
