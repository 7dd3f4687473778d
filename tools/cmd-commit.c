/* SPDX-License-Identifier: MIT */
/*
 * cmd-commit.c - qcowctl commit [--top T] [--base B] [--drop] [--force] IMAGE: blockcommit.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
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
	       "  --pivot      IMAGE is served by a qcowfs mount: the active commit runs live\n"
	       "               there while the view is written, then the view goes on with B\n"
	       "               as its top (IMAGE is kept as it is; virsh blockcommit --active\n"
	       "               --pivot). A commit of an image a mount serves runs live anyway\n"
	       "  --offline    refuse an image a qcowfs mount holds, instead of running the\n"
	       "               commit live in that daemon\n"
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
	       "running the same command again completes the commit. An IMAGE a qcowfs mount\n"
	       "holds is committed live by that daemon (unless --offline); an active commit\n"
	       "there needs --pivot.\n");
}

/* The commit run live by the qcowfs mount that serves @image: its exit status, or -1. */
static int commit_live(const char *image, const struct qcow2_commit_opts *o, bool pivot,
		       const struct common_opts *co)
{
	char img[PATH_MAX], top[PATH_MAX], base[PATH_MAX];
	char *words[12] = {"live", "commit"};
	int n = 2;

	if (live_abs_path(image, img, sizeof(img)) < 0 ||
	    (o->top && live_layer_path(image, o->top, top, sizeof(top)) < 0) ||
	    (o->base && live_layer_path(image, o->base, base, sizeof(base)) < 0))
		return -1;
	if (o->dry_run)
		words[n++] = "--dry-run";
	if (o->force)
		words[n++] = "--force";
	if (pivot)
		words[n++] = "--pivot";
	if (o->top) {
		words[n++] = "--top";
		words[n++] = top;
	}
	if (o->base) {
		words[n++] = "--base";
		words[n++] = base;
	}
	words[n++] = img;
	return live_forward(image, n, words, co, "commit");
}

int cmd_commit(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"top", required_argument, NULL, 't'},
	    {"base", required_argument, NULL, 'b'},
	    {"drop", no_argument, NULL, 'D'},
	    {"keep-top", no_argument, NULL, 'd'},
	    {"force", no_argument, NULL, 'f'},
	    {"pivot", no_argument, NULL, 'P'},
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
	bool pivot = false;
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
		case 'P':
			pivot = true;
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
	r = pivot ? -EBUSY : qcow2_commit(argv[optind], &o, &job, &plan);
	progress_end(&p);
	if (r == 0)
		print_job_plan(&plan, &co);
	if (!pivot)
		qcow2_plan_release(&plan);
	if (r == -EBUSY) { /* held: by a qcowfs mount, which commits live */
		r = commit_live(argv[optind], &o, pivot, &co);
		if (r >= 0)
			return r;
		if (pivot) {
			error("'%s' is not served by a qcowfs mount: --pivot is only for a "
			      "commit run live",
			      argv[optind]);
			return EXIT_FAIL;
		}
		return fail_lib();
	}
	return r < 0 ? fail_lib() : EXIT_OK;
}
