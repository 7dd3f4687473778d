/* SPDX-License-Identifier: MIT */
/*
 * bitmap.c - persistent dirty bitmaps, read side: the directory of one image (decoded by
 * ondisk/bitmap.c), a bitmap's table and its bits in memory.
 *
 * Everything read here is checked against the file before memory is allocated for it: the
 * directory (at most QCOW2_BITMAP_MAX_DIR_BYTES, inside the file), a table (at most
 * QCOW2_BITMAP_MAX_TABLE_ENTRIES entries, inside the file), the data clusters its entries name
 * (aligned, no reserved bits, inside the file). A bitmap's bits take one bit per granule of the
 * virtual size, which the directory entry's constraints bound (QCOW2_BITMAP_MAX_DATA_BYTES).
 *
 * Table entries (qcow2.txt): 0 is a cluster of zeros, 1 (QCOW2_BME_ALL_ONES) a cluster of
 * ones, else the offset of a data cluster whose bits are stored least significant first in
 * each byte; table entry i covers bits [i * cluster_bytes * 8, (i + 1) * cluster_bytes * 8).
 *
 * Locks: none. The directory and tables are read from the file; a writable image's bitmaps are
 * the engine's, which rewrites them only where a reader of the same handle does not run (at
 * open, at a clean close, in a qcowctl command that holds the image alone).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "image/image.h"

/* @bytes at @off lie inside the file (a writable image's file grows: its end is the engine's
 * allocation end, as map.c reads it). */
static bool inside(const struct qcow2_image *img, uint64_t off, uint64_t bytes)
{
	uint64_t end, file_end = img->file_bytes;

	if (img->w)
		file_end = __atomic_load_n(&img->end_cluster, __ATOMIC_RELAXED)
			   << img->h.cluster_bits;
	return !__builtin_add_overflow(off, bytes, &end) && end <= file_end;
}

int qcow2_image_bitmaps(struct qcow2_image *img, bool lenient, struct qcow2_bitmap **out,
			uint32_t *n)
{
	const struct qcow2_header *h = &img->h;
	uint8_t *dir;
	int r;

	*out = NULL;
	*n = 0;
	if (!h->has_bitmaps_ext || !(h->autoclear & QCOW2_AUTOCLEAR_BITMAPS))
		return 0;
	if (h->bitmap_dir_bytes > QCOW2_BITMAP_MAX_DIR_BYTES ||
	    !inside(img, h->bitmap_dir_off, h->bitmap_dir_bytes))
		return qcow2_error_prefix(qcow2_set_error(-EUCLEAN,
							  "bitmap directory at %#" PRIx64
							  " runs past end of file",
							  h->bitmap_dir_off),
					  img->name);
	dir = malloc(h->bitmap_dir_bytes ? h->bitmap_dir_bytes : 1);
	if (!dir)
		return qcow2_error_prefix(qcow2_oom_for("the bitmap directory"), img->name);
	r = qcow2_io_pread_full(img->io, dir, h->bitmap_dir_bytes, h->bitmap_dir_off);
	if (r == 0)
		r = qcow2_bitmap_dir_decode(dir, h->bitmap_dir_bytes, h->nb_bitmaps,
					    h->cluster_bits, h->size, lenient, out);
	free(dir);
	if (r < 0)
		return qcow2_error_prefix(r, img->name);
	*n = h->nb_bitmaps;
	return 0;
}

int qcow2_image_bitmap_table(struct qcow2_image *img, const struct qcow2_bitmap *b, uint64_t **out)
{
	uint64_t *t, i, e, off, bytes = (uint64_t)b->table_entries * 8;
	int r;

	*out = NULL;
	if (b->table_entries > QCOW2_BITMAP_MAX_TABLE_ENTRIES || !inside(img, b->table_off, bytes))
		return qcow2_error_prefix(qcow2_set_error(-EUCLEAN,
							  "bitmap '%s': table at %#" PRIx64
							  " runs past end of file",
							  b->name, b->table_off),
					  img->name);
	t = malloc(bytes ? bytes : 1);
	if (!t)
		return qcow2_error_prefix(qcow2_oom_for("a bitmap table"), img->name);
	r = qcow2_io_pread_full(img->io, t, bytes, b->table_off);
	for (i = 0; r == 0 && i < b->table_entries; i++) {
		e = t[i] = get_be64(&t[i]);
		off = e & QCOW2_BME_OFFSET_MASK;
		if ((e & QCOW2_BME_RESERVED) ||
		    (off && ((e & QCOW2_BME_ALL_ONES) || (off & (img->cluster_bytes - 1)) ||
			     !inside(img, off, img->cluster_bytes))))
			r = qcow2_set_error(-EUCLEAN,
					    "bitmap '%s': table entry %" PRIu64 " (%#" PRIx64
					    ") is invalid",
					    b->name, i, e);
	}
	if (r < 0) {
		free(t);
		return qcow2_error_prefix(r, img->name);
	}
	*out = t;
	return 0;
}

/* Fill @bits (@nbits bits) from @table. */
static int read_bits(struct qcow2_image *img, const uint64_t *table, uint32_t n, uint8_t *bits,
		     uint64_t nbits)
{
	uint64_t bytes = nbits / 8 + !!(nbits % 8), i, at, len;
	int r;

	for (i = 0; i < n; i++) {
		at = i * img->cluster_bytes;
		if (at >= bytes)
			break;
		len = bytes - at < img->cluster_bytes ? bytes - at : img->cluster_bytes;
		if (table[i] & QCOW2_BME_OFFSET_MASK) {
			r = qcow2_io_pread_full(img->io, bits + at, len,
						table[i] & QCOW2_BME_OFFSET_MASK);
			if (r < 0)
				return r;
		} else {
			memset(bits + at, table[i] & QCOW2_BME_ALL_ONES ? 0xff : 0, len);
		}
	}
	if (nbits % 8) /* bits past the disk are not part of the bitmap */
		bits[bytes - 1] &= (uint8_t)((1u << (nbits % 8)) - 1);
	return 0;
}

int qcow2_image_bitmap_read(struct qcow2_image *img, const struct qcow2_bitmap *b, uint8_t **bits,
			    uint64_t *nbits)
{
	uint64_t *table, n, need, g = b->granularity_bits;
	uint8_t *v;
	int r;

	*bits = NULL;
	*nbits = 0;
	if (b->invalid)
		return qcow2_error_prefix(
		    qcow2_set_error(-EUCLEAN, "bitmap '%s' %s", b->name, b->invalid), img->name);
	if (b->flags & QCOW2_BITMAP_IN_USE)
		return qcow2_error_prefix(qcow2_set_error(-EUCLEAN,
							  "bitmap '%s' is inconsistent (in use: "
							  "not saved by its last writer)",
							  b->name),
					  img->name);
	need = qcow2_bitmap_table_entries(img->h.size, b->granularity_bits, img->h.cluster_bits);
	if (need != b->table_entries)
		return qcow2_error_prefix(qcow2_set_error(-EUCLEAN,
							  "bitmap '%s' has %" PRIu32
							  " table entries, the disk needs %" PRIu64,
							  b->name, b->table_entries, need),
					  img->name);
	r = qcow2_image_bitmap_table(img, b, &table);
	if (r < 0)
		return r;
	n = (img->h.size >> g) + !!(img->h.size & ((1ull << g) - 1));
	/* n / 8 <= table_entries * cluster_bytes <= QCOW2_BITMAP_MAX_DATA_BYTES (entry checked) */
	v = calloc(n / 8 + 1, 1);
	if (!v) {
		free(table);
		return qcow2_error_prefix(qcow2_oom_for("bitmap '%s'", b->name), img->name);
	}
	r = read_bits(img, table, b->table_entries, v, n);
	free(table);
	if (r < 0) {
		free(v);
		return qcow2_error_prefix(r, img->name);
	}
	*bits = v;
	*nbits = n;
	return 0;
}
