/* SPDX-License-Identifier: MIT */
/*
 * image.c - one qcow2 image: opening (header, L1 table, refcount table, snapshot table,
 * external data file), accessors, the write-back of a writable image, and closing.
 *
 * After qcow2_image_open() returns, the snapshot table is immutable, and so are the header and
 * the active L1 table of a read-only image, so readers need no lock for them. A writable image
 * (img->w) changes L1 entries atomically under w->lock (readers load them atomically), and
 * replaces the L1 array only with w->frees held exclusive. Snapshot L1 tables are loaded on
 * first use under img->snap_lock. Error messages are prefixed with the image's name here,
 * once, at the public boundary.
 *
 * Write-back (qcow2_image_flush()): what write.c and refcount.c changed in memory goes to disk
 * in stages, each made durable before the next (the order is explained in internal.h).
 *
 * Header updates (qcow2_image_write_header()) rewrite bytes 24..71 (v2) or 24..95 (v3) in one
 * write: size, L1 and refcount table placement, snapshot fields as they are, and for v3 the
 * feature bits. That range lies in the first sector, which the disk writes whole.
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

static int open_write_side(struct qcow2_image *img)
{
	pthread_rwlockattr_t ra;
	struct qcow2_wstate *w;
	int r;

	if ((img->h.incompat & QCOW2_INCOMPAT_CORRUPT) && !img->repair)
		return qcow2_set_error(-EROFS, "marked corrupt: refusing to write it (repair it with "
					       "'qemu-img check -r all')");
	w = calloc(1, sizeof(*w));
	if (!w)
		return qcow2_oom();
	pthread_mutex_init(&w->lock, NULL);
	pthread_rwlockattr_init(&ra);
	/* Applying frees must not starve behind a stream of reads. */
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&w->frees, &ra);
	pthread_rwlockattr_destroy(&ra);
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
			r = qcow2_check_rebuild_dirty(img);
	}
	/* Metadata whose refcount says free could be handed out and overwritten by the next
	 * allocation (QEMU would): such an image is not written, only repaired. */
	if (r == 0 && !img->repair)
		r = qcow2_overlap_verify_refcounts(img);
	w->ready = r == 0 && !img->refs_broken;
	return r;
}

int qcow2_image_write_header(struct qcow2_image *img)
{
	const struct qcow2_header *h = &img->h;
	uint8_t b[96];
	size_t len = h->version >= 3 ? 96 : 72;
	/* the corrupt bit may be set by another thread's refused write (overlap.c) */
	uint64_t incompat = __atomic_load_n(&h->incompat, __ATOMIC_ACQUIRE) & ~QCOW2_INCOMPAT_DIRTY;
	int r;

	if (img->w->set_dirty)
		incompat |= QCOW2_INCOMPAT_DIRTY;
	put_be64(b + 24, h->size);
	put_be32(b + 32, h->crypt_method);
	put_be32(b + 36, h->l1_entries);
	put_be64(b + 40, h->l1_off);
	put_be64(b + 48, h->reftable_off);
	put_be32(b + 56, h->reftable_clusters);
	put_be32(b + 60, h->nb_snapshots);
	put_be64(b + 64, h->snapshots_off);
	if (len == 96) {
		put_be64(b + 72, incompat);
		put_be64(b + 80, h->compat);
		put_be64(b + 88, h->autoclear);
	}
	r = qcow2_io_pwrite_meta(img->io, b + 24, len - 24, 24, QCOW2_OL_HEADER);
	/* a corrupt bit set while this header was being written must not be lost */
	if (r == 0 && len == 96 && !(incompat & QCOW2_INCOMPAT_CORRUPT) &&
	    (__atomic_load_n(&h->incompat, __ATOMIC_ACQUIRE) & QCOW2_INCOMPAT_CORRUPT)) {
		put_be64(b + 72, incompat | QCOW2_INCOMPAT_CORRUPT);
		r = qcow2_io_pwrite_meta(img->io, b + 72, 8, 72, QCOW2_OL_HEADER);
	}
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
	pthread_rwlock_destroy(&w->frees);
	pthread_mutex_destroy(&w->lock);
	free(w);
	img->w = NULL;
}

bool qcow2_image_writable(const struct qcow2_image *img)
{
	return img->w && !__atomic_load_n(&img->w->corrupt, __ATOMIC_ACQUIRE);
}

static uint64_t l1_entry(const struct qcow2_image *img, uint32_t i)
{
	return __atomic_load_n(&img->l1.entries[i], __ATOMIC_ACQUIRE);
}

/* ---- write-back (write.c changes, this writes them back) ---- */

static int write_l1(struct qcow2_image *img)
{
	struct qcow2_wstate *w = img->w;
	uint32_t lo = w->l1_lo, hi = w->l1_hi, i;
	int r = 0, wrote = 0;
	uint8_t *buf;

	if (w->l1_moved) {
		lo = 0;
		hi = img->l1.n;
	}
	if (lo < hi) {
		buf = malloc((size_t)(hi - lo) * 8);
		if (!buf)
			return qcow2_oom();
		for (i = lo; i < hi; i++)
			put_be64(buf + 8 * (i - lo), l1_entry(img, i));
		r = qcow2_io_pwrite_meta(img->io, buf, (size_t)(hi - lo) * 8,
					 img->h.l1_off + 8ull * lo, QCOW2_OL_L1);
		free(buf);
		if (r < 0)
			return r;
		w->l1_lo = w->l1_hi = 0;
		wrote = 1;
	}
	if (w->l1_moved) {
		/* The new table must be durable before the header points at it. */
		r = qcow2_io_flush(img->io);
		if (r < 0)
			return r;
		w->header_dirty = true;
	}
	if (w->header_dirty) {
		r = qcow2_image_write_header(img);
		if (r < 0)
			return r;
		w->header_dirty = false;
		wrote = 1;
	}
	if (w->l1_moved) {
		w->l1_moved = false;
		r = qcow2_overlap_update_tables(img); /* the old table is no longer live */
		if (r == 0 && w->old_l1.count)
			r = qcow2_refcount_defer_free(img, w->old_l1.first << img->h.cluster_bits,
						      w->old_l1.count << img->h.cluster_bits);
	}
	return r < 0 ? r : wrote;
}

/* The write-back stages, each durable before the next (internal.h). w->lock held. */
int qcow2_image_flush_locked(struct qcow2_image *img)
{
	struct qcow2_wstate *w = img->w;
	bool data = __atomic_exchange_n(&w->data_dirty, false, __ATOMIC_ACQ_REL);
	int r = 0, n;

	w->comp_cluster = 0; /* frees may follow this flush: pack no more into it */

	if (data && img->data_io != img->io)
		r = qcow2_io_flush(img->data_io);
	n = r < 0 ? r : qcow2_refcount_write_blocks(img);
	if (n >= 0 && (n || data))
		n = qcow2_io_flush(img->io);
	if (n >= 0)
		n = qcow2_refcount_write_table(img);
	if (n > 0)
		n = qcow2_io_flush(img->io);
	if (n >= 0)
		n = qcow2_l2cache_writeback(img->l2cache, img->io);
	if (n > 0)
		n = qcow2_io_flush(img->io);
	if (n >= 0)
		n = write_l1(img);
	if (n > 0)
		n = qcow2_io_flush(img->io);
	if (n < 0 || r < 0) {
		if (data)
			__atomic_store_n(&w->data_dirty, true, __ATOMIC_RELEASE);
		return r < 0 ? r : n;
	}
	return 0;
}

int qcow2_image_flush(struct qcow2_image *img)
{
	struct qcow2_wstate *w = img->w;
	size_t unlinked;
	int r;

	if (!w)
		return 0;
	pthread_mutex_lock(&w->lock);
	r = qcow2_image_flush_locked(img);
	unlinked = w->n_pending;
	pthread_mutex_unlock(&w->lock);
	if (r == 0 && unlinked) {
		/* Nothing on disk points at these any more; no read may still be using them. */
		pthread_rwlock_wrlock(&w->frees);
		pthread_mutex_lock(&w->lock);
		r = qcow2_refcount_apply_frees(img, unlinked);
		pthread_mutex_unlock(&w->lock);
		pthread_rwlock_unlock(&w->frees);
	}
	return r < 0 ? qcow2_error_prefix(r, img->name) : 0;
}

/* First change to the image: clear the autoclear bits we do not maintain (bitmaps, unknown
 * ones: the format asks a writer that does not update them to do so) and, with lazy
 * refcounts, set the dirty bit; durable before any other change. w->lock held. */
int qcow2_image_begin_write(struct qcow2_image *img)
{
	struct qcow2_wstate *w = img->w;
	uint64_t autoclear = img->h.autoclear;
	bool changed = false;
	int r;

	if (w->began)
		return 0;
	if (img->h.version >= 3 && (autoclear & ~QCOW2_AUTOCLEAR_DATA_FILE_RAW)) {
		img->h.autoclear &= QCOW2_AUTOCLEAR_DATA_FILE_RAW;
		changed = true;
	}
	if (img->h.compat & QCOW2_COMPAT_LAZY_REFCOUNTS) {
		w->set_dirty = true;
		changed = true;
	}
	if (changed) {
		r = qcow2_image_write_header(img);
		if (r == 0)
			r = qcow2_io_flush(img->io);
		if (r < 0) {
			img->h.autoclear = autoclear;
			w->set_dirty = false;
			return r;
		}
	}
	/* bitmaps no longer in force: their clusters are no longer live metadata */
	if (autoclear != img->h.autoclear && (r = qcow2_overlap_update_tables(img)) < 0)
		return r;
	w->began = true;
	return 0;
}

static int open_image(struct qcow2_io *io, const char *name, const struct qcow2_image_opts *o,
		      bool repair, struct qcow2_image **out)
{
	struct qcow2_image *img;
	int r;

	img = calloc(1, sizeof(*img));
	if (!img) {
		qcow2_io_close(io);
		return qcow2_error_prefix(qcow2_oom(), name);
	}
	img->io = io;
	img->repair = repair;
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
	if (r == 0 && o && o->writable)
		r = open_write_side(img);
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
	uint32_t i;

	if (!img)
		return;
	close_write_side(img);
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
	pthread_mutex_lock(&img->snap_lock);
	if (!img->snap_l1[idx]) {
		t = calloc(1, sizeof(*t));
		if (!t)
			r = qcow2_oom();
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

/* ---- the backing file pointer ---- */

#define EXT_END 0u
#define EXT_BACKING_FMT 0xe2792acau

/* Copy the header extensions of the first cluster @p (@cs bytes) to @out, leaving out the
 * backing format and adding @fmt's if not empty, and the end marker; returns the new end or
 * -EUCLEAN. */
static ssize_t rebuild_exts(const struct qcow2_header *h, const uint8_t *p, uint64_t cs,
			    const char *fmt, uint8_t *out)
{
	uint64_t off = h->version >= 3 ? h->header_len : 72, o = off, end = cs;
	size_t flen = strlen(fmt);

	if (h->backing_off && h->backing_off < end)
		end = h->backing_off;
	memcpy(out, p, (size_t)off);
	if (flen) {
		put_be32(out + o, EXT_BACKING_FMT);
		put_be32(out + o + 4, (uint32_t)flen);
		memset(out + o + 8, 0, (flen + 7) & ~7ull);
		memcpy(out + o + 8, fmt, flen);
		o += 8 + ((flen + 7) & ~7ull);
	}
	while (off + 8 <= end) {
		uint32_t type = get_be32(p + off), len = get_be32(p + off + 4);
		uint64_t step = 8 + (((uint64_t)len + 7) & ~7ull);

		if (type == EXT_END)
			break;
		if (off + step > end || o + step + 8 > cs)
			return qcow2_set_error(-EUCLEAN, "header extensions run past the first cluster");
		if (type != EXT_BACKING_FMT) {
			memcpy(out + o, p + off, (size_t)step);
			o += step;
		}
		off += step;
	}
	put_be64(out + o, 0); /* end of the extensions */
	return (ssize_t)(o + 8);
}

int qcow2_image_set_backing(struct qcow2_image *img, const char *name, const char *fmt)
{
	uint64_t cs = img->cluster_bytes, nlen = name ? strlen(name) : 0;
	uint8_t *p = NULL, *out = NULL;
	ssize_t end;
	int r;

	if ((r = qcow2_overlap_writable(img)) < 0)
		return r;
	if (nlen > QCOW2_MAX_BACKING_NAME || (fmt && strlen(fmt) >= sizeof(img->h.backing_fmt)))
		return qcow2_set_error(-ENAMETOOLONG, "'%s': backing file name too long", img->name);
	r = qcow2_image_flush(img); /* the header on disk is then the one in memory */
	pthread_mutex_lock(&img->w->lock);
	p = calloc(1, cs);
	out = calloc(1, cs);
	if (r == 0 && (!p || !out))
		r = qcow2_oom();
	if (r == 0 && (r = (int)qcow2_io_pread(img->io, p, cs, 0)) >= 0)
		r = 0;
	end = r < 0 ? r : rebuild_exts(&img->h, p, cs, nlen && fmt ? fmt : "", out);
	if (end >= 0 && (uint64_t)end + nlen > cs)
		end = qcow2_set_error(-ENOSPC, "'%s': no room for the backing file name in the "
					       "header cluster", img->name);
	if (end >= 0) {
		memcpy(out + end, name, (size_t)nlen);
		put_be64(out + 8, nlen ? (uint64_t)end : 0);
		put_be32(out + 16, (uint32_t)nlen);
		/* One write of the whole header cluster, then durable: the pointer is either the
		 * old or the new one. */
		r = qcow2_io_pwrite_meta(img->io, out, (size_t)cs, 0, QCOW2_OL_HEADER);
		if (r == 0)
			r = qcow2_io_flush(img->io);
	} else {
		r = (int)end;
	}
	if (r == 0) {
		img->h.backing_off = nlen ? (uint64_t)end : 0;
		img->h.backing_len = (uint32_t)nlen;
		snprintf(img->h.backing_file, sizeof(img->h.backing_file), "%s", nlen ? name : "");
		snprintf(img->h.backing_fmt, sizeof(img->h.backing_fmt), "%s",
			 nlen && fmt ? fmt : "");
	}
	pthread_mutex_unlock(&img->w->lock);
	free(p);
	free(out);
	return r < 0 ? qcow2_error_prefix(r, img->name) : 0;
}
