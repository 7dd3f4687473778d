/* SPDX-License-Identifier: MIT */
/*
 * luks.c - the LUKS1 header of an encrypted qcow2 image: its decoder and encoder (pure), the
 * read of the crypto header area named by the header extension, and the unlock of the master
 * key from a key slot.
 *
 * Layout (cryptsetup's LUKS1 on-disk format; QEMU's crypto/block-luks.c): a 592-byte phdr, big
 * endian: magic "LUKS\xba\xbe", version 1, cipher name, cipher mode ("xts-plain64",
 * "cbc-essiv:sha256"), hash, payload offset and key length, the master key's digest, salt and
 * iterations, a uuid, then 8 key slots (active, iterations, salt, key material offset in
 * sectors, stripes). A slot's key material is the master key split in `stripes` stripes
 * (afsplit.c), encrypted with the payload cipher under PBKDF2(passphrase, slot salt), by
 * 512-byte sectors numbered from 0. The header comes from the image: every field is checked
 * before use, and nothing is allocated in proportion to a number read from it beyond the area
 * (itself bounded by QCOW2_LUKS_MAX_AREA_BYTES).
 *
 * No state and no locks here; the unlock results are kept in memo.c.
 */
#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <time.h>

#include "crypto/crypto.h"

static const uint8_t luks_magic[6] = {'L', 'U', 'K', 'S', 0xba, 0xbe};

enum {
	LUKS_VERSION = 6,
	LUKS_CIPHER_NAME = 8,
	LUKS_CIPHER_MODE = 40,
	LUKS_HASH_SPEC = 72,
	LUKS_PAYLOAD = 104,
	LUKS_KEY_BYTES = 108,
	LUKS_MK_DIGEST = 112,
	LUKS_MK_SALT = 132,
	LUKS_MK_ITERS = 164,
	LUKS_UUID = 168,
	LUKS_SLOTS = 208,
	SLOT_BYTES = 48,
	NAME_BYTES = 32,
	UUID_BYTES = 40,
};

static int copy_name(char *dst, const uint8_t *src, size_t n, const char *what)
{
	if (!memchr(src, 0, n))
		return qcow2_set_error(-EUCLEAN, "LUKS header: %s is not NUL-terminated", what);
	memcpy(dst, src, n);
	dst[n] = '\0';
	return 0;
}

static bool known_hash(const char *h)
{
	static const char *const names[] = {"md5",    "sha1",	"sha224",   "sha256",
					    "sha384", "sha512", "ripemd160"};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(h, names[i]) == 0)
			return true;
	return false;
}

/* The cipher facts as qemu-img info names them, from the stored names; -ENOTSUP for a cipher,
 * mode, IV generator or hash QEMU does not know. */
static int describe(struct qcow2_luks_info *in)
{
	char mode[33], ivgen[33] = "", ivhash[33] = "";
	uint32_t bytes = in->key_bytes;
	const char *dash = strchr(in->cipher_mode, '-'), *colon;

	if (!dash)
		return qcow2_set_error(-ENOTSUP, "LUKS cipher mode '%s' has no IV generator",
				       in->cipher_mode);
	snprintf(mode, sizeof(mode), "%.*s", (int)(dash - in->cipher_mode), in->cipher_mode);
	colon = strchr(dash + 1, ':');
	snprintf(ivgen, sizeof(ivgen), "%.*s",
		 (int)(colon ? (size_t)(colon - dash - 1) : strlen(dash + 1)), dash + 1);
	if (colon)
		snprintf(ivhash, sizeof(ivhash), "%s", colon + 1);
	if (strcmp(mode, "ecb") && strcmp(mode, "cbc") && strcmp(mode, "xts") &&
	    strcmp(mode, "ctr"))
		return qcow2_set_error(-ENOTSUP, "LUKS cipher mode %s is not supported", mode);
	if (strcmp(ivgen, "plain") && strcmp(ivgen, "plain64") && strcmp(ivgen, "essiv"))
		return qcow2_set_error(-ENOTSUP, "LUKS IV generator %s is not supported", ivgen);
	if (ivhash[0] && !known_hash(ivhash))
		return qcow2_set_error(-ENOTSUP, "LUKS IV hash %s is not supported", ivhash);
	if (strcmp(ivgen, "essiv") == 0 && !ivhash[0])
		return qcow2_set_error(-EUCLEAN, "LUKS essiv IV generator without a hash");
	if (!known_hash(in->hash_spec))
		return qcow2_set_error(-ENOTSUP, "LUKS hash %s is not supported", in->hash_spec);
	if (strcmp(mode, "xts") == 0) {
		if (bytes % 2)
			return qcow2_set_error(-EUCLEAN, "LUKS xts key of %u bytes", bytes);
		bytes /= 2;
	}
	if (!(strcmp(in->cipher_name, "aes") == 0 || strcmp(in->cipher_name, "serpent") == 0 ||
	      strcmp(in->cipher_name, "twofish") == 0) ||
	    !(bytes == 16 || bytes == 24 || bytes == 32)) {
		if (strcmp(in->cipher_name, "cast5") || bytes != 16)
			return qcow2_set_error(-ENOTSUP,
					       "LUKS cipher %s with a %u-byte key is not supported",
					       in->cipher_name, bytes);
	}
	snprintf(in->cipher_alg, sizeof(in->cipher_alg), "%s-%u", in->cipher_name, bytes * 8);
	snprintf(in->mode, sizeof(in->mode), "%s", mode);
	snprintf(in->ivgen_alg, sizeof(in->ivgen_alg), "%s", ivgen);
	/* qemu-img shows the IV hash only for essiv (plain ones ignore it, as dm-crypt) */
	snprintf(in->ivgen_hash_alg, sizeof(in->ivgen_hash_alg), "%s",
		 strcmp(ivgen, "essiv") == 0 ? ivhash : "");
	snprintf(in->hash_alg, sizeof(in->hash_alg), "%s", in->hash_spec);
	return 0;
}

/* The key slots: active ones checked (stripes as QEMU writes them, iterations bounded, key
 * material after the phdr, inside the area and apart from every other active slot's). */
static int decode_slots(const uint8_t *p, size_t len, struct qcow2_luks_info *in)
{
	uint64_t start[QCOW2_LUKS_NUM_SLOTS], end[QCOW2_LUKS_NUM_SLOTS];
	const uint64_t phdr_sectors =
	    (QCOW2_LUKS_PHDR_BYTES + QCOW2_CRYPT_SECTOR_BYTES - 1) / QCOW2_CRYPT_SECTOR_BYTES;

	for (int i = 0; i < QCOW2_LUKS_NUM_SLOTS; i++) {
		const uint8_t *s = p + LUKS_SLOTS + i * SLOT_BYTES;
		struct qcow2_luks_slot *k = &in->slots[i];
		uint32_t active = get_be32(s);

		k->iterations = get_be32(s + 4);
		memcpy(k->salt, s + 8, QCOW2_LUKS_SALT_BYTES);
		k->key_offset_sectors = get_be32(s + 40);
		k->stripes = get_be32(s + 44);
		if (active != QCOW2_LUKS_SLOT_ACTIVE && active != QCOW2_LUKS_SLOT_INACTIVE)
			return qcow2_set_error(-EUCLEAN, "LUKS key slot %d: bad state %#" PRIx32, i,
					       active);
		k->active = active == QCOW2_LUKS_SLOT_ACTIVE;
		if (!k->active)
			continue;
		if (k->stripes != QCOW2_LUKS_STRIPES)
			return qcow2_set_error(-EUCLEAN, "LUKS key slot %d: %u stripes (not %u)", i,
					       k->stripes, QCOW2_LUKS_STRIPES);
		if (k->iterations == 0 || k->iterations > QCOW2_LUKS_MAX_ITERATIONS)
			return qcow2_set_error(-EUCLEAN, "LUKS key slot %d: %u iterations", i,
					       k->iterations);
		start[i] = (uint64_t)k->key_offset_sectors * QCOW2_CRYPT_SECTOR_BYTES;
		end[i] = start[i] + (uint64_t)in->key_bytes * k->stripes;
		if (k->key_offset_sectors < phdr_sectors || end[i] > len)
			return qcow2_set_error(-EUCLEAN,
					       "LUKS key slot %d: key material at %#" PRIx64
					       " (+%" PRIu64 ") outside the crypto header",
					       i, start[i], end[i] - start[i]);
		for (int j = 0; j < i; j++)
			if (in->slots[j].active && start[i] < end[j] && start[j] < end[i])
				return qcow2_set_error(-EUCLEAN, "LUKS key slots %d and %d overlap",
						       j, i);
	}
	return 0;
}

/* Decode the phdr in @buf (@len bytes), the key material checked against an area of
 * @area_len bytes (which @buf need not hold). */
static int decode(const void *buf, size_t len, size_t area_len, struct qcow2_luks_info *in)
{
	const uint8_t *p = buf;
	int r;

	memset(in, 0, sizeof(*in));
	if (len < QCOW2_LUKS_PHDR_BYTES)
		return qcow2_set_error(-EUCLEAN, "LUKS header: %zu bytes, too short", len);
	if (memcmp(p, luks_magic, sizeof(luks_magic)) != 0)
		return qcow2_set_error(-EINVAL, "crypto header is not LUKS (bad magic)");
	if (get_be16(p + LUKS_VERSION) != 1)
		return qcow2_set_error(-ENOTSUP, "LUKS version %u is not supported",
				       get_be16(p + LUKS_VERSION));
	if ((r = copy_name(in->cipher_name, p + LUKS_CIPHER_NAME, NAME_BYTES, "cipher name")) < 0 ||
	    (r = copy_name(in->cipher_mode, p + LUKS_CIPHER_MODE, NAME_BYTES, "cipher mode")) < 0 ||
	    (r = copy_name(in->hash_spec, p + LUKS_HASH_SPEC, NAME_BYTES, "hash")) < 0)
		return r;
	in->payload_offset_sectors = get_be32(p + LUKS_PAYLOAD);
	in->key_bytes = get_be32(p + LUKS_KEY_BYTES);
	memcpy(in->mk_digest, p + LUKS_MK_DIGEST, QCOW2_LUKS_DIGEST_BYTES);
	memcpy(in->mk_salt, p + LUKS_MK_SALT, QCOW2_LUKS_SALT_BYTES);
	in->mk_iterations = get_be32(p + LUKS_MK_ITERS);
	memcpy(in->uuid, p + LUKS_UUID, UUID_BYTES); /* QEMU shows up to 40 bytes */
	in->uuid[UUID_BYTES] = '\0';
	if (in->key_bytes == 0 || in->key_bytes > QCOW2_LUKS_MAX_KEY_BYTES)
		return qcow2_set_error(-EUCLEAN, "LUKS header: master key of %u bytes",
				       in->key_bytes);
	if (in->mk_iterations == 0 || in->mk_iterations > QCOW2_LUKS_MAX_ITERATIONS)
		return qcow2_set_error(-EUCLEAN, "LUKS header: %u master key iterations",
				       in->mk_iterations);
	r = describe(in);
	if (r < 0)
		return r;
	return decode_slots(p, area_len, in);
}

int qcow2_luks_decode(const void *buf, size_t len, struct qcow2_luks_info *in)
{
	return decode(buf, len, len, in);
}

void qcow2_luks_encode(const struct qcow2_luks_info *in, uint8_t *p)
{
	memset(p, 0, QCOW2_LUKS_PHDR_BYTES);
	memcpy(p, luks_magic, sizeof(luks_magic));
	put_be16(p + LUKS_VERSION, 1);
	memcpy(p + LUKS_CIPHER_NAME, in->cipher_name, strnlen(in->cipher_name, NAME_BYTES - 1));
	memcpy(p + LUKS_CIPHER_MODE, in->cipher_mode, strnlen(in->cipher_mode, NAME_BYTES - 1));
	memcpy(p + LUKS_HASH_SPEC, in->hash_spec, strnlen(in->hash_spec, NAME_BYTES - 1));
	put_be32(p + LUKS_PAYLOAD, in->payload_offset_sectors);
	put_be32(p + LUKS_KEY_BYTES, in->key_bytes);
	memcpy(p + LUKS_MK_DIGEST, in->mk_digest, QCOW2_LUKS_DIGEST_BYTES);
	memcpy(p + LUKS_MK_SALT, in->mk_salt, QCOW2_LUKS_SALT_BYTES);
	put_be32(p + LUKS_MK_ITERS, in->mk_iterations);
	memcpy(p + LUKS_UUID, in->uuid, strnlen(in->uuid, UUID_BYTES));
	for (int i = 0; i < QCOW2_LUKS_NUM_SLOTS; i++) {
		const struct qcow2_luks_slot *k = &in->slots[i];
		uint8_t *s = p + LUKS_SLOTS + i * SLOT_BYTES;

		put_be32(s, k->active ? QCOW2_LUKS_SLOT_ACTIVE : QCOW2_LUKS_SLOT_INACTIVE);
		put_be32(s + 4, k->iterations);
		memcpy(s + 8, k->salt, QCOW2_LUKS_SALT_BYTES);
		put_be32(s + 40, k->key_offset_sectors);
		put_be32(s + 44, k->stripes);
	}
}

int qcow2_luks_read(struct qcow2_io *io, const struct qcow2_header *h, struct qcow2_luks_info *info,
		    uint8_t **area, size_t *area_len)
{
	uint64_t file_bytes, end;
	uint8_t *buf;
	size_t n;
	int r;

	if (area)
		*area = NULL;
	if (h->crypt_method != QCOW2_CRYPT_LUKS || !h->has_crypto_ext)
		return qcow2_set_error(-EUCLEAN, "LUKS image without a crypto header extension");
	r = qcow2_io_size(io, &file_bytes);
	if (r < 0)
		return r;
	if (h->crypto_bytes < QCOW2_LUKS_PHDR_BYTES ||
	    h->crypto_bytes > QCOW2_LUKS_MAX_AREA_BYTES ||
	    __builtin_add_overflow(h->crypto_off, h->crypto_bytes, &end) || end > file_bytes)
		return qcow2_set_error(-EUCLEAN,
				       "crypto header at %#" PRIx64 " (+%" PRIu64
				       ") is outside the file or of a bad size",
				       h->crypto_off, h->crypto_bytes);
	/* only the phdr when no key material is wanted */
	n = area ? (size_t)h->crypto_bytes : QCOW2_LUKS_PHDR_BYTES;
	buf = qcow2_secure_alloc(n);
	if (!buf)
		return qcow2_oom_for("the crypto header");
	r = qcow2_io_pread_full(io, buf, n, h->crypto_off);
	if (r == 0) /* the slots' key material checked against the whole area */
		r = decode(buf, n, (size_t)h->crypto_bytes, info);
	if (r < 0 || !area) {
		qcow2_secure_free(buf, n);
		return r;
	}
	*area = buf;
	*area_len = n;
	return 0;
}

int qcow2_luks_read_info(struct qcow2_io *io, const struct qcow2_header *h,
			 struct qcow2_luks_info *info)
{
	return qcow2_luks_read(io, h, info, NULL, NULL);
}

/* Try slot @k with the passphrase: 1 with the master key in @mk, 0 if it does not open. */
static unsigned long slot_tries; /* key slots tried (PBKDF2 runs), atomically counted */

unsigned long qcow2_luks_slot_tries(void)
{
	return __atomic_load_n(&slot_tries, __ATOMIC_RELAXED);
}

static int try_slot(const struct qcow2_luks_info *in, const struct qcow2_luks_slot *k,
		    const uint8_t *area, const void *pass, size_t pass_len, uint8_t *mk)
{
	size_t split_bytes = (size_t)in->key_bytes * k->stripes;
	uint8_t *split = qcow2_secure_alloc(split_bytes);
	uint8_t *slot_key = qcow2_secure_alloc(in->key_bytes);
	uint8_t digest[QCOW2_LUKS_DIGEST_BYTES];
	struct qcow2_crypt *c = NULL;
	int r;

	__atomic_add_fetch(&slot_tries, 1, __ATOMIC_RELAXED);

	if (!split || !slot_key) {
		r = qcow2_oom_for("a LUKS key slot");
		goto out;
	}
	memcpy(split, area + (size_t)k->key_offset_sectors * QCOW2_CRYPT_SECTOR_BYTES, split_bytes);
	r = qcow2_pbkdf2(in->hash_spec, pass, pass_len, k->salt, QCOW2_LUKS_SALT_BYTES,
			 k->iterations, slot_key, in->key_bytes);
	if (r == 0)
		r = qcow2_crypt_new(in->cipher_name, in->cipher_mode, slot_key, in->key_bytes, &c);
	if (r == 0)
		r = qcow2_crypt_sectors(c, 0, split, split_bytes, false);
	if (r == 0)
		r = qcow2_afmerge(in->hash_spec, in->key_bytes, k->stripes, split, mk);
	if (r == 0)
		r = qcow2_pbkdf2(in->hash_spec, mk, in->key_bytes, in->mk_salt,
				 QCOW2_LUKS_SALT_BYTES, in->mk_iterations, digest, sizeof(digest));
	if (r == 0)
		r = CRYPTO_memcmp(digest, in->mk_digest, sizeof(digest)) == 0;
out:
	OPENSSL_cleanse(digest, sizeof(digest));
	qcow2_crypt_free(c);
	qcow2_secure_free(slot_key, in->key_bytes);
	qcow2_secure_free(split, split_bytes);
	return r;
}

/* CPU time of this thread, in ns. */
static uint64_t cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* PBKDF2 iterations of @hash per second on this thread (a short run; at least 1). */
static int pbkdf2_rate(const char *hash, uint64_t *per_sec)
{
	const uint32_t probe = 1u << 14;
	uint8_t salt[QCOW2_LUKS_SALT_BYTES] = {0}, out[QCOW2_LUKS_DIGEST_BYTES];
	uint64_t start = cpu_ns(), delta;
	int r;

	r = qcow2_pbkdf2(hash, "probe", 5, salt, sizeof(salt), probe, out, sizeof(out));
	if (r < 0)
		return r;
	delta = cpu_ns() - start;
	*per_sec = (uint64_t)probe * 1000000000u / (delta ? delta : 1);
	if (*per_sec == 0)
		*per_sec = 1;
	return 0;
}

/* Never hang: the header comes from the image, and its iteration counts are the attacker's
 * (QEMU bounds them only by 32 bits: 2^32 iterations are hours of CPU per slot, in a process
 * that cannot be stopped while OpenSSL runs them). Before each slot is tried, the PBKDF2
 * runs it costs (the slot's, then the master key digest's) are priced at this machine's rate
 * for the header's hash, and a try that would bring the unlock past
 * QCOW2_LUKS_MAX_UNLOCK_SECONDS of CPU is refused instead of run. QEMU's default iter-time
 * is 2 s, so its images open with a wide margin on a machine several times slower. */
static int within_budget(const struct qcow2_luks_info *in, int slot, uint64_t *spent,
			 uint64_t *per_sec)
{
	const struct qcow2_luks_slot *k = &in->slots[slot];
	uint64_t cost = (uint64_t)k->iterations + in->mk_iterations;
	int r;

	if (*per_sec == 0 && (r = pbkdf2_rate(in->hash_spec, per_sec)) < 0)
		return r;
	*spent += cost;
	if (*spent / *per_sec < QCOW2_LUKS_MAX_UNLOCK_SECONDS)
		return 0;
	return qcow2_set_error(-ETIME,
			       "LUKS key slot %d asks for %u PBKDF2 iterations of %s (master key "
			       "%u): about %" PRIu64 " s of CPU here, over the limit of %u s",
			       slot, k->iterations, in->hash_spec, in->mk_iterations,
			       *spent / *per_sec, QCOW2_LUKS_MAX_UNLOCK_SECONDS);
}

int qcow2_luks_unlock(const struct qcow2_luks_info *in, const uint8_t *area, size_t area_len,
		      const void *pass, size_t pass_len, struct qcow2_crypt **out)
{
	uint64_t spent = 0, per_sec = 0;
	uint8_t *mk, tag[32];
	bool memo;
	int r = 0, i;

	*out = NULL;
	/* QEMU takes the secret as a C string: a NUL ends the passphrase */
	pass_len = strnlen(pass, pass_len);
	for (i = 0; i < QCOW2_LUKS_NUM_SLOTS; i++) {
		const struct qcow2_luks_slot *k = &in->slots[i];

		/* decode() checked this against the area; a caller's info may be stale */
		if (k->active && (uint64_t)k->key_offset_sectors * QCOW2_CRYPT_SECTOR_BYTES +
					 (uint64_t)in->key_bytes * k->stripes >
				     area_len)
			return qcow2_set_error(-EUCLEAN, "LUKS key slot %d: outside the header", i);
	}
	mk = qcow2_secure_alloc(in->key_bytes);
	if (!mk)
		return qcow2_oom_for("the master key");
	/* PBKDF2 once per header and passphrase in this process (memo.c) */
	memo = qcow2_crypt_memo_tag(area, area_len, pass, pass_len, tag) == 0;
	if (memo)
		r = qcow2_crypt_memo_find(tag, mk, in->key_bytes);
	if (r == -EKEYREJECTED)
		r = 0; /* said below */
	else if (r == 0)
		for (i = 0; i < QCOW2_LUKS_NUM_SLOTS && r == 0; i++)
			if (in->slots[i].active &&
			    (r = within_budget(in, i, &spent, &per_sec)) == 0)
				r = try_slot(in, &in->slots[i], area, pass, pass_len, mk);
	if (memo && r >= 0)
		qcow2_crypt_memo_put(tag, r == 1 ? 1 : -EKEYREJECTED, mk, in->key_bytes);
	if (r == 1)
		r = qcow2_crypt_new(in->cipher_name, in->cipher_mode, mk, in->key_bytes, out);
	else if (r == 0)
		r = qcow2_set_error(-EKEYREJECTED, "wrong key: no LUKS key slot opens with it");
	qcow2_secure_free(mk, in->key_bytes);
	OPENSSL_cleanse(tag, sizeof(tag));
	return r;
}

int qcow2_crypt_open(struct qcow2_io *io, const struct qcow2_header *h, const void *pass,
		     size_t pass_len, struct qcow2_crypt **out)
{
	struct qcow2_luks_info info;
	size_t area_len = 0;
	uint8_t *area;
	int r;

	*out = NULL;
	if (h->crypt_method == QCOW2_CRYPT_AES)
		return qcow2_aes_legacy_open(pass, pass_len, out);
	if (h->crypt_method != QCOW2_CRYPT_LUKS)
		return qcow2_set_error(-EINVAL, "the image is not encrypted");
	r = qcow2_luks_read(io, h, &info, &area, &area_len);
	if (r < 0)
		return r;
	r = qcow2_luks_unlock(&info, area, area_len, pass, pass_len, out);
	qcow2_secure_free(area, area_len);
	OPENSSL_cleanse(&info, sizeof(info));
	return r;
}
