/* SPDX-License-Identifier: MIT */
/*
 * ownermap.c - per-chain map from a chunk of the flat view to the layer that provides it.
 *
 * This is what makes read cost independent of chain depth: the first read in a page of the map
 * fills the page layer by layer (chain-read.c's sweep), a chunk it could not settle is walked
 * when read; later reads go straight to the owner. Entries are 32-bit
 * (0 = unknown, ~0 = no layer has data, else layer + 1), stored in 16 KiB pages allocated on
 * first use, so memory follows what is read, not the virtual size. Reads and writes of entries
 * are atomic and lock-free; pages are installed with compare-and-swap. Two threads racing on
 * the same chunk compute the same owner, so the race is benign.
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
#define MAX_PAGES    (1u << 18)

struct qcow2_ownermap {
	uint32_t chunk_bits;
	uint64_t n_chunks;
	uint64_t n_pages;
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
		fresh = calloc(PAGE_ENTRIES, sizeof(*fresh));
		if (!fresh)
			return; /* the map is only a cache: leave the chunk unknown */
		if (__atomic_compare_exchange_n(&m->pages[idx >> PAGE_BITS], &page, fresh, false,
						__ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
			page = fresh;
		else
			free(fresh);
	}
	__atomic_store_n(&page[idx & (PAGE_ENTRIES - 1)], owner, __ATOMIC_RELAXED);
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
