/* SPDX-License-Identifier: MIT */
/*
 * journal.c - the small files that let a job killed half way be completed by running it again
 * (commit.c's layers taken out of a chain, snapshot-resume.c's deleted snapshot).
 *
 * A journal is a hidden file next to the image it is about, ".IMAGE.qcowctl-JOB", holding a
 * few lines of text the job wrote before its point of no return and removes after its last
 * step. Its presence is the evidence that the job was interrupted in between.
 *
 * Write order: a journal is written whole to ".IMAGE.qcowctl-JOB.tmp" and fsynced, renamed
 * over the journal, then the directory is fsynced; so after a crash the journal is either
 * absent, the old one or the new one, never a part. Removal unlinks it, then fsyncs the
 * directory, so a job that reports success leaves no journal behind a crash either.
 *
 * No locks: the caller holds the image's write lock, which keeps a second job off the
 * image and so off its journal.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base.h"

#define JOURNAL_MAX_BYTES 65536

int qcow2_journal_path(const char *image, const char *job, char *out, size_t cap)
{
	char d[PATH_MAX], b[PATH_MAX];
	int n;

	if (strlen(image) >= sizeof(d))
		return qcow2_set_error(-ENAMETOOLONG, "'%s': path too long", image);
	snprintf(d, sizeof(d), "%s", image);
	snprintf(b, sizeof(b), "%s", image);
	n = snprintf(out, cap, "%s/.%s.qcowctl-%s", dirname(d), basename(b), job);
	if (n < 0 || (size_t)n >= cap)
		return qcow2_set_error(-ENAMETOOLONG, "'%s': path too long", image);
	return 0;
}

int qcow2_sync_dir(const char *path)
{
	char d[PATH_MAX];
	int fd, r = 0;

	snprintf(d, sizeof(d), "%s", path);
	fd = open(dirname(d), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0)
		r = qcow2_set_error(-errno, "cannot sync the directory of '%s'", path);
	if (fd >= 0)
		close(fd);
	return r;
}

/* Write all of @len bytes of @buf to @fd. */
static int write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

int qcow2_journal_write(const char *path, const char *text)
{
	char tmp[PATH_MAX];
	int fd, r;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return qcow2_set_error(-ENAMETOOLONG, "'%s': path too long", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return qcow2_set_error(-errno, "cannot write '%s': %s", tmp, strerror(errno));
	r = write_all(fd, text, strlen(text));
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0) {
		r = qcow2_set_error(r, "cannot write '%s': %s", path, strerror(-r));
		unlink(tmp);
		return r;
	}
	return qcow2_sync_dir(path);
}

int qcow2_journal_read(const char *path, char **text)
{
	struct stat st;
	char *buf;
	ssize_t n;
	size_t len = 0;
	int fd;

	*text = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0 && errno == ENOENT)
		return 0;
	if (fd < 0)
		return qcow2_set_error(-errno, "cannot read '%s': %s", path, strerror(errno));
	/* A regular file only: a FIFO or device put in its place must not block or feed us. */
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return qcow2_set_error(-EINVAL, "'%s' is not a regular file", path);
	}
	buf = malloc(JOURNAL_MAX_BYTES + 1);
	if (!buf) {
		close(fd);
		return qcow2_oom();
	}
	while (len < JOURNAL_MAX_BYTES) {
		n = read(fd, buf + len, JOURNAL_MAX_BYTES - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			n = -errno;
			close(fd);
			free(buf);
			return qcow2_set_error((int)n, "cannot read '%s': %s", path,
					       strerror((int)-n));
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	buf[len] = 0;
	*text = buf;
	return 1;
}

int qcow2_journal_remove(const char *path)
{
	if (unlink(path) < 0) {
		if (errno == ENOENT)
			return 0;
		return qcow2_set_error(-errno, "cannot remove '%s': %s", path, strerror(errno));
	}
	return qcow2_sync_dir(path);
}
