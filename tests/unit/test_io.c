/* SPDX-License-Identifier: MIT */
/*
 * test_io.c - the host I/O layer (memory and file backends, failure injection) and the
 * propagation of injected I/O failures through every read the library makes: opening an
 * image, mapping, loading snapshot tables, reading compressed clusters. A failed read must
 * return its error unchanged, never crash and never leak (run under ASan). Also: holes in host
 * files (qcow2_io_next_extent()) and the out-of-memory error every module reports.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "imgbuild.h"
#include "testutil.h"
#include "image/image.h"

static struct qcow2_io *io;
static char tmpdir[64];

static void setup(void)
{
	io = NULL;
	tmpdir[0] = '\0';
}

static void teardown(void)
{
	char path[128];

	qcow2_io_close(io);
	if (tmpdir[0]) {
		snprintf(path, sizeof(path), "%s/file", tmpdir);
		unlink(path);
		rmdir(tmpdir);
	}
}

TestSuite(io, .init = setup, .fini = teardown);

static const char sample[] = "0123456789abcdef";

/* ---- memory backend ---- */

Test(io, memory_reads_are_short_only_at_the_end)
{
	char buf[32];

	io = qcow2_io_mem_new("mem", sample, 16);
	cr_assert_eq(qcow2_io_pread(io, buf, 4, 2), 4);
	cr_assert_arr_eq(buf, "2345", 4);
	cr_assert_eq(qcow2_io_pread(io, buf, 32, 10), 6);
	cr_assert_arr_eq(buf, "abcdef", 6);
	cr_assert_eq(qcow2_io_pread(io, buf, 8, 16), 0);
	cr_assert_eq(qcow2_io_pread(io, buf, 8, 1000), 0);
	cr_assert_eq(qcow2_io_pread(io, buf, 0, 3), 0);
}

Test(io, full_reads_past_the_end_are_corruption)
{
	char buf[32];

	io = qcow2_io_mem_new("short.img", sample, 16);
	cr_assert_eq(qcow2_io_pread_full(io, buf, 16, 0), 0);
	cr_assert_eq(qcow2_io_pread_full(io, buf, 17, 0), -EUCLEAN);
	assert_error_mentions("short.img");
	assert_error_mentions("past end of file");
	cr_assert_eq(qcow2_io_pread_full(io, buf, 1, 16), -EUCLEAN);
}

Test(io, offsets_beyond_int64_are_refused)
{
	char buf[4];

	io = qcow2_io_mem_new("mem", sample, 16);
	cr_assert_eq(qcow2_io_pread(io, buf, 4, (uint64_t)INT64_MAX + 1), -EINVAL);
	cr_assert_eq(qcow2_io_pread(io, buf, 4, (uint64_t)INT64_MAX - 1), -EINVAL);
	cr_assert_eq(qcow2_io_pwrite(io, buf, 4, UINT64_MAX - 2), -EINVAL);
}

Test(io, nth_read_fails_once_counted_from_now)
{
	char buf[4];

	io = qcow2_io_mem_new("mem", sample, 16);
	cr_assert_eq(qcow2_io_pread(io, buf, 1, 0), 1);
	qcow2_io_mem_fail_nth(io, QCOW2_IO_READ, 3, -ENOLINK);
	cr_assert_eq(qcow2_io_pread(io, buf, 1, 0), 1);
	cr_assert_eq(qcow2_io_pread(io, buf, 1, 0), 1);
	cr_assert_eq(qcow2_io_pread(io, buf, 1, 0), -ENOLINK);
	assert_error_mentions("mem");
	cr_assert_eq(qcow2_io_pread(io, buf, 1, 0), 1, "only once");
	cr_assert_eq(qcow2_io_pread_full(io, buf, 1, 0), 0);
	qcow2_io_mem_fail_nth(io, QCOW2_IO_READ, 1, -EIO);
	cr_assert_eq(qcow2_io_pread_full(io, buf, 1, 0), -EIO);
	qcow2_io_mem_fail_nth(io, QCOW2_IO_READ, 1, -EIO);
	qcow2_io_mem_fail_nth(io, QCOW2_IO_READ, 0, 0);
	cr_assert_eq(qcow2_io_pread(io, buf, 1, 0), 1, "0 disarms");
}

Test(io, writes_and_flushes_fail_on_their_own_counters)
{
	char buf[4] = "wxyz";

	io = qcow2_io_mem_new("mem", sample, 16);
	qcow2_io_mem_fail_nth(io, QCOW2_IO_WRITE, 2, -ENOSPC);
	qcow2_io_mem_fail_nth(io, QCOW2_IO_FLUSH, 1, -EIO);
	cr_assert_eq(qcow2_io_pread(io, buf, 1, 0), 1, "reads are not counted");
	cr_assert_eq(qcow2_io_pwrite(io, "AB", 2, 0), 0);
	cr_assert_eq(qcow2_io_pwrite(io, "CD", 2, 0), -ENOSPC);
	cr_assert_eq(qcow2_io_flush(io), -EIO);
	cr_assert_eq(qcow2_io_flush(io), 0);
	cr_assert_eq(qcow2_io_pread(io, buf, 2, 0), 2);
	cr_assert_arr_eq(buf, "AB", 2, "the failed write changed nothing");
}

Test(io, memory_writes_extend_with_zeros)
{
	const uint8_t *bytes;
	uint64_t size;
	size_t len;

	io = qcow2_io_mem_new("mem", sample, 16);
	cr_assert_eq(qcow2_io_pwrite(io, "XY", 2, 20), 0);
	cr_assert_eq(qcow2_io_size(io, &size), 0);
	cr_assert_eq(size, 22);
	bytes = qcow2_io_mem_bytes(io, &len);
	cr_assert_eq(len, 22);
	cr_assert_arr_eq(bytes, sample, 16);
	cr_assert_arr_eq(bytes + 16, "\0\0\0\0XY", 6);
	cr_assert_eq(qcow2_io_allocated(io, &size), 0);
	cr_assert_eq(size, 22);
	cr_assert_eq(qcow2_io_fd(io), -1);
	cr_assert_str_eq(qcow2_io_name(io), "mem");
}

Test(io, empty_memory_io_works)
{
	uint64_t size = 1;
	char c;

	io = qcow2_io_mem_new("empty", NULL, 0);
	cr_assert_not_null(io);
	cr_assert_eq(qcow2_io_size(io, &size), 0);
	cr_assert_eq(size, 0);
	cr_assert_eq(qcow2_io_pread(io, &c, 1, 0), 0);
}

/* ---- file backend ---- */

static const char *make_file(const void *bytes, size_t len)
{
	static char path[128];

	snprintf(tmpdir, sizeof(tmpdir), "/tmp/qcowfs-io-XXXXXX");
	cr_assert_not_null(mkdtemp(tmpdir));
	snprintf(path, sizeof(path), "%s/file", tmpdir);
	cr_assert_eq(imgbuild_write_file(path, bytes, len), 0);
	return path;
}

Test(io, file_backend_reads_writes_and_sizes)
{
	const char *path = make_file(sample, 16);
	uint64_t size;
	char buf[32];

	cr_assert_eq(qcow2_io_open_file(path, true, &io), 0, "%s", qcow2_last_error());
	cr_assert_geq(qcow2_io_fd(io), 0);
	cr_assert_str_eq(qcow2_io_name(io), path);
	cr_assert_eq(qcow2_io_pread(io, buf, 32, 8), 8);
	cr_assert_arr_eq(buf, "89abcdef", 8);
	cr_assert_eq(qcow2_io_pwrite(io, "ZZ", 2, 30), 0);
	cr_assert_eq(qcow2_io_flush(io), 0);
	cr_assert_eq(qcow2_io_size(io, &size), 0);
	cr_assert_eq(size, 32);
	cr_assert_eq(qcow2_io_pread_full(io, buf, 32, 0), 0);
	cr_assert_arr_eq(buf + 16, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0ZZ", 16);
	cr_assert_eq(qcow2_io_pread_full(io, buf, 32, 1), -EUCLEAN);
	cr_assert_eq(qcow2_io_allocated(io, &size), 0);
}

Test(io, read_only_file_refuses_writes)
{
	const char *path = make_file(sample, 16);

	cr_assert_eq(qcow2_io_open_file(path, false, &io), 0);
	cr_assert_eq(qcow2_io_pwrite(io, "A", 1, 0), -EBADF);
	assert_error_mentions(path);
}

Test(io, missing_file_is_enoent_naming_the_path)
{
	struct qcow2_io *none = NULL;

	cr_assert_eq(qcow2_io_open_file("/nonexistent/qcowfs/x.qcow2", false, &none), -ENOENT);
	assert_error_mentions("/nonexistent/qcowfs/x.qcow2");
	cr_assert_null(none);
}

/* ---- holes: qcow2_io_next_extent() ---- */

static void assert_extent(uint64_t off, uint64_t max, bool want_data, uint64_t want_len)
{
	uint64_t len = 0;
	bool data = !want_data;

	qcow2_io_next_extent(io, off, max, &len, &data);
	cr_assert_eq(data, want_data, "at %#llx: data %d", (unsigned long long)off, data);
	cr_assert_eq(len, want_len, "at %#llx: %#llx bytes, want %#llx", (unsigned long long)off,
		     (unsigned long long)len, (unsigned long long)want_len);
}

Test(io, memory_is_data_to_its_end_and_a_hole_after)
{
	static const uint8_t bytes[100];

	io = qcow2_io_mem_new("mem", bytes, sizeof(bytes));
	assert_extent(0, 1000, true, 100);
	assert_extent(40, 10, true, 10);
	assert_extent(99, 1000, true, 1);
	assert_extent(100, 50, false, 50);
	assert_extent(4096, 7, false, 7);
}

#define KIB 1024ull

/* A sparse file: data [0, 64K), a hole to 1M, data [1M, 1M + 64K), a hole to its end at 2M. */
static void make_sparse_file(void)
{
	static uint8_t block[64 * KIB];
	const char *path = make_file(NULL, 0);

	memset(block, 0xa5, sizeof(block));
	cr_assert_eq(qcow2_io_open_file(path, true, &io), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_io_pwrite(io, block, sizeof(block), 0), 0);
	cr_assert_eq(qcow2_io_pwrite(io, block, sizeof(block), 1024 * KIB), 0);
	cr_assert_eq(qcow2_io_grow(io, 2048 * KIB), 0);
	cr_assert_eq(qcow2_io_flush(io), 0);
}

Test(io, file_extents_follow_its_holes)
{
	make_sparse_file();
	assert_extent(0, 4096 * KIB, true, 64 * KIB);
	assert_extent(32 * KIB, 1 * KIB, true, 1 * KIB);	  /* capped by @max */
	assert_extent(64 * KIB, 4096 * KIB, false, 960 * KIB);	  /* up to the next data */
	assert_extent(100 * KIB, 8 * KIB, false, 8 * KIB);	  /* capped by @max */
	assert_extent(1024 * KIB, 4096 * KIB, true, 64 * KIB);	  /* up to the next hole */
	assert_extent(1088 * KIB, 4096 * KIB, false, 4096 * KIB); /* a hole to the end: @max */
	assert_extent(2048 * KIB, 512, false, 512);		  /* past the end: zeros */
	assert_extent(8192 * KIB, 512, false, 512);
}

Test(io, writing_zeros_over_holes_keeps_the_bytes_and_leaves_no_hole)
{
	static uint8_t before[2048 * KIB], after[2048 * KIB];

	make_sparse_file();
	cr_assert_eq(qcow2_io_pread_full(io, before, sizeof(before), 0), 0);
	cr_assert_eq(qcow2_io_preallocate(io, 0, sizeof(before), true), 0, "%s",
		     qcow2_last_error());
	assert_extent(0, sizeof(before), true, sizeof(before));
	cr_assert_eq(qcow2_io_pread_full(io, after, sizeof(after), 0), 0);
	cr_assert_arr_eq(before, after, sizeof(before));
}

/* ---- zeroing a range: qcow2_io_zero() ---- */

static int refuse_first_block(void *ctx, uint64_t off, uint64_t n, unsigned own)
{
	(void)ctx;
	(void)own;
	return off < 64 * KIB && n ? -EIO : 0;
}

Test(io, zeroing_a_file_range_punches_a_hole_and_keeps_the_length)
{
	static uint8_t got[2048 * KIB];
	uint64_t size;
	size_t i;

	make_sparse_file();
	cr_assert_eq(qcow2_io_zero(io, 1024 * KIB + 4096, 16 * KIB), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_io_zero(io, 0, 64 * KIB), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_io_size(io, &size), 0);
	cr_assert_eq(size, 2048 * KIB);
	assert_extent(0, 4096 * KIB, false, 1024 * KIB); /* the first block is a hole now */
	cr_assert_eq(qcow2_io_pread_full(io, got, sizeof(got), 0), 0);
	for (i = 0; i < sizeof(got); i++) {
		bool data = (i >= 1024 * KIB && i < 1024 * KIB + 4096) ||
			    (i >= 1024 * KIB + 20 * KIB && i < 1088 * KIB);

		cr_assert_eq(got[i], data ? 0xa5 : 0, "byte %zu", i);
	}
}

Test(io, zeroing_memory_writes_zeros)
{
	static const uint8_t ones[64] = {[0 ... 63] = 1};
	uint8_t got[64];
	uint64_t size;

	io = qcow2_io_mem_new("mem", ones, sizeof(ones));
	cr_assert_not_null(io);
	cr_assert_eq(qcow2_io_zero(io, 8, 16), 0);
	cr_assert_eq(qcow2_io_size(io, &size), 0);
	cr_assert_eq(size, 64);
	cr_assert_eq(qcow2_io_pread_full(io, got, sizeof(got), 0), 0);
	for (size_t i = 0; i < sizeof(got); i++)
		cr_assert_eq(got[i], i >= 8 && i < 24 ? 0 : 1, "byte %zu", i);
}

Test(io, zeroing_passes_the_guard_like_a_write)
{
	static const struct qcow2_io_guard guard = {refuse_first_block, NULL};
	static uint8_t got[64 * KIB];

	make_sparse_file();
	qcow2_io_set_guard(io, &guard);
	cr_assert_eq(qcow2_io_zero(io, 4096, 4096), -EIO);
	cr_assert_eq(qcow2_io_pread_full(io, got, sizeof(got), 0), 0);
	for (size_t i = 0; i < sizeof(got); i++)
		cr_assert_eq(got[i], 0xa5, "byte %zu", i);
	cr_assert_eq(qcow2_io_zero(io, 1024 * KIB, 4096), 0);
}

/* ---- the out-of-memory error (error.c), one message for the library and its programs ---- */

Test(io, out_of_memory_is_enomem_with_one_message)
{
	qcow2_set_error(-EIO, "something else");
	cr_assert_eq(qcow2_oom(), -ENOMEM);
	cr_assert_str_eq(qcow2_last_error(), "out of memory");
	cr_assert_eq(qcow2_oom_for("the L1 table"), -ENOMEM);
	cr_assert_str_eq(qcow2_last_error(), "out of memory for the L1 table");
	cr_assert_eq(qcow2_oom_for("%u snapshots", 70000u), -ENOMEM);
	cr_assert_str_eq(qcow2_last_error(), "out of memory for 70000 snapshots");
	/* a message that names a file keeps the name first */
	cr_assert_eq(qcow2_error_prefix(qcow2_oom(), "a.qcow2"), -ENOMEM);
	cr_assert_str_eq(qcow2_last_error(), "'a.qcow2': out of memory");
}

/* ---- failures injected into every read of the library ---- */

struct fail_case {
	uint32_t version, cluster_bits;
	bool extended_l2, snapshots, bitmaps, backing;
};

ParameterizedTestParameters(io, every_failed_read_propagates)
{
	static struct fail_case cases[] = {
	    {3, 16, false, true, false, false},
	    {2, 12, false, true, false, true},
	    {3, 14, true, true, true, false},
	    {3, 9, false, false, false, true},
	};
	return cr_make_param_array(struct fail_case, cases, sizeof(cases) / sizeof(cases[0]));
}

/* Open, map and read everything, snapshots included. The first failure is returned. */
static int read_everything(struct imgbuild *img, unsigned nth, int err)
{
	struct qcow2_io *mio = imgbuild_io(img);
	struct qcow2_image *qi = NULL;
	struct qcow2_extent e;
	uint8_t *buf = malloc(img->cluster_bytes);
	uint64_t off, used, rc;
	uint32_t s;
	int r;

	cr_assert_not_null(buf);
	if (nth)
		qcow2_io_mem_fail_nth(mio, QCOW2_IO_READ, nth, err);
	r = qcow2_image_load(mio, "mem.qcow2", NULL, &qi);
	for (s = 0; r == 0 && s <= img->nb_snapshots; s++) {
		const struct qcow2_l1 *l1 = NULL;
		uint64_t size = img->o.size;

		if (s < img->nb_snapshots) {
			r = qcow2_image_snapshot_l1(qi, s, &l1);
			size = img->snaps[s].o.disk_bytes;
		}
		for (off = 0; r == 0 && off < size; off += e.len) {
			r = qcow2_image_map(qi, l1, off, size - off, &e);
			if (r == 0 && e.kind == QCOW2_EXTENT_COMPRESSED)
				r = qcow2_image_read_compressed(qi, &e, off % img->cluster_bytes,
								buf, e.len);
			if (r == 0 && e.kind == QCOW2_EXTENT_DATA) {
				ssize_t got = qcow2_io_pread(
				    e.io, buf,
				    e.len < img->cluster_bytes ? e.len : img->cluster_bytes,
				    e.host_off);
				r = got < 0 ? (int)got : 0;
			}
		}
	}
	if (r == 0)
		r = qcow2_image_used_clusters(qi, &used);
	if (r == 0)
		r = qcow2_image_refcount(qi, 1, &rc);
	qcow2_image_unload(qi);
	free(buf);
	return r;
}

ParameterizedTest(struct fail_case *c, io, every_failed_read_propagates)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct imgbuild *img;
	unsigned nth;
	int r;

	o.version = c->version;
	o.cluster_bits = c->cluster_bits;
	o.extended_l2 = c->extended_l2;
	o.bitmaps = c->bitmaps;
	o.size = 2 << 20;
	if (c->backing)
		o.backing_file = "base.qcow2";
	img = imgbuild_new(&o);
	imgbuild_scramble(img, 77, 60, c->snapshots ? 3 : 0);
	cr_assert_eq(read_everything(img, 0, 0), 0, "without failures: %s", qcow2_last_error());
	for (nth = 1; nth < 100000; nth++) {
		int err = nth % 2 ? -EIO : -ENOLINK;

		r = read_everything(img, nth, err);
		if (r == 0)
			break; /* fewer reads than nth: every read has been failed once */
		cr_assert_eq(r, err, "read %u failed with %d, got %d (%s)", nth, err, r,
			     qcow2_last_error());
	}
	cr_assert_gt(nth, 3, "the walk made some reads");
	imgbuild_free(img);
}

Test(io, failed_reads_while_opening_leave_no_image)
{
	struct imgbuild *img = imgbuild_new(NULL);
	struct qcow2_image *qi;
	unsigned nth, failed = 0;
	int r = -1;

	cr_assert_eq(imgbuild_snapshot_add(img, NULL), 0);
	for (nth = 1; r != 0; nth++) {
		struct qcow2_io *mio = imgbuild_io(img);

		qi = NULL;
		qcow2_io_mem_fail_nth(mio, QCOW2_IO_READ, nth, -EIO);
		r = qcow2_image_load(mio, "mem.qcow2", NULL, &qi);
		if (r < 0) {
			cr_assert_eq(r, -EIO);
			cr_assert_null(qi);
			assert_error_mentions("mem.qcow2");
			failed++;
		}
		qcow2_image_unload(qi);
	}
	/* an open whose reads were never failed (the injection missed) checked nothing above; an
	 * image with a snapshot is read at least at its header and its snapshot table */
	cr_assert_geq(failed, 2, "the open was failed at only %u reads", failed);
	imgbuild_free(img);
}

/* ---- the process-wide hook on file ios (qcow2_io_fail_files) ---- */

Test(io, file_writes_fail_at_the_nth_counted_across_every_file_io)
{
	const char *path = make_file(sample, 16);
	struct qcow2_io *other = NULL, *mem = qcow2_io_mem_new("mem", sample, 16);
	char buf[4];

	cr_assert_eq(qcow2_io_open_file(path, true, &io), 0);
	cr_assert_eq(qcow2_io_open_file(path, true, &other), 0);
	cr_assert_eq(qcow2_io_fail_files(QCOW2_IO_WRITE, 3, -EIO, false), 0);
	cr_assert_eq(qcow2_io_pwrite(io, "a", 1, 0), 0);
	cr_assert_eq(qcow2_io_pwrite(mem, "m", 1, 0), 0); /* memory ios are not counted */
	cr_assert_eq(qcow2_io_pwrite(other, "b", 1, 1), 0);
	cr_assert_eq(qcow2_io_pwrite(io, "c", 1, 2), -EIO);
	assert_error_mentions(path);
	cr_assert_eq(qcow2_io_pwrite(other, "d", 1, 3), 0); /* once: the next one passes */
	cr_assert_eq(qcow2_io_flush(io), 0);
	cr_assert_eq(qcow2_io_fail_files_seen(QCOW2_IO_WRITE), 4);
	cr_assert_eq(qcow2_io_fail_files_seen(QCOW2_IO_FLUSH), 1);
	cr_assert_eq(qcow2_io_fail_files(QCOW2_IO_WRITE, 0, 0, false), 0);
	cr_assert_eq(qcow2_io_pread(io, buf, 4, 0), 4);
	cr_assert_arr_eq(buf, "ab2d", 4, "the failed write must not reach the file");
	qcow2_io_close(other);
	qcow2_io_close(mem);
}

Test(io, a_sticky_file_failure_is_a_crash_of_every_file_io)
{
	const char *path = make_file(sample, 16);
	struct qcow2_io *other = NULL;
	uint64_t size;
	char buf[4];

	cr_assert_eq(qcow2_io_open_file(path, true, &io), 0);
	cr_assert_eq(qcow2_io_open_file(path, true, &other), 0);
	cr_assert_eq(qcow2_io_fail_files(QCOW2_IO_FLUSH, 2, -ENOSPC, true), 0);
	cr_assert_eq(qcow2_io_pwrite(io, "a", 1, 0), 0);
	cr_assert_eq(qcow2_io_flush(other), 0);
	cr_assert_eq(qcow2_io_flush(io), -ENOSPC);
	/* from then on nothing reaches any file: writes, size changes, flushes */
	cr_assert_eq(qcow2_io_pwrite(other, "b", 1, 1), -ENOSPC);
	cr_assert_eq(qcow2_io_grow(io, 4096), -ENOSPC);
	cr_assert_eq(qcow2_io_flush(other), -ENOSPC);
	qcow2_io_punch(io, 0, 16); /* skipped quietly */
	cr_assert_eq(qcow2_io_fail_files(QCOW2_IO_FLUSH, 0, 0, false), 0);
	/* disarmed: the crash is over */
	cr_assert_eq(qcow2_io_size(io, &size), 0);
	cr_assert_eq(size, 16);
	cr_assert_eq(qcow2_io_pread(io, buf, 4, 0), 4);
	cr_assert_arr_eq(buf, "a123", 4);
	cr_assert_eq(qcow2_io_pwrite(other, "b", 1, 1), 0);
	cr_assert_eq(qcow2_io_flush(other), 0);
	qcow2_io_close(other);
}

Test(io, the_file_hook_counts_no_reads)
{
	cr_assert_eq(qcow2_io_fail_files(QCOW2_IO_READ, 1, -EIO, false), -EINVAL);
	cr_assert_eq(qcow2_io_fail_files_seen(QCOW2_IO_READ), 0);
}
