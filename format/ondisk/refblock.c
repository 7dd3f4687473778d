/* SPDX-License-Identifier: MIT */
/*
 * refblock.c - entries of a refcount block, of every width from 1 to 64 bits: pure decoding and
 * encoding. Sub-byte widths pack from the least significant bit (qcow2.txt); widths of 8 bits
 * and more are big-endian.
 *
 * Locks: none (pure decoding and encoding).
 */
#include "ondisk/ondisk.h"

uint64_t qcow2_refcount_block_get(const void *block, uint32_t order, uint64_t idx)
{
	const uint8_t *b = block;

	switch (order) {
	case 0:
		return (b[idx / 8] >> (idx % 8)) & 1;
	case 1:
		return (b[idx / 4] >> (2 * (idx % 4))) & 3;
	case 2:
		return (b[idx / 2] >> (4 * (idx % 2))) & 15;
	case 3:
		return b[idx];
	case 4:
		return get_be16(b + 2 * idx);
	case 5:
		return get_be32(b + 4 * idx);
	default:
		return get_be64(b + 8 * idx);
	}
}

void qcow2_refcount_block_set(void *block, uint32_t order, uint64_t idx, uint64_t v)
{
	uint8_t *b = block;

	if (order <= 2) {
		unsigned bits = 1u << order, per_byte = 8 / bits;
		unsigned shift = bits * (unsigned)(idx % per_byte);
		uint8_t mask = (uint8_t)(((1u << bits) - 1) << shift);

		b[idx / per_byte] = (uint8_t)((b[idx / per_byte] & ~mask) | ((v << shift) & mask));
		return;
	}
	switch (order) {
	case 3:
		b[idx] = (uint8_t)v;
		break;
	case 4:
		put_be16(b + 2 * idx, (uint16_t)v);
		break;
	case 5:
		put_be32(b + 4 * idx, (uint32_t)v);
		break;
	default:
		put_be64(b + 8 * idx, v);
		break;
	}
}
