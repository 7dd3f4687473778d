/* SPDX-License-Identifier: MIT */
/*
 * l2cache.c - a bounded cache of L2 tables of one image, keyed by the table's host offset.
 *
 * Memory is bounded by the budget given at creation (never by a number from the file). Tables
 * are stored decoded to host byte order. Lookups copy the wanted words out under the cache's
 * mutex; a miss reads the table with no lock held, then inserts it (a racing loader's copy is
 * simply dropped). Eviction is CLOCK over a fixed slot array; a hash on the offset finds slots.
 * Writable images change tables here (qcow2_l2cache_modify()): a changed table is dirty and is
 * never evicted until qcow2_l2cache_writeback() has written it, so the cache is always at
 * least as new as the disk and a reader that misses can trust the disk. A reader inserting a
 * table it read finds the writer's copy first (lookup under the lock before inserting).
 * Locking: c->lock guards every field below it; it is a leaf lock (no other lock is taken
 * while it is held).
 */
#include <errno.h>
#include <stdlib.h>

#include "image/image.h"

#define MIN_SLOTS 8u
#define MAX_SLOTS 65536u

struct slot {
	uint64_t off; /* host offset of the table; 0 = free */
	uint64_t *words;
	int next; /* next slot in the same bucket, -1 = end */
	bool ref;
	bool dirty; /* changed since it was read or last written */
};

struct qcow2_l2cache {
	pthread_mutex_t lock;
	size_t table_bytes;
	uint32_t n_slots;
	uint32_t n_buckets; /* power of two */
	uint32_t hand;	    /* under lock */
	uint32_t n_dirty;   /* under lock */
	struct slot *slots; /* under lock */
	int *buckets;	    /* under lock */
};

int qcow2_l2cache_new(size_t table_bytes, size_t budget_bytes, struct qcow2_l2cache **out)
{
	struct qcow2_l2cache *c = calloc(1, sizeof(*c));
	uint64_t n = budget_bytes / table_bytes;
	uint32_t i;

	if (!c)
		return qcow2_oom();
	if (n < MIN_SLOTS)
		n = MIN_SLOTS;
	if (n > MAX_SLOTS)
		n = MAX_SLOTS;
	c->table_bytes = table_bytes;
	c->n_slots = (uint32_t)n;
	c->n_buckets = 1;
	while (c->n_buckets < c->n_slots)
		c->n_buckets <<= 1;
	c->slots = calloc(c->n_slots, sizeof(*c->slots));
	c->buckets = malloc(sizeof(*c->buckets) * c->n_buckets);
	if (!c->slots || !c->buckets) {
		qcow2_l2cache_free(c);
		return qcow2_oom();
	}
	for (i = 0; i < c->n_buckets; i++)
		c->buckets[i] = -1;
	pthread_mutex_init(&c->lock, NULL);
	*out = c;
	return 0;
}

void qcow2_l2cache_free(struct qcow2_l2cache *c)
{
	uint32_t i;

	if (!c)
		return;
	for (i = 0; c->slots && i < c->n_slots; i++)
		free(c->slots[i].words);
	if (c->slots)
		pthread_mutex_destroy(&c->lock);
	free(c->slots);
	free(c->buckets);
	free(c);
}

static uint32_t bucket_of(const struct qcow2_l2cache *c, uint64_t off)
{
	uint64_t h = (off >> 9) * 0x9e3779b97f4a7c15ull;
	return (uint32_t)(h >> 40) & (c->n_buckets - 1);
}

static struct slot *find(struct qcow2_l2cache *c, uint64_t off)
{
	int i;

	for (i = c->buckets[bucket_of(c, off)]; i >= 0; i = c->slots[i].next)
		if (c->slots[i].off == off)
			return &c->slots[i];
	return NULL;
}

static void unlink_slot(struct qcow2_l2cache *c, uint32_t idx)
{
	int *pp = &c->buckets[bucket_of(c, c->slots[idx].off)];

	while (*pp >= 0 && *pp != (int)idx)
		pp = &c->slots[*pp].next;
	if (*pp == (int)idx)
		*pp = c->slots[idx].next;
}

/* Insert @words (ownership taken) for @off, evicting a clean slot by CLOCK. NULL (and @words
 * left to the caller) when every slot is dirty. Called with c->lock held. */
static struct slot *insert(struct qcow2_l2cache *c, uint64_t off, uint64_t *words)
{
	struct slot *s;
	uint32_t b, seen = 0;

	if (c->n_dirty >= c->n_slots)
		return NULL;
	for (;;) {
		s = &c->slots[c->hand];
		if (!s->off || (!s->ref && !s->dirty))
			break;
		s->ref = false;
		c->hand = (c->hand + 1) % c->n_slots;
		if (++seen > 2 * c->n_slots)
			return NULL;
	}
	if (s->off)
		unlink_slot(c, c->hand);
	c->hand = (c->hand + 1) % c->n_slots;
	free(s->words);
	s->off = off;
	s->words = words;
	s->ref = true;
	b = bucket_of(c, off);
	s->next = c->buckets[b];
	c->buckets[b] = (int)(s - c->slots);
	return s;
}

static int load_table(struct qcow2_l2cache *c, struct qcow2_io *io, uint64_t host_off,
		      uint64_t **out)
{
	size_t n = c->table_bytes / 8, i;
	uint64_t *words = malloc(c->table_bytes);
	int r;

	if (!words)
		return qcow2_oom();
	r = qcow2_io_pread_full(io, words, c->table_bytes, host_off);
	if (r < 0) {
		free(words);
		return r;
	}
	for (i = 0; i < n; i++)
		words[i] = get_be64(&words[i]);
	*out = words;
	return 0;
}

int qcow2_l2cache_get(struct qcow2_l2cache *c, struct qcow2_io *io, uint64_t host_off,
		      uint32_t word, uint32_t n_words, uint64_t *out)
{
	size_t n = c->table_bytes / 8;
	uint64_t *words;
	struct slot *s;
	int r;

	if (host_off == 0 || (size_t)word + n_words > n)
		return qcow2_set_error(-EINVAL, "internal: bad L2 cache request");
	pthread_mutex_lock(&c->lock);
	s = find(c, host_off);
	if (s) {
		s->ref = true;
		memcpy(out, s->words + word, (size_t)n_words * 8);
		pthread_mutex_unlock(&c->lock);
		return 0;
	}
	pthread_mutex_unlock(&c->lock);

	r = load_table(c, io, host_off, &words);
	if (r < 0)
		return r;

	pthread_mutex_lock(&c->lock);
	s = find(c, host_off);
	if (s)
		free(words);
	else
		s = insert(c, host_off, words);
	if (s) {
		s->ref = true;
		memcpy(out, s->words + word, (size_t)n_words * 8);
	} else { /* every slot dirty: this table is not, so the disk's copy is current */
		memcpy(out, words + word, (size_t)n_words * 8);
		free(words);
	}
	pthread_mutex_unlock(&c->lock);
	return 0;
}

int qcow2_l2cache_modify(struct qcow2_l2cache *c, struct qcow2_io *io, uint64_t host_off,
			 const uint64_t *init, uint32_t word, uint32_t n_words,
			 const uint64_t *words)
{
	uint64_t *fresh = NULL;
	struct slot *s;
	int r;

	if (host_off == 0 || (size_t)word + n_words > c->table_bytes / 8)
		return qcow2_set_error(-EINVAL, "internal: bad L2 cache change");
	if (init) {
		fresh = malloc(c->table_bytes);
		if (!fresh)
			return qcow2_oom();
		memcpy(fresh, init, c->table_bytes);
	}
	for (;;) {
		pthread_mutex_lock(&c->lock);
		s = find(c, host_off);
		if (s && init) { /* a new table replaces whatever was cached at its offset */
			free(s->words);
			s->words = fresh;
			fresh = NULL;
		}
		if (s || fresh)
			break;
		pthread_mutex_unlock(&c->lock);
		r = load_table(c, io, host_off, &fresh);
		if (r < 0)
			return r;
	}
	if (!s) {
		s = insert(c, host_off, fresh);
		if (!s) {
			pthread_mutex_unlock(&c->lock);
			free(fresh);
			return -EAGAIN;
		}
		fresh = NULL;
	}
	free(fresh);
	if (n_words)
		memcpy(s->words + word, words, (size_t)n_words * 8);
	s->ref = true;
	if (!s->dirty)
		c->n_dirty++;
	s->dirty = true;
	pthread_mutex_unlock(&c->lock);
	return 0;
}

int qcow2_l2cache_writeback(struct qcow2_l2cache *c, struct qcow2_io *io)
{
	size_t n = c->table_bytes / 8, j;
	uint8_t *buf = malloc(c->table_bytes);
	int r = 0, wrote = 0;
	uint32_t i;

	if (!buf)
		return qcow2_oom();
	/* Writers are excluded by the image's metadata lock; only readers run meanwhile. */
	for (i = 0; i < c->n_slots && r == 0; i++) {
		uint64_t off;

		pthread_mutex_lock(&c->lock);
		off = c->slots[i].dirty ? c->slots[i].off : 0;
		for (j = 0; off && j < n; j++)
			put_be64(buf + 8 * j, c->slots[i].words[j]);
		pthread_mutex_unlock(&c->lock);
		if (!off)
			continue;
		r = qcow2_io_pwrite_meta(io, buf, c->table_bytes, off, QCOW2_OL_L2);
		if (r == 0) {
			pthread_mutex_lock(&c->lock);
			c->slots[i].dirty = false;
			c->n_dirty--;
			pthread_mutex_unlock(&c->lock);
			wrote = 1;
		}
	}
	free(buf);
	return r < 0 ? r : wrote;
}

bool qcow2_l2cache_pressure(struct qcow2_l2cache *c)
{
	bool p;

	pthread_mutex_lock(&c->lock);
	p = c->n_dirty * 2 > c->n_slots;
	pthread_mutex_unlock(&c->lock);
	return p;
}

void qcow2_l2cache_drop(struct qcow2_l2cache *c, uint64_t host_off)
{
	struct slot *s;

	pthread_mutex_lock(&c->lock);
	s = find(c, host_off);
	if (s) {
		unlink_slot(c, (uint32_t)(s - c->slots));
		if (s->dirty)
			c->n_dirty--;
		free(s->words);
		memset(s, 0, sizeof(*s));
	}
	pthread_mutex_unlock(&c->lock);
}
