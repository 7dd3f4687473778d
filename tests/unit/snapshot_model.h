/* SPDX-License-Identifier: MIT */
/*
 * snapshot_model.h - what test_snapshot_write.c checks images against: a model of every view
 * of an image (the active state and each snapshot, by name, with its size), the views read back
 * through the library, and the invariants every snapshot operation must keep (refcounts at
 * least their references, COPIED flags).
 */
#ifndef SNAPSHOT_MODEL_H
#define SNAPSHOT_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imgbuild.h"
#include "integrity/integrity.h"

#define MAX_SNAPS 8

/* What every view of an image must show. */
struct model {
	uint64_t size;
	uint8_t *active;
	uint32_t n;
	char *name[MAX_SNAPS];
	uint64_t snap_size[MAX_SNAPS];
	uint8_t *snap[MAX_SNAPS];
};

void model_free(struct model *x);
void *xmalloc(size_t n);
/* Read @n bytes through the L1 table @l1 (NULL: the active one) of an image without backing
 * file; view(): of the view @snap (< 0: the active state). */
void read_l1(struct qcow2_image *q, const struct qcow2_l1 *l1, uint8_t *buf, uint64_t n);
void view(struct qcow2_image *q, int snap, uint8_t *buf, uint64_t n);
/* The model of what the builder made. */
void model_from_builder(struct model *x, const struct imgbuild *img);
/* The model after a create (of the active state as @name), an apply or a delete of @idx. */
void model_create(struct model *x, const char *name);
void model_apply(struct model *x, uint32_t idx);
void model_delete(struct model *x, uint32_t idx);
/* Does @q show exactly @x (names in order, every view, sizes)? If not, why in @why. */
bool shows(struct qcow2_image *q, const struct model *x, char *why, size_t cap);
void assert_shows(struct qcow2_image *q, const struct model *x, const char *when);
/* Open a copy of the bytes of the memory io @io as a new image. */
struct qcow2_image *reopen(struct qcow2_io *io, bool writable);
/* No cluster has a refcount below its references (and, unless @leaks_ok, none above). */
void assert_refcounts(struct qcow2_image *q, bool leaks_ok, const char *when);
/* Every active L1 and L2 entry's COPIED flag: @exact: set iff its refcount is 1 (what
 * qemu-img check demands); else only never set on a cluster a snapshot uses (what keeps a
 * snapshot safe from in-place writes; a crash may leave a flag missing, as QEMU's may). */
void assert_copied(struct qcow2_image *q, bool exact, const char *when);
/* Everything a finished operation must leave, in @q and in a reopened copy of its bytes. */
void assert_done(struct qcow2_image *q, const struct model *x, const char *when);

#endif
