/* SPDX-License-Identifier: MIT */
/*
 * src.c - the daemon's cache of source files ("srcs") and the chain checks.
 *
 * A src is keyed by canonical path and refreshed when its stat identity (inode, size, mtime,
 * ctime) changes, or when another process's write lock on it appears or goes: format, header
 * facts, snapshot names, the resolved backing file (confined to SOURCE and --backing-dir).
 * Chains are checked from the cache (loops, missing or refused layers, depth) with a memo per
 * scan generation, so a directory of 1,000 images or a chain of 1,000 layers costs O(files).
 * The cache is its own object (struct qfs_src_cache, src.h): it knows of the tree only the
 * confinement options and the mounts to avoid it was given, and takes no lock; everything here
 * runs under its owner's lock (qfs_tree.lock), so no path looked up here may enter our own
 * mount (tree.h says how): srcs are canonical paths, backing and data files are resolved with
 * the mount point refused (qcow2_chain_resolve_path()), and files are opened and stat()ed
 * following no symlink (QCOW2_OPEN_NOFOLLOW, qfs_src_path_stat()), never at or below a FUSE
 * mount found below SOURCE (mounts.c). Only regular files are opened, without blocking
 * (qcow2_file_open()), and a chain is listed only if every file of it is one.
 * The base an image names is read-only even when that image is refused (qfs_src_is_backing()).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/vfs.h>
#include <sys/syscall.h>
#if __has_include(<linux/openat2.h>)
#include <linux/openat2.h>
#endif
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "src.h"

/* A symlink in SOURCE that is not followed (its target lies outside, or in the mount point),
 * with the reason last logged for it. */
struct qfs_link_note {
	char *path;
	char *msg;
	struct qfs_link_note *next;
};

/* How many srcs name one path as their backing file. */
struct qfs_backing_ref {
	char *path;
	unsigned n;
	struct qfs_backing_ref *next;
};

/* A directory's stat, kept while nothing watched changed (qfs_src_dir_stat()). */
struct qfs_dir_memo {
	char *path;
	struct stat st;
	int wd; /* its inotify watch */
	struct qfs_dir_memo *next;
};

/* What the ACL of one file identity grants (qfs_src_acl_memo_find()). */
struct qfs_acl_memo {
	dev_t dev;
	ino_t ino;
	struct timespec ctim;
	int floor;
	struct qfs_acl_memo *next;
};

static unsigned hash_str(const char *s)
{
	unsigned h = 2166136261u;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 16777619u;
	return h % QFS_SRC_BUCKETS;
}

/* ---- the cache ---- */

/* How many srcs name @path as their backing file (s->backing), kept with every change of
 * s->backing: qfs_src_is_backing() answers "none" in O(1), so a directory of 100,000 files that
 * back nothing is listed in O(n), not O(n^2). */
static struct qfs_backing_ref **bref_find(struct qfs_src_cache *c, const char *path)
{
	struct qfs_backing_ref **pp = &c->brefs[hash_str(path)];

	while (*pp && strcmp((*pp)->path, path) != 0)
		pp = &(*pp)->next;
	return pp;
}

/* Count one more (@delta 1) or one fewer (-1) src naming @path. Out of memory, the count is
 * not kept and qfs_src_is_backing() looks at every src, as it did before the count. */
static void bref_add(struct qfs_src_cache *c, const char *path, int delta)
{
	struct qfs_backing_ref **pp = bref_find(c, path), *b = *pp;

	if (!b && delta > 0 && (b = calloc(1, sizeof(*b))) && !(b->path = strdup(path))) {
		free(b);
		b = NULL;
	}
	if (!b) {
		c->brefs_lost |= delta > 0;
		return;
	}
	if (!*pp)
		*pp = b;
	b->n += (unsigned)delta;
	if (b->n == 0) {
		*pp = b->next;
		free(b->path);
		free(b);
	}
}

static void brefs_free(struct qfs_src_cache *c)
{
	unsigned i;

	for (i = 0; i < QFS_SRC_BUCKETS; i++) {
		while (c->brefs[i]) {
			struct qfs_backing_ref *b = c->brefs[i];

			c->brefs[i] = b->next;
			free(b->path);
			free(b);
		}
	}
}

static void src_clear(struct qfs_src_cache *c, struct qfs_src *s)
{
	uint32_t i;

	if (s->backing)
		bref_add(c, s->backing, -1);

	for (i = 0; i < s->nsnaps; i++) {
		free(s->snaps[i].id);
		free(s->snaps[i].name);
	}
	free(s->snaps);
	qfs_strmap_free(&s->snap_by_id);
	free(s->errmsg);
	free(s->backing);
	free(s->data_file);
	free(s->check_msg);
	free(s->busy_msg);
	s->snaps = NULL;
	s->nsnaps = 0;
	s->errmsg = s->backing = s->data_file = s->check_msg = s->busy_msg = NULL;
	s->data_file_bad = false;
	s->busy = false;
	s->corrupt = false;
	s->write_refused = false;
	s->legacy_aes = false;
	s->err = 0;
	s->qcow2 = false;
	s->check_gen = 0;
}

/* Free @s (unlinked by the caller). */
static void src_free(struct qfs_src_cache *c, struct qfs_src *s)
{
	src_clear(c, s);
	free(s->logged_msg);
	free(s->path);
	free(s);
}

static void src_refuse(struct qfs_src *s, int err, const char *msg)
{
	s->err = err;
	free(s->errmsg);
	s->errmsg = strdup(msg);
}

static uint64_t mix(uint64_t h, const char *str)
{
	while (*str)
		h = (h ^ (unsigned char)*str++) * 1099511628211ull;
	return (h ^ 0xff) * 1099511628211ull;
}

/* The usable snapshots of @s, indexed by id, duplicate names flagged. An entry the library
 * marks invalid has no view (a bad entry disables that snapshot only); it is logged once per
 * change of the file (each change re-probes). */
static int src_snapshots(struct qfs_src *s, struct qcow2_io *io, const struct qcow2_header *h)
{
	uint64_t bad_hash = 1469598103934665603ull;
	struct qfs_strmap names = {0};
	struct qcow2_snapshot *snaps;
	uint32_t i, n = 0, nbad = 0, bad[4];
	int r;

	r = qcow2_snapshot_read(io, h, &snaps);
	if (r < 0)
		return r;
	s->snaps = calloc(h->nb_snapshots ? h->nb_snapshots : 1, sizeof(*s->snaps));
	for (i = 0; s->snaps && i < h->nb_snapshots; i++) {
		struct qfs_snap *sn = &s->snaps[n];

		if (snaps[i].invalid) {
			if (nbad < 4)
				bad[nbad] = i;
			nbad++;
			bad_hash = mix(mix(bad_hash, snaps[i].id), snaps[i].invalid);
			continue;
		}
		sn->id = strdup(snaps[i].id);
		sn->name = strdup(snaps[i].name);
		sn->size = snaps[i].disk_bytes;
		if (!sn->id || !sn->name || (r = qfs_strmap_put(&names, sn->name, n)) < 0) {
			free(sn->id);
			free(sn->name);
			break;
		}
		sn->dup = r == 0;
		n++;
	}
	/* Logged once: again only when the bad entries or their causes change (a probe follows
	 * every change of the file, and a running VM changes it all the time). */
	if (nbad && bad_hash != s->bad_logged) {
		for (i = 0; i < nbad && i < 4; i++)
			qfs_log("'%s': snapshot '%.64s' (id %.32s) has no view: %s", s->path,
				snaps[bad[i]].name, snaps[bad[i]].id, snaps[bad[i]].invalid);
		if (nbad > 4)
			qfs_log(
			    "'%s': %u more snapshots have no view (their table entries are bad)",
			    s->path, nbad - 4);
	}
	s->bad_logged = bad_hash;
	s->nsnaps = n;
	qfs_strmap_free(&names);
	for (i = 0; i < n; i++) {
		if (qfs_strmap_put(&s->snap_by_id, s->snaps[i].id, i) < 0) {
			qfs_strmap_free(&s->snap_by_id); /* out of memory: no view is found */
			break;
		}
	}
	qcow2_snapshots_free(snaps, h->nb_snapshots);
	return 0;
}

/* Open @s for reading its header: the file s->st describes, at its canonical path, or nothing
 * (a symlink or another file swapped in since the stat would have its header taken for this
 * one's; a FIFO would block). On a mismatch the identity is forgotten, so the next refresh
 * probes again. 0 or a negative errno with the error set. */
static int probe_open(struct qfs_src_cache *c, struct qfs_src *s, struct qcow2_io **io)
{
	struct stat st;
	int fd = qfs_src_path_open(c, s->path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);

	if (fd < 0)
		return qcow2_set_error(fd, "cannot open '%s': %s", s->path, strerror(-fd));
	if (fstat(fd, &st) < 0 || st.st_dev != s->st.st_dev || st.st_ino != s->st.st_ino) {
		close(fd);
		s->st.st_ino = 0;
		return qcow2_set_error(-ESTALE, "'%s' changed while it was read", s->path);
	}
	return qcow2_io_open_fd(fd, s->path, io);
}

/* Resolve the backing name @name of @s (confined, never through the mount point) into
 * s->backing, even when @s itself is refused: the file it names is its base all the same, and
 * must not be served writable (writing it would change @s's disk). 0 or -errno. */
static int src_note_backing(struct qfs_src_cache *c, struct qfs_src *s, const char *name)
{
	char backing[PATH_MAX];
	int r;

	r = qcow2_chain_resolve_path(c->copts, s->path, name, backing, sizeof(backing));
	if (r == 0 && !(s->backing = strdup(backing)))
		r = -ENOMEM;
	if (r == 0)
		bref_add(c, s->backing, 1);
	return r;
}

/* The external data file named in @h must be a regular file, confined like a backing file:
 * a FIFO there would hang the open of the chain. 0 or -errno with the message set. */
static int src_check_data_file(struct qfs_src_cache *c, struct qfs_src *s,
			       const struct qcow2_header *h)
{
	char path[PATH_MAX];
	int r, fd;

	if (!h->data_file[0])
		return 0;
	r = qcow2_chain_resolve_path(c->copts, s->path, h->data_file, path, sizeof(path));
	if (r < 0)
		return r;
	fd = qcow2_file_open(path, QCOW2_OPEN_NOFOLLOW);
	if (fd < 0)
		return qcow2_set_error(fd, "'%s': data file: %s", s->path, qcow2_last_error());
	close(fd);
	/* The data file holds the image's data: views read it, so its permissions count too. */
	s->data_file = strdup(path);
	s->data_file_bad = !s->data_file;
	return 0;
}

/* The backing name of a refused qcow2 image, if its header still says which file it is
 * (after src_refuse(): what this finds or fails is no part of the refusal's message). */
static void src_refused_backing(struct qfs_src_cache *c, struct qfs_src *s, struct qcow2_io *io)
{
	char name[QCOW2_MAX_BACKING_NAME + 1];

	if (!s->backing && qcow2_header_read_backing_name(io, name, sizeof(name)) == 1)
		(void)src_note_backing(c, s, name);
}

static void src_probe_file(struct qfs_src_cache *c, struct qfs_src *s);

/* Read what the tree needs to know of the file again. What was logged about a snapshot's view
 * name stays logged while the snapshot is there (src_snapshots() logs bad entries likewise). */
static void src_probe(struct qfs_src_cache *c, struct qfs_src *s)
{
	struct qfs_strmap old_by_id = s->snap_by_id;
	struct qfs_snap *old = s->snaps;
	uint32_t nold = s->nsnaps, i;

	s->snaps = NULL;
	s->nsnaps = 0;
	memset(&s->snap_by_id, 0, sizeof(s->snap_by_id));
	src_probe_file(c, s);
	for (i = 0; i < s->nsnaps; i++) {
		long j = qfs_strmap_get(&old_by_id, s->snaps[i].id);

		if (j >= 0 && strcmp(old[j].name, s->snaps[i].name) == 0)
			s->snaps[i].logged = old[j].logged;
	}
	for (i = 0; i < nold; i++) {
		free(old[i].id);
		free(old[i].name);
	}
	free(old);
	qfs_strmap_free(&old_by_id);
}

/* Is image @s (open as @io) written by another process? Our own write lock is no conflict;
 * another process's is (it may change the image): the image is then busy, served read-only
 * (logged once per message). */
static void src_check_busy(struct qfs_src *s, struct qcow2_io *io)
{
	if (s->our_writers || qcow2_io_lock_check_reader(io) != -EBUSY)
		return;
	s->busy = true;
	s->busy_msg = strdup(qcow2_last_error());
	if (!s->logged_msg || strcmp(s->logged_msg, s->busy_msg ? s->busy_msg : "") != 0) {
		free(s->logged_msg);
		s->logged_msg = s->busy_msg ? strdup(s->busy_msg) : NULL;
		qfs_log("serving '%s' read-only: %s", s->path, qcow2_last_error());
	}
}

/* An encrypted image is served only with its key (--key IMAGE=KEYFILE, struct qcow2_keys of
 * the chain options): without one, or with one that opens no key slot, it is refused (logged
 * once, listed nowhere, and so is every chain through it). The key is checked once per file,
 * not at every probe. Legacy AES is served read-only, the reason logged once. 0 or a negative
 * errno with the message set. */
static int src_check_key(struct qfs_src_cache *c, struct qfs_src *s, struct qcow2_io *io,
			 const struct qcow2_header *h)
{
	const struct qcow2_keys *keys = &c->copts->keys;
	const struct qcow2_key *key = NULL;
	const char *why = "legacy AES encryption: read-only";
	int r = 0;

	if (h->crypt_method == QCOW2_CRYPT_NONE)
		return 0;
	s->legacy_aes = h->crypt_method == QCOW2_CRYPT_AES;
	if (!s->key_ok || s->key_dev != s->st.st_dev || s->key_ino != s->st.st_ino) {
		s->key_ok = false;
		if (keys->find && (r = keys->find(keys->ctx, s->path, &key)) <= 0)
			key = NULL;
		if (r >= 0)
			r = qcow2_image_key_check(io, s->path, h, key);
		if (r < 0)
			return r;
		s->key_ok = true;
		s->key_dev = s->st.st_dev;
		s->key_ino = s->st.st_ino;
	}
	if (s->legacy_aes && (!s->logged_msg || strcmp(s->logged_msg, why) != 0)) {
		free(s->logged_msg);
		s->logged_msg = strdup(why);
		qfs_log("serving '%s' read-only: %s", s->path, why);
	}
	return 0;
}

/* Image @s names a backing file in header @h: note it, and its format. 0 or a negative errno
 * (-ENOTSUP for a format other than qcow2 or raw). */
static int src_backing(struct qfs_src_cache *c, struct qfs_src *s, const struct qcow2_header *h)
{
	/* first: known as a backing file whatever else is wrong with this image */
	int rb = src_note_backing(c, s, h->backing_file);

	s->backing_fmt = !h->backing_fmt[0]			? QFS_FMT_PROBE
			 : strcmp(h->backing_fmt, "qcow2") == 0 ? QFS_FMT_QCOW2
			 : strcmp(h->backing_fmt, "raw") == 0	? QFS_FMT_RAW
								: -1;
	if ((int)s->backing_fmt < 0)
		return qcow2_set_error(-ENOTSUP, "'%s': backing format '%s' not supported", s->path,
				       h->backing_fmt);
	return rb;
}

/* Read what the tree needs to know of the file: format, header facts, snapshots, backing. */
static void src_probe_file(struct qfs_src_cache *c, struct qfs_src *s)
{
	struct qcow2_header *h;
	struct qcow2_io *io;
	uint64_t bytes;
	bool is_qcow2;
	ssize_t got;
	int r;

	src_clear(c, s);
	r = probe_open(c, s, &io);
	if (r == 0 && (r = qcow2_io_size(io, &bytes)) < 0)
		qcow2_io_close(io); /* no size (a file of /proc): the chain would read a lie */
	if (r < 0) {
		src_refuse(s, r, qcow2_last_error());
		return;
	}
	got = qcow2_header_probe(io, &is_qcow2, NULL);
	if (got < 0) /* unreadable: refused (and logged), not taken for a raw file */
		src_refuse(s, (int)got, qcow2_last_error());
	if (!is_qcow2) {
		qcow2_io_close(io);
		return; /* not qcow2: a raw file, shown only if it backs a chain */
	}
	s->qcow2 = true;
	h = malloc(sizeof(*h));
	r = h ? qcow2_header_read(io, h) : -ENOMEM;
	if (r == 0)
		src_check_busy(s, io);
	if (r == 0)
		r = src_check_key(c, s, io, h);
	if (r == 0)
		r = src_snapshots(s, io, h);
	if (r == 0 && h->backing_file[0])
		r = src_backing(c, s, h);
	if (r == 0)
		r = src_check_data_file(c, s, h);
	if (r == 0) {
		s->vsize = qcow2_guest_bytes(h->size);
		s->corrupt = h->incompat & QCOW2_INCOMPAT_CORRUPT;
	} else {
		src_refuse(s, r, qcow2_last_error());
		src_refused_backing(c, s, io);
	}
	free(h);
	qcow2_io_close(io);
}

static struct qfs_src *src_find(struct qfs_src_cache *c, const char *path, struct qfs_src ***link)
{
	struct qfs_src **pp = &c->srcs[hash_str(path)];

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

	if (qcow2_io_open(path, QCOW2_OPEN_NOFOLLOW, &io) < 0)
		return false;
	busy = qcow2_io_lock_check_reader(io) == -EBUSY;
	qcow2_io_close(io);
	return busy;
}

/* The src for canonical @path, refreshed once per scan generation. NULL if the file is gone,
 * is not a regular file, or its path is no longer canonical (qcow2_path_stat()). Called with
 * the owner's lock held. */
struct qfs_src *qfs_src_get(struct qfs_src_cache *c, const char *path)
{
	return qfs_src_get_stat(c, path, NULL);
}

struct qfs_src *qfs_src_get_stat(struct qfs_src_cache *c, const char *path,
				 const struct stat *known)
{
	struct qfs_src **link, *s = src_find(c, path, &link);
	struct stat st;

	if (s && s->stat_gen == c->gen)
		return s;
	if (known)
		st = *known;
	if ((!known && qfs_src_path_stat(c, path, &st) < 0) || !S_ISREG(st.st_mode)) {
		if (s) {
			*link = s->hnext;
			src_free(c, s);
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
		   (s->our_writers || !s->qcow2 || s->err || !s->busy || lock_conflict(s->path))) {
		/* Unchanged: one stat. Another process's write lock taken since the last probe is
		 * found when it matters (qfs_src_lock_probe(): an open, a verdict asked for);
		 * one that was found is probed again here, so its release shows at once (few
		 * images are busy, so a directory of 10,000 costs 10,000 stats, not opens). */
		s->st = st;
		s->stat_gen = c->gen;
		return s;
	}
	s->st = st;
	s->stat_gen = c->gen;
	src_probe(c, s);
	return s;
}

/* How much of a file the probe reads first (qcow2_header_probe(), qcow2_header_read()): the
 * header and, in nearly every image, its extensions and backing name. */
#define PREFETCH_BYTES 4096

bool qfs_src_prefetch(struct qfs_src_cache *c, const char *path, const struct stat *st)
{
	struct qfs_src **link, *s = src_find(c, path, &link);
	struct stat fst;
	int fd;

	if (!S_ISREG(st->st_mode) || (s && same_identity(&s->st, st)))
		return false; /* nothing to probe, or probed already and unchanged */
	/* Opened as probe_open() does (following no symlink, never into a FUSE mount to avoid,
	 * without blocking), and only a regular file is asked: the advice starts the read and
	 * returns, so many files' headers are on their way from the disk at once. */
	fd = qfs_src_path_open(c, path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return false;
	if (fstat(fd, &fst) == 0 && S_ISREG(fst.st_mode))
		(void)posix_fadvise(fd, 0, PREFETCH_BYTES, POSIX_FADV_WILLNEED);
	close(fd);
	return true;
}

void qfs_src_lock_probe(struct qfs_src_cache *c, struct qfs_src *top)
{
	struct qfs_src *s = top;
	unsigned depth;
	bool changed = false;

	for (depth = 0; s && depth <= QCOW2_DEFAULT_MAX_DEPTH; depth++) {
		if (s->qcow2 && !s->err && !s->our_writers && !s->busy && lock_conflict(s->path)) {
			src_probe(c, s); /* now busy (src_check_busy() logs and names the holder) */
			changed = true;
		}
		if (!s->qcow2 || !s->backing)
			break;
		s = qfs_src_get(c, s->backing);
	}
	/* the chain checks of this generation saw the layers free: judge them again */
	for (s = top, depth = 0; changed && s && depth <= QCOW2_DEFAULT_MAX_DEPTH; depth++) {
		s->check_gen = 0;
		if (!s->qcow2 || !s->backing)
			break;
		s = qfs_src_get(c, s->backing);
	}
}

int qfs_src_path_stat(struct qfs_src_cache *c, const char *path, struct stat *st)
{
	if (qcow2_mounts_avoid(c->mounts, path)) {
		errno = EPERM;
		return -EPERM;
	}
	return qcow2_path_stat(path, st);
}

int qfs_src_path_open(struct qfs_src_cache *c, const char *path, int flags)
{
	if (qcow2_mounts_avoid(c->mounts, path))
		return -EPERM;
	return qcow2_path_open_canonical(path, flags);
}

/* ---- directories and the memo epoch ---- */

#define DIR_MEMO_MAX 4096u /* past this, the memo starts again */
/* Every change of a directory that can change its stat or what its path names: its mode,
 * owner, ACL or link count (IN_ATTRIB, also sent when a rename replaces it), its entries (which
 * move its mtime, and may replace a directory below it), its own rename or removal. */
#define DIR_WATCH_MASK                                                                      \
	(IN_ATTRIB | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | \
	 IN_MOVE_SELF | IN_ONLYDIR)

static void dir_memo_clear(struct qfs_src_cache *c)
{
	unsigned b;

	for (b = 0; b < QFS_SRC_BUCKETS; b++) {
		while (c->dirs[b]) {
			struct qfs_dir_memo *m = c->dirs[b];

			c->dirs[b] = m->next;
			free(m->path);
			free(m);
		}
	}
	c->n_dirs = 0;
}

/* No memo from here on (inotify failed): what was kept is forgotten. */
static void memo_off(struct qfs_src_cache *c)
{
	if (c->watching)
		close(c->ino_fd);
	c->watching = false;
	c->epoch++;
	dir_memo_clear(c);
}

/* Forget the directories watched as @wd (one, unless bind mounts show it at two paths). */
static void dir_memo_drop(struct qfs_src_cache *c, int wd)
{
	unsigned b;

	for (b = 0; b < QFS_SRC_BUCKETS; b++) {
		struct qfs_dir_memo **pp = &c->dirs[b];

		while (*pp) {
			struct qfs_dir_memo *m = *pp;

			if (m->wd != wd) {
				pp = &m->next;
				continue;
			}
			*pp = m->next;
			free(m->path);
			free(m);
			c->n_dirs--;
		}
	}
}

/* Apply the events in @buf (@len bytes). An event of the directory itself (its mode, owner, ACL,
 * link count: also sent when a rename replaces it; its rename or removal) or of its entries (a
 * name made, removed or moved there moves its mtime) forgets that directory; what happens to
 * an entry's attributes is no change of the directory (a directory below that is kept has its
 * own watch). An overflow of the queue forgets every directory. */
static void dir_events(struct qfs_src_cache *c, const char *buf, size_t len)
{
	const uint32_t dir_changed = IN_ATTRIB | IN_CREATE | IN_DELETE | IN_MOVED_FROM |
				     IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED |
				     IN_UNMOUNT;
	size_t off = 0;

	while (off + sizeof(struct inotify_event) <= len) {
		const struct inotify_event *ev = (const struct inotify_event *)(buf + off);

		if (ev->mask & IN_Q_OVERFLOW || ev->wd < 0)
			dir_memo_clear(c);
		else if ((ev->mask & dir_changed) &&
			 !(ev->len && (ev->mask & ~IN_ISDIR) == IN_ATTRIB))
			dir_memo_drop(c, ev->wd);
		off += sizeof(struct inotify_event) + ev->len;
	}
}

bool qfs_src_memo_epoch(struct qfs_src_cache *c, uint64_t *epoch)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	uint64_t mg;
	ssize_t got;

	if (!c->watching)
		return false;
	if (c->epoch_checked && c->epoch_gen == c->gen) {
		*epoch = c->epoch;
		return true;
	}
	/* Once per scan generation (each request starts one): the events queued since the last
	 * look forget the directories they concern; a change of the mount table, which no watch
	 * reports, forgets everything and moves the epoch. */
	while ((got = read(c->ino_fd, buf, sizeof(buf))) > 0)
		dir_events(c, buf, (size_t)got);
	if (got < 0 && errno != EAGAIN && errno != EINTR) {
		memo_off(c);
		return false;
	}
	if (!qcow2_mounts_generation(c->mounts, &mg)) {
		c->epoch++;
		dir_memo_clear(c);
		return false; /* the mount table cannot be read: nothing is kept this time */
	}
	if (!c->epoch_checked || mg != c->mounts_gen) {
		c->epoch++;
		dir_memo_clear(c);
	}
	c->mounts_gen = mg;
	c->epoch_gen = c->gen;
	c->epoch_checked = true;
	*epoch = c->epoch;
	return true;
}

/* Does inotify see every change of a directory on the file system of @fd? Only where every
 * change is made through this kernel: on NFS, CIFS, FUSE or a cluster file system another
 * host or a daemon changes it unseen (the directory is stat'ed at every lookup there, its
 * client's attribute cache deciding, as before). */
static bool local_fs(int fd)
{
	return qcow2_fd_on_local_disk(fd);
}

int qfs_src_dir_stat(struct qfs_src_cache *c, const char *path, struct stat *st)
{
	struct qfs_dir_memo *m;
	unsigned b = hash_str(path);
	uint64_t epoch;
	char link[64];
	int fd, wd, r = 0;

	if (!qfs_src_memo_epoch(c, &epoch))
		return qfs_src_path_stat(c, path, st);
	for (m = c->dirs[b]; m && strcmp(m->path, path) != 0; m = m->next)
		;
	if (m) {
		*st = m->st;
		return 0;
	}
	/* As qfs_src_path_stat(), with the watch set between the open and the stat: a change
	 * after the stat is an event, which forgets it. The watch is set through the descriptor's
	 * /proc link, which leads to the directory itself without a walk. */
	fd = qfs_src_path_open(c, path, O_PATH | O_CLOEXEC);
	if (fd < 0) {
		errno = -fd;
		return fd;
	}
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	wd = local_fs(fd) ? inotify_add_watch(c->ino_fd, link, DIR_WATCH_MASK) : -1;
	if (fstat(fd, st) < 0)
		r = -errno;
	else if (S_ISLNK(st->st_mode))
		r = -ELOOP;
	close(fd);
	if (r < 0) {
		errno = -r;
		return r;
	}
	if (wd < 0 || !S_ISDIR(st->st_mode))
		return 0; /* not kept: asked again next time */
	if (c->n_dirs >= DIR_MEMO_MAX)
		dir_memo_clear(c);
	if ((m = calloc(1, sizeof(*m))) && (m->path = strdup(path))) {
		m->st = *st;
		m->wd = wd;
		m->next = c->dirs[b];
		c->dirs[b] = m;
		c->n_dirs++;
	} else {
		free(m);
	}
	return 0;
}

bool qfs_src_ctime_settled(const struct stat *st)
{
	struct timespec now;

	return clock_gettime(CLOCK_REALTIME, &now) == 0 && st->st_ctim.tv_sec + 2 <= now.tv_sec;
}

/* ---- chain checks ---- */

static void set_check(struct qfs_src *s, unsigned gen, int err, const char *msg)
{
	s->check_gen = gen;
	s->check_err = err;
	free(s->check_msg);
	s->check_msg = msg ? strdup(msg) : NULL;
}

/* Why the backing file of @s is no file qfs_src_get() takes: missing, or not a regular file (a
 * directory, a FIFO: opening it would fail, or block). Its path is canonical and confined
 * (qcow2_chain_resolve_path(), which looked nothing up inside the mount point). Returns the
 * negative errno, @buf says why. */
static int not_a_file(struct qfs_src_cache *c, const struct qfs_src *s, char *buf, size_t cap)
{
	struct stat st;

	if (qfs_src_path_stat(c, s->backing, &st) < 0 || S_ISREG(st.st_mode)) {
		snprintf(buf, cap, "'%s': backing file '%s' is missing", s->path, s->backing);
		return -ENOENT;
	}
	snprintf(buf, cap, "'%s': backing file '%s' is %s, not a regular file", s->path, s->backing,
		 S_ISDIR(st.st_mode)	? "a directory"
		 : S_ISFIFO(st.st_mode) ? "a FIFO"
		 : S_ISSOCK(st.st_mode) ? "a socket"
					: "a device");
	return S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
}

/* Is the chain whose top is @top servable? Memoised per scan generation for every layer the
 * walk passes. Returns 0 or a negative errno with *msg set (owned by the src). */
int qfs_src_chain_check(struct qfs_src_cache *c, struct qfs_src *top, const char **msg)
{
	struct qfs_src *path[QCOW2_DEFAULT_MAX_DEPTH + 1], *cur = top;
	char buf[700];
	unsigned n = 0, i, token = ++c->visit;
	int err = 0;

	buf[0] = '\0';
	while (cur->check_gen != c->gen) {
		struct qfs_src *next;

		if (cur != top && cur->busy)
			break; /* judged below: a busy layer refuses the chains above it only */
		path[n++] = cur;
		cur->visit = token;
		if (cur->err) {
			err = cur->err;
			snprintf(buf, sizeof(buf), "%s", cur->errmsg ? cur->errmsg : "refused");
			break;
		}
		if (!cur->qcow2 || !cur->backing)
			break;
		next = qfs_src_get(c, cur->backing);
		if (!next) {
			err = not_a_file(c, cur, buf, sizeof(buf));
			break;
		}
		if (cur->backing_fmt == QFS_FMT_RAW) {
			if (next->err && !next->qcow2) { /* it could not be opened */
				err = next->err;
				snprintf(buf, sizeof(buf), "%s",
					 next->errmsg ? next->errmsg : "refused");
			}
			break;
		}
		if (next->visit == token) {
			err = -ELOOP;
			snprintf(buf, sizeof(buf), "'%s': backing chain loops back to '%s'",
				 cur->path, next->path);
			break;
		}
		if (cur->backing_fmt == QFS_FMT_QCOW2 && !next->qcow2) {
			err = -EINVAL;
			snprintf(buf, sizeof(buf), "'%s': backing file '%s' is not qcow2",
				 cur->path, next->path);
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
	if (cur != top && cur->busy && n > 0 && path[n - 1] != cur) {
		err = -EBUSY; /* another process writes a backing file of this chain */
		snprintf(buf, sizeof(buf), "%s", cur->busy_msg ? cur->busy_msg : "busy");
	} else if (cur->check_gen == c->gen && n > 0 && path[n - 1] != cur) {
		err = cur->check_err; /* the walk reached a layer already judged */
		snprintf(buf, sizeof(buf), "%s", cur->check_msg ? cur->check_msg : "");
	}
	for (i = 0; i < n; i++)
		set_check(path[i], c->gen, err, err ? buf : NULL);
	*msg = top->check_msg;
	return top->check_err;
}

/* Sum of st_blocks and the stamp (identity of every file) of @top's chain. */
void qfs_src_chain_facts(struct qfs_src_cache *c, struct qfs_src *top, blkcnt_t *blocks,
			 uint64_t *stamp)
{
	struct qfs_src *s = top;
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
		if (!s->qcow2 || !s->backing || s->backing_fmt == QFS_FMT_RAW) {
			if (s->backing && s->backing_fmt == QFS_FMT_RAW)
				s = qfs_src_get(c, s->backing);
			else
				break;
			if (s)
				*blocks += s->st.st_blocks;
			break;
		}
		s = qfs_src_get(c, s->backing);
	}
	*stamp = h;
}

/* Log a refusal once per change of the file. */
void qfs_src_log_refusal(struct qfs_src *s, const char *msg)
{
	/* Once per cause: a re-probe that finds the same problem stays quiet. */
	if (s->logged && s->logged_msg && msg && strcmp(s->logged_msg, msg) == 0)
		return;
	s->logged = true;
	free(s->logged_msg);
	s->logged_msg = msg ? strdup(msg) : NULL;
	qfs_log("refusing '%s': %s", s->path, msg && msg[0] ? msg : "invalid image");
}

void qfs_src_link_refusal(struct qfs_src_cache *c, const char *path, const char *msg)
{
	struct qfs_link_note *n;

	for (n = c->link_notes; n && strcmp(n->path, path) != 0; n = n->next)
		;
	if (n && n->msg && strcmp(n->msg, msg) == 0)
		return;
	if (!n && (n = calloc(1, sizeof(*n)))) {
		if ((n->path = strdup(path))) {
			n->next = c->link_notes;
			c->link_notes = n;
		} else {
			free(n);
			n = NULL;
		}
	}
	if (n) {
		free(n->msg);
		n->msg = strdup(msg);
	}
	qfs_log("not following '%s': %s", path, msg);
}

static void link_notes_free(struct qfs_src_cache *c)
{
	struct qfs_link_note *n, *next;

	for (n = c->link_notes; n; n = next) {
		next = n->next;
		free(n->path);
		free(n->msg);
		free(n);
	}
	c->link_notes = NULL;
}

const char *qfs_src_backing_user(struct qfs_src_cache *c, const struct qfs_src *s)
{
	char path[PATH_MAX];
	unsigned b;
	struct qfs_src *o;

	if (!c->brefs_lost && !*bref_find(c, s->path))
		return NULL; /* no src names it */
again:
	for (b = 0; b < QFS_SRC_BUCKETS; b++) {
		for (o = c->srcs[b]; o; o = o->hnext) {
			/* A refused image counts too: its backing file is its disk's base all the
			 * same, and writing that would change the refused image's content. */
			if (!o->qcow2 || !o->backing || strcmp(o->backing, s->path) != 0)
				continue;
			if (o->stat_gen == c->gen)
				return o->path;
			/* Known from an earlier scan: refresh it (it may be gone or rebased since),
			 * which may free it and change the table: look again from the start. */
			snprintf(path, sizeof(path), "%s", o->path);
			qfs_src_get(c, path);
			goto again;
		}
	}
	return NULL;
}

bool qfs_src_is_backing(struct qfs_src_cache *c, const struct qfs_src *s)
{
	return qfs_src_backing_user(c, s) != NULL;
}

/* ---- ACL memo ---- */

#define ACL_MEMO_MAX 65536u /* past this, the memo starts again (files come and go) */

static unsigned hash_ident(const struct stat *st)
{
	uint64_t h = ((uint64_t)st->st_dev * 1099511628211ull) ^ (uint64_t)st->st_ino;

	return (unsigned)((h * 11400714819323198485ull) >> 52) % QFS_SRC_BUCKETS;
}

static void acl_memo_free(struct qfs_src_cache *c)
{
	unsigned b;

	for (b = 0; b < QFS_SRC_BUCKETS; b++) {
		while (c->acls[b]) {
			struct qfs_acl_memo *m = c->acls[b];

			c->acls[b] = m->next;
			free(m);
		}
	}
	c->n_acls = 0;
}

static struct qfs_acl_memo *acl_memo_of(struct qfs_src_cache *c, const struct stat *st)
{
	struct qfs_acl_memo *m = c->acls[hash_ident(st)];

	while (m && (m->dev != st->st_dev || m->ino != st->st_ino))
		m = m->next;
	return m;
}

bool qfs_src_acl_memo_find(struct qfs_src_cache *c, const struct stat *st, int *floor)
{
	struct qfs_acl_memo *m = acl_memo_of(c, st);

	if (!m || m->ctim.tv_sec != st->st_ctim.tv_sec || m->ctim.tv_nsec != st->st_ctim.tv_nsec)
		return false;
	*floor = m->floor;
	return true;
}

void qfs_src_acl_memo_put(struct qfs_src_cache *c, const struct stat *st, int floor)
{
	struct qfs_acl_memo *m = acl_memo_of(c, st);
	unsigned b = hash_ident(st);

	/* A change within the clock's granularity of the last one may leave the ctime as it was
	 * (the kernel stamps with a coarse clock): a file changed in the last two seconds is not
	 * kept, so a memo is never taken for a file changed again under the same stamp. */
	if (!qfs_src_ctime_settled(st)) {
		if (m)
			m->ctim.tv_sec = m->ctim.tv_nsec = -1; /* stale: never matches */
		return;
	}
	if (!m) {
		if (c->n_acls >= ACL_MEMO_MAX)
			acl_memo_free(c);
		if (!(m = calloc(1, sizeof(*m))))
			return; /* not kept: looked at again next time */
		m->dev = st->st_dev;
		m->ino = st->st_ino;
		m->next = c->acls[b];
		c->acls[b] = m;
		c->n_acls++;
	}
	m->ctim = st->st_ctim;
	m->floor = floor;
}

/* ---- lifetime ---- */

void qfs_src_cache_init(struct qfs_src_cache *c, const struct qcow2_chain_opts *copts,
			struct qcow2_mounts *mounts, bool read_only)
{
	c->copts = copts;
	c->mounts = mounts;
	c->read_only = read_only;
	c->ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	c->watching = c->ino_fd >= 0; /* else no memo: every stat is asked */
}

void qfs_src_cache_next_gen(struct qfs_src_cache *c)
{
	c->gen++;
}

void qfs_src_cache_release(struct qfs_src_cache *c)
{
	unsigned b;

	for (b = 0; b < QFS_SRC_BUCKETS; b++) {
		struct qfs_src *s = c->srcs[b], *next;

		for (; s; s = next) {
			next = s->hnext;
			src_free(c, s);
		}
		c->srcs[b] = NULL;
	}
	link_notes_free(c);
	brefs_free(c);
	acl_memo_free(c);
	dir_memo_clear(c);
	if (c->watching)
		close(c->ino_fd);
	c->watching = false;
}
