/* SPDX-License-Identifier: MIT */
/*
 * cmd-amend.c - qcowctl amend -o compat=0.10|1.1,lazy_refcounts=on|off IMAGE: change an
 * image's version or its lazy refcounts, as `qemu-img amend` does (the rules are the
 * library's, jobs/amend.c).
 */
#include <getopt.h>
#include <string.h>

#include "qcow2.h"
#include "qcowctl.h"

static void amend_usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: qcowctl amend -o OPTIONS [-q] [--dry-run] [-f qcow2] IMAGE\n\n"
	    "Change the format options of a qcow2 image in place, as 'qemu-img amend':\n"
	    "  -o compat=0.10|1.1     (or v2|v3) the version; a downgrade to 0.10 is refused\n"
	    "                         as QEMU refuses it (refcount_bits other than 16, extended\n"
	    "                         L2, an external data file, zstd with compressed clusters,\n"
	    "                         internal snapshots of another size) and where QEMU would\n"
	    "                         lose something (persistent bitmaps: remove them first).\n"
	    "                         Zero clusters become unallocated (over a backing file:\n"
	    "                         zeros; refused in a snapshot); lazy refcounts dropped. A\n"
	    "                         dirty image is repaired when opened, as QEMU does\n"
	    "  -o lazy_refcounts=on|off  (needs compat=1.1)\n"
	    "  -q, --quiet            print nothing on success\n"
	    "  --dry-run              check that the change would be made, change nothing\n"
	    "  -f qcow2               IMAGE's format (only qcow2)\n"
	    "  -h, --help             this text\n\n"
	    "The image is changed to fit first, then one write of the header cluster switches\n"
	    "it: interrupted, it is the old version or the new one. Refused while another\n"
	    "process holds IMAGE for writing.\n");
}

static int amend_option(void *ctx, const char *key, const char *val)
{
	struct qcow2_amend_opts *o = ctx;
	struct qcow2_create_opts co;
	int r;

	qcow2_create_opts_default(&co);
	co.version = 0;
	r = parse_create_option("amend", &co, key, val);
	if (r < 0)
		return -1;
	if (r == 0 && !strcmp(key, "compat")) {
		o->version = co.version;
		return 0;
	}
	if (r == 0 && !strcmp(key, "lazy_refcounts")) {
		o->lazy_refcounts = co.lazy_refcounts;
		return 0;
	}
	return usage_error("amend", "option '%s' cannot be amended (compat, lazy_refcounts)", key),
	       -1;
}

int cmd_amend(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"quiet", no_argument, NULL, 'q'},
	    {"dry-run", no_argument, NULL, OPT_DRY_RUN},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct qcow2_amend_opts o = {.lazy_refcounts = -1};
	struct qcow2_layer_info li;
	struct common_opts co = {0};
	struct qcow2_chain *c;
	bool have_o = false;
	int ch, r;

	while ((ch = next_option(argc, argv, "hqo:", longopts, "amend")) != -1) {
		if (common_opt(ch, &co))
			continue;
		switch (ch) {
		case 'o':
			if (parse_o_list("amend", optarg, amend_option, &o) < 0)
				return EXIT_USAGE;
			have_o = true;
			break;
		case 'h':
			amend_usage(stdout);
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (!have_o)
		return usage_error("amend", "needs -o OPTIONS");
	if (optind + 1 != argc)
		return usage_error("amend", "takes one IMAGE");
	o.dry_run = co.dry_run;
	catch_interrupts(); /* a signal waits for the end: the header switch is one write */
	if (open_for_write(argv[optind], &c) < 0)
		return fail_lib();
	qcow2_chain_layer(c, 0, &li);
	r = qcow2_image_amend(li.image, &o);
	r = finish_write(c, r);
	if (r < 0)
		return fail_lib();
	if (o.dry_run && co.progress != PROGRESS_QUIET)
		printf("dry run: '%s' can be amended; nothing was changed\n", argv[optind]);
	return EXIT_OK;
}
