/* SPDX-License-Identifier: MIT */
/*
 * check.c - the consistency check of one image, as `qemu-img check` makes it, on the engine's
 * walk (engine/walk.c, which counts what points at every host cluster and reports what it finds
 * on the way): then every cluster's stored refcount is compared with its count (lower: a
 * corruption, higher: a leak), and the COPIED flags of the active tables with "refcount == 1".
 * Nothing here changes the image.
 *
 * Locks: none of its own (the walk's, engine/walk.c: the L2 cache's leaf lock).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "integrity/integrity.h"

#define STEP 4096 /* clusters compared between two progress reports */

/* ---- comparing ---- */

int qcow2_check_compare(struct qcow2_scan *s)
{
	uint64_t i, v, c, highest = 0;
	int r = 0;

	s->total += s->n_used - s->n_file;
	for (i = 0; i < s->n_used && r == 0; i++) {
		if (i % STEP == STEP - 1 && (r = qcow2_walk_step(s, STEP)) < 0)
			break;
		r = qcow2_walk_refcount(s, i, &v);
		c = s->counts[i];
		if (r > 0) { /* as QEMU: an error of the check, not counted as anything else */
			s->res->check_errors++;
			qcow2_walk_say(
			    s, QCOW2_CHECK_CORRUPTION,
			    "Can't get refcount for cluster %" PRIu64 ": Input/output error", i);
			r = 0;
			continue;
		}
		if (r < 0 || (!v && !c))
			continue;
		highest = i;
		if (v < c) {
			s->res->corruptions++;
			s->res->refcount_errors++;
			qcow2_walk_say(s, QCOW2_CHECK_CORRUPTION,
				       "ERROR cluster %" PRIu64 " refcount=%" PRIu64
				       " reference=%" PRIu64,
				       i, v, c);
		} else if (v > c) {
			s->res->leaks++;
			qcow2_walk_say(s, QCOW2_CHECK_LEAK,
				       "Leaked cluster %" PRIu64 " refcount=%" PRIu64
				       " reference=%" PRIu64,
				       i, v, c);
		}
	}
	s->res->image_end_offset = (highest + 1) * s->img->cluster_bytes;
	return r < 0 ? r : qcow2_walk_step(s, s->n_used % STEP);
}

static int cmp_fix(const void *a, const void *b)
{
	const struct qcow2_fix *x = a, *y = b;

	if (x->l1 != y->l1)
		return x->l1 ? -1 : 1;
	if (x->table != y->table)
		return x->table < y->table ? -1 : 1;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static bool has_fix(const struct qcow2_scan *s, bool l1, uint64_t table, uint32_t idx)
{
	struct qcow2_fix key = {.table = table, .idx = idx, .l1 = l1};

	return s->n_fixes && bsearch(&key, s->fixes, s->n_fixes, sizeof(key), cmp_fix);
}

/* The refcount cluster @idx has (@planned: will have once the fixes are made). */
static int refcount_of(struct qcow2_scan *s, bool planned, uint64_t idx, uint64_t *v)
{
	if (!planned)
		return qcow2_walk_refcount(s, idx, v);
	*v = idx < s->n ? s->counts[idx] : 0;
	return 0;
}

static int copied_l2(struct qcow2_scan *s, bool planned, const char *verb,
		     enum qcow2_check_msg kind, uint64_t l2, uint64_t *found)
{
	struct qcow2_image *img = s->img;
	bool data_file = img->h.incompat & QCOW2_INCOMPAT_DATA_FILE;
	uint32_t j;
	uint64_t rc;
	int r = qcow2_walk_read_l2(s, l2);

	for (j = 0; r == 0 && j < img->l2_entries; j++) {
		uint64_t e = s->buf[j * img->l2_entry_words], host = e & QCOW2_L2E_OFFSET_MASK;

		if ((e & QCOW2_OFLAG_COMPRESSED) ||
		    (!host && !(data_file && e & QCOW2_OFLAG_COPIED)))
			continue;
		if (planned && has_fix(s, false, l2, j))
			continue;
		rc = 1;
		if (!data_file &&
		    (r = refcount_of(s, planned, host >> img->h.cluster_bits, &rc)) < 0)
			break;
		if (r > 0) { /* unreadable refcount: QEMU skips it silently */
			r = 0;
			continue;
		}
		if ((rc == 1) != !!(e & QCOW2_OFLAG_COPIED)) {
			(*found)++;
			s->copied_shared += !!(e & QCOW2_OFLAG_COPIED);
			qcow2_walk_say(s, kind,
				       "%s OFLAG_COPIED data cluster: l2_entry=%" PRIx64
				       " refcount=%" PRIu64,
				       verb, e, rc);
		}
	}
	return r;
}

int qcow2_check_copied(struct qcow2_scan *s, bool planned, const char *verb,
		       enum qcow2_check_msg kind, uint64_t *found)
{
	struct qcow2_image *img = s->img;
	uint32_t i;
	uint64_t rc;
	int r = 0;

	*found = 0;
	if (planned && s->n_fixes)
		qsort(s->fixes, s->n_fixes, sizeof(*s->fixes), cmp_fix);
	for (i = 0; i < img->l1.n && r == 0; i++) {
		uint64_t e = img->l1.entries[i], l2 = e & QCOW2_L1E_OFFSET_MASK;

		if (!l2 || (planned && has_fix(s, true, i, 0)))
			continue;
		r = refcount_of(s, planned, l2 >> img->h.cluster_bits, &rc);
		if (r > 0) { /* unreadable refcount: QEMU skips the entry, not its table */
			r = 0;
			rc = !!(e & QCOW2_OFLAG_COPIED);
		}
		if (r == 0 && (rc == 1) != !!(e & QCOW2_OFLAG_COPIED)) {
			(*found)++;
			s->copied_shared += !!(e & QCOW2_OFLAG_COPIED);
			qcow2_walk_say(s, kind,
				       "%s OFLAG_COPIED L2 cluster: l1_index=%u l1_entry=%" PRIx64
				       " refcount=%" PRIu64,
				       verb, i, e, rc);
		}
		if (r == 0)
			r = copied_l2(s, planned, verb, kind, l2, found);
		if (r == 0)
			r = qcow2_walk_step(s, 1);
	}
	return r;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Ask the disk for the refcount table and the active L2 tables at once, sorted by offset and
 * adjacent ones merged, before the walk reads them one after another: with a cold page cache
 * each of its reads would wait for the one before (the check's time grew faster than the
 * image). Only a hint: nothing is read here, a table outside the file is left to the walk. */
static void prefetch_tables(struct qcow2_image *img)
{
	uint64_t cs = img->cluster_bytes, *v, start, end;
	int fd = qcow2_io_fd(img->io);
	uint32_t i, n = 0;

	if (fd < 0)
		return;
	if (img->h.reftable_off && img->h.reftable_off < img->file_bytes)
		posix_fadvise(fd, (off_t)img->h.reftable_off,
			      (off_t)((uint64_t)img->h.reftable_clusters * cs),
			      POSIX_FADV_WILLNEED);
	v = img->l1.n ? malloc((size_t)img->l1.n * sizeof(*v)) : NULL;
	if (!v)
		return;
	for (i = 0; i < img->l1.n; i++) {
		uint64_t l2 = img->l1.entries[i] & QCOW2_L1E_OFFSET_MASK;

		if (l2 && !(l2 & (cs - 1)) && l2 < img->file_bytes)
			v[n++] = l2;
	}
	qsort(v, n, sizeof(*v), cmp_u64);
	for (i = 0; i < n;) {
		start = v[i];
		for (end = start + cs, i++; i < n && v[i] <= end; i++)
			end = v[i] + cs > end ? v[i] + cs : end;
		posix_fadvise(fd, (off_t)start, (off_t)(end - start), POSIX_FADV_WILLNEED);
	}
	free(v);
}

int qcow2_image_check_report(struct qcow2_image *img, const struct qcow2_check_opts *o,
			     struct qcow2_check_result *res)
{
	const struct qcow2_job *job = o ? o->job : NULL;
	struct qcow2_phase_mark pm = qcow2_phase_start();
	struct qcow2_scan s;
	uint64_t n = 0;
	int r;

	memset(res, 0, sizeof(*res));
	prefetch_tables(img);
	r = qcow2_walk_init(&s, img, o, res);
	if (r == 0)
		r = qcow2_walk_count(&s);
	qcow2_job_phase(job, "walk", pm, 0);
	pm = qcow2_phase_start();
	if (r == 0)
		r = qcow2_check_compare(&s);
	qcow2_job_phase(job, "compare", pm, 0);
	pm = qcow2_phase_start();
	if (r == 0)
		r = qcow2_check_copied(&s, false, "ERROR", QCOW2_CHECK_CORRUPTION, &n);
	qcow2_job_phase(job, "copied", pm, 0);
	res->corruptions += n;
	qcow2_walk_release(&s);
	return r < 0 ? qcow2_error_prefix(r, img->name) : 0;
}

int qcow2_image_check(struct qcow2_image *img, struct qcow2_check_result *res)
{
	return qcow2_image_check_report(img, NULL, res);
}
