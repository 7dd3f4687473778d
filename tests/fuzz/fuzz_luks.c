/* SPDX-License-Identifier: MIT */
/*
 * fuzz_luks.c - qcow2_luks_decode() on arbitrary bytes: the LUKS1 header of an encrypted
 * image's crypto header area, the input's length standing for the area's. (Unlocking is left
 * out: its cost is PBKDF2's, bounded but slow by design.)
 */
#include "fuzz.h"
#include "qcow2.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct qcow2_luks_info info;

	(void)qcow2_luks_decode(data, size, &info);
	return 0;
}
