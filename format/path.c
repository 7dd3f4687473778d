/* SPDX-License-Identifier: MIT */
/*
 * path.c - resolving file names without ever looking inside a forbidden directory.
 *
 * qcow2_path_resolve() is realpath(3) done one component at a time: each prefix is compared
 * with the directory to avoid (the daemon's own mount point) before anything is asked of the
 * file system about it, and a symlink's target is spliced into what remains and checked the
 * same way. A lookup inside the daemon's mount would be a request to the daemon itself, which
 * may be waiting for this very thread: it must never be made (SPEC 3a). The prefix resolved so
 * far is always canonical (no symlink, "." or ".."), so ".." is folded by dropping its last
 * component, as the kernel would, and a plain string comparison with the canonical directory
 * to avoid is exact. Each lookup is made relative to the directory reached so far, never by
 * walking a name again, so a directory swapped for a symlink meanwhile cannot lead elsewhere.
 *
 * A path so resolved is then used with qcow2_path_open_canonical() and qcow2_path_stat(),
 * which follow no symlink at all (openat2 RESOLVE_NO_SYMLINKS): a walk of a canonical name
 * that follows no symlink can reach the daemon's mount only through the mount point itself,
 * which the name does not contain. No state: safe from any thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

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

	if (snprintf(tmp, sizeof(tmp), "%s/%s", target, after) >= (int)sizeof(tmp) ||
	    strlen(tmp) >= cap)
		return -ENAMETOOLONG;
	strcpy(rest, tmp);
	return 0;
}

/* Start the walk of @path: *@dfd the directory it starts from (the root, or the working
 * directory, whose canonical name goes to @res and *@len). 0 or -errno. */
static int walk_start(const char *path, const char *avoid, char *res, size_t *len, int *dfd,
		      const char **bad)
{
	*len = 0;
	res[0] = '\0';
	if (path[0] != '/') {
		if (!getcwd(res, PATH_MAX))
			return -errno;
		*len = strcmp(res, "/") == 0 ? 0 : strlen(res);
		res[*len] = '\0';
		if (avoid && avoid[0] && qcow2_path_below(*len ? res : "/", avoid)) {
			*bad = *len ? res : "/";
			return -EPERM;
		}
	}
	*dfd = open(path[0] == '/' ? "/" : ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
	return *dfd < 0 ? -errno : 0;
}

/* Step from the directory *@dfd into its entry @name (a directory): *@dfd follows. */
static int step_into(int *dfd, const char *name)
{
	int fd = openat(*dfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	close(*dfd);
	*dfd = fd;
	return 0;
}

/*
 * Resolve with no message: 0 or -errno; *@bad gets the prefix refused for @avoid. Every lookup
 * is relative to the descriptor of the directory reached so far (fstatat, readlinkat, openat
 * with no symlink followed), so no name already checked is walked again: a directory swapped
 * for a symlink into the mount point meanwhile is never followed.
 */
static int resolve(const char *path, const char *avoid, char *res, char *rest, const char **bad)
{
	char target[PATH_MAX], comp[NAME_MAX + 1];
	unsigned hops = 0;
	struct stat st;
	size_t len;
	int dfd = -1, r;
	char *p;

	if (strlen(path) >= PATH_MAX)
		return -ENAMETOOLONG;
	r = walk_start(path, avoid, res, &len, &dfd, bad);
	if (r < 0)
		return r;
	strcpy(rest, path);
	p = rest;
	while (*p) {
		char *end;
		size_t clen;

		while (*p == '/')
			p++;
		if (!*p)
			break;
		end = strchrnul(p, '/');
		clen = (size_t)(end - p);
		if (clen == 1 && p[0] == '.') {
			p = end;
			continue;
		}
		if (clen > NAME_MAX) {
			r = -ENAMETOOLONG;
			break;
		}
		memcpy(comp, p, clen);
		comp[clen] = '\0';
		if (clen == 2 && p[0] == '.' && p[1] == '.') {
			drop_last(res, &len);
			if ((r = step_into(&dfd, "..")) < 0)
				break;
			p = end;
			continue;
		}
		if (len + 1 + clen >= PATH_MAX) {
			r = -ENAMETOOLONG;
			break;
		}
		res[len++] = '/';
		memcpy(res + len, comp, clen + 1);
		len += clen;
		/* Checked before the lookup below: that lookup is what would enter the mount. */
		if (avoid && avoid[0] && qcow2_path_below(res, avoid)) {
			*bad = res;
			r = -EPERM;
			break;
		}
		if (fstatat(dfd, comp, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			r = -errno;
			break;
		}
		if (S_ISLNK(st.st_mode)) {
			ssize_t n;

			if (++hops > MAX_LINK_HOPS) {
				r = -ELOOP;
				break;
			}
			n = readlinkat(dfd, comp, target, sizeof(target) - 1);
			if (n < 0) {
				r = -errno;
				break;
			}
			target[n] = '\0';
			drop_last(res, &len);
			if (target[0] == '/') {
				len = 0;
				res[0] = '\0';
				close(dfd);
				if ((dfd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0) {
					r = -errno;
					break;
				}
			}
			if (splice_link(rest, PATH_MAX, target, *end ? end + 1 : "") < 0) {
				r = -ENAMETOOLONG;
				break;
			}
			p = rest;
			continue;
		}
		while (*end == '/')
			end++;
		if (*end) { /* more components follow: this one must be a directory */
			if (!S_ISDIR(st.st_mode)) {
				r = -ENOTDIR;
				break;
			}
			if ((r = step_into(&dfd, comp)) < 0)
				break;
		}
		p = end;
	}
	if (dfd >= 0)
		close(dfd);
	if (r == 0 && len == 0)
		strcpy(res, "/");
	return r;
}

int qcow2_path_open_canonical(const char *path, int flags)
{
	struct open_how how = {.flags = (uint64_t)flags,
			       .resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS};
	long fd;

	fd = syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof(how));
	if (fd >= 0 || (errno != ENOSYS && errno != EPERM))
		return fd < 0 ? -errno : (int)fd;
	/* no openat2() here: the last component at least is not followed */
	fd = open(path, flags | O_NOFOLLOW);
	return fd < 0 ? -errno : (int)fd;
}

int qcow2_path_stat(const char *path, struct stat *st)
{
	int fd = qcow2_path_open_canonical(path, O_PATH | O_CLOEXEC), r = 0;

	if (fd < 0) {
		errno = -fd;
		return fd;
	}
	if (fstat(fd, st) < 0)
		r = -errno;
	close(fd);
	if (r < 0)
		errno = -r;
	return r;
}

int qcow2_path_resolve(const char *path, const char *avoid, char *out, size_t cap)
{
	char res[PATH_MAX], rest[PATH_MAX];
	const char *bad = NULL;
	int r;

	r = resolve(path, avoid, res, rest, &bad);
	if (r == -EPERM && bad)
		return qcow2_set_error(-EPERM, "'%s' leads into the mount point '%s' (as '%s')",
				       path, avoid, bad);
	if (r < 0)
		return qcow2_set_error(r, "cannot open '%s': %s", path, strerror(-r));
	if (strlen(res) >= cap)
		return qcow2_set_error(-ENAMETOOLONG, "'%s': path too long", path);
	strcpy(out, res);
	return 0;
}
