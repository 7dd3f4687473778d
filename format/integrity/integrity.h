/* SPDX-License-Identifier: MIT */
/*
 * integrity.h - check, repair, the rebuild of a broken refcount structure and the verified
 * repair, on the walk of the engine (engine.h). Above snapshot (docs/design.md).
 */
#ifndef QCOW2_INTEGRITY_H
#define QCOW2_INTEGRITY_H

#include "snapshot/snapshot.h"

/* check.c, after a walk's count (engine/walk.c): compare every cluster's stored refcount with
 * its count (lower: a corruption, higher: a leak). */
int qcow2_check_compare(struct qcow2_scan *s);
/* Check the COPIED flags of the active tables against the stored refcounts (@planned: against
 * the counts, skipping the entries a fix rewrites), reporting each mismatch as "@verb
 * OFLAG_COPIED ..." with message kind @kind. *@found gets their number. */
int qcow2_check_copied(struct qcow2_scan *s, bool planned, const char *verb,
		       enum qcow2_check_msg kind, uint64_t *found);

/* repair.c: one pass of a repair (qcow2_image_repair(), verify.c): a planning scan (its
 * problems reported when @report_found, counted in @res), then the fixes applied (@dry_run:
 * reported). When the refcount structure itself is broken, *@rebuild is set and nothing is
 * applied: the caller rebuilds it first (rebuild.c). */
int qcow2_repair_pass(struct qcow2_image *img, const struct qcow2_check_opts *o, bool dry_run,
		      bool report_found, struct qcow2_check_result *res, bool *rebuild);

/* rebuild.c: replace the refcount structure of @img (open for repair) by a new one built from
 * what points at each cluster, in fresh clusters past the end of the file, switched to with
 * one header write; the write side is then set up again on it. */
int qcow2_rebuild_refcounts(struct qcow2_image *img, const struct qcow2_check_opts *o);

/* repair.c: the leak and COPIED part of a repair, and nothing else: refcounts above what points
 * at their cluster counted down to it, durable, then the COPIED flags set where a refcount is
 * now 1 (what an interrupted count-down leaves). Refused, changing nothing (-EUCLEAN), when a
 * check finds anything else wrong: a refcount below its references, a bad entry, a COPIED flag
 * on a shared cluster. @res: the check's counts before, leaks_fixed and corruptions_fixed (the
 * flags set; with @dry_run, what it would fix, changing nothing: any image). A writable
 * image no one else uses; no lock held. */
int qcow2_repair_leaks(struct qcow2_image *img, bool dry_run, struct qcow2_check_result *res);

#endif
