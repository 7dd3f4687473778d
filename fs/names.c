/* SPDX-License-Identifier: MIT */
/*
 * names.c - what tree-dir.c needs of names: the names of flat views (with the collision
 * rule) and of snapshot views (with repeated and overlong snapshot names), and the log of names
 * that are not the usual ones (once while they stay). Lookups go through string maps
 * (strmap.c), O(1) per name, so a directory of 65,536 snapshot views lists in O(n).
 *
 * No two views of a directory share a name, whatever order it lists its files in: files that
 * are not images and subdirectories keep their names; flat names differ from those and from
 * each other (qfs_names_choose), and hold no '@'; a snapshot view's name is its image's flat name
 * without ".raw", '@', and more, so it can only meet a file's or subdirectory's name (then it
 * takes its next form, tree-dir.c add_image) or another view of the same image.
 *
 * Locking: takes no lock. Called with qfs_tree.lock held (the snapshot's logged flag and the
 * directory node's renamed list, which qfs_names_commit() replaces, are under it).
 */
#include <errno.h>
#include <stdarg.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "names.h"

/* ---- encoding ---- */

/* Write the first @n bytes of @s to @out with each byte of @esc as "%XX", at most @cap - 1 bytes
 * (never half an escape, never half a UTF-8 character), and return the length of the whole
 * encoding. */
static size_t encode(const char *s, size_t n, const char *esc, char *out, size_t cap)
{
	size_t o = 0, len = 0, i;
	bool full = false;

	for (i = 0; i < n; i++) {
		size_t k = strchr(esc, s[i]) ? 3 : 1, u = k;

		/* a UTF-8 lead byte: its continuation bytes go with it or not at all */
		if (k == 1 && ((unsigned char)s[i] & 0xc0) == 0xc0)
			while (i + u - 1 + 1 < n && ((unsigned char)s[i + u] & 0xc0) == 0x80)
				u++;
		if (!full && o + u < cap) {
			if (k == 3)
				o += (size_t)snprintf(out + o, cap - o, "%%%02X",
						      (unsigned char)s[i]);
			else
				out[o++] = s[i];
		} else {
			full = true;
		}
		len += k;
	}
	out[o] = '\0';
	return len;
}

/* Snapshot names in file names: '/' is "%2F" and '%' is "%25". */
static size_t encode_snap(const char *s, char *out, size_t cap)
{
	return encode(s, strlen(s), "/%", out, cap);
}

/* ---- flat view names ---- */

/* The length of "NAME" in "NAME.qcow2" (also .qcow, .img); of the whole name otherwise. */
static size_t stem_len(const char *name)
{
	static const char *const sfx[] = {".qcow2", ".qcow", ".img"};
	size_t n = strlen(name), i;

	for (i = 0; i < 3; i++) {
		size_t k = strlen(sfx[i]);
		if (n > k && strcmp(name + n - k, sfx[i]) == 0)
			return n - k;
	}
	return n;
}

/* The name of the flat view of the image file @file at @level, in @out (NAME_MAX + 1 bytes):
 *   0: STEM.raw         the usual name
 *   1: FILE.raw         where STEM.raw is taken
 *   k >= 2: FILE%#k.raw where FILE.raw is taken too, FILE cut to fit.
 * In a name that holds '@', '%' and '@' are written "%25" and "%40": a flat view's name never
 * holds '@' and every snapshot view's does, after its image's flat name. False if the name
 * does not fit in a file name. */
static bool flat_name(const char *file, unsigned level, char *out)
{
	const char *esc = strchr(file, '@') ? "%@" : "";
	size_t n = level ? strlen(file) : stem_len(file);
	char tail[24];

	if (level < 2)
		snprintf(tail, sizeof(tail), ".raw");
	else
		snprintf(tail, sizeof(tail), "%%#%u.raw", level);
	if (encode(file, n, esc, out, NAME_MAX + 1 - strlen(tail)) > NAME_MAX - strlen(tail) &&
	    level < 2)
		return false;
	strcat(out, tail);
	return true;
}

static int cmp_found(const void *a, const void *b)
{
	const struct qfs_found *x = *(const struct qfs_found *const *)a,
			       *y = *(const struct qfs_found *const *)b;

	return strcmp(x->name, y->name);
}

static bool is_image(const struct qfs_found *f)
{
	return f->name && f->name[0] && f->s && f->s->qcow2;
}

/* Set image @f's level and flat name (NULL if it does not fit, or out of memory). */
static void set_level(struct qfs_found *f, unsigned level)
{
	char name[NAME_MAX + 1];

	f->level = level;
	free(f->flat);
	f->flat = flat_name(f->name, level, name) ? strdup(name) : NULL;
}

/* Levels 0 and 1, the same for any listing order: every image starts at level 0; one whose
 * name is taken by a file or subdirectory, or by another image's level-0 name, or by another
 * image's level-1 name, or does not fit, moves to level 1. Each image moves at most once and
 * at most 8 images share a level-0 name (4 suffixes, '@' or "%40"), so this is O(n). */
static void first_levels(struct qfs_found *f, size_t n, const struct qfs_strmap *own,
			 struct qfs_strmap *l0)
{
	size_t *queue = calloc(n ? n : 1, sizeof(*queue)), nq = 0, i;
	long j;

	for (i = 0; i < n; i++) {
		if (!is_image(&f[i]))
			continue;
		set_level(&f[i], 0);
		if (!f[i].flat || qfs_strmap_get(own, f[i].flat) >= 0) {
			f[i].level = 1; /* moves below */
		} else if ((j = qfs_strmap_get(l0, f[i].flat)) >= 0) {
			f[i].level = 1;
			f[j].level = 1;
		} else if (qfs_strmap_put(l0, f[i].flat, i) < 0) {
			f[i].level = 1; /* out of memory: never a name twice */
		}
	}
	for (i = 0; i < n; i++)
		if (is_image(&f[i]) && f[i].level == 1 && queue)
			queue[nq++] = i;
	while (nq) {
		i = queue[--nq];
		set_level(&f[i], 1);
		if (!f[i].flat || (j = qfs_strmap_get(l0, f[i].flat)) < 0 || (size_t)j == i ||
		    f[j].level)
			continue;
		f[j].level = 1; /* its level-0 name is this image's level-1 name */
		queue[nq++] = (size_t)j;
	}
	if (!queue) /* out of memory: level 1 for all, settled below */
		for (i = 0; i < n; i++)
			if (is_image(&f[i]) && f[i].level)
				set_level(&f[i], 1);
	free(queue);
}

/* Levels 2 and up: images whose level-1 name is taken (by a file or subdirectory, or by another
 * image's level-1 name) or does not fit take, in byte order of their file names, the first
 * free of FILE.raw, FILE%#2.raw, FILE%#3.raw... */
static void last_levels(struct qfs_found *f, size_t n, const struct qfs_strmap *own)
{
	struct qfs_strmap l1 = {0}, taken = {0};
	struct qfs_found **p = calloc(n ? n : 1, sizeof(*p));
	size_t np = 0, i;
	long j;

	for (i = 0; i < n; i++)
		if (is_image(&f[i]) && f[i].level && f[i].flat &&
		    (j = qfs_strmap_get(&l1, f[i].flat)) >= 0)
			f[j].level = f[i].level = 2; /* marks both */
		else if (is_image(&f[i]) && f[i].level && f[i].flat)
			qfs_strmap_put(&l1, f[i].flat, i);
	for (i = 0; i < n; i++) {
		if (!is_image(&f[i]) && f[i].name && f[i].name[0])
			qfs_strmap_put(&taken, f[i].name, i);
		else if (f[i].flat && f[i].level < 2 && qfs_strmap_get(own, f[i].flat) < 0)
			qfs_strmap_put(&taken, f[i].flat, i);
		else if (is_image(&f[i]) && p)
			p[np++] = &f[i];
		else if (is_image(&f[i])) { /* out of memory: no view rather than a name twice */
			free(f[i].flat);
			f[i].flat = NULL;
		}
	}
	if (np)
		qsort(p, np, sizeof(*p), cmp_found);
	for (i = 0; i < np; i++) {
		unsigned level;

		for (level = 1; level < UINT_MAX; level++) {
			set_level(p[i], level);
			if (p[i]->flat && qfs_strmap_get(&taken, p[i]->flat) < 0)
				break;
		}
		if (p[i]->flat && qfs_strmap_put(&taken, p[i]->flat, 0) < 0) {
			free(p[i]->flat); /* out of memory: no view rather than a name twice */
			p[i]->flat = NULL;
		}
	}
	free(p);
	qfs_strmap_free(&l1);
	qfs_strmap_free(&taken);
}

void qfs_names_choose(struct qfs_name_log *log, struct qfs_found *f, size_t n,
		      const struct qfs_strmap *own)
{
	char want[NAME_MAX + 1];
	struct qfs_strmap l0 = {0};
	size_t i;

	first_levels(f, n, own, &l0);
	qfs_strmap_free(&l0);
	last_levels(f, n, own);
	for (i = 0; i < n; i++) {
		if (!is_image(&f[i]) || !f[i].flat || (!f[i].level && !strchr(f[i].name, '@')))
			continue;
		if (f[i].level == 0)
			qfs_names_note(log,
				       "'%s/%s' is shown as '%s': in an image name with '@', "
				       "'%%' and '@' are written %%25 and %%40",
				       log->dir, f[i].name, f[i].flat);
		else if (flat_name(f[i].name, 0, want))
			qfs_names_note(log,
				       "'%s/%s' is shown as '%s': '%s' is the name of another "
				       "view or file in the directory",
				       log->dir, f[i].name, f[i].flat, want);
		else
			qfs_names_note(log, "'%s/%s' is shown as '%s': its name is too long",
				       log->dir, f[i].name, f[i].flat);
	}
}

/* ---- renames, logged once ---- */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

void qfs_names_note(struct qfs_name_log *log, const char *fmt, ...)
{
	char msg[2 * PATH_MAX];
	uint64_t h;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	h = qfs_strmap_hash(msg);
	if (log->n == log->cap) {
		size_t cap = log->cap ? 2 * log->cap : 16;
		uint64_t *nh = realloc(log->h, cap * sizeof(*nh));

		if (nh) {
			log->h = nh;
			log->cap = cap;
		}
	}
	if (log->n < log->cap)
		log->h[log->n++] = h;
	if (!log->last || !bsearch(&h, log->last, log->n_last, sizeof(h), cmp_u64))
		qfs_log("%s", msg);
}

void qfs_names_commit(struct qfs_name_log *log, uint64_t **kept, size_t *n_kept)
{
	if (log->n)
		qsort(log->h, log->n, sizeof(*log->h), cmp_u64);
	free(*kept);
	*kept = log->h;
	*n_kept = log->n;
	log->last = log->h;
	log->n_last = log->n;
	log->h = NULL;
	log->n = log->cap = 0;
}

/* ---- snapshot view names ---- */

/* The view name of snapshot @sn of the image shown as BASE.raw, in @out (NAME_MAX + 1 bytes):
 *   BASE@NAME.raw        the first usable snapshot of a name, at @level 0;
 *   BASE@NAME%#ID.raw    a later snapshot of the same name (qcow2 allows repeated names; the
 *                        ids tell them apart), or at @level 1 (the first name is taken by a
 *                        file or subdirectory);
 *   BASE@NAME%#ID%#L.raw at @level L >= 2 (that name is taken too);
 *   BASE@PREFIX%#ID.raw  a name too long for a file name, cut to fit (logged once), with
 *                        "%#L" before ".raw" at @level L >= 2.
 * An encoded name holds '%' only in "%2F" and "%25", so "%#" never comes from a name and the
 * last forms cannot collide with the first. Returns false if no name fits (logged). */
bool qfs_names_snap_view(const struct qfs_src *s, struct qfs_snap *sn, const char *base,
			 unsigned level, char *out)
{
	char enc[NAME_MAX + 1], id[NAME_MAX + 1], tail[NAME_MAX + 24];
	size_t len = encode_snap(sn->name, enc, sizeof(enc)), blen = strlen(base), room;

	if (!sn->dup && !level && blen + 1 + len + 4 <= NAME_MAX)
		return snprintf(out, NAME_MAX + 1, "%s@%s.raw", base, enc) <= NAME_MAX;
	if (encode_snap(sn->id, id, sizeof(id)) >= sizeof(id) - 1)
		id[0] = '\0';
	if (level < 2)
		snprintf(tail, sizeof(tail), "%%#%s.raw", id);
	else
		snprintf(tail, sizeof(tail), "%%#%s%%#%u.raw", id, level);
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
