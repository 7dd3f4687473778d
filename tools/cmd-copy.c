/* SPDX-License-Identifier: MIT */
/*
 * cmd-copy.c - qcowctl copy [--shallow] [-O qcow2|raw] [--compress] SRC DEST: blockcopy and
 * convert.
 */
#include <getopt.h>
#include <string.h>

#include "qcow2.h"
#include "qcowctl.h"

static void copy_usage(FILE *f)
{
	fprintf(
	    f, "usage: qcowctl copy [--shallow] [-O qcow2|raw] [-c|--compress] [--dry-run]\n"
	       "                    [--json] [-p|-q] SRC DEST\n\n"
	       "Copy the flat view of SRC's chain into a new standalone image DEST (virsh\n"
	       "blockcopy, qemu-img convert), or with --shallow only SRC's own layer, DEST then\n"
	       "backing onto SRC's backing file. Only allocated data is read and written: holes\n"
	       "and zeros stay holes, and a raw DEST is a sparse file. DEST is replaced if it\n"
	       "exists.\n\n"
	       "  --shallow          copy the top layer only and keep its backing file\n"
	       "  -O FMT             qcow2 (default) or raw\n"
	       "  -c, --compress     write zlib-compressed clusters (qcow2)\n"
	       "  --dry-run          print the plan and change nothing\n"
	       "  --json             print the plan as JSON\n"
	       "  -p                 show progress even when not on a terminal\n"
	       "  -q                 print nothing but errors\n"
	       "  -h, --help         this text\n\n"
	       "The copy is built under a hidden name next to DEST and renamed to DEST once it is\n"
	       "complete and durable: interrupted or killed, DEST is untouched; running the same\n"
	       "command again makes the copy.\n");
}

int cmd_copy(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"shallow", no_argument, NULL, 's'},
	    {"compress", no_argument, NULL, 'c'},
	    {"help", no_argument, NULL, 'h'},
	    COMMON_LONGOPTS,
	    {NULL, 0, NULL, 0},
	};
	struct qcow2_convert_opts o = {0};
	struct common_opts co = {0};
	struct qcow2_plan plan;
	struct qcow2_job job;
	struct progress p;
	int c, r;

	while ((c = next_option(argc, argv, "hpqcO:", longopts, "copy")) != -1) {
		if (common_opt(c, &co))
			continue;
		switch (c) {
		case 's':
			o.shallow = true;
			break;
		case 'c':
			o.compress = true;
			break;
		case 'O':
			if (strcmp(optarg, "raw") == 0)
				o.raw = true;
			else if (strcmp(optarg, "qcow2") != 0)
				die(EXIT_USAGE, "output format '%s' not supported (qcow2 or raw)",
				    optarg);
			break;
		case 'h':
			copy_usage(stdout);
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind + 2 != argc) {
		return usage_error("copy", "takes SRC DEST");
	}
	o.dry_run = co.dry_run;
	catch_interrupts();
	progress_init(&p, &co, "copy");
	job_init(&job, &p);
	r = qcow2_convert(argv[optind], argv[optind + 1], &o, &job, &plan);
	progress_end(&p);
	if (r == 0)
		print_job_plan(&plan, &co);
	qcow2_plan_release(&plan);
	return r < 0 ? fail_lib() : EXIT_OK;
}
