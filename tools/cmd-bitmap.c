/* SPDX-License-Identifier: MIT */
/*
 * cmd-bitmap.c - qcowctl bitmap: the persistent dirty bitmaps of an image.
 *
 *   qcowctl bitmap list [--json] IMAGE
 *   qcowctl map --bitmap NAME [--json] IMAGE (bitmap_map())
 *
 * The listing is what qemu-img info shows of the bitmaps (flags, name, granularity; the JSON
 * shape of its "bitmaps" array); info prints the same block through bitmaps_print_text() and
 * bitmaps_print_json(). The directory is read leniently: an entry QEMU would refuse is listed
 * with a warning saying why, so that a damaged image's bitmaps can still be seen and dropped.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"
#include "qcowctl.h"

int bitmaps_load(struct qcow2_image *img, const char *path, struct qcow2_bitmap **b, uint32_t *n)
{
	uint32_t i;
	int r = qcow2_image_bitmaps(img, true, b, n);

	if (r < 0)
		return r;
	for (i = 0; i < *n; i++)
		if ((*b)[i].invalid)
			error("warning: '%s': bitmap '%s' %s", path, (*b)[i].name, (*b)[i].invalid);
	return 0;
}

/* QEMU's names of the flags it reports, in its order. */
static const struct {
	uint32_t bit;
	const char *name;
} flag_names[] = {{QCOW2_BITMAP_IN_USE, "in-use"}, {QCOW2_BITMAP_AUTO, "auto"}};

void bitmaps_print_text(const struct qcow2_bitmap *b, uint32_t n, const char *indent)
{
	uint32_t i, k, f;

	if (!n)
		return;
	printf("%sbitmaps:\n", indent);
	for (i = 0; i < n; i++) {
		printf("%s    [%" PRIu32 "]:\n%s        flags:\n", indent, i, indent);
		for (k = f = 0; f < sizeof(flag_names) / sizeof(flag_names[0]); f++)
			if (b[i].flags & flag_names[f].bit)
				printf("%s            [%" PRIu32 "]: %s\n", indent, k++,
				       flag_names[f].name);
		printf("%s        name: %s\n%s        granularity: %" PRIu64 "\n", indent,
		       b[i].name, indent, (uint64_t)1 << b[i].granularity_bits);
	}
}

void bitmaps_print_json(struct json *j, const struct qcow2_bitmap *b, uint32_t n)
{
	uint32_t i, f;

	if (!n)
		return;
	json_begin_array(j, "bitmaps");
	for (i = 0; i < n; i++) {
		json_begin_object(j, NULL);
		json_begin_array(j, "flags");
		for (f = 0; f < sizeof(flag_names) / sizeof(flag_names[0]); f++)
			if (b[i].flags & flag_names[f].bit)
				json_string(j, NULL, flag_names[f].name);
		json_end_array(j);
		json_string(j, "name", b[i].name);
		json_uint(j, "granularity", (uint64_t)1 << b[i].granularity_bits);
		json_end_object(j);
	}
	json_end_array(j);
}

/* Bit @i of @bits. */
static bool bit_at(const uint8_t *bits, uint64_t i)
{
	return bits[i / 8] >> (i % 8) & 1;
}

/* One extent of the dirty map, as qemu-img map prints an NBD export's block status with
 * x-dirty-bitmap: a dirty range reads as a hole ("present": false, "data": false), a clean one
 * as data at its own offset. Text: only the dirty ranges. */
static void map_extent(uint64_t start, uint64_t len, bool dirty, bool json, bool first, bool last)
{
	if (json) {
		printf("%s{ \"start\": %" PRIu64 ", \"length\": %" PRIu64
		       ", \"depth\": 0, \"present\": %s, \"zero\": false, \"data\": %s",
		       first ? "[" : "", start, len, dirty ? "false" : "true",
		       dirty ? "false" : "true");
		if (!dirty)
			printf(", \"offset\": %" PRIu64, start);
		printf(last ? "}]\n" : "},\n");
	} else if (dirty) {
		printf("0x%-14" PRIx64 "0x%" PRIx64 "\n", start, len);
	}
}

int bitmap_map(const char *path, const char *name, bool json, bool force_share)
{
	struct qcow2_chain_opts co = {.lock = !force_share, .top_blockdev = true};
	struct qcow2_bitmap *b = NULL;
	struct qcow2_image *img;
	uint64_t nbits = 0, i, start, g, size;
	uint8_t *bits = NULL;
	uint32_t n = 0, k;
	bool first = true;
	int r;

	r = qcow2_image_open_path(path, &co, &img);
	if (r < 0)
		return r;
	size = qcow2_image_header(img)->size;
	r = bitmaps_load(img, path, &b, &n);
	for (k = 0; r == 0 && k < n && strcmp(b[k].name, name); k++)
		;
	if (r == 0 && k == n)
		r = qcow2_set_error(-ENOENT, "'%s': no bitmap '%s'", path, name);
	if (r == 0)
		r = qcow2_image_bitmap_read(img, &b[k], &bits, &nbits);
	if (r == 0 && !json)
		printf("%-16s%s\n", "Offset", "Length");
	for (i = 0; r == 0 && i < nbits; first = false) {
		bool dirty = bit_at(bits, i);

		g = (uint64_t)1 << b[k].granularity_bits;
		for (start = i; i < nbits && bit_at(bits, i) == dirty; i++)
			;
		/* the last granule ends with the disk */
		map_extent(start * g, (i == nbits ? size : i * g) - start * g, dirty, json, first,
			   i == nbits);
	}
	if (r == 0 && json && nbits == 0)
		printf("[]\n");
	free(bits);
	qcow2_bitmaps_free(b, n);
	qcow2_image_close(img);
	return r;
}

static void bitmap_usage(FILE *f)
{
	fprintf(f, "usage: qcowctl bitmap list [--json] [-U] IMAGE\n\n"
		   "The persistent dirty bitmaps of a qcow2 image.\n\n"
		   "  list               name, granularity and flags of each bitmap, as qemu-img\n"
		   "                     info shows them\n"
		   "  --json             JSON, with qemu-img info's field names\n"
		   "  -U, --force-share  do not take (or respect) image locks\n"
		   "  -h, --help         this text\n");
}

static int bitmap_list(const char *path, bool json, bool force_share)
{
	struct qcow2_chain_opts co = {.lock = !force_share, .top_blockdev = true};
	struct qcow2_image *img;
	struct qcow2_bitmap *b;
	struct json j;
	uint32_t n;
	int r;

	r = qcow2_image_open_path(path, &co, &img);
	if (r < 0)
		return r;
	r = bitmaps_load(img, path, &b, &n);
	if (r == 0 && json) {
		json_init(&j, stdout);
		json_begin_object(&j, NULL);
		json_string(&j, "filename", path);
		if (n)
			bitmaps_print_json(&j, b, n);
		else
			json_begin_array(&j, "bitmaps"), json_end_array(&j);
		json_end_object(&j);
		json_finish(&j);
	} else if (r == 0) {
		bitmaps_print_text(b, n, "");
	}
	qcow2_bitmaps_free(b, n);
	qcow2_image_close(img);
	return r;
}

int cmd_bitmap(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"force-share", no_argument, NULL, 'U'},
	    {"help", no_argument, NULL, 'h'},
	    COMMON_LONGOPTS,
	    {NULL, 0, NULL, 0},
	};
	struct common_opts co = {0};
	bool force_share = false;
	const char *sub = NULL;
	int c, r;

	while ((c = next_option(argc, argv, "hUpq", longopts, "bitmap")) != -1) {
		if (common_opt(c, &co))
			continue;
		switch (c) {
		case 'U':
			force_share = true;
			break;
		case 'h':
			bitmap_usage(stdout);
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind < argc)
		sub = argv[optind];
	if (!sub || strcmp(sub, "list") != 0 || optind + 2 != argc) {
		bitmap_usage(stderr);
		return EXIT_USAGE;
	}
	r = bitmap_list(argv[optind + 1], co.json, force_share);
	if (r < 0)
		return fail_lib();
	return EXIT_OK;
}
