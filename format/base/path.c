/* SPDX-License-Identifier: MIT */
/*
 * path.c - resolving file names without ever looking inside a forbidden directory.
 *
 * qcow2_path_resolve() is realpath(3) done one component at a time: each prefix is compared
 * with the directory to avoid (the daemon's own mount point) before anything is asked of the
 * file system about it, and a symlink's target is spliced into what remains and checked the
 * same way. A lookup inside the daemon's mount would be a request to the daemon itself, which
 * may be waiting for this very thread: it would hang, so it is never made. The prefix resolved so
 * far is always canonical (no symlink, "." or ".."), so ".." is folded by dropping its last
 * component, as the kernel would, and a plain string comparison with the canonical directory
 * to avoid is exact. Each lookup is made relative to the directory reached so far, never by
 * walking a name again, so a directory swapped for a symlink meanwhile cannot lead elsewhere.
 *
 * A path so resolved is then used with qcow2_path_open_canonical() and qcow2_path_stat(),
 * which follow no symlink at all (openat2 RESOLVE_NO_SYMLINKS): a walk of a canonical name
 * that follows no symlink can reach the daemon's mount only through the mount point itself,
 * which the name does not contain. No state: safe from any thread.
 *
 * The caller may name more directories to avoid (struct qcow2_path_avoid): the daemon names
 * every FUSE mount found below its sources, whose daemon may hang or may be the daemon itself
 * (its mount point bound elsewhere). They are checked the same way, before each lookup.
 *
 * Confinement (qcow2_chain_resolve_top(), qcow2_chain_resolve_path(); public names kept): a
 * file named by an image (a backing or external data file) or by the user is resolved so and
 * must lie below the chain options' root or one of their allowed directories. Chains, the
 * repair, the directory scan and create all use it, so it lives here, below them all.
 *
 * Locks: none of its own; a caller's avoid callback (struct qcow2_path_avoid: the daemon's
 * mount table, mounts.c) takes its leaf lock during a resolution.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/base.h"

#define MAX_LINK_HOPS 40 /* as the kernel's MAXSYMLINKS */

bool qcow2_path_below(const char *path, const char *dir)
{
	size_t n = strlen(dir);

	if (n == 1 && dir[0] == '/')
		return true;
	return n && strncmp(path, dir, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

/* Drop the last component of the canonical @res (of length *@len). */
static void drop_last(char *res, size_t *len)
{
	while (*len > 0 && res[*len - 1] != '/')
		(*len)--;
	if (*len > 0)
		(*len)--;
	res[*len] = '\0';
}

/* Replace @rest by "@target/@rest" (the symlink's target, then what followed the link). */
static int splice_link(char *rest, size_t cap, const char *target, const char *after)
{
	char tmp[PATH_MAX];

	if (snprintf(tmp, sizeof(tmp), "%s%s%s", target, *after ? "/" : "", after) >=
		(int)sizeof(tmp) ||
	    strlen(tmp) >= cap)
		return -ENAMETOOLONG;
	strcpy(rest, tmp);
	return 0;
}

/* A resolution in progress. */
struct walk {
	char res[PATH_MAX];		     /* the canonical prefix resolved so far ("" for "/") */
	size_t len;			     /* strlen(res) */
	char rest[PATH_MAX];		     /* what remains to resolve */
	char *next;			     /* the next component in @rest */
	int dfd;			     /* the directory @res names (O_PATH) */
	unsigned hops;			     /* symlinks followed */
	const char *avoid;		     /* canonical directory never looked into, or NULL */
	const struct qcow2_path_avoid *more; /* more of them, or NULL */
	const char *bad;		     /* the prefix refused for @avoid */
};

/* Is the prefix resolved so far at or below the directory to avoid? */
static bool walk_avoided(struct walk *w)
{
	const char *at = w->len ? w->res : "/";

	if ((!w->avoid || !w->avoid[0] || !qcow2_path_below(at, w->avoid)) &&
	    (!w->more || !w->more->fn || !w->more->fn(w->more->ctx, at)))
		return false;
	w->bad = at;
	return true;
}

/* Start the walk of @path from the root, or from the working directory. 0 or -errno. */
static int walk_start(struct walk *w, const char *path)
{
	w->len = 0;
	w->res[0] = '\0';
	w->dfd = -1;
	w->hops = 0;
	if (strlen(path) >= PATH_MAX)
		return -ENAMETOOLONG;
	strcpy(w->rest, path);
	w->next = w->rest;
	if (path[0] != '/') {
		if (!getcwd(w->res, PATH_MAX))
			return -errno;
		w->len = strcmp(w->res, "/") == 0 ? 0 : strlen(w->res);
		w->res[w->len] = '\0';
		if (walk_avoided(w))
			return -EPERM;
	}
	w->dfd = open(path[0] == '/' ? "/" : ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
	return w->dfd < 0 ? -errno : 0;
}

/* Step from the directory w->dfd into its entry @name (a directory, or ".."). 0 or -errno. */
static int walk_into(struct walk *w, const char *name)
{
	int fd = openat(w->dfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	close(w->dfd);
	w->dfd = fd;
	return 0;
}

/* The component @comp (just appended to w->res) is a symlink: splice its target into what
 * remains (@after), from the root for an absolute target. 0 or -errno. */
static int walk_link(struct walk *w, const char *comp, const char *after)
{
	char target[PATH_MAX];
	ssize_t n;

	if (++w->hops > MAX_LINK_HOPS)
		return -ELOOP;
	n = readlinkat(w->dfd, comp, target, sizeof(target) - 1);
	if (n < 0)
		return -errno;
	target[n] = '\0';
	drop_last(w->res, &w->len);
	if (target[0] == '/') {
		w->len = 0;
		w->res[0] = '\0';
		close(w->dfd);
		w->dfd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (w->dfd < 0)
			return -errno;
	}
	if (splice_link(w->rest, PATH_MAX, target, after) < 0)
		return -ENAMETOOLONG;
	w->next = w->rest;
	return 0;
}

/* Resolve the component @comp, followed by @end in w->rest ("" for the last, or "/..."; a
 * component followed by a slash must be a directory, as for the kernel). 0 or -errno. */
static int walk_component(struct walk *w, const char *comp, const char *end)
{
	size_t clen = strlen(comp);
	struct stat st;

	if (strcmp(comp, "..") == 0) {
		drop_last(w->res, &w->len);
		return walk_into(w, "..");
	}
	if (w->len + 1 + clen >= PATH_MAX)
		return -ENAMETOOLONG;
	w->res[w->len++] = '/';
	memcpy(w->res + w->len, comp, clen + 1);
	w->len += clen;
	/* Checked before the lookup below: that lookup is what would enter the mount. */
	if (walk_avoided(w))
		return -EPERM;
	if (fstatat(w->dfd, comp, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if (S_ISLNK(st.st_mode))
		return walk_link(w, comp, *end ? end + 1 : "");
	if (!*end)
		return 0; /* the last component: it may be anything */
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	return walk_into(w, comp);
}

/*
 * Resolve @path into w->res. Every lookup is relative to the descriptor of the directory
 * reached so far (fstatat, readlinkat, openat following no symlink), so no name already checked
 * is walked again: a directory swapped for a symlink into the mount point meanwhile is never
 * followed. 0 or -errno (-EPERM: w->bad lies in w->avoid).
 */
static int resolve(struct walk *w, const char *path)
{
	char comp[NAME_MAX + 1];
	int r = walk_start(w, path);

	while (r == 0 && *w->next) {
		char *p = w->next, *end;
		size_t clen;

		while (*p == '/')
			p++;
		end = strchrnul(p, '/');
		clen = (size_t)(end - p);
		w->next = end;
		if (clen == 0 || (clen == 1 && p[0] == '.'))
			continue;
		if (clen > NAME_MAX) {
			r = -ENAMETOOLONG;
			break;
		}
		memcpy(comp, p, clen);
		comp[clen] = '\0';
		r = walk_component(w, comp, end);
	}
	if (w->dfd >= 0)
		close(w->dfd);
	if (r == 0 && w->len == 0)
		strcpy(w->res, "/");
	return r;
}

int qcow2_path_open_canonical(const char *path, int flags)
{
	struct open_how how = {.flags = (uint64_t)(flags | O_NOFOLLOW | O_CLOEXEC),
			       .resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS};
	char proc[64], real[PATH_MAX];
	ssize_t n;
	long fd;

	/* openat2() refuses a symlink anywhere on the path (ELOOP), and canonical paths have no
	 * "..": the file reached is the one at @path. */
	fd = syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof(how));
	if (fd >= 0 || (errno != ENOSYS && errno != EPERM))
		return fd < 0 ? -errno : (int)fd;
	/* No openat2() (Linux < 5.6): open without following the last component, then read back
	 * from /proc the path the descriptor has, which must be @path itself. */
	fd = open(path, flags | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", (int)fd);
	n = readlink(proc, real, sizeof(real) - 1);
	if (n < 0 || (size_t)n != strlen(path) || memcmp(real, path, (size_t)n) != 0) {
		close((int)fd);
		return -ELOOP;
	}
	return (int)fd;
}

int qcow2_path_stat(const char *path, struct stat *st)
{
	int fd = qcow2_path_open_canonical(path, O_PATH), r = 0;

	if (fd < 0) {
		errno = -fd;
		return fd;
	}
	if (fstat(fd, st) < 0)
		r = -errno;
	else if (S_ISLNK(st->st_mode)) /* O_PATH | O_NOFOLLOW opens a final symlink itself */
		r = -ELOOP;
	close(fd);
	if (r < 0)
		errno = -r;
	return r;
}

int qcow2_path_resolve(const char *path, const char *avoid, char *out, size_t cap)
{
	return qcow2_path_resolve_avoiding(path, avoid, NULL, out, cap);
}

int qcow2_path_resolve_avoiding(const char *path, const char *avoid,
				const struct qcow2_path_avoid *more, char *out, size_t cap)
{
	struct walk *w = calloc(1, sizeof(*w));
	int r;

	if (!w)
		return qcow2_oom();
	w->avoid = avoid;
	w->more = more;
	r = resolve(w, path);
	if (r == -EPERM && w->bad && avoid && avoid[0] && qcow2_path_below(w->bad, avoid))
		r = qcow2_set_error(-EPERM, "'%s' leads into the mount point '%s' (as '%s')", path,
				    avoid, w->bad);
	else if (r == -EPERM && w->bad)
		r = qcow2_set_error(-EPERM,
				    "'%s' leads into '%s', a FUSE file system mounted below the "
				    "source: not looked into (its daemon may hang, or be this one)",
				    path, w->bad);
	else if (r < 0)
		r = qcow2_set_error(r, "cannot open '%s': %s", path, strerror(-r));
	else if (strlen(w->res) >= cap)
		r = qcow2_set_error(-ENAMETOOLONG, "'%s': path too long", path);
	else
		strcpy(out, w->res);
	free(w);
	return r;
}

/* ---- confinement: the files a chain, a repair, a scan or a create may open ---- */

/* Is the canonical @path below @o's root or one of its allowed directories? The directories
 * are resolved the same careful way (an allowed directory reached through the mount point
 * allows nothing). */
static bool path_allowed(const struct qcow2_chain_opts *o, const char *path)
{
	char canon[PATH_MAX];
	size_t i;

	if (!o || !o->root)
		return true;
	if (qcow2_path_resolve_avoiding(o->root, o->mount_point, &o->avoid, canon, sizeof(canon)) ==
		0 &&
	    qcow2_path_below(path, canon))
		return true;
	for (i = 0; i < o->n_allow_dirs; i++)
		if (qcow2_path_resolve_avoiding(o->allow_dirs[i], o->mount_point, &o->avoid, canon,
						sizeof(canon)) == 0 &&
		    qcow2_path_below(path, canon))
			return true;
	return false;
}

int qcow2_chain_resolve_top(const struct qcow2_chain_opts *o, const char *path, char *out,
			    size_t cap)
{
	char canon[PATH_MAX];
	int r;

	r = qcow2_path_resolve_avoiding(path, o ? o->mount_point : NULL, o ? &o->avoid : NULL,
					canon, sizeof(canon));
	if (r < 0)
		return r;
	if (!path_allowed(o, canon))
		return qcow2_set_error(-EPERM,
				       "'%s' is '%s', which lies outside the source directory "
				       "(allow it with --backing-dir)",
				       path, canon);
	if (strlen(canon) >= cap)
		return qcow2_set_error(-ENAMETOOLONG, "'%s': path too long", path);
	strcpy(out, canon);
	return 0;
}

int qcow2_chain_resolve_path(const struct qcow2_chain_opts *o, const char *image_path,
			     const char *name, char *out, size_t cap)
{
	char joined[PATH_MAX], dir[PATH_MAX], canon[PATH_MAX];
	int r;

	if (name[0] == '/') {
		if (snprintf(joined, sizeof(joined), "%s", name) >= (int)sizeof(joined))
			return qcow2_set_error(-ENAMETOOLONG, "backing name too long");
	} else {
		snprintf(dir, sizeof(dir), "%s", image_path);
		if (snprintf(joined, sizeof(joined), "%s/%s", dirname(dir), name) >=
		    (int)sizeof(joined))
			return qcow2_set_error(-ENAMETOOLONG, "backing name too long");
	}
	r = qcow2_path_resolve_avoiding(joined, o ? o->mount_point : NULL, o ? &o->avoid : NULL,
					canon, sizeof(canon));
	if (r == -EPERM) /* the message says where it leads */
		return qcow2_set_error(-EPERM, "'%s' names '%s': %s", image_path, joined,
				       qcow2_last_error());
	if (r < 0)
		return qcow2_set_error(r, "cannot open '%s' (named by '%s'): %s", joined,
				       image_path, strerror(-r));
	if (!path_allowed(o, canon))
		return qcow2_set_error(-EPERM,
				       "'%s' names '%s', which lies outside the source directory "
				       "(allow it with --backing-dir)",
				       image_path, canon);
	if (strlen(canon) >= cap)
		return qcow2_set_error(-ENAMETOOLONG, "path too long");
	strcpy(out, canon);
	return 0;
}
