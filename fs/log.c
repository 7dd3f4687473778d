/* SPDX-License-Identifier: MIT */
/*
 * log.c - the daemon's log: one line per event. In the foreground it goes to stderr. Once the
 * daemon leaves the foreground (fuse_daemonize() puts /dev/null on stderr) it goes to syslog
 * when a syslog socket is there to take it, else to the stderr the daemon was started with
 * (kept open: a service manager's pipe, or a file), where it was lost before. With
 * --log-file PATH every line goes to that file instead, appended with a timestamp; the file is
 * opened before the daemon leaves the foreground (a bad PATH is refused on the command line)
 * and opened again on SIGHUP, so that logrotate can move it away.
 *
 * Where lines go is set in main.c before any FUSE request is served, so those flags need no
 * lock. The log file's descriptor number never changes: qfs_log_reopen(), which a signal
 * handler may call, puts the new file on it with dup2(), which is atomic and
 * async-signal-safe, so a line written meanwhile goes whole to the old file or the new one
 * (O_APPEND: one write() per line, so lines of threads writing at once do not mix).
 *
 * Locking: no locks.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define LOG_FILE_FLAGS (O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)

static enum { TO_STDERR, TO_SYSLOG, TO_FD } log_to = TO_STDERR; /* set before threads start */
static int log_fd = -1;	 /* TO_FD: the log file, or the stderr kept when detached */
static bool log_stamped; /* TO_FD: timestamped lines (the log file) */
static char log_path[PATH_MAX];

int qfs_log_to_file(const char *path)
{
	int fd;

	if (strlen(path) >= sizeof(log_path))
		return -ENAMETOOLONG;
	/* O_NONBLOCK stays: a FIFO without a reader is refused, one that fills up loses lines
	 * rather than blocking the daemon (a regular file ignores it) */
	fd = open(path, LOG_FILE_FLAGS, 0640);
	if (fd < 0)
		return -errno;
	snprintf(log_path, sizeof(log_path), "%s", path);
	log_fd = fd;
	log_to = TO_FD;
	log_stamped = true;
	return 0;
}

void qfs_log_reopen(void)
{
	int saved = errno, fd;

	if (!log_path[0])
		return;
	fd = open(log_path, LOG_FILE_FLAGS, 0640);
	if (fd >= 0) {
		dup2(fd, log_fd);
		close(fd);
	}
	errno = saved;
}

/* Is there a syslog socket that takes messages (syslog(3) drops them silently otherwise)? */
static bool syslog_socket(void)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX, .sun_path = "/dev/log"};
	int types[] = {SOCK_DGRAM, SOCK_STREAM};
	bool ok = false;
	unsigned i;

	for (i = 0; i < 2 && !ok; i++) {
		int fd = socket(AF_UNIX, types[i] | SOCK_CLOEXEC, 0);

		ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
		if (fd >= 0)
			close(fd);
	}
	return ok;
}

void qfs_log_detach(void)
{
	if (log_to == TO_FD)
		return; /* --log-file: the file stays */
	if (syslog_socket()) {
		log_to = TO_SYSLOG;
		openlog("qcowfs", LOG_PID, LOG_DAEMON);
		return;
	}
	/* fuse_daemonize() is about to put /dev/null on stderr: keep the real one */
	log_fd = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
	if (log_fd >= 0)
		log_to = TO_FD;
}

/* One line, written with one write(): "[TIMESTAMP ]qcowfs[PID]: MESSAGE\n". */
static void log_line(const char *fmt, va_list ap)
{
	char line[4096];
	size_t n = 0;
	int k;

	if (log_stamped) {
		struct timespec ts;
		struct tm tm;

		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
		n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ ", ts.tv_nsec / 1000000);
	}
	k = snprintf(line + n, sizeof(line) - n, "qcowfs[%ld]: ", (long)getpid());
	n += k > 0 ? (size_t)k : 0;
	k = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	n = k < 0 ? n : n + (size_t)k >= sizeof(line) - 1 ? sizeof(line) - 2 : n + (size_t)k;
	line[n++] = '\n';
	if (write(log_fd, line, n) < 0) {
		/* nowhere left to say it */
	}
}

void qfs_log(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (log_to == TO_FD) {
		log_line(fmt, ap);
	} else if (log_to == TO_STDERR) {
		fputs("qcowfs: ", stderr);
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
		fflush(stderr);
	} else {
		vsyslog(LOG_WARNING, fmt, ap);
	}
	va_end(ap);
}
