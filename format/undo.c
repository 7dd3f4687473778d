/* SPDX-License-Identifier: MIT */
/*
 * undo.c - an undo journal in memory for a repair (repair.c): what every write and hole punch
 * through one io is about to replace, saved before it happens, so that a repair whose result
 * is not better than the image it started from can put every byte back and the file's length
 * with it.
 *
 * Only bytes that existed when the journal started are saved (what lies past the old end of
 * the file goes when the file is truncated back). Each byte is saved once, before its first
 * change: a write that falls within a range saved already saves nothing more (the first copy
 * is the one to restore). Replayed newest first, so the oldest copy of a byte wins wherever
 * saved ranges overlap. Memory: the bytes of the old file the repair rewrites (metadata, and
 * data clusters it punches), at most the old file's size.
 *
 * One thread: a repair holds the image alone and writes it from one thread.
 */
#include <errno.h>
#include <stdlib.h>

#include "internal.h"

struct undo_rec {
	uint64_t off;
	uint64_t n;
	uint8_t *bytes;
};

struct qcow2_undo {
	struct qcow2_io *io;
	uint64_t old_bytes;
	struct undo_rec *v;
	size_t n, cap;
	uint64_t *slots; /* open addressing: record index + 1 by offset, 0 empty */
	size_t n_slots;
};

static size_t slot_of(const struct qcow2_undo *u, uint64_t off)
{
	return (size_t)((off >> 9) * 0x9e3779b97f4a7c15ull % u->n_slots);
}

/* Whether a record saved at exactly @off covers @n bytes. */
static bool saved(const struct qcow2_undo *u, uint64_t off, uint64_t n)
{
	size_t i;

	if (!u->n_slots)
		return false;
	for (i = slot_of(u, off); u->slots[i]; i = (i + 1) % u->n_slots) {
		const struct undo_rec *r = &u->v[u->slots[i] - 1];
		if (r->off == off && r->n >= n)
			return true;
	}
	return false;
}

static int index_all(struct qcow2_undo *u, size_t n_slots)
{
	uint64_t *s = calloc(n_slots, sizeof(*s));
	size_t k, i;

	if (!s)
		return qcow2_set_error(-ENOMEM, "out of memory for the undo journal");
	free(u->slots);
	u->slots = s;
	u->n_slots = n_slots;
	for (k = 0; k < u->n; k++) {
		for (i = slot_of(u, u->v[k].off); s[i]; i = (i + 1) % n_slots)
			;
		s[i] = k + 1;
	}
	return 0;
}

static int save(void *ctx, uint64_t off, uint64_t n)
{
	struct qcow2_undo *u = ctx;
	struct undo_rec *r;
	size_t k;
	int ret;

	if (off >= u->old_bytes || !n)
		return 0;
	if (n > u->old_bytes - off)
		n = u->old_bytes - off;
	if (saved(u, off, n))
		return 0;
	if (u->n == u->cap) {
		size_t cap = u->cap ? 2 * u->cap : 64;
		r = realloc(u->v, cap * sizeof(*r));
		if (!r)
			return qcow2_set_error(-ENOMEM, "out of memory for the undo journal");
		u->v = r;
		u->cap = cap;
	}
	if (2 * (u->n + 1) > u->n_slots && (ret = index_all(u, 4 * u->cap)) < 0)
		return ret;
	r = &u->v[u->n];
	r->off = off;
	r->n = n;
	r->bytes = malloc(n);
	if (!r->bytes)
		return qcow2_set_error(-ENOMEM, "out of memory for the undo journal");
	ret = qcow2_io_pread_full(u->io, r->bytes, n, off);
	if (ret < 0) {
		free(r->bytes);
		return ret;
	}
	for (k = slot_of(u, off); u->slots[k]; k = (k + 1) % u->n_slots)
		;
	u->slots[k] = ++u->n;
	return 0;
}

int qcow2_undo_start(struct qcow2_io *io, struct qcow2_undo **out)
{
	struct qcow2_undo *u = calloc(1, sizeof(*u));
	int r;

	if (!u)
		return qcow2_set_error(-ENOMEM, "out of memory for the undo journal");
	u->io = io;
	r = qcow2_io_size(io, &u->old_bytes);
	if (r < 0) {
		free(u);
		return r;
	}
	qcow2_io_set_before_write(io, save, u);
	*out = u;
	return 0;
}

int qcow2_undo_replay(struct qcow2_undo *u)
{
	size_t k = u->n;
	int r = 0;

	qcow2_io_set_before_write(u->io, NULL, NULL);
	while (k-- && r == 0)
		r = qcow2_io_pwrite(u->io, u->v[k].bytes, u->v[k].n, u->v[k].off);
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
	qcow2_io_set_before_write(u->io, NULL, NULL);
	for (k = 0; k < u->n; k++)
		free(u->v[k].bytes);
	free(u->v);
	free(u->slots);
	free(u);
}
