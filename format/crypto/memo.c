/* SPDX-License-Identifier: MIT */
/*
 * memo.c - what the unlock of a LUKS header with a passphrase gave, kept for the process: an
 * image opened again with the same passphrase (the daemon opens an image when it first sees it
 * and again at each open of its view; a chain is opened by every qcowctl step) gets its master
 * key without PBKDF2 again, which QEMU's default iter-time makes cost about 2 s each time, and
 * a wrong passphrase is refused at once the second time.
 *
 * An entry is keyed by a SHA-256 tag of the whole crypto header area (every key slot and the
 * master key digest: a changed header is another entry) and of the passphrase; it holds the
 * master key, or that no slot opened. The table lives in one locked, non-dumped mapping
 * (secure.c), never freed (the process's own key material, as long as it runs), its master
 * keys wiped when replaced. QCOW2_CRYPT_MEMO_SLOTS entries, the oldest replaced.
 *
 * Locking: memo_lock guards the table; it is a leaf (nothing is called while holding it but
 * memcpy and OPENSSL_cleanse), so it fits under any lock of the callers.
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <string.h>

#include "crypto/crypto.h"

#define QCOW2_CRYPT_MEMO_SLOTS 32

struct memo_entry {
	uint8_t tag[32];
	uint8_t mk[QCOW2_LUKS_MAX_KEY_BYTES];
	uint32_t key_bytes;
	uint64_t age; /* 0: unused */
	int result;   /* 1: @mk opens the image; -EKEYREJECTED: no slot opened */
};

static pthread_mutex_t memo_lock = PTHREAD_MUTEX_INITIALIZER;
static struct memo_entry *memo; /* QCOW2_CRYPT_MEMO_SLOTS entries, secure memory */
static uint64_t memo_clock;

int qcow2_crypt_memo_tag(const uint8_t *area, size_t area_len, const void *pass, size_t pass_len,
			 uint8_t tag[32])
{
	static const char domain[] = "qcowfs LUKS unlock memo";
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	uint64_t n = pass_len;
	unsigned len = 0;
	int ok;

	if (!ctx)
		return qcow2_oom_for("a digest");
	/* the passphrase's length first: (area, pass) pairs cannot collide by moving bytes */
	ok = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) &&
	     EVP_DigestUpdate(ctx, domain, sizeof(domain)) &&
	     EVP_DigestUpdate(ctx, &n, sizeof(n)) && EVP_DigestUpdate(ctx, pass, pass_len) &&
	     EVP_DigestUpdate(ctx, area, area_len) && EVP_DigestFinal_ex(ctx, tag, &len) &&
	     len == 32;
	EVP_MD_CTX_free(ctx);
	return ok ? 0 : qcow2_set_error(-EIO, "SHA-256 failed");
}

int qcow2_crypt_memo_find(const uint8_t tag[32], uint8_t *mk, uint32_t key_bytes)
{
	int r = 0, i;

	pthread_mutex_lock(&memo_lock);
	for (i = 0; memo && i < QCOW2_CRYPT_MEMO_SLOTS; i++) {
		struct memo_entry *e = &memo[i];

		if (!e->age || e->key_bytes != key_bytes || CRYPTO_memcmp(e->tag, tag, 32) != 0)
			continue;
		r = e->result;
		if (r == 1)
			memcpy(mk, e->mk, key_bytes);
		e->age = ++memo_clock;
		break;
	}
	pthread_mutex_unlock(&memo_lock);
	return r;
}

void qcow2_crypt_memo_put(const uint8_t tag[32], int result, const uint8_t *mk, uint32_t key_bytes)
{
	struct memo_entry *e;
	int i;

	if (key_bytes > QCOW2_LUKS_MAX_KEY_BYTES)
		return;
	pthread_mutex_lock(&memo_lock);
	if (!memo)
		memo = qcow2_secure_alloc(QCOW2_CRYPT_MEMO_SLOTS * sizeof(*memo));
	if (memo) {
		e = &memo[0];
		for (i = 1; i < QCOW2_CRYPT_MEMO_SLOTS; i++)
			if (memo[i].age < e->age)
				e = &memo[i];
		OPENSSL_cleanse(e, sizeof(*e));
		memcpy(e->tag, tag, 32);
		if (result == 1)
			memcpy(e->mk, mk, key_bytes);
		e->key_bytes = key_bytes;
		e->result = result;
		e->age = ++memo_clock;
	}
	pthread_mutex_unlock(&memo_lock);
}
