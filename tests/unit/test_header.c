/* SPDX-License-Identifier: MIT */
/*
 * test_header.c - qcow2_header_decode(), qcow2_header_check_layout(), qcow2_header_read() and
 * qcow2_probe(): the v2 and v3 headers, every header extension, and the limits on each field.
 * Images come from imgbuild and are then patched at the byte offsets of qcow2.txt.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgbuild.h"
#include "testutil.h"
#include "image/image.h"

/* Header field offsets (qcow2.txt). */
enum {
	H_MAGIC = 0,
	H_VERSION = 4,
	H_BACKING_OFF = 8,
	H_BACKING_LEN = 16,
	H_CLUSTER_BITS = 20,
	H_SIZE = 24,
	H_CRYPT = 32,
	H_L1_SIZE = 36,
	H_L1_OFF = 40,
	H_REFT_OFF = 48,
	H_REFT_CLUSTERS = 56,
	H_NB_SNAPSHOTS = 60,
	H_SNAPSHOTS_OFF = 64,
	H_INCOMPAT = 72,
	H_COMPAT = 80,
	H_AUTOCLEAR = 88,
	H_REFCOUNT_ORDER = 96,
	H_HEADER_LEN = 100,
	H_COMPRESSION = 104,
};

#define EXT_CRYPTO    0x0537be77u
#define EXT_DATA_FILE 0x44415441u
#define EXT_BITMAPS   0x23852875u

static struct imgbuild *img;

static void build_default_image(void)
{
	img = imgbuild_new(NULL);
}

static void free_image(void)
{
	imgbuild_free(img);
	img = NULL;
}

/* Replace the suite's image. */
static void rebuild(const struct imgbuild_opts *o)
{
	imgbuild_free(img);
	img = imgbuild_new(o);
}

static int decode(struct qcow2_header *h)
{
	return qcow2_header_decode(img->bytes, img->len, h);
}

static int decode_and_check(struct qcow2_header *h)
{
	int r = decode(h);

	return r < 0 ? r : qcow2_header_check_layout(h, img->len);
}

/* Open the image through the public entry point; returns its result. */
static int open_image(void)
{
	struct qcow2_image *qi = NULL;
	int r = imgbuild_load(img, &qi);

	qcow2_image_unload(qi);
	return r;
}

TestSuite(header, .init = build_default_image, .fini = free_image);

/* ---- well-formed headers ---- */

Test(header, v3_default_fields_decode)
{
	struct qcow2_header h;

	cr_assert_eq(decode_and_check(&h), 0, "%s", qcow2_last_error());
	cr_assert_eq(h.version, 3);
	cr_assert_eq(h.cluster_bits, 16);
	cr_assert_eq(h.size, 4 << 20);
	cr_assert_eq(h.crypt_method, 0);
	cr_assert_eq(h.l1_entries, img->l1_entries);
	cr_assert_eq(h.l1_off, img->l1_off);
	cr_assert_eq(h.reftable_off, img->reftable_off);
	cr_assert_eq(h.reftable_clusters, img->reftable_clusters);
	cr_assert_eq(h.nb_snapshots, 0);
	cr_assert_eq(h.incompat, 0);
	cr_assert_eq(h.compat, 0);
	cr_assert_eq(h.autoclear, 0);
	cr_assert_eq(h.refcount_order, 4);
	cr_assert_eq(h.header_len, 112);
	cr_assert_eq(h.compression_type, QCOW2_COMPRESSION_ZLIB);
	cr_assert_str_empty(h.backing_file);
	cr_assert_str_empty(h.backing_fmt);
	cr_assert_str_empty(h.data_file);
	cr_assert_eq(h.nb_feature_names, 8, "QEMU's feature table has 8 entries");
	cr_assert_eq(h.nb_unknown_exts, 0);
	cr_assert_not(h.has_bitmaps_ext);
	cr_assert_not(h.has_crypto_ext);
}

Test(header, v2_fields_decode_with_implied_refcount_order)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_header h;

	o.version = 2;
	rebuild(&o);
	cr_assert_eq(decode_and_check(&h), 0, "%s", qcow2_last_error());
	cr_assert_eq(h.version, 2);
	cr_assert_eq(h.header_len, 72);
	cr_assert_eq(h.refcount_order, 4, "v2 refcounts are 16 bits");
	cr_assert_eq(h.incompat, 0);
	cr_assert_eq(h.compression_type, 0);
	cr_assert_eq(h.nb_feature_names, 0);
	cr_assert_eq(h.l1_off, img->l1_off);
}

Test(header, v2_ignores_bytes_where_v3_fields_would_be)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_header h;

	o.version = 2;
	o.cluster_bits = 12;
	rebuild(&o);
	/* In v2 the extensions start at byte 72; put an unknown extension there whose bytes
	 * would be absurd v3 fields. */
	imgbuild_put_be32(img, 72, 0x12345678);
	imgbuild_put_be32(img, 76, 32);
	memset(img->bytes + 80, 0xff, 32);
	cr_assert_eq(decode_and_check(&h), 0, "%s", qcow2_last_error());
	cr_assert_eq(h.incompat, 0);
	cr_assert_eq(h.refcount_order, 4);
	cr_assert_eq(h.nb_unknown_exts, 1);
}

Test(header, v3_header_of_104_bytes_has_no_compression_byte)
{
	struct qcow2_header h;

	imgbuild_put_be32(img, H_HEADER_LEN, 104);
	img->bytes[H_COMPRESSION] = 0;
	cr_assert_eq(decode_and_check(&h), 0, "%s", qcow2_last_error());
	cr_assert_eq(h.header_len, 104);
	cr_assert_eq(h.compression_type, 0);
}

Test(header, dirty_corrupt_and_lazy_refcount_bits_are_decoded)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_header h;

	o.lazy_refcounts = true;
	o.incompat = QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT;
	rebuild(&o);
	cr_assert_eq(decode_and_check(&h), 0, "%s", qcow2_last_error());
	cr_assert_eq(h.incompat, QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT);
	cr_assert_eq(h.compat, QCOW2_COMPAT_LAZY_REFCOUNTS);
}

Test(header, unknown_compatible_and_autoclear_bits_are_accepted)
{
	struct qcow2_header h;

	imgbuild_put_be64(img, H_COMPAT, 1ull << 40);
	imgbuild_put_be64(img, H_AUTOCLEAR, 1ull << 33);
	cr_assert_eq(decode_and_check(&h), 0, "%s", qcow2_last_error());
	cr_assert_eq(h.compat, 1ull << 40);
	cr_assert_eq(h.autoclear, 1ull << 33);
}

Test(header, probe_recognises_only_the_magic)
{
	static const uint8_t qfi[] = {'Q', 'F', 'I', 0xfb};
	static const uint8_t other[] = {'Q', 'F', 'I', 0xfa};

	cr_assert(qcow2_probe(img->bytes, img->len));
	cr_assert(qcow2_probe(qfi, 4));
	cr_assert_not(qcow2_probe(qfi, 3));
	cr_assert_not(qcow2_probe(other, 4));
	cr_assert_not(qcow2_probe(NULL, 0));
}

/* ---- not qcow2 at all ---- */

Test(header, bad_magic_is_einval)
{
	struct qcow2_header h;

	imgbuild_put_be32(img, H_MAGIC, 0x514649fa);
	cr_assert_eq(decode(&h), -EINVAL);
	assert_error_mentions("magic");
}

struct version_case {
	uint32_t version;
	int want;
};

ParameterizedTestParameters(header, version_limits)
{
	static struct version_case cases[] = {
	    {0, -EINVAL}, {1, -EINVAL}, {2, 0}, {3, 0}, {4, -EINVAL}, {0xffffffff, -EINVAL},
	};
	return cr_make_param_array(struct version_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct version_case *c, header, version_limits)
{
	struct qcow2_header h;

	imgbuild_put_be32(img, H_VERSION, c->version);
	cr_assert_eq(decode(&h), c->want, "version=%u: %s", c->version, qcow2_last_error());
}

Test(header, buffers_too_short_for_a_header_are_einval)
{
	struct qcow2_header h;

	cr_assert_eq(qcow2_header_decode(img->bytes, 0, &h), -EINVAL);
	cr_assert_eq(qcow2_header_decode(img->bytes, 71, &h), -EINVAL);
	cr_assert_eq(qcow2_header_decode(img->bytes, 103, &h), -EINVAL, "v3 needs 104 bytes");
}

/* ---- the fixed fields' limits ---- */

struct bits_case {
	uint32_t bits;
	int want;
};

ParameterizedTestParameters(header, cluster_bits_limits)
{
	static struct bits_case cases[] = {
	    {0, -EINVAL}, {8, -EINVAL},	 {9, 0},	{12, 0},       {16, 0},
	    {21, 0},	  {22, -EINVAL}, {63, -EINVAL}, {64, -EINVAL}, {0xffffffff, -EINVAL},
	};
	return cr_make_param_array(struct bits_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct bits_case *c, header, cluster_bits_limits)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_header h;

	o.cluster_bits = c->bits < 9 ? 9 : c->bits > 21 ? 21 : c->bits;
	rebuild(&o);
	imgbuild_put_be32(img, H_CLUSTER_BITS, c->bits); /* cluster_bits lives at byte 20 */
	cr_assert_eq(decode(&h), c->want, "bits=%u: %s", c->bits, qcow2_last_error());
}

ParameterizedTestParameters(header, refcount_order_limits)
{
	static struct bits_case cases[] = {
	    {0, 0}, {1, 0}, {2, 0},	  {3, 0},	 {4, 0},
	    {5, 0}, {6, 0}, {7, -EINVAL}, {64, -EINVAL}, {0xffffffff, -EINVAL},
	};
	return cr_make_param_array(struct bits_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct bits_case *c, header, refcount_order_limits)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_header h;

	o.refcount_order = c->bits > 6 ? 6 : c->bits;
	rebuild(&o);
	imgbuild_put_be32(img, H_REFCOUNT_ORDER, c->bits);
	cr_assert_eq(decode_and_check(&h), c->want, "order=%u: %s", c->bits, qcow2_last_error());
	if (c->want == 0)
		cr_assert_eq(h.refcount_order, c->bits);
}

struct hlen_case {
	uint32_t header_len;
	int want;
};

ParameterizedTestParameters(header, header_length_limits)
{
	static struct hlen_case cases[] = {
	    {0, -EUCLEAN},     {72, -EUCLEAN},
	    {100, -EUCLEAN},   {104, 0},
	    {108, 0},	       {112, 0}, /* any length QEMU opens, not only multiples of 8 */
	    {113, 0},	       {4095, 0},
	    {120, 0},	       {65536, 0},
	    {65544, -EUCLEAN}, {0xfffffff8, -EUCLEAN},
	};
	return cr_make_param_array(struct hlen_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct hlen_case *c, header, header_length_limits)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_header h;

	o.feature_table = false; /* the bytes after the header are then zero: no extensions */
	rebuild(&o);
	imgbuild_put_be32(img, H_HEADER_LEN, c->header_len);
	cr_assert_eq(decode(&h), c->want, "header_len=%u: %s", c->header_len, qcow2_last_error());
	if (c->want == 0)
		cr_assert_eq(h.header_len, c->header_len);
}

Test(header, header_length_past_end_of_a_short_buffer_is_refused)
{
	struct qcow2_header h;

	/* A v3 header claiming a compression byte the buffer does not hold. */
	cr_assert_eq(qcow2_header_decode(img->bytes, 104, &h), -EUCLEAN);
	assert_error_mentions("past end");
}

Test(header, virtual_size_over_64_pib_is_refused)
{
	struct qcow2_header h;

	imgbuild_put_be64(img, H_SIZE, QCOW2_MAX_VIRTUAL_SIZE + 1);
	cr_assert_eq(decode(&h), -EUCLEAN);
	imgbuild_put_be64(img, H_SIZE, UINT64_MAX);
	cr_assert_eq(decode(&h), -EUCLEAN);
}

Test(header, l1_table_too_small_for_the_size_is_refused)
{
	struct qcow2_header h;

	/* One L1 entry maps 512 MiB with 64 KiB clusters. */
	imgbuild_put_be64(img, H_SIZE, 512ull << 20);
	cr_assert_eq(decode(&h), 0, "%s", qcow2_last_error());
	imgbuild_put_be64(img, H_SIZE, (512ull << 20) + 1);
	cr_assert_eq(decode(&h), -EUCLEAN);
	assert_error_mentions("too small");
}

struct l1_case {
	uint32_t l1_entries;
	int want_decode;
};

ParameterizedTestParameters(header, huge_l1_size_is_refused)
{
	static struct l1_case cases[] = {
	    {QCOW2_MAX_L1_BYTES / 8, 0},
	    {QCOW2_MAX_L1_BYTES / 8 + 1, -EUCLEAN},
	    {0x20000000, -EUCLEAN}, /* * 8 overflows 32 bits */
	    {0xffffffff, -EUCLEAN},
	};
	return cr_make_param_array(struct l1_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct l1_case *c, header, huge_l1_size_is_refused)
{
	struct qcow2_header h;

	imgbuild_put_be32(img, H_L1_SIZE, c->l1_entries);
	cr_assert_eq(decode(&h), c->want_decode, "l1_size=%u: %s", c->l1_entries,
		     qcow2_last_error());
	/* Even the largest allowed table does not fit in this small file. */
	cr_assert_eq(decode_and_check(&h), -EUCLEAN);
	cr_assert_eq(open_image(), -EUCLEAN);
}

Test(header, l1_table_past_end_of_file_is_refused)
{
	struct qcow2_header h;

	imgbuild_put_be64(img, H_L1_OFF, img->len);
	cr_assert_eq(decode(&h), 0, "decode is pure: %s", qcow2_last_error());
	cr_assert_eq(qcow2_header_check_layout(&h, img->len), -EUCLEAN);
	assert_error_mentions("L1 table");
	cr_assert_eq(open_image(), -EUCLEAN);
	assert_error_mentions("mem.qcow2");
	assert_error_mentions("past end of file");
}

Test(header, l1_table_partly_past_end_of_file_is_refused)
{
	/* Two entries, the second of which would be past the end. */
	imgbuild_put_be32(img, H_L1_SIZE, 2);
	imgbuild_put_be64(img, H_L1_OFF, img->len - img->cluster_bytes);
	img->len = img->len - img->cluster_bytes + 8;
	cr_assert_eq(open_image(), -EUCLEAN);
}

Test(header, l1_offset_that_overflows_is_refused)
{
	struct qcow2_header h;

	imgbuild_put_be64(img, H_L1_OFF, 0xffffffffffff0000ull);
	cr_assert_eq(decode_and_check(&h), -EUCLEAN);
}

struct off_case {
	uint32_t field;
	uint64_t value;
};

ParameterizedTestParameters(header, misplaced_tables_are_refused)
{
	static struct off_case cases[] = {
	    {H_L1_OFF, 0},	 /* with entries */
	    {H_L1_OFF, 0x30200}, /* not cluster-aligned */
	    {H_L1_OFF, 0x10},
	    {H_REFT_OFF, 0},
	    {H_REFT_OFF, 0x10200},
	    {H_REFT_OFF, 1ull << 62},
	    {H_SNAPSHOTS_OFF, 0x10100}, /* with one snapshot */
	    {H_SNAPSHOTS_OFF, 0},
	};
	return cr_make_param_array(struct off_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct off_case *c, header, misplaced_tables_are_refused)
{
	struct qcow2_header h;

	if (c->field == H_SNAPSHOTS_OFF)
		imgbuild_put_be32(img, H_NB_SNAPSHOTS, 1);
	imgbuild_put_be64(img, c->field, c->value);
	cr_assert_eq(decode_and_check(&h), -EUCLEAN, "field %u = %#llx: %s", c->field,
		     (unsigned long long)c->value, qcow2_last_error());
}

Test(header, refcount_table_past_end_of_file_is_refused)
{
	struct qcow2_header h;

	imgbuild_put_be64(img, H_REFT_OFF, img->len);
	cr_assert_eq(decode(&h), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_header_check_layout(&h, img->len), -EUCLEAN);
	assert_error_mentions("refcount table");
	cr_assert_eq(open_image(), -EUCLEAN);
}

Test(header, refcount_table_size_limits)
{
	struct qcow2_header h;

	imgbuild_put_be32(img, H_REFT_CLUSTERS, 0);
	cr_assert_eq(decode(&h), -EUCLEAN, "no refcount table");
	/* 8 MiB is the cap: 128 clusters of 64 KiB are allowed (but past the end here),
	 * 129 are not. */
	imgbuild_put_be32(img, H_REFT_CLUSTERS, 128);
	cr_assert_eq(decode(&h), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_header_check_layout(&h, img->len), -EUCLEAN);
	imgbuild_put_be32(img, H_REFT_CLUSTERS, 129);
	cr_assert_eq(decode(&h), -EUCLEAN);
	imgbuild_put_be32(img, H_REFT_CLUSTERS, 0xffffffff);
	cr_assert_eq(decode(&h), -EUCLEAN);
}

Test(header, overlapping_l1_and_refcount_tables_are_refused)
{
	struct qcow2_header h;

	imgbuild_put_be64(img, H_L1_OFF, img->reftable_off);
	cr_assert_eq(decode(&h), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_header_check_layout(&h, img->len), -EUCLEAN);
	assert_error_mentions("overlap");
}

Test(header, empty_l1_table_may_have_any_offset)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_header h;

	o.size = 0;
	rebuild(&o);
	cr_assert_eq(img->l1_entries, 0);
	imgbuild_put_be64(img, H_L1_OFF, 0);
	cr_assert_eq(decode_and_check(&h), 0, "%s", qcow2_last_error());
	cr_assert_eq(open_image(), 0, "%s", qcow2_last_error());
}

struct snap_count_case {
	uint32_t nb;
	int want;
};

ParameterizedTestParameters(header, snapshot_count_limits)
{
	static struct snap_count_case cases[] = {
	    {1, 0}, {65535, 0}, {65536, 0}, {65537, -EUCLEAN}, {0xffffffff, -EUCLEAN},
	};
	return cr_make_param_array(struct snap_count_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct snap_count_case *c, header, snapshot_count_limits)
{
	struct qcow2_header h;

	imgbuild_put_be32(img, H_NB_SNAPSHOTS, c->nb);
	imgbuild_put_be64(img, H_SNAPSHOTS_OFF, img->l1_off); /* somewhere aligned */
	cr_assert_eq(decode(&h), c->want, "nb=%u: %s", c->nb, qcow2_last_error());
}

Test(header, snapshot_table_past_end_of_file_is_refused)
{
	struct qcow2_header h;

	imgbuild_put_be32(img, H_NB_SNAPSHOTS, 1);
	imgbuild_put_be64(img, H_SNAPSHOTS_OFF, img->len);
	cr_assert_eq(decode(&h), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_header_check_layout(&h, img->len), -EUCLEAN);
	assert_error_mentions("snapshot table");
}

/* ---- features ---- */

struct incompat_case {
	unsigned bit;
};

ParameterizedTestParameters(header, unknown_incompatible_bits_are_enotsup)
{
	static struct incompat_case cases[] = {{5}, {6}, {17}, {31}, {32}, {63}};
	return cr_make_param_array(struct incompat_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct incompat_case *c, header, unknown_incompatible_bits_are_enotsup)
{
	struct qcow2_header h;
	char hex[32];

	imgbuild_put_be64(img, H_INCOMPAT, 1ull << c->bit);
	cr_assert_eq(decode(&h), -ENOTSUP, "bit %u: %s", c->bit, qcow2_last_error());
	snprintf(hex, sizeof(hex), "%#llx", 1ull << c->bit);
	assert_error_mentions(hex); /* QEMU's table does not name it: the bits are shown */
	cr_assert_eq(open_image(), -ENOTSUP);
	assert_error_mentions("mem.qcow2");
}

Test(header, feature_table_names_the_unknown_incompatible_bit)
{
	static const struct imgbuild_feature extra[] = {
	    {1, 9, "compatible-nine"}, /* same bit, other type: not it */
	    {2, 9, "autoclear-nine"},
	    {0, 9, "frobnication"},
	};
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_header h;

	o.extra_features = extra;
	o.n_extra_features = 3;
	o.incompat = 1ull << 9;
	rebuild(&o);
	cr_assert_eq(decode(&h), -ENOTSUP);
	assert_error_mentions("frobnication");
	cr_assert_eq(open_image(), -ENOTSUP);
	assert_error_mentions("frobnication");
}

Test(header, feature_name_of_full_length_is_not_overrun)
{
	static const struct imgbuild_feature extra[] = {
	    {0, 40, "0123456789012345678901234567890123456789abcdef"}, /* 46 bytes, no NUL */
	};
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_header h;

	o.extra_features = extra;
	o.n_extra_features = 1;
	o.incompat = 1ull << 40;
	rebuild(&o);
	cr_assert_eq(decode(&h), -ENOTSUP);
	assert_error_mentions("0123456789012345678901234567890123456789abcdef");
}

/* The feature name table only names bits for messages, and QEMU opens an image whose table
 * length is not a multiple of 48: whole entries are used, the partial one ignored. */
Test(header, feature_table_with_a_partial_entry_is_accepted)
{
	struct qcow2_header h;

	/* QEMU's table is the first extension after the 112-byte header: cut its last entry
	 * short by one byte (the padded length, hence the next extension's place, stays). */
	imgbuild_put_be32(img, 112 + 4, 8 * 48 - 1);
	cr_assert_eq(decode_and_check(&h), 0, "%s", qcow2_last_error());
	cr_assert_eq(h.nb_feature_names, 7);
	cr_assert_eq(open_image(), 0, "%s", qcow2_last_error());
}

/* A header length that is not a multiple of 8: the extensions start right there (QEMU). */
Test(header, extensions_follow_an_unaligned_header_length)
{
	struct qcow2_header h;

	memmove(img->bytes + 113, img->bytes + 112, 8 + 8 * 48);
	imgbuild_put_be32(img, H_HEADER_LEN, 113);
	cr_assert_eq(decode_and_check(&h), 0, "%s", qcow2_last_error());
	cr_assert_eq(h.header_len, 113);
	cr_assert_eq(h.nb_feature_names, 8, "the feature table at offset 113 is found");
	cr_assert_eq(open_image(), 0, "%s", qcow2_last_error());
}

Test(header, known_incompatible_bits_are_accepted)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_header h;

	o.extended_l2 = true;
	o.compression_type = QCOW2_COMPRESSION_ZSTD;
	o.incompat = QCOW2_INCOMPAT_DIRTY;
	rebuild(&o);
	cr_assert_eq(decode_and_check(&h), 0, "%s", qcow2_last_error());
	cr_assert_eq(h.incompat,
		     QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_COMPRESSION | QCOW2_INCOMPAT_EXTL2);
	cr_assert_eq(h.compression_type, QCOW2_COMPRESSION_ZSTD);
}

struct crypt_case {
	uint32_t method;
	int want;
	char text[40]; /* arrays, not pointers: parameters are copied to the worker */
};

ParameterizedTestParameters(header, encryption_methods)
{
	static struct crypt_case cases[] = {
	    {QCOW2_CRYPT_LUKS, -EUCLEAN, "without a crypto header extension"},
	    {3, -EINVAL, "encryption method"},
	    {0xffffffff, -EINVAL, "encryption method"},
	};
	return cr_make_param_array(struct crypt_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct crypt_case *c, header, encryption_methods)
{
	struct qcow2_header h;

	imgbuild_put_be32(img, H_CRYPT, c->method);
	cr_assert_eq(decode(&h), c->want, "method %u: %s", c->method, qcow2_last_error());
	assert_error_mentions(c->text);
	cr_assert_eq(open_image(), c->want);
	assert_error_mentions(c->text);
	assert_error_mentions("mem.qcow2");
}

/* An encrypted image's metadata is plain: its header decodes and the image loads (for info and
 * check); its data needs a key, which the data path asks for. */
Test(header, legacy_aes_image_loads)
{
	struct qcow2_header h;

	imgbuild_put_be32(img, H_CRYPT, QCOW2_CRYPT_AES);
	cr_assert_eq(decode(&h), 0, "%s", qcow2_last_error());
	cr_assert_eq(h.crypt_method, QCOW2_CRYPT_AES);
	cr_assert_eq(open_image(), 0, "%s", qcow2_last_error());
}

struct comp_case {
	bool bit;
	uint8_t type;
	int want;
};

ParameterizedTestParameters(header, compression_type_must_match_its_feature_bit)
{
	static struct comp_case cases[] = {
	    {false, QCOW2_COMPRESSION_ZLIB, 0},
	    {true, QCOW2_COMPRESSION_ZSTD, 0},
	    {true, QCOW2_COMPRESSION_ZLIB, -EUCLEAN},
	    {false, QCOW2_COMPRESSION_ZSTD, -EUCLEAN},
	    {false, 2, -EUCLEAN},
	    {true, 2, -ENOTSUP},
	    {true, 255, -ENOTSUP},
	};
	return cr_make_param_array(struct comp_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct comp_case *c, header, compression_type_must_match_its_feature_bit)
{
	struct qcow2_header h;

	imgbuild_put_be64(img, H_INCOMPAT, c->bit ? QCOW2_INCOMPAT_COMPRESSION : 0);
	img->bytes[H_COMPRESSION] = c->type;
	cr_assert_eq(decode(&h), c->want, "bit=%d type=%u: %s", c->bit, c->type,
		     qcow2_last_error());
	if (c->want == 0)
		cr_assert_eq(h.compression_type, c->type);
}

Test(header, compression_bit_without_compression_byte_is_refused)
{
	struct qcow2_header h;

	imgbuild_put_be32(img, H_HEADER_LEN, 104);
	imgbuild_put_be64(img, H_INCOMPAT, QCOW2_INCOMPAT_COMPRESSION);
	cr_assert_eq(decode(&h), -EUCLEAN);
}

Test(header, extended_l2_needs_16k_clusters)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_header h;

	o.extended_l2 = true;
	o.cluster_bits = 14;
	rebuild(&o);
	cr_assert_eq(decode_and_check(&h), 0, "%s", qcow2_last_error());
	imgbuild_put_be32(img, H_CLUSTER_BITS, 13);
	cr_assert_eq(decode(&h), -EUCLEAN);
}

/* ---- extensions ---- */

Test(header, backing_file_and_format_are_decoded)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_header h;

	o.backing_file = "../images/base image.qcow2";
	o.backing_fmt = "qcow2";
	rebuild(&o);
	cr_assert_eq(decode_and_check(&h), 0, "%s", qcow2_last_error());
	cr_assert_str_eq(h.backing_file, "../images/base image.qcow2");
	cr_assert_eq(h.backing_len, strlen("../images/base image.qcow2"));
	cr_assert_str_eq(h.backing_fmt, "qcow2");
}

Test(header, backing_file_without_format_extension)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_header h;

	o.version = 2;
	o.backing_file = "base.raw";
	rebuild(&o);
	cr_assert_eq(decode_and_check(&h), 0, "%s", qcow2_last_error());
	cr_assert_str_eq(h.backing_file, "base.raw");
	cr_assert_str_empty(h.backing_fmt);
}

static char *repeat(char c, size_t n)
{
	char *s = malloc(n + 1);

	cr_assert_not_null(s);
	memset(s, c, n);
	s[n] = '\0';
	return s;
}

Test(header, backing_name_length_limit)
{
	struct imgbuild_opts o = imgbuild_defaults();
	char *name = repeat('b', QCOW2_MAX_BACKING_NAME);
	struct qcow2_header h;

	o.backing_file = name;
	rebuild(&o);
	cr_assert_eq(decode(&h), 0, "%s", qcow2_last_error());
	cr_assert_str_eq(h.backing_file, name);
	free(name);

	name = repeat('b', QCOW2_MAX_BACKING_NAME + 1);
	o.backing_file = name;
	rebuild(&o);
	cr_assert_eq(decode(&h), -EUCLEAN);
	free(name);
}

Test(header, backing_name_placement_is_checked)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_header h;
	uint64_t name_off;

	o.backing_file = "base.qcow2";
	rebuild(&o);
	name_off = imgbuild_get_be64(img, H_BACKING_OFF);

	/* past the end of the buffer given */
	cr_assert_eq(qcow2_header_decode(img->bytes, name_off + 5, &h), -EUCLEAN);
	/* overlapping the header */
	imgbuild_put_be64(img, H_BACKING_OFF, 64);
	cr_assert_eq(decode(&h), -EUCLEAN);
	/* past the first cluster */
	imgbuild_put_be64(img, H_BACKING_OFF, img->cluster_bytes - 4);
	cr_assert_eq(decode(&h), -EUCLEAN);
	imgbuild_put_be64(img, H_BACKING_OFF, UINT64_MAX - 2);
	cr_assert_eq(decode(&h), -EUCLEAN);
	/* a NUL inside the name */
	imgbuild_put_be64(img, H_BACKING_OFF, name_off);
	img->bytes[name_off + 3] = 0;
	cr_assert_eq(decode(&h), -EUCLEAN);
}

Test(header, backing_format_length_limit)
{
	struct imgbuild_opts o = imgbuild_defaults();
	char *fmt = repeat('f', 31);
	struct qcow2_header h;

	o.backing_file = "base";
	o.backing_fmt = fmt;
	rebuild(&o);
	cr_assert_eq(decode(&h), 0, "%s", qcow2_last_error());
	cr_assert_str_eq(h.backing_fmt, fmt);
	free(fmt);
	fmt = repeat('f', 32);
	o.backing_fmt = fmt;
	rebuild(&o);
	cr_assert_eq(decode(&h), -EUCLEAN);
	free(fmt);
}

Test(header, bitmaps_extension_is_decoded)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_header h;

	o.bitmaps = true;
	rebuild(&o);
	cr_assert_eq(decode_and_check(&h), 0, "%s", qcow2_last_error());
	cr_assert(h.has_bitmaps_ext);
	cr_assert_eq(h.autoclear, QCOW2_AUTOCLEAR_BITMAPS);
	cr_assert_eq(h.nb_bitmaps, 1);
	cr_assert_eq(h.bitmap_dir_off, img->bitmap_dir_off);
	cr_assert_eq(h.bitmap_dir_bytes, img->bitmap_dir_bytes);
	cr_assert_eq(open_image(), 0, "%s", qcow2_last_error());
}

/* Offset of the data of the first extension of @type after the header, or 0. */
static uint64_t find_ext(uint32_t type)
{
	uint64_t off = imgbuild_get_be32(img, H_HEADER_LEN);

	while (off + 8 <= img->cluster_bytes) {
		uint32_t t = (uint32_t)(imgbuild_get_be64(img, off) >> 32);
		uint32_t len = (uint32_t)imgbuild_get_be64(img, off);

		if (t == 0)
			return 0;
		if (t == type)
			return off + 8;
		off += 8 + ((len + 7ull) & ~7ull);
	}
	return 0;
}

Test(header, bitmaps_extension_fields_are_validated_when_in_use)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_header h;
	uint64_t ext;

	o.bitmaps = true;
	rebuild(&o);
	ext = find_ext(EXT_BITMAPS);
	cr_assert_neq(ext, 0);

	imgbuild_put_be32(img, ext, 0); /* no bitmaps */
	cr_assert_eq(decode(&h), -EUCLEAN);
	imgbuild_put_be32(img, ext, 65536); /* too many */
	cr_assert_eq(decode(&h), -EUCLEAN);
	imgbuild_put_be32(img, ext, 1);
	imgbuild_put_be32(img, ext + 4, 1); /* reserved */
	cr_assert_eq(decode(&h), -EUCLEAN);
	imgbuild_put_be32(img, ext + 4, 0);
	imgbuild_put_be64(img, ext + 16, img->bitmap_dir_off + 8); /* misaligned */
	cr_assert_eq(decode(&h), -EUCLEAN);
	imgbuild_put_be64(img, ext + 16, img->len); /* past the end */
	cr_assert_eq(decode(&h), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_header_check_layout(&h, img->len), -EUCLEAN);
	imgbuild_put_be64(img, ext + 16, img->bitmap_dir_off);
	imgbuild_put_be64(img, ext + 8, (64ull << 20) + 1); /* directory too large */
	cr_assert_eq(decode(&h), -EUCLEAN);

	/* Without the autoclear bit the extension is stale and ignored, as in QEMU. */
	imgbuild_put_be64(img, H_AUTOCLEAR, 0);
	cr_assert_eq(decode_and_check(&h), 0, "%s", qcow2_last_error());
	cr_assert(h.has_bitmaps_ext);
}

Test(header, bitmaps_extension_of_wrong_length_is_refused)
{
	static const uint8_t data[16] = {0, 0, 0, 1};
	static const struct imgbuild_ext ext = {EXT_BITMAPS, data, sizeof(data)};
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_header h;

	o.exts = &ext;
	o.n_exts = 1;
	o.autoclear = QCOW2_AUTOCLEAR_BITMAPS;
	rebuild(&o);
	cr_assert_eq(decode(&h), -EUCLEAN);
	assert_error_mentions("bitmaps extension");
}

Test(header, crypto_extension_fields_are_decoded_when_accepted)
{
	uint8_t data[16] = {0};
	struct imgbuild_ext ext = {EXT_CRYPTO, data, sizeof(data)};
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_header h;
	int r;

	data[5] = 0x01; /* offset 0x10000 */
	data[15] = 0x42;
	o.exts = &ext;
	o.n_exts = 1;
	rebuild(&o);
	/* QEMU refuses the extension without LUKS; accepting it (for later) is fine too. */
	r = decode(&h);
	if (r == 0) {
		cr_assert(h.has_crypto_ext);
		cr_assert_eq(h.crypto_off, 0x10000);
		cr_assert_eq(h.crypto_bytes, 0x42);
	} else {
		cr_assert(r == -EUCLEAN || r == -EINVAL, "%d: %s", r, qcow2_last_error());
	}

	/* With LUKS the extension is the crypto header's place. */
	imgbuild_put_be32(img, H_CRYPT, QCOW2_CRYPT_LUKS);
	cr_assert_eq(decode(&h), 0, "%s", qcow2_last_error());
	cr_assert(h.has_crypto_ext);
	cr_assert_eq(h.crypto_off, 0x10000);
}

Test(header, crypto_extension_of_wrong_length_is_refused)
{
	static const uint8_t data[8] = {0};
	static const struct imgbuild_ext ext = {EXT_CRYPTO, data, sizeof(data)};
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_header h;

	o.exts = &ext;
	o.n_exts = 1;
	rebuild(&o);
	cr_assert_eq(decode(&h), -EUCLEAN);
}

Test(header, data_file_extension_is_decoded)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_header h;

	o.data_file = "disk.data";
	o.data_file_raw = true;
	rebuild(&o);
	cr_assert_eq(decode_and_check(&h), 0, "%s", qcow2_last_error());
	cr_assert_str_eq(h.data_file, "disk.data");
	cr_assert(h.incompat & QCOW2_INCOMPAT_DATA_FILE);
	cr_assert(h.autoclear & QCOW2_AUTOCLEAR_DATA_FILE_RAW);
}

Test(header, data_file_bit_and_name_must_agree)
{
	static const struct imgbuild_ext ext = {EXT_DATA_FILE, "disk.data", 9};
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_header h;

	imgbuild_put_be64(img, H_INCOMPAT, QCOW2_INCOMPAT_DATA_FILE);
	cr_assert_eq(decode(&h), -EUCLEAN, "bit without a name");

	o.exts = &ext;
	o.n_exts = 1;
	rebuild(&o);
	cr_assert_eq(decode(&h), -EUCLEAN, "name without the bit");
}

Test(header, data_file_name_with_nul_is_refused)
{
	static const struct imgbuild_ext ext = {EXT_DATA_FILE, "disk\0data", 9};
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_header h;

	o.exts = &ext;
	o.n_exts = 1;
	o.incompat = QCOW2_INCOMPAT_DATA_FILE;
	rebuild(&o);
	cr_assert_eq(decode(&h), -EUCLEAN);
}

Test(header, unknown_extensions_are_counted_and_kept)
{
	static const struct imgbuild_ext exts[] = {
	    {0x11111111, "abc", 3},
	    {0x22222222, "", 0},
	};
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_header h;

	o.exts = exts;
	o.n_exts = 2;
	o.backing_file = "base";
	o.backing_fmt = "raw";
	rebuild(&o);
	cr_assert_eq(decode_and_check(&h), 0, "%s", qcow2_last_error());
	cr_assert_eq(h.nb_unknown_exts, 2);
	cr_assert_str_eq(h.backing_fmt, "raw", "extensions after unknown ones are still read");
}

Test(header, extension_running_past_its_area_is_refused)
{
	static const struct imgbuild_ext ext = {0x11111111, "abcdefgh", 8};
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_header h;
	uint64_t data;

	o.exts = &ext;
	o.n_exts = 1;
	rebuild(&o);
	data = find_ext(0x11111111);
	cr_assert_neq(data, 0);
	imgbuild_put_be32(img, data - 4, (uint32_t)img->cluster_bytes);
	cr_assert_eq(decode(&h), -EUCLEAN);
	imgbuild_put_be32(img, data - 4, 0xffffffff);
	cr_assert_eq(decode(&h), -EUCLEAN);
}

Test(header, extensions_stop_at_the_backing_name)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_header h;
	uint64_t name_off;

	o.feature_table = false;
	o.backing_file = "base.qcow2";
	rebuild(&o);
	name_off = imgbuild_get_be64(img, H_BACKING_OFF);
	/* An extension header whose length reaches into the backing name is refused. */
	imgbuild_put_be32(img, 112, 0x11111111);
	imgbuild_put_be32(img, 116, (uint32_t)(name_off - 112 - 8 + 1));
	cr_assert_eq(decode(&h), -EUCLEAN);
}

/* ---- reading the header through an io ---- */

Test(header, header_read_checks_the_layout_against_the_file)
{
	struct qcow2_header h;
	struct qcow2_io *io;

	io = imgbuild_io(img);
	cr_assert_eq(qcow2_header_read(io, &h), 0, "%s", qcow2_last_error());
	cr_assert_eq(h.l1_off, img->l1_off);
	qcow2_io_close(io);

	/* The same bytes, cut right after the header cluster. */
	io = qcow2_io_mem_new("short.qcow2", img->bytes, (size_t)img->cluster_bytes);
	cr_assert_eq(qcow2_header_read(io, &h), -EUCLEAN);
	assert_error_mentions("short.qcow2");
	qcow2_io_close(io);
}

Test(header, header_read_of_tiny_files)
{
	struct qcow2_header h;
	struct qcow2_io *io;

	io = qcow2_io_mem_new("empty", "", 0);
	cr_assert_eq(qcow2_header_read(io, &h), -EINVAL);
	qcow2_io_close(io);
	io = qcow2_io_mem_new("tiny", img->bytes, 50);
	cr_assert_eq(qcow2_header_read(io, &h), -EINVAL);
	qcow2_io_close(io);
}

Test(header, header_read_fetches_a_whole_large_cluster)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_header h;
	struct qcow2_io *io;
	char *name = repeat('n', 1000);
	uint8_t *data = calloc(1, 70000);
	struct imgbuild_ext ext = {0x11111111, data, 70000};

	/* 2 MiB clusters, with extensions and the backing name past the first 64 KiB. */
	o.cluster_bits = 21;
	o.exts = &ext;
	o.n_exts = 1;
	o.backing_file = name;
	rebuild(&o);
	io = imgbuild_io(img);
	cr_assert_eq(qcow2_header_read(io, &h), 0, "%s", qcow2_last_error());
	cr_assert_str_eq(h.backing_file, name);
	cr_assert_eq(h.nb_unknown_exts, 1);
	qcow2_io_close(io);
	free(name);
	free(data);
}

/* ---- qcow2_header_probe(): what a file is, the one way to tell ---- */

/* Probe @len bytes of @bytes from a memory io, failing its first read with @fail (0: none). */
static int probe_bytes(const void *bytes, size_t len, int fail, bool *is_qcow2,
		       struct qcow2_header *h)
{
	struct qcow2_io *io = qcow2_io_mem_new("probed", bytes, len);
	int r;

	cr_assert_not_null(io);
	if (fail)
		qcow2_io_mem_fail_nth(io, QCOW2_IO_READ, 1, fail);
	*is_qcow2 = !*is_qcow2; /* must be set either way */
	r = qcow2_header_probe(io, is_qcow2, h);
	qcow2_io_close(io);
	return r;
}

Test(header, probe_tells_qcow2_by_the_magic_and_reads_its_header)
{
	struct qcow2_header h, want;
	bool q = false;

	cr_assert_eq(decode(&want), 0, "%s", qcow2_last_error());
	cr_assert_eq(probe_bytes(img->bytes, img->len, 0, &q, NULL), 0);
	cr_assert(q);
	memset(&h, 0xa5, sizeof(h));
	cr_assert_eq(probe_bytes(img->bytes, img->len, 0, &q, &h), 0, "%s", qcow2_last_error());
	cr_assert(q);
	cr_assert_eq(h.size, want.size);
	cr_assert_eq(h.cluster_bits, want.cluster_bits);
	cr_assert_eq(h.l1_off, want.l1_off);
}

Test(header, probe_takes_any_other_file_for_raw)
{
	static const uint8_t text[] = "not an image";
	bool q = true;

	cr_assert_eq(probe_bytes(text, sizeof(text), 0, &q, NULL), 0);
	cr_assert_not(q);
	cr_assert_eq(probe_bytes(img->bytes, 3, 0, &q, NULL), 0, "shorter than the magic");
	cr_assert_not(q);
	cr_assert_eq(probe_bytes(NULL, 0, 0, &q, NULL), 0, "empty");
	cr_assert_not(q);
}

Test(header, probe_fails_when_the_file_cannot_be_read_or_its_header_is_bad)
{
	struct qcow2_header h;
	bool q = true;

	cr_assert_eq(probe_bytes(img->bytes, img->len, -EIO, &q, NULL), -EIO);
	cr_assert_not(q, "unreadable is not qcow2");
	assert_error_mentions("probed");
	imgbuild_put_be32(img, H_VERSION, 4);
	cr_assert_eq(probe_bytes(img->bytes, img->len, 0, &q, NULL), 0, "the magic alone");
	cr_assert(q);
	cr_assert_eq(probe_bytes(img->bytes, img->len, 0, &q, &h), -EINVAL);
	cr_assert(q, "a qcow2 file with a bad header");
	assert_error_mentions("probed");
}
