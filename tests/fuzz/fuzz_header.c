/* SPDX-License-Identifier: MIT */
/*
 * fuzz_header.c - qcow2_header_decode() and qcow2_header_check_layout() on arbitrary bytes.
 * The input is the start of a file; its length stands for the file size.
 */
#include "fuzz.h"
#include "qcow2.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct qcow2_header h;

	(void)qcow2_probe(data, size);
	if (qcow2_header_decode(data, size, &h) == 0)
		(void)qcow2_header_check_layout(&h, size);
	return 0;
}
