/* SPDX-License-Identifier: MIT */
/*
 * load.c - one qcow2 image, read side: loading it (header, L1 table, snapshot table, external
 * data file, an L2 cache), accessors, the snapshots' L1 tables, and unloading it. The write
 * side, the public open and close, is the engine's (engine/open.c).
 *
 * After qcow2_image_load() returns, the header, the active L1 table and the snapshot table of a
 * read-only image are immutable, so readers need no lock for them. A writable image's snapshot
 * list changes only in a snapshot operation (snapshot/snapshot-write.c), which holds w->frees
 * exclusive, w->lock and, around the arrays, img->snap_lock. A writable image
 * (img->w) changes L1 entries atomically under w->lock (readers load them atomically), and
 * replaces the L1 array only with w->frees held exclusive (docs/design.md, "Locks and their
 * order"). Snapshot L1 tables are loaded on first use under img->snap_lock (below w->lock). Error
 * messages are prefixed with the image's name here, once, at the public boundary.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "image/image.h"

#define DEFAULT_L2_CACHE_BYTES (2u << 20)

int qcow2_l1_load(struct qcow2_image *img, uint64_t off, uint32_t n, uint64_t size,
		  struct qcow2_l1 *l1)
{
	uint64_t end;
	uint32_t i;
	int r;

	memset(l1, 0, sizeof(*l1));
	l1->size = size;
	if (n == 0)
		return 0;
	if (__builtin_add_overflow(off, (uint64_t)n * 8, &end) || end > img->file_bytes)
		return qcow2_set_error(-EUCLEAN, "L1 table at %#" PRIx64 " runs past end of file",
				       off);
	l1->entries = malloc((size_t)n * 8); /* n * 8 <= QCOW2_MAX_L1_BYTES, checked by callers */
	if (!l1->entries)
		return qcow2_oom_for("the L1 table");
	r = qcow2_io_pread_full(img->io, l1->entries, (size_t)n * 8, off);
	if (r < 0) {
		free(l1->entries);
		l1->entries = NULL;
		return r;
	}
	for (i = 0; i < n; i++)
		l1->entries[i] = get_be64(&l1->entries[i]);
	l1->n = n;
	return 0;
}

static int open_tables(struct qcow2_image *img, const struct qcow2_image_opts *o)
{
	const struct qcow2_header *h = &img->h;
	int r;

	img->cluster_bytes = 1ull << h->cluster_bits;
	img->l2_entry_words = (h->incompat & QCOW2_INCOMPAT_EXTL2) ? 2 : 1;
	img->l2_entries = (uint32_t)(img->cluster_bytes / (8 * img->l2_entry_words));
	img->sc_bits = h->cluster_bits - (img->l2_entry_words == 2 ? 5 : 0);
	r = qcow2_l1_load(img, h->l1_off, h->l1_entries, h->size, &img->l1);
	if (r < 0)
		return r;
	/* A bad entry marks that snapshot invalid, not the image: the rest stays usable. */
	r = qcow2_snapshot_load(img->io, h, img->file_bytes, &img->snaps, &img->snap_table_bytes);
	if (r < 0)
		return r;
	img->snap_l1 = calloc(h->nb_snapshots ? h->nb_snapshots : 1, sizeof(*img->snap_l1));
	if (!img->snap_l1)
		return qcow2_oom();
	r = qcow2_l2cache_new(img->cluster_bytes,
			      o && o->l2_cache_bytes ? o->l2_cache_bytes : DEFAULT_L2_CACHE_BYTES,
			      &img->l2cache);
	if (r < 0)
		return r;
	if (o)
		img->opts = *o;
	if (h->incompat & QCOW2_INCOMPAT_DATA_FILE) {
		if (!o || !o->open_data_file)
			return qcow2_set_error(-ENOTSUP, "external data file '%s' not allowed here",
					       h->data_file);
		r = o->open_data_file(o->ctx, h->data_file, &img->data_io);
		if (r < 0)
			return r;
	} else {
		img->data_io = img->io;
	}
	return 0;
}

/* The read side of qcow2_image_open() (engine/open.c): a new image on @io, which it owns from
 * here on (closed on failure too), with its header, L1 table, snapshot table, L2 cache and
 * external data file. Messages are prefixed with @name. */
int qcow2_image_load(struct qcow2_io *io, const char *name, const struct qcow2_image_opts *o,
		     struct qcow2_image **out)
{
	struct qcow2_image *img;
	int r;

	img = calloc(1, sizeof(*img));
	if (!img) {
		qcow2_io_close(io);
		return qcow2_error_prefix(qcow2_oom(), name);
	}
	img->io = io;
	pthread_mutex_init(&img->snap_lock, NULL);
	img->name = strdup(name);
	if (!img->name) {
		r = qcow2_error_prefix(qcow2_oom(), name);
		goto fail;
	}
	r = qcow2_header_read(io, &img->h);
	if (r < 0)
		goto fail;
	r = qcow2_io_size(io, &img->file_bytes);
	if (r == 0)
		r = open_tables(img, o);
	if (r == 0)
		r = qcow2_image_crypt_load(img, o ? o->key : NULL);
	if (r < 0)
		goto fail;
	*out = img;
	return 0;
fail:
	if (r != -EKEYREJECTED) /* "wrong key for 'NAME'" names it already */
		qcow2_error_prefix(r, name);
	qcow2_image_unload(img);
	return r;
}

void qcow2_image_unload(struct qcow2_image *img)
{
	uint32_t i;

	if (!img)
		return;
	for (i = 0; img->snap_l1 && i < img->h.nb_snapshots; i++) {
		if (img->snap_l1[i])
			free(img->snap_l1[i]->entries);
		free(img->snap_l1[i]);
	}
	free(img->snap_l1);
	qcow2_snapshots_free(img->snaps, img->h.nb_snapshots);
	free(img->l1.entries);
	qcow2_refcount_release(&img->refs);
	qcow2_l2cache_free(img->l2cache);
	qcow2_crypt_free(img->crypt);
	if (img->data_io && img->data_io != img->io)
		qcow2_io_close(img->data_io);
	qcow2_io_close(img->io);
	pthread_mutex_destroy(&img->snap_lock);
	free(img->name);
	free(img);
}

const struct qcow2_header *qcow2_image_header(const struct qcow2_image *img)
{
	return &img->h;
}

struct qcow2_io *qcow2_image_io(const struct qcow2_image *img)
{
	return img->io;
}

struct qcow2_io *qcow2_image_data_io(const struct qcow2_image *img)
{
	return img->data_io;
}

uint64_t qcow2_image_cluster_bytes(const struct qcow2_image *img)
{
	return img->cluster_bytes;
}

uint32_t qcow2_image_snapshot_count(const struct qcow2_image *img)
{
	return img->h.nb_snapshots;
}

const struct qcow2_snapshot *qcow2_image_snapshot(const struct qcow2_image *img, uint32_t idx)
{
	return idx < img->h.nb_snapshots ? &img->snaps[idx] : NULL;
}

static int refuse_invalid(const struct qcow2_image *img, uint32_t i)
{
	return qcow2_set_error(-EUCLEAN, "'%s': snapshot '%s' (id %s) is unusable: %s", img->name,
			       img->snaps[i].name, img->snaps[i].id, img->snaps[i].invalid);
}

/* An id names one usable entry, else a name does (names may repeat: the first usable one);
 * an invalid entry is named only to say why it cannot be used. */
int qcow2_image_find_snapshot(const struct qcow2_image *img, const char *id_or_name)
{
	uint32_t i, pass;
	int bad = -1;

	for (pass = 0; pass < 2; pass++) {
		for (i = 0; i < img->h.nb_snapshots; i++) {
			const struct qcow2_snapshot *s = &img->snaps[i];

			if (strcmp(pass ? s->name : s->id, id_or_name) != 0)
				continue;
			if (!s->invalid)
				return (int)i;
			if (bad < 0)
				bad = (int)i;
		}
	}
	if (bad >= 0)
		return refuse_invalid(img, (uint32_t)bad);
	return qcow2_set_error(-ENOENT, "'%s': no snapshot '%s'", img->name, id_or_name);
}

int qcow2_image_snapshot_l1(struct qcow2_image *img, uint32_t idx, const struct qcow2_l1 **l1)
{
	const struct qcow2_snapshot *s;
	struct qcow2_l1 *t;
	int r = 0;

	if (idx >= img->h.nb_snapshots)
		return qcow2_set_error(-ENOENT, "'%s': no snapshot #%u", img->name, idx);
	s = &img->snaps[idx];
	if (s->invalid)
		return refuse_invalid(img, idx);
	qcow2_image_snapshots_lock(img);
	if (!img->snap_l1[idx]) {
		t = calloc(1, sizeof(*t));
		if (!t)
			r = qcow2_oom();
		else
			r = qcow2_l1_load(img, s->l1_off, s->l1_entries, s->disk_bytes, t);
		if (r == 0 && (uint64_t)t->n * img->l2_entries * img->cluster_bytes < s->disk_bytes)
			r = qcow2_set_error(-EUCLEAN, "snapshot '%s' L1 table is too small",
					    s->name);
		if (r < 0) {
			if (t)
				free(t->entries);
			free(t);
			qcow2_error_prefix(r, img->name);
		} else {
			img->snap_l1[idx] = t;
		}
	}
	*l1 = img->snap_l1[idx];
	qcow2_image_snapshots_unlock(img);
	return r;
}
