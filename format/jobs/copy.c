/* SPDX-License-Identifier: MIT */
/*
 * copy.c - moving data between the layers of chains: the engine of commit, pull, rebase and
 * copy (qcow2_chain_copy).
 *
 * A copy runs in two passes. The plan walks the source's metadata once and lists the ranges
 * to handle: data (or compressed data) from the layers in range, and ranges that must read as
 * zeros (zeros said by a layer in range, and holes where what lies under the destination
 * could show something else). The copy then reads each data range through the source chain,
 * which stops at the first layer that has it, one in range: so the source never reads the
 * layers from @limit on, which may be the very image the destination writes (commit). Ranges
 * of zeros are checked against @under, which is read through its own object.
 *
 * Writes are split at the destination's clusters (or, with @min_sparse, at qemu-img convert
 * -S's alignment): a run of all-zero pieces (at least @min_sparse long) becomes a zeroing (or
 * nothing, where @under shows zeros there), a piece equal to @under's (with @compare) is
 * skipped, the rest is written in runs. Work is proportional to the planned ranges: a sparse
 * 100 GiB overlay with 1 GiB written costs about 1 GiB of reads and writes.
 *
 * Safety comes from the callers' order (tools/): every range written makes the destination
 * show what the source shows, which is what every chain reading through it must keep seeing;
 * pointers are rewritten only after the data is durable.
 *
 * Compressed copies read and compress batches of clusters on several threads (each its own
 * share of a batch's buffers, joined before the caller's thread stores them in order: no lock).
 *
 * Locks: rd->m, the parallel readers' mutex (a leaf, internal to this file: the queue of
 * clusters read ahead and its condition variable); QEMU's file locks through the chain it opens.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "jobs/jobs.h"

#define CHUNK	 (4u << 20)  /* bytes read and written per step (a multiple of every cluster) */
#define PREFETCH (32u << 20) /* data asked of the disk ahead of the copy */
/* Data written between two flushes of the destination: what a kill can leave leaked (new
 * clusters whose refcounts reached the disk but whose L2 entries did not) is bounded by it. */
#define FLUSH_EVERY (128ull << 20)

enum item_kind { ITEM_DATA, ITEM_ZERO };

struct item {
	uint64_t off, len;
	enum item_kind kind;
};

struct plan {
	struct item *v;
	size_t n, cap;
};

struct copy {
	struct qcow2_chain *src;
	const struct qcow2_copy_opts *o;
	const struct qcow2_job *job;
	struct qcow2_copy_stats *st;
	uint64_t cluster; /* the destination's cluster (64 KiB for a raw file) */
	uint64_t granule; /* the pieces zeros are looked for in (granule_of()) */
	uint64_t done, total;
	const struct plan *plan;
	size_t pf_item; /* prefetch cursor: the item, and the offset reached in it */
	uint64_t pf_off;
	/* the writing thread's waits for reads, and its writes (less their fdatasync: "sync") */
	double t_reads, t_writes;
};

static int add(struct plan *p, enum item_kind kind, uint64_t off, uint64_t len)
{
	struct item *last = p->n ? &p->v[p->n - 1] : NULL;

	if (last && last->kind == kind && last->off + last->len == off) {
		last->len += len;
		return 0;
	}
	if (p->n == p->cap) {
		size_t cap = p->cap ? 2 * p->cap : 256;
		struct item *v = realloc(p->v, cap * sizeof(*v));

		if (!v)
			return qcow2_oom_for("the copy plan");
		p->v = v;
		p->cap = cap;
	}
	p->v[p->n++] = (struct item){off, len, kind};
	return 0;
}

/* Holes of @src can show something else under the destination only past the end of a layer
 * above @limit (where the chain reads zeros whatever lies below), or anywhere when @under is
 * another chain. */
static uint64_t holes_from(struct qcow2_chain *src, const struct qcow2_copy_opts *o)
{
	uint64_t from = qcow2_chain_size(src);
	struct qcow2_layer_info li;
	unsigned i;

	if (!o->under_is_tail)
		return 0;
	for (i = 0; i < o->limit && i < qcow2_chain_depth(src); i++)
		if (qcow2_chain_layer(src, i, &li) == 0 && li.size < from)
			from = li.size;
	return from;
}

static int make_plan(struct copy *k, struct plan *p)
{
	const struct qcow2_copy_opts *o = k->o;
	uint64_t size = qcow2_chain_size(k->src), off = 0, hole_from = holes_from(k->src, o);
	unsigned steps = 0;
	int r = 0;

	if (o->no_sparse) { /* -S 0: every byte is written, holes and zeros as data */
		k->st->planned_bytes = size;
		return size ? add(p, ITEM_DATA, 0, size) : 0;
	}
	while (off < size && r == 0) {
		struct qcow2_extent e;
		bool in;

		r = qcow2_chain_map(k->src, off, size - off, &e);
		if (r < 0)
			break;
		in = e.layer >= (int)o->first && e.layer < (int)o->limit;
		if (in && (e.kind == QCOW2_EXTENT_DATA || e.kind == QCOW2_EXTENT_COMPRESSED)) {
			r = add(p, ITEM_DATA, off, e.len);
			k->st->planned_bytes += e.len;
		} else if (o->under && ((in && e.kind == QCOW2_EXTENT_ZERO) ||
					(e.layer < 0 && off + e.len > hole_from))) {
			uint64_t from = e.layer < 0 && off < hole_from ? hole_from : off;

			r = add(p, ITEM_ZERO, from, off + e.len - from);
			k->st->planned_zero += off + e.len - from;
		}
		off += e.len;
		if (r == 0 && ++steps % 4096 == 0)
			r = qcow2_job_step(k->job, 0, 0);
	}
	return r;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* ---- the destination ---- */

static int dst_write(struct copy *k, const void *buf, uint64_t n, uint64_t off)
{
	uint64_t before = k->st->written_bytes;
	int r = k->o->dst ? qcow2_chain_pwrite(k->o->dst, buf, (size_t)n, off)
			  : qcow2_io_pwrite(k->o->dst_raw, buf, (size_t)n, off);

	if (r < 0)
		return r;
	k->st->written_bytes += n;
	/* in-place writes (into clusters already allocated) leak nothing: no flush for them */
	if (k->o->dst && !k->o->scratch &&
	    before / FLUSH_EVERY != k->st->written_bytes / FLUSH_EVERY &&
	    qcow2_chain_allocated_since_flush(k->o->dst))
		r = qcow2_chain_flush(k->o->dst);
	return r;
}

/* Make [@off, @off + @n) read as zeros where @under would show something else. */
static int dst_zero(struct copy *k, uint64_t off, uint64_t n)
{
	struct qcow2_chain *u = k->o->under;
	uint64_t usize = u ? qcow2_chain_size(u) : 0, end = off + n;
	int r = 0;

	while (u && off < end && off < usize && r == 0) {
		struct qcow2_extent e;
		uint64_t len;

		r = qcow2_chain_map(u, off, (end < usize ? end : usize) - off, &e);
		if (r < 0)
			break;
		len = e.len;
		if (e.kind == QCOW2_EXTENT_DATA || e.kind == QCOW2_EXTENT_COMPRESSED) {
			r = k->o->dst ? qcow2_chain_zero(k->o->dst, off, len, 0)
				      : qcow2_io_zero(k->o->dst_raw, off, len);
			if (r == 0)
				k->st->zeroed_bytes += len;
		}
		off += len;
	}
	return r;
}

/* ---- copying data ---- */

/* The bytes from @pos to the end of the granule (granule_of()) at @off + @pos (at most @n). */
static uint64_t piece(const struct copy *k, uint64_t pos, uint64_t n, uint64_t off)
{
	uint64_t len = k->granule - ((off + pos) & (k->granule - 1));

	return len < n - pos ? len : n - pos;
}

/* The bytes of the run of all-zero pieces of @p that starts at @pos. */
static uint64_t zero_run(const struct copy *k, const uint8_t *p, uint64_t pos, uint64_t n,
			 uint64_t off)
{
	uint64_t from = pos, len;

	while (pos < n && all_zero(p + pos, (size_t)(len = piece(k, pos, n, off))))
		pos += len;
	return pos - from;
}

/* Write @n bytes of @p (read from the source at @off) piece by piece at the destination's
 * clusters: runs of data written, pieces equal to @under's skipped (@u: @under's bytes, with
 * @compare), runs of zero pieces zeroed when they are at least @min_sparse long (as qemu-img
 * convert -S), else written as data like the data around them. */
static int put_pieces(struct copy *k, const uint8_t *p, const uint8_t *u, uint64_t n, uint64_t off)
{
	uint64_t pos = 0, run = 0, len; /* pending run of data: [pos - run, pos) */
	int r = 0;

	while (pos < n && r == 0) {
		len = piece(k, pos, n, off);
		if (u && !memcmp(p + pos, u + pos, (size_t)len)) {
			if (run)
				r = dst_write(k, p + pos - run, run, off + pos - run);
			run = 0;
		} else if (!k->o->no_sparse && all_zero(p + pos, (size_t)len)) {
			len = zero_run(k, p, pos, n, off);
			if (len < k->o->min_sparse) {
				run += len; /* too short a hole: written with the data */
			} else {
				if (run)
					r = dst_write(k, p + pos - run, run, off + pos - run);
				run = 0;
				if (r == 0)
					r = dst_zero(k, off + pos, len);
			}
		} else {
			run += len;
		}
		pos += len;
	}
	if (r == 0 && run)
		r = dst_write(k, p + pos - run, run, off + pos - run);
	return r;
}

static int read_under(struct copy *k, uint8_t *buf, uint64_t n, uint64_t off)
{
	uint64_t usize = qcow2_chain_size(k->o->under), have = 0;

	if (off < usize)
		have = usize - off < n ? usize - off : n;
	memset(buf + have, 0, (size_t)(n - have));
	return have ? qcow2_chain_pread(k->o->under, buf, (size_t)have, off) : 0;
}

/* Advise the kernel about the source's data of [@off, @off + @n): POSIX_FADV_WILLNEED asks
 * the disk for it without waiting (the plan skips from range to range, which defeats the
 * kernel's read-ahead); POSIX_FADV_DONTNEED, once it was read, drops it from the page cache.
 * The latter only with @drop_read (an active commit): the top is emptied after the copy, and
 * its punched holes truncate the pages the copy left in the page cache, serially, after the
 * copy (about half the time of the empty phase at 4 GiB, measured); the readers drop them
 * while the writer works instead. Other copies keep the cache: their source (a shared base)
 * may serve other readers. */
#define DROP_ALIGN (2u << 20)

static void advise_range(struct copy *k, uint64_t off, uint64_t n, int advice)
{
	uint64_t end = off + n, back;

	while (off < end) {
		struct qcow2_extent e;
		int fd;

		if (qcow2_chain_map(k->src, off, end - off, &e) < 0)
			return;
		fd = e.io ? qcow2_io_fd(e.io) : -1;
		/* a large folio (up to 2 MiB) is dropped only whole: one straddling the start of
		 * this range holds the end of the chunk before it, which the writer took already
		 * (drop_read()): dropped with this one */
		back = advice == POSIX_FADV_DONTNEED ? e.host_off & (DROP_ALIGN - 1) : 0;
		if (fd >= 0 && e.kind == QCOW2_EXTENT_DATA)
			posix_fadvise(fd, (off_t)(e.host_off - back), (off_t)(e.len + back),
				      advice);
		else if (fd >= 0 && e.kind == QCOW2_EXTENT_COMPRESSED)
			posix_fadvise(fd, (off_t)e.host_off, (off_t)e.comp_bytes, advice);
		off += e.len;
	}
}

/* Keep the prefetch cursor PREFETCH bytes of data ahead of item @i at @off. */
static void prefetch(struct copy *k, size_t i, uint64_t off)
{
	const struct plan *p = k->plan;
	uint64_t ahead = 0;
	size_t j;

	for (j = i; j < k->pf_item && j < p->n; j++) /* data already asked for */
		if (p->v[j].kind == ITEM_DATA)
			ahead += p->v[j].off + p->v[j].len - (j == i ? off : p->v[j].off);
	if (k->pf_item < p->n && k->pf_item >= i)
		ahead += k->pf_off - (k->pf_item == i ? off : p->v[k->pf_item].off);
	if (k->pf_item < i || (k->pf_item == i && k->pf_off < off)) {
		k->pf_item = i;
		k->pf_off = off;
		ahead = 0;
	}
	while (ahead < PREFETCH && k->pf_item < p->n) {
		const struct item *it = &p->v[k->pf_item];
		uint64_t n = it->off + it->len - k->pf_off;

		if (n > PREFETCH / 4)
			n = PREFETCH / 4;
		if (it->kind == ITEM_DATA) {
			advise_range(k, k->pf_off, n, POSIX_FADV_WILLNEED);
			ahead += n;
		}
		k->pf_off += n;
		if (k->pf_off >= it->off + it->len && ++k->pf_item < p->n)
			k->pf_off = p->v[k->pf_item].off;
	}
}

static int step(struct copy *k, uint64_t n)
{
	k->done += n;
	return qcow2_job_step(k->job, k->done, k->total);
}

/* ---- the readers: reads run ahead of the writes, several at once ----
 * Chunk number q of the plan's data (in order) is read by reader q % SLOTS into slot
 * q % SLOTS and written out by the caller's thread in order: up to SLOTS reads are in
 * flight while the writes go on, as deep a queue as qemu-img keeps. */

#define SLOTS 4

struct slot {
	uint8_t *buf, *ubuf;
	uint64_t off, n;
	int err;
	char msg[512]; /* @err's message: it was set in the reader's thread */
	bool full;
	uint64_t read_off, read_n; /* the reader's last chunk, not yet dropped (drop_read()) */
};

struct reader {
	pthread_t thread[SLOTS];
	unsigned started;
	pthread_mutex_t m;
	pthread_cond_t cv;
	struct slot s[SLOTS];
	unsigned tail; /* next slot to write out */
	bool stop;
	struct copy *k;
};

struct reader_arg {
	struct reader *rd;
	unsigned id;
};

/* Fill slot @sl with the chunk at @off (and @under's bytes, with @compare). */
static int read_chunk(struct copy *k, struct slot *sl, uint64_t off, uint64_t n)
{
	int r = qcow2_chain_pread(k->src, sl->buf, (size_t)n, off);

	if (r == 0 && k->o->compare && k->o->under)
		r = read_under(k, sl->ubuf, n, off);
	return r;
}

/* With @drop_read (copy.c's advise_range()): the slot's last chunk leaves the page cache, once
 * the writer has taken it (the slot is empty again). Never sooner: reader 0's read-ahead
 * (prefetch(), from its own chunk onward) may still ask for a chunk another reader has read
 * but the writer has not taken; a chunk the writer took lies behind every later read-ahead,
 * which starts at or past the writer. Called by the slot's reader only. */
static void drop_read(struct copy *k, struct slot *sl)
{
	if (k->o->drop_read && sl->read_n)
		advise_range(k, sl->read_off, sl->read_n, POSIX_FADV_DONTNEED);
	sl->read_n = 0;
}

/* Reader @id: chunk q of the data items for every q % SLOTS == @id, in order. */
static int reader_chunk(struct reader *rd, unsigned id, size_t i, uint64_t off, uint64_t n)
{
	struct slot *sl = &rd->s[id];
	int r;

	pthread_mutex_lock(&rd->m);
	while (sl->full && !rd->stop)
		pthread_cond_wait(&rd->cv, &rd->m);
	r = rd->stop ? -ECANCELED : 0;
	pthread_mutex_unlock(&rd->m);
	if (r < 0)
		return r;
	drop_read(rd->k, sl);
	if (id == 0)
		prefetch(rd->k, i, off);
	r = read_chunk(rd->k, sl, off, n);
	pthread_mutex_lock(&rd->m);
	sl->off = off;
	sl->n = n;
	sl->read_off = off;
	sl->read_n = r == 0 ? n : 0;
	sl->err = r;
	if (r < 0)
		snprintf(sl->msg, sizeof(sl->msg), "%s", qcow2_last_error());
	sl->full = true;
	pthread_cond_broadcast(&rd->cv);
	pthread_mutex_unlock(&rd->m);
	return r;
}

static void *reader_main(void *arg)
{
	struct reader *rd = ((struct reader_arg *)arg)->rd;
	unsigned id = ((struct reader_arg *)arg)->id;
	const struct plan *p = rd->k->plan;
	uint64_t q = 0;
	size_t i;
	int r = 0;

	free(arg);
	for (i = 0; i < p->n && r == 0; i++) {
		uint64_t off = p->v[i].off, end = off + p->v[i].len;

		for (; p->v[i].kind == ITEM_DATA && off < end && r == 0; q++) {
			uint64_t n = end - off < CHUNK ? end - off : CHUNK;

			if (q % SLOTS == id)
				r = reader_chunk(rd, id, i, off, n);
			off += n;
		}
	}
	if (rd->k->o->drop_read && rd->s[id].read_n) { /* the last chunk, once taken */
		bool taken;

		pthread_mutex_lock(&rd->m);
		while (rd->s[id].full && !rd->stop)
			pthread_cond_wait(&rd->cv, &rd->m);
		taken = !rd->s[id].full;
		pthread_mutex_unlock(&rd->m);
		if (taken)
			drop_read(rd->k, &rd->s[id]);
	}
	return NULL;
}

static void reader_stop(struct reader *rd)
{
	unsigned i;

	pthread_mutex_lock(&rd->m);
	rd->stop = true;
	pthread_cond_broadcast(&rd->cv);
	pthread_mutex_unlock(&rd->m);
	for (i = 0; i < rd->started; i++)
		pthread_join(rd->thread[i], NULL);
	for (i = 0; i < SLOTS; i++) {
		free(rd->s[i].buf);
		free(rd->s[i].ubuf);
	}
	pthread_cond_destroy(&rd->cv);
	pthread_mutex_destroy(&rd->m);
}

static int reader_start(struct reader *rd, struct copy *k)
{
	unsigned i;

	memset(rd, 0, sizeof(*rd));
	rd->k = k;
	pthread_mutex_init(&rd->m, NULL);
	pthread_cond_init(&rd->cv, NULL);
	for (i = 0; i < SLOTS; i++) {
		rd->s[i].buf = malloc(CHUNK);
		rd->s[i].ubuf = k->o->compare ? malloc(CHUNK) : NULL;
		if (!rd->s[i].buf || (k->o->compare && !rd->s[i].ubuf))
			return qcow2_oom();
	}
	for (i = 0; i < SLOTS; i++) {
		struct reader_arg *a = malloc(sizeof(*a));

		if (!a)
			return qcow2_oom();
		*a = (struct reader_arg){rd, i};
		if (pthread_create(&rd->thread[i], NULL, reader_main, a) != 0) {
			free(a);
			return qcow2_set_error(-EAGAIN, "cannot start a reader thread");
		}
		rd->started++;
	}
	return 0;
}

/* Write out the chunks of the data item [@off, @off + @len), in order. */
static int copy_data(struct copy *k, struct reader *rd, uint64_t off, uint64_t len)
{
	uint64_t end = off + len;
	int r = 0;

	while (off < end && r == 0) {
		struct slot *sl = &rd->s[rd->tail];
		double t0 = qcow2_clock(), t1, s1;

		pthread_mutex_lock(&rd->m);
		while (!sl->full)
			pthread_cond_wait(&rd->cv, &rd->m);
		pthread_mutex_unlock(&rd->m);
		t1 = qcow2_clock();
		s1 = qcow2_io_sync_secs();
		k->t_reads += t1 - t0;
		if (sl->off != off)
			r = qcow2_set_error(-EIO, "internal: copy out of step at %#" PRIx64, off);
		if (r == 0 && sl->err < 0)
			r = qcow2_set_error(sl->err, "%s", sl->msg);
		if (r == 0)
			r = put_pieces(k, sl->buf, k->o->compare && k->o->under ? sl->ubuf : NULL,
				       sl->n, off);
		k->t_writes += qcow2_clock() - t1 - (qcow2_io_sync_secs() - s1); /* "sync" apart */
		if (r == 0)
			r = step(k, sl->n);
		off += sl->n;
		pthread_mutex_lock(&rd->m);
		sl->full = false;
		rd->tail = (rd->tail + 1) % SLOTS;
		pthread_cond_broadcast(&rd->cv);
		pthread_mutex_unlock(&rd->m);
	}
	return r;
}

/* ---- compressed copies: whole clusters of the destination, read whole from the source.
 * Their offsets are gathered into batches; each batch is split into up to b->threads
 * contiguous shares, each read (a run of adjacent clusters at once) and compressed by its own
 * thread (reads of a chain and the codec are safe from many threads). Two batches take turns:
 * while the threads work on one, the caller's thread stores the one before it, in order, so
 * the file is laid out as one thread would lay it out. A batch's buffers belong to its share
 * threads from shares_start() to shares_wait(), and to the caller's thread otherwise: no
 * lock. */

#define BATCH	    (8u << 20) /* bytes of clusters read and compressed at once */
#define MAX_THREADS 16u
#define LEN_ZERO    (-5000) /* batch->len[]: an all-zero cluster, zeroed instead (no errno) */

struct batch;
struct batch_arg {
	struct batch *b;
	unsigned id, nt;
};

struct batch {
	const struct copy *k;
	uint8_t *in, *out; /* @cap clusters each */
	ssize_t *len;	   /* compressed bytes, 0 (stored plain) or LEN_ZERO */
	uint64_t *off;	   /* guest offset of each cluster */
	unsigned n, cap, threads;
	unsigned nt, started; /* shares, and threads started for them (0..@started - 1) */
	pthread_t t[MAX_THREADS];
	struct batch_arg args[MAX_THREADS];
	int err[MAX_THREADS]; /* what each share met (its message in @msg) */
	char msg[MAX_THREADS][256];
};

/* Two batches: @cur is being gathered; with @pending, the other one is compressed and waits
 * to be stored. */
struct pipe {
	struct batch b[2];
	unsigned cur;
	bool pending;
};

/* Read clusters [@i, @j) of @b, adjacent on the disk, with one read. */
static int read_run(struct batch *b, unsigned i, unsigned j)
{
	uint64_t cs = b->k->cluster, size = qcow2_chain_size(b->k->src), c = b->off[i];
	uint64_t n = (uint64_t)(j - i) * cs;

	if (c + n > size) { /* the disk's last cluster: zeros past its end */
		memset(b->in + (uint64_t)i * cs + (size - c), 0, (size_t)(c + n - size));
		n = size - c;
	}
	return qcow2_chain_pread(b->k->src, b->in + (uint64_t)i * cs, (size_t)n, c);
}

/* Share @id of @nt: read it, find its all-zero clusters, compress the others. */
static void *do_share(void *arg)
{
	struct batch *b = ((struct batch_arg *)arg)->b;
	unsigned id = ((struct batch_arg *)arg)->id, nt = ((struct batch_arg *)arg)->nt;
	unsigned i = b->n * id / nt, end = b->n * (id + 1) / nt, j;
	uint64_t cs = b->k->cluster;
	ssize_t len;
	int r = 0;

	for (; i < end && r == 0; i = j) {
		for (j = i + 1; j < end && b->off[j] == b->off[j - 1] + cs; j++)
			;
		r = read_run(b, i, j);
		for (; i < j && r == 0; i++) {
			if (!b->k->o->no_sparse && all_zero(b->in + i * cs, (size_t)cs)) {
				b->len[i] = LEN_ZERO;
				continue;
			}
			len = qcow2_chain_compress(b->k->o->dst, b->in + i * cs, b->out + i * cs);
			b->len[i] = len < 0 ? 0 : len;
			r = len < 0 ? (int)len : 0;
		}
	}
	b->err[id] = r;
	if (r < 0)
		snprintf(b->msg[id], sizeof(b->msg[id]), "%s", qcow2_last_error());
	return NULL;
}

/* Start the threads that read and compress @b's shares. */
static void shares_start(struct batch *b)
{
	unsigned i;

	b->nt = b->threads < b->n ? b->threads : b->n;
	for (i = 0; i < b->nt; i++)
		b->args[i] = (struct batch_arg){b, i, b->nt};
	for (b->started = 0; b->started < b->nt; b->started++)
		if (pthread_create(&b->t[b->started], NULL, do_share, &b->args[b->started]) != 0)
			break;
}

/* Wait for them (doing here the shares of threads that did not start). */
static int shares_wait(struct batch *b)
{
	unsigned i;
	int r = 0;

	for (i = b->started; i < b->nt; i++)
		do_share(&b->args[i]);
	for (i = 0; i < b->started; i++)
		pthread_join(b->t[i], NULL);
	for (i = 0; i < b->nt && r == 0; i++)
		if (b->err[i] < 0) /* the thread's message is its own: carried over */
			r = qcow2_set_error(b->err[i], "%s", b->msg[i]);
	b->nt = b->started = 0;
	return r;
}

/* Store the compressed clusters of @b, in order. */
static int store_batch(struct copy *k, struct batch *b)
{
	uint64_t size = qcow2_chain_size(k->src);
	unsigned i;
	int r = 0;

	for (i = 0; i < b->n && r == 0; i++) {
		uint64_t c = b->off[i], n = size - c < k->cluster ? size - c : k->cluster;

		if (b->len[i] == LEN_ZERO)
			r = dst_zero(k, c, n);
		else
			r = qcow2_chain_write_precompressed(k->o->dst, b->in + i * k->cluster,
							    b->out + i * k->cluster,
							    (size_t)b->len[i], c);
		if (r == 0) {
			k->st->written_bytes += n;
			r = step(k, n);
		}
	}
	b->n = 0;
	return r;
}

/* The gathered batch goes to its threads while the one before it is stored. */
static int pipe_turn(struct copy *k, struct pipe *pp)
{
	struct batch *b = &pp->b[pp->cur], *prev = &pp->b[1 - pp->cur];
	int r = 0, w;

	shares_start(b);
	if (pp->pending)
		r = store_batch(k, prev);
	pp->pending = false;
	w = shares_wait(b);
	if (r == 0)
		r = w;
	if (r < 0) {
		b->n = 0;
		return r;
	}
	pp->pending = true;
	pp->cur = 1 - pp->cur;
	return 0;
}

/* Store everything gathered so far (before a zeroing, and at the end). */
static int pipe_drain(struct copy *k, struct pipe *pp)
{
	int r = pp->b[pp->cur].n ? pipe_turn(k, pp) : 0;

	if (r == 0 && pp->pending)
		r = store_batch(k, &pp->b[1 - pp->cur]);
	pp->pending = false;
	return r;
}

/* Gather the clusters that hold [@off, @off + @len), passing each full batch on. @next: the
 * first cluster not yet gathered (items may share a cluster). */
static int copy_compressed(struct copy *k, struct pipe *pp, uint64_t off, uint64_t len,
			   uint64_t *next)
{
	uint64_t cs = k->cluster, end = off + len, c = off & ~(cs - 1);
	int r = 0;

	for (; c < end && r == 0; c += cs) {
		struct batch *b = &pp->b[pp->cur];

		if (c < *next)
			continue;
		b->off[b->n] = c;
		if (++b->n == b->cap)
			r = pipe_turn(k, pp);
		*next = c + cs;
	}
	return r;
}

static void batch_free(struct batch *b)
{
	free(b->in);
	free(b->out);
	free(b->len);
	free(b->off);
}

/* The threads that compress: as many as asked (qemu-img convert -m), else one per CPU, at
 * most 4 (as many as QEMU compresses with). */
static int batch_init(struct batch *b, const struct copy *k)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);

	memset(b, 0, sizeof(*b));
	b->k = k;
	b->threads = k->o->threads ? k->o->threads : cpus > 4 ? 4 : cpus > 1 ? (unsigned)cpus : 1;
	if (b->threads > MAX_THREADS)
		b->threads = MAX_THREADS;
	b->cap = BATCH / k->cluster > b->threads ? BATCH / k->cluster : b->threads;
	b->in = malloc(b->cap * k->cluster);
	b->out = malloc(b->cap * k->cluster);
	b->len = calloc(b->cap, sizeof(*b->len));
	b->off = calloc(b->cap, sizeof(*b->off));
	if (!b->in || !b->out || !b->len || !b->off)
		return qcow2_oom();
	return 0;
}

static int pipe_init(struct pipe *pp, const struct copy *k)
{
	int r;

	memset(pp, 0, sizeof(*pp));
	r = batch_init(&pp->b[0], k);
	return r < 0 ? r : batch_init(&pp->b[1], k);
}

static void pipe_free(struct pipe *pp)
{
	batch_free(&pp->b[0]);
	batch_free(&pp->b[1]);
}

static int run_plan(struct copy *k, const struct plan *p)
{
	struct reader rd;
	struct pipe *pp = NULL;
	uint64_t next = 0;
	size_t i;
	int r;

	if (k->o->compress) {
		pp = malloc(sizeof(*pp));
		if (!pp)
			return qcow2_oom();
		r = pipe_init(pp, k);
	} else {
		r = reader_start(&rd, k);
	}
	for (i = 0; i < p->n && r == 0; i++) {
		const struct item *it = &p->v[i];

		if (it->kind == ITEM_ZERO && pp)
			r = pipe_drain(k, pp); /* in order: what comes before first */
		if (r == 0 && it->kind == ITEM_ZERO) {
			double t0 = qcow2_clock(), s0 = qcow2_io_sync_secs();

			r = dst_zero(k, it->off, it->len);
			k->t_writes += qcow2_clock() - t0 - (qcow2_io_sync_secs() - s0);
			if (r == 0)
				r = step(k, it->len);
		} else if (r == 0 && pp) {
			prefetch(k, i, it->off); /* the disk reads ahead while batches compress */
			r = copy_compressed(k, pp, it->off, it->len, &next);
		} else if (r == 0) {
			r = copy_data(k, &rd, it->off, it->len);
		}
	}
	if (pp) {
		if (r == 0)
			r = pipe_drain(k, pp);
		pipe_free(pp);
		free(pp);
	} else {
		reader_stop(&rd);
	}
	return r;
}

/* The destination's cluster, and the pieces in which zeros are looked for: the cluster (the
 * block jobs), or with @min_sparse what qemu-img convert -S SIZE aligns its zero runs to, the
 * largest power of two not above SIZE (from a sector; a page for a raw file, the file system's
 * hole), so that the runs of data written and the ranges left alone are qemu-img's, down to
 * the subclusters of an extended L2 image and the holes in the file of a preallocated one. */
static int granule_of(const struct qcow2_copy_opts *o, uint64_t *cluster, uint64_t *g)
{
	struct qcow2_layer_info li;
	int r = 0;

	*cluster = 64 << 10;
	if (o->dst && (r = qcow2_chain_layer(o->dst, 0, &li)) == 0 && li.image)
		*cluster = qcow2_image_cluster_bytes(li.image);
	if (!o->min_sparse || o->no_sparse) {
		*g = o->dst ? *cluster : 4096;
		return r;
	}
	*g = o->dst ? 512 : 4096;
	while (*g * 2 <= o->min_sparse)
		*g *= 2;
	return r;
}

int qcow2_chain_copy(struct qcow2_chain *src, const struct qcow2_copy_opts *o,
		     const struct qcow2_job *job, struct qcow2_copy_stats *st)
{
	struct copy k = {.src = src, .o = o, .job = job, .st = st};
	struct qcow2_phase_mark m;
	struct plan p = {0};
	int r;

	memset(st, 0, sizeof(*st));
	if (!o->dry_run && !o->dst && !o->dst_raw)
		return qcow2_set_error(-EINVAL, "internal: copy without a destination");
	if (o->compress && !o->dst && !o->dry_run)
		return qcow2_set_error(-EINVAL, "compressed clusters need a qcow2 destination");
	r = granule_of(o, &k.cluster, &k.granule);
	m = qcow2_phase_start();
	if (r == 0)
		r = make_plan(&k, &p);
	if (!o->dry_run) /* a dry run is its caller's plan, measured there */
		qcow2_job_phase(job, "plan", m, 0);
	if (r == 0 && !o->dry_run) {
		k.plan = &p;
		k.pf_off = p.n ? p.v[0].off : 0;
		k.total = st->planned_bytes + st->planned_zero;
		m = qcow2_phase_start();
		r = run_plan(&k, &p);
		if (r == 0)
			r = qcow2_job_step(job, k.total, k.total);
		qcow2_job_phase(job, "copy", m, st->written_bytes);
		if (job && job->times) {
			job->times->copy_reads += k.t_reads;
			job->times->copy_writes += k.t_writes;
		}
	}
	free(p.v);
	return r;
}

int qcow2_copy_zero(const struct qcow2_copy_opts *o, uint64_t off, uint64_t n,
		    struct qcow2_copy_stats *st)
{
	struct copy k = {.o = o, .st = st};

	return dst_zero(&k, off, n);
}
