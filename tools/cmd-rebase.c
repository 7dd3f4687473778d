/* SPDX-License-Identifier: MIT */
/*
 * cmd-rebase.c - qcowctl rebase -b NEWBASE [-F FMT] [--unsafe] IMAGE.
 */
#include <getopt.h>
#include <string.h>

#include "qcow2.h"
#include "qcowctl.h"

static void rebase_usage(FILE *f)
{
	fprintf(f,
		"usage: qcowctl rebase -b NEWBASE [-F FMT] [--unsafe] [--dry-run] [--json]\n"
		"                      [-p|-q] IMAGE\n\n"
		"Change IMAGE's backing file to NEWBASE (qemu-img rebase). NEWBASE is stored as\n"
		"given and, when relative, read from IMAGE's directory; \"\" leaves IMAGE with no\n"
		"backing file. IMAGE's flat view is kept: the ranges where the old and the new\n"
		"backing differ are copied into IMAGE first.\n\n"
		"  -b, --backing NEWBASE  the new backing file\n"
		"  -F, --backing-format FMT  qcow2 or raw (default: probed; required with -u)\n"
		"  -u, --unsafe           only rewrite the pointer (the view may change)\n"
		"  -f qcow2               IMAGE's format (only qcow2)\n"
		"  --output=json|human    as --json, or the text (the default)\n"
		"  --dry-run              print the plan and change nothing\n"
		"  --json                 print the plan as JSON\n"
		"  -p, --progress         show progress even when not on a terminal\n"
		"  -q, --quiet            print nothing but errors\n"
		"  --key IMAGE=KEYFILE  the passphrase of an encrypted image of the chain "
		"(repeatable)\n"
		"  -h, --help             this text\n\n"
		"Interrupted or killed, IMAGE stays valid and shows the same data; running the\n"
		"same command again completes the rebase.\n");
}

int cmd_rebase(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"backing", required_argument, NULL, 'b'},
	    {"backing-format", required_argument, NULL, 'F'},
	    {"unsafe", no_argument, NULL, 'u'},
	    {"help", no_argument, NULL, 'h'},
	    COMMON_LONGOPTS,
	    {NULL, 0, NULL, 0},
	};
	struct common_opts co = {0};
	const char *backing = NULL, *fmt = NULL;
	bool unsafe = false;
	struct qcow2_plan plan;
	struct qcow2_job job;
	struct progress p;
	int c, r;

	while ((c = next_option(argc, argv, "hpqub:F:", longopts, "rebase")) != -1) {
		if (common_opt(c, &co))
			continue;
		switch (c) {
		case 'b':
			backing = optarg;
			break;
		case 'F':
			fmt = optarg;
			break;
		case 'u':
			unsafe = true;
			break;
		case 'h':
			rebase_usage(stdout);
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind + 1 != argc)
		return usage_error("rebase", "takes one IMAGE");
	if (!backing)
		return usage_error("rebase", "needs -b NEWBASE (\"\" for none)");
	if (fmt && strcmp(fmt, "qcow2") != 0 && strcmp(fmt, "raw") != 0)
		return usage_error("rebase", "backing format '%s' not supported (qcow2 or raw)",
				   fmt);
	/* As qemu-img 7.2: an unsafe rebase does not open the new backing file, so its format
	 * cannot be probed and must be given (a pointer without a format is probed by every
	 * later reader, which a raw file can fool). */
	if (unsafe && backing[0] && !fmt) {
		error("cannot change the backing file of '%s' to '%s': backing format must be "
		      "specified (-F)",
		      argv[optind], backing);
		return EXIT_FAIL;
	}
	catch_interrupts();
	progress_init(&p, &co, "rebase");
	job_init(&job, &p);
	r = qcow2_rebase(argv[optind], backing, fmt, unsafe, co.dry_run, &job, &plan);
	progress_end(&p);
	if (r == 0)
		print_job_plan(&plan, &co);
	qcow2_plan_release(&plan);
	return r < 0 ? fail_lib() : EXIT_OK;
}
