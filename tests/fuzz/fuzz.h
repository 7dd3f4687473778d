/* SPDX-License-Identifier: MIT */
/*
 * fuzz.h - shared by the fuzz targets, the seed generator and the standalone driver.
 *
 * Every target defines LLVMFuzzerTestOneInput(). Under clang it is linked with libFuzzer;
 * with any compiler it is also linked with driver.c, which replays files or runs the
 * built-in seeds plus deterministic mutations of them.
 */
#ifndef QCOWFS_FUZZ_H
#define QCOWFS_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fuzz_input {
	uint8_t *bytes;
	size_t len;
};

/* Build the seed inputs for @target ("header", "snapshot", "image" or "luks"). Returns the count;
 * *@out is freed with fuzz_free_seeds(). */
size_t fuzz_make_seeds(const char *target, struct fuzz_input **out);
void fuzz_free_seeds(struct fuzz_input *seeds, size_t n);

/* The input layout of the snapshot target: a 12-byte prefix, then the table. */
#define FUZZ_SNAPSHOT_PREFIX	  12
#define FUZZ_SNAPSHOT_MAX_ENTRIES 256

#endif
