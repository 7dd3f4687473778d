/* SPDX-License-Identifier: MIT */
/*
 * strmap.h - a map from strings to indexes (strmap.c), under the source cache and the names.
 * Takes no lock: each map's owner guards it.
 */
#ifndef QCOWFS_STRMAP_H
#define QCOWFS_STRMAP_H

#include <stddef.h>
#include <stdint.h>

/* A map from strings (the caller's, they must outlive the map) to indexes: open addressing,
 * O(1) expected per operation, so listings and lookups cost O(n) in entries, not O(n^2).
 * A zeroed struct is an empty map. Not locked: its owner's lock guards it. */
struct qfs_strmap {
	const char **key;
	size_t *val;
	size_t mask, n;
};

/* Add @key -> @val unless @key is present. 1 added, 0 present, -ENOMEM. */
int qfs_strmap_put(struct qfs_strmap *m, const char *key, size_t val);
/* The value of @key, or -1. */
long qfs_strmap_get(const struct qfs_strmap *m, const char *key);
/* Free the map's tables (not the keys) and leave it empty. */
void qfs_strmap_free(struct qfs_strmap *m);
/* The 64-bit string hash the map uses (FNV-1a, folded). */
uint64_t qfs_strmap_hash(const char *s);

#endif
