/* SPDX-License-Identifier: MIT */
/*
 * snapshot-plan.c - what an internal snapshot operation changes, worked out before anything
 * changes (snapshot-write.c then carries it out; --dry-run prints it).
 *
 * Refcounts (qcow2.txt) count references per path, as QEMU keeps and checks them: an L2 table
 * once per L1 entry pointing at it, a data cluster once per L2 entry of every L1 table (active
 * or snapshot) that reaches it, so a data cluster in an L2 table the active state shares with
 * two snapshots has refcount 3, and a host cluster holding several compressed clusters one per
 * compressed cluster. Creating, applying and deleting a snapshot therefore raise or lower by one
 * per path the refcounts of what an L1 table reaches ("its reach": L2 tables, data clusters,
 * every host cluster a compressed cluster touches).
 *
 * The plan is the sorted list of clusters whose refcount changes, with the references the
 * operation adds and takes away, checked against the refcount width (1-bit refcounts cannot
 * share a cluster) and against refcounts already lower than their references; and the new
 * snapshot table: the old entries byte for byte, plus or minus one. A refusal changes nothing.
 * On a writable image the plan is made under w->lock (qcow2_image_snapshot_plan() takes it;
 * snapshot-write.c already holds it); a read-only image (a dry run) reads its refcount blocks
 * from the file, keeping the last one. No other lock is taken here.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "snapshot/snapshot.h"

static uint64_t clusters_of(const struct qcow2_image *img, uint64_t bytes)
{
	return (bytes + img->cluster_bytes - 1) >> img->h.cluster_bits;
}

/* First cluster past the file (and, when writable, past every allocation). */
static uint64_t end_cluster(const struct qcow2_image *img)
{
	return img->w ? img->end_cluster : clusters_of(img, img->file_bytes);
}

static bool has_data_file(const struct qcow2_image *img)
{
	return img->h.incompat & QCOW2_INCOMPAT_DATA_FILE;
}

/* ---- the plan: which refcounts change ---- */

static int push(struct qcow2_snapshot_change *o, uint64_t idx, bool plus)
{
	if (o->n == o->cap) {
		size_t cap = o->cap ? 2 * o->cap : 1024;
		struct qcow2_snapshot_delta *d = realloc(o->d, cap * sizeof(*d));

		if (!d)
			return qcow2_oom_for("the refcount changes");
		o->d = d;
		o->cap = cap;
	}
	o->d[o->n++] = o->keep ? (struct qcow2_snapshot_delta){idx, 0, 0, 1}
			       : (struct qcow2_snapshot_delta){idx, plus, !plus, 0};
	return 0;
}

/* One reference more (@plus) or less to every host cluster of [@off, @off + @bytes), which
 * are metadata of the kinds @own (QCOW2_OL_L2 for an L2 table) or data (0).
 *
 * Guest data lying in live metadata (an L2 entry pointing at an L1 table, a refcount block,
 * ...), or an L2 table in other metadata, is refused: every metadata write the operation makes
 * (refcounts, COPIED flags, tables freed or moved) would change what the guest reads there, and
 * counting such a cluster up or down corrupts the metadata's own refcount. QEMU would go on and
 * change those bytes; a repair gives the data a cluster of its own first. */
static int add_range(struct qcow2_snapshot_change *o, uint64_t off, uint64_t bytes, bool plus,
		     unsigned own)
{
	struct qcow2_image *img = o->img;
	uint64_t first = off >> img->h.cluster_bits, i;
	uint64_t last = (off + bytes - 1) >> img->h.cluster_bits;
	const char *what = "metadata";
	int r = 0;

	if (last >= end_cluster(img))
		return qcow2_set_error(-EUCLEAN, "cluster %#" PRIx64 " lies outside the file",
				       last << img->h.cluster_bits);
	i = qcow2_overlap_held(img, first, last - first + 1, own, &what);
	if (i != UINT64_MAX)
		return qcow2_set_error(-EUCLEAN,
				       "%s at %#" PRIx64 " lies in the %s at %#" PRIx64
				       " (repair it: qcowctl check --repair)",
				       own ? "an L2 table" : "guest data", off, what,
				       i << img->h.cluster_bits);
	for (i = first; i <= last && r == 0; i++)
		r = push(o, i, plus);
	return r;
}

/* The entries of one L2 table (@t, a whole table) reach their data clusters. */
static int add_l2_reach(struct qcow2_snapshot_change *o, const uint64_t *t, bool plus)
{
	struct qcow2_image *img = o->img;
	uint32_t words = (uint32_t)(img->cluster_bytes / 8), j;
	uint64_t host, bytes;
	int r = 0;

	for (j = 0; j < words && r == 0; j += img->l2_entry_words) {
		if (t[j] & QCOW2_OFLAG_COMPRESSED) {
			r = qcow2_map_compressed(img, t[j], &host, &bytes);
			if (r == 0) /* every host cluster it touches, as write.c counts it down */
				r = add_range(o, host & ~511ull, bytes, plus, 0);
		} else if ((host = t[j] & QCOW2_L2E_OFFSET_MASK)) {
			if (host & (img->cluster_bytes - 1))
				return qcow2_set_error(-EUCLEAN,
						       "misaligned data cluster %#" PRIx64, host);
			r = add_range(o, host, img->cluster_bytes, plus, 0);
		}
	}
	return r;
}

/* One reference more (@plus) or less to everything the L1 table @l1 (@n entries) reaches. */
static int add_reach(struct qcow2_snapshot_change *o, const uint64_t *l1, uint32_t n, bool plus)
{
	struct qcow2_image *img = o->img;
	uint64_t *t = malloc(img->cluster_bytes);
	uint32_t i;
	int r = t ? 0 : qcow2_oom();

	for (i = 0; i < n && r == 0; i++) {
		uint64_t l2 = l1[i] & QCOW2_L1E_OFFSET_MASK;

		if (!l2)
			continue;
		if (l2 & (img->cluster_bytes - 1))
			r = qcow2_set_error(-EUCLEAN, "misaligned L2 table %#" PRIx64, l2);
		if (r == 0)
			r = add_range(o, l2, img->cluster_bytes, plus, QCOW2_OL_L2);
		if (r == 0)
			r = qcow2_l2cache_get(img->l2cache, img->io, l2, 0,
					      (uint32_t)(img->cluster_bytes / 8), t);
		if (r == 0)
			r = add_l2_reach(o, t, plus);
	}
	free(t);
	return r;
}

static int by_cluster(const void *a, const void *b)
{
	const struct qcow2_snapshot_delta *x = a, *y = b;

	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Sort and merge: one delta per cluster. */
static void merge(struct qcow2_snapshot_change *o)
{
	size_t i, k = 0;

	if (!o->n)
		return;
	qsort(o->d, o->n, sizeof(*o->d), by_cluster);
	for (i = 1; i < o->n; i++) {
		if (o->d[i].idx == o->d[k].idx) {
			o->d[k].plus += o->d[i].plus;
			o->d[k].minus += o->d[i].minus;
			o->d[k].keep += o->d[i].keep;
		} else {
			o->d[++k] = o->d[i];
		}
	}
	o->n = k + 1;
}

/* Refcount of cluster @idx: the write side's cached blocks, or for a read-only image (a dry
 * run) the file's, the last block read kept. */
static int refcount_of(struct qcow2_snapshot_change *o, uint64_t idx, uint64_t *v)
{
	if (o->img->w)
		return qcow2_refcount_get_w(o->img, idx, v);
	return qcow2_refcount_lookup(o->img, &o->rc, idx, v);
}

/* Every change fits the refcount width and takes away no reference that is not counted;
 * the plan's cluster counts. */
static int check_deltas(struct qcow2_snapshot_change *o)
{
	struct qcow2_image *img = o->img;
	uint32_t bits = 1u << img->refs.order;
	uint64_t max = bits == 64 ? UINT64_MAX : (1ull << bits) - 1, v, up;
	size_t i;
	int r;

	for (i = 0; i < o->n; i++) {
		const struct qcow2_snapshot_delta *d = &o->d[i];

		r = refcount_of(o, d->idx, &v);
		if (r < 0)
			return r;
		if (__builtin_add_overflow(v, d->plus, &up) || up > max)
			return qcow2_set_error(
			    -ERANGE,
			    "the refcount of cluster %#" PRIx64 " would overflow "
			    "%u-bit refcounts (widen them: qemu-img amend -o refcount_bits=16)",
			    d->idx << img->h.cluster_bits, bits);
		/* what an operation adds copies references counted already; what it takes away
		 * must be counted */
		if (v < d->minus || (d->plus && !v) || up - d->minus < d->keep)
			return qcow2_set_error(
			    -EUCLEAN,
			    "cluster %#" PRIx64 " has a refcount lower "
			    "than its references (repair it: qemu-img check -r all)",
			    d->idx << img->h.cluster_bits);
		o->plan.raised_clusters += d->plus > d->minus;
		o->plan.lowered_clusters += d->minus > d->plus;
		o->plan.freed_clusters += d->minus && up == d->minus;
	}
	return 0;
}

/* ---- the plan: the new snapshot table ---- */

/* The snapshot table as it is on disk (@out NULL when there is none). */
static int read_table(struct qcow2_image *img, uint8_t **out)
{
	size_t bytes = (size_t)img->snap_table_bytes;
	int r;

	*out = NULL;
	if (!img->h.nb_snapshots)
		return 0;
	*out = malloc(bytes ? bytes : 1);
	if (!*out)
		return qcow2_oom_for("the snapshot table");
	r = qcow2_io_pread_full(img->io, *out, bytes, img->h.snapshots_off);
	if (r < 0) {
		free(*out);
		*out = NULL;
	}
	return r;
}

/* The new id: one more than the largest number among the ids, as QEMU picks it. */
static void next_id(const struct qcow2_image *img, char *id, size_t cap)
{
	unsigned long long max = 0, v;
	uint32_t i;

	for (i = 0; i < img->h.nb_snapshots; i++) {
		v = strtoull(img->snaps[i].id, NULL, 10);
		if (v > max)
			max = v;
	}
	snprintf(id, cap, "%llu", max + 1);
}

/* create: the old table (its last entry padded) and the new entry after it. */
static int table_with(struct qcow2_snapshot_change *o)
{
	struct qcow2_image *img = o->img;
	size_t old = ((size_t)img->snap_table_bytes + 7) & ~(size_t)7;
	size_t len = qcow2_snapshot_entry_encode(&o->sn, NULL);
	uint8_t *cur;
	int r;

	if (old + len > QCOW2_MAX_SNAPSHOT_TABLE_BYTES)
		return qcow2_set_error(-EFBIG, "the snapshot table would exceed %u bytes",
				       QCOW2_MAX_SNAPSHOT_TABLE_BYTES);
	r = read_table(img, &cur);
	if (r < 0)
		return r;
	o->table = calloc(1, old + len);
	if (o->table) {
		if (cur)
			memcpy(o->table, cur, (size_t)img->snap_table_bytes);
		qcow2_snapshot_entry_encode(&o->sn, o->table + old);
		o->entry_at = old;
		o->table_bytes = old + len;
	}
	free(cur);
	return o->table ? 0 : qcow2_oom_for("the snapshot table");
}

/* delete: the old table without entry @o->idx, the others byte for byte. */
static int table_without(struct qcow2_snapshot_change *o)
{
	struct qcow2_image *img = o->img;
	size_t bytes = (size_t)img->snap_table_bytes, start = 0, len = 0;
	uint8_t *cur;
	ssize_t n;
	int i, r = read_table(img, &cur);

	for (i = 0; r == 0 && i <= o->idx; i++) {
		start += len;
		n = qcow2_snapshot_entry_bytes(cur + start, bytes - start);
		if (n < 0)
			r = qcow2_set_error(-EUCLEAN, "the snapshot table changed under us");
		len = n < 0 ? 0 : (size_t)n;
	}
	if (r == 0 && img->h.nb_snapshots > 1) {
		o->table_bytes = bytes - len;
		o->table = malloc(o->table_bytes);
		if (!o->table)
			r = qcow2_oom_for("the snapshot table");
		else {
			memcpy(o->table, cur, start);
			memcpy(o->table + start, cur + start + len, bytes - start - len);
		}
	}
	free(cur);
	return r;
}

/* ---- the plan of each operation ---- */

/* L1 entries an L1 table for @size bytes needs at least. */
static uint32_t l1_needed(const struct qcow2_image *img, uint64_t size)
{
	uint64_t per = (uint64_t)img->l2_entries << img->h.cluster_bits;

	return (uint32_t)(size / per + (size % per != 0));
}

static int check_name(struct qcow2_snapshot_change *o, const char *name)
{
	struct qcow2_image *img = o->img;
	uint32_t i;

	if (!name[0] || strlen(name) > UINT16_MAX)
		return qcow2_set_error(-EINVAL, "a snapshot name must have 1 to 65535 bytes");
	for (i = 0; i < img->h.nb_snapshots; i++)
		if (!strcmp(img->snaps[i].name, name) || !strcmp(img->snaps[i].id, name))
			return qcow2_set_error(-EEXIST, "snapshot '%s' (id %s) exists already",
					       img->snaps[i].name, img->snaps[i].id);
	if (img->h.nb_snapshots >= QCOW2_MAX_SNAPSHOTS)
		return qcow2_set_error(-EFBIG, "%u snapshots already: the most QEMU reads",
				       img->h.nb_snapshots);
	return 0;
}

static int plan_create(struct qcow2_snapshot_change *o, const char *name)
{
	struct qcow2_image *img = o->img;
	struct timespec now;
	int r = check_name(o, name);

	if (r < 0)
		return r;
	next_id(img, o->plan.id, sizeof(o->plan.id));
	clock_gettime(CLOCK_REALTIME, &now);
	o->sn.id = strdup(o->plan.id);
	o->sn.name = strdup(name);
	if (!o->sn.id || !o->sn.name)
		return qcow2_oom();
	o->sn.l1_entries = img->l1.n;
	o->sn.date_sec = (uint32_t)now.tv_sec;
	o->sn.date_nsec = (uint32_t)now.tv_nsec;
	o->sn.disk_bytes = img->h.size;
	o->sn.icount = 0; /* as qemu-img snapshot -c writes it: no instructions ran */
	r = add_reach(o, img->l1.entries, img->l1.n, true);
	if (r == 0)
		r = table_with(o);
	o->plan.nb_after = img->h.nb_snapshots + 1;
	o->plan.l1_bytes = (uint64_t)img->l1.n * 8;
	o->plan.new_clusters = clusters_of(img, o->plan.l1_bytes);
	o->plan.freed_clusters = clusters_of(img, img->snap_table_bytes);
	return r;
}

/* apply and delete: the snapshot @arg names and its L1 table. */
static int find(struct qcow2_snapshot_change *o, const char *arg)
{
	struct qcow2_image *img = o->img;
	int r = qcow2_image_find_snapshot(img, arg);

	if (r < 0)
		return r;
	o->idx = r;
	snprintf(o->plan.id, sizeof(o->plan.id), "%s", img->snaps[r].id);
	return qcow2_image_snapshot_l1(img, (uint32_t)r, &o->sl1);
}

static int plan_apply(struct qcow2_snapshot_change *o, const char *arg)
{
	struct qcow2_image *img = o->img;
	const struct qcow2_header *h = &img->h;
	uint32_t n;
	int r;

	if (h->has_bitmaps_ext && (h->autoclear & QCOW2_AUTOCLEAR_BITMAPS) && h->nb_bitmaps)
		return qcow2_set_error(-EBUSY, "it has persistent dirty bitmaps, which a new "
					       "content would make wrong (QEMU refuses too)");
	r = find(o, arg);
	if (r < 0)
		return r;
	/* The disk's part of the snapshot's L1 table (never shorter: checked when loaded); the
	 * VM state beyond it stays the snapshot's alone (QEMU copies it too, where nothing
	 * reads it, keeping its clusters until a later savevm discards them). */
	n = l1_needed(img, o->sl1->size);
	r = add_reach(o, o->sl1->entries, n, true);
	if (r == 0)
		r = add_reach(o, img->l1.entries, img->l1.n, false);
	o->plan.nb_after = h->nb_snapshots;
	o->plan.size_after = o->sl1->size;
	o->plan.table_bytes = 0;
	o->plan.l1_bytes = (uint64_t)n * 8;
	o->plan.new_clusters = clusters_of(img, o->plan.l1_bytes);
	o->plan.freed_clusters = clusters_of(img, (uint64_t)img->l1.n * 8);
	return r;
}

static int plan_delete(struct qcow2_snapshot_change *o, const char *arg)
{
	struct qcow2_image *img = o->img;
	int r = find(o, arg);

	if (r < 0)
		return r;
	r = add_reach(o, o->sl1->entries, o->sl1->n, false);
	/* The delete rewrites COPIED flags in the active L2 tables and frees what only the
	 * snapshot held: nothing the active state reaches may lie in metadata either, and what
	 * it reaches must keep a refcount (a refcount lower than the references would free a
	 * cluster the active state still uses). */
	if (r == 0) {
		o->keep = true;
		r = add_reach(o, img->l1.entries, img->l1.n, false);
		o->keep = false;
	}
	if (r == 0)
		r = table_without(o);
	o->plan.nb_after = img->h.nb_snapshots - 1;
	o->plan.freed_clusters =
	    clusters_of(img, (uint64_t)o->sl1->n * 8) + clusters_of(img, img->snap_table_bytes);
	return r;
}

/* drop (a delete with no @arg and @o->idx set): an unreadable entry leaves the table; its L1
 * table is not trusted, so nothing it points at is counted down (a refcount repair then frees
 * what only it held, as leaks). */
static int plan_drop(struct qcow2_snapshot_change *o)
{
	struct qcow2_image *img = o->img;

	if (!img->snaps[o->idx].unreadable)
		return qcow2_set_error(-EINVAL, "snapshot '%s' is readable",
				       img->snaps[o->idx].name);
	snprintf(o->plan.id, sizeof(o->plan.id), "%s", img->snaps[o->idx].id);
	o->plan.nb_after = img->h.nb_snapshots - 1;
	o->plan.freed_clusters = clusters_of(img, img->snap_table_bytes);
	return table_without(o);
}

int qcow2_snapshot_change_plan(struct qcow2_snapshot_change *o, const char *arg)
{
	struct qcow2_image *img = o->img;
	int r;

	o->plan.nb_before = img->h.nb_snapshots;
	o->plan.size_before = o->plan.size_after = img->h.size;
	if (o->kind == QCOW2_SNAPSHOT_DELETE && !arg)
		r = plan_drop(o);
	else if (o->kind == QCOW2_SNAPSHOT_CREATE)
		r = plan_create(o, arg);
	else if (o->kind == QCOW2_SNAPSHOT_APPLY)
		r = plan_apply(o, arg);
	else
		r = plan_delete(o, arg);
	if (o->kind != QCOW2_SNAPSHOT_APPLY) {
		o->plan.table_bytes = o->table_bytes;
		o->plan.new_clusters += clusters_of(img, o->table_bytes);
	}
	merge(o);
	return r < 0 ? r : check_deltas(o);
}

void qcow2_snapshot_change_init(struct qcow2_snapshot_change *o, struct qcow2_image *img,
				enum qcow2_snapshot_op kind)
{
	memset(o, 0, sizeof(*o));
	o->img = img;
	o->kind = kind;
	o->idx = -1;
	o->rc = (struct qcow2_refcount_cursor)QCOW2_REFCOUNT_CURSOR_INIT;
}

void qcow2_snapshot_change_release(struct qcow2_snapshot_change *o)
{
	free(o->d);
	free(o->table);
	qcow2_refcount_cursor_release(&o->rc);
	qcow2_snapshot_release(&o->sn, 1);
}

int qcow2_image_snapshot_plan(struct qcow2_image *img, enum qcow2_snapshot_op op, const char *arg,
			      struct qcow2_snapshot_plan *out)
{
	struct qcow2_snapshot_change o;
	uint64_t v;
	int r = 0;

	qcow2_snapshot_change_init(&o, img, op);
	if (has_data_file(img))
		r = qcow2_set_error(-ENOTSUP, "an image with an external data file has no "
					      "internal snapshots");
	if (r == 0 && !img->w)
		r = qcow2_image_refcount(img, 0, &v); /* loads the refcount table */
	if (r == 0 && img->w) {
		qcow2_image_meta_lock(img);
		r = qcow2_snapshot_change_plan(&o, arg);
		qcow2_image_meta_unlock(img);
	} else if (r == 0) {
		r = qcow2_snapshot_change_plan(&o, arg);
	}
	if (r == 0)
		*out = o.plan;
	qcow2_snapshot_change_release(&o);
	return r < 0 ? qcow2_error_prefix(r, img->name) : 0;
}
