/* SPDX-License-Identifier: MIT */
/*
 * live.c - block jobs on a chain that is open and in use (the daemon's view of it, read and
 * written meanwhile): a live external snapshot, a live pull, a live intermediate commit and an
 * active commit with pivot (libvirt's `blockcommit --active --pivot`). The chain object stays
 * the one every handle uses; only its layers change (chain/live.c).
 *
 * Locking argument (chain/live.c has the lock's side):
 * - Requests hold c->layers_rw shared (qcow2_chain_enter(), the writes of chain-write.c); a
 *   layer change holds it exclusive (qcow2_chain_layers_begin/end()), between requests: a
 *   request sees the old layers or the new ones, never a half-moved array, and the owner map
 *   is made anew under the same exclusive hold.
 * - One live job at a time per chain (c->live_job): only the job changes the layer array, so
 *   the job reads it without the lock; requests only read it.
 * - The data is copied while requests run. A pull allocates ranges in the top with what lies
 *   below (qcow2_chain_zero(QCOW2_ZERO_ALLOCATE)), a copy-on-write under the top's w->lock that
 *   keeps what the top already has: a cluster the guest wrote is never overwritten. A commit
 *   into a layer below the top cannot race the guest, who writes only the top; it writes that
 *   layer through a handle of its own, and the chain reads the layer only where no layer above
 *   has data, which the commit never writes. An active commit tracks every change of the top
 *   (c->dirty, set after each change) and copies the changed units again until few are left,
 *   then copies the last ones with no request running.
 * - Backing pointers move through the image that holds them: the top's through the chain's
 *   own writable image (qcow2_image_set_backing()), under the exclusive hold.
 *
 * Write order, as the offline jobs (commit.c): data copied and durable, then one header write
 * moves the pointer, durable, then the layers leave the chain; no file is deleted here. Killed
 * anywhere, every image is valid and every view shows what it showed (the data copied is what
 * those views already show), and the offline job run again completes it. A cancel stops before
 * the pointer moves: the view and the layers are unchanged.
 *
 * QEMU's locks: an image a job writes is upgraded to writer on the chain's own description
 * (the job's writable handle opens without locks, as commit.c's); the new top of a pivot takes
 * them over (qcow2_io_lock_move_writer()), the old top of an external snapshot gives write and
 * resize back and stays a reader.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jobs/jobs.h"

#define LIVE_STEP	(1u << 20)   /* bytes read or allocated per step */
#define LIVE_CONVERGED	(4ull << 20) /* an active commit pivots with at most this much left */
#define LIVE_MAX_PASSES 32	     /* ... or after this many passes over what changed */

struct live {
	struct qcow2_chain *c;
	const struct qcow2_chain_opts *o;
	const struct qcow2_job *job;
	struct qcow2_plan *plan;
	unsigned t, b;		 /* layers (b, t] merged into b; t 0: the top (active) */
	struct qcow2_chain *dst; /* base opened for writing (no locks of its own) */
	uint8_t *buf;
	uint64_t done, total;
};

/* One live job at a time on @c. */
static int job_begin(struct qcow2_chain *c)
{
	bool idle = false;

	if (!__atomic_compare_exchange_n(&c->live_job, &idle, true, false, __ATOMIC_ACQ_REL,
					 __ATOMIC_ACQUIRE))
		return qcow2_set_error(-EBUSY, "'%s': another job is running on this disk",
				       c->layers[0].path);
	return 0;
}

static void job_end(struct qcow2_chain *c)
{
	__atomic_store_n(&c->live_job, false, __ATOMIC_RELEASE);
}

/* What a live job needs of the chain: a writable qcow2 top, no snapshot view, and (the jobs
 * do not re-encrypt) no encrypted layer among @upto + 1 first ones. */
static int check_chain(struct qcow2_chain *c, unsigned upto)
{
	unsigned i;

	if (c->pinned || !c->layers[0].img || !c->layers[0].img->w)
		return qcow2_set_error(-EROFS, "'%s' is not open for writing", c->layers[0].path);
	for (i = 0; i <= upto && i < c->n; i++)
		if (c->layers[i].img && qcow2_image_encrypted(c->layers[i].img))
			return qcow2_set_error(-ENOTSUP,
					       "'%s': encrypted images are not changed by live "
					       "jobs (unmount, or use --offline)",
					       c->layers[i].path);
	return 0;
}

/* The size of the view now (it changes only under the top's exclusive lock). */
static uint64_t view_size(struct qcow2_chain *c)
{
	uint64_t s;

	qcow2_chain_enter(c);
	s = c->size;
	qcow2_chain_leave(c);
	return s;
}

/* ---- live external snapshot ---- */

/* The name @overlay stores for the top: relative when both live in one directory. */
static int overlay_backing_name(struct qcow2_chain *c, const char *overlay, char *name, size_t cap)
{
	char a[PATH_MAX], b[PATH_MAX], dir_b[PATH_MAX];
	char *slash;

	snprintf(name, cap, "%s", overlay);
	slash = strrchr(name, '/');
	if (slash)
		*slash = 0;
	if (!realpath(slash ? (name[0] ? name : "/") : ".", dir_b))
		return qcow2_set_error(-errno, "'%s': %s", overlay, strerror(errno));
	if (strlen(dir_b) + 3 > sizeof(dir_b))
		return qcow2_set_error(-ENAMETOOLONG, "'%s': name too long", overlay);
	strcat(dir_b, "/x");
	snprintf(a, sizeof(a), "%s", c->layers[0].path);
	snprintf(b, sizeof(b), "%s", dir_b);
	return qcow2_commit_name_for(dir_b, c->layers[0].path, strcmp(dirname(a), dirname(b)) == 0,
				     name, cap);
}

/* The overlay's directory must lie where the chain's files may (@o's root and allowed
 * directories): a job run for a caller creates nothing elsewhere. */
static int check_overlay_dir(const char *overlay, const struct qcow2_chain_opts *o)
{
	char dir[PATH_MAX], canon[PATH_MAX];

	snprintf(dir, sizeof(dir), "%s", overlay);
	return qcow2_chain_resolve_top(o, dirname(dir), canon, sizeof(canon));
}

/* The new overlay gets the owner, group and mode of the image it snapshots: its view then
 * grants no more and no less than the image's did. */
static int same_owner(struct qcow2_chain *c, const char *overlay)
{
	struct stat st;

	if (fstat(qcow2_io_fd(c->layers[0].img->io), &st) < 0 ||
	    (chown(overlay, st.st_uid, st.st_gid) < 0 && errno != EPERM) ||
	    chmod(overlay, st.st_mode & 07777) < 0)
		return qcow2_set_error(-errno, "'%s': cannot set its owner and mode: %s", overlay,
				       strerror(errno));
	return 0;
}

/* Open the new overlay for writing, as the chain's top opens (locked as the top is), and check
 * that it backs onto the top. */
static int open_overlay(struct qcow2_chain *c, const char *overlay,
			const struct qcow2_chain_opts *o, char *canon, struct qcow2_image **img)
{
	char below[PATH_MAX];
	int r = qcow2_chain_resolve_top(o, overlay, canon, PATH_MAX);

	if (r == 0)
		r = qcow2_image_open_canonical(canon, o, QCOW2_OPEN_WRITE | QCOW2_OPEN_NOFOLLOW,
					       QCOW2_READER_SHARED, img);
	if (r < 0)
		return r;
	r = qcow2_chain_resolve_path(o, canon, (*img)->h.backing_file, below, sizeof(below));
	if (r == 0 && strcmp(below, c->layers[0].path) != 0)
		r = qcow2_set_error(-EINVAL, "'%s' does not back onto '%s'", overlay,
				    c->layers[0].path);
	if (r < 0) {
		qcow2_image_close(*img);
		*img = NULL;
	}
	return r;
}

/* With no request running: the old top written back and made a reader, the overlay the top. */
static int switch_to_overlay(struct qcow2_chain *c, const char *canon, struct qcow2_image *img,
			     uint64_t size, bool locks)
{
	struct qcow2_image *top = c->layers[0].img;
	int r = 0;

	if (c->size != size)
		return qcow2_set_error(-EBUSY, "'%s' was resized meanwhile", c->layers[0].path);
	r = qcow2_image_flush(top);
	if (r == 0 && c->write_locked && locks)
		r = qcow2_io_lock_writer(img->io);
	if (r == 0)
		r = qcow2_image_end_write(top);
	if (r < 0)
		return r;
	/* From here on nothing fails but the memory for the layer array, which would leave the
	 * old top a backing layer that is no longer written: refused before anything changes. */
	if (c->write_locked)
		qcow2_io_unlock(top->io, QCOW2_WRITER_PERMS & ~QCOW2_PERM_CONSISTENT_READ);
	return qcow2_chain_push_top_locked(c, canon, img);
}

int qcow2_chain_snapshot_external_live(struct qcow2_chain *c, const char *overlay,
				       const struct qcow2_chain_opts *o, bool dry_run,
				       struct qcow2_plan *plan)
{
	struct qcow2_create_opts co;
	struct qcow2_image *img = NULL;
	char name[PATH_MAX], canon[PATH_MAX];
	struct stat st;
	bool created = false;
	uint64_t size;
	int r;

	memset(plan, 0, sizeof(*plan));
	r = job_begin(c);
	if (r < 0)
		return r;
	r = check_chain(c, 0);
	if (r == 0 && lstat(overlay, &st) == 0)
		r = qcow2_set_error(-EEXIST, "'%s' already exists", overlay);
	if (r == 0)
		r = check_overlay_dir(overlay, o);
	if (r == 0)
		r = overlay_backing_name(c, overlay, name, sizeof(name));
	if (r == 0)
		r = qcow2_commit_plan_add(plan, QCOW2_STEP_CREATE, overlay, "qcow2", 0);
	if (r == 0)
		r = qcow2_commit_plan_add(plan, QCOW2_STEP_REPOINT, overlay, name, 0);
	if (r < 0 || dry_run)
		goto out;
	size = view_size(c);
	qcow2_create_opts_default(&co);
	co.size = size;
	co.backing_file = name;
	co.backing_fmt = "qcow2";
	r = qcow2_image_create(overlay, &co); /* durable: a new file renamed into place */
	created = r == 0;
	if (r == 0)
		r = same_owner(c, overlay);
	if (r == 0)
		r = open_overlay(c, overlay, o, canon, &img);
	if (r == 0) {
		qcow2_chain_layers_begin(c);
		r = switch_to_overlay(c, canon, img, size, o && o->lock);
		qcow2_chain_layers_end(c);
	}
	if (r < 0 && img)
		qcow2_image_close(img);
	if (r < 0 && created)
		unlink(overlay); /* (nothing uses it: the chain did not switch) */
out:
	job_end(c);
	return r;
}

/* ---- shared by pull and commit ---- */

/* Layer @name of @c (a path; relative ones from the top's directory), or -ENOENT. */
static int find_layer(struct qcow2_chain *c, const char *name, unsigned *idx)
{
	return qcow2_commit_find_layer(c, name, idx);
}

/* Does the top store its backing name relative? */
static bool stored_relative(struct qcow2_chain *c, unsigned i)
{
	return c->layers[i].img && c->layers[i].img->h.backing_file[0] != '/';
}

/* Report the bytes done and poll for a cancel. */
static int step(struct live *m, uint64_t bytes)
{
	m->done += bytes;
	return qcow2_job_step(m->job, m->done < m->total ? m->done : m->total, m->total);
}

/* Sum of the data bytes of the view that layers [@first, @limit) provide (what a copy moves;
 * zeros are written as zeros, counted by no plan, as offline). */
static int provided_bytes(struct qcow2_chain *c, unsigned first, unsigned limit, uint64_t *out)
{
	uint64_t off = 0, size = view_size(c), sum = 0;
	struct qcow2_extent e;
	int r;

	while (off < size) {
		r = qcow2_chain_map(c, off, size - off, &e);
		if (r < 0)
			return r;
		if (e.layer >= (int)first && e.layer < (int)limit && e.kind != QCOW2_EXTENT_ZERO)
			sum += e.len;
		off += e.len;
	}
	*out = sum;
	return 0;
}

/* ---- live pull ---- */

/* Allocate in the top every range layers [1, @b) provide, with what they show: a
 * copy-on-write that keeps whatever the top has (the guest's writes included). */
static int pull_copy(struct live *m)
{
	uint64_t off = 0, size = view_size(m->c);
	struct qcow2_extent e;
	int r = 0;

	while (off < size && r == 0) {
		r = qcow2_chain_map(m->c, off, size - off < LIVE_STEP ? size - off : LIVE_STEP, &e);
		if (r < 0)
			break;
		if (e.layer >= 1 && e.layer < (int)m->b) {
			r = qcow2_chain_zero(m->c, off, e.len, QCOW2_ZERO_ALLOCATE);
			if (r == 0)
				r = step(m, e.len);
		}
		off += e.len;
	}
	return r < 0 ? r : qcow2_chain_flush(m->c);
}

int qcow2_chain_pull_live(struct qcow2_chain *c, const char *base, const struct qcow2_chain_opts *o,
			  bool dry_run, const struct qcow2_job *job, struct qcow2_plan *plan)
{
	struct live m = {.c = c, .o = o, .job = job, .plan = plan};
	char name[PATH_MAX] = "";
	const char *fmt = NULL;
	unsigned j;
	int r;

	memset(plan, 0, sizeof(*plan));
	r = job_begin(c);
	if (r < 0)
		return r;
	m.b = c->n;
	r = check_chain(c, 0);
	if (r == 0 && base)
		r = find_layer(c, base, &m.b);
	if (r == 0 && m.b == 0)
		r = qcow2_set_error(-EINVAL, "'%s' cannot be its own base", c->layers[0].path);
	/* (an extended L2 top allocates without copying what lies below: the data would stay
	 * in the layers that leave the chain) */
	if (r == 0 && c->layers[0].img->l2_entry_words == 2)
		r = qcow2_set_error(-ENOTSUP,
				    "'%s': a live pull into an image with extended L2 entries is "
				    "not supported (unmount, or use --offline)",
				    c->layers[0].path);
	if (r == 0 && m.b < c->n) {
		fmt = c->layers[m.b].img ? "qcow2" : "raw";
		r = qcow2_commit_name_for(c->layers[0].path, c->layers[m.b].path,
					  stored_relative(c, 0), name, sizeof(name));
	}
	if (r == 0)
		r = provided_bytes(c, 1, m.b, &m.total);
	if (r == 0)
		r = qcow2_commit_plan_add(plan, QCOW2_STEP_COPY, c->layers[0].path, NULL, m.total);
	if (r == 0)
		r = qcow2_commit_plan_add(plan, QCOW2_STEP_REPOINT, c->layers[0].path, name, 0);
	for (j = 1; j < m.b && r == 0; j++)
		r = qcow2_commit_plan_add(plan, QCOW2_STEP_UNUSED, c->layers[j].path, NULL, 0);
	if (r == 0 && !dry_run)
		r = pull_copy(&m);
	if (r == 0 && !dry_run) {
		qcow2_chain_layers_begin(c);
		r = qcow2_image_set_backing(c->layers[0].img, name, fmt);
		if (r == 0)
			qcow2_chain_remove_layers_locked(c, 1, m.b - 1);
		qcow2_chain_layers_end(c);
	}
	job_end(c);
	return r;
}

/* ---- live commit ---- */

/* Other images in the directories of the top and of base that use base (other than the layer
 * above it): their view would change. -EBUSY naming them. */
static int check_base_users(struct live *m)
{
	char names[2048] = "", dirs[2][PATH_MAX];
	struct qcow2_dir_image *v;
	size_t n, k, i, idx[16];
	unsigned d;
	int r = 0;

	snprintf(dirs[0], PATH_MAX, "%s", m->c->layers[0].path);
	snprintf(dirs[1], PATH_MAX, "%s", m->c->layers[m->b].path);
	for (d = 0; d < 2 && r == 0; d++) {
		char *dir = dirname(dirs[d]);

		if (d == 1 && strcmp(dir, dirs[0]) == 0)
			break;
		v = NULL;
		n = 0;
		r = qcow2_dir_scan(dir, &v, &n);
		if (r < 0)
			break;
		k = qcow2_dir_users_of(v, n, m->c->layers[m->b].path, idx, 16);
		for (i = 0; i < k && i < 16; i++) {
			size_t len = strlen(names);

			if (strcmp(v[idx[i]].path, m->c->layers[m->b - 1].path) == 0 ||
			    strstr(names, v[idx[i]].path))
				continue;
			snprintf(names + len, sizeof(names) - len, "%s'%s'", len ? ", " : "",
				 v[idx[i]].path);
		}
		qcow2_dir_images_free(v, n);
	}
	if (r == 0 && names[0])
		r = qcow2_set_error(-EBUSY,
				    "'%s' is also a backing file of %s: their content "
				    "would change (--force commits anyway)",
				    m->c->layers[m->b].path, names);
	return r;
}

/* The chain's options for a handle of the job's own: no locks (the chain's descriptions hold
 * them), the active state. */
static struct qcow2_chain_opts own_opts(const struct qcow2_chain_opts *o, bool writable)
{
	struct qcow2_chain_opts w = {0};

	if (o)
		w = *o;
	w.lock = false;
	w.writable = writable;
	w.share_write = false;
	w.snapshot = NULL;
	w.repair = false;
	return w;
}

/* The bytes a commit of layers [t, b) moves into base: what they provide to the view of
 * layer t (the chain from t down), not to the view of the top, whose own clusters hide
 * theirs; an intermediate commit copies them all (commit_copy()). */
static int merged_bytes(struct live *m, uint64_t *out)
{
	struct qcow2_chain_opts ro = own_opts(m->o, false);
	struct qcow2_chain *src;
	int r;

	if (m->t == 0)
		return provided_bytes(m->c, 0, m->b, out);
	r = qcow2_chain_open(m->c->layers[m->t].path, &ro, &src);
	if (r < 0)
		return r;
	r = provided_bytes(src, 0, m->b - m->t, out);
	qcow2_chain_close(src);
	return r;
}

/* Base opened for writing (its writer lock taken on the chain's reader description first) and
 * grown to the view's size. */
static int open_base(struct live *m, bool locks)
{
	struct qcow2_chain_opts wo = own_opts(m->o, true);
	struct qcow2_image *b = m->c->layers[m->b].img;
	uint64_t size = view_size(m->c);
	int r = locks ? qcow2_io_lock_writer(b->io) : 0;

	if (r == 0)
		r = qcow2_chain_open(m->c->layers[m->b].path, &wo, &m->dst);
	if (r == 0 && qcow2_chain_size(m->dst) < size)
		r = qcow2_chain_grow(m->dst, size);
	return r;
}

/* Give base's writer lock back (the job stopped before the pivot). */
static void close_base(struct live *m, bool locks)
{
	qcow2_chain_close(m->dst);
	m->dst = NULL;
	if (locks)
		qcow2_io_unlock(m->c->layers[m->b].img->io,
				QCOW2_WRITER_PERMS & ~QCOW2_PERM_CONSISTENT_READ);
}

/* An intermediate commit: layers [t, b) copied into base by the offline copy (they do not
 * change: only the top is written), with zeros where the layer above reads past top's end. */
static int commit_copy(struct live *m)
{
	struct qcow2_chain_opts ro = own_opts(m->o, false);
	struct qcow2_copy_opts co = {0};
	struct qcow2_copy_stats st;
	struct qcow2_chain *src;
	uint64_t tsize, end;
	int r = qcow2_chain_open(m->c->layers[m->t].path, &ro, &src);

	if (r < 0)
		return r;
	co.limit = m->b - m->t;
	co.dst = m->dst;
	co.under = m->dst;
	co.under_is_tail = true;
	r = qcow2_chain_copy(src, &co, m->job, &st);
	tsize = qcow2_chain_size(src);
	end = m->c->layers[m->t - 1].size < qcow2_chain_size(m->dst) ? m->c->layers[m->t - 1].size
								     : qcow2_chain_size(m->dst);
	if (r == 0 && end > tsize)
		r = qcow2_copy_zero(&co, tsize, end - tsize, &st);
	qcow2_chain_close(src);
	return r < 0 ? r : qcow2_chain_flush(m->dst);
}

/* Layer @i (a backing layer) re-pointed to base through a handle of its own (its writer lock
 * on the chain's description meanwhile). */
static int repoint_below(struct live *m, unsigned i, const char *name, bool locks)
{
	struct qcow2_chain_opts wo = own_opts(m->o, true);
	struct qcow2_image *w;
	int r = locks ? qcow2_io_lock_writer(m->c->layers[i].img->io) : 0;

	if (r == 0 && (r = qcow2_image_open_canonical(m->c->layers[i].path, &wo,
						      QCOW2_OPEN_WRITE | QCOW2_OPEN_NOFOLLOW,
						      QCOW2_PERM_ALL, &w)) == 0) {
		r = qcow2_image_set_backing(w, name, "qcow2");
		qcow2_image_close(w);
	}
	if (locks)
		qcow2_io_unlock(m->c->layers[i].img->io,
				QCOW2_WRITER_PERMS & ~QCOW2_PERM_CONSISTENT_READ);
	return r;
}

/* Base as the chain reads it after the commit: its written handle made read-only, a reader
 * like the other backing layers (the writer lock given back first). */
static int reader_base(struct live *m, bool locks, struct qcow2_image **out)
{
	struct qcow2_image *b;
	int r;

	b = m->dst->layers[0].img;
	m->dst->layers[0].img = NULL; /* (taken out of the job's chain before it closes) */
	qcow2_chain_close(m->dst);
	m->dst = NULL;
	r = qcow2_image_end_write(b);
	if (r == 0 && locks)
		r = qcow2_io_unlock(m->c->layers[m->b].img->io,
				    QCOW2_WRITER_PERMS & ~QCOW2_PERM_CONSISTENT_READ);
	if (r == 0 && locks)
		r = qcow2_io_lock_reader(b->io);
	if (r < 0) {
		qcow2_image_close(b);
		return r;
	}
	*out = b;
	return 0;
}

static int commit_intermediate(struct live *m, const char *name, bool locks)
{
	struct qcow2_image *nb = NULL;
	int r = open_base(m, locks);

	if (r == 0)
		r = commit_copy(m);
	if (r == 0 && m->t > 1)
		r = repoint_below(m, m->t - 1, name, locks);
	if (r < 0) {
		close_base(m, locks);
		return r;
	}
	r = reader_base(m, locks, &nb);
	if (r < 0)
		return r;
	qcow2_chain_layers_begin(m->c);
	if (m->t == 1)
		r = qcow2_image_set_backing(m->c->layers[0].img, name, "qcow2");
	if (r == 0) {
		qcow2_chain_replace_layer_locked(m->c, m->b, nb);
		qcow2_chain_remove_layers_locked(m->c, m->t, m->b - m->t);
	}
	qcow2_chain_layers_end(m->c);
	if (r < 0)
		qcow2_image_close(nb);
	return r;
}

/* ---- active commit ---- */

static bool all_zero(const uint8_t *p, size_t n)
{
	return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* Copy [@off, @off + @n) of the view into base. @held: layers_rw is held exclusive (no
 * request runs), so the view is read without entering. */
static int copy_range(struct live *m, uint64_t off, uint64_t n, bool held)
{
	struct qcow2_image *top = m->c->layers[0].img;
	int r;

	if (held) {
		qcow2_image_read_begin(top);
		r = qcow2_chain_read_in(m->c, m->buf, (size_t)n, off);
		qcow2_image_read_end(top);
	} else {
		r = qcow2_chain_pread(m->c, m->buf, (size_t)n, off);
	}
	if (r < 0)
		return r;
	if (all_zero(m->buf, (size_t)n))
		return qcow2_chain_zero(m->dst, off, n, 0);
	return qcow2_chain_pwrite(m->dst, m->buf, (size_t)n, off);
}

/* The first pass: everything layers [0, b) provide. */
static int active_first_pass(struct live *m)
{
	uint64_t off = 0, size = view_size(m->c);
	struct qcow2_extent e;
	int r = 0;

	while (off < size && r == 0) {
		r = qcow2_chain_map(m->c, off, size - off < LIVE_STEP ? size - off : LIVE_STEP, &e);
		if (r == 0 && e.layer >= 0 && e.layer < (int)m->b) {
			r = copy_range(m, off, e.len, false);
			if (r == 0)
				r = step(m, e.len);
		}
		off += e.len;
	}
	return r;
}

/* One pass over the units the top changed since they were last taken. */
static int active_dirty_pass(struct live *m, bool held)
{
	uint64_t u = 0, unit = 1ull << m->c->dirty_shift, size = m->c->size, off, n;
	int r = 0;

	while (r == 0 && qcow2_chain_dirty_take(m->c, u, &u) == 0) {
		off = u * unit;
		n = off + unit > size ? size - off : unit;
		r = copy_range(m, off, n, held);
		if (r == 0 && !held)
			r = qcow2_job_step(m->job, m->done, m->total);
		u++;
	}
	return r;
}

/* With no request running: the last changes copied, base durable, base the top. */
static int pivot(struct live *m, bool locks)
{
	struct qcow2_chain *c = m->c;
	struct qcow2_image *top = c->layers[0].img, *nb;
	int r = active_dirty_pass(m, true);

	if (r == 0 && qcow2_chain_size(m->dst) != c->size)
		r = qcow2_set_error(-EBUSY, "'%s' was resized meanwhile", c->layers[0].path);
	if (r == 0)
		r = qcow2_chain_flush(m->dst);
	if (r == 0)
		r = qcow2_image_flush(top);
	if (r < 0)
		return r;
	nb = m->dst->layers[0].img;
	if (locks && (r = qcow2_io_lock_move_writer(c->layers[m->b].img->io, nb->io)) < 0)
		return r;
	m->dst->layers[0].img = NULL; /* now the chain's */
	qcow2_chain_close(m->dst);
	m->dst = NULL;
	if (locks && !c->write_locked) /* a top no handle writes: a reader's lock */
		qcow2_io_unlock(nb->io, QCOW2_WRITER_PERMS & ~QCOW2_PERM_CONSISTENT_READ);
	qcow2_chain_track_locked(c, false, 0);
	qcow2_chain_replace_layer_locked(c, m->b, nb);
	qcow2_chain_remove_layers_locked(c, 0, m->b); /* the old top closed: its file is kept */
	c->size = c->layers[0].size = qcow2_guest_bytes(nb->h.size);
	return qcow2_chain_owners_reset_locked(c);
}

static int commit_active(struct live *m, bool locks)
{
	struct qcow2_chain *c = m->c;
	unsigned pass;
	int r = open_base(m, locks);

	m->buf = r == 0 ? malloc(1ull << c->layers[0].img->h.cluster_bits > LIVE_STEP
				     ? 1ull << c->layers[0].img->h.cluster_bits
				     : LIVE_STEP)
			: NULL;
	if (r == 0 && !m->buf)
		r = qcow2_oom();
	if (r == 0) {
		qcow2_chain_layers_begin(c);
		r = qcow2_chain_track_locked(c, true, c->layers[0].img->h.cluster_bits);
		qcow2_chain_layers_end(c);
	}
	if (r == 0)
		r = active_first_pass(m);
	for (pass = 0; r == 0 && pass < LIVE_MAX_PASSES; pass++) {
		qcow2_chain_enter(c);
		bool small = qcow2_chain_dirty_count(c) << c->dirty_shift <= LIVE_CONVERGED;
		qcow2_chain_leave(c);
		if (small)
			break;
		r = active_dirty_pass(m, false);
	}
	qcow2_chain_layers_begin(c);
	if (r == 0)
		r = pivot(m, locks);
	if (r < 0)
		qcow2_chain_track_locked(c, false, 0);
	qcow2_chain_layers_end(c);
	if (r < 0 && m->dst)
		close_base(m, locks);
	free(m->buf);
	return r;
}

int qcow2_chain_commit_live(struct qcow2_chain *c, const struct qcow2_commit_opts *co,
			    const struct qcow2_chain_opts *o, const struct qcow2_job *job,
			    struct qcow2_plan *plan)
{
	struct live m = {.c = c, .o = o, .job = job, .plan = plan};
	bool locks = o && o->lock;
	char name[PATH_MAX] = "";
	unsigned j;
	int r;

	memset(plan, 0, sizeof(*plan));
	r = job_begin(c);
	if (r < 0)
		return r;
	if (co->top)
		r = find_layer(c, co->top, &m.t);
	m.b = m.t + 1;
	if (r == 0 && co->base)
		r = find_layer(c, co->base, &m.b);
	if (r == 0 && (m.b <= m.t || m.b >= c->n))
		r = qcow2_set_error(-EINVAL, "'%s' is not below '%s' in the chain",
				    co->base ? co->base : "(its backing file)",
				    c->layers[m.t].path);
	if (r == 0)
		r = check_chain(c, m.b);
	if (r == 0 && !c->layers[m.b].img)
		r = qcow2_set_error(-ENOTSUP,
				    "'%s': a live commit into a raw file is not supported "
				    "(unmount, or use --offline)",
				    c->layers[m.b].path);
	if (r == 0 && co->drop)
		r = qcow2_set_error(-ENOTSUP, "--drop is not done live: delete the files after "
					      "the commit");
	if (r == 0 && !co->force && !co->dry_run)
		r = check_base_users(&m);
	if (r == 0 && m.t > 0)
		r = qcow2_commit_name_for(c->layers[m.t - 1].path, c->layers[m.b].path,
					  stored_relative(c, m.t - 1), name, sizeof(name));
	if (r == 0)
		r = merged_bytes(&m, &m.total);
	if (r == 0)
		r = qcow2_commit_plan_add(plan, QCOW2_STEP_COPY, c->layers[m.b].path, NULL,
					  m.total);
	if (r == 0 && m.t > 0)
		r = qcow2_commit_plan_add(plan, QCOW2_STEP_REPOINT, c->layers[m.t - 1].path, name,
					  0);
	for (j = m.t; j < m.b && r == 0; j++)
		r = qcow2_commit_plan_add(plan, QCOW2_STEP_UNUSED, c->layers[j].path, NULL, 0);
	if (r == 0 && !co->dry_run)
		r = m.t > 0 ? commit_intermediate(&m, name, locks) : commit_active(&m, locks);
	job_end(c);
	return r;
}
