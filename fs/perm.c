/* SPDX-License-Identifier: MIT */
/*
 * perm.c - the permission bits of the views and directories of the mount, and the daemon's
 * own check of a caller against them.
 *
 * A view never grants more than its source files. Its owner and group are its image file's
 * (a raw backing file's own, a directory's own); its mode keeps, for each class (owner, group,
 * other), a read bit only if every member of the class may read every file of the chain and
 * reach it (search permission on every directory above it), and a write bit only on a writable
 * leaf, only if every member may write the image file (and reach it). Directories keep read and
 * search bits the same way, from their source directory and the directories above it. The
 * kernel enforces the result (default_permissions, main.c).
 *
 * Group membership is not looked up (the group database may be remote and slow, and the daemon
 * must never hang on it): where it is unknown whether a member of a class is in a file's group,
 * the file must grant the bit through both its group and its other bits; where a member may be
 * the file's owner, through its owner bits too. POSIX ACLs count too (fold_acl()), and a class
 * keeps no write bit without the read bit.
 *
 * Locking: takes no lock. qfs_perm_view() and qfs_perm_dir() run under qfs_tree.lock (they read
 * the src cache); qfs_caller_may() reads only its arguments.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "perm.h"

enum { CLASS_OWNER = 6, CLASS_GROUP = 3, CLASS_OTHER = 0 };

/* POSIX ACL entry tags and the layout of "system.posix_acl_access": a little-endian u32
 * version (2), then entries of a u16 tag, a u16 permission (rwx) and a u32 id. */
enum {
	ACL_TAG_USER = 0x02,
	ACL_TAG_GROUP_OBJ = 0x04,
	ACL_TAG_GROUP = 0x08,
	ACL_TAG_MASK = 0x10,
	ACL_TAG_OTHER = 0x20,
};
#define ACL_XATTR	 "system.posix_acl_access"
#define ACL_HEADER_BYTES 4
#define ACL_ENTRY_BYTES	 8

/* The least any user other than the file's owner has under the ACL @a of @len bytes: a named
 * user or group, or a member of the owning group, gets its entry masked, everyone else the
 * other entry. A user in several groups may get more (their union), never less. 0 for an ACL
 * that cannot be read. */
static mode_t acl_floor(const uint8_t *a, size_t len)
{
	mode_t floor = 07, mask = 07, masked = 07;
	size_t i;

	if (len < ACL_HEADER_BYTES || (len - ACL_HEADER_BYTES) % ACL_ENTRY_BYTES ||
	    (a[0] | a[1] << 8 | a[2] << 16 | (uint32_t)a[3] << 24) != 2)
		return 0;
	for (i = ACL_HEADER_BYTES; i < len; i += ACL_ENTRY_BYTES) {
		unsigned tag = a[i] | a[i + 1] << 8;
		mode_t perm = (a[i + 2] | a[i + 3] << 8) & 07;

		if (tag == ACL_TAG_MASK)
			mask = perm;
		else if (tag == ACL_TAG_OTHER)
			floor &= perm;
		else if (tag == ACL_TAG_USER || tag == ACL_TAG_GROUP || tag == ACL_TAG_GROUP_OBJ)
			masked &= perm;
	}
	return floor & masked & mask;
}

/* @st (of the file @path) with its group and other bits lowered to what an access ACL on it
 * grants every user but its owner: the mode bits alone do not say who an ACL denies (mode 0644
 * with "user:X:---" keeps X out), and the views must keep them out too. Group
 * membership and the ACL's named users are not looked up, so each entry counts for everyone
 * who is not the owner. Without an ACL, @st is unchanged; an ACL that cannot be read leaves the
 * owner's bits only. */
static void fold_acl(struct qfs_src_cache *c, const char *path, struct stat *st)
{
	uint8_t a[4096];
	char link[64];
	ssize_t len = -1;
	mode_t floor;
	int fd, memo;

	/* Asked once per change of the file (its ctime moves with any change of its ACL), not at
	 * every lookup: a directory of 10,000 images asks 10,000 times, not once per lookup. */
	if (qfs_src_acl_memo_find(c, st, &memo)) {
		if (memo >= 0)
			st->st_mode &= ~(mode_t)077 | (mode_t)memo << 3 | (mode_t)memo;
		return;
	}
	/* The canonical @path reached following no symlink (one swapped in could lead into our
	 * own mount, or elsewhere), then asked through the descriptor's /proc link, which leads
	 * to the file itself without a walk (an O_PATH descriptor takes no getxattr of its own). */
	fd = qfs_src_path_open(c, path, O_PATH);
	if (fd >= 0) {
		snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
		len = getxattr(link, ACL_XATTR, a, sizeof(a));
		close(fd);
	} else {
		errno = -fd;
	}

	if (len < 0 && (errno == ENODATA || errno == ENOTSUP)) {
		qfs_src_acl_memo_put(c, st, -1);
		return;
	}
	floor = len < 0 ? 0 : acl_floor(a, (size_t)len);
	if (len >= 0) /* a file that could not be asked is asked again next time */
		qfs_src_acl_memo_put(c, st, (int)floor);
	st->st_mode &= ~(mode_t)077 | floor << 3 | floor;
}

/* stat(2) of the canonical @path following no symlink (qcow2_path_stat()), with fold_acl(). (A
 * swap in between the two makes the open that follows fail its identity check.) 0 or a
 * negative errno. */
static int perm_stat(struct qfs_src_cache *c, const char *path, struct stat *st)
{
	int r = qfs_src_path_stat(c, path, st);

	if (r < 0)
		return r;
	fold_acl(c, path, st);
	return 0;
}

/* perm_stat() of a directory above a file: from the directory memo (qfs_src_dir_stat(), kept
 * until inotify reports a change of it), so that a lookup does not stat every directory up to
 * the root again. */
static int perm_dir_stat(struct qfs_src_cache *c, const char *path, struct stat *st)
{
	int r = qfs_src_dir_stat(c, path, st);

	if (r < 0)
		return r;
	fold_acl(c, path, st);
	return 0;
}

/* May every member of class @shift of a view owned by @uid:@gid have @bit (S_IROTH, S_IWOTH or
 * S_IXOTH) on the file @f? */
static bool class_may(const struct stat *f, uid_t uid, gid_t gid, int shift, mode_t bit)
{
	bool own = f->st_mode & (bit << 6), grp = f->st_mode & (bit << 3), oth = f->st_mode & bit;

	if (shift == CLASS_OWNER) /* the user @uid, who may or may not be in f's group */
		return f->st_uid == uid ? own : grp && oth;
	/* users other than @uid, in @gid (group class) or not (other class): one may own @f */
	if (f->st_uid != uid && !own)
		return false;
	if (f->st_gid == gid)
		return shift == CLASS_GROUP ? grp : oth;
	return grp && oth;
}

/* Clear in @mode the bits @drop (a class-0 pattern, e.g. S_IROTH | S_IWOTH) of every class
 * that does not have @need on @f. */
static mode_t deny(mode_t mode, const struct stat *f, uid_t uid, gid_t gid, mode_t need,
		   mode_t drop)
{
	int shift;

	for (shift = CLASS_OTHER; shift <= CLASS_OWNER; shift += 3)
		if (!class_may(f, uid, gid, shift, need))
			mode &= ~(drop << shift);
	return mode;
}

/* Clear @drop for the classes that cannot search every directory above the canonical @path.
 * @seen is the last directory checked (skipped when it is the same: a chain's layers usually
 * share one), updated. A directory that cannot be stat'ed denies every class. */
static mode_t deny_reach(struct qfs_src_cache *c, mode_t mode, const char *path, uid_t uid,
			 gid_t gid, mode_t drop, char *seen, size_t cap)
{
	char dir[PATH_MAX];
	struct stat st;
	char *slash;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash)
		return mode & ~(drop * 0111);
	slash[slash == dir] = '\0'; /* "/x" -> "/" */
	if (strcmp(dir, seen) == 0)
		return mode;
	snprintf(seen, cap, "%s", dir);
	for (;;) {
		if (perm_dir_stat(c, dir, &st) < 0)
			return mode & ~(drop * 0111);
		mode = deny(mode, &st, uid, gid, S_IXOTH, drop);
		if (strcmp(dir, "/") == 0)
			return mode;
		slash = strrchr(dir, '/');
		slash[slash == dir] = '\0';
	}
}

/* Narrow @mode by the file @s of a chain (its top if @top; read as raw bytes if @as_raw, its
 * data file then no part of it): read needs read on the file and
 * its external data file, and the top's write needs write on both. */
static mode_t deny_file(struct qfs_src_cache *c, mode_t mode, struct qfs_src *s, bool top,
			bool as_raw, uid_t uid, gid_t gid, char *seen, size_t cap)
{
	mode_t drop = top ? S_IROTH | S_IWOTH : S_IROTH;
	struct stat st = s->st;

	fold_acl(c, s->path, &st);
	mode = deny(mode, &st, uid, gid, S_IROTH, S_IROTH);
	if (top)
		mode = deny(mode, &st, uid, gid, S_IWOTH, S_IWOTH);
	mode = deny_reach(c, mode, s->path, uid, gid, drop, seen, cap);
	if (as_raw || (!s->data_file && !s->data_file_bad))
		return mode; /* a qcow2 file named as a raw layer is read as it is */
	s->data_ino = 0;
	if (!s->data_file || perm_stat(c, s->data_file, &st) < 0)
		return mode & ~(drop * 0111);
	s->data_dev = st.st_dev;
	s->data_ino = st.st_ino;
	mode = deny(mode, &st, uid, gid, S_IROTH, S_IROTH);
	if (top)
		mode = deny(mode, &st, uid, gid, S_IWOTH, S_IWOTH);
	return deny_reach(c, mode, s->data_file, uid, gid, drop, seen, cap);
}

/* The permission bits of a view of the chain whose top is @top: 0444 or, for a writable view,
 * 0666, narrowed by every file of the chain. A layer that cannot be found denies reading.
 * Writing needs reading: a write of part of a cluster copies the rest of it from the layers
 * below into the top image, where whoever may read the image file finds it (a user's own
 * image over a backing file only root may read, written write-only through its view). */
mode_t qfs_perm_view(struct qfs_src_cache *c, struct qfs_src *top, bool writable)
{
	char seen[PATH_MAX] = "";
	uid_t uid = top->st.st_uid;
	gid_t gid = top->st.st_gid;
	mode_t mode = writable ? 0666 : 0444;
	struct qfs_src *s = top;
	bool as_raw = false;
	unsigned depth;

	for (depth = 0; s && mode & 0444; depth++) {
		mode = deny_file(c, mode, s, s == top, as_raw, uid, gid, seen, sizeof(seen));
		if (as_raw || !s->qcow2 || !s->backing)
			break;
		if (depth >= QCOW2_DEFAULT_MAX_DEPTH) {
			s = NULL;
			break;
		}
		as_raw = s->backing_fmt == QFS_FMT_RAW; /* the chain ends with that file's bytes */
		s = qfs_src_get(c, s->backing);
	}
	if (!s)
		mode &= ~0444;
	return mode & ~((~mode & 0444) >> 1); /* no read, no write */
}

mode_t qfs_perm_file(struct qfs_src_cache *c, struct qfs_src *s)
{
	char seen[PATH_MAX] = "";

	return deny_file(c, 0444, s, false, true, s->st.st_uid, s->st.st_gid, seen, sizeof(seen));
}

/* A directory's mode: its source directory's read and search bits, for the classes that can
 * reach it. */
mode_t qfs_perm_dir(struct qfs_src_cache *c, const char *path, const struct stat *st)
{
	char seen[PATH_MAX] = "";
	struct stat acl = *st;

	fold_acl(c, path, &acl);
	return deny_reach(c, acl.st_mode & 0555, path, st->st_uid, st->st_gid, S_IROTH | S_IXOTH,
			  seen, sizeof(seen));
}

bool qfs_caller_may(const struct qfs_caller *c, const struct stat *st)
{
	mode_t need = (mode_t)c->mask, bits;
	int i;

	if (c->uid == st->st_uid) {
		bits = st->st_mode >> 6;
	} else if (c->gid == st->st_gid) {
		bits = st->st_mode >> 3;
	} else if (c->ngroups < 0 || c->ngroups > 64) {
		bits = (st->st_mode >> 3) & st->st_mode;
	} else {
		for (i = 0; i < c->ngroups && c->groups[i] != st->st_gid; i++)
			;
		bits = i < c->ngroups ? st->st_mode >> 3 : st->st_mode;
	}
	return (bits & need) == need;
}
