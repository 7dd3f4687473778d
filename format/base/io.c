/* SPDX-License-Identifier: MIT */
/*
 * io.c - all host I/O of the library: a file backend and a memory backend for tests.
 *
 * Reads and writes are positional (pread/pwrite) and so safe from many threads at once on one
 * io. EINTR and partial transfers are retried here, so callers see whole transfers or an error.
 * The memory backend can fail its Nth read, write or flush to reach error paths in tests.
 *
 * Every write and hole punch passes the io's guard first, when one is set: a writable image
 * sets its overlap checks there (overlap.c), so no host write of the library can land on live
 * metadata whatever path it comes by. qcow2_io_pwrite() is a write of data; metadata writers
 * say what they write with qcow2_io_pwrite_meta().
 *
 * A test hook (qcow2_io_fail_files()) fails the Nth write or flush of every file io of the
 * process, as a crash there would: the one mutable global of the library, for tests only.
 * Unarmed, it costs the file paths one relaxed atomic load.
 *
 * Every image, backing and data file is opened by qcow2_file_open(): it never blocks (a FIFO
 * or a device named as an image would otherwise hang the opener) and admits only regular
 * files, and block devices only where the caller says an operator named one: no file type
 * blocks the daemon or a command, and a view never reaches a device its caller did not name.
 *
 * Locks: io->mem_lock (a memory io's buffer and injected failures) and file_fail.lock
 * (the test hook's counters), both leaves and internal to this file.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "base/base.h"

struct qcow2_io {
	int fd; /* -1 for memory */
	char *name;
	/* memory backend */
	uint8_t *mem;
	size_t mem_len;
	pthread_mutex_t mem_lock; /* guards mem, mem_len, fail_* */
	unsigned fail_nth[3];
	int fail_err[3];
	/* checks every write and punch first (a writable image's overlap checks); set while no
	 * other thread uses the io */
	struct qcow2_io_guard guard;
	bool fail_sticky[3]; /* qcow2_io_mem_fail_from(): once failed, fail every later one */
	bool failing[3];
	/* Told of every write and hole punch before it happens, and of every flush (a repair's
	 * undo journal, undo.c). */
	int (*journal)(void *ctx, enum qcow2_io_op op, uint64_t off, uint64_t n);
	void *journal_ctx;
};

/* ---- the test hook on file ios (qcow2_io_fail_files()) ---- */

static struct {
	unsigned armed;	      /* ops armed (a bit each): loaded relaxed on the hot path */
	pthread_mutex_t lock; /* guards the rest */
	unsigned nth[3], seen[3];
	int err[3];
	bool sticky[3];
	bool crashed; /* a sticky failure happened: every write and flush fails */
	int crash_err;
} file_fail = {.lock = PTHREAD_MUTEX_INITIALIZER};

int qcow2_io_fail_files(enum qcow2_io_op op, unsigned nth, int err, bool sticky)
{
	unsigned armed;

	if (op != QCOW2_IO_WRITE && op != QCOW2_IO_FLUSH)
		return -EINVAL;
	pthread_mutex_lock(&file_fail.lock);
	file_fail.nth[op] = nth;
	file_fail.seen[op] = 0;
	file_fail.err[op] = err;
	file_fail.sticky[op] = sticky;
	armed = __atomic_load_n(&file_fail.armed, __ATOMIC_RELAXED);
	armed = nth ? armed | (1u << op) : armed & ~(1u << op);
	if (!armed)
		file_fail.crashed = false;
	__atomic_store_n(&file_fail.armed, armed, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&file_fail.lock);
	return 0;
}

unsigned qcow2_io_fail_files_seen(enum qcow2_io_op op)
{
	unsigned n;

	if (op != QCOW2_IO_WRITE && op != QCOW2_IO_FLUSH)
		return 0;
	pthread_mutex_lock(&file_fail.lock);
	n = file_fail.seen[op];
	pthread_mutex_unlock(&file_fail.lock);
	return n;
}

/* Count one @op of a file io: 0, or the error the armed hook says it fails with. */
static int file_should_fail(enum qcow2_io_op op)
{
	int r = 0;

	if (!__atomic_load_n(&file_fail.armed, __ATOMIC_RELAXED))
		return 0;
	pthread_mutex_lock(&file_fail.lock);
	file_fail.seen[op]++;
	if (file_fail.crashed) {
		r = file_fail.crash_err;
	} else if (file_fail.nth[op] && file_fail.seen[op] == file_fail.nth[op]) {
		r = file_fail.err[op];
		file_fail.crashed = file_fail.sticky[op];
		file_fail.crash_err = r;
	}
	pthread_mutex_unlock(&file_fail.lock);
	return r;
}

void qcow2_io_set_journal(struct qcow2_io *io,
			  int (*fn)(void *ctx, enum qcow2_io_op op, uint64_t off, uint64_t n),
			  void *ctx)
{
	io->journal = fn;
	io->journal_ctx = ctx;
}

int qcow2_io_truncate(struct qcow2_io *io, uint64_t bytes)
{
	if (io->fd < 0) {
		pthread_mutex_lock(&io->mem_lock);
		if (bytes < io->mem_len)
			io->mem_len = bytes;
		pthread_mutex_unlock(&io->mem_lock);
		return 0;
	}
	if ((errno = -file_should_fail(QCOW2_IO_WRITE)) != 0 || ftruncate(io->fd, (off_t)bytes) < 0)
		return qcow2_set_error(-errno, "'%s': cannot truncate to %llu bytes: %s", io->name,
				       (unsigned long long)bytes, strerror(errno));
	return 0;
}

static struct qcow2_io *io_alloc(const char *name)
{
	struct qcow2_io *io = calloc(1, sizeof(*io));

	if (!io)
		return NULL;
	io->fd = -1;
	io->name = strdup(name);
	if (!io->name) {
		free(io);
		return NULL;
	}
	pthread_mutex_init(&io->mem_lock, NULL);
	return io;
}

/* What a file that is not regular (or an allowed block device) is called in messages. */
static const char *file_kind(mode_t mode)
{
	if (S_ISDIR(mode))
		return "a directory";
	if (S_ISFIFO(mode))
		return "a FIFO";
	if (S_ISSOCK(mode))
		return "a socket";
	if (S_ISCHR(mode))
		return "a character device";
	if (S_ISBLK(mode))
		return "a block device";
	return "not a regular file";
}

/*
 * The one way the library opens an image, backing or data file. O_NONBLOCK makes the open
 * itself return at once whatever the file is (a FIFO with no writer, a device, a file under a
 * lease), and fstat() on the open descriptor (not stat() of the name, which could change in
 * between) decides: only a regular file is used, or a block device where the caller says an
 * operator named it. O_NONBLOCK is then cleared, so nothing else changes for a regular file.
 */
int qcow2_file_open(const char *path, unsigned flags)
{
	int fd, fl, oflags = O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
	struct stat st;

	oflags |= flags & QCOW2_OPEN_WRITE ? O_RDWR : O_RDONLY;
	if (flags & QCOW2_OPEN_NOFOLLOW) {
		fd = qcow2_path_open_canonical(path, oflags);
		if (fd < 0)
			errno = -fd;
	} else {
		fd = open(path, oflags);
	}
	if (fd < 0) {
		if (errno == ELOOP && (flags & QCOW2_OPEN_NOFOLLOW))
			return qcow2_set_error(
			    -ELOOP, "cannot open '%s': a symlink appeared on its path", path);
		if (errno == ENXIO)
			return qcow2_set_error(-EINVAL, "cannot open '%s': not a regular file",
					       path);
		return qcow2_set_error(-errno, "cannot open '%s': %s", path, strerror(errno));
	}
	if (fstat(fd, &st) < 0) {
		int e = errno;
		close(fd);
		return qcow2_set_error(-e, "cannot open '%s': %s", path, strerror(e));
	}
	if (!S_ISREG(st.st_mode) && !(S_ISBLK(st.st_mode) && (flags & QCOW2_OPEN_BLOCKDEV))) {
		close(fd);
		return qcow2_set_error(S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL,
				       "cannot open '%s': %s, not a regular file", path,
				       file_kind(st.st_mode));
	}
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
		int e = errno;
		close(fd);
		return qcow2_set_error(-e, "cannot open '%s': %s", path, strerror(e));
	}
	return fd;
}

int qcow2_io_open(const char *path, unsigned flags, struct qcow2_io **out)
{
	int fd = qcow2_file_open(path, flags);

	if (fd < 0)
		return fd;
	return qcow2_io_open_fd(fd, path, out);
}

int qcow2_io_open_file(const char *path, bool writable, struct qcow2_io **out)
{
	return qcow2_io_open(path, writable ? QCOW2_OPEN_WRITE : 0, out);
}

int qcow2_io_open_fd(int fd, const char *name, struct qcow2_io **out)
{
	struct qcow2_io *io = io_alloc(name);

	if (!io) {
		close(fd);
		return qcow2_error_prefix(qcow2_oom(), name);
	}
	io->fd = fd;
	*out = io;
	return 0;
}

struct qcow2_io *qcow2_io_mem_new(const char *name, const void *bytes, size_t len)
{
	struct qcow2_io *io = io_alloc(name);

	if (!io)
		return NULL;
	io->mem = malloc(len ? len : 1);
	if (!io->mem) {
		qcow2_io_close(io);
		return NULL;
	}
	if (len)
		memcpy(io->mem, bytes, len);
	io->mem_len = len;
	return io;
}

void qcow2_io_mem_fail_nth(struct qcow2_io *io, enum qcow2_io_op op, unsigned nth, int err)
{
	pthread_mutex_lock(&io->mem_lock);
	io->fail_nth[op] = nth;
	io->fail_err[op] = err;
	io->fail_sticky[op] = false;
	io->failing[op] = false;
	pthread_mutex_unlock(&io->mem_lock);
}

void qcow2_io_mem_fail_from(struct qcow2_io *io, enum qcow2_io_op op, unsigned nth, int err)
{
	qcow2_io_mem_fail_nth(io, op, nth, err);
	pthread_mutex_lock(&io->mem_lock);
	io->fail_sticky[op] = true;
	pthread_mutex_unlock(&io->mem_lock);
}

const void *qcow2_io_mem_bytes(const struct qcow2_io *io, size_t *len)
{
	*len = io->mem_len;
	return io->mem;
}

void qcow2_io_close(struct qcow2_io *io)
{
	if (!io)
		return;
	if (io->fd >= 0)
		close(io->fd);
	pthread_mutex_destroy(&io->mem_lock);
	free(io->mem);
	free(io->name);
	free(io);
}

/* Memory backend: count down an injected failure. Called with mem_lock held. */
static int mem_should_fail(struct qcow2_io *io, enum qcow2_io_op op)
{
	if (io->failing[op])
		return io->fail_err[op];
	if (io->fail_nth[op] == 0)
		return 0;
	if (--io->fail_nth[op] == 0) {
		io->failing[op] = io->fail_sticky[op];
		return io->fail_err[op];
	}
	return 0;
}

static ssize_t mem_pread(struct qcow2_io *io, void *buf, size_t n, uint64_t off)
{
	ssize_t r;

	pthread_mutex_lock(&io->mem_lock);
	r = mem_should_fail(io, QCOW2_IO_READ);
	if (r == 0) {
		if (off >= io->mem_len)
			n = 0;
		else if (n > io->mem_len - off)
			n = io->mem_len - off;
		memcpy(buf, io->mem + off, n);
		r = (ssize_t)n;
	}
	pthread_mutex_unlock(&io->mem_lock);
	return r;
}

ssize_t qcow2_io_pread(struct qcow2_io *io, void *buf, size_t n, uint64_t off)
{
	size_t done = 0;

	if (off > (uint64_t)INT64_MAX || n > (uint64_t)INT64_MAX - off)
		return qcow2_set_error(-EINVAL, "'%s': read at %#llx out of range", io->name,
				       (unsigned long long)off);
	if (io->fd < 0) {
		ssize_t r = mem_pread(io, buf, n, off);
		if (r < 0)
			return qcow2_set_error((int)r, "'%s': read failed: %s", io->name,
					       strerror((int)-r));
		return r;
	}
	while (done < n) {
		ssize_t r = pread(io->fd, (char *)buf + done, n - done, (off_t)(off + done));

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return qcow2_set_error(-errno, "'%s': read at %#llx failed: %s", io->name,
					       (unsigned long long)(off + done), strerror(errno));
		if (r == 0)
			break;
		done += (size_t)r;
	}
	return (ssize_t)done;
}

int qcow2_io_pread_full(struct qcow2_io *io, void *buf, size_t n, uint64_t off)
{
	ssize_t r = qcow2_io_pread(io, buf, n, off);

	if (r < 0)
		return (int)r;
	if ((size_t)r != n)
		return qcow2_set_error(-EUCLEAN, "'%s': %zu bytes at %#llx run past end of file",
				       io->name, n, (unsigned long long)off);
	return 0;
}

static int mem_pwrite(struct qcow2_io *io, const void *buf, size_t n, uint64_t off)
{
	int r;

	pthread_mutex_lock(&io->mem_lock);
	r = mem_should_fail(io, QCOW2_IO_WRITE);
	if (r == 0 && off + n > io->mem_len) {
		uint8_t *p = realloc(io->mem, off + n);
		if (!p) {
			r = -ENOMEM;
		} else {
			memset(p + io->mem_len, 0, off + n - io->mem_len);
			io->mem = p;
			io->mem_len = off + n;
		}
	}
	if (r == 0)
		memcpy(io->mem + off, buf, n);
	pthread_mutex_unlock(&io->mem_lock);
	return r;
}

void qcow2_io_set_guard(struct qcow2_io *io, const struct qcow2_io_guard *g)
{
	if (g)
		io->guard = *g;
	else
		memset(&io->guard, 0, sizeof(io->guard));
}

int qcow2_io_pwrite(struct qcow2_io *io, const void *buf, size_t n, uint64_t off)
{
	return qcow2_io_pwrite_meta(io, buf, n, off, 0);
}

int qcow2_io_pwrite_meta(struct qcow2_io *io, const void *buf, size_t n, uint64_t off, unsigned own)
{
	size_t done = 0;

	if (off > (uint64_t)INT64_MAX || n > (uint64_t)INT64_MAX - off)
		return qcow2_set_error(-EINVAL, "'%s': write at %#llx out of range", io->name,
				       (unsigned long long)off);
	if (io->guard.check && n) {
		int r = io->guard.check(io->guard.ctx, off, n, own);

		if (r < 0)
			return r;
	}
	if (io->journal) {
		int r = io->journal(io->journal_ctx, QCOW2_IO_WRITE, off, n);
		if (r < 0)
			return r;
	}
	if (io->fd < 0) {
		int r = mem_pwrite(io, buf, n, off);
		if (r < 0)
			return qcow2_set_error(r, "'%s': write failed: %s", io->name, strerror(-r));
		return 0;
	}
	if ((errno = -file_should_fail(QCOW2_IO_WRITE)) != 0)
		return qcow2_set_error(-errno, "'%s': write at %#llx failed: %s", io->name,
				       (unsigned long long)off, strerror(errno));
	while (done < n) {
		ssize_t r = pwrite(io->fd, (const char *)buf + done, n - done, (off_t)(off + done));

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return qcow2_set_error(-errno, "'%s': write at %#llx failed: %s", io->name,
					       (unsigned long long)(off + done), strerror(errno));
		done += (size_t)r;
	}
	return 0;
}

/* Nanoseconds spent in fdatasync by every io of the process (a statistic: relaxed). */
static uint64_t sync_ns;

double qcow2_io_sync_secs(void)
{
	return (double)__atomic_load_n(&sync_ns, __ATOMIC_RELAXED) / 1e9;
}

int qcow2_io_flush(struct qcow2_io *io)
{
	double t0;
	int r;

	if (io->journal) {
		r = io->journal(io->journal_ctx, QCOW2_IO_FLUSH, 0, 0);
		if (r < 0)
			return r;
	}
	if (io->fd < 0) {
		pthread_mutex_lock(&io->mem_lock);
		r = mem_should_fail(io, QCOW2_IO_FLUSH);
		pthread_mutex_unlock(&io->mem_lock);
		return r ? qcow2_set_error(r, "'%s': flush failed: %s", io->name, strerror(-r)) : 0;
	}
	t0 = qcow2_clock();
	r = (errno = -file_should_fail(QCOW2_IO_FLUSH)) != 0 || fdatasync(io->fd) < 0 ? -errno : 0;
	__atomic_add_fetch(&sync_ns, (uint64_t)((qcow2_clock() - t0) * 1e9), __ATOMIC_RELAXED);
	if (r < 0)
		return qcow2_set_error(r, "'%s': flush failed: %s", io->name, strerror(-r));
	return 0;
}

int qcow2_io_size(struct qcow2_io *io, uint64_t *bytes)
{
	off_t end;

	if (io->fd < 0) {
		pthread_mutex_lock(&io->mem_lock);
		*bytes = io->mem_len;
		pthread_mutex_unlock(&io->mem_lock);
		return 0;
	}
	/* The end is where lseek() says, as for QEMU (a block device has no st_size). A regular
	 * file of /proc has st_size 0 whatever it holds, and lseek() to its end fails: such a
	 * file has no size to serve (reading it as empty would lie), and QEMU refuses it too.
	 * (Not compared with st_size: another thread may grow the file in between.) */
	end = lseek(io->fd, 0, SEEK_END);
	if (end < 0)
		return qcow2_set_error(-errno, "'%s': cannot tell its size: %s", io->name,
				       strerror(errno));
	*bytes = (uint64_t)end;
	return 0;
}

int qcow2_io_allocated(struct qcow2_io *io, uint64_t *bytes)
{
	struct stat st;

	if (io->fd < 0)
		return qcow2_io_size(io, bytes);
	if (fstat(io->fd, &st) < 0)
		return qcow2_set_error(-errno, "'%s': stat failed: %s", io->name, strerror(errno));
	*bytes = (uint64_t)st.st_blocks * 512;
	return 0;
}

/* lseek(@whence) from @off, with EINTR retried (a FUSE file system may be interrupted). */
static off_t seek_retry(int fd, uint64_t off, int whence)
{
	off_t r;

	do
		r = lseek(fd, (off_t)off, whence);
	while (r < 0 && errno == EINTR);
	return r;
}

/*
 * The rules of QEMU's file driver (raw_co_block_status() in block/file-posix.c), in one place:
 * SEEK_DATA from @off failing with ENXIO is a hole up to the end of the file, beyond which
 * every byte reads as zeros; data at @off runs to the next hole (SEEK_HOLE), which is at the
 * end of the file at the latest; any other failure (a file system that cannot tell) is data,
 * as is every byte of a memory io up to its end.
 */
void qcow2_io_next_extent(struct qcow2_io *io, uint64_t off, uint64_t max, uint64_t *len,
			  bool *is_data)
{
	off_t d, h;

	*is_data = true;
	*len = max;
	if (io->fd < 0) {
		pthread_mutex_lock(&io->mem_lock);
		if (off >= io->mem_len)
			*is_data = false;
		else if (io->mem_len - off < max)
			*len = io->mem_len - off;
		pthread_mutex_unlock(&io->mem_lock);
		return;
	}
	d = seek_retry(io->fd, off, SEEK_DATA);
	if (d < 0) {
		*is_data = errno != ENXIO;
		return;
	}
	if ((uint64_t)d > off) {
		*is_data = false;
		if ((uint64_t)d - off < max)
			*len = (uint64_t)d - off;
		return;
	}
	h = seek_retry(io->fd, off, SEEK_HOLE);
	if (h > d && (uint64_t)h - off < max)
		*len = (uint64_t)h - off;
}

int qcow2_io_fd(const struct qcow2_io *io)
{
	return io->fd;
}

const char *qcow2_io_name(const struct qcow2_io *io)
{
	return io->name;
}

int qcow2_io_grow(struct qcow2_io *io, uint64_t bytes)
{
	uint64_t cur;
	int r = qcow2_io_size(io, &cur);

	if (r < 0 || cur >= bytes)
		return r;
	if (io->fd < 0) {
		uint8_t zero = 0;
		return bytes ? qcow2_io_pwrite(io, &zero, 0, bytes) : 0;
	}
	if ((errno = -file_should_fail(QCOW2_IO_WRITE)) != 0 || ftruncate(io->fd, (off_t)bytes) < 0)
		return qcow2_set_error(-errno, "'%s': cannot grow to %llu bytes: %s", io->name,
				       (unsigned long long)bytes, strerror(errno));
	return 0;
}

void qcow2_io_start_writeback(struct qcow2_io *io, uint64_t off, uint64_t n)
{
	if (io->fd >= 0)
		(void)sync_file_range(io->fd, (off_t)off, (off_t)n, SYNC_FILE_RANGE_WRITE);
}

void qcow2_io_punch(struct qcow2_io *io, uint64_t off, uint64_t n)
{
	/* a hole is a write of zeros: never over live metadata (the guard refuses it quietly) */
	if (io->guard.check && n && io->guard.check(io->guard.ctx, off, n, QCOW2_IO_PUNCH) < 0)
		return;
	if (io->journal && io->journal(io->journal_ctx, QCOW2_IO_WRITE, off, n) < 0)
		return; /* a hole is never needed: leave the bytes */
	if (io->fd >= 0 && file_should_fail(QCOW2_IO_WRITE) == 0)
		(void)fallocate(io->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
				(off_t)n);
}

int qcow2_io_zero(struct qcow2_io *io, uint64_t off, uint64_t n)
{
	static const uint8_t zeros[65536];
	uint64_t len;
	int r = 0;

	if (off > (uint64_t)INT64_MAX || n > (uint64_t)INT64_MAX - off)
		return qcow2_set_error(-EINVAL, "'%s': zeroing at %#llx out of range", io->name,
				       (unsigned long long)off);
	if (io->guard.check && n && (r = io->guard.check(io->guard.ctx, off, n, 0)) < 0)
		return r;
	if (io->fd >= 0 && n &&
	    (!io->journal || io->journal(io->journal_ctx, QCOW2_IO_WRITE, off, n) == 0) &&
	    file_should_fail(QCOW2_IO_WRITE) == 0 &&
	    fallocate(io->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)n) ==
		0)
		return 0;
	/* no hole here (a memory io, a file system without them, a failure): written zeros */
	for (; n && r == 0; off += len, n -= len) {
		len = n < sizeof(zeros) ? n : sizeof(zeros);
		r = qcow2_io_pwrite(io, zeros, (size_t)len, off);
	}
	return r;
}

/* Write zeros over the holes of [@off, @end) (qcow2_io_next_extent() finds them; the range
 * lies inside the file, which the callers grew first): the bytes read the same, and every block
 * is then allocated and written. */
static int fill_holes(struct qcow2_io *io, uint64_t off, uint64_t end)
{
	static const uint8_t zeros[65536];
	uint64_t len, stop;
	bool data;
	size_t n;
	int r;

	while (off < end) {
		qcow2_io_next_extent(io, off, end - off, &len, &data);
		for (stop = off + len; !data && off < stop; off += n) {
			n = stop - off < sizeof(zeros) ? (size_t)(stop - off) : sizeof(zeros);
			r = qcow2_io_pwrite(io, zeros, n, off);
			if (r < 0)
				return r;
		}
		off = stop;
	}
	return 0;
}

int qcow2_io_preallocate(struct qcow2_io *io, uint64_t off, uint64_t n, bool write_zeros)
{
	if (io->fd < 0 || n == 0)
		return 0; /* memory: every byte is there already */
	if (write_zeros)
		return fill_holes(io, off, off + n);
	if (fallocate(io->fd, 0, (off_t)off, (off_t)n) < 0)
		return qcow2_set_error(-errno, "'%s': cannot preallocate %llu bytes: %s", io->name,
				       (unsigned long long)n, strerror(errno));
	return 0;
}

bool qcow2_fd_on_local_disk(int fd)
{
	struct statfs sf;
	struct stat st;

	if (fstat(fd, &st) < 0 || !(S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) ||
	    fstatfs(fd, &sf) < 0)
		return false;
	switch ((unsigned long)sf.f_type) {
	case 0xEF53UL:	   /* ext2, ext3, ext4 */
	case 0x58465342UL: /* xfs */
	case 0x9123683EUL: /* btrfs */
	case 0x01021994UL: /* tmpfs */
	case 0xF2F52010UL: /* f2fs */
	case 0x2FC12FC1UL: /* zfs */
		return true;
	default:
		return false;
	}
}
