/* SPDX-License-Identifier: MIT */
/*
 * ops.c - FUSE low-level operations: argument checks, one call into the tree or the qcow2
 * library, exactly one reply. Library errors pass through unchanged: every error inside fs/
 * is a negative errno, and reply_err() makes it FUSE's positive one, the one place the sign
 * flips.
 *
 * A file handle (fi->fh) is a struct handle: the node and, for raw backing files, the file
 * descriptor. Flat views share their node's open chain; reads and writes run concurrently on
 * it. A view opened for writing holds QEMU's write lock on its image until its last writer
 * closes.
 *
 * Locking: handles_lock guards the list of open handles and each one's count of reads in
 * progress; a leaf, never held across a call into another file. The tree's locks are taken
 * inside the qfs_tree_*() calls, never held here.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/falloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"
#include "qcowfs.h"
#include "readahead.h"

/* Names are looked up again on every access (entry timeout 0), so that images and snapshots
 * created or deleted under SOURCE show at once; attributes may be cached briefly. */
#define ENTRY_TIMEOUT 0.0
#define ATTR_TIMEOUT  1.0

struct handle {
	struct qfs_node *node;	   /* the node opened (a live job may move its chain elsewhere) */
	struct qcow2_chain *chain; /* a flat view's chain, for as long as the handle lives */
	int fd;			   /* raw backing file, or -1 */
	char *status; /* the status file: its text as computed at open (one snapshot per open) */
	size_t status_len;
	bool write;   /* opened for writing */
	bool limited; /* opened by a checked user other than root: writes as limited as theirs */
	uid_t uid;    /* the opener (when limited) */
	gid_t gid;
	pid_t pid;		    /* the process that opened it (the control socket names it) */
	struct handle *prev, *next; /* under handles_lock */
	unsigned reads; /* op_read calls using it (under handles_lock): see read_hold() */
};

/* Writes through a handle opened by a user other than root run as limited as the opener's own
 * writes to the image file would: the thread takes the opener's file-system ids and sets
 * CAP_SYS_RESOURCE aside, so that the blocks a file system keeps for root (and, where quotas
 * exist, the image owner's limits, which CAP_SYS_RESOURCE overrides) stay out of the opener's
 * reach. setfsuid(), setfsgid() and capset() act on the calling thread only; the
 * thread is back to root's ids and capabilities before it takes another request. */
struct limits {
	bool on;
	uid_t uid;
	gid_t gid;
	struct __user_cap_data_struct caps[2];
};

static void limits_enter(bool limited, uid_t uid, gid_t gid, struct limits *l)
{
	struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct caps[2];

	l->on = limited && syscall(SYS_capget, &hdr, l->caps) == 0;
	if (!l->on)
		return;
	memcpy(caps, l->caps, sizeof(caps));
	caps[CAP_SYS_RESOURCE / 32].effective &= ~(1u << (CAP_SYS_RESOURCE % 32));
	syscall(SYS_capset, &hdr, caps);
	l->gid = (gid_t)setfsgid(gid);
	l->uid = (uid_t)setfsuid(uid);
}

static void limits_leave(struct limits *l)
{
	struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};

	if (!l->on)
		return;
	setfsuid(l->uid);
	setfsgid(l->gid);
	syscall(SYS_capset, &hdr, l->caps);
}

/* Every open handle, so that those the kernel never released (an unmount right after a close
 * can overtake the release) are released at exit: the last writer's write-back included. */
static pthread_mutex_t handles_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t reads_done = PTHREAD_COND_INITIALIZER; /* a handle's reads went to 0 */
static struct handle *handles;

/* A flat view's read sends its reply from inside the library call (reply_pieces()), and goes
 * on using the chain and @h after it (the library lets go of its lock, frees its pieces). Once
 * the kernel has the reply, the reader may close the file and the release arrive on another
 * thread: handle_free() waits for read_done() before letting go of the chain. */
static void read_hold(struct handle *h)
{
	pthread_mutex_lock(&handles_lock);
	h->reads++;
	pthread_mutex_unlock(&handles_lock);
}

/* The last use of @h by a read (it may be freed as soon as this returns). */
static void read_done(struct handle *h)
{
	pthread_mutex_lock(&handles_lock);
	if (--h->reads == 0)
		pthread_cond_broadcast(&reads_done);
	pthread_mutex_unlock(&handles_lock);
}

static void handle_add(struct handle *h)
{
	pthread_mutex_lock(&handles_lock);
	h->prev = NULL;
	h->next = handles;
	if (handles)
		handles->prev = h;
	handles = h;
	pthread_mutex_unlock(&handles_lock);
}

/* Unlink @h and let go of what it holds. */
static void handle_free(struct qfs_tree *t, struct handle *h)
{
	pthread_mutex_lock(&handles_lock);
	while (h->reads)
		pthread_cond_wait(&reads_done, &handles_lock);
	if (h->prev)
		h->prev->next = h->next;
	else
		handles = h->next;
	if (h->next)
		h->next->prev = h->prev;
	pthread_mutex_unlock(&handles_lock);
	if (h->status)
		free(h->status);
	else if (h->fd >= 0)
		close(h->fd);
	else
		qfs_tree_release(t, h->node, h->chain, h->write);
	free(h);
}

size_t qfs_ops_openers(const struct qfs_node *n, pid_t *pids, size_t cap)
{
	struct handle *h;
	size_t k = 0;

	pthread_mutex_lock(&handles_lock);
	for (h = handles; h && k < cap; h = h->next)
		if (h->node == n && !h->status && h->fd < 0)
			pids[k++] = h->pid;
	pthread_mutex_unlock(&handles_lock);
	return k;
}

void qfs_release_all(struct qfs_tree *t)
{
	while (handles)
		handle_free(t, handles);
}

struct dir_handle {
	struct qfs_dirent *d;
	size_t n;
};

/* Reply @r to @req: 0, or a negative errno (the library's and the tree's), which FUSE wants
 * positive. Every error reply of this file goes through here. */
static void reply_err(fuse_req_t req, int r)
{
	fuse_reply_err(req, -r);
}

static struct qfs_tree *tree_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static struct handle *handle_of(struct fuse_file_info *fi)
{
	return (struct handle *)(uintptr_t)fi->fh;
}

/* -o writeback asked for the kernel's writeback cache (set before the session starts);
 * writeback: it is on (set once in op_init, before any other request). */
static bool writeback_wanted, writeback;

void qfs_ops_writeback(bool on)
{
	writeback_wanted = on;
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	/* Page cache validity is decided at open (keep_cache when no file of the chain changed);
	 * the kernel must not drop the cache on every attribute refresh. */
	conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
	/* Reads of plain data are spliced from the image file into the reply (reply_pieces()):
	 * one copy fewer per byte. Not SPLICE_MOVE: the kernel could take the image file's pages
	 * out of its page cache. */
	if (conn->capable & FUSE_CAP_SPLICE_WRITE)
		conn->want |= FUSE_CAP_SPLICE_WRITE;
	conn->max_readahead =
	    conn->capable & FUSE_CAP_ASYNC_READ ? UINT32_MAX : conn->max_readahead;
	if (qfs_readahead_max_read())
		conn->max_read = qfs_readahead_max_read(); /* as -o max_read asked, or INIT fails */
#ifdef FUSE_CAP_HANDLE_KILLPRIV_V2
	/* The views have extended attributes, so the kernel asks for security.capability before
	 * every write, to drop it, unless the file system says it drops privileges itself: then
	 * it asks once per file. Ours have none to drop (no set-id bit, no capability, no chmod
	 * or chown). Newer libfuse versions offer the flag; 3.14 does not. */
	if (conn->capable & FUSE_CAP_HANDLE_KILLPRIV_V2)
		conn->want |= FUSE_CAP_HANDLE_KILLPRIV_V2;
#endif
	/* Writeback cache (-o writeback, a mount that may write): write(2) lands in the kernel's
	 * page cache and reaches op_write in large batches when the kernel writes the pages back
	 * (at the latest on fsync, close and release, each of which waits for it). What stays true:
	 * - durability: fsync(2) first writes back and waits for every dirty page, then sends
	 *   FSYNC, which flushes the chain (op_fsync); a crash before that loses only writes no
	 *   fsync acknowledged, as without the cache;
	 * - O_DIRECT handles go straight through (direct_io, op_open), and so do O_APPEND ones,
	 *   so that an append past the end is refused by write(2) itself;
	 * - reads on write-only handles: the kernel reads a page before writing part of it; the
	 *   caller was checked for W_OK only at open and gets nothing of those reads (a write-only
	 *   descriptor can neither read nor mmap); op_read serves them from the chain the daemon
	 *   opened for writing.
	 * What does not, and why it is not the default: with the cache, the kernel trusts its own
	 * i_size over getattr's, and a pwrite(2) past the end of a view through the cache grows
	 * that i_size without asking the daemon (no FUSE request exists to refuse it). The daemon
	 * refuses the write-back (EFBIG, reported by fsync and close, the image untouched), but
	 * stat keeps the grown size until the kernel drops the inode; and an image resized under
	 * SOURCE while the kernel holds its view's inode keeps its old size there.
	 * A read-only mount keeps the cache off: nothing to gain, and the kernel would stop taking
	 * sizes from getattr, so a resize of an image under SOURCE would not show. */
	if (writeback_wanted && !qfs_tree_read_only(userdata) &&
	    (conn->capable & FUSE_CAP_WRITEBACK_CACHE)) {
		conn->want |= FUSE_CAP_WRITEBACK_CACHE;
		writeback = true;
	} else {
		conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
	}
	qfs_readahead_init_done();
}

/* The caller of @req asking for @mask (R_OK, W_OK), in @c; NULL when the daemon does not check
 * callers (no default_permissions) or the caller is root, who passes every check. The kernel
 * has checked already (default_permissions), with the attributes it holds; the daemon checks
 * again, with the current ones, so that a mode that has just changed is never bypassed. */
static const struct qfs_caller *caller_of(fuse_req_t req, struct qfs_tree *t, int mask,
					  struct qfs_caller *c)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);

	if (!qfs_tree_checks_callers(t) || ctx->uid == 0)
		return NULL;
	c->uid = ctx->uid;
	c->gid = ctx->gid;
	c->mask = mask;
	c->ngroups = fuse_req_getgroups(req, 64, c->groups);
	if (c->ngroups > 64)
		c->ngroups = -1;
	return c;
}

/* May the caller of @req have @mask on @n, as its attributes are now? 0 or a negative errno. */
static int caller_may(fuse_req_t req, struct qfs_tree *t, struct qfs_node *n, int mask)
{
	struct qfs_caller c;
	const struct qfs_caller *who = caller_of(req, t, mask, &c);
	struct stat st;
	int r;

	if (!who)
		return 0;
	r = qfs_tree_getattr(t, n, &st);
	return r ? r : qfs_caller_may(who, &st) ? 0 : -EACCES;
}

/* The status file's size, as the caller of @req would read it now: stat(2) and cat agree. */
static int status_size(fuse_req_t req, struct qfs_tree *t, struct stat *st)
{
	struct qfs_caller c;
	char *text;
	size_t len;
	int r = qfs_tree_status(t, caller_of(req, t, R_OK, &c), &text, &len);

	if (r == 0) {
		st->st_size = (off_t)len;
		st->st_blocks = (blkcnt_t)((len + 511) / 512);
		free(text);
	}
	return r;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct qfs_tree *t = tree_of(req);
	struct qfs_node *dir = qfs_tree_node(t, parent), *n;
	struct fuse_entry_param e;
	struct qfs_caller caller;
	int err = -ENOENT;

	memset(&e, 0, sizeof(e));
	n = dir ? qfs_tree_lookup(t, dir, name, &e.attr, &err, caller_of(req, t, R_OK, &caller))
		: NULL;
	if (n && n->kind == QFS_STATUS && (err = status_size(req, t, &e.attr)) != 0)
		n = NULL;
	if (!n) {
		reply_err(req, err);
		return;
	}
	e.ino = n->ino;
	e.attr_timeout = n->kind == QFS_STATUS ? 0.0 : ATTR_TIMEOUT;
	e.entry_timeout = ENTRY_TIMEOUT;
	fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct qfs_tree *t = tree_of(req);
	struct qfs_node *n = qfs_tree_node(t, ino);
	struct stat st;
	int r;

	if (!n) {
		reply_err(req, -ENOENT);
		return;
	}
	r = qfs_tree_getattr(t, n, &st);
	if (r == 0 && n->kind == QFS_STATUS)
		r = status_size(req, t, &st);
	if (r)
		reply_err(req, r);
	else
		fuse_reply_attr(req, &st, n->kind == QFS_STATUS ? 0.0 : ATTR_TIMEOUT);
}

/* Open the status file: its text is computed now, for this caller, and read from the handle;
 * direct I/O, so that a read returns this text whatever size the kernel last saw. */
static void open_status(fuse_req_t req, struct qfs_tree *t, struct qfs_node *n,
			struct fuse_file_info *fi)
{
	struct qfs_caller caller;
	struct handle *h;
	int r;

	if ((fi->flags & O_ACCMODE) != O_RDONLY) {
		reply_err(req, -EACCES);
		return;
	}
	h = calloc(1, sizeof(*h));
	if (!h) {
		reply_err(req, -ENOMEM);
		return;
	}
	h->node = n;
	h->fd = -1;
	r = qfs_tree_status(t, caller_of(req, t, R_OK, &caller), &h->status, &h->status_len);
	if (r) {
		free(h);
		reply_err(req, r);
		return;
	}
	fi->fh = (uintptr_t)h;
	fi->direct_io = 1;
	handle_add(h);
	if (fuse_reply_open(req, fi) == -ENOENT)
		handle_free(t, h);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct qfs_tree *t = tree_of(req);
	struct qfs_node *n = qfs_tree_node(t, ino);
	const struct qfs_caller *who;
	struct qfs_caller caller;
	struct handle *h;
	bool keep = false, direct = false;
	int r, acc;

	if (!n) {
		reply_err(req, -ENOENT);
		return;
	}
	if (n->kind == QFS_STATUS) {
		open_status(req, t, n, fi);
		return;
	}
	if ((fi->flags & O_ACCMODE) != O_RDONLY && n->kind != QFS_FLAT) {
		reply_err(req, -EROFS);
		return;
	}
	/* the caller is checked by the tree, against the files it then opens */
	acc = fi->flags & O_ACCMODE;
	who = caller_of(req, t,
			acc == O_RDONLY	  ? R_OK
			: acc == O_WRONLY ? W_OK
					  : R_OK | W_OK,
			&caller);

	h = calloc(1, sizeof(*h));
	if (!h) {
		reply_err(req, -ENOMEM);
		return;
	}
	h->node = n;
	h->fd = -1;
	h->write = (fi->flags & O_ACCMODE) != O_RDONLY;
	h->limited = who != NULL;
	h->uid = who ? who->uid : 0;
	h->gid = who ? who->gid : 0;
	h->pid = fuse_req_ctx(req)->pid;
	if (n->kind == QFS_RAW) {
		r = qfs_tree_open_raw(t, n, who, &h->fd);
		keep = true;
	} else {
		r = n->kind == QFS_FLAT
			? qfs_tree_open(t, n, h->write, &keep, &direct, who, &h->chain)
			: -EISDIR;
		/* O_TRUNC (passed here: libfuse asks for atomic O_TRUNC) would shrink the disk:
		 * refused once the view proved writable (a read-only one says EROFS). */
		if (r == 0 && h->write && (fi->flags & O_TRUNC)) {
			qfs_tree_release(t, n, h->chain, true);
			r = -EINVAL;
		}
	}
	if (r) {
		free(h);
		reply_err(req, r);
		return;
	}
	fi->fh = (uintptr_t)h;
	fi->keep_cache = keep;
	/* O_DIRECT goes straight to the daemon, whatever the cache does; with the writeback cache
	 * so does O_APPEND, whose writes are past the end by definition: refused by write(2) */
	if ((fi->flags & O_DIRECT) || (writeback && h->write && (fi->flags & O_APPEND)))
		fi->direct_io = 1;
	/* a disk another view's handles write too (after a live external snapshot): read from
	 * the daemon, not from this inode's pages, which those writes do not reach */
	if (direct)
		fi->direct_io = 1;
	handle_add(h);
	if (fuse_reply_open(req, fi) == -ENOENT)
		handle_free(t, h); /* the opener was interrupted: undo */
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct handle *h = handle_of(fi);
	struct limits l;

	limits_enter(h->limited && h->write, h->uid, h->gid, &l); /* the last writer writes back */
	handle_free(tree_of(req), h);
	limits_leave(&l);
	reply_err(req, 0);
}

/* reply_pieces() sent the reply (whatever became of it): op_read has nothing left to do */
#define READ_REPLIED 1
/* Reads up to this size are copied (libfuse splices nothing under two pages). */
#define SMALL_READ 8192

/* Send a flat view's read as the library resolved it (qcow2_chain_read_pieces(), which calls this
 * with the view's read lock held): plain runs of an image file go as file ranges, which libfuse
 * splices from the image's page cache into the reply (FUSE_CAP_SPLICE_WRITE, op_init) without a
 * copy in the daemon; zeros and decoded bytes go from memory. Runs under the library's lock, so
 * the ranges are still the view's data when they are sent. */
static int reply_pieces(void *ctx, const struct qcow2_read_piece *p, unsigned count)
{
	struct fuse_bufvec one, *bv = &one;
	unsigned i;

	if (count > 1) {
		bv = malloc(sizeof(*bv) + (count - 1) * sizeof(bv->buf[0]));
		if (!bv) {
			fuse_reply_err(ctx, ENOMEM);
			return READ_REPLIED;
		}
	}
	*bv = (struct fuse_bufvec)FUSE_BUFVEC_INIT(0);
	bv->count = count ? count : 1;
	for (i = 0; i < count; i++) {
		bv->buf[i] = (struct fuse_buf){.size = p[i].len};
		if (p[i].fd >= 0) {
			bv->buf[i].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK | FUSE_BUF_FD_RETRY;
			bv->buf[i].fd = p[i].fd;
			bv->buf[i].pos = (off_t)p[i].fd_off;
		} else {
			bv->buf[i].mem = (void *)p[i].mem;
		}
	}
	fuse_reply_data(ctx, bv, 0);
	if (bv != &one)
		free(bv);
	return READ_REPLIED;
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct handle *h = handle_of(fi);
	uint64_t vsize;
	char *buf;
	int r = 0;

	if (h->status) {
		size = off < 0 || (size_t)off >= h->status_len ? 0
		       : size > h->status_len - (size_t)off    ? h->status_len - (size_t)off
							       : size;
		/* From a copy: once the kernel has the reply, the reader may close the file and
		 * the release (another thread) free h->status while this one is still returning
		 * from the write of the reply (which ASan then checks). */
		buf = size ? malloc(size) : NULL;
		if (size && !buf) {
			reply_err(req, -ENOMEM);
			return;
		}
		if (size)
			memcpy(buf, h->status + off, size);
		fuse_reply_buf(req, buf, size);
		free(buf);
		return;
	}
	if (h->fd >= 0) {
		struct fuse_bufvec bv = FUSE_BUFVEC_INIT(size);
		bv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
		bv.buf[0].fd = h->fd;
		bv.buf[0].pos = off;
		fuse_reply_data(req, &bv, FUSE_BUF_SPLICE_MOVE);
		return;
	}
	vsize = qcow2_chain_size(h->chain);
	if (off < 0 || (uint64_t)off >= vsize)
		size = 0;
	else if (size > vsize - (uint64_t)off)
		size = (size_t)(vsize - (uint64_t)off);
	/* libfuse copies a reply this small anyway: one copy, without resolving pieces */
	if (size <= SMALL_READ) {
		char small[SMALL_READ];
		r = size ? qcow2_chain_pread(h->chain, small, size, (uint64_t)off) : 0;
		if (r < 0) {
			qfs_log("read of '%s' at %lld failed: %s", h->node->rel, (long long)off,
				qcow2_last_error());
			reply_err(req, r);
		} else {
			fuse_reply_buf(req, small, size);
		}
		return;
	}
	read_hold(h);
	r = qcow2_chain_read_pieces(h->chain, size, (uint64_t)off, reply_pieces, req);
	if (r != READ_REPLIED) {
		qfs_log("read of '%s' at %lld failed: %s", h->node->rel, (long long)off,
			qcow2_last_error());
		reply_err(req, r);
	}
	read_done(h);
}

static void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		     struct fuse_file_info *fi)
{
	struct handle *h = handle_of(fi);
	uint64_t result;
	int r;

	if (h->status) { /* all data, no hole but the end */
		if (off < 0 || (whence != SEEK_DATA && whence != SEEK_HOLE))
			reply_err(req, -EINVAL);
		else if ((size_t)off >= h->status_len)
			reply_err(req, -ENXIO);
		else
			fuse_reply_lseek(req, whence == SEEK_DATA ? off : (off_t)h->status_len);
		return;
	}
	if (h->fd >= 0) {
		off_t o = lseek(h->fd, off, whence);
		if (o < 0)
			reply_err(req, -errno);
		else
			fuse_reply_lseek(req, o);
		return;
	}
	if (off < 0) {
		reply_err(req, -EINVAL);
		return;
	}
	if (whence != SEEK_DATA && whence != SEEK_HOLE) {
		reply_err(req, -EINVAL);
		return;
	}
	if ((uint64_t)off >= qcow2_chain_size(h->chain)) {
		reply_err(req, -ENXIO);
		return;
	}
	r = qcow2_chain_seek(h->chain, (uint64_t)off, whence, &result);
	if (r < 0)
		reply_err(req, r);
	else
		fuse_reply_lseek(req, (off_t)result);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct qfs_tree *t = tree_of(req);
	struct qfs_node *n = qfs_tree_node(t, ino);
	struct qfs_caller caller;
	struct dir_handle *d;
	int r;

	if (!n) {
		reply_err(req, -ENOENT);
		return;
	}
	r = caller_may(req, t, n, R_OK);
	if (r) {
		reply_err(req, r);
		return;
	}
	d = calloc(1, sizeof(*d));
	if (!d) {
		reply_err(req, -ENOMEM);
		return;
	}
	r = qfs_tree_list(t, n, &d->d, &d->n, caller_of(req, t, R_OK, &caller));
	if (r) {
		free(d);
		reply_err(req, r);
		return;
	}
	fi->fh = (uintptr_t)d;
	if (fuse_reply_open(req, fi) == -ENOENT) {
		qfs_dirents_free(d->d, d->n);
		free(d);
	}
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct dir_handle *d = (struct dir_handle *)(uintptr_t)fi->fh;
	char *buf = malloc(size ? size : 1);
	size_t used = 0, i;

	if (!buf) {
		reply_err(req, -ENOMEM);
		return;
	}
	/* Offsets: 0 ".", 1 "..", then entry i at i + 2; each entry's off is the next one's. */
	for (i = (size_t)off; i < d->n + 2; i++) {
		struct stat st = {0};
		const char *name;
		size_t len;

		if (i < 2) {
			name = i == 0 ? "." : "..";
			st.st_ino = ino;
			st.st_mode = S_IFDIR;
		} else {
			name = d->d[i - 2].name;
			st.st_ino = d->d[i - 2].ino;
			st.st_mode = d->d[i - 2].type;
		}
		len = fuse_add_direntry(req, buf + used, size - used, name, &st, (off_t)(i + 1));
		if (len > size - used)
			break;
		used += len;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct dir_handle *d = (struct dir_handle *)(uintptr_t)fi->fh;

	qfs_dirents_free(d->d, d->n);
	free(d);
	reply_err(req, 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv;

	if (statvfs(qfs_tree_source(tree_of(req)), &sv) < 0) {
		reply_err(req, -errno);
		return;
	}
	if (qfs_tree_read_only(tree_of(req)))
		sv.f_flag |= ST_RDONLY;
	fuse_reply_statfs(req, &sv);
}

/* A library failure of a write-side call: logged (the log says which image and why), then
 * passed through. EROFS is not logged: the image turned read-only under an open handle (it
 * was found damaged), and the log already said why, once. */
static void reply_failure(fuse_req_t req, struct handle *h, const char *what, int r)
{
	if (r != -EFBIG && r != -EINVAL && r != -EROFS)
		qfs_log("%s of '%s' failed: %s", what, h->node->rel, qcow2_last_error());
	reply_err(req, r);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct handle *h = handle_of(fi);
	struct limits l;
	int r;

	if (!h->write || !h->chain) {
		reply_err(req, -EBADF);
		return;
	}
	if (off < 0) {
		reply_err(req, -EINVAL);
		return;
	}
	limits_enter(h->limited, h->uid, h->gid, &l);
	r = qcow2_chain_pwrite(h->chain, buf, size, (uint64_t)off);
	limits_leave(&l);
	if (r < 0)
		reply_failure(req, h, "write", r);
	else
		fuse_reply_write(req, size);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct handle *h = handle_of(fi);
	struct limits l;
	int r = 0;

	limits_enter(h->limited && h->write, h->uid, h->gid, &l);
	if (h->fd >= 0)
		r = fdatasync(h->fd) < 0 ? -errno : 0;
	else if (h->chain)
		r = qcow2_chain_flush(h->chain);
	limits_leave(&l);
	if (r < 0)
		reply_failure(req, h, "fsync", r);
	else
		reply_err(req, 0);
}

/* close(2): nothing to do; durability is fsync's (and the last writer's release). */
static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	reply_err(req, 0);
}

static void fallocate_view(fuse_req_t req, struct handle *h, int mode, off_t off, off_t len)
{
	struct qcow2_chain *c = h->chain;
	uint64_t size, end;
	unsigned flags;
	int r;

	if (!h->write || !c) {
		reply_err(req, -EBADF);
		return;
	}
	if (off < 0 || len <= 0 || __builtin_add_overflow((uint64_t)off, (uint64_t)len, &end)) {
		reply_err(req, -EINVAL);
		return;
	}
	size = qcow2_chain_size(c);
	/* A discard and a zeroing are one operation: zero clusters, or unallocated ones where
	 * no backing file would show through, freeing what they used. */
	if (mode == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) ||
	    (mode & ~FALLOC_FL_KEEP_SIZE) == FALLOC_FL_ZERO_RANGE) {
		flags = 0;
	} else if ((mode & ~FALLOC_FL_KEEP_SIZE) == 0) {
		flags = QCOW2_ZERO_ALLOCATE;
	} else {
		reply_err(req, -EOPNOTSUPP);
		return;
	}
	/* Like a file: without KEEP_SIZE the disk grows to cover the range. */
	if (end > size && !(mode & FALLOC_FL_KEEP_SIZE)) {
		r = qcow2_chain_grow(c, end);
		if (r < 0) {
			reply_failure(req, h, "growing", r);
			return;
		}
		size = end;
	}
	if (end > size)
		end = size;
	r = end > (uint64_t)off ? qcow2_chain_zero(c, (uint64_t)off, end - (uint64_t)off, flags)
				: 0;
	if (r < 0)
		reply_failure(req, h, "fallocate", r);
	else
		reply_err(req, 0);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
			 struct fuse_file_info *fi)
{
	struct handle *h = handle_of(fi);
	struct limits l;

	limits_enter(h->limited, h->uid, h->gid, &l);
	fallocate_view(req, h, mode, off, len);
	limits_leave(&l);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	struct qfs_tree *t = tree_of(req);
	struct qfs_node *n = qfs_tree_node(t, ino);
	struct handle *h = fi ? handle_of(fi) : NULL;
	struct stat st;
	int r;

	if (!n) {
		reply_err(req, -ENOENT);
		return;
	}
	/* Only the size of a flat view may change (it grows the disk); times are the image's
	 * own and are ignored rather than refused, so that tools which set them still work. */
	if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
		reply_err(req, -EPERM);
		return;
	}
	if (to_set & FUSE_SET_ATTR_SIZE) {
		/* truncate(2) by name opens the view for writing here: the caller must be allowed
		 * to (through a handle open for writing, the open was checked) */
		struct qfs_caller caller;
		const struct qfs_caller *who = caller_of(req, t, W_OK, &caller);
		struct limits l;

		/* ftruncate(2) through a handle is limited as its writes are; truncate(2) by name
		 * opens the chain first, as root, and grows only the image's tables */
		limits_enter(h && h->write && h->limited, h ? h->uid : 0, h ? h->gid : 0, &l);
		r = qfs_tree_truncate(t, n, h && h->write ? h->chain : NULL,
				      (uint64_t)attr->st_size, who);
		limits_leave(&l);
		if (r) {
			reply_err(req, r);
			return;
		}
	}
	r = qfs_tree_getattr(t, n, &st);
	if (r)
		reply_err(req, r);
	else
		fuse_reply_attr(req, &st, ATTR_TIMEOUT);
}

/* Nothing under the mount point can be created, removed or renamed: the tree mirrors SOURCE. */
static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	reply_err(req, -EROFS);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	reply_err(req, -EROFS);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	reply_err(req, -EROFS);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	reply_err(req, -EROFS);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	reply_err(req, -EROFS);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	reply_err(req, -EROFS);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	reply_err(req, -EROFS);
}

/* Extended attributes say what a view is (tree-attr.c). A name outside user.qcowfs. is answered
 * "none" at once, without the tree: the kernel asks for security.capability before every write
 * to a file that has extended attributes. */
static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct qfs_tree *t = tree_of(req);
	struct qfs_node *n = qfs_tree_node(t, ino);
	struct qfs_caller caller;
	char *val;
	size_t len;
	int r;

	if (!n) {
		reply_err(req, -ENOENT);
		return;
	}
	r = qfs_tree_getxattr(t, n, name, caller_of(req, t, R_OK, &caller), &val, &len);
	if (r) {
		reply_err(req, r);
		return;
	}
	if (size == 0)
		fuse_reply_xattr(req, len);
	else if (size < len)
		reply_err(req, -ERANGE);
	else
		fuse_reply_buf(req, val, len);
	free(val);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct qfs_tree *t = tree_of(req);
	struct qfs_node *n = qfs_tree_node(t, ino);
	char *names;
	size_t len;
	int r;

	if (!n) {
		reply_err(req, -ENOENT);
		return;
	}
	r = qfs_tree_listxattr(t, n, &names, &len);
	if (r) {
		reply_err(req, r);
		return;
	}
	if (size == 0)
		fuse_reply_xattr(req, len);
	else if (size < len)
		reply_err(req, -ERANGE);
	else
		fuse_reply_buf(req, names, len);
	free(names);
}

/* The daemon's attributes are facts, not settings (EPERM); the views keep no others (ENOTSUP,
 * as a file system without extended attributes: cp -a goes on). ENOSYS would make the kernel
 * stop asking, and answer ENOTSUP for user.qcowfs.* too. */
static int xattr_refusal(const char *name)
{
	return strncmp(name, "user.qcowfs.", 12) == 0 ? -EPERM : -ENOTSUP;
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			size_t size, int flags)
{
	reply_err(req, xattr_refusal(name));
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	reply_err(req, xattr_refusal(name));
}

const struct fuse_lowlevel_ops qfs_ops = {
    .mknod = op_mknod,
    .mkdir = op_mkdir,
    .unlink = op_unlink,
    .rmdir = op_unlink,
    .symlink = op_symlink,
    .rename = op_rename,
    .link = op_link,
    .create = op_create,
    .init = op_init,
    .lookup = op_lookup,
    .getattr = op_getattr,
    .setattr = op_setattr,
    .open = op_open,
    .read = op_read,
    .write = op_write,
    .flush = op_flush,
    .fsync = op_fsync,
    .fallocate = op_fallocate,
    .release = op_release,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .releasedir = op_releasedir,
    .statfs = op_statfs,
    .lseek = op_lseek,
    .getxattr = op_getxattr,
    .listxattr = op_listxattr,
    .setxattr = op_setxattr,
    .removexattr = op_removexattr,
};
