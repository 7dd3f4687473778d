/* SPDX-License-Identifier: MIT */
/*
 * luks-build.c - a new LUKS1 header for an image being created (qcowctl create -o
 * encrypt.format=luks): the options checked as qemu-img checks them, a random master key,
 * salts and uuid (RAND_bytes), iterations measured from iter-time, slot 0 holding the master key
 * split and encrypted under the passphrase, and the layout QEMU writes (crypto/block-luks.c):
 * key material of slot i at sector 8 + i * (its sectors rounded up to 8), the payload offset
 * (the crypto header area's length) after the 8 slots.
 *
 * Iterations: as QEMU, the PBKDF2 rate of this machine is measured (thread CPU time) for the
 * hash and lengths at hand; slot 0 gets rate * iter-time, the master key digest rate *
 * iter-time / 8, each at least 1000. QEMU measures until one run takes over 500 ms; we stop
 * at 100 ms (the rate is the same; creating an image takes a fraction of the time).
 *
 * No state, no locks; key material in locked memory, wiped.
 */
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <time.h>

#include "crypto/crypto.h"

#define MIN_ITERS	 1000
#define KEY_SLOT_SECTORS 8 /* key material starts at 4096 bytes, slots aligned to 4096 */

void qcow2_luks_params_default(struct qcow2_luks_params *p)
{
	memset(p, 0, sizeof(*p));
	p->cipher_alg = "aes-256";
	p->cipher_mode = "xts";
	p->ivgen_alg = "plain64";
	p->hash_alg = "sha256";
	p->iter_time_ms = 2000;
}

static bool one_of(const char *s, const char *const *names)
{
	for (; *names; names++)
		if (strcmp(s, *names) == 0)
			return true;
	return false;
}

static const char *const hashes[] = {"md5",    "sha1",	 "sha224",    "sha256",
				     "sha384", "sha512", "ripemd160", NULL};

/* @alg "aes-256" -> "aes" and 32 bytes (one key of the cipher). */
static int split_alg(const char *alg, char *name, size_t cap, uint32_t *bytes)
{
	static const char *const algs[] = {"aes-128",	  "aes-192",	 "aes-256",
					   "twofish-128", "twofish-192", "twofish-256",
					   "serpent-128", "serpent-192", "serpent-256",
					   "cast5-128",	  NULL};
	const char *dash = strrchr(alg, '-');

	if (!one_of(alg, algs) || !dash || (size_t)(dash - alg) >= cap)
		return qcow2_set_error(-EINVAL, "encrypt.cipher-alg '%s' is not supported", alg);
	snprintf(name, cap, "%.*s", (int)(dash - alg), alg);
	*bytes = (uint32_t)atoi(dash + 1) / 8;
	return 0;
}

int qcow2_luks_params_check(const struct qcow2_luks_params *p)
{
	static const char *const modes[] = {"ecb", "cbc", "xts", "ctr", NULL};
	static const char *const ivgens[] = {"plain", "plain64", "essiv", NULL};
	uint32_t bytes;
	char name[16];
	int r = split_alg(p->cipher_alg, name, sizeof(name), &bytes);

	if (r < 0)
		return r;
	if (!one_of(p->cipher_mode, modes))
		return qcow2_set_error(-EINVAL, "encrypt.cipher-mode '%s' is not supported",
				       p->cipher_mode);
	if (!one_of(p->ivgen_alg, ivgens))
		return qcow2_set_error(-EINVAL, "encrypt.ivgen-alg '%s' is not supported",
				       p->ivgen_alg);
	if (p->ivgen_hash_alg && !one_of(p->ivgen_hash_alg, hashes))
		return qcow2_set_error(-EINVAL, "encrypt.ivgen-hash-alg '%s' is not supported",
				       p->ivgen_hash_alg);
	if (!one_of(p->hash_alg, hashes))
		return qcow2_set_error(-EINVAL, "encrypt.hash-alg '%s' is not supported",
				       p->hash_alg);
	if (p->iter_time_ms == 0)
		return qcow2_set_error(-EINVAL, "encrypt.iter-time must be at least 1 ms");
	/* an unlock costs the slot's iter-time and the digest's eighth of it: past the bound
	 * luks.c puts on an unlock, the image would be made and then refused */
	if ((uint64_t)p->iter_time_ms * 9 / 8 >= QCOW2_LUKS_MAX_UNLOCK_SECONDS * 1000u)
		return qcow2_set_error(-EINVAL,
				       "encrypt.iter-time %u ms: unlocking would take over the "
				       "limit of %u s of PBKDF2 (at most %u ms)",
				       p->iter_time_ms, QCOW2_LUKS_MAX_UNLOCK_SECONDS,
				       QCOW2_LUKS_MAX_UNLOCK_SECONDS * 1000u * 8 / 9 - 1);
	if (strcmp(name, "cast5") == 0 && strcmp(p->cipher_mode, "xts") == 0)
		return qcow2_set_error(-EINVAL, "encrypt.cipher-alg cast5-128 has no xts mode");
	if (strcmp(p->cipher_mode, "xts") == 0)
		bytes *= 2;
	/* QEMU decrypts key material in whole sectors and aborts on a partial one */
	if ((uint64_t)bytes * QCOW2_LUKS_STRIPES % QCOW2_CRYPT_SECTOR_BYTES)
		return qcow2_set_error(-EINVAL,
				       "encrypt.cipher-alg %s in %s mode: its key material is "
				       "not whole sectors, which QEMU cannot open",
				       p->cipher_alg, p->cipher_mode);
	return 0;
}

static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* PBKDF2 iterations of @hash per second on this thread, for these lengths (QEMU's
 * qcrypto_pbkdf2_count_iters(), over a shorter run). */
static int count_iters(const char *hash, const void *key, size_t key_len, const uint8_t *salt,
		       size_t out_len, uint64_t *per_sec)
{
	uint8_t *out = qcow2_secure_alloc(out_len);
	uint64_t iters = 1 << 15, delta = 0;
	int r = 0;

	if (!out)
		return qcow2_oom_for("measuring PBKDF2");
	for (;;) {
		uint64_t start = thread_cpu_ns();

		r = qcow2_pbkdf2(hash, key, key_len, salt, QCOW2_LUKS_SALT_BYTES, (uint32_t)iters,
				 out, out_len);
		if (r < 0)
			break;
		delta = thread_cpu_ns() - start;
		if (delta > 100000000u || iters >= QCOW2_LUKS_MAX_ITERATIONS / 10)
			break;
		iters = delta < 10000000u ? iters * 10 : iters * 200000000u / (delta + 1);
		if (iters > QCOW2_LUKS_MAX_ITERATIONS)
			iters = QCOW2_LUKS_MAX_ITERATIONS;
	}
	qcow2_secure_free(out, out_len);
	if (r == 0)
		*per_sec = iters * 1000000000u / (delta ? delta : 1);
	return r;
}

/* @per_sec * @ms / 1000 / @div, at least MIN_ITERS, at most what a decoder accepts. */
static int scale_iters(uint64_t per_sec, uint32_t ms, unsigned div, uint32_t *out)
{
	uint64_t n = per_sec > UINT64_MAX / ms ? UINT64_MAX : per_sec * ms / 1000 / div;

	if (n > QCOW2_LUKS_MAX_ITERATIONS)
		return qcow2_set_error(-ERANGE,
				       "encrypt.iter-time %u ms means %" PRIu64
				       " PBKDF2 iterations, over the limit of %u",
				       ms, n, QCOW2_LUKS_MAX_ITERATIONS);
	*out = n < MIN_ITERS ? MIN_ITERS : (uint32_t)n;
	return 0;
}

static int random_bytes(uint8_t *p, size_t n)
{
	return RAND_bytes(p, (int)n) == 1 ? 0
					  : qcow2_set_error(-EIO, "no random bytes from OpenSSL");
}

static int make_uuid(char *out)
{
	uint8_t u[16];
	int r = random_bytes(u, sizeof(u));

	if (r < 0)
		return r;
	u[6] = (uint8_t)((u[6] & 0x0f) | 0x40); /* version 4 */
	u[8] = (uint8_t)((u[8] & 0x3f) | 0x80); /* RFC 4122 variant */
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12],
		 u[13], u[14], u[15]);
	return 0;
}

/* The header's names and lengths from @p. */
static int fill_names(const struct qcow2_luks_params *p, struct qcow2_luks_info *in)
{
	const char *ivhash = p->ivgen_hash_alg;
	uint32_t bytes;
	int r = split_alg(p->cipher_alg, in->cipher_name, sizeof(in->cipher_name), &bytes);

	if (r < 0)
		return r;
	/* essiv needs a hash (sha256 unless given); a plain generator keeps one it is given,
	 * unused, as QEMU writes it */
	if (!ivhash && strcmp(p->ivgen_alg, "essiv") == 0)
		ivhash = "sha256";
	snprintf(in->cipher_mode, sizeof(in->cipher_mode), "%s-%s%s%s", p->cipher_mode,
		 p->ivgen_alg, ivhash ? ":" : "", ivhash ? ivhash : "");
	snprintf(in->hash_spec, sizeof(in->hash_spec), "%s", p->hash_alg);
	in->key_bytes = strcmp(p->cipher_mode, "xts") == 0 ? 2 * bytes : bytes;
	return 0;
}

/* Slot 0: the master key @mk split, encrypted with the key PBKDF2 makes of the passphrase,
 * into @area at the slot's offset. */
static int write_slot0(struct qcow2_luks_info *in, const uint8_t *mk, const void *pass,
		       size_t pass_len, uint32_t iter_ms, uint8_t *area)
{
	struct qcow2_luks_slot *k = &in->slots[0];
	size_t split_bytes = (size_t)in->key_bytes * QCOW2_LUKS_STRIPES;
	uint8_t *slot_key = qcow2_secure_alloc(in->key_bytes);
	struct qcow2_crypt *c = NULL;
	uint64_t rate;
	uint8_t *split = area + (size_t)k->key_offset_sectors * QCOW2_CRYPT_SECTOR_BYTES;
	int r;

	if (!slot_key)
		return qcow2_oom_for("a LUKS key slot");
	r = random_bytes(k->salt, QCOW2_LUKS_SALT_BYTES);
	if (r == 0)
		r = count_iters(in->hash_spec, pass, pass_len, k->salt, in->key_bytes, &rate);
	if (r == 0)
		r = scale_iters(rate, iter_ms, 1, &k->iterations);
	if (r == 0)
		r = qcow2_pbkdf2(in->hash_spec, pass, pass_len, k->salt, QCOW2_LUKS_SALT_BYTES,
				 k->iterations, slot_key, in->key_bytes);
	if (r == 0)
		r = qcow2_crypt_new(in->cipher_name, in->cipher_mode, slot_key, in->key_bytes, &c);
	if (r == 0)
		r = qcow2_afsplit(in->hash_spec, in->key_bytes, QCOW2_LUKS_STRIPES, mk, split);
	if (r == 0)
		r = qcow2_crypt_sectors(c, 0, split, split_bytes, true);
	k->active = r == 0;
	qcow2_crypt_free(c);
	qcow2_secure_free(slot_key, in->key_bytes);
	return r;
}

/* The master key's salt, iterations and digest. */
static int digest_mk(struct qcow2_luks_info *in, const uint8_t *mk, uint32_t iter_ms)
{
	uint64_t rate;
	int r = random_bytes(in->mk_salt, QCOW2_LUKS_SALT_BYTES);

	if (r == 0)
		r = count_iters(in->hash_spec, mk, in->key_bytes, in->mk_salt,
				QCOW2_LUKS_DIGEST_BYTES, &rate);
	if (r == 0)
		r = scale_iters(rate, iter_ms, 8, &in->mk_iterations);
	if (r == 0)
		r = qcow2_pbkdf2(in->hash_spec, mk, in->key_bytes, in->mk_salt,
				 QCOW2_LUKS_SALT_BYTES, in->mk_iterations, in->mk_digest,
				 QCOW2_LUKS_DIGEST_BYTES);
	return r;
}

int qcow2_luks_build(const struct qcow2_luks_params *p, const void *pass, size_t pass_len,
		     uint8_t **area, size_t *area_len, struct qcow2_crypt **crypt)
{
	struct qcow2_luks_info in;
	uint32_t slot_sectors;
	uint8_t *mk = NULL, *buf = NULL;
	size_t len = 0;
	int r;

	*area = NULL;
	*crypt = NULL;
	memset(&in, 0, sizeof(in));
	pass_len = strnlen(pass, pass_len); /* as QEMU: the secret is a C string */
	r = qcow2_luks_params_check(p);
	if (r == 0)
		r = fill_names(p, &in);
	if (r < 0)
		return r;
	/* the layout: each slot's key material rounded up to 4096 bytes */
	slot_sectors = (in.key_bytes * QCOW2_LUKS_STRIPES + QCOW2_CRYPT_SECTOR_BYTES - 1) /
		       QCOW2_CRYPT_SECTOR_BYTES;
	slot_sectors = (slot_sectors + KEY_SLOT_SECTORS - 1) / KEY_SLOT_SECTORS * KEY_SLOT_SECTORS;
	for (int i = 0; i < QCOW2_LUKS_NUM_SLOTS; i++) {
		in.slots[i].stripes = QCOW2_LUKS_STRIPES;
		in.slots[i].key_offset_sectors = KEY_SLOT_SECTORS + (uint32_t)i * slot_sectors;
	}
	in.payload_offset_sectors = KEY_SLOT_SECTORS + QCOW2_LUKS_NUM_SLOTS * slot_sectors;
	len = (size_t)in.payload_offset_sectors * QCOW2_CRYPT_SECTOR_BYTES;
	mk = qcow2_secure_alloc(in.key_bytes);
	buf = qcow2_secure_alloc(len);
	if (!mk || !buf) {
		r = qcow2_oom_for("a new LUKS header");
		goto out;
	}
	r = random_bytes(mk, in.key_bytes);
	if (r == 0)
		r = make_uuid(in.uuid);
	/* the payload cipher first: a cipher OpenSSL lacks is refused before any measuring */
	if (r == 0)
		r = qcow2_crypt_new(in.cipher_name, in.cipher_mode, mk, in.key_bytes, crypt);
	if (r == 0)
		r = digest_mk(&in, mk, p->iter_time_ms);
	if (r == 0)
		r = write_slot0(&in, mk, pass, pass_len, p->iter_time_ms, buf);
	if (r == 0)
		qcow2_luks_encode(&in, buf);
out:
	qcow2_secure_free(mk, in.key_bytes);
	OPENSSL_cleanse(&in, sizeof(in));
	if (r < 0) {
		qcow2_secure_free(buf, len);
		qcow2_crypt_free(*crypt);
		*crypt = NULL;
		return r;
	}
	*area = buf;
	*area_len = len;
	return 0;
}
