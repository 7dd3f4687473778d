/* SPDX-License-Identifier: MIT */
/*
 * cipher.c - the sector ciphers of encrypted images (struct qcow2_crypt): a cipher and mode of
 * OpenSSL, a key, and the IV generator of LUKS (plain: the sector number's low 32 bits, plain64:
 * all 64, essiv: the sector number encrypted with the hash of the key; none for ecb), applied
 * per 512-byte sector, as QEMU's crypto/block.c does. Also legacy qcow2 AES.
 *
 * Threads: a struct qcow2_crypt never changes after it is made. Each call makes its own
 * EVP_CIPHER_CTX (the key schedule once per call, then only the IV per sector), so any number of
 * threads may encrypt and decrypt with one struct at once. The EVP_CIPHERs are fetched once,
 * when the struct is made (no lookup per call). The struct, key included, lives in locked
 * memory (secure.c) and is wiped when freed.
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <strings.h>

#include "crypto/crypto.h"

enum ivgen { IV_NONE, IV_PLAIN, IV_PLAIN64, IV_ESSIV };

struct qcow2_crypt {
	EVP_CIPHER *cipher;	  /* the payload cipher, fetched once */
	EVP_CIPHER *essiv_cipher; /* essiv: ECB of the cipher whose key is the digest */
	enum ivgen ivgen;
	size_t iv_bytes;    /* 0 for ecb */
	size_t block_bytes; /* the cipher's block: data lengths are multiples of it */
	bool legacy;	    /* qcow2 AES: the IV from the guest offset, read only */
	size_t key_bytes;
	uint8_t key[QCOW2_LUKS_MAX_KEY_BYTES];
	uint8_t essiv_key[EVP_MAX_MD_SIZE];
};

/* The OpenSSL name of a LUKS cipher name and key length ("aes", 32, "xts" -> AES-128-XTS:
 * xts keys are two keys of the cipher). -ENOTSUP for what QEMU does not write. */
static int openssl_name(const char *name, size_t key_bytes, const char *mode, char *out, size_t cap)
{
	size_t bits = key_bytes * 8;

	if (strcmp(mode, "xts") == 0)
		bits /= 2;
	if (strcmp(name, "aes") == 0 && (bits == 128 || bits == 192 || bits == 256))
		snprintf(out, cap, "AES-%zu-%s", bits, mode);
	else if (strcmp(name, "cast5") == 0 && bits == 128)
		snprintf(out, cap, "CAST5-%s", mode);
	else if ((strcmp(name, "twofish") == 0 || strcmp(name, "serpent") == 0) &&
		 (bits == 128 || bits == 192 || bits == 256))
		snprintf(out, cap, "%s-%zu-%s", name, bits, mode);
	else
		return qcow2_set_error(-ENOTSUP, "cipher %s with a %zu-byte key is not supported",
				       name, key_bytes);
	return 0;
}

static EVP_CIPHER *fetch_cipher(const char *name, size_t key_bytes, const char *mode)
{
	char ossl[64];
	EVP_CIPHER *c;

	if (openssl_name(name, key_bytes, mode, ossl, sizeof(ossl)) < 0)
		return NULL;
	c = EVP_CIPHER_fetch(NULL, ossl, NULL);
	if (!c) {
		qcow2_set_error(-ENOTSUP, "cipher %s-%zu in %s mode is not offered by OpenSSL",
				name, (strcmp(mode, "xts") == 0 ? key_bytes / 2 : key_bytes) * 8,
				mode);
		return NULL;
	}
	if ((size_t)EVP_CIPHER_get_key_length(c) != key_bytes) {
		EVP_CIPHER_free(c);
		qcow2_set_error(-ENOTSUP, "cipher %s: OpenSSL's %s has another key length", name,
				ossl);
		return NULL;
	}
	return c;
}

int qcow2_crypt_hash_len(const char *hash)
{
	EVP_MD *md = EVP_MD_fetch(NULL, hash, NULL);
	int n;

	if (!md)
		return qcow2_set_error(-ENOTSUP, "hash %s is not offered by OpenSSL", hash);
	n = EVP_MD_get_size(md);
	EVP_MD_free(md);
	return n;
}

/* essiv: the key is the hash of the master key; the cipher is the payload cipher's when the
 * digest is as long as its key, else AES of the digest's length (as dm-crypt and QEMU). */
static int essiv_setup(struct qcow2_crypt *c, const char *name, const char *hash)
{
	unsigned int dlen = 0;
	EVP_MD *md = EVP_MD_fetch(NULL, hash, NULL);
	size_t payload_key = c->key_bytes;
	int ok;

	if (!md)
		return qcow2_set_error(-ENOTSUP, "hash %s is not offered by OpenSSL", hash);
	ok = EVP_Digest(c->key, c->key_bytes, c->essiv_key, &dlen, md, NULL);
	EVP_MD_free(md);
	if (!ok)
		return qcow2_set_error(-EIO, "essiv: hashing the key with %s failed", hash);
	if (EVP_CIPHER_get_mode(c->cipher) == EVP_CIPH_XTS_MODE)
		payload_key /= 2;
	if (dlen == payload_key)
		c->essiv_cipher = fetch_cipher(name, dlen, "ecb");
	else if (strcmp(name, "aes") == 0 && (dlen == 16 || dlen == 24 || dlen == 32))
		c->essiv_cipher = fetch_cipher("aes", dlen, "ecb");
	else
		return qcow2_set_error(-ENOTSUP, "essiv: no %s cipher with a %u-byte key", name,
				       dlen);
	return c->essiv_cipher ? 0 : -ENOTSUP;
}

int qcow2_crypt_new(const char *cipher_name, const char *cipher_mode, const uint8_t *key,
		    size_t key_bytes, struct qcow2_crypt **out)
{
	char mode[16], ivgen[16], hash[16] = "";
	struct qcow2_crypt *c;
	int r;

	*out = NULL;
	if (sscanf(cipher_mode, "%15[a-z]-%15[a-z0-9]:%15[a-z0-9]", mode, ivgen, hash) < 2)
		return qcow2_set_error(-ENOTSUP, "cipher mode '%s' is not supported", cipher_mode);
	if (key_bytes == 0 || key_bytes > QCOW2_LUKS_MAX_KEY_BYTES)
		return qcow2_set_error(-EUCLEAN, "key length %zu is out of range", key_bytes);
	c = qcow2_secure_alloc(sizeof(*c));
	if (!c)
		return qcow2_oom_for("a cipher");
	c->key_bytes = key_bytes;
	memcpy(c->key, key, key_bytes);
	r = -ENOTSUP;
	if (strcmp(mode, "ecb") && strcmp(mode, "cbc") && strcmp(mode, "xts") &&
	    strcmp(mode, "ctr")) {
		qcow2_set_error(-ENOTSUP, "cipher mode %s is not supported", mode);
		goto fail;
	}
	c->cipher = fetch_cipher(cipher_name, key_bytes, mode);
	if (!c->cipher)
		goto fail;
	c->iv_bytes = (size_t)EVP_CIPHER_get_iv_length(c->cipher);
	c->block_bytes = (size_t)EVP_CIPHER_get_block_size(c->cipher);
	if (strcmp(ivgen, "plain") == 0)
		c->ivgen = IV_PLAIN;
	else if (strcmp(ivgen, "plain64") == 0)
		c->ivgen = IV_PLAIN64;
	else if (strcmp(ivgen, "essiv") == 0 && hash[0])
		c->ivgen = IV_ESSIV;
	else {
		qcow2_set_error(-ENOTSUP, "IV generator '%s' is not supported", ivgen);
		goto fail;
	}
	if (c->iv_bytes == 0)
		c->ivgen = IV_NONE; /* ecb: the generator is named but unused */
	else if (c->ivgen == IV_ESSIV && (r = essiv_setup(c, cipher_name, hash)) < 0)
		goto fail;
	*out = c;
	return 0;
fail:
	qcow2_crypt_free(c);
	return r;
}

int qcow2_aes_legacy_open(const void *pass, size_t pass_len, struct qcow2_crypt **out)
{
	uint8_t key[16] = {0};
	size_t n = strnlen(pass, pass_len); /* QEMU takes the secret as a C string */
	int r;

	memcpy(key, pass, n < sizeof(key) ? n : sizeof(key));
	r = qcow2_crypt_new("aes", "cbc-plain64", key, sizeof(key), out);
	OPENSSL_cleanse(key, sizeof(key));
	if (r == 0)
		(*out)->legacy = true;
	return r;
}

void qcow2_crypt_free(struct qcow2_crypt *c)
{
	if (!c)
		return;
	EVP_CIPHER_free(c->cipher);
	EVP_CIPHER_free(c->essiv_cipher);
	qcow2_secure_free(c, sizeof(*c));
}

bool qcow2_crypt_iv_by_host(const struct qcow2_crypt *c)
{
	return !c->legacy;
}

bool qcow2_crypt_is_legacy(const struct qcow2_crypt *c)
{
	return c->legacy;
}

/* The IV of @sector into @iv (c->iv_bytes). */
static int make_iv(const struct qcow2_crypt *c, EVP_CIPHER_CTX *essiv, uint64_t sector, uint8_t *iv)
{
	uint8_t in[EVP_MAX_IV_LENGTH] = {0};
	uint64_t n = c->ivgen == IV_PLAIN ? (uint32_t)sector : sector;
	int outl, i;

	for (i = 0; i < 8 && (size_t)i < c->iv_bytes; i++)
		in[i] = (uint8_t)(n >> (8 * i)); /* little endian, zero padded */
	if (c->ivgen != IV_ESSIV) {
		memcpy(iv, in, c->iv_bytes);
		return 0;
	}
	if (!EVP_EncryptUpdate(essiv, iv, &outl, in, (int)c->iv_bytes) ||
	    (size_t)outl != c->iv_bytes)
		return -EIO;
	return 0;
}

/* The crypt of @len bytes of @buf (a multiple of the cipher's block; the last sector may be
 * short, as key material that is not a whole number of sectors), sector by sector from
 * @sector. The shared body of encrypt and decrypt and of the key slots. */
int qcow2_crypt_sectors(const struct qcow2_crypt *c, uint64_t sector, uint8_t *buf, size_t len,
			bool enc)
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new(), *essiv = NULL;
	uint8_t iv[EVP_MAX_IV_LENGTH];
	int r = -EIO, outl;

	if (!ctx)
		return qcow2_oom_for("a cipher context");
	if (len % c->block_bytes) {
		r = qcow2_set_error(-EINVAL, "encryption of %zu bytes: not whole blocks", len);
		goto out;
	}
	if (!EVP_CipherInit_ex2(ctx, c->cipher, c->key, NULL, enc, NULL) ||
	    !EVP_CIPHER_CTX_set_padding(ctx, 0))
		goto fail;
	if (c->ivgen == IV_ESSIV) {
		essiv = EVP_CIPHER_CTX_new();
		if (!essiv ||
		    !EVP_EncryptInit_ex2(essiv, c->essiv_cipher, c->essiv_key, NULL, NULL) ||
		    !EVP_CIPHER_CTX_set_padding(essiv, 0))
			goto fail;
	}
	while (len) {
		size_t n = len < QCOW2_CRYPT_SECTOR_BYTES ? len : QCOW2_CRYPT_SECTOR_BYTES;

		if (c->iv_bytes && (make_iv(c, essiv, sector, iv) < 0 ||
				    !EVP_CipherInit_ex2(ctx, NULL, NULL, iv, enc, NULL)))
			goto fail;
		if (!EVP_CipherUpdate(ctx, buf, &outl, buf, (int)n) || (size_t)outl != n)
			goto fail;
		buf += n;
		len -= n;
		sector++;
	}
	r = 0;
	goto out;
fail:
	r = qcow2_set_error(-EIO, "%s failed in OpenSSL", enc ? "encryption" : "decryption");
out:
	OPENSSL_cleanse(iv, sizeof(iv));
	EVP_CIPHER_CTX_free(essiv);
	EVP_CIPHER_CTX_free(ctx);
	return r;
}

static int crypt_bytes(const struct qcow2_crypt *c, uint64_t offset, void *buf, size_t len,
		       bool enc)
{
	if (offset % QCOW2_CRYPT_SECTOR_BYTES || len % QCOW2_CRYPT_SECTOR_BYTES)
		return qcow2_set_error(
		    -EINVAL, "encryption at %#" PRIx64 " (+%zu): not whole sectors", offset, len);
	return qcow2_crypt_sectors(c, offset / QCOW2_CRYPT_SECTOR_BYTES, buf, len, enc);
}

int qcow2_crypt_decrypt(const struct qcow2_crypt *c, uint64_t offset, void *buf, size_t len)
{
	return crypt_bytes(c, offset, buf, len, false);
}

int qcow2_crypt_encrypt(const struct qcow2_crypt *c, uint64_t offset, void *buf, size_t len)
{
	return crypt_bytes(c, offset, buf, len, true);
}
