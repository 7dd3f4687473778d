/* SPDX-License-Identifier: MIT */
/*
 * verify.c - qcow2_image_repair(): a repair that never leaves an image with more errors than
 * it found: a damaged image is never made worse.
 *
 * "Errors" are what `qemu-img check` counts: corruptions + leaks + check errors. A repair keeps
 * its result only if a check of the image as it then is on disk (opened afresh, so nothing
 * cached in this process hides what is written) finds
 *   - no error at all (a clean image that was only marked dirty or corrupt stays clean), or
 *   - fewer errors than the check before the repair, and no more corruptions and check errors
 *     (a leak costs space; a corruption may cost data: one is never traded for the other).
 * Otherwise every byte it wrote is put back from an undo journal (undo.c), the file is
 * truncated to its old length, and the repair fails with -ENOTRECOVERABLE, "repair would not
 * improve the image: REASON; nothing changed". A repair that fails or is cancelled part way
 * is put back the same way.
 *
 * The steps: a planning pass (repair.c); when the refcount structure itself is broken, a new
 * one is built elsewhere first (rebuild.c) and the pass runs again on it; then the check of the
 * result. Crash safety (a kill, where nothing can be put back) comes from the write order of
 * each step, written next to each (repair.c, rebuild.c): the old refcount structure is never
 * written into, the rebuilt one is switched to with one header write, and the in-place steps
 * keep every refcount at least what points at its cluster.
 *
 * qcow2_image_repair_leaks() is `check -r leaks`: repair.c's count-down of leaked clusters
 * alone, refused on an image with other errors (it would leave them, so it never needs undo).
 *
 * Locks: none of its own; each pass's steps take w->lock (repair.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <unistd.h>

#include "integrity/integrity.h"

/* A second, read-only handle on the bytes of @io: the same file, or a copy of the memory. */
static int reopen_io(struct qcow2_io *io, struct qcow2_io **out)
{
	int fd = qcow2_io_fd(io), dup_fd;
	const void *bytes;
	size_t len;

	if (fd < 0) {
		bytes = qcow2_io_mem_bytes(io, &len);
		*out = qcow2_io_mem_new(qcow2_io_name(io), bytes, len);
		return *out ? 0 : qcow2_oom();
	}
	dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (dup_fd < 0)
		return qcow2_set_error(-errno, "'%s': %s", qcow2_io_name(io), strerror(errno));
	return qcow2_io_open_fd(dup_fd, qcow2_io_name(io), out);
}

static int reopen_data_file(void *ctx, const char *stored, struct qcow2_io **io)
{
	(void)stored;
	return reopen_io(ctx, io);
}

/* Check the image as it is on disk now. */
static int check_on_disk(struct qcow2_image *img, struct qcow2_check_result *res)
{
	struct qcow2_image_opts o = {NULL, NULL, 0, false, false, NULL};
	struct qcow2_image *fresh;
	struct qcow2_io *io;
	int r;

	if (img->data_io != img->io) {
		o.open_data_file = reopen_data_file;
		o.ctx = img->data_io;
	}
	r = reopen_io(img->io, &io);
	if (r == 0)
		r = qcow2_image_open(io, img->name, &o, &fresh);
	if (r < 0)
		return r;
	r = qcow2_image_check(fresh, res);
	qcow2_image_close(fresh);
	return r;
}

static uint64_t errors(const struct qcow2_check_result *c)
{
	return c->corruptions + c->leaks + c->check_errors;
}

/* Whether @after is better than @before (the rule at the top of this file); if not, why. */
static bool better(const struct qcow2_check_result *before, const struct qcow2_check_result *after,
		   char *why, size_t cap)
{
	uint64_t b = errors(before), a = errors(after);

	if (a == 0 || (a < b && after->corruptions + after->check_errors <=
				    before->corruptions + before->check_errors))
		return true;
	if (a >= b)
		snprintf(why, cap,
			 "it would leave %" PRIu64 " errors (%" PRIu64 " corruptions, %" PRIu64
			 " leaks, %" PRIu64 " check errors) where it found %" PRIu64,
			 a, after->corruptions, after->leaks, after->check_errors, b);
	else
		snprintf(why, cap,
			 "it would leave %" PRIu64 " corruptions and check errors where it found "
			 "%" PRIu64,
			 after->corruptions + after->check_errors,
			 before->corruptions + before->check_errors);
	return false;
}

static void say(const struct qcow2_check_opts *o, const char *text)
{
	if (o && o->message)
		o->message(o->ctx, QCOW2_CHECK_REPAIR, text);
}

/* Last, with the refcounts sound (a new table is allocated): incomplete snapshot table
 * entries get their full extra data, as `qemu-img check -r all` rewrites the table. */
static int complete_snapshots(struct qcow2_image *img, const struct qcow2_check_opts *o,
			      struct qcow2_check_result *res)
{
	uint32_t i, n;
	char text[96];
	int r;

	for (i = 0; i < qcow2_image_snapshot_count(img); i++)
		if (qcow2_image_snapshot(img, i)->incomplete) {
			snprintf(text, sizeof(text),
				 "Repairing snapshot table entry %u is incomplete", i);
			say(o, text);
		}
	r = qcow2_image_snapshot_complete(img, &n);
	res->corruptions_fixed += n;
	return r;
}

/* The passes, with a rebuild of the refcount structure between them when it is broken. */
static int run(struct qcow2_image *img, const struct qcow2_check_opts *o,
	       struct qcow2_check_result *res, bool *rebuilt)
{
	struct qcow2_check_result again;
	bool rebuild;
	int r = qcow2_repair_pass(img, o, false, true, res, &rebuild);

	*rebuilt = false;
	if (r < 0)
		return r;
	if (!rebuild)
		return complete_snapshots(img, o, res);
	say(o, "Rebuilding refcount structure");
	r = qcow2_rebuild_refcounts(img, o);
	if (r < 0)
		return qcow2_error_prefix(r, img->name);
	*rebuilt = true;
	r = qcow2_repair_pass(img, o, false, false, &again, &rebuild);
	if (r == 0 && rebuild)
		r = qcow2_set_error(
		    -EUCLEAN, "'%s': the rebuilt refcount structure is still broken", img->name);
	res->corruptions_fixed += again.corruptions_fixed;
	res->leaks_fixed += again.leaks_fixed;
	return r < 0 ? r : complete_snapshots(img, o, res);
}

/* Put every byte back; the image object's caches no longer match the disk: nothing more of
 * them is written (not at close either). */
static int undo(struct qcow2_image *img, struct qcow2_undo *u, int r)
{
	char msg[512];

	img->w->ready = false;
	snprintf(msg, sizeof(msg), "%s", qcow2_last_error());
	if (qcow2_undo_replay(u) < 0)
		return qcow2_set_error(r,
				       "%s; putting the image back failed too (%s): it is left "
				       "part repaired",
				       msg, qcow2_last_error());
	return qcow2_set_error(r, "%s; nothing changed", msg);
}

int qcow2_image_repair(struct qcow2_image *img, const struct qcow2_check_opts *o, bool dry_run,
		       struct qcow2_check_result *res)
{
	struct qcow2_check_result after;
	struct qcow2_undo *u = NULL;
	bool rebuilt = false;
	char why[256];
	int r;

	if (dry_run) {
		r = qcow2_repair_pass(img, o, true, true, res, &rebuilt);
		if (r == 0 && rebuilt)
			say(o, "Rebuilding refcount structure");
		return r;
	}
	memset(res, 0, sizeof(*res));
	if (!(img->w && img->repair))
		return qcow2_set_error(-EINVAL, "'%s' is not open for repair", img->name);
	r = qcow2_image_flush(img);
	if (r == 0)
		r = qcow2_undo_start(img->io, &u);
	if (r < 0)
		return qcow2_error_prefix(r, img->name);
	r = run(img, o, res, &rebuilt);
	/* Everything on disk, as a close would leave it (the second flush writes the
	 * count-downs of what the first one unlinked). */
	if (r == 0 && img->w->ready)
		r = qcow2_image_flush(img);
	if (r == 0 && img->w->ready)
		r = qcow2_image_flush(img);
	if (r == 0)
		r = check_on_disk(img, &after);
	if (r == 0 && !better(res, &after, why, sizeof(why)))
		r = qcow2_set_error(-ENOTRECOVERABLE,
				    "'%s': repair would not improve the image: %s", img->name, why);
	if (r < 0)
		r = undo(img, u, r);
	else if (rebuilt) { /* as QEMU counts a rebuild's fixes: what is no longer there */
		res->corruptions_fixed =
		    res->corruptions > after.corruptions ? res->corruptions - after.corruptions : 0;
		res->leaks_fixed = res->leaks > after.leaks ? res->leaks - after.leaks : 0;
	}
	qcow2_undo_free(u);
	return r;
}

int qcow2_image_repair_leaks(struct qcow2_image *img, bool dry_run, struct qcow2_check_result *res)
{
	if (!dry_run && !(img->w && img->repair))
		return qcow2_set_error(-EINVAL, "'%s' is not open for repair", img->name);
	return qcow2_repair_leaks(img, dry_run, res);
}
