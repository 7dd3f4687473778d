/* SPDX-License-Identifier: MIT */
/*
 * fuzz_image.c - qcow2_image_open() on a memory io holding the input, then everything a
 * reader does with an image: walk the first extents of the active view and read what they
 * point at (data, compressed clusters), map a few offsets spread over the disk, do the same
 * through the first snapshot's L1 table, and look up refcounts. Nothing may crash, hang or
 * leak, whatever the bytes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "qcow2.h"

#define MAX_EXTENTS 64
#define MAX_READ    (64u << 10)

/* The external data file, if the image names one: a small memory file. */
static int open_data_file(void *ctx, const char *stored_name, struct qcow2_io **io)
{
	static const uint8_t data[4096] = {1, 2, 3, 4};

	(void)ctx;
	*io = qcow2_io_mem_new(stored_name, data, sizeof(data));
	return *io ? 0 : -ENOMEM;
}

static void read_extent(struct qcow2_image *img, const struct qcow2_extent *e, uint8_t *buf)
{
	uint64_t cs = qcow2_image_cluster_bytes(img), skip = e->guest_off & (cs - 1);
	size_t n = e->len < MAX_READ ? (size_t)e->len : MAX_READ;

	if (e->kind == QCOW2_EXTENT_DATA && e->io)
		(void)qcow2_io_pread(e->io, buf, n, e->host_off);
	if (e->kind == QCOW2_EXTENT_COMPRESSED && skip + n <= cs)
		(void)qcow2_image_read_compressed(img, e, skip, buf, n);
}

static void walk(struct qcow2_image *img, const struct qcow2_l1 *l1, uint64_t size, uint8_t *buf)
{
	struct qcow2_extent e;
	uint64_t off = 0;
	int i;

	for (i = 0; i < MAX_EXTENTS && off < size; i++) {
		if (qcow2_image_map(img, l1, off, size - off, &e) < 0 || e.len == 0)
			break;
		read_extent(img, &e, buf);
		off += e.len;
	}
	for (i = 1; i < 8 && size; i++) {
		off = size / 8 * (uint64_t)i + (uint64_t)i * 4099 % size;
		if (off < size && qcow2_image_map(img, l1, off, size - off, &e) == 0)
			read_extent(img, &e, buf);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct qcow2_image_opts o;
	const struct qcow2_l1 *l1;
	struct qcow2_image *img;
	struct qcow2_io *io;
	uint64_t rc, used;
	uint8_t *buf;

	io = qcow2_io_mem_new("fuzz.qcow2", data, size);
	if (!io)
		return 0;
	memset(&o, 0, sizeof(o));
	o.open_data_file = open_data_file;
	o.l2_cache_bytes = 64 << 10;
	if (qcow2_image_open(io, "fuzz.qcow2", &o, &img) < 0)
		return 0;
	buf = malloc(MAX_READ);
	if (buf) {
		walk(img, NULL, qcow2_image_header(img)->size, buf);
		if (qcow2_image_snapshot_count(img) > 0) {
			(void)qcow2_image_find_snapshot(img, qcow2_image_snapshot(img, 0)->name);
			if (qcow2_image_snapshot_l1(img, 0, &l1) == 0)
				walk(img, l1, qcow2_image_snapshot(img, 0)->disk_bytes, buf);
		}
		free(buf);
	}
	(void)qcow2_image_refcount(img, 0, &rc);
	(void)qcow2_image_refcount(img, size / qcow2_image_cluster_bytes(img), &rc);
	if (size < (1u << 20))
		(void)qcow2_image_used_clusters(img, &used);
	qcow2_image_close(img);
	return 0;
}
