/* SPDX-License-Identifier: MIT */
/*
 * tree-internal.h - what tree.c (names, nodes) and src.c (the cache of source files and the
 * chain checks) share. Everything here is guarded by qfs_tree.lock.
 */
#ifndef QCOWFS_TREE_INTERNAL_H
#define QCOWFS_TREE_INTERNAL_H

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
	bool corrupt; /* the header's corrupt bit: served read-only */
	int err; /* negative errno: refused; errmsg says why */
	char *errmsg;
	bool logged;
	char *logged_msg; /* the cause last logged */
	uint64_t vsize;
	char *backing; /* canonical path, or NULL */
	enum backing_fmt backing_fmt;
	/* canonical path of the external data file, or NULL (none, or it does not resolve:
	 * then the chain cannot be opened, and its views are not readable) */
	char *data_file;
	bool data_file_bad; /* named but unresolved: views deny reading */
	/* the data file as the last permission check saw it (an open is held to its identity) */
	dev_t data_dev;
	ino_t data_ino;
	uint32_t nsnaps;
	struct snap *snaps;
	unsigned check_gen; /* chain check memo */
	int check_err;
	char *check_msg;
	unsigned visit;
	/* Another process holds the image for writing (QEMU's write lock): its own view is
	 * served read-only, chains reading through it are refused. busy_msg names the holder. */
	bool busy;
	char *busy_msg;
	unsigned our_writers; /* writable handles of this daemon on the image (its own locks) */
	struct src *hnext;
};

struct qfs_tree {
	pthread_mutex_t lock;
	char *source;   /* canonical SOURCE (a directory, or a file) */
	char *root_dir; /* SOURCE, or its directory for a single file */
	char *mount_point;
	bool single_file;
	bool read_only; /* -o ro */
	bool check_callers; /* default_permissions (main.c) */
	struct qcow2_chain_opts copts;
	struct src *srcs[HASH_BUCKETS]; /* under lock */
	unsigned gen, visit;            /* under lock */
	struct qfs_node **nodes;        /* under lock: by ino - 1 */
	size_t n_nodes, cap_nodes;
	struct qfs_node *by_rel[HASH_BUCKETS];
};

static inline unsigned hash_str(const char *s)
{
	unsigned h = 2166136261u;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 16777619u;
	return h % HASH_BUCKETS;
}


/* perm.c */
/* The permission bits of a view of the chain whose top is @top (writable: the view of a
 * writable leaf), and of the mount's directory for source directory @path (stat'ed: @st). */
mode_t view_mode(struct qfs_tree *t, struct src *top, bool writable);
mode_t dir_mode(const char *path, const struct stat *st);

/* src.c */
/* open(2) of @path (with O_NOFOLLOW added), only if @path is still the file's canonical path:
 * the path names a file or directory without symlinks, as scans resolved it, and the
 * descriptor's own path (read back from /proc) is the same. Source paths are kept canonical
 * and checked this way before each use: a user who owns a directory in SOURCE may swap a file
 * or directory of it for a symlink while holding the view or directory of the mount, and the
 * daemon must not follow it to files that user could not reach (SPEC 3a). -1 with errno
 * (ENOENT when the path changed). */
int canon_open(const char *path, int flags);
/* fstat(2) of canon_open(@path, O_PATH). 0 or -1 with errno. */
int canon_stat(const char *path, struct stat *st);
void src_clear(struct src *s);
/* The src for canonical @path, refreshed once per scan generation; NULL if the file is gone. */
struct src *src_get(struct qfs_tree *t, const char *path);
/* 0 if the chain whose top is @top can be served, else a negative errno and *msg (owned by the
 * src) saying why. Memoised per scan generation. */
int chain_check(struct qfs_tree *t, struct src *top, const char **msg);
/* Sum of st_blocks over the chain's files, and a stamp of their identities. */
void chain_facts(struct qfs_tree *t, struct src *top, blkcnt_t *blocks, uint64_t *stamp);
/* Log why @s is refused, once per change of the file. */
void log_refusal(struct src *s, const char *msg);
/* Does any image in the cache name @s as its backing file? */
bool src_is_backing(struct qfs_tree *t, const struct src *s);
/* May the flat view of @s (its active state) be written? */
bool src_writable(struct qfs_tree *t, struct src *s);

#endif
