/* SPDX-License-Identifier: MIT */
/*
 * chain-read.c - reading a flat view: map, read and seek, each offset resolved layer by layer.
 *
 * An offset is resolved by the first layer (from the top) that has data or zeros for it; past
 * the end of a layer everything below reads as zeros. The owner map remembers, per chunk (the
 * smallest subcluster of the chain), which layer answered, so that a resolved chunk costs one
 * lookup whatever the depth. The first read of a page of the map fills the whole page layer by
 * layer (sweep()), at the cost of the layers' extents there rather than the depth per chunk. The top may be written through the chain (chain-write.c): after
 * each change the chunks it touched are forgotten (qcow2_chain_forget()).
 *
 * A snapshot view never shows another state's data. It shares write permission on its image, so
 * QEMU may delete the snapshot and reuse its clusters while the view is open. Rather than hold
 * the snapshot against deletion (QEMU's locks have no byte for one snapshot), every read, map
 * and seek re-validates the snapshot after doing its work: its table entry must be byte for
 * byte as it was at open, where it was or in the table that replaced it (a pin,
 * ondisk/snapshot.c), else the call fails with ESTALE. QEMU changes the table before it frees
 * any cluster of a deleted snapshot, so data that passes the check afterwards is the
 * snapshot's; a check before the work too saves reading what would be thrown away. Reads of a
 * deleted snapshot's view fail from then on.
 *
 * Locks: c->layers_rw shared by qcow2_chain_enter() (every call), before the top's w->frees;
 * c->owner_rw (owned here): shared by a walk that records owners, exclusive while the
 * chunks a change touched are forgotten, so no walk that began before a change can record a
 * stale owner after it. Reads, maps and seeks of a writable top run inside
 * qcow2_image_read_begin/end() (the top's w->frees shared, engine/locks.c), taken before
 * c->owner_rw; the pin's lock through qcow2_snapshot_pin_check().
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chain/chain.h"

#define OWNER_RECORD_MAX (4ull << 20)

/* A raw layer: data where the host file has data, zeros in its holes (qcow2_io_next_extent()). */
static void raw_map(struct qcow2_io *io, uint64_t off, uint64_t max, struct qcow2_extent *e)
{
	bool data;

	qcow2_io_next_extent(io, off, max, &e->len, &data);
	e->kind = data ? QCOW2_EXTENT_DATA : QCOW2_EXTENT_ZERO;
	e->io = io;
	e->host_off = off;
}

/* Map @off in layer @i. Returns 1 if @off lies past the layer's end (everything below reads
 * as zeros), else 0 or -errno. */
static int layer_map(struct qcow2_chain *c, unsigned i, uint64_t off, uint64_t max,
		     struct qcow2_extent *e)
{
	struct qcow2_chain_layer *l = &c->layers[i];
	int r = 0;

	if (off >= l->size)
		return 1;
	if (max > l->size - off)
		max = l->size - off;
	if (l->img) {
		r = qcow2_image_map(l->img, l->l1, off, max, e);
	} else {
		memset(e, 0, sizeof(*e));
		e->guest_off = off;
		raw_map(l->raw, off, max, e);
	}
	e->layer = (int)i;
	if (r == 0 && e->len == 0)
		r = qcow2_set_error(-EIO, "'%s': empty extent at %#" PRIx64, l->path, off);
	return r;
}

/* Resolve @off by walking the layers from layer @first down. */
static int walk_from(struct qcow2_chain *c, unsigned first, uint64_t off, uint64_t max,
		     struct qcow2_extent *e)
{
	uint64_t span = max;
	unsigned i;
	int r;

	for (i = first; i < c->n; i++) {
		r = layer_map(c, i, off, span, e);
		if (r < 0)
			return r;
		if (r == 1)
			break;
		if (e->kind != QCOW2_EXTENT_UNALLOCATED)
			return 0;
		span = e->len;
	}
	memset(e, 0, sizeof(*e));
	e->kind = QCOW2_EXTENT_UNALLOCATED;
	e->guest_off = off;
	e->len = span;
	e->layer = -1;
	return 0;
}

static int walk(struct qcow2_chain *c, uint64_t off, uint64_t max, struct qcow2_extent *e)
{
	return walk_from(c, 0, off, max, e);
}

static uint32_t owner_of(const struct qcow2_extent *e)
{
	return e->layer < 0 ? QCOW2_OWNER_NONE : (uint32_t)e->layer + 1;
}

/* Resolve the chunk holding @off by a walk from its start, and remember its owner. */
static int map_unknown(struct qcow2_chain *c, uint64_t off, uint64_t max, struct qcow2_extent *e)
{
	uint32_t bits = qcow2_ownermap_chunk_bits(c->owners);
	uint64_t base = off >> bits << bits, end, skip = off - base, idx, want;
	int r;

	/* Walk only the requested range: each layer then classifies a handful of entries, not a
	 * whole L2 table's worth, which is what keeps a first touch cheap on a deep chain. */
	want = ((skip + max + (1ull << bits) - 1) >> bits) << bits; /* whole chunks */
	if (want > c->size - base)
		want = c->size - base;
	pthread_rwlock_rdlock(&c->owner_rw);
	r = walk(c, base, want, e);
	if (r < 0 || e->len <= skip) {
		/* The answer ends before @off (a raw layer's extents can be finer than a chunk):
		 * it owns no chunk, and @off needs a walk of its own. */
		pthread_rwlock_unlock(&c->owner_rw);
		return r < 0 ? r : walk(c, off, max, e);
	}
	/* Remember at most a few MiB past @off: a seek across a huge sparse range must not fill
	 * the map with it. */
	end = base + e->len;
	if (end - off > OWNER_RECORD_MAX)
		end = off + OWNER_RECORD_MAX;
	for (idx = base >> bits; (idx + 1) << bits <= end || (end == c->size && idx << bits < end);
	     idx++)
		qcow2_ownermap_set(c->owners, idx, owner_of(e));
	pthread_rwlock_unlock(&c->owner_rw);
	e->guest_off = off;
	e->len -= skip;
	if (e->kind == QCOW2_EXTENT_DATA)
		e->host_off += skip;
	if (e->len > max)
		e->len = max;
	return 0;
}

/* A sweep's window (sweep()): chunks @first to @first + @n - 1, their states, how many are open. */
enum { SWEEP_OPEN, SWEEP_DECIDED, SWEEP_BLOCKED };
struct sweep_win {
	uint8_t *st;
	uint64_t first, n, open;
};

static void sweep_close(struct sweep_win *w, uint64_t idx, uint8_t state)
{
	if (idx - w->first < w->n && w->st[idx - w->first] == SWEEP_OPEN) {
		w->st[idx - w->first] = state;
		w->open--;
	}
}

/* Layer @owner (QCOW2_OWNER_NONE: no layer, zeros) answers [@start, @start + @len) of window @w:
 * every open chunk wholly inside is decided as @owner; an open chunk only partly inside (a raw
 * layer's extent, a layer's end off a chunk boundary) is blocked: the sweep leaves it unknown,
 * to be resolved by a walk of its own when read. */
static void sweep_mark(struct qcow2_chain *c, struct sweep_win *w, uint64_t start, uint64_t len,
		       uint32_t owner)
{
	uint32_t bits = qcow2_ownermap_chunk_bits(c->owners);
	uint64_t end = start + len, a = start >> bits, b = end >> bits, i;

	if (end == c->size && (end & ((1ull << bits) - 1)))
		b++; /* the disk's last chunk is short: covered when its end is reached */
	if (start & ((1ull << bits) - 1))
		sweep_close(w, a++, SWEEP_BLOCKED);
	for (i = a; i < b && i - w->first < w->n; i++)
		if (w->st[i - w->first] == SWEEP_OPEN) {
			sweep_close(w, i, SWEEP_DECIDED);
			qcow2_ownermap_set(c->owners, i, owner);
		}
	if (b >= a && b << bits < end) /* the chunk @end falls inside */
		sweep_close(w, b, SWEEP_BLOCKED);
}

/* Fill the owner map's page that holds @off layer by layer, once: each layer is mapped over
 * the window from the top down, and gives the chunks it has (data, zeros, compressed) that no
 * layer above had, until no chunk is left open. A walk per chunk costs the depth of the chain
 * at every first touch (1,000 layer lookups per read on a 1,000-layer chain); a sweep costs the
 * layers' extents in the window, once, after which every read of the window is one lookup.
 * Takes c->owner_rw shared for the whole sweep, like a walk: a change of the top forgets its
 * chunks after it, never under it. Best effort: when a layer cannot be mapped (a damaged
 * table), the chunks not yet decided stay unknown and are walked one by one when read, so a
 * read fails only where the damaged layer is reached, as without the sweep. */
static void sweep(struct qcow2_chain *c, uint64_t off)
{
	uint32_t bits = qcow2_ownermap_chunk_bits(c->owners);
	uint64_t first = (off >> bits) >> QCOW2_OWNERMAP_PAGE_BITS << QCOW2_OWNERMAP_PAGE_BITS;
	uint64_t ws = first << bits, we, limit, pos, i;
	struct sweep_win w = {.first = first};
	unsigned li;
	int r = 0;

	if (qcow2_ownermap_swept(c->owners, off >> bits))
		return;
	we = ws + ((uint64_t)1 << (QCOW2_OWNERMAP_PAGE_BITS + bits));
	if (we > c->size || we < ws)
		we = c->size;
	w.n = w.open = ((we - ws) + (1ull << bits) - 1) >> bits;
	w.st = calloc(w.n, 1);
	if (!w.st)
		return;
	limit = we; /* below a layer's end, the layers under it are not consulted */
	pthread_rwlock_rdlock(&c->owner_rw);
	for (li = 0; li < c->n && limit > ws && w.open && r == 0; li++) {
		struct qcow2_chain_layer *l = &c->layers[li];
		uint64_t lend = l->size < limit ? l->size : limit;
		struct qcow2_extent e;

		for (pos = ws; pos < lend && r == 0; pos += e.len) {
			r = layer_map(c, li, pos, lend - pos, &e);
			if (r == 0 && e.kind != QCOW2_EXTENT_UNALLOCATED)
				sweep_mark(c, &w, pos, e.len, li + 1);
		}
		if (r == 0 && lend < limit) {
			if (lend < ws)
				lend = ws;
			sweep_mark(c, &w, lend, limit - lend, QCOW2_OWNER_NONE);
			limit = lend;
		}
	}
	if (r == 0) /* no layer has what is still open: a hole */
		for (i = 0; i < w.n; i++)
			if (w.st[i] == SWEEP_OPEN && ((first + i) << bits) < limit)
				qcow2_ownermap_set(c->owners, first + i, QCOW2_OWNER_NONE);
	qcow2_ownermap_set_swept(c->owners, first);
	pthread_rwlock_unlock(&c->owner_rw);
	free(w.st);
}

static int chain_map(struct qcow2_chain *c, uint64_t off, uint64_t max, struct qcow2_extent *e)
{
	uint32_t bits, owner;
	uint64_t limit;
	int r;

	if (off >= c->size)
		return qcow2_set_error(-EINVAL, "offset %#" PRIx64 " past the end of the disk",
				       off);
	if (max > c->size - off)
		max = c->size - off;
	if (!c->owners)
		return walk(c, off, max, e);
	bits = qcow2_ownermap_chunk_bits(c->owners);
	owner = qcow2_ownermap_get(c->owners, off >> bits);
	if (owner == QCOW2_OWNER_UNKNOWN && !qcow2_ownermap_swept(c->owners, off >> bits)) {
		sweep(c, off);
		owner = qcow2_ownermap_get(c->owners, off >> bits);
	}
	if (owner == QCOW2_OWNER_UNKNOWN)
		return map_unknown(c, off, max, e);
	if (owner == QCOW2_OWNER_NONE) {
		memset(e, 0, sizeof(*e));
		e->kind = QCOW2_EXTENT_UNALLOCATED;
		e->guest_off = off;
		e->layer = -1;
		e->len = max;
	} else {
		r = layer_map(c, owner - 1, off, max, e);
		if (r != 0)
			return r < 0 ? r : walk(c, off, max, e);
	}
	/* Extend over following chunks with the same owner, no further. */
	limit = ((off >> bits) + 1) << bits;
	while (limit < off + e->len && qcow2_ownermap_get(c->owners, limit >> bits) == owner)
		limit += 1ull << bits;
	if (e->len > limit - off)
		e->len = limit - off;
	return 0;
}

/* Read the bytes extent @e describes (at flat offset @off) into @p. */
static int read_extent(struct qcow2_chain *c, const struct qcow2_extent *e, uint64_t off,
		       uint8_t *p)
{
	size_t len = (size_t)e->len;

	if (e->kind == QCOW2_EXTENT_DATA && c->layers[e->layer].img) {
		/* decrypted with that layer's own key, if it is encrypted (image/crypt.c) */
		return qcow2_image_read_data(c->layers[e->layer].img, p, len, e->host_off, off);
	} else if (e->kind == QCOW2_EXTENT_DATA) {
		ssize_t got = qcow2_io_pread(e->io, p, len, e->host_off);
		if (got < 0)
			return (int)got;
		memset(p + got, 0, len - (size_t)got); /* data past EOF reads as zeros */
	} else if (e->kind == QCOW2_EXTENT_COMPRESSED) {
		struct qcow2_image *img = c->layers[e->layer].img;
		return qcow2_image_read_compressed(img, e, off & (img->cluster_bytes - 1), p, len);
	} else {
		memset(p, 0, len);
	}
	return 0;
}

/* A snapshot view: is the snapshot still there, unchanged? 0 or -ESTALE (or -EIO). */
static int pin_check(struct qcow2_chain *c)
{
	return c->pinned ? qcow2_snapshot_pin_check(&c->pin) : 0; /* its message names the file */
}

/* A writable top is read under qcow2_image_read_begin() (w->frees shared): no cluster is freed
 * under a read. */
void qcow2_chain_enter(struct qcow2_chain *c)
{
	struct qcow2_image *top;

	/* the layer array first: the top read under it stays the top until the leave */
	pthread_rwlock_rdlock(&c->layers_rw);
	top = c->layers[0].img;
	if (top)
		qcow2_image_read_begin(top);
}

void qcow2_chain_leave(struct qcow2_chain *c)
{
	struct qcow2_image *top = c->layers[0].img;

	if (top)
		qcow2_image_read_end(top);
	pthread_rwlock_unlock(&c->layers_rw);
}

int qcow2_chain_map(struct qcow2_chain *c, uint64_t off, uint64_t max, struct qcow2_extent *e)
{
	int r;

	qcow2_chain_enter(c);
	r = pin_check(c);
	if (r == 0)
		r = chain_map(c, off, max, e);
	if (r == 0)
		r = pin_check(c);
	qcow2_chain_leave(c);
	return r;
}

int qcow2_chain_read_in(struct qcow2_chain *c, void *buf, size_t n, uint64_t off)
{
	uint8_t *p = buf;
	int r = 0;

	while (n && r == 0) {
		struct qcow2_extent e;

		r = chain_map(c, off, n, &e);
		if (r == 0)
			r = read_extent(c, &e, off, p);
		if (r < 0)
			break;
		p += e.len;
		off += e.len;
		n -= (size_t)e.len;
	}
	return r;
}

int qcow2_chain_pread(struct qcow2_chain *c, void *buf, size_t n, uint64_t off)
{
	int r = 0;

	qcow2_chain_enter(c);
	if (off > c->size || n > c->size - off)
		r = qcow2_set_error(-EINVAL, "read past the end of the disk");
	if (r == 0)
		r = pin_check(c);
	if (r == 0)
		r = qcow2_chain_read_in(c, buf, n, off);
	if (r == 0)
		r = pin_check(c); /* after the data: what passes is the snapshot's (see above) */
	qcow2_chain_leave(c);
	return r;
}

/* The pieces of one read being gathered (qcow2_chain_read_pieces()). */
struct pieces {
	struct qcow2_read_piece *v;
	unsigned n, cap;
	uint8_t *scratch; /* @len bytes, allocated at the first piece that needs memory */
	size_t len;
	uint64_t off; /* the read's first flat offset: scratch[x] is the byte at off + x */
};

static int piece_add(struct pieces *ps, int fd, uint64_t fd_off, const void *mem, size_t len)
{
	struct qcow2_read_piece *last = ps->n ? &ps->v[ps->n - 1] : NULL;

	/* one file run or one stretch of scratch: one piece (a 1 MiB read of contiguous clusters
	 * is one splice) */
	if (last && fd >= 0 && last->fd == fd && last->fd_off + last->len == fd_off) {
		last->len += len;
		return 0;
	}
	if (last && fd < 0 && last->fd < 0 && (const uint8_t *)last->mem + last->len == mem) {
		last->len += len;
		return 0;
	}
	if (ps->n == ps->cap) {
		unsigned cap = ps->cap ? ps->cap * 2 : 16;
		struct qcow2_read_piece *v = realloc(ps->v, cap * sizeof(*v));
		if (!v)
			return qcow2_oom();
		ps->v = v;
		ps->cap = cap;
	}
	ps->v[ps->n++] =
	    (struct qcow2_read_piece){.fd = fd, .fd_off = fd_off, .mem = mem, .len = len};
	return 0;
}

/* The scratch bytes for flat offset @off (the buffer allocated on first use). */
static uint8_t *scratch_at(struct pieces *ps, uint64_t off)
{
	if (!ps->scratch) {
		ps->scratch = malloc(ps->len);
		if (!ps->scratch)
			return NULL;
	}
	return ps->scratch + (off - ps->off);
}

/* The file that holds extent @e's bytes as they are (a plain run), or -1 when they must be
 * decoded or made (zeros, compressed, encrypted, a memory io). */
static int plain_fd(struct qcow2_chain *c, const struct qcow2_extent *e)
{
	struct qcow2_image *img;

	if (e->kind != QCOW2_EXTENT_DATA || !e->io)
		return -1;
	img = c->layers[e->layer].img;
	if (img && qcow2_image_encrypted(img))
		return -1;
	/* only where a file's size is its contents: a /sys or /proc file (a hostile raw backing
	 * file) claims more than it holds, and a splice from it would end the reply early: a
	 * short read the kernel takes for the end of the view (read_extent() zero-fills instead) */
	if (!qcow2_fd_on_local_disk(qcow2_io_fd(e->io)))
		return -1;
	return qcow2_io_fd(e->io);
}

/* Add extent @e (at flat offset @off) to @ps: a file range where its bytes are plain, up to the
 * file's end (data past it reads as zeros, as read_extent() does), else decoded into scratch. */
static int add_extent(struct qcow2_chain *c, struct pieces *ps, const struct qcow2_extent *e,
		      uint64_t off)
{
	int fd = plain_fd(c, e);
	uint64_t len = e->len, in_file = len;
	uint8_t *p;
	struct stat st;

	if (fd >= 0) {
		if (fstat(fd, &st) < 0)
			return qcow2_set_error(-errno, "'%s': stat failed: %s",
					       c->layers[e->layer].path, strerror(errno));
		if ((uint64_t)st.st_size <= e->host_off)
			in_file = 0;
		else if ((uint64_t)st.st_size - e->host_off < len)
			in_file = (uint64_t)st.st_size - e->host_off;
		if (in_file) {
			int r = piece_add(ps, fd, e->host_off, NULL, (size_t)in_file);
			if (r < 0 || in_file == len)
				return r;
		}
		p = scratch_at(ps, off + in_file);
		if (!p)
			return qcow2_oom();
		memset(p, 0, (size_t)(len - in_file));
		return piece_add(ps, -1, 0, p, (size_t)(len - in_file));
	}
	p = scratch_at(ps, off);
	if (!p)
		return qcow2_oom();
	if (e->kind == QCOW2_EXTENT_DATA || e->kind == QCOW2_EXTENT_COMPRESSED) {
		int r = read_extent(c, e, off, p);
		if (r < 0)
			return r;
	} else {
		memset(p, 0, (size_t)len);
	}
	return piece_add(ps, -1, 0, p, (size_t)len);
}

/* Locking: the whole call, @deliver included, runs inside qcow2_chain_enter() (the top's
 * w->frees shared), as qcow2_chain_pread() does: no cluster a piece points into is freed and
 * reused until @deliver has sent its bytes. A snapshot view is read through scratch (its pin is
 * checked after the data, before anything is delivered: see the top of this file). */
int qcow2_chain_read_pieces(struct qcow2_chain *c, size_t n, uint64_t off,
			    qcow2_read_deliver deliver, void *ctx)
{
	struct pieces ps = {.len = n, .off = off};
	uint64_t pos = off;
	int r = 0;

	qcow2_chain_enter(c);
	if (off > c->size || n > c->size - off)
		r = qcow2_set_error(-EINVAL, "read past the end of the disk");
	if (r == 0 && n && c->pinned) {
		uint8_t *p = scratch_at(&ps, off);
		r = p ? pin_check(c) : qcow2_oom();
		if (r == 0)
			r = qcow2_chain_read_in(c, p, n, off);
		if (r == 0)
			r = pin_check(c); /* after the data: what passes is the snapshot's */
		if (r == 0)
			r = piece_add(&ps, -1, 0, p, n);
		pos = off + n;
	}
	while (r == 0 && pos < off + n) {
		struct qcow2_extent e;

		r = chain_map(c, pos, off + n - pos, &e);
		if (r < 0)
			break;
		r = add_extent(c, &ps, &e, pos);
		pos += e.len;
	}
	if (r == 0)
		r = deliver(ctx, ps.v, ps.n);
	qcow2_chain_leave(c);
	free(ps.v);
	free(ps.scratch);
	return r;
}

static int chain_seek(struct qcow2_chain *c, uint64_t off, int whence, uint64_t *result);

int qcow2_chain_seek(struct qcow2_chain *c, uint64_t off, int whence, uint64_t *result)
{
	int r;

	qcow2_chain_enter(c);
	r = pin_check(c);
	if (r == 0)
		r = chain_seek(c, off, whence, result);
	if (r == 0 || r == -ENXIO) {
		int p = pin_check(c);
		r = p < 0 ? p : r;
	}
	qcow2_chain_leave(c);
	return r;
}

static int chain_seek(struct qcow2_chain *c, uint64_t off, int whence, uint64_t *result)
{
	struct qcow2_extent e;
	int r;

	if (whence != SEEK_DATA && whence != SEEK_HOLE)
		return qcow2_set_error(-EINVAL, "bad whence %d", whence);
	while (off < c->size) {
		bool data;

		r = chain_map(c, off, c->size - off, &e);
		if (r < 0)
			return r;
		data = e.kind == QCOW2_EXTENT_DATA || e.kind == QCOW2_EXTENT_COMPRESSED;
		if (data == (whence == SEEK_DATA)) {
			*result = off;
			return 0;
		}
		off += e.len;
	}
	if (whence == SEEK_HOLE) {
		*result = c->size;
		return 0;
	}
	return -ENXIO;
}

/* What the layers below the top show at [@off, @off + @n): copy-on-write's source. */
int qcow2_chain_read_below(void *ctx, void *buf, size_t n, uint64_t off)
{
	struct qcow2_chain *c = ctx;
	uint8_t *p = buf;
	int r;

	while (n) {
		struct qcow2_extent e;

		if (off >= c->size) {
			memset(p, 0, n);
			return 0;
		}
		r = walk_from(c, 1, off, n < c->size - off ? n : c->size - off, &e);
		if (r == 0)
			r = read_extent(c, &e, off, p);
		if (r < 0)
			return r;
		p += e.len;
		off += e.len;
		n -= (size_t)e.len;
	}
	return 0;
}

/* The top changed over [@off, @off + @n): owners recorded there are stale. */
void qcow2_chain_forget(struct qcow2_chain *c, uint64_t off, uint64_t n)
{
	uint32_t bits;

	if (c->dirty && n) /* an active commit copies these again (jobs/live.c) */
		qcow2_chain_dirty_mark(c, off, n);
	if (!c->owners || !n)
		return;
	bits = qcow2_ownermap_chunk_bits(c->owners);
	pthread_rwlock_wrlock(&c->owner_rw);
	qcow2_ownermap_forget(c->owners, off >> bits, (off + n - 1) >> bits);
	pthread_rwlock_unlock(&c->owner_rw);
}
