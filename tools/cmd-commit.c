/* SPDX-License-Identifier: MIT */
/*
 * cmd-commit.c - qcowctl commit [--top T] [--base B] [--drop] [--force] IMAGE: blockcommit.
 */
#include <getopt.h>
#include <string.h>

#include "qcow2.h"
#include "qcowctl.h"

static void commit_usage(FILE *f)
{
	fprintf(
	    f, "usage: qcowctl commit [--top T] [-b|--base B] [-d] [--drop] [--force] [--dry-run]\n"
	       "                      [--json] [-p|-q] [-f qcow2] IMAGE\n\n"
	       "Merge the layers (B, T] of IMAGE's backing chain into B (virsh blockcommit).\n"
	       "T defaults to IMAGE (an active commit: IMAGE is emptied afterwards and backs onto\n"
	       "B), B to T's backing file. An intermediate commit (T below IMAGE) re-points the\n"
	       "layer above T to B. IMAGE's flat view never changes; B's own view takes in the\n"
	       "merged data. T and B are paths (or names relative to IMAGE's directory).\n\n"
	       "  -t, --top T  the top of the merged layers\n"
	       "  -b, --base B the layer that receives them\n"
	       "  -d, --keep-top  an active commit leaves IMAGE as it is instead of emptying\n"
	       "               it (qemu-img commit -d); it still backs onto B\n"
	       "  --drop       delete the merged layers that are no longer used\n"
	       "  --force      commit even when other images in IMAGE's or B's directory read\n"
	       "               through B or a merged layer (their content would change)\n"
	       "  --dry-run    print the plan and change nothing\n"
	       "  --json       print the plan as JSON\n"
	       "  --output=json|human  as --json, or the text (the default)\n"
	       "  -f qcow2     IMAGE's format (only qcow2)\n"
	       "  -p, --progress  show progress even when not on a terminal\n"
	       "  -q, --quiet  print nothing but errors\n"
	       "  -v, --verbose  print where the time went (open, plan, copy, flush, sync, ...)\n"
	       "  --key IMAGE=KEYFILE  the passphrase of an encrypted image of the chain "
	       "(repeatable)\n"
	       "  -h, --help   this text\n\n"
	       "Interrupted or killed, every image stays valid and IMAGE shows the same data;\n"
	       "running the same command again completes the commit.\n");
}

int cmd_commit(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"top", required_argument, NULL, 't'},
	    {"base", required_argument, NULL, 'b'},
	    {"drop", no_argument, NULL, 'D'},
	    {"keep-top", no_argument, NULL, 'd'},
	    {"force", no_argument, NULL, 'f'},
	    {"help", no_argument, NULL, 'h'},
	    COMMON_LONGOPTS,
	    VERBOSE_LONGOPT,
	    {NULL, 0, NULL, 0},
	};
	struct qcow2_commit_opts o = {0};
	struct common_opts co = {0};
	struct qcow2_plan plan;
	struct qcow2_job job;
	struct progress p;
	int c, r;

	while ((c = next_option(argc, argv, "hpqvdt:b:", longopts, "commit")) != -1) {
		if (common_opt(c, &co))
			continue;
		switch (c) {
		case 't':
			o.top = optarg;
			break;
		case 'b':
			o.base = optarg;
			break;
		case 'D':
			o.drop = true;
			break;
		case 'd':
			o.keep_top = true;
			break;
		case 'f':
			o.force = true;
			break;
		case 'h':
			commit_usage(stdout);
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind + 1 != argc) {
		return usage_error("commit", "takes one IMAGE");
	}
	o.dry_run = co.dry_run;
	catch_interrupts();
	progress_init(&p, &co, "commit");
	job_init(&job, &p);
	r = qcow2_commit(argv[optind], &o, &job, &plan);
	progress_end(&p);
	if (r == 0)
		print_job_plan(&plan, &co);
	qcow2_plan_release(&plan);
	return r < 0 ? fail_lib() : EXIT_OK;
}
