/* SPDX-License-Identifier: MIT */
/*
 * bitmap.c - the bitmap directory of persistent dirty bitmaps (qcow2.txt, "Bitmaps"): the one
 * place that knows the layout of a directory entry, its decoder and encoder, and the limits
 * QEMU puts on every field (block/qcow2-bitmap.c: a table of at most 2^27 entries and 512 MiB
 * of bitmap data, granularity 2^9 to 2^31 bytes, names of at most 1023 bytes, no reserved flag,
 * type 1, no extra data, a table large enough for the virtual size unless the bitmap is in
 * use).
 *
 * A directory entry: table offset (be64), table entries (be32), flags (be32), type (u8),
 * granularity bits (u8), name length (be16), extra data length (be32), the extra data, the name,
 * padding to 8 bytes. Two kinds of damage: what breaks the directory itself (an entry running
 * past its end, more or fewer entries than the header says, bytes left over) refuses all of
 * it, as QEMU refuses it; what concerns one entry alone (a bad field, extra data) marks that
 * entry invalid (b->invalid says why). A strict decode, what QEMU does when it loads the
 * bitmaps, refuses the directory for the first invalid entry too; a lenient one keeps them,
 * for the walk, the overlap checks and a repair that drops an entry by name.
 *
 * Pure: bytes in, entries out. No locks.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "ondisk/ondisk.h"

enum {
	BME_OFF_TABLE = 0,
	BME_OFF_ENTRIES = 8,
	BME_OFF_FLAGS = 12,
	BME_OFF_TYPE = 16,
	BME_OFF_GRAN = 17,
	BME_OFF_NAME_LEN = 18,
	BME_OFF_EXTRA_LEN = 20,
	BME_FIXED = 24,
};

void qcow2_bitmaps_free(struct qcow2_bitmap *b, uint32_t n)
{
	uint32_t i;

	for (i = 0; b && i < n; i++)
		free(b[i].name);
	free(b);
}

uint64_t qcow2_bitmap_table_entries(uint64_t virtual_size, uint32_t granularity_bits,
				    uint32_t cluster_bits)
{
	uint64_t bits, bytes;

	if (granularity_bits > 63 || cluster_bits > 63)
		return UINT64_MAX;
	bits = (virtual_size >> granularity_bits) +
	       !!(virtual_size & ((1ull << granularity_bits) - 1));
	bytes = bits / 8 + !!(bits % 8);
	return (bytes >> cluster_bits) + !!(bytes & ((1ull << cluster_bits) - 1));
}

uint64_t qcow2_bitmap_entry_bytes(uint32_t name_bytes, uint32_t extra_bytes)
{
	return ((uint64_t)BME_FIXED + name_bytes + extra_bytes + 7) & ~7ull;
}

/* Why QEMU refuses the entry @b of an image of @cluster_bits and @virtual_size
 * (check_dir_entry()), or NULL. */
static const char *entry_problem(const struct qcow2_bitmap *b, uint32_t cluster_bits,
				 uint64_t virtual_size)
{
	uint64_t phys_bytes = (uint64_t)b->table_entries << cluster_bits;

	if (b->extra_bytes)
		return "has extra data, which is not supported";
	if (b->table_entries == 0 || b->table_off == 0)
		return "has no bitmap table";
	if (b->table_off & ((1ull << cluster_bits) - 1))
		return "has a misaligned bitmap table";
	if (b->table_entries > QCOW2_BITMAP_MAX_TABLE_ENTRIES)
		return "has a bitmap table that is too large";
	if (b->granularity_bits > QCOW2_BITMAP_MAX_GRANULARITY_BITS ||
	    b->granularity_bits < QCOW2_BITMAP_MIN_GRANULARITY_BITS)
		return "has an invalid granularity";
	if (b->flags & QCOW2_BITMAP_RESERVED_FLAGS)
		return "has reserved flags set";
	if (b->name_bytes > QCOW2_BITMAP_MAX_NAME_BYTES)
		return "has a name that is too long";
	if (b->type != QCOW2_BITMAP_TYPE_DIRTY)
		return "has an unknown type";
	if (phys_bytes > QCOW2_BITMAP_MAX_DATA_BYTES)
		return "has too much bitmap data";
	/* 2^29 bytes * 8 << 31 < 2^64: no overflow */
	if (!(b->flags & QCOW2_BITMAP_IN_USE) &&
	    virtual_size > ((phys_bytes * 8) << b->granularity_bits))
		return "has a bitmap table too small for the disk";
	return NULL;
}

/* Decode the entry at @p (@avail bytes of directory left) into @b; its length, or 0 when it
 * runs past @avail. */
static uint64_t decode_entry(const uint8_t *p, uint64_t avail, struct qcow2_bitmap *b)
{
	uint64_t len;

	if (avail < BME_FIXED)
		return 0;
	memset(b, 0, sizeof(*b));
	b->table_off = get_be64(p + BME_OFF_TABLE);
	b->table_entries = get_be32(p + BME_OFF_ENTRIES);
	b->flags = get_be32(p + BME_OFF_FLAGS);
	b->type = p[BME_OFF_TYPE];
	b->granularity_bits = p[BME_OFF_GRAN];
	b->name_bytes = get_be16(p + BME_OFF_NAME_LEN);
	b->extra_bytes = get_be32(p + BME_OFF_EXTRA_LEN);
	len = qcow2_bitmap_entry_bytes(b->name_bytes, b->extra_bytes);
	return len > avail ? 0 : len;
}

int qcow2_bitmap_dir_decode(const void *buf, size_t len, uint32_t nb, uint32_t cluster_bits,
			    uint64_t virtual_size, bool lenient, struct qcow2_bitmap **out)
{
	const uint8_t *p = buf;
	struct qcow2_bitmap *v, b;
	uint64_t off = 0, elen;
	uint32_t n = 0;
	int r = 0;

	*out = NULL;
	if (nb == 0 || nb > QCOW2_BITMAP_MAX_COUNT || len == 0 ||
	    len > QCOW2_BITMAP_MAX_DIR_BYTES || len < (uint64_t)nb * BME_FIXED ||
	    cluster_bits < 9 || cluster_bits > 31)
		return qcow2_set_error(
		    -EUCLEAN, "bitmap directory of %zu bytes for %" PRIu32 " bitmaps is invalid",
		    len, nb);
	/* at most len / 24 entries fit: nb is bounded by the directory's bytes */
	v = calloc(nb, sizeof(*v));
	if (!v)
		return qcow2_oom_for("the bitmap directory");
	while (off < len) {
		if (n == nb) {
			r = qcow2_set_error(-EUCLEAN,
					    "bitmap directory holds more bitmaps than "
					    "the header's %" PRIu32,
					    nb);
			goto fail;
		}
		elen = decode_entry(p + off, len - off, &b);
		if (!elen) {
			r = qcow2_set_error(-EUCLEAN,
					    "bitmap directory entry %" PRIu32
					    " runs past the end of the directory",
					    n);
			goto fail;
		}
		b.entry_off = off;
		b.name = strndup((const char *)p + off + BME_FIXED + b.extra_bytes, b.name_bytes);
		if (!b.name) {
			r = qcow2_oom_for("a bitmap name");
			goto fail;
		}
		b.invalid = entry_problem(&b, cluster_bits, virtual_size);
		v[n++] = b;
		if (b.invalid && !lenient) {
			r = qcow2_set_error(-EUCLEAN, "bitmap '%s' %s", b.name, b.invalid);
			goto fail;
		}
		off += elen;
	}
	if (n != nb) {
		r = qcow2_set_error(
		    -EUCLEAN,
		    "bitmap directory holds %" PRIu32 " bitmaps, the header says %" PRIu32, n, nb);
		goto fail;
	}
	*out = v;
	return 0;
fail:
	qcow2_bitmaps_free(v, n);
	return r;
}

size_t qcow2_bitmap_dir_encode(const struct qcow2_bitmap *b, uint32_t n, void *buf)
{
	uint8_t *p = buf;
	size_t off = 0;
	uint32_t i;

	for (i = 0; i < n; i++) {
		size_t name = strlen(b[i].name);
		size_t len = qcow2_bitmap_entry_bytes((uint32_t)name, 0);

		if (p) {
			memset(p + off, 0, len);
			put_be64(p + off + BME_OFF_TABLE, b[i].table_off);
			put_be32(p + off + BME_OFF_ENTRIES, b[i].table_entries);
			put_be32(p + off + BME_OFF_FLAGS, b[i].flags);
			p[off + BME_OFF_TYPE] = QCOW2_BITMAP_TYPE_DIRTY;
			p[off + BME_OFF_GRAN] = b[i].granularity_bits;
			put_be16(p + off + BME_OFF_NAME_LEN, (uint16_t)name);
			memcpy(p + off + BME_FIXED, b[i].name, name);
		}
		off += len;
	}
	return off;
}
