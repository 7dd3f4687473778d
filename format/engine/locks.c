/* SPDX-License-Identifier: MIT */
/*
 * locks.c - the two locks of an image's write side, and the only functions that take them:
 * w->frees (a rwlock: shared by every read and in-place write of the image's clusters,
 * exclusive while frees are applied or the size or the L1 array changes) and w->lock (the
 * metadata lock: allocation, table changes, write-back). What each guards and the order in which
 * they and every other lock of the library are taken: docs/design.md, "Locks and their order".
 */
#include "engine/engine.h"

void qcow2_wstate_locks_init(struct qcow2_wstate *w)
{
	pthread_rwlockattr_t ra;

	pthread_mutex_init(&w->lock, NULL);
	pthread_rwlockattr_init(&ra);
	/* Applying frees must not starve behind a stream of reads. */
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&w->frees, &ra);
	pthread_rwlockattr_destroy(&ra);
}

void qcow2_wstate_locks_destroy(struct qcow2_wstate *w)
{
	pthread_rwlock_destroy(&w->frees);
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
