/* SPDX-License-Identifier: MIT */
/*
 * open.c - the public open and close of one image: the read side loaded (image/load.c), then
 * for a writable image its write side set up (refcount blocks, overlap checks, a dirty image's
 * refcounts rebuilt, the refcounts of its metadata verified); a clean close writes everything
 * back and clears the dirty bit. The one way to open an image by path is here too
 * (qcow2_image_open_path(): the chain's layers, the tools, the jobs and a repair): the path
 * confined (base/path.c), the file opened with no symlink followed and locked as QEMU would
 * (base/lock.c), its data file resolved and confined like a backing file
 * (qcow2_data_file_open()).
 *
 * Locks: no library lock (the image is not shared yet while it opens, nor any more while it
 * closes; the locks of the write side are locks.c's); QEMU's file locks on the file opened by
 * path: a reader's, or a writer's for a repair.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
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
	/* A clean close: everything written back, then the bitmaps stored (bitmaps.c), then
	 * written back twice (the second writes the count-downs of clusters the first one
	 * unlinked), then the dirty bit cleared. A failure leaves the bitmaps in use. */
	if (w->ready && qcow2_image_flush(img) == 0 &&
	    (qcow2_bitmaps_close(img), qcow2_image_flush(img) == 0) &&
	    qcow2_image_flush(img) == 0 && w->set_dirty) {
		w->set_dirty = false;
		if (qcow2_image_write_header(img) < 0 || qcow2_io_flush(img->io) < 0)
			w->set_dirty = true;
	}
	qcow2_bitmaps_release(img);
	qcow2_overlap_release(img);
	qcow2_refcount_release_write(img);
	qcow2_wstate_locks_destroy(w);
	free(w);
	img->w = NULL;
}

int qcow2_image_end_write(struct qcow2_image *img)
{
	uint64_t end;
	int r = img->w ? qcow2_image_flush(img) : 0;

	if (r < 0)
		return r;
	end = img->w ? __atomic_load_n(&img->end_cluster, __ATOMIC_ACQUIRE) << img->h.cluster_bits
		     : img->file_bytes;
	close_write_side(img);
	/* the read side's bounds are the file's length from now on: what the writes made it */
	if (qcow2_io_size(img->io, &img->file_bytes) < 0 || img->file_bytes < end)
		img->file_bytes = end;
	return 0;
}

bool qcow2_image_writable(const struct qcow2_image *img)
{
	return img->w && !__atomic_load_n(&img->w->corrupt, __ATOMIC_ACQUIRE);
}

int qcow2_image_open(struct qcow2_io *io, const char *name, const struct qcow2_image_opts *o,
		     struct qcow2_image **out)
{
	struct qcow2_image *img;
	int r;

	r = qcow2_image_load(io, name, o, &img);
	if (r < 0)
		return r;
	img->repair = o && o->writable && o->repair;
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

/* ---- by path ---- */

/* Resolved and confined as a backing file is, then opened by its canonical path: a symlink
 * there now was put there since, and is not followed. Locked as a reader, as QEMU locks the
 * data file of an image it reads. */
int qcow2_data_file_open(const struct qcow2_chain_opts *o, const char *image_path,
			 const char *stored_name, bool writable, struct qcow2_io **io)
{
	char path[PATH_MAX];
	int r;

	*io = NULL;
	r = qcow2_chain_resolve_path(o, image_path, stored_name, path, sizeof(path));
	if (r == 0)
		r = qcow2_io_open(path, (writable ? QCOW2_OPEN_WRITE : 0) | QCOW2_OPEN_NOFOLLOW,
				  io);
	if (r == 0 && o && o->lock)
		r = qcow2_io_lock_reader(*io);
	if (r < 0 && *io) {
		qcow2_io_close(*io);
		*io = NULL;
	}
	return r;
}

struct data_file_ctx {
	const struct qcow2_chain_opts *o;
	const char *image_path;
	bool writable;
};

/* The external data file: resolved and confined as a backing file is (base/io.c). */
static int open_data_file(void *ctx, const char *stored, struct qcow2_io **io)
{
	const struct data_file_ctx *d = ctx;

	return qcow2_data_file_open(d->o, d->image_path, stored, d->writable, io);
}

int qcow2_image_open_canonical(const char *path, const struct qcow2_chain_opts *o, unsigned flags,
			       unsigned shared, struct qcow2_image **out)
{
	bool writable = flags & QCOW2_OPEN_WRITE, repair = writable && o && o->repair;
	/* A repair writes the image only: its data file stays read-only. */
	struct data_file_ctx dctx = {o, path, writable && !repair};
	struct qcow2_image_opts io_opts = {open_data_file, &dctx,  o ? o->l2_cache_bytes : 0,
					   writable,	   repair, NULL};
	struct qcow2_io *io;
	int r;

	/* an encrypted image's key, by its own canonical path (a backing file's too) */
	if (o && o->keys.find && (r = o->keys.find(o->keys.ctx, path, &io_opts.key)) <= 0) {
		io_opts.key = NULL;
		if (r < 0)
			return r;
	}
	r = qcow2_io_open(path, flags | QCOW2_OPEN_NOFOLLOW, &io);
	if (r < 0)
		return r;
	if (o && o->lock) {
		r = repair ? qcow2_io_lock_writer(io)
			   : qcow2_io_lock(io, QCOW2_PERM_CONSISTENT_READ, shared);
		if (r < 0) {
			qcow2_io_close(io);
			return r;
		}
	}
	return qcow2_image_open(io, path, &io_opts, out);
}

int qcow2_image_open_path(const char *path, const struct qcow2_chain_opts *o,
			  struct qcow2_image **out)
{
	char canon[PATH_MAX];
	unsigned flags = 0;
	int r;

	r = qcow2_chain_resolve_top(o, path, canon, sizeof(canon));
	if (r < 0)
		return r;
	if (o && (o->writable || o->repair))
		flags |= QCOW2_OPEN_WRITE;
	/* (not for a repair, which may truncate what it wrote back to the file's old length) */
	if (o && o->top_blockdev && !o->repair)
		flags |= QCOW2_OPEN_BLOCKDEV;
	return qcow2_image_open_canonical(canon, o, flags, QCOW2_READER_SHARED, out);
}

void qcow2_image_close(struct qcow2_image *img)
{
	if (!img)
		return;
	close_write_side(img);
	qcow2_image_unload(img);
}
