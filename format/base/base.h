/* SPDX-License-Identifier: MIT */
/*
 * base.h - the lowest layer of the library (docs/design.md): byte order, errors, the io of a
 * file or of memory, locks of files, codecs, confined paths, the mount table, journals and undo
 * logs. It knows nothing of qcow2's tables; every other layer includes it (through the header
 * of its own).
 */
#ifndef QCOW2_BASE_H
#define QCOW2_BASE_H

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "qcow2.h"

static inline uint16_t get_be16(const void *p)
{
	const uint8_t *b = p;
	return (uint16_t)(b[0] << 8 | b[1]);
}

static inline uint32_t get_be32(const void *p)
{
	const uint8_t *b = p;
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static inline uint64_t get_be64(const void *p)
{
	return (uint64_t)get_be32(p) << 32 | get_be32((const uint8_t *)p + 4);
}

static inline void put_be16(void *p, uint16_t v)
{
	uint8_t *b = p;
	b[0] = (uint8_t)(v >> 8);
	b[1] = (uint8_t)v;
}

static inline void put_be32(void *p, uint32_t v)
{
	uint8_t *b = p;
	b[0] = v >> 24;
	b[1] = v >> 16;
	b[2] = v >> 8;
	b[3] = v;
}

static inline void put_be64(void *p, uint64_t v)
{
	put_be32(p, v >> 32);
	put_be32((uint8_t *)p + 4, (uint32_t)v);
}

/* Report @done of @total bytes to @job and poll it: -ECANCELED (with a message) once it was
 * cancelled, else 0. @job may be NULL. */
static inline int qcow2_job_step(const struct qcow2_job *job, uint64_t done, uint64_t total)
{
	if (!job)
		return 0;
	if (job->progress)
		job->progress(job->ctx, done, total);
	if (job->cancelled && job->cancelled(job->ctx))
		return qcow2_set_error(-ECANCELED, "interrupted");
	return 0;
}

/* times.c: a job's phase timers (struct qcow2_job_times). qcow2_clock(): monotonic seconds.
 * qcow2_job_time(): @secs (and @bytes) added to @job's phase @name (static), a new phase at the
 * end when it has not run yet; nothing when @job or its @times is NULL. qcow2_io_sync_secs()
 * (io.c): the seconds this process has spent in fdatasync so far, so a flush's wait for the
 * disk can be told from its writes. */
double qcow2_clock(void);
void qcow2_job_time(const struct qcow2_job *job, const char *name, double secs, uint64_t bytes);
double qcow2_io_sync_secs(void);
/* A phase measured from a mark: qcow2_job_phase() adds the time since @m to phase @name, less
 * the fdatasync time within it, which goes to phase "sync" (so the phases add up). */
struct qcow2_phase_mark {
	double t, sync;
};
static inline struct qcow2_phase_mark qcow2_phase_start(void)
{
	return (struct qcow2_phase_mark){qcow2_clock(), qcow2_io_sync_secs()};
}
void qcow2_job_phase(const struct qcow2_job *job, const char *name, struct qcow2_phase_mark m,
		     uint64_t bytes);

/* io.c: a check run before every write and hole punch of an io (a writable image's overlap
 * checks, overlap.c). @check gets the byte range and the kinds of metadata the write is (a
 * QCOW2_OL_* mask, 0 for data; QCOW2_IO_PUNCH for a hole) and returns 0 or a negative errno that
 * fails the write (a punch is then skipped). Set before the io is shared between threads. */
#define QCOW2_IO_PUNCH (1u << 30)
struct qcow2_io_guard {
	int (*check)(void *ctx, uint64_t off, uint64_t n, unsigned own);
	void *ctx;
};
void qcow2_io_set_guard(struct qcow2_io *io, const struct qcow2_io_guard *g); /* NULL: none */
/* qcow2_io_pwrite() of metadata of the kinds @own (QCOW2_OL_*): it may overlap those. */
int qcow2_io_pwrite_meta(struct qcow2_io *io, const void *buf, size_t n, uint64_t off,
			 unsigned own);
/* io.c: @fn(@ctx, QCOW2_IO_WRITE, off, n) is called before every write and hole punch of
 * [off, off + n) through @io, @fn(@ctx, QCOW2_IO_FLUSH, 0, 0) before every flush (NULL:
 * none); a negative return fails the operation (a punch is skipped). One user at a time (a
 * repair, which holds the image alone). */
void qcow2_io_set_journal(struct qcow2_io *io,
			  int (*fn)(void *ctx, enum qcow2_io_op op, uint64_t off, uint64_t n),
			  void *ctx);
/* io.c: shrink the file to @bytes (no-op if it is not longer). */
int qcow2_io_truncate(struct qcow2_io *io, uint64_t bytes);
/* lock.c: move QEMU's writer locks held on @from to @to, another description of the same file
 * (a layer reopened for writing becomes a chain's top): at no moment does neither hold the
 * write permission, so a process that does not share write (QEMU's writer, and its reader)
 * cannot take the file in between. On failure @from keeps what it held. 0 or -errno. */
int qcow2_io_lock_move_writer(struct qcow2_io *from, struct qcow2_io *to);

/* The kinds of metadata a write of metadata is (qcow2_io_pwrite_meta()'s @own), as the
 * overlap checks of a writable image (engine/overlap.c) tell them apart. */
#define QCOW2_OL_HEADER	      (1u << 0)
#define QCOW2_OL_L1	      (1u << 1)
#define QCOW2_OL_L2	      (1u << 2)
#define QCOW2_OL_REFT	      (1u << 3)
#define QCOW2_OL_REFBLOCK     (1u << 4)
#define QCOW2_OL_SNAP_TABLE   (1u << 5)
#define QCOW2_OL_SNAP_L1      (1u << 6)
#define QCOW2_OL_BITMAP_DIR   (1u << 7)
#define QCOW2_OL_BITMAP_TABLE (1u << 8)
#define QCOW2_OL_ALL	      0x1ffu

/* error.c: prefix the last message with "'@name': " unless it already starts so. */
int qcow2_error_prefix(int err, const char *name);

/* codec.c */
/* Compress one cluster (@in_len bytes) into @out (@out_cap bytes) with @type; returns the
 * compressed length, or 0 if it does not fit (store the cluster uncompressed), or -errno. */
ssize_t qcow2_codec_compress(uint8_t type, const void *in, size_t in_len, void *out,
			     size_t out_cap);
/* Is compression type @type (QCOW2_COMPRESSION_*) built in? */
bool qcow2_codec_available(uint8_t type);
int qcow2_codec_decompress(uint8_t type, const void *in, size_t in_len, void *out, size_t out_len);

/* journal.c: the files that let a rerun complete an interrupted job (write order there). */
/* The journal of @job for the image at @image: ".IMAGE.qcowctl-JOB" in its directory, into
 * @out (@cap bytes). 0 or -ENAMETOOLONG. */
int qcow2_journal_path(const char *image, const char *job, char *out, size_t cap);
/* Replace the journal @path by @text, durably (a temporary file written and fsynced, renamed
 * over it, the directory fsynced). 0 or -errno. */
int qcow2_journal_write(const char *path, const char *text);
/* Read the journal @path (at most 64 KiB) into *@text (malloc'ed, NUL-terminated). 1 if read,
 * 0 if there is none (*@text NULL), or -errno (not a regular file: -EINVAL). */
int qcow2_journal_read(const char *path, char **text);
/* Remove the journal @path, durably. 0 (also when there is none) or -errno. */
int qcow2_journal_remove(const char *path);
/* fsync the directory holding @path. */
int qcow2_sync_dir(const char *path);

/* A range of host clusters whose refcount is to be lowered by one (refcount.c). */
struct qcow2_crange {
	uint64_t first;
	uint64_t count;
};

/* undo.c: from qcow2_undo_start() on, every write and hole punch through @io first saves what
 * it replaces, and every flush is noted; qcow2_undo_replay() puts it all back, newest first,
 * flushing where the run flushed, and truncates the file to its old length (durable when it
 * returns 0); qcow2_undo_free() stops and forgets. */
struct qcow2_undo;
int qcow2_undo_start(struct qcow2_io *io, struct qcow2_undo **out);
int qcow2_undo_replay(struct qcow2_undo *u);
void qcow2_undo_free(struct qcow2_undo *u);

#endif
