/* SPDX-License-Identifier: MIT */
/*
 * repair.c - one pass of qcow2_image_repair() (verify.c): what `qemu-img check -r all` fixes,
 * and what it leaves.
 *
 * A planning walk (engine/walk.c, with this file's planners as its visitor) reports the image as
 * `qemu-img check` would and notes what to rewrite in the active tables: L2 entries whose cluster
 * is misaligned or lies past the end of the file become zero clusters (QEMU fails to read the first
 * and reads zeros from the second; it turns misaligned preallocated clusters into zero clusters
 * itself), data clusters lying in metadata are copied to a cluster of their own (so a write of the
 * guest cannot change the metadata and a change of the metadata cannot change the guest's data), L1
 * entries with a misaligned or missing L2 table are dropped, reserved bits and COPIED flags of
 * compressed clusters are cleared. Then every refcount is set to what points at the cluster, the
 * COPIED flags are set from the refcounts (qcow2_write_fix_copied()), and the dirty and corrupt
 * bits are cleared once a final check finds no corruption.
 *
 * Crash safety: the steps are made durable one after the other (qcow2_image_flush()), and each
 * keeps every refcount at least what points at its cluster (unless it already was lower):
 *   1. the rewritten entries, which only take references away;
 *   2. refcounts raised to the planned counts, so no cluster in use looks free;
 *   3. data moved out of metadata: copied to newly allocated clusters, then pointed at;
 *   4. a recount, and every refcount set to it (leaks are only counted down once nothing on
 *      disk points at the clusters any more);
 *   5. the COPIED flags, then the header bits.
 * An interrupted repair (a crash or a cancelled job, which stops between clusters) leaves an
 * image that is valid and no worse than before; running the repair again finishes it.
 *
 * These steps assume a sound refcount structure: a planning pass that finds it broken applies
 * nothing (qcow2_repair_pass() sets *rebuild) and the caller (verify.c) first builds a new one
 * elsewhere (rebuild.c). verify.c also journals every write, checks the result from disk and
 * puts everything back when it is not better than the image found.
 *
 * Locks: w->lock (qcow2_image_meta_lock(), engine/locks.c) around each step that changes
 * the image; w->frees is not needed: a repair holds the image alone (QEMU's writer lock, one
 * thread).
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>

#include "integrity/integrity.h"

/* ---- planning (the visitor of a planning walk, engine/walk.c) ---- */

static int push_range(struct qcow2_crange **v, size_t *n, size_t *cap, uint64_t first,
		      uint64_t count)
{
	struct qcow2_crange *p;

	if (*n == *cap) {
		size_t c = *cap ? 2 * *cap : 16;
		p = realloc(*v, c * sizeof(*p));
		if (!p)
			return qcow2_oom();
		*v = p;
		*cap = c;
	}
	(*v)[*n].first = first;
	(*v)[(*n)++].count = count;
	return 0;
}

/* Leave [@off, @off + @bytes), just counted, out of the planned counts (a rewritten entry). */
static int unref(struct qcow2_scan *s, uint64_t off, uint64_t bytes)
{
	uint32_t bits = s->img->h.cluster_bits;

	return push_range(&s->unref, &s->n_unref, &s->cap_unref, off >> bits,
			  ((off + bytes - 1) >> bits) - (off >> bits) + 1);
}

/* Add [@off, @off + @bytes), not counted, to the planned counts (an entry a fix makes valid). */
static int reref(struct qcow2_scan *s, uint64_t off, uint64_t bytes)
{
	uint32_t bits = s->img->h.cluster_bits;

	if (off >= (1ull << 62) || off + bytes >= s->file_bytes + s->img->cluster_bytes)
		return 0;
	return push_range(&s->reref, &s->n_reref, &s->cap_reref, off >> bits,
			  ((off + bytes - 1) >> bits) - (off >> bits) + 1);
}

static int add_fix(struct qcow2_scan *s, const struct qcow2_fix *f)
{
	struct qcow2_fix *p;

	if (s->n_fixes == s->cap_fixes) {
		size_t cap = s->cap_fixes ? 2 * s->cap_fixes : 16;
		p = realloc(s->fixes, cap * sizeof(*p));
		if (!p)
			return qcow2_oom();
		s->fixes = p;
		s->cap_fixes = cap;
	}
	s->fixes[s->n_fixes++] = *f;
	return 0;
}

/* The entry a repair writes so that the cluster reads as zeros (QEMU turns misaligned
 * preallocated clusters into zero clusters the same way). */
static void zero_entry(const struct qcow2_image *img, struct qcow2_fix *f, uint64_t bm)
{
	f->entry = 0;
	f->bitmap = 0;
	if (img->l2_entry_words == 2)
		f->bitmap = (bm | bm << 32) & ~QCOW2_L2_BITMAP_ALLOC;
	else if (img->h.version >= 3)
		f->entry = QCOW2_OFLAG_ZERO;
	else if (img->h.backing_file[0])
		f->move = true; /* v2 over a backing file: a cluster of zeros of its own */
}

/* What a repair does with an entry: zeroed for @zero_why, or when its cluster lies past the end
 * of the file, its data given a cluster of its own when it lies in metadata or its refcount
 * would overflow, reserved bits and subclusters both allocated and zero cleared. */
static int plan_entry(struct qcow2_scan *s, struct qcow2_l2walk *w, uint32_t j, uint64_t e,
		      uint64_t bm, const char *zero_why, enum qcow2_ref ref)
{
	struct qcow2_image *img = s->img;
	uint64_t host = e & QCOW2_L2E_OFFSET_MASK, cs = img->cluster_bytes;
	uint64_t both = (bm >> 32) & bm & QCOW2_L2_BITMAP_ALLOC;
	bool ext = img->l2_entry_words == 2;
	bool data = ext ? ((bm & ~both) & QCOW2_L2_BITMAP_ALLOC) : !(e & QCOW2_OFLAG_ZERO);
	bool in_meta = ref == QCOW2_REF_COUNTED && !zero_why &&
		       qcow2_walk_is_meta(s, host >> img->h.cluster_bits);
	struct qcow2_fix f = {
	    .table = w->table,
	    .idx = j,
	    .guest_off = w->guest + j * cs,
	    .old = e,
	    .entry = e & ~QCOW2_L2E_RESERVED,
	    .bitmap = bm & ~both,
	    .why = both ? "subclusters both allocated and zero" : "reserved bits set",
	};

	if (!w->fixable)
		return 0;
	if (ref == QCOW2_REF_OUTSIDE)
		zero_why = "past the end of the file";
	else if ((in_meta || ref == QCOW2_REF_OVERFLOW) && !data)
		zero_why = in_meta ? "in metadata" : "refcount overflow";
	if (zero_why) {
		zero_entry(img, &f, bm);
		f.why = zero_why;
	} else if (in_meta || ref == QCOW2_REF_OVERFLOW) {
		f.move = true;
		f.why = in_meta ? "in metadata" : "refcount overflow";
	} else if (f.entry == e && f.bitmap == bm) {
		return 0;
	}
	if (ref == QCOW2_REF_COUNTED && (f.move || (f.entry & QCOW2_L2E_OFFSET_MASK) != host) &&
	    unref(s, host, cs) < 0)
		return -ENOMEM;
	return w->active ? add_fix(s, &f) : 0;
}

static int plan_compressed(struct qcow2_scan *s, struct qcow2_l2walk *w, uint32_t j, uint64_t e,
			   uint64_t bm, uint64_t host, uint64_t bytes)
{
	bool data_file = s->img->h.incompat & QCOW2_INCOMPAT_DATA_FILE;
	struct qcow2_fix f = {
	    .table = w->table,
	    .idx = j,
	    .guest_off = w->guest + j * s->img->cluster_bytes,
	    .old = e,
	    .entry = e & ~QCOW2_OFLAG_COPIED,
	    .bitmap = data_file ? bm : 0,
	    .why = bm && !data_file ? "a subcluster bitmap on a compressed cluster"
				    : "the COPIED flag of a compressed cluster",
	};

	if (!w->fixable || (f.entry == e && f.bitmap == bm))
		return 0;
	/* once the bitmap is cleared, the compressed data is in use */
	if (bm && !data_file && reref(s, host, bytes) < 0)
		return -ENOMEM;
	return w->active ? add_fix(s, &f) : 0;
}

/* An active L1 entry a repair rewrites: reserved bits cleared, or dropped when its L2 table is
 * misaligned or past the end of the file (QEMU cannot read it either). */
static int plan_l1(struct qcow2_scan *s, struct qcow2_l2walk *w, uint32_t i, uint64_t e,
		   enum qcow2_ref ref)
{
	struct qcow2_fix f = {
	    .table = i,
	    .l1 = true,
	    .guest_off = w->guest,
	    .old = e,
	    .entry = e & ~QCOW2_L1E_RESERVED,
	    .why = "reserved bits set",
	};
	uint64_t l2 = e & QCOW2_L1E_OFFSET_MASK;

	if (!s->plan || !w->active)
		return 0;
	if (ref == QCOW2_REF_OUTSIDE || !l2 || (l2 & (s->img->cluster_bytes - 1))) {
		f.entry = 0;
		f.why = ref == QCOW2_REF_OUTSIDE ? "L2 table past the end of the file"
			: l2			 ? "misaligned L2 table"
						 : "no L2 table";
		w->dropped = true;
		if (ref == QCOW2_REF_COUNTED && unref(s, l2, s->img->cluster_bytes) < 0)
			return -ENOMEM;
	} else if (!(e & QCOW2_L1E_RESERVED)) {
		return 0;
	}
	return add_fix(s, &f);
}

/* What a planning walk asks of the repair, entry by entry (engine/walk.c). */
static const struct qcow2_walk_fixes planners = {plan_entry, plan_compressed, plan_l1, unref};

/* ---- the fixes ---- */

static const char *action(const struct qcow2_fix *f)
{
	if (f->l1)
		return f->entry ? "reserved bits cleared"
				: "dropped (the range reads as unallocated)";
	if (f->move)
		return f->entry & QCOW2_L2E_OFFSET_MASK ? "data copied to a cluster of its own"
							: "pointed at a new cluster of zeros";
	if ((f->old & QCOW2_L2E_OFFSET_MASK) && !(f->entry & QCOW2_L2E_OFFSET_MASK))
		return f->entry || f->bitmap ? "made a zero cluster" : "made unallocated";
	if ((f->old ^ f->entry) == QCOW2_OFLAG_COPIED)
		return "COPIED flag cleared";
	return "reserved bits cleared";
}

static void report_fix(struct qcow2_scan *s, const struct qcow2_fix *f)
{
	s->res->corruptions_fixed++;
	if (f->l1)
		qcow2_walk_say(s, QCOW2_CHECK_REPAIR,
			       "Repairing L1 entry %" PRIu64 " (l1_entry=%" PRIx64 ", %s): %s",
			       f->table, f->old, f->why, action(f));
	else
		qcow2_walk_say(s, QCOW2_CHECK_REPAIR,
			       "Repairing L2 entry for guest offset 0x%" PRIx64
			       " (l2_entry=%" PRIx64 ", %s): %s",
			       f->guest_off, f->old, f->why, action(f));
}

/* The counts as they become once the entries are rewritten. */
static void plan_counts(struct qcow2_scan *s)
{
	size_t i;
	uint64_t c;

	for (i = 0; i < s->n_unref; i++)
		for (c = s->unref[i].first; c < s->unref[i].first + s->unref[i].count; c++)
			if (c < s->n && s->counts[c])
				s->counts[c]--;
	for (i = 0; i < s->n_reref; i++)
		for (c = s->reref[i].first; c < s->reref[i].first + s->reref[i].count; c++)
			if (c < s->n && s->counts[c] < s->ref_max) {
				s->counts[c]++;
				if (c >= s->n_used)
					s->n_used = c + 1;
			}
}

/* A dry run: what a repair would change, reported and counted. */
static int report_plan(struct qcow2_scan *s)
{
	uint64_t i, v, n;
	size_t k;
	int r = 0;

	for (k = 0; k < s->n_fixes; k++)
		report_fix(s, &s->fixes[k]);
	for (i = 0; i < s->n_used && r == 0; i++) {
		r = qcow2_walk_refcount(s, i, &v);
		if (r > 0)
			r = 0;
		else if (r < 0 || v == s->counts[i])
			continue;
		qcow2_walk_fixed(s, i, v, s->counts[i]);
	}
	if (r == 0)
		r = qcow2_check_copied(s, true, "Repairing", QCOW2_CHECK_REPAIR, &n);
	if (r == 0)
		s->res->corruptions_fixed += n;
	return r;
}

/* Store @entry (and @bitmap with extended L2) as entry @idx of the L2 table at @table, through
 * the cache. w->lock held. */
static int set_l2(struct qcow2_image *img, uint64_t table, uint32_t idx, uint64_t entry,
		  uint64_t bitmap)
{
	uint64_t words[2] = {entry, bitmap};
	uint32_t ew = img->l2_entry_words;
	int r = qcow2_l2cache_modify(img->l2cache, img->io, table, NULL, idx * ew, ew, words);

	if (r == -EAGAIN) { /* every cached table is dirty: write them back */
		r = qcow2_image_flush_locked(img);
		if (r == 0)
			r = qcow2_l2cache_modify(img->l2cache, img->io, table, NULL, idx * ew, ew,
						 words);
		if (r == -EAGAIN)
			r = qcow2_set_error(-ENOMEM, "L2 cache too small");
	}
	return r;
}

/* Step 1: the entries rewritten in place. */
static int apply_rewrites(struct qcow2_scan *s)
{
	struct qcow2_image *img = s->img;
	size_t k;
	int r = 0;

	qcow2_image_meta_lock(img);
	for (k = 0; k < s->n_fixes && r == 0; k++) {
		const struct qcow2_fix *f = &s->fixes[k];

		if (f->move)
			continue;
		if (f->l1)
			qcow2_write_l1_set(img, (uint32_t)f->table, f->entry);
		else
			r = set_l2(img, f->table, f->idx, f->entry, f->bitmap);
		if (r == 0)
			report_fix(s, f);
	}
	qcow2_image_meta_unlock(img);
	return r;
}

/* What each entry to move shows now (NULL: zeros), read before anything changes, since the
 * metadata it lies in may change. */
static int read_moves(struct qcow2_scan *s, uint8_t ***out)
{
	uint64_t cs = s->img->cluster_bytes;
	uint8_t **copies = calloc(s->n_fixes ? s->n_fixes : 1, sizeof(*copies));
	size_t k;
	int r = copies ? 0 : qcow2_oom();

	for (k = 0; k < s->n_fixes && r == 0; k++) {
		uint64_t src = s->fixes[k].entry & QCOW2_L2E_OFFSET_MASK;

		if (!s->fixes[k].move)
			continue;
		/* An encrypted image's data is ciphertext bound to its host offset (the IVs of
		 * LUKS): copied as bytes, or replaced by plain zeros, it would read as noise.
		 * Refused before anything changes. */
		if (qcow2_image_encrypted(s->img)) {
			r = qcow2_set_error(-ENOTSUP,
					    "'%s': encrypted: data lying in metadata is not moved "
					    "(its ciphertext is bound to where it lies)",
					    s->img->name);
			break;
		}
		if (!src)
			continue;
		copies[k] = malloc(cs);
		r = copies[k] ? qcow2_io_pread_full(s->img->io, copies[k], cs, src) : qcow2_oom();
	}
	*out = copies;
	return r;
}

static void free_moves(struct qcow2_scan *s, uint8_t **copies)
{
	size_t k;

	for (k = 0; copies && k < s->n_fixes; k++)
		free(copies[k]);
	free(copies);
}

/* Step 3: a cluster of its own for an entry to move, written with @data (NULL: zeros) before
 * the entry points at it. w->lock held. */
static int move_one(struct qcow2_scan *s, const struct qcow2_fix *f, const uint8_t *data,
		    uint8_t *zeros)
{
	struct qcow2_image *img = s->img;
	uint64_t dst;
	int r = qcow2_refcount_alloc(img, 1, &dst);

	if (r < 0)
		return r;
	r = qcow2_io_pwrite(img->io, data ? data : zeros, img->cluster_bytes, dst);
	__atomic_store_n(&img->w->data_dirty, true, __ATOMIC_RELEASE);
	if (r == 0)
		r = set_l2(img, f->table, f->idx, dst | QCOW2_OFLAG_COPIED, f->bitmap);
	if (r < 0) {
		qcow2_refcount_unalloc(img, dst, 1);
		return r;
	}
	report_fix(s, f);
	return 0;
}

static int apply_moves(struct qcow2_scan *s, uint8_t **copies)
{
	struct qcow2_image *img = s->img;
	uint8_t *zeros = calloc(1, img->cluster_bytes);
	size_t k;
	int r = zeros ? 0 : qcow2_oom();

	qcow2_image_meta_lock(img);
	for (k = 0; k < s->n_fixes && r == 0; k++) {
		if (s->fixes[k].move)
			r = move_one(s, &s->fixes[k], copies[k], zeros);
		if (r == 0)
			r = qcow2_walk_step(s, 0);
	}
	qcow2_image_meta_unlock(img);
	free(zeros);
	return r;
}

/* Steps 4 and 5: recount, set every refcount to it, then the COPIED flags. */
static int recount(struct qcow2_image *img, const struct qcow2_check_opts *o,
		   struct qcow2_check_result *res)
{
	struct qcow2_check_result scratch = {0};
	struct qcow2_scan s;
	uint64_t n;
	int r;

	r = qcow2_walk_init(&s, img, o, &scratch);
	s.quiet = true;
	if (r == 0)
		r = qcow2_walk_count(&s);
	s.quiet = false;
	s.res = res;
	if (r == 0)
		r = qcow2_walk_set_refcounts(&s, QCOW2_RECOUNT_ALL);
	if (r == 0)
		r = qcow2_image_flush(img);
	if (r == 0)
		r = qcow2_check_copied(&s, false, "Repairing", QCOW2_CHECK_REPAIR, &n);
	if (r == 0) {
		res->corruptions_fixed += n;
		qcow2_image_meta_lock(img);
		r = qcow2_write_fix_copied(img);
		qcow2_image_meta_unlock(img);
	}
	qcow2_walk_release(&s);
	return r;
}

/* Last: the dirty and corrupt bits cleared if a final check finds no corruption. */
static int clear_bits(struct qcow2_image *img)
{
	struct qcow2_check_result after;
	int r = qcow2_image_check(img, &after);

	if (r < 0 || after.corruptions)
		return r;
	if (!(img->h.incompat & (QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT)))
		return 0;
	img->h.incompat &= ~(QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT);
	img->w->set_dirty = false;
	r = qcow2_image_write_header(img);
	if (r == 0)
		r = qcow2_io_flush(img->io);
	return r;
}

static int apply(struct qcow2_scan *s)
{
	struct qcow2_image *img = s->img;
	uint8_t **copies = NULL;
	int r;

	r = read_moves(s, &copies);
	if (r == 0)
		r = apply_rewrites(s);
	if (r == 0)
		r = qcow2_image_flush(img);
	if (r == 0)
		r = qcow2_walk_set_refcounts(s, QCOW2_RECOUNT_RAISE);
	if (r == 0)
		r = qcow2_image_flush(img);
	if (r == 0)
		r = apply_moves(s, copies);
	free_moves(s, copies);
	if (r == 0)
		r = qcow2_image_flush(img);
	if (r == 0)
		r = recount(img, s->o, s->res);
	if (r == 0)
		r = qcow2_image_flush(img);
	if (r == 0)
		r = clear_bits(img);
	/* Stopped part way (an error, a cancelled job): the disk holds a valid image at every
	 * point, and closing the image writes back the rest. */
	return r;
}

int qcow2_repair_pass(struct qcow2_image *img, const struct qcow2_check_opts *o, bool dry_run,
		      bool report_found, struct qcow2_check_result *res, bool *rebuild)
{
	struct qcow2_scan s;
	uint64_t n = 0;
	int r;

	memset(res, 0, sizeof(*res));
	*rebuild = false;
	r = dry_run ? 0 : qcow2_image_flush(img);
	if (r == 0)
		r = qcow2_walk_init(&s, img, o, res);
	if (r < 0)
		return qcow2_error_prefix(r, img->name);
	s.plan = true;
	s.fix = &planners;
	s.quiet = !report_found;
	r = qcow2_walk_count(&s);
	if (r == 0)
		r = qcow2_check_compare(&s);
	if (r == 0)
		r = qcow2_check_copied(&s, false, "ERROR", QCOW2_CHECK_CORRUPTION, &n);
	res->corruptions += n;
	s.quiet = false;
	/* the write side cannot use the table either (a block at the very end of the file) */
	*rebuild = s.rebuild || img->refs_broken;
	plan_counts(&s);
	if (r == 0 && dry_run)
		r = report_plan(&s);
	else if (r == 0 && !*rebuild &&
		 (res->corruptions || res->leaks || res->dirty || res->corrupt))
		r = apply(&s);
	qcow2_walk_release(&s);
	return r < 0 ? qcow2_error_prefix(r, img->name) : 0;
}

/* ---- leaks only ---- */

/* The scan of qcow2_repair_leaks(): counts, refcounts compared, and the COPIED flags checked
 * against the counts, which are the refcounts once the leaks are counted down: a flag missing
 * where a count is 1 is what the count-down leaves to set, a flag set where it is not 1 is
 * damage this must not touch. */
static int scan_leaks(struct qcow2_scan *s, uint64_t *missing_copied)
{
	int r = qcow2_walk_count(s);

	if (r == 0)
		r = qcow2_check_compare(s);
	if (r == 0)
		r = qcow2_check_copied(s, true, "ERROR", QCOW2_CHECK_CORRUPTION, missing_copied);
	if (r == 0 && (s->res->corruptions || s->copied_shared))
		r = qcow2_set_error(-EUCLEAN,
				    "it has %" PRIu64 " errors besides leaked clusters and missing "
				    "COPIED flags ('qcowctl check --repair' fixes them)",
				    s->res->corruptions + s->copied_shared);
	return r;
}

int qcow2_repair_leaks(struct qcow2_image *img, bool dry_run, struct qcow2_check_result *res)
{
	struct qcow2_scan s;
	uint64_t missing = 0, n = 0;
	int r;

	memset(res, 0, sizeof(*res));
	if (!dry_run && !img->w)
		return qcow2_set_error(-EROFS, "'%s' is open read-only", img->name);
	r = dry_run ? 0 : qcow2_image_flush(img);
	if (r == 0)
		r = qcow2_walk_init(&s, img, NULL, res);
	if (r < 0)
		return qcow2_error_prefix(r, img->name);
	r = scan_leaks(&s, &missing);
	res->corruptions += missing;
	if (dry_run) {
		res->leaks_fixed = res->leaks;
		res->corruptions_fixed = missing;
		qcow2_walk_release(&s);
		return r < 0 ? qcow2_error_prefix(r, img->name) : 0;
	}
	/* Steps 4 and 5 of a repair, made for leaks: refcounts only lowered to what points at
	 * their cluster (nothing on disk points at what they free), durable; then the flags. */
	if (r == 0 && res->leaks)
		r = qcow2_walk_set_refcounts(&s, QCOW2_RECOUNT_LOWER);
	if (r == 0)
		r = qcow2_image_flush(img);
	if (r == 0)
		r = qcow2_check_copied(&s, false, "Repairing", QCOW2_CHECK_REPAIR, &n);
	if (r == 0 && n) {
		res->corruptions_fixed += n;
		qcow2_image_meta_lock(img);
		r = qcow2_write_fix_copied(img);
		qcow2_image_meta_unlock(img);
	}
	if (r == 0)
		r = qcow2_image_flush(img);
	qcow2_walk_release(&s);
	return r < 0 ? qcow2_error_prefix(r, img->name) : 0;
}
