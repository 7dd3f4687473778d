/* SPDX-License-Identifier: MIT */
/*
 * convert.c - new images made from chains: copy (blockcopy, qemu-img convert) and external
 * snapshots (virsh snapshot-create --disk-only).
 *
 * A copy is built under a hidden name next to its destination (.DEST.qcowctl-part, the same
 * on every run, so a second run replaces what a killed one left), filled by the copy engine
 * (copy.c), made durable, and only then renamed to DEST, the directory synced after: DEST is
 * never half-made. The new image takes the caller's options (qemu-img convert -o), with the
 * source's cluster size, compat level and extended L2 where they were not asked for; with -B it
 * backs onto the given file and the copy engine compares with the view below, writing only
 * what differs. With -n (@existing) the destination is an existing image, written in place
 * (as qemu-img does): each range written shows the source's view, zeros included, so a killed
 * run leaves it valid, reading byte by byte what it held or the source's view. An external
 * snapshot's overlay is created whole (create.c) while the image
 * under it is held as a reader, so no other process writes it meanwhile.
 *
 * Locks: none of its own (copy.c's readers; QEMU's file locks through the chain it opens).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
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

/* The new image's options: the caller's (or qemu-img's defaults), with the source's cluster
 * size, compat level and extended_l2 where they were not asked for. */
static void dest_options(struct qcow2_chain *c, const struct qcow2_convert_opts *o,
			 struct qcow2_create_opts *co)
{
	const struct qcow2_header *h;
	struct qcow2_layer_info top;

	if (o->create)
		*co = *o->create;
	else
		qcow2_create_opts_default(co);
	co->job = NULL;
	co->size = qcow2_chain_size(c);
	co->backing_file = co->backing_fmt = NULL;
	qcow2_chain_layer(c, 0, &top);
	if (!top.image)
		return;
	h = qcow2_image_header(top.image);
	if (!(co->set & QCOW2_CREATE_SET_CLUSTER_SIZE))
		co->cluster_bits = h->cluster_bits;
	if (!(co->set & QCOW2_CREATE_SET_EXTENDED_L2))
		co->extended_l2 = (h->incompat & QCOW2_INCOMPAT_EXTL2) && co->cluster_bits >= 14;
	if (!(co->set & QCOW2_CREATE_SET_COMPAT))
		co->version = co->lazy_refcounts || co->extended_l2 || co->refcount_order != 4 ||
				      co->compression_type != QCOW2_COMPRESSION_ZLIB
				  ? 3
				  : h->version;
}

/* The backing file of the new image: -B's (its format probed unless given), or with
 * --shallow the source's own. @backing (PATH_MAX bytes) and @fmt (32) hold the names. */
static int dest_backing(struct qcow2_chain *c, const char *dest, const struct qcow2_convert_opts *o,
			struct qcow2_create_opts *co, char *backing, char *fmt)
{
	struct qcow2_backing_probe probe;
	int r = 0;

	if (o->backing) {
		r = qcow2_create_probe_backing(dest, o->backing, o->backing_fmt, &probe);
		if (r < 0)
			return r;
		snprintf(fmt, 32, "%s", o->backing_fmt ? o->backing_fmt : probe.format);
		co->backing_file = o->backing;
		co->backing_fmt = fmt;
	} else if (o->shallow && qcow2_chain_depth(c) > 1) {
		r = shallow_backing(c, dest, backing, PATH_MAX);
		co->backing_file = backing;
		co->backing_fmt = qcow2_commit_layer_format(c, 1);
	}
	return r;
}

/* The keys the new image is opened with: its own (encrypt.format=luks) for the file built
 * under the hidden name, the job's for the rest of its chain. */
struct part_keys {
	const char *part;
	const struct qcow2_key *key;
	struct qcow2_keys job;
};

static int part_key(void *ctx, const char *path, const struct qcow2_key **key)
{
	const struct part_keys *p = ctx;

	if (p->key && strcmp(path, p->part) == 0) {
		*key = p->key;
		return 1;
	}
	return p->job.find ? p->job.find(p->job.ctx, path, key) : 0;
}

static int new_dest(struct qcow2_chain *c, const char *part, const char *dest,
		    const struct qcow2_convert_opts *o, const struct qcow2_job *job,
		    struct qcow2_chain **dst, struct qcow2_io **raw)
{
	char canon[PATH_MAX];
	struct part_keys pk = {canon, NULL, qcow2_job_keys(job)};
	struct qcow2_chain_opts wo = {.lock = true, .writable = true, .keys = {part_key, &pk}};
	struct qcow2_create_opts co;
	char backing[PATH_MAX], fmt[32];
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
	dest_options(c, o, &co);
	r = dest_backing(c, dest, o, &co, backing, fmt);
	if (r == 0)
		r = qcow2_image_create(part, &co);
	pk.key = co.luks ? co.luks_key : NULL;
	if (r == 0 && !realpath(part, canon))
		r = qcow2_set_error(-errno, "'%s': %s", part, strerror(errno));
	if (r == 0)
		r = qcow2_chain_open(part, &wo, dst);
	if (r == 0 && (r = qcow2_chain_lock_write(*dst, true)) < 0) {
		qcow2_chain_close(*dst);
		*dst = NULL;
	}
	return r;
}

/* -n: the existing qcow2 image @dest, opened for writing (QEMU's write lock taken, unless
 * @dry_run: then only looked at), at least as large as the source (as qemu-img convert -n
 * requires). */
static int open_existing(struct qcow2_chain *c, const char *dest, bool dry_run,
			 const struct qcow2_job *job, struct qcow2_chain **dst)
{
	struct qcow2_chain_opts wo = {
	    .lock = true, .writable = !dry_run, .top_blockdev = true, .keys = qcow2_job_keys(job)};
	struct qcow2_layer_info top;
	int r = qcow2_chain_open(dest, &wo, dst);

	if (r < 0)
		return r;
	qcow2_chain_layer(*dst, 0, &top);
	if (!top.image)
		r = qcow2_set_error(-EINVAL,
				    "'%s' is not a qcow2 image: -n writes into qcow2 images", dest);
	else if (qcow2_chain_size(*dst) < qcow2_chain_size(c))
		r = qcow2_set_error(
		    -EINVAL, "'%s' is smaller than the source (%" PRIu64 " < %" PRIu64 " bytes)",
		    dest, qcow2_chain_size(*dst), qcow2_chain_size(c));
	if (r == 0 && !dry_run)
		r = qcow2_chain_lock_write(*dst, true);
	if (r < 0 || dry_run) {
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

/* What the copy engine is asked: every layer (or the top one, shallow); below the copy lies
 * nothing (a new standalone image), the source's own backing (shallow), -B's backing (only
 * what differs from it is written), or what the existing image holds (-n: zeroed where the
 * source shows zeros). */
static void copy_opts(struct qcow2_chain *c, const struct qcow2_convert_opts *o,
		      struct qcow2_copy_opts *co)
{
	memset(co, 0, sizeof(*co));
	co->limit = o->shallow ? 1 : qcow2_chain_depth(c);
	co->under_is_tail = !o->backing && !o->existing;
	co->compare = o->backing != NULL;
	co->compress = o->compress;
	co->min_sparse = o->min_sparse;
	co->no_sparse = o->no_sparse;
	co->threads = o->threads;
}

static int convert_run(struct qcow2_chain *c, const char *dest, const struct qcow2_convert_opts *o,
		       const struct qcow2_job *job, uint64_t *bytes)
{
	struct qcow2_copy_opts co;
	struct qcow2_copy_stats st;
	struct qcow2_chain *dst = NULL;
	struct qcow2_io *raw = NULL;
	char part[PATH_MAX];
	struct qcow2_phase_mark pm = qcow2_phase_start();
	int r = part_name(dest, part, sizeof(part));

	copy_opts(c, o, &co);
	co.dry_run = true;
	if (r == 0)
		r = qcow2_chain_copy(c, &co, NULL, &st);
	*bytes = st.planned_bytes;
	qcow2_job_phase(job, "plan", pm, 0);
	if (r < 0 || o->dry_run)
		return r;
	pm = qcow2_phase_start();
	r = o->existing ? open_existing(c, dest, false, job, &dst)
			: new_dest(c, part, dest, o, job, &dst, &raw);
	qcow2_job_phase(job, o->existing ? "open" : "create", pm, 0);
	co.dst = dst;
	co.dst_raw = raw;
	co.under = o->shallow || o->backing || o->existing ? dst : NULL;
	co.dry_run = false;
	co.scratch = !o->existing; /* a new copy that does not complete is deleted */
	if (r == 0)
		r = qcow2_chain_copy(c, &co, job, &st);
	pm = qcow2_phase_start();
	if (r == 0)
		r = dst ? qcow2_chain_flush(dst) : qcow2_io_flush(raw);
	qcow2_chain_close(dst);
	qcow2_io_close(raw);
	qcow2_job_phase(job, "flush", pm, 0);
	if (o->existing)
		return r;
	pm = qcow2_phase_start();
	if (r == 0)
		r = publish_copy(part, dest);
	else
		unlink(part);
	qcow2_job_phase(job, "rename", pm, 0);
	return r;
}

/* Options that do not go together, refused before anything is opened. */
static int check_convert_opts(const struct qcow2_convert_opts *o)
{
	if (o->raw && (o->shallow || o->compress || o->backing))
		return qcow2_set_error(-EINVAL,
				       "a raw copy has no backing file and no compression");
	if (o->raw && o->create && o->create->luks)
		return qcow2_set_error(-EINVAL, "a raw copy is not encrypted: -O qcow2 with "
						"encrypt.format=luks");
	if (o->shallow && o->backing)
		return qcow2_set_error(-EINVAL, "--shallow keeps the source's backing file: "
						"no -B with it");
	if (o->existing && (o->raw || o->shallow || o->backing || o->compress))
		return qcow2_set_error(-EINVAL,
				       "-n writes into an existing qcow2 image: no -O raw, "
				       "--shallow, -B or -c with it");
	return 0;
}

/* What would make DEST refuse the copy, found before anything is written (dry runs too): it
 * is in the source's chain, it cannot be replaced, the new image's options do not hold
 * together, or (-n) it is no qcow2 image as large as the source. */
static int check_dest(struct qcow2_chain *c, const char *dest, const struct qcow2_convert_opts *o,
		      const struct qcow2_job *job)
{
	struct qcow2_chain *dry = NULL;
	struct qcow2_create_opts co;
	bool exists = o->existing;
	unsigned k;
	int r = 0;

	if (o->existing && access(dest, F_OK) < 0)
		r = qcow2_set_error(-errno, "cannot open '%s': %s", dest, strerror(errno));
	else if (!o->existing)
		r = qcow2_create_check_target(dest, &exists);
	else if (o->dry_run)
		r = open_existing(c, dest, true, job, &dry);
	if (r == 0 && exists && qcow2_commit_find_layer(c, dest, &k) == 0)
		r = qcow2_set_error(-EINVAL, "'%s' is part of the chain being copied", dest);
	if (r < 0 || o->raw || o->existing)
		return r;
	dest_options(c, o, &co);
	if (o->backing)
		co.backing_file = o->backing;
	else if (o->shallow && qcow2_chain_depth(c) > 1)
		co.backing_file = qcow2_commit_layer_path(c, 1);
	r = qcow2_create_opts_check(&co);
	if (r < 0)
		return qcow2_error_prefix(r, dest);
	if (o->compress && co.prealloc != QCOW2_PREALLOC_OFF)
		return qcow2_set_error(-EINVAL,
				       "'%s': compression and preallocation do not go together "
				       "(as in qemu-img)",
				       dest);
	if (o->compress && co.luks)
		return qcow2_set_error(-EINVAL,
				       "'%s': compression and encryption do not go together "
				       "(as in qemu-img)",
				       dest);
	return 0;
}

int qcow2_convert(const char *src, const char *dest, const struct qcow2_convert_opts *o,
		  const struct qcow2_job *job, struct qcow2_plan *plan)
{
	struct qcow2_chain_opts ro = {
	    .lock = true, .snapshot = o->snapshot, .keys = qcow2_job_keys(job)};
	struct qcow2_chain *c;
	uint64_t bytes = 0;
	int r;

	memset(plan, 0, sizeof(*plan));
	r = check_convert_opts(o);
	if (r == 0)
		r = qcow2_chain_open(src, &ro, &c);
	if (r < 0)
		return r;
	r = check_dest(c, dest, o, job);
	if (r == 0)
		r = convert_run(c, dest, o, job, &bytes);
	if (r == 0 && !o->existing)
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
