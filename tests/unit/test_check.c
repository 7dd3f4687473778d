/* SPDX-License-Identifier: MIT */
/*
 * test_check.c - the consistency check and the repair (check.c, repair.c) on images built in
 * memory: clean images of every shape report nothing and the fragmentation numbers the builder
 * implies; each kind of damage is reported with qemu-img's words and counts; a repair leaves an
 * image that checks clean, reads what it read before (zeros where nothing could be read), has
 * its dirty and corrupt bits cleared, and a dry run changes no byte; a repair stopped at any of
 * its writes (where a crash would stop it) or cancelled at any poll leaves no refcount lower than
 * what points at its cluster that was not already so, and a second repair finishes the job.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgbuild.h"
#include "integrity/integrity.h"
#include "testutil.h"

static struct imgbuild *img;
static struct qcow2_image *qi;

/* The lines a check or repair reported. */
struct msgs {
	char text[1 << 16];
	size_t len;
	unsigned n[4]; /* per enum qcow2_check_msg */
};

static struct msgs msgs;

static void on_msg(void *ctx, enum qcow2_check_msg kind, const char *text)
{
	struct msgs *m = ctx;
	int n = snprintf(m->text + m->len, sizeof(m->text) - m->len, "%s\n", text);

	if (n > 0 && (size_t)n < sizeof(m->text) - m->len)
		m->len += (size_t)n;
	m->n[kind]++;
}

static const struct qcow2_check_opts report = {NULL, on_msg, &msgs};

static void setup(void)
{
	img = NULL;
	qi = NULL;
	memset(&msgs, 0, sizeof(msgs));
}

static void teardown(void)
{
	qcow2_image_close(qi);
	imgbuild_free(img);
}

TestSuite(check, .init = setup, .fini = teardown);

#define assert_said(line) \
	cr_assert(strstr(msgs.text, line "\n") != NULL, "no line '%s' in:\n%s", line, msgs.text)

static struct qcow2_check_result check_it(struct qcow2_image *q)
{
	struct qcow2_check_result res;

	memset(&msgs, 0, sizeof(msgs));
	cr_assert_eq(qcow2_image_check_report(q, &report, &res), 0, "%s", qcow2_last_error());
	return res;
}

static void assert_clean(struct qcow2_image *q)
{
	struct qcow2_check_result res = check_it(q);

	cr_assert_eq(res.corruptions, 0, "%lu corruptions:\n%s", (unsigned long)res.corruptions,
		     msgs.text);
	cr_assert_eq(res.leaks, 0, "%lu leaks:\n%s", (unsigned long)res.leaks, msgs.text);
}

static struct qcow2_image *open_ro(void)
{
	struct qcow2_image *q;

	cr_assert_eq(imgbuild_open(img, &q), 0, "%s", qcow2_last_error());
	return q;
}

static struct qcow2_image *open_bytes(const void *b, size_t len, bool repair)
{
	struct qcow2_image_opts o = {.writable = repair, .repair = repair};
	struct qcow2_io *io = qcow2_io_mem_new("mem.qcow2", b, len);
	struct qcow2_image *q;
	int r = qcow2_image_open(io, "mem.qcow2", &o, &q);

	cr_assert_eq(r, 0, "open: %s", qcow2_last_error());
	return q;
}

static struct qcow2_image *open_repair(void)
{
	return open_bytes(img->bytes, img->len, true);
}

/* A read-only image of what @q has on "disk" now. */
static struct qcow2_image *reopen(struct qcow2_image *q)
{
	size_t len;
	const void *b = qcow2_io_mem_bytes(qcow2_image_io(q), &len);

	return open_bytes(b, len, false);
}

static void image_read(struct qcow2_image *q, uint8_t *buf, size_t n, uint64_t off)
{
	while (n) {
		struct qcow2_extent e;

		cr_assert_eq(qcow2_image_map(q, NULL, off, n, &e), 0, "%s", qcow2_last_error());
		if (e.kind == QCOW2_EXTENT_DATA)
			cr_assert_eq(qcow2_io_pread_full(e.io, buf, e.len, e.host_off), 0);
		else if (e.kind == QCOW2_EXTENT_COMPRESSED)
			cr_assert_eq(qcow2_image_read_compressed(
					 q, &e, off & (q->cluster_bytes - 1), buf, e.len),
				     0);
		else
			memset(buf, 0, e.len);
		buf += e.len;
		off += e.len;
		n -= e.len;
	}
}

/* The image reads what the builder wrote, with [@off, +@len) as @fill (NULL: zeros). */
static void assert_reads_model_but(struct qcow2_image *q, uint64_t off, uint64_t len,
				   const uint8_t *fill)
{
	uint64_t size = img->o.size;
	uint8_t *want = malloc(size), *got = malloc(size);

	imgbuild_expect(img, -1, 0, size, NULL, want);
	if (fill)
		memcpy(want + off, fill, len);
	else
		memset(want + off, 0, len);
	image_read(q, got, size, 0);
	cr_assert_arr_eq(got, want, size, "the repaired image reads other data");
	free(want);
	free(got);
}

static void assert_reads_model(struct qcow2_image *q, uint64_t zero_off, uint64_t zero_len)
{
	assert_reads_model_but(q, zero_off, zero_len, NULL);
}

static void set_refcount(uint64_t idx, uint64_t v)
{
	uint32_t order = img->o.refcount_order;
	uint64_t per = (img->cluster_bytes * 8) >> order;
	uint64_t block = imgbuild_get_be64(img, img->reftable_off + 8 * (idx / per));

	testutil_put_refcount(img->bytes + block, order, idx % per, v);
}

static uint64_t cluster_of(uint64_t guest_off)
{
	return imgbuild_host_cluster(img, guest_off) >> img->o.cluster_bits;
}

/* ---- clean images ---- */

struct shape_case {
	uint32_t version, cluster_bits, refcount_order;
	bool extended_l2, bitmaps, compressed;
	unsigned snapshots;
};

ParameterizedTestParameters(check, clean_images_report_nothing_and_count_their_clusters)
{
	static struct shape_case cases[] = {
	    {3, 16, 4, false, false, false, 0}, {3, 9, 4, false, false, true, 2},
	    {3, 16, 0, false, false, false, 0}, {3, 16, 6, false, false, true, 3},
	    {3, 14, 4, true, false, false, 2},	{2, 12, 4, false, false, true, 2},
	    {3, 16, 4, false, true, false, 0},	{3, 16, 4, false, false, true, 0},
	};
	return cr_make_param_array(struct shape_case, cases, sizeof(cases) / sizeof(cases[0]));
}

/* Allocated, fragmented and compressed clusters of the active state, read from the L2 tables
 * as qcow2.txt describes them (fragmented: not following the previous one of its table). */
static void frag_info(uint64_t *alloc, uint64_t *frag, uint64_t *comp)
{
	uint64_t cs = img->cluster_bytes, off, next = 0, e, host;

	*alloc = *frag = *comp = 0;
	for (off = 0; off < img->o.size; off += cs) {
		uint64_t at = imgbuild_l2_entry_off(img, off);

		if (off % ((uint64_t)img->l2_entries * cs) == 0)
			next = 0;
		e = at ? imgbuild_get_be64(img, at) : 0;
		host = e & 0x00fffffffffffe00ull;
		if (e & QCOW2_OFLAG_COMPRESSED) {
			(*alloc)++, (*comp)++, (*frag)++;
		} else if (host) {
			(*alloc)++;
			*frag += next && host != next;
			next = host + cs;
		}
	}
}

ParameterizedTest(struct shape_case *c, check, clean_images_report_nothing_and_count_their_clusters)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_check_result res;
	uint64_t alloc, frag, comp, cs;

	o.version = c->version;
	o.cluster_bits = c->cluster_bits;
	o.refcount_order = c->refcount_order;
	o.extended_l2 = c->extended_l2;
	o.bitmaps = c->bitmaps;
	o.feature_table = c->version == 3 && c->cluster_bits > 9;
	img = imgbuild_new(&o);
	imgbuild_scramble(img, 11 + c->cluster_bits, 40, c->refcount_order ? c->snapshots : 0);
	if (c->compressed && !c->extended_l2) {
		uint8_t *data = malloc(img->cluster_bytes);
		imgbuild_pattern(data, img->cluster_bytes, 0, 7);
		cr_assert_eq(imgbuild_write_compressed(img, 0, data, NULL, NULL), 0);
		free(data);
	}
	qi = open_ro();
	res = check_it(qi);
	cr_assert_eq(res.corruptions + res.leaks + res.check_errors, 0, "%s", msgs.text);
	frag_info(&alloc, &frag, &comp);
	cs = img->cluster_bytes;
	cr_assert_eq(res.allocated_clusters, alloc);
	cr_assert_eq(res.fragmented_clusters, frag);
	cr_assert_eq(res.compressed_clusters, comp);
	cr_assert_eq(res.total_clusters, (o.size + cs - 1) / cs);
	cr_assert_eq(res.image_end_offset, (img->len + cs - 1) / cs * cs);
	cr_assert_eq(res.clusters, (img->len + cs - 1) / cs);
	cr_assert_eq(msgs.len, 0, "messages on a clean image:\n%s", msgs.text);
}

/* ---- damage, as qemu-img reports it, and its repair ---- */

/* Repair @img's bytes; the result, and the repaired image (left in qi). */
static struct qcow2_check_result repair_it(void)
{
	struct qcow2_check_result res;

	qi = open_repair();
	memset(&msgs, 0, sizeof(msgs));
	cr_assert_eq(qcow2_image_repair(qi, &report, false, &res), 0, "%s", qcow2_last_error());
	return res;
}

/* After a repair: clean as it is, and as its bytes reopened say. */
static void assert_repaired(void)
{
	struct qcow2_image *back;

	assert_clean(qi);
	back = reopen(qi);
	assert_clean(back);
	cr_assert_eq(qcow2_image_header(back)->incompat &
			 (QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT),
		     0);
	qcow2_image_close(back);
}

static void build_default(void)
{
	img = imgbuild_new(NULL);
	cr_assert_eq(imgbuild_fill(img, 0, 0x11, 256 << 10), 0);
	cr_assert_eq(imgbuild_fill(img, 1 << 20, 0x22, 64 << 10), 0);
}

Test(check, a_leaked_cluster_is_a_leak_and_is_freed)
{
	struct qcow2_check_result res;
	uint64_t extra;
	char line[128];

	build_default();
	extra = imgbuild_alloc_cluster(img) >> img->o.cluster_bits;
	qi = open_ro();
	res = check_it(qi);
	cr_assert_eq(res.leaks, 1);
	cr_assert_eq(res.corruptions, 0);
	snprintf(line, sizeof(line), "Leaked cluster %lu refcount=1 reference=0",
		 (unsigned long)extra);
	cr_assert(strstr(msgs.text, line), "%s", msgs.text);
	cr_assert_eq(msgs.n[QCOW2_CHECK_LEAK], 1);
	qcow2_image_close(qi);
	res = repair_it();
	cr_assert_eq(res.leaks_fixed, 1);
	cr_assert_eq(res.corruptions_fixed, 0);
	assert_repaired();
	assert_reads_model(qi, 0, 0);
}

Test(check, a_refcount_lower_than_its_references_is_corruption_and_is_raised)
{
	struct qcow2_check_result res;
	uint64_t c, entry;
	char line[160];

	build_default();
	c = cluster_of(1 << 20);
	entry = imgbuild_get_be64(img, imgbuild_l2_entry_off(img, 1 << 20));
	set_refcount(c, 0);
	qi = open_ro();
	res = check_it(qi);
	cr_assert_eq(res.corruptions, 2, "%s", msgs.text);
	snprintf(line, sizeof(line), "ERROR cluster %lu refcount=0 reference=1", (unsigned long)c);
	cr_assert(strstr(msgs.text, line), "%s", msgs.text);
	snprintf(line, sizeof(line), "ERROR OFLAG_COPIED data cluster: l2_entry=%lx refcount=0",
		 (unsigned long)entry);
	cr_assert(strstr(msgs.text, line), "%s", msgs.text);
	qcow2_image_close(qi);
	res = repair_it();
	cr_assert_eq(res.corruptions_fixed, 1, "%s", msgs.text);
	assert_repaired();
	assert_reads_model(qi, 0, 0);
}

Test(check, a_missing_copied_flag_is_corruption_and_is_set)
{
	struct qcow2_check_result res;
	uint64_t at;

	build_default();
	at = imgbuild_l2_entry_off(img, 0);
	imgbuild_put_be64(img, at, imgbuild_get_be64(img, at) & ~QCOW2_OFLAG_COPIED);
	qi = open_ro();
	res = check_it(qi);
	cr_assert_eq(res.corruptions, 1, "%s", msgs.text);
	cr_assert(strstr(msgs.text, "ERROR OFLAG_COPIED data cluster: l2_entry="), "%s", msgs.text);
	qcow2_image_close(qi);
	res = repair_it();
	cr_assert_eq(res.corruptions_fixed, 1);
	assert_said("Repairing OFLAG_COPIED data cluster: l2_entry=50000 refcount=1");
	assert_repaired();
	{
		uint8_t raw[8];
		cr_assert_eq(qcow2_io_pread_full(qcow2_image_io(qi), raw, 8, at), 0);
		cr_assert(get_be64(raw) & QCOW2_OFLAG_COPIED, "the flag is back on disk");
	}
}

/* An entry into the header can only be misaligned (offset 0 means unallocated): QEMU reports it
 * with both clusters it covers, cannot read it, and its own repair leaves it; ours makes it a
 * zero cluster. */
Test(check, an_entry_into_the_header_is_reported_as_qemu_does_and_becomes_zeros)
{
	struct qcow2_check_result res;
	uint64_t c;
	char line[96];

	build_default();
	c = cluster_of(0);
	imgbuild_put_be64(img, imgbuild_l2_entry_off(img, 0), QCOW2_OFLAG_COPIED | 0x200);
	qi = open_ro();
	res = check_it(qi);
	cr_assert_eq(res.corruptions, 3, "%s", msgs.text);
	cr_assert_eq(res.leaks, 1, "%s", msgs.text);
	cr_assert_eq(res.fragmented_clusters, 1);
	assert_said("ERROR offset=200: Data cluster is not properly aligned; L2 entry corrupted.");
	assert_said("ERROR cluster 0 refcount=1 reference=2");
	assert_said("ERROR cluster 1 refcount=1 reference=2");
	snprintf(line, sizeof(line), "Leaked cluster %lu refcount=1 reference=0\n",
		 (unsigned long)c);
	cr_assert(strstr(msgs.text, line), "%s", msgs.text);
	qcow2_image_close(qi);
	res = repair_it();
	cr_assert_eq(res.corruptions_fixed, 1, "%s", msgs.text);
	cr_assert_eq(res.leaks_fixed, 1, "%s", msgs.text);
	assert_repaired();
	assert_reads_model(qi, 0, img->cluster_bytes);
}

Test(check, an_entry_past_the_end_of_the_file_is_one_corruption_and_becomes_zeros)
{
	struct qcow2_check_result res;
	uint64_t far = 64ull << 20, at;
	char line[200];

	build_default();
	at = imgbuild_l2_entry_off(img, 65536);
	imgbuild_put_be64(img, at, QCOW2_OFLAG_COPIED | far);
	qi = open_ro();
	res = check_it(qi);
	/* the region, and its COPIED flag against refcount 0; the old cluster leaks */
	cr_assert_eq(res.corruptions, 2, "%s", msgs.text);
	cr_assert_eq(res.leaks, 1, "%s", msgs.text);
	snprintf(
	    line, sizeof(line),
	    "ERROR: counting reference for region exceeding the end of the file by one cluster "
	    "or more: offset 0x%lx size 0x10000",
	    (unsigned long)far);
	cr_assert(strstr(msgs.text, line), "%s", msgs.text);
	qcow2_image_close(qi);
	res = repair_it();
	assert_said("Repairing L2 entry for guest offset 0x10000 (l2_entry=8000000004000000, past "
		    "the end of the file): made a zero cluster");
	assert_repaired();
	assert_reads_model(qi, 65536, 65536);
}

Test(check, data_lying_in_metadata_gets_a_cluster_of_its_own)
{
	struct qcow2_check_result res;
	uint8_t *table = malloc(65536), *got = malloc(65536);

	build_default();
	/* guest cluster 2 shows the refcount table; and a cluster in use looks free (the new
	 * cluster must not be that one: refcounts are raised before anything is allocated) */
	imgbuild_put_be64(img, imgbuild_l2_entry_off(img, 2 * 65536),
			  QCOW2_OFLAG_COPIED | img->reftable_off);
	set_refcount(cluster_of(1 << 20), 0);
	memcpy(table, img->bytes + img->reftable_off, 65536);
	qi = open_ro();
	res = check_it(qi);
	cr_assert_eq(res.corruptions, 3, "%s", msgs.text);
	cr_assert_eq(res.leaks, 1, "%s", msgs.text);
	cr_assert_eq(msgs.n[QCOW2_CHECK_NOTE], 1);
	assert_said("guest offset 0x20000 is mapped to cluster 1, which holds the refcount table");
	qcow2_image_close(qi);
	res = repair_it();
	assert_repaired();
	image_read(qi, got, 65536, 2 * 65536);
	cr_assert_arr_eq(got, table, 65536, "the guest still reads what it read");
	assert_reads_model_but(qi, 2 * 65536, 65536, table);
	{
		uint8_t raw[8];
		cr_assert_eq(qcow2_io_pread_full(qcow2_image_io(qi), raw, 8,
						 imgbuild_l2_entry_off(img, 2 * 65536)),
			     0);
		cr_assert_neq(get_be64(raw) & QCOW2_L2E_OFFSET_MASK, img->reftable_off);
	}
	free(table);
	free(got);
}

/* 1-bit refcounts: two entries to one cluster cannot both be counted. */
Test(check, a_refcount_overflow_is_repaired_with_a_copy)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_check_result res;
	uint8_t *a = malloc(65536), *b = malloc(65536);

	o.refcount_order = 0;
	img = imgbuild_new(&o);
	cr_assert_eq(imgbuild_fill(img, 0, 0x5a, 2 * 65536), 0);
	imgbuild_put_be64(img, imgbuild_l2_entry_off(img, 65536),
			  imgbuild_get_be64(img, imgbuild_l2_entry_off(img, 0)));
	qi = open_ro();
	res = check_it(qi);
	cr_assert_geq(res.corruptions, 1, "%s", msgs.text);
	cr_assert(strstr(msgs.text, "ERROR: overflow cluster offset=0x"), "%s", msgs.text);
	qcow2_image_close(qi);
	res = repair_it();
	assert_repaired();
	image_read(qi, a, 65536, 0);
	image_read(qi, b, 65536, 65536);
	cr_assert_arr_eq(a, b, 65536);
	cr_assert_eq(a[0], 0x5a);
	free(a);
	free(b);
}

Test(check, repair_clears_the_dirty_and_corrupt_bits)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_image_opts wo = {.writable = true};
	struct qcow2_check_result res;

	o.lazy_refcounts = true;
	o.incompat = QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT;
	img = imgbuild_new(&o);
	cr_assert_eq(imgbuild_fill(img, 0, 0x31, 1 << 20), 0);
	set_refcount(cluster_of(0), 0);
	/* a plain writable open refuses a corrupt image */
	cr_assert_eq(qcow2_image_open(imgbuild_io(img), "mem.qcow2", &wo, &qi), -EROFS);
	qi = NULL;
	res = repair_it();
	cr_assert(res.dirty && res.corrupt);
	cr_assert_eq(res.corruptions_fixed, 1, "%s", msgs.text);
	assert_repaired();
	assert_reads_model(qi, 0, 0);
}

Test(check, a_clean_image_marked_corrupt_is_only_unmarked)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_check_result res;
	struct qcow2_image *back;
	size_t len;
	const void *bytes;

	o.incompat = QCOW2_INCOMPAT_CORRUPT;
	img = imgbuild_new(&o);
	cr_assert_eq(imgbuild_fill(img, 0, 0x31, 1 << 16), 0);
	res = repair_it();
	cr_assert_eq(res.corruptions_fixed + res.leaks_fixed, 0);
	back = reopen(qi);
	cr_assert_eq(qcow2_image_header(back)->incompat & QCOW2_INCOMPAT_CORRUPT, 0);
	qcow2_image_close(back);
	bytes = qcow2_io_mem_bytes(qcow2_image_io(qi), &len);
	cr_assert_eq(len, img->len);
	cr_assert_eq(memcmp((const uint8_t *)bytes + 512, img->bytes + 512, len - 512), 0,
		     "only the header changed");
}

Test(check, a_dry_run_reports_the_fixes_and_changes_nothing)
{
	struct qcow2_check_result res, real;
	uint8_t *before;
	size_t len;
	const void *after;

	build_default();
	imgbuild_alloc_cluster(img);
	set_refcount(cluster_of(1 << 20), 0);
	imgbuild_put_be64(img, imgbuild_l2_entry_off(img, 0), QCOW2_OFLAG_COPIED | 0x200);
	before = malloc(img->len);
	memcpy(before, img->bytes, img->len);
	qi = open_ro();
	cr_assert_eq(qcow2_image_repair(qi, &report, true, &res), 0, "%s", qcow2_last_error());
	after = qcow2_io_mem_bytes(qcow2_image_io(qi), &len);
	cr_assert_eq(len, img->len);
	cr_assert_eq(memcmp(after, before, len), 0, "a dry run wrote");
	cr_assert_gt(msgs.n[QCOW2_CHECK_REPAIR], 0);
	qcow2_image_close(qi);
	/* what it announced is what a repair does */
	real = repair_it();
	cr_assert_eq(real.corruptions_fixed, res.corruptions_fixed);
	cr_assert_eq(real.leaks_fixed, res.leaks_fixed);
	assert_repaired();
	free(before);
}

Test(check, repair_needs_an_image_opened_for_it)
{
	struct qcow2_check_result res;

	build_default();
	qi = open_ro();
	cr_assert_eq(qcow2_image_repair(qi, NULL, false, &res), -EINVAL);
	assert_error_mentions("not open for repair");
}

/* ---- interrupted repairs ---- */

/* An image with every kind of damage a repair fixes, spread over many L2 tables and refcount
 * blocks (512-byte clusters), so that a repair writes back a lot. */
static void build_damaged(void)
{
	struct imgbuild_opts o = imgbuild_defaults();
	uint64_t off, at;
	unsigned k = 0;

	o.cluster_bits = 9;
	o.size = 1 << 20;
	o.reftable_clusters = 1;
	img = imgbuild_new(&o);
	imgbuild_scramble(img, 5, 30, 2);
	cr_assert_eq(imgbuild_fill(img, 512 << 10, 0x44, 256 << 10), 0);
	for (off = 512 << 10; off < (768 << 10); off += 9 * 512, k++) {
		at = imgbuild_l2_entry_off(img, off);
		if (k % 3 == 0)
			set_refcount(cluster_of(off), 0); /* a refcount too low */
		else if (k % 3 == 1)
			imgbuild_put_be64(img, at,
					  imgbuild_get_be64(img, at) & ~QCOW2_OFLAG_COPIED);
		else
			imgbuild_alloc_cluster(img); /* a leak */
	}
	imgbuild_put_be64(img, imgbuild_l2_entry_off(img, (512 << 10) + 512),
			  QCOW2_OFLAG_COPIED | img->reftable_off); /* data in metadata */
	imgbuild_put_be64(img, imgbuild_l2_entry_off(img, (512 << 10) + 1024),
			  QCOW2_OFLAG_COPIED | (1ull << 40)); /* past the end */
}

/* Clusters whose refcount is lower than their references, by number. */
static void too_low(struct qcow2_image *q, bool *out, size_t n)
{
	const char *p;

	memset(out, 0, n);
	check_it(q);
	for (p = msgs.text; (p = strstr(p, "ERROR cluster ")); p++) {
		unsigned long c, rc, ref;
		if (sscanf(p, "ERROR cluster %lu refcount=%lu reference=%lu", &c, &rc, &ref) == 3 &&
		    c < n)
			out[c] = true;
	}
}

static void assert_no_new_low(struct qcow2_image *q, const bool *before, size_t n, unsigned at)
{
	bool *now = malloc(n);
	size_t i;

	too_low(q, now, n);
	for (i = 0; i < n; i++)
		cr_assert(!now[i] || before[i],
			  "stopped at %u: cluster %zu now has a refcount "
			  "lower than its references:\n%s",
			  at, i, msgs.text);
	free(now);
}

/* Repair the bytes of @q again: it must finish the job. */
static void assert_second_repair_finishes(struct qcow2_image *q)
{
	size_t len;
	const void *b = qcow2_io_mem_bytes(qcow2_image_io(q), &len);
	struct qcow2_image *again = open_bytes(b, len, true);
	struct qcow2_check_result res;

	cr_assert_eq(qcow2_image_repair(again, NULL, false, &res), 0, "%s", qcow2_last_error());
	assert_clean(again);
	qcow2_image_close(again);
}

Test(check, a_repair_stopped_at_any_write_leaves_no_new_low_refcount)
{
	size_t n;
	bool *low;
	unsigned nth, stopped = 0;
	struct qcow2_check_result res;

	build_damaged();
	n = 2 * img->len / img->cluster_bytes + 1024;
	low = malloc(n);
	qi = open_ro();
	too_low(qi, low, n);
	qcow2_image_close(qi);
	for (nth = 1; nth < 2000; nth++) {
		struct qcow2_image *back;
		int r;

		qi = open_repair();
		qcow2_io_mem_fail_nth(qcow2_image_io(qi), QCOW2_IO_WRITE, nth, -EIO);
		r = qcow2_image_repair(qi, NULL, false, &res);
		back = reopen(qi);
		assert_no_new_low(back, low, n, nth);
		if (r < 0)
			assert_second_repair_finishes(back);
		qcow2_image_close(back);
		qcow2_io_mem_fail_nth(qcow2_image_io(qi), QCOW2_IO_WRITE, 0, 0);
		qcow2_image_close(qi);
		qi = NULL;
		if (r == 0)
			break;
		stopped++;
	}
	cr_assert_gt(stopped, 10, "the repair was stopped at only %u points", stopped);
	free(low);
}

struct cancel_at {
	unsigned polls, at;
	uint64_t last_done, total;
	bool backwards;
};

static void count_progress(void *ctx, uint64_t done, uint64_t total)
{
	struct cancel_at *c = ctx;

	c->backwards |= done < c->last_done && total == c->total;
	c->last_done = done;
	c->total = total;
}

static bool cancel_now(void *ctx)
{
	struct cancel_at *c = ctx;

	return c->at && ++c->polls >= c->at;
}

Test(check, a_cancelled_repair_stops_with_ecanceled_and_no_new_low_refcount)
{
	struct cancel_at c = {0};
	struct qcow2_job job = {count_progress, cancel_now, &c, NULL, NULL};
	struct qcow2_check_opts co = {&job, NULL, NULL};
	struct qcow2_check_result res;
	unsigned at, cancelled = 0;
	size_t n;
	bool *low;

	build_damaged();
	n = 2 * img->len / img->cluster_bytes + 1024;
	low = malloc(n);
	qi = open_ro();
	too_low(qi, low, n);
	/* a check polls, reports forward progress, and stops when cancelled */
	cr_assert_eq(qcow2_image_check_report(qi, &co, &res), 0);
	cr_assert_gt(c.total, 0);
	cr_assert_eq(c.last_done, c.total, "a check ends at 100%%");
	cr_assert(!c.backwards);
	c = (struct cancel_at){.at = 2};
	cr_assert_eq(qcow2_image_check_report(qi, &co, &res), -ECANCELED);
	assert_error_mentions("interrupted");
	qcow2_image_close(qi);
	for (at = 1; at < 100000; at += at < 16 ? 1 : at / 4) {
		struct qcow2_image *back;
		int r;

		c = (struct cancel_at){.at = at};
		qi = open_repair();
		r = qcow2_image_repair(qi, &co, false, &res);
		cr_assert(r == 0 || r == -ECANCELED, "%s", qcow2_last_error());
		back = reopen(qi);
		assert_no_new_low(back, low, n, at);
		qcow2_image_close(back);
		if (r < 0)
			assert_second_repair_finishes(qi);
		qcow2_image_close(qi);
		qi = NULL;
		if (r == 0)
			break;
		cancelled++;
	}
	cr_assert_gt(cancelled, 10);
	free(low);
}

/* ---- never more errors than found ----
 *
 * "Errors" are what `qemu-img check` counts: corruptions + leaks + check errors (the e2e test
 * ctl-check.sh shows that these counts are qemu-img's on the same damage). */

static uint64_t errors(const struct qcow2_check_result *res)
{
	return res->corruptions + res->leaks + res->check_errors;
}

static uint64_t errors_of(struct qcow2_image *q)
{
	struct qcow2_check_result res = check_it(q);

	return errors(&res);
}

static uint64_t errors_of_bytes(const void *b, size_t len)
{
	struct qcow2_image *q = open_bytes(b, len, false);
	uint64_t n = errors_of(q);

	qcow2_image_close(q);
	return n;
}

/* Damage to the refcount table: entry @idx set to what @target says. */
enum rt_target {
	RT_L1,	     /* the active L1 table */
	RT_L2,	     /* the L2 table of guest offset 0 */
	RT_REFBLOCK, /* the refcount block of entry 1 (another block) */
	RT_HEADER,   /* 0x200: misaligned, into the header (64 KiB clusters) */
	RT_RESERVED, /* its own block with reserved bit 8 set */
	RT_HIGH,     /* its own block with bit 63 set: a block QEMU cannot read */
	RT_EOF,	     /* four clusters past the end of the file */
	RT_DATA_EOF, /* (second damage only) guest offset 64 KiB's L2 entry: just past the end */
};

struct rt_case {
	const char *name;
	uint32_t cluster_bits;
	enum rt_target target;
	uint32_t idx;
	enum rt_target target2; /* a second entry, 1 (RT_L1 here means none) */
};

static uint64_t rt_entry(uint32_t i)
{
	return imgbuild_get_be64(img, img->reftable_off + 8ull * i);
}

static void break_entry(enum rt_target t, uint32_t idx)
{
	uint64_t cs = img->cluster_bytes, v = 0;

	switch (t) {
	case RT_L1:
		v = img->l1_off;
		break;
	case RT_L2:
		v = imgbuild_l2_entry_off(img, 0) & ~(cs - 1);
		break;
	case RT_REFBLOCK:
		v = rt_entry(1);
		break;
	case RT_HEADER:
		v = 0x200;
		break;
	case RT_RESERVED:
		v = rt_entry(idx) | 0x100;
		break;
	case RT_HIGH:
		v = rt_entry(idx) | (1ull << 63);
		break;
	case RT_EOF:
		v = (img->len / cs + 4) * cs;
		break;
	case RT_DATA_EOF:
		imgbuild_put_be64(img, imgbuild_l2_entry_off(img, 65536),
				  QCOW2_OFLAG_COPIED | (img->len + cs - 1) / cs * cs);
		return;
	}
	imgbuild_put_be64(img, img->reftable_off + 8ull * idx, v);
}

/* Data over several refcount blocks (512-byte clusters: 256 clusters a block). */
static void build_blocks(uint32_t cluster_bits)
{
	struct imgbuild_opts o = imgbuild_defaults();

	o.cluster_bits = cluster_bits;
	o.size = 1 << 20;
	o.reftable_clusters = 1;
	img = imgbuild_new(&o);
	cr_assert_eq(imgbuild_fill(img, 0, 0x61, 256 << 10), 0);
	cr_assert_eq(imgbuild_fill(img, 640 << 10, 0x62, 128 << 10), 0);
	cr_assert(cluster_bits > 9 || rt_entry(2), "the image has 3 refcount blocks");
}

static void build_rt_case(const struct rt_case *c)
{
	build_blocks(c->cluster_bits);
	break_entry(c->target, c->idx);
	if (c->target2 != RT_L1)
		break_entry(c->target2, 1);
}

ParameterizedTestParameters(check, a_broken_refcount_table_is_rebuilt_and_the_image_checks_clean)
{
	static struct rt_case cases[] = {
	    {"block 0 -> L1 table", 9, RT_L1, 0, RT_L1},
	    {"block 2 -> L1 table", 9, RT_L1, 2, RT_L1},
	    {"unused entry -> L1 table", 9, RT_L1, 7, RT_L1},
	    {"block 0 -> L2 table", 9, RT_L2, 0, RT_L1},
	    {"unused entry -> L2 table", 9, RT_L2, 7, RT_L1},
	    {"block 0 -> block 1", 9, RT_REFBLOCK, 0, RT_L1},
	    {"unused entry -> block 1", 9, RT_REFBLOCK, 7, RT_L1},
	    {"block 0 -> the header (misaligned)", 16, RT_HEADER, 0, RT_L1},
	    {"reserved bits", 9, RT_RESERVED, 0, RT_L1},
	    {"bit 63", 9, RT_HIGH, 0, RT_L1},
	    {"bit 63, 64 KiB clusters", 16, RT_HIGH, 0, RT_L1},
	    {"past the end of the file", 9, RT_EOF, 0, RT_L1},
	    {"unused entry past the end of the file", 9, RT_EOF, 7, RT_L1},
	    {"block 0 -> L1 table, block 1 past the end", 9, RT_L1, 0, RT_EOF},
	    {"block 2 -> L2 table, block 1 bit 63", 9, RT_L2, 2, RT_HIGH},
	    /* the new structure must not grow the file over what the entry points at */
	    {"block 0 -> L2 table, an L2 entry just past the end", 9, RT_L2, 0, RT_DATA_EOF},
	};
	return cr_make_param_array(struct rt_case, cases, sizeof(cases) / sizeof(cases[0]));
}

/* As QEMU's rebuild_refcount_structure(): the refcounts are rebuilt elsewhere (never written
 * through an entry that points into other metadata), the result checks clean, reads the same. */
ParameterizedTest(struct rt_case *c, check,
		  a_broken_refcount_table_is_rebuilt_and_the_image_checks_clean)
{
	struct qcow2_check_result res;
	struct qcow2_image *back;
	uint64_t before;

	build_rt_case(c);
	qi = open_ro();
	before = errors_of(qi);
	cr_assert_gt(before, 0, "%s: no damage seen", c->name);
	qcow2_image_close(qi);
	res = repair_it();
	assert_said("Rebuilding refcount structure");
	cr_assert_gt(res.corruptions_fixed, 0, "%s", c->name);
	back = reopen(qi);
	cr_assert_eq(errors_of(back), 0, "%s: %lu errors before, after the repair:\n%s", c->name,
		     (unsigned long)before, msgs.text);
	/* an entry past the end reads as zeros once repaired */
	assert_reads_model(back, 65536, c->target2 == RT_DATA_EOF ? img->cluster_bytes : 0);
	qcow2_image_close(back);
}

/* Case @k: 0, 1 a refcount block aliasing the L1 table, one past the end of the file; 2 the
 * damage an in-place repair fixes (build_damaged()), 3 with a block aliasing the L1 table
 * too; 4, 5 that damage and the block describing the end of the file aliasing the L1 table,
 * unreadable (bit 63); 6, 7 the same on an image with no unused cluster. */
static void build_case(int k)
{
	static const struct rt_case alias = {"", 9, RT_L1, 0, RT_L1};
	static const struct rt_case far = {"", 9, RT_EOF, 2, RT_L1};
	uint32_t last;

	if (k == 0)
		build_rt_case(&alias);
	else if (k == 1)
		build_rt_case(&far);
	else if (k == 6 || k == 7)
		build_blocks(9);
	else
		build_damaged();
	if (k == 3)
		imgbuild_put_be64(img, img->reftable_off + 8, img->l1_off);
	last = (uint32_t)(img->len / img->cluster_bytes / 256);
	if (k == 4 || k == 6)
		imgbuild_put_be64(img, img->reftable_off + 8ull * last, img->l1_off);
	if (k == 5 || k == 7)
		imgbuild_put_be64(img, img->reftable_off + 8ull * last,
				  rt_entry(last) | 1ull << 63);
}

static struct qcow2_check_result check_bytes(const void *b, size_t len)
{
	struct qcow2_image *q = open_bytes(b, len, false);
	struct qcow2_check_result res = check_it(q);

	qcow2_image_close(q);
	return res;
}

/* A crash stops a repair at some write and nothing after it reaches the disk: wherever that
 * is, the image has no more errors than it had. Except (cases 6 and 7) when the file has no
 * unused cluster for a new refcount structure and a broken block describes the clusters past
 * its end: then the clusters appended before the header switches to the new structure are
 * counted against the broken block, one leak or check error each at most, never a corruption
 * (rebuild.c). */
Test(check, a_repair_killed_at_any_write_leaves_no_more_errors)
{
	struct qcow2_check_result res, before, now;
	int k;

	for (k = 0; k < 8; k++) {
		unsigned nth, stopped = 0;

		teardown();
		setup();
		build_case(k);
		before = check_bytes(img->bytes, img->len);
		for (nth = 1; nth < 5000; nth++) {
			uint64_t slack = 0;
			const void *b;
			size_t len;
			int r;

			qi = open_repair();
			qcow2_io_mem_fail_from(qcow2_image_io(qi), QCOW2_IO_WRITE, nth, -EIO);
			r = qcow2_image_repair(qi, NULL, false, &res);
			b = qcow2_io_mem_bytes(qcow2_image_io(qi), &len);
			now = check_bytes(b, len);
			if (k >= 6 && len > img->len)
				slack = (len - img->len) / img->cluster_bytes;
			cr_assert_leq(errors(&now), errors(&before) + slack,
				      "case %d killed at write %u: %lu errors before, then:\n%s", k,
				      nth, (unsigned long)errors(&before), msgs.text);
			cr_assert_leq(now.corruptions, before.corruptions,
				      "case %d killed at write %u: more corruptions:\n%s", k, nth,
				      msgs.text);
			qcow2_io_mem_fail_nth(qcow2_image_io(qi), QCOW2_IO_WRITE, 0, 0);
			qcow2_image_close(qi);
			qi = NULL;
			if (r == 0)
				break;
			stopped++;
		}
		cr_assert_gt(stopped, 5, "case %d: stopped at only %u points", k, stopped);
	}
}

/* A repair that fails part way (an I/O error, not a crash) puts back every byte it wrote. */
Test(check, a_repair_failing_part_way_puts_every_byte_back)
{
	struct qcow2_check_result res;
	int k;

	for (k = 0; k < 8; k++) {
		unsigned nth, failed = 0;

		teardown();
		setup();
		build_case(k);
		for (nth = 1; nth < 5000; nth++) {
			const void *b;
			size_t len;
			int r;

			qi = open_repair();
			qcow2_io_mem_fail_nth(qcow2_image_io(qi), QCOW2_IO_WRITE, nth, -EIO);
			r = qcow2_image_repair(qi, NULL, false, &res);
			if (r < 0) {
				cr_assert(strstr(qcow2_last_error(), "nothing changed"), "%s",
					  qcow2_last_error());
				b = qcow2_io_mem_bytes(qcow2_image_io(qi), &len);
				cr_assert_eq(len, img->len, "case %d failed at write %u: length", k,
					     nth);
				cr_assert_eq(memcmp(b, img->bytes, len), 0,
					     "case %d failed at write %u: bytes changed", k, nth);
				failed++;
			}
			qcow2_image_close(qi);
			qi = NULL;
			if (r == 0)
				break;
		}
		cr_assert_gt(failed, 5, "case %d: failed at only %u points", k, failed);
	}
}

/* Damage no repair can fix (an L2 entry of a snapshot's own table past the end of the file:
 * only the active tables are rewritten, and QEMU cannot fix it either): the repair says so and
 * leaves every byte. */
Test(check, a_repair_that_would_not_improve_the_image_changes_nothing_and_says_why)
{
	struct qcow2_check_result res;
	uint64_t sn_l2, far;
	const void *b;
	size_t len;

	build_default();
	cr_assert_eq(imgbuild_snapshot_add(img, NULL), 0);
	cr_assert_eq(imgbuild_fill(img, 0, 0x77, 65536), 0); /* the active L2 table is copied */
	sn_l2 = imgbuild_get_be64(img, img->snaps[0].l1_off) & QCOW2_L1E_OFFSET_MASK;
	cr_assert_neq(sn_l2, imgbuild_l2_entry_off(img, 0) & ~(img->cluster_bytes - 1));
	far = (img->len / img->cluster_bytes + 4) * img->cluster_bytes;
	imgbuild_put_be64(img, sn_l2 + 8 * 5, far); /* guest 320k: unallocated in the snapshot */
	cr_assert_eq(errors_of_bytes(img->bytes, img->len), 1, "%s", msgs.text);
	qi = open_repair();
	memset(&msgs, 0, sizeof(msgs));
	cr_assert_eq(qcow2_image_repair(qi, &report, false, &res), -ENOTRECOVERABLE);
	assert_error_mentions("repair would not improve the image");
	assert_error_mentions("nothing changed");
	cr_assert_eq(res.corruptions, 1);
	b = qcow2_io_mem_bytes(qcow2_image_io(qi), &len);
	cr_assert_eq(len, img->len);
	cr_assert_eq(memcmp(b, img->bytes, len), 0, "bytes changed");
}

/* A refcount block in the last cluster of the file, which ends part way through it: the check
 * counts it (as QEMU does), but the write side cannot use it. The repair must not write
 * refcounts through it: the structure is rebuilt. */
Test(check, a_refcount_block_in_a_partial_last_cluster_is_rebuilt_not_written_through)
{
	struct qcow2_check_result res;
	struct qcow2_image *back;
	uint64_t at;

	build_default();
	at = imgbuild_alloc_cluster(img);
	imgbuild_put_be64(img, img->reftable_off + 8, at);
	img->len -= 512;
	res = repair_it();
	assert_said("Rebuilding refcount structure");
	cr_assert_eq(res.corruptions + res.leaks, 0, "as QEMU: the block is counted\n%s",
		     msgs.text);
	back = reopen(qi);
	cr_assert_eq(errors_of(back), 0, "%s", msgs.text);
	assert_reads_model(back, 0, 0);
	qcow2_image_close(back);
}

/* A repair that fails part way puts the image back, newest write first, flushing where it had
 * flushed: a crash while it does so (here every flush from the Mth on fails, and nothing after
 * it reaches the disk) leaves one of the states the repair itself had made durable, with no
 * more errors than the image had. */
Test(check, a_crash_while_putting_back_leaves_no_more_errors)
{
	static const unsigned fail_at[] = {8, 20, 40};
	struct qcow2_check_result res, before, now;
	unsigned i, m, in_replay = 0;
	int k;

	for (k = 0; k < 6; k++) {
		teardown();
		setup();
		build_case(k);
		before = check_bytes(img->bytes, img->len);
		for (i = 0; i < sizeof(fail_at) / sizeof(fail_at[0]); i++) {
			for (m = 1; m < 400; m++) {
				const void *b;
				size_t len;
				int r;

				qi = open_repair();
				qcow2_io_mem_fail_nth(qcow2_image_io(qi), QCOW2_IO_WRITE,
						      fail_at[i], -EIO);
				qcow2_io_mem_fail_from(qcow2_image_io(qi), QCOW2_IO_FLUSH, m, -EIO);
				r = qcow2_image_repair(qi, NULL, false, &res);
				in_replay +=
				    r < 0 && strstr(qcow2_last_error(), "putting the image "
									"back failed too");
				b = qcow2_io_mem_bytes(qcow2_image_io(qi), &len);
				now = check_bytes(b, len);
				cr_assert_leq(errors(&now), errors(&before),
					      "case %d, write %u failed, flush %u on: %lu errors "
					      "before, then:\n%s",
					      k, fail_at[i], m, (unsigned long)errors(&before),
					      msgs.text);
				qcow2_io_mem_fail_nth(qcow2_image_io(qi), QCOW2_IO_FLUSH, 0, 0);
				qcow2_image_close(qi);
				qi = NULL;
				if (r == 0)
					break;
			}
		}
	}
	cr_assert_gt(in_replay, 10, "a crash hit the putting back only %u times", in_replay);
}

/* A v3 snapshot entry with 8 bytes of extra data: qemu-img check counts one corruption
 * ("snapshot table entry N is incomplete") and -r all rewrites the table with full extra data;
 * the ids and names stay as they were. */
Test(check, incomplete_snapshot_entries_are_reported_and_completed)
{
	struct imgbuild_snapshot_opts so = {0};
	struct qcow2_check_result res;
	struct qcow2_image *back;
	const struct qcow2_snapshot *s;

	img = imgbuild_new(NULL);
	cr_assert_eq(imgbuild_fill(img, 0, 0x5a, 65536), 0);
	so.name = "full";
	cr_assert_eq(imgbuild_snapshot_add(img, &so), 0);
	so.name = "short";
	so.extra_bytes = 8;
	cr_assert_eq(imgbuild_snapshot_add(img, &so), 0);
	qi = open_ro();
	res = check_it(qi);
	cr_assert_eq(res.corruptions, 1, "%s", msgs.text);
	assert_said("ERROR snapshot table entry 1 is incomplete");
	qcow2_image_close(qi);
	qi = NULL;

	res = repair_it();
	cr_assert_eq(res.corruptions_fixed, 1, "%s", msgs.text);
	assert_repaired();
	back = reopen(qi);
	cr_assert_eq(qcow2_image_snapshot_count(back), 2);
	s = qcow2_image_snapshot(back, 1);
	cr_assert_str_eq(s->name, "short");
	cr_assert(!s->incomplete);
	cr_assert_eq(s->disk_bytes, img->o.size);
	cr_assert_str_eq(qcow2_image_snapshot(back, 0)->name, "full");
	qcow2_image_close(back);
}
