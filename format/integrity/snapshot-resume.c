/* SPDX-License-Identifier: MIT */
/*
 * snapshot-resume.c - a snapshot delete that a rerun completes: the journal that says a delete
 * was interrupted after its switch, and the cleanup such a rerun finishes.
 *
 * A delete (snapshot-write.c) is durable at its switch, the header write that drops the entry
 * from the snapshot table; what follows only counts down the refcounts of what the snapshot
 * alone held and sets the COPIED flags where a refcount fell to 1. A kill after the switch
 * leaves leaks and missing COPIED flags: a valid image, but one whose snapshot cannot be named
 * any more. The journal is the evidence that lets a rerun tell that state from a mistyped name.
 *
 * Write order (journal.c makes each journal step durable, the image's steps are
 * snapshot-write.c's):
 *   1. the journal ".IMAGE.qcowctl-snapshot-delete", naming the image and the snapshot (its id
 *      and its name);
 *   2. the delete: the new snapshot table, the header (the switch), the count-down, the flags;
 *   3. the journal removed.
 * A rerun reads the journal first:
 *   - none: a missing name is an error, whatever the image holds (a leak is not evidence);
 *   - the name is no snapshot and the journal does not name it either (a mistyped name):
 *     an error, and nothing is changed;
 *   - it names the missing snapshot (killed after the switch): the interrupted delete's
 *     cleanup is finished by qcow2_repair_leaks() (leaked clusters counted down, missing
 *     COPIED flags set, nothing else touched; refused if the image has any other error), the
 *     journal removed, and the snapshot reported already deleted;
 *   - the name is a snapshot (the journal's, killed before the switch, which leaked the
 *     clusters it had allocated for the new table; or another one's, past its switch): that
 *     cleanup first, the same way, then the delete as usual with a journal of its own.
 * Killed during the cleanup, the journal stays and the next rerun does it again (it is
 * idempotent: it only brings refcounts down to their references and sets flags from them).
 *
 * Locking: none of its own. The caller holds the image alone (QEMU's write locks, as qcowctl
 * takes them); the journal is guarded by the same locks.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "integrity/integrity.h"

#define JOB "snapshot-delete"

/* What a journal says: the image's file name, the snapshot's id and name. */
struct journal {
	char *image, *id, *name;
};

static void journal_release(struct journal *j)
{
	free(j->image);
	free(j->id);
	free(j->name);
	memset(j, 0, sizeof(*j));
}

/* Names go into the journal in hex: a snapshot name may hold any byte but NUL. */
static void put_hex(char **p, const char *key, const char *s)
{
	*p += sprintf(*p, "%s ", key);
	for (; *s; s++)
		*p += sprintf(*p, "%02x", (unsigned char)*s);
	*p += sprintf(*p, "\n");
}

static int get_hex(const char *line, const char *key, char **out)
{
	size_t k = strlen(key), n, i;
	unsigned v;

	if (strncmp(line, key, k) || line[k] != ' ')
		return -EINVAL;
	line += k + 1;
	n = strcspn(line, "\n");
	if (n % 2)
		return -EINVAL;
	*out = malloc(n / 2 + 1);
	if (!*out)
		return -ENOMEM;
	for (i = 0; i < n / 2; i++) {
		if (sscanf(line + 2 * i, "%2x", &v) != 1 || !v) {
			free(*out);
			*out = NULL;
			return -EINVAL;
		}
		(*out)[i] = (char)v;
	}
	(*out)[n / 2] = 0;
	return 0;
}

static const char *image_base(const char *path)
{
	const char *b = strrchr(path, '/');

	return b ? b + 1 : path;
}

static int journal_encode(const char *image, const char *id, const char *name, char **out)
{
	size_t cap = 64 + 2 * (strlen(image_base(image)) + strlen(id) + strlen(name));
	char *p;

	*out = p = malloc(cap);
	if (!p)
		return qcow2_oom();
	p += sprintf(p, "qcowctl snapshot delete\n");
	put_hex(&p, "image", image_base(image));
	put_hex(&p, "id", id);
	put_hex(&p, "name", name);
	return 0;
}

/* Read the journal at @path into @j: 1, 0 if there is none, or -errno (one it cannot read or
 * make sense of: -EUCLEAN, naming it, to be looked at rather than guessed about). */
static int journal_load(const char *path, const char *image, struct journal *j)
{
	char *text, *line[4], *save = NULL;
	int r, i;

	memset(j, 0, sizeof(*j));
	r = qcow2_journal_read(path, &text);
	if (r <= 0)
		return r;
	for (i = 0; i < 4; i++)
		line[i] = strtok_r(i ? NULL : text, "\n", &save);
	r = line[3] && !strcmp(line[0], "qcowctl snapshot delete") ? 0 : -EINVAL;
	if (r == 0)
		r = get_hex(line[1], "image", &j->image);
	if (r == 0)
		r = get_hex(line[2], "id", &j->id);
	if (r == 0)
		r = get_hex(line[3], "name", &j->name);
	if (r == 0 && strcmp(j->image, image_base(image)))
		r = -EINVAL; /* a journal copied along with another image */
	free(text);
	if (r < 0)
		journal_release(j);
	if (r == -ENOMEM)
		return qcow2_oom();
	if (r < 0)
		return qcow2_set_error(-EUCLEAN,
				       "'%s' is not the journal of a snapshot delete of "
				       "'%s' (remove it if no delete was interrupted)",
				       path, image);
	return 1;
}

/* Whether @img has the snapshot the journal names (the same id and name). */
static bool has_snapshot(const struct qcow2_image *img, const struct journal *j)
{
	uint32_t i, n = qcow2_image_snapshot_count(img);

	for (i = 0; i < n; i++) {
		const struct qcow2_snapshot *s = qcow2_image_snapshot(img, i);

		if (!strcmp(s->id, j->id) && !strcmp(s->name, j->name))
			return true;
	}
	return false;
}

/* The journal tells of a delete of @arg (by id or name) that went past its switch. */
static bool names_deleted(const struct qcow2_image *img, const struct journal *j, const char *arg)
{
	return (!strcmp(j->id, arg) || !strcmp(j->name, arg)) && !has_snapshot(img, j);
}

/* Finish the cleanup of the delete the journal at @path tells of, then remove it. */
static int finish(struct qcow2_image *img, const char *path, const struct journal *j,
		  struct qcow2_snapshot_resume *res)
{
	struct qcow2_check_result cr;
	int r = qcow2_repair_leaks(img, false, &cr);

	if (r < 0)
		return qcow2_set_error(r,
				       "a delete of snapshot '%s' was interrupted, and finishing "
				       "its cleanup failed: %s",
				       j->name, qcow2_last_error());
	res->leaks_fixed = cr.leaks_fixed;
	res->copied_fixed = cr.corruptions_fixed;
	return qcow2_journal_remove(path);
}

/* Delete snapshot @idx with the journal at @path around it (steps 1 to 3). A refusal comes
 * from the plan, before the journal; a failure after it keeps the journal, since before the
 * switch it leaves leaked clusters too, which the next delete reclaims. */
static int delete_journaled(struct qcow2_image *img, int idx, const char *image, const char *path)
{
	const struct qcow2_snapshot *s = qcow2_image_snapshot(img, (uint32_t)idx);
	struct journal j = {NULL, strdup(s->id), strdup(s->name)};
	struct qcow2_snapshot_plan plan;
	char *text = NULL;
	int r = j.id && j.name ? 0 : qcow2_oom();

	if (r == 0)
		r = qcow2_image_snapshot_plan(img, QCOW2_SNAPSHOT_DELETE, j.id, &plan);
	if (r == 0)
		r = journal_encode(image, j.id, j.name, &text);
	if (r == 0)
		r = qcow2_journal_write(path, text);
	if (r == 0)
		r = qcow2_image_snapshot_delete(img, j.id);
	if (r == 0)
		r = qcow2_journal_remove(path);
	free(text);
	journal_release(&j);
	return r;
}

int qcow2_image_snapshot_delete_resumable(struct qcow2_image *img, const char *id_or_name,
					  const char *image, struct qcow2_snapshot_resume *res)
{
	char path[PATH_MAX];
	struct journal j;
	int r, idx;

	memset(res, 0, sizeof(*res));
	r = qcow2_journal_path(image, JOB, path, sizeof(path));
	if (r == 0)
		r = journal_load(path, image, &j);
	if (r < 0)
		return r;
	idx = qcow2_image_find_snapshot(img, id_or_name);
	if (idx < 0 && r == 1 && names_deleted(img, &j, id_or_name)) {
		qcow2_clear_error();
		r = finish(img, path, &j, res);
		res->already_deleted = r == 0;
	} else if (idx < 0) {
		r = idx; /* no snapshot by that name, and no evidence of a delete of it */
	} else {
		/* A journal: a delete was interrupted, before its switch (the clusters it
		 * allocated leak) or after it (another snapshot's count-down left undone). */
		if (r == 1)
			r = finish(img, path, &j, res);
		r = r < 0 ? r : delete_journaled(img, idx, image, path);
	}
	journal_release(&j);
	return r < 0 ? r : 0;
}

int qcow2_image_snapshot_delete_pending(struct qcow2_image *img, const char *id_or_name,
					const char *image, struct qcow2_snapshot_resume *res)
{
	struct qcow2_check_result cr;
	char path[PATH_MAX];
	struct journal j;
	int r;

	memset(res, 0, sizeof(*res));
	r = qcow2_journal_path(image, JOB, path, sizeof(path));
	if (r == 0)
		r = journal_load(path, image, &j);
	if (r <= 0)
		return r;
	res->already_deleted = names_deleted(img, &j, id_or_name);
	r = res->already_deleted || qcow2_image_find_snapshot(img, id_or_name) >= 0 ? 1 : 0;
	qcow2_clear_error();
	journal_release(&j);
	if (r == 1 && (r = qcow2_repair_leaks(img, true, &cr)) == 0) {
		res->leaks_fixed = cr.leaks_fixed;
		res->copied_fixed = cr.corruptions_fixed;
		r = 1;
	}
	return r;
}
