/* SPDX-License-Identifier: MIT */
/*
 * internal.h - declarations shared between format/ files, never seen by fs/ or tools/.
 */
#ifndef QCOW2_INTERNAL_H
#define QCOW2_INTERNAL_H

#include <errno.h>
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

static inline void put_be16(void *p, uint16_t v)
{
	uint8_t *b = p;
	b[0] = (uint8_t)(v >> 8);
	b[1] = (uint8_t)v;
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

/* Report @done of @total bytes to @job and poll it: -ECANCELED (with a message) once it was
 * cancelled, else 0. @job may be NULL. */
static inline int qcow2_job_step(const struct qcow2_job *job, uint64_t done, uint64_t total)
{
	if (!job)
		return 0;
	if (job->progress)
		job->progress(job->ctx, done, total);
	if (job->cancelled && job->cancelled(job->ctx))
		return qcow2_set_error(-ECANCELED, "interrupted");
	return 0;
}

/* io.c: a check run before every write and hole punch of an io (a writable image's overlap
 * checks, overlap.c). @check gets the byte range and the kinds of metadata the write is (a
 * QCOW2_OL_* mask, 0 for data; QCOW2_IO_PUNCH for a hole) and returns 0 or a negative errno that
 * fails the write (a punch is then skipped). Set before the io is shared between threads. */
#define QCOW2_IO_PUNCH (1u << 30)
struct qcow2_io_guard {
	int (*check)(void *ctx, uint64_t off, uint64_t n, unsigned own);
	void *ctx;
};
void qcow2_io_set_guard(struct qcow2_io *io, const struct qcow2_io_guard *g); /* NULL: none */
/* qcow2_io_pwrite() of metadata of the kinds @own (QCOW2_OL_*): it may overlap those. */
int qcow2_io_pwrite_meta(struct qcow2_io *io, const void *buf, size_t n, uint64_t off,
			 unsigned own);
/* io.c: @fn(@ctx, QCOW2_IO_WRITE, off, n) is called before every write and hole punch of
 * [off, off + n) through @io, @fn(@ctx, QCOW2_IO_FLUSH, 0, 0) before every flush (NULL:
 * none); a negative return fails the operation (a punch is skipped). One user at a time (a
 * repair, which holds the image alone). */
void qcow2_io_set_journal(struct qcow2_io *io,
			  int (*fn)(void *ctx, enum qcow2_io_op op, uint64_t off, uint64_t n),
			  void *ctx);
/* io.c: shrink the file to @bytes (no-op if it is not longer). */
int qcow2_io_truncate(struct qcow2_io *io, uint64_t bytes);

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

/* codec.c */
/* Compress one cluster (@in_len bytes) into @out (@out_cap bytes) with @type; returns the
 * compressed length, or 0 if it does not fit (store the cluster uncompressed), or -errno. */
ssize_t qcow2_codec_compress(uint8_t type, const void *in, size_t in_len, void *out,
			     size_t out_cap);
int qcow2_codec_decompress(uint8_t type, const void *in, size_t in_len, void *out,
			   size_t out_len);

/* refcount.c */
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
/* Decode entry @idx of the refcount block @block. Pure. */
uint64_t qcow2_refcount_block_get(const void *block, uint32_t order, uint64_t idx);
/* Encode @v (which must fit the width) into entry @idx of @block. Pure. */
void qcow2_refcount_block_set(void *block, uint32_t order, uint64_t idx, uint64_t v);
/* Write side (img->w->lock held). */
int qcow2_refcount_init_write(struct qcow2_image *img);
void qcow2_refcount_release_write(struct qcow2_image *img);
/* Allocate @n contiguous clusters (refcount 0 -> 1); *@host_off is the first one's offset. */
int qcow2_refcount_alloc(struct qcow2_image *img, uint64_t n, uint64_t *host_off);
/* Give back clusters allocated by qcow2_refcount_alloc() that nothing points to yet. */
void qcow2_refcount_unalloc(struct qcow2_image *img, uint64_t host_off, uint64_t n);
/* Set the refcount of cluster @idx (write side). */
int qcow2_refcount_set_w(struct qcow2_image *img, uint64_t idx, uint64_t v);
/* Refcount of cluster @idx as the write side sees it (cached blocks). */
int qcow2_refcount_get_w(struct qcow2_image *img, uint64_t idx, uint64_t *v);
/* Queue a count-down of the clusters covering [@host_off, @host_off + @bytes), applied after
 * the next flush. */
int qcow2_refcount_defer_free(struct qcow2_image *img, uint64_t host_off, uint64_t bytes);
/* Flush stages: write dirty refcount blocks (stage 1); refcount table entries, or the moved
 * table and its header fields (stage 2, with its own syncs). Each returns 1 if it wrote. */
int qcow2_refcount_write_blocks(struct qcow2_image *img);
int qcow2_refcount_write_table(struct qcow2_image *img);
/* Apply the first @n deferred count-downs (those the last flush unlinked). */
int qcow2_refcount_apply_frees(struct qcow2_image *img, size_t n);

/* image.c: header fields the write side rewrites (size, L1, refcount table, features). */
int qcow2_image_write_header(struct qcow2_image *img);
/* image.c: the write-back stages, each durable before the next (w->lock held). */
int qcow2_image_flush_locked(struct qcow2_image *img);
/* image.c: before the first change: autoclear bits cleared, the lazy dirty bit set, durable
 * (w->lock held). */
int qcow2_image_begin_write(struct qcow2_image *img);

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
	uint8_t *bytes;	     /* the entry as it was */
	pthread_mutex_t lock; /* guards the fields below */
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

/* snapshot-plan.c: what a snapshot operation changes, worked out before anything changes;
 * snapshot-write.c carries it out. References one operation adds to and takes from one host
 * cluster: */
struct qcow2_snapshot_delta {
	uint64_t idx;
	uint32_t plus, minus;
	uint32_t keep; /* references the operation leaves (a delete: the active state's) */
};

struct qcow2_snapshot_change {
	struct qcow2_image *img;
	enum qcow2_snapshot_op kind;
	int idx;                         /* the snapshot (apply, delete); -1 for create */
	const struct qcow2_l1 *sl1;      /* its L1 table */
	struct qcow2_snapshot_delta *d;  /* sorted by cluster, one per cluster */
	size_t n, cap;
	uint8_t *table;                  /* the new snapshot table (NULL: no snapshot left) */
	size_t table_bytes;
	struct qcow2_snapshot sn;        /* create: the new entry (id and name allocated) */
	size_t entry_at;                 /* create: where it lies in @table */
	bool locked;                     /* snapshot-write.c holds w->frees and w->lock */
	bool keep;                       /* add_reach() counts references that stay (keep) */
	uint64_t rc_ti;                  /* read-only images: @rc_block is refcount block @rc_ti */
	uint8_t *rc_block;
	struct qcow2_snapshot_plan plan;
};
void qcow2_snapshot_change_init(struct qcow2_snapshot_change *o, struct qcow2_image *img,
			    enum qcow2_snapshot_op kind);
void qcow2_snapshot_change_release(struct qcow2_snapshot_change *o);
/* Work out @o's plan for @arg (create: the name; else an id or name): the deltas, the new
 * snapshot table, the counts. A writable image's w->lock is held. Changes nothing. */
int qcow2_snapshot_change_plan(struct qcow2_snapshot_change *o, const char *arg);
/* (A delete with @arg NULL drops the invalid entry @o->idx, see plan_drop().) */

/* commit.c: what the block jobs (commit.c) share with convert.c. */
int qcow2_commit_plan_add(struct qcow2_plan *p, enum qcow2_step_kind kind, const char *image,
			  const char *detail, uint64_t bytes);
/* The path and format ("qcow2", "raw") of layer @i of @c ("" / "raw" if there is none). */
const char *qcow2_commit_layer_path(struct qcow2_chain *c, unsigned i);
const char *qcow2_commit_layer_format(struct qcow2_chain *c, unsigned i);
/* The layer of @c that is the file @name (as given, or relative to the top's directory). */
int qcow2_commit_find_layer(struct qcow2_chain *c, const char *name, unsigned *idx);
/* @target (absolute) as @image should store it: relative to @image's directory when
 * @relative, else absolute. */
int qcow2_commit_name_for(const char *image, const char *target, bool relative, char *out,
			  size_t cap);

/* journal.c: the files that let a rerun complete an interrupted job (write order there). */
/* The journal of @job for the image at @image: ".IMAGE.qcowctl-JOB" in its directory, into
 * @out (@cap bytes). 0 or -ENAMETOOLONG. */
int qcow2_journal_path(const char *image, const char *job, char *out, size_t cap);
/* Replace the journal @path by @text, durably (a temporary file written and fsynced, renamed
 * over it, the directory fsynced). 0 or -errno. */
int qcow2_journal_write(const char *path, const char *text);
/* Read the journal @path (at most 64 KiB) into *@text (malloc'ed, NUL-terminated). 1 if read,
 * 0 if there is none (*@text NULL), or -errno (not a regular file: -EINVAL). */
int qcow2_journal_read(const char *path, char **text);
/* Remove the journal @path, durably. 0 (also when there is none) or -errno. */
int qcow2_journal_remove(const char *path);
/* fsync the directory holding @path. */
int qcow2_sync_dir(const char *path);

/* A range of host clusters whose refcount is to be lowered by one (refcount.c). */
struct qcow2_crange {
	uint64_t first;
	uint64_t count;
};

/*
 * The write side of an image (image.c, refcount.c, write.c), present when it was opened
 * writable. Every field is under @lock, the image's metadata lock, except @frees.
 *
 * Write order (crash safety): metadata is cached and written back by
 * qcow2_image_flush() in stages, each made durable before the next starts: data and refcount
 * blocks, then refcount table entries (or a moved table and its header fields), then L2
 * tables, then L1 entries (or a moved L1 table) and the header. So no table on disk ever
 * points at a cluster whose refcount is not on disk. Clusters that stop being used are only
 * counted down after the flush that made the last pointer to them go away (@pending), so a
 * crash can leak them but never leave a pointer to a freed cluster.
 */
struct qcow2_wstate {
	pthread_mutex_t lock;
	/* Held shared by every reader and in-place writer of the image's clusters, exclusive
	 * while @pending frees are applied: a cluster is never reused under a read of it. */
	pthread_rwlock_t frees;
	uint8_t **blocks;    /* refcount blocks by table index, on-disk encoding, loaded lazily */
	bool *block_dirty;
	bool *reft_dirty;    /* refcount table entries to write back */
	uint32_t n_blocks;   /* entries of @blocks, == refs.n */
	bool reft_moved;     /* the refcount table was reallocated: write it whole, then header */
	struct qcow2_crange old_reft;
	uint64_t free_hint;   /* no free cluster below this index */
	uint64_t end_cluster; /* first cluster past the file and past every allocation */
	uint32_t l1_lo, l1_hi; /* dirty L1 entries [lo, hi) */
	bool l1_moved;
	struct qcow2_crange old_l1;
	bool header_dirty;
	struct qcow2_crange *pending; /* to count down after the next flush */
	size_t n_pending, cap_pending;
	bool ready;       /* opened completely: closing may write back */
	bool began;       /* autoclear bits cleared, lazy dirty bit set */
	bool set_dirty;   /* we set the dirty bit and must clear it on a clean close */
	bool data_dirty;  /* guest data written since the last flush */
	/* compress.c: the host cluster compressed clusters are being packed into, and how many
	 * of its bytes are used; forgotten at each flush (after which it could be freed). */
	uint64_t comp_cluster;
	uint64_t comp_used;
	/* overlap.c: the live metadata every host write is checked against; @corrupt once a
	 * write was refused (the corrupt bit is set on disk and the image takes no more changes).
	 * Both have their own synchronisation (@ol its lock, @corrupt atomic). */
	struct qcow2_overlap *ol;
	bool corrupt;
	/* Preallocation (a write without data) leaves new clusters past the end of the file
	 * sparse, as qemu-img's preallocation=metadata does, instead of reserving their blocks
	 * (create.c sets it; fallocate(2) through the views wants the blocks). */
	bool sparse_prealloc;
};

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
	uint64_t snap_table_bytes;
	pthread_mutex_t snap_lock;   /* guards snap_l1 and the lazy load of refs */
	struct qcow2_l1 **snap_l1;   /* under snap_lock; lazily loaded */
	struct qcow2_refcounts refs; /* loaded on first use, under snap_lock */
	struct qcow2_wstate *w;      /* NULL: read-only */
	struct qcow2_image_opts opts;
	bool repair; /* opened for qcow2_image_repair(): writable though corrupt or dirty */
	bool refs_broken; /* repair: the refcount table has entries the write side cannot use
			   * (misaligned, reserved bits, outside the file); no refcount may be
			   * written until rebuild.c replaced the structure */
};

int qcow2_l1_load(struct qcow2_image *img, uint64_t off, uint32_t n, uint64_t size,
		  struct qcow2_l1 *l1);

/* map.c: the host offset and byte count of the compressed cluster with L2 entry @entry. */
int qcow2_map_compressed(const struct qcow2_image *img, uint64_t entry, uint64_t *host,
			 uint64_t *bytes);

/* write.c: the write side of one image. The caller (chain.c) holds w->frees shared around
 * writes and zeroing, and exclusive around qcow2_image_grow(). @fill reads what the layers
 * below show (for copy-on-write); NULL or !has_backing: nothing below, zeros. */
struct qcow2_fill {
	int (*read)(void *ctx, void *buf, size_t n, uint64_t guest_off);
	void *ctx;
	bool has_backing;
};
/* Write @n bytes at guest @off (within the virtual size); @buf NULL allocates the range with
 * the content it shows now (preallocation). */
int qcow2_image_write(struct qcow2_image *img, const void *buf, size_t n, uint64_t off,
		      const struct qcow2_fill *fill);
/* Make [@off, @off + @n) read as zeros without writing data where the format allows: zero
 * clusters (unallocated ones where nothing lies below), freeing what they pointed at. Zeros
 * are written where the format cannot say them: partial clusters, an external data file
 * (which may be read as raw), a version 2 image over a backing file. */
int qcow2_image_zero(struct qcow2_image *img, uint64_t off, uint64_t n,
		     const struct qcow2_fill *fill);
/* Change active L1 entry @i to @v; the next flush writes it back. w->lock held. */
void qcow2_write_l1_set(struct qcow2_image *img, uint32_t i, uint64_t v);
/* Make whole units of [@off, @off + @n) unallocated (partial units are left, except the last
 * one of the disk). */
int qcow2_image_unmap(struct qcow2_image *img, uint64_t off, uint64_t n);
/* Point guest cluster @guest_cl at L2 entry @ent (1 or 2 words), counting down what it pointed
 * at. w->lock held, qcow2_image_begin_write() done. */
int qcow2_write_set_entry(struct qcow2_image *img, uint64_t guest_cl, const uint64_t *ent);
/* compress.c: write guest cluster @guest_off (aligned) from the whole cluster in @buf (zeros
 * past the disk's end), compressed where that saves space, else as a normal write. */
int qcow2_image_write_compressed(struct qcow2_image *img, const void *buf, uint64_t guest_off);
/* Set the COPIED flags of the active L1 and L2 tables from the refcounts (refcount 1: set),
 * as a repair after the refcounts were rebuilt. */
int qcow2_write_fix_copied(struct qcow2_image *img);
/* Grow the virtual size (L1 table moved if it must grow); shrinking is -EINVAL. */
int qcow2_image_grow(struct qcow2_image *img, uint64_t new_size);
/* Write back every cached change in crash-safe order and make it durable, then count down
 * the clusters that the flushed metadata no longer uses. Takes w->frees itself: the caller
 * must not hold it. */
int qcow2_image_flush(struct qcow2_image *img);
bool qcow2_image_writable(const struct qcow2_image *img);

/* prealloc.c (write.c's preallocation, w->lock held). Can the cluster with entry @ent (1 or 2
 * words) be preallocated without a copy: nothing there yet, and what it shows stays the same
 * once allocated (zeros with nothing below; with extended L2, anything below)? */
bool qcow2_prealloc_only(const struct qcow2_image *img, const uint64_t *ent, bool backing);
/* Preallocate clusters [@i, @j) of a run whose entries are @ents, each qcow2_prealloc_only():
 * one allocation, no data written; the entries point at the new clusters (with extended L2,
 * every subcluster unallocated, as QEMU preallocates). */
int qcow2_prealloc_clusters(struct qcow2_image *img, uint64_t *ents, uint32_t i, uint32_t j);

/* overlap.c: the live metadata of a writable image (every host write is checked against it),
 * as QEMU's overlap checks keep it: the header, the active L1 table and the L2
 * tables it points at, the refcount table and blocks, the snapshot table and the snapshots' L1
 * tables, and while the bitmaps are in force the bitmap directory and tables. Every write of
 * img->io is checked against it (the io guard); an overlap fails the write with -EIO, sets the
 * corrupt bit on disk and leaves the image read-only. The allocator never hands out a cluster it
 * holds, whatever its refcount says. Locking: its own rwlock, a leaf (taken under w->lock). */
#define QCOW2_OL_HEADER	      (1u << 0)
#define QCOW2_OL_L1	      (1u << 1)
#define QCOW2_OL_L2	      (1u << 2)
#define QCOW2_OL_REFT	      (1u << 3)
#define QCOW2_OL_REFBLOCK     (1u << 4)
#define QCOW2_OL_SNAP_TABLE   (1u << 5)
#define QCOW2_OL_SNAP_L1      (1u << 6)
#define QCOW2_OL_BITMAP_DIR   (1u << 7)
#define QCOW2_OL_BITMAP_TABLE (1u << 8)
#define QCOW2_OL_ALL	      0x1ffu
/* Build the structure of a writable image (its refcount table loaded) and set the guard on
 * img->io. */
int qcow2_overlap_init(struct qcow2_image *img);
void qcow2_overlap_release(struct qcow2_image *img);
/* At writable open: every cluster of the image's own metadata has a non-zero refcount, else
 * -EUCLEAN naming the first that does not. w->lock held or not yet shared. */
int qcow2_overlap_verify_refcounts(struct qcow2_image *img);
/* The header's tables moved (L1, refcount table, snapshot table, w->old_l1/old_reft) or the
 * snapshot list changed: recompute the ranges. w->lock held. */
int qcow2_overlap_update_tables(struct qcow2_image *img);
/* The active L1 array was replaced: recompute everything. w->lock held. */
int qcow2_overlap_rebuild(struct qcow2_image *img);
/* Room for @n more L2 tables or refcount blocks (before taking a new one). w->lock held. */
int qcow2_overlap_reserve(struct qcow2_image *img, size_t n);
/* An active L1 entry changed from @old to @new (the L2 tables they point at). w->lock held. */
void qcow2_overlap_l1_changed(struct qcow2_image *img, uint64_t old, uint64_t new_e);
/* A refcount block now lies at @host_off. w->lock held, qcow2_overlap_reserve() done. */
void qcow2_overlap_add_refblock(struct qcow2_image *img, uint64_t host_off);
/* The first cluster of [@first, @first + @n) that holds live metadata, or UINT64_MAX. */
uint64_t qcow2_overlap_busy(struct qcow2_image *img, uint64_t first, uint64_t n);
/* The same for metadata of kinds other than @own; *@what (if not NULL) gets the name of what
 * lies there. Without a write side: UINT64_MAX. */
uint64_t qcow2_overlap_held(struct qcow2_image *img, uint64_t first, uint64_t n, unsigned own,
			    const char **what);
/* Before the first change of the active L2 table at @l2_off (@t, the whole table) in this
 * open: every entry's data lies outside live metadata, has a refcount, of 1 where COPIED says
 * the image owns it alone, and no cluster is named twice where one of the entries says COPIED.
 * Entries [@first, @first + @n), which the change rewrites, may lie in metadata (a write there
 * meets the guard, a hole drops them). Otherwise -EIO naming the entry, the corrupt bit set
 * and the image takes no more changes. Passed once, the table is not read again
 * (qcow2_overlap_table_checked()). w->lock held. */
int qcow2_overlap_check_table(struct qcow2_image *img, uint64_t l2_off, const uint64_t *t,
			      uint32_t first, uint32_t n);
/* The same for every active L2 table not checked yet (entries [@first, @first + @n) of the
 * one @l1_idx points at rewritten by the change), before the first change of an open: a change
 * anywhere (a new table, a refcount, the L1 table moved) may rewrite metadata that an entry of
 * any table names as data, or hand out a cluster with refcount 0 that one still uses. Once
 * every table passed, nothing more (until the L1 table is replaced). w->lock held. */
int qcow2_overlap_check_tables(struct qcow2_image *img, uint32_t l1_idx, uint32_t first,
			       uint32_t n);
/* How many entries of the table that L1 entry @i points at a change of @n entries of table
 * @l1_idx may rewrite though they lie in metadata: @n for that table if the image owns it
 * alone (COPIED), else 0 (it would be copied first, writing the L1 table, and the copy would
 * still name the old table as data). */
uint32_t qcow2_exempt(const struct qcow2_image *img, uint32_t i, uint32_t l1_idx, uint32_t n);
/* At a writable open, before a dirty image's refcounts are rebuilt (which rewrites refcount
 * blocks and COPIED flags): no entry of an active L2 table names live metadata as its data,
 * else -EUCLEAN naming it, nothing changed (the rebuild would change what the guest reads
 * there). */
int qcow2_overlap_check_meta(struct qcow2_image *img);
/* Has the table at @l2_off passed qcow2_overlap_check_table() (true without a write side)? */
bool qcow2_overlap_table_checked(struct qcow2_image *img, uint64_t l2_off);
/* 0 while the image takes changes, else -EROFS with the reason (read-only, marked corrupt). */
int qcow2_overlap_writable(const struct qcow2_image *img);

/* check.c: rebuild the refcounts of an image left dirty (lazy refcounts) before writing it. */
int qcow2_check_rebuild_dirty(struct qcow2_image *img);

/* image.c: qcow2_image_open() of a writable image for qcow2_image_repair(): accepted when
 * marked corrupt, and a dirty image keeps its dirty bit, unrebuilt, until the repair. */
int qcow2_image_open_repair_io(struct qcow2_io *io, const char *name,
			       const struct qcow2_image_opts *o, struct qcow2_image **out);

/* check.c, repair.c: one walk over an image's metadata as `qemu-img check` makes it (counts of
 * what points at each cluster, the problems found), and what a repair would rewrite. */
struct qcow2_fix {
	uint64_t table;    /* host offset of the active L2 table; the L1 index when @l1 */
	uint32_t idx;      /* entry index in the L2 table */
	bool l1;           /* an active L1 entry */
	bool move;         /* give it a cluster of its own: a copy of the one @entry points at (data
			    * lying in metadata), or zeros when @entry is 0 */
	uint64_t guest_off;
	uint64_t old, entry; /* the entry as found, and as it becomes (not for @move) */
	uint64_t bitmap;   /* extended L2: the subcluster bitmap it becomes */
	const char *why;
};

struct qcow2_scan {
	struct qcow2_image *img;
	const struct qcow2_check_opts *o; /* may be NULL */
	struct qcow2_check_result *res;
	bool quiet; /* no messages */
	bool plan;  /* record fixes for the active tables (repair.c) */
	bool skip_refs; /* leave the refcount table and blocks out of the counts (rebuild.c), and
			 * note in @outside what is pointed at past the end of the file */
	struct qcow2_crange *outside; /* clusters pointed at, not counted: past the file */
	size_t n_outside, cap_outside;
	bool oom; /* noting @outside ran out of memory */
	bool rebuild; /* the refcount structure is broken: a repair builds a new one elsewhere */
	uint64_t file_bytes;
	uint64_t n_file; /* clusters of the file */
	uint64_t n;      /* clusters counted: the file's and one past it (a partial last one) */
	uint64_t n_used; /* clusters up to the last one referenced */
	uint64_t ref_max;
	uint32_t *counts; /* references per cluster */
	uint8_t *meta;    /* bitmap of clusters holding metadata */
	uint64_t *l2s, *active_l2; /* sorted host offsets of all and of the active L2 tables */
	size_t n_l2s, n_active_l2;
	struct qcow2_fix *fixes;
	size_t n_fixes, cap_fixes;
	struct qcow2_crange *unref; /* references the rewritten entries lose */
	size_t n_unref, cap_unref;
	struct qcow2_crange *reref; /* references the rewritten entries gain */
	size_t n_reref, cap_reref;
	uint64_t *buf;    /* one cluster */
	uint8_t *rblock;  /* a refcount block (read-only images) */
	uint64_t rblock_ti;
	uint64_t done, total; /* progress, in clusters */
	uint64_t copied_shared; /* COPIED flags qcow2_check_copied() found set where the
				 * refcount is not 1 (real damage, unlike a missing one) */
};

/* check.c: set up @s for @img; then count (qcow2_check_count), compare with the refcounts
 * (qcow2_check_compare), check the COPIED flags (qcow2_check_copied). Results add to @s->res. */
int qcow2_check_init(struct qcow2_scan *s, struct qcow2_image *img,
		    const struct qcow2_check_opts *o, struct qcow2_check_result *res);
void qcow2_check_release(struct qcow2_scan *s);
int qcow2_check_count(struct qcow2_scan *s);
int qcow2_check_compare(struct qcow2_scan *s);
/* Check the COPIED flags of the active tables against the stored refcounts (@planned: against
 * the counts, skipping the entries a fix rewrites), reporting each mismatch as "@verb
 * OFLAG_COPIED ..." with message kind @kind. *@found gets their number. */
int qcow2_check_copied(struct qcow2_scan *s, bool planned, const char *verb,
		      enum qcow2_check_msg kind, uint64_t *found);
/* The stored refcount of cluster @idx (0 past the refcount table): 0, -errno, or 1 when its
 * refcount block cannot be read as QEMU cannot read it (misaligned, at an offset too large). */
int qcow2_check_refcount(struct qcow2_scan *s, uint64_t idx, uint64_t *v);
void qcow2_check_say(struct qcow2_scan *s, enum qcow2_check_msg kind, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Report @units more clusters of work done; -ECANCELED once the job is cancelled. */
int qcow2_check_step(struct qcow2_scan *s, uint64_t units);
/* What counting one reference did (check.c). */
enum qcow2_ref {
	QCOW2_REF_NONE,     /* nothing to count (unallocated, zero cluster, external data file) */
	QCOW2_REF_COUNTED,
	QCOW2_REF_OUTSIDE,  /* a cluster or more past the end of the file: not counted */
	QCOW2_REF_OVERFLOW, /* the refcount would exceed the refcount width: not counted */
};

/* One walk of an L2 table by a scan (check.c). */
struct qcow2_l2walk {
	uint64_t table; /* host offset */
	uint64_t guest; /* guest offset of entry 0 */
	bool active;    /* reached from the active L1 table: fragmentation info, fixes */
	bool fixable;   /* a well-formed active table: a repair rewrites its bad entries */
	bool dropped;   /* a repair drops the L1 entry: nothing reached from it stays counted */
	uint64_t next;  /* next contiguous host offset (fragmentation) */
};

/* check.c: whether cluster @cluster holds metadata. */
bool qcow2_check_is_meta(const struct qcow2_scan *s, uint64_t cluster);

/* repair.c, called by a planning scan (s->plan) as it walks: note the fix of L2 entry @j (@e,
 * subcluster bitmap @bm; @zero_why: why it must read as zeros; @ref: what counting its cluster
 * did), of a compressed entry (data at @host, @bytes), of active L1 entry @i; and leave a
 * reference just counted out of the planned counts. 0 or -ENOMEM. */
int qcow2_repair_plan_entry(struct qcow2_scan *s, struct qcow2_l2walk *w, uint32_t j, uint64_t e,
			    uint64_t bm, const char *zero_why, enum qcow2_ref ref);
int qcow2_repair_plan_compressed(struct qcow2_scan *s, struct qcow2_l2walk *w, uint32_t j,
				 uint64_t e, uint64_t bm, uint64_t host, uint64_t bytes);
int qcow2_repair_plan_l1(struct qcow2_scan *s, struct qcow2_l2walk *w, uint32_t i, uint64_t e,
			 enum qcow2_ref ref);
int qcow2_repair_unref(struct qcow2_scan *s, uint64_t off, uint64_t bytes);
/* repair.c: one pass of a repair (qcow2_image_repair(), verify.c): a planning scan (its
 * problems reported when @report_found, counted in @res), then the fixes applied (@dry_run:
 * reported). When the refcount structure itself is broken, *@rebuild is set and nothing is
 * applied: the caller rebuilds it first (rebuild.c). */
int qcow2_repair_pass(struct qcow2_image *img, const struct qcow2_check_opts *o, bool dry_run,
		      bool report_found, struct qcow2_check_result *res, bool *rebuild);

/* undo.c: from qcow2_undo_start() on, every write and hole punch through @io first saves what
 * it replaces, and every flush is noted; qcow2_undo_replay() puts it all back, newest first,
 * flushing where the run flushed, and truncates the file to its old length (durable when it
 * returns 0); qcow2_undo_free() stops and forgets. */
struct qcow2_undo;
/* rebuild.c: replace the refcount structure of @img (open for repair) by a new one built from
 * what points at each cluster, in fresh clusters past the end of the file, switched to with
 * one header write; the write side is then set up again on it. */
int qcow2_rebuild_refcounts(struct qcow2_image *img, const struct qcow2_check_opts *o);
int qcow2_undo_start(struct qcow2_io *io, struct qcow2_undo **out);
int qcow2_undo_replay(struct qcow2_undo *u);
void qcow2_undo_free(struct qcow2_undo *u);

/* repair.c: set the refcount of every cluster to its count in @s (only those lower with
 * @raise_only), and clear those past the counted ones: the rebuild of a dirty image and the
 * refcount steps of a repair. Each change is reported and counted in @s->res
 * (corruptions_fixed when raised, leaks_fixed when lowered). Writable image, w->lock not held;
 * nothing flushed. */
int qcow2_repair_set_refcounts(struct qcow2_scan *s, bool raise_only);
/* repair.c: the leak and COPIED part of a repair, and nothing else: refcounts above what points
 * at their cluster counted down to it, durable, then the COPIED flags set where a refcount is
 * now 1 (what an interrupted count-down leaves). Refused, changing nothing (-EUCLEAN), when a
 * check finds anything else wrong: a refcount below its references, a bad entry, a COPIED flag
 * on a shared cluster. @res: the check's counts before, leaks_fixed and corruptions_fixed (the
 * flags set; with @dry_run, what it would fix, changing nothing: any image). A writable
 * image no one else uses; no lock held. */
int qcow2_repair_leaks(struct qcow2_image *img, bool dry_run, struct qcow2_check_result *res);

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
/* Make chunks [@first, @last] unknown again (only pages that exist are touched). */
void qcow2_ownermap_forget(struct qcow2_ownermap *m, uint64_t first, uint64_t last);

#endif
