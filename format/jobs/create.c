/* SPDX-License-Identifier: MIT */
/*
 * create.c - new images: option checks, the initial layout, preallocation, and the crash-safe
 * creation of the file.
 *
 * Layout (as qemu-img lays out a new image): cluster 0 holds the header, its extensions and the
 * backing file name (header.c encodes them); then the refcount table, the first refcount
 * block, the L1 table (sized for the virtual size, empty), the LUKS header of an encrypted
 * image (format/crypto/luks-build.c, its last cluster padded with zeros) and any further
 * refcount blocks the metadata needs. Without encryption the file ends with the L1 table, not
 * padded to a cluster. Every later cluster (preallocation) comes from the library's allocator
 * and write path (write.c, prealloc.c, refcount.c): there is one allocator.
 *
 * Crash safety: the image is written to an unnamed file (O_TMPFILE) in the target's directory,
 * or where the file system has none to a hidden name there, made durable, and only then
 * linked to its name (or renamed over an existing file), after which the directory is synced.
 * A failure, a cancellation or a crash before that leaves nothing new (at worst the hidden
 * file, when there is no O_TMPFILE); after it, the complete image.
 *
 * Locks: no library lock; QEMU's file locks: the conflict test on an existing file it would
 * replace (no writer may hold it), a reader's lock on a raw backing file while its size is read.
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

#include "jobs/jobs.h"

#define PREALLOC_STEP	   (64ull << 20) /* bytes between progress reports and cancellation polls */
#define QCOW2_MAX_FMT_NAME 32		 /* struct qcow2_header's backing_fmt, its NUL included */

void qcow2_create_opts_default(struct qcow2_create_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->cluster_bits = 16;
	o->version = 3;
	o->refcount_order = 4;
	o->prealloc = QCOW2_PREALLOC_OFF;
}

const char *qcow2_prealloc_name(enum qcow2_prealloc p)
{
	static const char *const names[] = {"off", "metadata", "falloc", "full"};

	return (unsigned)p < 4 ? names[p] : "?";
}

static bool has_backing(const struct qcow2_create_opts *o)
{
	return o->backing_file && o->backing_file[0];
}

/* The largest virtual size the L1 table can describe with these clusters, capped at the
 * format's 64 PiB. */
static uint64_t max_size(uint32_t cluster_bits, bool extended_l2)
{
	uint64_t per_l1 = ((1ull << cluster_bits) / (extended_l2 ? 16 : 8)) << cluster_bits;
	uint64_t l1_entries = QCOW2_MAX_L1_BYTES / 8;

	if (per_l1 > QCOW2_MAX_VIRTUAL_SIZE / l1_entries)
		return QCOW2_MAX_VIRTUAL_SIZE;
	return per_l1 * l1_entries;
}

static int check_features(const struct qcow2_create_opts *o)
{
	if (o->version != 2 && o->version != 3)
		return qcow2_set_error(-EINVAL,
				       "compat must be 0.10 (v2) or 1.1 (v3), not "
				       "version %u",
				       o->version);
	if (o->cluster_bits < QCOW2_MIN_CLUSTER_BITS || o->cluster_bits > QCOW2_MAX_CLUSTER_BITS)
		return qcow2_set_error(-EINVAL, "cluster_size must be a power of two between 512 "
						"and 2M");
	if (o->refcount_order > 6)
		return qcow2_set_error(-EINVAL, "refcount_bits must be a power of two between 1 "
						"and 64");
	if (o->version < 3 && o->refcount_order != 4)
		return qcow2_set_error(-EINVAL, "refcount_bits other than 16 need compat=1.1");
	if (o->version < 3 && o->lazy_refcounts)
		return qcow2_set_error(-EINVAL, "lazy_refcounts need compat=1.1");
	if (o->version < 3 && o->extended_l2)
		return qcow2_set_error(-EINVAL, "extended_l2 needs compat=1.1");
	if (o->extended_l2 && o->cluster_bits < 14)
		return qcow2_set_error(-EINVAL, "extended_l2 needs a cluster_size of 16K or more");
	if (o->compression_type > QCOW2_COMPRESSION_ZSTD)
		return qcow2_set_error(-EINVAL, "unknown compression type %u", o->compression_type);
	if (o->compression_type != QCOW2_COMPRESSION_ZLIB && o->version < 3)
		return qcow2_set_error(-EINVAL,
				       "compression_type other than zlib needs compat=1.1");
	if (!qcow2_codec_available(o->compression_type))
		return qcow2_set_error(-ENOTSUP, "compression type zstd is not built in");
	if ((unsigned)o->prealloc > QCOW2_PREALLOC_FULL)
		return qcow2_set_error(-EINVAL, "unknown preallocation mode %u", o->prealloc);
	return 0;
}

/* encrypt.format=luks: the parameters as qemu-img checks them, and a passphrase. Clusters that
 * preallocation would write are plain zeros, not zeros encrypted: refused (QEMU preallocates
 * them, and they then read back as garbage). */
static int check_luks(const struct qcow2_create_opts *o)
{
	if (!o->luks)
		return 0;
	if (!o->luks_key || !o->luks_key->len)
		return qcow2_set_error(-EINVAL, "encrypt.format=luks needs a passphrase");
	if (o->prealloc != QCOW2_PREALLOC_OFF)
		return qcow2_set_error(-EINVAL, "preallocation of an encrypted image is not "
						"supported");
	return qcow2_luks_params_check(o->luks);
}

int qcow2_create_opts_check(const struct qcow2_create_opts *o)
{
	int r = check_features(o);

	if (r < 0)
		return r;
	if (o->size % 512)
		return qcow2_set_error(-EINVAL,
				       "the size (%" PRIu64 " bytes) must be a multiple "
				       "of 512",
				       o->size);
	if (o->size > max_size(o->cluster_bits, o->extended_l2))
		return qcow2_set_error(-EFBIG,
				       "the size (%" PRIu64 " bytes) is too large for "
				       "%u-byte clusters (the largest is %" PRIu64 ")",
				       o->size, 1u << o->cluster_bits,
				       max_size(o->cluster_bits, o->extended_l2));
	if (has_backing(o) && strlen(o->backing_file) > QCOW2_MAX_BACKING_NAME)
		return qcow2_set_error(-EINVAL, "the backing file name is longer than %u bytes",
				       QCOW2_MAX_BACKING_NAME);
	if (o->backing_fmt && strlen(o->backing_fmt) >= QCOW2_MAX_FMT_NAME)
		return qcow2_set_error(-EINVAL, "backing format '%s' is too long", o->backing_fmt);
	if (o->backing_fmt && o->backing_fmt[0] && !has_backing(o))
		return qcow2_set_error(-EINVAL, "a backing format without a backing file");
	if (has_backing(o) && o->prealloc != QCOW2_PREALLOC_OFF && !o->extended_l2)
		return qcow2_set_error(-EINVAL, "preallocation with a backing file needs "
						"extended_l2=on");
	return check_luks(o);
}

/* ---- the initial layout ---- */

struct layout {
	uint64_t cs; /* cluster bytes */
	uint32_t l1_entries;
	uint64_t l1_clusters;
	uint64_t reft_clusters;
	uint64_t blocks;	  /* refcount blocks */
	uint64_t clusters;	  /* clusters of the metadata: header, table, blocks, L1, crypto */
	uint64_t crypto_clusters; /* the LUKS header and key material (encrypt.format=luks) */
	size_t crypto_bytes;	  /* their length: the crypto header extension's */
};

/* Size the refcount structures for the metadata they describe, themselves included. */
static void plan(const struct qcow2_create_opts *o, struct layout *l)
{
	uint64_t per_l1, per_block, prev = 0;

	l->cs = 1ull << o->cluster_bits;
	per_l1 = (l->cs / (o->extended_l2 ? 16 : 8)) << o->cluster_bits;
	l->l1_entries = (uint32_t)(o->size / per_l1 + (o->size % per_l1 != 0));
	l->l1_clusters = ((uint64_t)l->l1_entries * 8 + l->cs - 1) / l->cs;
	per_block = (l->cs * 8) >> o->refcount_order;
	l->crypto_clusters = (l->crypto_bytes + l->cs - 1) / l->cs;
	l->reft_clusters = l->blocks = 1;
	for (;;) {
		l->clusters =
		    1 + l->reft_clusters + l->blocks + l->l1_clusters + l->crypto_clusters;
		if (l->clusters == prev)
			break;
		prev = l->clusters;
		l->blocks = (l->clusters + per_block - 1) / per_block;
		l->reft_clusters = (l->blocks * 8 + l->cs - 1) / l->cs;
	}
}

/* Where things lie: the header, the refcount table, the first refcount block, the L1 table,
 * the crypto header of an encrypted image, then any further refcount blocks (the order
 * qemu-img uses). In clusters. */
static uint64_t l1_cluster(const struct layout *l)
{
	return 2 + l->reft_clusters;
}

static uint64_t block_cluster(const struct layout *l, uint64_t i)
{
	return i == 0 ? 1 + l->reft_clusters
		      : l1_cluster(l) + l->l1_clusters + l->crypto_clusters + i - 1;
}

static uint64_t crypto_cluster(const struct layout *l)
{
	return l1_cluster(l) + l->l1_clusters;
}

static int encode_header(const struct qcow2_create_opts *o, const struct layout *l, uint8_t *buf)
{
	struct qcow2_header *h = calloc(1, sizeof(*h));
	int r;

	if (!h)
		return qcow2_oom();
	h->version = o->version;
	h->cluster_bits = o->cluster_bits;
	h->size = o->size;
	h->l1_entries = l->l1_entries;
	h->l1_off = l->l1_entries ? l1_cluster(l) * l->cs : 0;
	h->reftable_off = l->cs;
	h->reftable_clusters = (uint32_t)l->reft_clusters;
	h->incompat = o->extended_l2 ? QCOW2_INCOMPAT_EXTL2 : 0;
	if (o->compression_type != QCOW2_COMPRESSION_ZLIB)
		h->incompat |= QCOW2_INCOMPAT_COMPRESSION;
	h->compression_type = o->compression_type;
	h->compat = o->lazy_refcounts ? QCOW2_COMPAT_LAZY_REFCOUNTS : 0;
	h->refcount_order = o->refcount_order;
	if (has_backing(o))
		strcpy(h->backing_file, o->backing_file); /* lengths checked by the caller */
	if (o->backing_fmt)
		strcpy(h->backing_fmt, o->backing_fmt);
	if (l->crypto_bytes) {
		h->crypt_method = QCOW2_CRYPT_LUKS;
		h->has_crypto_ext = true;
		h->crypto_off = crypto_cluster(l) * l->cs;
		h->crypto_bytes = l->crypto_bytes;
	}
	r = qcow2_header_encode(h, buf, l->cs);
	free(h);
	return r < 0 ? r : 0;
}

/* The refcount table and blocks (@blocks: all of them, one after the other): every metadata
 * cluster counted once. */
static void encode_refcounts(const struct qcow2_create_opts *o, const struct layout *l,
			     uint8_t *reft, uint8_t *blocks)
{
	uint64_t per_block = (l->cs * 8) >> o->refcount_order, i;

	for (i = 0; i < l->blocks; i++)
		put_be64(reft + 8 * i, block_cluster(l, i) * l->cs);
	for (i = 0; i < l->clusters; i++)
		qcow2_refcount_block_set(blocks + (i / per_block) * l->cs, o->refcount_order,
					 i % per_block, 1);
}

/* Write the empty L1 table: zeros up to its last entry (where the file ends, unless more
 * refcount blocks follow). */
static int write_l1(struct qcow2_io *io, const struct layout *l)
{
	uint64_t off = l1_cluster(l) * l->cs, left = (uint64_t)l->l1_entries * 8;
	size_t chunk = left < (1u << 20) ? (size_t)left : (1u << 20);
	uint8_t *zero;
	int r = 0;

	if (!left)
		return 0;
	zero = calloc(1, chunk);
	if (!zero)
		return qcow2_oom();
	while (left && r == 0) {
		size_t n = left < chunk ? (size_t)left : chunk;

		r = qcow2_io_pwrite(io, zero, n, off);
		off += n;
		left -= n;
	}
	free(zero);
	return r;
}

/* The crypto header area, its last cluster padded with zeros (QEMU zeroes the clusters). */
static int write_crypto(struct qcow2_io *io, const struct layout *l, const uint8_t *area)
{
	uint64_t off = crypto_cluster(l) * l->cs, end = off + l->crypto_clusters * l->cs;
	size_t tail = (size_t)(end - off - l->crypto_bytes);
	uint8_t *zero;
	int r;

	if (!l->crypto_bytes)
		return 0;
	r = qcow2_io_pwrite(io, area, l->crypto_bytes, off);
	if (r < 0 || !tail)
		return r;
	zero = calloc(1, tail);
	if (!zero)
		return qcow2_oom();
	r = qcow2_io_pwrite(io, zero, tail, off + l->crypto_bytes);
	free(zero);
	return r;
}

static int write_metadata(struct qcow2_io *io, const struct qcow2_create_opts *o,
			  const struct layout *l, const uint8_t *crypto_area)
{
	uint64_t head = (1 + l->reft_clusters) * l->cs, blocks = l->blocks * l->cs;
	uint8_t *buf;
	int r;

	if (l->reft_clusters * l->cs > QCOW2_MAX_REFTABLE_BYTES)
		return qcow2_set_error(-EFBIG, "the refcount table would be too large");
	buf = calloc(1, (size_t)(head + blocks));
	if (!buf)
		return qcow2_oom();
	r = encode_header(o, l, buf);
	if (r == 0) {
		encode_refcounts(o, l, buf + l->cs, buf + head);
		/* header, table and the first block; the L1 table; the other blocks */
		r = qcow2_io_pwrite(io, buf, (size_t)(head + l->cs), 0);
	}
	if (r == 0)
		r = write_l1(io, l);
	if (r == 0)
		r = write_crypto(io, l, crypto_area);
	if (r == 0 && l->blocks > 1)
		r = qcow2_io_pwrite(io, buf + head + l->cs, (size_t)(blocks - l->cs),
				    block_cluster(l, 1) * l->cs);
	free(buf);
	return r;
}

/* ---- preallocation ---- */

/* What lies below a new overlay is never read while preallocating: only extended L2 images
 * preallocate over a backing file, and their new clusters keep every subcluster unallocated. */
static int no_backing_read(void *ctx, void *buf, size_t n, uint64_t off)
{
	return qcow2_set_error(-EIO, "the backing file is not open while preallocating");
}

/* Allocate every cluster of the disk (and the L2 tables) through the write path. */
static int prealloc_metadata(struct qcow2_image *img, const struct qcow2_create_opts *o)
{
	struct qcow2_fill fill = {no_backing_read, NULL, has_backing(o)};
	uint64_t off, n;
	int r = 0;

	img->w->sparse_prealloc = true; /* falloc and full reserve the blocks afterwards */

	for (off = 0; off < o->size && r == 0; off += n) {
		n = o->size - off < PREALLOC_STEP ? o->size - off : PREALLOC_STEP;
		r = qcow2_job_step(o->job, off, o->size);
		if (r == 0)
			r = qcow2_image_write(img, NULL, (size_t)n, off, &fill);
	}
	return r < 0 ? r : qcow2_image_flush(img);
}

/* falloc, full: the host blocks from the first cluster past the initial metadata (where every
 * preallocated cluster lies) to the end of the file, as QEMU does it. */
static int prealloc_host(struct qcow2_image *img, const struct qcow2_create_opts *o, uint64_t start)
{
	struct qcow2_io *io = qcow2_image_io(img);
	uint64_t end, off, n;
	int r = qcow2_io_size(io, &end);

	for (off = start; r == 0 && off < end; off += n) {
		n = end - off < PREALLOC_STEP ? end - off : PREALLOC_STEP;
		r = qcow2_job_step(o->job, off - start, end - start);
		if (r == 0)
			r = qcow2_io_preallocate(io, off, n, o->prealloc == QCOW2_PREALLOC_FULL);
	}
	return r;
}

int qcow2_image_create_io(struct qcow2_io *io, const char *name, const struct qcow2_create_opts *o,
			  struct qcow2_image **out)
{
	/* (encrypted: opened with its key, so that what is written, preallocation too, is
	 * encrypted) */
	struct qcow2_image_opts io_opts = {.writable = true, .key = o->luks ? o->luks_key : NULL};
	struct qcow2_image *img = NULL;
	struct qcow2_crypt *crypt = NULL;
	struct layout l = {0};
	uint8_t *area = NULL;
	int r = qcow2_create_opts_check(o);

	/* encrypt.format=luks: the LUKS header is made first, its length sizes the layout; its
	 * cipher is not needed (nothing is preallocated) */
	if (r == 0 && o->luks)
		r = qcow2_luks_build(o->luks, o->luks_key->bytes, o->luks_key->len, &area,
				     &l.crypto_bytes, &crypt);
	qcow2_crypt_free(crypt);
	if (r == 0) {
		plan(o, &l);
		r = write_metadata(io, o, &l, area);
	}
	qcow2_secure_free(area, l.crypto_bytes);
	if (r < 0) {
		qcow2_io_close(io);
		return qcow2_error_prefix(r, name);
	}
	r = qcow2_image_open(io, name, &io_opts, &img);
	if (r == 0 && o->prealloc != QCOW2_PREALLOC_OFF)
		r = prealloc_metadata(img, o);
	if (r == 0 && o->prealloc >= QCOW2_PREALLOC_FALLOC)
		r = prealloc_host(img, o, l.clusters * l.cs);
	if (r == 0)
		r = qcow2_job_step(o->job, o->size, o->size);
	if (r < 0 || !out) {
		qcow2_image_close(img);
		return r < 0 ? qcow2_error_prefix(r, name) : 0;
	}
	*out = img;
	return 0;
}

/* ---- the file ---- */

/* A new image must not name itself (the file it replaces) as its backing file: a loop. */
static int check_own_backing(const char *path, const char *backing)
{
	char resolved[PATH_MAX];
	struct stat a, b;

	if (!backing || !backing[0] || stat(path, &a) < 0 ||
	    qcow2_chain_resolve_path(NULL, path, backing, resolved, sizeof(resolved)) < 0 ||
	    stat(resolved, &b) < 0) {
		qcow2_clear_error();
		return 0;
	}
	if (a.st_dev == b.st_dev && a.st_ino == b.st_ino)
		return qcow2_set_error(-ELOOP, "'%s' cannot be its own backing file", path);
	return 0;
}

struct target {
	char path[PATH_MAX]; /* the file to create or replace (a symlink followed) */
	char dir[PATH_MAX];
	const char *name; /* as the caller named it, for messages */
	bool exists;
	mode_t mode; /* of the file replaced, and its owner */
	uid_t uid;
	gid_t gid;
};

/* An existing @t->path must be a regular file that no other process holds for writing. */
static int check_existing(struct target *t)
{
	struct qcow2_io *io;
	struct stat st;
	int r;

	if (stat(t->path, &st) < 0)
		return qcow2_set_error(-errno, "'%s': %s", t->name, strerror(errno));
	if (S_ISDIR(st.st_mode))
		return qcow2_set_error(-EISDIR, "'%s' is a directory", t->name);
	if (!S_ISREG(st.st_mode))
		return qcow2_set_error(-EINVAL, "'%s' exists and is not a regular file", t->name);
	t->exists = true;
	t->mode = st.st_mode & 07777;
	t->uid = st.st_uid;
	t->gid = st.st_gid;
	r = qcow2_io_open_file(t->path, false, &io);
	if (r < 0)
		return r;
	/* Replacing it under a writer would make the writer's data vanish. */
	r = qcow2_io_lock_check(io, 0, QCOW2_PERM_ALL & ~QCOW2_PERM_WRITE);
	qcow2_io_close(io);
	return r;
}

static int resolve_target(const char *path, struct target *t)
{
	struct stat st;
	char copy[PATH_MAX];

	memset(t, 0, sizeof(*t));
	t->name = path;
	if (strlen(path) >= sizeof(t->path) || !path[0])
		return qcow2_set_error(-ENAMETOOLONG, "'%s': bad file name", path);
	if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode)) {
		if (!realpath(path, t->path))
			return qcow2_set_error(-errno,
					       "'%s' is a symlink that does not resolve: %s", path,
					       strerror(errno));
	} else {
		strcpy(t->path, path);
	}
	strcpy(copy, t->path);
	strcpy(t->dir, dirname(copy));
	if (access(t->path, F_OK) == 0 || errno != ENOENT)
		return check_existing(t);
	return 0;
}

int qcow2_create_check_target(const char *path, bool *exists)
{
	struct target t;
	int r = resolve_target(path, &t);

	*exists = t.exists;
	return r;
}

/* The hidden name number @i next to @t->path, in @tmp. False if it does not fit. */
static bool temp_name(const struct target *t, int i, char *tmp, size_t cap)
{
	char copy[PATH_MAX];
	int n;

	strcpy(copy, t->path);
	n = snprintf(tmp, cap, "%s/.%s.create-%d-%d", t->dir, basename(copy), (int)getpid(), i);
	if (n < 0 || (size_t)n >= cap) {
		errno = ENAMETOOLONG;
		return false;
	}
	return true;
}

/* A new file in @t->dir: unnamed if the file system can, else a hidden name in @tmp. */
static int open_temp(const struct target *t, char *tmp, size_t cap)
{
	int fd = -1, i;

	tmp[0] = '\0';
	fd = open(t->dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0666);
	if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL))
		return fd >= 0 ? fd
			       : qcow2_set_error(-errno, "cannot create '%s': %s", t->name,
						 strerror(errno));
	for (i = 0; i < 1000 && temp_name(t, i, tmp, cap); i++) {
		fd = open(tmp, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0666);
		if (fd >= 0 || errno != EEXIST)
			break;
	}
	if (fd < 0) {
		tmp[0] = '\0';
		return qcow2_set_error(-errno, "cannot create '%s': %s", t->name, strerror(errno));
	}
	return fd;
}

/* Give the unnamed file @fd the name @t->path directly (a new file), or a hidden name in @tmp
 * to rename from. Returns 1 when it already has its final name. */
static int link_temp(int fd, const struct target *t, char *tmp, size_t cap)
{
	char proc[64];
	int i;

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	if (!t->exists && linkat(AT_FDCWD, proc, AT_FDCWD, t->path, AT_SYMLINK_FOLLOW) == 0)
		return 1;
	for (i = 0; i < 1000 && temp_name(t, i, tmp, cap); i++) {
		if (linkat(AT_FDCWD, proc, AT_FDCWD, tmp, AT_SYMLINK_FOLLOW) == 0)
			return 0;
		if (errno != EEXIST)
			break;
	}
	tmp[0] = '\0';
	return qcow2_set_error(-errno, "cannot name the new image '%s': %s", t->name,
			       strerror(errno));
}

static int sync_dir(const struct target *t)
{
	int fd = open(t->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), r = 0;

	if (fd < 0 || fsync(fd) < 0)
		r = qcow2_set_error(-errno, "cannot sync directory '%s': %s", t->dir,
				    strerror(errno));
	if (fd >= 0)
		close(fd);
	return r;
}

/* Make the complete file @fd durable, then give it its name. */
static int publish(int fd, const struct target *t, char *tmp, size_t cap)
{
	int r = 0;

	if (fsync(fd) < 0)
		return qcow2_set_error(-errno, "'%s': flush failed: %s", t->name, strerror(errno));
	if (!tmp[0])
		r = link_temp(fd, t, tmp, cap);
	if (r == 0 && rename(tmp, t->path) < 0)
		r = qcow2_set_error(-errno, "cannot rename the new image to '%s': %s", t->name,
				    strerror(errno));
	if (r == 0)
		tmp[0] = '\0'; /* renamed: nothing to clean up */
	return r < 0 ? r : sync_dir(t);
}

int qcow2_image_create(const char *path, const struct qcow2_create_opts *o)
{
	char tmp[PATH_MAX];
	struct qcow2_io *io;
	struct target t;
	int fd, dup_fd, r;

	r = qcow2_create_opts_check(o);
	if (r == 0)
		r = resolve_target(path, &t);
	if (r == 0)
		r = check_own_backing(path, o->backing_file);
	if (r < 0)
		return qcow2_error_prefix(r, path);
	fd = open_temp(&t, tmp, sizeof(tmp));
	if (fd < 0)
		return fd;
	/* The replacement keeps the file's owner (where we may give it) and its mode. */
	if (t.exists && fchown(fd, t.uid, t.gid) < 0 && errno != EPERM)
		r = qcow2_set_error(-errno, "'%s': cannot set the owner: %s", path,
				    strerror(errno));
	if (r == 0 && t.exists && fchmod(fd, t.mode) < 0)
		r = qcow2_set_error(-errno, "'%s': cannot set the mode: %s", path, strerror(errno));
	dup_fd = r == 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;
	if (r == 0 && dup_fd < 0)
		r = qcow2_set_error(-errno, "'%s': %s", path, strerror(errno));
	if (r == 0 && (r = qcow2_io_open_fd(dup_fd, path, &io)) == 0)
		r = qcow2_image_create_io(io, path, o, NULL);
	if (r == 0)
		r = publish(fd, &t, tmp, sizeof(tmp));
	if (tmp[0])
		unlink(tmp);
	close(fd);
	return r;
}

/* ---- the backing file of a new overlay ---- */

static int probe_raw(struct qcow2_backing_probe *out)
{
	struct qcow2_io *io;
	int r = qcow2_io_open_file(out->path, false, &io);

	if (r < 0)
		return r;
	r = qcow2_io_lock_reader(io);
	if (r == 0)
		r = qcow2_io_size(io, &out->size);
	qcow2_io_close(io);
	strcpy(out->format, "raw");
	return r;
}

int qcow2_create_probe_backing(const char *image_path, const char *backing, const char *fmt,
			       struct qcow2_backing_probe *out)
{
	struct qcow2_chain_opts co = {.lock = true};
	struct qcow2_layer_info li;
	struct qcow2_chain *c;
	int r;

	memset(out, 0, sizeof(*out));
	if (fmt && fmt[0] && strcmp(fmt, "qcow2") != 0 && strcmp(fmt, "raw") != 0)
		return qcow2_set_error(-ENOTSUP,
				       "backing format '%s' is not supported (qcow2 or "
				       "raw)",
				       fmt);
	r = qcow2_chain_resolve_path(NULL, image_path, backing, out->path, sizeof(out->path));
	if (r < 0)
		return qcow2_set_error(r, "cannot open backing file '%s': %s", backing,
				       strerror(-r));
	r = check_own_backing(image_path, backing);
	if (r < 0)
		return r;
	if (fmt && strcmp(fmt, "raw") == 0)
		return probe_raw(out);
	r = qcow2_chain_open(out->path, &co, &c);
	if (r < 0)
		return r;
	qcow2_chain_layer(c, 0, &li);
	if (fmt && fmt[0] && strcmp(li.format, fmt) != 0)
		r = qcow2_set_error(-EINVAL, "backing file '%s' is not a qcow2 image", backing);
	snprintf(out->format, sizeof(out->format), "%s", li.format);
	out->size = li.size;
	qcow2_chain_close(c);
	return r;
}
