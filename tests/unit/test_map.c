/* SPDX-License-Identifier: MIT */
/*
 * test_map.c - qcow2_image_map() on one image: unallocated, data, zero and compressed
 * clusters, extended L2 subclusters, external data files, snapshot L1 views, and corrupt
 * L1/L2 entries. Every view is checked against imgbuild's shadow of the guest content.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "imgbuild.h"
#include "testutil.h"
#include "image/image.h"

static struct imgbuild *img;
static struct qcow2_image *qi;
static uint8_t *data, *got; /* freed by the teardown, so a failed assertion leaks nothing */

static void setup(void)
{
	img = NULL;
	qi = NULL;
	data = got = NULL;
}

static void teardown(void)
{
	qcow2_image_unload(qi);
	imgbuild_free(img);
	free(data);
	free(got);
}

TestSuite(map, .init = setup, .fini = teardown);

static void build(const struct imgbuild_opts *o)
{
	img = imgbuild_new(o);
}

static void open_img(void)
{
	qcow2_image_unload(qi);
	qi = NULL;
	cr_assert_eq(imgbuild_load(img, &qi), 0, "%s", qcow2_last_error());
}

static struct qcow2_extent map_at(uint64_t off, uint64_t max)
{
	struct qcow2_extent e;
	int r = qcow2_image_map(qi, NULL, off, max, &e);

	cr_assert_eq(r, 0, "map %#llx: %s", (unsigned long long)off, qcow2_last_error());
	cr_assert_eq(e.guest_off, off);
	return e;
}

static int map_err(uint64_t off)
{
	struct qcow2_extent e;

	return qcow2_image_map(qi, NULL, off, img->cluster_bytes, &e);
}

static const char *kind_name(enum qcow2_extent_kind k)
{
	static const char *names[] = {"unallocated", "zero", "data", "compressed"};
	return (unsigned)k < 4 ? names[k] : "?";
}

/* Check one extent of the view (@snap < 0: active) against the builder's shadow: the kind of
 * every subcluster it covers, and the bytes it leads to. */
static void check_extent(const struct qcow2_extent *e, int snap)
{
	uint8_t *want, *have;
	bool same;
	uint64_t g;
	int r = 0;

	for (g = e->guest_off; g < e->guest_off + e->len;
	     g = (g / img->subcluster_bytes + 1) * img->subcluster_bytes) {
		enum imgbuild_state st = imgbuild_state(img, snap, g);
		bool ok = e->kind == QCOW2_EXTENT_UNALLOCATED ? st == IMGBUILD_UNALLOCATED
			  : e->kind == QCOW2_EXTENT_ZERO      ? st == IMGBUILD_ZERO
							      : st == IMGBUILD_DATA;
		cr_assert(ok, "snap %d: %s extent at %#llx+%#llx covers state %d at %#llx", snap,
			  kind_name(e->kind), (unsigned long long)e->guest_off,
			  (unsigned long long)e->len, st, (unsigned long long)g);
	}
	cr_assert(e->kind != QCOW2_EXTENT_DATA || e->io, "data extent without an io");
	cr_assert(e->kind != QCOW2_EXTENT_COMPRESSED ||
		      e->guest_off % img->cluster_bytes + e->len <= img->cluster_bytes,
		  "compressed extent crosses its cluster");
	want = malloc(e->len);
	have = calloc(1, e->len);
	cr_assert(want && have);
	imgbuild_expect(img, snap, e->guest_off, e->len, NULL, want);
	if (e->kind == QCOW2_EXTENT_DATA)
		r = qcow2_io_pread(e->io, have, e->len, e->host_off) < 0 ? -EIO : 0;
	else if (e->kind == QCOW2_EXTENT_COMPRESSED)
		r = qcow2_image_read_compressed(qi, e, e->guest_off % img->cluster_bytes, have,
						e->len);
	same = memcmp(have, want, e->len) == 0;
	free(want);
	free(have);
	cr_assert_eq(r, 0, "reading the %s extent at %#llx: %s", kind_name(e->kind),
		     (unsigned long long)e->guest_off, qcow2_last_error());
	cr_assert(same, "snap %d: %s extent at %#llx+%#llx has wrong bytes", snap,
		  kind_name(e->kind), (unsigned long long)e->guest_off, (unsigned long long)e->len);
}

/* Walk the whole view extent by extent, then map a few cluster-aligned offsets with
 * random limits. */
static void check_view(const struct qcow2_l1 *l1, int snap, uint64_t size, uint64_t seed)
{
	struct qcow2_extent e;
	uint64_t off = 0;
	int i;

	while (off < size) {
		cr_assert_eq(qcow2_image_map(qi, l1, off, size - off, &e), 0, "%s",
			     qcow2_last_error());
		cr_assert_eq(e.guest_off, off);
		cr_assert(e.len > 0 && e.len <= size - off, "len %#llx at %#llx",
			  (unsigned long long)e.len, (unsigned long long)off);
		check_extent(&e, snap);
		off += e.len;
	}
	for (i = 0; i < 50 && size >= img->cluster_bytes; i++) {
		uint64_t c = imgbuild_rand(&seed) % (size / img->cluster_bytes);
		uint64_t max = 1 + imgbuild_rand(&seed) % (4 * img->cluster_bytes);

		off = c * img->cluster_bytes;
		if (max > size - off)
			max = size - off;
		cr_assert_eq(qcow2_image_map(qi, l1, off, max, &e), 0, "%s", qcow2_last_error());
		cr_assert(e.len > 0 && e.len <= max);
		check_extent(&e, snap);
	}
}

/* ---- whole views of random images ---- */

struct view_case {
	uint32_t version, cluster_bits, refcount_order;
	bool extended_l2;
	uint8_t compression;
	bool data_file;
	uint64_t size;
	unsigned nops;
};

ParameterizedTestParameters(map, random_images_map_to_their_content)
{
	static struct view_case cases[] = {
	    {2, 16, 4, false, 0, false, 8 << 20, 120},
	    {2, 9, 4, false, 0, false, 1 << 20, 300},
	    {3, 9, 6, false, 0, false, 1 << 20, 300},
	    {3, 12, 4, false, 0, false, 3 << 20, 200},
	    {3, 16, 4, false, 0, false, 8 << 20, 150},
	    {3, 16, 4, false, 1, false, 8 << 20, 100},
	    {3, 14, 4, true, 0, false, 4 << 20, 150},
	    {3, 16, 4, true, 1, false, 8 << 20, 150},
	    {3, 16, 4, false, 0, true, 4 << 20, 80},
	    {3, 16, 4, true, 0, true, 4 << 20, 80},
	    {3, 21, 4, false, 0, false, 16 << 20, 8},
	    {3, 21, 4, true, 0, false, 16 << 20, 8},
	    {3, 16, 4, false, 0, false, (4 << 20) + 4096 + 7, 100}, /* odd size */
	};
	return cr_make_param_array(struct view_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct view_case *c, map, random_images_map_to_their_content)
{
	struct imgbuild_opts o = imgbuild_defaults();
	const struct qcow2_l1 *l1;
	uint32_t i;

	o.version = c->version;
	o.cluster_bits = c->cluster_bits;
	o.refcount_order = c->refcount_order;
	o.extended_l2 = c->extended_l2;
	o.compression_type = c->compression;
	o.size = c->size;
	if (c->data_file)
		o.data_file = "data.raw";
	build(&o);
	imgbuild_scramble(img, c->cluster_bits * 7 + c->version, c->nops, 3);
	open_img();
	check_view(NULL, -1, c->size, 1);
	for (i = 0; i < img->nb_snapshots; i++) {
		cr_assert_eq(qcow2_image_snapshot_l1(qi, i, &l1), 0, "%s", qcow2_last_error());
		check_view(l1, (int)i, img->snaps[i].o.disk_bytes, 2 + i);
	}
}

/* ---- unallocated and data ---- */

Test(map, empty_image_is_unallocated_everywhere)
{
	struct qcow2_extent e;

	build(NULL);
	open_img();
	e = map_at(0, img->o.size);
	cr_assert_eq(e.kind, QCOW2_EXTENT_UNALLOCATED);
	cr_assert(e.len > 0 && e.len <= img->o.size);
	cr_assert_null(e.io);
	e = map_at(12345, 100);
	cr_assert_eq(e.kind, QCOW2_EXTENT_UNALLOCATED);
	cr_assert_eq(e.len, 100);
}

Test(map, contiguous_clusters_merge_into_one_extent)
{
	struct qcow2_extent e;
	uint64_t cs;

	build(NULL);
	cs = img->cluster_bytes;
	cr_assert_eq(imgbuild_fill(img, 0, 0x11, 4 * cs), 0);
	cr_assert_eq(imgbuild_host_cluster(img, 3 * cs), imgbuild_host_cluster(img, 0) + 3 * cs);
	open_img();
	e = map_at(0, img->o.size);
	cr_assert_eq(e.kind, QCOW2_EXTENT_DATA);
	cr_assert_eq(e.len, 4 * cs);
	cr_assert_eq(e.host_off, imgbuild_host_cluster(img, 0));
	cr_assert_eq(e.io, qcow2_image_io(qi), "data lives in the image file");
	e = map_at(4 * cs, img->o.size - 4 * cs);
	cr_assert_eq(e.kind, QCOW2_EXTENT_UNALLOCATED);
}

Test(map, non_contiguous_clusters_split)
{
	struct qcow2_extent e;
	uint64_t cs;

	build(NULL);
	cs = img->cluster_bytes;
	cr_assert_eq(imgbuild_fill(img, cs, 0x22, cs), 0);
	cr_assert_eq(imgbuild_fill(img, 0, 0x11, cs), 0); /* allocated after: host order reversed */
	open_img();
	e = map_at(0, 2 * cs);
	cr_assert_eq(e.kind, QCOW2_EXTENT_DATA);
	cr_assert_eq(e.len, cs);
	cr_assert_eq(e.host_off, imgbuild_host_cluster(img, 0));
	e = map_at(cs, cs);
	cr_assert_eq(e.kind, QCOW2_EXTENT_DATA);
	cr_assert_eq(e.host_off, imgbuild_host_cluster(img, cs));
}

Test(map, offset_inside_a_cluster_maps_to_the_same_offset_in_the_host_cluster)
{
	struct qcow2_extent e;
	uint64_t cs;

	build(NULL);
	cs = img->cluster_bytes;
	cr_assert_eq(imgbuild_fill(img, 0, 0x11, 2 * cs), 0);
	open_img();
	e = map_at(cs + 100, 10 * cs);
	cr_assert_eq(e.kind, QCOW2_EXTENT_DATA);
	cr_assert_eq(e.host_off, imgbuild_host_cluster(img, cs) + 100);
	cr_assert_eq(e.len, cs - 100);
	e = map_at(5, 7);
	cr_assert_eq(e.len, 7, "max is respected");
	cr_assert_eq(e.host_off, imgbuild_host_cluster(img, 0) + 5);
}

Test(map, extents_do_not_cross_an_l2_table)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_extent e;
	uint64_t table_span;

	o.cluster_bits = 9; /* an L2 table maps 64 clusters: 32 KiB */
	o.size = 1 << 20;
	build(&o);
	table_span = 64 * 512;
	cr_assert_eq(imgbuild_fill(img, 0, 0x33, 3 * table_span), 0);
	open_img();
	e = map_at(0, o.size);
	cr_assert_eq(e.kind, QCOW2_EXTENT_DATA);
	cr_assert_eq(e.len, table_span);
	e = map_at(table_span - 512, o.size);
	cr_assert_eq(e.len, 512);
	e = map_at(3 * table_span - 1000, o.size);
	cr_assert_eq(e.len, 1000);
	e = map_at(3 * table_span, o.size);
	cr_assert_eq(e.kind, QCOW2_EXTENT_UNALLOCATED);
	cr_assert_leq(e.len, table_span);
}

Test(map, offsets_at_or_past_the_size_are_unallocated)
{
	struct qcow2_extent e;

	build(NULL);
	cr_assert_eq(imgbuild_fill(img, img->o.size - 10, 0x44, 10), 0);
	open_img();
	e = map_at(img->o.size - 10, 1000);
	cr_assert_eq(e.kind, QCOW2_EXTENT_DATA);
	cr_assert_eq(e.len, 10, "clamped to the size");
	e = map_at(img->o.size, 1000);
	cr_assert_eq(e.kind, QCOW2_EXTENT_UNALLOCATED);
	e = map_at(UINT64_MAX - 5, 5);
	cr_assert_eq(e.kind, QCOW2_EXTENT_UNALLOCATED);
}

/* ---- zero clusters ---- */

Test(map, zero_clusters_map_as_zero_and_merge)
{
	struct qcow2_extent e;
	uint64_t cs;

	build(NULL);
	cs = img->cluster_bytes;
	cr_assert_eq(imgbuild_fill(img, 0, 0x55, 4 * cs), 0);
	cr_assert_eq(imgbuild_zero(img, cs, 2 * cs), 0);
	open_img();
	e = map_at(0, 4 * cs);
	cr_assert_eq(e.kind, QCOW2_EXTENT_DATA);
	cr_assert_eq(e.len, cs);
	e = map_at(cs, 4 * cs);
	cr_assert_eq(e.kind, QCOW2_EXTENT_ZERO);
	cr_assert_eq(e.len, 2 * cs);
	cr_assert_null(e.io);
	e = map_at(3 * cs, cs);
	cr_assert_eq(e.kind, QCOW2_EXTENT_DATA);
}

Test(map, zero_flag_with_a_preallocated_offset_is_zero)
{
	struct qcow2_extent e;
	uint64_t ent;

	build(NULL);
	cr_assert_eq(imgbuild_fill(img, 0, 0x55, img->cluster_bytes), 0);
	ent = imgbuild_l2_entry_off(img, 0);
	imgbuild_put_be64(img, ent, imgbuild_get_be64(img, ent) | QCOW2_OFLAG_ZERO);
	open_img();
	e = map_at(0, img->cluster_bytes);
	cr_assert_eq(e.kind, QCOW2_EXTENT_ZERO);
}

/* qemu-img map reports where preallocated zeros live: their extents carry the host offset and
 * end where it stops being contiguous, or where the zeros without a host cluster begin. */
Test(map, preallocated_zero_clusters_keep_their_host_offset)
{
	struct qcow2_extent e;
	uint64_t cs, h1, h3, ent;

	build(NULL);
	cs = img->cluster_bytes;
	cr_assert_eq(imgbuild_fill(img, 3 * cs, 0x55, cs), 0); /* host clusters out of order */
	cr_assert_eq(imgbuild_fill(img, 0, 0x55, 2 * cs), 0);
	cr_assert_eq(imgbuild_zero(img, 2 * cs, cs), 0); /* freed: zeros without a host cluster */
	h1 = imgbuild_host_cluster(img, cs);
	h3 = imgbuild_host_cluster(img, 3 * cs);
	cr_assert_neq(h3 + cs, h1);
	ent = imgbuild_l2_entry_off(img, cs);
	imgbuild_put_be64(img, ent, imgbuild_get_be64(img, ent) | QCOW2_OFLAG_ZERO);
	ent = imgbuild_l2_entry_off(img, 3 * cs);
	imgbuild_put_be64(img, ent, imgbuild_get_be64(img, ent) | QCOW2_OFLAG_ZERO);
	open_img();
	e = map_at(cs, 4 * cs);
	cr_assert_eq(e.kind, QCOW2_EXTENT_ZERO);
	cr_assert_eq(e.len, cs, "a plain zero cluster does not join a preallocated one");
	cr_assert_eq(e.host_off, h1);
	e = map_at(cs + 512, cs);
	cr_assert_eq(e.host_off, h1 + 512);
	e = map_at(2 * cs + 512, 4 * cs);
	cr_assert_eq(e.kind, QCOW2_EXTENT_ZERO);
	cr_assert_eq(e.len, cs - 512);
	cr_assert_eq(e.host_off, 0, "no host cluster, at any offset inside it");
	e = map_at(3 * cs, cs);
	cr_assert_eq(e.kind, QCOW2_EXTENT_ZERO);
	cr_assert_eq(e.host_off, h3);
}

Test(map, v2_zero_flag_is_corruption)
{
	struct imgbuild_opts o = imgbuild_defaults();
	uint64_t ent;

	/* qcow2.txt: bit 0 of a standard cluster descriptor "with version 2 ... is always 0";
	 * QEMU reports such an entry as corruption instead of reading zeros. */
	o.version = 2;
	build(&o);
	cr_assert_eq(imgbuild_fill(img, 0, 0x55, img->cluster_bytes), 0);
	ent = imgbuild_l2_entry_off(img, 0);
	imgbuild_put_be64(img, ent, QCOW2_OFLAG_ZERO);
	open_img();
	cr_assert_eq(map_err(0), -EUCLEAN);
}

/* ---- compressed clusters ---- */

Test(map, compressed_cluster_maps_to_its_descriptor)
{
	struct qcow2_extent e;
	uint64_t cs, host, clen, want_bytes;

	build(NULL);
	cs = img->cluster_bytes;
	data = malloc(cs);
	got = malloc(cs);
	imgbuild_pattern(data, cs, cs, 1);
	cr_assert_eq(imgbuild_write_compressed(img, cs, data, &host, &clen), 0);
	cr_assert_eq(imgbuild_write_compressed(img, 2 * cs, data, NULL, NULL), 0);
	open_img();
	e = map_at(cs, 4 * cs);
	cr_assert_eq(e.kind, QCOW2_EXTENT_COMPRESSED);
	cr_assert_eq(e.len, cs, "compressed clusters never merge");
	cr_assert_eq(e.host_off, host);
	/* The descriptor counts whole sectors from the one holding the first byte. */
	want_bytes = ((host + clen - 1) / 512 + 1) * 512 - host;
	cr_assert_eq(e.comp_bytes, want_bytes);
	cr_assert_eq(e.io, qcow2_image_io(qi));
	cr_assert_eq(qcow2_image_read_compressed(qi, &e, 0, got, cs), 0, "%s", qcow2_last_error());
	cr_assert_arr_eq(got, data, cs);
	cr_assert_eq(qcow2_image_read_compressed(qi, &e, 1000, got, 24), 0);
	cr_assert_arr_eq(got, data + 1000, 24);
}

Test(map, compressed_extent_at_an_unaligned_offset_keeps_the_descriptor_offset)
{
	struct qcow2_extent e;
	uint64_t cs, host;

	build(NULL);
	cs = img->cluster_bytes;
	data = malloc(cs);
	got = malloc(cs);
	imgbuild_pattern(data, cs, 0, 2);
	cr_assert_eq(imgbuild_write_compressed(img, 0, data, &host, NULL), 0);
	open_img();
	/* qcow2.h: for COMPRESSED, host_off is "offset of the compressed data", wherever in
	 * the cluster the mapped offset lies. */
	e = map_at(4096, cs);
	cr_assert_eq(e.kind, QCOW2_EXTENT_COMPRESSED);
	cr_assert_eq(e.len, cs - 4096);
	cr_assert_eq(e.host_off, host, "host_off %#llx, compressed data at %#llx",
		     (unsigned long long)e.host_off, (unsigned long long)host);
	cr_assert_eq(qcow2_image_read_compressed(qi, &e, 4096, got, 100), 0, "%s",
		     qcow2_last_error());
	cr_assert_arr_eq(got, data + 4096, 100);
}

Test(map, compressed_descriptor_outside_the_file_is_corruption)
{
	uint64_t ent, e;

	build(NULL);
	data = calloc(1, img->cluster_bytes);
	cr_assert_eq(imgbuild_write_compressed(img, 0, data, NULL, NULL), 0);
	ent = imgbuild_l2_entry_off(img, 0);
	e = imgbuild_get_be64(img, ent);
	imgbuild_put_be64(img, ent, (e & ~((1ull << 54) - 1)) | img->len); /* x = 54 for 64 KiB */
	open_img();
	cr_assert_eq(map_err(0), -EUCLEAN);
	imgbuild_put_be64(img, ent, e & ~((1ull << 54) - 1)); /* offset 0 */
	open_img();
	cr_assert_eq(map_err(0), -EUCLEAN);
}

/* ---- extended L2 entries ---- */

static void build_ext(void)
{
	struct imgbuild_opts o = imgbuild_defaults();

	o.extended_l2 = true;
	build(&o); /* 64 KiB clusters: 32 subclusters of 2 KiB */
}

Test(map, subclusters_of_one_cluster_map_by_kind)
{
	struct qcow2_extent e;
	uint64_t sc, host;

	build_ext();
	sc = img->subcluster_bytes;
	cr_assert_eq(imgbuild_fill(img, 0, 0x66, 2 * sc), 0); /* 0-1 data */
	cr_assert_eq(imgbuild_zero(img, 5 * sc, sc), 0);      /* 5 zero */
	cr_assert_eq(imgbuild_fill(img, 8 * sc, 0x77, 1), 0); /* 8 data */
	host = imgbuild_host_cluster(img, 0);
	open_img();

	e = map_at(0, img->o.size);
	cr_assert_eq(e.kind, QCOW2_EXTENT_DATA);
	cr_assert_eq(e.len, 2 * sc);
	cr_assert_eq(e.host_off, host);
	e = map_at(2 * sc, img->o.size);
	cr_assert_eq(e.kind, QCOW2_EXTENT_UNALLOCATED);
	cr_assert_eq(e.len, 3 * sc);
	e = map_at(5 * sc, img->o.size);
	cr_assert_eq(e.kind, QCOW2_EXTENT_ZERO);
	cr_assert_eq(e.len, sc);
	e = map_at(6 * sc + 7, img->o.size);
	cr_assert_eq(e.kind, QCOW2_EXTENT_UNALLOCATED);
	cr_assert_eq(e.len, 2 * sc - 7);
	e = map_at(8 * sc + 1, img->o.size);
	cr_assert_eq(e.kind, QCOW2_EXTENT_DATA);
	cr_assert_eq(e.host_off, host + 8 * sc + 1);
	cr_assert_eq(e.len, sc - 1);
	e = map_at(9 * sc, img->o.size);
	cr_assert_eq(e.kind, QCOW2_EXTENT_UNALLOCATED);
	cr_assert_geq(e.len, img->cluster_bytes - 9 * sc, "runs on into unallocated clusters");
}

Test(map, unallocated_subclusters_of_an_allocated_cluster_keep_their_host_offset)
{
	struct qcow2_extent e;
	uint64_t sc, cs, host;

	build_ext();
	sc = img->subcluster_bytes;
	cs = img->cluster_bytes;
	cr_assert_eq(imgbuild_fill(img, 0, 0x66, sc), 0);
	cr_assert_eq(imgbuild_zero(img, 2 * cs, sc), 0); /* a zero subcluster, no host cluster */
	host = imgbuild_host_cluster(img, 0);
	open_img();
	e = map_at(sc + 3, img->o.size);
	cr_assert_eq(e.kind, QCOW2_EXTENT_UNALLOCATED);
	cr_assert_eq(e.host_off, host + sc + 3);
	cr_assert_eq(e.len, cs - sc - 3, "ends with the host cluster");
	e = map_at(cs + sc, img->o.size);
	cr_assert_eq(e.kind, QCOW2_EXTENT_UNALLOCATED);
	cr_assert_eq(e.host_off, 0);
	cr_assert_eq(e.len, cs - sc);
	e = map_at(2 * cs, img->o.size);
	cr_assert_eq(e.kind, QCOW2_EXTENT_ZERO);
	cr_assert_eq(e.host_off, 0);
	e = map_at(2 * cs + sc, img->o.size);
	cr_assert_eq(e.kind, QCOW2_EXTENT_UNALLOCATED);
	cr_assert_eq(e.host_off, 0);
}

Test(map, subclusters_merge_across_contiguous_clusters)
{
	struct qcow2_extent e;
	uint64_t cs;

	build_ext();
	cs = img->cluster_bytes;
	cr_assert_eq(imgbuild_fill(img, 0, 0x12, 2 * cs), 0);
	open_img();
	e = map_at(0, img->o.size);
	cr_assert_eq(e.kind, QCOW2_EXTENT_DATA);
	cr_assert_eq(e.len, 2 * cs);
}

Test(map, subcluster_both_allocated_and_zero_is_corruption)
{
	uint64_t ent;

	build_ext();
	cr_assert_eq(imgbuild_fill(img, 0, 0x66, img->subcluster_bytes), 0);
	ent = imgbuild_l2_entry_off(img, 0);
	imgbuild_put_be64(img, ent + 8, 1ull | 1ull << 32);
	open_img();
	cr_assert_eq(map_err(0), -EUCLEAN);
}

Test(map, zero_flag_in_an_extended_entry_is_corruption)
{
	uint64_t ent;

	build_ext();
	cr_assert_eq(imgbuild_fill(img, 0, 0x66, img->subcluster_bytes), 0);
	ent = imgbuild_l2_entry_off(img, 0);
	imgbuild_put_be64(img, ent, imgbuild_get_be64(img, ent) | QCOW2_OFLAG_ZERO);
	open_img();
	cr_assert_eq(map_err(0), -EUCLEAN);
}

Test(map, allocated_subcluster_without_a_host_cluster_is_corruption)
{
	uint64_t ent;

	build_ext();
	cr_assert_eq(imgbuild_zero(img, 0, img->subcluster_bytes), 0); /* creates the L2 table */
	ent = imgbuild_l2_entry_off(img, 0);
	imgbuild_put_be64(img, ent + 8, 1);
	open_img();
	cr_assert_eq(map_err(0), -EUCLEAN);
}

/* ---- corrupt entries ---- */

struct bit_case {
	unsigned bit;
};

ParameterizedTestParameters(map, reserved_l2_bits_are_corruption)
{
	static struct bit_case cases[] = {{1}, {2}, {5}, {8}, {56}, {57}, {59}, {60}, {61}};
	return cr_make_param_array(struct bit_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct bit_case *c, map, reserved_l2_bits_are_corruption)
{
	uint64_t ent;

	build(NULL);
	cr_assert_eq(imgbuild_fill(img, 0, 0x66, 100), 0);
	ent = imgbuild_l2_entry_off(img, 0);
	imgbuild_put_be64(img, ent, imgbuild_get_be64(img, ent) | 1ull << c->bit);
	open_img();
	cr_assert_eq(map_err(0), -EUCLEAN, "bit %u", c->bit);
	assert_error_mentions("reserved");
}

Test(map, unaligned_data_offset_is_corruption)
{
	uint64_t ent;

	build(NULL);
	cr_assert_eq(imgbuild_fill(img, 0, 0x66, 100), 0);
	ent = imgbuild_l2_entry_off(img, 0);
	imgbuild_put_be64(img, ent, imgbuild_get_be64(img, ent) + 512);
	open_img();
	cr_assert_eq(map_err(0), -EUCLEAN);
	assert_error_mentions("unaligned");
}

Test(map, l2_table_outside_the_file_is_corruption)
{
	uint64_t l1e;

	build(NULL);
	cr_assert_eq(imgbuild_fill(img, 0, 0x66, 100), 0);
	l1e = imgbuild_l1_entry_off(img, 0);
	imgbuild_put_be64(img, l1e, img->len | QCOW2_OFLAG_COPIED);
	open_img();
	cr_assert_eq(map_err(0), -EUCLEAN);
	assert_error_mentions("outside the file");
	imgbuild_put_be64(img, l1e, (1ull << 55) | QCOW2_OFLAG_COPIED);
	open_img();
	cr_assert_eq(map_err(0), -EUCLEAN);
}

Test(map, l2_table_partly_outside_the_file_is_corruption)
{
	uint64_t last;

	build(NULL);
	cr_assert_eq(imgbuild_fill(img, 0, 0x66, 100), 0);
	/* Point the L1 entry at the last cluster of the file, then cut that cluster short. */
	last = img->len - img->cluster_bytes;
	imgbuild_put_be64(img, imgbuild_l1_entry_off(img, 0), last | QCOW2_OFLAG_COPIED);
	img->len -= 8;
	open_img();
	cr_assert_eq(map_err(0), -EUCLEAN);
}

Test(map, unaligned_l1_entry_is_corruption)
{
	uint64_t l1e;

	build(NULL);
	cr_assert_eq(imgbuild_fill(img, 0, 0x66, 100), 0);
	l1e = imgbuild_l1_entry_off(img, 0);
	imgbuild_put_be64(img, l1e, imgbuild_get_be64(img, l1e) + 512);
	open_img();
	cr_assert_eq(map_err(0), -EUCLEAN);
}

Test(map, compressed_cluster_in_an_image_with_a_data_file_is_corruption)
{
	struct imgbuild_opts o = imgbuild_defaults();
	uint64_t ent;

	o.data_file = "data.raw";
	build(&o);
	cr_assert_eq(imgbuild_fill(img, 0, 0x66, 100), 0);
	ent = imgbuild_l2_entry_off(img, 0);
	imgbuild_put_be64(img, ent, QCOW2_OFLAG_COMPRESSED | (img->len - 512));
	open_img();
	cr_assert_eq(map_err(0), -EUCLEAN);
}

Test(map, corrupt_entry_errors_name_the_image)
{
	uint64_t ent;

	/* qcow2.h: "the failure detail is left in a thread-local message ... that names the
	 * file and the cause". */
	build(NULL);
	cr_assert_eq(imgbuild_fill(img, 0, 0x66, 100), 0);
	ent = imgbuild_l2_entry_off(img, 0);
	imgbuild_put_be64(img, ent, imgbuild_get_be64(img, ent) | 1ull << 57);
	open_img();
	cr_assert_eq(map_err(0), -EUCLEAN);
	assert_error_mentions("mem.qcow2");
}

/* ---- external data files ---- */

Test(map, data_file_extents_point_into_the_data_file)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_extent e;
	uint8_t head[16];

	o.data_file = "data.raw";
	o.data_file_raw = true;
	build(&o);
	cr_assert_eq(imgbuild_fill(img, 0, 0x3c, 100), 0); /* guest 0 -> host 0 */
	cr_assert_eq(imgbuild_fill(img, 3 * img->cluster_bytes, 0x4d, 100), 0);
	open_img();
	e = map_at(0, img->o.size);
	cr_assert_eq(e.kind, QCOW2_EXTENT_DATA, "host offset 0 with COPIED is allocated");
	cr_assert_eq(e.host_off, 0);
	cr_assert_neq(e.io, qcow2_image_io(qi));
	cr_assert_eq(qcow2_io_pread(e.io, head, sizeof(head), e.host_off), (ssize_t)sizeof(head));
	cr_assert_eq(head[15], 0x3c);
	e = map_at(3 * img->cluster_bytes + 50, 10);
	cr_assert_eq(e.kind, QCOW2_EXTENT_DATA);
	cr_assert_eq(e.host_off, 3 * img->cluster_bytes + 50);
}

Test(map, data_file_image_needs_an_opener)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_image_opts none = {0};

	o.data_file = "data.raw";
	build(&o);
	cr_assert_eq(qcow2_image_load(imgbuild_io(img), "mem.qcow2", &none, &qi), -ENOTSUP);
	assert_error_mentions("data.raw");
	cr_assert_eq(qcow2_image_load(imgbuild_io(img), "mem.qcow2", NULL, &qi), -ENOTSUP);
	qi = NULL;
}

static int failing_opener(void *ctx, const char *name, struct qcow2_io **io)
{
	(void)ctx;
	(void)name;
	(void)io;
	return qcow2_set_error(-EACCES, "no access to the data file");
}

Test(map, data_file_opener_errors_propagate)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_image_opts fail = {.open_data_file = failing_opener};

	o.data_file = "data.raw";
	build(&o);
	cr_assert_eq(qcow2_image_load(imgbuild_io(img), "mem.qcow2", &fail, &qi), -EACCES);
	assert_error_mentions("no access");
	qi = NULL;
}

/* ---- snapshots ---- */

Test(map, snapshot_l1_shows_the_state_at_the_snapshot)
{
	const struct qcow2_l1 *l1;
	struct qcow2_extent e;
	uint64_t old_host, cs;
	uint8_t b;

	build(NULL);
	cs = img->cluster_bytes;
	cr_assert_eq(imgbuild_fill(img, 0, 0xaa, cs), 0);
	old_host = imgbuild_host_cluster(img, 0);
	cr_assert_eq(imgbuild_snapshot_add(img, NULL), 0);
	cr_assert_eq(imgbuild_fill(img, 0, 0xbb, cs), 0);  /* copied on write */
	cr_assert_eq(imgbuild_fill(img, cs, 0xcc, cs), 0); /* new after the snapshot */
	open_img();
	cr_assert_eq(qcow2_image_snapshot_l1(qi, 0, &l1), 0, "%s", qcow2_last_error());

	cr_assert_eq(qcow2_image_map(qi, l1, 0, 2 * cs, &e), 0);
	cr_assert_eq(e.kind, QCOW2_EXTENT_DATA);
	cr_assert_eq(e.host_off, old_host);
	cr_assert_eq(qcow2_io_pread(e.io, &b, 1, e.host_off), 1);
	cr_assert_eq(b, 0xaa);
	cr_assert_eq(qcow2_image_map(qi, l1, cs, cs, &e), 0);
	cr_assert_eq(e.kind, QCOW2_EXTENT_UNALLOCATED);

	e = map_at(0, cs);
	cr_assert_neq(e.host_off, old_host);
	cr_assert_eq(qcow2_io_pread(e.io, &b, 1, e.host_off), 1);
	cr_assert_eq(b, 0xbb);
}

Test(map, snapshot_of_a_smaller_disk_ends_at_its_size)
{
	struct imgbuild_snapshot_opts so = {0};
	const struct qcow2_l1 *l1;
	struct qcow2_extent e;

	build(NULL);
	cr_assert_eq(imgbuild_fill(img, (2 << 20) - 10, 0xaa, 20), 0);
	so.disk_bytes = 2 << 20;
	cr_assert_eq(imgbuild_snapshot_add(img, &so), 0);
	open_img();
	cr_assert_eq(qcow2_image_snapshot_l1(qi, 0, &l1), 0, "%s", qcow2_last_error());
	cr_assert_eq(l1->size, 2 << 20);
	cr_assert_eq(qcow2_image_map(qi, l1, (2 << 20) - 10, 100, &e), 0);
	cr_assert_eq(e.kind, QCOW2_EXTENT_DATA);
	cr_assert_eq(e.len, 10);
	cr_assert_eq(qcow2_image_map(qi, l1, 2 << 20, 100, &e), 0);
	cr_assert_eq(e.kind, QCOW2_EXTENT_UNALLOCATED);
}
