/* SPDX-License-Identifier: MIT */
/*
 * fuzz_snapshot.c - qcow2_snapshot_table_decode() on arbitrary bytes.
 *
 * Input: a FUZZ_SNAPSHOT_PREFIX-byte prefix (be16 entry count, modulo
 * FUZZ_SNAPSHOT_MAX_ENTRIES + 1; one byte whose low bit picks version 2 or 3; one unused byte;
 * be64 virtual size), then the table itself.
 */
#include <stdlib.h>

#include "fuzz.h"
#include "qcow2.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct qcow2_snapshot *s;
	uint64_t vsize = 0;
	uint32_t nb, version;
	ssize_t r;
	int i;

	if (size < FUZZ_SNAPSHOT_PREFIX)
		return 0;
	nb = (uint32_t)(data[0] << 8 | data[1]) % (FUZZ_SNAPSHOT_MAX_ENTRIES + 1);
	version = data[2] & 1 ? 3 : 2;
	for (i = 0; i < 8; i++)
		vsize = vsize << 8 | data[4 + i];
	s = calloc(nb ? nb : 1, sizeof(*s));
	if (!s)
		return 0;
	r = qcow2_snapshot_table_decode(data + FUZZ_SNAPSHOT_PREFIX, size - FUZZ_SNAPSHOT_PREFIX,
					nb, version, vsize, s);
	if (r > (ssize_t)(size - FUZZ_SNAPSHOT_PREFIX))
		abort(); /* a table longer than its bytes */
	if (r >= 0)
		qcow2_snapshot_release(s, nb);
	free(s);
	return 0;
}
