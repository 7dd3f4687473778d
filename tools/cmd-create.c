/* SPDX-License-Identifier: MIT */
/*
 * cmd-create.c - qcowctl create: a new qcow2 image or overlay, with qemu-img create's options
 * and defaults. The library writes it to a hidden file and names it only once it is complete
 * and durable, so an interrupted create leaves nothing new, or the complete image. Also
 * parse_size(), the size syntax qemu-img accepts, shared with resize.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"
#include "qcowctl.h"

struct create_args {
	struct qcow2_create_opts o;
	struct common_opts common;
	const char *image;
	const char *backing;
	const char *backing_fmt;
	bool unsafe; /* -u: do not open the backing file */
	bool have_size;
	struct qcow2_backing_probe probe; /* what the backing file is (unless -u) */
	bool probed;
	const char *cmd;	       /* whose -o it is, for messages (NULL: create) */
	struct qcow2_luks_params luks; /* -o encrypt.*, used with encrypt.format=luks */
	bool luks_set;		       /* encrypt.format=luks given */
	const char *luks_opt;	       /* an encrypt.* option other than the format, if any */
};

static void create_usage(FILE *f)
{
	fprintf(f,
		"usage: qcowctl create [-f qcow2] [-b BACKING [-F FMT]] [-u] [-o OPTIONS]\n"
		"                      [-q] [-p] [--dry-run] [--json] IMAGE [SIZE]\n\n"
		"Create a qcow2 image, or an overlay of BACKING, as qemu-img create does.\n\n"
		"  -b BACKING   the backing file, stored exactly as given: a relative name is\n"
		"               relative to IMAGE's directory\n"
		"  -F FMT       its format, qcow2 or raw (default: probed, and stored)\n"
		"  -u           do not open BACKING (SIZE and -F are then required)\n"
		"  -o OPTIONS   comma-separated, any of:\n"
		"                 cluster_size=SIZE       512 to 2M, a power of two (64K)\n"
		"                 compat=0.10|1.1|v2|v3   (1.1)\n"
		"                 refcount_bits=N         1, 2, 4, 8, 16, 32 or 64 (16)\n"
		"                 lazy_refcounts=on|off   (off; needs compat=1.1)\n"
		"                 extended_l2=on|off      (off; compat=1.1, cluster_size >= 16K)\n"
		"                 compression_type=zlib|zstd   for compressed clusters (zlib;\n"
		"                                         zstd needs compat=1.1)\n"
		"                 preallocation=off|metadata|falloc|full   (off)\n"
		"                     metadata: every cluster allocated, the file sparse;\n"
		"                     falloc: and its blocks reserved; full: and zeros written;\n"
		"                     with BACKING only with extended_l2=on\n"
		"                 backing_file=, backing_fmt=, size=   as -b, -F and SIZE\n"
		"                 encrypt.format=luks     encrypted; the passphrase from\n"
		"                     --key IMAGE=KEYFILE (the file is the passphrase)\n"
		"                 encrypt.cipher-alg=aes-128|aes-192|aes-256   (aes-256)\n"
		"                 encrypt.cipher-mode=xts|cbc|ecb|ctr  (xts)\n"
		"                 encrypt.ivgen-alg=plain64|plain|essiv  (plain64)\n"
		"                 encrypt.ivgen-hash-alg=HASH, encrypt.hash-alg=HASH  (sha256)\n"
		"                 encrypt.iter-time=MS    PBKDF2 time to unlock (2000)\n"
		"  SIZE         bytes, or with a suffix k/K, M, G, T, P, E (1.5G is fine), b for\n"
		"               bytes; rounded up to 512; default: BACKING's virtual size\n"
		"  --key IMAGE=KEYFILE  the passphrase of the new encrypted IMAGE\n"
		"  -q, --quiet  print nothing on success, no progress bar\n"
		"  -p, --progress  show a progress bar (preallocation)\n"
		"  --dry-run    print what would be created and create nothing\n"
		"  --json       print the new image's facts as JSON (qemu-img info's names)\n"
		"  --output=json|human  as --json, or the text (the default)\n"
		"  -h, --help   this text\n\n"
		"IMAGE is written as an unnamed file in its directory and given its name only\n"
		"when complete and on disk (replacing an existing file then): an interrupted,\n"
		"killed or failed create leaves nothing new, or the complete image. An existing\n"
		"IMAGE that another process holds open for writing is not replaced.\n");
}

/* ---- sizes, as qemu-img reads them ---- */

static int unit_shift(char c)
{
	switch (c) {
	case 'b':
	case 'B':
		return 0;
	case 'k':
	case 'K':
		return 10;
	case 'm':
	case 'M':
		return 20;
	case 'g':
	case 'G':
		return 30;
	case 't':
	case 'T':
		return 40;
	case 'p':
	case 'P':
		return 50;
	case 'e':
	case 'E':
		return 60;
	default:
		return -1;
	}
}

int parse_size(const char *s, uint64_t *out)
{
	uint64_t whole = 0, frac = 0, scale = 1, v;
	const char *p = s;
	int shift = 0;

	if (*p < '0' || *p > '9')
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++)
		if (__builtin_mul_overflow(whole, 10, &whole) ||
		    __builtin_add_overflow(whole, (uint64_t)(*p - '0'), &whole))
			return -ERANGE;
	if (*p == '.') {
		for (p++; *p >= '0' && *p <= '9'; p++)
			if (scale < 1000000000000ull) {
				frac = frac * 10 + (uint64_t)(*p - '0');
				scale *= 10;
			}
	}
	if (*p) {
		shift = unit_shift(*p);
		if (shift < 0 || p[1])
			return -EINVAL;
	}
	if (scale > 1 && shift == 0)
		return -EINVAL; /* a fraction of a byte */
	if (shift == 60 ? whole > 7 : whole > (UINT64_MAX >> shift))
		return -ERANGE;
	v = (whole << shift) + (uint64_t)((long double)frac / scale * (1ull << shift));
	if (v > INT64_MAX)
		return -ERANGE;
	*out = v;
	return 0;
}

/* ---- -o OPTIONS ---- */

static int parse_onoff(const char *cmd, const char *key, const char *val, bool *out)
{
	if (!strcmp(val, "on") || !strcmp(val, "true") || !strcmp(val, "yes"))
		*out = true;
	else if (!strcmp(val, "off") || !strcmp(val, "false") || !strcmp(val, "no"))
		*out = false;
	else
		return usage_error(cmd, "invalid %s '%s': on or off", key, val), -1;
	return 0;
}

/* log2 of @v if it is a power of two, else @bad. */
static uint32_t log2_or(uint64_t v, uint32_t bad)
{
	return v && !(v & (v - 1)) ? (uint32_t)__builtin_ctzll(v) : bad;
}

static int parse_compat(const char *cmd, const char *val, uint32_t *version)
{
	if (!strcmp(val, "0.10") || !strcmp(val, "v2"))
		*version = 2;
	else if (!strcmp(val, "1.1") || !strcmp(val, "v3"))
		*version = 3;
	else
		return usage_error(cmd, "invalid compat '%s': 0.10 (v2) or 1.1 (v3)", val), -1;
	return 0;
}

static int parse_prealloc(const char *cmd, const char *val, enum qcow2_prealloc *p)
{
	int i;

	for (i = QCOW2_PREALLOC_OFF; i <= QCOW2_PREALLOC_FULL; i++)
		if (!strcmp(val, qcow2_prealloc_name((enum qcow2_prealloc)i))) {
			*p = (enum qcow2_prealloc)i;
			return 0;
		}
	usage_error(cmd, "invalid preallocation '%s': off, metadata, falloc or full", val);
	return -1;
}

static int parse_compression(const char *cmd, const char *val, uint8_t *type)
{
	if (!strcmp(val, "zlib"))
		*type = QCOW2_COMPRESSION_ZLIB;
	else if (!strcmp(val, "zstd"))
		*type = QCOW2_COMPRESSION_ZSTD;
	else
		return usage_error(cmd, "invalid compression_type '%s': zlib or zstd", val), -1;
	return 0;
}

/* Which QCOW2_CREATE_SET_* bit option @key sets. */
static unsigned set_bit(const char *key)
{
	if (!strcmp(key, "cluster_size"))
		return QCOW2_CREATE_SET_CLUSTER_SIZE;
	if (!strcmp(key, "compat"))
		return QCOW2_CREATE_SET_COMPAT;
	if (!strcmp(key, "extended_l2"))
		return QCOW2_CREATE_SET_EXTENDED_L2;
	return QCOW2_CREATE_SET_OTHER;
}

static int parse_number_opt(const char *cmd, const char *key, const char *val, uint64_t *out)
{
	if (parse_size(val, out) < 0)
		return usage_error(cmd, "invalid %s '%s'", key, val), -1;
	return 0;
}

int parse_create_option(const char *cmd, struct qcow2_create_opts *o, const char *key,
			const char *val)
{
	uint64_t v;

	if (!strcmp(key, "cluster_size")) {
		if (parse_number_opt(cmd, key, val, &v) < 0)
			return -1;
		o->cluster_bits = log2_or(v, 0); /* 0: refused with the limits named */
	} else if (!strcmp(key, "refcount_bits")) {
		if (parse_number_opt(cmd, key, val, &v) < 0)
			return -1;
		o->refcount_order = log2_or(v, 99);
	} else if (!strcmp(key, "compat")) {
		return parse_compat(cmd, val, &o->version);
	} else if (!strcmp(key, "lazy_refcounts")) {
		return parse_onoff(cmd, key, val, &o->lazy_refcounts);
	} else if (!strcmp(key, "extended_l2")) {
		return parse_onoff(cmd, key, val, &o->extended_l2);
	} else if (!strcmp(key, "preallocation")) {
		return parse_prealloc(cmd, val, &o->prealloc);
	} else if (!strcmp(key, "compression_type")) {
		return parse_compression(cmd, val, &o->compression_type);
	} else {
		return 1;
	}
	return 0;
}

/* -o encrypt.KEY=VALUE (and the legacy encryption=on): LUKS only, the passphrase by --key. */
static int parse_encrypt(struct create_args *a, const char *key, const char *val)
{
	struct qcow2_luks_params *p = &a->luks;
	const char *cmd = a->cmd ? a->cmd : "create";
	uint64_t v;

	if (!strcmp(key, "encryption") || (!strcmp(key, "encrypt.format") && strcmp(val, "luks"))) {
		if (!strcmp(key, "encrypt.format") && strcmp(val, "aes"))
			return error("invalid encrypt.format '%s': luks", val), -1;
		return error("legacy AES encryption is not created (QEMU deprecates it, "
			     "and it is read only here): use encrypt.format=luks"),
		       -1;
	}
	if (!strcmp(key, "encrypt.format")) {
		a->luks_set = true;
		return 0;
	}
	a->luks_opt = key;
	if (!strcmp(key, "encrypt.key-secret"))
		return error("encrypt.key-secret: give the passphrase with --key IMAGE=KEYFILE"),
		       -1;
	if (!strcmp(key, "encrypt.cipher-alg"))
		p->cipher_alg = val;
	else if (!strcmp(key, "encrypt.cipher-mode"))
		p->cipher_mode = val;
	else if (!strcmp(key, "encrypt.ivgen-alg"))
		p->ivgen_alg = val;
	else if (!strcmp(key, "encrypt.ivgen-hash-alg"))
		p->ivgen_hash_alg = val;
	else if (!strcmp(key, "encrypt.hash-alg"))
		p->hash_alg = val;
	else if (!strcmp(key, "encrypt.iter-time")) {
		if (parse_number_opt(cmd, key, val, &v) < 0 || v > UINT32_MAX)
			return error("invalid encrypt.iter-time '%s'", val), -1;
		p->iter_time_ms = (uint32_t)v;
	} else {
		usage_error(cmd, "unknown option '%s' in -o", key);
		return -1;
	}
	return 0;
}

static int parse_one(void *ctx, const char *key, const char *val)
{
	struct create_args *a = ctx;
	const char *cmd = a->cmd ? a->cmd : "create";
	int r;

	if (!strncmp(key, "encrypt.", 8) || !strcmp(key, "encryption"))
		r = parse_encrypt(a, key, val);
	else
		r = parse_create_option(cmd, &a->o, key, val);
	if (r < 0)
		return r;
	if (r == 1) {
		if (!strcmp(key, "backing_file")) {
			a->backing = val;
		} else if (!strcmp(key, "backing_fmt")) {
			a->backing_fmt = val;
		} else if (!strcmp(key, "size")) {
			if (parse_number_opt(cmd, key, val, &a->o.size) < 0)
				return -1;
			a->have_size = true;
		} else {
			usage_error(cmd, "unknown option '%s' in -o", key);
			return -1;
		}
	}
	a->o.set |= set_bit(key);
	return 0;
}

int parse_o_list(const char *cmd, char *list,
		 int (*one)(void *ctx, const char *key, const char *val), void *ctx)
{
	char *save = NULL, *item, *eq;

	for (item = strtok_r(list, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
		eq = strchr(item, '=');
		if (!eq) {
			usage_error(cmd, "option '%s' in -o needs a value (key=value)", item);
			return -1;
		}
		*eq = '\0';
		if (one(ctx, item, eq + 1) < 0)
			return -1;
	}
	return 0;
}

int parse_image_options(char *list, const char *cmd, struct qcow2_create_opts *o,
			const char **backing, const char **backing_fmt)
{
	struct create_args a = {.o = *o, .cmd = cmd};

	qcow2_luks_params_default(&a.luks);
	if (parse_o_list(cmd, list, parse_one, &a) < 0)
		return -1;
	if (a.have_size)
		return error("option 'size' in -o: %s takes the size of its source", cmd), -1;
	if (a.luks_opt && !a.luks_set)
		return error("%s needs encrypt.format=luks", a.luks_opt), -1;
	if (a.luks_set) { /* the passphrase is the caller's to find (--key DEST=KEYFILE) */
		static struct qcow2_luks_params luks;

		luks = a.luks;
		a.o.luks = &luks;
		a.o.luks_key = NULL;
	}
	*o = a.o;
	if (a.backing)
		*backing = a.backing;
	if (a.backing_fmt)
		*backing_fmt = a.backing_fmt;
	return 0;
}

/* ---- arguments ---- */

static int parse_args(int argc, char **argv, struct create_args *a)
{
	static const struct option longopts[] = {
	    COMMON_LONGOPTS, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
	int c;

	while ((c = next_option(argc, argv, "b:F:f:o:uhpq", longopts, "create")) != -1) {
		if (common_opt(c, &a->common))
			continue;
		switch (c) {
		case 'b':
			a->backing = optarg;
			break;
		case 'F':
			a->backing_fmt = optarg;
			break;
		case 'u':
			a->unsafe = true;
			break;
		case 'f':
			if (strcmp(optarg, "qcow2") != 0)
				return usage_error("create",
						   "cannot create '%s' images: only qcow2", optarg),
				       -1;
			break;
		case 'o':
			if (parse_o_list("create", optarg, parse_one, a) < 0)
				return -1;
			break;
		case 'h':
			create_usage(stdout);
			exit(EXIT_OK);
		default:
			return -1;
		}
	}
	if (argc - optind < 1 || argc - optind > 2)
		return usage_error("create", "takes IMAGE [SIZE]"), -1;
	a->image = argv[optind];
	if (a->luks_opt && !a->luks_set)
		return error("%s needs encrypt.format=luks", a->luks_opt), -1;
	if (a->luks_set) {
		a->o.luks = &a->luks;
		a->o.luks_key = key_for(a->image);
		if (!a->o.luks_key)
			return error("encrypt.format=luks needs the passphrase of '%s': --key "
				     "%s=KEYFILE",
				     a->image, a->image),
			       -1;
	}
	if (argc - optind == 2) {
		if (parse_size(argv[optind + 1], &a->o.size) < 0)
			return usage_error(
				   "create",
				   "invalid size '%s' (bytes, or with a suffix k, M, G, T, P, E)",
				   argv[optind + 1]),
			       -1;
		a->have_size = true;
	}
	return 0;
}

/* Learn the backing file's format and size (unless -u), and settle SIZE and the stored
 * backing format. */
static int settle_backing(struct create_args *a)
{
	if (!a->backing || !a->backing[0]) {
		if (a->backing_fmt)
			return error("-F needs -b"), -1;
		if (!a->have_size)
			return error("a SIZE is needed without a backing file"), -1;
		return 0;
	}
	a->o.backing_file = a->backing;
	if (a->unsafe) {
		if (!a->have_size || !a->backing_fmt)
			return error("-u needs SIZE and -F"), -1;
		a->o.backing_fmt = a->backing_fmt;
		return 0;
	}
	if (qcow2_create_probe_backing(a->image, a->backing, a->backing_fmt, &a->probe) < 0)
		return error("cannot create '%s': %s", a->image, qcow2_last_error()), -1;
	a->probed = true;
	a->o.backing_fmt = a->backing_fmt ? a->backing_fmt : a->probe.format;
	if (!a->have_size)
		a->o.size = a->probe.size;
	return 0;
}

/* ---- output ---- */

static void print_json(const struct create_args *a, bool replaces)
{
	const struct qcow2_create_opts *o = &a->o;
	struct json j;

	json_init(&j, stdout);
	json_begin_object(&j, NULL);
	json_string(&j, "filename", a->image);
	json_string(&j, "format", "qcow2");
	json_uint(&j, "virtual-size", o->size);
	json_uint(&j, "cluster-size", 1ull << o->cluster_bits);
	if (o->backing_file) {
		json_string(&j, "backing-filename", o->backing_file);
		if (a->probed)
			json_string(&j, "full-backing-filename", a->probe.path);
		json_string(&j, "backing-filename-format", o->backing_fmt);
	}
	json_string(&j, "preallocation", qcow2_prealloc_name(o->prealloc));
	if (o->luks)
		json_bool(&j, "encrypted", true);
	json_bool(&j, "replaces-existing", replaces);
	json_bool(&j, "dry-run", a->common.dry_run);
	json_begin_object(&j, "format-specific");
	json_string(&j, "type", "qcow2");
	json_begin_object(&j, "data");
	json_string(&j, "compat", o->version == 2 ? "0.10" : "1.1");
	json_bool(&j, "lazy-refcounts", o->lazy_refcounts);
	json_uint(&j, "refcount-bits", 1u << o->refcount_order);
	json_bool(&j, "extended-l2", o->extended_l2);
	json_string(&j, "compression-type",
		    o->compression_type == QCOW2_COMPRESSION_ZSTD ? "zstd" : "zlib");
	json_end_object(&j);
	json_end_object(&j);
	json_end_object(&j);
	json_finish(&j);
}

static void print_options(const struct qcow2_create_opts *o)
{
	printf("compat=%s cluster_size=%llu refcount_bits=%u lazy_refcounts=%s extended_l2=%s "
	       "preallocation=%s",
	       o->version == 2 ? "0.10" : "1.1", 1ull << o->cluster_bits, 1u << o->refcount_order,
	       o->lazy_refcounts ? "on" : "off", o->extended_l2 ? "on" : "off",
	       qcow2_prealloc_name(o->prealloc));
}

static void print_plan(const struct create_args *a, bool replaces)
{
	const struct qcow2_create_opts *o = &a->o;
	char sz[32];

	format_size(o->size, sz, sizeof(sz));
	printf("would create '%s': qcow2, virtual size %s (%" PRIu64 " bytes)\n", a->image, sz,
	       o->size);
	printf("  options: ");
	print_options(o);
	printf("\n");
	if (o->backing_file)
		printf("  backing file: '%s' (stored as given)%s%s%s, format %s\n", o->backing_file,
		       a->probed ? ", resolves to '" : "", a->probed ? a->probe.path : "",
		       a->probed ? "'" : "", o->backing_fmt);
	if (o->luks)
		printf("  encrypted: luks, %s %s-%s, hash %s, the passphrase from --key\n",
		       a->luks.cipher_alg, a->luks.cipher_mode, a->luks.ivgen_alg,
		       a->luks.hash_alg);
	if (replaces)
		printf("  replaces the existing file '%s'\n", a->image);
	printf("nothing was created (--dry-run)\n");
}

static void print_done(const struct create_args *a)
{
	printf("Formatting '%s', fmt=qcow2 size=%" PRIu64, a->image, a->o.size);
	if (a->o.backing_file)
		printf(" backing_file=%s backing_fmt=%s", a->o.backing_file, a->o.backing_fmt);
	if (a->o.luks)
		printf(" encrypt.format=luks encrypt.cipher-alg=%s encrypt.cipher-mode=%s "
		       "encrypt.ivgen-alg=%s encrypt.hash-alg=%s",
		       a->luks.cipher_alg, a->luks.cipher_mode, a->luks.ivgen_alg,
		       a->luks.hash_alg);
	printf(" ");
	print_options(&a->o);
	printf("\n");
}

/* The options alone, before the backing file is opened (the size may come from it). */
static int check_options(const struct create_args *a)
{
	struct qcow2_create_opts o = a->o;

	o.size = 0;
	o.backing_file = a->backing;
	o.backing_fmt = NULL;
	return qcow2_create_opts_check(&o);
}

int cmd_create(int argc, char **argv)
{
	struct create_args a = {.common = {.progress = PROGRESS_AUTO}};
	struct progress prog;
	struct qcow2_job job;
	bool replaces = false;

	qcow2_create_opts_default(&a.o);
	qcow2_luks_params_default(&a.luks);
	if (parse_args(argc, argv, &a) < 0)
		return EXIT_USAGE;
	if (check_options(&a) < 0)
		return error("cannot create '%s': %s", a.image, qcow2_last_error()), EXIT_USAGE;
	if (settle_backing(&a) < 0)
		return EXIT_FAIL;
	a.o.size = (a.o.size + 511) & ~511ull; /* as qemu-img, which rounds up to sectors */
	if (qcow2_create_opts_check(&a.o) < 0 || qcow2_create_check_target(a.image, &replaces) < 0)
		return error("cannot create '%s': %s", a.image, qcow2_last_error()), EXIT_FAIL;
	if (a.common.dry_run) {
		if (a.common.json)
			print_json(&a, replaces);
		else
			print_plan(&a, replaces);
		return EXIT_OK;
	}
	catch_interrupts();
	progress_init(&prog, &a.common, "preallocating");
	job_init(&job, &prog);
	a.o.job = &job;
	if (qcow2_image_create(a.image, &a.o) < 0) {
		progress_end(&prog);
		return fail_lib();
	}
	progress_end(&prog);
	if (a.common.json)
		print_json(&a, replaces);
	else if (a.common.progress != PROGRESS_QUIET)
		print_done(&a);
	return EXIT_OK;
}
