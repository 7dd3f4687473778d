/* SPDX-License-Identifier: MIT */
/*
 * internal.h - declarations shared between format/ files, never seen by fs/ or tools/.
 */
#ifndef QCOW2_INTERNAL_H
#define QCOW2_INTERNAL_H

#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "qcow2.h"

static inline uint16_t get_be16(const void *p)
{
	const uint8_t *b = p;
	return (uint16_t)(b[0] << 8 | b[1]);
}

static inline uint32_t get_be32(const void *p)
{
	const uint8_t *b = p;
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static inline uint64_t get_be64(const void *p)
{
	return (uint64_t)get_be32(p) << 32 | get_be32((const uint8_t *)p + 4);
}

static inline void put_be32(void *p, uint32_t v)
{
	uint8_t *b = p;
	b[0] = v >> 24;
	b[1] = v >> 16;
	b[2] = v >> 8;
	b[3] = v;
}

static inline void put_be64(void *p, uint64_t v)
{
	put_be32(p, v >> 32);
	put_be32((uint8_t *)p + 4, (uint32_t)v);
}

#define QCOW2_L1E_OFFSET_MASK 0x00fffffffffffe00ull
#define QCOW2_L2E_OFFSET_MASK 0x00fffffffffffe00ull
#define QCOW2_OFLAG_COPIED (1ull << 63)
#define QCOW2_OFLAG_COMPRESSED (1ull << 62)
#define QCOW2_OFLAG_ZERO 1ull
#define QCOW2_REFT_OFFSET_MASK 0xfffffffffffffe00ull

/* An L1 table in memory, decoded to host order. */
struct qcow2_l1 {
	uint64_t *entries;
	uint32_t n;
	uint64_t size; /* the virtual size this table describes */
};

/* error.c: prefix the last message with "'@name': " unless it already starts so. */
int qcow2_error_prefix(int err, const char *name);

/* l2cache.c: a bounded cache of L2 tables, keyed by host offset. Locked internally. */
struct qcow2_l2cache;
int qcow2_l2cache_new(size_t table_bytes, size_t budget_bytes, struct qcow2_l2cache **out);
void qcow2_l2cache_free(struct qcow2_l2cache *c);
/* Copy @n_words 64-bit words starting at word @word of the L2 table at @host_off into @out,
 * loading the table through @io on a miss (no lock held across the read). */
int qcow2_l2cache_get(struct qcow2_l2cache *c, struct qcow2_io *io, uint64_t host_off,
		      uint32_t word, uint32_t n_words, uint64_t *out);

/* codec.c */
int qcow2_codec_decompress(uint8_t type, const void *in, size_t in_len, void *out,
			   size_t out_len);

/* refcount.c */
struct qcow2_refcounts {
	uint64_t *table; /* refcount table, host order */
	uint32_t n;
	uint32_t order;
	uint32_t cluster_bits;
};
int qcow2_refcount_load(struct qcow2_io *io, const struct qcow2_header *h, uint64_t file_bytes,
			struct qcow2_refcounts *r);
void qcow2_refcount_release(struct qcow2_refcounts *r);
/* Decode entry @idx of the refcount block @block. Pure. */
uint64_t qcow2_refcount_block_get(const void *block, uint32_t order, uint64_t idx);

/* snapshot.c */
int qcow2_snapshot_load(struct qcow2_io *io, const struct qcow2_header *h, uint64_t file_bytes,
			struct qcow2_snapshot **out);

/* image.c internals used by map.c */
struct qcow2_image {
	struct qcow2_io *io;
	struct qcow2_io *data_io; /* external data file, or == io */
	char *name;
	struct qcow2_header h;
	uint64_t file_bytes;
	uint64_t cluster_bytes;
	uint32_t l2_entries; /* per table */
	uint32_t l2_entry_words; /* 1, or 2 with extended L2 */
	uint32_t sc_bits;       /* subcluster size bits (== cluster_bits without extended L2) */
	struct qcow2_l1 l1;
	struct qcow2_l2cache *l2cache;
	struct qcow2_snapshot *snaps;
	pthread_mutex_t snap_lock;   /* guards snap_l1 and the lazy load of refs */
	struct qcow2_l1 **snap_l1;   /* under snap_lock; lazily loaded */
	struct qcow2_refcounts refs; /* loaded on first use, under snap_lock */
};

int qcow2_l1_load(struct qcow2_image *img, uint64_t off, uint32_t n, uint64_t size,
		  struct qcow2_l1 *l1);

/* ownermap.c: which chain layer provides each chunk of the flat view; filled lazily. */
struct qcow2_ownermap;
#define QCOW2_OWNER_UNKNOWN 0u
#define QCOW2_OWNER_NONE 0xffffffffu
int qcow2_ownermap_new(uint64_t size, uint32_t chunk_bits, struct qcow2_ownermap **out);
void qcow2_ownermap_free(struct qcow2_ownermap *m);
/* Owner of chunk @idx: QCOW2_OWNER_UNKNOWN, QCOW2_OWNER_NONE, or layer + 1. Lock-free. */
uint32_t qcow2_ownermap_get(const struct qcow2_ownermap *m, uint64_t idx);
void qcow2_ownermap_set(struct qcow2_ownermap *m, uint64_t idx, uint32_t owner);
uint32_t qcow2_ownermap_chunk_bits(const struct qcow2_ownermap *m);

#endif
