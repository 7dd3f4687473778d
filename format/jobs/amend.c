/* SPDX-License-Identifier: MIT */
/*
 * amend.c - qcow2_image_amend(): `qemu-img amend -o compat=0.10|1.1,lazy_refcounts=on|off`,
 * with QEMU 7.2's rules (qcow2_amend_options(), qcow2_downgrade(), qcow2_upgrade()).
 *
 * A downgrade to version 2 is refused where QEMU refuses it: refcounts other than 16 bits,
 * internal snapshots of another size than the image (or VM state over 4 GiB), an external
 * data file, extended L2 or any other incompatible feature, zstd with compressed clusters. It
 * is also refused where QEMU would make the image worse: persistent bitmaps (QEMU drops them
 * and leaks their clusters: remove them first) and a dirty image (lazy refcounts not written
 * back: repaired first, as a writable open does, like QEMU's). Zero clusters, which version 2
 * cannot say, become unallocated (they read zeros then) or, over a backing file, data
 * clusters of zeros, as QEMU expands them; in a snapshot they are refused (not supported yet).
 *
 * Write order: the image is made to fit the new version first (zero clusters unmapped, every
 * step a valid image of the old version), made durable, then one write of the header cluster
 * switches the version (engine/version.c). Lazy refcounts alone change one header field
 * (qcow2_image_write_header()). No lock of its own: the engine's.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "jobs/jobs.h"

/* Does the view of @l1 (NULL: the active one) hold a range of @kind? */
static int has_kind(struct qcow2_image *img, const struct qcow2_l1 *l1, uint64_t size,
		    enum qcow2_extent_kind kind, bool *found)
{
	struct qcow2_extent e;
	uint64_t off = 0;
	int r;

	*found = false;
	while (off < size && !*found) {
		r = qcow2_image_map(img, l1, off, size - off, &e);
		if (r < 0)
			return r;
		if (!e.len)
			return qcow2_set_error(-EIO, "mapping stopped at offset %" PRIu64, off);
		*found = e.kind == kind;
		off += e.len;
	}
	return 0;
}

/* Is there a range of @kind in the active view or in any snapshot's? */
static int any_kind(struct qcow2_image *img, enum qcow2_extent_kind kind, bool *in_active,
		    bool *in_snapshot)
{
	uint32_t i, n = qcow2_image_snapshot_count(img);
	const struct qcow2_l1 *l1;
	int r;

	r = has_kind(img, NULL, img->h.size, kind, in_active);
	*in_snapshot = false;
	for (i = 0; r == 0 && i < n && !*in_snapshot; i++) {
		r = qcow2_image_snapshot_l1(img, i, &l1);
		if (r == 0)
			r = has_kind(img, l1, qcow2_image_snapshot(img, i)->disk_bytes, kind,
				     in_snapshot);
	}
	return r;
}

/* What lies below, for a write that would need it: never asked, as only whole clusters are
 * written here; an error rather than a guess if it were. */
static int no_read_below(void *ctx, void *buf, size_t n, uint64_t off)
{
	return qcow2_set_error(-EIO, "unexpected read below at offset %" PRIu64, off);
}

/* Zeros written over [@off, @off + @n), whole clusters: data clusters that read zeros. */
static int write_zeros(struct qcow2_image *img, uint64_t off, uint64_t n)
{
	struct qcow2_fill fill = {no_read_below, NULL, true};
	uint64_t chunk = 1u << 20, len;
	void *zeros = calloc(1, (size_t)chunk);
	int r = zeros ? 0 : qcow2_oom();

	for (; r == 0 && n; off += len, n -= len) {
		len = n < chunk ? n : chunk;
		r = qcow2_image_write(img, zeros, (size_t)len, off, &fill);
	}
	free(zeros);
	return r;
}

/* Every zero range of the active view made something version 2 can say: unallocated when
 * nothing lies below (it reads zeros then), else data clusters of zeros. */
static int expand_zeros(struct qcow2_image *img)
{
	bool backing = img->h.backing_file[0] != '\0';
	struct qcow2_extent e;
	uint64_t off = 0, size = img->h.size;
	int r;

	while (off < size) {
		r = qcow2_image_map(img, NULL, off, size - off, &e);
		if (r < 0)
			return r;
		if (!e.len)
			return qcow2_set_error(-EIO, "mapping stopped at offset %" PRIu64, off);
		if (e.kind == QCOW2_EXTENT_ZERO) {
			r = backing ? write_zeros(img, off, e.len)
				    : qcow2_image_unmap(img, off, e.len);
			if (r < 0)
				return r;
		}
		off += e.len;
	}
	return qcow2_image_flush(img);
}

static int downgrade_check(struct qcow2_image *img)
{
	const struct qcow2_header *h = &img->h;
	uint32_t i, n = qcow2_image_snapshot_count(img);
	bool active, snap;
	int r;

	if (h->refcount_order != 4)
		return qcow2_set_error(-ENOTSUP, "compat=0.10 requires refcount_bits=16");
	for (i = 0; i < n; i++) {
		const struct qcow2_snapshot *s = qcow2_image_snapshot(img, i);

		if (s->vm_state_bytes > UINT32_MAX || s->disk_bytes != h->size)
			return qcow2_set_error(
			    -ENOTSUP, "internal snapshots prevent a downgrade of the image");
	}
	if (h->incompat & QCOW2_INCOMPAT_DATA_FILE)
		return qcow2_set_error(-ENOTSUP, "cannot downgrade an image with a data file");
	if (h->incompat & ~(QCOW2_INCOMPAT_COMPRESSION | QCOW2_INCOMPAT_DIRTY))
		return qcow2_set_error(
		    -ENOTSUP,
		    "cannot downgrade an image with incompatible features "
		    "%#" PRIx64 " set",
		    (uint64_t)(h->incompat & ~(QCOW2_INCOMPAT_COMPRESSION | QCOW2_INCOMPAT_DIRTY)));
	if (h->has_bitmaps_ext && (h->autoclear & QCOW2_AUTOCLEAR_BITMAPS) && h->nb_bitmaps)
		return qcow2_set_error(-ENOTSUP,
				       "cannot downgrade an image with persistent bitmaps: "
				       "version 2 cannot keep them (remove them first)");
	if (h->compression_type == QCOW2_COMPRESSION_ZSTD) {
		r = any_kind(img, QCOW2_EXTENT_COMPRESSED, &active, &snap);
		if (r < 0)
			return r;
		if (active || snap)
			return qcow2_set_error(-ENOTSUP,
					       "cannot downgrade an image with zstd compression "
					       "type and existing compressed clusters");
	}
	r = any_kind(img, QCOW2_EXTENT_ZERO, &active, &snap);
	if (r < 0)
		return r;
	if (snap)
		return qcow2_set_error(-ENOTSUP, "cannot downgrade an image with zero clusters in "
						 "an internal snapshot (not supported yet)");
	return 0;
}

/* The snapshot table read as version 3 would: every entry needs its 16 bytes of extra data. */
static int upgrade_check(struct qcow2_image *img)
{
	struct qcow2_header *v3 = malloc(sizeof(*v3));
	struct qcow2_snapshot *s = NULL;
	uint32_t i;
	int r;

	if (!v3)
		return qcow2_oom();
	*v3 = img->h;
	v3->version = 3;
	r = qcow2_snapshot_read(img->io, v3, &s);
	for (i = 0; r == 0 && i < v3->nb_snapshots; i++)
		if (s[i].incomplete)
			r = qcow2_set_error(-ENOTSUP,
					    "snapshot %s lacks the extra data version 3 "
					    "needs (not supported yet)",
					    s[i].id);
	if (s)
		qcow2_snapshots_free(s, v3->nb_snapshots);
	free(v3);
	return r;
}

int qcow2_image_amend(struct qcow2_image *img, const struct qcow2_amend_opts *o)
{
	uint32_t version = o->version ? o->version : img->h.version;
	bool lazy = o->lazy_refcounts < 0 ? (img->h.compat & QCOW2_COMPAT_LAZY_REFCOUNTS) != 0
					  : o->lazy_refcounts > 0;
	struct qcow2_header *nh;
	int r;

	if (!qcow2_image_writable(img))
		return qcow2_set_error(-EROFS, "'%s' is open read-only", img->name);
	if (version != 2 && version != 3)
		return qcow2_set_error(-EINVAL, "unknown version %u", version);
	/* as QEMU: asked of a version 2 image, refused; a downgrade drops them */
	if (version < 3 && img->h.version < 3 && lazy)
		return qcow2_set_error(-EINVAL,
				       "lazy refcounts are only supported with compatibility "
				       "level 1.1 and above");
	if (version < 3)
		lazy = false;
	if (img->h.crypt_method)
		return qcow2_set_error(-ENOTSUP, "'%s' is encrypted: amend is not supported",
				       img->name);
	if ((img->h.incompat & QCOW2_INCOMPAT_DIRTY) && (version < img->h.version || !lazy))
		return qcow2_set_error(-EUCLEAN,
				       "'%s' is dirty (lazy refcounts not written back): repair "
				       "it first ('qcowctl check -r all')",
				       img->name);
	r = version < img->h.version   ? downgrade_check(img)
	    : version > img->h.version ? upgrade_check(img)
				       : 0;
	if (r == 0 && version < img->h.version && !o->dry_run)
		r = expand_zeros(img);
	if (r < 0 || o->dry_run)
		return r < 0 ? qcow2_error_prefix(r, img->name) : 0;
	if (version == img->h.version) { /* lazy refcounts alone: one header field */
		qcow2_image_meta_lock(img);
		img->h.compat = lazy ? img->h.compat | QCOW2_COMPAT_LAZY_REFCOUNTS
				     : img->h.compat & ~QCOW2_COMPAT_LAZY_REFCOUNTS;
		r = qcow2_image_write_header(img);
		qcow2_image_meta_unlock(img);
		return r == 0 ? qcow2_io_flush(img->io) : r;
	}
	nh = malloc(sizeof(*nh));
	if (!nh)
		return qcow2_oom();
	*nh = img->h;
	nh->version = version;
	nh->refcount_order = 4;
	nh->compat = lazy ? QCOW2_COMPAT_LAZY_REFCOUNTS : 0;
	nh->incompat = 0; /* downgrade: none left (zlib); upgrade: none yet */
	nh->compression_type = QCOW2_COMPRESSION_ZLIB;
	nh->autoclear = 0; /* no bitmaps (refused), no data file (refused) */
	r = qcow2_image_set_version(img, nh);
	free(nh);
	return r;
}
