/* SPDX-License-Identifier: MIT */
/*
 * recount.c - refcounts set to what a walk counted (walk.c): the rebuild of the refcounts of an
 * image left dirty by lazy refcounts, run at its writable open before anyone else uses it, and
 * the refcount steps of a repair (integrity/repair.c). Each change is reported and counted in
 * the walk's result. Locking: takes w->lock around the changes; nothing is flushed here except
 * by the dirty rebuild, which then writes the header without the dirty bit (durable refcounts
 * first).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "engine/engine.h"

#define STEP 4096 /* clusters set between two progress reports */

/* ---- setting refcounts ---- */

/* Clusters past the counted ones keep no refcount. w->lock held. */
static int clear_past(struct qcow2_scan *s)
{
	struct qcow2_image *img = s->img;
	uint64_t pb = qcow2_refcount_per_block(img);
	uint64_t covered = (uint64_t)img->refs.n * pb, i, v;
	int r = 0;

	for (i = s->n_used; r == 0 && i < covered; i++) {
		if (!img->refs.table[i / pb]) {
			i = (i / pb + 1) * pb - 1;
			continue;
		}
		r = qcow2_refcount_get_w(img, i, &v);
		if (r == 0 && v)
			r = qcow2_refcount_set_w(img, i, 0);
	}
	return r;
}

/* Set refcounts to the counts of @s: all of them, only those lower (@how QCOW2_RECOUNT_RAISE)
 * or only those higher (QCOW2_RECOUNT_LOWER, the leaks). */
int qcow2_walk_set_refcounts(struct qcow2_scan *s, enum qcow2_recount how)
{
	struct qcow2_image *img = s->img;
	uint64_t i, v, c;
	int r;

	/* New refcount blocks go past every cluster counted. */
	if (img->end_cluster < s->n_used)
		__atomic_store_n(&img->end_cluster, s->n_used, __ATOMIC_RELAXED);
	qcow2_image_meta_lock(img);
	r = how == QCOW2_RECOUNT_RAISE ? 0 : clear_past(s);
	for (i = 0; r == 0 && i < s->n_used; i++) {
		if (i % STEP == STEP - 1 && (r = qcow2_walk_step(s, STEP)) < 0)
			break;
		c = s->counts[i];
		r = qcow2_refcount_get_w(img, i, &v);
		if (r < 0 || v == c || (how == QCOW2_RECOUNT_RAISE && v > c) ||
		    (how == QCOW2_RECOUNT_LOWER && v < c))
			continue;
		r = qcow2_refcount_set_w(img, i, c);
		if (r < 0)
			break;
		qcow2_walk_fixed(s, i, v, c);
	}
	qcow2_image_meta_unlock(img);
	return r;
}

/* ---- a dirty image's rebuild ---- */

int qcow2_rebuild_dirty(struct qcow2_image *img)
{
	struct qcow2_check_result res = {0};
	struct qcow2_scan s;
	int r;

	r = qcow2_walk_init(&s, img, NULL, &res);
	s.quiet = true;
	if (r == 0)
		r = qcow2_walk_count(&s);
	if (r == 0)
		r = qcow2_walk_set_refcounts(&s, QCOW2_RECOUNT_ALL);
	qcow2_walk_release(&s);
	/* The fast path trusts COPIED to mean "refcount 1": make it so, as QEMU's repair does. */
	if (r == 0)
		r = qcow2_write_fix_copied(img);
	if (r == 0)
		r = qcow2_image_flush(img);
	if (r == 0) {
		/* Durable refcounts first, then the header without the dirty bit. */
		img->h.incompat &= ~QCOW2_INCOMPAT_DIRTY;
		r = qcow2_image_write_header(img);
		if (r == 0)
			r = qcow2_io_flush(img->io);
	}
	if (r < 0)
		return qcow2_set_error(r,
				       "left dirty by lazy refcounts, and rebuilding its "
				       "refcounts failed: %s",
				       qcow2_last_error());
	return 0;
}
