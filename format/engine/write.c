/* SPDX-License-Identifier: MIT */
/*
 * write.c - guest writes into one qcow2 image: copy-on-write allocation (zeroing and discard
 * are zero.c's, through the passes here), the L2 tables they change made ready by
 * write-table.c (which also sets the COPIED flags from the refcounts). The growth of the
 * virtual size is grow.c's, the crash-safe write-back of the cached metadata flush.c's
 * (docs/design.md, "Write order").
 *
 * Two paths. The fast path writes in place, with no lock but w->frees held shared (by the
 * caller), into clusters the image owns alone (L2 entry with the COPIED flag, and for extended
 * L2 entries every touched subcluster allocated). Everything else is a pass (write_run()) that
 * takes w->lock, the image's metadata lock, to allocate: a new cluster is assembled in memory
 * from what the layers below show (or zeros, or the old compressed or shared cluster) plus the
 * new data, written whole to a newly allocated cluster, and only then is the L2 entry pointed
 * at it. The pass drops w->lock while it reads below and writes (the in-flight table, locks.c,
 * keeps any other change of its clusters out meanwhile), so first writes into different
 * clusters run in parallel; a second writer of the same cluster waits for the pass to leave the
 * table and then finds the cluster allocated. Extended L2 subclusters, preallocation,
 * zeroing and compressed writes stay under w->lock throughout.
 *
 * Preallocation (a write without data) of clusters that need no copy is prealloc.c's.
 *
 * Write order: new clusters get their refcount in a cached refcount block, new L2 tables and
 * changed entries stay in the L2 cache (dirty), L1 changes in memory; qcow2_image_flush()
 * (flush.c) writes them back in the order described at struct qcow2_wstate (engine.h).
 * Clusters that lose their last pointer are counted down only after that flush.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "engine/engine.h"

#define MAX_RUN	      QCOW2_WRITE_MAX_RUN
#define PENDING_FLUSH 4096	   /* deferred frees that make a write flush */
#define WRITEBACK_MIN (256u << 10) /* new data written back at once from this size on */

static bool has_data_file(const struct qcow2_image *img)
{
	return img->h.incompat & QCOW2_INCOMPAT_DATA_FILE;
}

static bool is_ext(const struct qcow2_image *img)
{
	return img->l2_entry_words == 2;
}

/* ---- entries ---- */

/* Is the cluster with entry @e (bitmap @bm) written in place for bytes [@a, @b)? */
static bool in_place(const struct qcow2_image *img, uint64_t e, uint64_t bm, uint64_t a, uint64_t b)
{
	uint32_t s0, s1;
	uint64_t mask;

	if (!(e & QCOW2_OFLAG_COPIED) || (e & (QCOW2_OFLAG_COMPRESSED | QCOW2_L2E_RESERVED)))
		return false;
	if (!(e & QCOW2_L2E_OFFSET_MASK) && !has_data_file(img))
		return false;
	if (!is_ext(img))
		return !(e & QCOW2_OFLAG_ZERO);
	if (e & QCOW2_OFLAG_ZERO)
		return false;
	s0 = (uint32_t)(a >> img->sc_bits);
	s1 = (uint32_t)((b - 1) >> img->sc_bits);
	mask = (s1 - s0 == 31 ? 0xffffffffull : ((1ull << (s1 - s0 + 1)) - 1)) << s0;
	return (bm & mask) == mask;
}

/* Host offset of the cluster with entry @e: identity with an external data file. */
static uint64_t host_of(const struct qcow2_image *img, uint64_t e, uint64_t guest_cl)
{
	return has_data_file(img) ? guest_cl : e & QCOW2_L2E_OFFSET_MASK;
}

/* Write guest data @buf (@n bytes of guest @guest_off) at @host_off of the data file: as it is,
 * or for an encrypted image a copy encrypted for that host offset (image/crypt.c; whole
 * sectors: the chain widens partial ones). */
static int data_pwrite(struct qcow2_image *img, const void *buf, size_t n, uint64_t host_off,
		       uint64_t guest_off)
{
	uint8_t *enc;
	int r;

	if (!img->crypt)
		return qcow2_io_pwrite(img->data_io, buf, n, host_off);
	enc = malloc(n);
	if (!enc)
		return qcow2_oom();
	memcpy(enc, buf, n);
	r = qcow2_image_encrypt(img, enc, n, host_off, guest_off);
	if (r == 0)
		r = qcow2_io_pwrite(img->data_io, enc, n, host_off);
	free(enc);
	return r;
}

/* ---- the fast path ---- */

/* Write in place as far as clusters allow, from @off. Returns the bytes written (0: the first
 * cluster needs the slow path) or -errno. */
static ssize_t write_in_place(struct qcow2_image *img, const uint8_t *buf, size_t n, uint64_t off)
{
	uint64_t words[2 * 64];
	uint64_t cs = img->cluster_bytes, cl = off >> img->h.cluster_bits, l2_off, e;
	uint32_t ew = img->l2_entry_words, l1_idx = (uint32_t)(cl / img->l2_entries);
	uint32_t l2_idx = (uint32_t)(cl % img->l2_entries), k, i;
	uint64_t run_host = 0;
	size_t done = 0, run = 0; /* the pending run: @run bytes to @run_host */
	int r;

	/* Not before the first change of the open is durable, its bitmaps in use: the slow path
	 * makes it (a table may have passed its check though that first change failed). */
	if (l1_idx >= img->l1.n || !__atomic_load_n(&img->w->began, __ATOMIC_ACQUIRE))
		return 0;
	e = qcow2_write_l1_get(img, l1_idx);
	l2_off = e & QCOW2_L1E_OFFSET_MASK;
	if (!l2_off || !(e & QCOW2_OFLAG_COPIED) || !qcow2_overlap_table_checked(img, l2_off))
		return 0; /* the slow path checks the table first */
	k = qcow2_write_run_clusters(img, off, n, 64);
	r = qcow2_l2cache_get(img->l2cache, img->io, l2_off, l2_idx * ew, k * ew, words);
	if (r < 0)
		return r;
	/* the guest range this call changes, here or in the slow path after it (a preallocation
	 * changes nothing the guest reads) */
	if (buf)
		qcow2_bitmaps_mark(img, off, n);
	for (i = 0; i < k && done < n; i++) {
		uint64_t pos = off + done, in = pos & (cs - 1), host;
		size_t len = (size_t)(cs - in < n - done ? cs - in : n - done);
		uint64_t ent = words[i * ew], bm = ew == 2 ? words[i * ew + 1] : 0;

		if (!in_place(img, ent, bm, in, in + len))
			break;
		host = host_of(img, ent, pos - in) + in;
		if (run && host != run_host + run) { /* not contiguous: write the run so far */
			r = buf ? data_pwrite(img, buf + done - run, run, run_host,
					      off + done - run)
				: 0;
			if (r < 0)
				return r;
			run = 0;
		}
		if (!run)
			run_host = host;
		run += len;
		done += len;
	}
	/* clusters contiguous in the file go out in one write; a large one starts its writeback
	 * at once, as new extents do (a later flush then has less to wait for) */
	r = run && buf ? data_pwrite(img, buf + done - run, run, run_host, off + done - run) : 0;
	if (r < 0)
		return r;
	if (buf && run >= WRITEBACK_MIN)
		qcow2_io_start_writeback(img->data_io, run_host, run);
	if (done && buf)
		__atomic_store_n(&img->w->data_dirty, true, __ATOMIC_RELEASE);
	return (ssize_t)done;
}

/* ---- the slow path ---- */

/* Fill @buf (@n bytes at guest @off) with what the layers below show. */
static int fill_below(const struct qcow2_fill *fill, void *buf, size_t n, uint64_t off)
{
	if (!fill || !fill->has_backing) {
		memset(buf, 0, n);
		return 0;
	}
	return fill->read(fill->ctx, buf, n, off);
}

/* Read the whole old content of the cluster with entry @e into @buf (@bm: its bitmap). */
static int old_content(struct qcow2_image *img, uint64_t e, uint64_t bm, uint64_t guest_cl,
		       const struct qcow2_fill *fill, uint8_t *buf)
{
	uint64_t cs = img->cluster_bytes, host, scb = 1ull << img->sc_bits;
	uint32_t i;
	int r;

	if (e & QCOW2_OFLAG_COMPRESSED) {
		struct qcow2_extent x = {.kind = QCOW2_EXTENT_COMPRESSED, .io = img->io};

		r = qcow2_map_compressed(img, e, &x.host_off, &x.comp_bytes);
		return r < 0 ? r : qcow2_image_read_compressed(img, &x, 0, buf, cs);
	}
	host = host_of(img, e, guest_cl);
	if (!is_ext(img)) {
		if (e & QCOW2_OFLAG_ZERO) {
			memset(buf, 0, cs);
			return 0;
		}
		/* allocated: an offset, or (external data file, identity mapped) the COPIED flag */
		if ((e & QCOW2_L2E_OFFSET_MASK) || (has_data_file(img) && (e & QCOW2_OFLAG_COPIED)))
			return qcow2_io_pread_full(img->data_io, buf, cs, host) < 0
				   ? -EIO
				   : qcow2_image_decrypt(img, buf, cs, host, guest_cl);
		return fill_below(fill, buf, cs, guest_cl);
	}
	for (i = 0; i < 32; i++) {
		uint8_t *p = buf + i * scb;

		if (bm >> i & 1)
			r = qcow2_io_pread(img->data_io, p, scb, host + i * scb) < 0
				? -EIO
				: qcow2_image_decrypt(img, p, scb, host + i * scb,
						      guest_cl + i * scb);
		else if (bm >> (32 + i) & 1)
			r = (memset(p, 0, scb), 0);
		else
			r = fill_below(fill, p, scb, guest_cl + i * scb);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Count down what entry @e pointed at (after the next flush). */
int qcow2_write_release_entry(struct qcow2_image *img, uint64_t e)
{
	uint64_t host, bytes;
	int r;

	if (has_data_file(img))
		return 0; /* data clusters of an external file are not refcounted */
	if (e & QCOW2_OFLAG_COMPRESSED) {
		r = qcow2_map_compressed(img, e, &host, &bytes);
		return r < 0 ? r : qcow2_refcount_defer_free(img, host & ~511ull, bytes);
	}
	host = e & QCOW2_L2E_OFFSET_MASK;
	return host ? qcow2_refcount_defer_free(img, host, img->cluster_bytes) : 0;
}

/* @n new clusters: from the allocator, or identity-mapped in an external data file. */
static int new_clusters(struct qcow2_image *img, uint64_t guest_cl, uint64_t n, uint64_t *host)
{
	if (has_data_file(img)) {
		*host = guest_cl;
		return 0;
	}
	return qcow2_refcount_alloc(img, n, host);
}

static void drop_clusters(struct qcow2_image *img, uint64_t host, uint64_t n)
{
	if (!has_data_file(img))
		qcow2_refcount_unalloc(img, host, n);
}

/* Rewrite one cluster whole into a new one: old content, then [@in, @in + @len) of @data
 * (NULL: no new data). @ent (1 or 2 words) is updated. */
int qcow2_write_rewrite_cluster(struct qcow2_image *img, uint64_t guest_cl, uint64_t *ent,
				uint64_t in, size_t len, const uint8_t *data,
				const struct qcow2_fill *fill)
{
	uint64_t cs = img->cluster_bytes, host;
	uint8_t *buf = malloc(cs);
	int r;

	if (!buf)
		return qcow2_oom();
	r = old_content(img, ent[0], is_ext(img) ? ent[1] : 0, guest_cl, fill, buf);
	if (r == 0 && data)
		memcpy(buf + in, data, len);
	if (r == 0)
		r = new_clusters(img, guest_cl, 1, &host);
	if (r == 0) {
		r = data_pwrite(img, buf, cs, host, guest_cl);
		if (r < 0)
			drop_clusters(img, host, 1);
	}
	free(buf);
	if (r == 0)
		r = qcow2_write_release_entry(img, ent[0]);
	if (r < 0)
		return r;
	ent[0] = host | QCOW2_OFLAG_COPIED;
	if (is_ext(img))
		ent[1] = 0xffffffffull; /* every subcluster allocated */
	return 0;
}

/* Extended L2: the host cluster guest cluster @guest_cl (entry @e, bitmap @bm) writes its
 * subclusters to: its own, or a new one, holding a copy of a shared cluster's allocated
 * subclusters (the old one counted down by the pass when it stores the new entry). */
static int own_cluster(struct qcow2_image *img, uint64_t guest_cl, uint64_t e, uint64_t bm,
		       uint64_t *target)
{
	uint64_t cs = img->cluster_bytes, old = host_of(img, e, guest_cl);
	uint8_t *copy;
	int r;

	*target = old;
	if ((e & QCOW2_OFLAG_COPIED) && old)
		return 0;
	r = new_clusters(img, guest_cl, 1, target);
	if (r < 0)
		return r;
	if (old && (bm & 0xffffffffull)) { /* shared: copy the old cluster first */
		/* (encrypted: decrypted and encrypted again, for the new host offset's IVs) */
		copy = malloc(cs);
		r = copy ? qcow2_io_pread_full(img->data_io, copy, cs, old) : qcow2_oom();
		if (r == 0)
			r = qcow2_image_decrypt(img, copy, cs, old, guest_cl);
		if (r == 0)
			r = data_pwrite(img, copy, cs, *target, guest_cl);
		free(copy);
	} else {
		qcow2_write_quiesce(img); /* no unlocked write past the end is cut off */
		r = qcow2_io_grow(img->data_io, *target + cs);
	}
	if (r < 0)
		drop_clusters(img, *target, 1);
	return r;
}

/* Extended L2: write [@in, @in + @len) of the cluster, allocating only the subclusters it
 * touches; a partly written subcluster is completed from below (or zeros). */
static int write_subclusters(struct qcow2_image *img, uint64_t guest_cl, uint64_t *ent, uint64_t in,
			     size_t len, const uint8_t *data, const struct qcow2_fill *fill)
{
	uint64_t scb = 1ull << img->sc_bits, bm = ent[1], target, end = in + len;
	uint32_t s0 = (uint32_t)(in / scb), s1 = (uint32_t)((end - 1) / scb), i;
	uint8_t *sub;
	int r;

	r = own_cluster(img, guest_cl, ent[0], bm, &target);
	if (r < 0)
		return r;
	sub = malloc(scb);
	if (!sub)
		return qcow2_oom();
	for (i = s0; i <= s1 && r == 0; i++) {
		uint64_t a = i * scb > in ? i * scb : in,
			 b = (i + 1) * scb < end ? (i + 1) * scb : end;

		if (bm >> i & 1) { /* allocated: write in place */
			if (data)
				r = data_pwrite(img, data + (a - in), b - a, target + a,
						guest_cl + a);
			continue;
		}
		if (data && a == i * scb && b == (i + 1) * scb) {
			r = data_pwrite(img, data + (a - in), scb, target + a, guest_cl + a);
		} else {
			if (bm >> (32 + i) & 1)
				memset(sub, 0, scb);
			else
				r = fill_below(fill, sub, scb, guest_cl + i * scb);
			if (r == 0 && data)
				memcpy(sub + (a - i * scb), data + (a - in), b - a);
			if (r == 0)
				r = data_pwrite(img, sub, scb, target + i * scb,
						guest_cl + i * scb);
		}
		bm = (bm | 1ull << i) & ~(1ull << (32 + i));
	}
	free(sub);
	if (r < 0)
		return r;
	ent[0] = (has_data_file(img) ? guest_cl : target) | QCOW2_OFLAG_COPIED;
	ent[1] = bm;
	return 0;
}

/* The end of the run of clusters from @i (< @k) that one allocation takes whole: whole
 * clusters within @left bytes, none written in place (a write) or each qcow2_prealloc_only()
 * (a preallocation). */
static uint32_t whole_span(const struct qcow2_image *img, const uint64_t *ents, uint32_t i,
			   uint32_t k, uint64_t left, bool write, bool backing)
{
	uint64_t cs = img->cluster_bytes;
	uint32_t ew = img->l2_entry_words, j;

	for (j = i + 1; j < k && left - (j - i) * cs >= cs; j++) {
		const uint64_t *e = &ents[j * ew];

		if (write ? in_place(img, e[0], ew == 2 ? e[1] : 0, 0, cs)
			  : !qcow2_prealloc_only(img, e, backing))
			break;
	}
	return j;
}

/* Store the entries of @ents (@k from L2 index @l2_idx of the table at @l2_off) that differ
 * from @orig, a run of changed entries at a time. The first error, after trying them all. */
static int store_changed(struct qcow2_image *img, uint64_t l2_off, uint32_t l2_idx,
			 const uint64_t *ents, const uint64_t *orig, uint32_t k)
{
	uint32_t ew = img->l2_entry_words, i, j;
	int r = 0, e;

	for (i = 0; i < k; i++) {
		if (memcmp(&ents[i * ew], &orig[i * ew], ew * 8) == 0)
			continue;
		for (j = i + 1; j < k && memcmp(&ents[j * ew], &orig[j * ew], ew * 8) != 0; j++)
			;
		e = qcow2_write_l2_modify(img, l2_off, NULL, (l2_idx + i) * ew, (j - i) * ew,
					  &ents[i * ew]);
		if (e < 0 && r == 0)
			r = e;
		i = j;
	}
	return r;
}

/* ---- a write pass ----
 *
 * One pass writes from @off up to the end of one L2 table (at most MAX_RUN clusters), in three
 * phases (docs/design.md, "Parallel first writes"):
 * 1. plan, w->lock held: the pass enters its clusters in the in-flight table (waiting until no
 *    other pass has any of them), loads their entries (the table made ready and pinned) and
 *    decides each cluster's step: a write in place, new clusters for a run of whole ones, or a
 *    new cluster assembled from the old content (copy-on-write). New clusters are allocated
 *    here (their refcount cached; nothing points at them). Preallocation and extended L2
 *    subclusters are done here, under the lock, as before.
 * 2. I/O, with w->lock dropped (and w->frees still shared, as the caller holds it): what lies
 *    below is read, merged and written whole to the new clusters; in-place data written.
 * 3. store, w->lock held again: data marked dirty, the entries of what was written stored,
 *    only then what they replaced counted down (deferred frees: never queued while the lock is
 *    dropped, so no flush can free a cluster an entry on disk still names); a step that failed
 *    gives its clusters back; the pass leaves the table, waking those waiting.
 * Phase 2 is skipped (the I/O done under the lock) when nothing needs allocating I/O. A flush
 * that runs during phase 2 writes back tables without the pass's entries (not yet stored) and
 * syncs no data of it; one that runs after phase 3 finds data_dirty set and syncs the data
 * before the tables that point at it (flush.c). */

enum step_kind { STEP_IN_PLACE, STEP_WHOLE, STEP_COW };

/* One step of a pass: clusters [@i, @j) of the run, bytes [@at, @at + @len) of the pass's data;
 * @host: where they go (in place: the byte offset, else the first new cluster); @in: the
 * offset of the data in the cluster (copy-on-write). */
struct step {
	enum step_kind kind;
	uint32_t i, j;
	uint64_t host, in;
	size_t at, len;
};

struct pass {
	uint64_t ents[2 * MAX_RUN], orig[2 * MAX_RUN];
	struct step steps[MAX_RUN];
	uint32_t n_steps, k;
	uint64_t l2_off, first_cl; /* the table, the guest offset of the run's first cluster */
	bool alloc;		   /* a step writes new clusters: phase 2 drops the lock */
	bool loaded;		   /* @ents and @orig hold the run's entries */
};

static void add_step(struct pass *p, enum step_kind kind, uint32_t i, uint32_t j, uint64_t host,
		     uint64_t in, size_t at, size_t len)
{
	p->steps[p->n_steps++] = (struct step){kind, i, j, host, in, at, len};
	if (kind != STEP_IN_PLACE)
		p->alloc = true;
}

/* Point clusters [@i, @j) of the pass at new clusters from @host (all subclusters allocated). */
static void point_new(struct qcow2_image *img, struct pass *p, uint32_t i, uint32_t j,
		      uint64_t host)
{
	uint32_t ew = img->l2_entry_words, k;

	for (k = i; k < j; k++) {
		p->ents[k * ew] =
		    (host + (uint64_t)(k - i) * img->cluster_bytes) | QCOW2_OFLAG_COPIED;
		if (ew == 2)
			p->ents[k * ew + 1] = 0xffffffffull;
	}
}

/* Phase 1. Returns the bytes the pass covers, or -errno (store() then gives back the new
 * clusters of its steps). */
static ssize_t plan(struct qcow2_image *img, struct pass *p, const uint8_t *buf, size_t n,
		    uint64_t off, const struct qcow2_fill *fill)
{
	uint64_t cs = img->cluster_bytes, host;
	uint32_t ew = img->l2_entry_words, i, j;
	bool backing = fill && fill->has_backing;
	size_t done = 0;
	int r;

	r = qcow2_write_load_run(img, off, p->k, p->ents, &p->l2_off);
	if (r < 0)
		return r;
	memcpy(p->orig, p->ents, (size_t)p->k * ew * 8);
	p->loaded = true;
	for (i = 0; i < p->k && done < n && r == 0;) {
		uint64_t pos = off + done, in = pos & (cs - 1), *ent = &p->ents[i * ew];
		size_t len = (size_t)(cs - in < n - done ? cs - in : n - done);
		const uint8_t *data = buf ? buf + done : NULL;

		if (in_place(img, ent[0], ew == 2 ? ent[1] : 0, in, in + len)) {
			if (data)
				add_step(p, STEP_IN_PLACE, i, i + 1,
					 host_of(img, ent[0], pos - in) + in, in, done, len);
		} else if (in == 0 && (data ? len == cs
					    : (len == cs || pos + len == img->h.size) &&
						  qcow2_prealloc_only(img, ent, backing))) {
			/* a run of whole clusters: one allocation, one write (or none) */
			j = whole_span(img, p->ents, i, p->k, n - done, data != NULL, backing);
			if (!data) {
				r = qcow2_prealloc_clusters(img, p->ents, i, j);
			} else if ((r = new_clusters(img, p->first_cl + i * cs, j - i, &host)) ==
				   0) {
				add_step(p, STEP_WHOLE, i, j, host, 0, done, (size_t)(j - i) * cs);
				point_new(img, p, i, j, host);
			}
			if (r == 0) {
				done += (j - i) * cs < n - done ? (size_t)((j - i) * cs) : n - done;
				i = j;
			}
			continue;
		} else if (ew == 2 && !(ent[0] & QCOW2_OFLAG_COMPRESSED)) {
			r = write_subclusters(img, pos - in, ent, in, len, data, fill);
		} else if ((r = new_clusters(img, pos - in, 1, &host)) == 0) {
			add_step(p, STEP_COW, i, i + 1, host, in, done, len);
			point_new(img, p, i, i + 1, host);
		}
		if (r == 0) {
			done += len;
			i++;
		}
	}
	return r < 0 ? r : (ssize_t)done;
}

/* Phase 2: the step @s of data @buf (NULL: none, a preallocation's copy-on-write). */
static int run_step(struct qcow2_image *img, const struct pass *p, const struct step *s,
		    const uint8_t *buf, const struct qcow2_fill *fill)
{
	uint64_t cs = img->cluster_bytes, guest = p->first_cl + (uint64_t)s->i * cs;
	const uint64_t *old = &p->orig[s->i * img->l2_entry_words];
	uint8_t *c;
	int r;

	if (s->kind == STEP_IN_PLACE)
		return data_pwrite(img, buf + s->at, s->len, s->host, guest + s->in);
	if (s->kind == STEP_WHOLE) {
		r = data_pwrite(img, buf + s->at, s->len, s->host, guest);
		if (r == 0 && s->len >= WRITEBACK_MIN)
			qcow2_io_start_writeback(img->data_io, s->host, s->len);
		return r;
	}
	c = malloc(cs);
	if (!c)
		return qcow2_oom();
	r = old_content(img, old[0], is_ext(img) ? old[1] : 0, guest, fill, c);
	if (r == 0 && buf)
		memcpy(c + s->in, buf + s->at, s->len);
	if (r == 0)
		r = data_pwrite(img, c, cs, s->host, guest);
	free(c);
	return r;
}

/* Phase 3, w->lock held: steps [@failed, n_steps) did not write; their clusters are given back
 * and their entries left as they were; the rest stored, then what they replaced counted down. */
static int store(struct qcow2_image *img, struct pass *p, uint32_t failed)
{
	uint32_t ew = img->l2_entry_words, s, k;
	uint32_t idx = (uint32_t)((p->first_cl >> img->h.cluster_bits) % img->l2_entries);
	int r, e;

	for (s = failed; s < p->n_steps; s++) {
		const struct step *st = &p->steps[s];

		if (st->kind == STEP_IN_PLACE)
			continue;
		drop_clusters(img, st->host, st->j - st->i);
		memcpy(&p->ents[st->i * ew], &p->orig[st->i * ew],
		       (size_t)(st->j - st->i) * ew * 8);
	}
	/* the data of what is stored is synced by the next flush before the tables */
	__atomic_store_n(&img->w->data_dirty, true, __ATOMIC_RELEASE);
	r = store_changed(img, p->l2_off, idx, p->ents, p->orig, p->k);
	for (k = 0; k < p->k; k++) {
		uint64_t now[2];

		if (p->ents[k * ew] == p->orig[k * ew])
			continue;
		/* after a failed store, counted down only where the table holds the new entry (the
		 * old one still pointing at it otherwise, and the new cluster leaked) */
		e = r == 0 ? 0
			   : qcow2_l2cache_get(img->l2cache, img->io, p->l2_off, (idx + k) * ew, ew,
					       now);
		if (e == 0 && (r == 0 || now[0] == p->ents[k * ew]))
			e = qcow2_write_release_entry(img, p->orig[k * ew]);
		if (e < 0 && r == 0)
			r = e;
	}
	return r;
}

/* A pass (above). w->lock held on entry and return (dropped in between). Returns the bytes
 * handled. */
static ssize_t write_run(struct qcow2_image *img, const uint8_t *buf, size_t n, uint64_t off,
			 const struct qcow2_fill *fill)
{
	struct pass *p = malloc(sizeof(*p));
	struct qcow2_inflight f;
	uint64_t cl = off >> img->h.cluster_bits;
	uint32_t s, failed;
	ssize_t got;
	int r, e;

	if (!p)
		return qcow2_oom();
	p->n_steps = 0;
	p->alloc = p->loaded = false;
	p->k = qcow2_write_run_clusters(img, off, n, MAX_RUN);
	p->first_cl = cl << img->h.cluster_bits;
	qcow2_write_inflight_enter(img, &f, cl, p->k);
	got = plan(img, p, buf, n, off, fill);
	r = got < 0 ? (int)got : 0;
	failed = r < 0 ? 0 : p->n_steps; /* a plan that failed gives all its clusters back */
	if (r == 0) {
		if (p->alloc)
			qcow2_write_io_begin(img);
		for (s = 0; s < p->n_steps && failed == p->n_steps; s++)
			if ((r = run_step(img, p, &p->steps[s], buf, fill)) < 0)
				failed = s;
		if (p->alloc)
			qcow2_write_io_end(img);
	}
	e = p->loaded ? store(img, p, failed) : 0;
	if (e < 0 && r == 0)
		r = e;
	qcow2_write_inflight_leave(img, &f);
	free(p);
	return r < 0 ? r : got;
}

/* Flush when the cache of dirty tables or the list of deferred frees has grown large. */
int qcow2_write_relieve(struct qcow2_image *img)
{
	if (qcow2_l2cache_pressure(img->l2cache) || img->w->n_pending > PENDING_FLUSH)
		return qcow2_image_flush_locked(img);
	return 0;
}

/* One slow-path pass under the metadata lock: the first change made durable first, then the
 * run, then a flush if the caches are full. */
ssize_t qcow2_write_locked_run(struct qcow2_image *img, qcow2_write_run_fn run, const uint8_t *buf,
			       size_t n, uint64_t off, const struct qcow2_fill *fill,
			       bool guest_change)
{
	uint64_t cl = off >> img->h.cluster_bits;
	ssize_t got;
	int r;

	qcow2_image_meta_lock(img);
	/* the tables first: a refused change leaves the header as it was too */
	r = qcow2_overlap_check_tables(img, (uint32_t)(cl / img->l2_entries),
				       (uint32_t)(cl % img->l2_entries),
				       qcow2_write_run_clusters(img, off, n, MAX_RUN));
	if (r == 0)
		r = qcow2_image_begin_write(img);
	/* Every guest-visible change goes through here or write_in_place(): a write with data or
	 * a zeroing marks the bitmaps before its data is written (a preallocation, the
	 * copy-on-write fills and the emptying of an overlay whose data the layers below now
	 * hold change nothing the guest reads). */
	if (r == 0 && guest_change)
		qcow2_bitmaps_mark(img, off, n);
	got = r < 0 ? r : run(img, buf, n, off, fill);
	if (got >= 0 && (r = qcow2_write_relieve(img)) < 0)
		got = r;
	qcow2_image_meta_unlock(img);
	return got;
}

int qcow2_image_write(struct qcow2_image *img, const void *buf, size_t n, uint64_t off,
		      const struct qcow2_fill *fill)
{
	const uint8_t *p = buf;
	size_t done = 0;
	ssize_t got;
	int r;

	if ((r = qcow2_overlap_writable(img)) < 0 || (r = qcow2_image_data_writable(img)) < 0)
		return r;
	if (off > img->h.size || n > img->h.size - off)
		return qcow2_set_error(-EFBIG, "'%s': write past the end of the disk", img->name);
	while (done < n) {
		got = write_in_place(img, p ? p + done : NULL, n - done, off + done);
		if (got > 0) {
			done += (size_t)got;
			continue;
		}
		if (got == 0)
			got = qcow2_write_locked_run(img, write_run, p ? p + done : NULL, n - done,
						     off + done, fill, p != NULL);
		if (got < 0)
			return qcow2_error_prefix((int)got, img->name);
		done += (size_t)got;
	}
	return 0;
}
