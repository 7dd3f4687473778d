/* SPDX-License-Identifier: MIT */
/*
 * crypto.h - the encryption of qcow2 images, through OpenSSL libcrypto: the LUKS1 header kept
 * in the image's crypto header clusters (decode, encode, key slots, PBKDF2, the anti-forensic
 * splitter, the master key digest), legacy qcow2 AES, the sector ciphers and key material in
 * locked memory. Above ondisk, below image (docs/design.md). What fs/ and tools/ need (key
 * files, the decoded header for `info`, the opaque struct qcow2_crypt) is in qcow2.h.
 *
 * Offsets: qcow2_crypt_decrypt()/encrypt() take the byte offset whose sector number (offset /
 * 512) makes the IV. For LUKS inside qcow2 that is the HOST offset of the data, for legacy
 * AES the GUEST offset (QEMU's block/qcow2.c, crypt_physical_offset):
 * qcow2_crypt_iv_by_host() tells which.
 */
#ifndef QCOW2_CRYPTO_H
#define QCOW2_CRYPTO_H

#include "ondisk/ondisk.h"

/* LUKS1 on-disk layout (cryptsetup's LUKS1 on-disk format, as QEMU's crypto/block-luks.c) */
#define QCOW2_LUKS_PHDR_BYTES	      592 /* the header proper, key slots included */
#define QCOW2_LUKS_DIGEST_BYTES	      20
#define QCOW2_LUKS_SALT_BYTES	      32
#define QCOW2_LUKS_SLOT_ACTIVE	      0x00ac71f3u
#define QCOW2_LUKS_SLOT_INACTIVE      0x0000deadu
#define QCOW2_LUKS_STRIPES	      4000	  /* what QEMU writes */
#define QCOW2_LUKS_MAX_KEY_BYTES      64	  /* aes-256 in xts mode */
#define QCOW2_LUKS_MAX_ITERATIONS     (1u << 31)  /* a bound on hostile iteration counts */
#define QCOW2_LUKS_MAX_UNLOCK_SECONDS 60u	  /* CPU an unlock may spend in PBKDF2 (luks.c) */
#define QCOW2_LUKS_MAX_AREA_BYTES     (16u << 20) /* a bound on the crypto header area read */
#define QCOW2_CRYPT_SECTOR_BYTES      512

/* Read the crypto header area of the LUKS image whose header is @h from @io (bounded by
 * QCOW2_LUKS_MAX_AREA_BYTES and the file), decode its phdr into @info, and hand back the
 * area in locked memory (*@area, *@area_len bytes; release with qcow2_secure_free()), or
 * with @area NULL only decode. -EUCLEAN/-EINVAL/-ENOTSUP with one line naming the cause. */
int qcow2_luks_read(struct qcow2_io *io, const struct qcow2_header *h, struct qcow2_luks_info *info,
		    uint8_t **area, size_t *area_len);

/* Unlock the LUKS header @info (decoded from @area, the whole crypto header area of
 * @area_len bytes: key material is read from it at each slot's offset) with the passphrase
 * @pass of @pass_len bytes: every active slot is tried (PBKDF2 with the recorded hash, the
 * key material decrypted with the payload cipher by 512-byte sectors from 0, AF merged, the
 * candidate master key checked against the digest). 0 with *@out ready for
 * qcow2_crypt_decrypt/encrypt(); -EKEYREJECTED when no slot opens with this passphrase;
 * -ENOTSUP for a cipher OpenSSL does not offer; -EUCLEAN for a malformed slot; -ETIME when
 * the slots' PBKDF2 iterations would take more than QCOW2_LUKS_MAX_UNLOCK_SECONDS of CPU. */
int qcow2_luks_unlock(const struct qcow2_luks_info *info, const uint8_t *area, size_t area_len,
		      const void *pass, size_t pass_len, struct qcow2_crypt **out);

/* Legacy qcow2 AES (crypt_method 1): AES-128-CBC, IV plain64 of the sector number (of the
 * GUEST offset), the key the passphrase's first 16 bytes zero padded, as QEMU's
 * crypto/block-qcow.c. There is no check value: any passphrase opens it. */
int qcow2_aes_legacy_open(const void *pass, size_t pass_len, struct qcow2_crypt **out);

/* The one entry for the image layers: with crypt_method 2 read and unlock the LUKS header of
 * @h in @io, with 1 open legacy AES. Errors as above (-EKEYREJECTED: wrong key). */
int qcow2_crypt_open(struct qcow2_io *io, const struct qcow2_header *h, const void *pass,
		     size_t pass_len, struct qcow2_crypt **out);

/* Decrypt (encrypt) @len bytes of @buf in place, the first sector at byte @offset (sector
 * number offset / 512, the IV). @offset and @len multiples of 512. Thread-safe: no state of
 * @c changes (a cipher context per call); many threads may call it on one @c at once.
 * 0, or -EIO if OpenSSL fails (the buffer is then undefined). */
int qcow2_crypt_decrypt(const struct qcow2_crypt *c, uint64_t offset, void *buf, size_t len);
int qcow2_crypt_encrypt(const struct qcow2_crypt *c, uint64_t offset, void *buf, size_t len);
/* True for LUKS (the IV comes from the host offset), false for legacy AES (guest offset). */
bool qcow2_crypt_iv_by_host(const struct qcow2_crypt *c);
/* True for legacy AES: read only (QEMU no longer creates it; writes are refused). */
bool qcow2_crypt_is_legacy(const struct qcow2_crypt *c);

/* Build a new LUKS header for qcow2_image_create(): random master key and salts
 * (RAND_bytes), slot 0 active with iterations measured from @p->iter_time_ms as QEMU does,
 * the layout QEMU writes. *@area (locked memory, *@area_len bytes: the crypto header
 * extension's length, key material included; the caller rounds the clusters up) and *@crypt
 * for the new image's data. -EINVAL/-ENOTSUP naming a bad parameter. */
int qcow2_luks_build(const struct qcow2_luks_params *p, const void *pass, size_t pass_len,
		     uint8_t **area, size_t *area_len, struct qcow2_crypt **crypt);

/* Internals shared by the files of this layer (and their unit tests). */
/* PBKDF2-HMAC with the hash named @hash ("sha256"...): -ENOTSUP for an unknown hash. */
int qcow2_pbkdf2(const char *hash, const void *pass, size_t pass_len, const uint8_t *salt,
		 size_t salt_len, uint32_t iterations, uint8_t *out, size_t out_len);
/* The anti-forensic splitter of LUKS1 with hash @hash: split @key (@key_bytes) into @stripes
 * stripes in @out (key_bytes * stripes bytes; random stripes from RAND_bytes), and merge
 * them back. */
int qcow2_afsplit(const char *hash, size_t key_bytes, uint32_t stripes, const uint8_t *key,
		  uint8_t *out);
int qcow2_afmerge(const char *hash, size_t key_bytes, uint32_t stripes, const uint8_t *in,
		  uint8_t *key);
/* A sector cipher for the LUKS names @cipher_name, @cipher_mode ("xts-plain64",
 * "cbc-essiv:sha256"...) and a master key of @key_bytes: -ENOTSUP naming what OpenSSL or
 * QEMU lacks. */
int qcow2_crypt_new(const char *cipher_name, const char *cipher_mode, const uint8_t *key,
		    size_t key_bytes, struct qcow2_crypt **out);
/* The cipher of @c over @len bytes of @buf (whole blocks of the cipher; the last sector may be
 * short), sector by sector from sector number @sector; @enc: encrypt, else decrypt. */
int qcow2_crypt_sectors(const struct qcow2_crypt *c, uint64_t sector, uint8_t *buf, size_t len,
			bool enc);
/* The digest length of the hash @hash, or -ENOTSUP. */
int qcow2_crypt_hash_len(const char *hash);
/* Encode @info as a LUKS1 phdr into @buf (QCOW2_LUKS_PHDR_BYTES). Pure. */
void qcow2_luks_encode(const struct qcow2_luks_info *info, uint8_t *buf);

/* memo.c: the unlock results of this process (see there). The tag of a crypto header @area and
 * a passphrase; 0 or a negative errno. */
int qcow2_crypt_memo_tag(const uint8_t *area, size_t area_len, const void *pass, size_t pass_len,
			 uint8_t tag[32]);
/* How many key slots this process has tried to open (each a PBKDF2 run): for tests. */
unsigned long qcow2_luks_slot_tries(void);
/* 1 (the master key copied to @mk), -EKEYREJECTED (no slot opened with it), 0 (not known). */
int qcow2_crypt_memo_find(const uint8_t tag[32], uint8_t *mk, uint32_t key_bytes);
void qcow2_crypt_memo_put(const uint8_t tag[32], int result, const uint8_t *mk, uint32_t key_bytes);

#endif
