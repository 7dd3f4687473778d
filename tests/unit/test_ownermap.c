/* SPDX-License-Identifier: MIT */
/*
 * test_ownermap.c - the owner map of a chain (chain/ownermap.c) holds at most its budget
 * (QCOW2_OWNERMAP_BUDGET) however a disk is read: 20,000 chunks recorded at random over a
 * 1 TiB disk grow the heap (mallinfo2(), independent of the map's own count) by no more than
 * the budget and the page table, and every entry read back is the owner recorded or unknown
 * (a chunk not recorded is walked: never a wrong owner). Forgetting a range leaves it unknown.
 */
#include <criterion/criterion.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>

#include "chain/chain.h"

#define DISK	   (1ull << 40) /* 1 TiB */
#define CHUNK_BITS 16		/* 64 KiB chunks: 2^24 of them */
#define N_SETS	   20000u

static uint64_t next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static uint32_t owner_for(uint64_t idx)
{
	return (uint32_t)(idx % 3) + 1; /* layers 0..2, stored as layer + 1 */
}

Test(ownermap, random_reads_of_a_huge_disk_stay_within_the_budget)
{
	struct qcow2_ownermap *m = NULL;
	uint64_t n_chunks = DISK >> CHUNK_BITS, seed = 88172645463325252ull, i;
	uint64_t *idx = calloc(N_SETS, sizeof(*idx));
	size_t before, grown, page_table = (size_t)(n_chunks / 256 + 1) * sizeof(void *);
	unsigned known = 0;

	cr_assert_not_null(idx);
	before = mallinfo2().uordblks + mallinfo2().hblkhd;
	cr_assert_eq(qcow2_ownermap_new(DISK, CHUNK_BITS, &m), 0);
	cr_assert_not_null(m);
	for (i = 0; i < N_SETS; i++) {
		idx[i] = next(&seed) % n_chunks;
		qcow2_ownermap_set(m, idx[i], owner_for(idx[i]));
	}
	grown = mallinfo2().uordblks + mallinfo2().hblkhd - before;
	/* malloc's own header on each 1 KiB page: a sixteenth more at most */
	cr_assert_leq(grown, QCOW2_OWNERMAP_BUDGET / 16 * 17 + page_table,
		      "the map grew the heap by %zu bytes (budget %u, page table %zu)", grown,
		      QCOW2_OWNERMAP_BUDGET, page_table);
	cr_assert_leq(qcow2_ownermap_bytes(m), QCOW2_OWNERMAP_BUDGET);
	for (i = 0; i < N_SETS; i++) {
		uint32_t o = qcow2_ownermap_get(m, idx[i]);

		cr_assert(o == QCOW2_OWNER_UNKNOWN || o == owner_for(idx[i]),
			  "chunk %llu: owner %u, recorded %u", (unsigned long long)idx[i], o,
			  owner_for(idx[i]));
		known += o != QCOW2_OWNER_UNKNOWN;
	}
	cr_assert_gt(known, N_SETS / 4, "only %u of %u chunks recorded", known, N_SETS);
	/* a chunk never recorded is unknown */
	cr_assert_eq(qcow2_ownermap_get(m, n_chunks - 1) == QCOW2_OWNER_UNKNOWN ||
			 qcow2_ownermap_get(m, n_chunks - 1) == owner_for(n_chunks - 1),
		     1);
	qcow2_ownermap_forget(m, 0, n_chunks - 1);
	for (i = 0; i < N_SETS; i++)
		cr_assert_eq(qcow2_ownermap_get(m, idx[i]), QCOW2_OWNER_UNKNOWN);
	qcow2_ownermap_free(m);
	free(idx);
}

Test(ownermap, a_dense_range_within_the_budget_is_all_recorded)
{
	struct qcow2_ownermap *m = NULL;
	uint64_t i, n = 100000; /* 6.1 GiB of 64 KiB chunks: 400 KiB of entries */

	cr_assert_eq(qcow2_ownermap_new(DISK, CHUNK_BITS, &m), 0);
	for (i = 0; i < n; i++)
		qcow2_ownermap_set(m, i, i % 7 ? owner_for(i) : QCOW2_OWNER_NONE);
	for (i = 0; i < n; i++)
		cr_assert_eq(qcow2_ownermap_get(m, i), i % 7 ? owner_for(i) : QCOW2_OWNER_NONE);
	cr_assert_leq(qcow2_ownermap_bytes(m), n * sizeof(uint32_t) + 1024);
	qcow2_ownermap_free(m);
}
