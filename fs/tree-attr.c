/* SPDX-License-Identifier: MIT */
/*
 * tree-attr.c - the attributes of a view as the mount shows them: a directory's from its
 * source directory, a raw backing file's from the file, a flat view's from its chain (the
 * virtual size, or a snapshot's, the blocks of every layer). Owners and modes derive from the
 * source files, so that a view never grants more than they do (the modes: perm.c).
 *
 * Extended attributes (user.qcowfs.*) say what a view is: the files of its chain, whether it
 * is writable and why not (verdict.c, the one place that decides), its image file. They are
 * read with the same permission rule as the view: a caller who may not read the view learns
 * nothing of its chain (-EACCES).
 *
 * Locking: qfs_tree_getattr() and the xattr calls take t->lock; qfs_tree_attr() runs under it
 * (tree.h). No other lock.
 */
#include <errno.h>
#include <linux/limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "perm.h"
#include "qcowfs.h"
#include "src.h"
#include "tree.h"
#include "verdict.h"

static int flat_attr(struct qfs_tree *t, struct qfs_node *n, struct stat *st)
{
	struct qfs_src *s = qfs_src_get(&t->cache, n->src);
	const char *msg;
	uint64_t stamp, size;
	blkcnt_t blocks;
	mode_t mode;

	if (!s || !s->qcow2 || s->err || qfs_src_chain_check(&t->cache, s, &msg) < 0)
		return -ENOENT;
	size = s->vsize;
	if (n->snap_id) {
		long i = qfs_strmap_get(&s->snap_by_id, n->snap_id);

		if (i < 0)
			return -ENOENT;
		size = s->snaps[i].size;
	}
	qfs_src_chain_facts(&t->cache, s, &blocks, &stamp);
	*st = s->st;
	if (qfs_verdict(&t->cache, s, n->snap_id != NULL, &mode, NULL, NULL, 0) > QFS_STATE_RO)
		return -ENOENT;
	st->st_mode = S_IFREG | mode;
	st->st_nlink = 1;
	st->st_size = (off_t)size;
	st->st_blocks = blocks;
	st->st_blksize = 65536;
	return 0;
}

/* The attributes of @n as the mount shows them (t->lock held). 0 or a negative errno. */
int qfs_tree_attr(struct qfs_tree *t, struct qfs_node *n, struct stat *st)
{
	struct qfs_src *s;
	int r;

	switch (n->kind) {
	case QFS_DIR:
		r = qfs_src_path_stat(&t->cache, n->src, st);
		if (r < 0)
			return r;
		if (!S_ISDIR(st->st_mode))
			return -ENOENT;
		st->st_mode = S_IFDIR | qfs_perm_dir(&t->cache, n->src, st);
		break;
	case QFS_RAW:
		s = qfs_src_get(&t->cache, n->src);
		if (!s)
			return -ENOENT;
		*st = s->st;
		st->st_mode = S_IFREG | qfs_perm_view(&t->cache, s, false);
		break;
	case QFS_FLAT:
		r = flat_attr(t, n, st);
		if (r < 0)
			return r;
		break;
	case QFS_STATUS:
		/* the daemon's own file; its size is the caller's (ops.c, qfs_tree_status()) */
		memset(st, 0, sizeof(*st));
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		st->st_uid = geteuid();
		st->st_gid = getegid();
		st->st_blksize = 4096;
		break;
	}
	st->st_ino = n->ino;
	return 0;
}

int qfs_tree_getattr(struct qfs_tree *t, struct qfs_node *n, struct stat *st)
{
	int r;

	pthread_mutex_lock(&t->lock);
	qfs_src_cache_next_gen(&t->cache);
	r = qfs_tree_attr(t, n, st);
	pthread_mutex_unlock(&t->lock);
	return r;
}

/* ---- extended attributes ---- */

#define XATTR_PREFIX "user.qcowfs."

static const char *const xattr_names[] = {"chain", "mode", "image", "snapshot"};

/* A value being built: grown as needed, at most XATTR_SIZE_MAX bytes (-E2BIG past). */
struct xval {
	char *p;
	size_t len, cap;
	int err;
};

static void xval_add(struct xval *v, const char *s, size_t n)
{
	size_t cap;
	char *np;

	if (v->err)
		return;
	if (v->len + n > XATTR_SIZE_MAX) {
		v->err = -E2BIG;
		return;
	}
	if (v->len + n > v->cap) {
		cap = v->cap ? v->cap : 256;
		while (cap < v->len + n)
			cap *= 2;
		if (!(np = realloc(v->p, cap))) {
			v->err = -ENOMEM;
			return;
		}
		v->p = np;
		v->cap = cap;
	}
	memcpy(v->p + v->len, s, n);
	v->len += n;
}

static void xval_str(struct xval *v, const char *s)
{
	xval_add(v, s, strlen(s));
}

/* One file name of a chain: a newline separates them, so a newline in a name is written "\n"
 * and a backslash "\\" (the value never says two files where there is one). */
static void xval_path(struct xval *v, const char *path)
{
	for (; *path; path++) {
		if (*path == '\n')
			xval_str(v, "\\n");
		else if (*path == '\\')
			xval_str(v, "\\\\");
		else
			xval_add(v, path, 1);
	}
}

/* The files of @top's chain, top first, one a line (as chain_idents() in tree-open.c walks
 * it: a raw backing file ends it). */
static void chain_value(struct qfs_tree *t, struct qfs_src *s, struct xval *v)
{
	bool as_raw = false;
	unsigned depth = 0;

	for (; s && depth <= QCOW2_DEFAULT_MAX_DEPTH; depth++) {
		if (depth)
			xval_str(v, "\n");
		xval_path(v, s->path);
		if (as_raw || !s->qcow2 || !s->backing)
			break;
		as_raw = s->backing_fmt == QFS_FMT_RAW;
		s = qfs_src_get(&t->cache, s->backing);
	}
}

/* The value of user.qcowfs.@key for @n (t->lock held, its attributes just read). */
static void xattr_value(struct qfs_tree *t, struct qfs_node *n, const char *key,
			const struct qfs_caller *who, struct xval *v)
{
	struct qfs_src *s = n->kind == QFS_DIR ? NULL : qfs_src_get(&t->cache, n->src);
	char why[1024];
	long i;

	if (strcmp(key, "image") == 0 && (s || n->kind == QFS_DIR)) {
		xval_str(v, s ? s->path : n->src);
	} else if (strcmp(key, "chain") == 0 && s) {
		chain_value(t, s, v);
	} else if (strcmp(key, "mode") == 0 && s) {
		struct qfs_caller w;

		if (who) { /* "rw" only for a caller who may write it */
			w = *who;
			w.mask = W_OK;
		}
		if (qfs_verdict(&t->cache, s, n->snap_id != NULL, NULL, who ? &w : NULL, why,
				sizeof(why)) == QFS_STATE_RW) {
			xval_str(v, "rw");
		} else {
			xval_str(v, "ro: ");
			xval_str(v, why);
		}
	} else if (strcmp(key, "snapshot") == 0 && s && n->snap_id &&
		   (i = qfs_strmap_get(&s->snap_by_id, n->snap_id)) >= 0) {
		xval_str(v, s->snaps[i].name);
	} else {
		v->err = -ENODATA;
	}
}

int qfs_tree_getxattr(struct qfs_tree *t, struct qfs_node *n, const char *name,
		      const struct qfs_caller *who, char **val, size_t *len)
{
	struct xval v = {0};
	struct qfs_src *s;
	struct stat st;
	int r;

	if (strncmp(name, XATTR_PREFIX, strlen(XATTR_PREFIX)) != 0 || n->kind == QFS_STATUS)
		return -ENODATA; /* security.capability, asked before every write: at once */
	pthread_mutex_lock(&t->lock);
	qfs_src_cache_next_gen(&t->cache);
	if (n->kind == QFS_FLAT && (s = qfs_src_get(&t->cache, n->src)))
		qfs_src_lock_probe(&t->cache, s); /* "mode" names a writer that came since */
	r = qfs_tree_attr(t, n, &st);
	if (r == 0 && who) {
		struct qfs_caller c = *who;

		c.mask = R_OK; /* the chain and the reasons are no more than reading tells */
		r = qfs_caller_may(&c, &st) ? 0 : -EACCES;
	}
	if (r == 0) {
		xattr_value(t, n, name + strlen(XATTR_PREFIX), who, &v);
		r = v.err;
	}
	pthread_mutex_unlock(&t->lock);
	if (r == 0 && !v.p && !(v.p = malloc(1)))
		r = -ENOMEM;
	if (r < 0) {
		free(v.p);
		return r;
	}
	*val = v.p;
	*len = v.len;
	return 0;
}

int qfs_tree_listxattr(struct qfs_tree *t, struct qfs_node *n, char **names, size_t *len)
{
	struct xval v = {0};
	bool snap;
	size_t i;

	pthread_mutex_lock(&t->lock);
	snap = n->snap_id != NULL;
	pthread_mutex_unlock(&t->lock);
	for (i = 0; i < sizeof(xattr_names) / sizeof(xattr_names[0]); i++) {
		if (n->kind == QFS_STATUS || (n->kind == QFS_DIR && i != 2) ||
		    (!snap && strcmp(xattr_names[i], "snapshot") == 0))
			continue;
		xval_str(&v, XATTR_PREFIX);
		xval_add(&v, xattr_names[i], strlen(xattr_names[i]) + 1);
	}
	if (!v.err && !v.p && !(v.p = malloc(1)))
		v.err = -ENOMEM;
	if (v.err) {
		free(v.p);
		return v.err;
	}
	*names = v.p;
	*len = v.len;
	return 0;
}
