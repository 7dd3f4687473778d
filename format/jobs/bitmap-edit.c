/* SPDX-License-Identifier: MIT */
/*
 * bitmap-edit.c - qcowctl bitmap's changes to the persistent bitmaps of one image, as
 * `qemu-img bitmap` makes them: add, remove, clear, enable, disable, merge (from a bitmap of the
 * same image or of another one), applied in the order given to one bitmap.
 *
 * All of them are worked out in memory first (the directory decoded strictly: an image whose
 * bitmaps QEMU would refuse is refused, as qemu-img refuses to open it; a check --repair drops
 * a damaged bitmap), each refused as QEMU refuses it (a name that exists or does not, a
 * granularity or size over QEMU's limits, a bitmap in use, which is inconsistent, used as a
 * source or changed other than removed); then written with one store of the whole directory
 * (engine/bitmaps.c: new data and tables, then the directory, then the header, then the old
 * clusters freed; a crash leaves the old bitmaps or the new ones). A dry run stops before the
 * store: nothing is written.
 *
 * Locks: none of its own; the caller holds the image open for writing alone (QEMU's write
 * locks) and the source image open for reading.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobs/jobs.h"

/* The directory being edited: entries, and for each its new bits (NULL: its table is kept). */
struct edit {
	struct qcow2_image *img;
	struct qcow2_bitmap *b;
	uint8_t **bits;
	uint32_t n;
};

static void edit_release(struct edit *e)
{
	uint32_t i;

	for (i = 0; e->bits && i < e->n; i++)
		free(e->bits[i]);
	free(e->bits);
	qcow2_bitmaps_free(e->b, e->n);
}

static int find(const struct edit *e, const char *name)
{
	uint32_t i;

	for (i = 0; i < e->n; i++)
		if (strcmp(e->b[i].name, name) == 0)
			return (int)i;
	return -1;
}

static uint64_t nbits_of(uint64_t size, uint32_t granularity_bits)
{
	return (size >> granularity_bits) + !!(size & ((1ull << granularity_bits) - 1));
}

/* The bits of entry @i, loaded for a change unless the edit has them already. */
static int bits_of(struct edit *e, uint32_t i)
{
	uint64_t nbits;

	if (e->bits[i])
		return 0;
	return qcow2_image_bitmap_read(e->img, &e->b[i], &e->bits[i], &nbits);
}

/* Entry @name, usable for a change (not in use, unless @any); -ENOENT or -EBUSY naming it. */
static int usable(const struct edit *e, const char *name, bool any)
{
	int i = find(e, name);

	if (i < 0)
		return qcow2_set_error(-ENOENT, "bitmap '%s' not found", name);
	if (!any && (e->b[i].flags & QCOW2_BITMAP_IN_USE))
		return qcow2_set_error(-EBUSY,
				       "bitmap '%s' is inconsistent (in use) and cannot be used; "
				       "remove it",
				       name);
	return i;
}

/* QEMU's default granularity: the cluster size, at least 4 KiB and at most 64 KiB. */
static uint32_t default_granularity_bits(const struct qcow2_image *img)
{
	uint32_t cb = qcow2_image_header(img)->cluster_bits;

	return cb < 12 ? 12 : cb > 16 ? 16 : cb;
}

static int add(struct edit *e, const char *name, uint64_t granularity, uint32_t flags)
{
	const struct qcow2_header *h = qcow2_image_header(e->img);
	uint32_t g =
	    granularity ? (uint32_t)__builtin_ctzll(granularity) : default_granularity_bits(e->img);
	uint64_t nbits = nbits_of(h->size, g), bytes = nbits / 8 + !!(nbits % 8);
	struct qcow2_bitmap *b;
	uint8_t **bits;

	if (h->version < 3)
		return qcow2_set_error(-ENOTSUP, "a version 2 image cannot store bitmaps (compat "
						 "1.1 can: qemu-img amend -o compat=1.1)");
	if (find(e, name) >= 0)
		return qcow2_set_error(-EEXIST, "bitmap '%s' already exists", name);
	if (!name[0] || strlen(name) > QCOW2_BITMAP_MAX_NAME_BYTES)
		return qcow2_set_error(-EINVAL, "bitmap name must have 1 to %u bytes",
				       QCOW2_BITMAP_MAX_NAME_BYTES);
	if (granularity & (granularity - 1) || g < QCOW2_BITMAP_MIN_GRANULARITY_BITS ||
	    g > QCOW2_BITMAP_MAX_GRANULARITY_BITS)
		return qcow2_set_error(-EINVAL,
				       "granularity must be a power of two from 512 B to 2 GiB");
	if (bytes > QCOW2_BITMAP_MAX_DATA_BYTES ||
	    qcow2_bitmap_table_entries(h->size, g, h->cluster_bits) >
		QCOW2_BITMAP_MAX_TABLE_ENTRIES)
		return qcow2_set_error(-EINVAL,
				       "bitmap '%s' would be too large: use a larger "
				       "granularity",
				       name);
	if (e->n >= QCOW2_BITMAP_MAX_COUNT)
		return qcow2_set_error(-ENOSPC, "the image has %u bitmaps already",
				       QCOW2_BITMAP_MAX_COUNT);
	b = realloc(e->b, (e->n + 1) * sizeof(*b));
	if (b)
		e->b = b;
	bits = b ? realloc(e->bits, (e->n + 1) * sizeof(*bits)) : NULL;
	if (bits)
		e->bits = bits;
	if (!b || !bits)
		return qcow2_oom_for("the bitmap directory");
	memset(&e->b[e->n], 0, sizeof(e->b[e->n]));
	e->bits[e->n] = calloc(bytes ? bytes : 1, 1);
	e->b[e->n].name = strdup(name);
	if (!e->bits[e->n] || !e->b[e->n].name) {
		free(e->bits[e->n]);
		free(e->b[e->n].name);
		return qcow2_oom_for("bitmap '%s'", name);
	}
	e->b[e->n].name_bytes = (uint32_t)strlen(name);
	e->b[e->n].flags = flags;
	e->b[e->n].type = QCOW2_BITMAP_TYPE_DIRTY;
	e->b[e->n].granularity_bits = (uint8_t)g;
	e->b[e->n].table_entries =
	    (uint32_t)qcow2_bitmap_table_entries(h->size, g, h->cluster_bits);
	e->n++;
	if (qcow2_bitmap_dir_encode(e->b, e->n, NULL) > QCOW2_BITMAP_MAX_DIR_BYTES)
		return qcow2_set_error(-ENOSPC, "the bitmap directory would be too large");
	return 0;
}

static void drop(struct edit *e, uint32_t i)
{
	free(e->bits[i]);
	free(e->b[i].name);
	memmove(&e->b[i], &e->b[i + 1], (e->n - i - 1) * sizeof(*e->b));
	memmove(&e->bits[i], &e->bits[i + 1], (e->n - i - 1) * sizeof(*e->bits));
	e->n--;
}

/* Set in @dst (granularity 2^@dg) the bits covering every granule @src (2^@sg) marks, over a
 * disk of @size bytes: QEMU's merge of bitmaps of different granularities. */
static void or_bits(uint8_t *dst, uint32_t dg, const uint8_t *src, uint32_t sg, uint64_t size)
{
	uint64_t i, j, n = nbits_of(size, sg), last;

	for (i = 0; i < n; i++) {
		if (!(src[i / 8] >> (i % 8) & 1))
			continue;
		last = ((i + 1) << sg) < size ? ((i + 1) << sg) - 1 : size - 1;
		for (j = (i << sg) >> dg; j <= last >> dg; j++)
			dst[j / 8] |= (uint8_t)(1u << (j % 8));
	}
}

static int merge(struct edit *e, uint32_t di, struct edit *src, const char *src_name)
{
	uint64_t dsize = qcow2_image_header(e->img)->size;
	uint64_t ssize = qcow2_image_header(src->img)->size;
	int si = usable(src, src_name, false), r;
	char msg[256];

	if (si < 0 && src != e) { /* named with its own image */
		snprintf(msg, sizeof(msg), "%s", qcow2_last_error());
		return qcow2_set_error(si, "'%s': %s", src->img->name, msg);
	}
	if (si < 0)
		return si;
	if (dsize != ssize)
		return qcow2_set_error(-EINVAL,
				       "bitmaps are of different sizes (destination %" PRIu64
				       " bytes, source %" PRIu64 " bytes)",
				       dsize, ssize);
	r = bits_of(e, di);
	if (r == 0)
		r = bits_of(src, (uint32_t)si);
	if (r == 0)
		or_bits(e->bits[di], e->b[di].granularity_bits, src->bits[si],
			src->b[si].granularity_bits, dsize);
	return r;
}

/* One action on bitmap @name. */
static int apply(struct edit *e, struct edit *src, const struct qcow2_bitmap_action *a,
		 const char *name)
{
	uint64_t nbits;
	int i;

	if (a->op == QCOW2_BITMAP_ADD)
		return add(e, name, a->granularity, a->disabled ? 0 : QCOW2_BITMAP_AUTO);
	i = usable(e, name, a->op == QCOW2_BITMAP_REMOVE);
	if (i < 0)
		return i;
	switch (a->op) {
	case QCOW2_BITMAP_REMOVE:
		drop(e, (uint32_t)i);
		return 0;
	case QCOW2_BITMAP_CLEAR:
		nbits = nbits_of(qcow2_image_header(e->img)->size, e->b[i].granularity_bits);
		free(e->bits[i]);
		e->bits[i] = calloc(nbits / 8 + 1, 1);
		return e->bits[i] ? 0 : qcow2_oom_for("bitmap '%s'", name);
	case QCOW2_BITMAP_ENABLE:
		e->b[i].flags |= QCOW2_BITMAP_AUTO;
		return 0;
	case QCOW2_BITMAP_DISABLE:
		e->b[i].flags &= ~QCOW2_BITMAP_AUTO;
		return 0;
	case QCOW2_BITMAP_MERGE:
		return merge(e, (uint32_t)i, src ? src : e, a->source);
	default:
		return qcow2_set_error(-EINVAL, "unknown bitmap action %d", a->op);
	}
}

static int edit_load(struct edit *e, struct qcow2_image *img)
{
	int r;

	memset(e, 0, sizeof(*e));
	e->img = img;
	r = qcow2_image_bitmaps(img, false, &e->b, &e->n);
	if (r == 0 && e->n) {
		e->bits = calloc(e->n, sizeof(*e->bits));
		if (!e->bits)
			r = qcow2_oom_for("the bitmap directory");
	}
	return r;
}

int qcow2_image_bitmap_edit(struct qcow2_image *img, const char *name,
			    const struct qcow2_bitmap_action *actions, size_t n_actions,
			    struct qcow2_image *source, bool dry_run)
{
	struct edit e, src = {0};
	size_t k;
	int r;

	r = edit_load(&e, img);
	if (r == 0 && source)
		r = edit_load(&src, source);
	for (k = 0; r == 0 && k < n_actions; k++)
		r = apply(&e, source ? &src : NULL, &actions[k], name);
	if (r < 0 && qcow2_last_error()[0] != '\'') /* else named already (the source) */
		qcow2_error_prefix(r, img->name);
	if (r == 0 && !dry_run)
		r = qcow2_image_bitmaps_store(img, e.b, e.n, e.bits);
	edit_release(&e);
	if (source)
		edit_release(&src);
	return r;
}

/* ---- copy --bitmaps: qemu-img convert --bitmaps ---- */

int qcow2_image_bitmaps_copy(struct qcow2_image *dst, struct qcow2_image *src, bool skip_broken,
			     bool check_only)
{
	struct edit e = {0}, s;
	uint32_t i;
	int r = edit_load(&s, src);

	for (i = 0; r == 0 && i < s.n; i++)
		if ((s.b[i].flags & QCOW2_BITMAP_IN_USE) && !skip_broken)
			r = qcow2_set_error(-EBUSY,
					    "'%s': cannot copy inconsistent bitmap '%s' (in use; "
					    "--skip-broken-bitmaps leaves it out)",
					    src->name, s.b[i].name);
	if (r < 0 || check_only) {
		edit_release(&s);
		return r;
	}
	if (qcow2_image_header(dst)->size != qcow2_image_header(src)->size)
		r = qcow2_set_error(-EINVAL, "'%s' and '%s' differ in size: no bitmaps copied",
				    src->name, dst->name);
	if (r == 0)
		r = edit_load(&e, dst);
	/* each consistent bitmap: added with its granularity and enabled state, then merged */
	for (i = 0; r == 0 && i < s.n; i++) {
		struct qcow2_bitmap_action add_it = {
		    .op = QCOW2_BITMAP_ADD,
		    .granularity = 1ull << s.b[i].granularity_bits,
		    .disabled = !(s.b[i].flags & QCOW2_BITMAP_AUTO),
		};

		if (s.b[i].flags & QCOW2_BITMAP_IN_USE)
			continue;
		r = apply(&e, NULL, &add_it, s.b[i].name);
		if (r == 0)
			r = merge(&e, e.n - 1, &s, s.b[i].name);
	}
	if (r == 0 && e.n)
		r = qcow2_image_bitmaps_store(dst, e.b, e.n, e.bits);
	edit_release(&e);
	edit_release(&s);
	return r;
}
