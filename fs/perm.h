/* SPDX-License-Identifier: MIT */
/*
 * perm.h - the permission bits of the views and directories, and the daemon's own check of a
 * caller against them (perm.c). Above the source cache, under the tree. Takes no lock: the
 * modes are computed under qfs_tree.lock (they read the src cache).
 */
#ifndef QCOWFS_PERM_H
#define QCOWFS_PERM_H

#include <stdbool.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "src.h"

/* Who asks (ops.c fills it from the request), for the daemon's own permission checks. */
struct qfs_caller {
	uid_t uid;
	gid_t gid;
	int ngroups; /* supplementary groups in @groups, or -1: not known */
	gid_t groups[64];
	int mask; /* what is asked: R_OK, W_OK or both */
};

/* May @c do @c->mask on a node whose attributes are @st? As the kernel's generic check: the
 * owner's bits, else the group's for a member, else the others'; where the groups are not
 * known, both the group's and the others' bits must allow. Reads only its arguments. */
bool qfs_caller_may(const struct qfs_caller *c, const struct stat *st);

/* The permission bits of a view of the chain whose top is @top (writable: the view of a
 * writable leaf), and of the mount's directory for source directory @path (stat'ed: @st).
 * Under the cache owner's lock (they read and update the srcs of @c). */
mode_t qfs_perm_view(struct qfs_src_cache *c, struct qfs_src *top, bool writable);
/* The read bits of the file @s alone (its own mode and ACL, and the search bits of the
 * directories above it), for what the daemon tells about the file itself (the status file). */
mode_t qfs_perm_file(struct qfs_src_cache *c, struct qfs_src *s);
mode_t qfs_perm_dir(struct qfs_src_cache *c, const char *path, const struct stat *st);

#endif
