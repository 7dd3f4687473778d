/* SPDX-License-Identifier: MIT */
/*
 * log.h - the daemon's log (log.c): the bottom of fs/, called from every file above it. No
 * locks.
 */
#ifndef QCOWFS_LOG_H
#define QCOWFS_LOG_H

/* Log one line: stderr in the foreground; once qfs_log_detach() was called, syslog, or the
 * original stderr when no syslog socket takes messages; the log file after
 * qfs_log_to_file(). */
void qfs_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* From now on, log every line to the file @path (absolute: the daemon leaves its working
 * directory), appended, with a timestamp. 0 or a negative errno (it cannot be opened). */
int qfs_log_to_file(const char *path);
/* Open the log file again at its path (after logrotate moved it). Async-signal-safe: SIGHUP's
 * handler calls it. Nothing without a log file. */
void qfs_log_reopen(void);
/* The daemon leaves the foreground (call before fuse_daemonize()): log to syslog when its
 * socket takes messages, else keep stderr open and log there. Nothing with a log file. */
void qfs_log_detach(void);

#endif
