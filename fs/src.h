/* SPDX-License-Identifier: MIT */
/*
 * src.h - the cache of source files ("srcs") and the chain checks (src.c). Above the log and
 * the string map; under the names, the permissions and the tree, which reads the facts of a src
 * (its fields below) and never the cache's own bookkeeping.
 *
 * Locking: the cache takes no lock of its own. Its owner (the tree) holds one lock across every
 * call below and every read of a src's fields (qfs_tree.lock); a src pointer is good until that
 * lock is released (the next qfs_src_get() may free a src whose file is gone).
 */
#ifndef QCOWFS_SRC_H
#define QCOWFS_SRC_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include "qcow2.h"
#include "strmap.h"

#define QFS_SRC_BUCKETS 4096u

enum qfs_backing_fmt { QFS_FMT_PROBE, QFS_FMT_QCOW2, QFS_FMT_RAW };

/* A usable internal snapshot of a src (entries the library marks invalid are left out). */
struct qfs_snap {
	char *id;
	char *name;
	uint64_t size;
	bool dup;    /* an earlier snapshot of the src has the same name */
	bool logged; /* its view's name has been logged (shortened, or none possible) */
};

/* One file of SOURCE (or of a --backing-dir), keyed by its canonical path. */
struct qfs_src {
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
	enum qfs_backing_fmt backing_fmt;
	/* canonical path of the external data file, or NULL (none, or it does not resolve:
	 * then the chain cannot be opened, and its views are not readable) */
	char *data_file;
	bool data_file_bad; /* named but unresolved: views deny reading */
	/* the data file as the last permission check saw it (an open is held to its identity) */
	dev_t data_dev;
	ino_t data_ino;
	uint32_t nsnaps;
	struct qfs_snap *snaps;
	struct qfs_strmap snap_by_id; /* snapshot id -> index in snaps (the first of an id) */
	uint64_t bad_logged; /* the bad snapshot entries last logged (kept across probes) */
	unsigned check_gen;  /* chain check memo */
	int check_err;
	char *check_msg;
	unsigned visit;
	/* Another process holds the image for writing (QEMU's write lock): its own view is
	 * served read-only, chains reading through it are refused. busy_msg names the holder. */
	bool busy;
	char *busy_msg;
	unsigned our_writers; /* writable handles of this daemon on the image (its own locks) */
	/* Encrypted: legacy AES is served read-only; the key (--key) last opened the file of this
	 * identity (checked once per file, not at every probe: a LUKS key costs its PBKDF2). */
	bool legacy_aes;
	bool key_ok;
	dev_t key_dev;
	ino_t key_ino;
	/* May the daemon write the file (verdict.c: access(2), a negative errno or 0), as found
	 * at memo epoch wr_epoch for the file of identity wr_ino and ctime wr_ctim. */
	bool wr_known;
	int wr_err;
	uint64_t wr_epoch;
	ino_t wr_ino;
	struct timespec wr_ctim;
	struct qfs_src *hnext;
};

struct qfs_link_note;
struct qfs_dir_memo;
struct qfs_backing_ref;
struct qfs_acl_memo;

/* The cache. Its owner fills the first three fields (qfs_src_cache_init()); the rest is the
 * cache's own. */
struct qfs_src_cache {
	const struct qcow2_chain_opts *copts; /* confinement of backing files, data files, links */
	struct qcow2_mounts *mounts;	      /* FUSE mounts never looked into (its own lock) */
	bool read_only;			      /* -o ro: no view is writable */
	unsigned gen, visit;		      /* scan generation, chain walk token */
	struct qfs_src *srcs[QFS_SRC_BUCKETS];
	struct qfs_link_note *link_notes;
	struct qfs_backing_ref *brefs[QFS_SRC_BUCKETS]; /* backing path -> srcs naming it */
	bool brefs_lost; /* a count was lost (out of memory): never trust "none" */
	struct qfs_acl_memo *acls[QFS_SRC_BUCKETS]; /* file identity -> its ACL's floor */
	unsigned n_acls;
	/* What lookups found that no stat identity of an image tells: the stats of directories
	 * (qfs_src_dir_stat(), each kept until inotify reports a change of it) and the daemon's
	 * own access (verdict.c), all kept while the mount table stays (qfs_src_memo_epoch()). */
	int ino_fd;    /* inotify, when watching */
	bool watching; /* else nothing is kept */
	uint64_t epoch, mounts_gen;
	unsigned epoch_gen; /* the scan generation whose start looked for changes */
	bool epoch_checked;
	struct qfs_dir_memo *dirs[QFS_SRC_BUCKETS];
	unsigned n_dirs;
};

/* Set up the empty cache @c (zeroed by the caller) over @copts and @mounts, which must outlive
 * it. */
void qfs_src_cache_init(struct qfs_src_cache *c, const struct qcow2_chain_opts *copts,
			struct qcow2_mounts *mounts, bool read_only);
/* Free every src and note of @c (a zeroed cache too). */
void qfs_src_cache_release(struct qfs_src_cache *c);
/* Start a new scan generation: each src is looked at again on its next qfs_src_get(). */
void qfs_src_cache_next_gen(struct qfs_src_cache *c);

/* The src for canonical @path, refreshed once per scan generation; NULL if the file is gone,
 * is not a regular file, or its path is no longer canonical. */
struct qfs_src *qfs_src_get(struct qfs_src_cache *c, const char *path);
/* The same with the file's stat already made (@known), by the caller that listed it: an
 * fstatat(AT_SYMLINK_NOFOLLOW) of its name in its directory, opened by its canonical path
 * following no symlink (qfs_tree_opendir()), which is the stat qfs_src_path_stat() would make.
 * A scan of 10,000 files then stats each once, not twice. */
struct qfs_src *qfs_src_get_stat(struct qfs_src_cache *c, const char *path,
				 const struct stat *known);
/* Start reading the start of the file at canonical @path (@st: its stat) into the page cache
 * without waiting for it, when qfs_src_get() would probe it (no src of that identity yet): a
 * caller about to probe many files prefetches some ahead of each probe, so their reads overlap
 * instead of each waiting on the disk in turn. Reads only; true if a read was asked for. */
bool qfs_src_prefetch(struct qfs_src_cache *c, const char *path, const struct stat *st);
/* Ask again, for every file of the chain whose top is @top, whether another process holds it
 * for writing (QEMU's write lock): qfs_src_get() probes a file only when its stat identity
 * changes, or while it is busy (to see it freed), so a lock taken since is found here, where
 * it matters: before an open, a verdict asked for. */
void qfs_src_lock_probe(struct qfs_src_cache *c, struct qfs_src *top);
/* 0 if the chain whose top is @top can be served, else a negative errno and *msg (owned by the
 * src) saying why. Memoised per scan generation. */
int qfs_src_chain_check(struct qfs_src_cache *c, struct qfs_src *top, const char **msg);
/* Sum of st_blocks over the chain's files, and a stamp of their identities. */
void qfs_src_chain_facts(struct qfs_src_cache *c, struct qfs_src *top, blkcnt_t *blocks,
			 uint64_t *stamp);
/* Log why @s is refused, once per change of the file. */
void qfs_src_log_refusal(struct qfs_src *s, const char *msg);
/* Log that the symlink @path in SOURCE is not followed and why, once per cause. */
void qfs_src_link_refusal(struct qfs_src_cache *c, const char *path, const char *msg);
/* Does any image in the cache (refused ones too) name @s as its backing file? */
bool qfs_src_is_backing(struct qfs_src_cache *c, const struct qfs_src *s);
/* The canonical path of an image (refused ones too) that names @s as its backing file, or
 * NULL; good until the next call into the cache. */
const char *qfs_src_backing_user(struct qfs_src_cache *c, const struct qfs_src *s);

/* What the access ACL of the file of identity @st (device, inode, ctime: any change of an ACL or
 * a mode moves the ctime) was found to grant (perm.c): true and *@floor (-1: no ACL, else the
 * bits it leaves every user but the owner) if it was looked at since the file last changed.
 * One getxattr per change of a file, not per lookup. */
bool qfs_src_acl_memo_find(struct qfs_src_cache *c, const struct stat *st, int *floor);
void qfs_src_acl_memo_put(struct qfs_src_cache *c, const struct stat *st, int floor);

/* qcow2_path_stat() and qcow2_path_open_canonical() of the canonical @path, refused with
 * -EPERM (errno EPERM) when it lies at or below a FUSE mount to avoid (mounts.c): every
 * canonical path the daemon looks up under its tree lock goes through these. 0 (a descriptor)
 * or a negative errno. */
int qfs_src_path_stat(struct qfs_src_cache *c, const char *path, struct stat *st);
/* qfs_src_path_stat() of the canonical directory @path, answered from memory while nothing that
 * could change the answer happened: the directory is watched (inotify: its mode, owner, ACL,
 * entries, a rename or removal of it) from before its stat: an event of a directory forgets
 * it, a change of the mount table forgets every directory (a remount or a mount over one
 * changes what its path is). A lookup then costs no stat of the directories above its image
 * (perm.c reaches them at every lookup). Only directories of local file systems are kept
 * (ext4, xfs, btrfs, tmpfs, f2fs, zfs): on NFS another host's change sends no event. Same
 * results as qfs_src_path_stat(). */
int qfs_src_dir_stat(struct qfs_src_cache *c, const char *path, struct stat *st);
/* The memo epoch: it moves whenever the mount table changed in a way that concerns the
 * sources (looked at once per scan generation, with the directories' events). A caller keeps what it found with the epoch and trusts it while
 * the epoch stays. False when changes cannot be seen (no inotify, no mount table): keep
 * nothing then. */
bool qfs_src_memo_epoch(struct qfs_src_cache *c, uint64_t *epoch);
/* Is the ctime of @st old enough to tell every later change (the kernel stamps with a coarse
 * clock: a change in the same tick may leave it as it was)? A memo keyed by ctime keeps only
 * files whose ctime is at least two seconds old. */
bool qfs_src_ctime_settled(const struct stat *st);
int qfs_src_path_open(struct qfs_src_cache *c, const char *path, int flags);

#endif
