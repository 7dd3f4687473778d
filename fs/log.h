/* SPDX-License-Identifier: MIT */
/*
 * log.h - the daemon's log (log.c): the bottom of fs/, called from every file above it. No
 * locks.
 */
#ifndef QCOWFS_LOG_H
#define QCOWFS_LOG_H

/* Log one line (stderr in the foreground, syslog once qfs_log_to_syslog() was called). */
void qfs_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* From now on, log to syslog as "qcowfs[PID]" (the daemon left the foreground). */
void qfs_log_to_syslog(void);

#endif
