/* SPDX-License-Identifier: MIT */
/*
 * cmd-info.c - qcowctl info [--chain] [--json] [-U] IMAGE: what qemu-img info tells, with the
 * same JSON field names where the fact is the same, plus feature bits and allocation.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "qcow2.h"
#include "qcowctl.h"

struct info_opts {
	bool chain;
	bool json;
	bool force_share;
};

/* Facts about one layer, gathered once and printed as text or JSON. */
struct layer_facts {
	const char *path;
	const char *format;
	uint64_t virtual_size;
	uint64_t disk_bytes;	 /* host allocation of the file */
	uint64_t used_clusters;	 /* qcow2: clusters with a non-zero refcount */
	bool used_unknown;	 /* the refcounts cannot be read: no allocation figure */
	struct qcow2_image *img; /* NULL for raw */
	bool luks_known;	 /* LUKS: the crypto header decoded into @luks */
	struct qcow2_luks_info luks;
};

static void info_usage(FILE *f)
{
	fprintf(f, "usage: qcowctl info [--chain] [--json] [-U] [--key IMAGE=KEYFILE] IMAGE\n\n"
		   "Print the facts of a qcow2 (or raw) image.\n\n"
		   "  --chain            also every backing file, top first\n"
		   "  --json             JSON, with qemu-img info's field names\n"
		   "  -U, --force-share  do not take (or respect) image locks\n"
		   "  --key IMG=KEYFILE  accepted: the encryption facts need no key\n"
		   "  -h, --help         this text\n");
}

static const char *compat_name(const struct qcow2_header *h)
{
	return h->version == 2 ? "0.10" : "1.1";
}

static void print_snapshots_text(const struct qcow2_image *img)
{
	uint32_t i, n = qcow2_image_snapshot_count(img);

	if (!n)
		return;
	printf("Snapshot list:\n%-10s%-18s%7s%20s%13s%11s%12s\n", "ID", "TAG", "VM SIZE", "DATE",
	       "VM CLOCK", "ICOUNT", "DISK SIZE");
	for (i = 0; i < n; i++) {
		const struct qcow2_snapshot *s = qcow2_image_snapshot(img, i);
		char vm[32], disk[32], date[32], icount[24] = "";
		time_t t = (time_t)s->date_sec;
		uint64_t ms = s->vm_clock_nsec / 1000000;
		struct tm tm;

		format_size(s->vm_state_bytes, vm, sizeof(vm));
		format_size(s->disk_bytes, disk, sizeof(disk));
		strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", localtime_r(&t, &tm));
		if (s->icount != ~0ull)
			snprintf(icount, sizeof(icount), "%" PRIu64, s->icount);
		printf("%-10s%-18s%7s%20s %02" PRIu64 ":%02" PRIu64 ":%02" PRIu64 ".%03" PRIu64
		       "%11s%12s\n",
		       s->id, s->name, vm, date, ms / 3600000, ms / 60000 % 60, ms / 1000 % 60,
		       ms % 1000, icount, disk);
	}
}

/* The encrypt block of "Format specific information", in qemu-img's order. */
static void print_encrypt_text(const struct layer_facts *f, const struct qcow2_header *h)
{
	const struct qcow2_luks_info *l = &f->luks;

	if (h->crypt_method == QCOW2_CRYPT_NONE)
		return;
	printf("    encrypt:\n");
	if (h->crypt_method == QCOW2_CRYPT_AES || !f->luks_known) {
		printf("        format: %s\n", h->crypt_method == QCOW2_CRYPT_AES ? "aes" : "luks");
		return;
	}
	printf("        ivgen alg: %s\n        hash alg: %s\n        cipher alg: %s\n"
	       "        uuid: %s\n",
	       l->ivgen_alg, l->hash_alg, l->cipher_alg, l->uuid);
	if (l->ivgen_hash_alg[0])
		printf("        ivgen hash alg: %s\n", l->ivgen_hash_alg);
	printf("        format: luks\n        cipher mode: %s\n        slots:\n", l->mode);
	for (int i = 0; i < QCOW2_LUKS_NUM_SLOTS; i++) {
		const struct qcow2_luks_slot *k = &l->slots[i];

		printf("            [%d]:\n                active: %s\n", i,
		       k->active ? "true" : "false");
		if (k->active)
			printf("                iters: %u\n", k->iterations);
		printf("                key offset: %" PRIu64 "\n",
		       (uint64_t)k->key_offset_sectors * 512);
		if (k->active)
			printf("                stripes: %u\n", k->stripes);
	}
	printf("        payload offset: %" PRIu64 "\n        master key iters: %u\n",
	       (uint64_t)l->payload_offset_sectors * 512, l->mk_iterations);
}

static void json_encrypt(struct json *j, const struct layer_facts *f, const struct qcow2_header *h)
{
	const struct qcow2_luks_info *l = &f->luks;

	if (h->crypt_method == QCOW2_CRYPT_NONE)
		return;
	json_begin_object(j, "encrypt");
	if (h->crypt_method == QCOW2_CRYPT_AES || !f->luks_known) {
		json_string(j, "format", h->crypt_method == QCOW2_CRYPT_AES ? "aes" : "luks");
		json_end_object(j);
		return;
	}
	json_string(j, "ivgen-alg", l->ivgen_alg);
	json_string(j, "hash-alg", l->hash_alg);
	json_string(j, "cipher-alg", l->cipher_alg);
	json_string(j, "uuid", l->uuid);
	if (l->ivgen_hash_alg[0])
		json_string(j, "ivgen-hash-alg", l->ivgen_hash_alg);
	json_string(j, "format", "luks");
	json_string(j, "cipher-mode", l->mode);
	json_begin_array(j, "slots");
	for (int i = 0; i < QCOW2_LUKS_NUM_SLOTS; i++) {
		const struct qcow2_luks_slot *k = &l->slots[i];

		json_begin_object(j, NULL);
		json_bool(j, "active", k->active);
		if (k->active)
			json_uint(j, "iters", k->iterations);
		json_uint(j, "key-offset", (uint64_t)k->key_offset_sectors * 512);
		if (k->active)
			json_uint(j, "stripes", k->stripes);
		json_end_object(j);
	}
	json_end_array(j);
	json_uint(j, "payload-offset", (uint64_t)l->payload_offset_sectors * 512);
	json_uint(j, "master-key-iters", l->mk_iterations);
	json_end_object(j);
}

static void print_text(const struct layer_facts *f)
{
	char a[32], b[32];

	format_size(f->virtual_size, a, sizeof(a));
	printf("image: %s\nfile format: %s\nvirtual size: %s (%" PRIu64 " bytes)\n", f->path,
	       f->format, a, f->virtual_size);
	format_size(f->disk_bytes, b, sizeof(b));
	printf("disk size: %s\n", b);
	if (!f->img)
		return;
	const struct qcow2_header *h = qcow2_image_header(f->img);
	if (h->crypt_method != QCOW2_CRYPT_NONE)
		printf("encrypted: yes\n");
	uint64_t cs = qcow2_image_cluster_bytes(f->img);
	format_size(f->used_clusters * cs, a, sizeof(a));
	printf("cluster_size: %" PRIu64 "\n", cs);
	if (h->backing_file[0])
		printf("backing file: %s\n", h->backing_file);
	if (h->backing_fmt[0])
		printf("backing file format: %s\n", h->backing_fmt);
	if (!f->used_unknown)
		printf("allocated: %s (%" PRIu64 " clusters in use)\n", a, f->used_clusters);
	print_snapshots_text(f->img);
	printf("Format specific information:\n    compat: %s\n", compat_name(h));
	printf("    compression type: %s\n",
	       h->compression_type == QCOW2_COMPRESSION_ZSTD ? "zstd" : "zlib");
	printf("    lazy refcounts: %s\n",
	       h->compat & QCOW2_COMPAT_LAZY_REFCOUNTS ? "true" : "false");
	printf("    refcount bits: %u\n", 1u << h->refcount_order);
	print_encrypt_text(f, h);
	printf("    corrupt: %s\n", h->incompat & QCOW2_INCOMPAT_CORRUPT ? "true" : "false");
	printf("    dirty: %s\n", h->incompat & QCOW2_INCOMPAT_DIRTY ? "true" : "false");
	printf("    extended l2: %s\n", h->incompat & QCOW2_INCOMPAT_EXTL2 ? "true" : "false");
	if (h->data_file[0])
		printf("    data file: %s\n    data file raw: %s\n", h->data_file,
		       h->autoclear & QCOW2_AUTOCLEAR_DATA_FILE_RAW ? "true" : "false");
	if (h->has_bitmaps_ext && (h->autoclear & QCOW2_AUTOCLEAR_BITMAPS))
		printf("    bitmaps: %u\n", h->nb_bitmaps);
	printf("    feature bits: incompatible %#" PRIx64 ", compatible %#" PRIx64
	       ", autoclear %#" PRIx64 "\n",
	       h->incompat, h->compat, h->autoclear);
}

static void json_snapshots(struct json *j, const struct qcow2_image *img)
{
	uint32_t i, n = qcow2_image_snapshot_count(img);

	if (!n)
		return;
	json_begin_array(j, "snapshots");
	for (i = 0; i < n; i++) {
		const struct qcow2_snapshot *s = qcow2_image_snapshot(img, i);
		json_begin_object(j, NULL);
		if (s->icount != ~0ull)
			json_uint(j, "icount", s->icount);
		json_uint(j, "vm-clock-nsec", s->vm_clock_nsec % 1000000000);
		json_string(j, "name", s->name);
		json_uint(j, "date-sec", s->date_sec);
		json_uint(j, "date-nsec", s->date_nsec);
		json_uint(j, "vm-clock-sec", s->vm_clock_nsec / 1000000000);
		json_string(j, "id", s->id);
		json_uint(j, "vm-state-size", s->vm_state_bytes);
		json_uint(j, "disk-size", s->disk_bytes);
		json_end_object(j);
	}
	json_end_array(j);
}

static void json_format_specific(struct json *j, const struct layer_facts *f,
				 const struct qcow2_header *h)
{
	json_begin_object(j, "format-specific");
	json_string(j, "type", "qcow2");
	json_begin_object(j, "data");
	json_string(j, "compat", compat_name(h));
	json_string(j, "compression-type",
		    h->compression_type == QCOW2_COMPRESSION_ZSTD ? "zstd" : "zlib");
	json_bool(j, "lazy-refcounts", h->compat & QCOW2_COMPAT_LAZY_REFCOUNTS);
	json_uint(j, "refcount-bits", 1u << h->refcount_order);
	json_encrypt(j, f, h);
	json_bool(j, "corrupt", h->incompat & QCOW2_INCOMPAT_CORRUPT);
	json_bool(j, "extended-l2", h->incompat & QCOW2_INCOMPAT_EXTL2);
	if (h->data_file[0]) {
		json_string(j, "data-file", h->data_file);
		json_bool(j, "data-file-raw", h->autoclear & QCOW2_AUTOCLEAR_DATA_FILE_RAW);
	}
	json_uint(j, "incompatible-features", h->incompat);
	json_uint(j, "compatible-features", h->compat);
	json_uint(j, "autoclear-features", h->autoclear);
	if (h->has_bitmaps_ext && (h->autoclear & QCOW2_AUTOCLEAR_BITMAPS))
		json_uint(j, "nb-bitmaps", h->nb_bitmaps);
	json_end_object(j);
	json_end_object(j);
}

static void print_json(struct json *j, const struct layer_facts *f, const char *full_backing)
{
	json_begin_object(j, NULL);
	json_uint(j, "virtual-size", f->virtual_size);
	json_string(j, "filename", f->path);
	json_string(j, "format", f->format);
	json_uint(j, "actual-size", f->disk_bytes);
	if (!f->img)
		json_bool(j, "dirty-flag", false); /* as qemu-img says of a raw file */
	if (f->img) {
		const struct qcow2_header *h = qcow2_image_header(f->img);
		json_uint(j, "cluster-size", qcow2_image_cluster_bytes(f->img));
		json_bool(j, "dirty-flag", h->incompat & QCOW2_INCOMPAT_DIRTY);
		if (h->backing_file[0]) {
			json_string(j, "backing-filename", h->backing_file);
			if (full_backing)
				json_string(j, "full-backing-filename", full_backing);
			if (h->backing_fmt[0])
				json_string(j, "backing-filename-format", h->backing_fmt);
		}
		if (!f->used_unknown)
			json_uint(j, "allocated-bytes",
				  f->used_clusters * qcow2_image_cluster_bytes(f->img));
		json_snapshots(j, f->img);
		json_format_specific(j, f, h);
		if (h->crypt_method != QCOW2_CRYPT_NONE)
			json_bool(j, "encrypted", true);
	}
	json_end_object(j);
}

static int gather(struct layer_facts *f, const char *path, const char *format, uint64_t size,
		  struct qcow2_image *img, struct qcow2_io *io)
{
	int r;

	memset(f, 0, sizeof(*f));
	f->path = path;
	f->format = format;
	f->virtual_size = size;
	f->img = img;
	r = qcow2_io_allocated(img ? qcow2_image_io(img) : io, &f->disk_bytes);
	/* Damaged refcounts (a bad refcount table entry) do not hide the facts the header and
	 * the tables still tell, as qemu-img info tells them: only the allocation figure, which
	 * needs them, is left out, with a warning saying why. */
	if (r == 0 && img && qcow2_image_used_clusters(img, &f->used_clusters) < 0) {
		error("warning: allocation of '%s' unknown: %s", path, qcow2_last_error());
		f->used_unknown = true;
	}
	/* A LUKS header that does not decode hides its facts only, as the allocation above. */
	if (r == 0 && img && qcow2_image_header(img)->crypt_method == QCOW2_CRYPT_LUKS) {
		f->luks_known = qcow2_luks_read_info(qcow2_image_io(img), qcow2_image_header(img),
						     &f->luks) == 0;
		if (!f->luks_known)
			error("warning: encryption header of '%s' unreadable: %s", path,
			      qcow2_last_error());
	}
	return r;
}

static void emit(struct json *j, const struct info_opts *o, const struct layer_facts *f,
		 const char *full_backing, bool first)
{
	if (o->json) {
		print_json(j, f, full_backing);
		return;
	}
	if (!first)
		printf("\n");
	print_text(f);
}

static int info_chain(const char *path, const struct info_opts *o)
{
	struct qcow2_chain_opts co = {.lock = !o->force_share, .top_blockdev = true};
	struct qcow2_chain *c;
	struct json j;
	unsigned i, n;
	int r;

	r = qcow2_chain_open(path, &co, &c);
	if (r < 0)
		return r;
	n = qcow2_chain_depth(c);
	json_init(&j, stdout);
	if (o->json)
		json_begin_array(&j, NULL);
	for (i = 0; i < n && r == 0; i++) {
		struct qcow2_layer_info li, below;
		struct layer_facts f;
		struct qcow2_io *io = NULL;

		qcow2_chain_layer(c, i, &li);
		if (!li.image &&
		    (r = qcow2_io_open(li.path, i == 0 ? QCOW2_OPEN_BLOCKDEV : 0, &io)) < 0)
			break;
		r = gather(&f, i == 0 ? path : li.path, li.format, li.size, li.image, io);
		if (r == 0)
			emit(&j, o, &f,
			     i + 1 < n && qcow2_chain_layer(c, i + 1, &below) == 0 ? below.path
										   : NULL,
			     i == 0);
		qcow2_io_close(io);
	}
	if (o->json) {
		json_end_array(&j);
		json_finish(&j);
	}
	qcow2_chain_close(c);
	return r;
}

static int info_one(const char *path, const struct info_opts *o)
{
	struct qcow2_chain_opts co = {.lock = !o->force_share, .top_blockdev = true};
	struct qcow2_image *img = NULL;
	struct qcow2_io *io = NULL;
	struct layer_facts f;
	bool is_qcow2 = false;
	uint64_t size;
	struct json j;
	int r;

	/* Not qcow2 by its magic (shorter than it too): raw, as qemu-img probes it. */
	r = qcow2_io_open(path, QCOW2_OPEN_BLOCKDEV, &io);
	if (r == 0)
		r = qcow2_header_probe(io, &is_qcow2, NULL);
	if (r == 0 && is_qcow2) {
		qcow2_io_close(io);
		io = NULL;
		r = qcow2_image_open_path(path, &co, &img);
	}
	if (r == 0 && !is_qcow2) {
		r = qcow2_io_size(io, &size);
		/* in whole sectors, rounded up, as QEMU's raw driver sizes a file */
		if (r == 0 && size % 512)
			size += 512 - size % 512;
		if (r == 0)
			r = gather(&f, path, "raw", size, NULL, io);
	} else if (r == 0) {
		r = gather(&f, path, "qcow2", qcow2_guest_bytes(qcow2_image_header(img)->size), img,
			   NULL);
	}
	if (r == 0) {
		json_init(&j, stdout);
		emit(&j, o, &f, NULL, true);
		if (o->json)
			json_finish(&j);
	}
	qcow2_image_close(img);
	qcow2_io_close(io);
	return r;
}

int cmd_info(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"chain", no_argument, NULL, 'c'},
	    {"json", no_argument, NULL, 'j'},
	    {"force-share", no_argument, NULL, 'U'},
	    KEY_LONGOPT, /* accepted: the facts need no key */
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct info_opts o = {0};
	int c, r;

	while ((c = next_option(argc, argv, "hU", longopts, "info")) != -1) {
		switch (c) {
		case 'c':
			o.chain = true;
			break;
		case 'j':
			o.json = true;
			break;
		case 'U':
			o.force_share = true;
			break;
		case OPT_KEY:
			key_add(optarg);
			break;
		case 'h':
			info_usage(stdout);
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind + 1 != argc) {
		info_usage(stderr);
		return EXIT_USAGE;
	}
	r = o.chain ? info_chain(argv[optind], &o) : info_one(argv[optind], &o);
	if (r < 0) {
		error("%s", qcow2_last_error());
		return EXIT_FAIL;
	}
	return EXIT_OK;
}
