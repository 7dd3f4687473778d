/* SPDX-License-Identifier: MIT */
/*
 * tree-attr.c - the attributes of a view as the mount shows them: a directory's from its
 * source directory, a raw backing file's from the file, a flat view's from its chain (the
 * virtual size, or a snapshot's, the blocks of every layer). Owners and modes derive from the
 * source files, so that a view never grants more than they do (the modes: perm.c).
 *
 * Locking: qfs_tree_getattr() takes t->lock; qfs_tree_attr() runs under it (tree.h). No other
 * lock.
 */
#include <errno.h>
#include <stdint.h>

#include "perm.h"
#include "qcowfs.h"
#include "src.h"
#include "tree.h"

static int flat_attr(struct qfs_tree *t, struct qfs_node *n, struct stat *st)
{
	struct qfs_src *s = qfs_src_get(&t->cache, n->src);
	const char *msg;
	uint64_t stamp, size;
	blkcnt_t blocks;

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
	st->st_mode =
	    S_IFREG | qfs_perm_view(&t->cache, s, !n->snap_id && qfs_src_writable(&t->cache, s));
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
