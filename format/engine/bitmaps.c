/* SPDX-License-Identifier: MIT */
/*
 * bitmaps.c - persistent dirty bitmaps kept valid by the writes of an open (qcow2.txt,
 * "Bitmaps"; QEMU's block/qcow2-bitmap.c does the same while a VM runs).
 *
 * The first change of an open (qcow2_image_begin_write(), header-write.c) calls
 * qcow2_bitmaps_begin(): the bitmap directory is decoded strictly (a directory or an entry QEMU
 * would refuse to load refuses the change: QEMU refuses to open such an image for writing), the
 * bits of every enabled (auto) bitmap that is not in use are loaded into memory (one bit per
 * granule: memory follows the bitmaps' size, not the disk's), and the in-use flag of every
 * consistent bitmap, enabled or disabled (as QEMU sets it at a writable open), is written into
 * the directory in place and made durable before any data is written. A crash from then on leaves
 * them in use, which QEMU reads as inconsistent, as after a crash of QEMU. A bitmap already in
 * use at open is inconsistent: it is left alone, its flag never cleared.
 *
 * Every guest change (write, zeroing, discard; not a preallocation, not a copy-on-write fill,
 * which change nothing the guest reads) sets the bits covering its range, at each bitmap's
 * granularity, in every tracked bitmap (qcow2_bitmaps_mark(), from write.c and compress.c),
 * before its data is written.
 *
 * A clean close (open.c) stores them (qcow2_bitmaps_close()): each tracked bitmap goes to newly
 * allocated clusters (clusters of zeros become zero table entries, as QEMU writes them), then
 * its new table; data, tables and their refcounts made durable; then a new directory (in-use
 * flags cleared, disabled bitmaps keeping their tables) in new clusters, durable; then the
 * header's extension points at it (header-write.c, durable); only then the old directory and
 * the old tables and data are counted down (deferred frees, after the next flush). A crash
 * before the header write leaves the old directory, whose bitmaps say in use (inconsistent),
 * and leaked clusters; after it, the new valid one and leaked old clusters. Never a pointer to a
 * freed cluster.
 *
 * Locks: w->lock (the caller's) for qcow2_bitmaps_begin(), the stores and the resize; the bits
 * of a tracked bitmap are set by qcow2_bitmaps_mark() with atomic ORs, holding only w->frees
 * shared (in-place writes take no w->lock): the array of bitmaps and each bits array are set up
 * under w->lock before w->began is published (release; the writers read it with acquire) and
 * replaced only with w->frees held exclusive (a store, a resize), when no writer runs.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"

static bool in_force(const struct qcow2_image *img)
{
	const struct qcow2_header *h = &img->h;

	return h->version >= 3 && h->has_bitmaps_ext && (h->autoclear & QCOW2_AUTOCLEAR_BITMAPS);
}

static uint64_t nbits_of(const struct qcow2_image *img, uint32_t granularity_bits)
{
	uint64_t g = 1ull << granularity_bits;

	return img->h.size / g + (img->h.size % g != 0);
}

void qcow2_bitmaps_free_w(struct qcow2_wbitmap *v, uint32_t n)
{
	uint32_t i;

	for (i = 0; v && i < n; i++) {
		free(v[i].e.name);
		free(v[i].bits);
	}
	free(v);
}

/* Set bits [@first, @last] of @bits, atomically (concurrent writers of other ranges). */
static void set_bits(uint8_t *bits, uint64_t first, uint64_t last)
{
	uint64_t b0 = first / 8, b1 = last / 8, i;
	uint8_t m0 = (uint8_t)(0xffu << (first % 8)), m1 = (uint8_t)(0xffu >> (7 - last % 8));

	if (b0 == b1) {
		__atomic_fetch_or(&bits[b0], m0 & m1, __ATOMIC_RELAXED);
		return;
	}
	__atomic_fetch_or(&bits[b0], m0, __ATOMIC_RELAXED);
	/* whole bytes: storing all ones loses no bit another writer sets */
	for (i = b0 + 1; i < b1; i++)
		__atomic_store_n(&bits[i], 0xff, __ATOMIC_RELAXED);
	__atomic_fetch_or(&bits[b1], m1, __ATOMIC_RELAXED);
}

void qcow2_bitmaps_mark(struct qcow2_image *img, uint64_t off, uint64_t n)
{
	struct qcow2_wstate *w = img->w;
	uint64_t first, last;
	uint32_t i;

	if (!n || !w->n_bm)
		return;
	for (i = 0; i < w->n_bm; i++) {
		struct qcow2_wbitmap *b = &w->bm[i];

		if (!b->track || !b->nbits)
			continue;
		first = off >> b->e.granularity_bits;
		last = (off + n - 1) >> b->e.granularity_bits;
		if (first >= b->nbits)
			continue;
		if (last >= b->nbits)
			last = b->nbits - 1;
		set_bits(b->bits, first, last);
		__atomic_store_n(&w->bm_marked, true, __ATOMIC_RELAXED);
	}
}

/* Load the bits of @b (an entry that is not in use). */
static int load_bits(struct qcow2_image *img, struct qcow2_wbitmap *b)
{
	uint64_t nbits;
	int r;

	r = qcow2_image_bitmap_read(img, &b->e, &b->bits, &nbits);
	if (r < 0)
		return r;
	if (nbits != nbits_of(img, b->e.granularity_bits)) {
		free(b->bits);
		b->bits = NULL;
		return qcow2_set_error(-EUCLEAN, "bitmap '%s' does not cover the disk", b->e.name);
	}
	b->nbits = nbits;
	return 0;
}

/* Write the directory of @v (@n) with the in-use flag set on every consistent bitmap over the
 * one on disk, in place, durable. Only flag words change (the names, tables and lengths are
 * the ones just decoded; padding is zeros): a sector torn by a crash holds old or new flags, and
 * as no data has been written yet, a bitmap whose in-use flag did not reach the disk is still
 * right. */
static int write_in_use(struct qcow2_image *img, const struct qcow2_wbitmap *v, uint32_t n)
{
	const struct qcow2_header *h = &img->h;
	struct qcow2_bitmap *e;
	uint8_t *buf = NULL;
	size_t len;
	uint32_t i;
	int r = 0;

	e = calloc(n, sizeof(*e));
	if (!e)
		return qcow2_oom_for("the bitmap directory");
	for (i = 0; i < n; i++) {
		e[i] = v[i].e;
		e[i].flags |= QCOW2_BITMAP_IN_USE;
		if (strlen(v[i].e.name) != v[i].e.name_bytes)
			r = qcow2_set_error(-ENOTSUP, "bitmap name with a NUL byte");
	}
	len = qcow2_bitmap_dir_encode(e, n, NULL);
	if (r == 0 && len != h->bitmap_dir_bytes)
		r = qcow2_set_error(-ENOTSUP, "bitmap directory with extra bytes");
	if (r == 0 && !(buf = calloc(1, len)))
		r = qcow2_oom_for("the bitmap directory");
	if (r == 0) {
		qcow2_bitmap_dir_encode(e, n, buf);
		r = qcow2_io_pwrite_meta(img->io, buf, len, h->bitmap_dir_off, QCOW2_OL_BITMAP_DIR);
	}
	if (r == 0)
		r = qcow2_io_flush(img->io);
	free(buf);
	free(e);
	return r;
}

/* The entries of the directory as the engine keeps them (names moved out of @b). */
static int adopt(struct qcow2_bitmap *b, uint32_t n, struct qcow2_wbitmap **out)
{
	struct qcow2_wbitmap *v = calloc(n ? n : 1, sizeof(*v));
	uint32_t i;

	if (!v)
		return qcow2_oom_for("the bitmaps");
	for (i = 0; i < n; i++) {
		v[i].e = b[i];
		b[i].name = NULL;
	}
	*out = v;
	return 0;
}

int qcow2_bitmaps_begin(struct qcow2_image *img)
{
	struct qcow2_wstate *w = img->w;
	struct qcow2_bitmap *b = NULL;
	struct qcow2_wbitmap *v = NULL;
	char why[256];
	uint32_t n = 0, i;
	int r;

	if (w->bm_loaded || !in_force(img))
		return 0;
	if (w->bm_replacing) {
		/* qcow2_image_bitmaps_store() replaces the directory, whatever it holds (a
		 * repair drops entries QEMU refuses): nothing to load, the bitmaps stay in force */
		w->bm_loaded = true;
		return 0;
	}
	r = qcow2_image_bitmaps(img, false, &b, &n);
	if (r == 0)
		r = adopt(b, n, &v);
	qcow2_bitmaps_free(b, n);
	for (i = 0; r == 0 && i < n; i++) {
		v[i].track =
		    (v[i].e.flags & QCOW2_BITMAP_AUTO) && !(v[i].e.flags & QCOW2_BITMAP_IN_USE);
		if (v[i].track)
			r = load_bits(img, &v[i]);
	}
	if (r == 0 && n)
		r = write_in_use(img, v, n);
	if (r < 0) {
		qcow2_bitmaps_free_w(v, n);
		if (r == -ENOMEM || r == -EIO)
			return r;
		snprintf(why, sizeof(why), "%s", qcow2_last_error());
		return qcow2_set_error(r,
				       "%s: its persistent bitmaps cannot be kept, refusing to "
				       "write it (QEMU refuses to open it for writing too)",
				       why);
	}
	w->bm = v;
	w->n_bm = n;
	w->bm_loaded = true;
	return 0;
}

/* ---- storing ---- */

static bool all_zero(const uint8_t *p, size_t n)
{
	return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* Clusters allocated by a store, given back if it fails before anything points at them. */
struct allocs {
	struct qcow2_crange *v;
	size_t n, cap;
};

static int alloc_write(struct qcow2_image *img, struct allocs *a, const void *buf, size_t len,
		       uint64_t *off)
{
	uint64_t cs = img->cluster_bytes, n = (len + cs - 1) / cs;
	int r;

	if (a->n == a->cap) {
		size_t cap = a->cap ? 2 * a->cap : 16;
		struct qcow2_crange *p = realloc(a->v, cap * sizeof(*p));

		if (!p)
			return qcow2_oom();
		a->v = p;
		a->cap = cap;
	}
	r = qcow2_refcount_alloc(img, n, off);
	if (r < 0)
		return r;
	a->v[a->n++] = (struct qcow2_crange){*off >> img->h.cluster_bits, n};
	return qcow2_io_pwrite(img->io, buf, len, *off);
}

/* Write the bits of @b to new data clusters and a new table; its entry then names them. */
static int write_bitmap(struct qcow2_image *img, struct allocs *a, struct qcow2_wbitmap *b)
{
	uint64_t cs = img->cluster_bytes, nbytes = (b->nbits + 7) / 8, j, off;
	uint64_t entries =
	    qcow2_bitmap_table_entries(img->h.size, b->e.granularity_bits, img->h.cluster_bits);
	uint8_t *table, *pad;
	int r = 0;

	if (entries == 0 || entries > QCOW2_BITMAP_MAX_TABLE_ENTRIES)
		return qcow2_set_error(-EFBIG, "bitmap '%s' is too large", b->e.name);
	table = calloc(entries, 8);
	pad = calloc(1, cs);
	if (!table || !pad) {
		free(table);
		free(pad);
		return qcow2_oom_for("a bitmap table");
	}
	for (j = 0; r == 0 && j < entries; j++) {
		uint64_t at = j * cs, len = at < nbytes ? (nbytes - at < cs ? nbytes - at : cs) : 0;
		const uint8_t *p = b->bits + at;

		if (all_zero(p, (size_t)len))
			continue;
		if (len < cs) { /* the last cluster: zeros past the bitmap's end */
			memset(pad, 0, cs);
			memcpy(pad, p, (size_t)len);
			p = pad;
		}
		r = alloc_write(img, a, p, (size_t)cs, &off);
		if (r == 0)
			put_be64(table + 8 * j, off);
	}
	if (r == 0)
		r = alloc_write(img, a, table, (size_t)(entries * 8), &off);
	if (r == 0) {
		b->e.table_off = off;
		b->e.table_entries = (uint32_t)entries;
	}
	free(table);
	free(pad);
	return r;
}

/* Count down the tables and data of the old directory's entries that the new one (@v, @n)
 * does not keep, and the old directory itself (after the next flush). A table that cannot be
 * read is left (leaked): never free what may not be what it seems. */
static int free_old(struct qcow2_image *img, const struct qcow2_bitmap *old, uint32_t n_old,
		    const struct qcow2_wbitmap *v, uint32_t n, uint64_t dir_off, uint64_t dir_bytes)
{
	uint64_t cs = img->cluster_bytes, *t, k;
	uint32_t i, j;
	int r = 0;

	for (i = 0; r == 0 && i < n_old; i++) {
		bool kept = false;

		for (j = 0; j < n && !kept; j++)
			kept = v[j].e.table_off == old[i].table_off;
		/* (an entry QEMU refuses too: the walk counts its table and data all the same) */
		if (kept || qcow2_image_bitmap_table(img, &old[i], &t) < 0)
			continue;
		for (k = 0; r == 0 && k < old[i].table_entries; k++)
			if (t[k] & QCOW2_BME_OFFSET_MASK)
				r = qcow2_refcount_defer_free(img, t[k] & QCOW2_BME_OFFSET_MASK,
							      cs);
		free(t);
		if (r == 0)
			r = qcow2_refcount_defer_free(img, old[i].table_off,
						      (uint64_t)old[i].table_entries * 8);
	}
	if (r == 0 && dir_bytes)
		r = qcow2_refcount_defer_free(img, dir_off, dir_bytes);
	qcow2_clear_error(); /* (an unreadable old table is no failure of the store) */
	return r;
}

/*
 * Store @v (@n entries, 0: no bitmaps left) as the image's bitmap directory. Entries with bits
 * get new clusters; the others keep the table their entry names. Order (see the file's
 * opening): data and tables, durable with their refcounts; the directory, durable; the header
 * extension switched, durable; the old clusters counted down after the next flush.
 * w->lock held, and w->frees exclusive or the image not shared.
 */
static int store(struct qcow2_image *img, struct qcow2_wbitmap *v, uint32_t n)
{
	struct qcow2_bitmap *old = NULL, *e = NULL;
	uint64_t old_dir = img->h.bitmap_dir_off, old_bytes = img->h.bitmap_dir_bytes, dir = 0;
	struct allocs a = {0};
	uint32_t n_old = 0, i;
	uint8_t *buf = NULL;
	size_t len = 0;
	int r = 0;

	if (img->h.version < 3)
		return qcow2_set_error(-ENOTSUP, "a version 2 image has no bitmaps");
	if (in_force(img))
		r = qcow2_image_bitmaps(img, true, &old, &n_old);
	if (r == -ENOMEM)
		return r;
	/* (a directory broken as a whole names nothing we could trust, itself included: what
	 * it names stays, leaked) */
	if (r < 0 || !in_force(img))
		old_bytes = 0;
	qcow2_clear_error();
	r = 0;
	for (i = 0; r == 0 && i < n; i++)
		if (v[i].bits)
			r = write_bitmap(img, &a, &v[i]);
	if (r == 0)
		r = qcow2_image_flush_locked(img); /* data, tables and refcounts durable */
	if (r == 0 && n) {
		e = calloc(n, sizeof(*e));
		for (i = 0; e && i < n; i++)
			e[i] = v[i].e;
		len = e ? qcow2_bitmap_dir_encode(e, n, NULL) : 0;
		buf = e ? calloc(1, len) : NULL;
		if (!buf)
			r = qcow2_oom_for("the bitmap directory");
		if (r == 0) {
			qcow2_bitmap_dir_encode(e, n, buf);
			r = alloc_write(img, &a, buf, len, &dir);
		}
		if (r == 0)
			r = qcow2_image_flush_locked(img);
		if (r == 0)
			r = qcow2_io_flush(img->io);
	}
	if (r == 0) {
		r = qcow2_image_write_bitmaps_ext(img, n, len, dir);
		/* once the header may name them, they stay allocated (at worst leaked) */
		if (r < 0)
			a.n = 0;
	}
	if (r < 0) {
		/* nothing points at them: given back (a crash would have leaked them) */
		for (i = 0; i < a.n; i++)
			qcow2_refcount_unalloc(img, a.v[i].first << img->h.cluster_bits,
					       a.v[i].count);
	} else {
		r = qcow2_overlap_reload_bitmaps(img);
		if (r == 0)
			r = free_old(img, old, n_old, v, n, old_dir, old_bytes);
	}
	qcow2_bitmaps_free(old, n_old);
	free(a.v);
	free(buf);
	free(e);
	return r;
}

int qcow2_bitmaps_close(struct qcow2_image *img)
{
	struct qcow2_wstate *w = img->w;
	int r;

	if (!w->bm_loaded || !w->n_bm)
		return 0;
	if ((r = qcow2_overlap_writable(img)) < 0)
		return r; /* a refused write: no more changes, the bitmaps stay in use */
	/* The entries keep the flags found at open: the in-use flag written at the first change
	 * goes, a bitmap in use at open stays so (inconsistent). */
	qcow2_image_meta_lock(img);
	r = store(img, w->bm, w->n_bm);
	qcow2_image_meta_unlock(img);
	return r < 0 ? qcow2_error_prefix(r, img->name) : 0;
}

int qcow2_image_bitmaps_store(struct qcow2_image *img, const struct qcow2_bitmap *b, uint32_t n,
			      uint8_t *const *bits)
{
	struct qcow2_wstate *w = img->w;
	struct qcow2_wbitmap *v = NULL;
	uint32_t i;
	int r;

	if ((r = qcow2_overlap_writable(img)) < 0)
		return r;
	if (img->h.version < 3)
		return qcow2_set_error(-ENOTSUP, "'%s': a version 2 image has no bitmaps",
				       img->name);
	/* No write runs (w->frees exclusive). The first change as for any other, but the
	 * bitmaps found are not loaded (the caller replaces them) nor marked in use: no guest
	 * data changes, and a crash leaves the old directory or the new, both right. */
	qcow2_image_exclusive_begin(img);
	qcow2_image_meta_lock(img);
	w->bm_replacing = true;
	r = qcow2_image_begin_write(img);
	w->bm_replacing = false;
	if (r == 0 && __atomic_load_n(&w->bm_marked, __ATOMIC_RELAXED))
		r = qcow2_set_error(-EBUSY, "the bitmaps are tracking the writes of this open");
	if (r == 0 && !(v = calloc(n ? n : 1, sizeof(*v))))
		r = qcow2_oom_for("the bitmaps");
	for (i = 0; r == 0 && i < n; i++) {
		uint64_t nbytes;

		v[i].e = b[i];
		v[i].e.name = strdup(b[i].name);
		if (!v[i].e.name) {
			r = qcow2_oom();
			break;
		}
		if (!bits || !bits[i])
			continue;
		v[i].nbits = nbits_of(img, b[i].granularity_bits);
		nbytes = (v[i].nbits + 7) / 8;
		v[i].bits = malloc(nbytes ? nbytes : 1);
		if (!v[i].bits)
			r = qcow2_oom_for("bitmap '%s'", b[i].name);
		else
			memcpy(v[i].bits, bits[i], nbytes);
	}
	if (r == 0)
		r = store(img, v, n);
	qcow2_bitmaps_free_w(v, n);
	if (r == 0) {
		/* The new directory is now the one this open keeps in use until it closes. If it
		 * cannot be loaded (entries QEMU refuses, kept by the caller), the next change
		 * runs the first-change step again, which refuses it. */
		qcow2_bitmaps_release(img);
		if (qcow2_bitmaps_begin(img) < 0) {
			__atomic_store_n(&w->began, false, __ATOMIC_RELEASE);
			qcow2_clear_error();
		}
	}
	qcow2_image_meta_unlock(img);
	qcow2_image_exclusive_end(img);
	if (r == 0)
		r = qcow2_image_flush(img);
	if (r == 0)
		r = qcow2_image_flush(img); /* the old clusters counted down */
	return r < 0 ? qcow2_error_prefix(r, img->name) : 0;
}

void qcow2_bitmaps_release(struct qcow2_image *img)
{
	struct qcow2_wstate *w = img->w;

	qcow2_bitmaps_free_w(w->bm, w->n_bm);
	w->bm = NULL;
	w->n_bm = 0;
	w->bm_loaded = false;
	w->bm_marked = false;
}

int qcow2_bitmaps_resize(struct qcow2_image *img, uint64_t new_size)
{
	struct qcow2_wstate *w = img->w;
	uint32_t i;
	int r = 0;

	for (i = 0; r == 0 && i < w->n_bm; i++) {
		struct qcow2_wbitmap *b = &w->bm[i];
		uint64_t nbits, old_bytes, new_bytes;
		uint8_t *p;

		if (b->e.flags & QCOW2_BITMAP_IN_USE)
			continue; /* inconsistent: no size to keep */
		if (!b->bits && (r = load_bits(img, b)) < 0)
			break;
		nbits = (new_size >> b->e.granularity_bits) +
			!!(new_size & ((1ull << b->e.granularity_bits) - 1));
		old_bytes = (b->nbits + 7) / 8;
		new_bytes = (nbits + 7) / 8;
		if (new_bytes > QCOW2_BITMAP_MAX_DATA_BYTES) {
			r = qcow2_set_error(-EFBIG, "bitmap '%s' would be too large", b->e.name);
			break;
		}
		p = realloc(b->bits, new_bytes ? new_bytes : 1);
		if (!p) {
			r = qcow2_oom_for("bitmap '%s'", b->e.name);
			break;
		}
		if (new_bytes > old_bytes)
			memset(p + old_bytes, 0, new_bytes - old_bytes);
		b->bits = p;
		b->nbits = nbits;
	}
	return r;
}
