/* SPDX-License-Identifier: MIT */
/*
 * commit.c - the block jobs that change existing chains: commit (blockcommit), pull
 * (blockpull) and rebase; and the helpers they share with convert.c (plans, layers, names).
 *
 * Each job opens the chain it works on with a reader lock on every layer, upgrades to QEMU's
 * writer locks on the images it changes (so the mounted daemon or a running VM holding any of
 * them makes it fail with the holder named), plans, and then works in this order:
 *
 *   1. data is copied into the image that receives it (qcow2_chain_copy, copy.c) and made
 *      durable. Every range written makes that image show what the chains reading through
 *      it already show there, so no chain's flat view changes;
 *   2. a backing pointer moves, in one write of the header cluster, made durable;
 *   3. only then is anything deleted (--drop) or emptied (an overlay whose data now lies
 *      below).
 *
 * Killed anywhere, each image is valid (the library's write order) and each chain shows what
 * it showed before; running the same job again redoes step 1 (idempotent: the ranges copied
 * are equal already) and completes 2 and 3.
 *
 * Writable handles of the changed images are opened without locks of their own: the locks
 * are held on the reader handles' file descriptions, and a second lock of this process on
 * another description of the same file would conflict with them.
 *
 * Locks: no library lock of its own (the images' through their functions); QEMU's file locks:
 * a reader's on every layer, a writer's on the images it changes.
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

#include "jobs/jobs.h"

/* ---- plans ---- */

void qcow2_plan_release(struct qcow2_plan *p)
{
	size_t i;

	for (i = 0; i < p->n; i++) {
		free(p->v[i].image);
		free(p->v[i].detail);
	}
	free(p->v);
	memset(p, 0, sizeof(*p));
}

const char *qcow2_step_name(enum qcow2_step_kind k)
{
	static const char *const names[] = {"grow",   "copy",	"repoint", "empty",
					    "unused", "delete", "create",  "bitmaps"};

	return (unsigned)k < sizeof(names) / sizeof(names[0]) ? names[k] : "?";
}

int qcow2_commit_plan_add(struct qcow2_plan *p, enum qcow2_step_kind kind, const char *image,
			  const char *detail, uint64_t bytes)
{
	struct qcow2_step *s;

	if (p->n == p->cap) {
		size_t cap = p->cap ? 2 * p->cap : 8;
		struct qcow2_step *v = realloc(p->v, cap * sizeof(*v));

		if (!v)
			return qcow2_oom();
		p->v = v;
		p->cap = cap;
	}
	s = &p->v[p->n];
	s->kind = kind;
	s->bytes = bytes;
	s->image = strdup(image);
	s->detail = detail ? strdup(detail) : NULL;
	if (!s->image || (detail && !s->detail)) {
		free(s->image);
		free(s->detail);
		return qcow2_oom();
	}
	p->n++;
	return 0;
}

/* The plan's note that copying into layer @i of @c marks its enabled persistent bitmaps (the
 * engine marks every guest change, as QEMU's block layer does for commit and qemu-img rebase):
 * their names as the step's detail. None without such a bitmap. */
static int plan_bitmaps(struct qcow2_plan *p, struct qcow2_chain *c, unsigned i)
{
	struct qcow2_layer_info li;
	struct qcow2_bitmap *b;
	char *names = NULL;
	size_t len = 0;
	uint32_t n, k;
	int r = 0;

	if (qcow2_chain_layer(c, i, &li) < 0 || !li.image)
		return 0;
	if (qcow2_image_bitmaps(li.image, true, &b, &n) < 0) {
		qcow2_clear_error(); /* (a directory QEMU refuses: the write says so) */
		return 0;
	}
	for (k = 0; k < n && r == 0; k++) {
		size_t l = strlen(b[k].name);
		char *v;

		if (b[k].invalid || (b[k].flags & QCOW2_BITMAP_IN_USE) ||
		    !(b[k].flags & QCOW2_BITMAP_AUTO))
			continue;
		v = realloc(names, len + l + 3);
		if (!v) {
			r = qcow2_oom();
			break;
		}
		names = v;
		if (len) {
			memcpy(names + len, ", ", 2);
			len += 2;
		}
		memcpy(names + len, b[k].name, l + 1);
		len += l;
	}
	if (r == 0 && len)
		r = qcow2_commit_plan_add(p, QCOW2_STEP_BITMAPS, li.path, names, 0);
	free(names);
	qcow2_bitmaps_free(b, n);
	return r;
}

/* ---- layers and names ---- */

const char *qcow2_commit_layer_path(struct qcow2_chain *c, unsigned i)
{
	struct qcow2_layer_info li;

	return qcow2_chain_layer(c, i, &li) == 0 ? li.path : "";
}

const char *qcow2_commit_layer_format(struct qcow2_chain *c, unsigned i)
{
	struct qcow2_layer_info li;

	return qcow2_chain_layer(c, i, &li) == 0 ? li.format : "raw";
}

/* The layer of @c that is the file @name (as given, or relative to the top's directory). */
int qcow2_commit_find_layer(struct qcow2_chain *c, const char *name, unsigned *idx)
{
	char resolved[PATH_MAX];
	struct stat want, st;
	unsigned i;

	if (stat(name, &want) < 0 &&
	    (qcow2_chain_resolve_path(NULL, qcow2_commit_layer_path(c, 0), name, resolved,
				      sizeof(resolved)) < 0 ||
	     stat(resolved, &want) < 0))
		return qcow2_set_error(-ENOENT, "cannot find '%s': %s", name, strerror(errno));
	for (i = 0; i < qcow2_chain_depth(c); i++)
		if (stat(qcow2_commit_layer_path(c, i), &st) == 0 && st.st_dev == want.st_dev &&
		    st.st_ino == want.st_ino) {
			*idx = i;
			return 0;
		}
	return qcow2_set_error(-ENOENT, "'%s' is not in the backing chain of '%s'", name,
			       qcow2_commit_layer_path(c, 0));
}

/* @target (absolute) as @image should store it: relative to @image's directory when @relative,
 * else absolute. */
int qcow2_commit_name_for(const char *image, const char *target, bool relative, char *out,
			  size_t cap)
{
	char dir[PATH_MAX];
	const char *d, *t;
	size_t common = 0, i, len = 0;
	int n;

	if (!relative) {
		n = snprintf(out, cap, "%s", target);
		return n < 0 || (size_t)n >= cap ? qcow2_set_error(-ENAMETOOLONG, "name too long")
						 : 0;
	}
	snprintf(dir, sizeof(dir), "%s", image);
	d = dirname(dir);
	/* the longest common leading run of whole components */
	for (i = 0; d[i] && d[i] == target[i]; i++)
		if (d[i] == '/')
			common = i;
	if (!d[i] && target[i] == '/')
		common = i;
	out[0] = 0;
	if (strcmp(d, "/") == 0) /* everything is below the root */
		common = 0;
	for (t = d + common; *t && strcmp(d, "/") != 0; t++)
		if (*t == '/' && (len = strlen(out)) + 4 < cap)
			strcat(out, "../");
	n = snprintf(out + strlen(out), cap - strlen(out), "%s", target + common + 1);
	return n < 0 || (size_t)n >= cap - len ? qcow2_set_error(-ENAMETOOLONG, "name too long")
					       : 0;
}

/* Is the backing name stored in layer @i of @c relative? */
static bool stored_relative(struct qcow2_chain *c, unsigned i)
{
	struct qcow2_layer_info li;

	return qcow2_chain_layer(c, i, &li) == 0 && li.image &&
	       qcow2_image_header(li.image)->backing_file[0] != '/';
}

/* QEMU's writer locks on layer @i, through the reader handle's file description. */
static int lock_writer(struct qcow2_chain *c, unsigned i)
{
	struct qcow2_layer_info li;
	int r = qcow2_chain_layer(c, i, &li);

	return r < 0 ? r : qcow2_io_lock_writer(li.io);
}

/* ---- the sibling check ---- */

/* Images in @dir other than those of @c that read through layer @j of @c (their own backing
 * is it, and they are not layer @j - 1): appended to @names. */
/* Is @path one of the lines of @list (may be NULL)? */
static bool listed(const char *list, const char *path)
{
	size_t n = strlen(path);
	const char *p;

	for (p = list; p && (p = strstr(p, path)); p += n)
		if ((p == list || p[-1] == '\n') && (p[n] == '\n' || !p[n]))
			return true;
	return false;
}

static int users_in(const char *dir, struct qcow2_chain *c, unsigned j, const char *ignore,
		    char *names, size_t cap)
{
	struct qcow2_dir_image *v = NULL;
	size_t n = 0, i, idx[16], k, len;
	int r = qcow2_dir_scan(dir, &v, &n);

	if (r < 0)
		return r;
	k = qcow2_dir_users_of(v, n, qcow2_commit_layer_path(c, j), idx, 16);
	for (i = 0; i < k && i < 16; i++) {
		const char *p = v[idx[i]].path;

		if ((j > 0 && strcmp(p, qcow2_commit_layer_path(c, j - 1)) == 0) ||
		    listed(ignore, p))
			continue;
		if (strstr(names, p))
			continue;
		len = strlen(names);
		snprintf(names + len, cap - len, "%s'%s'", len ? ", " : "", p);
	}
	qcow2_dir_images_free(v, n);
	return 0;
}

/* Other images whose view a commit of (@b, @t] would change: those using any of layers
 * [@t + 1, @b] (and @t too when it is deleted), in the directories of the image and of base. */
static int check_siblings(struct qcow2_chain *c, unsigned t, unsigned b, bool drop,
			  bool base_changes, const char *ignore)
{
	char names[4096] = "", d1[PATH_MAX], d2[PATH_MAX];
	unsigned j, last = base_changes ? b : (drop ? b - 1 : t);
	int r = 0;

	/* Base unchanged (nothing left to copy): only the users of deleted layers matter. */
	snprintf(d1, sizeof(d1), "%s", qcow2_commit_layer_path(c, 0));
	snprintf(d2, sizeof(d2), "%s", qcow2_commit_layer_path(c, b));
	for (j = drop && t > 0 ? t : t + 1; j <= last && r == 0; j++) {
		r = users_in(dirname(d1), c, j, ignore, names, sizeof(names));
		if (r == 0 && strcmp(d1, d2) != 0)
			r = users_in(dirname(d2), c, j, ignore, names, sizeof(names));
		snprintf(d1, sizeof(d1), "%s", qcow2_commit_layer_path(c, 0));
		snprintf(d2, sizeof(d2), "%s", qcow2_commit_layer_path(c, b));
	}
	if (r == 0 && names[0])
		r = qcow2_set_error(-EBUSY,
				    "'%s' is also a backing file of %s: their content "
				    "would change (--force commits anyway)",
				    qcow2_commit_layer_path(c, b), names);
	return r;
}

/* ---- commit ---- */

struct commit {
	struct qcow2_chain *c; /* the image's chain, reader handles, locks */
	unsigned t, b;
	const struct qcow2_commit_opts *o;
	const struct qcow2_job *job;
	struct qcow2_plan *plan;
	char repoint[PATH_MAX]; /* the name stored by the re-pointed image */
	char *journal;		/* layers an earlier run took out of the chain, one per line */
};

/* The layer above an intermediate top reads zeros past the top's end, whatever base holds
 * there: base must read so too before that layer is re-pointed to it. */
static int zero_past_top(struct commit *m, const struct qcow2_copy_opts *co, uint64_t tsize,
			 struct qcow2_copy_stats *st)
{
	struct qcow2_layer_info above, base;
	uint64_t end;

	qcow2_chain_layer(m->c, m->t - 1, &above);
	qcow2_chain_layer(m->c, m->b, &base);
	end = above.size < base.size ? above.size : base.size;
	return end > tsize ? qcow2_copy_zero(co, tsize, end - tsize, st) : 0;
}

static int copy_into_base(struct commit *m, bool dry_run, uint64_t *bytes, uint64_t *zero)
{
	struct qcow2_chain_opts wo = {.writable = true, .keys = qcow2_job_keys(m->job)},
				ro = {.keys = qcow2_job_keys(m->job)};
	struct qcow2_chain *src = m->c, *dst = NULL, *under = NULL;
	struct qcow2_io *raw = NULL;
	struct qcow2_copy_opts co = {0};
	struct qcow2_copy_stats st;
	const char *base = qcow2_commit_layer_path(m->c, m->b);
	bool qcow2 = strcmp(qcow2_commit_layer_format(m->c, m->b), "qcow2") == 0;
	const struct qcow2_job *job =
	    dry_run ? NULL : m->job; /* its phases: a dry run is the plan */
	struct qcow2_phase_mark pm = qcow2_phase_start();
	int r = 0;

	if (m->t > 0)
		r = qcow2_chain_open(qcow2_commit_layer_path(m->c, m->t), &ro, &src);
	if (r == 0 && !dry_run)
		r = qcow2 ? qcow2_chain_open(base, &wo, &dst)
			  : qcow2_io_open_file(base, true, &raw);
	if (r == 0 && !dry_run && !qcow2)
		r = qcow2_chain_open(base, &ro, &under);
	if (r == 0 && !dry_run && qcow2_chain_size(src) > (dst ? qcow2_chain_size(dst) : 0) && dst)
		r = qcow2_chain_grow(dst, qcow2_chain_size(src));
	if (r == 0 && !dry_run && raw)
		r = qcow2_io_grow(raw, qcow2_chain_size(src));
	co.first = 0;
	co.limit = m->b - m->t;
	co.dst = dst;
	co.dst_raw = raw;
	co.under = dst ? dst : under;
	co.under_is_tail = true;
	co.dry_run = dry_run;
	co.drop_read = m->t == 0 && !m->o->keep_top; /* top is emptied next (copy.c) */
	qcow2_job_phase(job, "open", pm, 0);
	if (r == 0)
		r = qcow2_chain_copy(src, &co, m->job, &st);
	pm = qcow2_phase_start();
	if (r == 0 && !dry_run && m->t > 0)
		r = zero_past_top(m, &co, qcow2_chain_size(src), &st);
	qcow2_job_phase(job, "copy", pm, 0);
	pm = qcow2_phase_start();
	if (r == 0 && dst)
		r = qcow2_chain_flush(dst);
	if (r == 0 && raw)
		r = qcow2_io_flush(raw);
	*bytes = st.planned_bytes;
	*zero = st.planned_zero;
	qcow2_chain_close(dst);
	qcow2_chain_close(under);
	qcow2_io_close(raw);
	if (src != m->c)
		qcow2_chain_close(src);
	qcow2_job_phase(job, "flush", pm, 0);
	return r;
}

/* Re-point layer @i to base (stored relative if its current name is relative). */
static int repoint(struct commit *m, unsigned i, bool dry_run)
{
	struct qcow2_chain_opts wo = {.writable = true, .keys = qcow2_job_keys(m->job)};
	const char *img = qcow2_commit_layer_path(m->c, i);
	struct qcow2_image *w;
	int r;

	r = qcow2_commit_name_for(img, qcow2_commit_layer_path(m->c, m->b),
				  stored_relative(m->c, i), m->repoint, sizeof(m->repoint));
	if (r == 0)
		r = qcow2_commit_plan_add(m->plan, QCOW2_STEP_REPOINT, img, m->repoint, 0);
	if (r < 0 || dry_run)
		return r;
	r = qcow2_image_open_path(img, &wo, &w);
	if (r < 0)
		return r;
	r = qcow2_image_set_backing(w, m->repoint, qcow2_commit_layer_format(m->c, m->b));
	qcow2_image_close(w);
	return r;
}

static int empty_image(struct commit *m, bool dry_run)
{
	struct qcow2_chain_opts wo = {.writable = true, .keys = qcow2_job_keys(m->job)};
	struct qcow2_chain *w;
	int r = qcow2_commit_plan_add(m->plan, QCOW2_STEP_EMPTY, qcow2_commit_layer_path(m->c, 0),
				      NULL, 0);

	if (r < 0 || dry_run)
		return r;
	r = qcow2_chain_open(qcow2_commit_layer_path(m->c, 0), &wo, &w);
	if (r < 0)
		return r;
	r = qcow2_chain_zero(w, 0, qcow2_chain_size(w), QCOW2_ZERO_UNMAP);
	if (r == 0)
		r = qcow2_chain_flush(w);
	qcow2_chain_close(w);
	return r;
}

/* ---- the journal ----
 * Before the pointer moves, the layers that leave the chain are written, durably, to the
 * image's commit journal (journal.c: .NAME.qcowctl-commit next to it), removed when the commit
 * is complete. A run stopped in between leaves it: the next run does not take those layers for
 * other users of base (they still name it as their backing file), and deletes them with
 * --drop. A rerun of an intermediate commit whose pointer had moved completes it too, and
 * removes the journal: whether top is still there (commit_done_before) or a stopped --drop
 * run deleted it already (dropped_before: the journal lists it). */

static int journal_path(struct commit *m, char *out, size_t cap)
{
	return qcow2_journal_path(qcow2_commit_layer_path(m->c, 0), "commit", out, cap);
}

static int journal_read(struct commit *m)
{
	char path[PATH_MAX];
	int r = journal_path(m, path, sizeof(path));

	if (r == 0)
		r = qcow2_journal_read(path, &m->journal);
	return r < 0 ? r : 0;
}

/* The journal an earlier run left, and the layers this one takes out of the chain. */
static int journal_write(struct commit *m)
{
	size_t len = m->journal ? strlen(m->journal) : 0, cap = len + 1;
	char path[PATH_MAX], *text;
	unsigned j;
	int r;

	for (j = m->t ? m->t : 1; j < m->b; j++)
		cap += strlen(qcow2_commit_layer_path(m->c, j)) + 1;
	text = malloc(cap);
	if (!text)
		return qcow2_oom();
	memcpy(text, m->journal ? m->journal : "", len + 1);
	for (j = m->t ? m->t : 1; j < m->b; j++)
		len += (size_t)sprintf(text + len, "%s\n", qcow2_commit_layer_path(m->c, j));
	r = journal_path(m, path, sizeof(path));
	if (r == 0)
		r = qcow2_journal_write(path, text);
	free(text);
	return r;
}

static int journal_remove(struct commit *m)
{
	char path[PATH_MAX];
	int r = journal_path(m, path, sizeof(path));

	return r < 0 ? r : qcow2_journal_remove(path);
}

/* With --drop, the layers an earlier stopped run took out of the chain. */
static int drop_journal(struct commit *m, bool dry_run)
{
	char *line, *save = NULL, *copy;
	int r = 0;

	if (!m->journal || !m->o->drop)
		return 0;
	copy = strdup(m->journal);
	if (!copy)
		return qcow2_oom();
	for (line = strtok_r(copy, "\n", &save); line && r == 0;
	     line = strtok_r(NULL, "\n", &save)) {
		if (access(line, F_OK) < 0)
			continue;
		r = qcow2_commit_plan_add(m->plan, QCOW2_STEP_DELETE, line, NULL, 0);
		if (r == 0 && !dry_run && unlink(line) < 0 && errno != ENOENT)
			r = qcow2_set_error(-errno, "cannot delete '%s': %s", line,
					    strerror(errno));
	}
	free(copy);
	return r;
}

/* Layers no longer used: (t, b) and, for an intermediate commit, t itself. */
static int drop_layers(struct commit *m, bool dry_run)
{
	unsigned j;
	int r = 0;

	for (j = m->t ? m->t : 1; j < m->b && r == 0; j++) {
		const char *p = qcow2_commit_layer_path(m->c, j);

		r = qcow2_commit_plan_add(
		    m->plan, m->o->drop ? QCOW2_STEP_DELETE : QCOW2_STEP_UNUSED, p, NULL, 0);
		if (r == 0 && m->o->drop && !dry_run && unlink(p) < 0 && errno != ENOENT)
			r = qcow2_set_error(-errno, "cannot delete '%s': %s", p, strerror(errno));
	}
	return r;
}

static int commit_run(struct commit *m)
{
	struct qcow2_layer_info tl, bl;
	bool dry = m->o->dry_run;
	uint64_t bytes = 0, zero = 0;
	struct qcow2_phase_mark pm = qcow2_phase_start();
	int r;

	qcow2_chain_layer(m->c, m->t, &tl);
	qcow2_chain_layer(m->c, m->b, &bl);
	r = bl.size < tl.size
		? qcow2_commit_plan_add(m->plan, QCOW2_STEP_GROW, bl.path, NULL, tl.size)
		: 0;
	if (r == 0)
		r = copy_into_base(m, true, &bytes, &zero);
	if (r == 0 && !m->o->force)
		r = check_siblings(m->c, m->t, m->b, m->o->drop, bytes || zero || bl.size < tl.size,
				   m->journal);
	if (r == 0 && !dry)
		r = lock_writer(m->c, m->b);
	if (r == 0 && !dry)
		r = lock_writer(m->c, m->t ? m->t - 1 : 0);
	if (r == 0)
		r = qcow2_commit_plan_add(m->plan, QCOW2_STEP_COPY,
					  qcow2_commit_layer_path(m->c, m->b), NULL, bytes);
	if (r == 0 && (bytes || zero))
		r = plan_bitmaps(m->plan, m->c, m->b);
	qcow2_job_phase(m->job, "plan", pm, 0);
	if (r == 0 && !dry)
		r = copy_into_base(m, false, &bytes, &zero);
	pm = qcow2_phase_start();
	if (r == 0 && !dry && m->b > (m->t ? m->t : 1))
		r = journal_write(m);
	qcow2_job_phase(m->job, "journal", pm, 0);
	pm = qcow2_phase_start();
	if (r == 0 && (m->t > 0 || m->b > 1))
		r = repoint(m, m->t ? m->t - 1 : 0, dry);
	qcow2_job_phase(m->job, "pointer", pm, 0);
	pm = qcow2_phase_start();
	if (r == 0)
		r = drop_layers(m, dry);
	if (r == 0)
		r = drop_journal(m, dry);
	if (m->o->drop)
		qcow2_job_phase(m->job, "drop", pm, 0);
	pm = qcow2_phase_start();
	if (r == 0 && m->t == 0 && !m->o->keep_top)
		r = empty_image(m, dry);
	if (m->t == 0 && !m->o->keep_top)
		qcow2_job_phase(m->job, "empty", pm, 0);
	pm = qcow2_phase_start();
	if (r == 0 && !dry)
		r = journal_remove(m);
	qcow2_job_phase(m->job, "journal", pm, 0);
	return r;
}

/* An intermediate commit run again after its pointer moved: @top has left the image's chain,
 * but base is still in it and in @top's own chain. Only the unused layers are left to report
 * (or, with --drop, to delete): @top and the layers between it and base. */
static int commit_done_before(struct commit *m, const char *top)
{
	struct qcow2_chain_opts ro = {.lock = true, .keys = qcow2_job_keys(m->job)};
	struct qcow2_chain *tc;
	unsigned b = 1, in_image, j;
	int r;

	qcow2_clear_error();
	r = qcow2_chain_open(top, &ro, &tc);
	if (r < 0)
		return r;
	if (m->o->base)
		r = qcow2_commit_find_layer(tc, m->o->base, &b);
	if (r == 0 &&
	    (b >= qcow2_chain_depth(tc) ||
	     qcow2_commit_find_layer(m->c, qcow2_commit_layer_path(tc, b), &in_image) < 0))
		r = qcow2_set_error(-ENOENT, "'%s' is not in the backing chain of '%s'", top,
				    qcow2_commit_layer_path(m->c, 0));
	for (j = 0; r == 0 && j < b; j++) {
		const char *p = qcow2_commit_layer_path(tc, j);

		r = qcow2_commit_plan_add(
		    m->plan, m->o->drop ? QCOW2_STEP_DELETE : QCOW2_STEP_UNUSED, p, NULL, 0);
		if (r == 0 && m->o->drop && !m->o->dry_run && unlink(p) < 0)
			r = qcow2_set_error(-errno, "cannot delete '%s': %s", p, strerror(errno));
	}
	/* complete: the journal the stopped run left must not outlive it (a later commit
	 * --drop of the image would delete the layers it lists) */
	if (r == 0 && !m->o->dry_run)
		r = journal_remove(m);
	qcow2_chain_close(tc);
	return r;
}

/* The absolute path of @name (from @dir when relative) whose last component may be missing:
 * its directory resolved, symlinks and all, as layer paths are. */
static bool resolve_missing(const char *dir, const char *name, char *out, size_t cap)
{
	char joined[PATH_MAX], d[PATH_MAX], b[PATH_MAX], real[PATH_MAX];
	int n;

	n = name[0] == '/' ? snprintf(joined, sizeof(joined), "%s", name)
			   : snprintf(joined, sizeof(joined), "%s/%s", dir, name);
	if (n < 0 || (size_t)n >= sizeof(joined))
		return false;
	snprintf(d, sizeof(d), "%s", joined);
	snprintf(b, sizeof(b), "%s", joined);
	if (!realpath(dirname(d), real))
		return false;
	n = snprintf(out, cap, "%s/%s", strcmp(real, "/") ? real : "", basename(b));
	return n >= 0 && (size_t)n < cap;
}

/* An intermediate commit with --drop run again after it deleted @top: @top is gone and the
 * journal the stopped run left lists it (@top as given, from the working directory or the
 * image's). Only the rest of the journal's layers are left to delete. */
static bool dropped_before(struct commit *m, const char *top)
{
	char cwd[PATH_MAX], dir[PATH_MAX], path[PATH_MAX];

	if (!m->journal || !m->o->drop || access(top, F_OK) == 0 || errno != ENOENT)
		return false;
	snprintf(dir, sizeof(dir), "%s", qcow2_commit_layer_path(m->c, 0));
	return (getcwd(cwd, sizeof(cwd)) && resolve_missing(cwd, top, path, sizeof(path)) &&
		listed(m->journal, path)) ||
	       (resolve_missing(dirname(dir), top, path, sizeof(path)) && listed(m->journal, path));
}

int qcow2_commit(const char *image, const struct qcow2_commit_opts *o, const struct qcow2_job *job,
		 struct qcow2_plan *plan)
{
	struct qcow2_chain_opts ro = {.lock = true, .keys = qcow2_job_keys(job)};
	struct commit m = {.o = o, .job = job, .plan = plan};
	int r;

	memset(plan, 0, sizeof(*plan));
	r = qcow2_chain_open(image, &ro, &m.c);
	if (r < 0)
		return r;
	r = journal_read(&m);
	m.t = 0;
	if (r == 0 && o->top)
		r = qcow2_commit_find_layer(m.c, o->top, &m.t);
	if (r == -ENOENT && o->top && access(o->top, F_OK) == 0) {
		r = commit_done_before(&m, o->top);
		qcow2_chain_close(m.c);
		free(m.journal);
		return r;
	}
	if (r == -ENOENT && o->top && dropped_before(&m, o->top)) {
		qcow2_clear_error();
		r = drop_journal(&m, o->dry_run);
		if (r == 0 && !o->dry_run)
			r = journal_remove(&m);
		qcow2_chain_close(m.c);
		free(m.journal);
		return r;
	}
	m.b = m.t + 1;
	if (r == 0 && o->base)
		r = qcow2_commit_find_layer(m.c, o->base, &m.b);
	if (r == 0 && m.b >= qcow2_chain_depth(m.c))
		r = qcow2_set_error(-EINVAL, "'%s' has no backing file to commit into",
				    qcow2_commit_layer_path(m.c, m.t));
	else if (r == 0 && m.b <= m.t)
		r = qcow2_set_error(-EINVAL, "'%s' is not below '%s' in the chain",
				    qcow2_commit_layer_path(m.c, m.b),
				    qcow2_commit_layer_path(m.c, m.t));
	if (r == 0)
		r = commit_run(&m);
	qcow2_chain_close(m.c);
	free(m.journal);
	return r;
}

/* ---- pull and rebase ---- */

/* Copy into the top of @c (open writable, locked) what layers [1, @limit) provide, with
 * @under the chain it will back onto (NULL: none) and @compare for an unrelated one. */
static int copy_up(struct qcow2_chain *c, unsigned limit, struct qcow2_chain *under, bool tail,
		   bool compare, bool dry_run, const struct qcow2_job *job, struct qcow2_plan *plan)
{
	struct qcow2_copy_opts co = {0};
	struct qcow2_copy_stats st;
	struct qcow2_phase_mark pm;
	int r;

	co.first = 1;
	co.limit = limit;
	co.dst = c;
	co.under = under;
	co.under_is_tail = tail;
	co.compare = compare;
	co.dry_run = true;
	pm = qcow2_phase_start();
	r = qcow2_chain_copy(c, &co, NULL, &st);
	if (r == 0)
		r = qcow2_commit_plan_add(plan, QCOW2_STEP_COPY, qcow2_commit_layer_path(c, 0),
					  NULL, st.planned_bytes);
	if (r == 0 && st.planned_bytes)
		r = plan_bitmaps(plan, c, 0);
	qcow2_job_phase(job, "plan", pm, 0);
	if (r < 0 || dry_run)
		return r;
	co.dry_run = false;
	r = qcow2_chain_copy(c, &co, job, &st);
	pm = qcow2_phase_start();
	if (r == 0)
		r = qcow2_chain_flush(c);
	qcow2_job_phase(job, "flush", pm, 0);
	return r;
}

static int open_top_writable(const char *image, bool dry_run, const struct qcow2_job *job,
			     struct qcow2_chain **c)
{
	struct qcow2_chain_opts o = {
	    .lock = true, .writable = !dry_run, .keys = qcow2_job_keys(job)};
	int r = qcow2_chain_open(image, &o, c);

	if (r == 0 && !dry_run && (r = qcow2_chain_lock_write(*c, true)) < 0) {
		qcow2_chain_close(*c);
		*c = NULL;
	}
	return r;
}

static int set_backing(struct qcow2_chain *c, const char *name, const char *fmt, bool dry_run,
		       struct qcow2_plan *plan)
{
	struct qcow2_layer_info li;
	int r =
	    qcow2_commit_plan_add(plan, QCOW2_STEP_REPOINT, qcow2_commit_layer_path(c, 0), name, 0);

	if (r < 0 || dry_run)
		return r;
	qcow2_chain_layer(c, 0, &li);
	return qcow2_image_set_backing(li.image, name, fmt);
}

int qcow2_pull(const char *image, const char *base, bool dry_run, const struct qcow2_job *job,
	       struct qcow2_plan *plan)
{
	struct qcow2_chain_opts ro = {.keys = qcow2_job_keys(job)};
	struct qcow2_chain *c, *under = NULL;
	char name[PATH_MAX] = "";
	struct qcow2_phase_mark pm = qcow2_phase_start();
	unsigned b, j;
	int r;

	memset(plan, 0, sizeof(*plan));
	r = open_top_writable(image, dry_run, job, &c);
	if (r < 0)
		return r;
	b = qcow2_chain_depth(c);
	if (base)
		r = qcow2_commit_find_layer(c, base, &b);
	if (r == 0 && b == 0)
		r = qcow2_set_error(-EINVAL, "'%s' cannot be its own base", image);
	if (r == 0 && b < qcow2_chain_depth(c)) {
		r = qcow2_commit_name_for(qcow2_commit_layer_path(c, 0),
					  qcow2_commit_layer_path(c, b), stored_relative(c, 0),
					  name, sizeof(name));
		if (r == 0)
			r = qcow2_chain_open(qcow2_commit_layer_path(c, b), &ro, &under);
	}
	qcow2_job_phase(job, "open", pm, 0);
	if (r == 0)
		r = copy_up(c, b, under, true, false, dry_run, job, plan);
	pm = qcow2_phase_start();
	if (r == 0)
		r = set_backing(c, name,
				b < qcow2_chain_depth(c) ? qcow2_commit_layer_format(c, b) : NULL,
				dry_run, plan);
	qcow2_job_phase(job, "pointer", pm, 0);
	for (j = 1; j < b && r == 0; j++)
		r = qcow2_commit_plan_add(plan, QCOW2_STEP_UNUSED, qcow2_commit_layer_path(c, j),
					  NULL, 0);
	pm = qcow2_phase_start();
	qcow2_chain_close(under);
	qcow2_chain_close(c);
	qcow2_job_phase(job, "flush", pm, 0);
	return r;
}

/* The format of the file at @path: "qcow2" or "raw". */
static int probe_format(const char *path, const char **fmt)
{
	struct qcow2_io *io;
	bool is_qcow2;
	int r = qcow2_io_open_file(path, false, &io);

	if (r < 0)
		return r;
	r = qcow2_header_probe(io, &is_qcow2, NULL);
	qcow2_io_close(io);
	if (r == 0)
		*fmt = is_qcow2 ? "qcow2" : "raw";
	return r;
}

int qcow2_rebase(const char *image, const char *backing, const char *fmt, bool unsafe, bool dry_run,
		 const struct qcow2_job *job, struct qcow2_plan *plan)
{
	struct qcow2_chain_opts ro = {.lock = true, .keys = qcow2_job_keys(job)};
	struct qcow2_chain *c, *under = NULL;
	char path[PATH_MAX];
	unsigned k = 0;
	bool in_chain = false;
	struct qcow2_phase_mark pm = qcow2_phase_start();
	int r;

	memset(plan, 0, sizeof(*plan));
	r = open_top_writable(image, dry_run, job, &c);
	if (r < 0)
		return r;
	if (backing[0]) {
		r = qcow2_chain_resolve_path(NULL, qcow2_commit_layer_path(c, 0), backing, path,
					     sizeof(path));
		if (r < 0 && unsafe) { /* only the pointer: the file need not exist */
			r = 0;
			path[0] = 0;
		}
		if (r == 0 && path[0] && !fmt)
			r = probe_format(path, &fmt);
		if (r == 0 && path[0] && !unsafe) {
			in_chain = qcow2_commit_find_layer(c, path, &k) == 0 && k > 0;
			r = qcow2_chain_open(path, &ro, &under);
		}
	}
	qcow2_job_phase(job, "open", pm, 0);
	if (r == 0 && !unsafe)
		r = copy_up(c, in_chain ? k : qcow2_chain_depth(c), under, in_chain, !in_chain,
			    dry_run, job, plan);
	pm = qcow2_phase_start();
	if (r == 0)
		r = set_backing(c, backing, backing[0] ? fmt : NULL, dry_run, plan);
	qcow2_job_phase(job, "pointer", pm, 0);
	pm = qcow2_phase_start();
	qcow2_chain_close(under);
	qcow2_chain_close(c);
	qcow2_job_phase(job, "flush", pm, 0);
	return r;
}
