/* SPDX-License-Identifier: MIT */
/*
 * fuzz_bitmap.c - qcow2_bitmap_dir_decode() on arbitrary bytes, strict and lenient.
 *
 * Input: a FUZZ_BITMAP_PREFIX-byte prefix (be16 entry count, modulo FUZZ_BITMAP_MAX_ENTRIES +
 * 1; cluster bits, 9 plus the byte modulo 13; a byte whose low bit picks a lenient decode; be64
 * virtual size; 4 unused bytes), then the directory itself. What a strict decode accepts must
 * encode to a directory that decodes to the same entries.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "qcow2.h"

static void same_after_encoding(const struct qcow2_bitmap *b, uint32_t nb, uint32_t cluster_bits,
				uint64_t vsize)
{
	size_t len = qcow2_bitmap_dir_encode(b, nb, NULL);
	struct qcow2_bitmap *again;
	uint8_t *buf = malloc(len ? len : 1);
	uint32_t i;

	if (!buf)
		return;
	if (qcow2_bitmap_dir_encode(b, nb, buf) != len)
		abort();
	/* a name with a NUL on disk is shorter in memory: its entry is encoded shorter, and the
	 * decode of what was encoded must still accept it */
	if (qcow2_bitmap_dir_decode(buf, len, nb, cluster_bits, vsize, false, &again) != 0)
		abort();
	for (i = 0; i < nb; i++)
		if (strcmp(again[i].name, b[i].name) || again[i].table_off != b[i].table_off ||
		    again[i].table_entries != b[i].table_entries || again[i].flags != b[i].flags ||
		    again[i].granularity_bits != b[i].granularity_bits)
			abort();
	qcow2_bitmaps_free(again, nb);
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct qcow2_bitmap *b;
	uint64_t vsize = 0;
	uint32_t nb, cluster_bits, i;
	bool lenient;

	if (size < FUZZ_BITMAP_PREFIX)
		return 0;
	nb = (uint32_t)(data[0] << 8 | data[1]) % (FUZZ_BITMAP_MAX_ENTRIES + 1);
	cluster_bits = 9 + data[2] % 13;
	lenient = data[3] & 1;
	for (i = 0; i < 8; i++)
		vsize = vsize << 8 | data[4 + i];
	if (qcow2_bitmap_dir_decode(data + FUZZ_BITMAP_PREFIX, size - FUZZ_BITMAP_PREFIX, nb,
				    cluster_bits, vsize, lenient, &b) != 0)
		return 0;
	for (i = 0; i < nb; i++)
		if (!b[i].name || (!lenient && b[i].invalid) ||
		    b[i].entry_off >= size - FUZZ_BITMAP_PREFIX)
			abort();
	if (!lenient)
		same_after_encoding(b, nb, cluster_bits, vsize);
	qcow2_bitmaps_free(b, nb);
	return 0;
}
