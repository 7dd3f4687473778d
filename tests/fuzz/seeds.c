/* SPDX-License-Identifier: MIT */
/*
 * seeds.c - seed inputs for the fuzz targets, built with imgbuild so that the fuzzers start
 * from valid images exercising every feature the decoders handle: v2 and v3 headers, small
 * and large clusters, every refcount width, extended L2 entries, zlib and zstd clusters, zero
 * clusters, snapshots with every kind of extra data, backing and data file names, bitmaps and
 * a feature table naming an unknown bit. Images use small clusters so that seeds stay small.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "imgbuild.h"

struct seed_list {
	struct fuzz_input *v;
	size_t n, cap;
};

static void push(struct seed_list *l, const uint8_t *bytes, size_t len)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 16;
		l->v = realloc(l->v, l->cap * sizeof(*l->v));
		if (!l->v)
			abort();
	}
	l->v[l->n].bytes = malloc(len ? len : 1);
	if (!l->v[l->n].bytes)
		abort();
	memcpy(l->v[l->n].bytes, bytes, len);
	l->v[l->n].len = len;
	l->n++;
}

struct image_kind {
	uint32_t version, cluster_bits, refcount_order;
	bool extended_l2;
	uint8_t compression;
	bool backing, data_file, bitmaps, unknown_feature;
	unsigned snapshots;
	uint64_t size;
};

static const struct image_kind kinds[] = {
    {3, 9, 4, false, 0, false, false, false, false, 2, 64 << 10},
    {2, 9, 4, false, 0, true, false, false, false, 2, 64 << 10},
    {3, 9, 0, false, 0, false, false, false, false, 0, 32 << 10},
    {3, 9, 6, false, 0, true, false, false, false, 1, 32 << 10},
    {3, 10, 2, false, 1, false, false, false, false, 1, 64 << 10},
    {3, 9, 4, false, 0, false, true, false, false, 0, 32 << 10},
    {3, 9, 4, false, 0, false, false, true, false, 0, 32 << 10},
    {3, 10, 4, false, 0, false, false, false, true, 0, 16 << 10},
    {3, 14, 4, true, 0, false, false, false, false, 1, 256 << 10},
    {3, 12, 5, false, 0, false, false, false, false, 3, 256 << 10},
};

static struct imgbuild *build_kind(const struct image_kind *k, uint64_t seed)
{
	static const struct imgbuild_feature unknown[] = {{0, 12, "fuzzed feature"}};
	struct imgbuild_opts o = imgbuild_defaults();
	struct imgbuild *img;

	o.version = k->version;
	o.cluster_bits = k->cluster_bits;
	o.refcount_order = k->refcount_order;
	o.extended_l2 = k->extended_l2;
	o.compression_type = k->compression;
	o.size = k->size;
	o.reftable_clusters = 1;
	if (k->backing) {
		o.backing_file = "base.qcow2";
		o.backing_fmt = k->version >= 3 ? "qcow2" : NULL;
	}
	if (k->data_file) {
		o.data_file = "data.raw";
		o.data_file_raw = true;
	}
	o.bitmaps = k->bitmaps;
	if (k->unknown_feature) {
		o.extra_features = unknown;
		o.n_extra_features = 1;
		o.incompat = 1ull << 12;
	}
	img = imgbuild_new(&o);
	imgbuild_scramble(img, seed, 24, k->snapshots);
	return img;
}

/* A snapshot-target input: the prefix, then the image's snapshot table. */
static void push_snapshot_table(struct seed_list *l, const struct imgbuild *img)
{
	size_t len = FUZZ_SNAPSHOT_PREFIX + (size_t)img->snap_table_bytes;
	uint8_t *b = calloc(1, len);
	int i;

	if (!b)
		abort();
	b[0] = (uint8_t)(img->nb_snapshots >> 8);
	b[1] = (uint8_t)img->nb_snapshots;
	b[2] = img->o.version == 3;
	for (i = 0; i < 8; i++)
		b[4 + i] = (uint8_t)(img->o.size >> (56 - 8 * i));
	memcpy(b + FUZZ_SNAPSHOT_PREFIX, img->bytes + img->snap_table_off,
	       (size_t)img->snap_table_bytes);
	push(l, b, len);
	free(b);
}

static void snapshot_seeds(struct seed_list *l)
{
	static const uint32_t extras[] = {0, 8, 16, 24, 40};
	struct imgbuild_snapshot_opts so;
	struct imgbuild_opts o;
	struct imgbuild *img;
	size_t v, i;

	for (v = 2; v <= 3; v++) {
		for (i = 0; i < sizeof(extras) / sizeof(extras[0]); i++) {
			if (v == 3 && extras[i] < 16)
				continue;
			o = imgbuild_defaults();
			o.version = (uint32_t)v;
			o.cluster_bits = 9;
			o.size = 64 << 10;
			img = imgbuild_new(&o);
			memset(&so, 0, sizeof(so));
			so.extra_bytes = extras[i];
			so.vm_state_bytes = 1234;
			so.icount = 99;
			so.name = "a name";
			imgbuild_snapshot_add(img, &so);
			so.name = "x"; /* unpadded lengths */
			so.id = "12345";
			imgbuild_snapshot_add(img, &so);
			push_snapshot_table(l, img);
			imgbuild_free(img);
		}
	}
}

/* LUKS1 headers (the luks target): big endian fields at their cryptsetup offsets. */
static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static void luks_seed(struct seed_list *l, const char *cipher, const char *mode, const char *hash,
		      uint32_t key_bytes, bool active)
{
	/* slot 0's key material at 4096, rounded to 4096; the rest inactive */
	uint32_t slot_bytes = (key_bytes * 4000 + 4095) / 4096 * 4096;
	size_t len = active ? 4096 + slot_bytes : 592;
	uint8_t *p = calloc(1, len);
	int i;

	if (!p)
		abort();
	memcpy(p, "LUKS\xba\xbe\0\1", 8);
	strcpy((char *)p + 8, cipher);
	strcpy((char *)p + 40, mode);
	strcpy((char *)p + 72, hash);
	put32(p + 104, (uint32_t)(len / 512));
	put32(p + 108, key_bytes);
	put32(p + 164, 1000);
	strcpy((char *)p + 168, "c0ffee00-0000-4000-8000-000000000000");
	for (i = 0; i < 8; i++) {
		uint8_t *s = p + 208 + 48 * i;

		put32(s, active && i == 0 ? 0x00ac71f3 : 0x0000dead);
		put32(s + 4, active && i == 0 ? 1000 : 0);
		put32(s + 40, 8 + (uint32_t)i * (slot_bytes / 512));
		put32(s + 44, 4000);
	}
	push(l, p, len);
	free(p);
}

static void luks_seeds(struct seed_list *l)
{
	luks_seed(l, "aes", "xts-plain64", "sha256", 64, false);
	luks_seed(l, "aes", "cbc-essiv:sha256", "sha1", 32, false);
	luks_seed(l, "aes", "ecb-plain", "sha512", 16, true);
	luks_seed(l, "aes", "ctr-plain64", "sha256", 16, true);
}

size_t fuzz_make_seeds(const char *target, struct fuzz_input **out)
{
	struct seed_list l = {NULL, 0, 0};
	size_t i;

	if (strcmp(target, "snapshot") == 0) {
		snapshot_seeds(&l);
	} else if (strcmp(target, "luks") == 0) {
		luks_seeds(&l);
	} else {
		for (i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
			struct imgbuild *img = build_kind(&kinds[i], i + 1);
			size_t len = img->len;

			/* The header target only looks at the first cluster. */
			if (strcmp(target, "header") == 0 && len > img->cluster_bytes)
				len = (size_t)img->cluster_bytes;
			push(&l, img->bytes, len);
			imgbuild_free(img);
		}
	}
	*out = l.v;
	return l.n;
}

void fuzz_free_seeds(struct fuzz_input *seeds, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(seeds[i].bytes);
	free(seeds);
}
