/* SPDX-License-Identifier: MIT */
/*
 * measure.c - qcow2_measure(): the size a new image would take, as `qemu-img measure` (QEMU
 * 7.2, qcow2_measure() and raw_measure()) computes it, so that an operator can reserve space
 * before a copy or a create.
 *
 * "fully allocated": every cluster of the virtual disk plus the metadata that maps and counts
 * them (header, L2 tables, L1 table, the refcount structure sized to count everything,
 * itself included, at its fixed point). "required": the same with only the data clusters the
 * source needs: every destination cluster that holds a byte some layer of the source's chain
 * has as data (zeros and holes cost nothing, as a copy leaves them out); every cluster when the
 * destination has a backing file (nothing says what it shares with the source) or is
 * preallocated with falloc or full. A raw destination is its virtual size either way.
 *
 * Reads the source's metadata only (qcow2_chain_map()), never its data; takes QEMU's reader
 * locks unless asked not to. No library lock of its own.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "jobs/jobs.h"

static uint64_t div_up(uint64_t a, uint64_t b)
{
	return a / b + (a % b != 0);
}

static uint64_t round_up(uint64_t a, uint64_t b)
{
	return div_up(a, b) * b;
}

/* The refcount table and blocks that count @clusters clusters and themselves. */
static uint64_t refcount_bytes(uint64_t clusters, uint64_t cs, uint32_t refcount_order)
{
	uint64_t per_table = cs / 8, per_block = cs * 8 >> refcount_order;
	uint64_t table = 0, blocks = 0, n = 0, last;

	do {
		last = n;
		blocks = div_up(clusters + table + blocks, per_block);
		table = div_up(blocks, per_table);
		n = clusters + blocks + table;
	} while (n != last);
	return (blocks + table) * cs;
}

/* Metadata and data of a fully allocated image of @vsize (a multiple of @cs) bytes. */
static uint64_t fully_allocated(uint64_t vsize, const struct qcow2_create_opts *o)
{
	uint64_t cs = 1ull << o->cluster_bits, l2e = o->extended_l2 ? 16 : 8;
	uint64_t meta = cs, l2_entries, l1_entries;

	l2_entries = round_up(vsize / cs, cs / l2e);
	meta += l2_entries * l2e;
	l1_entries = round_up(l2_entries * l2e / cs, cs / 8);
	meta += l1_entries * 8;
	meta += refcount_bytes((meta + vsize) / cs, cs, o->refcount_order);
	return meta + vsize;
}

/* Bytes of the destination's clusters (of @cs bytes) that hold data of @c: each cluster
 * that some data or compressed extent touches, once. */
static int data_clusters(struct qcow2_chain *c, uint64_t cs, uint64_t *bytes)
{
	uint64_t size = qcow2_chain_size(c), off = 0, next = 0, first, last;
	struct qcow2_extent e;
	int r;

	*bytes = 0;
	while (off < size) {
		r = qcow2_chain_map(c, off, size - off, &e);
		if (r < 0)
			return r;
		if (!e.len)
			return qcow2_set_error(-EIO, "mapping stopped at offset %" PRIu64, off);
		if (e.kind == QCOW2_EXTENT_DATA || e.kind == QCOW2_EXTENT_COMPRESSED) {
			first = off / cs > next ? off / cs : next;
			last = (off + e.len - 1) / cs;
			if (first <= last) {
				*bytes += (last - first + 1) * cs;
				next = last + 1;
			}
		}
		off += e.len;
	}
	return 0;
}

/* What the persistent bitmaps of @img take in a destination of @cs-byte clusters, as
 * qemu-img measure counts them: each bitmap fully allocated (its bits over the virtual size at
 * its granularity, in whole clusters) plus its table (8 bytes a data cluster, in whole
 * clusters), and the directory (every entry without extra data), in whole clusters. An entry
 * QEMU would refuse still takes its room (read leniently). */
static int bitmaps_bytes(struct qcow2_image *img, uint64_t cs, uint64_t *out)
{
	uint64_t vsize = qcow2_image_header(img)->size, dir = 0, bits, bytes, clusters;
	struct qcow2_bitmap *b;
	uint32_t i, n;
	int r;

	*out = 0;
	r = qcow2_image_bitmaps(img, true, &b, &n);
	if (r < 0)
		return r;
	for (i = 0; i < n; i++) {
		bits = (vsize + (1ull << b[i].granularity_bits) - 1) >> b[i].granularity_bits;
		bytes = (bits + 7) / 8;
		clusters = (bytes + cs - 1) / cs;
		*out += clusters * cs + round_up(clusters * 8, cs);
		dir += qcow2_bitmap_entry_bytes((uint32_t)strlen(b[i].name), 0);
	}
	*out += round_up(dir, cs);
	qcow2_bitmaps_free(b, n);
	return 0;
}

/* The source's side: its virtual size, the bytes of data clusters it needs, whether its top
 * is qcow2 (only a qcow2 source has bitmaps to carry), and what its bitmaps take. */
static int measure_source(const char *src, const struct qcow2_measure_opts *o, uint64_t cs,
			  uint64_t *vsize, uint64_t *data, bool *qcow2, uint64_t *bitmaps)
{
	struct qcow2_chain_opts co = {.lock = !o->force_share, .top_blockdev = true};
	struct qcow2_layer_info top;
	struct qcow2_chain *c;
	int r;

	r = qcow2_chain_open(src, &co, &c);
	if (r < 0)
		return r;
	qcow2_chain_layer(c, 0, &top);
	*vsize = round_up(qcow2_chain_size(c), 512);
	*qcow2 = top.image != NULL;
	*bitmaps = 0;
	r = o->raw ? 0 : data_clusters(c, cs, data);
	if (r == 0 && top.image && !o->raw)
		r = bitmaps_bytes(top.image, cs, bitmaps);
	qcow2_chain_close(c);
	return r;
}

int qcow2_measure(const char *src, const struct qcow2_measure_opts *o, struct qcow2_measure *out)
{
	struct qcow2_create_opts co = o->create;
	uint64_t cs = 1ull << co.cluster_bits, vsize = o->size, data = 0;
	uint64_t bitmaps = 0;
	bool qcow2 = false;
	int r;

	memset(out, 0, sizeof(*out));
	co.backing_file = NULL;
	co.backing_fmt = NULL;
	co.size = 0;
	r = o->raw ? 0 : qcow2_create_opts_check(&co);
	if (r == 0 && src)
		r = measure_source(src, o, cs, &vsize, &data, &qcow2, &bitmaps);
	if (r < 0)
		return r;
	if (o->raw) { /* raw_measure(): the virtual size, in whole sectors */
		out->required = out->fully_allocated = round_up(vsize, 512);
		return 0;
	}
	vsize = round_up(vsize, cs);
	co.size = vsize;
	r = qcow2_create_opts_check(&co);
	if (r < 0)
		return r;
	if (co.prealloc == QCOW2_PREALLOC_FULL || co.prealloc == QCOW2_PREALLOC_FALLOC ||
	    (src && o->backing))
		data = vsize;
	else if (!src)
		data = 0;
	out->fully_allocated = fully_allocated(vsize, &co);
	out->required = out->fully_allocated - vsize + data;
	/* as qemu-img: bitmaps only where both the source and the destination have them */
	out->has_bitmaps = src && qcow2 && co.version >= 3;
	out->bitmaps = out->has_bitmaps ? bitmaps : 0;
	return 0;
}
