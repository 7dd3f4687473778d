/* SPDX-License-Identifier: MIT */
/*
 * chain.h - a chain of images as one flat view (chain.c, chain-read.c, chain-write.c), and the
 * owner map of its chunks (ownermap.c). Above integrity (docs/design.md).
 */
#ifndef QCOW2_CHAIN_H
#define QCOW2_CHAIN_H

#include "integrity/integrity.h"

/* ownermap.c: which chain layer provides each chunk of the flat view; filled lazily. */
struct qcow2_ownermap;
#define QCOW2_OWNER_UNKNOWN 0u
#define QCOW2_OWNER_NONE    0xffffffffu
/* The most memory the pages of one map hold (ownermap.c): past it, chunks are not recorded. */
#define QCOW2_OWNERMAP_BUDGET (8u << 20)
int qcow2_ownermap_new(uint64_t size, uint32_t chunk_bits, struct qcow2_ownermap **out);
/* The bytes its pages hold now (at most QCOW2_OWNERMAP_BUDGET). */
size_t qcow2_ownermap_bytes(const struct qcow2_ownermap *m);
void qcow2_ownermap_free(struct qcow2_ownermap *m);
/* Owner of chunk @idx: QCOW2_OWNER_UNKNOWN, QCOW2_OWNER_NONE, or layer + 1. Lock-free. */
uint32_t qcow2_ownermap_get(const struct qcow2_ownermap *m, uint64_t idx);
void qcow2_ownermap_set(struct qcow2_ownermap *m, uint64_t idx, uint32_t owner);
uint32_t qcow2_ownermap_chunk_bits(const struct qcow2_ownermap *m);
/* Make chunks [@first, @last] unknown again (only pages that exist are touched). */
void qcow2_ownermap_forget(struct qcow2_ownermap *m, uint64_t first, uint64_t last);
/* The map's entries come in pages of 2^QCOW2_OWNERMAP_PAGE_BITS chunks; a page is "swept" once
 * chain-read.c has filled it layer by layer (it never is again: chunks forgotten later are
 * resolved one at a time). Lock-free. */
#define QCOW2_OWNERMAP_PAGE_BITS 8
bool qcow2_ownermap_swept(const struct qcow2_ownermap *m, uint64_t idx);
void qcow2_ownermap_set_swept(struct qcow2_ownermap *m, uint64_t idx);

/* ---- the chain (chain.c opens and closes it, chain-read.c reads it, chain-write.c writes its
 * top) ---- */

struct qcow2_chain_layer {
	char *path;
	struct qcow2_image *img; /* NULL for raw */
	struct qcow2_io *raw;
	const struct qcow2_l1 *l1; /* NULL: the active table */
	uint64_t size;
	dev_t dev;
	ino_t ino;
};

struct qcow2_chain {
	struct qcow2_chain_layer *layers;
	unsigned n;
	unsigned cap;
	uint64_t size;		       /* changes only under the top's w->frees, exclusive */
	struct qcow2_ownermap *owners; /* NULL: walk every time; replaced under w->frees excl. */
	pthread_rwlock_t owner_rw;     /* chain-read.c's: the owner map's entries */
	/* An encrypted top is written by whole sectors: a write that covers part of a sector
	 * reads the rest and writes the whole one, holding this exclusive; every other change
	 * of such a top holds it shared (chain-write.c), so no change lands between the read
	 * and the write. Taken before the top's w->frees. */
	pthread_rwlock_t sector_rw;
	/* The layer array (layers, n, cap, every layer's image and path) and the owner map's
	 * replacement at a layer change (chain/live.c): shared by every call on the chain
	 * (qcow2_chain_enter(), before the top's w->frees), exclusive while a live job changes
	 * the layers, so no request sees a half-moved layer. Writer-preferring. */
	pthread_rwlock_t layers_rw;
	/* Active commit: the top's writes are tracked at 2^dirty_shift bytes per bit (set
	 * atomically by every change of the top, in qcow2_chain_forget(); the array is set and
	 * taken away with layers_rw exclusive). NULL: not tracked. */
	uint64_t *dirty;
	uint64_t dirty_units;
	uint32_t dirty_shift;
	bool live_job; /* a live job runs (jobs/live.c; atomic): one at a time */
	bool write_locked;
	bool pinned;		       /* a snapshot view: every call checks the pin */
	struct qcow2_snapshot_pin pin; /* its own lock */
};

/* chain-read.c: a call on the chain begins and ends: a writable top's clusters are not freed
 * in between (qcow2_image_read_begin/end(): its w->frees shared). */
void qcow2_chain_enter(struct qcow2_chain *c);
void qcow2_chain_leave(struct qcow2_chain *c);
/* chain-read.c: what the layers below the top show at [@off, @off + @n) of @ctx (the chain),
 * zeros past the end: copy-on-write's source (a qcow2_fill reader). 0 or -errno. */
int qcow2_chain_read_below(void *ctx, void *buf, size_t n, uint64_t off);
/* chain-read.c: read @n bytes at @off of the flat view, inside qcow2_chain_enter() (not a
 * snapshot view: no pin check). 0 or -errno. */
int qcow2_chain_read_in(struct qcow2_chain *c, void *buf, size_t n, uint64_t off);
/* chain-read.c: the top changed over [@off, @off + @n): the owners recorded there are stale
 * (takes c->owner_rw exclusive; not with the top's w->lock held). */
void qcow2_chain_forget(struct qcow2_chain *c, uint64_t off, uint64_t n);

/* chain.c: (re)make the owner map for the layers the chain has now. 0 or -ENOMEM. */
int qcow2_chain_setup_owners(struct qcow2_chain *c);
/* live.c: create c->layers_rw (writer-preferring). */
void qcow2_chain_layers_rw_init(struct qcow2_chain *c);
/* live.c: layer changes of an open chain, between requests (layers_rw exclusive). */
void qcow2_chain_layers_begin(struct qcow2_chain *c);
void qcow2_chain_layers_end(struct qcow2_chain *c);
/* With layers_rw exclusive: @img (writable, opened at the canonical @path) becomes the top,
 * the old top its first backing layer. 0 or -ENOMEM (nothing changed). */
int qcow2_chain_push_top_locked(struct qcow2_chain *c, const char *path, struct qcow2_image *img);
/* With layers_rw exclusive: layers [@first, @first + @count) leave the chain (closed). */
void qcow2_chain_remove_layers_locked(struct qcow2_chain *c, unsigned first, unsigned count);
/* With layers_rw exclusive: layer @idx's image is @img from now on (the old one is closed). */
void qcow2_chain_replace_layer_locked(struct qcow2_chain *c, unsigned idx, struct qcow2_image *img);
/* With layers_rw exclusive: the owner map forgotten whole (layer numbers changed). */
int qcow2_chain_owners_reset_locked(struct qcow2_chain *c);
/* With layers_rw exclusive: start (@on) or stop tracking the top's changes. 0 or -ENOMEM. */
int qcow2_chain_track_locked(struct qcow2_chain *c, bool on, uint32_t shift);
/* Take the tracked units from @from on: the first dirty unit at or after @from is cleared and
 * returned (in *@unit); 0 when found, 1 when none. Inside qcow2_chain_enter() or with
 * layers_rw exclusive. */
int qcow2_chain_dirty_take(struct qcow2_chain *c, uint64_t from, uint64_t *unit);
/* live.c: the top changed over [@off, @off + @n): mark it for an active commit (atomic). */
void qcow2_chain_dirty_mark(struct qcow2_chain *c, uint64_t off, uint64_t n);
/* How many units are dirty now (inside qcow2_chain_enter() or layers_rw exclusive). */
uint64_t qcow2_chain_dirty_count(struct qcow2_chain *c);

#endif
