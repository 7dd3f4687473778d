/* SPDX-License-Identifier: MIT */
/*
 * chain.c - a flat view: the top layer and its backing layers, resolved cluster by cluster.
 *
 * Opening walks the backing names from the top: each name is resolved relative to the
 * directory of the image naming it, must stay below the allowed directories, and must not
 * repeat a file already in the chain (loops). The top is confined the same way (a symlink in
 * SOURCE to an image elsewhere is no way out), no name is resolved through the daemon's own
 * mount point (path.c), and every file is opened by qcow2_file_open(): regular files only
 * (the top may be a block device where the caller allows it), never a blocking open. Layers
 * are qcow2 images, opened as every image opened by path is (qcow2_image_open_canonical(),
 * engine/open.c), or raw files.
 *
 * Reading: an offset is resolved by the first layer (from the top) that has data or zeros for
 * it; past the end of a layer everything below reads as zeros. The owner map remembers, per
 * chunk (the smallest subcluster of the chain), which layer answered, so that a resolved chunk
 * costs one lookup whatever the depth. Backing layers are immutable while the chain is open
 * (locked against writers). The top may be written through this chain: after each change the
 * chunks it touched are forgotten (owner_rw held exclusive), while a walk that records owners
 * holds owner_rw shared, so no walk that began before a change can record a stale owner after
 * it. Reads, writes and seeks of a writable top hold its w->frees shared (write.c).
 *
 * A snapshot view never shows another state's data. It shares write permission on its image, so
 * QEMU may delete the snapshot and reuse its clusters while the view is open. Rather than hold the
 * snapshot against deletion (QEMU's locks have no byte for one snapshot), every read, map and
 * seek re-validates the snapshot after doing its work: its table entry must be byte for byte
 * as it was at open, where it was or in the table that replaced it (a pin, snapshot.c), else
 * the call fails with ESTALE. QEMU changes the table before it frees any cluster of a deleted snapshot, so data
 * that passes the check afterwards is the snapshot's; a check before the work too saves
 * reading what would be thrown away. Reads of a deleted snapshot's view fail from then on.
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

#include "chain/chain.h"

#define OWNER_RECORD_MAX (4ull << 20)

struct layer {
	char *path;
	struct qcow2_image *img; /* NULL for raw */
	struct qcow2_io *raw;
	const struct qcow2_l1 *l1; /* NULL: the active table */
	uint64_t size;
	dev_t dev;
	ino_t ino;
};

struct qcow2_chain {
	struct layer *layers;
	unsigned n;
	unsigned cap;
	uint64_t size;                 /* changes only under the top's w->frees, exclusive */
	struct qcow2_ownermap *owners; /* NULL: walk every time */
	pthread_rwlock_t owner_rw;
	bool write_locked;
	bool pinned;		       /* a snapshot view: every call checks the pin */
	struct qcow2_snapshot_pin pin; /* its own lock */
};

static int add_layer(struct qcow2_chain *c, const char *path)
{
	struct layer *l;

	if (c->n == c->cap) {
		unsigned cap = c->cap ? 2 * c->cap : 8;
		struct layer *n = realloc(c->layers, cap * sizeof(*n));
		if (!n)
			return qcow2_oom();
		c->layers = n;
		c->cap = cap;
	}
	l = &c->layers[c->n];
	memset(l, 0, sizeof(*l));
	l->path = strdup(path);
	if (!l->path)
		return qcow2_oom();
	c->n++;
	return 0;
}

/* The open flags of a chain's file at the canonical @path: layer @idx (0: the top). */
static unsigned layer_flags(const struct qcow2_chain_opts *o, unsigned idx, bool writable)
{
	unsigned f = QCOW2_OPEN_NOFOLLOW;

	if (writable)
		f |= QCOW2_OPEN_WRITE;
	if (idx == 0 && o && o->top_blockdev)
		f |= QCOW2_OPEN_BLOCKDEV;
	return f;
}

/* Open the file of the newest layer as @fmt ("qcow2", "raw" or "" to probe). */
static int open_layer_file(struct qcow2_chain *c, const struct qcow2_chain_opts *o,
			   const char *fmt)
{
	struct layer *l = &c->layers[c->n - 1];
	struct qcow2_io *io;
	bool is_qcow2;
	int r;

	if (fmt[0] && strcmp(fmt, "qcow2") != 0 && strcmp(fmt, "raw") != 0)
		return qcow2_set_error(-ENOTSUP, "'%s': backing format '%s' not supported",
				       c->layers[c->n - 2].path, fmt);
	if (strcmp(fmt, "qcow2") != 0) {
		r = qcow2_io_open(l->path, layer_flags(o, c->n - 1, false), &io);
		if (r < 0)
			return r;
		r = qcow2_header_probe(io, &is_qcow2, NULL);
		if (r == 0 && (strcmp(fmt, "raw") == 0 || !is_qcow2)) {
			l->raw = io;
			r = o && o->lock ? qcow2_io_lock_reader(io) : 0;
			return r < 0 ? r : qcow2_io_size(io, &l->size);
		}
		qcow2_io_close(io);
		if (r < 0)
			return r;
	}
	if (c->n == 1 && o && (o->writable || o->share_write))
		r = qcow2_image_open_canonical(l->path, o,
					       layer_flags(o, 0, o->writable && !o->snapshot),
					       o->share_write ? QCOW2_PERM_ALL : QCOW2_READER_SHARED,
					       &l->img);
	else
		r = qcow2_image_open_canonical(l->path, o, layer_flags(o, c->n - 1, false),
					       QCOW2_READER_SHARED, &l->img);
	if (r < 0)
		return r;
	l->size = qcow2_guest_bytes(l->img->h.size);
	return 0;
}

/* The identity of the newest layer, from its open descriptor (the file actually read). */
static int note_identity(struct qcow2_chain *c)
{
	struct layer *l = &c->layers[c->n - 1];
	struct qcow2_io *io = l->img ? l->img->io : l->raw;
	struct stat st;

	if (fstat(qcow2_io_fd(io), &st) < 0)
		return qcow2_set_error(-errno, "'%s': %s", l->path, strerror(errno));
	l->dev = st.st_dev;
	l->ino = st.st_ino;
	return 0;
}

static int check_loop(const struct qcow2_chain *c)
{
	const struct layer *l = &c->layers[c->n - 1];
	unsigned i;

	for (i = 0; i + 1 < c->n; i++)
		if (c->layers[i].dev == l->dev && c->layers[i].ino == l->ino)
			return qcow2_set_error(-ELOOP, "'%s': backing chain loops back to '%s'",
					       c->layers[c->n - 2].path, l->path);
	return 0;
}

static int open_top_snapshot(struct qcow2_chain *c, const char *snapshot)
{
	struct layer *l = &c->layers[0];
	int idx, r;

	if (!l->img)
		return qcow2_set_error(-EINVAL, "'%s': raw files have no snapshots", l->path);
	idx = qcow2_image_find_snapshot(l->img, snapshot);
	if (idx < 0)
		return idx;
	r = qcow2_image_snapshot_l1(l->img, (uint32_t)idx, &l->l1);
	if (r < 0)
		return r;
	l->size = l->l1->size;
	r = qcow2_snapshot_pin_init(&c->pin, l->img->io, &l->img->h, &l->img->snaps[idx]);
	if (r < 0)
		return qcow2_error_prefix(r, l->path);
	c->pinned = true;
	return 0;
}

static int open_layers(struct qcow2_chain *c, const char *path, const struct qcow2_chain_opts *o)
{
	unsigned max_depth = o && o->max_depth ? o->max_depth : QCOW2_DEFAULT_MAX_DEPTH;
	char next[PATH_MAX], fmt[32] = "";
	int r;

	r = qcow2_chain_resolve_top(o, path, next, sizeof(next));
	if (r < 0)
		return r;
	for (;;) {
		const struct qcow2_header *h;

		if (c->n >= max_depth)
			return qcow2_set_error(-ELOOP, "'%s': backing chain deeper than %u layers",
					       path, max_depth);
		r = add_layer(c, next);
		if (r == 0)
			r = open_layer_file(c, o, fmt);
		if (r == 0)
			r = note_identity(c);
		if (r == 0)
			r = check_loop(c);
		if (r < 0)
			return r;
		if (c->n == 1 && o && o->snapshot && (r = open_top_snapshot(c, o->snapshot)) < 0)
			return r;
		if (!c->layers[c->n - 1].img)
			return 0;
		h = &c->layers[c->n - 1].img->h;
		if (!h->backing_file[0])
			return 0;
		snprintf(fmt, sizeof(fmt), "%s", h->backing_fmt);
		r = qcow2_chain_resolve_path(o, c->layers[c->n - 1].path, h->backing_file, next,
					     sizeof(next));
		if (r < 0)
			return r;
	}
}

static int setup_owners(struct qcow2_chain *c)
{
	uint32_t bits = QCOW2_MAX_CLUSTER_BITS;
	unsigned i;

	if (c->n < 2)
		return 0; /* a single layer answers in one lookup anyway */
	for (i = 0; i < c->n; i++)
		if (c->layers[i].img && c->layers[i].img->sc_bits < bits)
			bits = c->layers[i].img->sc_bits;
	return qcow2_ownermap_new(c->size, bits, &c->owners);
}

int qcow2_chain_open(const char *path, const struct qcow2_chain_opts *o, struct qcow2_chain **out)
{
	struct qcow2_chain *c = calloc(1, sizeof(*c));
	int r;

	if (!c)
		return qcow2_oom();
	pthread_rwlock_init(&c->owner_rw, NULL);
	r = open_layers(c, path, o);
	if (r == 0) {
		c->size = c->layers[0].size;
		r = setup_owners(c);
	}
	if (r < 0) {
		qcow2_chain_close(c);
		return r;
	}
	*out = c;
	return 0;
}

void qcow2_chain_close(struct qcow2_chain *c)
{
	unsigned i;

	if (!c)
		return;
	for (i = 0; i < c->n; i++) {
		qcow2_image_close(c->layers[i].img);
		qcow2_io_close(c->layers[i].raw);
		free(c->layers[i].path);
	}
	if (c->pinned)
		qcow2_snapshot_pin_release(&c->pin);
	qcow2_ownermap_free(c->owners);
	pthread_rwlock_destroy(&c->owner_rw);
	free(c->layers);
	free(c);
}

uint64_t qcow2_chain_size(const struct qcow2_chain *c)
{
	return c->size;
}

unsigned qcow2_chain_depth(const struct qcow2_chain *c)
{
	return c->n;
}

int qcow2_chain_layer(const struct qcow2_chain *c, unsigned idx, struct qcow2_layer_info *out)
{
	const struct layer *l;

	if (idx >= c->n)
		return qcow2_set_error(-ENOENT, "no layer %u", idx);
	l = &c->layers[idx];
	out->path = l->path;
	out->format = l->img ? "qcow2" : "raw";
	out->size = l->size;
	out->image = l->img;
	out->io = l->img ? l->img->io : l->raw;
	return 0;
}

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
	struct layer *l = &c->layers[i];
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

static int chain_map(struct qcow2_chain *c, uint64_t off, uint64_t max, struct qcow2_extent *e)
{
	uint32_t bits, owner;
	uint64_t limit;
	int r;

	if (off >= c->size)
		return qcow2_set_error(-EINVAL, "offset %#" PRIx64 " past the end of the disk", off);
	if (max > c->size - off)
		max = c->size - off;
	if (!c->owners)
		return walk(c, off, max, e);
	bits = qcow2_ownermap_chunk_bits(c->owners);
	owner = qcow2_ownermap_get(c->owners, off >> bits);
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

	if (e->kind == QCOW2_EXTENT_DATA) {
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
static void enter(struct qcow2_chain *c)
{
	struct qcow2_image *top = c->layers[0].img;

	if (top)
		qcow2_image_read_begin(top);
}

static void leave(struct qcow2_chain *c)
{
	struct qcow2_image *top = c->layers[0].img;

	if (top)
		qcow2_image_read_end(top);
}

int qcow2_chain_map(struct qcow2_chain *c, uint64_t off, uint64_t max, struct qcow2_extent *e)
{
	int r;

	enter(c);
	r = pin_check(c);
	if (r == 0)
		r = chain_map(c, off, max, e);
	if (r == 0)
		r = pin_check(c);
	leave(c);
	return r;
}

int qcow2_chain_pread(struct qcow2_chain *c, void *buf, size_t n, uint64_t off)
{
	uint8_t *p = buf;
	int r = 0;

	enter(c);
	if (off > c->size || n > c->size - off)
		r = qcow2_set_error(-EINVAL, "read past the end of the disk");
	if (r == 0)
		r = pin_check(c);
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
	if (r == 0)
		r = pin_check(c); /* after the data: what passes is the snapshot's (see above) */
	leave(c);
	return r;
}

static int chain_seek(struct qcow2_chain *c, uint64_t off, int whence, uint64_t *result);

int qcow2_chain_seek(struct qcow2_chain *c, uint64_t off, int whence, uint64_t *result)
{
	int r;

	enter(c);
	r = pin_check(c);
	if (r == 0)
		r = chain_seek(c, off, whence, result);
	if (r == 0 || r == -ENXIO) {
		int p = pin_check(c);
		r = p < 0 ? p : r;
	}
	leave(c);
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

int qcow2_chain_allocated_bytes(struct qcow2_chain *c, uint64_t *bytes)
{
	uint64_t sum = 0, b;
	unsigned i;
	int r;

	for (i = 0; i < c->n; i++) {
		struct layer *l = &c->layers[i];
		struct qcow2_io *io = l->img ? l->img->io : l->raw;

		r = qcow2_io_allocated(io, &b);
		if (r < 0)
			return r;
		sum += b;
		if (l->img && l->img->data_io != l->img->io) {
			r = qcow2_io_allocated(l->img->data_io, &b);
			if (r < 0)
				return r;
			sum += b;
		}
	}
	*bytes = sum;
	return 0;
}

/* ---- writing ---- */

static struct qcow2_image *writable_top(const struct qcow2_chain *c)
{
	struct qcow2_image *top = c->layers[0].img;

	return top && top->w ? top : NULL;
}

bool qcow2_chain_writable(const struct qcow2_chain *c)
{
	const struct qcow2_image *top = writable_top(c);

	return top && qcow2_image_writable(top); /* not once a write found it damaged */
}

/* What the layers below the top show at [@off, @off + @n): copy-on-write's source. */
static int read_below(void *ctx, void *buf, size_t n, uint64_t off)
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
static void forget(struct qcow2_chain *c, uint64_t off, uint64_t n)
{
	uint32_t bits;

	if (!c->owners || !n)
		return;
	bits = qcow2_ownermap_chunk_bits(c->owners);
	pthread_rwlock_wrlock(&c->owner_rw);
	qcow2_ownermap_forget(c->owners, off >> bits, (off + n - 1) >> bits);
	pthread_rwlock_unlock(&c->owner_rw);
}

static int not_writable(const struct qcow2_chain *c)
{
	return qcow2_set_error(-EROFS, "'%s' is open read-only", c->layers[0].path);
}

/* A change of the top over [@off, @off + @n): a write of @buf, an allocation (@buf NULL,
 * @zero false), a zeroing or an unmapping. */
static int change(struct qcow2_chain *c, const void *buf, uint64_t n, uint64_t off, bool zero,
		  bool unmap)
{
	struct qcow2_image *top = writable_top(c);
	struct qcow2_fill fill = { read_below, c, c->n > 1 };
	int r;

	if (!top)
		return not_writable(c);
	enter(c);
	if (off > c->size || n > c->size - off)
		r = qcow2_set_error(-EFBIG, "'%s': range past the end of the disk",
				    c->layers[0].path);
	else if (zero && unmap)
		r = qcow2_image_unmap(top, off, n);
	else if (zero)
		r = qcow2_image_zero(top, off, n, &fill);
	else
		r = qcow2_image_write(top, buf, (size_t)n, off, &fill);
	forget(c, off, n);
	leave(c);
	return r;
}

int qcow2_chain_pwrite(struct qcow2_chain *c, const void *buf, size_t n, uint64_t off)
{
	return change(c, buf, n, off, false, false);
}

int qcow2_chain_zero(struct qcow2_chain *c, uint64_t off, uint64_t n, unsigned flags)
{
	return change(c, NULL, n, off, !(flags & QCOW2_ZERO_ALLOCATE), flags & QCOW2_ZERO_UNMAP);
}

int qcow2_chain_write_compressed(struct qcow2_chain *c, const void *buf, uint64_t off)
{
	struct qcow2_image *top = writable_top(c);
	int r;

	if (!top)
		return not_writable(c);
	enter(c);
	r = qcow2_image_write_compressed(top, buf, off);
	forget(c, off, top->cluster_bytes);
	leave(c);
	return r;
}

bool qcow2_chain_allocated_since_flush(struct qcow2_chain *c)
{
	struct qcow2_image *top = writable_top(c);

	return top && qcow2_refcount_any_dirty(top);
}

int qcow2_chain_flush(struct qcow2_chain *c)
{
	struct qcow2_image *top = writable_top(c);

	return top ? qcow2_image_flush(top) : 0;
}

static int grow_top(struct qcow2_chain *c, struct qcow2_image *top, uint64_t new_size);

int qcow2_chain_grow(struct qcow2_chain *c, uint64_t new_size)
{
	struct qcow2_image *top = writable_top(c);
	uint64_t old_size, below;
	int r;

	if (!top)
		return not_writable(c);
	old_size = c->size;
	r = grow_top(c, top, new_size);
	/* The new range reads as zeros, as QEMU makes it, not as what a longer backing file has
	 * there (a crash before this is durable leaves a valid image showing that data). */
	below = c->n > 1 ? c->layers[1].size : 0;
	if (below > new_size)
		below = new_size;
	if (r == 0 && below > old_size)
		r = qcow2_chain_zero(c, old_size, below - old_size, 0);
	return r == 0 ? qcow2_chain_flush(c) : r;
}

/* Grow the top's virtual size, with no read or write running meanwhile. */
static int grow_top(struct qcow2_chain *c, struct qcow2_image *top, uint64_t new_size)
{
	struct qcow2_ownermap *m = NULL;
	int r;

	qcow2_image_exclusive_begin(top); /* no read or write runs while the size changes */
	r = qcow2_image_grow(top, new_size);
	if (r == 0 && c->owners && new_size != c->size) {
		r = qcow2_ownermap_new(new_size, qcow2_ownermap_chunk_bits(c->owners), &m);
		if (r == 0) {
			qcow2_ownermap_free(c->owners);
			c->owners = m;
		}
	}
	if (r == 0) {
		c->size = new_size;
		c->layers[0].size = new_size;
	}
	qcow2_image_exclusive_end(top);
	return r;
}

int qcow2_chain_lock_write(struct qcow2_chain *c, bool on)
{
	struct qcow2_image *top = writable_top(c);
	int r;

	if (!top)
		return not_writable(c);
	if (on == c->write_locked)
		return 0;
	if (on) {
		/* QEMU's writer (as a reader we already did not share write and resize) */
		r = qcow2_io_lock_writer(top->io);
	} else {
		r = qcow2_image_flush(top);
		if (r == 0)
			r = qcow2_io_unlock(top->io, QCOW2_WRITER_PERMS & ~QCOW2_PERM_CONSISTENT_READ);
	}
	if (r == 0)
		c->write_locked = on;
	return r;
}
