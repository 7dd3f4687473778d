/* SPDX-License-Identifier: MIT */
/*
 * mounts.c - the FUSE file systems mounted below the directories a caller works in, which it
 * never looks into.
 *
 * A lookup on a FUSE file system is a request to its daemon. That daemon may be the caller
 * (qcowfs's mount point bound into its SOURCE, `mount --bind MNT SRC/sub`: the request would
 * wait for the tree lock its sender holds, and the whole mount would hang for good), another
 * qcowfs serving that mount (the same, through two daemons), or a daemon that hangs (stopped,
 * or waiting on a dead server): qcowfs holds its tree lock across every lookup of SOURCE's
 * files, so one such lookup would stop every request of the mount, and a qcowctl scan would
 * never end. So no path at or below a FUSE mount point is looked up, unless the mount is on the
 * way to one of the caller's directories (SOURCE or a --backing-dir that lies on a FUSE file
 * system: the operator chose it). The check is on canonical paths, before any lookup
 * (qcow2_path_resolve_avoiding() for names; the callers for directory entries and canonical
 * paths), as for qcowfs's own mount point.
 *
 * The FUSE mount points come from /proc/self/mountinfo, read again whenever the mount table
 * changed: the kernel marks the open file with POLLPRI at every mount and unmount, which a poll
 * that does not wait sees, so a check costs a poll() until the table changes. A mount made
 * between that poll and the lookup it guards is not seen: the window is one lookup wide.
 *
 * Locking: m->lock guards the list and the file; it is a leaf, taken from any thread (in
 * qcowfs, with or without the tree lock).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/base.h"

struct qcow2_mounts {
	pthread_mutex_t lock;
	int fd;	     /* /proc/self/mountinfo, or -1: no FUSE mount is known */
	char **keep; /* canonical sources: FUSE mounts on their way are looked into */
	size_t nkeep;
	char **dirs; /* under lock: the FUSE mount points to avoid */
	size_t ndirs;
	bool fresh;   /* under lock: dirs were read since the last change of the table */
	uint64_t gen; /* under lock: changes of the table seen (qcow2_mounts_generation()) */
	uint64_t sig; /* under lock: a hash of the lines that concern the sources */
};

/* Undo mountinfo's octal escapes (\040 for a space...) in place. */
static void unescape(char *s)
{
	char *o = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*o++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
}

static bool is_fuse(const char *fstype)
{
	return strcmp(fstype, "fuse") == 0 || strcmp(fstype, "fuseblk") == 0 ||
	       strncmp(fstype, "fuse.", 5) == 0;
}

/* Is the mount point @dir on the way to a source (at or above it)? */
static bool kept(const struct qcow2_mounts *m, const char *dir)
{
	size_t i, n = strlen(dir);

	for (i = 0; i < m->nkeep; i++) {
		const char *k = m->keep[i];

		if ((n == 1 && dir[0] == '/') ||
		    (strncmp(k, dir, n) == 0 && (k[n] == '/' || k[n] == '\0')))
			return true;
	}
	return false;
}

static void dirs_free(struct qcow2_mounts *m)
{
	size_t i;

	for (i = 0; i < m->ndirs; i++)
		free(m->dirs[i]);
	free(m->dirs);
	m->dirs = NULL;
	m->ndirs = 0;
}

/* One line of mountinfo: "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [TAGS...] - FSTYPE ...". */
static void parse_line(struct qcow2_mounts *m, char *line)
{
	char *f[5], *sep, *fstype, *end, **nd;
	int i;

	for (i = 0; i < 5; i++) {
		f[i] = strsep(&line, " ");
		if (!f[i] || !line)
			return;
	}
	sep = strstr(line, " - ");
	if (!sep)
		return;
	fstype = sep + 3;
	end = strchr(fstype, ' ');
	if (end)
		*end = '\0';
	if (!is_fuse(fstype))
		return;
	unescape(f[4]);
	if (kept(m, f[4]) || !(nd = realloc(m->dirs, (m->ndirs + 1) * sizeof(*nd))))
		return;
	m->dirs = nd;
	if ((m->dirs[m->ndirs] = strdup(f[4])))
		m->ndirs++;
}

static uint64_t line_hash(uint64_t h, const char *s)
{
	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ull;
	return (h ^ '\n') * 1099511628211ull;
}

/* Is the line's mount point at or above a source, or below one (a mount there, or a remount
 * of it read-only, changes what a source's paths are)? */
static bool concerns_sources(const struct qcow2_mounts *m, const char *line)
{
	char dir[PATH_MAX];
	const char *p = line;
	size_t i, n;

	for (i = 0; i < 4 && p; i++) {
		p = strchr(p, ' ');
		p = p ? p + 1 : NULL;
	}
	if (!p || !(n = strcspn(p, " ")) || n >= sizeof(dir))
		return true; /* unreadable: counted, to be safe */
	memcpy(dir, p, n);
	dir[n] = '\0';
	unescape(dir);
	if (kept(m, dir))
		return true;
	for (i = 0; i < m->nkeep; i++)
		if (qcow2_path_below(dir, m->keep[i]))
			return true;
	return false;
}

/* Read the table again (m->lock held). On failure every path is avoided but the sources'
 * own: a lookup refused is a file not shown, a lookup that hangs is a mount that hangs. */
static void reread(struct qcow2_mounts *m)
{
	size_t len = 0, cap = 65536;
	char *buf = malloc(cap), *line, *p;
	ssize_t got;

	uint64_t sig = 1469598103934665603ull;

	dirs_free(m);
	m->fresh = false;
	if (!buf || lseek(m->fd, 0, SEEK_SET) < 0)
		goto out;
	for (;;) {
		if (len + 1 >= cap) {
			char *nb = realloc(buf, cap * 2);
			if (!nb)
				goto out;
			buf = nb;
			cap *= 2;
		}
		got = read(m->fd, buf + len, cap - len - 1);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			goto out;
		if (got == 0)
			break;
		len += (size_t)got;
	}
	buf[len] = '\0';
	for (p = buf; (line = strsep(&p, "\n"));) {
		if (!*line)
			continue;
		if (concerns_sources(m, line))
			sig = line_hash(sig, line);
		parse_line(m, line);
	}
	m->fresh = true;
out:
	free(buf);
	/* Only the mounts that concern the sources count as a change (qcow2_mounts_generation()):
	 * other mounts come and go all the time on a busy host. */
	if (!m->fresh || sig != m->sig)
		m->gen++;
	m->sig = m->fresh ? sig : 0;
}

/* Read the table again if it changed since the last look (m->lock held). */
static void refresh(struct qcow2_mounts *m)
{
	struct pollfd pfd;

	pfd.fd = m->fd;
	pfd.events = POLLPRI;
	pfd.revents = 0;
	/* the kernel clears the event it reports: one poll sees each change once */
	if (!m->fresh || (poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLPRI | POLLERR))))
		reread(m);
}

bool qcow2_mounts_generation(struct qcow2_mounts *m, uint64_t *gen)
{
	bool known;

	if (!m || m->fd < 0)
		return false;
	pthread_mutex_lock(&m->lock);
	refresh(m);
	known = m->fresh; /* a table that could not be read says nothing of what changed */
	*gen = m->gen;
	pthread_mutex_unlock(&m->lock);
	return known;
}

bool qcow2_mounts_avoid(void *ctx, const char *path)
{
	struct qcow2_mounts *m = ctx;
	bool avoid;
	size_t i;

	if (!m || m->fd < 0)
		return false;
	pthread_mutex_lock(&m->lock);
	refresh(m);
	avoid = !m->fresh && !kept(m, path);
	for (i = 0; !avoid && i < m->ndirs; i++) {
		size_t n = strlen(m->dirs[i]);

		avoid = strncmp(path, m->dirs[i], n) == 0 && (path[n] == '/' || path[n] == '\0');
	}
	pthread_mutex_unlock(&m->lock);
	return avoid;
}

int qcow2_mounts_new(const char *const *sources, size_t n, struct qcow2_mounts **out)
{
	struct qcow2_mounts *m = calloc(1, sizeof(*m));
	size_t i;

	if (!m || !(m->keep = calloc(n ? n : 1, sizeof(*m->keep)))) {
		free(m);
		return qcow2_oom();
	}
	pthread_mutex_init(&m->lock, NULL);
	for (i = 0; i < n; i++) {
		char canon[PATH_MAX];

		if (realpath(sources[i], canon) && (m->keep[m->nkeep] = strdup(canon)))
			m->nkeep++;
	}
	/* without /proc no FUSE mount is known: the mount point alone is avoided, as before */
	m->fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
	if (m->fd >= 0) {
		pthread_mutex_lock(&m->lock);
		reread(m);
		pthread_mutex_unlock(&m->lock);
	}
	*out = m;
	return 0;
}

void qcow2_mounts_free(struct qcow2_mounts *m)
{
	size_t i;

	if (!m)
		return;
	dirs_free(m);
	for (i = 0; i < m->nkeep; i++)
		free(m->keep[i]);
	free(m->keep);
	if (m->fd >= 0)
		close(m->fd);
	pthread_mutex_destroy(&m->lock);
	free(m);
}
