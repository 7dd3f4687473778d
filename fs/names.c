/* SPDX-License-Identifier: MIT */
/*
 * names.c - what tree.c and src.c need of names: the view name of an internal snapshot (SPEC 2,
 * with repeated and overlong snapshot names), and a string map (open addressing) that keeps
 * listings and lookups O(1) per name, so a directory of 65,536 snapshot views lists in O(n).
 * Called with qfs_tree.lock held (the snapshot's logged flag is under it).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tree-internal.h"

/* ---- string maps ---- */

static uint64_t hash64(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ull;
	return h ^ (h >> 29);
}

static int strmap_grow(struct strmap *m)
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
		for (j = hash64(m->key[i]) & (cap - 1); key[j]; j = (j + 1) & (cap - 1))
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

int strmap_put(struct strmap *m, const char *key, size_t val)
{
	size_t j;

	if (2 * (m->n + 1) > (m->mask ? m->mask + 1 : 0) && strmap_grow(m) < 0)
		return -ENOMEM;
	for (j = hash64(key) & m->mask; m->key[j]; j = (j + 1) & m->mask)
		if (strcmp(m->key[j], key) == 0)
			return 0;
	m->key[j] = key;
	m->val[j] = val;
	m->n++;
	return 1;
}

long strmap_get(const struct strmap *m, const char *key)
{
	size_t j;

	if (!m->mask)
		return -1;
	for (j = hash64(key) & m->mask; m->key[j]; j = (j + 1) & m->mask)
		if (strcmp(m->key[j], key) == 0)
			return (long)m->val[j];
	return -1;
}

void strmap_free(struct strmap *m)
{
	free(m->key);
	free(m->val);
	memset(m, 0, sizeof(*m));
}

/* ---- snapshot view names ---- */

/* Snapshot names in file names: '/' is "%2F" and '%' is "%25" (SPEC 2). Writes at most
 * @cap - 1 bytes of the encoding to @out (never half an escape, never half a UTF-8 character)
 * and returns the length of the whole encoding. */
static size_t encode_snap(const char *s, char *out, size_t cap)
{
	size_t o = 0, len = 0;
	bool full = false;

	for (; *s; s++) {
		size_t k = (*s == '/' || *s == '%') ? 3 : 1, u = k;

		/* a UTF-8 lead byte: its continuation bytes go with it or not at all */
		if (k == 1 && ((unsigned char)*s & 0xc0) == 0xc0)
			while (((unsigned char)s[u] & 0xc0) == 0x80)
				u++;
		if (!full && o + u < cap) {
			if (k == 3)
				o +=
				    (size_t)snprintf(out + o, cap - o, "%%%02X", (unsigned char)*s);
			else
				out[o++] = *s;
		} else {
			full = true;
		}
		len += k;
	}
	out[o] = '\0';
	return len;
}

/* The view name of snapshot @sn of the image shown as BASE.raw, in @out (NAME_MAX + 1 bytes):
 *   BASE@NAME.raw        the first usable snapshot of a name (SPEC 2);
 *   BASE@NAME%#ID.raw    a later snapshot of the same name (qcow2 allows repeated names; the
 *                        ids tell them apart);
 *   BASE@PREFIX%#ID.raw  a name too long for a file name, cut to fit (logged once).
 * An encoded name holds '%' only in "%2F" and "%25", so "%#" never comes from a name and the
 * last two forms cannot collide with the first. Returns false if no name fits (logged). */
bool snap_view_name(const struct src *s, struct snap *sn, const char *base, char *out)
{
	char enc[NAME_MAX + 1], id[NAME_MAX + 1], tail[NAME_MAX + 8];
	size_t len = encode_snap(sn->name, enc, sizeof(enc)), blen = strlen(base), room;

	if (!sn->dup && blen + 1 + len + 4 <= NAME_MAX)
		return snprintf(out, NAME_MAX + 1, "%s@%s.raw", base, enc) <= NAME_MAX;
	if (encode_snap(sn->id, id, sizeof(id)) >= sizeof(id) - 1)
		id[0] = '\0';
	snprintf(tail, sizeof(tail), "%%#%s.raw", id);
	if (!id[0] || blen + 1 + strlen(tail) > NAME_MAX) {
		if (!sn->logged)
			qfs_log(
			    "'%s': snapshot '%.64s' (id %.32s) has no view: its name does not fit "
			    "in a file name",
			    s->path, sn->name, sn->id);
		sn->logged = true;
		return false;
	}
	room = NAME_MAX - blen - 1 - strlen(tail);
	if (len > room)
		encode_snap(sn->name, enc, room + 1);
	if (snprintf(out, NAME_MAX + 1, "%s@%s%s", base, enc, tail) > NAME_MAX)
		return false; /* cannot happen: room was counted */
	if (len > room && !sn->logged)
		qfs_log(
		    "'%s': snapshot '%.64s...' (id %.32s): name too long for a file name, shown "
		    "as '%s'",
		    s->path, sn->name, sn->id, out);
	if (len > room)
		sn->logged = true;
	return true;
}
