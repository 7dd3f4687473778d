/* SPDX-License-Identifier: MIT */
/*
 * snapshot_model.c - the model and the checks of test_snapshot_write.c (snapshot_model.h).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "snapshot_model.h"

void model_free(struct model *x)
{
	uint32_t i;

	free(x->active);
	for (i = 0; i < x->n; i++) {
		free(x->name[i]);
		free(x->snap[i]);
	}
	memset(x, 0, sizeof(*x));
}

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	cr_assert(p);
	return p;
}

/* Read @n bytes through the L1 table @l1 (NULL: the active one) of an image without backing
 * file. */
void read_l1(struct qcow2_image *q, const struct qcow2_l1 *l1, uint8_t *buf, uint64_t n)
{
	struct qcow2_extent e;
	uint64_t off;

	for (off = 0; off < n; off += e.len) {
		cr_assert_eq(qcow2_image_map(q, l1, off, n - off, &e), 0, "%s", qcow2_last_error());
		if (e.kind == QCOW2_EXTENT_DATA)
			cr_assert_eq(qcow2_io_pread_full(e.io, buf + off, e.len, e.host_off), 0);
		else if (e.kind == QCOW2_EXTENT_COMPRESSED)
			cr_assert_eq(qcow2_image_read_compressed(
					 q, &e, off & (q->cluster_bytes - 1), buf + off, e.len),
				     0, "%s", qcow2_last_error());
		else
			memset(buf + off, 0, e.len);
	}
}

/* Read @n bytes of the view @snap (< 0: the active state). */
void view(struct qcow2_image *q, int snap, uint8_t *buf, uint64_t n)
{
	const struct qcow2_l1 *l1 = NULL;

	if (snap >= 0)
		cr_assert_eq(qcow2_image_snapshot_l1(q, (uint32_t)snap, &l1), 0, "%s",
			     qcow2_last_error());
	read_l1(q, l1, buf, n);
}

/* The model of what the builder made. */
void model_from_builder(struct model *x, const struct imgbuild *img)
{
	uint32_t i;

	x->size = img->o.size;
	x->active = xmalloc(x->size);
	imgbuild_expect(img, -1, 0, x->size, NULL, x->active);
	x->n = img->nb_snapshots;
	for (i = 0; i < x->n; i++) {
		x->name[i] = strdup(img->snaps[i].name);
		x->snap_size[i] = img->snaps[i].o.disk_bytes ? img->snaps[i].o.disk_bytes : x->size;
		x->snap[i] = xmalloc(x->snap_size[i]);
		imgbuild_expect(img, (int)i, 0, x->snap_size[i], NULL, x->snap[i]);
	}
}

/* The model after a create (of the active state as @name), an apply or a delete of @idx. */
void model_create(struct model *x, const char *name)
{
	x->name[x->n] = strdup(name);
	x->snap_size[x->n] = x->size;
	x->snap[x->n] = xmalloc(x->size);
	memcpy(x->snap[x->n], x->active, x->size);
	x->n++;
}

void model_apply(struct model *x, uint32_t idx)
{
	free(x->active);
	x->size = x->snap_size[idx];
	x->active = xmalloc(x->size);
	memcpy(x->active, x->snap[idx], x->size);
}

void model_delete(struct model *x, uint32_t idx)
{
	free(x->name[idx]);
	free(x->snap[idx]);
	memmove(&x->name[idx], &x->name[idx + 1], (x->n - idx - 1) * sizeof(x->name[0]));
	memmove(&x->snap[idx], &x->snap[idx + 1], (x->n - idx - 1) * sizeof(x->snap[0]));
	memmove(&x->snap_size[idx], &x->snap_size[idx + 1], (x->n - idx - 1) * 8);
	x->n--;
}

/* Does @q show exactly @x (names in order, every view, sizes)? */
bool shows(struct qcow2_image *q, const struct model *x, char *why, size_t cap)
{
	uint64_t big = x->size;
	uint8_t *buf;
	uint32_t i;
	bool ok = true;

	for (i = 0; i < x->n; i++)
		big = x->snap_size[i] > big ? x->snap_size[i] : big;
	if (qcow2_image_header(q)->size != x->size || qcow2_image_snapshot_count(q) != x->n) {
		snprintf(why, cap, "size %lu / %u snapshots, want %lu / %u",
			 (unsigned long)qcow2_image_header(q)->size, qcow2_image_snapshot_count(q),
			 (unsigned long)x->size, x->n);
		return false;
	}
	buf = xmalloc(big);
	view(q, -1, buf, x->size);
	if (memcmp(buf, x->active, x->size)) {
		snprintf(why, cap, "the active state differs");
		ok = false;
	}
	for (i = 0; ok && i < x->n; i++) {
		const struct qcow2_snapshot *s = qcow2_image_snapshot(q, i);

		if (strcmp(s->name, x->name[i]) || s->disk_bytes != x->snap_size[i]) {
			snprintf(why, cap, "snapshot %u is '%s', want '%s'", i, s->name,
				 x->name[i]);
			ok = false;
			break;
		}
		view(q, (int)i, buf, x->snap_size[i]);
		if (memcmp(buf, x->snap[i], x->snap_size[i])) {
			snprintf(why, cap, "snapshot '%s' differs", s->name);
			ok = false;
		}
	}
	free(buf);
	return ok;
}

void assert_shows(struct qcow2_image *q, const struct model *x, const char *when)
{
	char why[200] = "";

	cr_assert(shows(q, x, why, sizeof(why)), "%s: %s", when, why);
}

/* Open a copy of the bytes of @io as a new image. */
struct qcow2_image *reopen(struct qcow2_io *io, bool writable)
{
	struct qcow2_image_opts o = {.writable = writable};
	struct qcow2_image *out;
	size_t len;
	const void *b = qcow2_io_mem_bytes(io, &len);
	int r = qcow2_image_open(qcow2_io_mem_new("copy.qcow2", b, len), "copy.qcow2", &o, &out);

	cr_assert_eq(r, 0, "reopen: %s", qcow2_last_error());
	return out;
}

void assert_refcounts(struct qcow2_image *q, bool leaks_ok, const char *when)
{
	struct qcow2_check_result res;

	cr_assert_eq(qcow2_image_check(q, &res), 0, "%s: %s", when, qcow2_last_error());
	cr_assert_eq(res.refcount_errors, 0, "%s: %lu clusters with too low a refcount", when,
		     (unsigned long)res.refcount_errors);
	if (!leaks_ok)
		cr_assert_eq(res.leaks, 0, "%s: %lu leaked clusters", when,
			     (unsigned long)res.leaks);
}

/* ---- COPIED flags ---- */

static uint64_t refcount(struct qcow2_image *q, uint64_t host)
{
	uint64_t v;

	if (q->w)
		cr_assert_eq(qcow2_refcount_get_w(q, host >> q->h.cluster_bits, &v), 0);
	else
		cr_assert_eq(qcow2_image_refcount(q, host >> q->h.cluster_bits, &v), 0);
	return v;
}

/* Is cluster @host reached by any snapshot's L1 table (an L2 table or a data cluster)? */
static bool snapshot_uses(struct qcow2_image *q, uint64_t host)
{
	uint64_t *t = xmalloc(q->cluster_bytes);
	uint32_t s, i, j;
	bool found = false;

	for (s = 0; !found && s < qcow2_image_snapshot_count(q); s++) {
		const struct qcow2_l1 *l1;

		cr_assert_eq(qcow2_image_snapshot_l1(q, s, &l1), 0);
		for (i = 0; !found && i < l1->n; i++) {
			uint64_t l2 = l1->entries[i] & QCOW2_L1E_OFFSET_MASK;

			if (!l2)
				continue;
			found = l2 == host;
			cr_assert_eq(qcow2_l2cache_get(q->l2cache, q->io, l2, 0,
						       (uint32_t)(q->cluster_bytes / 8), t),
				     0);
			for (j = 0; !found && j < q->cluster_bytes / 8; j += q->l2_entry_words)
				found = !(t[j] & QCOW2_OFLAG_COMPRESSED) &&
					(t[j] & QCOW2_L2E_OFFSET_MASK) == host;
		}
	}
	free(t);
	return found;
}

/* Every active L1 and L2 entry's COPIED flag: @exact: set iff its refcount is 1 (what
 * qemu-img check demands); else only never set on a cluster a snapshot uses (what keeps a
 * snapshot safe from in-place writes; a crash may leave a flag missing, as QEMU's may). */
void assert_copied(struct qcow2_image *q, bool exact, const char *when)
{
	uint64_t *t = xmalloc(q->cluster_bytes);
	uint32_t i, j;

	for (i = 0; i < q->l1.n; i++) {
		uint64_t e = q->l1.entries[i], l2 = e & QCOW2_L1E_OFFSET_MASK;

		if (!l2)
			continue;
		if (exact)
			cr_assert_eq(!!(e & QCOW2_OFLAG_COPIED), refcount(q, l2) == 1,
				     "%s: L1 entry %u: COPIED %d, refcount %lu", when, i,
				     !!(e & QCOW2_OFLAG_COPIED), (unsigned long)refcount(q, l2));
		else if (e & QCOW2_OFLAG_COPIED)
			cr_assert(!snapshot_uses(q, l2),
				  "%s: L1 entry %u: COPIED on a shared table", when, i);
		cr_assert_eq(qcow2_l2cache_get(q->l2cache, q->io, l2, 0,
					       (uint32_t)(q->cluster_bytes / 8), t),
			     0);
		for (j = 0; j < q->cluster_bytes / 8; j += q->l2_entry_words) {
			uint64_t host = t[j] & QCOW2_L2E_OFFSET_MASK;
			bool copied = t[j] & QCOW2_OFLAG_COPIED;

			if (!host || (t[j] & QCOW2_OFLAG_COMPRESSED))
				continue;
			if (exact)
				cr_assert_eq(copied, refcount(q, host) == 1,
					     "%s: L2 entry %u/%u: COPIED %d, refcount %lu", when, i,
					     j, copied, (unsigned long)refcount(q, host));
			else if (copied)
				cr_assert(!snapshot_uses(q, host),
					  "%s: COPIED on a cluster a snapshot uses", when);
		}
	}
	free(t);
}

/* Everything a finished operation must leave, in @q and in a reopened copy of its bytes. */
void assert_done(struct qcow2_image *q, const struct model *x, const char *when)
{
	struct qcow2_image *back;

	assert_shows(q, x, when);
	assert_refcounts(q, false, when);
	assert_copied(q, true, when);
	back = reopen(qcow2_image_io(q), false);
	assert_shows(back, x, when);
	assert_refcounts(back, false, when);
	assert_copied(back, true, when);
	qcow2_image_close(back);
}
