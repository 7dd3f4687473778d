/* SPDX-License-Identifier: MIT */
/*
 * snapshot.c - the internal snapshot table.
 *
 * The table is variable-length; it is read in growing chunks (never more than
 * QCOW2_MAX_SNAPSHOT_TABLE_BYTES, never more than the file holds) and decoded by a pure
 * function. Every entry's fields are validated here: L1 table placement and size, extra data
 * size, and the lengths of id and name. The encoder of one entry (what snapshot-write.c appends)
 * lives here too, next to the decoder it must agree with.
 *
 * Two kinds of damage (a bad entry in the snapshot table disables that snapshot
 * only): what makes the table itself unreadable (extra data of an impossible size, a table
 * over QCOW2_MAX_SNAPSHOT_TABLE_BYTES: QEMU refuses such a table too) refuses the table; what
 * concerns one snapshot alone (its L1 table misaligned, too large, past the end of the file or
 * too small for its disk, its disk size absurd, a NUL in its id or name, the entry itself
 * running past the end of the file, which QEMU reads as zeros) marks that entry invalid
 * (s->invalid says why) and the rest of the table stays usable. A v3 entry with too little
 * extra data is usable (s->incomplete): QEMU opens it and its check reports it. Nothing uses
 * an invalid entry's L1 table; its bytes stay in the table as they are
 * until a repair drops them (qemu-img does the same: it reads such a table and reports the
 * entry in check).
 *
 * Locks: a pin's p->lock (a mutex, internal to the pins at the end of this file) around its
 * check, which reads the file under it (a memory io's lock is then taken inside it); nothing
 * else here takes a lock.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "ondisk/ondisk.h"

#define ENTRY_FIXED 40

ssize_t qcow2_snapshot_entry_bytes(const void *entry, size_t avail)
{
	const uint8_t *p = entry;
	size_t len;

	if (avail < ENTRY_FIXED)
		return -EMSGSIZE;
	len = ENTRY_FIXED + (size_t)get_be32(p + 36) + get_be16(p + 12) + get_be16(p + 14);
	if (avail < len)
		return -EMSGSIZE;
	/* Entries are padded to 8 bytes, but the padding of the last one may be missing at the
	 * end of the file. */
	len = (len + 7) & ~(size_t)7;
	return (ssize_t)(len > avail ? avail : len);
}

size_t qcow2_snapshot_entry_encode(const struct qcow2_snapshot *s, void *buf)
{
	size_t id_len = strlen(s->id), name_len = strlen(s->name);
	size_t fixed = ENTRY_FIXED + QCOW2_SNAPSHOT_EXTRA_BYTES;
	size_t len = (fixed + id_len + name_len + 7) & ~(size_t)7;
	uint8_t *p = buf;

	if (!p)
		return len;
	memset(p, 0, len);
	put_be64(p, s->l1_off);
	put_be32(p + 8, s->l1_entries);
	put_be16(p + 12, (uint16_t)id_len);
	put_be16(p + 14, (uint16_t)name_len);
	put_be32(p + 16, s->date_sec);
	put_be32(p + 20, s->date_nsec);
	put_be64(p + 24, s->vm_clock_nsec);
	/* the 32-bit field as QEMU fills it; the 64-bit one in the extra data is the truth */
	put_be32(p + 32, (uint32_t)s->vm_state_bytes);
	put_be32(p + 36, QCOW2_SNAPSHOT_EXTRA_BYTES);
	put_be64(p + 40, s->vm_state_bytes);
	put_be64(p + 48, s->disk_bytes);
	put_be64(p + 56, s->icount);
	memcpy(p + fixed, s->id, id_len);
	memcpy(p + fixed + id_len, s->name, name_len);
	return len;
}

static char oom_reason[] = "invalid entry";
static char past_eof_reason[] = "its entry runs past end of file";

/* Mark @s invalid (the first reason found stays). */
static void mark_invalid(struct qcow2_snapshot *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void mark_invalid(struct qcow2_snapshot *s, const char *fmt, ...)
{
	va_list ap;

	if (s->invalid)
		return;
	va_start(ap, fmt);
	if (vasprintf(&s->invalid, fmt, ap) < 0)
		s->invalid = NULL;
	va_end(ap);
	if (!s->invalid)
		s->invalid = oom_reason; /* never freed: see qcow2_snapshot_release() */
}

static int decode_entry(const uint8_t *p, size_t avail, uint32_t version, uint64_t virtual_size,
			struct qcow2_snapshot *s, size_t *used)
{
	uint32_t extra, id_len, name_len;
	const char *id, *name;
	size_t len;
	ssize_t r;

	if (avail < ENTRY_FIXED)
		return -EMSGSIZE;
	memset(s, 0, sizeof(*s));
	s->l1_off = get_be64(p);
	s->l1_entries = get_be32(p + 8);
	id_len = get_be16(p + 12);
	name_len = get_be16(p + 14);
	s->date_sec = get_be32(p + 16);
	s->date_nsec = get_be32(p + 20);
	s->vm_clock_nsec = get_be64(p + 24);
	s->vm_state_bytes = get_be32(p + 32);
	extra = get_be32(p + 36);
	s->disk_bytes = virtual_size;
	s->icount = ~0ull;
	if (extra > QCOW2_MAX_SNAPSHOT_EXTRA)
		return qcow2_set_error(-EUCLEAN, "snapshot extra data too large (%u bytes)", extra);
	/* v3 wants at least the 64-bit VM state size and the disk size; QEMU reads a shorter
	 * entry (the disk size is then the image's) and check reports it: so do we */
	s->incomplete = version >= 3 && extra < 16;
	r = qcow2_snapshot_entry_bytes(p, avail);
	if (r < 0)
		return (int)r;
	len = (size_t)r;
	if (extra >= 8)
		s->vm_state_bytes = get_be64(p + 40);
	if (extra >= 16)
		s->disk_bytes = get_be64(p + 48);
	if (extra >= 24)
		s->icount = get_be64(p + 56);
	s->entry_bytes = ENTRY_FIXED + extra + id_len + name_len;
	id = (const char *)p + ENTRY_FIXED + extra;
	name = id + id_len;
	if (memchr(id, '\0', id_len) || memchr(name, '\0', name_len))
		mark_invalid(s, "its id or name contains a NUL byte");
	s->unreadable = (s->l1_off & 511) || (uint64_t)s->l1_entries * 8 > QCOW2_MAX_L1_BYTES;
	if (s->l1_off & 511)
		mark_invalid(s, "L1 table offset %#" PRIx64 " is not aligned", s->l1_off);
	else if ((uint64_t)s->l1_entries * 8 > QCOW2_MAX_L1_BYTES)
		mark_invalid(s, "L1 table of %" PRIu32 " entries is too large", s->l1_entries);
	else if (s->disk_bytes > QCOW2_MAX_VIRTUAL_SIZE)
		mark_invalid(s, "disk size %" PRIu64 " is too large", s->disk_bytes);
	s->id = strndup(id, id_len);
	s->name = strndup(name, name_len);
	if (!s->id || !s->name) {
		qcow2_snapshot_release(s, 1);
		return qcow2_oom_for("snapshot names");
	}
	*used = len;
	return 0;
}

ssize_t qcow2_snapshot_table_decode(const void *buf, size_t len, uint32_t nb, uint32_t version,
				    uint64_t virtual_size, struct qcow2_snapshot *out)
{
	size_t off = 0, used = 0;
	uint32_t i;
	int r;

	for (i = 0; i < nb; i++) {
		r = decode_entry((const uint8_t *)buf + off, len - off, version, virtual_size,
				 &out[i], &used);
		if (r < 0) {
			qcow2_snapshot_release(out, i);
			return r;
		}
		out[i].entry_off = off;
		off += used;
	}
	return (ssize_t)off;
}

void qcow2_snapshot_release(struct qcow2_snapshot *s, uint32_t n)
{
	uint32_t i;

	for (i = 0; s && i < n; i++) {
		free(s[i].id);
		free(s[i].name);
		if (s[i].invalid != oom_reason && s[i].invalid != past_eof_reason)
			free(s[i].invalid);
		s[i].id = s[i].name = s[i].invalid = NULL;
	}
}

void qcow2_snapshots_free(struct qcow2_snapshot *s, uint32_t n)
{
	qcow2_snapshot_release(s, n);
	free(s);
}

/* What the pure decoder cannot know: the cluster size, the file size, the L2 geometry. */
static void validate_entry(struct qcow2_snapshot *s, const struct qcow2_header *h,
			   uint64_t file_bytes)
{
	uint64_t cluster_bytes = 1ull << h->cluster_bits, end, reach;
	unsigned l2_bits = h->cluster_bits - 3 - ((h->incompat & QCOW2_INCOMPAT_EXTL2) ? 1 : 0);

	if (s->unreadable)
		return;
	if (s->l1_off % cluster_bytes) {
		s->unreadable = true;
		mark_invalid(s, "L1 table offset %#" PRIx64 " is not cluster aligned", s->l1_off);
	} else if (s->l1_entries &&
		   (__builtin_add_overflow(s->l1_off, s->l1_entries * 8ull, &end) ||
		    end > file_bytes)) {
		s->unreadable = true;
		mark_invalid(s, "L1 table at %#" PRIx64 " runs past end of file", s->l1_off);
	} else if (!__builtin_mul_overflow((uint64_t)s->l1_entries,
					   1ull << (l2_bits + h->cluster_bits), &reach) &&
		   reach < s->disk_bytes)
		mark_invalid(s, "L1 table of %" PRIu32 " entries is too small for its disk size",
			     s->l1_entries);
}

/* Read and decode the table of @h into @s: the first 64 KiB, then twice as much until every
 * entry fits (QCOW2_MAX_SNAPSHOT_TABLE_BYTES at most); @avail bytes of the file from the table
 * on. */
static int read_table(struct qcow2_io *io, const struct qcow2_header *h, uint64_t avail,
		      struct qcow2_snapshot *s)
{
	size_t want = 65536;
	uint8_t *buf = NULL;
	ssize_t r;

	for (;;) {
		size_t got;
		uint8_t *nbuf;

		if (want > QCOW2_MAX_SNAPSHOT_TABLE_BYTES)
			want = QCOW2_MAX_SNAPSHOT_TABLE_BYTES;
		nbuf = realloc(buf, want);
		if (!nbuf) {
			r = qcow2_oom_for("the snapshot table");
			break;
		}
		buf = nbuf;
		got = want > avail ? (size_t)avail : want;
		r = qcow2_io_pread_full(io, buf, got, h->snapshots_off);
		if (r < 0)
			break;
		/* Past the end of the file QEMU reads zeros (its block layer pads a short read):
		 * a table whose last entries run past it is read, and those entries marked by the
		 * caller. */
		memset(buf + got, 0, want - got);
		r = qcow2_snapshot_table_decode(buf, want, h->nb_snapshots, h->version, h->size, s);
		/* -EMSGSIZE: the table goes on past what was read; read more. */
		if (r != -EMSGSIZE)
			break;
		if (want == QCOW2_MAX_SNAPSHOT_TABLE_BYTES) {
			r = qcow2_set_error(-EUCLEAN, "snapshot table is larger than %u MiB",
					    QCOW2_MAX_SNAPSHOT_TABLE_BYTES >> 20);
			break;
		}
		want *= 2;
	}
	free(buf);
	return r < 0 ? (int)r : 0;
}

int qcow2_snapshot_load(struct qcow2_io *io, const struct qcow2_header *h, uint64_t file_bytes,
			struct qcow2_snapshot **out, uint64_t *table_bytes)
{
	uint64_t avail = file_bytes - h->snapshots_off; /* header.c: snapshots_off < file */
	struct qcow2_snapshot *s;
	uint32_t i;
	int r;

	*out = NULL;
	if (h->nb_snapshots == 0)
		return 0;
	if (avail / ENTRY_FIXED < h->nb_snapshots)
		return qcow2_set_error(-EUCLEAN,
				       "snapshot table of %u entries runs past end of file",
				       h->nb_snapshots);
	s = calloc(h->nb_snapshots, sizeof(*s));
	if (!s)
		return qcow2_oom_for("%u snapshots", h->nb_snapshots);
	r = read_table(io, h, avail, s);
	if (r < 0) {
		free(s);
		return r;
	}
	for (i = 0; i < h->nb_snapshots; i++) {
		/* An entry that runs past the end of the file is unusable whatever its zero-filled
		 * fields say (a name cut short, an L1 table of zeros): this reason first. */
		if (s[i].entry_off + s[i].entry_bytes > avail) {
			if (s[i].invalid != oom_reason)
				free(s[i].invalid);
			s[i].invalid = past_eof_reason;
		}
		validate_entry(&s[i], h, file_bytes);
	}
	*out = s;
	/* the table's length as QEMU counts it: up to the end of the last entry, unpadded */
	if (table_bytes)
		*table_bytes =
		    s[h->nb_snapshots - 1].entry_off + s[h->nb_snapshots - 1].entry_bytes;
	return 0;
}

int qcow2_snapshot_read(struct qcow2_io *io, const struct qcow2_header *h,
			struct qcow2_snapshot **out)
{
	uint64_t file_bytes;
	int r = qcow2_io_size(io, &file_bytes);

	if (r == 0 && h->nb_snapshots && h->snapshots_off >= file_bytes)
		r = qcow2_set_error(-EUCLEAN, "snapshot table lies past end of file");
	if (r == 0)
		r = qcow2_snapshot_load(io, h, file_bytes, out, NULL);
	if (r < 0)
		qcow2_error_prefix(r, qcow2_io_name(io));
	return r;
}

/* ---- pins: is a snapshot still the one a view was opened on? ----
 *
 * QEMU may delete a snapshot while a view of it is open (snapshot views share write
 * permission, as QEMU's readers do) and then reuse its clusters. QEMU rewrites the snapshot
 * table (a new table, then the header's table fields) before it frees any cluster of the
 * deleted snapshot (qcow2_snapshot_delete: table first, refcounts after). So a read whose data
 * was taken before that table change is the snapshot's, and a check made after the data was
 * read proves it when it finds the entry unchanged: no cluster of the snapshot can have been
 * freed before the read. A pin holds the entry's bytes and where they were.
 *
 * Other snapshots created or deleted meanwhile move the table (the header's fields change)
 * but leave the entry's bytes as they were: the check then looks the entry up again in the
 * new table (by its id, byte for byte) and follows it there. A snapshot deleted, or changed,
 * stays stale: every later check fails with -ESTALE at once.
 *
 * Locking: p->lock guards the moving fields; each check holds it across its reads (only the
 * io's own lock is taken inside it), so a check never sees half of a move. */

static int stale(struct qcow2_snapshot_pin *p)
{
	p->stale = true;
	return qcow2_set_error(-ESTALE,
			       "'%s': snapshot '%s' was deleted or changed while its view was open",
			       qcow2_io_name(p->io), p->name);
}

/* Read @p->len bytes at @off and compare them with the pinned entry: 0 same, 1 differ. */
static int entry_differs(const struct qcow2_snapshot_pin *p, uint64_t off)
{
	uint8_t stack[512], *buf = p->len <= sizeof(stack) ? stack : malloc(p->len);
	int r;

	if (!buf)
		return qcow2_oom();
	r = qcow2_io_pread_full(p->io, buf, p->len, off);
	if (r == 0)
		r = memcmp(buf, p->bytes, p->len) != 0;
	if (buf != stack)
		free(buf);
	return r;
}

/* The header's table fields changed (@hdr): find the entry in the new table. */
static int follow(struct qcow2_snapshot_pin *p, const uint8_t *hdr)
{
	struct qcow2_snapshot *s = NULL;
	uint64_t file_bytes;
	uint32_t i, nb;
	int r;

	p->h.nb_snapshots = get_be32(hdr);
	p->h.snapshots_off = get_be64(hdr + 4);
	nb = p->h.nb_snapshots;
	r = qcow2_io_size(p->io, &file_bytes);
	if (r == 0 && (nb > QCOW2_MAX_SNAPSHOTS || (nb && p->h.snapshots_off >= file_bytes)))
		return stale(p);
	if (r == 0)
		r = qcow2_snapshot_load(p->io, &p->h, file_bytes, &s, NULL);
	if (r == -EUCLEAN)
		return stale(p); /* caught mid-change, or damaged: either way not provably ours */
	for (i = 0; r == 0 && i < nb && strcmp(s[i].id, p->id) != 0; i++)
		;
	if (r == 0 && (i == nb || s[i].entry_bytes != p->len))
		r = 1;
	if (r == 0)
		r = entry_differs(p, p->h.snapshots_off + s[i].entry_off);
	if (r == 0) {
		memcpy(p->hdr, hdr, sizeof(p->hdr));
		p->off = p->h.snapshots_off + s[i].entry_off;
	}
	qcow2_snapshots_free(s, nb);
	return r == 1 ? stale(p) : r;
}

int qcow2_snapshot_pin_check(struct qcow2_snapshot_pin *p)
{
	uint8_t hdr[sizeof(p->hdr)];
	int r;

	pthread_mutex_lock(&p->lock);
	if (p->stale) {
		r = qcow2_set_error(-ESTALE,
				    "'%s': snapshot '%s' was deleted or changed while its "
				    "view was open",
				    qcow2_io_name(p->io), p->name);
		goto out;
	}
	/* nb_snapshots, snapshots_offset */
	r = qcow2_io_pread_full(p->io, hdr, sizeof(hdr), OFF_NB_SNAPSHOTS);
	if (r == 0 && memcmp(hdr, p->hdr, sizeof(hdr)) != 0)
		r = follow(p, hdr);
	else if (r == 0 && (r = entry_differs(p, p->off)) == 1)
		r = stale(p);
out:
	pthread_mutex_unlock(&p->lock);
	return r;
}

int qcow2_snapshot_pin_init(struct qcow2_snapshot_pin *p, struct qcow2_io *io,
			    const struct qcow2_header *h, const struct qcow2_snapshot *s)
{
	struct qcow2_snapshot got;
	int r;

	memset(p, 0, sizeof(*p));
	pthread_mutex_init(&p->lock, NULL);
	p->io = io;
	p->h = *h;
	put_be32(p->hdr, h->nb_snapshots);
	put_be64(p->hdr + 4, h->snapshots_off);
	p->off = h->snapshots_off + s->entry_off;
	p->len = s->entry_bytes;
	p->bytes = malloc(p->len);
	p->id = strdup(s->id);
	snprintf(p->name, sizeof(p->name), "%s", s->name);
	if (!p->bytes || !p->id) {
		qcow2_snapshot_pin_release(p);
		return qcow2_oom();
	}
	r = qcow2_io_pread_full(io, p->bytes, p->len, p->off);
	/* the bytes read now must be the entry the table was decoded from */
	if (r == 0 &&
	    qcow2_snapshot_table_decode(p->bytes, p->len, 1, h->version, h->size, &got) < 0)
		r = stale(p);
	if (r == 0) {
		if (got.invalid || strcmp(got.id, s->id) != 0 || got.l1_off != s->l1_off ||
		    got.l1_entries != s->l1_entries || got.disk_bytes != s->disk_bytes)
			r = stale(p);
		qcow2_snapshot_release(&got, 1);
	}
	if (r == 0)
		r = qcow2_snapshot_pin_check(p);
	if (r < 0)
		qcow2_snapshot_pin_release(p);
	return r;
}

void qcow2_snapshot_pin_release(struct qcow2_snapshot_pin *p)
{
	free(p->bytes);
	free(p->id);
	p->bytes = NULL;
	p->id = NULL;
	pthread_mutex_destroy(&p->lock);
}
