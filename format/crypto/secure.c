/* SPDX-License-Identifier: MIT */
/*
 * secure.c - memory for key material and the reading of key files.
 *
 * Passphrases, master keys, slot keys and the anti-forensic buffers live in pages that are
 * mlock()ed where the process may (so they do not reach swap) and marked MADV_DONTDUMP (so
 * they do not reach a core dump); they are wiped with OPENSSL_cleanse() before they are
 * unmapped. Each allocation is its own mapping, so the marks never touch other memory.
 * No locks: nothing here is shared between calls.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/crypto.h"

static size_t map_bytes(size_t n)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	return (n + page - 1) / page * page;
}

void *qcow2_secure_alloc(size_t n)
{
	size_t len;
	void *p;

	if (n == 0 || n > SIZE_MAX / 2)
		return NULL;
	len = map_bytes(n);
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	/* Both are best effort: RLIMIT_MEMLOCK may refuse the lock (an unprivileged user's
	 * small limit), and the memory is still usable; it then may reach swap. */
	(void)madvise(p, len, MADV_DONTDUMP);
	(void)mlock(p, len);
	return p; /* anonymous mappings are zeroed */
}

void qcow2_secure_free(void *p, size_t n)
{
	size_t len;

	if (!p || n == 0)
		return;
	len = map_bytes(n);
	OPENSSL_cleanse(p, len);
	(void)munlock(p, len);
	munmap(p, len);
}

void qcow2_key_release(struct qcow2_key *k)
{
	if (!k)
		return;
	/* the whole allocation: len + 1 bytes, as qcow2_key_file_read() made it */
	if (k->bytes)
		qcow2_secure_free(k->bytes, k->len + 1);
	k->bytes = NULL;
	k->len = 0;
}

/* Read all of @fd (at most @cap bytes; one more tells it is larger) into @buf. */
static ssize_t read_all(int fd, uint8_t *buf, size_t cap)
{
	size_t got = 0;

	while (got < cap) {
		ssize_t r = read(fd, buf + got, cap - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

int qcow2_key_file_read(const char *path, struct qcow2_key *out)
{
	const size_t cap = QCOW2_MAX_KEY_FILE_BYTES + 1;
	struct stat st;
	uint8_t *buf;
	ssize_t n;
	int fd, r;

	out->bytes = NULL;
	out->len = 0;
	/* O_NONBLOCK: a FIFO or a device must not block us before fstat() refuses it. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return qcow2_set_error(-errno, "cannot read key file '%s': %s", path,
				       strerror(errno));
	if (fstat(fd, &st) < 0) {
		r = qcow2_set_error(-errno, "cannot read key file '%s': %s", path, strerror(errno));
		goto out_close;
	}
	if (!S_ISREG(st.st_mode)) {
		r = qcow2_set_error(S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL,
				    "key file '%s' is not a regular file", path);
		goto out_close;
	}
	buf = qcow2_secure_alloc(cap + 1);
	if (!buf) {
		r = qcow2_oom_for("the key file '%s'", path);
		goto out_close;
	}
	n = read_all(fd, buf, cap);
	if (n < 0) {
		r = qcow2_set_error((int)n, "cannot read key file '%s': %s", path,
				    strerror((int)-n));
		goto out_free;
	}
	if (n == 0) {
		r = qcow2_set_error(-EINVAL, "key file '%s' is empty", path);
		goto out_free;
	}
	if ((size_t)n > QCOW2_MAX_KEY_FILE_BYTES) {
		r = qcow2_set_error(-EFBIG, "key file '%s' is larger than %u bytes", path,
				    QCOW2_MAX_KEY_FILE_BYTES);
		goto out_free;
	}
	close(fd);
	/* keep the allocation's size derivable from len: reallocate to len + 1 bytes */
	out->bytes = qcow2_secure_alloc((size_t)n + 1);
	if (!out->bytes) {
		qcow2_secure_free(buf, cap + 1);
		return qcow2_oom_for("the key file '%s'", path);
	}
	memcpy(out->bytes, buf, (size_t)n);
	out->len = (size_t)n;
	qcow2_secure_free(buf, cap + 1);
	return 0;
out_free:
	qcow2_secure_free(buf, cap + 1);
out_close:
	close(fd);
	return r;
}
