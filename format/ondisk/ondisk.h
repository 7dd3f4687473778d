/* SPDX-License-Identifier: MIT */
/*
 * ondisk.h - the on-disk layout of qcow2 (docs/interop/qcow2.txt in QEMU): header offsets, entry
 * masks and flags, and the pure decoders and encoders of the header, the snapshot table, the
 * bitmap directory and the refcount blocks. Above base (docs/design.md).
 */
#ifndef QCOW2_ONDISK_H
#define QCOW2_ONDISK_H

#include "base/base.h"

#define QCOW2_L1E_OFFSET_MASK  0x00fffffffffffe00ull
#define QCOW2_L2E_OFFSET_MASK  0x00fffffffffffe00ull
#define QCOW2_OFLAG_COPIED     (1ull << 63)
#define QCOW2_OFLAG_COMPRESSED (1ull << 62)
#define QCOW2_OFLAG_ZERO       1ull
#define QCOW2_REFT_OFFSET_MASK 0xfffffffffffffe00ull
/* Bits of an entry that must be zero (qcow2.txt): an L1 entry, a standard L2 entry (compressed
 * ones have none), and the allocation half of an extended L2 entry's subcluster bitmap. */
#define QCOW2_L1E_RESERVED    0x7f000000000001ffull
#define QCOW2_L2E_RESERVED    0x3f000000000001feull
#define QCOW2_L2_BITMAP_ALLOC 0xffffffffull

/* A bitmap table entry (qcow2.txt, "Bitmaps"): a data cluster's offset, or 0 with bit 0 saying
 * all ones (set) or all zeros; bits 1..8 and 56..63 reserved, bit 0 reserved with an offset. */
#define QCOW2_BME_OFFSET_MASK 0x00fffffffffffe00ull
#define QCOW2_BME_RESERVED    0xff000000000001feull
#define QCOW2_BME_ALL_ONES    1ull

/* Decode entry @idx of the refcount block @block. Pure. */
uint64_t qcow2_refcount_block_get(const void *block, uint32_t order, uint64_t idx);
/* Encode @v (which must fit the width) into entry @idx of @block. Pure. */
void qcow2_refcount_block_set(void *block, uint32_t order, uint64_t idx, uint64_t v);

/* snapshot.c */
/* @table_bytes (may be NULL): the table's length in bytes. */
int qcow2_snapshot_load(struct qcow2_io *io, const struct qcow2_header *h, uint64_t file_bytes,
			struct qcow2_snapshot **out, uint64_t *table_bytes);
/* Length in bytes of the table entry at @entry (@avail bytes of table left), with its padding
 * to 8 bytes (which the last entry may lack at the end of the file); -EMSGSIZE if it runs past
 * @avail. Pure. */
ssize_t qcow2_snapshot_entry_bytes(const void *entry, size_t avail);
/* The extra data QEMU writes in every entry: VM state size (64 bits), disk size, icount. */
#define QCOW2_SNAPSHOT_EXTRA_BYTES 24
/* Encode @s as a table entry with QCOW2_SNAPSHOT_EXTRA_BYTES of extra data, padded to 8
 * bytes, into @buf (NULL: only measure; id and name must fit 16-bit lengths). Returns the
 * entry's length. Pure. */
size_t qcow2_snapshot_entry_encode(const struct qcow2_snapshot *s, void *buf);

/* What proves that a snapshot is still the one a view was opened on (the why is in
 * snapshot.c): the entry's bytes, where they are, and the header's table fields. */
struct qcow2_snapshot_pin {
	struct qcow2_io *io; /* the image's file (not owned) */
	char *id;
	char name[64]; /* for messages */
	size_t len;
	uint8_t *bytes;	       /* the entry as it was */
	pthread_mutex_t lock;  /* guards the fields below */
	struct qcow2_header h; /* the header, with the table fields last seen */
	uint8_t hdr[12];       /* header bytes 60..71: nb_snapshots, snapshots_offset */
	uint64_t off;	       /* the entry's offset in the file */
	bool stale;	       /* deleted or changed: for good */
};
/* Pin snapshot @s of the image whose header is @h in @io, checking that the file still holds
 * it. 0, -ESTALE (it changed already), or another -errno. */
int qcow2_snapshot_pin_init(struct qcow2_snapshot_pin *p, struct qcow2_io *io,
			    const struct qcow2_header *h, const struct qcow2_snapshot *s);
/* 0 if the file still holds the pinned entry (where it was, or in a table that moved); -ESTALE
 * if not. Thread-safe. */
int qcow2_snapshot_pin_check(struct qcow2_snapshot_pin *p);
void qcow2_snapshot_pin_release(struct qcow2_snapshot_pin *p);

/* The header: the offset of each field, as qcow2.txt lays it out (header.c decodes and encodes
 * it, the engine's header writer rewrites bytes 24..95), and the extension types. */
enum {
	OFF_MAGIC = 0,
	OFF_VERSION = 4,
	OFF_BACKING_OFF = 8,
	OFF_BACKING_LEN = 16,
	OFF_CLUSTER_BITS = 20,
	OFF_SIZE = 24,
	OFF_CRYPT = 32,
	OFF_L1_ENTRIES = 36,
	OFF_L1_OFF = 40,
	OFF_REFT_OFF = 48,
	OFF_REFT_CLUSTERS = 56,
	OFF_NB_SNAPSHOTS = 60,
	OFF_SNAPSHOTS_OFF = 64,
	OFF_INCOMPAT = 72,
	OFF_COMPAT = 80,
	OFF_AUTOCLEAR = 88,
	OFF_REFCOUNT_ORDER = 96,
	OFF_HEADER_LEN = 100,
	OFF_COMPRESSION = 104,
	V2_HEADER_LEN = 72,
	V3_HEADER_LEN = 104,
};

/* Encode the header fields a writer rewrites in place, bytes OFF_SIZE up to the returned end
 * (OFF_REFCOUNT_ORDER for version 3, V2_HEADER_LEN for version 2), into @p (a buffer laid out
 * as the header from offset 0), with @incompat as the incompatible features. Pure. */
size_t qcow2_header_put_mutable(const struct qcow2_header *h, uint64_t incompat, uint8_t *p);

#define EXT_END		  0x00000000u
#define EXT_BACKING_FMT	  0xe2792acau
#define EXT_FEATURE_TABLE 0x6803f857u
#define EXT_BITMAPS	  0x23852875u
#define EXT_CRYPTO	  0x0537be77u
#define EXT_DATA_FILE	  0x44415441u

#endif
