/* SPDX-License-Identifier: MIT */
/*
 * testutil.h - assertions shared by the Criterion unit tests.
 */
#ifndef TESTUTIL_H
#define TESTUTIL_H

#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "qcow2.h"

/* The library's last error message contains @text (errors must say what and where). */
#define assert_error_mentions(text)                                                    \
	cr_assert(strstr(qcow2_last_error(), (text)) != NULL, "error '%s' lacks '%s'", \
		  qcow2_last_error(), (text))

/* A refcount entry encoder written from qcow2.txt, independent of format/: entries narrower
 * than a byte fill each byte from its least significant bit; wider ones are big-endian. */
static inline void testutil_put_refcount(uint8_t *block, uint32_t order, uint64_t idx, uint64_t v)
{
	uint32_t bits = 1u << order, i;

	if (bits < 8) {
		uint32_t shift = (uint32_t)(idx * bits % 8);
		uint8_t mask = (uint8_t)(((1u << bits) - 1) << shift);
		block[idx * bits / 8] =
		    (uint8_t)((block[idx * bits / 8] & ~mask) | ((v << shift) & mask));
		return;
	}
	for (i = 0; i < bits / 8; i++)
		block[idx * (bits / 8) + i] = (uint8_t)(v >> (bits - 8 - 8 * i));
}

#endif
