/* SPDX-License-Identifier: MIT */
/*
 * locks.c - the two locks of an image's write side, and the only functions that take them:
 * w->frees (a rwlock: shared by every read and in-place write of the image's clusters,
 * exclusive while frees are applied or the size or the L1 array changes) and w->lock (the
 * metadata lock: allocation, table changes, write-back). What each guards and the order in which
 * they and every other lock of the library are taken: docs/design.md, "Locks and their order".
 *
 * Also the in-flight table of write passes (write.c, docs/design.md "Parallel first writes"):
 * ranges of guest clusters whose entries a pass will store once their data is written, kept
 * under w->lock, with one condition variable per image (w->inflight_cv, waited on with w->lock)
 * that every leave and every end of unlocked I/O broadcasts. One condition rather than one per
 * entry: the waiters are few (FUSE threads) and each re-checks what it waits for.
 */
#include "engine/engine.h"

void qcow2_wstate_locks_init(struct qcow2_wstate *w)
{
	pthread_rwlockattr_t ra;

	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->inflight_cv, NULL);
	pthread_rwlockattr_init(&ra);
	/* Applying frees must not starve behind a stream of reads. */
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&w->frees, &ra);
	pthread_rwlockattr_destroy(&ra);
}

void qcow2_wstate_locks_destroy(struct qcow2_wstate *w)
{
	pthread_rwlock_destroy(&w->frees);
	pthread_cond_destroy(&w->inflight_cv);
	pthread_mutex_destroy(&w->lock);
}

void qcow2_image_read_begin(struct qcow2_image *img)
{
	if (img->w)
		pthread_rwlock_rdlock(&img->w->frees);
}

void qcow2_image_read_end(struct qcow2_image *img)
{
	if (img->w)
		pthread_rwlock_unlock(&img->w->frees);
}

void qcow2_image_exclusive_begin(struct qcow2_image *img)
{
	pthread_rwlock_wrlock(&img->w->frees);
}

void qcow2_image_exclusive_end(struct qcow2_image *img)
{
	pthread_rwlock_unlock(&img->w->frees);
}

void qcow2_image_meta_lock(struct qcow2_image *img)
{
	pthread_mutex_lock(&img->w->lock);
}

void qcow2_image_meta_unlock(struct qcow2_image *img)
{
	pthread_mutex_unlock(&img->w->lock);
}

static bool overlaps(const struct qcow2_wstate *w, uint64_t first, uint64_t n)
{
	const struct qcow2_inflight *f;

	for (f = w->inflight; f; f = f->next)
		if (first < f->first + f->n && f->first < first + n)
			return true;
	return false;
}

void qcow2_write_inflight_wait(struct qcow2_image *img, uint64_t first, uint64_t n)
{
	struct qcow2_wstate *w = img->w;

	while (overlaps(w, first, n))
		pthread_cond_wait(&w->inflight_cv, &w->lock);
}

void qcow2_write_inflight_enter(struct qcow2_image *img, struct qcow2_inflight *f, uint64_t first,
				uint64_t n)
{
	struct qcow2_wstate *w = img->w;

	qcow2_write_inflight_wait(img, first, n);
	f->first = first;
	f->n = n;
	f->next = w->inflight;
	w->inflight = f;
}

void qcow2_write_inflight_leave(struct qcow2_image *img, struct qcow2_inflight *f)
{
	struct qcow2_wstate *w = img->w;
	struct qcow2_inflight **p;

	for (p = &w->inflight; *p; p = &(*p)->next)
		if (*p == f) {
			*p = f->next;
			break;
		}
	pthread_cond_broadcast(&w->inflight_cv);
}

void qcow2_write_io_begin(struct qcow2_image *img)
{
	img->w->n_io++;
	pthread_mutex_unlock(&img->w->lock);
}

void qcow2_write_io_end(struct qcow2_image *img)
{
	pthread_mutex_lock(&img->w->lock);
	if (--img->w->n_io == 0)
		pthread_cond_broadcast(&img->w->inflight_cv);
}

void qcow2_write_quiesce(struct qcow2_image *img)
{
	while (img->w->n_io)
		pthread_cond_wait(&img->w->inflight_cv, &img->w->lock);
}
