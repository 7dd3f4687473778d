/* SPDX-License-Identifier: MIT */
/*
 * snapshot.h - internal snapshots, write side: the plan of an operation (snapshot-plan.c) and
 * its write (snapshot-write.c). Above engine (docs/design.md).
 */
#ifndef QCOW2_SNAPSHOT_H
#define QCOW2_SNAPSHOT_H

#include "engine/engine.h"

/* snapshot-plan.c: what a snapshot operation changes, worked out before anything changes;
 * snapshot-write.c carries it out. References one operation adds to and takes from one host
 * cluster: */
struct qcow2_snapshot_delta {
	uint64_t idx;
	uint32_t plus, minus;
	uint32_t keep; /* references the operation leaves (a delete: the active state's) */
};

struct qcow2_snapshot_change {
	struct qcow2_image *img;
	enum qcow2_snapshot_op kind;
	int idx;			/* the snapshot (apply, delete); -1 for create */
	const struct qcow2_l1 *sl1;	/* its L1 table */
	struct qcow2_snapshot_delta *d; /* sorted by cluster, one per cluster */
	size_t n, cap;
	uint8_t *table; /* the new snapshot table (NULL: no snapshot left) */
	size_t table_bytes;
	struct qcow2_snapshot sn;	 /* create: the new entry (id and name allocated) */
	size_t entry_at;		 /* create: where it lies in @table */
	bool locked;			 /* snapshot-write.c holds w->frees and w->lock */
	bool keep;			 /* add_reach() counts references that stay (keep) */
	struct qcow2_refcount_cursor rc; /* read-only images: their refcount lookups */
	struct qcow2_snapshot_plan plan;
};
void qcow2_snapshot_change_init(struct qcow2_snapshot_change *o, struct qcow2_image *img,
				enum qcow2_snapshot_op kind);
void qcow2_snapshot_change_release(struct qcow2_snapshot_change *o);
/* Work out @o's plan for @arg (create: the name; else an id or name): the deltas, the new
 * snapshot table, the counts. A writable image's w->lock is held. Changes nothing. */
int qcow2_snapshot_change_plan(struct qcow2_snapshot_change *o, const char *arg);
/* (A delete with @arg NULL drops the invalid entry @o->idx, see plan_drop().) */

#endif
