/* SPDX-License-Identifier: MIT */
/*
 * imgbuild_priv.h - declarations shared by imgbuild.c (file layout: header, refcounts, L1/L2
 * tables, output) and imgbuild_guest.c (guest content: writes, zeros, compression, snapshots,
 * the shadow). Not for tests: they use imgbuild.h.
 */
#ifndef IMGBUILD_PRIV_H
#define IMGBUILD_PRIV_H

#include <stdint.h>

#include "imgbuild.h"

#define L1E_MASK	 0x00fffffffffffe00ull
#define L2E_MASK	 0x00fffffffffffe00ull
#define OFLAG_COPIED	 (1ull << 63)
#define OFLAG_COMPRESSED (1ull << 62)
#define OFLAG_ZERO	 1ull

static inline void wr16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void wr32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static inline void wr64(uint8_t *p, uint64_t v)
{
	wr32(p, (uint32_t)(v >> 32));
	wr32(p + 4, (uint32_t)v);
}

static inline uint64_t rd64(const uint8_t *p)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

/* Builder misuse: print and abort. */
void ib_die(const char *msg) __attribute__((noreturn));
void *ib_xcalloc(size_t n, size_t size);
char *ib_xstrdup(const char *s);
/* Grow a buffer to @want bytes (new bytes zero). */
void ib_grow(uint8_t **buf, size_t *len, size_t *cap, size_t want);

uint64_t ib_max_refcount(const struct imgbuild *img);
/* Set the refcount of host cluster @idx, creating its refcount block if needed. Past the
 * width: aborts, or sets img->overflow inside a snapshot. */
void ib_set_refcount(struct imgbuild *img, uint64_t idx, uint64_t v);
void ib_ref_add(struct imgbuild *img, uint64_t host_off, int delta);
/* Append @n zeroed clusters with refcount 1; returns the host offset of the first. */
uint64_t ib_alloc_clusters(struct imgbuild *img, uint64_t n);
uint64_t ib_clusters_for(const struct imgbuild *img, uint64_t bytes);

/* Compressed cluster descriptors: the shift of the sector count, the host byte range a
 * descriptor covers (as QEMU counts it), and refcounting that range. */
uint32_t ib_csize_shift(const struct imgbuild *img);
void ib_comp_range(const struct imgbuild *img, uint64_t e, uint64_t *off, uint64_t *bytes);
void ib_comp_ref(struct imgbuild *img, uint64_t e, int delta);

void ib_write_header_snapshots(struct imgbuild *img);
void ib_check_guest(const struct imgbuild *img, uint64_t guest_off, uint64_t len);
/* File offset of the active L2 entry for @guest_off, its table allocated or copied so that
 * it has refcount 1 (and COPIED set in the L1 entry). */
uint64_t ib_writable_l2(struct imgbuild *img, uint64_t guest_off);
/* Drop the active reference an L2 entry holds on its host cluster(s). */
void ib_release_entry(struct imgbuild *img, uint64_t e);

#endif
