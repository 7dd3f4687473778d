/* SPDX-License-Identifier: MIT */
/*
 * open.c - the public open and close of one image: the read side loaded (image/load.c), then
 * for a writable image its write side set up (refcount blocks, overlap checks, a dirty image's
 * refcounts rebuilt, the refcounts of its metadata verified); a clean close writes everything
 * back and clears the dirty bit. Locking: the image is not shared yet while it opens, nor any
 * more while it closes; the locks of the write side are locks.c's.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/engine.h"

static int open_write_side(struct qcow2_image *img)
{
	struct qcow2_wstate *w;
	int r;

	if ((img->h.incompat & QCOW2_INCOMPAT_CORRUPT) && !img->repair)
		return qcow2_set_error(-EROFS,
				       "marked corrupt: refusing to write it (repair it with "
				       "'qemu-img check -r all')");
	w = calloc(1, sizeof(*w));
	if (!w)
		return qcow2_oom();
	qcow2_wstate_locks_init(w);
	img->w = w;
	r = qcow2_refcount_init_write(img);
	/* A repair opens an image whose refcount table the write side cannot use: it builds a
	 * new refcount structure before anything writes (repair.c, rebuild.c). */
	if (r == -EUCLEAN && img->repair) {
		img->refs_broken = true;
		r = 0;
	}
	/* (Not with a broken refcount structure: the repair's rebuild replaces it first and
	 * verifies its result, undoing it if it is not better; see repair.c.) */
	if (r == 0 && !img->refs_broken)
		r = qcow2_overlap_init(img);
	/* A repair keeps the dirty bit until its refcounts are right (qcow2_image_repair()). */
	if (img->repair)
		w->set_dirty = img->h.incompat & QCOW2_INCOMPAT_DIRTY;
	else if (r == 0 && (img->h.incompat & QCOW2_INCOMPAT_DIRTY)) {
		/* (guest data in metadata: rebuilding refcounts and COPIED flags would rewrite
		 * what the guest reads there; only a repair moves it first) */
		r = qcow2_overlap_check_meta(img);
		if (r == 0)
			r = qcow2_rebuild_dirty(img);
	}
	/* Metadata whose refcount says free could be handed out and overwritten by the next
	 * allocation (QEMU would): such an image is not written, only repaired. */
	if (r == 0 && !img->repair)
		r = qcow2_overlap_verify_refcounts(img);
	w->ready = r == 0 && !img->refs_broken;
	return r;
}

static void close_write_side(struct qcow2_image *img)
{
	struct qcow2_wstate *w = img->w;

	if (!w)
		return;
	/* A clean close: everything written back (twice: the second writes the count-downs of
	 * clusters the first one unlinked), then the dirty bit cleared. */
	if (w->ready && qcow2_image_flush(img) == 0 && qcow2_image_flush(img) == 0 &&
	    w->set_dirty) {
		w->set_dirty = false;
		if (qcow2_image_write_header(img) < 0 || qcow2_io_flush(img->io) < 0)
			w->set_dirty = true;
	}
	qcow2_overlap_release(img);
	qcow2_refcount_release_write(img);
	qcow2_wstate_locks_destroy(w);
	free(w);
	img->w = NULL;
}

bool qcow2_image_writable(const struct qcow2_image *img)
{
	return img->w && !__atomic_load_n(&img->w->corrupt, __ATOMIC_ACQUIRE);
}

static int open_image(struct qcow2_io *io, const char *name, const struct qcow2_image_opts *o,
		      bool repair, struct qcow2_image **out)
{
	struct qcow2_image *img;
	int r;

	r = qcow2_image_load(io, name, o, &img);
	if (r < 0)
		return r;
	img->repair = repair;
	if (o && o->writable) {
		r = open_write_side(img);
		if (r < 0) {
			qcow2_error_prefix(r, name);
			qcow2_image_close(img);
			return r;
		}
	}
	*out = img;
	return 0;
}

int qcow2_image_open(struct qcow2_io *io, const char *name, const struct qcow2_image_opts *o,
		     struct qcow2_image **out)
{
	return open_image(io, name, o, false, out);
}

int qcow2_image_open_repair_io(struct qcow2_io *io, const char *name,
			       const struct qcow2_image_opts *o, struct qcow2_image **out)
{
	return open_image(io, name, o, o && o->writable, out);
}

void qcow2_image_close(struct qcow2_image *img)
{
	if (!img)
		return;
	close_write_side(img);
	qcow2_image_unload(img);
}
