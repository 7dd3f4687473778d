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

/* A usable internal snapshot of a src (entries the library marks invalid are left out). */
struct snap {
	char *id;
	char *name;
	uint64_t size;
	bool dup;    /* an earlier snapshot of the src has the same name */
	bool logged; /* its view's name has been logged (shortened, or none possible) */
};

/* names.c: a map from strings (the caller's, they must outlive the map) to indexes: open addressing,
 * O(1) expected per operation, so listings and lookups cost O(n) in entries, not O(n^2). */
struct strmap {
	const char **key;
	size_t *val;
	size_t mask, n;
};
/* Add @key -> @val unless @key is present. 1 added, 0 present, -ENOMEM. */
int strmap_put(struct strmap *m, const char *key, size_t val);
/* The value of @key, or -1. */
long strmap_get(const struct strmap *m, const char *key);
void strmap_free(struct strmap *m);

struct src {
	char *path; /* canonical */
	struct stat st;
	unsigned stat_gen; /* scan generation of the last refresh */
	bool qcow2;
	bool corrupt; /* the header's corrupt bit: served read-only */
	/* The library refused to open it for writing (damaged metadata; the log said why): served
	 * read-only until the file changes. */
	bool write_refused;
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
	struct strmap snap_by_id; /* snapshot id -> index in snaps (the first of an id) */
	uint64_t bad_logged;	  /* the bad snapshot entries last logged (kept across probes) */
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

/* How many srcs name one path as their backing file (src.c). */
struct backing_ref {
	char *path;
	unsigned n;
	struct backing_ref *next;
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
	struct qfs_node **by_rel; /* under lock: hash chains by rel, rel_mask + 1 of them, grown
				   * with the nodes so a lookup stays O(1) (65,536 snapshots) */
	size_t rel_mask;
	struct link_note *link_notes; /* under lock */
	struct qcow2_mounts *mounts; /* FUSE mounts never looked into (its own lock) */
	struct backing_ref *brefs[HASH_BUCKETS]; /* under lock: backing path -> srcs naming it */
	bool brefs_lost; /* under lock: a count was lost (out of memory): never trust "none" */
};

static inline unsigned hash_str(const char *s)
{
	unsigned h = 2166136261u;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 16777619u;
	return h % HASH_BUCKETS;
}


/* qcow2_path_stat() and qcow2_path_open_canonical() of the canonical @path, refused with
 * -EPERM (errno EPERM) when it lies at or below a FUSE mount to avoid (mounts.c): every
 * canonical path the daemon looks up under t->lock goes through these. */
int qfs_path_stat(struct qfs_tree *t, const char *path, struct stat *st);
int qfs_path_open(struct qfs_tree *t, const char *path, int flags);

/* names.c */

/* A file found in the directory being scanned (tree.c collects them, names.c names them). */
struct found {
	char *name;
	struct src *s;  /* NULL for a subdirectory */
	char *dir;      /* subdirectory: its path */
	char *flat;     /* image: its flat view's name (choose_names), NULL for none */
	unsigned level; /* image: which of its candidate names it has (names.c) */
};

/* The renames a scan of a directory notes (hashes of log lines), kept in its node. */
struct renames {
	uint64_t *h;
	size_t n, cap;
};

/* Choose the flat view name of every image in @f (SPEC 2): STEM.raw; FILE.raw where that is
 * taken by another image's name, or by a name in @own (the directory's files that are not
 * images, and its subdirectories: they keep their names); FILE%#2.raw... where that is taken
 * too, in byte order of the file names. '%' and '@' in an image name with '@' are written %25
 * and %40, so no flat name holds '@'. The result depends on the set of names, not on the
 * order of @f. Each name that is not STEM.raw is noted (rename_note). */
void choose_names(struct qfs_node *dir, struct found *f, size_t n, const struct strmap *own,
		  struct renames *now);
/* Log the line @fmt unless the last scan of @dir logged it, and note it in @now. */
void rename_note(const struct qfs_node *dir, struct renames *now, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Keep @now as what @dir's scan logged (@now is emptied). */
void renames_commit(struct qfs_node *dir, struct renames *now);
/* The view name of snapshot @sn of @s, whose image is shown as BASE.raw, in @out (NAME_MAX + 1
 * bytes): BASE@NAME.raw, or BASE@NAME%#ID.raw for a repeated name or at @level 1 (the first
 * is taken), BASE@NAME%#ID%#LEVEL.raw at @level 2 and up, or BASE@PREFIX%#ID.raw for a name
 * too long (logged once). False if no name fits (logged once). */
bool snap_view_name(const struct src *s, struct snap *sn, const char *base, unsigned level,
		    char *out);

/* perm.c */
/* The permission bits of a view of the chain whose top is @top (writable: the view of a
 * writable leaf), and of the mount's directory for source directory @path (stat'ed: @st). */
mode_t view_mode(struct qfs_tree *t, struct src *top, bool writable);
mode_t dir_mode(struct qfs_tree *t, const char *path, const struct stat *st);

/* src.c */
void src_clear(struct qfs_tree *t, struct src *s);
void brefs_free(struct qfs_tree *t);
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
