/* SPDX-License-Identifier: MIT */
/*
 * chain.c - a flat view: the top layer and its backing layers, opened and closed; what the chain
 * tells of its layers. Reading the view is chain-read.c's, writing its top chain-write.c's.
 *
 * Opening walks the backing names from the top: each name is resolved relative to the
 * directory of the image naming it, must stay below the allowed directories, and must not
 * repeat a file already in the chain (loops). The top is confined the same way (a symlink in
 * SOURCE to an image elsewhere is no way out), no name is resolved through the daemon's own
 * mount point (path.c), and every file is opened by qcow2_file_open(): regular files only
 * (the top may be a block device where the caller allows it), never a blocking open. Layers
 * are qcow2 images or raw files; qcow2 layers are opened by qcow2_image_open_canonical()
 * (engine/open.c), as every image opened by path is. Backing layers are immutable while the
 * chain is open (locked against writers).
 *
 * Locks: none taken (the chain is not shared while it opens, nor any more while it closes);
 * c->owner_rw is created and destroyed here, taken by chain-read.c; c->layers_rw too, taken by
 * chain-read.c (shared) and live.c (exclusive). What qcow2_chain_depth() and
 * qcow2_chain_layer() tell stays true until a live job (jobs/live.c) changes the layers: the
 * daemon asks them only while no live job runs on the chain.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chain/chain.h"

static int add_layer(struct qcow2_chain *c, const char *path)
{
	struct qcow2_chain_layer *l;

	if (c->n == c->cap) {
		unsigned cap = c->cap ? 2 * c->cap : 8;
		struct qcow2_chain_layer *n = realloc(c->layers, cap * sizeof(*n));
		if (!n)
			return qcow2_oom();
		c->layers = n;
		c->cap = cap;
	}
	l = &c->layers[c->n];
	memset(l, 0, sizeof(*l));
	l->path = strdup(path);
	if (!l->path)
		return qcow2_oom();
	c->n++;
	return 0;
}

/* The open flags of a chain's file at the canonical @path: layer @idx (0: the top). */
static unsigned layer_flags(const struct qcow2_chain_opts *o, unsigned idx, bool writable)
{
	unsigned f = QCOW2_OPEN_NOFOLLOW;

	if (writable)
		f |= QCOW2_OPEN_WRITE;
	if (idx == 0 && o && o->top_blockdev)
		f |= QCOW2_OPEN_BLOCKDEV;
	return f;
}

/* Open the file of the newest layer as @fmt ("qcow2", "raw" or "" to probe). */
static int open_layer_file(struct qcow2_chain *c, const struct qcow2_chain_opts *o, const char *fmt)
{
	struct qcow2_chain_layer *l = &c->layers[c->n - 1];
	struct qcow2_io *io;
	bool is_qcow2;
	int r;

	if (fmt[0] && strcmp(fmt, "qcow2") != 0 && strcmp(fmt, "raw") != 0)
		return qcow2_set_error(-ENOTSUP, "'%s': backing format '%s' not supported",
				       c->layers[c->n - 2].path, fmt);
	if (strcmp(fmt, "qcow2") != 0) {
		r = qcow2_io_open(l->path, layer_flags(o, c->n - 1, false), &io);
		if (r < 0)
			return r;
		r = qcow2_header_probe(io, &is_qcow2, NULL);
		if (r == 0 && (strcmp(fmt, "raw") == 0 || !is_qcow2)) {
			l->raw = io;
			r = o && o->lock ? qcow2_io_lock_reader(io) : 0;
			return r < 0 ? r : qcow2_io_size(io, &l->size);
		}
		qcow2_io_close(io);
		if (r < 0)
			return r;
	}
	if (c->n == 1 && o && (o->writable || o->share_write))
		r = qcow2_image_open_canonical(
		    l->path, o, layer_flags(o, 0, o->writable && !o->snapshot),
		    o->share_write ? QCOW2_PERM_ALL : QCOW2_READER_SHARED, &l->img);
	else
		r = qcow2_image_open_canonical(l->path, o, layer_flags(o, c->n - 1, false),
					       QCOW2_READER_SHARED, &l->img);
	if (r < 0)
		return r;
	l->size = qcow2_guest_bytes(l->img->h.size);
	return 0;
}

/* The identity of the newest layer, from its open descriptor (the file actually read). */
static int note_identity(struct qcow2_chain *c)
{
	struct qcow2_chain_layer *l = &c->layers[c->n - 1];
	struct qcow2_io *io = l->img ? l->img->io : l->raw;
	struct stat st;

	if (fstat(qcow2_io_fd(io), &st) < 0)
		return qcow2_set_error(-errno, "'%s': %s", l->path, strerror(errno));
	l->dev = st.st_dev;
	l->ino = st.st_ino;
	return 0;
}

static int check_loop(const struct qcow2_chain *c)
{
	const struct qcow2_chain_layer *l = &c->layers[c->n - 1];
	unsigned i;

	for (i = 0; i + 1 < c->n; i++)
		if (c->layers[i].dev == l->dev && c->layers[i].ino == l->ino)
			return qcow2_set_error(-ELOOP, "'%s': backing chain loops back to '%s'",
					       c->layers[c->n - 2].path, l->path);
	return 0;
}

static int open_top_snapshot(struct qcow2_chain *c, const char *snapshot)
{
	struct qcow2_chain_layer *l = &c->layers[0];
	int idx, r;

	if (!l->img)
		return qcow2_set_error(-EINVAL, "'%s': raw files have no snapshots", l->path);
	idx = qcow2_image_find_snapshot(l->img, snapshot);
	if (idx < 0)
		return idx;
	r = qcow2_image_snapshot_l1(l->img, (uint32_t)idx, &l->l1);
	if (r < 0)
		return r;
	l->size = l->l1->size;
	r = qcow2_snapshot_pin_init(&c->pin, l->img->io, &l->img->h, &l->img->snaps[idx]);
	if (r < 0)
		return qcow2_error_prefix(r, l->path);
	c->pinned = true;
	return 0;
}

static int open_layers(struct qcow2_chain *c, const char *path, const struct qcow2_chain_opts *o)
{
	unsigned max_depth = o && o->max_depth ? o->max_depth : QCOW2_DEFAULT_MAX_DEPTH;
	char next[PATH_MAX], fmt[32] = "";
	int r;

	r = qcow2_chain_resolve_top(o, path, next, sizeof(next));
	if (r < 0)
		return r;
	for (;;) {
		const struct qcow2_header *h;

		if (c->n >= max_depth)
			return qcow2_set_error(-ELOOP, "'%s': backing chain deeper than %u layers",
					       path, max_depth);
		r = add_layer(c, next);
		if (r == 0)
			r = open_layer_file(c, o, fmt);
		if (r == 0)
			r = note_identity(c);
		if (r == 0)
			r = check_loop(c);
		if (r < 0)
			return r;
		if (c->n == 1 && o && o->snapshot && (r = open_top_snapshot(c, o->snapshot)) < 0)
			return r;
		if (!c->layers[c->n - 1].img)
			return 0;
		h = &c->layers[c->n - 1].img->h;
		if (!h->backing_file[0])
			return 0;
		snprintf(fmt, sizeof(fmt), "%s", h->backing_fmt);
		r = qcow2_chain_resolve_path(o, c->layers[c->n - 1].path, h->backing_file, next,
					     sizeof(next));
		if (r < 0)
			return r;
	}
}

int qcow2_chain_setup_owners(struct qcow2_chain *c)
{
	uint32_t bits = QCOW2_MAX_CLUSTER_BITS;
	unsigned i;

	if (c->n < 2)
		return 0; /* a single layer answers in one lookup anyway */
	for (i = 0; i < c->n; i++)
		if (c->layers[i].img && c->layers[i].img->sc_bits < bits)
			bits = c->layers[i].img->sc_bits;
	return qcow2_ownermap_new(c->size, bits, &c->owners);
}

int qcow2_chain_open(const char *path, const struct qcow2_chain_opts *o, struct qcow2_chain **out)
{
	struct qcow2_chain *c = calloc(1, sizeof(*c));
	int r;

	if (!c)
		return qcow2_oom();
	pthread_rwlock_init(&c->owner_rw, NULL);
	pthread_rwlock_init(&c->sector_rw, NULL);
	qcow2_chain_layers_rw_init(c);
	r = open_layers(c, path, o);
	if (r == 0) {
		c->size = c->layers[0].size;
		r = qcow2_chain_setup_owners(c);
	}
	if (r < 0) {
		qcow2_chain_close(c);
		return r;
	}
	*out = c;
	return 0;
}

void qcow2_chain_close(struct qcow2_chain *c)
{
	unsigned i;

	if (!c)
		return;
	for (i = 0; i < c->n; i++) {
		qcow2_image_close(c->layers[i].img);
		qcow2_io_close(c->layers[i].raw);
		free(c->layers[i].path);
	}
	if (c->pinned)
		qcow2_snapshot_pin_release(&c->pin);
	qcow2_ownermap_free(c->owners);
	pthread_rwlock_destroy(&c->owner_rw);
	pthread_rwlock_destroy(&c->sector_rw);
	pthread_rwlock_destroy(&c->layers_rw);
	free(c->dirty);
	free(c->layers);
	free(c);
}

uint64_t qcow2_chain_size(const struct qcow2_chain *c)
{
	return c->size;
}

unsigned qcow2_chain_depth(const struct qcow2_chain *c)
{
	return c->n;
}

void qcow2_chain_layers_hold(struct qcow2_chain *c)
{
	pthread_rwlock_rdlock(&c->layers_rw);
}

void qcow2_chain_layers_release(struct qcow2_chain *c)
{
	pthread_rwlock_unlock(&c->layers_rw);
}

void qcow2_chain_top_path(struct qcow2_chain *c, char *out, size_t cap)
{
	pthread_rwlock_rdlock(&c->layers_rw);
	snprintf(out, cap, "%s", c->layers[0].path);
	pthread_rwlock_unlock(&c->layers_rw);
}

bool qcow2_chain_top_is(struct qcow2_chain *c, const char *path)
{
	bool same;

	pthread_rwlock_rdlock(&c->layers_rw); /* (a live job may be changing the layers) */
	same = strcmp(c->layers[0].path, path) == 0;
	pthread_rwlock_unlock(&c->layers_rw);
	return same;
}

int qcow2_chain_layer(const struct qcow2_chain *c, unsigned idx, struct qcow2_layer_info *out)
{
	const struct qcow2_chain_layer *l;

	if (idx >= c->n)
		return qcow2_set_error(-ENOENT, "no layer %u", idx);
	l = &c->layers[idx];
	out->path = l->path;
	out->format = l->img ? "qcow2" : "raw";
	out->size = l->size;
	out->image = l->img;
	out->io = l->img ? l->img->io : l->raw;
	return 0;
}

int qcow2_chain_allocated_bytes(struct qcow2_chain *c, uint64_t *bytes)
{
	uint64_t sum = 0, b;
	unsigned i;
	int r;

	for (i = 0; i < c->n; i++) {
		struct qcow2_chain_layer *l = &c->layers[i];
		struct qcow2_io *io = l->img ? l->img->io : l->raw;

		r = qcow2_io_allocated(io, &b);
		if (r < 0)
			return r;
		sum += b;
		if (l->img && l->img->data_io != l->img->io) {
			r = qcow2_io_allocated(l->img->data_io, &b);
			if (r < 0)
				return r;
			sum += b;
		}
	}
	*bytes = sum;
	return 0;
}
