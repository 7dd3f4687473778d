/* SPDX-License-Identifier: MIT */
/*
 * qcowfs.h - the daemon's tree (tree*.c) and FUSE operations (ops.c), as main.c and ops.c see
 * them (the tree's own files share tree.h besides). Image facts come only from format/ (qcow2.h).
 *
 * The files of fs/, lowest first; each calls only files below it (no symbol of a file is taken
 * by a file under it), each with its header (the tree's four files share tree.h and qcowfs.h):
 *
 *   log.c        log.h        qfs_log(): stderr, or syslog once the daemon left the foreground
 *   strmap.c     strmap.h     qfs_strmap_*: a string map (open addressing)
 *   readahead.c  readahead.h  qfs_readahead_*: the mount's read-ahead window, -o max_read
 *   src.c        src.h        qfs_src_*: the cache of source files and the chain checks
 *   names.c      names.h      qfs_names_*: the names of the views, renames logged once
 *   perm.c       perm.h       qfs_perm_*, qfs_caller_may(): modes of the views, caller checks
 *   verdict.c    verdict.h    qfs_verdict(): writable, read-only or refused, and why (one place)
 *   tree.c       tree.h       qfs_tree_*: the tree object, its nodes by ino and path, lifetime
 *   tree-attr.c  tree.h       qfs_tree_attr(), qfs_tree_getattr(), *xattr(): the attributes of
 *                             the views, their extended attributes (user.qcowfs.*)
 *   tree-dir.c   qcowfs.h     qfs_tree_lookup(), qfs_tree_list(): the names a directory shows
 *   tree-open.c  qcowfs.h     qfs_tree_open*(), release, truncate: opening views, their chains
 *   tree-status.c qcowfs.h    qfs_tree_status(): the status file (.qcowfs-status.json)
 *   ops.c        qcowfs.h     qfs_ops: the FUSE operations
 *   ctl.c        ctl.h        qfs_ctl_*: the control socket, its handlers' registry, jobs,
 *                             the built-in handlers (status, serves, job list|cancel)
 *   ctl-snapshot.c ctl.h      qfs_ctl_snapshot_register(): snapshot list|create|delete live
 *   main.c                    the command line and the session's lifetime
 *
 * fs/meson.build lists them in this order, and the unit test fs-order (check-order.py) fails
 * on a call upward or a global name without the qfs_ prefix.
 *
 * Errors: every function of fs/ that fails returns a negative errno (or sets one, as
 * qfs_tree_lookup()'s *err); ops.c turns it into FUSE's positive one once, as it replies.
 *
 * Locks, in the order they may be taken: a node's open_lock (two at once only in tree-open.c's
 * adopt(), the lower ino's first), then the tree's lock (tree.h;
 * the source cache, the names and the permissions run under it and take none of their own),
 * then the library's own. ops.c's handles_lock is a leaf, never held across a call into
 * another file.
 */
#ifndef QCOWFS_H
#define QCOWFS_H

#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include "perm.h"
#include "qcow2.h"

/* QFS_STATUS: the status file at the root (QFS_STATUS_NAME), made by the daemon. */
enum qfs_kind { QFS_DIR, QFS_FLAT, QFS_RAW, QFS_STATUS };

#define QFS_STATUS_NAME ".qcowfs-status.json"

struct qfs_tree;

/* One name under the mount point. Nodes live as long as the mount; their ino never changes. */
struct qfs_node {
	fuse_ino_t ino;
	char *rel;	    /* path below the mount point, "" for the root */
	enum qfs_kind kind; /* under tree->lock */
	char *src;	    /* under tree->lock: canonical source file (FLAT, RAW) or dir (DIR) */
	char *snap_id;	    /* under tree->lock: snapshot id of a snapshot view, else NULL */
	struct qfs_node *hnext;	    /* under tree->lock: hash chain by rel */
	struct timespec scan_mtime; /* under tree->lock: DIR mtime at the last scan */
	bool scanned;		    /* under tree->lock */
	uint64_t *renamed; /* under tree->lock: DIR: hashes of the renames its last scan logged */
	size_t n_renamed;  /* under tree->lock */

	pthread_mutex_t open_lock; /* guards the fields below */
	struct qcow2_chain *chain; /* open while opens > 0 */
	unsigned opens;
	unsigned writers; /* handles open for writing (the chain holds the write lock) */
	uint64_t stamp;	  /* identity of the chain's files at the last open (page cache validity) */
	/* A chain a live job gave another top (tree-open.c, qfs_tree_writers_moved()): its
	 * handles (and pins) go on with it until they close, or until the node of its new top
	 * adopts it; the node's own chain is opened afresh meanwhile. */
	struct qcow2_chain *moved;
	unsigned moved_opens, moved_writers;
	/* Handles whose inode is not their chain's node's: @away of this node's handles count on
	 * a chain another node adopted, @foreign of this chain's handles were opened on other
	 * nodes. While either (or moved) is set, the disk is written through more than one inode:
	 * new handles use direct I/O; stale_pages: the next cached open drops the inode's pages. */
	unsigned away, foreign;
	bool stale_pages;
};

struct qfs_config {
	const char *source;
	const char *const *backing_dirs;
	size_t n_backing_dirs;
	bool read_only;
	bool check_callers;	 /* default_permissions: opens are checked against the caller too */
	const char *mount_point; /* canonical; never scanned (SOURCE may contain it) */
	/* for the status file: the command line (argv[0] excluded) and the options as read */
	int argc;
	char *const *argv;
	bool allow_other;
	const char *log_file;	/* absolute, or NULL */
	struct qcow2_keys keys; /* the passphrases of encrypted images (--key), by canonical path */
};

int qfs_tree_new(const struct qfs_config *cfg, struct qfs_tree **out);
/* For a SOURCE that is one file: 0 if it is an image the mount serves, else a negative errno
 * with the cause in @msg (not a qcow2 image, unreadable, a bad header, a broken chain). */
int qfs_tree_check_source(struct qfs_tree *t, char *msg, size_t cap);
void qfs_tree_free(struct qfs_tree *t);
struct qfs_node *qfs_tree_node(struct qfs_tree *t, fuse_ino_t ino);

/* Look @name up in directory @dir (rescanning what changed). Fills @st. NULL with *err set
 * (-ENOENT, -ENOTDIR...) if there is no such name. The snapshot views of an image are names only
 * for a @who (unless NULL) who may read them: their names come from inside the image. */
struct qfs_node *qfs_tree_lookup(struct qfs_tree *t, struct qfs_node *dir, const char *name,
				 struct stat *st, int *err, const struct qfs_caller *who);
/* Current attributes of @n. 0 or a negative errno. */
int qfs_tree_getattr(struct qfs_tree *t, struct qfs_node *n, struct stat *st);

struct qfs_dirent {
	char *name;
	fuse_ino_t ino;
	mode_t type;
};
/* List directory @dir (rescanning it), without the snapshot views @who (unless NULL) may not
 * read (as qfs_tree_lookup()). The caller frees with qfs_dirents_free(). 0 or a negative
 * errno. */
int qfs_tree_list(struct qfs_tree *t, struct qfs_node *dir, struct qfs_dirent **out, size_t *n,
		  const struct qfs_caller *who);
void qfs_dirents_free(struct qfs_dirent *d, size_t n);

/* Open the chain behind a flat view (shared by every open handle of the node), for writing if
 * @write (-EROFS when the view is read-only, -EBUSY when another process holds the image); the
 * handle's chain in *@c (the handle keeps it: a live job may move it to another node). Sets
 * *keep_cache when the files are unchanged since the last open, *@direct when the view's disk
 * is also written through another view's handles (after a live external snapshot: no page
 * cache for it). @who, unless NULL, is checked
 * (-EACCES) against the attributes the open is decided on, and is served only the files those
 * attributes were derived from (-ESTALE when a file of the chain was replaced since, by a
 * rename or a symlink, or when the open chain is of files replaced since it was opened).
 * 0 or a negative errno. */
int qfs_tree_open(struct qfs_tree *t, struct qfs_node *n, bool write, bool *keep_cache,
		  bool *direct, const struct qfs_caller *who, struct qcow2_chain **c);
/* Open raw backing file @n for reading into *fd, checking @who (unless NULL) as
 * qfs_tree_open() does. 0 or a negative errno. */
int qfs_tree_open_raw(struct qfs_tree *t, struct qfs_node *n, const struct qfs_caller *who,
		      int *fd);
/* Release one handle of chain @c, opened on @n (the node that holds @c now, if a live job moved
 * it); the last writer writes everything back and gives up the write lock, the last handle
 * closes the chain. */
void qfs_tree_release(struct qfs_tree *t, struct qfs_node *n, struct qcow2_chain *c, bool write);
/* Set the size of flat view @n (through @c, a chain open for writing, or NULL to open one for
 * @who as qfs_tree_open() does):
 * growing grows the disk, shrinking is -EINVAL. 0 or a negative errno. */
int qfs_tree_truncate(struct qfs_tree *t, struct qfs_node *n, struct qcow2_chain *c, uint64_t size,
		      const struct qfs_caller *who);
bool qfs_tree_read_only(const struct qfs_tree *t);
/* The control socket (ctl.c): the flat view whose open chain has the file @dev:@ino as a
 * layer (its own view, top layer 0, preferred to a view it is a backing layer of; snapshot
 * views never), pinned as one more handle (a writer if @write: the write lock taken for the
 * first), so its chain (*@c) stays open until qfs_tree_release(t, *out, *c, write). The layer
 * in *@layer.
 * -ENOENT when no open view reads the file, -EROFS for @write when the file is a backing layer
 * of the view or the chain is read-only, or the write lock's refusal. */
int qfs_tree_pin_file(struct qfs_tree *t, dev_t dev, ino_t ino, bool write, struct qfs_node **out,
		      unsigned *layer, struct qcow2_chain **c);
/* A live job (live.c) gave open chain @c of @n (pinned) another top than @old_top: the write
 * lock of its writers is on the new top now, ours, not another process's. The chain leaves
 * @n's own slot (its handles keep it): @n's next open opens @n's own file afresh, and the
 * view of the new top adopts the chain at its next open. */
void qfs_tree_writers_moved(struct qfs_tree *t, struct qfs_node *n, struct qcow2_chain *c,
			    const char *old_top);
/* The options the views' chains are opened with (live jobs open files of a chain with them). */
const struct qcow2_chain_opts *qfs_tree_chain_opts(const struct qfs_tree *t);
/* The canonical mount point (the control socket's status). */
const char *qfs_tree_mount_point(const struct qfs_tree *t);
/* Call @visit for every flat view with open handles, under its open_lock (@visit takes no fs/
 * lock): its canonical source file and the snapshot id of a snapshot view (else NULL). */
void qfs_tree_each_open(struct qfs_tree *t,
			void (*visit)(void *ctx, const struct qfs_node *n, const char *src,
				      const char *snap_id),
			void *ctx);

/* The extended attribute @name of @n (user.qcowfs.chain, .mode, .image, .snapshot), as @who
 * (unless NULL) sees it: the value, not NUL-terminated, in *val (malloc'd), *len bytes.
 * -ENODATA for a name @n does not have, -EACCES when @who may not read @n (the attributes say
 * what the view does: no more than reading it tells), -E2BIG past XATTR_SIZE_MAX. */
int qfs_tree_getxattr(struct qfs_tree *t, struct qfs_node *n, const char *name,
		      const struct qfs_caller *who, char **val, size_t *len);
/* The names of @n's extended attributes, each NUL-terminated, in *names (malloc'd), *len
 * bytes. 0 or a negative errno. */
int qfs_tree_listxattr(struct qfs_tree *t, struct qfs_node *n, char **names, size_t *len);
/* The status file as @who (unless NULL) may see it, computed now: JSON in *out (malloc'd),
 * *len bytes. Lists only the files @who may read. 0 or a negative errno. */
int qfs_tree_status(struct qfs_tree *t, const struct qfs_caller *who, char **out, size_t *len);
/* Does the daemon check each opener against the view's mode? */
bool qfs_tree_checks_callers(const struct qfs_tree *t);
const char *qfs_tree_source(const struct qfs_tree *t);

extern const struct fuse_lowlevel_ops qfs_ops;
/* The pids of the processes that opened the handles of flat view @n still open, at most @cap
 * in @pids; their number. Takes only ops.c's leaf lock. */
size_t qfs_ops_openers(const struct qfs_node *n, pid_t *pids, size_t cap);
/* Release every handle still open (the session has ended). */
void qfs_release_all(struct qfs_tree *t);
/* -o writeback: ask the kernel for its writeback cache (see op_init); before the session. */
void qfs_ops_writeback(bool on);

#endif
