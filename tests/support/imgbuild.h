/* SPDX-License-Identifier: MIT */
/*
 * imgbuild.h - build qcow2 images in memory for the unit tests and fuzzers.
 *
 * An image is a growable byte buffer (@bytes, @len) that is a valid qcow2 file after every
 * call: refcounts, the COPIED flags of the active tables and the snapshot table are kept
 * exact, so `qemu-img check` finds no errors and no leaks. Tests then corrupt it on purpose
 * with imgbuild_put_be16/32/64().
 *
 * Layout: cluster 0 holds the header, its extensions and the backing file name; then the
 * refcount table, the first refcount block, the active L1 table (and, with bitmaps, a bitmap
 * table and directory). Everything after is appended as clusters are allocated, so the host
 * offsets a test sees are predictable: the first data cluster written is the next one free.
 *
 * Guest writes follow QEMU: a cluster shared with a snapshot (refcount > 1) is copied before
 * it is written, as is an L2 table shared with a snapshot. Without extended L2 entries a write
 * allocates the whole cluster, and the part of the cluster not written reads as zeros (it no
 * longer shows the backing file); with extended L2 entries only the touched subclusters become
 * allocated, and the untouched part of a touched subcluster reads as zeros.
 *
 * With an external data file (@data_file), guest data lives in @data_bytes at host offset ==
 * guest offset (as QEMU lays out a raw data file) and is not refcounted.
 *
 * Builder misuse (an offset past the virtual size, a refcount table too small for the file)
 * aborts with a message: it is a bug in the test, not a result.
 *
 * Checked while writing it: images of every option combination (v2/v3, 512 B to 2 MiB
 * clusters, refcount widths 1-64, extended L2, zlib/zstd, snapshots, data files, bitmaps)
 * pass `qemu-img check`, and `qemu-img convert -O raw` (with -l for snapshots) gives exactly
 * what imgbuild_expect() says. The tests themselves never run qemu-img.
 */
#ifndef IMGBUILD_H
#define IMGBUILD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qcow2.h"

/* A header extension added verbatim after the ones the options ask for. */
struct imgbuild_ext {
	uint32_t type;
	const void *data;
	uint32_t len;
};

/* An entry of the feature name table (type 0 incompatible, 1 compatible, 2 autoclear). */
struct imgbuild_feature {
	uint8_t type;
	uint8_t bit;
	const char *name;
};

struct imgbuild_opts {
	uint32_t version;	  /* 2 or 3 */
	uint32_t cluster_bits;	  /* 9..21 */
	uint64_t size;		  /* virtual size in bytes */
	uint32_t refcount_order;  /* 0..6 (v2 images must use 4) */
	bool extended_l2;	  /* v3, cluster_bits >= 14 */
	uint8_t compression_type; /* QCOW2_COMPRESSION_ZLIB or _ZSTD (sets the incompat bit) */
	const char *backing_file; /* NULL: none */
	const char *backing_fmt;  /* NULL: no backing format extension */
	const char *data_file;	  /* NULL: none; else an external data file of that name */
	bool data_file_raw;	  /* the "raw external data" autoclear bit */
	bool bitmaps;		  /* one empty persistent bitmap ("bitmap0") + the extension */
	bool lazy_refcounts;	  /* the compatible bit (the image is left clean) */
	bool feature_table;	  /* v3: write QEMU's feature name table (if it fits) */
	const struct imgbuild_feature *extra_features; /* appended to the feature name table */
	size_t n_extra_features;
	const struct imgbuild_ext *exts; /* extra header extensions, after the standard ones */
	size_t n_exts;
	uint32_t l1_entries;		      /* 0: as many as the size needs */
	uint32_t reftable_clusters;	      /* 0: enough for a file of 256 MiB or more */
	uint32_t crypt_method;		      /* written as is: the library refuses 1 and 2 */
	uint64_t incompat, compat, autoclear; /* extra feature bits, ORed in */
};

struct imgbuild_snapshot_opts {
	const char *id;	      /* NULL: the next number, as QEMU numbers them */
	const char *name;     /* NULL: "snap<id>" */
	uint32_t extra_bytes; /* extra data size; 0: 16 for v3, 0 for v2; >= 24 stores icount */
	uint64_t vm_state_bytes;
	uint64_t vm_clock_nsec;
	uint32_t date_sec, date_nsec;
	uint64_t disk_bytes; /* 0: the current virtual size */
	uint64_t icount;
};

struct imgbuild_snapshot {
	char *id;
	char *name;
	uint64_t l1_off;
	uint32_t l1_entries;
	struct imgbuild_snapshot_opts o;
	uint8_t *shadow, *shadow_set; /* the expected view at the snapshot */
};

#define IMGBUILD_SHADOW_MAX (64ull << 20)

/* What an image says about a subcluster of the guest. */
enum imgbuild_state {
	IMGBUILD_UNALLOCATED = 0, /* nothing: the backing file shows through */
	IMGBUILD_DATA = 1,	  /* data (plain or compressed) */
	IMGBUILD_ZERO = 2,	  /* reads as zeros (zero flag or zero bit) */
};

struct imgbuild {
	uint8_t *bytes; /* the qcow2 file */
	size_t len;
	uint8_t *data_bytes; /* the external data file (NULL without one) */
	size_t data_len;

	/* read-only for tests */
	struct imgbuild_opts o;
	uint64_t cluster_bytes;
	uint32_t l2_entries;	 /* entries per L2 table */
	uint32_t l2_entry_bytes; /* 8, or 16 with extended L2 */
	uint64_t subcluster_bytes;
	uint64_t l1_off;
	uint32_t l1_entries;
	uint64_t reftable_off;
	uint32_t reftable_clusters;
	uint64_t bitmap_dir_off, bitmap_dir_bytes, bitmap_table_off;
	uint32_t nb_snapshots;
	struct imgbuild_snapshot *snaps;
	uint64_t snap_table_off;   /* 0 without snapshots */
	uint64_t snap_table_bytes; /* bytes in use, the last entry padded */

	/* The expected guest view, kept for images of up to IMGBUILD_SHADOW_MAX bytes: @shadow
	 * holds the bytes, @shadow_set one enum imgbuild_state per subcluster. Snapshots keep
	 * copies. */
	uint8_t *shadow;
	uint8_t *shadow_set;

	/* private */
	size_t cap, data_cap;
	uint64_t snap_table_cap; /* bytes allocated for the table */
	uint64_t comp_cursor;	 /* next free byte for packed compressed data, 0: none */
	bool in_snapshot;	 /* refcount overflow sets @overflow instead of aborting */
	bool overflow;
	char *backing_file, *backing_fmt, *data_file;
};

/* The defaults: v3, 64 KiB clusters, 4 MiB, 16-bit refcounts, zlib, the feature table. */
struct imgbuild_opts imgbuild_defaults(void);
/* A new image (@o NULL: the defaults). Aborts on bad options or out of memory. */
struct imgbuild *imgbuild_new(const struct imgbuild_opts *o);
void imgbuild_free(struct imgbuild *img);

/* Append a zeroed cluster with refcount 1 and return its host offset. */
uint64_t imgbuild_alloc_cluster(struct imgbuild *img);
/* Write @len bytes of guest data at @guest_off of the active state. 0 or -errno. */
int imgbuild_write(struct imgbuild *img, uint64_t guest_off, const void *data, size_t len);
/* Fill @len guest bytes at @guest_off with @byte. */
int imgbuild_fill(struct imgbuild *img, uint64_t guest_off, int byte, size_t len);
/* Make [@guest_off, +@len) read as zeros with the v3 zero flag (whole clusters), or with the
 * subclusters' zero bits (extended L2; whole subclusters). The clusters are freed.
 * -EINVAL for v2, unaligned ranges or a compressed cluster with extended L2. */
int imgbuild_zero(struct imgbuild *img, uint64_t guest_off, uint64_t len);
/* Store the cluster at @guest_off (aligned) compressed with the image's compression type.
 * @data is one cluster. Compressed data is packed at byte granularity into shared host
 * clusters, as QEMU does. Returns 0 or -errno; *@host_off (if not NULL) gets where the
 * compressed bytes start and *@comp_bytes their exact length. */
int imgbuild_write_compressed(struct imgbuild *img, uint64_t guest_off, const void *data,
			      uint64_t *host_off, uint64_t *comp_bytes);
/* Take an internal snapshot of the active state (@o NULL: defaults). 0, -ERANGE if a refcount
 * would overflow (the image is then unchanged), -ENOTSUP with a data file. */
int imgbuild_snapshot_add(struct imgbuild *img, const struct imgbuild_snapshot_opts *o);

/* The expected content of [@off, +@len) of the active state (@snap < 0) or of snapshot
 * @snap, with @below (the flat view of the backing chain over the same range, NULL: zeros)
 * showing through where this image has nothing. Past the image's size everything reads as
 * zeros, as QEMU reads a short backing file. Aborts without a shadow. */
void imgbuild_expect(const struct imgbuild *img, int snap, uint64_t off, size_t len,
		     const uint8_t *below, uint8_t *out);
/* What the active state (@snap < 0) or snapshot @snap says about @guest_off
 * (IMGBUILD_UNALLOCATED past the size). */
enum imgbuild_state imgbuild_state(const struct imgbuild *img, int snap, uint64_t guest_off);

/* Apply @nops random operations (seeded by @seed): writes of random length and content,
 * zeroing (v3), compressed clusters (without a data file) and up to @max_snapshots snapshots
 * (skipped where refcounts would overflow). Aborts if the builder fails. */
void imgbuild_scramble(struct imgbuild *img, uint64_t seed, unsigned nops, unsigned max_snapshots);

/* Patch the file (big-endian), growing it with zeros if needed. */
void imgbuild_put_be16(struct imgbuild *img, uint64_t off, uint16_t v);
void imgbuild_put_be32(struct imgbuild *img, uint64_t off, uint32_t v);
void imgbuild_put_be64(struct imgbuild *img, uint64_t off, uint64_t v);
void imgbuild_put_bytes(struct imgbuild *img, uint64_t off, const void *p, size_t n);
uint64_t imgbuild_get_be64(const struct imgbuild *img, uint64_t off);
uint32_t imgbuild_get_be32(const struct imgbuild *img, uint64_t off);

/* File offset of the active L1 entry for @guest_off. */
uint64_t imgbuild_l1_entry_off(const struct imgbuild *img, uint64_t guest_off);
/* File offset of the (first word of the) active L2 entry for @guest_off, 0 if no L2 table. */
uint64_t imgbuild_l2_entry_off(const struct imgbuild *img, uint64_t guest_off);
/* Host offset of the data cluster the active state maps @guest_off to (0: none). */
uint64_t imgbuild_host_cluster(const struct imgbuild *img, uint64_t guest_off);
/* Refcount of host cluster @idx as the builder keeps it. */
uint64_t imgbuild_refcount(const struct imgbuild *img, uint64_t idx);

/* A memory io holding a copy of the file (or of the external data file). */
struct qcow2_io *imgbuild_io(const struct imgbuild *img);
struct qcow2_io *imgbuild_data_io(const struct imgbuild *img);
/* Open the image from memory (the data file, if any, from memory too) through the engine's
 * public qcow2_image_open() (imgbuild_open_dep; close with qcow2_image_close()), or load it
 * read-only with the image layer's qcow2_image_load() (imgbuild_dep; free with
 * qcow2_image_unload()), for the tests of the layers below the engine. 0 or -errno. */
int imgbuild_open(const struct imgbuild *img, struct qcow2_image **out);
int imgbuild_load(const struct imgbuild *img, struct qcow2_image **out);
/* Write the file, or the external data file, to disk. 0 or -errno. */
int imgbuild_save(const struct imgbuild *img, const char *path);
int imgbuild_save_data(const struct imgbuild *img, const char *path);

/* Write @len bytes to @path (raw files for chain tests). 0 or -errno. */
int imgbuild_write_file(const char *path, const void *bytes, size_t len);

/* A deterministic xorshift64* generator for test data and fuzz mutations. */
static inline uint64_t imgbuild_rand(uint64_t *state)
{
	uint64_t x = *state ? *state : 0x9e3779b97f4a7c15ull;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545f4914f6cdd1dull;
}

/* Fill @buf with a pattern that names its guest offset (every 8 bytes hold
 * @tag << 56 | offset), so a misplaced read is recognisable. */
void imgbuild_pattern(void *buf, size_t len, uint64_t guest_off, uint8_t tag);

#endif
