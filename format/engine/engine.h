/* SPDX-License-Identifier: MIT */
/*
 * engine.h - the write side of one image: allocation, writes, the write order of flushes, the
 * header writer, preallocation, compression, overlap checks, the refcount walk shared by the
 * check, the dirty rebuild and the repair, and the public open and close. Above image.
 * The locks and their order are written down in docs/design.md ("Locks and their order").
 */
#ifndef QCOW2_ENGINE_H
#define QCOW2_ENGINE_H

#include "image/image.h"

/* ---- refcount.c, refcache.c: the refcounts of the write side (w->lock held) ---- */
int qcow2_refcount_init_write(struct qcow2_image *img);
void qcow2_refcount_release_write(struct qcow2_image *img);
/* The write side set up again on the refcount structure the header names now (a repair that
 * rebuilt it elsewhere and switched to it), the file @file_bytes long. w->lock held. */
int qcow2_refcount_reload_write(struct qcow2_image *img, uint64_t file_bytes);
/* Allocate @n contiguous clusters (refcount 0 -> 1); *@host_off is the first one's offset. */
int qcow2_refcount_alloc(struct qcow2_image *img, uint64_t n, uint64_t *host_off);
/* Give back clusters allocated by qcow2_refcount_alloc() that nothing points to yet. */
void qcow2_refcount_unalloc(struct qcow2_image *img, uint64_t host_off, uint64_t n);
/* Set the refcount of cluster @idx (write side). */
int qcow2_refcount_set_w(struct qcow2_image *img, uint64_t idx, uint64_t v);
/* Refcount of cluster @idx as the write side sees it (cached blocks, refcache.c). */
int qcow2_refcount_get_w(struct qcow2_image *img, uint64_t idx, uint64_t *v);
/* The same without filling the write side's cache: a cached block where there is one, else the
 * file's, read through @c (the overlap checks at open). */
int qcow2_refcount_peek(struct qcow2_image *img, uint64_t idx, struct qcow2_refcount_cursor *c,
			uint64_t *v);
/* refcache.c: the cached refcount block of table index @ti (*@out), loaded on first use; NULL
 * (and 0) if the table has no block there. */
int qcow2_refcount_block_w(struct qcow2_image *img, uint64_t ti, uint8_t **out);
/* Is any cached refcount block changed since the last flush (an allocation dirties its
 * block)? Takes w->lock. */
bool qcow2_refcount_any_dirty(struct qcow2_image *img);
/* Queue a count-down of the clusters covering [@host_off, @host_off + @bytes), applied after
 * the next flush. */
int qcow2_refcount_defer_free(struct qcow2_image *img, uint64_t host_off, uint64_t bytes);
/* Flush stages: write dirty refcount blocks (stage 1); refcount table entries, or the moved
 * table and its header fields (stage 2, with its own syncs). Each returns 1 if it wrote. */
int qcow2_refcount_write_blocks(struct qcow2_image *img);
int qcow2_refcount_write_table(struct qcow2_image *img);
/* Apply the first @n deferred count-downs (those the last flush unlinked). */
int qcow2_refcount_apply_frees(struct qcow2_image *img, size_t n);

/* header-write.c: header fields the write side rewrites (size, L1, refcount table, features). */
int qcow2_image_write_header(struct qcow2_image *img);
/* flush.c: the write-back stages, each durable before the next (w->lock held). */
int qcow2_image_flush_locked(struct qcow2_image *img);
/* header-write.c: before the first change: the bitmaps loaded and in use (bitmaps.c), other
 * autoclear bits cleared, the lazy dirty bit set, durable (w->lock held). */
int qcow2_image_begin_write(struct qcow2_image *img);
/* header-write.c: the header's bitmaps extension made to name the directory of @nb entries,
 * @dir_bytes at @dir_off (@nb 0: no extension), durable, with the bitmaps' autoclear bit set
 * (@nb > 0). The directory must be durable already. w->lock held. */
int qcow2_image_write_bitmaps_ext(struct qcow2_image *img, uint32_t nb, uint64_t dir_bytes,
				  uint64_t dir_off);

/* ---- bitmaps.c: persistent dirty bitmaps kept valid by writes ---- */
/* A bitmap of the directory as the write side keeps it. */
struct qcow2_wbitmap {
	struct qcow2_bitmap e; /* its entry (e.name owned); the flags a clean close stores */
	uint8_t *bits;	       /* loaded bits (QEMU's order), or NULL: its table is kept */
	uint64_t nbits;
	bool track; /* enabled and consistent: guest changes set its bits */
};
/* At the first change (w->lock held): the directory decoded strictly, enabled bitmaps' bits
 * loaded, the in-use flags written, durable. -EUCLEAN (one line) when QEMU would refuse to load
 * them: the image is not written. Nothing without bitmaps in force. */
int qcow2_bitmaps_begin(struct qcow2_image *img);
/* Set the bits covering guest [@off, @off + @n) in every tracked bitmap (atomic; w->frees held
 * shared or w->lock; after qcow2_image_begin_write()). */
void qcow2_bitmaps_mark(struct qcow2_image *img, uint64_t off, uint64_t n);
/* The virtual size becomes @new_size (w->lock and w->frees exclusive; before img->h.size
 * changes): every consistent bitmap resized, the new bits clear, as QEMU resizes them. */
int qcow2_bitmaps_resize(struct qcow2_image *img, uint64_t new_size);
/* A clean close: the loaded bitmaps stored (new clusters, new directory, in-use flags cleared)
 * in crash-safe order. Takes w->lock. */
int qcow2_bitmaps_close(struct qcow2_image *img);
/* Free what the write side holds of the bitmaps. */
void qcow2_bitmaps_release(struct qcow2_image *img);
void qcow2_bitmaps_free_w(struct qcow2_wbitmap *v, uint32_t n);

/* ---- locks.c: the locks of the write side ----
 * Every lock, what it guards and the order they are taken in: docs/design.md, "Locks and their
 * order" (w->frees -> w->lock -> img->snap_lock -> the L2 cache's and the overlap structure's
 * locks, leaves). These are the only ways to take w->frees and w->lock. */
/* w->frees shared: no cluster is freed (and reused) under a read or an in-place write of the
 * image's clusters. A no-op on a read-only image. */
void qcow2_image_read_begin(struct qcow2_image *img);
void qcow2_image_read_end(struct qcow2_image *img);
/* w->frees exclusive: no read or write of the image's clusters runs (the virtual size or the
 * L1 array changes, deferred frees are applied, a snapshot operation). Writable image. */
void qcow2_image_exclusive_begin(struct qcow2_image *img);
void qcow2_image_exclusive_end(struct qcow2_image *img);
/* w->lock, the image's metadata lock: allocation, L1/L2/refcount changes, write-back.
 * Writable image. */
void qcow2_image_meta_lock(struct qcow2_image *img);
void qcow2_image_meta_unlock(struct qcow2_image *img);
/* The in-flight table (docs/design.md, "Parallel first writes"): guest clusters a write pass
 * is changing while it writes their data with w->lock dropped. A pass enters its range with
 * w->lock held, after waiting (w->lock dropped meanwhile) until no other entry overlaps it, and
 * leaves it with w->lock held, which wakes those waiting. @first and @n are guest cluster
 * indexes. The entry lives in the caller's memory until it leaves. */
struct qcow2_inflight {
	uint64_t first, n;
	struct qcow2_inflight *next; /* under w->lock */
};
void qcow2_write_inflight_enter(struct qcow2_image *img, struct qcow2_inflight *f, uint64_t first,
				uint64_t n);
void qcow2_write_inflight_leave(struct qcow2_image *img, struct qcow2_inflight *f);
/* Wait (w->lock held, dropped while waiting) until no pass has guest clusters
 * [@first, @first + @n) in flight: before a change of their entries outside a pass. */
void qcow2_write_inflight_wait(struct qcow2_image *img, uint64_t first, uint64_t n);
/* A pass writes data with w->lock dropped between begin and end (both called with it held). */
void qcow2_write_io_begin(struct qcow2_image *img);
void qcow2_write_io_end(struct qcow2_image *img);
/* Wait (w->lock held, dropped while waiting) until no pass writes data unlocked: before the
 * image file's length is set (ftruncate), which must not cut off a write past the old end. The
 * caller must have queued no frees it has not stored yet (a flush may run meanwhile). */
void qcow2_write_quiesce(struct qcow2_image *img);
/* Set up and tear down both (open.c, while the image is not shared). */
struct qcow2_wstate;
void qcow2_wstate_locks_init(struct qcow2_wstate *w);
void qcow2_wstate_locks_destroy(struct qcow2_wstate *w);

/*
 * The write side of an image (open.c, flush.c, refcount.c, write.c), present when it was
 * opened writable. Every field is under @lock, the image's metadata lock, except @frees, @ol,
 * @corrupt and @data_dirty (atomic: in-place writes set it holding only w->frees shared).
 *
 * Write order (crash safety; written here, once): metadata is cached and written back by
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
	uint8_t **blocks; /* refcount blocks by table index, on-disk encoding, loaded lazily */
	bool *block_dirty;
	bool *reft_dirty;  /* refcount table entries to write back */
	uint32_t n_blocks; /* entries of @blocks, == refs.n */
	bool reft_moved;   /* the refcount table was reallocated: write it whole, then header */
	struct qcow2_crange old_reft;
	uint64_t free_hint;    /* no free cluster below this index */
	uint32_t l1_lo, l1_hi; /* dirty L1 entries [lo, hi) */
	bool l1_moved;
	struct qcow2_crange old_l1;
	bool header_dirty;
	struct qcow2_crange *pending; /* to count down after the next flush */
	size_t n_pending, cap_pending;
	bool ready;	 /* opened completely: closing may write back */
	bool began;	 /* autoclear bits cleared, lazy dirty bit set (set atomically, release) */
	bool set_dirty;	 /* we set the dirty bit and must clear it on a clean close */
	bool data_dirty; /* guest data written since the last flush */
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
	/* bitmaps.c: the persistent bitmaps, loaded by the first change (@bm_loaded): set up
	 * under @lock before @began is published, replaced only with @frees exclusive; the bits
	 * of tracked ones set atomically by writers holding @frees shared. */
	struct qcow2_wbitmap *bm;
	uint32_t n_bm;
	bool bm_loaded;
	bool bm_marked;	   /* a guest change set bits (atomic) */
	bool bm_replacing; /* qcow2_image_bitmaps_store() runs its first change */
	/* locks.c: the in-flight table of write passes (under @lock), the passes writing data
	 * with @lock dropped (@n_io, under @lock), and the condition both wait on (with @lock) */
	struct qcow2_inflight *inflight;
	uint32_t n_io;
	pthread_cond_t inflight_cv;
};

/* write.c: the write side of one image. The caller (chain-write.c) holds w->frees shared around
 * writes and zeroing (qcow2_image_read_begin()), and exclusive around qcow2_image_grow()
 * (qcow2_image_exclusive_begin()). @fill reads what the layers
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
/* Make whole units of [@off, @off + @n) unallocated (partial units are left, except the last
 * one of the disk); the persistent bitmaps are not marked (an overlay emptied after a commit,
 * whose chain shows the same, as QEMU's bdrv_make_empty()). */
int qcow2_image_unmap(struct qcow2_image *img, uint64_t off, uint64_t n);
/* write.c's internals shared with zero.c: the clusters one pass handles at most (within one L2
 * table); a pass @run under w->lock (the tables checked, the first change made durable, the
 * bitmaps marked if @guest_change, then a flush if the caches are full), returning the bytes
 * it handled; what entry @e pointed at counted down after the next flush; the whole cluster
 * of guest @guest_cl rewritten into a new one (old content plus [@in, @in + @len) of @data,
 * NULL: none), @ent updated; a flush if the caches are full (w->lock held). */
#define QCOW2_WRITE_MAX_RUN 256
typedef ssize_t (*qcow2_write_run_fn)(struct qcow2_image *img, const uint8_t *buf, size_t n,
				      uint64_t off, const struct qcow2_fill *fill);
ssize_t qcow2_write_locked_run(struct qcow2_image *img, qcow2_write_run_fn run, const uint8_t *buf,
			       size_t n, uint64_t off, const struct qcow2_fill *fill,
			       bool guest_change);
int qcow2_write_release_entry(struct qcow2_image *img, uint64_t e);
int qcow2_write_rewrite_cluster(struct qcow2_image *img, uint64_t guest_cl, uint64_t *ent,
				uint64_t in, size_t len, const uint8_t *data,
				const struct qcow2_fill *fill);
int qcow2_write_relieve(struct qcow2_image *img);
/* Point guest cluster @guest_cl at L2 entry @ent (1 or 2 words), counting down what it pointed
 * at. w->lock held, qcow2_image_begin_write() done. */
int qcow2_write_set_entry(struct qcow2_image *img, uint64_t guest_cl, const uint64_t *ent);
/* compress.c: write guest cluster @guest_off (aligned) from the whole cluster in @buf (zeros
 * past the disk's end), compressed where that saves space, else as a normal write. */
int qcow2_image_write_compressed(struct qcow2_image *img, const void *buf, uint64_t guest_off);
/* The compression of that write alone, which takes no lock (any thread, many at once): the
 * whole cluster @buf compressed into @out (a cluster's bytes) with the image's compression
 * type. Returns the compressed length, 0 when compressing saves no sector, or -errno. */
ssize_t qcow2_image_compress(const struct qcow2_image *img, const void *buf, void *out);
/* qcow2_image_write_compressed() of @buf compressed ahead into @comp (@len bytes, from
 * qcow2_image_compress(); 0: @buf is written as a normal write). */
int qcow2_image_write_precompressed(struct qcow2_image *img, const void *buf, const void *comp,
				    size_t len, uint64_t guest_off);
/* write-table.c: the tables a change rewrites. Active L1 entry @i (an atomic load: no lock). */
uint64_t qcow2_write_l1_get(const struct qcow2_image *img, uint32_t i);
/* Change active L1 entry @i to @v; the next flush writes it back. w->lock held. */
void qcow2_write_l1_set(struct qcow2_image *img, uint32_t i, uint64_t v);
/* qcow2_l2cache_modify() of the table at @l2_off, writing every cached table back first when
 * all of them are dirty (-ENOMEM "L2 cache too small" if that is not enough). w->lock held. */
int qcow2_write_l2_modify(struct qcow2_image *img, uint64_t l2_off, const uint64_t *init,
			  uint32_t word, uint32_t n, const uint64_t *words);
/* Clusters of [@off, @off + @n) up to the end of their L2 table, at most @max. */
uint32_t qcow2_write_run_clusters(const struct qcow2_image *img, uint64_t off, uint64_t n,
				  uint32_t max);
/* The @k entries (@k from qcow2_write_run_clusters()) from guest @off's on into @ents, from
 * the L2 table checked, made the image's own and pinned for writing at *@l2_off. w->lock
 * held. */
int qcow2_write_load_run(struct qcow2_image *img, uint64_t off, uint32_t k, uint64_t *ents,
			 uint64_t *l2_off);
/* Set the COPIED flags of the active L1 and L2 tables from the refcounts (refcount 1: set),
 * as a repair after the refcounts were rebuilt. w->lock held. */
int qcow2_write_fix_copied(struct qcow2_image *img);
/* grow.c: grow the virtual size (L1 table moved if it must grow); shrinking is -EINVAL. */
int qcow2_image_grow(struct qcow2_image *img, uint64_t new_size);
/* version.c: rewrite the header of @img as @nh (a copy of img->h with another version and
 * feature bits), the whole header cluster in one durable write; img->h is then @nh as
 * decoded. -ENOTSUP for header extensions the rewrite would drop. */
int qcow2_image_set_version(struct qcow2_image *img, const struct qcow2_header *nh);
/* grow.c: may @img shrink to @new_size? Refused as QEMU refuses it (a version 2 image with
 * internal snapshots) and where a smaller size would make metadata wrong (persistent bitmaps
 * in force). 0, -EINVAL, -ENOTSUP. */
int qcow2_image_shrink_check(struct qcow2_image *img, uint64_t new_size);
/* grow.c: set the virtual size to the smaller @new_size (the header's size, durable); the
 * caller has unmapped what lies past it. */
int qcow2_image_shrink(struct qcow2_image *img, uint64_t new_size);
/* Write back every cached change in crash-safe order and make it durable, then count down
 * the clusters that the flushed metadata no longer uses. Takes w->frees itself: the caller
 * must not hold it. */
int qcow2_image_flush(struct qcow2_image *img);
bool qcow2_image_writable(const struct qcow2_image *img);
/* open.c: end the write side of @img and keep it open for reading (a chain's top that becomes
 * a backing layer): everything written back, durable, as a clean close does (bitmaps stored,
 * dirty bit cleared). The caller holds no lock of @img and no request uses it meanwhile. 0 or
 * -errno (the write side is then kept). */
int qcow2_image_end_write(struct qcow2_image *img);

/* prealloc.c (write.c's preallocation, w->lock held). Can the cluster with entry @ent (1 or 2
 * words) be preallocated without a copy: nothing there yet, and what it shows stays the same
 * once allocated (zeros with nothing below; with extended L2, anything below)? */
bool qcow2_prealloc_only(const struct qcow2_image *img, const uint64_t *ent, bool backing);
/* Preallocate clusters [@i, @j) of a run whose entries are @ents, each qcow2_prealloc_only():
 * one allocation, no data written; the entries point at the new clusters (with extended L2,
 * every subcluster unallocated, as QEMU preallocates). */
int qcow2_prealloc_clusters(struct qcow2_image *img, uint64_t *ents, uint32_t i, uint32_t j);

/* overlap.c: the live metadata of a writable image (every host write is checked against it,
 * so that a write never makes a damaged image worse), as QEMU's overlap checks keep it: the
 * header, the active L1 table and the L2 tables it points at, the refcount table and blocks,
 * the snapshot table and the snapshots' L1 tables, and while the bitmaps are in force the
 * bitmap directory and tables. Every write of img->io is checked against it (the io guard); an
 * overlap fails the write with -EIO, sets the corrupt bit on disk and leaves the image
 * read-only. The allocator never hands out a cluster it holds, whatever its refcount says.
 * Locking: its own rwlock, a leaf: shared by the check of every write (in-place writes hold no
 * w->lock), exclusive by updates (under w->lock). */
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
/* The bitmap directory changed (bitmaps.c): its tables read again, the ranges recomputed.
 * w->lock held. */
int qcow2_overlap_reload_bitmaps(struct qcow2_image *img);
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
/* overlap-tables.c: before the first change of the active L2 table at @l2_off (@t, the whole
 * table) in this open: every entry's data lies outside live metadata, has a refcount, of 1
 * where COPIED says the image owns it alone, and no cluster is named twice where one of the
 * entries says COPIED.
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
/* overlap.c, for overlap-tables.c: the table at @l2_off passed (w->lock held); every active
 * table passed (true without a write side, under w->lock), and now they all have. */
void qcow2_overlap_set_checked(struct qcow2_image *img, uint64_t l2_off);
bool qcow2_overlap_all_checked(const struct qcow2_image *img);
void qcow2_overlap_set_all_checked(struct qcow2_image *img);
/* A change was refused: the image takes no more changes, and the first refusal sets the
 * corrupt bit on disk (version 3). */
void qcow2_overlap_refused(struct qcow2_image *img);
/* 0 while the image takes changes, else -EROFS with the reason (read-only, marked corrupt). */
int qcow2_overlap_writable(const struct qcow2_image *img);

/* recount.c: rebuild the refcounts of an image left dirty (lazy refcounts) before writing it. */
int qcow2_rebuild_dirty(struct qcow2_image *img);

/* open.c: qcow2_image_open_path() past the resolution: the image at the canonical @path (a
 * chain's layers, whose paths the chain resolves), opened with qcow2_io_open() @flags
 * (QCOW2_OPEN_WRITE: writable; QCOW2_OPEN_BLOCKDEV) and no symlink followed; with @o->lock
 * locked as a reader sharing @shared (with @o->repair: QEMU's writer lock). */
int qcow2_image_open_canonical(const char *path, const struct qcow2_chain_opts *o, unsigned flags,
			       unsigned shared, struct qcow2_image **out);

/* ---- walk.c: one walk over an image's metadata as `qemu-img check` makes it (counts of what
 * points at each cluster, the problems found), shared by the check, the dirty rebuild and the
 * repair; and what a repair would rewrite, asked of its visitor (struct qcow2_walk_fixes). */
struct qcow2_fix {
	uint64_t table; /* host offset of the active L2 table; the L1 index when @l1 */
	uint32_t idx;	/* entry index in the L2 table */
	bool l1;	/* an active L1 entry */
	bool move;	/* give it a cluster of its own: a copy of the one @entry points at (data
			    * lying in metadata), or zeros when @entry is 0 */
	uint64_t guest_off;
	uint64_t old, entry; /* the entry as found, and as it becomes (not for @move) */
	uint64_t bitmap;     /* extended L2: the subcluster bitmap it becomes */
	const char *why;
};

struct qcow2_scan {
	struct qcow2_image *img;
	const struct qcow2_check_opts *o; /* may be NULL */
	struct qcow2_check_result *res;
	bool quiet;			    /* no messages */
	bool plan;			    /* record fixes for the active tables (repair.c) */
	const struct qcow2_walk_fixes *fix; /* with @plan: the planners asked (NULL: none) */
	bool skip_refs; /* leave the refcount table and blocks out of the counts (rebuild.c), and
			 * note in @outside what is pointed at past the end of the file */
	struct qcow2_crange *outside; /* clusters pointed at, not counted: past the file */
	size_t n_outside, cap_outside;
	bool oom;     /* noting @outside ran out of memory */
	bool rebuild; /* the refcount structure is broken: a repair builds a new one elsewhere */
	uint64_t file_bytes;
	uint64_t n_file; /* clusters of the file */
	uint64_t n;	 /* clusters counted: the file's and one past it (a partial last one) */
	uint64_t n_used; /* clusters up to the last one referenced */
	uint64_t ref_max;
	uint32_t *counts;	   /* references per cluster */
	uint8_t *meta;		   /* bitmap of clusters holding metadata */
	uint64_t *l2s, *active_l2; /* sorted host offsets of all and of the active L2 tables */
	size_t n_l2s, n_active_l2;
	struct qcow2_fix *fixes;
	size_t n_fixes, cap_fixes;
	struct qcow2_crange *unref; /* references the rewritten entries lose */
	size_t n_unref, cap_unref;
	struct qcow2_crange *reref; /* references the rewritten entries gain */
	size_t n_reref, cap_reref;
	uint64_t *buf;	 /* one cluster */
	uint8_t *rblock; /* a refcount block (read-only images) */
	uint64_t rblock_ti;
	uint64_t done, total;	/* progress, in clusters */
	uint64_t copied_shared; /* COPIED flags qcow2_check_copied() found set where the
				 * refcount is not 1 (real damage, unlike a missing one) */
};

/* Set up @s for @img; then count (qcow2_walk_count); the check then compares with the refcounts
 * and checks the COPIED flags (integrity/check.c). Results add to @s->res. */
int qcow2_walk_init(struct qcow2_scan *s, struct qcow2_image *img, const struct qcow2_check_opts *o,
		    struct qcow2_check_result *res);
void qcow2_walk_release(struct qcow2_scan *s);
int qcow2_walk_count(struct qcow2_scan *s);
/* The stored refcount of cluster @idx (0 past the refcount table): 0, -errno, or 1 when its
 * refcount block cannot be read as QEMU cannot read it (misaligned, at an offset too large). */
int qcow2_walk_refcount(struct qcow2_scan *s, uint64_t idx, uint64_t *v);
/* The L2 table at @off into s->buf, in host order (a writable image's from its cache). */
int qcow2_walk_read_l2(struct qcow2_scan *s, uint64_t off);
void qcow2_walk_say(struct qcow2_scan *s, enum qcow2_check_msg kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Cluster @i's refcount @was is (or would be) set to @now, its reference count: counted as a
 * corruption fixed (raised) or a leak fixed (lowered) and said as qemu-img says it. */
void qcow2_walk_fixed(struct qcow2_scan *s, uint64_t i, uint64_t was, uint64_t now);
/* Report @units more clusters of work done; -ECANCELED once the job is cancelled. */
int qcow2_walk_step(struct qcow2_scan *s, uint64_t units);
/* What counting one reference did. */
enum qcow2_ref {
	QCOW2_REF_NONE, /* nothing to count (unallocated, zero cluster, external data file) */
	QCOW2_REF_COUNTED,
	QCOW2_REF_OUTSIDE,  /* a cluster or more past the end of the file: not counted */
	QCOW2_REF_OVERFLOW, /* the refcount would exceed the refcount width: not counted */
};

/* One walk of an L2 table by a scan. */
struct qcow2_l2walk {
	uint64_t table; /* host offset */
	uint64_t guest; /* guest offset of entry 0 */
	bool active;	/* reached from the active L1 table: fragmentation info, fixes */
	bool fixable;	/* a well-formed active table: a repair rewrites its bad entries */
	bool dropped;	/* a repair drops the L1 entry: nothing reached from it stays counted */
	uint64_t next;	/* next contiguous host offset (fragmentation) */
};

/* Whether cluster @cluster holds metadata. */
bool qcow2_walk_is_meta(const struct qcow2_scan *s, uint64_t cluster);

/* The visitor of a planning walk (s->plan, s->fix; the repair's planners, integrity/repair.c):
 * called as it walks to note the fix of L2 entry @j (@e, subcluster bitmap @bm; @zero_why: why
 * it must read as zeros; @ref: what counting its cluster did), of a compressed entry (data at
 * @host, @bytes), of active L1 entry @i; and to leave a reference just counted out of the
 * planned counts (@unref). Each returns 0 or -ENOMEM. A lower layer reaches the repair only
 * through this table. */
struct qcow2_walk_fixes {
	int (*entry)(struct qcow2_scan *s, struct qcow2_l2walk *w, uint32_t j, uint64_t e,
		     uint64_t bm, const char *zero_why, enum qcow2_ref ref);
	int (*compressed)(struct qcow2_scan *s, struct qcow2_l2walk *w, uint32_t j, uint64_t e,
			  uint64_t bm, uint64_t host, uint64_t bytes);
	int (*l1)(struct qcow2_scan *s, struct qcow2_l2walk *w, uint32_t i, uint64_t e,
		  enum qcow2_ref ref);
	int (*unref)(struct qcow2_scan *s, uint64_t off, uint64_t bytes);
};

/* recount.c: set the refcount of every cluster to its count in @s (QCOW2_RECOUNT_ALL), only
 * those lower (RAISE) or only those higher (LOWER, the leaks); ALL and LOWER also clear those
 * past the counted ones: the rebuild of a dirty image and the refcount steps of a repair. Each
 * change is reported and counted in @s->res (corruptions_fixed when raised, leaks_fixed when
 * lowered). Writable image, w->lock not held; nothing flushed. */
enum qcow2_recount { QCOW2_RECOUNT_ALL, QCOW2_RECOUNT_RAISE, QCOW2_RECOUNT_LOWER };
int qcow2_walk_set_refcounts(struct qcow2_scan *s, enum qcow2_recount how);

#endif
