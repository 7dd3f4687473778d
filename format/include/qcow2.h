/* SPDX-License-Identifier: MIT */
/*
 * qcow2.h - the one public header of the qcow2 library (format/).
 *
 * Conventions: functions return 0 (or a count) on success and a negative errno on failure;
 * the failure detail is left in a thread-local message (qcow2_last_error()) that names the
 * file and the cause. Nothing here prints, exits or keeps mutable global state.
 *
 * Objects:
 *   struct qcow2_io     - a host file (or a memory buffer in tests): every byte goes through it.
 *   struct qcow2_image  - one qcow2 file: header, L1 table, L2 cache, snapshot table, refcounts.
 *   struct qcow2_chain  - a flat view: a top layer (qcow2 image, optionally at an internal
 *                         snapshot) and its backing layers (qcow2 images or raw files).
 *
 * Thread safety: qcow2_chain_pread(), qcow2_chain_map() and qcow2_chain_seek() may be called
 * from many threads on the same chain at once. Opening and closing are not concurrent with
 * anything else on the same object.
 */
#ifndef QCOW2_H
#define QCOW2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

/* ---- on-disk constants (qcow2.txt) ---- */
#define QCOW2_MAGIC	       0x514649fbu /* "QFI\xfb" */
#define QCOW2_MIN_CLUSTER_BITS 9
#define QCOW2_MAX_CLUSTER_BITS 21

#define QCOW2_INCOMPAT_DIRTY	   (1ull << 0)
#define QCOW2_INCOMPAT_CORRUPT	   (1ull << 1)
#define QCOW2_INCOMPAT_DATA_FILE   (1ull << 2)
#define QCOW2_INCOMPAT_COMPRESSION (1ull << 3)
#define QCOW2_INCOMPAT_EXTL2	   (1ull << 4)
#define QCOW2_INCOMPAT_KNOWN	   0x1full

#define QCOW2_COMPAT_LAZY_REFCOUNTS (1ull << 0)

#define QCOW2_AUTOCLEAR_BITMAPS	      (1ull << 0)
#define QCOW2_AUTOCLEAR_DATA_FILE_RAW (1ull << 1)

#define QCOW2_CRYPT_NONE 0
#define QCOW2_CRYPT_AES	 1
#define QCOW2_CRYPT_LUKS 2

#define QCOW2_COMPRESSION_ZLIB 0
#define QCOW2_COMPRESSION_ZSTD 1

/* Caps on numbers read from files: every allocation sized by the file is bounded by these. */
#define QCOW2_MAX_BACKING_NAME	       1023	   /* as QEMU */
#define QCOW2_MAX_L1_BYTES	       (32u << 20) /* as QEMU's QCOW_MAX_L1_SIZE */
#define QCOW2_MAX_REFTABLE_BYTES       (8u << 20)  /* as QEMU's QCOW_MAX_REFTABLE_SIZE */
#define QCOW2_MAX_SNAPSHOTS	       65536	   /* as QEMU's QCOW_MAX_SNAPSHOTS */
#define QCOW2_MAX_SNAPSHOT_TABLE_BYTES (64u << 20)
#define QCOW2_MAX_SNAPSHOT_EXTRA       1024
#define QCOW2_MAX_VIRTUAL_SIZE	       (1ull << 56) /* 64 PiB */
#define QCOW2_DEFAULT_MAX_DEPTH	       4096

/* ---- long operations ----
 * Commands that walk a whole image (commit, pull, rebase, copy, check, checksum) report
 * progress and poll for cancellation between steps through a qcow2_job (may be NULL). A
 * cancelled job stops at a safe point and returns -ECANCELED. */
struct qcow2_job {
	void (*progress)(void *ctx, uint64_t done, uint64_t total); /* bytes; may be NULL */
	bool (*cancelled)(void *ctx);				    /* may be NULL */
	void *ctx;
	/* the keys of the encrypted images the job opens (struct qcow2_keys); may be NULL */
	const struct qcow2_keys *keys;
	/* where the job's time goes, filled by the job (struct qcow2_job_times); may be NULL */
	struct qcow2_job_times *times;
};

/* A job's phases in the order they ran, each with its wall-clock seconds (summed when a phase
 * runs more than once) and the bytes it handled (0: none to say). Phases: "plan" (the
 * metadata walk that lists the work), "create" (a new image), "copy" (data moved; @copy_reads
 * is the time its writing thread waited for data read ahead, @copy_writes the time it spent
 * writing), "flush" (metadata written back), "sync" (fdatasync: until durable), "journal",
 * "pointer" (the backing pointer moved), "empty" (an overlay emptied), "rename" (a copy given
 * its name); check's "walk" (what points where), "compare" (with the refcounts) and "copied"
 * (COPIED flags). The library only measures; the tools print them (-v). */
#define QCOW2_JOB_MAX_PHASES 16
struct qcow2_job_phase {
	const char *name; /* static */
	double secs;
	uint64_t bytes;
};
struct qcow2_job_times {
	struct qcow2_job_phase v[QCOW2_JOB_MAX_PHASES];
	unsigned n;
	double copy_reads, copy_writes;
};

/* ---- errors (error.c) ---- */

/* Store a message for this thread (printf-style) and return @err unchanged. */
int qcow2_set_error(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Running out of memory, said once for the library and its programs: stores "out of memory"
 * and returns -ENOMEM. */
int qcow2_oom(void);
/* As qcow2_oom(), naming what the memory was for (printf-style): "out of memory for the L1
 * table", where the size came from the file and says which table was too large. */
int qcow2_oom_for(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The last message stored by this thread, or "" if none. Valid until the next call. */
const char *qcow2_last_error(void);
void qcow2_clear_error(void);

/* ---- host I/O (io.c) ---- */

struct qcow2_io;

enum qcow2_io_op { QCOW2_IO_READ, QCOW2_IO_WRITE, QCOW2_IO_FLUSH };

/* Flags of qcow2_file_open() and qcow2_io_open(). */
#define QCOW2_OPEN_WRITE    (1u << 0) /* O_RDWR, else O_RDONLY */
#define QCOW2_OPEN_NOFOLLOW (1u << 1) /* @path is canonical: follow no symlink anywhere in it */
#define QCOW2_OPEN_BLOCKDEV (1u << 2) /* a block device is accepted too (the operator named it) */
/* Open @path as an image, backing or data file, the only way the library opens one: the open
 * never blocks (O_NONBLOCK, cleared once the file is known), and only a regular file (or, with
 * QCOW2_OPEN_BLOCKDEV, a block device) is accepted: a FIFO, socket, character device or
 * directory is refused (-EINVAL, -EISDIR) with a message naming the file. Returns the
 * descriptor (O_CLOEXEC) or -errno. */
int qcow2_file_open(const char *path, unsigned flags);
/* qcow2_file_open() into a file io. Returns 0 or -errno. */
int qcow2_io_open(const char *path, unsigned flags, struct qcow2_io **out);
/* qcow2_io_open() with QCOW2_OPEN_WRITE if @writable. Returns 0 or -errno. */
int qcow2_io_open_file(const char *path, bool writable, struct qcow2_io **out);
/* A memory-backed io holding a copy of @bytes (tests, fuzzers). @name is used in messages. */
struct qcow2_io *qcow2_io_mem_new(const char *name, const void *bytes, size_t len);
/* Make the @nth (1-based, counted from now) operation of kind @op fail with @err (memory io). */
void qcow2_io_mem_fail_nth(struct qcow2_io *io, enum qcow2_io_op op, unsigned nth, int err);
/* As qcow2_io_mem_fail_nth(), and every later call of @op fails too: a crash at the Nth. */
void qcow2_io_mem_fail_from(struct qcow2_io *io, enum qcow2_io_op op, unsigned nth, int err);
/* Test hook, process-wide (tests of the jobs, which open their files by path): make the @nth
 * (1-based, counted from now) @op (QCOW2_IO_WRITE: a write, a size change or a hole punch;
 * QCOW2_IO_FLUSH: a flush) of every file io of the process fail with @err (negative errno; a
 * failed punch is skipped silently, as any punch may be). With @sticky, a crash at the Nth:
 * from then on every write and flush of every file io fails with @err. While anything is armed,
 * both kinds are counted. @nth 0 disarms @op; once nothing is armed, the crash ends. Memory ios
 * are not concerned (qcow2_io_mem_fail_nth()). Returns 0, or -EINVAL for QCOW2_IO_READ. Not for
 * use outside tests: it changes every file io of the process. */
int qcow2_io_fail_files(enum qcow2_io_op op, unsigned nth, int err, bool sticky);
/* How many @op of file ios the hook counted since @op was last armed (or disarmed). */
unsigned qcow2_io_fail_files_seen(enum qcow2_io_op op);
/* The bytes of a memory io (tests). */
const void *qcow2_io_mem_bytes(const struct qcow2_io *io, size_t *len);
void qcow2_io_close(struct qcow2_io *io);

/* Read up to @n bytes at @off. Returns the count read (short only at end of file) or -errno;
 * EINTR and partial reads are retried. */
ssize_t qcow2_io_pread(struct qcow2_io *io, void *buf, size_t n, uint64_t off);
/* Read exactly @n bytes at @off; a short read is -EUCLEAN ("runs past end of file"). */
int qcow2_io_pread_full(struct qcow2_io *io, void *buf, size_t n, uint64_t off);
/* Write exactly @n bytes at @off. Returns 0 or -errno. */
int qcow2_io_pwrite(struct qcow2_io *io, const void *buf, size_t n, uint64_t off);
int qcow2_io_flush(struct qcow2_io *io);
/* Start writing [@off, @off + @n) back to the disk without waiting (a hint: large sequential
 * writes then overlap with the disk, and a later flush has less left to do). */
void qcow2_io_start_writeback(struct qcow2_io *io, uint64_t off, uint64_t n);
/* Give [@off, @off + @n) back to the host file system (a hint: the range reads as zeros
 * afterwards where it succeeds; unused clusters only). */
void qcow2_io_punch(struct qcow2_io *io, uint64_t off, uint64_t n);
/* Make [@off, @off + @n) read as zeros: a hole where the file system punches one, else zeros
 * written (the file's length kept). Checked by the guard as a write of data. 0 or -errno. */
int qcow2_io_zero(struct qcow2_io *io, uint64_t off, uint64_t n);
/* Extend the file to at least @bytes (never shrinks). */
int qcow2_io_grow(struct qcow2_io *io, uint64_t bytes);
int qcow2_io_size(struct qcow2_io *io, uint64_t *bytes);
/* Bytes the host file system has allocated for the file (st_blocks * 512). */
int qcow2_io_allocated(struct qcow2_io *io, uint64_t *bytes);
/* The run of bytes from @off, at most @max: data (*@is_data) up to the next hole of the host
 * file, or a hole (reads as zeros) up to the next data, *@len bytes (> 0 when @max is). Past
 * the end of the file is a hole; a file whose holes cannot be told, and a memory io up to its
 * end, are data. Never fails: holes are only a hint (QEMU's file driver reads them the same way,
 * SEEK_DATA and SEEK_HOLE, EINTR retried). The only way the library and its callers look for
 * holes in a file. */
void qcow2_io_next_extent(struct qcow2_io *io, uint64_t off, uint64_t max, uint64_t *len,
			  bool *is_data);
/* The file descriptor behind a file io, or -1 (memory io). Owned by the io. */
int qcow2_io_fd(const struct qcow2_io *io);
/* Is the file open as @fd a regular file or a directory on a disk file system of this kernel (ext2/3/4, xfs,
 * btrfs, tmpfs, f2fs, zfs)? There its size is its contents (not so in /proc or /sys, whose
 * files claim a size they do not hold) and every change goes through this kernel (not so on
 * NFS, CIFS or FUSE). Anything else, or a failed stat, is false. */
bool qcow2_fd_on_local_disk(int fd);
const char *qcow2_io_name(const struct qcow2_io *io);

/* ---- QEMU-compatible image locks (lock.c) ----
 * QEMU locks bytes 100+bit for the permissions it holds and 200+bit for the permissions it
 * does not share, with open file description locks. */
#define QCOW2_PERM_CONSISTENT_READ 0x1u
#define QCOW2_PERM_WRITE	   0x2u
#define QCOW2_PERM_WRITE_UNCHANGED 0x4u
#define QCOW2_PERM_RESIZE	   0x8u
#define QCOW2_PERM_ALL		   0xfu

/* Check that no other open file description conflicts, then lock. A conflict is -EBUSY with a
 * message naming the file, the permission and, where /proc tells, the holding process. */
int qcow2_io_lock(struct qcow2_io *io, unsigned perm, unsigned shared);
/* Give back the permissions @perm (their "held" bytes) taken by qcow2_io_lock(). */
int qcow2_io_unlock(struct qcow2_io *io, unsigned perm);
/* The conflict test of qcow2_io_lock() alone: 0 if the locks could be taken now, else -EBUSY
 * naming the holder. Takes no lock. */
int qcow2_io_lock_check(struct qcow2_io *io, unsigned perm, unsigned shared);
/* What a reader shares: everything but write and resize. */
#define QCOW2_READER_SHARED (QCOW2_PERM_ALL & ~(QCOW2_PERM_WRITE | QCOW2_PERM_RESIZE))
#define qcow2_io_lock_check_reader(io) \
	qcow2_io_lock_check((io), QCOW2_PERM_CONSISTENT_READ, QCOW2_READER_SHARED)
/* What a QEMU writer holds: consistent read, write and resize, sharing neither write nor
 * resize. Taken on an io that already holds a reader lock, it upgrades that lock. */
#define QCOW2_WRITER_PERMS	 (QCOW2_PERM_CONSISTENT_READ | QCOW2_PERM_WRITE | QCOW2_PERM_RESIZE)
#define QCOW2_WRITER_SHARED	 (QCOW2_PERM_CONSISTENT_READ | QCOW2_PERM_WRITE_UNCHANGED)
#define qcow2_io_lock_writer(io) qcow2_io_lock((io), QCOW2_WRITER_PERMS, QCOW2_WRITER_SHARED)
/* Read-only use of a qcow2 image (or raw backing file): what QEMU takes for a read-only
 * node: CONSISTENT_READ, sharing everything but WRITE and RESIZE. */
#define qcow2_io_lock_reader(io) \
	qcow2_io_lock((io), QCOW2_PERM_CONSISTENT_READ, QCOW2_READER_SHARED)

/* ---- header (header.c) ---- */

struct qcow2_header {
	uint32_t version;
	uint64_t backing_off;
	uint32_t backing_len;
	uint32_t cluster_bits;
	uint64_t size; /* virtual disk size in bytes */
	uint32_t crypt_method;
	uint32_t l1_entries;
	uint64_t l1_off;
	uint64_t reftable_off;
	uint32_t reftable_clusters;
	uint32_t nb_snapshots;
	uint64_t snapshots_off;
	uint64_t incompat;
	uint64_t compat;
	uint64_t autoclear;
	uint32_t refcount_order;
	uint32_t header_len;
	uint8_t compression_type;
	/* header extensions */
	char backing_file[QCOW2_MAX_BACKING_NAME + 1]; /* "" when none */
	char backing_fmt[32];			       /* "" when the extension is absent */
	char data_file[QCOW2_MAX_BACKING_NAME + 1];    /* "" when none */
	bool has_bitmaps_ext;
	uint32_t nb_bitmaps;
	uint64_t bitmap_dir_off;
	uint64_t bitmap_dir_bytes;
	bool has_crypto_ext;
	uint64_t crypto_off;
	uint64_t crypto_bytes;
	uint32_t nb_feature_names;
	uint32_t nb_unknown_exts; /* preserved, never interpreted */
};

/* Decode and validate the header in @buf (the first @len bytes of the file; at least the first
 * cluster, or the whole file if smaller). Pure: checks the fields against each other and the
 * format's limits, not against the file size. Returns 0, -EINVAL (not qcow2 / bad version or
 * field), -ENOTSUP (a feature not handled), or -EUCLEAN. */
int qcow2_header_decode(const void *buf, size_t len, struct qcow2_header *h);
/* The backing file name stored in the image read by @io, from the fields that locate it
 * alone: known even when the image is refused for another reason (an unknown incompatible
 * feature, encryption), so that what it names is still treated as its backing file. Returns 1
 * with the name in @name (@cap bytes), 0 if it names none, or -errno (not qcow2, a name that
 * lies where no valid header puts it). */
int qcow2_header_read_backing_name(struct qcow2_io *io, char *name, size_t cap);
/* Check the header's tables against the file size (@file_bytes). 0 or -EUCLEAN. */
int qcow2_header_check_layout(const struct qcow2_header *h, uint64_t file_bytes);
/* True if @buf (@len bytes) starts with the qcow2 magic. */
bool qcow2_probe(const void *buf, size_t len);
/* Read and decode the header of the file in @io (the first cluster, or less if the file is
 * shorter), then check its layout against the file size. -EINVAL if it is not qcow2. */
int qcow2_header_read(struct qcow2_io *io, struct qcow2_header *h);
/* What the file in @io is, the one way to tell: *@is_qcow2 if it begins with the qcow2 magic,
 * else it is a raw file (also one shorter than the magic). With @h (may be NULL) and a qcow2
 * file, its header is read into @h too (qcow2_header_read()). Returns 0, or -errno: the first
 * bytes cannot be read (*@is_qcow2 false), or the header of a qcow2 file is bad. */
int qcow2_header_probe(struct qcow2_io *io, bool *is_qcow2, struct qcow2_header *h);

/* ---- snapshots (snapshot.c) ---- */

struct qcow2_snapshot {
	char *id;   /* allocated: release with qcow2_snapshot_release() */
	char *name; /* allocated; any length QEMU writes (up to 65535 bytes) */
	uint64_t l1_off;
	uint32_t l1_entries;
	uint32_t date_sec;
	uint32_t date_nsec;
	uint64_t vm_clock_nsec;
	uint64_t vm_state_bytes;
	uint64_t disk_bytes; /* the virtual size when the snapshot was taken */
	uint64_t icount;     /* ~0 when absent */
	/* NULL, or why this entry is unusable (its L1 table misaligned, too large, past the end
	 * of the file or too small, its disk size absurd): such a snapshot has no view and no
	 * operation uses it; the rest of the table works. Freed with the entry. */
	char *invalid;
	/* With ->invalid: its L1 table cannot be read at all (misaligned, too large, past the
	 * end of the file), by us or by QEMU. Such an entry is what a repair may drop. */
	bool unreadable;
	/* A v3 entry with less than 16 bytes of extra data (no 64-bit VM state size, no disk
	 * size: the disk size is then the image's, as QEMU reads it). Usable; check reports it
	 * as QEMU does ("snapshot table entry N is incomplete"). */
	bool incomplete;
	uint64_t entry_off;   /* where the entry lies in the table (bytes from its start) */
	uint32_t entry_bytes; /* its length without padding */
};

/* Decode a snapshot table of @nb entries from @buf (@len bytes). @out gets @nb entries whose
 * strings the caller releases with qcow2_snapshot_release(). Pure. Returns the table's length
 * in bytes, -EMSGSIZE if @len is too short, or another negative errno when the table itself is
 * unreadable; on failure nothing is left allocated. An entry whose own fields are bad is
 * decoded with ->invalid set (qcow2_snapshot_read() also checks what needs the header). */
ssize_t qcow2_snapshot_table_decode(const void *buf, size_t len, uint32_t nb, uint32_t version,
				    uint64_t virtual_size, struct qcow2_snapshot *out);
/* Free the strings of @n entries (the array itself stays the caller's). */
void qcow2_snapshot_release(struct qcow2_snapshot *s, uint32_t n);
/* qcow2_snapshot_release(), then free(@s): for what qcow2_snapshot_read() returns. */
void qcow2_snapshots_free(struct qcow2_snapshot *s, uint32_t n);

/* Read the snapshot table described by @h from @io. *@out (h->nb_snapshots entries, NULL when
 * there are none) is the caller's to free with qcow2_snapshots_free(). */
int qcow2_snapshot_read(struct qcow2_io *io, const struct qcow2_header *h,
			struct qcow2_snapshot **out);

/* ---- persistent dirty bitmaps (ondisk/bitmap.c, image/bitmap.c) ---- */

#define QCOW2_BITMAP_IN_USE	    (1u << 0) /* written while open for writing: inconsistent */
#define QCOW2_BITMAP_AUTO	    (1u << 1) /* enabled: tracks writes */
#define QCOW2_BITMAP_RESERVED_FLAGS 0xfffffffcu
#define QCOW2_BITMAP_TYPE_DIRTY	    1
/* QEMU's limits (block/qcow2-bitmap.c, block/qcow2.h) */
#define QCOW2_BITMAP_MAX_COUNT		  65535u
#define QCOW2_BITMAP_MAX_DIR_BYTES	  (1024ull * 65535u)
#define QCOW2_BITMAP_MAX_TABLE_ENTRIES	  0x8000000u
#define QCOW2_BITMAP_MAX_DATA_BYTES	  0x20000000ull
#define QCOW2_BITMAP_MIN_GRANULARITY_BITS 9
#define QCOW2_BITMAP_MAX_GRANULARITY_BITS 31
#define QCOW2_BITMAP_MAX_NAME_BYTES	  1023

/* One entry of the bitmap directory. */
struct qcow2_bitmap {
	char *name; /* allocated (qcow2_bitmaps_free()); up to the first NUL, as QEMU reads it */
	uint32_t name_bytes; /* the name's length on disk */
	uint64_t table_off;
	uint32_t table_entries;
	uint32_t flags; /* QCOW2_BITMAP_IN_USE, QCOW2_BITMAP_AUTO, reserved bits as found */
	uint8_t type;
	uint8_t granularity_bits;
	uint32_t extra_bytes;
	uint64_t entry_off; /* where the entry lies in the directory */
	/* NULL, or why QEMU refuses this entry (a static string, e.g. "has an invalid
	 * granularity"): only a lenient decode keeps such an entry. */
	const char *invalid;
};

/* Decode the bitmap directory in @buf (@len bytes, the header's directory size) holding @nb
 * entries, of an image with @cluster_bits and @virtual_size. Strict (!@lenient): refused as
 * QEMU refuses it when it loads the bitmaps, also for one invalid entry; lenient: invalid
 * entries are kept with ->invalid set, only a broken directory (entries running past it, a
 * count that differs from @nb) is refused. *@out: @nb entries, the caller's to free with
 * qcow2_bitmaps_free(). Pure. 0, -EUCLEAN or -ENOMEM. */
int qcow2_bitmap_dir_decode(const void *buf, size_t len, uint32_t nb, uint32_t cluster_bits,
			    uint64_t virtual_size, bool lenient, struct qcow2_bitmap **out);
/* Encode @n entries (name, table, flags, granularity; type 1, no extra data) into @buf (NULL:
 * only measure). Returns the directory's length in bytes. Pure. */
size_t qcow2_bitmap_dir_encode(const struct qcow2_bitmap *b, uint32_t n, void *buf);
/* The length of a directory entry with a name of @name_bytes and @extra_bytes of extra data,
 * padding included. */
uint64_t qcow2_bitmap_entry_bytes(uint32_t name_bytes, uint32_t extra_bytes);
/* The number of bitmap table entries (data clusters) a bitmap of 2^@granularity_bits covering
 * @virtual_size bytes needs in an image of @cluster_bits. */
uint64_t qcow2_bitmap_table_entries(uint64_t virtual_size, uint32_t granularity_bits,
				    uint32_t cluster_bits);
void qcow2_bitmaps_free(struct qcow2_bitmap *b, uint32_t n);

struct qcow2_image;
/* The bitmap directory of @img (*@n 0 and *@out NULL when the image has no bitmaps in force:
 * no extension, or its autoclear bit cleared by a program that did not keep them). Strict or
 * @lenient as qcow2_bitmap_dir_decode(); messages name the image. */
int qcow2_image_bitmaps(struct qcow2_image *img, bool lenient, struct qcow2_bitmap **out,
			uint32_t *n);
/* The bitmap table of @b (an entry of qcow2_image_bitmaps()), in host order: *@out gets
 * b->table_entries entries, the caller's to free. -EUCLEAN if the table lies outside the file
 * or an entry has reserved bits set, is misaligned or points outside the file. */
int qcow2_image_bitmap_table(struct qcow2_image *img, const struct qcow2_bitmap *b, uint64_t **out);
/* The bits of bitmap @b: *@bits (the caller's to free) holds *@nbits bits, bit i (covering
 * guest bytes [i << granularity_bits, (i + 1) << granularity_bits)) at byte i / 8, bit i % 8,
 * as QEMU stores them. -EUCLEAN for an invalid entry, a table that does not fit the virtual
 * size, or a bitmap in use (inconsistent: QEMU does not read its data either). */
int qcow2_image_bitmap_read(struct qcow2_image *img, const struct qcow2_bitmap *b, uint8_t **bits,
			    uint64_t *nbits);

/* engine/bitmaps.c: replace the bitmap directory of the writable @img by @b (@n entries; 0
 * removes the extension and clears its autoclear bit). Entry i with @bits[i] (as
 * qcow2_image_bitmap_read() gives them: the virtual size at b[i].granularity_bits) gets new
 * data clusters (zero clusters as zero entries) and a new table; with @bits NULL or @bits[i]
 * NULL it keeps the table b[i] names (table_off, table_entries: one of the current directory).
 * Flags, names and granularities as given (type 1, no extra data). The current directory and
 * the tables no entry keeps are freed. The current directory may hold entries QEMU refuses
 * (they are dropped by leaving them out). Crash-safe: data and tables, then the directory,
 * then the header's extension, each durable, then the old clusters freed; a crash leaves the
 * old directory or the new one. -EBUSY once guest writes of this open have marked the
 * bitmaps. 0 or a negative errno (message names the image). */
int qcow2_image_bitmaps_store(struct qcow2_image *img, const struct qcow2_bitmap *b, uint32_t n,
			      uint8_t *const *bits);

/* integrity/bitmap-drop.c: check --repair --drop-bitmap: take bitmap @name of @img (open for
 * repair) out of the directory when it is inconsistent (in use, an entry QEMU refuses, a
 * damaged table), writing @why (@cap bytes) with the reason; its clusters are then leaks, which
 * the repair frees. -ENOENT (no such bitmap), -EINVAL (a consistent one: removed by 'bitmap
 * remove'). @dry_run: only the reason. */
int qcow2_image_bitmap_drop(struct qcow2_image *img, const char *name, bool dry_run, char *why,
			    size_t cap);

/* jobs/bitmap-edit.c: what `qemu-img bitmap` does to one bitmap, action after action. */
enum qcow2_bitmap_op {
	QCOW2_BITMAP_ADD,
	QCOW2_BITMAP_REMOVE,
	QCOW2_BITMAP_CLEAR,
	QCOW2_BITMAP_ENABLE,
	QCOW2_BITMAP_DISABLE,
	QCOW2_BITMAP_MERGE,
};
struct qcow2_bitmap_action {
	enum qcow2_bitmap_op op;
	uint64_t granularity; /* ADD: bytes, a power of two; 0: QEMU's default */
	bool disabled;	      /* ADD: not tracking writes */
	const char *source;   /* MERGE: the bitmap merged in (of the source image, if one) */
};
/* Apply @n_actions to bitmap @name of @img (open for writing, alone), in order, all in memory;
 * then, unless @dry_run, store the directory once (qcow2_image_bitmaps_store()). MERGE reads
 * its source bitmap from @source (open for reading) or, when NULL, from @img. Refused as QEMU
 * refuses: -EEXIST, -ENOENT (a name that exists / does not), -EBUSY (a bitmap in use used or
 * changed other than removed), -EINVAL (granularity, name, sizes), -ENOSPC (QEMU's count and
 * directory limits), -EUCLEAN (a directory QEMU would refuse); nothing is written then. */
int qcow2_image_bitmap_edit(struct qcow2_image *img, const char *name,
			    const struct qcow2_bitmap_action *actions, size_t n_actions,
			    struct qcow2_image *source, bool dry_run);

/* copy --bitmaps (jobs/bitmap-edit.c), as `qemu-img convert --bitmaps`: every persistent bitmap
 * of @src is added to @dst (open for writing, alone, of the same virtual size) with its
 * granularity, enabled or not, and its bits; one in use (inconsistent) is refused (-EBUSY,
 * before anything is written: call with @check_only before the copy) or, with @skip_broken,
 * left out. */
int qcow2_image_bitmaps_copy(struct qcow2_image *dst, struct qcow2_image *src, bool skip_broken,
			     bool check_only);

/* ---- internal snapshots, write side (snapshot-write.c) ----
 * On an image opened writable (a chain's top: qcow2_chain_layer(c, 0, &li).image). Each
 * operation is crash-safe: at every point the file on disk is a valid image whose refcounts
 * are never lower than its references (a crash leaks clusters at worst), and once it returns
 * the change is durable and the image's caches agree with the file, so writes through the
 * same image go on. Each holds the image's locks throughout: no read or write of the image
 * runs meanwhile, and pointers from qcow2_image_snapshot() are stale afterwards. Refused:
 * -EROFS (read-only), -ENOTSUP (an external data file: no internal snapshots, as in QEMU),
 * -ENOENT (no such snapshot), -EEXIST (create: the name is taken), -ERANGE (a refcount would
 * overflow its width, e.g. 1-bit refcounts), -EBUSY (apply: persistent bitmaps, as in QEMU);
 * a refusal changes nothing. */
struct qcow2_image;

enum qcow2_snapshot_op { QCOW2_SNAPSHOT_CREATE, QCOW2_SNAPSHOT_APPLY, QCOW2_SNAPSHOT_DELETE };

/* What an operation would change (qcow2_image_snapshot_plan()). Cluster counts are of host
 * clusters; "reach" is what an L1 table points at: its L2 tables and their data clusters. */
struct qcow2_snapshot_plan {
	char id[24];			  /* the snapshot's id (create: the one it gets) */
	uint32_t nb_before, nb_after;	  /* snapshots */
	uint64_t size_before, size_after; /* virtual size (apply: the snapshot's disk size) */
	uint64_t table_bytes;		  /* the snapshot table written (0: none left) */
	uint64_t l1_bytes;		  /* the L1 table written (create: the snapshot's copy;
				      * apply: the new active table) */
	uint64_t new_clusters;		  /* allocated for the L1 table and the snapshot table */
	uint64_t raised_clusters;	  /* clusters of the reach whose refcount rises */
	uint64_t lowered_clusters;	  /* ... and falls */
	uint64_t freed_clusters;	  /* clusters that become free: fallen to 0, old L1 and
				      * snapshot tables */
};

/* Work out what @op would do with @arg (create: the new name; else an id or name) and check
 * that it can, changing nothing. Works on a read-only image too. */
int qcow2_image_snapshot_plan(struct qcow2_image *img, enum qcow2_snapshot_op op, const char *arg,
			      struct qcow2_snapshot_plan *plan);
/* Snapshot the active state as @name (id: the next free number, as QEMU picks it; date now;
 * no VM state). The active state's clusters become shared: later writes copy them first. */
int qcow2_image_snapshot_create(struct qcow2_image *img, const char *name);
/* Make the snapshot @id_or_name (id first) the active state, its disk size the virtual size.
 * A chain holding @img keeps its old size and owner map: reopen it afterwards. */
int qcow2_image_snapshot_apply(struct qcow2_image *img, const char *id_or_name);
/* Delete the snapshot @id_or_name (id first), freeing what only it used. */
int qcow2_image_snapshot_delete(struct qcow2_image *img, const char *id_or_name);
/* Remove every unreadable entry (->unreadable set) from the snapshot table, each in its own
 * crash-safe step; *@dropped counts them. Their L1 tables are not trusted, so what only they
 * referenced stays allocated: leaks for a refcount repair (qcow2_image_repair()) to free.
 * Other invalid entries (a NUL in a name, an L1 table too small for the disk size, an absurd
 * disk size) stay: QEMU may still read their data. */
int qcow2_image_snapshot_drop_unreadable(struct qcow2_image *img, uint32_t *dropped);
/* Rewrite the snapshot table with every incomplete entry (->incomplete, a v3 entry with less
 * than 16 bytes of extra data) given its full extra data, as `qemu-img check -r all` does;
 * the other entries are copied byte for byte. One crash-safe table switch; *@fixed counts the
 * entries completed. Needs a sound refcount structure (it allocates the new table). */
int qcow2_image_snapshot_complete(struct qcow2_image *img, uint32_t *fixed);
/* What qcow2_image_snapshot_delete_resumable() did, or would do. */
struct qcow2_snapshot_resume {
	bool already_deleted;  /* an interrupted delete of that snapshot had gone past its switch:
				* only its cleanup was left */
	uint64_t leaks_fixed;  /* clusters counted down by that cleanup */
	uint64_t copied_fixed; /* COPIED flags it set */
};
/* qcow2_image_snapshot_delete() that a rerun completes (snapshot-resume.c): a journal next to
 * @image (the path of @img's file) names the snapshot while the delete runs. If @id_or_name is
 * no snapshot of @img but that journal names it, a delete of it was interrupted after its
 * switch: its cleanup is finished (leaked clusters counted down, COPIED flags set, nothing
 * else; refused, -EUCLEAN, if the image has other errors) and @res->already_deleted set.
 * Without such a journal a missing snapshot is -ENOENT, changing nothing. A delete that finds
 * a journal of an interrupted one finishes that cleanup first (@res counts it). The caller
 * holds the image alone (QEMU's write locks). Returns 0 or -errno. */
int qcow2_image_snapshot_delete_resumable(struct qcow2_image *img, const char *id_or_name,
					  const char *image, struct qcow2_snapshot_resume *res);
/* What qcow2_image_snapshot_delete_resumable() would clean up first, changing nothing (any
 * image): 1 if a journal tells of an interrupted delete whose cleanup it would finish
 * (@res->already_deleted: that of @id_or_name, past its switch; @res: what it would fix;
 * -EUCLEAN if it would refuse), 0 if there is none (or @id_or_name is neither a snapshot nor
 * the one the journal names), or -errno. */
int qcow2_image_snapshot_delete_pending(struct qcow2_image *img, const char *id_or_name,
					const char *image, struct qcow2_snapshot_resume *res);

/* ---- one image (image/load.c, engine/open.c) ---- */

struct qcow2_image;

struct qcow2_image_opts {
	/* Opens the external data file named in the header (path as stored, resolved by the
	 * callee); NULL refuses images with an external data file. */
	int (*open_data_file)(void *ctx, const char *stored_name, struct qcow2_io **io);
	void *ctx;
	size_t l2_cache_bytes; /* 0: a default (1 MiB) */
	/* Set up the write side (@io must be open for writing). Refused (-EROFS) for an image
	 * marked corrupt; an image left dirty by lazy refcounts has its refcounts rebuilt. */
	bool writable;
	/* With @writable, for qcow2_image_repair(): accepted when marked corrupt, and a dirty
	 * image keeps its dirty bit, unrebuilt, until the repair. */
	bool repair;
	/* The passphrase of an encrypted image (NULL: none given; see struct qcow2_keys). */
	const struct qcow2_key *key;
};

/* Open the qcow2 image in @io. Takes ownership of @io (closed on failure too). @name names the
 * image in messages. Returns 0 or -errno (-EINVAL not qcow2, -EUCLEAN malformed, -ENOTSUP). */
int qcow2_image_open(struct qcow2_io *io, const char *name, const struct qcow2_image_opts *o,
		     struct qcow2_image **out);
struct qcow2_chain_opts;
/* Open the qcow2 image at @path, the one way by path: resolved and confined as the top of a
 * chain (qcow2_chain_resolve_top()), opened with no symlink followed, writable if @o->writable,
 * locked as a reader if @o->lock, with its external data file resolved and confined like a
 * backing file. With @o->repair, for qcow2_image_repair(): writable even when marked corrupt or
 * left dirty, nothing rebuilt at open, a regular file only, its data file read-only, and with
 * @o->lock QEMU's write permission taken (-EBUSY naming the holder if another process reads or
 * writes it without sharing that). */
int qcow2_image_open_path(const char *path, const struct qcow2_chain_opts *o,
			  struct qcow2_image **out);
/* Open the external data file @stored_name named by the image at @image_path (the opener of
 * struct qcow2_image_opts that qcow2_image_open_path() gives): resolved and confined by
 * qcow2_chain_resolve_path(), opened with no symlink followed, for writing if @writable, and
 * with @o->lock a reader's lock taken. Returns 0 or -errno; *@io is NULL on failure. */
int qcow2_data_file_open(const struct qcow2_chain_opts *o, const char *image_path,
			 const char *stored_name, bool writable, struct qcow2_io **io);
void qcow2_image_close(struct qcow2_image *img);
/* Is the image encrypted (LUKS or legacy AES)? Can its data be read (not encrypted, or
 * unlocked with its key)? */
bool qcow2_image_encrypted(const struct qcow2_image *img);
bool qcow2_image_data_readable(const struct qcow2_image *img);
/* Can the key @key (NULL: none) read the data of the image read by @io, whose header is @h?
 * 0 (not encrypted, or the key opens it), -ENOKEY ("NAME: encrypted, no key given (--key
 * IMAGE=KEYFILE)"), -EKEYREJECTED ("wrong key for NAME"), or another error of its crypto
 * header; @name names the image. A LUKS key costs its key slots' PBKDF2 iterations. */
int qcow2_image_key_check(struct qcow2_io *io, const char *name, const struct qcow2_header *h,
			  const struct qcow2_key *key);
const struct qcow2_header *qcow2_image_header(const struct qcow2_image *img);
struct qcow2_io *qcow2_image_io(const struct qcow2_image *img);
/* The io of the image's external data file, or the image's own io when it has none. */
struct qcow2_io *qcow2_image_data_io(const struct qcow2_image *img);
uint64_t qcow2_image_cluster_bytes(const struct qcow2_image *img);
uint32_t qcow2_image_snapshot_count(const struct qcow2_image *img);
const struct qcow2_snapshot *qcow2_image_snapshot(const struct qcow2_image *img, uint32_t idx);
/* Index of the snapshot whose id or name is @id_or_name (id first), or -ENOENT. */
int qcow2_image_find_snapshot(const struct qcow2_image *img, const char *id_or_name);
/* Count the clusters whose refcount is non-zero (a full refcount-table walk). */
int qcow2_image_used_clusters(struct qcow2_image *img, uint64_t *clusters);
/* Refcount of host cluster @cluster_idx. */
int qcow2_image_refcount(struct qcow2_image *img, uint64_t cluster_idx, uint64_t *refcount);

/* ---- consistency (integrity/check.c, repair.c, verify.c) ---- */

/* What `qemu-img check --output=json` reports, with the same meaning (qemu-img's field names in
 * the comments). */
struct qcow2_check_result {
	uint64_t corruptions; /* "corruptions": refcounts lower than what points at them, pointers
			       * past the end of the file or misaligned, COPIED flags that disagree
			       * with refcount == 1, ... (one per problem, as QEMU counts them) */
	uint64_t leaks;	      /* "leaks": clusters whose refcount is higher than what points at
			       * them */
	uint64_t clusters;    /* clusters of the file */
	uint64_t refcount_errors;     /* the part of @corruptions that is refcounts lower than
				       * what points at them: the one kind a crash must never leave
				       * (a COPIED flag missing after a crash is safe, as in QEMU) */
	uint64_t check_errors;	      /* "check-errors": refcounts that cannot be read (their
				       * refcount block is misaligned or at an offset QEMU cannot
				       * read), one per cluster as QEMU counts them; other read
				       * failures fail the check instead */
	uint64_t corruptions_fixed;   /* "corruptions-fixed" (qcow2_image_repair()) */
	uint64_t leaks_fixed;	      /* "leaks-fixed" (qcow2_image_repair()) */
	uint64_t total_clusters;      /* "total-clusters": clusters of the virtual disk */
	uint64_t allocated_clusters;  /* "allocated-clusters": of the active state */
	uint64_t fragmented_clusters; /* "fragmented-clusters" */
	uint64_t compressed_clusters; /* "compressed-clusters" */
	uint64_t image_end_offset;    /* "image-end-offset": end of the last cluster in use */
	bool dirty, corrupt;	      /* the header's dirty and corrupt bits when checked */
};

/* The kind of one problem a check or repair reports. */
enum qcow2_check_msg {
	QCOW2_CHECK_CORRUPTION, /* counted in corruptions ("ERROR ...") */
	QCOW2_CHECK_LEAK,	/* counted in leaks ("Leaked cluster ...") */
	QCOW2_CHECK_REPAIR,	/* a repair fixed it, or in a dry run would ("Repairing ...") */
	QCOW2_CHECK_NOTE,	/* more about a problem reported (counted nowhere) */
};

struct qcow2_check_opts {
	const struct qcow2_job *job; /* progress and cancellation; may be NULL */
	/* Each problem as one line phrased as qemu-img check phrases it ("ERROR cluster 5
	 * refcount=1 reference=2", "Leaked cluster 9 refcount=1 reference=0"); may be NULL. */
	void (*message)(void *ctx, enum qcow2_check_msg kind, const char *text);
	void *ctx;
};

/* Recount what points at every cluster (header, L1/L2 tables of the active state and every
 * snapshot, data, refcount structures, snapshot table, bitmaps, crypto header) and compare with
 * the refcounts, as `qemu-img check` does. */
int qcow2_image_check(struct qcow2_image *img, struct qcow2_check_result *res);
/* The same, reporting each problem through @o (may be NULL). A cancelled job: -ECANCELED. */
int qcow2_image_check_report(struct qcow2_image *img, const struct qcow2_check_opts *o,
			     struct qcow2_check_result *res);

/* Check @img (reporting as qcow2_image_check_report()) and fix what `qemu-img check -r all`
 * fixes, plus what it cannot: a broken refcount structure (entries with reserved bits,
 * misaligned, outside the image, or aliasing other metadata) rebuilt in clusters nothing uses
 * and switched to with one header write, refcounts set to what points at each cluster, COPIED
 * flags set from them, active L2 entries that are misaligned or point past the end of the file
 * made zero clusters (they read as nothing QEMU could read), active data clusters that lie in
 * metadata moved to a cluster of their own; then the dirty bit is cleared, and the corrupt bit
 * if nothing unfixable remains. @res gets the counts found before the repair and the fixes
 * made (corruptions_fixed, leaks_fixed); check again for the state after.
 * Never worse: the result, checked afresh from disk, is kept only if it has no error, or fewer
 * errors (corruptions + leaks + check errors) and no more corruptions and check errors than
 * @res; otherwise every byte written is put back and the file truncated to its old length:
 * -ENOTRECOVERABLE, "repair would not improve the image: REASON; nothing changed". A failure
 * or cancellation part way is put back the same way (its error, "; nothing changed").
 * Crash-safe: a kill at any point leaves no more errors than found, save the leaks or check
 * errors rebuild.c describes, never more corruptions (repair.c, rebuild.c).
 * @dry_run (the image may be read-only): report the fixes only. @img: from
 * qcow2_image_open_path() with @o->repair, or any image with @dry_run. */
int qcow2_image_repair(struct qcow2_image *img, const struct qcow2_check_opts *o, bool dry_run,
		       struct qcow2_check_result *res);
/* `qemu-img check -r leaks`: only leaked clusters are freed (refcounts lowered to what points
 * at them) and the COPIED flags that count-down leaves missing set; refused (-EUCLEAN, the
 * image untouched) when it has other errors, which need qcow2_image_repair(). @res as there.
 * @img: from qcow2_image_open_path() with @o->repair, or any image with @dry_run. */
int qcow2_image_repair_leaks(struct qcow2_image *img, bool dry_run, struct qcow2_check_result *res);

/* ---- mapping (map.c) ---- */

enum qcow2_extent_kind {
	QCOW2_EXTENT_UNALLOCATED, /* this layer has nothing: look below (in a chain: a hole) */
	QCOW2_EXTENT_ZERO,	  /* reads as zeros, decided by this layer */
	QCOW2_EXTENT_DATA,	  /* data at @host_off in @io, contiguous for @len bytes */
	QCOW2_EXTENT_COMPRESSED,  /* a compressed cluster: read through qcow2_chain_pread() */
};

struct qcow2_extent {
	enum qcow2_extent_kind kind;
	uint64_t guest_off;
	uint64_t len;
	uint64_t host_off;   /* DATA: offset in @io; COMPRESSED: offset of the compressed data;
				* ZERO, UNALLOCATED (qcow2_image_map() only): where the range's host
				* clusters are if it has some (preallocated zeros, unallocated
				* subclusters of an allocated cluster), contiguous over @len, else 0 */
	uint64_t comp_bytes; /* COMPRESSED: bytes of compressed data at @host_off */
	struct qcow2_io *io; /* DATA, COMPRESSED: where the bytes are */
	int layer;	     /* chain: index of the providing layer (0 = top), -1 for a hole */
};

/* Map @guest_off of @img through the L1 table @l1 (NULL: the active one; or the table of a
 * snapshot, see qcow2_image_snapshot_l1()) for at most @max bytes. @e covers the longest run
 * of one kind (and contiguous host offsets for DATA) starting at @guest_off, not crossing an L2
 * table. Returns 0 or -errno (-EUCLEAN for a corrupt entry). */
struct qcow2_l1;
int qcow2_image_map(struct qcow2_image *img, const struct qcow2_l1 *l1, uint64_t guest_off,
		    uint64_t max, struct qcow2_extent *e);
/* The L1 table of snapshot @idx (loaded on first use, owned by the image). */
int qcow2_image_snapshot_l1(struct qcow2_image *img, uint32_t idx, const struct qcow2_l1 **l1);
/* Read the compressed cluster described by @e in full and copy @len bytes from @skip of the
 * decompressed cluster to @buf. */
int qcow2_image_read_compressed(struct qcow2_image *img, const struct qcow2_extent *e,
				uint64_t skip, void *buf, size_t len);

/* ---- chains (chain/chain.c; reading: chain-read.c) ---- */

struct qcow2_chain;

/* Directories a path must never be resolved through, other than one fixed directory: @fn says
 * whether the canonical @path is at or below one of them (the daemon passes the FUSE mounts
 * found below its sources: another daemon that may hang, or its own mount bound elsewhere). It
 * is called from any thread, before the lookup it guards. @fn NULL: none. */
struct qcow2_path_avoid {
	bool (*fn)(void *ctx, const char *path);
	void *ctx;
};

/* The passphrases of encrypted images (`--key IMAGE=KEYFILE`): @find gives the key of the image
 * at the canonical @path, 1 with *@key set (the caller's, valid while the image is open), 0
 * when none was given, or a negative errno. Called from the thread that opens. An encrypted
 * image opened without a key serves its metadata only: reading or writing its data fails
 * ("IMAGE: encrypted, no key given (--key IMAGE=KEYFILE)"); a key that opens no key slot fails
 * the open (-EKEYREJECTED, "wrong key for IMAGE"). Legacy AES images are read-only (-EROFS). */
struct qcow2_key;
struct qcow2_keys {
	int (*find)(void *ctx, const char *path, const struct qcow2_key **key);
	void *ctx;
};

struct qcow2_chain_opts {
	/* Every file of the chain (the top image, backing and data files) must resolve below
	 * @root (NULL: anywhere) or below one of @allow_dirs (--backing-dir). Symlinks are
	 * resolved before the check. */
	const char *root;
	const char *const *allow_dirs;
	size_t n_allow_dirs;
	/* Canonical; no path is resolved through it (the daemon's own mount point), NULL: none. */
	const char *mount_point;
	/* More directories no path is resolved through (qcow2_path_resolve_avoiding()). */
	struct qcow2_path_avoid avoid;
	/* The top image may be a block device (qcowctl, for an image the operator named); other
	 * files of the chain are always regular files. */
	bool top_blockdev;
	unsigned max_depth;   /* 0: QCOW2_DEFAULT_MAX_DEPTH */
	bool lock;	      /* take QEMU-compatible locks on every file */
	const char *snapshot; /* NULL: the active state; else id or name of a snapshot of the top */
	size_t l2_cache_bytes;
	/* Open the top image for writing (not with @snapshot). It is locked as a reader until
	 * qcow2_chain_lock_write() takes QEMU's write permission. */
	bool writable;
	/* A snapshot view: let others hold write permission on the top image (a writer never
	 * changes clusters a snapshot still uses in place: it copies them first). */
	bool share_write;
	/* qcow2_image_open_path() only: open the image for qcow2_image_repair() (see there). */
	bool repair;
	/* The keys of encrypted images, every layer's by its own path (see struct qcow2_keys). */
	struct qcow2_keys keys;
};

/* Open the chain whose top image is @path (qcow2, or raw if it is not qcow2 and @allow_raw_top).
 * Backing paths resolve relative to the directory of the image that names them. Every file,
 * the top too, must lie below @root or an allowed directory, is reached without a lookup
 * through @mount_point, and is a regular file. Refused with a
 * message naming the file and the cause: loops (-ELOOP), depth over max (-ELOOP), a path that
 * leaves @root (-EPERM), a FIFO, device or directory (-EINVAL, -EISDIR), a file held for
 * writing by another process (-EBUSY), any image error. */
int qcow2_chain_open(const char *path, const struct qcow2_chain_opts *o, struct qcow2_chain **out);
void qcow2_chain_close(struct qcow2_chain *c);
uint64_t qcow2_chain_size(const struct qcow2_chain *c);
/* The guest's disk size of an image whose header says @header_bytes: QEMU counts whole 512-byte
 * sectors (total_sectors = size / 512), so an odd size is cut down to a sector, and the guest
 * (and qemu-img convert) never sees the tail. */
static inline uint64_t qcow2_guest_bytes(uint64_t header_bytes)
{
	return header_bytes & ~(uint64_t)511;
}
unsigned qcow2_chain_depth(const struct qcow2_chain *c);

struct qcow2_layer_info {
	const char *path;	   /* as resolved (absolute) */
	const char *format;	   /* "qcow2" or "raw" */
	uint64_t size;		   /* the layer's virtual size (at the snapshot, for the top) */
	struct qcow2_image *image; /* NULL for raw */
	struct qcow2_io *io;	   /* the layer's file (its locks are taken on it) */
};
int qcow2_chain_layer(const struct qcow2_chain *c, unsigned idx, struct qcow2_layer_info *out);
/* Is the chain's top the file at the canonical @path? Safe while a live job changes the layers
 * (which qcow2_chain_layer()'s answer is not). */
bool qcow2_chain_top_is(struct qcow2_chain *c, const char *path);
/* Keep the layers as they are (a live job's change waits) while qcow2_chain_depth() and
 * qcow2_chain_layer() are asked and their answers used; no other call on the chain (and no
 * wait on one) in between. */
void qcow2_chain_layers_hold(struct qcow2_chain *c);
void qcow2_chain_layers_release(struct qcow2_chain *c);
/* The path of the chain's top now, into @out (@cap bytes), as qcow2_chain_top_is(). */
void qcow2_chain_top_path(struct qcow2_chain *c, char *out, size_t cap);

/* Read @n bytes at @off of the flat view. @off + @n must not exceed the size. 0 or -errno. */
int qcow2_chain_pread(struct qcow2_chain *c, void *buf, size_t n, uint64_t off);
/* Where the data at @off comes from: @e->kind is DATA (from @e->layer, @e->io at @e->host_off),
 * COMPRESSED, ZERO (a layer says zeros), or UNALLOCATED (no layer has data: a hole). */
int qcow2_chain_map(struct qcow2_chain *c, uint64_t off, uint64_t max, struct qcow2_extent *e);
/* One piece of a flat read (qcow2_chain_read_pieces()): @len bytes that are the bytes at @fd_off
 * of the open file @fd when @fd >= 0, else the bytes at @mem (zeros, or data the library decoded:
 * compressed, encrypted, a snapshot view's). */
struct qcow2_read_piece {
	int fd;
	uint64_t fd_off;
	const void *mem;
	size_t len;
};
/* Read @n bytes at @off of the flat view (@off + @n within the size) without copying plain data:
 * the range is resolved into pieces in order, plain data (an unencrypted, uncompressed run of
 * one file) as a file range, and @deliver(@ctx, pieces, count) is called with them while the
 * view's read lock is held, so a file range stays the view's data until @deliver returns (it
 * must send or copy them then: the fds and memory are valid only during the call). Returns
 * @deliver's result, or -errno before calling it (a failed map or read: nothing delivered). */
typedef int (*qcow2_read_deliver)(void *ctx, const struct qcow2_read_piece *pieces, unsigned count);
int qcow2_chain_read_pieces(struct qcow2_chain *c, size_t n, uint64_t off,
			    qcow2_read_deliver deliver, void *ctx);
/* SEEK_DATA / SEEK_HOLE semantics of lseek(2) over the flat view: zero clusters and unallocated
 * ranges are holes. -ENXIO past the end (SEEK_DATA with no data after @off). */
int qcow2_chain_seek(struct qcow2_chain *c, uint64_t off, int whence, uint64_t *result);
/* Sum of host-allocated bytes of every file of the chain (for st_blocks). */
int qcow2_chain_allocated_bytes(struct qcow2_chain *c, uint64_t *bytes);

/* ---- writing (chain/chain-write.c, engine/write.c) ----
 * Writes go to the top image only, copy-on-write from the layers below. Every function is
 * safe from many threads at once with reads and with each other, except
 * qcow2_chain_grow(), which waits for them. -EROFS when the top is not writable. */
bool qcow2_chain_writable(const struct qcow2_chain *c);
/* Take (@on) or give back QEMU's write and resize permissions on the top image: while held,
 * QEMU cannot open it at all unless it shares writing (-EBUSY naming the holder if someone
 * else holds them). Giving them back writes everything back first. */
int qcow2_chain_lock_write(struct qcow2_chain *c, bool on);
/* Write @n bytes at @off of the flat view (-EFBIG past the end). */
int qcow2_chain_pwrite(struct qcow2_chain *c, const void *buf, size_t n, uint64_t off);
#define QCOW2_ZERO_ALLOCATE 0x1u /* preallocate instead: allocate, keep the content */
#define QCOW2_ZERO_UNMAP    0x2u /* unallocate whole units instead: the layers below show */
/* Make [@off, @off + @n) read as zeros without writing data where the format allows, freeing
 * the clusters it used (a discard and a zeroing are the same here: no backing data shows
 * through either), or with QCOW2_ZERO_ALLOCATE allocate it in the top image keeping what it
 * shows. */
int qcow2_chain_zero(struct qcow2_chain *c, uint64_t off, uint64_t n, unsigned flags);
/* Write the top's cluster at @off (cluster-aligned) from the whole cluster in @buf,
 * compressed with the image's compression type where that saves space. */
int qcow2_chain_write_compressed(struct qcow2_chain *c, const void *buf, uint64_t off);
/* Its two halves, so that clusters can be compressed on several threads and stored in order:
 * compress the whole cluster @buf into @out (a cluster's bytes) with the top's compression
 * type, taking no lock (any thread); returns the length, 0 when not worth it, or -errno. */
ssize_t qcow2_chain_compress(struct qcow2_chain *c, const void *buf, void *out);
/* Then store it: @comp (@len bytes; 0: @buf written plain) as the top's cluster at @off. */
int qcow2_chain_write_precompressed(struct qcow2_chain *c, const void *buf, const void *comp,
				    size_t len, uint64_t off);
/* Have refcounts changed since the last flush (new clusters whose pointers are not on disk
 * yet, which a crash would leak)? */
bool qcow2_chain_allocated_since_flush(struct qcow2_chain *c);
/* Make every acknowledged write durable (crash-safe write order, then fdatasync). */
int qcow2_chain_flush(struct qcow2_chain *c);
/* Grow the virtual size to @new_size (-EINVAL if smaller); the new range reads as zeros, even
 * where a longer backing file has data (as QEMU grows an image). */
int qcow2_chain_grow(struct qcow2_chain *c, uint64_t new_size);
/* Shrink the virtual size to @new_size (qemu-img resize --shrink): what lies past it is
 * deleted (the clusters unmapped, the rest of the last one zeroed, so a later grow reads
 * zeros), then the header takes the new size. Refused (-ENOTSUP) for a version 2 image with
 * internal snapshots (as QEMU) and an image with persistent bitmaps. Snapshots keep their own
 * size and content. */
int qcow2_chain_shrink(struct qcow2_chain *c, uint64_t new_size);

/* ---- paths (path.c) ---- */

/* Is the canonical @path equal to or below the canonical directory @dir? */
bool qcow2_path_below(const char *path, const char *dir);
/* realpath(3) of @path into @out (@cap bytes), resolved one component at a time: a path that
 * is or passes through @avoid (a canonical directory; NULL or "": none), directly or by a
 * symlink, is refused (-EPERM) before anything under @avoid is looked up (the daemon passes its
 * own mount point: a lookup there would wait on the daemon). Returns 0, -EPERM, -ENOENT,
 * -ELOOP, -ENOTDIR, -ENAMETOOLONG... with a message naming @path. */
int qcow2_path_resolve(const char *path, const char *avoid, char *out, size_t cap);
/* The same, also refusing (-EPERM) every path that @more (NULL: none) says to avoid. */
int qcow2_path_resolve_avoiding(const char *path, const char *avoid,
				const struct qcow2_path_avoid *more, char *out, size_t cap);
/* open(2) of the canonical @path (from qcow2_path_resolve()) following no symlink anywhere in
 * it (openat2 RESOLVE_NO_SYMLINKS; where the kernel lacks openat2, O_NOFOLLOW and the path the
 * descriptor has read back from /proc): a symlink put in its way since it was resolved fails it
 * with -ELOOP instead of leading elsewhere, such as into the daemon's own mount or to a file the
 * caller could not reach. O_NOFOLLOW and O_CLOEXEC are added. Returns the descriptor or -errno
 * (no message). */
int qcow2_path_open_canonical(const char *path, int flags);
/* stat(2) of the canonical @path the same way (not following a symlink anywhere; a symlink at
 * the end is -ELOOP too). 0 or -errno (no message), errno set as stat(2) sets it. */
int qcow2_path_stat(const char *path, struct stat *st);

/* ---- FUSE mounts to avoid (mounts.c) ---- */

/* The FUSE mount points below the sources, never looked into (their daemon may hang, or be
 * the caller's own). */
struct qcow2_mounts;
/* @sources: the directories the caller works in (FUSE mounts at or above them are theirs, and
 * looked into). 0 or -ENOMEM. */
int qcow2_mounts_new(const char *const *sources, size_t n, struct qcow2_mounts **out);
/* Is the canonical @path at or below a FUSE mount point to avoid? (@ctx: the qcow2_mounts, as
 * struct qcow2_path_avoid takes it.) Any thread. */
bool qcow2_mounts_avoid(void *ctx, const char *path);
/* How many times the mount table was seen to change (a mount, an unmount, a remount read-only):
 * a caller's memo of what a lookup or access(2) found holds while this stays the same. Returns
 * false when changes cannot be seen (no /proc/self/mountinfo): keep no memo then. Any thread. */
bool qcow2_mounts_generation(struct qcow2_mounts *m, uint64_t *gen);
void qcow2_mounts_free(struct qcow2_mounts *m);

/* Resolve the top image @path of a chain (qcow2_path_resolve() avoiding @o->mount_point) into
 * @out and confine it like a backing file: below @o->root or an allowed directory. Returns 0,
 * -EPERM (outside, or through the mount point), -ENOENT... */
int qcow2_chain_resolve_top(const struct qcow2_chain_opts *o, const char *path, char *out,
			    size_t cap);

/* Resolve the backing name @name stored in the image at @image_path: relative names from the
 * image's directory. Writes an absolute, symlink-free path to @out (@cap bytes) and checks it
 * against @o's root and allow_dirs. Returns 0, -EPERM (outside), -ENOENT, -ENAMETOOLONG. */
int qcow2_chain_resolve_path(const struct qcow2_chain_opts *o, const char *image_path,
			     const char *name, char *out, size_t cap);

/* ---- changing images and chains (engine/backing.c, jobs/copy.c) ---- */

/* Rewrite the backing file pointer of @img (open writable): @name stored as given (NULL or
 * "": none) with the backing format extension @fmt (NULL or "": none). The whole header
 * cluster is written at once and made durable, so the file names either the old or the new
 * backing file. */
int qcow2_image_set_backing(struct qcow2_image *img, const char *name, const char *fmt);

/*
 * The engine of commit, pull, rebase and copy: make @dst show what @src shows over every range
 * that layers [@first, @limit) of @src provide (data, compressed or zeros), and also, where
 * @under is given, over the ranges where @src shows a hole. @under is what @dst shows below
 * those ranges once the operation is complete (NULL: zeros). Ranges where @under already shows
 * the same are left alone: zeros when @under has no data there, and with @compare, any data
 * equal to @src's. Work is proportional to what the layers in range have allocated.
 *
 * It plans first (every range, from @src's metadata only), then copies: @src is read only
 * through layers [@first, @limit) and @under through its own chain, so @dst may be a layer
 * below @limit that another object writes (commit).
 */
struct qcow2_copy_opts {
	unsigned first, limit;	   /* layers of @src whose ranges are copied */
	struct qcow2_chain *dst;   /* writes go to its top (may be @src itself) */
	struct qcow2_io *dst_raw;  /* or to a raw file (@dst NULL) */
	struct qcow2_chain *under; /* see above; may be @dst */
	bool under_is_tail;	   /* @under shows @src's layers from @limit on (holes can only
				    * differ where a layer above @limit ends early) */
	bool compare;		   /* write only what differs from @under */
	bool compress;		   /* write compressed clusters (@dst qcow2, whole clusters) */
	bool dry_run;		   /* plan only */
	bool scratch;		   /* @dst is thrown away unless the copy completes: no flushes
				    * on the way (they bound what a kill leaks into a kept image) */
	uint64_t min_sparse;	   /* zero runs in data shorter than this are written (0: one
				    * cluster of @dst) */
	bool no_sparse;		   /* write every range of [0, size), zeros and holes as data */
	unsigned threads;	   /* @compress: threads compressing (0: one per CPU, up to 4) */
	/* the source's layers are emptied or dropped afterwards (an active commit): the data
	 * read is dropped from the page cache as the copy goes (see copy.c) */
	bool drop_read;
};
struct qcow2_copy_stats {
	uint64_t planned_bytes; /* bytes of data in the ranges to copy */
	uint64_t planned_zero;	/* bytes of zeros and holes to check */
	uint64_t written_bytes; /* data written */
	uint64_t zeroed_bytes;	/* ranges zeroed */
};
int qcow2_chain_copy(struct qcow2_chain *src, const struct qcow2_copy_opts *o,
		     const struct qcow2_job *job, struct qcow2_copy_stats *st);
/* Make [@off, @off + @n) of @o's destination read as zeros where @o->under shows data. */
int qcow2_copy_zero(const struct qcow2_copy_opts *o, uint64_t off, uint64_t n,
		    struct qcow2_copy_stats *st);

/* ---- directories (scan.c) ----
 * What a directory tree holds: every qcow2 image under it and the raw files its images use as
 * backing, with each image's backing file resolved. Headers only: no image is opened, no lock
 * is taken, and one unreadable or malformed file never fails the scan (its @err says why). */
struct qcow2_dir_image {
	char *path;    /* absolute, symlinks resolved */
	char *backing; /* its backing file resolved to an absolute path (qcow2_chain_resolve_path
			* with no root), NULL if none; if it cannot be resolved (@backing_err),
			* the stored name joined to the image's directory */
	char *backing_fmt; /* the backing format extension, NULL when absent */
	bool qcow2;	   /* false: a raw file that some image uses as backing, or a file that
			    * could not be opened to probe (@err set) */
	int err;	   /* 0, or why it could not be read (-errno; its message is not kept) */
	uint32_t nb_snapshots;
	int backing_err; /* 0, or why @backing could not be resolved (-ENOENT: missing) */
};

/* Scan @dir recursively (following symlinks to directories, each directory once, so symlink
 * loops end; sockets, fifos and devices skipped; a file reached by several names listed once).
 * Every regular file is probed by its magic; qcow2 files get their header read; other files
 * are kept only if some image names them as backing (or if they could not be opened). *@out
 * (sorted by path, NULL when empty) is the caller's, freed with qcow2_dir_images_free().
 * Returns 0, or -errno if @dir itself cannot be read (or -ENOMEM). */
int qcow2_dir_scan(const char *dir, struct qcow2_dir_image **out, size_t *n);
void qcow2_dir_images_free(struct qcow2_dir_image *v, size_t n);
/* The images of @v whose backing file is @path (resolved with realpath() first, as is if it
 * cannot be): returns their count and stores the first @cap of their indexes in @idx (may be
 * NULL with @cap 0). Images whose header could not be read (@err) are not counted: their
 * backing is unknown, so a caller that must be sure checks for them itself. */
size_t qcow2_dir_users_of(const struct qcow2_dir_image *v, size_t n, const char *path, size_t *idx,
			  size_t cap);

/* ---- block jobs (commit.c): commit, pull, rebase ----
 * Each job plans first and reports the plan as steps (what --dry-run prints), then carries it
 * out in an order that keeps every chain's flat view valid at every instant: data is copied
 * (and made durable) before any pointer moves, a pointer moves (one header write) before
 * anything is emptied or deleted. Killed at any point, running the same job again completes
 * it. Images that change are locked as QEMU's writer for the whole job (-EBUSY naming the
 * holder); every other layer as a reader. */
enum qcow2_step_kind {
	QCOW2_STEP_GROW,    /* @image grows to @bytes */
	QCOW2_STEP_COPY,    /* @bytes of data copied into @image (at most: equal data is skipped) */
	QCOW2_STEP_REPOINT, /* @image's backing file becomes @detail ("": none) */
	QCOW2_STEP_EMPTY,   /* @image is emptied: what it held now lies below it */
	QCOW2_STEP_UNUSED,  /* @image is no longer part of the chain */
	QCOW2_STEP_DELETE,  /* @image is deleted */
	QCOW2_STEP_CREATE,  /* @image is created, in format @detail */
	/* the ranges copied into @image are marked dirty in its enabled persistent bitmaps,
	 * @detail (names, comma-separated), as QEMU's writes mark them */
	QCOW2_STEP_BITMAPS,
};
struct qcow2_step {
	enum qcow2_step_kind kind;
	char *image;
	char *detail;
	uint64_t bytes;
};
struct qcow2_plan {
	struct qcow2_step *v;
	size_t n, cap;
};
void qcow2_plan_release(struct qcow2_plan *p);
/* "copy", "repoint", ...: the step's name in JSON and text. */
const char *qcow2_step_name(enum qcow2_step_kind k);

struct qcow2_commit_opts {
	const char *top;  /* NULL: the image itself (active commit) */
	const char *base; /* NULL: the top's backing file */
	bool drop;	  /* delete the merged layers afterwards */
	bool keep_top;	  /* active commit: leave the image as it is, not emptied (qemu-img
			   * commit -d): its own clusters hide the same data in base */
	bool force;	  /* commit even if other images use the base (or a merged layer) */
	bool dry_run;
};
/* Merge layers (base, top] of @image's chain into base. Active commit then empties @image
 * (re-pointed to base first); intermediate commit re-points the layer above top to base.
 * Refused (-EBUSY) without @force when other images found in the directories of @image and
 * base use base or a layer whose view would change; the message names them. */
int qcow2_commit(const char *image, const struct qcow2_commit_opts *o, const struct qcow2_job *job,
		 struct qcow2_plan *plan);

/* Copy into @image every range the layers above @base provide, then back it onto @base (NULL:
 * it stands alone). */
int qcow2_pull(const char *image, const char *base, bool dry_run, const struct qcow2_job *job,
	       struct qcow2_plan *plan);

/* Change @image's backing file to @backing (stored as given, resolved from the image's
 * directory; "" none) with format @fmt (NULL: probed). Unless @unsafe, the flat view is kept:
 * ranges where the old and new backing differ are copied into @image first. */
int qcow2_rebase(const char *image, const char *backing, const char *fmt, bool unsafe, bool dry_run,
		 const struct qcow2_job *job, struct qcow2_plan *plan);

struct qcow2_convert_opts {
	bool shallow; /* the top layer only; the copy backs onto the source's backing file */
	bool raw;     /* a sparse raw file instead of qcow2 */
	bool
	    compress; /* compressed clusters (whole clusters, the destination's compression type) */
	bool dry_run;
	/* The new qcow2 image's options (NULL: qemu-img create's defaults). The source's cluster
	 * size, compat level and extended_l2 are kept unless @create->set says they were asked
	 * for (or an asked option needs compat=1.1, or a cluster size below 16 KiB rules
	 * extended_l2 out). */
	const struct qcow2_create_opts *create;
	/* qemu-img convert -B/-F: the new image backs onto @backing (stored as given, resolved
	 * from @dest's directory) of format @backing_fmt (NULL: probed), and holds only what
	 * differs from @backing's view. */
	const char *backing, *backing_fmt;
	/* -S: zero runs shorter than @min_sparse bytes inside data are written (0: one cluster of
	 * the destination; qemu-img's default is 4 KiB); @no_sparse (-S 0): everything is
	 * written, holes and zeros included: the destination is fully allocated. */
	uint64_t min_sparse;
	bool no_sparse;
	/* -n: @dest exists (a qcow2 image at least as large as the source) and is written in
	 * place: afterwards its first bytes show the source's view, the rest is kept. */
	bool existing;
	const char *snapshot; /* the source's internal snapshot to copy (NULL: its active state) */
	unsigned threads;     /* -m: threads compressing with @compress (0: one per CPU, up to 4) */
};
/* Copy the flat view of @src's chain (or its top layer) into a new image @dest: built under a
 * hidden name next to it, made durable, then renamed to @dest (with @existing: written in
 * place). */
int qcow2_convert(const char *src, const char *dest, const struct qcow2_convert_opts *o,
		  const struct qcow2_job *job, struct qcow2_plan *plan);

/* An external snapshot: create @overlay (refused if it exists) backing onto @image, which is
 * locked as a reader meanwhile (refused while another process writes it). The backing name
 * is stored relative when both files live in one directory. From then on @overlay is the
 * active image and @image a read-only backing file. */
int qcow2_snapshot_external(const char *image, const char *overlay, bool dry_run,
			    struct qcow2_plan *plan);

/* External snapshot revert (external.c): @image becomes a fresh empty overlay on @snap (a
 * file of its chain below it), under the same name. The state left is kept as a branch,
 * IMAGE.branch-N (the first free N), its name into @branch (@cap bytes), or deleted with
 * @discard. Refused while another process writes @image, or while any image in its directory
 * tree uses it as backing file (their view would change). */
int qcow2_snapshot_revert_external(const char *image, const char *snap, bool discard, bool dry_run,
				   const struct qcow2_job *job, struct qcow2_plan *plan,
				   char *branch, size_t cap);
/* What an external snapshot delete chose and copied. */
struct qcow2_external_delete {
	bool into_parent; /* committed into SNAP's parent; else pulled into its children */
	bool can_commit;  /* the commit way was possible at all */
	bool resumed;	  /* an earlier, stopped run was completed */
	uint64_t pull_bytes, commit_bytes; /* what each way would copy (dry runs) */
	uint64_t bytes;			   /* what the way taken copied (at most) */
};
/* External snapshot delete: remove @snap, a file of @image's chain below it, every view above
 * it unchanged: its data pulled into each image backing onto it (the directory tree of
 * @image searched), or committed into its parent when that copies fewer bytes and nothing
 * else uses the parent. A journal next to @image lets a rerun complete a stopped delete. */
int qcow2_snapshot_delete_external(const char *image, const char *snap, bool dry_run,
				   const struct qcow2_job *job, struct qcow2_plan *plan,
				   struct qcow2_external_delete *res);

/* ---- live jobs on an open chain (jobs/live.c, chain/live.c) ----
 * Jobs on a chain that stays open and in use: reads and writes through it go on meanwhile and
 * see the same view throughout; the layers change between requests. @o is what the chain was
 * opened with (its root, keys, locks). One live job at a time per chain (-EBUSY); the chain's
 * top must be open for writing; encrypted layers are refused (-ENOTSUP). Killed anywhere,
 * every image is valid and the offline job run again completes it; cancelled (@job), the view
 * and the layers are unchanged. After a job, qcow2_chain_depth() and qcow2_chain_layer() tell
 * the new layers. */
/* Live external snapshot: @overlay created (refused if it exists) on the top, then, between
 * requests, the top written back and kept as a read-only backing layer (QEMU's write
 * permission given back), and @overlay the chain's writable top: writes go on into it. */
int qcow2_chain_snapshot_external_live(struct qcow2_chain *c, const char *overlay,
				       const struct qcow2_chain_opts *o, bool dry_run,
				       struct qcow2_plan *plan);
/* Live pull: what the layers above @base (NULL: every backing layer) provide is allocated in
 * the top (never over what the top has), durable; then the top backs onto @base and the
 * layers between leave the chain. */
int qcow2_chain_pull_live(struct qcow2_chain *c, const char *base, const struct qcow2_chain_opts *o,
			  bool dry_run, const struct qcow2_job *job, struct qcow2_plan *plan);
/* Live commit (@co as qcow2_commit(); @co->drop refused): with @co->top a backing layer, an
 * intermediate commit of (base, top] into base, the layer above top re-pointed to base; with
 * @co->top NULL, an active commit with pivot: the top's data merged into base while writes go
 * on (every change tracked and copied again until little is left), then between requests the
 * rest copied, base durable and made the writable top (QEMU's write lock moved to it); the
 * old top and the layers between leave the chain, their files kept. */
int qcow2_chain_commit_live(struct qcow2_chain *c, const struct qcow2_commit_opts *co,
			    const struct qcow2_chain_opts *o, const struct qcow2_job *job,
			    struct qcow2_plan *plan);

/* ---- encryption (format/crypto/) ----
 * LUKS1 headers in the crypto header clusters (crypt_method 2) and legacy AES (crypt_method
 * 1), through OpenSSL. Key material lives in locked memory (qcow2_secure_alloc()), wiped when
 * freed, and is never part of a message. */

/* Memory for key material: mlock()ed where allowed, excluded from core dumps
 * (MADV_DONTDUMP), zeroed. NULL when out of memory. Free with qcow2_secure_free(p, n), which
 * wipes the @n bytes first (p may be NULL). */
void *qcow2_secure_alloc(size_t n);
void qcow2_secure_free(void *p, size_t n);

/* A passphrase: the whole content of a key file, as QEMU's `secret,file=` reads it (no
 * newline stripped), in locked memory. */
struct qcow2_key {
	uint8_t *bytes; /* qcow2_secure_alloc()ed */
	size_t len;
};
#define QCOW2_MAX_KEY_FILE_BYTES (64u << 10)
/* Read the key file @path into @out. -ENOENT/-EACCES/-EISDIR..., -EINVAL for an empty file,
 * -EFBIG over QCOW2_MAX_KEY_FILE_BYTES, each with one line naming the file. */
int qcow2_key_file_read(const char *path, struct qcow2_key *out);
/* Wipe and free @k's bytes (a zeroed or released key: nothing). */
void qcow2_key_release(struct qcow2_key *k);

#define QCOW2_LUKS_NUM_SLOTS 8
struct qcow2_luks_slot {
	bool active;
	uint32_t iterations;
	uint8_t salt[32];
	uint32_t key_offset_sectors; /* key material at key_offset_sectors * 512 in the area */
	uint32_t stripes;
};
/* A LUKS1 header, decoded and checked (qcow2_luks_decode()). */
struct qcow2_luks_info {
	char cipher_name[33]; /* as stored: "aes" */
	char cipher_mode[33]; /* as stored: "xts-plain64", "cbc-essiv:sha256" */
	char hash_spec[33];   /* as stored: "sha256" */
	uint32_t payload_offset_sectors;
	uint32_t key_bytes; /* master key length */
	uint8_t mk_digest[20];
	uint8_t mk_salt[32];
	uint32_t mk_iterations;
	char uuid[41];
	struct qcow2_luks_slot slots[QCOW2_LUKS_NUM_SLOTS];
	/* The same facts as qemu-img info names them */
	char cipher_alg[48];	 /* "aes-256" */
	char mode[33];		 /* "xts", "cbc", "ecb", "ctr" */
	char ivgen_alg[33];	 /* "plain64", "plain", "essiv" */
	char ivgen_hash_alg[33]; /* "sha256" with essiv, else "" */
	char hash_alg[33];	 /* "sha256" */
};
/* Decode and check the LUKS1 header at the start of @buf (@len bytes: the whole crypto header
 * area, against which the key material offsets are checked). Pure. 0, or -EINVAL (not LUKS,
 * a version other than 1), -EUCLEAN (a field out of range) or -ENOTSUP (a cipher, mode or hash
 * QEMU does not write), each with one line. */
int qcow2_luks_decode(const void *buf, size_t len, struct qcow2_luks_info *info);
struct qcow2_header;
/* Read and decode the LUKS header of the image read by @io whose header is @h (crypt_method 2,
 * the crypto header extension). Needs no key. */
int qcow2_luks_read_info(struct qcow2_io *io, const struct qcow2_header *h,
			 struct qcow2_luks_info *info);

/* The options of `-o encrypt.*` (qemu-img's names and defaults: aes-256, xts, plain64, no
 * ivgen hash, sha256, 2000 ms). Strings are not copied. */
struct qcow2_luks_params {
	const char *cipher_alg;	    /* "aes-128", "aes-192", "aes-256" */
	const char *cipher_mode;    /* "xts", "cbc", "ecb" */
	const char *ivgen_alg;	    /* "plain", "plain64", "essiv" */
	const char *ivgen_hash_alg; /* with essiv; NULL: the hash-alg */
	const char *hash_alg; /* "sha1", "sha224", "sha256", "sha384", "sha512", "ripemd160" */
	uint32_t iter_time_ms;
};
void qcow2_luks_params_default(struct qcow2_luks_params *p);
/* Check @p as qemu-img would: 0 or -EINVAL/-ENOTSUP with one line naming the option. */
int qcow2_luks_params_check(const struct qcow2_luks_params *p);

/* An unlocked image key: the sector cipher of an encrypted image. Opaque; thread-safe to use
 * (format/crypto/crypto.h). */
struct qcow2_crypt;
/* Wipe (OPENSSL_cleanse) and free. NULL: nothing. */
void qcow2_crypt_free(struct qcow2_crypt *c);

/* ---- creating images (create.c) ----
 * A new image is written whole to an unnamed (or hidden) file in the target's directory,
 * made durable, and only then given its name (rename(2) over an existing file): an
 * interrupted or failed create leaves nothing new, or the complete image. */

enum qcow2_prealloc {
	QCOW2_PREALLOC_OFF,	 /* nothing: clusters are allocated as they are written */
	QCOW2_PREALLOC_METADATA, /* L2 tables and data clusters allocated (reading zeros, or the
				  * backing file with extended L2), the file sparse */
	QCOW2_PREALLOC_FALLOC,	 /* metadata, and the file's blocks fallocate()d */
	QCOW2_PREALLOC_FULL,	 /* metadata, and zeros written over the data clusters */
};

/* The defaults (qcow2_create_opts_default()) are qemu-img's: 64 KiB clusters, version 3,
 * 16-bit refcounts, no lazy refcounts, no extended L2, no preallocation, no backing file. */
struct qcow2_create_opts {
	uint64_t size;		      /* virtual size in bytes, a multiple of 512 */
	uint32_t cluster_bits;	      /* 9 (512 B) .. 21 (2 MiB) */
	uint32_t version;	      /* 2 (compat 0.10) or 3 (compat 1.1) */
	uint32_t refcount_order;      /* refcount width 2^order bits, 0..6; 4 for version 2 */
	bool lazy_refcounts;	      /* version 3 */
	bool extended_l2;	      /* version 3, clusters of 16 KiB or more */
	enum qcow2_prealloc prealloc; /* with a backing file: only with extended_l2, as QEMU */
	const char *backing_file;     /* NULL/"": none; stored exactly as given (may be relative) */
	const char *backing_fmt;      /* NULL/"": no backing format extension */
	const struct qcow2_job *job;  /* progress and cancellation of preallocation; may be NULL */
	uint8_t compression_type;     /* QCOW2_COMPRESSION_*: zstd needs version 3 */
	unsigned set; /* QCOW2_CREATE_SET_*: the options asked for (convert keeps the source's
		       * cluster size, compat and extended_l2 unless asked) */
	/* encrypt.format=luks: the LUKS parameters and the new image's passphrase (NULL: a
	 * plain image) */
	const struct qcow2_luks_params *luks;
	const struct qcow2_key *luks_key;
};
#define QCOW2_CREATE_SET_CLUSTER_SIZE 0x1u
#define QCOW2_CREATE_SET_COMPAT	      0x2u
#define QCOW2_CREATE_SET_EXTENDED_L2  0x4u
#define QCOW2_CREATE_SET_OTHER	      0x8u /* any other option (refcount_bits, lazy_refcounts...) */
void qcow2_create_opts_default(struct qcow2_create_opts *o);
/* Check the options against each other and the format's limits: 0, or -EINVAL (-EFBIG for a
 * size too large) with a one-line message naming the option and the cause. */
int qcow2_create_opts_check(const struct qcow2_create_opts *o);
/* "off", "metadata", "falloc", "full" */
const char *qcow2_prealloc_name(enum qcow2_prealloc p);

/* Write a new image into @io, which must be empty (a memory io in tests), and open it
 * (writable) in *@out; NULL closes it. Takes ownership of @io (closed on failure too).
 * Layout as qemu-img's: the header cluster, the refcount table, the refcount blocks of the
 * metadata, the L1 table; preallocation then goes through the write path. */
int qcow2_image_create_io(struct qcow2_io *io, const char *name, const struct qcow2_create_opts *o,
			  struct qcow2_image **out);
/* Create the image at @path (replacing a regular file there; a symlink is followed), see
 * above for crash safety. Refused (-EBUSY naming the holder) while another process holds an
 * existing @path for writing; -ECANCELED (nothing created) when @o->job is cancelled. */
int qcow2_image_create(const char *path, const struct qcow2_create_opts *o);
/* What qcow2_image_create() would do to @path: 0 with *@exists telling whether it replaces a
 * file, -EBUSY naming a process that holds it for writing, -EISDIR/-EINVAL for something
 * that is not a regular file. */
int qcow2_create_check_target(const char *path, bool *exists);

struct qcow2_backing_probe {
	char path[4096]; /* the backing file, resolved as QEMU resolves it (absolute) */
	char format[32]; /* "qcow2" or "raw" */
	uint64_t size;	 /* its virtual size */
};
/* Open the backing file @backing named by a new image at @image_path (relative names from
 * @image_path's directory), read-only and locked as a reader, as @fmt ("qcow2", "raw", or
 * NULL/"" to probe) with its whole chain, and tell its format and size. */
int qcow2_create_probe_backing(const char *image_path, const char *backing, const char *fmt,
			       struct qcow2_backing_probe *out);

/* Encode @h as the start of a new image's first cluster into @buf (@cap bytes): the header
 * (72 bytes for version 2, 112 for version 3), the backing format and data file extensions,
 * QEMU's feature name table (version 3, clusters over 4 KiB), the end marker and the backing file
 * name; backing_off/len and header_len are computed, not taken from @h. Pure. Returns the
 * bytes used, -ENOSPC if they do not fit the cluster, -EINVAL or -ENOTSUP. */
int qcow2_header_encode(const struct qcow2_header *h, void *buf, size_t cap);
/* A file io on the open descriptor @fd (owned by the io from now on, closed on failure too);
 * @name names it in messages. */
int qcow2_io_open_fd(int fd, const char *name, struct qcow2_io **out);
/* Preallocate [@off, @off + @n) of a file: fallocate() it, or (@write_zeros) write zeros over
 * its holes. The bytes read the same either way. Nothing for a memory io. */
int qcow2_io_preallocate(struct qcow2_io *io, uint64_t off, uint64_t n, bool write_zeros);

/* ---- measuring (measure.c) ---- */
struct qcow2_measure_opts {
	struct qcow2_create_opts create; /* the destination's options (backing_file, size unused) */
	bool raw;			 /* a raw destination instead of qcow2 */
	bool backing;			 /* the destination has a backing file */
	uint64_t size;			 /* without a source: the virtual size */
	bool force_share;		 /* do not take (or respect) the source's locks */
};
struct qcow2_measure {
	uint64_t required;	  /* bytes the new image needs: metadata and data to copy */
	uint64_t fully_allocated; /* bytes with every cluster allocated */
	bool has_bitmaps;	  /* source and destination both carry persistent bitmaps */
	uint64_t bitmaps;	  /* bytes the source's persistent bitmaps add */
};
/* `qemu-img measure`: the size of a new image with @o's options holding the flat view of the
 * chain of @src (NULL: an empty image of @o->size bytes), as QEMU 7.2 computes it. Reads
 * metadata only. 0 or -errno (-ENOTSUP: a source whose bitmaps would be carried). */
int qcow2_measure(const char *src, const struct qcow2_measure_opts *o, struct qcow2_measure *out);

/* ---- comparing (compare.c) ---- */
struct qcow2_compare_opts {
	bool strict;	  /* sizes and allocation must match too (qemu-img compare -s) */
	bool force_share; /* do not take (or respect) the images' locks */
};
struct qcow2_compare_result {
	bool differ;	       /* the views differ (or, strict, their sizes or allocation) */
	bool size_mismatch;    /* the virtual sizes differ */
	bool status_mismatch;  /* strict: the allocation at @offset differs */
	uint64_t offset;       /* the first byte that differs (not for a strict size mismatch) */
	uint64_t common_bytes; /* the shorter virtual size: where the longer's tail begins */
};
/* `qemu-img compare`: do the chains of @a and @b show the same flat view? Past the shorter one
 * the longer must read zeros (unless @o->strict, where sizes must match). Reads only where
 * the metadata cannot tell: ranges both show as zeros or holes, or as the same cluster of the
 * same file, are not read. 0 (@res says) or -errno; a cancelled @job: -ECANCELED. */
int qcow2_compare(const char *a, const char *b, const struct qcow2_compare_opts *o,
		  const struct qcow2_job *job, struct qcow2_compare_result *res);

/* ---- amending (amend.c) ---- */
struct qcow2_amend_opts {
	uint32_t version;   /* 2 (compat=0.10), 3 (compat=1.1), 0: keep */
	int lazy_refcounts; /* 1 on, 0 off, -1 keep */
	bool dry_run;	    /* check only: change nothing */
};
/* `qemu-img amend -o compat=...,lazy_refcounts=...` on the writable @img (a chain's top): a
 * downgrade is refused where QEMU 7.2 refuses it, and where it would drop persistent bitmaps
 * or a dirty image's refcounts (-ENOTSUP, -EUCLEAN: nothing changed); zero clusters become
 * unallocated first; then one durable write of the header cluster changes the version. */
int qcow2_image_amend(struct qcow2_image *img, const struct qcow2_amend_opts *o);

#endif
