/* SPDX-License-Identifier: MIT */
/*
 * chain.h - a chain of images as one flat view, and the owner map of its chunks. Above
 * integrity (docs/design.md).
 */
#ifndef QCOW2_CHAIN_H
#define QCOW2_CHAIN_H

#include "integrity/integrity.h"

/* ownermap.c: which chain layer provides each chunk of the flat view; filled lazily. */
struct qcow2_ownermap;
#define QCOW2_OWNER_UNKNOWN 0u
#define QCOW2_OWNER_NONE    0xffffffffu
int qcow2_ownermap_new(uint64_t size, uint32_t chunk_bits, struct qcow2_ownermap **out);
void qcow2_ownermap_free(struct qcow2_ownermap *m);
/* Owner of chunk @idx: QCOW2_OWNER_UNKNOWN, QCOW2_OWNER_NONE, or layer + 1. Lock-free. */
uint32_t qcow2_ownermap_get(const struct qcow2_ownermap *m, uint64_t idx);
void qcow2_ownermap_set(struct qcow2_ownermap *m, uint64_t idx, uint32_t owner);
uint32_t qcow2_ownermap_chunk_bits(const struct qcow2_ownermap *m);
/* Make chunks [@first, @last] unknown again (only pages that exist are touched). */
void qcow2_ownermap_forget(struct qcow2_ownermap *m, uint64_t first, uint64_t last);

#endif
