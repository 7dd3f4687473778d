/* SPDX-License-Identifier: MIT */
/*
 * compare.c - qcow2_compare(): do two chains show the same flat view? As `qemu-img compare`
 * (QEMU 7.2, img_compare()) decides it: over the common length, ranges both show as zeros (or
 * holes) are equal; a range one shows as zeros is equal if the other reads zeros there; other
 * ranges are read and compared. Past the shorter one, the longer must read zeros. In strict
 * mode a size difference, or a range whose allocation differs (a hole, zeros a layer decides,
 * data, compressed data), is a difference too.
 *
 * What cannot differ is not read: both answers are extents of the chains' metadata
 * (qcow2_chain_map()), and where both come from the same cluster of the same file (an image
 * and its overlay: the overlay's holes show its backing file's clusters), the bytes are the
 * same ones. So comparing an image with a fresh overlay of it reads no data at all.
 *
 * Both chains are opened read-only with QEMU's reader locks (unless @o->force_share). No
 * library lock of its own.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "jobs/jobs.h"

#define CMP_BUF_BYTES (1u << 20) /* read at most this much of each chain at once */

struct side {
	struct qcow2_chain *c;
	uint64_t size;
	uint8_t *buf;
};

static bool is_zero(const struct qcow2_extent *e)
{
	return e->kind == QCOW2_EXTENT_ZERO || e->kind == QCOW2_EXTENT_UNALLOCATED;
}

/* The same file (device and inode), whatever handle opened it. */
static bool same_file(struct qcow2_io *a, struct qcow2_io *b)
{
	struct stat sa, sb;

	if (a == b)
		return true;
	if (!a || !b || qcow2_io_fd(a) < 0 || qcow2_io_fd(b) < 0)
		return false;
	return fstat(qcow2_io_fd(a), &sa) == 0 && fstat(qcow2_io_fd(b), &sb) == 0 &&
	       sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* Both extents (starting at the same guest offset) are the same bytes on disk. */
static bool same_bytes(const struct qcow2_extent *a, const struct qcow2_extent *b)
{
	if (a->kind != b->kind || a->host_off != b->host_off || !same_file(a->io, b->io))
		return false;
	return a->kind == QCOW2_EXTENT_DATA ||
	       (a->kind == QCOW2_EXTENT_COMPRESSED && a->comp_bytes == b->comp_bytes);
}

/* The allocation status strict mode compares, as qemu-img map tells it: a hole, zeros a layer
 * decides, data (with a host offset), compressed data. */
static int status_of(const struct qcow2_extent *e)
{
	return e->kind == QCOW2_EXTENT_UNALLOCATED ? 0 : 1 + (int)e->kind;
}

/* First byte of @buf[0, @n) that is not zero, or @n. */
static uint64_t first_nonzero(const uint8_t *buf, uint64_t n)
{
	uint64_t i;

	for (i = 0; i < n; i++)
		if (buf[i])
			return i;
	return n;
}

/* Does @s read zeros over [@off, @off + @n)? 1 (sets *@at to the first byte that is not), 0,
 * or -errno. */
static int check_zero(struct side *s, uint64_t off, uint64_t n, uint64_t *at)
{
	uint64_t i;
	int r = qcow2_chain_pread(s->c, s->buf, n, off);

	if (r < 0)
		return r;
	i = first_nonzero(s->buf, n);
	if (i == n)
		return 0;
	*at = off + i;
	return 1;
}

/* Compare [@off, @off + @n) (@n at most CMP_BUF_BYTES) of both: 1 with *@at, 0, -errno. */
static int check_same(struct side *a, struct side *b, uint64_t off, uint64_t n, uint64_t *at)
{
	uint64_t i;
	int r = qcow2_chain_pread(a->c, a->buf, n, off);

	if (r == 0)
		r = qcow2_chain_pread(b->c, b->buf, n, off);
	if (r < 0)
		return r;
	if (!memcmp(a->buf, b->buf, n))
		return 0;
	for (i = 0; a->buf[i] == b->buf[i]; i++)
		;
	*at = off + i;
	return 1;
}

static void progress(const struct qcow2_job *job, uint64_t done, uint64_t total)
{
	if (job && job->progress)
		job->progress(job->ctx, done, total);
}

static bool cancelled(const struct qcow2_job *job)
{
	return job && job->cancelled && job->cancelled(job->ctx);
}

/* One step over the common length at @off: *@len bytes done; 1 with res set on a difference. */
static int step(struct side *a, struct side *b, uint64_t off, uint64_t end, bool strict,
		uint64_t *len, struct qcow2_compare_result *res)
{
	struct qcow2_extent ea, eb;
	uint64_t n;
	int r;

	r = qcow2_chain_map(a->c, off, end - off, &ea);
	if (r == 0)
		r = qcow2_chain_map(b->c, off, end - off, &eb);
	if (r < 0)
		return r;
	if (!ea.len || !eb.len)
		return qcow2_set_error(-EIO, "mapping stopped at offset %" PRIu64, off);
	n = ea.len < eb.len ? ea.len : eb.len;
	*len = n;
	if (strict && status_of(&ea) != status_of(&eb)) {
		res->status_mismatch = true;
		res->offset = off;
		return 1;
	}
	if ((is_zero(&ea) && is_zero(&eb)) || same_bytes(&ea, &eb))
		return 0;
	n = *len = n < CMP_BUF_BYTES ? n : CMP_BUF_BYTES;
	if (is_zero(&ea) || is_zero(&eb))
		r = check_zero(is_zero(&ea) ? b : a, off, n, &res->offset);
	else
		r = check_same(a, b, off, n, &res->offset);
	return r;
}

/* Past the shorter chain: the longer (@s) must read zeros from @off on. */
static int check_tail(struct side *s, uint64_t off, uint64_t total, const struct qcow2_job *job,
		      struct qcow2_compare_result *res)
{
	struct qcow2_extent e;
	uint64_t n;
	int r;

	while (off < s->size) {
		if (cancelled(job))
			return qcow2_set_error(-ECANCELED, "interrupted");
		r = qcow2_chain_map(s->c, off, s->size - off, &e);
		if (r < 0)
			return r;
		if (!e.len)
			return qcow2_set_error(-EIO, "mapping stopped at offset %" PRIu64, off);
		n = e.len < CMP_BUF_BYTES || is_zero(&e) ? e.len : CMP_BUF_BYTES;
		if (!is_zero(&e)) {
			r = check_zero(s, off, n, &res->offset);
			if (r != 0)
				return r;
		}
		off += n;
		progress(job, off, total);
	}
	return 0;
}

static int run(struct side *a, struct side *b, const struct qcow2_compare_opts *o,
	       const struct qcow2_job *job, struct qcow2_compare_result *res)
{
	uint64_t end = a->size < b->size ? a->size : b->size, off = 0, len = 0, total;
	int r;

	total = a->size > b->size ? a->size : b->size;
	res->size_mismatch = a->size != b->size;
	res->common_bytes = end;
	if (o->strict && res->size_mismatch)
		return 1;
	while (off < end) {
		if (cancelled(job))
			return qcow2_set_error(-ECANCELED, "interrupted");
		r = step(a, b, off, end, o->strict, &len, res);
		if (r != 0)
			return r;
		off += len;
		progress(job, off, total);
	}
	if (!res->size_mismatch)
		return 0;
	return check_tail(a->size > b->size ? a : b, end, total, job, res);
}

static int open_side(const char *path, const struct qcow2_compare_opts *o, struct side *s)
{
	struct qcow2_chain_opts co = {.lock = !o->force_share, .top_blockdev = true};
	int r = qcow2_chain_open(path, &co, &s->c);

	if (r < 0)
		return r;
	s->size = qcow2_chain_size(s->c);
	s->buf = malloc(CMP_BUF_BYTES);
	return s->buf ? 0 : qcow2_oom();
}

int qcow2_compare(const char *a, const char *b, const struct qcow2_compare_opts *o,
		  const struct qcow2_job *job, struct qcow2_compare_result *res)
{
	struct side sa = {0}, sb = {0};
	int r;

	memset(res, 0, sizeof(*res));
	r = open_side(a, o, &sa);
	if (r == 0)
		r = open_side(b, o, &sb);
	if (r == 0)
		r = run(&sa, &sb, o, job, res);
	if (r > 0)
		res->differ = true;
	free(sa.buf);
	free(sb.buf);
	qcow2_chain_close(sa.c);
	qcow2_chain_close(sb.c);
	return r < 0 ? r : 0;
}
