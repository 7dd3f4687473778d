/* SPDX-License-Identifier: MIT */
/*
 * strmap.c - a string map with open addressing and linear probing, grown to keep at most half
 * of its slots used, so that a directory of 65,536 snapshot views lists in O(n). It holds the
 * caller's keys (never copies them) and takes no lock: each map has one owner.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "strmap.h"

uint64_t qfs_strmap_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ull;
	return h ^ (h >> 29);
}

static int strmap_grow(struct qfs_strmap *m)
{
	size_t cap = m->mask ? 2 * (m->mask + 1) : 64, i, j;
	const char **key = calloc(cap, sizeof(*key));
	size_t *val = calloc(cap, sizeof(*val));

	if (!key || !val) {
		free(key);
		free(val);
		return -ENOMEM;
	}
	for (i = 0; m->mask && i <= m->mask; i++) {
		if (!m->key[i])
			continue;
		for (j = qfs_strmap_hash(m->key[i]) & (cap - 1); key[j]; j = (j + 1) & (cap - 1))
			;
		key[j] = m->key[i];
		val[j] = m->val[i];
	}
	free(m->key);
	free(m->val);
	m->key = key;
	m->val = val;
	m->mask = cap - 1;
	return 0;
}

int qfs_strmap_put(struct qfs_strmap *m, const char *key, size_t val)
{
	size_t j;

	if (2 * (m->n + 1) > (m->mask ? m->mask + 1 : 0) && strmap_grow(m) < 0)
		return -ENOMEM;
	for (j = qfs_strmap_hash(key) & m->mask; m->key[j]; j = (j + 1) & m->mask)
		if (strcmp(m->key[j], key) == 0)
			return 0;
	m->key[j] = key;
	m->val[j] = val;
	m->n++;
	return 1;
}

long qfs_strmap_get(const struct qfs_strmap *m, const char *key)
{
	size_t j;

	if (!m->mask)
		return -1;
	for (j = qfs_strmap_hash(key) & m->mask; m->key[j]; j = (j + 1) & m->mask)
		if (strcmp(m->key[j], key) == 0)
			return (long)m->val[j];
	return -1;
}

void qfs_strmap_free(struct qfs_strmap *m)
{
	free(m->key);
	free(m->val);
	memset(m, 0, sizeof(*m));
}
