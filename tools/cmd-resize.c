/* SPDX-License-Identifier: MIT */
/*
 * cmd-resize.c - qcowctl resize [--shrink] IMAGE [+|-]SIZE: grow the virtual size of a qcow2
 * image, as qemu-img resize does, or with --shrink make it smaller. The library writes a
 * larger L1 table elsewhere first and then switches the header to it in one sector write, so
 * an interrupted grow leaves the image at its old size or its new one; a shrink deletes what
 * lies past the new end first, then writes the smaller size.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"
#include "qcowctl.h"

struct resize_args {
	struct common_opts common;
	const char *image;
	const char *size_arg;
	bool relative;
	bool minus;    /* "-SIZE": the amount to take away */
	bool shrink;   /* --shrink: a smaller size is allowed */
	uint64_t size; /* absolute, or the amount to add (or take away) */
};

static void resize_usage(FILE *f)
{
	fprintf(f, "usage: qcowctl resize [--shrink] [-q] [--dry-run] [--json] [-f qcow2] IMAGE\n"
		   "                      [+|-]SIZE\n\n"
		   "Grow IMAGE's virtual size to SIZE, or by SIZE with '+': bytes, or with a\n"
		   "suffix k/K, M, G, T, P, E; a multiple of 512. The new range reads as zeros,\n"
		   "also where a longer backing file has data. Internal snapshots keep their own\n"
		   "size and content. Refused while another process holds IMAGE for writing.\n\n"
		   "A larger L1 table is written first and the header switches to it and to the\n"
		   "new size in one write: an interrupted resize leaves the old size or the new\n"
		   "one, and a valid image either way.\n\n"
		   "With --shrink, SIZE (or '-' SIZE, taken away) may be smaller: everything past\n"
		   "the new end is deleted (as qemu-img resize --shrink, which warns of it: make\n"
		   "sure nothing there is needed), the clusters past it unmapped first, then the\n"
		   "header takes the new size. Refused for a version 2 image with internal\n"
		   "snapshots (as QEMU) and an image with persistent bitmaps.\n\n"
		   "  --shrink     allow a smaller size\n"
		   "  -p, --progress  accepted; a resize is quick and shows no bar\n"
		   "  -q, --quiet  print nothing on success\n"
		   "  --dry-run    print what would change and change nothing\n"
		   "  --json       print the result (or the plan) as JSON\n"
		   "  --output=json|human  as --json, or the text (the default)\n"
		   "  -f qcow2     IMAGE's format (only qcow2)\n"
		   "  --key IMAGE=KEYFILE  the passphrase of an encrypted image of the chain "
		   "(repeatable)\n"
		   "  -h, --help   this text\n");
}

/* getopt would take "-1G" for an option: a SIZE that starts with '-' and a digit (before any
 * "--") is taken out of the arguments first, and is the SIZE. Returns its index, or 0. */
static int take_negative(int argc, char **argv)
{
	int i;

	for (i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
		if (argv[i][0] == '-' && isdigit((unsigned char)argv[i][1]))
			return i;
	return 0;
}

enum { OPT_SHRINK = 0x200 };

static int parse_args(int argc, char **argv, struct resize_args *a)
{
	static const struct option longopts[] = {COMMON_LONGOPTS,
						 {"shrink", no_argument, NULL, OPT_SHRINK},
						 {"help", no_argument, NULL, 'h'},
						 {NULL, 0, NULL, 0}};
	int neg = take_negative(argc, argv), c, n = 0, i;
	char *args[64];

	for (i = 0; i < argc && n < 63; i++)
		if (i != neg || !neg)
			args[n++] = argv[i];
	args[n] = NULL;
	while ((c = next_option(n, args, "hpq", longopts, "resize")) != -1) {
		if (common_opt(c, &a->common))
			continue;
		if (c == OPT_SHRINK) {
			a->shrink = true;
			continue;
		}
		if (c == 'h') {
			resize_usage(stdout);
			exit(EXIT_OK);
		}
		return -1;
	}
	if (n - optind != (neg ? 1 : 2)) {
		usage_error("resize", "takes IMAGE [+|-]SIZE");
		return -1;
	}
	a->image = args[optind];
	a->size_arg = neg ? argv[neg] : args[optind + 1];
	a->relative = a->size_arg[0] == '+';
	a->minus = a->size_arg[0] == '-';
	if (parse_size(a->size_arg + (a->relative || a->minus), &a->size) < 0) {
		usage_error("resize",
			    "invalid size '%s' (bytes, or with a suffix k, M, G, T, P, E)",
			    a->size_arg);
		return -1;
	}
	return 0;
}

/* The new size from the current one: checked against shrinking and sector alignment. */
static int new_size(const struct resize_args *a, uint64_t old, uint64_t *out)
{
	uint64_t n = a->size;

	if (a->relative && __builtin_add_overflow(old, a->size, &n))
		return error("'%s': %s is too large", a->image, a->size_arg), -1;
	if (a->minus && a->size > old)
		return error("'%s': cannot take away %s: it is %" PRIu64 " bytes", a->image,
			     a->size_arg, old),
		       -1;
	if (a->minus)
		n = old - a->size;
	/* qemu-img refuses (and warns that data past the new end would be deleted) */
	if (n < old && !a->shrink)
		return error("cannot shrink '%s' to %" PRIu64 " bytes without --shrink: it "
			     "deletes all data past the new end (make sure none is needed)",
			     a->image, n),
		       -1;
	if (n % 512)
		return error("'%s': the new size (%" PRIu64 " bytes) must be a multiple of 512",
			     a->image, n),
		       -1;
	*out = n;
	return 0;
}

static void print_json(const struct resize_args *a, uint64_t old, uint64_t n)
{
	struct json j;

	json_init(&j, stdout);
	json_begin_object(&j, NULL);
	json_string(&j, "filename", a->image);
	json_uint(&j, "old-virtual-size", old);
	json_uint(&j, "virtual-size", n);
	json_bool(&j, "dry-run", a->common.dry_run);
	json_end_object(&j);
	json_finish(&j);
}

/* L1 entries a table needs for @size bytes of the image @img. */
static uint64_t l1_needed(const struct qcow2_image *img, uint64_t size)
{
	const struct qcow2_header *h = qcow2_image_header(img);
	uint64_t cs = qcow2_image_cluster_bytes(img);
	uint64_t per_l1 = cs / (h->incompat & QCOW2_INCOMPAT_EXTL2 ? 16 : 8) * cs;

	return size / per_l1 + (size % per_l1 != 0);
}

static void print_plan(const struct resize_args *a, struct qcow2_chain *c, uint64_t old, uint64_t n)
{
	struct qcow2_layer_info top, below;
	char s1[32], s2[32];
	uint64_t need;

	qcow2_chain_layer(c, 0, &top);
	format_size(old, s1, sizeof(s1));
	format_size(n, s2, sizeof(s2));
	printf("would %s '%s' from %s (%" PRIu64 " bytes) to %s (%" PRIu64 " bytes)\n",
	       n < old ? "shrink" : "grow", a->image, s1, old, s2, n);
	if (n < old)
		printf("  bytes %" PRIu64 " to %" PRIu64 " are deleted: the clusters past the new "
		       "end unmapped, the rest of the last one zeroed\n",
		       n, old);
	need = l1_needed(top.image, n);
	if (need > qcow2_image_header(top.image)->l1_entries)
		printf("  its L1 table grows from %u to %" PRIu64 " entries (written anew, then "
		       "the header points at it)\n",
		       qcow2_image_header(top.image)->l1_entries, need);
	if (qcow2_chain_depth(c) > 1 && qcow2_chain_layer(c, 1, &below) == 0 && below.size > old &&
	    n > old)
		printf("  bytes %" PRIu64 " to %" PRIu64 " are made to read as zeros, not as the "
		       "backing file '%s' has them\n",
		       old, below.size < n ? below.size : n, below.path);
	printf("nothing was changed (--dry-run)\n");
}

/* --dry-run: opened read-only, locked as a reader (refused while someone writes it). */
static int dry_run(const struct resize_args *a)
{
	struct qcow2_chain_opts co = {.lock = true, .top_blockdev = true, .keys = *cli_keys()};
	struct qcow2_layer_info top;
	struct qcow2_chain *c;
	uint64_t old, n;
	int rc = EXIT_OK;

	if (qcow2_chain_open(a->image, &co, &c) < 0)
		return fail_lib();
	qcow2_chain_layer(c, 0, &top);
	old = qcow2_chain_size(c);
	if (!top.image)
		rc = (error("'%s': not a qcow2 image", a->image), EXIT_FAIL);
	else if (new_size(a, old, &n) < 0)
		rc = EXIT_FAIL;
	else if (a->common.json)
		print_json(a, old, n);
	else
		print_plan(a, c, old, n);
	qcow2_chain_close(c);
	return rc;
}

/* Only qcow2 images are resized (a raw file would be opened read-only: say why instead). */
static bool is_qcow2(const char *path)
{
	struct qcow2_header *h = malloc(sizeof(*h));
	struct qcow2_io *io;
	int r = h ? qcow2_io_open(path, QCOW2_OPEN_BLOCKDEV, &io) : -ENOMEM;

	if (r == 0) {
		r = qcow2_header_read(io, h);
		qcow2_io_close(io);
	}
	free(h);
	if (r < 0)
		fail_lib(); /* "'PATH': not a qcow2 image (bad magic)" and the like */
	return r == 0;
}

int cmd_resize(int argc, char **argv)
{
	struct resize_args a = {.common = {.progress = PROGRESS_AUTO}};
	struct qcow2_chain *c;
	uint64_t old, n;
	int r;

	if (parse_args(argc, argv, &a) < 0)
		return EXIT_USAGE;
	if (a.common.dry_run)
		return dry_run(&a);
	catch_interrupts();
	if (!is_qcow2(a.image))
		return EXIT_FAIL;
	if (open_for_write(a.image, &c) < 0)
		return fail_lib();
	old = qcow2_chain_size(c);
	if (new_size(&a, old, &n) < 0) {
		qcow2_chain_close(c);
		return EXIT_FAIL;
	}
	r = finish_write(c, n < old ? qcow2_chain_shrink(c, n) : qcow2_chain_grow(c, n));
	if (r < 0)
		return fail_lib();
	if (a.common.json)
		print_json(&a, old, n);
	else if (a.common.progress != PROGRESS_QUIET)
		printf("Image resized.\n");
	return EXIT_OK;
}
