/* SPDX-License-Identifier: MIT */
/*
 * readahead.h - the mount's read-ahead window and the kernel's largest read (readahead.c):
 * set by main.c from -o readahead_kb and -o max_read, read by ops.c when INIT arrives.
 * Locking: init_lock (readahead.c), a leaf.
 */
#ifndef QCOWFS_READAHEAD_H
#define QCOWFS_READAHEAD_H

/* The largest -o readahead_kb=N accepted: 1 GiB, more than any disk streams ahead usefully. */
#define QFS_MAX_READAHEAD_KB (1024u * 1024u)
/* The default window in KiB (0: the kernel's own). */
#define QFS_DEFAULT_READAHEAD_KB 4096u
/* The largest read the kernel sends without -o max_read: 928 KiB, not 1 MiB. libfuse splices a
 * reply through a pipe only when the reply plus a page per piece (and two) fits in it, and a
 * pipe grows to at most 1 MiB (/proc/sys/fs/pipe-max-size) for any daemon without
 * CAP_SYS_RESOURCE: a 1 MiB reply never fits, and is copied through the daemon instead. 928 KiB
 * plus 18 pages (a request over 16 scattered 64 KiB clusters) does. */
#define QFS_DEFAULT_MAX_READ (928u * 1024u)

/* Before the session starts: the window to set once INIT is answered (KiB, 0 keeps the
 * kernel's) and the -o max_read=N given (0: none). */
void qfs_readahead_set(unsigned readahead_kb, unsigned max_read);
/* The -o max_read=N given (0: none): INIT must ask for the same, or libfuse fails it. */
unsigned qfs_readahead_max_read(void);
/* Called by op_init, before INIT is answered: sets the window of the mount (nothing when the
 * window is 0), so that every file opened through the mount gets it. */
void qfs_readahead_init_done(void);
/* After the mount, before the session's threads start: the canonical @mount_path (copied). */
void qfs_readahead_start(const char *mount_path);

#endif
