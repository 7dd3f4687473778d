/* SPDX-License-Identifier: MIT */
/*
 * jobs_fault.h - failure injection for the block job suites (jobs_harness.h): a crash, a
 * single failure or a power loss at the Nth write, flush or system call of a job.
 *
 * A job's steps reach the disk through file ios (writes, flushes: the library's test hook
 * qcow2_io_fail_files()) and through a few plain system calls outside the io layer (fsync,
 * rename, linkat, unlink of journals, copies and dropped layers, and fallocate for hole
 * punches). Those system calls are wrapped here: this file defines them,
 * so the test executable's own definitions take the place of the C library's for the
 * library linked into it, and they call the real ones through dlsym(RTLD_NEXT) unless armed.
 * pwrite, ftruncate, fdatasync and fsync are wrapped too, to log what a power loss undoes.
 *
 * Header-only, included once per test executable (it defines the wrapped system calls).
 */
#ifndef JOBS_FAULT_H
#define JOBS_FAULT_H

#include <criterion/criterion.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qcow2.h"

#define JH static __attribute__((unused))

/* The test directory, and another for what the tests keep aside (stashed names, files for
 * qemu-img). */
static char jh_dir[64], jh_aux[64];

/* ---- failure injection ---- */

enum jh_kind {
	JH_WRITE,  /* a write of a file io (pwrite, size change, hole punch) */
	JH_FLUSH,  /* a flush of a file io */
	JH_FSYNC,  /* fsync(2) outside the io layer: journals, directories, new images */
	JH_RENAME, /* rename(2), linkat(2): a file gets its name */
	JH_UNLINK, /* unlink(2): journals, dropped layers, failed copies */
	JH_FALLOC, /* fallocate(2): hole punches (raw destinations, the io layer's punch) */
	JH_KINDS
};

static const char *const jh_kind_names[JH_KINDS] = {"write",  "flush",	"fsync",
						    "rename", "unlink", "fallocate"};

static struct {
	bool armed;
	enum jh_kind kind;
	unsigned nth;
	bool sticky;
	unsigned seen[JH_KINDS]; /* the system call kinds (the io kinds: the library's hook) */
	bool crashed;		 /* a sticky failure of a system call happened */
	bool fired;		 /* a system call failed */
	bool power;		 /* the crash is a power loss: see jh_power_loss() */
} jh_fault;

/* How the armed event fails. */
enum jh_mode {
	JH_ONCE,  /* it fails, the job goes on */
	JH_CRASH, /* it and everything after fail: the process was killed there */
	JH_POWER, /* a crash, and what was not made durable is lost too (jh_power_loss()) */
};

static const char *const jh_mode_names[] = {"failure", "crash", "power loss"};

JH unsigned jh_seen(enum jh_kind k)
{
	if (k == JH_WRITE)
		return qcow2_io_fail_files_seen(QCOW2_IO_WRITE);
	if (k == JH_FLUSH)
		return qcow2_io_fail_files_seen(QCOW2_IO_FLUSH);
	return jh_fault.seen[k];
}

/* Has the armed failure happened? */
JH bool jh_fired(void)
{
	if (jh_fault.kind == JH_WRITE || jh_fault.kind == JH_FLUSH)
		return jh_seen(jh_fault.kind) >= jh_fault.nth;
	return jh_fault.fired;
}

/* Fail the @nth event of kind @k as @mode says; @nth UINT_MAX: count only. */
JH void jh_arm(enum jh_kind k, unsigned nth, enum jh_mode mode)
{
	bool sticky = mode != JH_ONCE;

	memset(&jh_fault, 0, sizeof(jh_fault));
	jh_fault.kind = k;
	jh_fault.nth = nth;
	jh_fault.sticky = sticky;
	jh_fault.power = mode == JH_POWER;
	/* armed with UINT_MAX, the hook counts both kinds (and fails after a crash) */
	qcow2_io_fail_files(QCOW2_IO_WRITE, k == JH_WRITE ? nth : UINT_MAX, -EIO, sticky);
	qcow2_io_fail_files(QCOW2_IO_FLUSH, k == JH_FLUSH ? nth : UINT_MAX, -EIO, sticky);
	jh_fault.armed = true;
}

JH void jh_disarm(void)
{
	jh_fault.armed = false;
	jh_fault.power = false;
	qcow2_io_fail_files(QCOW2_IO_WRITE, 0, 0, false);
	qcow2_io_fail_files(QCOW2_IO_FLUSH, 0, 0, false);
}

/* Count a system call of kind @k: true if it must fail. */
static bool jh_sys_fails(enum jh_kind k)
{
	bool fail = false;

	if (!jh_fault.armed)
		return false;
	jh_fault.seen[k]++;
	if (jh_fault.crashed || (jh_fault.sticky && jh_fired())) {
		fail = true;
	} else if (k == jh_fault.kind && jh_fault.seen[k] == jh_fault.nth) {
		fail = jh_fault.fired = true;
		if (jh_fault.sticky) {
			/* the crash: every later write and flush of the io layer fails too */
			jh_fault.crashed = true;
			qcow2_io_fail_files(QCOW2_IO_WRITE, 1, -EIO, true);
			qcow2_io_fail_files(QCOW2_IO_FLUSH, 1, -EIO, true);
		}
	}
	if (fail)
		errno = EIO;
	return fail;
}

#define JH_REAL(name, type) ((type)dlsym(RTLD_NEXT, name))

/* ---- power loss ----
 * Armed with JH_POWER, every change to a regular file made since that file was last fsynced
 * or fdatasynced is logged with the bytes (and the size) it replaces; jh_power_loss() then
 * undoes them all, newest first: the files as the disk had them at their last flush, one of
 * the states a power loss may leave; renames, links and unlinks since the directory was last
 * fsynced are undone too (below). The journal's write(2) is not logged: it is fsynced before
 * its rename. */

struct jh_undo {
	dev_t dev;
	ino_t ino;
	off64_t off;
	size_t n;	  /* bytes of @old */
	uint8_t *old;	  /* what [off, off + n) held */
	off64_t old_size; /* the file's size before */
};

static struct {
	pthread_mutex_t lock;
	struct jh_undo *v;
	size_t n, cap;
} jh_undo_log = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* Log that [@off, @off + @n) of the file @fd is about to change (@n 0: only its size). */
static void jh_record(int fd, off64_t off, size_t n)
{
	struct jh_undo u = {0};
	struct stat st;
	ssize_t got;

	if (!jh_fault.power || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return;
	u.dev = st.st_dev;
	u.ino = st.st_ino;
	u.off = off;
	u.old_size = st.st_size;
	u.old = malloc(n ? n : 1);
	cr_assert_not_null(u.old);
	got = n && off < st.st_size ? pread(fd, u.old, n, off) : 0;
	u.n = got > 0 ? (size_t)got : 0;
	pthread_mutex_lock(&jh_undo_log.lock);
	if (jh_undo_log.n == jh_undo_log.cap) {
		jh_undo_log.cap = jh_undo_log.cap ? 2 * jh_undo_log.cap : 64;
		jh_undo_log.v = realloc(jh_undo_log.v, jh_undo_log.cap * sizeof(u));
		cr_assert_not_null(jh_undo_log.v);
	}
	jh_undo_log.v[jh_undo_log.n++] = u;
	pthread_mutex_unlock(&jh_undo_log.lock);
}

/* The file @fd is durable: nothing logged of it can be lost any more. */
static void jh_durable(int fd)
{
	struct stat st;
	size_t i, k = 0;

	if (fstat(fd, &st) < 0)
		return;
	pthread_mutex_lock(&jh_undo_log.lock);
	for (i = 0; i < jh_undo_log.n; i++) {
		struct jh_undo *u = &jh_undo_log.v[i];

		if (u->dev == st.st_dev && u->ino == st.st_ino)
			free(u->old);
		else
			jh_undo_log.v[k++] = *u;
	}
	jh_undo_log.n = k;
	pthread_mutex_unlock(&jh_undo_log.lock);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
	jh_record(fd, off, n);
	return JH_REAL("pwrite64", ssize_t(*)(int, const void *, size_t, off64_t))(fd, buf, n, off);
}

int ftruncate64(int fd, off64_t len)
{
	jh_record(fd, 0, 0);
	return JH_REAL("ftruncate64", int (*)(int, off64_t))(fd, len);
}

int fdatasync(int fd)
{
	int r = JH_REAL("fdatasync", int (*)(int))(fd);

	if (r == 0)
		jh_durable(fd);
	return r;
}

/* Names change in the directory at once, but a power loss undoes every change since the
 * directory was last fsynced: each is logged (a name an unlink or a rename takes away is
 * kept aside as a hard link in jh_aux) and jh_power_loss() undoes them, newest first. */
enum jh_dirop_kind { JH_DIROP_LINK, JH_DIROP_RENAME, JH_DIROP_UNLINK };

struct jh_dirop {
	enum jh_dirop_kind kind;
	char from[PATH_MAX], to[PATH_MAX]; /* LINK: @to; UNLINK: @from */
	char stash[PATH_MAX];		   /* the name taken away, kept; "": none */
};

static struct {
	struct jh_dirop *v;
	size_t n, cap;
	unsigned stashed;
} jh_dirops;

/* Keep the file @path aside under a new name in jh_aux (into @stash, "" if there is none). */
static void jh_stash(const char *path, char *stash)
{
	snprintf(stash, PATH_MAX, "%s/stash-%u", jh_aux, jh_dirops.stashed++);
	if (link(path, stash) < 0)
		stash[0] = 0;
}

static void jh_dirop_log(enum jh_dirop_kind kind, const char *from, const char *to,
			 const char *stash)
{
	struct jh_dirop *d;

	if (jh_dirops.n == jh_dirops.cap) {
		jh_dirops.cap = jh_dirops.cap ? 2 * jh_dirops.cap : 16;
		jh_dirops.v = realloc(jh_dirops.v, jh_dirops.cap * sizeof(*d));
		cr_assert_not_null(jh_dirops.v);
	}
	d = &jh_dirops.v[jh_dirops.n++];
	d->kind = kind;
	snprintf(d->from, sizeof(d->from), "%s", from ? from : "");
	snprintf(d->to, sizeof(d->to), "%s", to ? to : "");
	snprintf(d->stash, sizeof(d->stash), "%s", stash ? stash : "");
}

int fsync(int fd)
{
	struct stat st;
	int r;

	if (jh_sys_fails(JH_FSYNC))
		return -1;
	r = JH_REAL("fsync", int (*)(int))(fd);
	if (r == 0)
		jh_durable(fd);
	if (r == 0 && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode))
		jh_dirops.n = 0; /* one directory in these tests: all its names are durable */
	return r;
}

int rename(const char *from, const char *to)
{
	char stash[PATH_MAX] = "";
	int r;

	if (jh_sys_fails(JH_RENAME))
		return -1;
	if (jh_fault.power)
		jh_stash(to, stash);
	r = JH_REAL("rename", int (*)(const char *, const char *))(from, to);
	if (r == 0 && jh_fault.power)
		jh_dirop_log(JH_DIROP_RENAME, from, to, stash);
	return r;
}

int linkat(int fd1, const char *from, int fd2, const char *to, int flags)
{
	int r;

	if (jh_sys_fails(JH_RENAME))
		return -1;
	r = JH_REAL("linkat", int (*)(int, const char *, int, const char *, int))(fd1, from, fd2,
										  to, flags);
	if (r == 0 && jh_fault.power)
		jh_dirop_log(JH_DIROP_LINK, NULL, to, NULL);
	return r;
}

int unlink(const char *path)
{
	char stash[PATH_MAX] = "";
	int r;

	if (jh_sys_fails(JH_UNLINK))
		return -1;
	if (jh_fault.power)
		jh_stash(path, stash);
	r = JH_REAL("unlink", int (*)(const char *))(path);
	if (r == 0 && jh_fault.power)
		jh_dirop_log(JH_DIROP_UNLINK, path, NULL, stash);
	return r;
}

int fallocate64(int fd, int mode, off64_t off, off64_t len)
{
	if (jh_sys_fails(JH_FALLOC))
		return -1;
	jh_record(fd, off, mode & FALLOC_FL_PUNCH_HOLE ? (size_t)len : 0);
	return JH_REAL("fallocate64", int (*)(int, int, off64_t, off64_t))(fd, mode, off, len);
}

/* The power fails: undo every change logged since each file's last flush, newest first, in
 * the files of the test directory (a file no name leads to any more is gone anyway). */
JH void jh_power_loss(void)
{
	size_t i;

	for (i = jh_dirops.n; i-- > 0;) {
		const struct jh_dirop *d = &jh_dirops.v[i];

		if (d->kind == JH_DIROP_LINK) {
			cr_assert_eq(unlink(d->to), 0, "undoing the link of '%s'", d->to);
		} else if (d->kind == JH_DIROP_RENAME) {
			cr_assert_eq(rename(d->to, d->from), 0, "undoing the rename to '%s'",
				     d->to);
			if (d->stash[0])
				cr_assert_eq(link(d->stash, d->to), 0, "restoring '%s'", d->to);
		} else if (d->stash[0]) {
			cr_assert_eq(link(d->stash, d->from), 0, "restoring '%s'", d->from);
		}
	}
	jh_dirops.n = 0;
	pthread_mutex_lock(&jh_undo_log.lock);
	for (i = jh_undo_log.n; i-- > 0;) {
		struct jh_undo *u = &jh_undo_log.v[i];
		DIR *d = opendir(jh_dir);
		struct dirent *e;
		struct stat st;
		int fd = -1;

		cr_assert_not_null(d);
		while (fd < 0 && (e = readdir(d)))
			if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
			    st.st_dev == u->dev && st.st_ino == u->ino)
				fd = openat(dirfd(d), e->d_name, O_WRONLY | O_CLOEXEC);
		closedir(d);
		if (fd >= 0) {
			cr_assert_eq(ftruncate(fd, u->old_size), 0);
			cr_assert_eq(pwrite(fd, u->old, u->n, u->off), (ssize_t)u->n);
			close(fd);
		}
		free(u->old);
	}
	jh_undo_log.n = 0;
	pthread_mutex_unlock(&jh_undo_log.lock);
}

/* Free what the logs hold (a test's end). */
JH void jh_fault_release(void)
{
	size_t k;

	for (k = 0; k < jh_undo_log.n; k++)
		free(jh_undo_log.v[k].old);
	free(jh_undo_log.v);
	jh_undo_log.v = NULL;
	jh_undo_log.n = jh_undo_log.cap = 0;
	free(jh_dirops.v);
	memset(&jh_dirops, 0, sizeof(jh_dirops));
}

#endif
