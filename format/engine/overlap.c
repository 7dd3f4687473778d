/* SPDX-License-Identifier: MIT */
/*
 * overlap.c - the live metadata of a writable image, and the check every host write passes
 * against it (so a write never makes a damaged image worse), as QEMU's overlap checks
 * (qcow2_check_metadata_overlap) protect an image.
 *
 * What is live metadata: the header cluster, the active L1 table, the L2 tables it points at,
 * the refcount table and blocks, the snapshot table, every snapshot's L1 table, and while the
 * bitmaps extension is in force (its autoclear bit set) the bitmap directory and tables. The L2
 * tables of snapshots are not held (QEMU checks them only in its "all" mode): knowing them means
 * reading every snapshot's L1 table and keeping their L2 offsets at every writable open, while
 * the tables a snapshot shares with the active state are held anyway, and a snapshot's own ones
 * keep a refcount the allocator respects (a writable open checks the refcounts of everything
 * held here).
 *
 * Two structures, so that a check costs O(log k) plus one hash probe per cluster written:
 *   - the tables the header and the snapshot table place (few, contiguous, rarely moved), as
 *     sorted disjoint segments of clusters, each with the kinds that lie there, recomputed when
 *     one moves (qcow2_overlap_update_tables());
 *   - the cluster-sized ones (L2 tables, refcount blocks), as a hash set of cluster indices with
 *     a count per kind (two L1 entries may name one table), kept up to date as L1 entries and
 *     refcount table entries change. Its room is reserved before a table is taken, so an update
 *     never fails.
 *
 * The check is the guard of img->io (io.c), so every write of the image file passes it: data
 * written in place, copy-on-write, compressed clusters, preallocation, and the write-back of L2
 * tables, refcount blocks, the refcount table, the L1 table and the header, which say what they
 * write and may overlap only metadata of that kind. An overlap fails the write with -EIO, names
 * the image, the offset and what lies there, sets the corrupt bit on disk (incompatible bit 1,
 * as qcow2_signal_corruption() does) and leaves the image refusing every further change
 * (qcow2_overlap_writable()); what was already acknowledged may still be written back, each write
 * checked again. A hole punched over live metadata is skipped.
 *
 * The allocator (refcount.c) never hands out a cluster held here, whatever its refcount says,
 * and a deferred count-down never takes one from 1 to 0 (an entry that wrongly pointed at a
 * table is dropped, the table keeps its own reference). Every table the engine stops using
 * leaves the map before its count-down is applied (L2 tables when their L1 entry changes,
 * moved tables once the header no longer names them), which the unit tests check against a
 * fresh open after every kind of change; so a stale entry could only cost a leak.
 *
 * The entries of the active L2 tables are checked against this structure before the first
 * change of an open (overlap-tables.c); this file remembers which tables passed.
 *
 * Locking: ol->lock (a rwlock, a leaf) guards the segments and the hash: the check takes it
 * shared, updates (under w->lock) exclusive. w->corrupt is atomic.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/engine.h"

#define EMPTY	UINT64_MAX
#define N_KINDS 9

struct seg {
	uint64_t first, end; /* clusters [first, end) */
	unsigned kinds;
};

struct slot {
	uint64_t key;	 /* cluster index, EMPTY */
	uint32_t l2, rb; /* L1 entries / refcount table entries naming it */
	bool checked;	 /* an L2 table whose entries qcow2_overlap_check_table() passed */
};

struct bm_table {
	uint64_t off, bytes;
};

struct qcow2_overlap {
	pthread_rwlock_t lock;
	uint32_t cluster_bits;
	struct seg *segs; /* under lock */
	size_t n_segs;
	struct slot *slots; /* under lock; cap a power of two, at most half used */
	size_t cap, used;
	unsigned shift;
	struct bm_table *bitmaps; /* the bitmap tables: read at init, again when they change */
	size_t n_bitmaps;
	bool all_checked; /* every active L2 table passed (under w->lock; reset by fill_hash()) */
};

static const char *const kind_names[N_KINDS] = {
    "header",	      "L1 table",	   "L2 table",	       "refcount table", "refcount block",
    "snapshot table", "snapshot L1 table", "bitmap directory", "bitmap table",
};

static const char *kind_name(unsigned kinds)
{
	return kinds ? kind_names[__builtin_ctz(kinds)] : "metadata";
}

/* ---- the hash set of L2 tables and refcount blocks ---- */

static size_t slot_of(const struct qcow2_overlap *ol, uint64_t key)
{
	return (size_t)((key * 0x9e3779b97f4a7c15ull) >> ol->shift);
}

static struct slot *find(const struct qcow2_overlap *ol, uint64_t key)
{
	size_t mask = ol->cap - 1, i = slot_of(ol, key);

	while (ol->slots[i].key != EMPTY) {
		if (ol->slots[i].key == key)
			return &ol->slots[i];
		i = (i + 1) & mask;
	}
	return NULL;
}

static struct slot *place(struct qcow2_overlap *ol, uint64_t key)
{
	size_t mask = ol->cap - 1, i = slot_of(ol, key);

	while (ol->slots[i].key != EMPTY && ol->slots[i].key != key)
		i = (i + 1) & mask;
	if (ol->slots[i].key == EMPTY) {
		ol->slots[i].key = key;
		ol->used++;
	}
	return &ol->slots[i];
}

/* Rehash into @cap slots (a power of two). */
static int resize(struct qcow2_overlap *ol, size_t cap)
{
	struct slot *old = ol->slots, *s;
	size_t old_cap = ol->cap, i;

	s = malloc(cap * sizeof(*s));
	if (!s)
		return qcow2_oom_for("the metadata map");
	for (i = 0; i < cap; i++)
		s[i] = (struct slot){EMPTY, 0, 0, false};
	ol->slots = s;
	ol->cap = cap;
	ol->shift = 64 - (unsigned)__builtin_ctzll(cap);
	ol->used = 0;
	for (i = 0; i < old_cap; i++) {
		if (old[i].key == EMPTY)
			continue;
		s = place(ol, old[i].key);
		s->l2 = old[i].l2;
		s->rb = old[i].rb;
	}
	free(old);
	return 0;
}

/* Room for @n more keys at a load of at most one half. */
static int reserve(struct qcow2_overlap *ol, size_t n)
{
	size_t cap = ol->cap ? ol->cap : 64;

	while ((ol->used + n) * 2 > cap) {
		if (cap > SIZE_MAX / 4 / sizeof(struct slot))
			return qcow2_oom_for("the metadata map");
		cap *= 2;
	}
	return cap == ol->cap ? 0 : resize(ol, cap);
}

/* Remove the slot at @i (both counts 0), shifting the probe run after it back. */
static void erase(struct qcow2_overlap *ol, size_t i)
{
	size_t mask = ol->cap - 1, j = i, k;

	for (;;) {
		j = (j + 1) & mask;
		if (ol->slots[j].key == EMPTY)
			break;
		k = slot_of(ol, ol->slots[j].key);
		/* move j back to i unless its home lies cyclically in (i, j] */
		if (i <= j ? (k <= i || k > j) : (k <= i && k > j)) {
			ol->slots[i] = ol->slots[j];
			i = j;
		}
	}
	ol->slots[i] = (struct slot){EMPTY, 0, 0, false};
	ol->used--;
}

/* Count @key up (@delta 1) or down (-1) as kind @kind (QCOW2_OL_L2 or QCOW2_OL_REFBLOCK). */
static void count(struct qcow2_overlap *ol, uint64_t key, unsigned kind, int delta)
{
	struct slot *s;

	if (delta > 0) {
		if ((ol->used + 1) * 2 > ol->cap && reserve(ol, 1) < 0)
			return; /* not reached: callers reserve first */
		s = place(ol, key);
		if (kind == QCOW2_OL_L2)
			s->l2++;
		else
			s->rb++;
		return;
	}
	s = find(ol, key);
	if (!s)
		return;
	if (kind == QCOW2_OL_L2 && s->l2)
		s->l2--;
	else if (kind == QCOW2_OL_REFBLOCK && s->rb)
		s->rb--;
	if (!s->l2 && !s->rb)
		erase(ol, (size_t)(s - ol->slots));
}

static unsigned slot_kinds(const struct qcow2_overlap *ol, uint64_t key)
{
	const struct slot *s = ol->cap ? find(ol, key) : NULL;

	return s ? (s->l2 ? QCOW2_OL_L2 : 0) | (s->rb ? QCOW2_OL_REFBLOCK : 0) : 0;
}

/* ---- the segments of the tables the header places ---- */

struct rng {
	uint64_t first, end;
	unsigned kind;
};

struct rngs {
	struct rng *r;
	size_t n, cap;
	uint32_t cluster_bits;
};

/* Add [@off, @off + @bytes) (bytes) as @kind. */
static int add(struct rngs *v, uint64_t off, uint64_t bytes, unsigned kind)
{
	uint64_t cs = 1ull << v->cluster_bits, end;

	if (!bytes)
		return 0;
	if (v->n == v->cap) {
		size_t cap = v->cap ? 2 * v->cap : 16;
		struct rng *p = realloc(v->r, cap * sizeof(*p));

		if (!p)
			return qcow2_oom_for("the metadata map");
		v->r = p;
		v->cap = cap;
	}
	if (__builtin_add_overflow(off, bytes, &end) || end > UINT64_MAX - cs)
		end = UINT64_MAX - cs;
	if (off >> v->cluster_bits >= (end + cs - 1) >> v->cluster_bits)
		return 0; /* only where offsets run out: no write reaches there */
	v->r[v->n++] =
	    (struct rng){off >> v->cluster_bits, (end + cs - 1) >> v->cluster_bits, kind};
	return 0;
}

static int cmp_event(const void *a, const void *b)
{
	const uint64_t *x = a, *y = b;

	return x[0] < y[0] ? -1 : x[0] > y[0];
}

/* Sorted disjoint segments from @v: a sweep over the start and end of every range, keeping a
 * count per kind. */
static int sweep(const struct rngs *v, struct seg **out, size_t *n_out)
{
	uint64_t *ev = malloc((v->n ? 2 * v->n : 1) * 2 * sizeof(uint64_t));
	struct seg *segs = malloc((v->n ? 2 * v->n : 1) * sizeof(*segs));
	uint32_t cnt[N_KINDS] = {0};
	size_t i, n = 0, ne = 0;
	unsigned mask = 0, k;

	if (!ev || !segs) {
		free(ev);
		free(segs);
		return qcow2_oom_for("the metadata map");
	}
	for (i = 0; i < v->n; i++) {
		k = (unsigned)__builtin_ctz(v->r[i].kind);
		ev[2 * ne] = v->r[i].first;
		ev[2 * ne++ + 1] = k << 1 | 1; /* start */
		ev[2 * ne] = v->r[i].end;
		ev[2 * ne++ + 1] = k << 1; /* end */
	}
	qsort(ev, ne, 2 * sizeof(uint64_t), cmp_event);
	for (i = 0; i < ne; i++) {
		if (i && ev[2 * i] != ev[2 * (i - 1)] && mask) {
			uint64_t a = ev[2 * (i - 1)], b = ev[2 * i];

			if (n && segs[n - 1].end == a && segs[n - 1].kinds == mask)
				segs[n - 1].end = b;
			else
				segs[n++] = (struct seg){a, b, mask};
		}
		k = (unsigned)(ev[2 * i + 1] >> 1);
		if (ev[2 * i + 1] & 1)
			cnt[k]++;
		else
			cnt[k]--;
		mask = cnt[k] ? mask | 1u << k : mask & ~(1u << k);
	}
	free(ev);
	*out = segs;
	*n_out = n;
	return 0;
}

static int collect(struct qcow2_image *img, struct rngs *v)
{
	const struct qcow2_header *h = &img->h;
	struct qcow2_wstate *w = img->w;
	struct qcow2_overlap *ol = w->ol;
	uint32_t cb = h->cluster_bits, i;
	int r;

	r = add(v, 0, 1, QCOW2_OL_HEADER);
	if (r == 0)
		r = add(v, h->l1_off, (uint64_t)img->l1.n * 8, QCOW2_OL_L1);
	if (r == 0 && w->l1_moved)
		r = add(v, w->old_l1.first << cb, w->old_l1.count << cb, QCOW2_OL_L1);
	if (r == 0)
		r = add(v, h->reftable_off, (uint64_t)h->reftable_clusters << cb, QCOW2_OL_REFT);
	if (r == 0 && w->reft_moved)
		r = add(v, w->old_reft.first << cb, w->old_reft.count << cb, QCOW2_OL_REFT);
	if (r == 0 && h->nb_snapshots)
		r = add(v, h->snapshots_off, img->snap_table_bytes, QCOW2_OL_SNAP_TABLE);
	/* An unreadable entry's L1 range (misaligned, too large, past the end of the file) is no
	 * table anyone reads: holding it would make a huge bogus size forbid every write and its
	 * unreferenced clusters refuse the writable open, for a snapshot nothing can use. */
	for (i = 0; r == 0 && i < h->nb_snapshots; i++)
		if (!img->snaps[i].unreadable)
			r = add(v, img->snaps[i].l1_off, (uint64_t)img->snaps[i].l1_entries * 8,
				QCOW2_OL_SNAP_L1);
	if (h->has_bitmaps_ext && (h->autoclear & QCOW2_AUTOCLEAR_BITMAPS)) {
		if (r == 0)
			r = add(v, h->bitmap_dir_off, h->bitmap_dir_bytes, QCOW2_OL_BITMAP_DIR);
		for (i = 0; r == 0 && i < ol->n_bitmaps; i++)
			r = add(v, ol->bitmaps[i].off, ol->bitmaps[i].bytes, QCOW2_OL_BITMAP_TABLE);
	}
	return r;
}

int qcow2_overlap_update_tables(struct qcow2_image *img)
{
	struct qcow2_overlap *ol = img->w ? img->w->ol : NULL;
	struct rngs v = {.cluster_bits = img->h.cluster_bits};
	struct seg *segs = NULL, *old;
	size_t n = 0;
	int r;

	if (!ol)
		return 0;
	r = collect(img, &v);
	if (r == 0)
		r = sweep(&v, &segs, &n);
	free(v.r);
	if (r < 0)
		return r;
	pthread_rwlock_wrlock(&ol->lock);
	old = ol->segs;
	ol->segs = segs;
	ol->n_segs = n;
	pthread_rwlock_unlock(&ol->lock);
	free(old);
	return 0;
}

/* The kinds (not in @own) of the first segment overlapping clusters [@c0, @c1]; *@at gets its
 * first cluster there. ol->lock held. */
static unsigned seg_lookup(const struct qcow2_overlap *ol, uint64_t c0, uint64_t c1, unsigned own,
			   uint64_t *at)
{
	size_t lo = 0, hi = ol->n_segs;

	while (lo < hi) { /* the first segment ending after c0 */
		size_t mid = lo + (hi - lo) / 2;

		if (ol->segs[mid].end > c0)
			hi = mid;
		else
			lo = mid + 1;
	}
	for (; lo < ol->n_segs && ol->segs[lo].first <= c1; lo++) {
		if (ol->segs[lo].kinds & ~own) {
			*at = ol->segs[lo].first > c0 ? ol->segs[lo].first : c0;
			return ol->segs[lo].kinds & ~own;
		}
	}
	return 0;
}

/* The kinds not in @own of the first cluster of [@c0, @c1] holding metadata; *@at gets it. */
static unsigned lookup(struct qcow2_overlap *ol, uint64_t c0, uint64_t c1, unsigned own,
		       uint64_t *at)
{
	uint64_t seg_at = UINT64_MAX, c;
	unsigned kinds, found = 0;

	pthread_rwlock_rdlock(&ol->lock);
	kinds = seg_lookup(ol, c0, c1, own, &seg_at);
	if (kinds) {
		found = kinds;
		*at = seg_at;
		c1 = seg_at; /* an earlier cluster in the hash comes first */
	}
	if (!(own & QCOW2_OL_L2) || !(own & QCOW2_OL_REFBLOCK)) {
		for (c = c0; c <= c1 && ol->used; c++) {
			kinds = slot_kinds(ol, c) & ~own;
			if (kinds && (!found || c < seg_at)) {
				found = kinds;
				*at = c;
				break;
			}
			if (c == UINT64_MAX)
				break;
		}
	}
	pthread_rwlock_unlock(&ol->lock);
	return found;
}

uint64_t qcow2_overlap_busy(struct qcow2_image *img, uint64_t first, uint64_t n)
{
	return qcow2_overlap_held(img, first, n, 0, NULL);
}

uint64_t qcow2_overlap_held(struct qcow2_image *img, uint64_t first, uint64_t n, unsigned own,
			    const char **what)
{
	struct qcow2_overlap *ol = img->w ? img->w->ol : NULL;
	uint64_t at = UINT64_MAX;
	unsigned kinds;

	if (!ol || !n)
		return UINT64_MAX;
	kinds = lookup(ol, first, first + n - 1, own & QCOW2_OL_ALL, &at);
	if (kinds && what)
		*what = kind_name(kinds);
	return kinds ? at : UINT64_MAX;
}

/* ---- L1 and refcount table changes ---- */

int qcow2_overlap_reserve(struct qcow2_image *img, size_t n)
{
	struct qcow2_overlap *ol = img->w ? img->w->ol : NULL;
	int r;

	if (!ol)
		return 0;
	pthread_rwlock_wrlock(&ol->lock);
	r = reserve(ol, n);
	pthread_rwlock_unlock(&ol->lock);
	return r;
}

void qcow2_overlap_l1_changed(struct qcow2_image *img, uint64_t old, uint64_t new_e)
{
	struct qcow2_overlap *ol = img->w ? img->w->ol : NULL;
	uint32_t cb = img->h.cluster_bits;

	old &= QCOW2_L1E_OFFSET_MASK;
	new_e &= QCOW2_L1E_OFFSET_MASK;
	if (!ol || old == new_e)
		return;
	pthread_rwlock_wrlock(&ol->lock);
	if (old)
		count(ol, old >> cb, QCOW2_OL_L2, -1);
	if (new_e)
		count(ol, new_e >> cb, QCOW2_OL_L2, 1);
	pthread_rwlock_unlock(&ol->lock);
}

void qcow2_overlap_add_refblock(struct qcow2_image *img, uint64_t host_off)
{
	struct qcow2_overlap *ol = img->w ? img->w->ol : NULL;

	if (!ol)
		return;
	pthread_rwlock_wrlock(&ol->lock);
	count(ol, host_off >> img->h.cluster_bits, QCOW2_OL_REFBLOCK, 1);
	pthread_rwlock_unlock(&ol->lock);
}

/* The hash from the active L1 table and the refcount table. */
static int fill_hash(struct qcow2_image *img)
{
	struct qcow2_overlap *ol = img->w->ol;
	uint32_t cb = img->h.cluster_bits, i;
	size_t n = 0;
	int r;

	for (i = 0; i < img->l1.n; i++)
		n += (img->l1.entries[i] & QCOW2_L1E_OFFSET_MASK) != 0;
	for (i = 0; i < img->refs.n; i++)
		n += img->refs.table[i] != 0;
	pthread_rwlock_wrlock(&ol->lock);
	free(ol->slots);
	ol->slots = NULL;
	ol->cap = ol->used = 0;
	ol->all_checked = false;
	r = reserve(ol, n + 16);
	for (i = 0; r == 0 && i < img->l1.n; i++) {
		uint64_t e = img->l1.entries[i] & QCOW2_L1E_OFFSET_MASK;

		if (e)
			count(ol, e >> cb, QCOW2_OL_L2, 1);
	}
	for (i = 0; r == 0 && i < img->refs.n; i++)
		if (img->refs.table[i])
			count(ol, img->refs.table[i] >> cb, QCOW2_OL_REFBLOCK, 1);
	pthread_rwlock_unlock(&ol->lock);
	return r;
}

int qcow2_overlap_rebuild(struct qcow2_image *img)
{
	int r;

	if (!img->w || !img->w->ol)
		return 0;
	r = fill_hash(img);
	return r < 0 ? r : qcow2_overlap_update_tables(img);
}

/* ---- corruption ---- */

int qcow2_overlap_writable(const struct qcow2_image *img)
{
	if (!img->w)
		return qcow2_set_error(-EROFS, "'%s' is open read-only", img->name);
	if (__atomic_load_n(&img->w->corrupt, __ATOMIC_ACQUIRE))
		return qcow2_set_error(-EROFS, "'%s' is marked corrupt: read-only from now on",
				       img->name);
	return 0;
}

/* Set the corrupt bit in the header on disk, durable (version 3: version 2 has no feature
 * bits, and QEMU keeps the mark in memory only then). The header's own check is bypassed: the
 * mark must reach the disk whatever claims the header cluster. */
static void mark_corrupt(struct qcow2_image *img)
{
	uint64_t incompat =
	    __atomic_or_fetch(&img->h.incompat, QCOW2_INCOMPAT_CORRUPT, __ATOMIC_ACQ_REL);
	uint8_t b[8];

	if (img->h.version < 3)
		return;
	incompat &= ~QCOW2_INCOMPAT_DIRTY;
	if (__atomic_load_n(&img->w->set_dirty, __ATOMIC_ACQUIRE))
		incompat |= QCOW2_INCOMPAT_DIRTY;
	put_be64(b, incompat);
	if (qcow2_io_pwrite_meta(img->io, b, 8, OFF_INCOMPAT, QCOW2_OL_ALL) == 0)
		(void)qcow2_io_flush(img->io);
}

void qcow2_overlap_refused(struct qcow2_image *img)
{
	if (!__atomic_exchange_n(&img->w->corrupt, true, __ATOMIC_ACQ_REL))
		mark_corrupt(img);
}

/* The io guard of a writable image: the write of @n bytes at @off, which is metadata of the
 * kinds @own (0: data), may not overlap any other live metadata. */
static int guard(void *ctx, uint64_t off, uint64_t n, unsigned own)
{
	struct qcow2_image *img = ctx;
	uint32_t cb = img->h.cluster_bits;
	uint64_t at = 0, end;
	unsigned kinds;

	if (__builtin_add_overflow(off, n - 1, &end))
		end = UINT64_MAX;
	kinds = lookup(img->w->ol, off >> cb, end >> cb, own & QCOW2_OL_ALL, &at);
	if (!kinds)
		return 0;
	if (own & QCOW2_IO_PUNCH)
		return -EIO; /* skipped quietly: a hole is only space given back */
	qcow2_overlap_refused(img);
	return qcow2_set_error(-EIO,
			       "'%s': preventing write on metadata at %#" PRIx64 " (%s at %#" PRIx64
			       "): image marked corrupt, read-only from now on",
			       img->name, off, kind_name(kinds), at << cb);
}

/* ---- which L2 tables passed their check (overlap-tables.c checks them) ---- */

bool qcow2_overlap_table_checked(struct qcow2_image *img, uint64_t l2_off)
{
	struct qcow2_overlap *ol = img->w ? img->w->ol : NULL;
	const struct slot *s;
	bool ok;

	if (!ol)
		return true;
	pthread_rwlock_rdlock(&ol->lock);
	s = ol->cap ? find(ol, l2_off >> img->h.cluster_bits) : NULL;
	ok = s && s->checked;
	pthread_rwlock_unlock(&ol->lock);
	return ok;
}

void qcow2_overlap_set_checked(struct qcow2_image *img, uint64_t l2_off)
{
	struct qcow2_overlap *ol = img->w->ol;
	struct slot *s;

	pthread_rwlock_wrlock(&ol->lock);
	s = ol->cap ? find(ol, l2_off >> img->h.cluster_bits) : NULL;
	if (s)
		s->checked = true;
	pthread_rwlock_unlock(&ol->lock);
}

bool qcow2_overlap_all_checked(const struct qcow2_image *img)
{
	const struct qcow2_overlap *ol = img->w ? img->w->ol : NULL;

	return !ol || ol->all_checked;
}

void qcow2_overlap_set_all_checked(struct qcow2_image *img)
{
	img->w->ol->all_checked = true;
}

/* ---- at open ---- */

/* The bitmap tables named by the bitmap directory, when the bitmaps are in force (decoded
 * leniently: an entry QEMU refuses still names clusters that must not be overwritten). A
 * directory that cannot be read or decoded leaves the rest (the check reports it). */
static int read_bitmaps(struct qcow2_image *img)
{
	struct qcow2_overlap *ol = img->w->ol;
	struct qcow2_bitmap *bm;
	uint32_t n, i;
	int r = qcow2_image_bitmaps(img, true, &bm, &n);

	if (r == -ENOMEM)
		return r;
	qcow2_clear_error();
	if (r < 0 || n == 0)
		return 0;
	ol->bitmaps = calloc(n, sizeof(*ol->bitmaps));
	if (!ol->bitmaps) {
		qcow2_bitmaps_free(bm, n);
		return qcow2_oom_for("the bitmap directory");
	}
	for (i = 0; i < n; i++)
		ol->bitmaps[ol->n_bitmaps++] =
		    (struct bm_table){bm[i].table_off & ~511ull, (uint64_t)bm[i].table_entries * 8};
	qcow2_bitmaps_free(bm, n);
	return 0;
}

int qcow2_overlap_reload_bitmaps(struct qcow2_image *img)
{
	struct qcow2_overlap *ol = img->w ? img->w->ol : NULL;
	int r;

	if (!ol)
		return 0;
	free(ol->bitmaps);
	ol->bitmaps = NULL;
	ol->n_bitmaps = 0;
	r = read_bitmaps(img);
	return r < 0 ? r : qcow2_overlap_update_tables(img);
}

int qcow2_overlap_init(struct qcow2_image *img)
{
	struct qcow2_overlap *ol = calloc(1, sizeof(*ol));
	struct qcow2_io_guard g = {guard, img};
	int r;

	if (!ol)
		return qcow2_oom_for("the metadata map");
	pthread_rwlock_init(&ol->lock, NULL);
	ol->cluster_bits = img->h.cluster_bits;
	img->w->ol = ol;
	r = read_bitmaps(img);
	if (r == 0)
		r = qcow2_overlap_rebuild(img);
	if (r == 0)
		qcow2_io_set_guard(img->io, &g);
	return r;
}

void qcow2_overlap_release(struct qcow2_image *img)
{
	struct qcow2_overlap *ol = img->w ? img->w->ol : NULL;

	if (!ol)
		return;
	qcow2_io_set_guard(img->io, NULL);
	pthread_rwlock_destroy(&ol->lock);
	free(ol->segs);
	free(ol->slots);
	free(ol->bitmaps);
	free(ol);
	img->w->ol = NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int unreferenced(const struct qcow2_image *img, unsigned kinds, uint64_t idx)
{
	return qcow2_set_error(-EUCLEAN,
			       "the %s at %#" PRIx64 " has refcount 0: refusing to write the image "
			       "(repair it with 'qcowctl check --repair')",
			       kind_name(kinds), idx << img->h.cluster_bits);
}

int qcow2_overlap_verify_refcounts(struct qcow2_image *img)
{
	struct qcow2_overlap *ol = img->w->ol;
	const unsigned skip = QCOW2_OL_BITMAP_DIR | QCOW2_OL_BITMAP_TABLE;
	struct qcow2_refcount_cursor rc = QCOW2_REFCOUNT_CURSOR_INIT;
	uint64_t v, c, *keys = NULL;
	size_t i, n = 0;
	int r = 0;

	/* the clusters of the hash, sorted so that each refcount block is read once */
	if (r == 0 && !(keys = malloc((ol->used ? ol->used : 1) * sizeof(*keys))))
		r = qcow2_oom();
	for (i = 0; r == 0 && i < ol->cap; i++)
		if (ol->slots[i].key != EMPTY)
			keys[n++] = ol->slots[i].key;
	if (r == 0)
		qsort(keys, n, sizeof(*keys), cmp_u64);
	for (i = 0; r == 0 && i < n; i++) {
		r = qcow2_refcount_peek(img, keys[i], &rc, &v);
		if (r == 0 && v == 0)
			r = unreferenced(img, slot_kinds(ol, keys[i]), keys[i]);
	}
	for (i = 0; r == 0 && i < ol->n_segs; i++) {
		if (!(ol->segs[i].kinds & ~skip))
			continue;
		for (c = ol->segs[i].first; r == 0 && c < ol->segs[i].end; c++) {
			r = qcow2_refcount_peek(img, c, &rc, &v);
			if (r == 0 && v == 0)
				r = unreferenced(img, ol->segs[i].kinds & ~skip, c);
		}
	}
	free(keys);
	qcow2_refcount_cursor_release(&rc);
	return r;
}
