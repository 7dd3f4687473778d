/* SPDX-License-Identifier: MIT */
/*
 * cmd-bitmap.c - qcowctl bitmap: the persistent dirty bitmaps of an image.
 *
 *   qcowctl bitmap list [--json] IMAGE
 *   qcowctl bitmap add|remove|clear|enable|disable IMAGE NAME, merge SRC DST IMAGE [-b SOURCE]
 *   qcowctl bitmap --add|--remove|...|--merge SRC IMAGE NAME (qemu-img bitmap's spelling)
 *   qcowctl map --bitmap NAME [--json] IMAGE (bitmap_map())
 *   qcowctl copy --bitmaps (bitmaps_copy())
 *
 * The changes are the library's (qcow2_image_bitmap_edit(), jobs/bitmap-edit.c), on the image
 * opened with QEMU's write locks (open_for_write()); this file parses and prints only.
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

/* The bytes a bit of @b covers; 0 for a granularity no bitmap can have (an entry read
 * leniently from a damaged directory keeps what it holds). */
static uint64_t granule(const struct qcow2_bitmap *b)
{
	return b->granularity_bits < 64 ? (uint64_t)1 << b->granularity_bits : 0;
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
		       b[i].name, indent, granule(&b[i]));
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
		json_uint(j, "granularity", granule(&b[i]));
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
	fprintf(f,
		"usage: qcowctl bitmap list [--json] [-U] IMAGE\n"
		"       qcowctl bitmap add [-g GRANULARITY] [--disabled] IMAGE NAME\n"
		"       qcowctl bitmap remove|clear|enable|disable IMAGE NAME\n"
		"       qcowctl bitmap merge [-b SOURCE [-F FMT]] SRC DST IMAGE\n"
		"       qcowctl bitmap (--add | --remove | --clear | --enable | --disable |\n"
		"                      --merge SRC)... [-g GRANULARITY] [-b SOURCE [-F FMT]]\n"
		"                      IMAGE NAME   (qemu-img bitmap's spelling)\n\n"
		"The persistent dirty bitmaps of a qcow2 image, as qemu-img bitmap and\n"
		"qemu-img info handle them.\n\n"
		"  list               name, granularity and flags of each bitmap\n"
		"  add                a new bitmap, empty and tracking writes (--disabled: not)\n"
		"  remove             delete the bitmap and free its clusters\n"
		"  clear              mark nothing dirty\n"
		"  enable, disable    start or stop tracking writes\n"
		"  merge SRC DST      mark dirty in DST what SRC marks (SRC of SOURCE with -b)\n"
		"  -g, --granularity GRANULARITY\n"
		"                     bytes per bit (512 B to 2 GiB, a power of two; default the\n"
		"                     cluster size, 4 KiB to 64 KiB)\n"
		"  --dry-run          say what would be done, change nothing\n"
		"  --json             JSON (list: qemu-img info's field names; --dry-run: the\n"
		"                     actions)\n"
		"  --output=json|human  as --json, or the text (the default)\n"
		"  -U, --force-share  list: do not take (or respect) image locks\n"
		"  -f qcow2           IMAGE's format (only qcow2)\n"
		"  -p, --progress     show a progress bar (default: on a terminal)\n"
		"  -q, --quiet        print nothing on success\n"
		"  --key IMAGE=KEYFILE  accepted: bitmaps are metadata, no key needed\n"
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
		if (n) {
			bitmaps_print_json(&j, b, n);
		} else { /* an empty list, where info prints none */
			json_begin_array(&j, "bitmaps");
			json_end_array(&j);
		}
		json_end_object(&j);
		json_finish(&j);
	} else if (r == 0) {
		bitmaps_print_text(b, n, "");
	}
	qcow2_bitmaps_free(b, n);
	qcow2_image_close(img);
	return r;
}

static const char *const op_names[] = {"add", "remove", "clear", "enable", "disable", "merge"};

struct bitmap_args {
	struct qcow2_bitmap_action act[16];
	size_t n;
	uint64_t granularity;
	bool disabled, force_share, list;
	const char *source, *source_fmt, *format;
	struct common_opts co;
};

static int push_action(struct bitmap_args *a, enum qcow2_bitmap_op op, const char *source)
{
	if (a->n == sizeof(a->act) / sizeof(a->act[0])) {
		error("too many bitmap actions");
		return -1;
	}
	a->act[a->n++] = (struct qcow2_bitmap_action){.op = op, .source = source};
	return 0;
}

/* A subcommand word (list, add, ...): its action; -1 if @w is none. */
static int subcommand(struct bitmap_args *a, const char *w)
{
	size_t i;

	if (strcmp(w, "list") == 0) {
		a->list = true;
		return 0;
	}
	for (i = 0; i < sizeof(op_names) / sizeof(op_names[0]); i++)
		if (strcmp(w, op_names[i]) == 0)
			return push_action(a, (enum qcow2_bitmap_op)i, NULL) < 0 ? -2 : 0;
	return -1;
}

static void print_actions(const struct bitmap_args *a, const char *image, const char *name)
{
	struct json j;
	size_t i;

	if (a->co.json) {
		json_init(&j, stdout);
		json_begin_object(&j, NULL);
		json_bool(&j, "dry-run", true);
		json_string(&j, "image", image);
		json_string(&j, "bitmap", name);
		json_begin_array(&j, "actions");
		for (i = 0; i < a->n; i++) {
			json_begin_object(&j, NULL);
			json_string(&j, "action", op_names[a->act[i].op]);
			if (a->act[i].op == QCOW2_BITMAP_ADD && a->act[i].granularity)
				json_uint(&j, "granularity", a->act[i].granularity);
			if (a->act[i].op == QCOW2_BITMAP_ADD)
				json_bool(&j, "disabled", a->act[i].disabled);
			if (a->act[i].op == QCOW2_BITMAP_MERGE) {
				json_string(&j, "source", a->act[i].source);
				if (a->source)
					json_string(&j, "source-image", a->source);
			}
			json_end_object(&j);
		}
		json_end_array(&j);
		json_end_object(&j);
		json_finish(&j);
		return;
	}
	for (i = 0; i < a->n; i++) {
		printf("would %s bitmap '%s' of '%s'", op_names[a->act[i].op], name, image);
		if (a->act[i].op == QCOW2_BITMAP_MERGE)
			printf(" from bitmap '%s' of '%s'", a->act[i].source,
			       a->source ? a->source : image);
		if (a->act[i].op == QCOW2_BITMAP_ADD && a->act[i].disabled)
			printf(" (disabled)");
		printf("\n");
	}
}

/* Only qcow2 images have bitmaps: a raw file is named as such, not as a read-only one. */
static int require_qcow2(const char *path)
{
	struct qcow2_io *io;
	bool is_qcow2 = false;
	int r = qcow2_io_open(path, QCOW2_OPEN_BLOCKDEV, &io);

	if (r < 0)
		return r;
	r = qcow2_header_probe(io, &is_qcow2, NULL);
	qcow2_io_close(io);
	if (r == 0 && !is_qcow2)
		r = qcow2_set_error(-ENOTSUP, "'%s' is not a qcow2 image: it has no bitmaps", path);
	return r;
}

/* The changes: the image open for writing alone (QEMU's write locks: refused, naming the
 * holder, while another process writes it), the source image for reading. */
static int bitmap_edit(struct bitmap_args *a, const char *image, const char *name)
{
	struct qcow2_chain_opts ro = {.lock = true, .top_blockdev = true};
	struct qcow2_image *source = NULL;
	struct qcow2_layer_info li;
	struct qcow2_chain *c;
	int r;

	if (a->source && a->source_fmt && strcmp(a->source_fmt, "qcow2") != 0)
		return qcow2_set_error(-ENOTSUP, "'%s': only qcow2 images have bitmaps", a->source);
	r = require_qcow2(image);
	if (r == 0)
		r = open_for_write(image, &c);
	if (r < 0)
		return r;
	r = qcow2_chain_layer(c, 0, &li);
	if (r == 0 && !li.image)
		r = qcow2_set_error(-ENOTSUP, "'%s' is not a qcow2 image: it has no bitmaps",
				    image);
	if (r == 0 && a->source)
		r = qcow2_image_open_path(a->source, &ro, &source);
	if (r == 0)
		r = qcow2_image_bitmap_edit(li.image, name, a->act, a->n, source, a->co.dry_run);
	if (r == 0 && a->co.dry_run)
		print_actions(a, image, name);
	qcow2_image_close(source);
	return finish_write(c, r);
}

enum { OPT_ADD = 0x200, OPT_REMOVE, OPT_CLEAR, OPT_ENABLE, OPT_DISABLE, OPT_MERGE, OPT_DISABLED };

static int parse(int argc, char **argv, struct bitmap_args *a)
{
	static const struct option longopts[] = {
	    {"add", no_argument, NULL, OPT_ADD},
	    {"remove", no_argument, NULL, OPT_REMOVE},
	    {"clear", no_argument, NULL, OPT_CLEAR},
	    {"enable", no_argument, NULL, OPT_ENABLE},
	    {"disable", no_argument, NULL, OPT_DISABLE},
	    {"merge", required_argument, NULL, OPT_MERGE},
	    {"disabled", no_argument, NULL, OPT_DISABLED},
	    {"granularity", required_argument, NULL, 'g'},
	    {"force-share", no_argument, NULL, 'U'},
	    {"help", no_argument, NULL, 'h'},
	    COMMON_LONGOPTS,
	    {NULL, 0, NULL, 0},
	};
	int c;

	while ((c = next_option(argc, argv, "hUpqg:b:F:f:", longopts, "bitmap")) != -1) {
		if (common_opt(c, &a->co))
			continue;
		switch (c) {
		case OPT_ADD:
		case OPT_REMOVE:
		case OPT_CLEAR:
		case OPT_ENABLE:
		case OPT_DISABLE:
			if (push_action(a, (enum qcow2_bitmap_op)(c - OPT_ADD), NULL) < 0)
				return EXIT_USAGE;
			break;
		case OPT_MERGE:
			if (push_action(a, QCOW2_BITMAP_MERGE, optarg) < 0)
				return EXIT_USAGE;
			break;
		case OPT_DISABLED:
			a->disabled = true;
			break;
		case 'g':
			if (parse_size(optarg, &a->granularity) < 0 || !a->granularity) {
				error("invalid granularity '%s'", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'b':
			a->source = optarg;
			break;
		case 'F':
			a->source_fmt = optarg;
			break;
		case 'f':
			a->format = optarg;
			break;
		case 'U':
			a->force_share = true;
			break;
		case 'h':
			bitmap_usage(stdout);
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	return -1;
}

/* Check the parsed words against the form used; -1 when they fit. */
static int check_form(struct bitmap_args *a, int nargs)
{
	size_t i, adds = 0;

	if (a->format && strcmp(a->format, "qcow2") != 0) {
		error("'-f %s': only qcow2 images have bitmaps", a->format);
		return EXIT_USAGE;
	}
	if (a->list ? nargs != 1 || a->n : nargs != 2 || !a->n) {
		bitmap_usage(stderr);
		return EXIT_USAGE;
	}
	for (i = 0; i < a->n; i++) {
		adds += a->act[i].op == QCOW2_BITMAP_ADD;
		a->act[i].granularity = a->granularity;
		a->act[i].disabled = a->disabled;
	}
	if ((a->granularity || a->disabled) && !adds) {
		error("-g and --disabled go with add only");
		return EXIT_USAGE;
	}
	/* qemu-img: --add --disable adds a disabled bitmap */
	for (i = 0; i + 1 < a->n; i++)
		if (a->act[i].op == QCOW2_BITMAP_ADD && a->act[i + 1].op == QCOW2_BITMAP_DISABLE)
			a->act[i].disabled = true;
	for (i = 0; i < a->n && a->act[i].op != QCOW2_BITMAP_MERGE; i++)
		;
	if (a->source && i == a->n) {
		error("-b goes with merge only");
		return EXIT_USAGE;
	}
	for (i = 0; i < a->n; i++)
		if (a->act[i].op == QCOW2_BITMAP_MERGE && !a->act[i].source) {
			bitmap_usage(stderr);
			return EXIT_USAGE;
		}
	return -1;
}

int cmd_bitmap(int argc, char **argv)
{
	struct bitmap_args a = {0};
	const char *pos[4];
	int r, nargs = 0, i;

	r = parse(argc, argv, &a);
	if (r >= 0)
		return r;
	/* subcommand form: WORD [SRC DST (merge)] IMAGE NAME; qemu-img's: IMAGE NAME */
	for (i = optind; i < argc; i++) {
		if (i == optind && a.n == 0 && !a.list) {
			r = subcommand(&a, argv[i]);
			if (r == 0)
				continue;
			if (r == -2)
				return EXIT_USAGE;
		}
		if (nargs == 4) {
			bitmap_usage(stderr);
			return EXIT_USAGE;
		}
		pos[nargs++] = argv[i];
	}
	/* merge SRC DST IMAGE: the qemu-img order (IMAGE NAME) with SRC in the action */
	if (a.n == 1 && a.act[0].op == QCOW2_BITMAP_MERGE && !a.act[0].source && nargs == 3) {
		a.act[0].source = pos[0]; /* pos[1], DST, is the bitmap changed */
		pos[0] = pos[2];
		nargs = 2;
	}
	r = check_form(&a, nargs);
	if (r >= 0)
		return r;
	if (a.list)
		r = bitmap_list(pos[0], a.co.json, a.force_share);
	else
		r = bitmap_edit(&a, pos[0], pos[1]);
	if (r < 0)
		return fail_lib();
	return EXIT_OK;
}

/* copy --bitmaps: the check before the copy (@dst NULL), or the bitmaps copied after it; a
 * bitmap in use left out is named in a warning. */
int bitmaps_copy(const char *src, const char *dst, bool skip_broken)
{
	struct qcow2_chain_opts ro = {.lock = true, .top_blockdev = true};
	struct qcow2_image *simg = NULL;
	struct qcow2_layer_info li;
	struct qcow2_chain *c = NULL;
	struct qcow2_bitmap *b = NULL;
	uint32_t n = 0, i;
	int r;

	r = qcow2_image_open_path(src, &ro, &simg);
	if (r < 0)
		return r == -EINVAL
			   ? qcow2_set_error(r, "'%s': --bitmaps needs a qcow2 source", src)
			   : r;
	if (!dst) {
		r = qcow2_image_bitmaps_copy(NULL, simg, skip_broken, true);
		qcow2_image_close(simg);
		return r;
	}
	r = qcow2_image_bitmaps(simg, false, &b, &n);
	for (i = 0; r == 0 && i < n; i++)
		if (b[i].flags & QCOW2_BITMAP_IN_USE)
			error("warning: '%s': inconsistent bitmap '%s' not copied", src, b[i].name);
	qcow2_bitmaps_free(b, n);
	if (r == 0)
		r = open_for_write(dst, &c);
	if (r == 0 && (r = qcow2_chain_layer(c, 0, &li)) == 0 && !li.image)
		r = qcow2_set_error(-ENOTSUP, "'%s' is not a qcow2 image: it has no bitmaps", dst);
	if (r == 0)
		r = qcow2_image_bitmaps_copy(li.image, simg, skip_broken, false);
	qcow2_image_close(simg);
	return finish_write(c, r);
}
