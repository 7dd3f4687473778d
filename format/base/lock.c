/* SPDX-License-Identifier: MIT */
/*
 * lock.c - QEMU-compatible image locking.
 *
 * QEMU (block/file-posix.c) takes open file description (OFD) read locks on single bytes of
 * the image file: byte 100 + n while it holds permission bit n, and byte 200 + n while it does
 * not share permission bit n with others. A new user first tests for conflicts: a permission it
 * wants conflicts with someone's "not shared" byte, and a permission it does not share conflicts
 * with someone's "held" byte. We do exactly that, so QEMU and we see each other.
 * Locks live as long as the io's file descriptor; closing the io drops them.
 *
 * Locks: no library lock; the OFD locks on the file itself (above), taken and tested here.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base.h"

#define LOCK_PERM_BASE	 100
#define LOCK_SHARED_BASE 200

static const char *const perm_names[] = {"consistent read", "write", "write unchanged", "resize"};

static int lock_byte(int fd, int cmd, short type, off_t byte, struct flock *fl)
{
	memset(fl, 0, sizeof(*fl));
	fl->l_whence = SEEK_SET;
	fl->l_start = byte;
	fl->l_len = 1;
	fl->l_type = type;
	while (fcntl(fd, cmd, fl) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	return 0;
}

/* Name a process that has the file open as @fd: "pid N (comm)"; ours too when another of
 * its descriptors has it (a daemon's own other open file description holds locks of its own:
 * "another process" would not be true). Links in
 * /proc are read, never followed: following one into a FUSE mount served by this very process
 * would wait on ourselves. The file's own name comes from our descriptor's link too, not from
 * resolving a path again. */
static void find_holder(int fd, char *out, size_t cap)
{
	char want[PATH_MAX], self[64];
	struct dirent *p;
	ssize_t len;
	DIR *proc;
	int pass;

	snprintf(out, cap, "another process");
	snprintf(self, sizeof(self), "/proc/self/fd/%d", fd);
	len = fd >= 0 ? readlink(self, want, sizeof(want) - 1) : -1;
	if (len <= 0)
		return;
	want[len] = '\0';
	/* other processes first; ours only when none of them has the file */
	for (pass = 0; pass < 2; pass++) {
		if (!(proc = opendir("/proc")))
			return;
		while ((p = readdir(proc))) {
			char path[300], comm[64] = "?";
			bool found = false, ours = atoi(p->d_name) == getpid();
			struct dirent *f;
			DIR *fds;

			if (p->d_name[0] < '0' || p->d_name[0] > '9' || ours != (pass == 1))
				continue;
			snprintf(path, sizeof(path), "/proc/%s/fd", p->d_name);
			if (!(fds = opendir(path)))
				continue;
			while (!found && (f = readdir(fds))) {
				char link[600], target[PATH_MAX];
				ssize_t n;

				if (ours && (f->d_name[0] == '.' || atoi(f->d_name) == fd))
					continue; /* @fd itself */
				snprintf(link, sizeof(link), "%s/%s", path, f->d_name);
				n = readlink(link, target, sizeof(target) - 1);
				if (n > 0) {
					target[n] = '\0';
					found = strcmp(target, want) == 0;
				}
			}
			closedir(fds);
			if (!found)
				continue;
			snprintf(path, sizeof(path), "/proc/%s/comm", p->d_name);
			FILE *cf = fopen(path, "r");
			if (cf) {
				if (fgets(comm, sizeof(comm), cf))
					comm[strcspn(comm, "\n")] = '\0';
				fclose(cf);
			}
			snprintf(out, cap, "pid %d (%.60s)", atoi(p->d_name), comm);
			closedir(proc);
			return;
		}
		closedir(proc);
	}
}

static int conflict(struct qcow2_io *io, unsigned bit, bool they_hold)
{
	char holder[128];

	find_holder(qcow2_io_fd(io), holder, sizeof(holder));
	return qcow2_set_error(-EBUSY, "'%s' is in use: %s %s the \"%s\" permission",
			       qcow2_io_name(io), holder, they_hold ? "holds" : "does not share",
			       perm_names[bit]);
}

int qcow2_io_lock_check(struct qcow2_io *io, unsigned perm, unsigned shared)
{
	int fd = qcow2_io_fd(io);
	struct flock fl;
	unsigned bit;
	int r;

	if (fd < 0)
		return 0;
	for (bit = 0; bit < 4; bit++) {
		unsigned m = 1u << bit;

		if (perm & m) {
			r = lock_byte(fd, F_OFD_GETLK, F_WRLCK, LOCK_SHARED_BASE + bit, &fl);
			if (r < 0)
				return qcow2_set_error(r, "'%s': cannot test locks: %s",
						       qcow2_io_name(io), strerror(-r));
			if (fl.l_type != F_UNLCK)
				return conflict(io, bit, false);
		}
		if (!(shared & m)) {
			r = lock_byte(fd, F_OFD_GETLK, F_WRLCK, LOCK_PERM_BASE + bit, &fl);
			if (r < 0)
				return qcow2_set_error(r, "'%s': cannot test locks: %s",
						       qcow2_io_name(io), strerror(-r));
			if (fl.l_type != F_UNLCK)
				return conflict(io, bit, true);
		}
	}
	return 0;
}

int qcow2_io_lock(struct qcow2_io *io, unsigned perm, unsigned shared)
{
	int fd = qcow2_io_fd(io);
	struct flock fl;
	unsigned bit;
	int r;

	r = qcow2_io_lock_check(io, perm, shared);
	if (r < 0 || fd < 0)
		return r;
	for (bit = 0; bit < 4; bit++) {
		unsigned m = 1u << bit;

		if (perm & m) {
			r = lock_byte(fd, F_OFD_SETLK, F_RDLCK, LOCK_PERM_BASE + bit, &fl);
			if (r < 0)
				goto fail;
		}
		if (!(shared & m)) {
			r = lock_byte(fd, F_OFD_SETLK, F_RDLCK, LOCK_SHARED_BASE + bit, &fl);
			if (r < 0)
				goto fail;
		}
	}
	return 0;
fail:
	if (r == -EAGAIN || r == -EACCES)
		return conflict(io, bit, true);
	return qcow2_set_error(r, "'%s': cannot lock: %s", qcow2_io_name(io), strerror(-r));
}

int qcow2_io_unlock(struct qcow2_io *io, unsigned perm)
{
	int fd = qcow2_io_fd(io);
	struct flock fl;
	unsigned bit;
	int r;

	if (fd < 0)
		return 0;
	for (bit = 0; bit < 4; bit++) {
		if (!(perm & (1u << bit)))
			continue;
		r = lock_byte(fd, F_OFD_SETLK, F_UNLCK, LOCK_PERM_BASE + bit, &fl);
		if (r < 0)
			return qcow2_set_error(r, "'%s': cannot unlock: %s", qcow2_io_name(io),
					       strerror(-r));
	}
	return 0;
}

/* Give back the "not shared" bytes of @bits on @io. */
static int unlock_unshared(struct qcow2_io *io, unsigned bits)
{
	int fd = qcow2_io_fd(io);
	struct flock fl;
	unsigned bit;
	int r;

	for (bit = 0; fd >= 0 && bit < 4; bit++) {
		if (!(bits & (1u << bit)))
			continue;
		r = lock_byte(fd, F_OFD_SETLK, F_UNLCK, LOCK_SHARED_BASE + bit, &fl);
		if (r < 0)
			return qcow2_set_error(r, "'%s': cannot unlock: %s", qcow2_io_name(io),
					       strerror(-r));
	}
	return 0;
}

/*
 * The order: @from stops refusing to share write and resize (it still holds them, so anyone
 * who does not share them still fails); @to takes the permissions, sharing everything (no one
 * refuses to share them now but a holder that shares them anyway); @from gives its
 * permissions back; @to then refuses to share write and resize, as a writer does.
 */
int qcow2_io_lock_move_writer(struct qcow2_io *from, struct qcow2_io *to)
{
	unsigned unshared = QCOW2_PERM_ALL & ~QCOW2_WRITER_SHARED;
	int r = unlock_unshared(from, unshared);

	if (r == 0 && (r = qcow2_io_lock(to, QCOW2_WRITER_PERMS, QCOW2_PERM_ALL)) < 0) {
		qcow2_io_lock(from, 0, QCOW2_WRITER_SHARED); /* as it was */
		return r;
	}
	if (r == 0)
		r = qcow2_io_unlock(from, QCOW2_WRITER_PERMS);
	if (r == 0)
		r = qcow2_io_lock(to, 0, QCOW2_WRITER_SHARED);
	return r;
}
