/* SPDX-License-Identifier: MIT */
/*
 * src.c - the daemon's cache of source files ("srcs") and the chain checks.
 *
 * A src is keyed by canonical path and refreshed when its stat identity (inode, size, mtime,
 * ctime) changes, or when another process's write lock on it appears or goes: format, header
 * facts, snapshot names, the resolved backing file (confined to SOURCE and --backing-dir).
 * Chains are checked from the cache (loops, missing or refused layers, depth) with a memo per
 * scan generation, so a directory of 1,000 images or a chain of 1,000 layers costs O(files).
 * Everything here runs under qfs_tree.lock.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#if __has_include(<linux/openat2.h>)
#include <linux/openat2.h>
#endif
#include <unistd.h>

#include "tree-internal.h"

void src_clear(struct src *s)
{
	uint32_t i;

	for (i = 0; i < s->nsnaps; i++) {
		free(s->snaps[i].id);
		free(s->snaps[i].name);
	}
	free(s->snaps);
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
	s->err = 0;
	s->qcow2 = false;
	s->check_gen = 0;
}

static void src_refuse(struct src *s, int err, const char *msg)
{
	s->err = err;
	free(s->errmsg);
	s->errmsg = strdup(msg);
}

static int src_snapshots(struct src *s, struct qcow2_io *io, const struct qcow2_header *h)
{
	struct qcow2_snapshot *snaps;
	uint32_t i;
	int r;

	r = qcow2_snapshot_read(io, h, &snaps);
	if (r < 0)
		return r;
	s->snaps = calloc(h->nb_snapshots ? h->nb_snapshots : 1, sizeof(*s->snaps));
	for (i = 0; s->snaps && i < h->nb_snapshots; i++) {
		s->snaps[i].id = strdup(snaps[i].id);
		s->snaps[i].name = strdup(snaps[i].name);
		s->snaps[i].size = snaps[i].disk_bytes;
	}
	s->nsnaps = s->snaps ? h->nb_snapshots : 0;
	qcow2_snapshots_free(snaps, h->nb_snapshots);
	return 0;
}

/* Open @s for reading its header: the file s->st describes, at its canonical path, or nothing
 * (a symlink or another file swapped in since the stat would have its header taken for this
 * one's; a FIFO would block). On a mismatch the identity is forgotten, so the next refresh
 * probes again. 0 or a negative errno with the error set. */
static int probe_open(struct src *s, struct qcow2_io **io)
{
	struct stat st;
	int fd = canon_open(s->path, O_RDONLY | O_NONBLOCK);

	if (fd < 0)
		return qcow2_set_error(-errno, "cannot open '%s': %s", s->path, strerror(errno));
	if (fstat(fd, &st) < 0 || st.st_dev != s->st.st_dev || st.st_ino != s->st.st_ino) {
		close(fd);
		s->st.st_ino = 0;
		return qcow2_set_error(-ESTALE, "'%s' changed while it was read", s->path);
	}
	return qcow2_io_open_fd(fd, s->path, io);
}

/* Read what the tree needs to know of the file: format, header facts, snapshots, backing. */
static void src_probe(struct qfs_tree *t, struct src *s)
{
	char backing[PATH_MAX];
	struct qcow2_header *h;
	struct qcow2_io *io;
	uint8_t magic[4];
	int r;

	src_clear(s);
	r = probe_open(s, &io);
	if (r < 0) {
		src_refuse(s, r, qcow2_last_error());
		return;
	}
	if (qcow2_io_pread(io, magic, 4, 0) != 4 || !qcow2_probe(magic, 4)) {
		qcow2_io_close(io);
		return; /* not qcow2: a raw file, shown only if it backs a chain */
	}
	s->qcow2 = true;
	h = malloc(sizeof(*h));
	r = h ? qcow2_header_read(io, h) : -ENOMEM;
	/* Our own write lock is no conflict; another process's is (it may change the image). */
	if (r == 0 && !s->our_writers && qcow2_io_lock_check_reader(io) == -EBUSY) {
		s->busy = true;
		s->busy_msg = strdup(qcow2_last_error());
		if (!s->logged_msg || strcmp(s->logged_msg, s->busy_msg ? s->busy_msg : "") != 0) {
			free(s->logged_msg);
			s->logged_msg = s->busy_msg ? strdup(s->busy_msg) : NULL;
			qfs_log("serving '%s' read-only: %s", s->path, qcow2_last_error());
		}
	}
	if (r == 0)
		r = src_snapshots(s, io, h);
	if (r == 0 && h->backing_file[0]) {
		s->backing_fmt = !h->backing_fmt[0]			  ? FMT_PROBE :
				 strcmp(h->backing_fmt, "qcow2") == 0 ? FMT_QCOW2 :
				 strcmp(h->backing_fmt, "raw") == 0   ? FMT_RAW :
									-1;
		if ((int)s->backing_fmt < 0)
			r = qcow2_set_error(-ENOTSUP, "'%s': backing format '%s' not supported",
					    s->path, h->backing_fmt);
		if (r == 0)
			r = qcow2_chain_resolve_path(&t->copts, s->path, h->backing_file, backing,
						     sizeof(backing));
		if (r == 0)
			s->backing = strdup(backing);
	}
	/* The data file holds the image's data: views read it, so its permissions count too. */
	if (r == 0 && h->data_file[0]) {
		if (qcow2_chain_resolve_path(&t->copts, s->path, h->data_file, backing,
					     sizeof(backing)) == 0)
			s->data_file = strdup(backing);
		s->data_file_bad = !s->data_file;
	}
	if (r == 0) {
		s->vsize = h->size;
		s->corrupt = h->incompat & QCOW2_INCOMPAT_CORRUPT;
	}
	else
		src_refuse(s, r, qcow2_last_error());
	free(h);
	qcow2_io_close(io);
}

static struct src *src_find(struct qfs_tree *t, const char *path, struct src ***link)
{
	struct src **pp = &t->srcs[hash_str(path)];

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

	if (qcow2_io_open_file(path, false, &io) < 0)
		return false;
	busy = qcow2_io_lock_check_reader(io) == -EBUSY;
	qcow2_io_close(io);
	return busy;
}

int canon_open(const char *path, int flags)
{
	char proc[64], real[PATH_MAX];
	ssize_t n;
	int fd;
#if defined(SYS_openat2) && defined(RESOLVE_NO_SYMLINKS)
	struct open_how how = {
		.flags = (uint64_t)(flags | O_NOFOLLOW | O_CLOEXEC),
		.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};

	/* openat2() refuses a symlink anywhere on the path (ELOOP), and canonical paths have no
	 * "..": the file reached is the one at @path. Without openat2 (Linux < 5.6), the path
	 * the descriptor has is read back from /proc. */
	fd = (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof(how));
	if (fd >= 0 || (errno != ENOSYS && errno != EPERM))
		return fd < 0 && errno == ELOOP ? (errno = ENOENT, -1) : fd;
#endif
	fd = open(path, flags | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -1;
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	n = readlink(proc, real, sizeof(real) - 1);
	if (n < 0 && errno == ENOENT) /* no /proc: ask again by name (not atomic, still a check) */
		n = realpath(path, real) ? (ssize_t)strlen(real) : -1;
	if (n < 0 || (size_t)n != strlen(path) || memcmp(real, path, (size_t)n) != 0) {
		close(fd);
		errno = ENOENT;
		return -1;
	}
	return fd;
}

int canon_stat(const char *path, struct stat *st)
{
	int fd = canon_open(path, O_PATH), r;

	if (fd < 0)
		return -1;
	r = fstat(fd, st);
	close(fd);
	if (r == 0 && S_ISLNK(st->st_mode)) { /* O_PATH | O_NOFOLLOW opens a link itself */
		errno = ENOENT;
		return -1;
	}
	return r;
}

/* The src for canonical @path, refreshed once per scan generation. NULL if the file is gone,
 * is not a regular file, or its path is no longer canonical (canon_stat()). Called with t->lock
 * held. */
struct src *src_get(struct qfs_tree *t, const char *path)
{
	struct src **link, *s = src_find(t, path, &link);
	struct stat st;

	if (s && s->stat_gen == t->gen)
		return s;
	if (canon_stat(path, &st) < 0 || !S_ISREG(st.st_mode)) {
		if (s) {
			*link = s->hnext;
			src_clear(s);
			free(s->logged_msg);
			free(s->path);
			free(s);
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
		   (s->our_writers || !s->qcow2 || s->err || s->busy == lock_conflict(s->path))) {
		s->st = st;
		s->stat_gen = t->gen;
		return s;
	}
	s->st = st;
	s->stat_gen = t->gen;
	src_probe(t, s);
	return s;
}

/* ---- chain checks ---- */

static void set_check(struct src *s, unsigned gen, int err, const char *msg)
{
	s->check_gen = gen;
	s->check_err = err;
	free(s->check_msg);
	s->check_msg = msg ? strdup(msg) : NULL;
}

/* Is the chain whose top is @top servable? Memoised per scan generation for every layer the
 * walk passes. Returns 0 or a negative errno with *msg set (owned by the src). */
int chain_check(struct qfs_tree *t, struct src *top, const char **msg)
{
	struct src *path[QCOW2_DEFAULT_MAX_DEPTH + 1], *cur = top;
	char buf[700];
	unsigned n = 0, i, token = ++t->visit;
	int err = 0;

	buf[0] = '\0';
	while (cur->check_gen != t->gen) {
		struct src *next;

		if (cur != top && cur->busy)
			break; /* judged below: a busy layer refuses the chains above it only */
		path[n++] = cur;
		cur->visit = token;
		if (cur->err) {
			err = cur->err;
			snprintf(buf, sizeof(buf), "%s", cur->errmsg ? cur->errmsg : "refused");
			break;
		}
		if (!cur->qcow2 || !cur->backing || cur->backing_fmt == FMT_RAW)
			break;
		next = src_get(t, cur->backing);
		if (!next) {
			err = -ENOENT;
			snprintf(buf, sizeof(buf), "'%s': backing file '%s' is missing", cur->path,
				 cur->backing);
			break;
		}
		if (next->visit == token) {
			err = -ELOOP;
			snprintf(buf, sizeof(buf), "'%s': backing chain loops back to '%s'", cur->path,
				 next->path);
			break;
		}
		if (cur->backing_fmt == FMT_QCOW2 && !next->qcow2) {
			err = -EINVAL;
			snprintf(buf, sizeof(buf), "'%s': backing file '%s' is not qcow2", cur->path,
				 next->path);
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
	} else if (cur->check_gen == t->gen && n > 0 && path[n - 1] != cur) {
		err = cur->check_err; /* the walk reached a layer already judged */
		snprintf(buf, sizeof(buf), "%s", cur->check_msg ? cur->check_msg : "");
	}
	for (i = 0; i < n; i++)
		set_check(path[i], t->gen, err, err ? buf : NULL);
	*msg = top->check_msg;
	return top->check_err;
}

/* Sum of st_blocks and the stamp (identity of every file) of @top's chain. */
void chain_facts(struct qfs_tree *t, struct src *top, blkcnt_t *blocks, uint64_t *stamp)
{
	struct src *s = top;
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
		if (!s->qcow2 || !s->backing || s->backing_fmt == FMT_RAW) {
			if (s->backing && s->backing_fmt == FMT_RAW)
				s = src_get(t, s->backing);
			else
				break;
			if (s)
				*blocks += s->st.st_blocks;
			break;
		}
		s = src_get(t, s->backing);
	}
	*stamp = h;
}

/* Log a refusal once per change of the file. */
void log_refusal(struct src *s, const char *msg)
{
	/* Once per cause: a re-probe that finds the same problem stays quiet. */
	if (s->logged && s->logged_msg && msg && strcmp(s->logged_msg, msg) == 0)
		return;
	s->logged = true;
	free(s->logged_msg);
	s->logged_msg = msg ? strdup(msg) : NULL;
	qfs_log("refusing '%s': %s", s->path, msg && msg[0] ? msg : "invalid image");
}


bool src_is_backing(struct qfs_tree *t, const struct src *s)
{
	char path[PATH_MAX];
	unsigned b;
	struct src *o;

again:
	for (b = 0; b < HASH_BUCKETS; b++) {
		for (o = t->srcs[b]; o; o = o->hnext) {
			if (!o->qcow2 || o->err || !o->backing || strcmp(o->backing, s->path) != 0)
				continue;
			if (o->stat_gen == t->gen)
				return true;
			/* Known from an earlier scan: refresh it (it may be gone or rebased since),
			 * which may free it and change the table: look again from the start. */
			snprintf(path, sizeof(path), "%s", o->path);
			src_get(t, path);
			goto again;
		}
	}
	return false;
}

/* An image file no one may write (no write bit, as `chmod a-w` leaves it) is not written through
 * its view either, root's access(2) notwithstanding: a view never grants more (SPEC 3a). */
bool src_writable(struct qfs_tree *t, struct src *s)
{
	return !t->read_only && s->qcow2 && !s->err && !s->busy && !s->corrupt &&
	       (s->st.st_mode & 0222) && !src_is_backing(t, s) && access(s->path, W_OK) == 0;
}
