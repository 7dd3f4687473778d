/* SPDX-License-Identifier: MIT */
/*
 * live.c - the layers of an open chain changed while it is read and written (the live jobs,
 * jobs/live.c): a new top pushed (a live external snapshot), layers taken out (a live commit
 * or pull), a layer's image replaced by one that sees what a job wrote into it, the owner map
 * forgotten; and the tracking of the top's changes for an active commit.
 *
 * Locking argument: every call on the chain holds c->layers_rw shared from its first look at
 * the layer array to its last (qcow2_chain_enter() and chain-write.c take it before the top's
 * w->frees and c->sector_rw). A layer change holds it exclusive (qcow2_chain_layers_begin()),
 * so it waits for the requests in flight, none starts meanwhile, and a request sees the
 * layers either all before or all after the change, never a half-moved array. The owner map
 * records layer numbers: it is made anew (forgotten) at every change, still under the
 * exclusive lock, so no owner recorded under the old numbering is read under the new one.
 * The lock is writer-preferring, so a stream of requests cannot hold a change off for good.
 * Nothing in this file waits on I/O of a request: the requests simply do not run meanwhile.
 *
 * The tracking bits (c->dirty): the array is set and freed with layers_rw exclusive, so a
 * request that found it (shared) uses it until its leave; bits are set with an atomic OR after
 * the top changed (qcow2_chain_forget(), inside the request) and taken with an atomic AND by
 * the job, which reads the view only after taking a bit: a write that lands after the job's
 * read sets the bit again, one that finished before it is in what the job read.
 */
#include <errno.h>
#include <stdlib.h>

#include "chain/chain.h"

void qcow2_chain_layers_rw_init(struct qcow2_chain *c)
{
	pthread_rwlockattr_t ra;

	pthread_rwlockattr_init(&ra);
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&c->layers_rw, &ra);
	pthread_rwlockattr_destroy(&ra);
}

void qcow2_chain_layers_begin(struct qcow2_chain *c)
{
	pthread_rwlock_wrlock(&c->layers_rw);
}

void qcow2_chain_layers_end(struct qcow2_chain *c)
{
	pthread_rwlock_unlock(&c->layers_rw);
}

int qcow2_chain_owners_reset_locked(struct qcow2_chain *c)
{
	qcow2_ownermap_free(c->owners);
	c->owners = NULL;
	return qcow2_chain_setup_owners(c); /* (on failure: no map, every call walks) */
}

int qcow2_chain_push_top_locked(struct qcow2_chain *c, const char *path, struct qcow2_image *img)
{
	struct qcow2_chain_layer *l;
	struct stat st;
	char *p = strdup(path);

	if (!p)
		return qcow2_oom();
	if (c->n == c->cap) {
		unsigned cap = 2 * c->cap;
		struct qcow2_chain_layer *v = realloc(c->layers, cap * sizeof(*v));

		if (!v) {
			free(p);
			return qcow2_oom();
		}
		c->layers = v;
		c->cap = cap;
	}
	memmove(&c->layers[1], &c->layers[0], c->n * sizeof(*l));
	c->n++;
	l = &c->layers[0];
	memset(l, 0, sizeof(*l));
	l->path = p;
	l->img = img;
	l->size = qcow2_guest_bytes(img->h.size);
	if (fstat(qcow2_io_fd(img->io), &st) == 0) {
		l->dev = st.st_dev;
		l->ino = st.st_ino;
	}
	qcow2_chain_owners_reset_locked(c);
	return 0;
}

void qcow2_chain_remove_layers_locked(struct qcow2_chain *c, unsigned first, unsigned count)
{
	unsigned i;

	for (i = first; i < first + count && i < c->n; i++) {
		qcow2_image_close(c->layers[i].img);
		qcow2_io_close(c->layers[i].raw);
		free(c->layers[i].path);
	}
	memmove(&c->layers[first], &c->layers[first + count],
		(c->n - first - count) * sizeof(c->layers[0]));
	c->n -= count;
	qcow2_chain_owners_reset_locked(c);
}

void qcow2_chain_replace_layer_locked(struct qcow2_chain *c, unsigned idx, struct qcow2_image *img)
{
	struct qcow2_chain_layer *l = &c->layers[idx];

	qcow2_image_close(l->img);
	l->img = img;
	if (idx > 0) /* (the top keeps the chain's size) */
		l->size = qcow2_guest_bytes(img->h.size);
	qcow2_chain_owners_reset_locked(c);
}

/* ---- tracking the top's changes (active commit) ---- */

int qcow2_chain_track_locked(struct qcow2_chain *c, bool on, uint32_t shift)
{
	free(c->dirty);
	c->dirty = NULL;
	c->dirty_units = 0;
	if (!on)
		return 0;
	c->dirty_shift = shift;
	c->dirty_units = (c->size + (1ull << shift) - 1) >> shift;
	c->dirty = calloc((c->dirty_units + 63) / 64 + 1, sizeof(uint64_t));
	return c->dirty ? 0 : qcow2_oom();
}

void qcow2_chain_dirty_mark(struct qcow2_chain *c, uint64_t off, uint64_t n)
{
	uint64_t u = off >> c->dirty_shift, last = (off + n - 1) >> c->dirty_shift;

	for (; u <= last && u < c->dirty_units; u++)
		__atomic_fetch_or(&c->dirty[u / 64], 1ull << (u % 64), __ATOMIC_ACQ_REL);
}

int qcow2_chain_dirty_take(struct qcow2_chain *c, uint64_t from, uint64_t *unit)
{
	uint64_t u, w, bit;

	for (u = from; u < c->dirty_units; u = (u / 64 + 1) * 64) {
		w = __atomic_load_n(&c->dirty[u / 64], __ATOMIC_ACQUIRE) >> (u % 64);
		if (!w)
			continue;
		u += (uint64_t)__builtin_ctzll(w);
		if (u >= c->dirty_units)
			return 1;
		bit = 1ull << (u % 64);
		__atomic_fetch_and(&c->dirty[u / 64], ~bit, __ATOMIC_ACQ_REL);
		*unit = u;
		return 0;
	}
	return 1;
}

uint64_t qcow2_chain_dirty_count(struct qcow2_chain *c)
{
	uint64_t i, n = 0;

	for (i = 0; c->dirty && i < (c->dirty_units + 63) / 64; i++)
		n +=
		    (uint64_t)__builtin_popcountll(__atomic_load_n(&c->dirty[i], __ATOMIC_ACQUIRE));
	return n;
}
