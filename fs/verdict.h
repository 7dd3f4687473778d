/* SPDX-License-Identifier: MIT */
/*
 * verdict.h - what the mount makes of each file of SOURCE, and why (verdict.c): the one place
 * that decides whether a view is writable, and says why a view is read-only or an image is
 * refused. The mode of a view (tree-attr.c), the decision to open it for writing
 * (tree-open.c), its user.qcowfs.mode attribute and the status file all read it, so what they
 * say is what the mount does. Above the source cache and the permissions, under the tree.
 * Takes no lock: called under qfs_tree.lock (it reads the src cache).
 */
#ifndef QCOWFS_VERDICT_H
#define QCOWFS_VERDICT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "perm.h"
#include "src.h"

enum qfs_state {
	QFS_STATE_RW,	    /* a writable view */
	QFS_STATE_RO,	    /* a read-only view: why says why */
	QFS_STATE_REFUSED,  /* an image (or a file that cannot be read) without a view */
	QFS_STATE_NOT_SHOWN /* not an image, and no chain in SOURCE reads it */
};

/* The verdict on @s (t->lock held): the view of its active state, or with @snap that of one
 * of its internal snapshots. *@mode (unless NULL) gets the view's permission bits (perm.c;
 * those of a writable view only for QFS_STATE_RW). @who (unless NULL: root, or a mount that
 * checks no caller) is who asks: the reason names another file only if @who may read it (its
 * mode and ACL, and search permission above it), and when @who->mask asks W_OK, a writable
 * view @who may not write is QFS_STATE_RO, saying so. @why (@cap bytes, unless NULL) gets the
 * reason of anything but QFS_STATE_RW, one line without the file's path where the reason is
 * the mount's own. */
enum qfs_state qfs_verdict(struct qfs_src_cache *c, struct qfs_src *s, bool snap, mode_t *mode,
			   const struct qfs_caller *who, char *why, size_t cap);

/* May @who (unless NULL) know of the file @s: may it read the file (its mode and ACL) and
 * reach it (search permission on the directories above it)? What the daemon tells a caller
 * about files other than the view it reads is held to this. */
bool qfs_verdict_may_know(struct qfs_src_cache *c, struct qfs_src *s, const struct qfs_caller *who);

#endif
