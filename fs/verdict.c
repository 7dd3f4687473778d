/* SPDX-License-Identifier: MIT */
/*
 * verdict.c - the one place that says what the mount makes of a file of SOURCE: a writable
 * view, a read-only view and why, an image refused and why, or a file not shown. Every reason a
 * view is read-only is a condition tested here and nowhere else, in one order (the first that
 * holds is the one given): the mount's -o ro, the corrupt bit, another process writing the
 * image, the image being the backing file of another, the library refusing to open it for
 * writing, the image file's own mode, the daemon's own access, then the modes of the chain's
 * files (perm.c). An image is refused for its own cause (src.c: unreadable, a bad header...)
 * or its chain's (qfs_src_chain_check()). A new cause (say, an encrypted image without its key)
 * is one more test here, and shows in the views' modes, opens, attributes and status file at
 * once.
 *
 * Locking: takes no lock; runs under qfs_tree.lock (it reads and refreshes the src cache).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "verdict.h"

/* May this daemon write the file at canonical @path (read-only file system, a daemon not run
 * as root)? access(2) of the name would follow a symlink put in its way since it was resolved,
 * possibly into our own mount while the tree lock is held: the file is reached following no
 * symlink (an O_PATH descriptor, which neither blocks nor checks permissions), then asked
 * through its /proc link, which leads to the file itself without a walk. 0 or the errno. */
static int daemon_may_write_now(struct qfs_src_cache *c, const char *path)
{
	char link[64];
	int fd = qfs_src_path_open(c, path, O_PATH | O_CLOEXEC), r;

	if (fd < 0)
		return -fd;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	r = access(link, W_OK) == 0 ? 0 : errno;
	close(fd);
	return r;
}

/* daemon_may_write_now() of image @s, asked once per change of what decides it, not at every
 * lookup: the file's mode, owner, ACL and attributes (its ctime moves with each, and s->st is
 * this generation's stat), and the file system being remounted read-only (a change of the mount
 * table moves the memo epoch). The daemon's own credentials never change. */
static int daemon_may_write(struct qfs_src_cache *c, struct qfs_src *s)
{
	uint64_t epoch = 0;
	bool keep = qfs_src_memo_epoch(c, &epoch);
	int r;

	if (keep && s->wr_known && s->wr_epoch == epoch && s->wr_ino == s->st.st_ino &&
	    s->wr_ctim.tv_sec == s->st.st_ctim.tv_sec &&
	    s->wr_ctim.tv_nsec == s->st.st_ctim.tv_nsec)
		return s->wr_err;
	r = daemon_may_write_now(c, s->path);
	s->wr_known = keep && qfs_src_ctime_settled(&s->st);
	s->wr_err = r;
	s->wr_epoch = epoch;
	s->wr_ino = s->st.st_ino;
	s->wr_ctim = s->st.st_ctim;
	return r;
}

bool qfs_verdict_may_know(struct qfs_src_cache *c, struct qfs_src *s, const struct qfs_caller *who)
{
	struct qfs_caller r;
	struct stat st;

	if (!who)
		return true;
	r = *who;
	r.mask = R_OK;
	st = s->st;
	st.st_mode = (st.st_mode & ~07777) | qfs_perm_file(c, s);
	return qfs_caller_may(&r, &st);
}

/* Why the view of the image @s (served, its active state) may not be written, into @why; false
 * when it may. The image that @s backs is named only to a @who who may know of it. An image file no one may write (no write bit, as `chmod a-w` leaves it) is not
 * written through its view either, root's access(2) notwithstanding: a view never grants
 * more. */
static bool read_only_why(struct qfs_src_cache *c, struct qfs_src *s, const struct qfs_caller *who,
			  char *why, size_t cap)
{
	struct qfs_src *u;
	const char *user;
	int err;

	if (c->read_only) {
		snprintf(why, cap, "the mount is read-only (-o ro)");
	} else if (s->corrupt) {
		snprintf(why, cap, "the image's corrupt bit is set (see qcowctl check)");
	} else if (s->legacy_aes) {
		snprintf(why, cap, "legacy AES encryption: read-only (QEMU deprecates writing it)");
	} else if (s->busy) {
		snprintf(why, cap, "another process writes it: %s",
			 s->busy_msg ? s->busy_msg : "in use");
	} else if ((user = qfs_src_backing_user(c, s))) {
		u = qfs_src_get(c, user);
		if (u && qfs_verdict_may_know(c, u, who))
			snprintf(why, cap, "it is the backing file of '%s'", u->path);
		else
			snprintf(why, cap, "it is the backing file of another image");
	} else if (s->write_refused) {
		snprintf(why, cap,
			 "it could not be opened for writing (damaged metadata: the "
			 "log says why)");
	} else if (!(s->st.st_mode & 0222)) {
		snprintf(why, cap, "permissions: the image file has no write bit (mode %04o)",
			 (unsigned)(s->st.st_mode & 07777));
	} else if ((err = daemon_may_write(c, s)) != 0) {
		snprintf(why, cap, "the daemon may not write the image file: %s", strerror(err));
	} else {
		return false;
	}
	return true;
}

enum qfs_state qfs_verdict(struct qfs_src_cache *c, struct qfs_src *s, bool snap, mode_t *mode,
			   const struct qfs_caller *who, char *why, size_t cap)
{
	char buf[1024];
	const char *msg = NULL;
	enum qfs_state state = QFS_STATE_RO;
	mode_t m = 0;

	if (!why) {
		why = buf;
		cap = sizeof(buf);
	}
	why[0] = '\0';
	if (s->err) {
		snprintf(why, cap, "%s", s->errmsg && s->errmsg[0] ? s->errmsg : strerror(-s->err));
		return QFS_STATE_REFUSED;
	}
	if (!s->qcow2) {
		if (!qfs_src_is_backing(c, s)) {
			snprintf(why, cap, "not a qcow2 image, and no chain reads it");
			return QFS_STATE_NOT_SHOWN;
		}
		snprintf(why, cap, "a raw backing file (always read-only)");
		if (mode)
			*mode = qfs_perm_view(c, s, false);
		return QFS_STATE_RO;
	}
	if (qfs_src_chain_check(c, s, &msg) < 0) {
		snprintf(why, cap, "%s", msg && msg[0] ? msg : "its backing chain is refused");
		return QFS_STATE_REFUSED;
	}
	if (snap)
		snprintf(why, cap, "a snapshot view (internal snapshots are always read-only)");
	else if (!read_only_why(c, s, who, why, cap))
		state = QFS_STATE_RW;
	m = qfs_perm_view(c, s, state == QFS_STATE_RW);
	if (state == QFS_STATE_RW && !(m & 0222)) {
		state = QFS_STATE_RO;
		snprintf(why, cap,
			 "permissions: no user who may read every file of its chain may "
			 "write the image file");
	}
	if (state == QFS_STATE_RW && who && (who->mask & W_OK)) {
		struct qfs_caller w = *who;
		struct stat st = s->st;

		w.mask = W_OK;
		st.st_mode = (st.st_mode & ~07777) | m;
		if (!qfs_caller_may(&w, &st)) {
			state = QFS_STATE_RO;
			snprintf(why, cap,
				 "permissions: uid %u may not write it (mode %04o, owner %u:%u)",
				 (unsigned)who->uid, (unsigned)m, (unsigned)st.st_uid,
				 (unsigned)st.st_gid);
		}
	}
	if (mode)
		*mode = m;
	return state;
}
