/* SPDX-License-Identifier: MIT */
/*
 * afsplit.c - PBKDF2 and the anti-forensic splitter of LUKS1 (cryptsetup's on-disk format
 * document, section "AF-Splitter"; the same as QEMU's crypto/afsplit.c).
 *
 * The splitter turns a key of n bytes into `stripes` stripes of n bytes: all but the last are
 * random; a running block d starts at zero and for each random stripe s becomes
 * diffuse(d ^ s); the last stripe is d ^ key. Merging replays the same running block over the
 * stored stripes and xors the last one. diffuse() hashes the block in digest-sized pieces, each
 * piece i replaced by the first bytes of hash(be32(i) || piece).
 *
 * No state and no locks; buffers of key material are the caller's (locked memory) or the
 * running block, allocated here in locked memory and wiped.
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "crypto/crypto.h"

int qcow2_pbkdf2(const char *hash, const void *pass, size_t pass_len, const uint8_t *salt,
		 size_t salt_len, uint32_t iterations, uint8_t *out, size_t out_len)
{
	EVP_MD *md;
	int ok;

	if (iterations == 0 || iterations > QCOW2_LUKS_MAX_ITERATIONS || pass_len > INT32_MAX ||
	    salt_len > INT32_MAX || out_len > INT32_MAX)
		return qcow2_set_error(-EINVAL, "PBKDF2 with %u iterations is out of range",
				       iterations);
	md = EVP_MD_fetch(NULL, hash, NULL);
	if (!md)
		return qcow2_set_error(-ENOTSUP, "hash %s is not offered by OpenSSL", hash);
	/* OpenSSL wants a non-NULL password pointer even when it is empty */
	ok = PKCS5_PBKDF2_HMAC(pass_len ? pass : "", (int)pass_len, salt, (int)salt_len,
			       (int)iterations, md, (int)out_len, out);
	EVP_MD_free(md);
	return ok ? 0 : qcow2_set_error(-EIO, "PBKDF2 with %s failed in OpenSSL", hash);
}

/* diffuse(): @block (@n bytes) replaced piece by piece by hash(be32(i) || piece). */
static int diffuse(EVP_MD_CTX *ctx, const EVP_MD *md, uint8_t *block, size_t n)
{
	size_t dlen = (size_t)EVP_MD_get_size(md), off;
	uint8_t out[EVP_MAX_MD_SIZE];
	uint32_t i = 0;
	int r = 0;

	for (off = 0; off < n; off += dlen, i++) {
		size_t piece = n - off < dlen ? n - off : dlen;
		uint8_t be[4];

		put_be32(be, i);
		if (!EVP_DigestInit_ex2(ctx, md, NULL) || !EVP_DigestUpdate(ctx, be, 4) ||
		    !EVP_DigestUpdate(ctx, block + off, piece) ||
		    !EVP_DigestFinal_ex(ctx, out, NULL)) {
			r = qcow2_set_error(-EIO, "hashing in the AF splitter failed");
			break;
		}
		memcpy(block + off, out, piece);
	}
	OPENSSL_cleanse(out, sizeof(out));
	return r;
}

static void xor_into(uint8_t *d, const uint8_t *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		d[i] ^= s[i];
}

/* The running block over the first @stripes - 1 stripes of @in (or, with @in NULL, of random
 * stripes written to @out): left in @d (@n bytes, zeroed by the caller). */
static int run(const char *hash, size_t n, uint32_t stripes, const uint8_t *in, uint8_t *out,
	       uint8_t *d)
{
	EVP_MD *md = EVP_MD_fetch(NULL, hash, NULL);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int r = 0;

	if (!md || !ctx) {
		r = md ? qcow2_oom()
		       : qcow2_set_error(-ENOTSUP, "hash %s is not offered by OpenSSL", hash);
		goto out;
	}
	for (uint32_t i = 0; i + 1 < stripes && r == 0; i++) {
		const uint8_t *s = in ? in + (size_t)i * n : out + (size_t)i * n;

		if (!in && RAND_bytes(out + (size_t)i * n, (int)n) != 1) {
			r = qcow2_set_error(-EIO, "no random bytes from OpenSSL");
			break;
		}
		xor_into(d, s, n);
		r = diffuse(ctx, md, d, n);
	}
out:
	EVP_MD_CTX_free(ctx);
	EVP_MD_free(md);
	return r;
}

static int check_args(size_t key_bytes, uint32_t stripes)
{
	if (key_bytes == 0 || key_bytes > QCOW2_LUKS_MAX_KEY_BYTES || stripes == 0 ||
	    stripes > QCOW2_LUKS_STRIPES)
		return qcow2_set_error(-EINVAL, "AF splitter: %zu bytes in %u stripes", key_bytes,
				       stripes);
	return 0;
}

int qcow2_afsplit(const char *hash, size_t key_bytes, uint32_t stripes, const uint8_t *key,
		  uint8_t *out)
{
	uint8_t *d;
	int r = check_args(key_bytes, stripes);

	if (r < 0)
		return r;
	d = qcow2_secure_alloc(key_bytes);
	if (!d)
		return qcow2_oom_for("the AF splitter");
	r = run(hash, key_bytes, stripes, NULL, out, d);
	if (r == 0) {
		uint8_t *last = out + (size_t)(stripes - 1) * key_bytes;

		memcpy(last, key, key_bytes);
		xor_into(last, d, key_bytes);
	}
	qcow2_secure_free(d, key_bytes);
	return r;
}

int qcow2_afmerge(const char *hash, size_t key_bytes, uint32_t stripes, const uint8_t *in,
		  uint8_t *key)
{
	uint8_t *d;
	int r = check_args(key_bytes, stripes);

	if (r < 0)
		return r;
	d = qcow2_secure_alloc(key_bytes);
	if (!d)
		return qcow2_oom_for("the AF splitter");
	r = run(hash, key_bytes, stripes, in, NULL, d);
	if (r == 0) {
		memcpy(key, in + (size_t)(stripes - 1) * key_bytes, key_bytes);
		xor_into(key, d, key_bytes);
	}
	qcow2_secure_free(d, key_bytes);
	return r;
}
