/* SPDX-License-Identifier: MIT */
/*
 * test_l2cache.c - the L2 table cache, seen through qcow2_image_map(): a cache far smaller
 * than the image's L2 tables still maps every offset right in any order, from many threads
 * at once, and a failed table read is reported and not cached.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "imgbuild.h"
#include "image/image.h"

static struct imgbuild *img;
static struct qcow2_image *qi;

#define N_TABLES 80 /* L2 tables of the test image: far more than the cache's 8 slots */

static void setup(void)
{
	struct imgbuild_opts o = imgbuild_defaults();
	uint64_t t, seed = 5;

	/* 512-byte clusters: an L2 table maps 64 clusters (32 KiB). */
	o.cluster_bits = 9;
	o.size = N_TABLES * 32768;
	img = imgbuild_new(&o);
	for (t = 0; t < N_TABLES; t++) {
		uint64_t c = imgbuild_rand(&seed) % 64, off = t * 32768 + c * 512;
		cr_assert_eq(imgbuild_fill(img, off, (int)t, 512), 0);
		cr_assert_eq(imgbuild_fill(img, t * 32768 + ((c + 7) % 64) * 512, 0xee, 100), 0);
	}
	qi = NULL;
}

static void teardown(void)
{
	qcow2_image_unload(qi);
	imgbuild_free(img);
}

TestSuite(l2cache, .init = setup, .fini = teardown);

static void open_with_cache(size_t cache_bytes)
{
	struct qcow2_image_opts o = {0};

	o.l2_cache_bytes = cache_bytes;
	cr_assert_eq(qcow2_image_load(imgbuild_io(img), "mem.qcow2", &o, &qi), 0, "%s",
		     qcow2_last_error());
}

/* Map cluster @c and check the result against the builder. Returns 0 or the error. */
static int check_cluster(uint64_t c)
{
	struct qcow2_extent e;
	uint64_t host = imgbuild_host_cluster(img, c * 512);
	int r = qcow2_image_map(qi, NULL, c * 512, 512, &e);

	if (r < 0)
		return r;
	if (host) {
		if (e.kind != QCOW2_EXTENT_DATA || e.host_off != host || e.len != 512)
			return -EBADMSG;
	} else if (e.kind != QCOW2_EXTENT_UNALLOCATED) {
		return -EBADMSG;
	}
	return 0;
}

static void check_all(uint64_t start, int64_t step)
{
	uint64_t n = N_TABLES * 64, i;

	for (i = 0; i < n; i++) {
		uint64_t c = (start + (uint64_t)step * i) % n;
		cr_assert_eq(check_cluster(c), 0, "cluster %llu: %s", (unsigned long long)c,
			     qcow2_last_error());
	}
}

Test(l2cache, tiny_cache_maps_every_cluster_in_any_order)
{
	open_with_cache(512); /* one table's worth: the minimum number of slots */
	check_all(0, 1);
	check_all(N_TABLES * 64 - 1, -1);
	check_all(3, 67); /* strided: a different table at every step */
	check_all(11, 641);
	check_all(0, 1);
}

Test(l2cache, default_and_huge_budgets_work)
{
	open_with_cache(0);
	check_all(0, 1);
	check_all(5, 67);
	qcow2_image_unload(qi);
	qi = NULL;
	open_with_cache((size_t)1 << 40); /* capped by the cache, not allocated up front */
	check_all(0, 1);
}

Test(l2cache, repeated_lookups_of_one_table_agree)
{
	uint64_t i;

	open_with_cache(512);
	for (i = 0; i < 1000; i++)
		cr_assert_eq(check_cluster(i % 64), 0);
}

Test(l2cache, failed_table_read_is_reported_and_not_cached)
{
	open_with_cache(512);
	qcow2_io_mem_fail_nth(qcow2_image_io(qi), QCOW2_IO_READ, 1, -EIO);
	cr_assert_eq(check_cluster(64 * 3), -EIO);
	cr_assert_eq(check_cluster(64 * 3), 0, "the next lookup reads the table again");
	check_all(0, 1);
}

Test(l2cache, eviction_under_failures_keeps_results_right)
{
	uint64_t i, seed = 9;
	int fails = 0;

	open_with_cache(512);
	for (i = 0; i < 3000; i++) {
		uint64_t c = imgbuild_rand(&seed) % (N_TABLES * 64);
		int r;

		if (i % 7 == 0)
			qcow2_io_mem_fail_nth(qcow2_image_io(qi), QCOW2_IO_READ, 1, -EIO);
		r = check_cluster(c);
		if (r == -EIO)
			fails++;
		else
			cr_assert_eq(r, 0, "cluster %llu", (unsigned long long)c);
		qcow2_io_mem_fail_nth(qcow2_image_io(qi), QCOW2_IO_READ, 0, 0);
	}
	cr_assert_gt(fails, 0, "some lookups missed the cache");
}

struct worker {
	uint64_t seed;
	int bad;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	int i;

	for (i = 0; i < 4000; i++) {
		uint64_t c = imgbuild_rand(&w->seed) % (N_TABLES * 64);
		if (check_cluster(c) != 0)
			w->bad++;
	}
	return NULL;
}

Test(l2cache, concurrent_lookups_agree_with_the_image)
{
	struct worker w[6];
	pthread_t t[6];
	int i;

	open_with_cache(4 * 512);
	for (i = 0; i < 6; i++) {
		w[i].seed = 100 + (uint64_t)i;
		w[i].bad = 0;
		cr_assert_eq(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
	}
	for (i = 0; i < 6; i++)
		pthread_join(t[i], NULL);
	for (i = 0; i < 6; i++)
		cr_assert_eq(w[i].bad, 0, "thread %d saw %d wrong mappings", i, w[i].bad);
}
