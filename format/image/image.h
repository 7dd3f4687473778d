/* SPDX-License-Identifier: MIT */
/*
 * image.h - one image, read side: the open image (header, L1 table, snapshot table, refcount
 * table, external data file), the L2 cache, guest-to-host mapping and the refcount reader.
 * Above crypto (docs/design.md).
 */
#ifndef QCOW2_IMAGE_H
#define QCOW2_IMAGE_H

#include "crypto/crypto.h"

/* An L1 table in memory, decoded to host order. */
struct qcow2_l1 {
	uint64_t *entries;
	uint32_t n;
	uint64_t size; /* the virtual size this table describes */
};

/* l2cache.c: a bounded cache of L2 tables, keyed by host offset. Locked internally. */
struct qcow2_l2cache;
int qcow2_l2cache_new(size_t table_bytes, size_t budget_bytes, struct qcow2_l2cache **out);
void qcow2_l2cache_free(struct qcow2_l2cache *c);
/* Copy @n_words 64-bit words starting at word @word of the L2 table at @host_off into @out,
 * loading the table through @io on a miss (no lock held across the read). */
int qcow2_l2cache_get(struct qcow2_l2cache *c, struct qcow2_io *io, uint64_t host_off,
		      uint32_t word, uint32_t n_words, uint64_t *out);

/* Mark the table at @host_off dirty after changing @n_words words from @word to @words,
 * loading it through @io first (or starting from @init, a whole table, when not NULL: a new
 * table). Dirty tables stay cached until written back. -EAGAIN when every slot is dirty
 * (flush, then retry). */
int qcow2_l2cache_modify(struct qcow2_l2cache *c, struct qcow2_io *io, uint64_t host_off,
			 const uint64_t *init, uint32_t word, uint32_t n_words,
			 const uint64_t *words);
/* Write every dirty table through @io. Returns the number written, or -errno. */
int qcow2_l2cache_writeback(struct qcow2_l2cache *c, struct qcow2_io *io);
/* More than half the slots dirty: time to flush. */
bool qcow2_l2cache_pressure(struct qcow2_l2cache *c);
/* Forget the table at @host_off (its cluster is being freed). */
void qcow2_l2cache_drop(struct qcow2_l2cache *c, uint64_t host_off);

/* refcount.c: the refcount reader */
struct qcow2_refcounts {
	uint64_t *table; /* refcount table, host order */
	uint32_t n;
	uint32_t order;
	uint32_t cluster_bits;
	uint32_t first_bad; /* the first entry with reserved bits or misaligned; UINT32_MAX: none */
};
int qcow2_refcount_load(struct qcow2_io *io, const struct qcow2_header *h, uint64_t file_bytes,
			struct qcow2_refcounts *r);
void qcow2_refcount_release(struct qcow2_refcounts *r);
/* Load img->refs (the table only) unless it is loaded. Entries with reserved bits or
 * misaligned are kept as found (refs.first_bad names the first): only a check and a repair
 * read such a table; every other user of the refcounts refuses it. */
int qcow2_refcount_ready(struct qcow2_image *img);
/* A lookup of the refcounts the file holds that keeps the last block it read. */
struct qcow2_refcount_cursor {
	uint8_t *block; /* one cluster, allocated on first use */
	uint64_t ti;	/* the table index @block holds; UINT64_MAX: none */
};
#define QCOW2_REFCOUNT_CURSOR_INIT \
	{                          \
		NULL, UINT64_MAX   \
	}
/* The one lookup of a refcount in the file: that of cluster @idx (0 past the table, or where the
 * table has no block), its block read through @c (kept for the next lookup). The table is
 * loaded and usable (qcow2_refcount_usable()). A writable image's current refcounts are the
 * engine's cached blocks (qcow2_refcount_get_w()); a check reads a table that may be broken
 * its own way (qcow2_walk_refcount()). */
int qcow2_refcount_lookup(struct qcow2_image *img, struct qcow2_refcount_cursor *c, uint64_t idx,
			  uint64_t *v);
void qcow2_refcount_cursor_release(struct qcow2_refcount_cursor *c);
/* qcow2_refcount_ready(), and -EUCLEAN if an entry has reserved bits set or is misaligned:
 * what every user of the refcounts but a check and a repair asks. */
int qcow2_refcount_usable(struct qcow2_image *img);
/* Read the refcount block of table entry @ti into @buf (a cluster); a block the file does not
 * hold is named as such. */
int qcow2_refcount_read_block(struct qcow2_image *img, uint64_t ti, void *buf);

/* One open image (load.c); its write side is the engine's (engine.h). */
struct qcow2_wstate; /* the write side (engine.h) */

struct qcow2_image {
	struct qcow2_io *io;
	struct qcow2_io *data_io; /* external data file, or == io */
	char *name;
	struct qcow2_header h;
	uint64_t file_bytes;
	uint64_t cluster_bytes;
	uint32_t l2_entries;	 /* per table */
	uint32_t l2_entry_words; /* 1, or 2 with extended L2 */
	uint32_t sc_bits;	 /* subcluster size bits (== cluster_bits without extended L2) */
	struct qcow2_l1 l1;
	struct qcow2_l2cache *l2cache;
	struct qcow2_snapshot *snaps;
	uint64_t snap_table_bytes;
	pthread_mutex_t snap_lock;   /* guards snap_l1 and the lazy load of refs */
	struct qcow2_l1 **snap_l1;   /* under snap_lock; lazily loaded */
	struct qcow2_refcounts refs; /* loaded on first use, under snap_lock */
	struct qcow2_wstate *w;	     /* NULL: read-only (the engine's, engine.h) */
	/* Writable: the first cluster past the file and past every allocation, set by the engine
	 * (refcount.c) and read without a lock by the bounds checks of the read side: atomic. */
	uint64_t end_cluster;
	struct qcow2_image_opts opts;
	bool repair; /* opened for qcow2_image_repair(): writable though corrupt or dirty */
	struct qcow2_crypt *crypt; /* an encrypted image's unlocked key (crypt.c), or NULL */
	bool refs_broken; /* repair: the refcount table has entries the write side cannot use
			   * (misaligned, reserved bits, outside the file); no refcount may be
			   * written until rebuild.c replaced the structure */
};

/* load.c: the read side of qcow2_image_open() (the engine's, engine/open.c): a new image on
 * @io, which it owns from here on (closed on failure too); messages prefixed with @name. */
int qcow2_image_load(struct qcow2_io *io, const char *name, const struct qcow2_image_opts *o,
		     struct qcow2_image **out);
/* Free what qcow2_image_load() set up and close the files (the write side is gone already). */
void qcow2_image_unload(struct qcow2_image *img);
/* img->snap_lock, below w->lock (docs/design.md): held to change the snapshot list and the
 * snapshots' L1 tables (snapshot-write.c), and for their lazy loads and that of the refcount
 * table (refcount.c). load.c sets it up; inline, so that the files of this layer that take it
 * need no call into each other. */
static inline void qcow2_image_snapshots_lock(struct qcow2_image *img)
{
	pthread_mutex_lock(&img->snap_lock);
}

static inline void qcow2_image_snapshots_unlock(struct qcow2_image *img)
{
	pthread_mutex_unlock(&img->snap_lock);
}

/* Refcount entries per refcount block. */
static inline uint64_t qcow2_refcount_per_block(const struct qcow2_image *img)
{
	return (img->cluster_bytes * 8) >> img->refs.order;
}

int qcow2_l1_load(struct qcow2_image *img, uint64_t off, uint32_t n, uint64_t size,
		  struct qcow2_l1 *l1);

/* crypt.c: an encrypted image's data. Its key unlocked at load (none: metadata only; a wrong
 * key: -EKEYREJECTED, "wrong key for 'NAME'", already naming the image). */
int qcow2_image_crypt_load(struct qcow2_image *img, const struct qcow2_key *key);
/* Decrypt (encrypt) in place @n bytes of data at @host_off (guest @guest_off), whole 512-byte
 * sectors; nothing for an image that is not encrypted. -ENOKEY without a key, -EIO if the
 * cipher fails. */
int qcow2_image_decrypt(struct qcow2_image *img, void *buf, size_t n, uint64_t host_off,
			uint64_t guest_off);
int qcow2_image_encrypt(struct qcow2_image *img, void *buf, size_t n, uint64_t host_off,
			uint64_t guest_off);
/* Read @n bytes of data at @host_off of the data file (zeros past its end), decrypted: the one
 * read of guest data. Any range (sectors partly read are read whole and decrypted). */
int qcow2_image_read_data(struct qcow2_image *img, void *buf, size_t n, uint64_t host_off,
			  uint64_t guest_off);
/* May guest data be written to the image? 0, -ENOKEY (no key), -EROFS (legacy AES). */
int qcow2_image_data_writable(struct qcow2_image *img);

/* map.c: the host offset and byte count of the compressed cluster with L2 entry @entry. */
int qcow2_map_compressed(const struct qcow2_image *img, uint64_t entry, uint64_t *host,
			 uint64_t *bytes);

#endif
