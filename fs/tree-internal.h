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

/* A symlink in SOURCE that is not followed (its target lies outside, or in the mount point),
 * with the reason last logged for it. */
struct link_note {
	char *path;
	char *msg;
	struct link_note *next;
};

struct qfs_tree {
	pthread_mutex_t lock;
	char *source;   /* canonical SOURCE (a directory, or a file) */
	char *root_dir; /* SOURCE, or its directory for a single file */
	char *mount_point;
	bool single_file;
	bool read_only; /* -o ro */
	struct qcow2_chain_opts copts;
	struct src *srcs[HASH_BUCKETS]; /* under lock */
	unsigned gen, visit;            /* under lock */
	struct qfs_node **nodes;        /* under lock: by ino - 1 */
	size_t n_nodes, cap_nodes;
	struct qfs_node *by_rel[HASH_BUCKETS];
	struct link_note *link_notes; /* under lock */
};

static inline unsigned hash_str(const char *s)
{
	unsigned h = 2166136261u;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 16777619u;
	return h % HASH_BUCKETS;
}


/* src.c */
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
/* Log that the symlink @path in SOURCE is not followed and why, once per cause. */
void link_refusal(struct qfs_tree *t, const char *path, const char *msg);
/* Free what link_refusal() remembers. */
void link_notes_free(struct qfs_tree *t);
/* Does any image in the cache (refused ones too) name @s as its backing file? */
bool src_is_backing(struct qfs_tree *t, const struct src *s);
/* May the flat view of @s (its active state) be written? */
bool src_writable(struct qfs_tree *t, struct src *s);

#endif
