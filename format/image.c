/* SPDX-License-Identifier: MIT */
/*
 * image.c - one qcow2 image: opening (header, L1 table, refcount table, snapshot table,
 * external data file), accessors, and closing.
 *
 * After qcow2_image_open() returns, the header, the active L1 table and the snapshot table are
 * immutable (read-only images), so readers need no lock for them. Snapshot L1 tables are loaded
 * on first use under img->snap_lock. Error messages are prefixed with the image's name here,
 * once, at the public boundary.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

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
		return qcow2_set_error(-ENOMEM, "out of memory for the L1 table");
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
	uint32_t i;
	int r;

	img->cluster_bytes = 1ull << h->cluster_bits;
	img->l2_entry_words = (h->incompat & QCOW2_INCOMPAT_EXTL2) ? 2 : 1;
	img->l2_entries = (uint32_t)(img->cluster_bytes / (8 * img->l2_entry_words));
	img->sc_bits = h->cluster_bits - (img->l2_entry_words == 2 ? 5 : 0);
	r = qcow2_l1_load(img, h->l1_off, h->l1_entries, h->size, &img->l1);
	if (r < 0)
		return r;
	r = qcow2_snapshot_load(img->io, h, img->file_bytes, &img->snaps);
	if (r < 0)
		return r;
	for (i = 0; i < h->nb_snapshots; i++) {
		if (img->snaps[i].l1_off % img->cluster_bytes)
			return qcow2_set_error(-EUCLEAN, "snapshot '%s' L1 table is misaligned",
					       img->snaps[i].name);
	}
	img->snap_l1 = calloc(h->nb_snapshots ? h->nb_snapshots : 1, sizeof(*img->snap_l1));
	if (!img->snap_l1)
		return qcow2_set_error(-ENOMEM, "out of memory");
	r = qcow2_l2cache_new(img->cluster_bytes,
			      o && o->l2_cache_bytes ? o->l2_cache_bytes : DEFAULT_L2_CACHE_BYTES,
			      &img->l2cache);
	if (r < 0)
		return r;
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

int qcow2_image_open(struct qcow2_io *io, const char *name, const struct qcow2_image_opts *o,
		     struct qcow2_image **out)
{
	struct qcow2_image *img;
	int r;

	img = calloc(1, sizeof(*img));
	if (!img) {
		qcow2_io_close(io);
		return qcow2_set_error(-ENOMEM, "'%s': out of memory", name);
	}
	img->io = io;
	pthread_mutex_init(&img->snap_lock, NULL);
	img->name = strdup(name);
	if (!img->name) {
		r = qcow2_set_error(-ENOMEM, "'%s': out of memory", name);
		goto fail;
	}
	r = qcow2_header_read(io, &img->h);
	if (r < 0)
		goto fail;
	r = qcow2_io_size(io, &img->file_bytes);
	if (r == 0)
		r = open_tables(img, o);
	if (r < 0) {
		goto fail;
	}
	*out = img;
	return 0;
fail:
	qcow2_error_prefix(r, name);
	qcow2_image_close(img);
	return r;
}

void qcow2_image_close(struct qcow2_image *img)
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

const char *qcow2_image_name(const struct qcow2_image *img)
{
	return img->name;
}

struct qcow2_io *qcow2_image_io(const struct qcow2_image *img)
{
	return img->io;
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

int qcow2_image_find_snapshot(const struct qcow2_image *img, const char *id_or_name)
{
	uint32_t i;

	for (i = 0; i < img->h.nb_snapshots; i++)
		if (strcmp(img->snaps[i].id, id_or_name) == 0)
			return (int)i;
	for (i = 0; i < img->h.nb_snapshots; i++)
		if (strcmp(img->snaps[i].name, id_or_name) == 0)
			return (int)i;
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
	pthread_mutex_lock(&img->snap_lock);
	if (!img->snap_l1[idx]) {
		t = calloc(1, sizeof(*t));
		if (!t)
			r = qcow2_set_error(-ENOMEM, "out of memory");
		else
			r = qcow2_l1_load(img, s->l1_off, s->l1_entries, s->disk_bytes, t);
		if (r == 0 && (uint64_t)t->n * img->l2_entries * img->cluster_bytes < s->disk_bytes)
			r = qcow2_set_error(-EUCLEAN, "snapshot '%s' L1 table is too small", s->name);
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
	pthread_mutex_unlock(&img->snap_lock);
	return r;
}
