/* SPDX-License-Identifier: MIT */
/*
 * undo.c - an undo journal in memory for a repair (verify.c): what every write and hole punch
 * through one io is about to replace, saved before it happens, and where the run flushed, so
 * that a repair whose result is not better than the image it started from can put every byte
 * back and the file's length with it.
 *
 * Write order of the replay (crash safety): the saved bytes go back newest first, with a flush
 * wherever the run had one. So each state the replay makes durable is one the run itself had
 * made durable (plus, until the final truncation, the clusters the run appended), and the
 * repair's own write order (repair.c, rebuild.c) says those are no worse than the image found.
 * Then the file is truncated to its old length and flushed.
 *
 * Only bytes that existed when the journal started are saved (what lies past the old end of
 * the file goes with the truncation). Memory: the bytes of the old file the repair writes, once
 * per write (a refcount block written back three times is saved three times).
 *
 * One thread: a repair holds the image alone and writes it from one thread.
 *
 * Locks: none.
 */
#include <errno.h>
#include <stdlib.h>

#include "base/base.h"

struct undo_rec {
	uint64_t off;
	uint64_t n;	/* 0: a flush */
	uint8_t *bytes; /* what [off, off + n) held before the write */
};

struct qcow2_undo {
	struct qcow2_io *io;
	uint64_t old_bytes;
	struct undo_rec *v;
	size_t n, cap;
};

static int push(struct qcow2_undo *u, uint64_t off, uint64_t n, uint8_t *bytes)
{
	struct undo_rec *r;

	if (u->n == u->cap) {
		size_t cap = u->cap ? 2 * u->cap : 64;
		r = realloc(u->v, cap * sizeof(*r));
		if (!r)
			return qcow2_oom_for("the undo journal");
		u->v = r;
		u->cap = cap;
	}
	u->v[u->n++] = (struct undo_rec){off, n, bytes};
	return 0;
}

static int note(void *ctx, enum qcow2_io_op op, uint64_t off, uint64_t n)
{
	struct qcow2_undo *u = ctx;
	uint8_t *bytes;
	int r;

	if (op == QCOW2_IO_FLUSH)
		return u->n && !u->v[u->n - 1].n ? 0 : push(u, 0, 0, NULL);
	if (off >= u->old_bytes || !n)
		return 0;
	if (n > u->old_bytes - off)
		n = u->old_bytes - off;
	bytes = malloc(n);
	if (!bytes)
		return qcow2_oom_for("the undo journal");
	r = qcow2_io_pread_full(u->io, bytes, n, off);
	if (r == 0)
		r = push(u, off, n, bytes);
	if (r < 0)
		free(bytes);
	return r;
}

int qcow2_undo_start(struct qcow2_io *io, struct qcow2_undo **out)
{
	struct qcow2_undo *u = calloc(1, sizeof(*u));
	int r;

	if (!u)
		return qcow2_oom_for("the undo journal");
	u->io = io;
	r = qcow2_io_size(io, &u->old_bytes);
	if (r < 0) {
		free(u);
		return r;
	}
	qcow2_io_set_journal(io, note, u);
	*out = u;
	return 0;
}

int qcow2_undo_replay(struct qcow2_undo *u)
{
	size_t k = u->n;
	int r = 0;

	qcow2_io_set_journal(u->io, NULL, NULL);
	/* The bytes put back are the file's own from before the repair, whatever kind of
	 * metadata lies there (the overlap guard, overlap.c, would refuse a header or table
	 * written as data, and mark the image corrupt for it). */
	while (k-- && r == 0)
		r = u->v[k].n ? qcow2_io_pwrite_meta(u->io, u->v[k].bytes, u->v[k].n, u->v[k].off,
						     QCOW2_OL_ALL)
			      : qcow2_io_flush(u->io);
	if (r == 0)
		r = qcow2_io_flush(u->io);
	if (r == 0)
		r = qcow2_io_truncate(u->io, u->old_bytes);
	if (r == 0)
		r = qcow2_io_flush(u->io);
	return r;
}

void qcow2_undo_free(struct qcow2_undo *u)
{
	size_t k;

	if (!u)
		return;
	qcow2_io_set_journal(u->io, NULL, NULL);
	for (k = 0; k < u->n; k++)
		free(u->v[k].bytes);
	free(u->v);
	free(u);
}
