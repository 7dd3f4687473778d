/* SPDX-License-Identifier: MIT */
/*
 * crypt.c - the data of an encrypted image: its key unlocked at load (the crypto layer's
 * qcow2_crypt_open()), every data read decrypted, every data write encrypted (the engine's
 * write path calls qcow2_image_encrypt()), and the refusals: no key, a wrong key, writes to a
 * legacy AES image.
 *
 * The IV of a sector is its number, offset / 512, of the HOST offset of the data for LUKS and
 * of the GUEST offset for legacy AES, as QEMU computes it (block/qcow2.c, crypt_physical_offset):
 * a LUKS cluster moved to another host offset (copy-on-write, a job) is decrypted and encrypted
 * again, never copied as it is. Encryption works on whole 512-byte sectors: reads here widen an
 * unaligned range to its sectors; writes are whole sectors (the chain widens a partial one,
 * chain-write.c). Zero and unallocated clusters read as zeros without any decryption;
 * compressed clusters are not encrypted (QEMU neither writes nor decrypts them in an encrypted
 * image).
 *
 * Locks: none. img->crypt is set at load and freed at unload; the cipher functions keep no
 * state (a context per call), so any number of threads read and write through it at once.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "image/image.h"

#define SECTOR QCOW2_CRYPT_SECTOR_BYTES

static int no_key(const char *name)
{
	return qcow2_set_error(-ENOKEY, "'%s': encrypted, no key given (--key IMAGE=KEYFILE)",
			       name);
}

/* Unlock the image's key with @key: 0, -ENOKEY, -EKEYREJECTED (the message says "wrong key for
 * 'NAME'", not prefixed again by the loader), or another error of the crypto header. */
static int unlock(struct qcow2_io *io, const char *name, const struct qcow2_header *h,
		  const struct qcow2_key *key, struct qcow2_crypt **out)
{
	int r;

	*out = NULL;
	if (h->crypt_method == QCOW2_CRYPT_NONE)
		return 0;
	if (!key || !key->bytes)
		return no_key(name);
	r = qcow2_crypt_open(io, h, key->bytes, key->len, out);
	if (r == -EKEYREJECTED)
		return qcow2_set_error(r, "wrong key for '%s'", name);
	return r;
}

int qcow2_image_crypt_load(struct qcow2_image *img, const struct qcow2_key *key)
{
	if (img->h.crypt_method == QCOW2_CRYPT_NONE || !key)
		return 0; /* no key: the metadata only (qcow2_image_data_readable()) */
	return unlock(img->io, img->name, &img->h, key, &img->crypt);
}

int qcow2_image_key_check(struct qcow2_io *io, const char *name, const struct qcow2_header *h,
			  const struct qcow2_key *key)
{
	struct qcow2_crypt *c;
	int r = unlock(io, name, h, key, &c);

	qcow2_crypt_free(c);
	if (r < 0 && r != -EKEYREJECTED) /* ("wrong key for 'NAME'" names it) */
		return qcow2_error_prefix(r, name);
	return r;
}

bool qcow2_image_encrypted(const struct qcow2_image *img)
{
	return img->h.crypt_method != QCOW2_CRYPT_NONE;
}

bool qcow2_image_data_readable(const struct qcow2_image *img)
{
	return !qcow2_image_encrypted(img) || img->crypt;
}

/* The sector offset that makes the IV of data at @host_off (guest @guest_off). */
static uint64_t iv_offset(const struct qcow2_image *img, uint64_t host_off, uint64_t guest_off)
{
	return qcow2_crypt_iv_by_host(img->crypt) ? host_off : guest_off;
}

static int crypt_sectors(struct qcow2_image *img, bool enc, void *buf, size_t n, uint64_t host_off,
			 uint64_t guest_off)
{
	uint64_t off;
	int r;

	if (!qcow2_image_encrypted(img))
		return 0;
	if (!img->crypt)
		return no_key(img->name);
	if ((host_off | guest_off | n) & (SECTOR - 1))
		return qcow2_set_error(-EINVAL,
				       "'%s': encrypted data at %#" PRIx64 " is not whole "
				       "512-byte sectors",
				       img->name, host_off);
	off = iv_offset(img, host_off, guest_off);
	r = enc ? qcow2_crypt_encrypt(img->crypt, off, buf, n)
		: qcow2_crypt_decrypt(img->crypt, off, buf, n);
	if (r < 0) /* never serve ciphertext: the caller fails the read (EIO) */
		return qcow2_set_error(-EIO, "'%s': cannot %s the data at %#" PRIx64, img->name,
				       enc ? "encrypt" : "decrypt", host_off);
	return 0;
}

int qcow2_image_decrypt(struct qcow2_image *img, void *buf, size_t n, uint64_t host_off,
			uint64_t guest_off)
{
	return crypt_sectors(img, false, buf, n, host_off, guest_off);
}

int qcow2_image_encrypt(struct qcow2_image *img, void *buf, size_t n, uint64_t host_off,
			uint64_t guest_off)
{
	return crypt_sectors(img, true, buf, n, host_off, guest_off);
}

int qcow2_image_data_writable(struct qcow2_image *img)
{
	if (!qcow2_image_encrypted(img))
		return 0;
	if (!img->crypt)
		return no_key(img->name);
	if (qcow2_crypt_is_legacy(img->crypt))
		return qcow2_set_error(-EROFS, "'%s': legacy AES encryption: read-only", img->name);
	return 0;
}

/* Read @n bytes of data at @host_off of the data file (zeros past its end). */
static int read_plain(struct qcow2_image *img, uint8_t *p, size_t n, uint64_t host_off)
{
	ssize_t got = qcow2_io_pread(img->data_io, p, n, host_off);

	if (got < 0)
		return (int)got;
	memset(p + got, 0, n - (size_t)got);
	return 0;
}

int qcow2_image_read_data(struct qcow2_image *img, void *buf, size_t n, uint64_t host_off,
			  uint64_t guest_off)
{
	uint64_t skip = host_off & (SECTOR - 1), whole;
	uint8_t *bounce;
	int r;

	if (!qcow2_image_encrypted(img))
		return read_plain(img, buf, n, host_off);
	if (!img->crypt)
		return no_key(img->name);
	if (!skip && !(n & (SECTOR - 1))) { /* whole sectors: decrypted in place */
		r = read_plain(img, buf, n, host_off);
		return r < 0 ? r : qcow2_image_decrypt(img, buf, n, host_off, guest_off);
	}
	/* (guest and host offsets agree below a sector: clusters are whole sectors) */
	whole = (skip + n + SECTOR - 1) & ~(uint64_t)(SECTOR - 1);
	bounce = malloc(whole);
	if (!bounce)
		return qcow2_oom();
	r = read_plain(img, bounce, whole, host_off - skip);
	if (r == 0)
		r = qcow2_image_decrypt(img, bounce, whole, host_off - skip, guest_off - skip);
	if (r == 0)
		memcpy(buf, bounce + skip, n);
	free(bounce);
	return r;
}
