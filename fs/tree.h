/* SPDX-License-Identifier: MIT */
/*
 * tree.h - the tree object as the files of the tree see it (tree.c, tree-attr.c, tree-dir.c,
 * tree-open.c); ops.c and main.c see only qcowfs.h. The tree is the mounted tree: which names
 * exist under the mount point and what each shows.
 *
 * Locking: t->lock guards the src cache, the node table and every node field marked so. It is
 * never held across a chain open or any read of image data; node->open_lock is taken after it
 * is released (open_lock -> lock, never the other way). It is held across lookups of SOURCE's
 * files, which must never enter our own mount (the request would wait for t->lock: the whole
 * mount would hang for good): every name looked up under it is a directory entry of SOURCE
 * read relative to its directory (the mount point skipped) or a canonical path from
 * qcow2_path_resolve(), which refused anything at or below the mount point before looking it
 * up, used with qcow2_path_open_canonical() or qcow2_path_stat(), which follow no symlink put
 * in the way since. The same holds for every FUSE mount below SOURCE (mounts.c: its
 * daemon may hang, or be this one, the mount point bound elsewhere): directory entries,
 * resolved names and canonical paths at or below one are refused before the lookup
 * (qcow2_mounts_avoid(), qfs_src_path_stat(), qfs_src_path_open()).
 */
#ifndef QCOWFS_TREE_H
#define QCOWFS_TREE_H

#include <dirent.h>
#include <stdbool.h>
#include <sys/stat.h>

#include "qcowfs.h"
#include "src.h"

/* The mounted tree. Locking: lock guards the source cache (src.c takes no lock of its own:
 * every call into it is made with lock held) and the fields marked; a node's open_lock is taken
 * only after lock is released (open_lock -> lock, never the other way). */
/* The mounted tree. Locking: lock guards the source cache (src.c takes no lock of its own:
 * every call into it is made with lock held) and the fields marked; a node's open_lock is taken
 * only after lock is released (open_lock -> lock, never the other way). */
struct qfs_tree {
	pthread_mutex_t lock;
	char *source;	/* canonical SOURCE (a directory, or a file) */
	char *root_dir; /* SOURCE, or its directory for a single file */
	char *mount_point;
	bool single_file;
	bool read_only;	       /* -o ro */
	bool check_callers;    /* default_permissions (main.c) */
	struct qfs_config cfg; /* as main.c gave it (its strings outlive the tree): the status */
	struct qcow2_chain_opts copts;
	struct qcow2_mounts *mounts; /* FUSE mounts never looked into (its own lock) */
	struct qfs_src_cache cache;  /* under lock */
	struct qfs_node **nodes;     /* under lock: by ino - 1 */
	size_t n_nodes, cap_nodes;
	struct qfs_node **by_rel; /* under lock: hash chains by rel, rel_mask + 1 of them, grown
				   * with the nodes so a lookup stays O(1) (65,536 snapshots) */
	size_t rel_mask;
};

/* tree.c. Under t->lock: the node of path @rel below the mount point, or NULL. */
struct qfs_node *qfs_tree_node_find(const struct qfs_tree *t, const char *rel);
/* tree.c. Under t->lock: the node of @rel, made if new (its ino is then the next one), set to
 * show @kind of @src (and snapshot @snap_id, unless NULL). NULL when out of memory. */
struct qfs_node *qfs_tree_node_get(struct qfs_tree *t, const char *rel, enum qfs_kind kind,
				   const char *src, const char *snap_id);
/* tree.c. Under t->lock: opendir() of the canonical directory @dir of SOURCE, following no
 * symlink on the way. NULL on failure. */
DIR *qfs_tree_opendir(struct qfs_tree *t, const char *dir);
/* Call @visit for every file below @dir that is not a directory (t->lock held), following no
 * symlink, 64 directories deep at most, skipping the mount point and FUSE mounts found below
 * SOURCE: the one walk of SOURCE (the preload of the src cache, the status file). */
void qfs_tree_walk(struct qfs_tree *t, const char *dir,
		   void (*visit)(void *ctx, const char *path, const struct stat *st), void *ctx);

/* tree-attr.c. Under t->lock: the attributes of @n as the mount shows them. 0 or a negative
 * errno (-ENOENT when the view is gone). */
int qfs_tree_attr(struct qfs_tree *t, struct qfs_node *n, struct stat *st);

#endif
