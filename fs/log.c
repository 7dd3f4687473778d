/* SPDX-License-Identifier: MIT */
/*
 * log.c - the daemon's log: one line per event, to stderr while the daemon runs in the
 * foreground, to syslog once it has left it. The switch happens once, in main.c, before any
 * FUSE request is served (fuse_daemonize()), so the flag needs no lock.
 *
 * Locking: no locks.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <syslog.h>

#include "log.h"

static bool log_to_stderr = true; /* set once, before the session's threads start */

void qfs_log_to_syslog(void)
{
	log_to_stderr = false;
	openlog("qcowfs", LOG_PID, LOG_DAEMON);
}

void qfs_log(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (log_to_stderr) {
		fputs("qcowfs: ", stderr);
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
		fflush(stderr);
	} else {
		vsyslog(LOG_WARNING, fmt, ap);
	}
	va_end(ap);
}
