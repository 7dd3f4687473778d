/* SPDX-License-Identifier: MIT */
/*
 * ownermap.c - per-chain map from a chunk of the flat view to the layer that provides it.
 *
 * This is what makes read cost independent of chain depth: the first read in a page of the map
 * fills the page layer by layer (chain-read.c's sweep), a chunk it could not settle is walked
 * when read; later reads go straight to the owner. Entries are 32-bit
 * (0 = unknown, ~0 = no layer has data, else layer + 1), stored in 1 KiB pages allocated on
 * first use, so memory follows what is read, not the virtual size. Reads and writes of entries
 * are atomic and lock-free; pages are installed with compare-and-swap. Two threads racing on
 * the same chunk compute the same owner, so the race is benign.
 * The pages of one map hold at most QCOW2_OWNERMAP_BUDGET bytes: random reads over a large
 * disk would otherwise fill a page per read (a 1 TiB chain read at random 20,000 times held
 * 64 MiB of 16 KiB pages). Past the budget a chunk that needs a new page is not recorded and
 * stays unknown: its reads walk the chain, as they would with no map. Pages are never freed
 * while the map lives (readers use them without a lock), so the budget is a plain count.
 * Disks with more than 2^30 chunks get no map (the caller walks the chain instead).
 * When the top layer changes, the chain forgets the chunks it changed (qcow2_ownermap_forget(),
 * under the chain's owner lock held exclusive, while walks that record owners hold it shared).
 * Locks: none taken here (the owner lock is chain-read.c's).
 */
#include <errno.h>
#include <stdlib.h>

#include "chain/chain.h"

#define PAGE_BITS    QCOW2_OWNERMAP_PAGE_BITS
#define PAGE_ENTRIES (1u << PAGE_BITS)
#define PAGE_BYTES   (PAGE_ENTRIES * sizeof(uint32_t))
#define MAX_PAGES    (1u << 22) /* 2^30 chunks */

struct qcow2_ownermap {
	uint32_t chunk_bits;
	uint64_t n_chunks;
	uint64_t n_pages;
	uint64_t n_alloc; /* pages allocated (atomic): at most QCOW2_OWNERMAP_BUDGET / PAGE_BYTES */
	uint32_t **pages; /* entries installed atomically */
	uint8_t *swept;	  /* per page: 1 once swept (atomic) */
};

int qcow2_ownermap_new(uint64_t size, uint32_t chunk_bits, struct qcow2_ownermap **out)
{
	struct qcow2_ownermap *m;
	uint64_t n_chunks = (size >> chunk_bits) + ((size & ((1ull << chunk_bits) - 1)) != 0);
	uint64_t n_pages = (n_chunks + PAGE_ENTRIES - 1) >> PAGE_BITS;

	*out = NULL;
	if (n_pages > MAX_PAGES)
		return 0;
	m = calloc(1, sizeof(*m));
	if (!m || !(m->pages = calloc(n_pages ? n_pages : 1, sizeof(*m->pages))) ||
	    !(m->swept = calloc(n_pages ? n_pages : 1, 1))) {
		if (m)
			free(m->pages);
		free(m);
		return qcow2_oom();
	}
	m->chunk_bits = chunk_bits;
	m->n_chunks = n_chunks;
	m->n_pages = n_pages;
	*out = m;
	return 0;
}

void qcow2_ownermap_free(struct qcow2_ownermap *m)
{
	uint64_t i;

	if (!m)
		return;
	for (i = 0; i < m->n_pages; i++)
		free(m->pages[i]);
	free(m->pages);
	free(m->swept);
	free(m);
}

bool qcow2_ownermap_swept(const struct qcow2_ownermap *m, uint64_t idx)
{
	return !m || idx >= m->n_chunks ||
	       __atomic_load_n(&m->swept[idx >> PAGE_BITS], __ATOMIC_ACQUIRE);
}

void qcow2_ownermap_set_swept(struct qcow2_ownermap *m, uint64_t idx)
{
	if (m && idx < m->n_chunks)
		__atomic_store_n(&m->swept[idx >> PAGE_BITS], 1, __ATOMIC_RELEASE);
}

uint32_t qcow2_ownermap_get(const struct qcow2_ownermap *m, uint64_t idx)
{
	uint32_t *page;

	if (!m || idx >= m->n_chunks)
		return QCOW2_OWNER_UNKNOWN;
	page = __atomic_load_n(&m->pages[idx >> PAGE_BITS], __ATOMIC_ACQUIRE);
	if (!page)
		return QCOW2_OWNER_UNKNOWN;
	return __atomic_load_n(&page[idx & (PAGE_ENTRIES - 1)], __ATOMIC_RELAXED);
}

void qcow2_ownermap_set(struct qcow2_ownermap *m, uint64_t idx, uint32_t owner)
{
	uint32_t *page, *fresh;

	if (!m || idx >= m->n_chunks)
		return;
	page = __atomic_load_n(&m->pages[idx >> PAGE_BITS], __ATOMIC_ACQUIRE);
	if (!page) {
		/* a page counts against the budget before it exists, so that racing setters
		 * never go past it together */
		if (__atomic_add_fetch(&m->n_alloc, 1, __ATOMIC_RELAXED) >
		    QCOW2_OWNERMAP_BUDGET / PAGE_BYTES) {
			__atomic_sub_fetch(&m->n_alloc, 1, __ATOMIC_RELAXED);
			return; /* over budget: the chunk stays unknown (its reads walk) */
		}
		fresh = calloc(PAGE_ENTRIES, sizeof(*fresh));
		if (!fresh) {
			__atomic_sub_fetch(&m->n_alloc, 1, __ATOMIC_RELAXED);
			return; /* the map is only a cache: leave the chunk unknown */
		}
		if (__atomic_compare_exchange_n(&m->pages[idx >> PAGE_BITS], &page, fresh, false,
						__ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
			page = fresh;
		} else {
			free(fresh);
			__atomic_sub_fetch(&m->n_alloc, 1, __ATOMIC_RELAXED);
		}
	}
	__atomic_store_n(&page[idx & (PAGE_ENTRIES - 1)], owner, __ATOMIC_RELAXED);
}

size_t qcow2_ownermap_bytes(const struct qcow2_ownermap *m)
{
	return m ? (size_t)__atomic_load_n(&m->n_alloc, __ATOMIC_RELAXED) * PAGE_BYTES : 0;
}

uint32_t qcow2_ownermap_chunk_bits(const struct qcow2_ownermap *m)
{
	return m->chunk_bits;
}

void qcow2_ownermap_forget(struct qcow2_ownermap *m, uint64_t first, uint64_t last)
{
	uint64_t idx;

	if (!m || first >= m->n_chunks)
		return;
	if (last >= m->n_chunks)
		last = m->n_chunks - 1;
	for (idx = first; idx <= last;) {
		uint32_t *page = __atomic_load_n(&m->pages[idx >> PAGE_BITS], __ATOMIC_ACQUIRE);
		uint64_t page_end = ((idx >> PAGE_BITS) + 1) << PAGE_BITS;

		if (page)
			for (; idx <= last && idx < page_end; idx++)
				__atomic_store_n(&page[idx & (PAGE_ENTRIES - 1)],
						 QCOW2_OWNER_UNKNOWN, __ATOMIC_RELAXED);
		idx = page_end;
	}
}
