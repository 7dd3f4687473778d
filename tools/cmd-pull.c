/* SPDX-License-Identifier: MIT */
/*
 * cmd-pull.c - qcowctl pull [--base B] IMAGE: blockpull.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>

#include "qcow2.h"
#include "qcowctl.h"

static void pull_usage(FILE *f)
{
	fprintf(
	    f, "usage: qcowctl pull [-b|--base B] [--dry-run] [--json] [-p|-q] [-f qcow2] IMAGE\n\n"
	       "Copy into IMAGE every cluster that the layers above B provide, then make IMAGE\n"
	       "back onto B, or stand alone without --base (virsh blockpull). IMAGE's flat view\n"
	       "never changes.\n\n"
	       "  -b, --base B the layer IMAGE backs onto afterwards (a path, or a name relative\n"
	       "               to IMAGE's directory)\n"
	       "  --offline    refuse an image a qcowfs mount holds, instead of pulling live in\n"
	       "               that daemon (while its view is read and written)\n"
	       "  --dry-run    print the plan and change nothing\n"
	       "  --json       print the plan as JSON\n"
	       "  --output=json|human  as --json, or the text (the default)\n"
	       "  -p, --progress  show progress even when not on a terminal\n"
	       "  -q, --quiet  print nothing but errors\n"
	       "  -v, --verbose  print where the time went (open, plan, copy, flush, sync, ...)\n"
	       "  -f qcow2     IMAGE's format (only qcow2)\n"
	       "  --key IMAGE=KEYFILE  the passphrase of an encrypted image of the chain "
	       "(repeatable)\n"
	       "  -h, --help   this text\n\n"
	       "Interrupted or killed, IMAGE stays valid and shows the same data; running the\n"
	       "same command again completes the pull. An IMAGE a qcowfs mount holds is pulled\n"
	       "live by that daemon (unless --offline).\n");
}

int cmd_pull(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"base", required_argument, NULL, 'b'},
	    {"help", no_argument, NULL, 'h'},
	    COMMON_LONGOPTS,
	    VERBOSE_LONGOPT,
	    {NULL, 0, NULL, 0},
	};
	struct common_opts co = {0};
	const char *base = NULL;
	char b[PATH_MAX] = "";
	struct qcow2_plan plan;
	struct qcow2_job job;
	struct progress p;
	int c, r;

	while ((c = next_option(argc, argv, "hpqvb:", longopts, "pull")) != -1) {
		if (common_opt(c, &co))
			continue;
		switch (c) {
		case 'b':
			base = optarg;
			break;
		case 'h':
			pull_usage(stdout);
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind + 1 != argc) {
		return usage_error("pull", "takes one IMAGE");
	}
	catch_interrupts();
	progress_init(&p, &co, "pull");
	job_init(&job, &p);
	r = qcow2_pull(argv[optind], base, co.dry_run, &job, &plan);
	progress_end(&p);
	if (r == 0)
		print_job_plan(&plan, &co);
	qcow2_plan_release(&plan);
	if (r == -EBUSY) { /* held: by a qcowfs mount, which pulls live */
		char img[PATH_MAX];
		char *words[6] = {"live", "pull"};
		int n = 2, f = -1;

		if (co.dry_run)
			words[n++] = "--dry-run";
		if (base && live_layer_path(argv[optind], base, b, sizeof(b)) == 0) {
			words[n++] = "--base";
			words[n++] = b;
		}
		words[n++] = img;
		if ((!base || b[0] == '/') && live_abs_path(argv[optind], img, sizeof(img)) == 0)
			f = live_forward(argv[optind], n, words, &co, "pull");
		if (f >= 0)
			return f;
	}
	return r < 0 ? fail_lib() : EXIT_OK;
}
