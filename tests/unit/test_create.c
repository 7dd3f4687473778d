/* SPDX-License-Identifier: MIT */
/*
 * test_create.c - new images (create.c) and the header encoder (header.c): encoded headers
 * decode to what was encoded; images created in memory with every option open, check clean
 * (no corruption, no leak), read as zeros and take writes; preallocation allocates every
 * cluster (extended L2: with every subcluster left unallocated) and reuses a freed cluster
 * only after zeroing it; bad options are refused with a message naming the cause; a failed
 * write leaves an error, never a crash; and on disk (a mkdtemp() directory) an image appears
 * only complete: a cancelled create leaves nothing, a replaced file keeps its mode, and a file
 * a writer holds is not replaced. compression_type=zstd is written in the header.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jobs/jobs.h"
#include "testutil.h"

/* ---- the header encoder ---- */

static void encode_decode(const struct qcow2_header *in, size_t cap, struct qcow2_header *out)
{
	uint8_t *buf = calloc(1, cap);
	int n = qcow2_header_encode(in, buf, cap);

	cr_assert_gt(n, 0, "encode: %s", qcow2_last_error());
	cr_assert_eq(qcow2_header_decode(buf, cap, out), 0, "decode: %s", qcow2_last_error());
	free(buf);
}

static struct qcow2_header base_header(uint32_t version, uint32_t cluster_bits)
{
	struct qcow2_header h;

	memset(&h, 0, sizeof(h));
	h.version = version;
	h.cluster_bits = cluster_bits;
	h.size = 32768; /* one L1 entry, whatever the cluster size */
	h.refcount_order = 4;
	h.reftable_off = 1ull << cluster_bits;
	h.reftable_clusters = 1;
	h.l1_entries = 1;
	h.l1_off = 3ull << cluster_bits;
	return h;
}

struct enc_case {
	uint32_t version, cluster_bits;
	bool backing, ext_l2, lazy;
	uint32_t want_features; /* feature name table entries expected */
};

ParameterizedTestParameters(create, encoded_headers_decode_to_their_fields)
{
	static struct enc_case cases[] = {
	    {3, 16, false, false, false, 8}, {3, 16, true, true, true, 8},
	    {2, 16, true, false, false, 0},  {2, 9, false, false, false, 0},
	    {3, 9, true, false, false, 0},   {3, 12, false, false, false, 0},
	    {3, 13, true, false, false, 8},  {3, 21, true, true, false, 8},
	};
	return cr_make_param_array(struct enc_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct enc_case *c, create, encoded_headers_decode_to_their_fields)
{
	struct qcow2_header in = base_header(c->version, c->cluster_bits), out;

	if (c->backing) {
		strcpy(in.backing_file, "../base dir/base.qcow2");
		strcpy(in.backing_fmt, "qcow2");
	}
	if (c->ext_l2)
		in.incompat = QCOW2_INCOMPAT_EXTL2;
	if (c->lazy)
		in.compat = QCOW2_COMPAT_LAZY_REFCOUNTS;
	encode_decode(&in, 1u << c->cluster_bits, &out);
	cr_assert_eq(out.version, in.version);
	cr_assert_eq(out.cluster_bits, in.cluster_bits);
	cr_assert_eq(out.size, in.size);
	cr_assert_eq(out.l1_entries, in.l1_entries);
	cr_assert_eq(out.l1_off, in.l1_off);
	cr_assert_eq(out.reftable_off, in.reftable_off);
	cr_assert_eq(out.reftable_clusters, in.reftable_clusters);
	cr_assert_eq(out.incompat, in.incompat);
	cr_assert_eq(out.compat, in.compat);
	cr_assert_eq(out.refcount_order, in.refcount_order);
	cr_assert_str_eq(out.backing_file, in.backing_file);
	cr_assert_str_eq(out.backing_fmt, in.backing_fmt);
	cr_assert_eq(out.header_len, c->version == 3 ? 112u : 72u);
	cr_assert_eq(out.nb_feature_names, c->want_features);
}

Test(create, the_longest_backing_name_fits_a_512_byte_cluster_only_in_a_bigger_one)
{
	struct qcow2_header h = base_header(3, 9), out;
	uint8_t buf[4096];

	memset(h.backing_file, 'b', QCOW2_MAX_BACKING_NAME);
	cr_assert_eq(qcow2_header_encode(&h, buf, 512), -ENOSPC);
	assert_error_mentions("do not fit");
	h = base_header(3, 12);
	memset(h.backing_file, 'b', QCOW2_MAX_BACKING_NAME);
	encode_decode(&h, sizeof(buf), &out);
	cr_assert_eq(strlen(out.backing_file), QCOW2_MAX_BACKING_NAME);
}

/* ---- images created in memory ---- */

static struct qcow2_image *create_mem(const struct qcow2_create_opts *o)
{
	struct qcow2_io *io = qcow2_io_mem_new("new.qcow2", NULL, 0);
	struct qcow2_image *img;

	cr_assert_not_null(io);
	cr_assert_eq(qcow2_image_create_io(io, "new.qcow2", o, &img), 0, "%s", qcow2_last_error());
	return img;
}

/* Reopen a copy of @img's bytes (read-only), as a later user would. */
static struct qcow2_image *reopen(struct qcow2_image *img)
{
	size_t len;
	const void *b = qcow2_io_mem_bytes(qcow2_image_io(img), &len);
	struct qcow2_io *copy = qcow2_io_mem_new("copy.qcow2", b, len);
	struct qcow2_image *out;

	cr_assert_eq(qcow2_image_open(copy, "copy.qcow2", NULL, &out), 0, "%s", qcow2_last_error());
	return out;
}

static void assert_clean(struct qcow2_image *img)
{
	struct qcow2_check_result res;

	cr_assert_eq(qcow2_image_check(img, &res), 0, "%s", qcow2_last_error());
	cr_assert_eq(res.corruptions, 0, "%lu corruptions", (unsigned long)res.corruptions);
	cr_assert_eq(res.leaks, 0, "%lu leaks", (unsigned long)res.leaks);
}

/* Every byte of [@off, @off + @n) reads as @byte. */
static void assert_reads(struct qcow2_image *img, uint64_t off, uint64_t n, uint8_t byte)
{
	uint8_t *buf = malloc(img->cluster_bytes), *want = malloc(img->cluster_bytes);

	memset(want, byte, img->cluster_bytes);
	while (n) {
		struct qcow2_extent e;
		uint64_t len;

		cr_assert_eq(qcow2_image_map(img, NULL, off, n, &e), 0, "%s", qcow2_last_error());
		len = e.len < img->cluster_bytes ? e.len : img->cluster_bytes;
		if (e.kind == QCOW2_EXTENT_DATA)
			cr_assert_eq(qcow2_io_pread_full(e.io, buf, len, e.host_off), 0);
		else
			memset(buf, 0, len);
		cr_assert_arr_eq(buf, want, len, "at %lu", (unsigned long)off);
		off += len;
		n -= len;
	}
	free(buf);
	free(want);
}

struct opt_case {
	uint32_t version, cluster_bits, refcount_order;
	bool ext_l2, lazy;
	enum qcow2_prealloc prealloc;
	uint64_t size;
};

ParameterizedTestParameters(create, new_images_check_clean_read_zeros_and_take_writes)
{
	static struct opt_case cases[] = {
	    {3, 16, 4, false, false, QCOW2_PREALLOC_OFF, 10 << 20},
	    {2, 16, 4, false, false, QCOW2_PREALLOC_OFF, 10 << 20},
	    {3, 9, 4, false, false, QCOW2_PREALLOC_OFF, 64 << 20},  /* L1 of 16 clusters */
	    {3, 9, 0, false, false, QCOW2_PREALLOC_OFF, 256 << 20}, /* refcount blocks */
	    {3, 9, 6, false, false, QCOW2_PREALLOC_OFF, 64 << 20},  /* several blocks */
	    {3, 21, 4, true, true, QCOW2_PREALLOC_OFF, 1ull << 40},
	    {3, 16, 4, false, true, QCOW2_PREALLOC_METADATA, 3 << 20},
	    {3, 16, 4, true, false, QCOW2_PREALLOC_METADATA, 3 << 20},
	    {3, 9, 1, false, false, QCOW2_PREALLOC_METADATA, (1 << 20) + 512},
	    {2, 12, 4, false, false, QCOW2_PREALLOC_FULL, 1 << 20},
	    {3, 16, 4, false, false, QCOW2_PREALLOC_OFF, 0},
	};
	return cr_make_param_array(struct opt_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct opt_case *c, create, new_images_check_clean_read_zeros_and_take_writes)
{
	struct qcow2_create_opts o;
	struct qcow2_image *img, *back;
	const struct qcow2_header *h;
	uint8_t data[3000];
	uint64_t used;

	qcow2_create_opts_default(&o);
	o.version = c->version;
	o.cluster_bits = c->cluster_bits;
	o.refcount_order = c->refcount_order;
	o.extended_l2 = c->ext_l2;
	o.lazy_refcounts = c->lazy;
	o.prealloc = c->prealloc;
	o.size = c->size;
	img = create_mem(&o);
	h = qcow2_image_header(img);
	cr_assert_eq(h->version, c->version);
	cr_assert_eq(h->size, c->size);
	cr_assert_eq(h->refcount_order, c->refcount_order);
	cr_assert_eq(!!(h->incompat & QCOW2_INCOMPAT_EXTL2), c->ext_l2);
	cr_assert_eq(!!(h->compat & QCOW2_COMPAT_LAZY_REFCOUNTS), c->lazy);
	cr_assert_eq(h->incompat & QCOW2_INCOMPAT_DIRTY, 0);
	assert_clean(img);
	assert_reads(img, 0, c->size < (4 << 20) ? c->size : 4 << 20, 0);
	if (c->prealloc != QCOW2_PREALLOC_OFF) {
		/* every data cluster and L2 table allocated, beyond the metadata of an empty image */
		uint64_t cs = 1ull << c->cluster_bits, clusters = (c->size + cs - 1) / cs;
		uint64_t l2 =
		    (clusters + cs / (c->ext_l2 ? 16 : 8) - 1) / (cs / (c->ext_l2 ? 16 : 8));

		cr_assert_eq(qcow2_image_used_clusters(img, &used), 0);
		cr_assert_geq(used, clusters + l2 + 4, "%lu clusters in use", (unsigned long)used);
	}
	if (c->size >= sizeof(data) + 5000) {
		memset(data, 0xa7, sizeof(data));
		cr_assert_eq(qcow2_image_write(img, data, sizeof(data), 5000, NULL), 0, "%s",
			     qcow2_last_error());
		cr_assert_eq(qcow2_image_flush(img), 0);
		back = reopen(img);
		assert_reads(back, 5000, sizeof(data), 0xa7);
		assert_reads(back, 0, 5000, 0);
		assert_clean(back);
		qcow2_image_close(back);
	}
	qcow2_image_close(img);
}

/* compression_type=zstd: the header's compression type and its feature bit (QEMU refuses
 * an image with one and not the other), and compressed writes that read back; compat=0.10
 * has no compression type field. */
Test(create, zstd_images_say_so_in_their_header_and_take_compressed_writes)
{
	struct qcow2_create_opts o;
	struct qcow2_image *img, *back;
	const struct qcow2_header *h;
	struct qcow2_extent e;
	uint8_t *data = malloc(65536);

	cr_assert_not_null(data);
	qcow2_create_opts_default(&o);
	o.size = 1 << 20;
	o.compression_type = QCOW2_COMPRESSION_ZSTD;
	img = create_mem(&o);
	h = qcow2_image_header(img);
	cr_assert_eq(h->compression_type, QCOW2_COMPRESSION_ZSTD);
	cr_assert_neq(h->incompat & QCOW2_INCOMPAT_COMPRESSION, 0);
	memset(data, 0x3c, 65536);
	qcow2_image_read_begin(img); /* as the chain writes: the image's frees held shared */
	cr_assert_eq(qcow2_image_write_compressed(img, data, 65536), 0, "%s", qcow2_last_error());
	qcow2_image_read_end(img);
	cr_assert_eq(qcow2_image_flush(img), 0);
	back = reopen(img);
	cr_assert_eq(qcow2_image_header(back)->compression_type, QCOW2_COMPRESSION_ZSTD);
	cr_assert_eq(qcow2_image_map(back, NULL, 65536, 65536, &e), 0, "%s", qcow2_last_error());
	cr_assert_eq(e.kind, QCOW2_EXTENT_COMPRESSED);
	memset(data, 0, 65536);
	cr_assert_eq(qcow2_image_read_compressed(back, &e, 0, data, 65536), 0, "%s",
		     qcow2_last_error());
	cr_assert_eq(data[0], 0x3c);
	cr_assert_eq(memcmp(data, data + 1, 65535), 0);
	assert_reads(back, 0, 65536, 0);
	assert_clean(back);
	qcow2_image_close(back);
	qcow2_image_close(img);
	free(data);
	o.version = 2;
	cr_assert_eq(qcow2_create_opts_check(&o), -EINVAL);
	assert_error_mentions("compat=1.1");
}

Test(create, extended_l2_preallocation_leaves_every_subcluster_unallocated)
{
	struct qcow2_create_opts o;
	struct qcow2_image *img;
	uint64_t words[2];
	uint32_t i;

	qcow2_create_opts_default(&o);
	o.extended_l2 = true;
	o.prealloc = QCOW2_PREALLOC_METADATA;
	o.size = 1 << 20;
	o.backing_file = "base.raw"; /* what lies below must keep showing through */
	o.backing_fmt = "raw";
	img = create_mem(&o);
	for (i = 0; i < 16; i++) {
		uint64_t l2 = img->l1.entries[0] & QCOW2_L1E_OFFSET_MASK;

		cr_assert_neq(l2, 0);
		cr_assert_eq(qcow2_l2cache_get(img->l2cache, img->io, l2, 2 * i, 2, words), 0);
		cr_assert(words[0] & QCOW2_L2E_OFFSET_MASK, "cluster %u has a host cluster", i);
		cr_assert(words[0] & QCOW2_OFLAG_COPIED);
		cr_assert_eq(words[1], 0, "cluster %u: bitmap %#lx", i, (unsigned long)words[1]);
	}
	assert_clean(img);
	qcow2_image_close(img);
}

Test(create, preallocation_zeroes_a_reused_cluster)
{
	struct qcow2_create_opts o;
	struct qcow2_image *img, *back;
	uint8_t junk[65536];

	qcow2_create_opts_default(&o);
	o.size = 1 << 20;
	img = create_mem(&o);
	/* a cluster written, then discarded: once freed its bytes stay in the (memory) file */
	memset(junk, 0x5a, sizeof(junk));
	cr_assert_eq(qcow2_image_write(img, junk, sizeof(junk), 0, NULL), 0);
	cr_assert_eq(qcow2_image_flush(img), 0);
	cr_assert_eq(qcow2_image_zero(img, 0, sizeof(junk), NULL), 0);
	cr_assert_eq(qcow2_image_flush(img), 0);
	cr_assert_eq(qcow2_image_flush(img), 0);
	/* preallocating takes the freed cluster again: it must read as zeros */
	cr_assert_eq(qcow2_image_write(img, NULL, 1 << 20, 0, NULL), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_flush(img), 0);
	back = reopen(img);
	assert_reads(back, 0, 1 << 20, 0);
	assert_clean(back);
	qcow2_image_close(back);
	qcow2_image_close(img);
}

struct bad_case {
	uint32_t version, cluster_bits, refcount_order;
	bool ext_l2, lazy, backing;
	enum qcow2_prealloc prealloc;
	uint64_t size;
	int want;
	char says[24]; /* an array: parameters are copied to the test's process */
};

ParameterizedTestParameters(create, bad_options_are_refused_naming_the_cause)
{
	static struct bad_case cases[] = {
	    {3, 8, 4, false, false, false, 0, 1 << 20, -EINVAL, "cluster_size"},
	    {3, 22, 4, false, false, false, 0, 1 << 20, -EINVAL, "cluster_size"},
	    {3, 16, 7, false, false, false, 0, 1 << 20, -EINVAL, "refcount_bits"},
	    {2, 16, 3, false, false, false, 0, 1 << 20, -EINVAL, "compat=1.1"},
	    {2, 16, 4, false, true, false, 0, 1 << 20, -EINVAL, "lazy_refcounts"},
	    {2, 16, 4, true, false, false, 0, 1 << 20, -EINVAL, "extended_l2"},
	    {3, 13, 4, true, false, false, 0, 1 << 20, -EINVAL, "16K"},
	    {4, 16, 4, false, false, false, 0, 1 << 20, -EINVAL, "compat"},
	    {3, 16, 4, false, false, false, 0, 1000, -EINVAL, "multiple of 512"},
	    {3, 16, 4, false, false, false, 0, 1ull << 52, -EFBIG, "too large"},
	    {3, 9, 4, false, false, false, 0, 1ull << 38, -EFBIG, "too large"},
	    {3, 16, 4, false, false, true, QCOW2_PREALLOC_METADATA, 1 << 20, -EINVAL,
	     "extended_l2=on"},
	};
	return cr_make_param_array(struct bad_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct bad_case *c, create, bad_options_are_refused_naming_the_cause)
{
	struct qcow2_io *io = qcow2_io_mem_new("bad.qcow2", NULL, 0);
	struct qcow2_create_opts o;
	struct qcow2_image *img = NULL;

	qcow2_create_opts_default(&o);
	o.version = c->version;
	o.cluster_bits = c->cluster_bits;
	o.refcount_order = c->refcount_order;
	o.extended_l2 = c->ext_l2;
	o.lazy_refcounts = c->lazy;
	o.prealloc = c->prealloc;
	o.size = c->size;
	o.backing_file = c->backing ? "base.qcow2" : NULL;
	cr_assert_eq(qcow2_create_opts_check(&o), c->want, "%s", qcow2_last_error());
	assert_error_mentions(c->says);
	cr_assert_eq(qcow2_image_create_io(io, "bad.qcow2", &o, &img), c->want);
	assert_error_mentions("bad.qcow2");
	cr_assert_null(img);
}

Test(create, the_largest_sizes_are_accepted)
{
	struct qcow2_create_opts o;

	qcow2_create_opts_default(&o);
	o.size = 1ull << 51; /* 64 KiB clusters: a 32 MiB L1 table */
	cr_assert_eq(qcow2_create_opts_check(&o), 0, "%s", qcow2_last_error());
	o.cluster_bits = 21;
	o.size = QCOW2_MAX_VIRTUAL_SIZE;
	cr_assert_eq(qcow2_create_opts_check(&o), 0, "%s", qcow2_last_error());
}

Test(create, a_failed_write_is_an_error)
{
	struct qcow2_create_opts o;
	unsigned nth;

	qcow2_create_opts_default(&o);
	o.size = 3 << 20;
	o.prealloc = QCOW2_PREALLOC_METADATA;
	for (nth = 1; nth <= 12; nth++) {
		struct qcow2_io *io = qcow2_io_mem_new("f.qcow2", NULL, 0);
		struct qcow2_image *img = NULL;
		int r;

		qcow2_io_mem_fail_nth(io, QCOW2_IO_WRITE, nth, -EIO);
		r = qcow2_image_create_io(io, "f.qcow2", &o, &img);
		if (r == 0) {
			qcow2_image_close(img);
			cr_assert_gt(nth, 3, "the metadata writes cannot all have succeeded");
			continue;
		}
		cr_assert_eq(r, -EIO, "write %u: %d %s", nth, r, qcow2_last_error());
		cr_assert_null(img);
	}
}

/* ---- on disk ---- */

static char dir[] = "/tmp/test_create.XXXXXX";

static void make_dir(void)
{
	strcpy(dir, "/tmp/test_create.XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void remove_dir(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
}

/* Entries of the test directory, "." and ".." included. */
static int dir_entries(void)
{
	char cmd[128], buf[16] = "";
	FILE *f;

	snprintf(cmd, sizeof(cmd), "ls -a '%s' | wc -l", dir);
	f = popen(cmd, "r");
	cr_assert_not_null(f);
	cr_assert_not_null(fgets(buf, sizeof(buf), f));
	pclose(f);
	return atoi(buf);
}

static bool cancel_always(void *ctx)
{
	return true;
}

Test(create, a_cancelled_create_leaves_nothing, .init = make_dir, .fini = remove_dir)
{
	struct qcow2_job job = {.cancelled = cancel_always};
	struct qcow2_create_opts o;
	char path[64];

	qcow2_create_opts_default(&o);
	o.size = 8 << 20;
	o.prealloc = QCOW2_PREALLOC_FULL;
	o.job = &job;
	snprintf(path, sizeof(path), "%s/new.qcow2", dir);
	cr_assert_eq(qcow2_image_create(path, &o), -ECANCELED);
	cr_assert_eq(dir_entries(), 2, "the directory is not empty");
	o.prealloc = QCOW2_PREALLOC_OFF;
	cr_assert_eq(qcow2_image_create(path, &o), -ECANCELED);
	cr_assert_eq(dir_entries(), 2, "the directory is not empty");
}

Test(create, a_replaced_file_keeps_its_mode_and_a_new_one_opens, .init = make_dir,
     .fini = remove_dir)
{
	struct qcow2_create_opts o;
	struct qcow2_image *img;
	char path[64];
	struct stat st;
	bool exists;
	int fd;

	snprintf(path, sizeof(path), "%s/old.img", dir);
	fd = open(path, O_CREAT | O_WRONLY, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, "old", 3), 3);
	close(fd);
	cr_assert_eq(qcow2_create_check_target(path, &exists), 0);
	cr_assert(exists);
	qcow2_create_opts_default(&o);
	o.size = 1 << 20;
	cr_assert_eq(qcow2_image_create(path, &o), 0, "%s", qcow2_last_error());
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0600);
	cr_assert_eq(dir_entries(), 3, "a temporary file was left behind");
	cr_assert_eq(qcow2_image_open_path(path, NULL, &img), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_header(img)->size, 1u << 20);
	qcow2_image_close(img);
}

Test(create, a_file_held_for_writing_is_not_replaced, .init = make_dir, .fini = remove_dir)
{
	struct qcow2_create_opts o;
	struct qcow2_io *holder;
	char path[64], me[32];
	bool exists;
	int fd;

	snprintf(path, sizeof(path), "%s/busy.qcow2", dir);
	fd = open(path, O_CREAT | O_WRONLY, 0644);
	cr_assert_geq(fd, 0);
	close(fd);
	/* our own writer lock, on its own open file description, stands for another process */
	cr_assert_eq(qcow2_io_open_file(path, true, &holder), 0);
	cr_assert_eq(qcow2_io_lock(holder, QCOW2_PERM_CONSISTENT_READ | QCOW2_PERM_WRITE,
				   QCOW2_PERM_CONSISTENT_READ),
		     0);
	qcow2_create_opts_default(&o);
	o.size = 1 << 20;
	cr_assert_eq(qcow2_create_check_target(path, &exists), -EBUSY);
	cr_assert_eq(qcow2_image_create(path, &o), -EBUSY);
	assert_error_mentions("\"write\"");
	/* the holder is named: this process (no other has the file), not "another process" */
	snprintf(me, sizeof(me), "pid %d (", (int)getpid());
	assert_error_mentions(me);
	qcow2_io_close(holder);
	cr_assert_eq(qcow2_image_create(path, &o), 0, "%s", qcow2_last_error());
}

Test(create, an_image_cannot_be_its_own_backing_file, .init = make_dir, .fini = remove_dir)
{
	struct qcow2_backing_probe p;
	struct qcow2_create_opts o;
	char path[64];

	qcow2_create_opts_default(&o);
	o.size = 1 << 20;
	snprintf(path, sizeof(path), "%s/self.qcow2", dir);
	cr_assert_eq(qcow2_image_create(path, &o), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_create_probe_backing(path, "./self.qcow2", NULL, &p), -ELOOP);
	o.backing_file = "self.qcow2";
	o.backing_fmt = "qcow2";
	cr_assert_eq(qcow2_image_create(path, &o), -ELOOP);
	assert_error_mentions("its own backing file");
}

Test(create, a_directory_is_not_replaced, .init = make_dir, .fini = remove_dir)
{
	struct qcow2_create_opts o;

	qcow2_create_opts_default(&o);
	o.size = 1 << 20;
	cr_assert_eq(qcow2_image_create(dir, &o), -EISDIR);
	assert_error_mentions("directory");
}

Test(create, the_backing_file_is_probed_relative_to_the_new_image, .init = make_dir,
     .fini = remove_dir)
{
	struct qcow2_backing_probe p;
	struct qcow2_create_opts o;
	char path[64], base[64];
	int fd;

	snprintf(base, sizeof(base), "%s/base.raw", dir);
	fd = open(base, O_CREAT | O_WRONLY, 0644);
	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, 3 << 20), 0);
	close(fd);
	snprintf(path, sizeof(path), "%s/over.qcow2", dir);
	cr_assert_eq(qcow2_create_probe_backing(path, "base.raw", NULL, &p), 0, "%s",
		     qcow2_last_error());
	cr_assert_str_eq(p.format, "raw");
	cr_assert_eq(p.size, 3u << 20);
	cr_assert_eq(qcow2_create_probe_backing(path, "base.raw", "qcow2", &p), -EINVAL);
	cr_assert_eq(qcow2_create_probe_backing(path, "base.raw", "vmdk", &p), -ENOTSUP);
	cr_assert_eq(qcow2_create_probe_backing(path, "nope.raw", NULL, &p), -ENOENT);
	assert_error_mentions("nope.raw");
	/* a qcow2 backing file: made here, then probed (and its size read) */
	qcow2_create_opts_default(&o);
	o.size = 5 << 20;
	o.backing_file = "base.raw";
	o.backing_fmt = "raw";
	cr_assert_eq(qcow2_image_create(path, &o), 0, "%s", qcow2_last_error());
	snprintf(base, sizeof(base), "%s/top.qcow2", dir);
	cr_assert_eq(qcow2_create_probe_backing(base, "over.qcow2", NULL, &p), 0, "%s",
		     qcow2_last_error());
	cr_assert_str_eq(p.format, "qcow2");
	cr_assert_eq(p.size, 5u << 20);
}
