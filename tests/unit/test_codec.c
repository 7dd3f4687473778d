/* SPDX-License-Identifier: MIT */
/*
 * test_codec.c - compressed clusters (zlib raw deflate and zstd), read through the public
 * qcow2_image_map() and qcow2_image_read_compressed(): every cluster size, clusters packed
 * into shared host clusters, incompressible data, data ending at the end of the file, and
 * damaged or mislabelled compressed data.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "config.h"
#include "imgbuild.h"
#include "testutil.h"
#include "image/image.h"

static struct imgbuild *img;
static struct qcow2_image *qi;
static uint8_t *data, *got;

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

TestSuite(codec, .init = setup, .fini = teardown);

static void skip_without_zstd(uint8_t type)
{
	if (type == QCOW2_COMPRESSION_ZSTD && !HAVE_ZSTD)
		cr_skip_test("built without zstd");
}

static void build(uint32_t cluster_bits, uint8_t type, bool extended_l2)
{
	struct imgbuild_opts o = imgbuild_defaults();

	o.cluster_bits = cluster_bits;
	o.compression_type = type;
	o.extended_l2 = extended_l2;
	o.size = 8ull << cluster_bits;
	img = imgbuild_new(&o);
	data = malloc(img->cluster_bytes);
	got = malloc(img->cluster_bytes);
	cr_assert(data && got);
}

static void open_img(void)
{
	qcow2_image_unload(qi);
	qi = NULL;
	cr_assert_eq(imgbuild_load(img, &qi), 0, "%s", qcow2_last_error());
}

static struct qcow2_extent map_compressed(uint64_t off)
{
	struct qcow2_extent e;

	cr_assert_eq(qcow2_image_map(qi, NULL, off, img->cluster_bytes, &e), 0, "%s",
		     qcow2_last_error());
	cr_assert_eq(e.kind, QCOW2_EXTENT_COMPRESSED, "kind %d at %#llx", e.kind,
		     (unsigned long long)off);
	return e;
}

/* Read cluster @c back in full and in a few pieces, and compare with @want. */
static void check_cluster(uint64_t c, const uint8_t *want)
{
	uint64_t cs = img->cluster_bytes;
	struct qcow2_extent e = map_compressed(c * cs);

	cr_assert_eq(qcow2_image_read_compressed(qi, &e, 0, got, cs), 0, "%s", qcow2_last_error());
	cr_assert_arr_eq(got, want, cs, "cluster %llu", (unsigned long long)c);
	cr_assert_eq(qcow2_image_read_compressed(qi, &e, cs - 1, got, 1), 0);
	cr_assert_eq(got[0], want[cs - 1]);
	cr_assert_eq(qcow2_image_read_compressed(qi, &e, cs / 3, got, cs / 2), 0);
	cr_assert_arr_eq(got, want + cs / 3, cs / 2);
	cr_assert_eq(qcow2_image_read_compressed(qi, &e, cs, got, 0), 0,
		     "an empty read at the end");
}

struct size_case {
	uint32_t cluster_bits;
	uint8_t type;
	bool extended_l2;
};

ParameterizedTestParameters(codec, clusters_of_every_size_round_trip)
{
	static struct size_case cases[] = {
	    {9, QCOW2_COMPRESSION_ZLIB, false},	 {12, QCOW2_COMPRESSION_ZLIB, false},
	    {16, QCOW2_COMPRESSION_ZLIB, false}, {21, QCOW2_COMPRESSION_ZLIB, false},
	    {16, QCOW2_COMPRESSION_ZLIB, true},	 {9, QCOW2_COMPRESSION_ZSTD, false},
	    {12, QCOW2_COMPRESSION_ZSTD, false}, {16, QCOW2_COMPRESSION_ZSTD, false},
	    {21, QCOW2_COMPRESSION_ZSTD, false}, {14, QCOW2_COMPRESSION_ZSTD, true},
	};
	return cr_make_param_array(struct size_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct size_case *c, codec, clusters_of_every_size_round_trip)
{
	uint64_t cs, i;
	uint8_t *all;

	skip_without_zstd(c->type);
	build(c->cluster_bits, c->type, c->extended_l2);
	cs = img->cluster_bytes;
	all = malloc(4 * cs);
	cr_assert_not_null(all);
	for (i = 0; i < 4; i++) {
		imgbuild_pattern(all + i * cs, cs, i * cs, (uint8_t)(i + 1));
		if (i == 2)
			memset(all + i * cs, 0, cs); /* compresses to almost nothing */
		cr_assert_eq(imgbuild_write_compressed(img, i * cs, all + i * cs, NULL, NULL), 0);
	}
	open_img();
	for (i = 0; i < 4; i++)
		check_cluster(i, all + i * cs);
	free(all);
}

ParameterizedTestParameters(codec, packed_clusters_share_host_clusters)
{
	static struct size_case cases[] = {
	    {16, QCOW2_COMPRESSION_ZLIB, false},
	    {16, QCOW2_COMPRESSION_ZSTD, false},
	};
	return cr_make_param_array(struct size_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct size_case *c, codec, packed_clusters_share_host_clusters)
{
	uint64_t cs, host[8], i;
	uint8_t *all;

	skip_without_zstd(c->type);
	build(c->cluster_bits, c->type, false);
	cs = img->cluster_bytes;
	all = malloc(8 * cs);
	cr_assert_not_null(all);
	for (i = 0; i < 8; i++) {
		memset(all + i * cs, (int)i, cs);
		imgbuild_pattern(all + i * cs, 100, i, (uint8_t)i);
		cr_assert_eq(imgbuild_write_compressed(img, i * cs, all + i * cs, &host[i], NULL),
			     0);
	}
	cr_assert_eq(host[0] / cs, host[7] / cs, "all in one host cluster");
	cr_assert_neq(host[1] % 512, 0, "packed at byte granularity");
	open_img();
	for (i = 0; i < 8; i++)
		check_cluster(i, all + i * cs);
	free(all);
}

ParameterizedTestParameters(codec, incompressible_data_round_trips)
{
	static struct size_case cases[] = {
	    {9, QCOW2_COMPRESSION_ZLIB, false},
	    {16, QCOW2_COMPRESSION_ZLIB, false},
	    {16, QCOW2_COMPRESSION_ZSTD, false},
	};
	return cr_make_param_array(struct size_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct size_case *c, codec, incompressible_data_round_trips)
{
	uint64_t seed = 7, i, clen;

	skip_without_zstd(c->type);
	build(c->cluster_bits, c->type, false);
	for (i = 0; i < img->cluster_bytes; i++)
		data[i] = (uint8_t)imgbuild_rand(&seed);
	cr_assert_eq(imgbuild_write_compressed(img, img->cluster_bytes, data, NULL, &clen), 0);
	cr_assert_geq(clen, img->cluster_bytes, "stored, not compressed");
	open_img();
	check_cluster(1, data);
}

Test(codec, compressed_data_ending_at_end_of_file_reads)
{
	uint64_t host, clen;

	build(16, QCOW2_COMPRESSION_ZLIB, false);
	imgbuild_pattern(data, img->cluster_bytes, 0, 9);
	cr_assert_eq(imgbuild_write_compressed(img, 0, data, &host, &clen), 0);
	/* The descriptor's last sector runs past the end of the file. */
	cr_assert_eq(host + img->cluster_bytes, img->len, "the compressed data is last");
	img->len = (size_t)(host + clen);
	open_img();
	check_cluster(0, data);
}

Test(codec, descriptor_claiming_extra_sectors_still_reads)
{
	uint64_t ent, e;

	build(16, QCOW2_COMPRESSION_ZLIB, false);
	imgbuild_pattern(data, img->cluster_bytes, 0, 3);
	cr_assert_eq(imgbuild_write_compressed(img, 0, data, NULL, NULL), 0);
	ent = imgbuild_l2_entry_off(img, 0);
	e = imgbuild_get_be64(img, ent);
	imgbuild_put_be64(img, ent, e | (0xffull << 54)); /* 256 sectors: 128 KiB */
	open_img();
	check_cluster(0, data);
}

Test(codec, truncated_compressed_data_is_corruption)
{
	uint64_t ent, e;
	struct qcow2_extent ex;

	build(16, QCOW2_COMPRESSION_ZLIB, false);
	imgbuild_pattern(data, img->cluster_bytes, 0, 4);
	cr_assert_eq(imgbuild_write_compressed(img, 0, data, NULL, NULL), 0);
	ent = imgbuild_l2_entry_off(img, 0);
	e = imgbuild_get_be64(img, ent);
	imgbuild_put_be64(img, ent, e & ~(0xffull << 54)); /* one sector only */
	open_img();
	ex = map_compressed(0);
	cr_assert_eq(qcow2_image_read_compressed(qi, &ex, 0, got, img->cluster_bytes), -EUCLEAN);
	assert_error_mentions("corrupt zlib");
	assert_error_mentions("mem.qcow2");
}

ParameterizedTestParameters(codec, garbage_instead_of_compressed_data_is_corruption)
{
	static struct size_case cases[] = {
	    {16, QCOW2_COMPRESSION_ZLIB, false},
	    {16, QCOW2_COMPRESSION_ZSTD, false},
	};
	return cr_make_param_array(struct size_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct size_case *c, codec, garbage_instead_of_compressed_data_is_corruption)
{
	struct qcow2_extent e;
	uint64_t host, clen, seed = 3, i;

	skip_without_zstd(c->type);
	build(c->cluster_bits, c->type, false);
	imgbuild_pattern(data, img->cluster_bytes, 0, 5);
	cr_assert_eq(imgbuild_write_compressed(img, 0, data, &host, &clen), 0);
	for (i = 0; i < clen; i++)
		img->bytes[host + i] = (uint8_t)imgbuild_rand(&seed);
	img->bytes[host] = 0xff; /* an invalid deflate block type / zstd magic */
	open_img();
	e = map_compressed(0);
	cr_assert_eq(qcow2_image_read_compressed(qi, &e, 0, got, img->cluster_bytes), -EUCLEAN);
}

Test(codec, zstd_data_in_a_zlib_image_is_corruption)
{
	struct qcow2_extent e;

	if (!HAVE_ZSTD)
		cr_skip_test("built without zstd");
	build(16, QCOW2_COMPRESSION_ZSTD, false);
	imgbuild_pattern(data, img->cluster_bytes, 0, 6);
	cr_assert_eq(imgbuild_write_compressed(img, 0, data, NULL, NULL), 0);
	/* Relabel the image as zlib (clear the feature bit and the type byte). */
	imgbuild_put_be64(img, 72, 0);
	img->bytes[104] = QCOW2_COMPRESSION_ZLIB;
	open_img();
	e = map_compressed(0);
	cr_assert_eq(qcow2_image_read_compressed(qi, &e, 0, got, img->cluster_bytes), -EUCLEAN);
}

Test(codec, zlib_stream_shorter_than_a_cluster_is_corruption)
{
	struct qcow2_extent e;
	uint64_t host, ent;
	z_stream s;
	uint8_t out[1024];
	size_t n;

	build(16, QCOW2_COMPRESSION_ZLIB, false);
	memset(data, 0x42, img->cluster_bytes);
	cr_assert_eq(imgbuild_write_compressed(img, 0, data, &host, NULL), 0);
	/* Replace the data with a complete deflate stream of only 1000 bytes. */
	memset(&s, 0, sizeof(s));
	cr_assert_eq(deflateInit2(&s, 6, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY), Z_OK);
	s.next_in = data;
	s.avail_in = 1000;
	s.next_out = out;
	s.avail_out = sizeof(out);
	cr_assert_eq(deflate(&s, Z_FINISH), Z_STREAM_END);
	n = sizeof(out) - s.avail_out;
	deflateEnd(&s);
	memcpy(img->bytes + host, out, n);
	ent = imgbuild_l2_entry_off(img, 0);
	imgbuild_put_be64(img, ent, QCOW2_OFLAG_COMPRESSED | host); /* one sector */
	open_img();
	e = map_compressed(0);
	cr_assert_eq(qcow2_image_read_compressed(qi, &e, 0, got, img->cluster_bytes), -EUCLEAN);
}

Test(codec, read_compressed_refuses_ranges_outside_the_cluster)
{
	struct qcow2_extent e;

	build(16, QCOW2_COMPRESSION_ZLIB, false);
	memset(data, 1, img->cluster_bytes);
	cr_assert_eq(imgbuild_write_compressed(img, 0, data, NULL, NULL), 0);
	open_img();
	e = map_compressed(0);
	cr_assert_eq(qcow2_image_read_compressed(qi, &e, img->cluster_bytes + 1, got, 0), -EINVAL);
	cr_assert_eq(qcow2_image_read_compressed(qi, &e, 1, got, img->cluster_bytes), -EINVAL);
}

Test(codec, read_errors_while_reading_compressed_data_propagate)
{
	struct qcow2_extent e;

	build(16, QCOW2_COMPRESSION_ZLIB, false);
	imgbuild_pattern(data, img->cluster_bytes, 0, 8);
	cr_assert_eq(imgbuild_write_compressed(img, 0, data, NULL, NULL), 0);
	open_img();
	e = map_compressed(0);
	qcow2_io_mem_fail_nth(qcow2_image_io(qi), QCOW2_IO_READ, 1, -EIO);
	cr_assert_eq(qcow2_image_read_compressed(qi, &e, 0, got, img->cluster_bytes), -EIO);
	cr_assert_eq(qcow2_image_read_compressed(qi, &e, 0, got, img->cluster_bytes), 0);
	cr_assert_arr_eq(got, data, img->cluster_bytes);
}
