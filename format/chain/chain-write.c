/* SPDX-License-Identifier: MIT */
/*
 * chain-write.c - writing a flat view: writes, zeroing and compressed writes go to the top
 * image only, copy-on-write from the layers below (qcow2_chain_read_below()); flush, growth
 * and QEMU's write permission on the top.
 *
 * Locks: every call holds c->layers_rw shared (the top stays the top, live.c); every change
 * runs inside qcow2_image_read_begin/end() (the top's w->frees shared,
 * engine/locks.c), then forgets the chunks it touched (c->owner_rw exclusive, chain-read.c)
 * after the write has released the write side's w->lock. Growth holds the top's w->frees
 * exclusive (qcow2_image_exclusive_begin/end()): no read or write runs while c->size and the
 * owner map change.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "chain/chain.h"

static struct qcow2_image *writable_top(const struct qcow2_chain *c)
{
	struct qcow2_image *top = c->layers[0].img;

	return top && top->w ? top : NULL;
}

bool qcow2_chain_writable(const struct qcow2_chain *c)
{
	struct qcow2_chain *m = (struct qcow2_chain *)c; /* (its lock) */
	const struct qcow2_image *top;
	bool w;

	pthread_rwlock_rdlock(&m->layers_rw);
	top = writable_top(c);
	w = top && qcow2_image_writable(top); /* not once a write found it damaged */
	pthread_rwlock_unlock(&m->layers_rw);
	return w;
}

/* The writable top as it is now (NULL: none), for a check before the work: the work itself
 * takes it again under c->layers_rw. */
static struct qcow2_image *top_now(struct qcow2_chain *c)
{
	struct qcow2_image *top;

	pthread_rwlock_rdlock(&c->layers_rw);
	top = writable_top(c);
	pthread_rwlock_unlock(&c->layers_rw);
	return top;
}

static int not_writable(const struct qcow2_chain *c)
{
	/* the cause an operator needs: a raw top (a probe found no qcow2 header) is never
	 * written, whatever the open asked for */
	if (c->layers[0].raw)
		return qcow2_set_error(-EROFS,
				       "'%s': not a qcow2 image (raw?): only qcow2 images are "
				       "changed",
				       c->layers[0].path);
	return qcow2_set_error(-EROFS, "'%s' is open read-only", c->layers[0].path);
}

#define SECTOR 512ull

/* Write @n bytes of @buf (NULL: zeros) at @off of an encrypted top by whole sectors: the
 * sectors it covers in part are read from the view first (c->sector_rw held exclusive).
 * Inside qcow2_chain_enter(). */
static int write_sectors(struct qcow2_chain *c, struct qcow2_image *top,
			 const struct qcow2_fill *fill, const void *buf, uint64_t n, uint64_t off)
{
	uint64_t a = off & ~(SECTOR - 1), b = (off + n + SECTOR - 1) & ~(SECTOR - 1);
	uint8_t *w;
	int r = 0;

	if (b > c->size)
		return qcow2_set_error(-EINVAL, "'%s': the disk ends inside a sector",
				       c->layers[0].path);
	w = malloc(b - a);
	if (!w)
		return qcow2_oom();
	if (off != a)
		r = qcow2_chain_read_in(c, w, SECTOR, a);
	if (r == 0 && off + n != b && (b - SECTOR != a || off == a))
		r = qcow2_chain_read_in(c, w + (b - a - SECTOR), SECTOR, b - SECTOR);
	if (r == 0) {
		if (buf)
			memcpy(w + (off - a), buf, n);
		else
			memset(w + (off - a), 0, n);
		r = qcow2_image_write(top, w, b - a, a, fill);
	}
	free(w);
	return r;
}

/* Zero [@off, @off + @n) of an encrypted top: whole sectors by the format's means, the partial
 * ones at either end written as zeros. */
static int zero_sectors(struct qcow2_chain *c, struct qcow2_image *top,
			const struct qcow2_fill *fill, uint64_t n, uint64_t off)
{
	uint64_t end = off + n, ha = (off + SECTOR - 1) & ~(SECTOR - 1), tb = end & ~(SECTOR - 1);
	int r = 0;

	if (ha >= tb) /* within one or two sectors */
		return write_sectors(c, top, fill, NULL, n, off);
	if (off < ha)
		r = write_sectors(c, top, fill, NULL, ha - off, off);
	if (r == 0)
		r = qcow2_image_zero(top, ha, tb - ha, fill);
	if (r == 0 && tb < end)
		r = write_sectors(c, top, fill, NULL, end - tb, tb);
	return r;
}

/* A change of the top over [@off, @off + @n): a write of @buf, an allocation (@buf NULL,
 * @zero false), a zeroing or an unmapping. An encrypted top changes by whole 512-byte sectors
 * (its cipher's unit): a change that covers part of one holds c->sector_rw exclusive while it
 * reads and writes the whole sector, every other change holds it shared. */
static int change(struct qcow2_chain *c, const void *buf, uint64_t n, uint64_t off, bool zero,
		  bool unmap)
{
	struct qcow2_image *top;
	struct qcow2_fill fill = {qcow2_chain_read_below, c, false};
	bool enc, partial;
	int r;

	/* c->layers_rw before c->sector_rw and the top's w->frees: the top stays the top */
	pthread_rwlock_rdlock(&c->layers_rw);
	top = writable_top(c);
	fill.has_backing = c->n > 1;
	if (!top || (unmap && c->dirty)) {
		/* (an active commit copies the top's view into base: showing base again would
		 * show what the commit wrote there) */
		r = top ? qcow2_set_error(-EBUSY, "'%s': an active commit is running",
					  c->layers[0].path)
			: not_writable(c);
		pthread_rwlock_unlock(&c->layers_rw);
		return r;
	}
	enc = qcow2_image_encrypted(top);
	partial = enc && n && (buf || zero) && !unmap && ((off | n) & (SECTOR - 1));
	if (partial)
		pthread_rwlock_wrlock(&c->sector_rw);
	else if (enc)
		pthread_rwlock_rdlock(&c->sector_rw);
	qcow2_image_read_begin(top);
	if (off > c->size || n > c->size - off)
		r = qcow2_set_error(-EFBIG, "'%s': range past the end of the disk",
				    c->layers[0].path);
	else if (zero && unmap)
		r = qcow2_image_unmap(top, off, n);
	else if (partial && zero)
		r = zero_sectors(c, top, &fill, n, off);
	else if (partial)
		r = write_sectors(c, top, &fill, buf, n, off);
	else if (zero)
		r = qcow2_image_zero(top, off, n, &fill);
	else
		r = qcow2_image_write(top, buf, (size_t)n, off, &fill);
	/* (a partial sector's whole one changed) */
	if (partial)
		qcow2_chain_forget(c, off & ~(SECTOR - 1),
				   ((off + n + SECTOR - 1) & ~(SECTOR - 1)) -
				       (off & ~(SECTOR - 1)));
	else
		qcow2_chain_forget(c, off, n);
	qcow2_image_read_end(top);
	if (enc)
		pthread_rwlock_unlock(&c->sector_rw);
	pthread_rwlock_unlock(&c->layers_rw);
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
	struct qcow2_image *top;
	int r;

	qcow2_chain_enter(c);
	top = writable_top(c);
	if (!top) {
		r = not_writable(c);
		qcow2_chain_leave(c);
		return r;
	}
	r = qcow2_image_write_compressed(top, buf, off);
	qcow2_chain_forget(c, off, top->cluster_bytes);
	qcow2_chain_leave(c);
	return r;
}

ssize_t qcow2_chain_compress(struct qcow2_chain *c, const void *buf, void *out)
{
	const struct qcow2_image *top = top_now(c);

	return top ? qcow2_image_compress(top, buf, out) : not_writable(c);
}

int qcow2_chain_write_precompressed(struct qcow2_chain *c, const void *buf, const void *comp,
				    size_t len, uint64_t off)
{
	struct qcow2_image *top;
	int r;

	qcow2_chain_enter(c);
	top = writable_top(c);
	if (!top) {
		r = not_writable(c);
		qcow2_chain_leave(c);
		return r;
	}
	r = qcow2_image_write_precompressed(top, buf, comp, len, off);
	qcow2_chain_forget(c, off, top->cluster_bytes);
	qcow2_chain_leave(c);
	return r;
}

bool qcow2_chain_allocated_since_flush(struct qcow2_chain *c)
{
	struct qcow2_image *top;
	bool any;

	pthread_rwlock_rdlock(&c->layers_rw);
	top = writable_top(c);
	any = top && qcow2_refcount_any_dirty(top);
	pthread_rwlock_unlock(&c->layers_rw);
	return any;
}

int qcow2_chain_flush(struct qcow2_chain *c)
{
	struct qcow2_image *top;
	int r;

	pthread_rwlock_rdlock(&c->layers_rw); /* before the w->frees the flush takes */
	top = writable_top(c);
	r = top ? qcow2_image_flush(top) : 0;
	pthread_rwlock_unlock(&c->layers_rw);
	return r;
}

static int resize_top(struct qcow2_chain *c, struct qcow2_image *top, uint64_t new_size,
		      bool shrink);
static int lock_write(struct qcow2_chain *c, struct qcow2_image *top, bool on);

/* The tail of the last cluster past @new_size is zeroed (so that a later grow shows zeros
 * there, not the bytes cut off), the whole clusters past it unmapped and made durable; only
 * then does the header take the smaller size (resize_top()). */
int qcow2_chain_shrink(struct qcow2_chain *c, uint64_t new_size)
{
	struct qcow2_image *top = top_now(c);
	uint64_t cs, cut;
	int r;

	if (!top)
		return not_writable(c);
	r = qcow2_image_shrink_check(top, new_size);
	if (r < 0 || new_size == c->size)
		return r;
	cs = top->cluster_bytes;
	cut = (new_size + cs - 1) / cs * cs;
	if (cut > c->size)
		cut = c->size;
	if (cut > new_size)
		r = qcow2_chain_zero(c, new_size, cut - new_size, 0);
	if (r == 0 && c->size > cut)
		r = qcow2_chain_zero(c, cut, c->size - cut, QCOW2_ZERO_UNMAP);
	if (r == 0)
		r = qcow2_chain_flush(c);
	if (r == 0)
		r = resize_top(c, top, new_size, true);
	return r == 0 ? qcow2_chain_flush(c) : r;
}

int qcow2_chain_grow(struct qcow2_chain *c, uint64_t new_size)
{
	struct qcow2_image *top = top_now(c);
	uint64_t old_size, below;
	int r;

	if (!top)
		return not_writable(c);
	old_size = c->size;
	r = resize_top(c, top, new_size, false);
	/* The new range reads as zeros, as QEMU makes it, not as what a longer backing file has
	 * there (a crash before this is durable leaves a valid image showing that data). */
	below = c->n > 1 ? c->layers[1].size : 0;
	if (below > new_size)
		below = new_size;
	if (r == 0 && below > old_size)
		r = qcow2_chain_zero(c, old_size, below - old_size, 0);
	return r == 0 ? qcow2_chain_flush(c) : r;
}

/* Grow (or, @shrink, shrink) the top's virtual size, with no read or write running meanwhile. */
static int resize_top(struct qcow2_chain *c, struct qcow2_image *top, uint64_t new_size,
		      bool shrink)
{
	struct qcow2_ownermap *m = NULL;
	int r;

	pthread_rwlock_rdlock(&c->layers_rw);
	if (top != writable_top(c) || c->dirty) {
		/* (a live job changed the top since the check, or tracks it) */
		pthread_rwlock_unlock(&c->layers_rw);
		return qcow2_set_error(-EBUSY, "'%s': a live job is running on the disk",
				       c->layers[0].path);
	}
	qcow2_image_exclusive_begin(top); /* no read or write runs while the size changes */
	r = shrink ? qcow2_image_shrink(top, new_size) : qcow2_image_grow(top, new_size);
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
	pthread_rwlock_unlock(&c->layers_rw);
	return r;
}

int qcow2_chain_lock_write(struct qcow2_chain *c, bool on)
{
	struct qcow2_image *top;
	int r;

	pthread_rwlock_rdlock(&c->layers_rw); /* c->write_locked, the top: as live.c leaves them */
	top = writable_top(c);
	r = lock_write(c, top, on);
	pthread_rwlock_unlock(&c->layers_rw);
	return r;
}

static int lock_write(struct qcow2_chain *c, struct qcow2_image *top, bool on)
{
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
			r = qcow2_io_unlock(top->io,
					    QCOW2_WRITER_PERMS & ~QCOW2_PERM_CONSISTENT_READ);
	}
	if (r == 0)
		c->write_locked = on;
	return r;
}
