/* SPDX-License-Identifier: MIT */
/*
 * snapshot-write.c - creating, applying and deleting internal snapshots of a writable image.
 *
 * Refcounts (qcow2.txt) count references per path, as QEMU keeps and checks them: an L2 table
 * once per L1 entry pointing at it, a data cluster once per L2 entry of every L1 table (active
 * or snapshot) that reaches it, so a data cluster in an L2 table the active state shares with
 * two snapshots has refcount 3, and a host cluster holding several compressed clusters one per
 * compressed cluster. Every operation here therefore raises or lowers by one per path the
 * refcounts of what an L1 table reaches ("its reach": L2 tables, data clusters, every host
 * cluster a compressed cluster touches). The COPIED flag of an active L1 or L2 entry means
 * "refcount 1" and write.c's in-place path trusts it, so it is cleared, durably, before a
 * snapshot sharing the cluster can be seen, and set again where a refcount falls back to 1.
 *
 * Before changing anything an operation works out its plan (snapshot-plan.c): which refcounts
 * change and the new snapshot table. A refusal there changes nothing.
 *
 * Write order, each stage durable before the next (refcount raises reach the disk before the
 * tables that need them, by qcow2_image_flush_locked()'s stages):
 *   create: the active reach raised and its COPIED flags cleared, a copy of the active L1
 *           table written; the new snapshot table (old entries byte for byte, then the new
 *           one); the header's nb_snapshots and snapshots_offset in one write; the old table
 *           freed.
 *   apply:  the snapshot's reach raised and its tables' COPIED flags cleared, a copy of its L1
 *           table (the disk's part, not the VM state) written; the header's L1 offset, L1
 *           size and virtual size in one write; the old active reach and L1 table counted
 *           down, COPIED set where refcounts fell to 1.
 *   delete: the table without the entry; the header; the snapshot's reach and L1 table
 *           counted down, COPIED set on the active tables where refcounts fell to 1. (The
 *           journal that lets a rerun finish a delete stopped after its header write is
 *           snapshot-resume.c's, written before all this and removed after.)
 *   drop:   (an unreadable entry, whose L1 table is not trusted) the table without the entry;
 *           the header; the old table freed. What only it reached is leaked, for a refcount
 *           repair to free.
 * Counting down goes through refcount.c's deferred frees, applied after the flush that made
 * the last pointer go away. So a crash at any point leaves a valid image that at worst leaks
 * clusters (or, like QEMU, lacks a COPIED flag on a cluster whose refcount just fell to 1).
 *
 * Failure: before the header write, a failure leaves raised refcounts (leaks) and in-memory
 * state that agrees with itself. A failed header write is undone in memory and the header is
 * marked dirty, so the next flush writes the old one back, while everything the new header
 * points at stays allocated: whichever of the two the disk holds is valid.
 *
 * Bitmaps: creating and deleting change no guest data, so the bitmaps' autoclear bit stays
 * (unknown autoclear bits are cleared, as qcow2.txt asks of a writer that does not know them);
 * applying changes the guest data and is refused while persistent bitmaps exist, as in QEMU.
 *
 * Locking: an operation holds w->frees exclusive (no read or write of the image runs) and
 * w->lock throughout; the snapshot list and arrays change under img->snap_lock too.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "snapshot/snapshot.h"

static uint64_t clusters_of(const struct qcow2_image *img, uint64_t bytes)
{
	return (bytes + img->cluster_bytes - 1) >> img->h.cluster_bits;
}

static bool has_data_file(const struct qcow2_image *img)
{
	return img->h.incompat & QCOW2_INCOMPAT_DATA_FILE;
}

/* ---- the changes ---- */

/* Write everything back, durable, then count down what that unlinked: qcow2_image_flush()
 * with the locks already held (w->frees exclusive: no read can use those clusters). */
static int settle(struct qcow2_image *img)
{
	int r = qcow2_image_flush_locked(img);

	if (r == 0 && img->w->n_pending)
		r = qcow2_refcount_apply_frees(img, img->w->n_pending);
	return r;
}

/* Raise the refcounts the plan raises (the count-downs come after the header switch). */
static int raise_refcounts(struct qcow2_snapshot_change *o)
{
	uint64_t v;
	size_t i;
	int r = 0;

	for (i = 0; i < o->n && r == 0; i++) {
		if (!o->d[i].plus)
			continue;
		r = qcow2_refcount_get_w(o->img, o->d[i].idx, &v);
		if (r == 0)
			r = qcow2_refcount_set_w(o->img, o->d[i].idx, v + o->d[i].plus);
	}
	return r;
}

/* Queue the count-downs the plan makes, applied after the next flush. */
static int lower_refcounts(struct qcow2_snapshot_change *o)
{
	uint64_t cs = o->img->cluster_bytes;
	uint32_t k;
	size_t i;
	int r = 0;

	for (i = 0; i < o->n && r == 0; i++)
		for (k = 0; k < o->d[i].minus && r == 0; k++)
			r = qcow2_refcount_defer_free(o->img, o->d[i].idx << o->img->h.cluster_bits,
						      cs);
	return r;
}

/* Store the whole L2 table @t at @l2_off in the cache (dirty), making room if needed. */
static int store_table(struct qcow2_image *img, uint64_t l2_off, const uint64_t *t)
{
	int r = qcow2_l2cache_modify(img->l2cache, img->io, l2_off, t, 0, 0, NULL);

	if (r == -EAGAIN) { /* every cached table is dirty: write them back */
		r = qcow2_image_flush_locked(img);
		if (r == 0)
			r = qcow2_l2cache_modify(img->l2cache, img->io, l2_off, t, 0, 0, NULL);
		if (r == -EAGAIN)
			r = qcow2_set_error(-ENOMEM, "L2 cache too small");
	}
	return r;
}

/* The COPIED flag @e should carry: set iff the refcount of what it points at is 1. */
static int flagged(struct qcow2_image *img, uint64_t e, uint64_t host, uint64_t *out)
{
	uint64_t v;
	int r = qcow2_refcount_get_w(img, host >> img->h.cluster_bits, &v);

	*out = v == 1 ? e | QCOW2_OFLAG_COPIED : e & ~QCOW2_OFLAG_COPIED;
	return r;
}

/* Set the COPIED flags in the L2 tables the L1 table @l1 (@n entries) reaches from the
 * refcounts, and write its entries with their flags to @out. */
static int fix_flags(struct qcow2_image *img, const uint64_t *l1, uint32_t n, uint64_t *out)
{
	uint32_t words = (uint32_t)(img->cluster_bytes / 8), i, j;
	uint64_t *t = malloc(img->cluster_bytes), want;
	int r = t ? 0 : qcow2_oom();

	for (i = 0; i < n && r == 0; i++) {
		uint64_t l2 = l1[i] & QCOW2_L1E_OFFSET_MASK;
		bool changed = false;

		out[i] = l1[i];
		if (!l2)
			continue;
		r = flagged(img, l1[i], l2, &out[i]);
		if (r == 0)
			r = qcow2_l2cache_get(img->l2cache, img->io, l2, 0, words, t);
		for (j = 0; j < words && r == 0; j += img->l2_entry_words) {
			uint64_t host = t[j] & QCOW2_L2E_OFFSET_MASK;

			if (!host || (t[j] & QCOW2_OFLAG_COMPRESSED))
				continue;
			r = flagged(img, t[j], host, &want);
			changed |= want != t[j];
			t[j] = want;
		}
		if (r == 0 && changed)
			r = store_table(img, l2, t);
	}
	free(t);
	return r;
}

/* COPIED flags of the active tables from the refcounts. */
static int fix_active(struct qcow2_image *img)
{
	uint64_t *out = malloc(img->l1.n ? (size_t)img->l1.n * 8 : 1);
	uint32_t i;
	int r = out ? 0 : qcow2_oom();

	if (r == 0)
		r = fix_flags(img, img->l1.entries, img->l1.n, out);
	for (i = 0; i < img->l1.n && r == 0; i++)
		if (out[i] != img->l1.entries[i])
			qcow2_write_l1_set(img, i, out[i]);
	free(out);
	return r;
}

/* Allocate clusters for @bytes of @buf and write them, zero-padded to whole clusters. */
static int alloc_write(struct qcow2_image *img, const void *buf, uint64_t bytes, uint64_t *off)
{
	uint64_t n = clusters_of(img, bytes), len = n << img->h.cluster_bits;
	uint8_t *pad;
	int r;

	*off = 0;
	if (!n)
		return 0;
	pad = calloc(1, len);
	if (!pad)
		return qcow2_oom();
	memcpy(pad, buf, bytes);
	r = qcow2_refcount_alloc(img, n, off);
	if (r == 0) {
		r = qcow2_io_pwrite(img->io, pad, len, *off);
		if (r < 0)
			qcow2_refcount_unalloc(img, *off, n);
	}
	free(pad);
	return r;
}

/* Encode the L1 table @l1 (@n entries) without COPIED flags, for a snapshot or as the new
 * active table (whose flags the caller has set), and write it to new clusters. */
static int write_l1_copy(struct qcow2_image *img, const uint64_t *l1, uint32_t n, bool flags,
			 uint64_t *off)
{
	uint8_t *buf = malloc(n ? (size_t)n * 8 : 1);
	uint32_t i;
	int r;

	if (!buf)
		return qcow2_oom();
	for (i = 0; i < n; i++)
		put_be64(buf + 8 * i, flags ? l1[i] : l1[i] & ~QCOW2_OFLAG_COPIED);
	r = alloc_write(img, buf, (uint64_t)n * 8, off);
	free(buf);
	return r;
}

/* The header with @img->h's new fields, durable. On failure the disk may hold the old header
 * or the new one, both valid: the caller puts the old fields back in memory, and the next
 * flush writes them again. */
static int switch_header(struct qcow2_image *img)
{
	int r = qcow2_image_write_header(img);

	if (r == 0)
		r = qcow2_io_flush(img->io);
	if (r < 0)
		img->w->header_dirty = true;
	return r;
}

/* The new snapshot table in new clusters, durable with its refcounts, then the header. */
static int switch_table(struct qcow2_snapshot_change *o)
{
	struct qcow2_image *img = o->img;
	uint64_t off, old_off = img->h.snapshots_off;
	uint32_t old_nb = img->h.nb_snapshots;
	int r = alloc_write(img, o->table, o->table_bytes, &off);

	if (r == 0)
		r = qcow2_image_flush_locked(img);
	if (r < 0)
		return r;
	img->h.nb_snapshots = o->plan.nb_after;
	img->h.snapshots_off = off;
	r = switch_header(img);
	if (r < 0) {
		img->h.nb_snapshots = old_nb;
		img->h.snapshots_off = old_off;
	}
	return r;
}

/* Unknown autoclear bits go with the first header we write (qcow2.txt: a writer that does not
 * know them clears them); bitmaps stay valid: snapshots change no guest data. */
static void clear_unknown_autoclear(struct qcow2_image *img)
{
	if (img->h.version >= 3)
		img->h.autoclear &= QCOW2_AUTOCLEAR_BITMAPS | QCOW2_AUTOCLEAR_DATA_FILE_RAW;
}

/* Take the locks, write back what is pending, and work out the plan (@arg NULL: drop entry
 * @o->idx). */
static int begin(struct qcow2_snapshot_change *o, const char *arg)
{
	struct qcow2_image *img = o->img;
	int r;

	if (!img->w)
		return qcow2_set_error(-EROFS, "it is open read-only");
	if ((r = qcow2_overlap_writable(img)) < 0)
		return r;
	if (has_data_file(img))
		return qcow2_set_error(-ENOTSUP, "an image with an external data file has no "
						 "internal snapshots");
	qcow2_image_exclusive_begin(img);
	qcow2_image_meta_lock(img);
	o->locked = true;
	r = settle(img);
	if (r == 0)
		r = qcow2_snapshot_change_plan(o, arg);
	if (r == 0)
		clear_unknown_autoclear(img);
	return r;
}

/* Write back and count down the clean-up, durable; release the locks and the plan. */
static int end(struct qcow2_snapshot_change *o, int r, bool committed, const char *what)
{
	struct qcow2_image *img = o->img;

	if (committed && r == 0)
		r = settle(img);
	if (committed && r == 0 && o->kind != QCOW2_SNAPSHOT_CREATE)
		r = fix_active(img);
	if (committed && r == 0)
		r = settle(img);
	if (o->locked) {
		qcow2_image_meta_unlock(img);
		qcow2_image_exclusive_end(img);
	}
	qcow2_snapshot_change_release(o);
	if (r < 0 && committed)
		r = qcow2_set_error(r,
				    "the snapshot was %s, but cleaning up failed (leaked "
				    "clusters at worst): %s",
				    what, qcow2_last_error());
	return r < 0 ? qcow2_error_prefix(r, img->name) : 0;
}

/* ---- create ---- */

/* The snapshot lists grow by one entry for the new snapshot, before anything can be seen. */
static int grow_lists(struct qcow2_snapshot_change *o, struct qcow2_l1 **l1)
{
	struct qcow2_image *img = o->img;
	uint32_t n = img->h.nb_snapshots;
	struct qcow2_snapshot *s;
	struct qcow2_l1 **p;
	int r = 0;

	qcow2_image_snapshots_lock(img);
	s = realloc(img->snaps, (n + 1) * sizeof(*s));
	if (s)
		img->snaps = s;
	p = s ? realloc(img->snap_l1, (n + 1) * sizeof(*p)) : NULL;
	if (p)
		img->snap_l1 = p;
	else
		r = qcow2_oom();
	qcow2_image_snapshots_unlock(img);
	*l1 = r == 0 ? calloc(1, sizeof(**l1)) : NULL;
	if (*l1)
		(*l1)->entries = malloc(img->l1.n ? (size_t)img->l1.n * 8 : 1);
	if (r == 0 && (!*l1 || !(*l1)->entries))
		r = qcow2_oom();
	return r;
}

/* The in-memory list gets the new snapshot (its L1 table already loaded). */
static void add_to_lists(struct qcow2_snapshot_change *o, struct qcow2_l1 *l1)
{
	struct qcow2_image *img = o->img;
	uint32_t n = img->h.nb_snapshots - 1;

	qcow2_image_snapshots_lock(img);
	img->snaps[n] = o->sn;
	o->sn.id = o->sn.name = NULL;
	img->snap_l1[n] = l1;
	img->snap_table_bytes = o->table_bytes;
	qcow2_image_snapshots_unlock(img);
	(void)qcow2_overlap_update_tables(img); /* -ENOMEM leaves the old ranges: still safe */
}

int qcow2_image_snapshot_create(struct qcow2_image *img, const char *name)
{
	uint64_t old_off = img->h.snapshots_off, old_bytes = img->snap_table_bytes;
	struct qcow2_l1 *l1 = NULL;
	bool committed = false;
	struct qcow2_snapshot_change o;
	uint32_t i;
	int r;

	qcow2_snapshot_change_init(&o, img, QCOW2_SNAPSHOT_CREATE);
	r = begin(&o, name);
	if (r == 0)
		r = grow_lists(&o, &l1);
	if (r == 0)
		r = raise_refcounts(&o);
	if (r == 0)
		r = fix_active(img);
	if (r == 0)
		r = write_l1_copy(img, img->l1.entries, img->l1.n, false, &o.sn.l1_off);
	if (r == 0) {
		for (i = 0; i < img->l1.n; i++)
			l1->entries[i] = img->l1.entries[i] & ~QCOW2_OFLAG_COPIED;
		l1->n = img->l1.n;
		l1->size = img->h.size;
		qcow2_snapshot_entry_encode(&o.sn, o.table + o.entry_at); /* with its L1 now */
		r = qcow2_image_flush_locked(img); /* refcounts, flags, L1 copy: durable */
	}
	if (r == 0)
		r = switch_table(&o);
	if (r == 0) {
		committed = true;
		add_to_lists(&o, l1);
		l1 = NULL;
		if (old_bytes)
			r = qcow2_refcount_defer_free(img, old_off, old_bytes);
	}
	if (l1)
		free(l1->entries);
	free(l1);
	return end(&o, r, committed, "created");
}

/* ---- apply ---- */

/* The new active L1 table: the snapshot's entries the disk size needs, with COPIED flags from
 * the refcounts (its tables' flags set likewise), in new clusters. */
static int new_active_l1(struct qcow2_snapshot_change *o, uint64_t **l1, uint32_t *n, uint64_t *off)
{
	struct qcow2_image *img = o->img;
	int r;

	*n = (uint32_t)(o->plan.l1_bytes / 8);
	*l1 = calloc(*n ? *n : 1, 8);
	if (!*l1)
		return qcow2_oom_for("the L1 table");
	r = fix_flags(img, o->sl1->entries, *n, *l1);
	if (r == 0)
		r = write_l1_copy(img, *l1, *n, true, off);
	return r;
}

/* The header points at the new active L1 table and has the snapshot's disk size; then the
 * image uses it. */
static int switch_l1(struct qcow2_snapshot_change *o, uint64_t *l1, uint32_t n, uint64_t off)
{
	struct qcow2_image *img = o->img;
	struct qcow2_header *h = &img->h;
	uint64_t old_off = h->l1_off, old_size = h->size;
	uint32_t old_n = h->l1_entries;
	int r;

	h->l1_off = off;
	h->l1_entries = n;
	h->size = o->sl1->size;
	r = switch_header(img);
	if (r < 0) {
		h->l1_off = old_off;
		h->l1_entries = old_n;
		h->size = old_size;
		return r;
	}
	free(img->l1.entries);
	img->l1.entries = l1;
	img->l1.n = n;
	img->l1.size = h->size;
	img->w->l1_lo = img->w->l1_hi = 0;
	return qcow2_overlap_rebuild(img); /* the active L2 tables are the snapshot's now */
}

int qcow2_image_snapshot_apply(struct qcow2_image *img, const char *id_or_name)
{
	uint64_t *l1 = NULL, off = 0, old_off = img->h.l1_off, old_bytes = img->l1.n * 8ull;
	bool committed = false;
	struct qcow2_snapshot_change o;
	uint32_t n = 0;
	int r;

	qcow2_snapshot_change_init(&o, img, QCOW2_SNAPSHOT_APPLY);
	r = begin(&o, id_or_name);
	if (r == 0)
		r = raise_refcounts(&o);
	if (r == 0)
		r = new_active_l1(&o, &l1, &n, &off);
	if (r == 0)
		r = qcow2_image_flush_locked(img); /* refcounts, flags, the new L1: durable */
	if (r == 0)
		r = switch_l1(&o, l1, n, off);
	if (r == 0) {
		committed = true;
		l1 = NULL;
		r = lower_refcounts(&o);
		if (r == 0 && old_bytes)
			r = qcow2_refcount_defer_free(img, old_off, old_bytes);
	}
	free(l1);
	return end(&o, r, committed, "applied");
}

/* ---- delete ---- */

/* The in-memory list loses snapshot @o->idx. */
static void remove_from_lists(struct qcow2_snapshot_change *o)
{
	struct qcow2_image *img = o->img;
	uint32_t i = (uint32_t)o->idx, n = img->h.nb_snapshots; /* already one less */

	qcow2_image_snapshots_lock(img);
	qcow2_snapshot_release(&img->snaps[i], 1);
	if (img->snap_l1[i])
		free(img->snap_l1[i]->entries);
	free(img->snap_l1[i]);
	memmove(&img->snaps[i], &img->snaps[i + 1], (n - i) * sizeof(*img->snaps));
	memmove(&img->snap_l1[i], &img->snap_l1[i + 1], (n - i) * sizeof(*img->snap_l1));
	img->snap_table_bytes = o->table_bytes;
	qcow2_image_snapshots_unlock(img);
	o->sl1 = NULL;
	(void)qcow2_overlap_update_tables(img); /* -ENOMEM leaves the old ranges: still safe */
}

int qcow2_image_snapshot_delete(struct qcow2_image *img, const char *id_or_name)
{
	uint64_t old_off = img->h.snapshots_off, old_bytes = img->snap_table_bytes, l1_off = 0;
	uint64_t l1_bytes = 0;
	bool committed = false;
	struct qcow2_snapshot_change o;
	int r;

	qcow2_snapshot_change_init(&o, img, QCOW2_SNAPSHOT_DELETE);
	r = begin(&o, id_or_name);
	if (r == 0) {
		l1_off = img->snaps[o.idx].l1_off;
		l1_bytes = img->snaps[o.idx].l1_entries * 8ull;
		r = switch_table(&o);
	}
	if (r == 0) {
		committed = true;
		remove_from_lists(&o);
		r = lower_refcounts(&o);
		if (r == 0 && l1_bytes)
			r = qcow2_refcount_defer_free(img, l1_off, l1_bytes);
		if (r == 0)
			r = qcow2_refcount_defer_free(img, old_off, old_bytes);
	}
	return end(&o, r, committed, "deleted");
}

/* ---- dropping unreadable entries ---- */

int qcow2_image_snapshot_drop_unreadable(struct qcow2_image *img, uint32_t *dropped)
{
	uint64_t old_off, old_bytes;
	bool committed;
	struct qcow2_snapshot_change o;
	uint32_t i;
	int r = 0;

	*dropped = 0;
	for (i = 0; r == 0 && i < img->h.nb_snapshots;) {
		if (!img->snaps[i].unreadable) {
			i++;
			continue;
		}
		/* one entry at a time: each a complete, crash-safe table switch */
		old_off = img->h.snapshots_off;
		old_bytes = img->snap_table_bytes;
		committed = false;
		qcow2_snapshot_change_init(&o, img, QCOW2_SNAPSHOT_DELETE);
		o.idx = (int)i;
		r = begin(&o, NULL);
		if (r == 0)
			r = switch_table(&o);
		if (r == 0) {
			committed = true;
			remove_from_lists(&o);
			r = qcow2_refcount_defer_free(img, old_off, old_bytes);
		}
		r = end(&o, r, committed, "dropped");
		*dropped += committed;
	}
	return r;
}

/* ---- completing short v3 entries ---- */

#define ENTRY_FIXED 40

/* An incomplete entry's length once completed: 24 bytes of extra data, its id and name. */
static size_t completed_bytes(const struct qcow2_snapshot *s, const uint8_t *raw)
{
	size_t names = s->entry_bytes - ENTRY_FIXED - get_be32(raw + 36);

	return ENTRY_FIXED + QCOW2_SNAPSHOT_EXTRA_BYTES + names;
}

/* The table with each incomplete entry given the 24 bytes of extra data QEMU writes (the
 * sizes as they were read: the disk size the image's), its other bytes (id and name too,
 * even one with a NUL) as they are; every other entry byte for byte. */
static int table_completed(struct qcow2_image *img, uint8_t **out, size_t *bytes)
{
	size_t cap = 0, off = 0, len, extra;
	uint8_t *cur, *t = NULL;
	uint32_t i;
	int r;

	cur = malloc(img->snap_table_bytes ? (size_t)img->snap_table_bytes : 1);
	r = cur ? qcow2_io_pread_full(img->io, cur, (size_t)img->snap_table_bytes,
				      img->h.snapshots_off)
		: qcow2_oom_for("the snapshot table");
	for (i = 0; r == 0 && i < img->h.nb_snapshots; i++) {
		const struct qcow2_snapshot *s = &img->snaps[i];

		len = s->incomplete ? completed_bytes(s, cur + s->entry_off) : s->entry_bytes;
		cap += (len + 7) & ~(size_t)7;
	}
	if (r == 0 && !(t = calloc(1, cap ? cap : 1)))
		r = qcow2_oom_for("the snapshot table");
	for (i = 0; r == 0 && i < img->h.nb_snapshots; i++) {
		const struct qcow2_snapshot *s = &img->snaps[i];
		const uint8_t *raw = cur + s->entry_off;

		if (s->incomplete) {
			extra = get_be32(raw + 36);
			len = completed_bytes(s, raw);
			memcpy(t + off, raw, ENTRY_FIXED);
			put_be32(t + off + 36, QCOW2_SNAPSHOT_EXTRA_BYTES);
			put_be64(t + off + 40, s->vm_state_bytes);
			put_be64(t + off + 48, s->disk_bytes);
			put_be64(t + off + 56, s->icount);
			memcpy(t + off + ENTRY_FIXED + QCOW2_SNAPSHOT_EXTRA_BYTES,
			       raw + ENTRY_FIXED + extra, s->entry_bytes - ENTRY_FIXED - extra);
		} else {
			len = s->entry_bytes;
			memcpy(t + off, raw, len);
		}
		off += (len + 7) & ~(size_t)7;
	}
	free(cur);
	if (r < 0) {
		free(t);
		return r;
	}
	*out = t;
	*bytes = off;
	return 0;
}

int qcow2_image_snapshot_complete(struct qcow2_image *img, uint32_t *fixed)
{
	uint64_t old_off = img->h.snapshots_off, old_bytes = img->snap_table_bytes, off = 0;
	struct qcow2_snapshot_change o;
	bool committed = false;
	uint32_t i, n = 0;
	int r;

	*fixed = 0;
	for (i = 0; i < img->h.nb_snapshots; i++)
		n += img->snaps[i].incomplete;
	if (n == 0)
		return 0;
	if (!img->w)
		return qcow2_set_error(-EROFS, "'%s': it is open read-only", img->name);
	if ((r = qcow2_overlap_writable(img)) < 0)
		return qcow2_error_prefix(r, img->name);
	qcow2_snapshot_change_init(&o, img, QCOW2_SNAPSHOT_DELETE);
	qcow2_image_exclusive_begin(img);
	qcow2_image_meta_lock(img);
	o.locked = true;
	r = settle(img);
	if (r == 0)
		r = table_completed(img, &o.table, &o.table_bytes);
	o.plan.nb_after = img->h.nb_snapshots;
	/* the same crash-safe switch as every table change: the new table written and durable,
	 * then the header's one write; the old table freed after */
	if (r == 0)
		r = switch_table(&o);
	if (r == 0) {
		committed = true;
		qcow2_image_snapshots_lock(img);
		for (i = 0; i < img->h.nb_snapshots; i++) {
			struct qcow2_snapshot *s = &img->snaps[i];
			const uint8_t *p = o.table + off;

			s->incomplete = false;
			s->entry_off = off;
			s->entry_bytes =
			    ENTRY_FIXED + get_be32(p + 36) + get_be16(p + 12) + get_be16(p + 14);
			off += ((uint64_t)s->entry_bytes + 7) & ~7ull;
		}
		img->snap_table_bytes = o.table_bytes;
		qcow2_image_snapshots_unlock(img);
		(void)qcow2_overlap_update_tables(img); /* -ENOMEM leaves the old ranges */
		r = qcow2_refcount_defer_free(img, old_off, old_bytes);
	}
	*fixed = committed ? n : 0;
	return end(&o, r, committed, "rewritten");
}
