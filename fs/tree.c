/* SPDX-License-Identifier: MIT */
/*
 * tree.c - the mounted tree: which names exist under the mount point and what each shows.
 *
 * Source files are known through a cache of "srcs", keyed by canonical path and refreshed when
 * their stat identity (inode, size, mtime, ctime) changes: header facts, snapshot names, the
 * resolved backing file. A directory's names are computed from its srcs when it is listed, or
 * looked up and something changed (SPEC 2): flat views of valid qcow2 chains, snapshot views,
 * raw backing files, with the collision rule. Chains are checked from the cache (loops, files
 * outside SOURCE, refused layers) with a per-scan memo, so a directory of 1,000 images or a
 * chain of 1,000 layers costs O(files) per scan. Images are opened (locked, L1 loaded) only
 * when a flat view is opened.
 *
 * Locking: t->lock guards the src cache, the node table and every node field marked so. It is
 * never held across a chain open or any read of image data; node->open_lock is taken after it
 * is released.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "qcowfs.h"

#define HASH_BUCKETS 4096u

enum backing_fmt { FMT_PROBE, FMT_QCOW2, FMT_RAW };

struct snap {
	char *id;
	char *name;
	uint64_t size;
};

struct src {
	char *path; /* canonical */
	struct stat st;
	unsigned stat_gen; /* scan generation of the last refresh */
	bool qcow2;
	int err; /* negative errno: refused; errmsg says why */
	char *errmsg;
	bool logged;
	uint64_t vsize;
	char *backing; /* canonical path, or NULL */
	enum backing_fmt backing_fmt;
	uint32_t nsnaps;
	struct snap *snaps;
	unsigned check_gen; /* chain check memo */
	int check_err;
	char *check_msg;
	unsigned visit;
	struct src *hnext;
};

struct qfs_tree {
	pthread_mutex_t lock;
	char *source;   /* canonical SOURCE (a directory, or a file) */
	char *root_dir; /* SOURCE, or its directory for a single file */
	char *mount_point;
	bool single_file;
	struct qcow2_chain_opts copts;
	struct src *srcs[HASH_BUCKETS]; /* under lock */
	unsigned gen, visit;            /* under lock */
	struct qfs_node **nodes;        /* under lock: by ino - 1 */
	size_t n_nodes, cap_nodes;
	struct qfs_node *by_rel[HASH_BUCKETS];
};

/* One name a directory shows, as computed by a scan. */
struct entry {
	char *name;
	enum qfs_kind kind;
	char *src;
	char *snap_id;
};

struct listing {
	struct entry *e;
	size_t n, cap;
};

static unsigned hash_str(const char *s)
{
	unsigned h = 2166136261u;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 16777619u;
	return h % HASH_BUCKETS;
}

const char *qfs_tree_source(const struct qfs_tree *t)
{
	return t->source;
}

/* ---- the src cache ---- */

static void src_clear(struct src *s)
{
	uint32_t i;

	for (i = 0; i < s->nsnaps; i++) {
		free(s->snaps[i].id);
		free(s->snaps[i].name);
	}
	free(s->snaps);
	free(s->errmsg);
	free(s->backing);
	free(s->check_msg);
	s->snaps = NULL;
	s->nsnaps = 0;
	s->errmsg = s->backing = s->check_msg = NULL;
	s->err = 0;
	s->qcow2 = false;
	s->logged = false;
	s->check_gen = 0;
}

static void src_refuse(struct src *s, int err, const char *msg)
{
	s->err = err;
	free(s->errmsg);
	s->errmsg = strdup(msg);
}

static int src_snapshots(struct src *s, struct qcow2_io *io, const struct qcow2_header *h)
{
	struct qcow2_snapshot *snaps;
	uint32_t i;
	int r;

	r = qcow2_snapshot_read(io, h, &snaps);
	if (r < 0)
		return r;
	s->snaps = calloc(h->nb_snapshots ? h->nb_snapshots : 1, sizeof(*s->snaps));
	for (i = 0; s->snaps && i < h->nb_snapshots; i++) {
		s->snaps[i].id = strdup(snaps[i].id);
		s->snaps[i].name = strdup(snaps[i].name);
		s->snaps[i].size = snaps[i].disk_bytes;
	}
	s->nsnaps = s->snaps ? h->nb_snapshots : 0;
	free(snaps);
	return 0;
}

/* Read what the tree needs to know of the file: format, header facts, snapshots, backing. */
static void src_probe(struct qfs_tree *t, struct src *s)
{
	char backing[PATH_MAX];
	struct qcow2_header *h;
	struct qcow2_io *io;
	uint8_t magic[4];
	int r;

	src_clear(s);
	r = qcow2_io_open_file(s->path, false, &io);
	if (r < 0) {
		src_refuse(s, r, qcow2_last_error());
		return;
	}
	if (qcow2_io_pread(io, magic, 4, 0) != 4 || !qcow2_probe(magic, 4)) {
		qcow2_io_close(io);
		return; /* not qcow2: a raw file, shown only if it backs a chain */
	}
	s->qcow2 = true;
	h = malloc(sizeof(*h));
	r = h ? qcow2_header_read(io, h) : -ENOMEM;
	if (r == 0)
		r = qcow2_io_lock_check_reader(io);
	if (r == 0)
		r = src_snapshots(s, io, h);
	if (r == 0 && h->backing_file[0]) {
		s->backing_fmt = !h->backing_fmt[0]			  ? FMT_PROBE :
				 strcmp(h->backing_fmt, "qcow2") == 0 ? FMT_QCOW2 :
				 strcmp(h->backing_fmt, "raw") == 0   ? FMT_RAW :
									-1;
		if ((int)s->backing_fmt < 0)
			r = qcow2_set_error(-ENOTSUP, "'%s': backing format '%s' not supported",
					    s->path, h->backing_fmt);
		if (r == 0)
			r = qcow2_chain_resolve_path(&t->copts, s->path, h->backing_file, backing,
						     sizeof(backing));
		if (r == 0)
			s->backing = strdup(backing);
	}
	if (r == 0)
		s->vsize = h->size;
	else
		src_refuse(s, r, qcow2_last_error());
	free(h);
	qcow2_io_close(io);
}

static struct src *src_find(struct qfs_tree *t, const char *path, struct src ***link)
{
	struct src **pp = &t->srcs[hash_str(path)];

	while (*pp && strcmp((*pp)->path, path) != 0)
		pp = &(*pp)->hnext;
	*link = pp;
	return *pp;
}

static bool same_identity(const struct stat *a, const struct stat *b)
{
	return a->st_ino == b->st_ino && a->st_dev == b->st_dev && a->st_size == b->st_size &&
	       a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
	       a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* Does another process hold @path in a way that forbids reading it (QEMU's write lock)? */
static bool lock_conflict(const char *path)
{
	struct qcow2_io *io;
	bool busy;

	if (qcow2_io_open_file(path, false, &io) < 0)
		return false;
	busy = qcow2_io_lock_check_reader(io) == -EBUSY;
	qcow2_io_close(io);
	return busy;
}

/* The src for canonical @path, refreshed once per scan generation. NULL if the file is gone
 * (or is not a regular file). Called with t->lock held. */
static struct src *src_get(struct qfs_tree *t, const char *path)
{
	struct src **link, *s = src_find(t, path, &link);
	struct stat st;

	if (s && s->stat_gen == t->gen)
		return s;
	if (stat(path, &st) < 0 || !S_ISREG(st.st_mode)) {
		if (s) {
			*link = s->hnext;
			src_clear(s);
			free(s->path);
			free(s);
		}
		return NULL;
	}
	if (!s) {
		s = calloc(1, sizeof(*s));
		if (!s || !(s->path = strdup(path))) {
			free(s);
			return NULL;
		}
		*link = s;
	} else if (same_identity(&s->st, &st) && s->err != -EBUSY &&
		   !(s->qcow2 && s->err == 0 && lock_conflict(s->path))) {
		s->st = st;
		s->stat_gen = t->gen;
		return s;
	}
	s->st = st;
	s->stat_gen = t->gen;
	src_probe(t, s);
	return s;
}

/* ---- chain checks ---- */

static void set_check(struct src *s, unsigned gen, int err, const char *msg)
{
	s->check_gen = gen;
	s->check_err = err;
	free(s->check_msg);
	s->check_msg = msg ? strdup(msg) : NULL;
}

/* Is the chain whose top is @top servable? Memoised per scan generation for every layer the
 * walk passes. Returns 0 or a negative errno with *msg set (owned by the src). */
static int chain_check(struct qfs_tree *t, struct src *top, const char **msg)
{
	struct src *path[QCOW2_DEFAULT_MAX_DEPTH + 1], *cur = top;
	char buf[700];
	unsigned n = 0, i, token = ++t->visit;
	int err = 0;

	buf[0] = '\0';
	while (cur->check_gen != t->gen) {
		struct src *next;

		path[n++] = cur;
		cur->visit = token;
		if (cur->err) {
			err = cur->err;
			snprintf(buf, sizeof(buf), "%s", cur->errmsg ? cur->errmsg : "refused");
			break;
		}
		if (!cur->qcow2 || !cur->backing || cur->backing_fmt == FMT_RAW)
			break;
		next = src_get(t, cur->backing);
		if (!next) {
			err = -ENOENT;
			snprintf(buf, sizeof(buf), "'%s': backing file '%s' is missing", cur->path,
				 cur->backing);
			break;
		}
		if (next->visit == token) {
			err = -ELOOP;
			snprintf(buf, sizeof(buf), "'%s': backing chain loops back to '%s'", cur->path,
				 next->path);
			break;
		}
		if (cur->backing_fmt == FMT_QCOW2 && !next->qcow2) {
			err = -EINVAL;
			snprintf(buf, sizeof(buf), "'%s': backing file '%s' is not qcow2", cur->path,
				 next->path);
			break;
		}
		if (n >= QCOW2_DEFAULT_MAX_DEPTH) {
			err = -ELOOP;
			snprintf(buf, sizeof(buf), "'%s': backing chain deeper than %u layers",
				 top->path, QCOW2_DEFAULT_MAX_DEPTH);
			break;
		}
		cur = next;
	}
	if (cur->check_gen == t->gen && n > 0 && path[n - 1] != cur) {
		err = cur->check_err; /* the walk reached a layer already judged */
		snprintf(buf, sizeof(buf), "%s", cur->check_msg ? cur->check_msg : "");
	}
	for (i = 0; i < n; i++)
		set_check(path[i], t->gen, err, err ? buf : NULL);
	*msg = top->check_msg;
	return top->check_err;
}

/* Sum of st_blocks and the stamp (identity of every file) of @top's chain. */
static void chain_facts(struct qfs_tree *t, struct src *top, blkcnt_t *blocks, uint64_t *stamp)
{
	struct src *s = top;
	unsigned depth = 0;
	uint64_t h = 1469598103934665603ull;

	*blocks = 0;
	while (s && depth++ <= QCOW2_DEFAULT_MAX_DEPTH) {
		*blocks += s->st.st_blocks;
		h = (h ^ (uint64_t)s->st.st_ino) * 1099511628211ull;
		h = (h ^ (uint64_t)s->st.st_size) * 1099511628211ull;
		h = (h ^ (uint64_t)s->st.st_mtim.tv_nsec) * 1099511628211ull;
		h = (h ^ (uint64_t)s->st.st_ctim.tv_sec) * 1099511628211ull;
		h = (h ^ (uint64_t)s->st.st_ctim.tv_nsec) * 1099511628211ull;
		if (!s->qcow2 || !s->backing || s->backing_fmt == FMT_RAW) {
			if (s->backing && s->backing_fmt == FMT_RAW)
				s = src_get(t, s->backing);
			else
				break;
			if (s)
				*blocks += s->st.st_blocks;
			break;
		}
		s = src_get(t, s->backing);
	}
	*stamp = h;
}

/* Log a refusal once per change of the file. */
static void log_refusal(struct src *s, const char *msg)
{
	if (s->logged)
		return;
	s->logged = true;
	qfs_log("refusing '%s': %s", s->path, msg && msg[0] ? msg : "invalid image");
}

/* ---- nodes ---- */

static struct qfs_node *node_get(struct qfs_tree *t, const char *rel, enum qfs_kind kind,
				 const char *src, const char *snap_id)
{
	unsigned b = hash_str(rel);
	struct qfs_node *n;

	for (n = t->by_rel[b]; n; n = n->hnext)
		if (strcmp(n->rel, rel) == 0)
			break;
	if (!n) {
		if (t->n_nodes == t->cap_nodes) {
			size_t cap = t->cap_nodes ? 2 * t->cap_nodes : 256;
			struct qfs_node **nn = realloc(t->nodes, cap * sizeof(*nn));
			if (!nn)
				return NULL;
			t->nodes = nn;
			t->cap_nodes = cap;
		}
		n = calloc(1, sizeof(*n));
		if (!n || !(n->rel = strdup(rel))) {
			free(n);
			return NULL;
		}
		pthread_mutex_init(&n->open_lock, NULL);
		t->nodes[t->n_nodes++] = n;
		n->ino = t->n_nodes;
		n->hnext = t->by_rel[b];
		t->by_rel[b] = n;
	}
	n->kind = kind;
	if (!n->src || strcmp(n->src, src) != 0) {
		free(n->src);
		n->src = strdup(src);
	}
	free(n->snap_id);
	n->snap_id = snap_id ? strdup(snap_id) : NULL;
	return n;
}

struct qfs_node *qfs_tree_node(struct qfs_tree *t, fuse_ino_t ino)
{
	struct qfs_node *n = NULL;

	pthread_mutex_lock(&t->lock);
	if (ino >= 1 && ino <= t->n_nodes)
		n = t->nodes[ino - 1];
	pthread_mutex_unlock(&t->lock);
	return n;
}

/* ---- directory scans ---- */

static int listing_add(struct listing *l, const char *name, enum qfs_kind kind, const char *src,
		       const char *snap_id)
{
	struct entry *e;

	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 32;
		struct entry *ne = realloc(l->e, cap * sizeof(*ne));
		if (!ne)
			return -ENOMEM;
		l->e = ne;
		l->cap = cap;
	}
	e = &l->e[l->n++];
	e->name = strdup(name);
	e->kind = kind;
	e->src = strdup(src);
	e->snap_id = snap_id ? strdup(snap_id) : NULL;
	return 0;
}

static void listing_free(struct listing *l)
{
	size_t i;

	for (i = 0; i < l->n; i++) {
		free(l->e[i].name);
		free(l->e[i].src);
		free(l->e[i].snap_id);
	}
	free(l->e);
	memset(l, 0, sizeof(*l));
}

static bool listing_has(const struct listing *l, const char *name)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		if (strcmp(l->e[i].name, name) == 0)
			return true;
	return false;
}

/* "NAME.qcow2" -> "NAME" (also .qcow, .img); other names unchanged. */
static void stem_of(const char *name, char *out, size_t cap)
{
	static const char *const sfx[] = { ".qcow2", ".qcow", ".img" };
	size_t n = strlen(name), i;

	snprintf(out, cap, "%s", name);
	for (i = 0; i < 3; i++) {
		size_t k = strlen(sfx[i]);
		if (n > k && strcmp(name + n - k, sfx[i]) == 0) {
			out[n - k] = '\0';
			return;
		}
	}
}

/* Snapshot names in file names: '/' is "%2F" and '%' is "%25" (SPEC 2). */
static void encode_snap(const char *s, char *out, size_t cap)
{
	size_t o = 0;

	for (; *s && o + 4 < cap; s++) {
		if (*s == '/' || *s == '%')
			o += (size_t)snprintf(out + o, cap - o, "%%%02X", (unsigned char)*s);
		else
			out[o++] = *s;
	}
	out[o] = '\0';
}

/* A file found in the directory being scanned. */
struct found {
	char *name;
	struct src *s; /* NULL for a subdirectory */
	char *dir;     /* subdirectory: its path */
	char *flat;    /* chosen flat name */
};

static bool is_raw_backing(struct qfs_tree *t, const struct src *raw)
{
	unsigned b;
	struct src *s;

	if (raw->qcow2)
		return false;
	for (b = 0; b < HASH_BUCKETS; b++)
		for (s = t->srcs[b]; s; s = s->hnext)
			if (s->qcow2 && !s->err && s->backing && strcmp(s->backing, raw->path) == 0)
				return true;
	return false;
}

static void add_image(struct qfs_tree *t, struct listing *l, struct found *f)
{
	char snapname[2 * NAME_MAX + 3 * 1024 + 8], enc[3 * 1024 + 1], base[NAME_MAX + 1];
	const char *msg;
	uint32_t i;

	if (chain_check(t, f->s, &msg) < 0) {
		log_refusal(f->s, msg);
		return;
	}
	listing_add(l, f->flat, QFS_FLAT, f->s->path, NULL);
	snprintf(base, sizeof(base), "%.*s", (int)(strlen(f->flat) - 4), f->flat);
	for (i = 0; i < f->s->nsnaps; i++) {
		encode_snap(f->s->snaps[i].name, enc, sizeof(enc));
		snprintf(snapname, sizeof(snapname), "%s@%s.raw", base, enc);
		if (strlen(snapname) <= NAME_MAX && !listing_has(l, snapname))
			listing_add(l, snapname, QFS_FLAT, f->s->path, f->s->snaps[i].id);
	}
}

/* Choose flat names: "STEM.raw", or "NAME.raw" where two would collide (SPEC 2). */
static void choose_names(struct found *f, size_t n)
{
	char stem[NAME_MAX + 1], cand[NAME_MAX + 8];
	size_t i, j;

	for (i = 0; i < n; i++) {
		if (!f[i].s || !f[i].s->qcow2)
			continue;
		stem_of(f[i].name, stem, sizeof(stem));
		snprintf(cand, sizeof(cand), "%s.raw", stem);
		for (j = 0; j < n; j++) {
			char other[NAME_MAX + 8];
			if (j == i)
				continue;
			if (f[j].s && f[j].s->qcow2) {
				stem_of(f[j].name, stem, sizeof(stem));
				snprintf(other, sizeof(other), "%s.raw", stem);
			} else {
				snprintf(other, sizeof(other), "%s", f[j].name);
			}
			if (strcmp(cand, other) == 0)
				break;
		}
		if (j < n)
			snprintf(cand, sizeof(cand), "%s.raw", f[i].name);
		f[i].flat = strdup(cand);
	}
}

/* Collect the directory's subdirectories, qcow2 images and raw backing files. */
static size_t collect(struct qfs_tree *t, const char *dir, struct found **out)
{
	struct found *f = NULL;
	size_t n = 0, cap = 0;
	struct dirent *d;
	DIR *dp;

	if (t->single_file) {
		struct src *s = src_get(t, t->source);
		if (!s || !s->qcow2 || !(f = calloc(1, sizeof(*f))))
			return 0;
		f->name = strdup(strrchr(t->source, '/') + 1);
		f->s = s;
		*out = f;
		return 1;
	}
	if (!(dp = opendir(dir)))
		return 0;
	while ((d = readdir(dp))) {
		char path[PATH_MAX], canon[PATH_MAX];
		struct stat st;
		struct src *s = NULL;

		if (strcmp(d->d_name, ".") == 0 || strcmp(d->d_name, "..") == 0)
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", dir, d->d_name) >= (int)sizeof(path) ||
		    strcmp(path, t->mount_point) == 0 || lstat(path, &st) < 0)
			continue;
		if (!S_ISDIR(st.st_mode)) {
			if (S_ISLNK(st.st_mode) ? !realpath(path, canon) :
						  !snprintf(canon, sizeof(canon), "%s", path))
				continue;
			s = src_get(t, canon);
			if (!s)
				continue;
		}
		if (n == cap) {
			struct found *nf = realloc(f, (cap = cap ? 2 * cap : 32) * sizeof(*nf));
			if (!nf)
				break;
			f = nf;
		}
		memset(&f[n], 0, sizeof(f[n]));
		f[n].name = strdup(d->d_name);
		f[n].s = s;
		f[n].dir = s ? NULL : strdup(path);
		n++;
	}
	closedir(dp);
	*out = f;
	return n;
}

/* Compute the names directory @dir shows. Called with t->lock held. */
static void scan_dir(struct qfs_tree *t, struct qfs_node *dir, struct listing *l)
{
	struct found *f = NULL;
	size_t n, i;

	t->gen++;
	n = collect(t, dir->src, &f);
	choose_names(f, n);
	for (i = 0; i < n; i++) {
		if (!f[i].s)
			listing_add(l, f[i].name, QFS_DIR, f[i].dir, NULL);
		else if (f[i].s->qcow2 && f[i].s->err)
			log_refusal(f[i].s, f[i].s->errmsg);
		else if (f[i].s->qcow2)
			add_image(t, l, &f[i]);
		else if (is_raw_backing(t, f[i].s))
			listing_add(l, f[i].name, QFS_RAW, f[i].s->path, NULL);
	}
	for (i = 0; i < n; i++) {
		free(f[i].name);
		free(f[i].dir);
		free(f[i].flat);
	}
	free(f);
}

/* Load every file below @dir into the src cache (so raw backing files are known). */
static void preload(struct qfs_tree *t, const char *dir, unsigned depth)
{
	struct dirent *d;
	DIR *dp;

	if (depth > 64 || !(dp = opendir(dir)))
		return;
	while ((d = readdir(dp))) {
		char path[PATH_MAX];
		struct stat st;

		if (d->d_name[0] == '.' && (!d->d_name[1] || (d->d_name[1] == '.' && !d->d_name[2])))
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", dir, d->d_name) >= (int)sizeof(path) ||
		    strcmp(path, t->mount_point) == 0 || lstat(path, &st) < 0)
			continue;
		if (S_ISDIR(st.st_mode))
			preload(t, path, depth + 1);
		else if (S_ISREG(st.st_mode))
			src_get(t, path);
	}
	closedir(dp);
}

static const struct entry *find_entry(const struct listing *l, const char *name)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		if (strcmp(l->e[i].name, name) == 0)
			return &l->e[i];
	return NULL;
}

static void child_rel(const struct qfs_node *dir, const char *name, char *out, size_t cap)
{
	if (dir->rel[0])
		snprintf(out, cap, "%s/%s", dir->rel, name);
	else
		snprintf(out, cap, "%s", name);
}

/* ---- attributes ---- */

static int flat_attr(struct qfs_tree *t, struct qfs_node *n, struct stat *st)
{
	struct src *s = src_get(t, n->src);
	const char *msg;
	uint64_t stamp, size;
	blkcnt_t blocks;
	uint32_t i;

	if (!s || !s->qcow2 || s->err || chain_check(t, s, &msg) < 0)
		return ENOENT;
	size = s->vsize;
	if (n->snap_id) {
		for (i = 0; i < s->nsnaps && strcmp(s->snaps[i].id, n->snap_id) != 0; i++)
			;
		if (i == s->nsnaps)
			return ENOENT;
		size = s->snaps[i].size;
	}
	chain_facts(t, s, &blocks, &stamp);
	*st = s->st;
	st->st_mode = S_IFREG | 0444;
	st->st_nlink = 1;
	st->st_size = (off_t)size;
	st->st_blocks = blocks;
	st->st_blksize = 65536;
	return 0;
}

static int node_attr(struct qfs_tree *t, struct qfs_node *n, struct stat *st)
{
	switch (n->kind) {
	case QFS_DIR:
		if (stat(n->src, st) < 0)
			return errno;
		if (t->single_file)
			st->st_mode = S_IFDIR | 0555;
		else
			st->st_mode = S_IFDIR | (st->st_mode & 0555);
		break;
	case QFS_RAW:
		if (stat(n->src, st) < 0)
			return errno;
		st->st_mode = S_IFREG | (st->st_mode & 0444);
		break;
	case QFS_FLAT: {
		int r = flat_attr(t, n, st);
		if (r)
			return r;
		break;
	}
	}
	st->st_ino = n->ino;
	return 0;
}

/* Is the node still what the directory would show (no rescan needed)? */
static bool node_current(struct qfs_tree *t, struct qfs_node *dir, struct qfs_node *n)
{
	struct stat st;

	if (!t->single_file && (stat(dir->src, &st) < 0 || !dir->scanned ||
				st.st_mtim.tv_sec != dir->scan_mtime.tv_sec ||
				st.st_mtim.tv_nsec != dir->scan_mtime.tv_nsec))
		return false;
	return node_attr(t, n, &st) == 0;
}

static void note_scanned(struct qfs_tree *t, struct qfs_node *dir)
{
	struct stat st;

	if (!t->single_file && stat(dir->src, &st) == 0) {
		dir->scan_mtime = st.st_mtim;
		dir->scanned = true;
	}
}

struct qfs_node *qfs_tree_lookup(struct qfs_tree *t, struct qfs_node *dir, const char *name,
				 struct stat *st, int *err)
{
	char rel[PATH_MAX];
	struct listing l = { 0 };
	const struct entry *e;
	struct qfs_node *n = NULL;

	pthread_mutex_lock(&t->lock);
	*err = ENOENT;
	if (dir->kind != QFS_DIR) {
		*err = ENOTDIR;
		goto out;
	}
	child_rel(dir, name, rel, sizeof(rel));
	t->gen++;
	for (n = t->by_rel[hash_str(rel)]; n && strcmp(n->rel, rel) != 0; n = n->hnext)
		;
	if (n && node_current(t, dir, n) && node_attr(t, n, st) == 0) {
		*err = 0;
		goto out;
	}
	scan_dir(t, dir, &l);
	note_scanned(t, dir);
	e = find_entry(&l, name);
	n = e ? node_get(t, rel, e->kind, e->src, e->snap_id) : NULL;
	if (n && (*err = node_attr(t, n, st)) != 0)
		n = NULL;
out:
	pthread_mutex_unlock(&t->lock);
	listing_free(&l);
	return n;
}

int qfs_tree_getattr(struct qfs_tree *t, struct qfs_node *n, struct stat *st)
{
	int r;

	pthread_mutex_lock(&t->lock);
	t->gen++;
	r = node_attr(t, n, st);
	pthread_mutex_unlock(&t->lock);
	return r;
}

int qfs_tree_list(struct qfs_tree *t, struct qfs_node *dir, struct qfs_dirent **out, size_t *n)
{
	struct listing l = { 0 };
	struct qfs_dirent *d = NULL;
	char rel[PATH_MAX];
	size_t i;
	int r = 0;

	pthread_mutex_lock(&t->lock);
	if (dir->kind != QFS_DIR) {
		r = ENOTDIR;
		goto out;
	}
	scan_dir(t, dir, &l);
	note_scanned(t, dir);
	d = calloc(l.n ? l.n : 1, sizeof(*d));
	if (!d) {
		r = ENOMEM;
		goto out;
	}
	for (i = 0; i < l.n; i++) {
		struct qfs_node *c;

		child_rel(dir, l.e[i].name, rel, sizeof(rel));
		c = node_get(t, rel, l.e[i].kind, l.e[i].src, l.e[i].snap_id);
		d[i].name = strdup(l.e[i].name);
		d[i].ino = c ? c->ino : 0;
		d[i].type = l.e[i].kind == QFS_DIR ? S_IFDIR : S_IFREG;
	}
	*out = d;
	*n = l.n;
out:
	pthread_mutex_unlock(&t->lock);
	listing_free(&l);
	return r;
}

void qfs_dirents_free(struct qfs_dirent *d, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(d[i].name);
	free(d);
}

/* ---- open views ---- */

int qfs_tree_open(struct qfs_tree *t, struct qfs_node *n, bool *keep_cache)
{
	struct qcow2_chain_opts o;
	char *src = NULL, *snap = NULL;
	uint64_t stamp = 0;
	blkcnt_t blocks;
	struct src *s;
	int r = 0;

	pthread_mutex_lock(&t->lock);
	t->gen++;
	s = n->kind == QFS_FLAT ? src_get(t, n->src) : NULL;
	if (s) {
		chain_facts(t, s, &blocks, &stamp);
		src = strdup(n->src);
		snap = n->snap_id ? strdup(n->snap_id) : NULL;
	}
	o = t->copts;
	pthread_mutex_unlock(&t->lock);
	if (!src)
		return ENOENT;

	pthread_mutex_lock(&n->open_lock);
	if (!n->chain) {
		o.snapshot = snap;
		r = qcow2_chain_open(src, &o, &n->chain);
		if (r < 0) {
			qfs_log("cannot open '%s': %s", n->rel, qcow2_last_error());
			n->chain = NULL;
		}
	}
	if (r == 0) {
		*keep_cache = n->opens == 0 ? stamp == n->stamp : true;
		n->stamp = stamp;
		n->opens++;
	}
	pthread_mutex_unlock(&n->open_lock);
	free(src);
	free(snap);
	return -r;
}

void qfs_tree_release(struct qfs_tree *t, struct qfs_node *n)
{
	pthread_mutex_lock(&n->open_lock);
	if (n->opens && --n->opens == 0) {
		qcow2_chain_close(n->chain);
		n->chain = NULL;
	}
	pthread_mutex_unlock(&n->open_lock);
}

int qfs_tree_raw_path(struct qfs_tree *t, struct qfs_node *n, char *out, size_t cap)
{
	int r = 0;

	pthread_mutex_lock(&t->lock);
	if (n->kind != QFS_RAW)
		r = EISDIR;
	else
		snprintf(out, cap, "%s", n->src);
	pthread_mutex_unlock(&t->lock);
	return r;
}

/* ---- lifetime ---- */

int qfs_tree_new(const struct qfs_config *cfg, struct qfs_tree **out)
{
	struct qfs_tree *t = calloc(1, sizeof(*t));
	char canon[PATH_MAX];
	struct stat st;

	if (!t)
		return -ENOMEM;
	if (!realpath(cfg->source, canon) || stat(canon, &st) < 0) {
		free(t);
		return -errno;
	}
	pthread_mutex_init(&t->lock, NULL);
	t->source = strdup(canon);
	t->single_file = !S_ISDIR(st.st_mode);
	if (t->single_file)
		*strrchr(canon, '/') = '\0';
	t->root_dir = strdup(canon[0] ? canon : "/");
	t->mount_point = strdup(cfg->mount_point ? cfg->mount_point : "");
	t->copts.root = t->root_dir;
	t->copts.allow_dirs = cfg->backing_dirs;
	t->copts.n_allow_dirs = cfg->n_backing_dirs;
	t->copts.lock = true;
	node_get(t, "", QFS_DIR, t->root_dir, NULL); /* ino 1 = FUSE_ROOT_ID */
	pthread_mutex_lock(&t->lock);
	t->gen++;
	if (t->single_file)
		src_get(t, t->source);
	else
		preload(t, t->root_dir, 0);
	pthread_mutex_unlock(&t->lock);
	*out = t;
	return 0;
}

void qfs_tree_free(struct qfs_tree *t)
{
	unsigned b;
	size_t i;

	if (!t)
		return;
	for (b = 0; b < HASH_BUCKETS; b++) {
		struct src *s = t->srcs[b], *next;
		for (; s; s = next) {
			next = s->hnext;
			src_clear(s);
			free(s->path);
			free(s);
		}
	}
	for (i = 0; i < t->n_nodes; i++) {
		struct qfs_node *n = t->nodes[i];
		qcow2_chain_close(n->chain);
		pthread_mutex_destroy(&n->open_lock);
		free(n->rel);
		free(n->src);
		free(n->snap_id);
		free(n);
	}
	free(t->nodes);
	free(t->source);
	free(t->root_dir);
	free(t->mount_point);
	pthread_mutex_destroy(&t->lock);
	free(t);
}
