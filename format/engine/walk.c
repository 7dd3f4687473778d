/* SPDX-License-Identifier: MIT */
/*
 * walk.c - one walk over an image's metadata as `qemu-img check` makes it: what points at
 * every host cluster, counted, and each problem found reported with QEMU's words and counted as
 * QEMU counts it (block/qcow2-refcount.c, whose numbers `qemu-img check --output=json` prints).
 * The check (integrity/check.c), the repair (integrity/repair.c, rebuild.c) and the rebuild of a
 * dirty image's refcounts (recount.c) share it.
 *
 * A walk (struct qcow2_scan, engine.h) counts the header, the L1 tables (active and of every
 * snapshot), the L2 tables and the data and compressed clusters they reach, the snapshot table,
 * the refcount table and blocks, the crypto header and the bitmap directory, tables and data
 * when the bitmaps extension is in force: references that end a cluster or more past the end
 * of the file are one corruption each and are not counted; misaligned entries, reserved bits,
 * bad subcluster bitmaps and refcount blocks referenced more than once are corruptions.
 *
 * A planning walk (s->plan) also asks its visitor (s->fix, struct qcow2_walk_fixes: the
 * repair's planners), entry by entry, what a repair rewrites in the active tables, and leaves
 * the references those entries lose out of the counts. The walk never names the repair.
 *
 * Counts live in one 32-bit counter per cluster of the file (images of more than 2^28 clusters
 * are refused). Nothing here changes the image. Locking: none of its own; a writable image's L2
 * tables are read through the L2 cache (its lock, a leaf), its refcounts through the write
 * side's cached blocks (the caller holds the image alone, or w->lock).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/engine.h"

#define MAX_CHECK_CLUSTERS (1ull << 28)
#define MAX_BITMAP_TABLE   (64u << 20)
#define NO_BLOCK	   UINT64_MAX /* block_at(): a refcount block QEMU cannot read */

/* ---- messages, progress, reads ---- */

void qcow2_walk_fixed(struct qcow2_scan *s, uint64_t i, uint64_t was, uint64_t now)
{
	if (was < now)
		s->res->corruptions_fixed++;
	else
		s->res->leaks_fixed++;
	qcow2_walk_say(s, QCOW2_CHECK_REPAIR,
		       "Repairing cluster %" PRIu64 " refcount=%" PRIu64 " reference=%" PRIu64, i,
		       was, now);
}

void qcow2_walk_say(struct qcow2_scan *s, enum qcow2_check_msg kind, const char *fmt, ...)
{
	char text[512];
	va_list ap;

	if (s->quiet || !s->o || !s->o->message)
		return;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	s->o->message(s->o->ctx, kind, text);
}

static void corrupt(struct qcow2_scan *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void corrupt(struct qcow2_scan *s, const char *fmt, ...)
{
	char text[512];
	va_list ap;

	s->res->corruptions++;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	qcow2_walk_say(s, QCOW2_CHECK_CORRUPTION, "%s", text);
}

int qcow2_walk_step(struct qcow2_scan *s, uint64_t units)
{
	const struct qcow2_job *job = s->o ? s->o->job : NULL;

	s->done += units;
	if (s->done > s->total)
		s->total = s->done;
	return qcow2_job_step(job, s->done * s->img->cluster_bytes,
			      s->total * s->img->cluster_bytes);
}

/* Read @n bytes at @off; what lies past the end of the file reads as zeros, as QEMU reads it. */
static int read_padded(struct qcow2_io *io, void *buf, size_t n, uint64_t off)
{
	ssize_t got = off >= (1ull << 62) ? 0 : qcow2_io_pread(io, buf, n, off);

	if (got < 0)
		return (int)got;
	memset((uint8_t *)buf + got, 0, n - (size_t)got);
	return 0;
}

/* The L2 table at @off into s->buf, in host order. A writable image's tables come from its
 * cache, which holds what is not yet written back. */
int qcow2_walk_read_l2(struct qcow2_scan *s, uint64_t off)
{
	struct qcow2_image *img = s->img;
	uint32_t words = (uint32_t)(img->cluster_bytes / 8), i;
	int r;

	if (img->w && !(off & (img->cluster_bytes - 1)) &&
	    (off >> img->h.cluster_bits) < img->end_cluster &&
	    qcow2_l2cache_get(img->l2cache, img->io, off, 0, words, s->buf) == 0)
		return 0;
	r = read_padded(img->io, s->buf, img->cluster_bytes, off);
	for (i = 0; r == 0 && i < words; i++)
		s->buf[i] = get_be64(&s->buf[i]);
	return r;
}

/* @n entries of the L1 table at @off (host order; zeros past the end of the file). */
static int read_l1(struct qcow2_scan *s, uint64_t off, uint32_t n, uint64_t **out)
{
	uint64_t *t = malloc(n ? (size_t)n * 8 : 1);
	uint32_t i;
	int r;

	if (!t)
		return qcow2_oom_for("an L1 table");
	r = read_padded(s->img->io, t, (size_t)n * 8, off);
	for (i = 0; r == 0 && i < n; i++)
		t[i] = get_be64(&t[i]);
	if (r < 0) {
		free(t);
		return r;
	}
	*out = t;
	return 0;
}

/* Where table entry @e says its refcount block is: 0 for nowhere, NO_BLOCK for a place QEMU
 * cannot read (misaligned, or past its largest file offset, 2^63 - 1 GiB). Reserved bits are
 * masked off, as QEMU reads the entry. */
static uint64_t block_at(const struct qcow2_scan *s, uint64_t e)
{
	uint64_t off = e & QCOW2_REFT_OFFSET_MASK, cs = s->img->cluster_bytes;

	if (off && ((off & (cs - 1)) || off > 0x7fffffffc0000000ull - cs))
		return NO_BLOCK;
	return off;
}

int qcow2_walk_refcount(struct qcow2_scan *s, uint64_t idx, uint64_t *v)
{
	struct qcow2_image *img = s->img;
	uint64_t pb = qcow2_refcount_per_block(img), ti = idx / pb, at;
	int r;

	if (img->w && !img->refs_broken)
		return qcow2_refcount_get_w(img, idx, v);
	*v = 0;
	if (ti >= img->refs.n || !(at = block_at(s, img->refs.table[ti])))
		return 0;
	if (at == NO_BLOCK)
		return 1;
	if (ti != s->rblock_ti) {
		s->rblock_ti = UINT64_MAX;
		r = read_padded(img->io, s->rblock, img->cluster_bytes, at);
		if (r < 0)
			return r;
		s->rblock_ti = ti;
	}
	*v = qcow2_refcount_block_get(s->rblock, img->refs.order, idx % pb);
	return 0;
}

/* ---- the visitor (a planning walk) ---- */

static int fix_entry(struct qcow2_scan *s, struct qcow2_l2walk *w, uint32_t j, uint64_t e,
		     uint64_t bm, const char *zero_why, enum qcow2_ref ref)
{
	return s->fix ? s->fix->entry(s, w, j, e, bm, zero_why, ref) : 0;
}

static int fix_compressed(struct qcow2_scan *s, struct qcow2_l2walk *w, uint32_t j, uint64_t e,
			  uint64_t bm, uint64_t host, uint64_t bytes)
{
	return s->fix ? s->fix->compressed(s, w, j, e, bm, host, bytes) : 0;
}

static int fix_l1(struct qcow2_scan *s, struct qcow2_l2walk *w, uint32_t i, uint64_t e,
		  enum qcow2_ref ref)
{
	return s->fix ? s->fix->l1(s, w, i, e, ref) : 0;
}

static int fix_unref(struct qcow2_scan *s, uint64_t off, uint64_t bytes)
{
	return s->fix ? s->fix->unref(s, off, bytes) : 0;
}

/* ---- setting up ---- */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static bool has_u64(const uint64_t *v, size_t n, uint64_t x)
{
	return n && bsearch(&x, v, n, sizeof(*v), cmp_u64) != NULL;
}

static int push_u64(uint64_t **v, size_t *n, uint64_t x)
{
	uint64_t *p;

	if ((*n & (*n - 1)) == 0) { /* 0, 1, 2, 4, ...: grow to the next power of two */
		p = realloc(*v, (*n ? 2 * *n : 1) * sizeof(*p));
		if (!p)
			return qcow2_oom();
		*v = p;
	}
	(*v)[(*n)++] = x;
	return 0;
}

static void sort_unique(uint64_t *v, size_t *n)
{
	size_t i, k = 0;

	if (!*n)
		return;
	qsort(v, *n, sizeof(*v), cmp_u64);
	for (i = 1; i < *n; i++)
		if (v[i] != v[k])
			v[++k] = v[i];
	*n = k + 1;
}

int qcow2_walk_init(struct qcow2_scan *s, struct qcow2_image *img, const struct qcow2_check_opts *o,
		    struct qcow2_check_result *res)
{
	uint64_t cs = img->cluster_bytes, size;
	int r;

	memset(s, 0, sizeof(*s));
	s->img = img;
	s->o = o;
	s->res = res;
	s->rblock_ti = UINT64_MAX;
	r = qcow2_refcount_ready(img);
	if (r == 0)
		r = qcow2_io_size(img->io, &size);
	if (r < 0)
		return r;
	if (img->w && size < img->end_cluster << img->h.cluster_bits)
		size = img->end_cluster << img->h.cluster_bits;
	s->file_bytes = size;
	s->n_file = (size + cs - 1) >> img->h.cluster_bits;
	if (s->n_file >= MAX_CHECK_CLUSTERS)
		return qcow2_set_error(-EFBIG, "too many clusters (%" PRIu64 ") to check",
				       s->n_file);
	s->n = s->n_file + 1;
	s->n_used = s->n_file;
	s->ref_max = img->refs.order >= 5 ? UINT32_MAX : (1ull << (1u << img->refs.order)) - 1;
	s->counts = calloc(s->n, sizeof(*s->counts));
	s->meta = calloc((s->n + 7) / 8, 1);
	s->buf = malloc(cs);
	s->rblock = malloc(cs);
	if (!s->counts || !s->meta || !s->buf || !s->rblock)
		return qcow2_oom_for("the check");
	res->clusters = s->n_file;
	res->total_clusters = (img->h.size + cs - 1) >> img->h.cluster_bits;
	res->dirty = img->h.incompat & QCOW2_INCOMPAT_DIRTY;
	res->corrupt = img->h.incompat & QCOW2_INCOMPAT_CORRUPT;
	return 0;
}

void qcow2_walk_release(struct qcow2_scan *s)
{
	free(s->counts);
	free(s->meta);
	free(s->l2s);
	free(s->active_l2);
	free(s->fixes);
	free(s->unref);
	free(s->reref);
	free(s->outside);
	free(s->buf);
	free(s->rblock);
	memset(s, 0, sizeof(*s));
}

/* ---- what holds metadata (for the notes and the repair of data lying in it) ---- */

static void mark(struct qcow2_scan *s, uint64_t off, uint64_t bytes)
{
	uint64_t i, last;

	if (!bytes || off >= s->file_bytes)
		return;
	last = (off + bytes - 1) >> s->img->h.cluster_bits;
	for (i = off >> s->img->h.cluster_bits; i <= last && i < s->n; i++)
		s->meta[i / 8] |= (uint8_t)(1u << (i % 8));
}

bool qcow2_walk_is_meta(const struct qcow2_scan *s, uint64_t cluster)
{
	return cluster < s->n && (s->meta[cluster / 8] >> (cluster % 8) & 1);
}

static bool in(uint64_t c, const struct qcow2_scan *s, uint64_t off, uint64_t bytes)
{
	uint32_t bits = s->img->h.cluster_bits;

	return bytes && c >= off >> bits && c <= (off + bytes - 1) >> bits;
}

/* What the metadata cluster @c holds, for messages. */
static const char *meta_name(const struct qcow2_scan *s, uint64_t c)
{
	const struct qcow2_image *img = s->img;
	const struct qcow2_header *h = &img->h;
	uint32_t i;

	if (c == 0)
		return "image header";
	if (in(c, s, h->l1_off, (uint64_t)img->l1.n * 8))
		return "active L1 table";
	if (in(c, s, h->reftable_off, (uint64_t)h->reftable_clusters << h->cluster_bits))
		return "refcount table";
	for (i = 0; i < img->refs.n; i++)
		if (in(c, s, img->refs.table[i] & QCOW2_REFT_OFFSET_MASK,
		       img->refs.table[i] ? img->cluster_bytes : 0))
			return "refcount block";
	if (has_u64(s->l2s, s->n_l2s, c << h->cluster_bits))
		return "L2 table";
	if (h->nb_snapshots && in(c, s, h->snapshots_off, img->snap_table_bytes))
		return "snapshot table";
	for (i = 0; i < h->nb_snapshots; i++)
		if (in(c, s, img->snaps[i].l1_off, (uint64_t)img->snaps[i].l1_entries * 8))
			return "L1 table of a snapshot";
	if (h->has_crypto_ext && in(c, s, h->crypto_off, h->crypto_bytes))
		return "encryption header";
	return "bitmaps";
}

/* The L2 tables an L1 table points at: marked, listed (@active: in the active list too). */
static int note_l1(struct qcow2_scan *s, const uint64_t *l1, uint32_t n, bool active)
{
	uint32_t i;
	int r = 0;

	for (i = 0; i < n && r == 0; i++) {
		uint64_t l2 = l1[i] & QCOW2_L1E_OFFSET_MASK;

		if (!l1[i])
			continue;
		s->total +=
		    1 + (active && l2); /* the walk, and for the active table the COPIED pass */
		if (!l2)
			continue;
		mark(s, l2, s->img->cluster_bytes);
		r = push_u64(&s->l2s, &s->n_l2s, l2);
		if (r == 0 && active)
			r = push_u64(&s->active_l2, &s->n_active_l2, l2);
	}
	return r;
}

static int walk_bitmaps(struct qcow2_scan *s, bool count);

/* Before counting: every cluster that holds metadata, and the L2 tables. */
static int premark(struct qcow2_scan *s)
{
	struct qcow2_image *img = s->img;
	const struct qcow2_header *h = &img->h;
	uint32_t i;
	int r;

	mark(s, 0, img->cluster_bytes);
	mark(s, h->l1_off, (uint64_t)img->l1.n * 8);
	r = note_l1(s, img->l1.entries, img->l1.n, true);
	for (i = 0; r == 0 && i < h->nb_snapshots; i++) {
		const struct qcow2_snapshot *sn = &img->snaps[i];
		uint64_t *l1;

		if ((sn->l1_off & (img->cluster_bytes - 1)) ||
		    sn->l1_entries > QCOW2_MAX_L1_BYTES / 8)
			continue; /* reported by count_snapshots(): its references are not counted */
		mark(s, sn->l1_off, (uint64_t)sn->l1_entries * 8);
		r = read_l1(s, sn->l1_off, sn->l1_entries, &l1);
		if (r == 0)
			r = note_l1(s, l1, sn->l1_entries, false);
		if (r == 0)
			free(l1);
	}
	if (h->nb_snapshots)
		mark(s, h->snapshots_off, img->snap_table_bytes);
	mark(s, h->reftable_off, (uint64_t)h->reftable_clusters << h->cluster_bits);
	for (i = 0; i < img->refs.n; i++)
		mark(s, img->refs.table[i] & QCOW2_REFT_OFFSET_MASK,
		     img->refs.table[i] ? img->cluster_bytes : 0);
	if (h->has_crypto_ext)
		mark(s, h->crypto_off, h->crypto_bytes);
	sort_unique(s->l2s, &s->n_l2s);
	sort_unique(s->active_l2, &s->n_active_l2);
	s->total += s->n_file;
	return r == 0 ? walk_bitmaps(s, false) : r;
}

/* ---- counting ---- */

/* What a rebuild must not place its new clusters on (rebuild.c): growing the file over them
 * would make them counted. */
static int note_outside(struct qcow2_scan *s, uint64_t off, uint64_t bytes)
{
	uint32_t bits = s->img->h.cluster_bits;
	struct qcow2_crange *p;

	if (s->n_outside == s->cap_outside) {
		size_t cap = s->cap_outside ? 2 * s->cap_outside : 16;
		p = realloc(s->outside, cap * sizeof(*p));
		if (!p)
			return qcow2_oom();
		s->outside = p;
		s->cap_outside = cap;
	}
	s->outside[s->n_outside].first = off >> bits;
	s->outside[s->n_outside++].count = ((off + bytes - 1) >> bits) - (off >> bits) + 1;
	return 0;
}

/* Count [@off, @off + @bytes) as referenced once, as qcow2_inc_refcounts_imrt() does: a region
 * ending a cluster or more past the end of the file is a corruption and is not counted (the last
 * cluster may be partly written, so less is allowed), nor is a reference the refcount width
 * cannot hold. */
static enum qcow2_ref count_range(struct qcow2_scan *s, uint64_t off, uint64_t bytes)
{
	uint64_t i, last;
	uint32_t bits = s->img->h.cluster_bits;
	enum qcow2_ref ref = QCOW2_REF_COUNTED;

	if (!bytes)
		return QCOW2_REF_NONE;
	if (off >= (1ull << 62) || off + bytes >= s->file_bytes + s->img->cluster_bytes) {
		corrupt(s,
			"ERROR: counting reference for region exceeding the end of the file by one "
			"cluster or more: offset 0x%" PRIx64 " size 0x%" PRIx64,
			off, bytes);
		if (s->skip_refs && off < (1ull << 62) && note_outside(s, off, bytes) < 0)
			s->oom = true;
		return QCOW2_REF_OUTSIDE;
	}
	last = (off + bytes - 1) >> bits;
	for (i = off >> bits; i <= last; i++) {
		if (s->counts[i] >= s->ref_max) {
			corrupt(s, "ERROR: overflow cluster offset=0x%" PRIx64, i << bits);
			ref = QCOW2_REF_OVERFLOW;
			continue;
		}
		s->counts[i]++;
	}
	if (last >= s->n_used)
		s->n_used = last + 1;
	return ref;
}

static int entry_compressed(struct qcow2_scan *s, struct qcow2_l2walk *w, uint32_t j, uint64_t e,
			    uint64_t bm)
{
	struct qcow2_image *img = s->img;
	uint32_t x = 62 - (img->h.cluster_bits - 8);
	uint64_t host = e & ((1ull << x) - 1);
	uint64_t bytes =
	    (((e & ~(QCOW2_OFLAG_COPIED | QCOW2_OFLAG_COMPRESSED)) >> x) + 1) * 512 - (host & 511);

	if (e & QCOW2_OFLAG_COPIED)
		corrupt(s,
			"ERROR: coffset=0x%" PRIx64 ": copied flag must never be set for "
			"compressed clusters",
			host);
	if (img->h.incompat & QCOW2_INCOMPAT_DATA_FILE) {
		corrupt(s, "ERROR compressed cluster %u with data file, entry=0x%" PRIx64, j, e);
	} else if (bm) {
		corrupt(s,
			"ERROR compressed cluster %u with non-zero subcluster allocation bitmap, "
			"entry=0x%" PRIx64,
			j, e);
	} else {
		if (count_range(s, host, bytes) == QCOW2_REF_COUNTED && w->dropped &&
		    fix_unref(s, host, bytes) < 0)
			return -ENOMEM;
		if (w->active) {
			s->res->allocated_clusters++;
			s->res->compressed_clusters++;
			s->res->fragmented_clusters++; /* as QEMU: compressed means fragmented */
		}
	}
	return fix_compressed(s, w, j, e, bm, host, bytes);
}

static int entry_allocated(struct qcow2_scan *s, struct qcow2_l2walk *w, uint32_t j, uint64_t e,
			   uint64_t bm)
{
	struct qcow2_image *img = s->img;
	uint64_t host = e & QCOW2_L2E_OFFSET_MASK, cs = img->cluster_bytes;
	bool ext = img->l2_entry_words == 2, bad_align = host & (cs - 1);
	bool data = ext ? (bm & QCOW2_L2_BITMAP_ALLOC) : !(e & QCOW2_OFLAG_ZERO);
	enum qcow2_ref ref = QCOW2_REF_NONE;

	if ((bm >> 32) & bm)
		corrupt(s,
			"ERROR offset=%" PRIx64 ": Allocated cluster has corrupted subcluster "
			"allocation bitmap",
			host);
	if (bad_align)
		corrupt(s,
			"ERROR offset=%" PRIx64 ": %s cluster is not properly aligned; L2 entry "
			"corrupted.",
			host, data ? "Data" : "Preallocated");
	if (w->active) {
		s->res->allocated_clusters++;
		if (w->next && host != w->next)
			s->res->fragmented_clusters++;
		w->next = host + cs;
	}
	if (!(img->h.incompat & QCOW2_INCOMPAT_DATA_FILE)) {
		ref = count_range(s, host, cs);
		if (ref == QCOW2_REF_COUNTED && w->dropped && fix_unref(s, host, cs) < 0)
			return -ENOMEM;
		if (ref == QCOW2_REF_COUNTED && !bad_align && w->active &&
		    qcow2_walk_is_meta(s, host >> img->h.cluster_bits))
			qcow2_walk_say(s, QCOW2_CHECK_NOTE,
				       "guest offset 0x%" PRIx64 " is mapped to cluster %" PRIu64
				       ", which holds the %s",
				       w->guest + j * cs, host >> img->h.cluster_bits,
				       meta_name(s, host >> img->h.cluster_bits));
	}
	return fix_entry(s, w, j, e, bm, bad_align ? "misaligned" : NULL, ref);
}

static int walk_l2(struct qcow2_scan *s, struct qcow2_l2walk *w)
{
	struct qcow2_image *img = s->img;
	bool ext = img->l2_entry_words == 2, data_file = img->h.incompat & QCOW2_INCOMPAT_DATA_FILE;
	uint32_t j;
	int r = qcow2_walk_read_l2(s, w->table);

	for (j = 0; r == 0 && j < img->l2_entries; j++) {
		uint64_t e = s->buf[j * img->l2_entry_words], bm = ext ? s->buf[j * 2 + 1] : 0;
		uint64_t host = e & QCOW2_L2E_OFFSET_MASK;

		if (!(e & QCOW2_OFLAG_COMPRESSED) && (e & QCOW2_L2E_RESERVED))
			corrupt(s, "ERROR found l2 entry with reserved bits set: %" PRIx64, e);
		if (e & QCOW2_OFLAG_COMPRESSED)
			r = entry_compressed(s, w, j, e, bm);
		else if (!ext && (e & QCOW2_OFLAG_ZERO) && !host)
			r = fix_entry(s, w, j, e, bm, NULL,
				      QCOW2_REF_NONE); /* a plain zero cluster */
		else if (host || (data_file && (e & QCOW2_OFLAG_COPIED)))
			r = entry_allocated(s, w, j, e, bm);
		else if (bm & QCOW2_L2_BITMAP_ALLOC) {
			corrupt(
			    s, "ERROR: Unallocated cluster has non-zero subcluster allocation map");
			r = fix_entry(s, w, j, e, bm, "allocated subclusters without a cluster",
				      QCOW2_REF_NONE);
		} else {
			r = fix_entry(s, w, j, e, bm, NULL, QCOW2_REF_NONE);
		}
	}
	return r;
}

static int walk_l1(struct qcow2_scan *s, const uint64_t *l1, uint32_t n, bool active)
{
	uint64_t cs = s->img->cluster_bytes, span = (uint64_t)s->img->l2_entries * cs;
	uint32_t i;
	int r = 0;

	for (i = 0; i < n && r == 0; i++) {
		uint64_t e = l1[i], l2 = e & QCOW2_L1E_OFFSET_MASK;
		struct qcow2_l2walk w = {l2, i * span, active, false, false, 0};
		enum qcow2_ref ref;

		if (!e)
			continue;
		if (e & QCOW2_L1E_RESERVED)
			corrupt(s, "ERROR found L1 entry with reserved bits set: %" PRIx64, e);
		/* An entry with flags but no offset: QEMU reads the header cluster as its table. */
		ref = count_range(s, l2, cs);
		if (l2 & (cs - 1))
			corrupt(s,
				"ERROR l2_offset=%" PRIx64 ": Table is not cluster aligned; L1 "
				"entry corrupted",
				l2);
		r = fix_l1(s, &w, i, e, ref);
		/* Only well-formed tables: those a repair drops are left whole in every walk. */
		w.fixable = s->plan && ref == QCOW2_REF_COUNTED && !(l2 & (cs - 1)) &&
			    has_u64(s->active_l2, s->n_active_l2, l2);
		if (r == 0)
			r = walk_l2(s, &w);
		if (r == 0)
			r = qcow2_walk_step(s, 1);
	}
	return r;
}

static int count_snapshots(struct qcow2_scan *s)
{
	const struct qcow2_image *img = s->img;
	const struct qcow2_header *h = &img->h;
	uint32_t i;
	int r = 0;

	if ((h->incompat & QCOW2_INCOMPAT_DATA_FILE) && h->nb_snapshots)
		corrupt(s, "ERROR %u snapshots in image with data file", h->nb_snapshots);
	/* v3 entries need 16 bytes of extra data; QEMU counts each short one, in its words */
	for (i = 0; i < h->nb_snapshots; i++)
		if (img->snaps[i].incomplete)
			corrupt(s, "ERROR snapshot table entry %u is incomplete", i);
	for (i = 0; i < h->nb_snapshots && r == 0; i++) {
		const struct qcow2_snapshot *sn = &img->snaps[i];
		uint64_t *l1;

		/* QEMU's two checks, in its order and words: the entry is corrupt, its L1 table
		 * is not walked (so what only it reaches counts as leaked) */
		if (sn->l1_off & (img->cluster_bytes - 1)) {
			corrupt(s,
				"ERROR snapshot %s (%s) l1_offset=%#" PRIx64
				": L1 table is not cluster aligned; "
				"snapshot table entry corrupted",
				sn->id, sn->name, sn->l1_off);
			continue;
		}
		if (sn->l1_entries > QCOW2_MAX_L1_BYTES / 8) {
			corrupt(s,
				"ERROR snapshot %s (%s) l1_size=%#" PRIx32
				": L1 table is too large; "
				"snapshot table entry corrupted",
				sn->id, sn->name, sn->l1_entries);
			continue;
		}
		count_range(s, sn->l1_off, (uint64_t)sn->l1_entries * 8);
		r = read_l1(s, sn->l1_off, sn->l1_entries, &l1);
		if (r == 0) {
			r = walk_l1(s, l1, sn->l1_entries, false);
			free(l1);
		}
	}
	if (h->nb_snapshots)
		count_range(s, h->snapshots_off, img->snap_table_bytes);
	return r;
}

/* One bitmap's table (@entries at @table) and the data clusters it names. */
static int walk_bitmap_table(struct qcow2_scan *s, bool count, uint64_t table, uint64_t entries)
{
	uint64_t *t, i, cs = s->img->cluster_bytes;
	int r;

	t = malloc(entries ? entries * 8 : 1);
	if (!t)
		return qcow2_oom_for("a bitmap table");
	r = read_padded(s->img->io, t, entries * 8, table);
	for (i = 0; r == 0 && i < entries; i++) {
		uint64_t e = get_be64(&t[i]), off = e & QCOW2_BME_OFFSET_MASK;

		if ((e & QCOW2_BME_RESERVED) ||
		    (off && ((e & QCOW2_BME_ALL_ONES) || (off & (cs - 1))))) {
			if (count)
				corrupt(s, "ERROR bitmap table entry 0x%" PRIx64 " is invalid", e);
			continue;
		}
		if (off && count)
			count_range(s, off, cs);
		else if (off)
			mark(s, off, cs);
	}
	free(t);
	return r;
}

/* The bitmap directory, tables and data clusters (when the extension is in force): counted, or
 * (!@count) marked as metadata. The directory is decoded leniently (ondisk/bitmap.c): an entry
 * QEMU refuses is one corruption, and its table is still counted when its size can be read, so
 * that a repair does not free clusters the directory names (dropping the bitmap is an explicit
 * repair); a directory that cannot be decoded at all is one corruption. */
static int walk_bitmaps(struct qcow2_scan *s, bool count)
{
	const struct qcow2_header *h = &s->img->h;
	struct qcow2_bitmap *bm;
	uint32_t n, i;
	int r;

	if (!h->has_bitmaps_ext || !(h->autoclear & QCOW2_AUTOCLEAR_BITMAPS) || !h->nb_bitmaps)
		return 0;
	if (count)
		count_range(s, h->bitmap_dir_off, h->bitmap_dir_bytes);
	else
		mark(s, h->bitmap_dir_off, h->bitmap_dir_bytes);
	r = qcow2_image_bitmaps(s->img, true, &bm, &n);
	if (r == -ENOMEM)
		return r;
	if (r < 0) {
		if (count)
			corrupt(s, "ERROR %s", qcow2_last_error());
		return 0;
	}
	for (i = 0; r == 0 && i < n; i++) {
		uint64_t entries = bm[i].table_entries, table = bm[i].table_off;

		if (bm[i].invalid && count)
			corrupt(s, "ERROR bitmap '%s' %s", bm[i].name, bm[i].invalid);
		if (entries * 8 > MAX_BITMAP_TABLE) {
			if (count)
				corrupt(s, "ERROR bitmap table at 0x%" PRIx64 " is too large",
					table);
			continue;
		}
		if (count)
			count_range(s, table, entries * 8);
		else
			mark(s, table, entries * 8);
		r = walk_bitmap_table(s, count, table, entries);
	}
	qcow2_bitmaps_free(bm, n);
	return r;
}

/* The refcount blocks, each of which must be referenced exactly once, as QEMU's
 * check_refblocks() sees them: an entry with reserved bits set, misaligned or outside the image
 * is one corruption and is not counted; a block also used as something else is one corruption.
 * Each of these means the refcount structure itself is broken: a repair rebuilds it elsewhere
 * (s->rebuild) rather than writing refcounts into a block that is not one. */
static void count_refblocks(struct qcow2_scan *s)
{
	const struct qcow2_refcounts *rt = &s->img->refs;
	uint64_t cs = s->img->cluster_bytes;
	uint32_t i;

	for (i = 0; i < rt->n; i++) {
		uint64_t off = rt->table[i], c = off >> s->img->h.cluster_bits;
		bool bad = true;

		if (!off)
			continue;
		if (off & ~QCOW2_REFT_OFFSET_MASK)
			corrupt(s, "ERROR refcount table entry %u has reserved bits set", i);
		else if (off & (cs - 1))
			corrupt(s,
				"ERROR refcount block %u is not cluster aligned; refcount table "
				"entry corrupted",
				i);
		else if (c >= s->n_used)
			corrupt(s, "ERROR refcount block %u is outside image", i);
		else if (count_range(s, off, cs), s->counts[c] != 1)
			corrupt(s, "ERROR refcount block %u refcount=%" PRIu32, i, s->counts[c]);
		else
			bad = false;
		s->rebuild |= bad;
	}
}

int qcow2_walk_count(struct qcow2_scan *s)
{
	struct qcow2_image *img = s->img;
	const struct qcow2_header *h = &img->h;
	int r = premark(s);

	if (r < 0)
		return r;
	count_range(s, 0, img->cluster_bytes);
	count_range(s, h->l1_off, (uint64_t)img->l1.n * 8);
	r = walk_l1(s, img->l1.entries, img->l1.n, true);
	if (r == 0)
		r = count_snapshots(s);
	if (r < 0)
		return r;
	if (!s->skip_refs)
		count_range(s, h->reftable_off, (uint64_t)h->reftable_clusters << h->cluster_bits);
	if (h->has_crypto_ext)
		count_range(s, h->crypto_off, h->crypto_bytes);
	r = walk_bitmaps(s, true);
	if (r == 0 && !s->skip_refs)
		count_refblocks(s);
	if (r == 0 && s->oom)
		r = qcow2_oom_for("the check");
	return r;
}
