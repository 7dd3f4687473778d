/* SPDX-License-Identifier: MIT */
/*
 * names.h - the names of flat views and snapshot views (names.c), and the log of names that
 * are not the usual ones. Above the log, the string map and the source cache (whose srcs and
 * snapshots it names), under the tree. Takes no lock; called under qfs_tree.lock (it updates
 * the snapshots' logged flags).
 */
#ifndef QCOWFS_NAMES_H
#define QCOWFS_NAMES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "src.h"
#include "strmap.h"

/* A file found in the directory being scanned (tree-dir.c collects them, names.c names them). */
struct qfs_found {
	char *name;
	struct qfs_src *s; /* NULL for a subdirectory */
	char *dir;	   /* subdirectory: its path */
	char *flat;	   /* image: its flat view's name (qfs_names_choose), NULL for none */
	unsigned level;	   /* image: which of its candidate names it has (names.c) */
};

/* The renames one scan of a directory notes (hashes of log lines): a line is logged unless
 * the last scan of the directory noted it too. */
struct qfs_name_log {
	const char *dir;      /* the source directory scanned, for the messages */
	const uint64_t *last; /* what its last scan noted, sorted (qfs_names_commit()) */
	size_t n_last;
	uint64_t *h; /* what this scan notes */
	size_t n, cap;
};

/* Choose the flat view name of every image in @f: STEM.raw; FILE.raw where that is
 * taken by another image's name, or by a name in @own (the directory's files that are not
 * images, and its subdirectories: they keep their names); FILE%#2.raw... where that is taken
 * too, in byte order of the file names. '%' and '@' in an image name with '@' are written %25
 * and %40, so no flat name holds '@'. The result depends on the set of names, not on the
 * order of @f. Each name that is not STEM.raw is noted in @log. */
void qfs_names_choose(struct qfs_name_log *log, struct qfs_found *f, size_t n,
		      const struct qfs_strmap *own);
/* Log the line @fmt unless the last scan of the directory noted it, and note it in @log. */
void qfs_names_note(struct qfs_name_log *log, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Hand what @log noted over to *@kept (sorted; the old *@kept is freed) as the directory's
 * last scan; @log is emptied. */
void qfs_names_commit(struct qfs_name_log *log, uint64_t **kept, size_t *n_kept);
/* The view name of snapshot @sn of @s, whose image is shown as BASE.raw, in @out (NAME_MAX + 1
 * bytes): BASE@NAME.raw, or BASE@NAME%#ID.raw for a repeated name or at @level 1 (the first
 * is taken), BASE@NAME%#ID%#LEVEL.raw at @level 2 and up, or BASE@PREFIX%#ID.raw for a name
 * too long (logged once). False if no name fits (logged once). */
bool qfs_names_snap_view(const struct qfs_src *s, struct qfs_snap *sn, const char *base,
			 unsigned level, char *out);

#endif
