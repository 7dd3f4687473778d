/* SPDX-License-Identifier: MIT */
/*
 * convert.c - new images made from chains: copy (blockcopy, qemu-img convert) and external
 * snapshots (virsh snapshot-create --disk-only).
 *
 * A copy is built under a hidden name next to its destination (.DEST.qcowctl-part, the same
 * on every run, so a second run replaces what a killed one left), filled by the copy engine
 * (copy.c), made durable, and only then renamed to DEST, the directory synced after: DEST is
 * never half-made. An external snapshot's overlay is created whole (create.c) while the image
 * under it is held as a reader, so no other process writes it meanwhile.
 *
 * Locks: none of its own (copy.c's readers; QEMU's file locks through the chain it opens).
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jobs/jobs.h"

/* ---- copy (blockcopy, convert) ---- */

/* The backing name a shallow copy at @dest stores for @c's layer 1: the source's own name
 * when both live in the same directory, else the absolute path. */
static int shallow_backing(struct qcow2_chain *c, const char *dest, char *out, size_t cap)
{
	char a[PATH_MAX], b[PATH_MAX], *da, *db;
	struct qcow2_layer_info top;
	int n;

	qcow2_chain_layer(c, 0, &top);
	snprintf(a, sizeof(a), "%s", top.path);
	if (!realpath(dest, b)) {
		char d[PATH_MAX], *slash;

		snprintf(d, sizeof(d), "%s", dest);
		slash = strrchr(d, '/');
		if (slash)
			*slash = 0;
		if (!realpath(slash ? (d[0] ? d : "/") : ".", b))
			return qcow2_set_error(-errno, "'%s': %s", dest, strerror(errno));
		strcat(b, "/x");
	}
	da = dirname(a);
	db = dirname(b);
	if (strcmp(da, db) == 0 && top.image)
		n = snprintf(out, cap, "%s", qcow2_image_header(top.image)->backing_file);
	else
		n = snprintf(out, cap, "%s", qcow2_commit_layer_path(c, 1));
	return n < 0 || (size_t)n >= cap ? qcow2_set_error(-ENAMETOOLONG, "name too long") : 0;
}

/* The hidden name a copy is built under, next to @dest: the same on every run, so running
 * the command again after a crash replaces what the crash left. */
static int part_name(const char *dest, char *out, size_t cap)
{
	const char *slash = strrchr(dest, '/');
	int n = slash ? snprintf(out, cap, "%.*s/.%s.qcowctl-part", (int)(slash - dest), dest,
				 slash + 1)
		      : snprintf(out, cap, ".%s.qcowctl-part", dest);

	return n < 0 || (size_t)n >= cap ? qcow2_set_error(-ENAMETOOLONG, "name too long") : 0;
}

static int new_dest(struct qcow2_chain *c, const char *part, const char *dest,
		    const struct qcow2_convert_opts *o, struct qcow2_chain **dst,
		    struct qcow2_io **raw)
{
	struct qcow2_chain_opts wo = {.lock = true, .writable = true};
	struct qcow2_create_opts co;
	struct qcow2_layer_info top;
	char backing[PATH_MAX];
	int r = 0, fd;

	if (o->raw) {
		fd = open(part, O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0644);
		if (fd < 0)
			return qcow2_set_error(-errno, "cannot create '%s': %s", part,
					       strerror(errno));
		close(fd);
		r = qcow2_io_open_file(part, true, raw);
		return r < 0 ? r : qcow2_io_grow(*raw, qcow2_chain_size(c));
	}
	qcow2_create_opts_default(&co);
	qcow2_chain_layer(c, 0, &top);
	co.size = qcow2_chain_size(c);
	if (top.image) { /* the source's cluster layout, subclusters included */
		co.cluster_bits = qcow2_image_header(top.image)->cluster_bits;
		co.extended_l2 = qcow2_image_header(top.image)->incompat & QCOW2_INCOMPAT_EXTL2;
	}
	if (o->shallow && qcow2_chain_depth(c) > 1) {
		r = shallow_backing(c, dest, backing, sizeof(backing));
		co.backing_file = backing;
		co.backing_fmt = qcow2_commit_layer_format(c, 1);
	}
	if (r == 0)
		r = qcow2_image_create(part, &co);
	if (r == 0)
		r = qcow2_chain_open(part, &wo, dst);
	if (r == 0 && (r = qcow2_chain_lock_write(*dst, true)) < 0) {
		qcow2_chain_close(*dst);
		*dst = NULL;
	}
	return r;
}

/* Make the finished copy durable and give it its name. */
static int publish_copy(const char *part, const char *dest)
{
	if (rename(part, dest) < 0)
		return qcow2_set_error(-errno, "cannot rename '%s' to '%s': %s", part, dest,
				       strerror(errno));
	return qcow2_sync_dir(dest);
}

static int convert_run(struct qcow2_chain *c, const char *dest, const struct qcow2_convert_opts *o,
		       const struct qcow2_job *job, uint64_t *bytes)
{
	struct qcow2_copy_opts co = {0};
	struct qcow2_copy_stats st;
	struct qcow2_chain *dst = NULL;
	struct qcow2_io *raw = NULL;
	char part[PATH_MAX];
	int r = part_name(dest, part, sizeof(part));

	co.first = 0;
	co.limit = o->shallow ? 1 : qcow2_chain_depth(c);
	co.under_is_tail = true;
	co.compress = o->compress;
	co.dry_run = true;
	if (r == 0)
		r = qcow2_chain_copy(c, &co, NULL, &st);
	*bytes = st.planned_bytes;
	if (r < 0 || o->dry_run)
		return r;
	r = new_dest(c, part, dest, o, &dst, &raw);
	co.dst = dst;
	co.dst_raw = raw;
	co.under = o->shallow ? dst : NULL;
	co.dry_run = false;
	co.scratch = true; /* a copy that does not complete is deleted */
	if (r == 0)
		r = qcow2_chain_copy(c, &co, job, &st);
	if (r == 0)
		r = dst ? qcow2_chain_flush(dst) : qcow2_io_flush(raw);
	qcow2_chain_close(dst);
	qcow2_io_close(raw);
	if (r == 0)
		r = publish_copy(part, dest);
	else
		unlink(part);
	return r;
}

int qcow2_convert(const char *src, const char *dest, const struct qcow2_convert_opts *o,
		  const struct qcow2_job *job, struct qcow2_plan *plan)
{
	struct qcow2_chain_opts ro = {.lock = true, .keys = qcow2_job_keys(job)};
	struct qcow2_chain *c;
	uint64_t bytes = 0;
	bool exists = false;
	unsigned k;
	int r;

	memset(plan, 0, sizeof(*plan));
	if (o->raw && (o->shallow || o->compress))
		return qcow2_set_error(-EINVAL,
				       "a raw copy has no backing file and no compression");
	r = qcow2_chain_open(src, &ro, &c);
	if (r < 0)
		return r;
	r = qcow2_create_check_target(dest, &exists);
	if (r == 0 && exists && qcow2_commit_find_layer(c, dest, &k) == 0)
		r = qcow2_set_error(-EINVAL, "'%s' is part of the chain being copied", dest);
	if (r == 0)
		r = convert_run(c, dest, o, job, &bytes);
	if (r == 0)
		r = qcow2_commit_plan_add(plan, QCOW2_STEP_CREATE, dest, o->raw ? "raw" : "qcow2",
					  0);
	if (r == 0)
		r = qcow2_commit_plan_add(plan, QCOW2_STEP_COPY, dest, NULL, bytes);
	qcow2_chain_close(c);
	return r;
}

/* ---- external snapshots ---- */

int qcow2_snapshot_external(const char *image, const char *overlay, bool dry_run,
			    struct qcow2_plan *plan)
{
	struct qcow2_chain_opts ro = {.lock = true};
	struct qcow2_create_opts co;
	struct qcow2_chain *c;
	char name[PATH_MAX], dir_a[PATH_MAX], dir_b[PATH_MAX], *slash;
	struct stat st;
	int r;

	memset(plan, 0, sizeof(*plan));
	if (lstat(overlay, &st) == 0)
		return qcow2_set_error(-EEXIST, "'%s' already exists", overlay);
	/* A reader lock: refused while anyone writes the image that becomes a backing file. */
	r = qcow2_chain_open(image, &ro, &c);
	if (r < 0)
		return r;
	snprintf(dir_a, sizeof(dir_a), "%s", qcow2_commit_layer_path(c, 0));
	if (!realpath(overlay, dir_b)) {
		snprintf(name, sizeof(name), "%s", overlay);
		slash = strrchr(name, '/');
		if (slash)
			*slash = 0;
		if (!realpath(slash ? (name[0] ? name : "/") : ".", dir_b))
			r = qcow2_set_error(-errno, "'%s': %s", overlay, strerror(errno));
		else
			strcat(dir_b, "/x");
	}
	/* Stored relative when both live in one directory (the chain moves as a whole), else
	 * absolute. */
	if (r == 0) {
		char a[PATH_MAX], b[PATH_MAX];

		snprintf(a, sizeof(a), "%s", dir_a);
		snprintf(b, sizeof(b), "%s", dir_b);
		r = qcow2_commit_name_for(dir_b, qcow2_commit_layer_path(c, 0),
					  strcmp(dirname(a), dirname(b)) == 0, name, sizeof(name));
	}
	if (r == 0)
		r = qcow2_commit_plan_add(plan, QCOW2_STEP_CREATE, overlay, "qcow2", 0);
	if (r == 0)
		r = qcow2_commit_plan_add(plan, QCOW2_STEP_REPOINT, overlay, name, 0);
	if (r == 0 && !dry_run) {
		qcow2_create_opts_default(&co);
		co.size = qcow2_chain_size(c);
		co.backing_file = name;
		co.backing_fmt = qcow2_commit_layer_format(c, 0);
		r = qcow2_image_create(overlay, &co);
	}
	qcow2_chain_close(c);
	return r;
}
