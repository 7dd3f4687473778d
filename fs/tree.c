/* SPDX-License-Identifier: MIT */
/*
 * tree.c - the tree object: its nodes (every name under the mount point, by inode number and
 * by path, each with a stable inode number), its accessors and its lifetime (the first load of
 * SOURCE's files into the src cache, the check of a single-file SOURCE). What a directory
 * shows is tree-dir.c's, what a view's attributes are tree-attr.c's, opening views
 * tree-open.c's.
 *
 * Locking: takes t->lock (tree.h: what it guards, and why no path looked up under it may
 * enter our own mount); the node table and the src cache are used only under it. Takes no
 * node's open_lock (qfs_tree_free() runs once the session has ended: no other thread is left).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qcowfs.h"
#include "src.h"
#include "tree.h"

/* The first size of the table of nodes by rel (grown with the nodes: rel_grow()). */
#define REL_BUCKETS 4096u

const char *qfs_tree_source(const struct qfs_tree *t)
{
	return t->source;
}

/* ---- nodes ---- */

static size_t rel_hash(const char *rel)
{
	size_t h = 2166136261u;

	while (*rel)
		h = (h ^ (unsigned char)*rel++) * 16777619u;
	return h ^ (h >> 15);
}

struct qfs_node *qfs_tree_node_find(const struct qfs_tree *t, const char *rel)
{
	struct qfs_node *n = t->by_rel[rel_hash(rel) & t->rel_mask];

	while (n && strcmp(n->rel, rel) != 0)
		n = n->hnext;
	return n;
}

/* Keep the chains short: twice the buckets once there are as many nodes as buckets. */
static void rel_grow(struct qfs_tree *t)
{
	size_t cap = 2 * (t->rel_mask + 1), i;
	struct qfs_node **b;

	if (t->n_nodes < t->rel_mask + 1 || !(b = calloc(cap, sizeof(*b))))
		return; /* out of memory: longer chains, still correct */
	for (i = 0; i < t->n_nodes; i++) {
		struct qfs_node *n = t->nodes[i];
		size_t k = rel_hash(n->rel) & (cap - 1);

		n->hnext = b[k];
		b[k] = n;
	}
	free(t->by_rel);
	t->by_rel = b;
	t->rel_mask = cap - 1;
}

struct qfs_node *qfs_tree_node_get(struct qfs_tree *t, const char *rel, enum qfs_kind kind,
				   const char *src, const char *snap_id)
{
	struct qfs_node *n = qfs_tree_node_find(t, rel);
	size_t b;

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
		b = rel_hash(rel) & t->rel_mask;
		n->hnext = t->by_rel[b];
		t->by_rel[b] = n;
		rel_grow(t);
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

/* ---- loading SOURCE ---- */

/* opendir() of the canonical directory @dir of SOURCE, following no symlink on the way: one
 * put there since the scan that found @dir must not lead into our own mount (t->lock is held). */
DIR *qfs_tree_opendir(struct qfs_tree *t, const char *dir)
{
	int fd = qfs_src_path_open(&t->cache, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *dp = fd >= 0 ? fdopendir(fd) : NULL;

	if (fd >= 0 && !dp)
		close(fd);
	return dp;
}

static void walk_at(struct qfs_tree *t, const char *dir, unsigned depth,
		    void (*visit)(void *ctx, const char *path, const struct stat *st), void *ctx)
{
	struct dirent *d;
	DIR *dp;

	if (depth > 64 || !(dp = qfs_tree_opendir(t, dir)))
		return;
	while ((d = readdir(dp))) {
		char path[PATH_MAX];
		struct stat st;

		if (d->d_name[0] == '.' &&
		    (!d->d_name[1] || (d->d_name[1] == '.' && !d->d_name[2])))
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", dir, d->d_name) >= (int)sizeof(path) ||
		    strcmp(path, t->mount_point) == 0 || qcow2_mounts_avoid(t->mounts, path) ||
		    fstatat(dirfd(dp), d->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (S_ISDIR(st.st_mode))
			walk_at(t, path, depth + 1, visit, ctx);
		else
			visit(ctx, path, &st);
	}
	closedir(dp);
}

void qfs_tree_walk(struct qfs_tree *t, const char *dir,
		   void (*visit)(void *ctx, const char *path, const struct stat *st), void *ctx)
{
	walk_at(t, dir, 0, visit, ctx);
}

/* How many files' headers are read ahead of the probe at the first load: enough to keep the
 * disk's queue full, few enough that the page cache keeps them until the probe comes. */
#define PRELOAD_AHEAD 128u

/* The regular files of SOURCE, in walk order (the first load's list). */
struct preload {
	struct {
		char *path;
		struct stat st;
	} * f;
	size_t n, cap;
	bool lost; /* out of memory: the files not listed are loaded by the first scan */
};

static void preload_one(void *ctx, const char *path, const struct stat *st)
{
	struct preload *p = ctx;

	if (!S_ISREG(st->st_mode) || p->lost)
		return;
	if (p->n == p->cap) {
		size_t cap = p->cap ? 2 * p->cap : 256;
		void *nf = realloc(p->f, cap * sizeof(*p->f));

		if (!nf) {
			p->lost = true;
			return;
		}
		p->f = nf;
		p->cap = cap;
	}
	if (!(p->f[p->n].path = strdup(path))) {
		p->lost = true;
		return;
	}
	p->f[p->n++].st = *st;
}

/* Load every regular file of SOURCE into the src cache (so raw backing files are known). Each
 * probe reads the start of its file and waits for it; with the page cache cold that wait is the
 * whole cost, one disk round trip per file. So the headers of the next PRELOAD_AHEAD files are
 * asked for (qfs_src_prefetch(): an advice, no wait) before each probe: the disk serves many at
 * once, and the probes, still one at a time and in the same order, find them in memory. The
 * probes decide everything as before; the prefetch only reads. */
static void preload(struct qfs_tree *t)
{
	struct preload p = {0};
	size_t i, ahead = 0;

	qfs_tree_walk(t, t->root_dir, preload_one, &p);
	for (i = 0; i < p.n; i++) {
		for (; ahead < p.n && ahead < i + PRELOAD_AHEAD; ahead++)
			qfs_src_prefetch(&t->cache, p.f[ahead].path, &p.f[ahead].st);
		qfs_src_get_stat(&t->cache, p.f[i].path, &p.f[i].st); /* the walk's fstatat() */
		free(p.f[i].path);
	}
	free(p.f);
}

bool qfs_tree_read_only(const struct qfs_tree *t)
{
	return t->read_only;
}

bool qfs_tree_checks_callers(const struct qfs_tree *t)
{
	return t->check_callers;
}

/* ---- lifetime ---- */

/* The FUSE mounts that SOURCE's directory and the backing directories hold, which the tree
 * never looks into (t->mounts, and the chain options' avoid hook). 0 or a negative errno. */
static int avoid_mounts(struct qfs_tree *t, const struct qfs_config *cfg)
{
	const char **keep;
	size_t i;
	int r;

	if (!(keep = calloc(1 + cfg->n_backing_dirs, sizeof(*keep))))
		return -ENOMEM;
	keep[0] = t->root_dir;
	for (i = 0; i < cfg->n_backing_dirs; i++)
		keep[i + 1] = cfg->backing_dirs[i];
	r = qcow2_mounts_new(keep, 1 + cfg->n_backing_dirs, &t->mounts);
	free(keep);
	if (r < 0)
		return r;
	t->copts.avoid.fn = qcow2_mounts_avoid;
	t->copts.avoid.ctx = t->mounts;
	return 0;
}

int qfs_tree_new(const struct qfs_config *cfg, struct qfs_tree **out)
{
	struct qfs_tree *t = calloc(1, sizeof(*t));
	char canon[PATH_MAX];
	struct stat st;
	int r;

	if (!t)
		return -ENOMEM;
	if (!realpath(cfg->source, canon) || stat(canon, &st) < 0) {
		free(t);
		return -errno;
	}
	t->by_rel = calloc(REL_BUCKETS, sizeof(*t->by_rel));
	if (!t->by_rel) {
		free(t);
		return -ENOMEM;
	}
	t->rel_mask = REL_BUCKETS - 1;
	pthread_mutex_init(&t->lock, NULL);
	t->source = strdup(canon);
	t->single_file = !S_ISDIR(st.st_mode);
	t->read_only = cfg->read_only;
	t->check_callers = cfg->check_callers;
	t->cfg = *cfg;
	if (t->single_file)
		*strrchr(canon, '/') = '\0';
	t->root_dir = strdup(canon[0] ? canon : "/");
	t->mount_point = strdup(cfg->mount_point ? cfg->mount_point : "");
	t->copts.root = t->root_dir;
	t->copts.allow_dirs = cfg->backing_dirs;
	t->copts.n_allow_dirs = cfg->n_backing_dirs;
	t->copts.mount_point = t->mount_point && t->mount_point[0] ? t->mount_point : NULL;
	t->copts.lock = true;
	t->copts.keys = cfg->keys;
	r = !t->root_dir || !t->source || !t->mount_point ? -ENOMEM : avoid_mounts(t, cfg);
	if (r < 0) {
		qfs_tree_free(t);
		return r;
	}
	qfs_src_cache_init(&t->cache, &t->copts, t->mounts, t->read_only);
	qfs_tree_node_get(t, "", QFS_DIR, t->root_dir, NULL); /* ino 1 = FUSE_ROOT_ID */
	/* ino 2: the status file, found by name only (tree-dir.c), never a view of SOURCE */
	qfs_tree_node_get(t, QFS_STATUS_NAME, QFS_STATUS, t->root_dir, NULL);
	pthread_mutex_lock(&t->lock);
	qfs_src_cache_next_gen(&t->cache);
	if (t->single_file)
		qfs_src_get(&t->cache, t->source);
	else
		preload(t);
	pthread_mutex_unlock(&t->lock);
	*out = t;
	return 0;
}

int qfs_tree_check_source(struct qfs_tree *t, char *msg, size_t cap)
{
	const char *why = NULL;
	struct qfs_src *s;
	int r = 0;

	if (!t->single_file)
		return 0;
	pthread_mutex_lock(&t->lock);
	s = qfs_src_get(&t->cache, t->source);
	if (!s) {
		r = -EINVAL;
		snprintf(msg, cap, "not a regular file");
	} else if (s->err) {
		r = s->err;
		snprintf(msg, cap, "%s", s->errmsg ? s->errmsg : strerror(-r));
	} else if (!s->qcow2) {
		r = -EINVAL;
		snprintf(msg, cap, "not a qcow2 image");
	} else if ((r = qfs_src_chain_check(&t->cache, s, &why)) < 0) {
		snprintf(msg, cap, "%s", why && why[0] ? why : strerror(-r));
	}
	pthread_mutex_unlock(&t->lock);
	return r;
}

void qfs_tree_free(struct qfs_tree *t)
{
	size_t i;

	if (!t)
		return;
	qfs_src_cache_release(&t->cache);
	for (i = 0; i < t->n_nodes; i++) {
		struct qfs_node *n = t->nodes[i];
		qcow2_chain_close(n->chain);
		qcow2_chain_close(n->moved);
		pthread_mutex_destroy(&n->open_lock);
		free(n->rel);
		free(n->src);
		free(n->snap_id);
		free(n->renamed);
		free(n);
	}
	qcow2_mounts_free(t->mounts);
	free(t->nodes);
	free(t->by_rel);
	free(t->source);
	free(t->root_dir);
	free(t->mount_point);
	pthread_mutex_destroy(&t->lock);
	free(t);
}
