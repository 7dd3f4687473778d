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

/* Before the session starts: the window to set once INIT is answered (KiB, 0 keeps the
 * kernel's) and the -o max_read=N given (0: none). */
void qfs_readahead_set(unsigned readahead_kb, unsigned max_read);
/* The -o max_read=N given (0: none): INIT must ask for the same, or libfuse fails it. */
unsigned qfs_readahead_max_read(void);
/* Called once the kernel's INIT has been answered (op_init): the window may be set now. */
void qfs_readahead_init_done(void);
/* After the mount: set the window of the mount at canonical @mount_path (copied) from a
 * detached thread, once INIT is answered. Does nothing when the window is 0. */
void qfs_readahead_start(const char *mount_path);

#endif
