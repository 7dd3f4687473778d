/* SPDX-License-Identifier: MIT */
/*
 * repair.c - qcow2_image_repair(): what `qemu-img check -r all` fixes, and what it leaves.
 *
 * A planning scan (check.c) reports the image as `qemu-img check` would and notes what to
 * rewrite in the active tables: L2 entries whose cluster is misaligned or lies past the end of
 * the file become zero clusters (QEMU fails to read the first and reads zeros from the second;
 * it turns misaligned preallocated clusters into zero clusters itself), data clusters lying in
 * metadata are copied to a cluster of their own (so a write of the guest cannot change the
 * metadata and a change of the metadata cannot change the guest's data), L1 entries with a
 * misaligned or missing L2 table are dropped, reserved bits and COPIED flags of compressed
 * clusters are cleared. Then every refcount is set to what points at the cluster, the COPIED
 * flags are set from the refcounts (qcow2_write_fix_copied()), and the dirty and corrupt bits
 * are cleared once a final check finds no corruption.
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
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>

#include "internal.h"

/* ---- opening ---- */

struct repair_open {
	const struct qcow2_chain_opts *o;
	const char *path;
};

/* The external data file, read-only and confined as a backing file is. */
static int open_data_file(void *ctx, const char *stored, struct qcow2_io **io)
{
	const struct repair_open *ro = ctx;
	char path[PATH_MAX];
	int r;

	*io = NULL;
	r = qcow2_chain_resolve_path(ro->o, ro->path, stored, path, sizeof(path));
	if (r == 0)
		r = qcow2_io_open_file(path, false, io);
	if (r == 0 && ro->o->lock)
		r = qcow2_io_lock_reader(*io);
	if (r < 0 && *io) {
		qcow2_io_close(*io);
		*io = NULL;
	}
	return r;
}

int qcow2_image_open_repair(const char *path, const struct qcow2_chain_opts *o,
			    struct qcow2_image **out)
{
	static const struct qcow2_chain_opts none = { 0 };
	struct repair_open ro = { o ? o : &none, path };
	struct qcow2_image_opts io = { open_data_file, &ro, ro.o->l2_cache_bytes, true };
	struct qcow2_io *f = NULL;
	int r;

	r = qcow2_io_open_file(path, true, &f);
	/* QEMU's writer: consistent read, write and resize held, write and resize not shared. */
	if (r == 0 && ro.o->lock)
		r = qcow2_io_lock(f,
				  QCOW2_PERM_CONSISTENT_READ | QCOW2_PERM_WRITE | QCOW2_PERM_RESIZE,
				  QCOW2_PERM_CONSISTENT_READ | QCOW2_PERM_WRITE_UNCHANGED);
	if (r < 0) {
		if (f)
			qcow2_io_close(f);
		return qcow2_error_prefix(r, path);
	}
	return qcow2_image_open_repair_io(f, path, &io, out);
}

/* ---- the fixes ---- */

static const char *action(const struct qcow2_fix *f)
{
	if (f->l1)
		return f->entry ? "reserved bits cleared" : "dropped (the range reads as unallocated)";
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
		qcow2_scan_say(s, QCOW2_CHECK_REPAIR,
			       "Repairing L1 entry %" PRIu64 " (l1_entry=%" PRIx64 ", %s): %s",
			       f->table, f->old, f->why, action(f));
	else
		qcow2_scan_say(s, QCOW2_CHECK_REPAIR,
			       "Repairing L2 entry for guest offset 0x%" PRIx64 " (l2_entry=%" PRIx64
			       ", %s): %s", f->guest_off, f->old, f->why, action(f));
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
		r = qcow2_scan_refcount(s, i, &v);
		if (r < 0 || v == s->counts[i])
			continue;
		if (v < s->counts[i])
			s->res->corruptions_fixed++;
		else
			s->res->leaks_fixed++;
		qcow2_scan_say(s, QCOW2_CHECK_REPAIR,
			       "Repairing cluster %" PRIu64 " refcount=%" PRIu64 " reference=%" PRIu64,
			       i, v, (uint64_t)s->counts[i]);
	}
	if (r == 0)
		r = qcow2_scan_copied(s, true, "Repairing", QCOW2_CHECK_REPAIR, &n);
	if (r == 0)
		s->res->corruptions_fixed += n;
	return r;
}

static void set_l1(struct qcow2_image *img, uint32_t i, uint64_t v)
{
	struct qcow2_wstate *w = img->w;

	__atomic_store_n(&img->l1.entries[i], v, __ATOMIC_RELEASE);
	if (w->l1_lo >= w->l1_hi) {
		w->l1_lo = i;
		w->l1_hi = i + 1;
	} else {
		if (i < w->l1_lo)
			w->l1_lo = i;
		if (i + 1 > w->l1_hi)
			w->l1_hi = i + 1;
	}
}

/* Store @entry (and @bitmap with extended L2) as entry @idx of the L2 table at @table, through
 * the cache. w->lock held. */
static int set_l2(struct qcow2_image *img, uint64_t table, uint32_t idx, uint64_t entry,
		  uint64_t bitmap)
{
	uint64_t words[2] = { entry, bitmap };
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

	pthread_mutex_lock(&img->w->lock);
	for (k = 0; k < s->n_fixes && r == 0; k++) {
		const struct qcow2_fix *f = &s->fixes[k];

		if (f->move)
			continue;
		if (f->l1)
			set_l1(img, (uint32_t)f->table, f->entry);
		else
			r = set_l2(img, f->table, f->idx, f->entry, f->bitmap);
		if (r == 0)
			report_fix(s, f);
	}
	pthread_mutex_unlock(&img->w->lock);
	return r;
}

/* What each entry to move shows now (NULL: zeros), read before anything changes, since the
 * metadata it lies in may change. */
static int read_moves(struct qcow2_scan *s, uint8_t ***out)
{
	uint64_t cs = s->img->cluster_bytes;
	uint8_t **copies = calloc(s->n_fixes ? s->n_fixes : 1, sizeof(*copies));
	size_t k;
	int r = copies ? 0 : qcow2_set_error(-ENOMEM, "out of memory");

	for (k = 0; k < s->n_fixes && r == 0; k++) {
		uint64_t src = s->fixes[k].entry & QCOW2_L2E_OFFSET_MASK;

		if (!s->fixes[k].move || !src)
			continue;
		copies[k] = malloc(cs);
		r = copies[k] ? qcow2_io_pread_full(s->img->io, copies[k], cs, src)
			      : qcow2_set_error(-ENOMEM, "out of memory");
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
	int r = zeros ? 0 : qcow2_set_error(-ENOMEM, "out of memory");

	pthread_mutex_lock(&img->w->lock);
	for (k = 0; k < s->n_fixes && r == 0; k++) {
		if (s->fixes[k].move)
			r = move_one(s, &s->fixes[k], copies[k], zeros);
		if (r == 0)
			r = qcow2_scan_step(s, 0);
	}
	pthread_mutex_unlock(&img->w->lock);
	free(zeros);
	return r;
}

/* Steps 4 and 5: recount, set every refcount to it, then the COPIED flags. */
static int recount(struct qcow2_image *img, const struct qcow2_check_opts *o,
		   struct qcow2_check_result *res)
{
	struct qcow2_check_result scratch = { 0 };
	struct qcow2_scan s;
	uint64_t n;
	int r;

	r = qcow2_scan_init(&s, img, o, &scratch);
	s.quiet = true;
	if (r == 0)
		r = qcow2_scan_count(&s);
	s.quiet = false;
	s.res = res;
	if (r == 0)
		r = qcow2_check_set_refcounts(&s, false);
	if (r == 0)
		r = qcow2_image_flush(img);
	if (r == 0)
		r = qcow2_scan_copied(&s, false, "Repairing", QCOW2_CHECK_REPAIR, &n);
	if (r == 0) {
		res->corruptions_fixed += n;
		pthread_mutex_lock(&img->w->lock);
		r = qcow2_write_fix_copied(img);
		pthread_mutex_unlock(&img->w->lock);
	}
	qcow2_scan_release(&s);
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
		r = qcow2_check_set_refcounts(s, true);
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
	/* Stopped part way (an error, a cancelled job): what was done is made durable, and it is
	 * valid at every point. */
	if (r < 0 && qcow2_image_flush(img) < 0)
		r = qcow2_set_error(r, "%s (and writing back what was repaired failed)",
				    qcow2_last_error());
	return r;
}

int qcow2_image_repair(struct qcow2_image *img, const struct qcow2_check_opts *o, bool dry_run,
		       struct qcow2_check_result *res)
{
	struct qcow2_scan s;
	uint64_t n = 0;
	int r;

	memset(res, 0, sizeof(*res));
	if (!dry_run && !(img->w && img->repair))
		return qcow2_set_error(-EINVAL, "'%s' is not open for repair", img->name);
	r = dry_run ? 0 : qcow2_image_flush(img);
	if (r == 0)
		r = qcow2_scan_init(&s, img, o, res);
	if (r < 0)
		return qcow2_error_prefix(r, img->name);
	s.plan = true;
	r = qcow2_scan_count(&s);
	if (r == 0)
		r = qcow2_scan_compare(&s);
	if (r == 0)
		r = qcow2_scan_copied(&s, false, "ERROR", QCOW2_CHECK_CORRUPTION, &n);
	res->corruptions += n;
	plan_counts(&s);
	if (r == 0 && dry_run)
		r = report_plan(&s);
	else if (r == 0 && (res->corruptions || res->leaks || res->dirty || res->corrupt))
		r = apply(&s);
	qcow2_scan_release(&s);
	return r < 0 ? qcow2_error_prefix(r, img->name) : 0;
}
