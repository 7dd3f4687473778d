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
 * to avoid is exact. No state: safe from any thread.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
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
static int splice(char *rest, size_t cap, const char *target, const char *after)
{
	char tmp[PATH_MAX];

	if (snprintf(tmp, sizeof(tmp), "%s/%s", target, after) >= (int)sizeof(tmp) ||
	    strlen(tmp) >= cap)
		return -ENAMETOOLONG;
	strcpy(rest, tmp);
	return 0;
}

/* Resolve with no message: 0 or -errno; *@bad gets the prefix refused for @avoid. */
static int resolve(const char *path, const char *avoid, char *res, char *rest, const char **bad)
{
	char target[PATH_MAX];
	size_t len = 0;
	unsigned hops = 0;
	struct stat st;
	char *p;

	res[0] = '\0';
	if (path[0] != '/') {
		if (!getcwd(res, PATH_MAX))
			return -errno;
		len = strcmp(res, "/") == 0 ? 0 : strlen(res);
		res[len] = '\0';
		if (avoid && avoid[0] && qcow2_path_below(len ? res : "/", avoid)) {
			*bad = len ? res : "/";
			return -EPERM;
		}
	}
	if (strlen(path) >= PATH_MAX)
		return -ENAMETOOLONG;
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
		if (clen == 2 && p[0] == '.' && p[1] == '.') {
			drop_last(res, &len);
			p = end;
			continue;
		}
		if (len + 1 + clen >= PATH_MAX)
			return -ENAMETOOLONG;
		res[len++] = '/';
		memcpy(res + len, p, clen);
		len += clen;
		res[len] = '\0';
		/* Checked before the lstat() below: that lstat is what would enter the mount. */
		if (avoid && avoid[0] && qcow2_path_below(res, avoid)) {
			*bad = res;
			return -EPERM;
		}
		if (lstat(res, &st) < 0)
			return -errno;
		if (S_ISLNK(st.st_mode)) {
			ssize_t n;

			if (++hops > MAX_LINK_HOPS)
				return -ELOOP;
			n = readlink(res, target, sizeof(target) - 1);
			if (n < 0)
				return -errno;
			target[n] = '\0';
			drop_last(res, &len);
			if (target[0] == '/')
				len = 0, res[0] = '\0';
			if (splice(rest, PATH_MAX, target, *end ? end + 1 : "") < 0)
				return -ENAMETOOLONG;
			p = rest;
			continue;
		}
		if (*end && !S_ISDIR(st.st_mode)) {
			/* more components follow: this one must be a directory */
			while (*end == '/')
				end++;
			if (*end)
				return -ENOTDIR;
		}
		p = end;
	}
	if (len == 0)
		strcpy(res, "/");
	return 0;
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
