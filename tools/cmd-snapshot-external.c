/* SPDX-License-Identifier: MIT */
/*
 * cmd-snapshot-external.c - qcowctl snapshot create --external IMAGE NEW: a disk-only
 * external snapshot (virsh snapshot-create --disk-only): NEW, an overlay on IMAGE, becomes
 * the active image.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <inttypes.h>
#include <string.h>

#include "qcow2.h"
#include "qcowctl.h"

static void external_usage(FILE *f)
{
	fprintf(f,
		"usage: qcowctl snapshot create --external [--dry-run] [--json] [-q] IMAGE NEW\n\n"
		"Create NEW, a qcow2 overlay whose backing file is IMAGE (virsh snapshot-create\n"
		"--disk-only): NEW is the active image from then on, and IMAGE, now a backing\n"
		"file, must no longer be written (a qcowfs mount shows it read-only). The backing\n"
		"name is stored relative when both files are in one directory, else absolute.\n"
		"Refused if NEW exists or while another process writes IMAGE. NEW is written\n"
		"under a hidden name and given its name only when complete. An IMAGE a qcowfs\n"
		"mount holds gets its snapshot live from that daemon (unless --offline): the\n"
		"handles open for writing on IMAGE's view go on writing into NEW, and once they\n"
		"are closed IMAGE's view shows the point in time, read-only, and NEW's view is\n"
		"writable. NEW gets IMAGE's owner and mode.\n\n"
		"  --dry-run          print the plan and change nothing\n"
		"  --json             print the plan as JSON\n"
		"  --output=json|human  as --json, or the text (the default)\n"
		"  -q, --quiet        print nothing on success\n"
		"  -f qcow2           IMAGE's format (only qcow2)\n"
		"  --key IMAGE=KEYFILE  the passphrase of an encrypted image of the chain "
		"(repeatable)\n"
		"  -h, --help         this text\n");
}

int snapshot_create_external(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"external", no_argument, NULL, 'e'},
	    {"help", no_argument, NULL, 'h'},
	    COMMON_LONGOPTS,
	    {NULL, 0, NULL, 0},
	};
	struct common_opts co = {0};
	struct qcow2_plan plan;
	int c, r;

	optind = 1;
	while ((c = next_option(argc, argv, "hq", longopts, "snapshot")) != -1) {
		if (c == 'p')
			return usage_error("snapshot", "option '%s' does not apply here",
					   argv[optind - 1]);
		if (c == 'e' || common_opt(c, &co))
			continue;
		if (c == 'h') {
			external_usage(stdout);
			return EXIT_OK;
		}
		return EXIT_USAGE;
	}
	if (optind + 2 != argc) {
		return usage_error("snapshot", "create --external takes IMAGE NEW");
	}
	r = qcow2_snapshot_external(argv[optind], argv[optind + 1], co.dry_run, &plan);
	if (r == 0)
		print_job_plan(&plan, &co);
	qcow2_plan_release(&plan);
	if (r == -EBUSY) { /* held: by a qcowfs mount, which takes the snapshot live */
		char img[PATH_MAX], new[PATH_MAX];
		char *words[5] = {"live", "snapshot-external"};
		int n = 2, f = -1;

		if (co.dry_run)
			words[n++] = "--dry-run";
		words[n++] = img;
		words[n++] = new;
		if (live_abs_path(argv[optind], img, sizeof(img)) == 0 &&
		    live_abs_path(argv[optind + 1], new, sizeof(new)) == 0)
			f = live_forward(argv[optind], n, words, &co, "snapshot");
		if (f >= 0)
			return f;
	}
	return r < 0 ? fail_lib() : EXIT_OK;
}

/* ---- revert --external ---- */

static void revert_usage(FILE *f)
{
	fprintf(
	    f, "usage: qcowctl snapshot revert --external [--discard] [--dry-run] [--json] [-q]\n"
	       "                                IMAGE SNAP\n\n"
	       "Go back to SNAP, a file of IMAGE's backing chain below it: IMAGE becomes a fresh,\n"
	       "empty overlay on SNAP under the same name (VM definitions stay valid), so it\n"
	       "shows SNAP's content. The state left (the old IMAGE file) is kept as a branch\n"
	       "named IMAGE.branch-N, N the first number free (printed), still backing onto its\n"
	       "own base. Refused while another process writes IMAGE (named), or while an image\n"
	       "in IMAGE's directory tree uses IMAGE as backing file.\n"
	       "The new overlay is built under a hidden name and fsynced; the old file gets its\n"
	       "branch name as a second link; the overlay is renamed over IMAGE. Killed at any\n"
	       "point, IMAGE is either the old file or the new overlay; run again, it completes\n"
	       "(reusing the branch name already linked).\n\n"
	       "  --external         required: SNAP is a file of the chain\n"
	       "  --discard          delete the state left instead of keeping a branch\n"
	       "  --dry-run          print the plan and change nothing\n"
	       "  --json             print the plan as JSON\n"
	       "  --output=json|human  as --json, or the text (the default)\n"
	       "  -p, --progress     accepted (the revert copies no data)\n"
	       "  -q, --quiet        print nothing on success\n"
	       "  --key IMAGE=KEYFILE  the passphrase of an encrypted image\n"
	       "  -f qcow2           IMAGE's format (only qcow2)\n"
	       "  -h, --help         this text\n");
}

int snapshot_revert_external(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"external", no_argument, NULL, 'e'},
	    {"discard", no_argument, NULL, 'D'},
	    {"help", no_argument, NULL, 'h'},
	    COMMON_LONGOPTS,
	    {NULL, 0, NULL, 0},
	};
	struct common_opts co = {0};
	struct qcow2_plan plan;
	struct progress pr;
	struct qcow2_job job;
	char branch[4096];
	bool external = false, discard = false;
	int c, r;

	optind = 1;
	while ((c = next_option(argc, argv, "hqp", longopts, "snapshot")) != -1) {
		if (c == 'e')
			external = true;
		else if (c == 'D')
			discard = true;
		else if (c == 'h') {
			revert_usage(stdout);
			return EXIT_OK;
		} else if (c == OPT_BAD || !common_opt(c, &co))
			return EXIT_USAGE;
	}
	if (!external)
		return usage_error("snapshot", "revert needs --external (internal snapshots: "
					       "apply)");
	if (optind + 2 != argc)
		return usage_error("snapshot", "revert --external takes IMAGE SNAP");
	catch_interrupts();
	progress_init(&pr, &co, "revert");
	job_init(&job, &pr);
	r = qcow2_snapshot_revert_external(argv[optind], argv[optind + 1], discard, co.dry_run,
					   &job, &plan, branch, sizeof(branch));
	progress_end(&pr);
	if (r == 0 && co.json) {
		print_job_plan(&plan, &co);
	} else if (r == 0 && co.progress != PROGRESS_QUIET) {
		print_job_plan(&plan, &co);
		/* the branch named as IMAGE was typed, with its suffix */
		const char *suffix = strrchr(branch, '.');

		if (!co.dry_run && discard)
			printf("'%s' now shows '%s'; the state left was deleted\n", argv[optind],
			       argv[optind + 1]);
		else if (!co.dry_run)
			printf("'%s' now shows '%s'; the state left is kept as '%s%s'\n",
			       argv[optind], argv[optind + 1], argv[optind], suffix ? suffix : "");
	}
	qcow2_plan_release(&plan);
	return r < 0 ? fail_lib() : EXIT_OK;
}

/* ---- delete --external ---- */

static void delete_usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: qcowctl snapshot delete --external [--dry-run] [--json] [-p] [-q]\n"
	    "                                IMAGE SNAP\n\n"
	    "Remove SNAP, a file of IMAGE's backing chain below IMAGE, while every view above\n"
	    "it stays byte-identical. SNAP's data is pulled into each image backing onto it\n"
	    "(the layer above it and any branch found in IMAGE's directory tree), which are\n"
	    "re-pointed to SNAP's backing file; or, when SNAP has one child and its parent\n"
	    "no other user, committed into its parent, whichever copies fewer bytes. SNAP is\n"
	    "deleted only after the data is durable and the pointers moved. A journal next to\n"
	    "IMAGE (.IMAGE.qcowctl-external-delete) lives while it runs: run the same command\n"
	    "again after a kill and it completes the delete. Refused while another process\n"
	    "writes an image that changes (named).\n\n"
	    "  --external         required: SNAP is a file of the chain\n"
	    "  --dry-run          print the plan (which way, bytes each way) and change nothing\n"
	    "  --json             print the plan as JSON\n"
	    "  --output=json|human  as --json, or the text (the default)\n"
	    "  -p, --progress     show progress even when not on a terminal\n"
	    "  -q, --quiet        print nothing on success\n"
	    "  --key IMAGE=KEYFILE  the passphrase of an encrypted image\n"
	    "  -f qcow2           IMAGE's format (only qcow2)\n"
	    "  -h, --help         this text\n");
}

int snapshot_delete_external(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"external", no_argument, NULL, 'e'},
	    {"help", no_argument, NULL, 'h'},
	    COMMON_LONGOPTS,
	    {NULL, 0, NULL, 0},
	};
	struct qcow2_external_delete res;
	struct common_opts co = {0};
	struct qcow2_plan plan;
	struct progress pr;
	struct qcow2_job job;
	struct json j;
	int c, r;
	size_t i;

	optind = 1;
	while ((c = next_option(argc, argv, "hqp", longopts, "snapshot")) != -1) {
		if (c == 'e')
			continue;
		if (c == 'h') {
			delete_usage(stdout);
			return EXIT_OK;
		}
		if (c == OPT_BAD || !common_opt(c, &co))
			return EXIT_USAGE;
	}
	if (optind + 2 != argc)
		return usage_error("snapshot", "delete --external takes IMAGE SNAP");
	catch_interrupts();
	progress_init(&pr, &co, "delete");
	job_init(&job, &pr);
	r = qcow2_snapshot_delete_external(argv[optind], argv[optind + 1], co.dry_run, &job, &plan,
					   &res);
	progress_end(&pr);
	if (r == 0 && co.json) {
		json_init(&j, stdout);
		json_begin_object(&j, NULL);
		json_bool(&j, "dry-run", co.dry_run);
		json_string(&j, "way", res.into_parent ? "commit" : "pull");
		json_uint(&j, "pull-bytes", res.pull_bytes);
		if (res.can_commit)
			json_uint(&j, "commit-bytes", res.commit_bytes);
		json_bool(&j, "resumed", res.resumed);
		json_begin_array(&j, "steps");
		for (i = 0; i < plan.n; i++) {
			json_begin_object(&j, NULL);
			json_string(&j, "step", qcow2_step_name(plan.v[i].kind));
			json_string(&j, "image", plan.v[i].image);
			if (plan.v[i].kind == QCOW2_STEP_REPOINT)
				json_string(&j, "backing",
					    plan.v[i].detail ? plan.v[i].detail : "");
			if (plan.v[i].kind == QCOW2_STEP_COPY)
				json_uint(&j, "bytes", plan.v[i].bytes);
			json_end_object(&j);
		}
		json_end_array(&j);
		json_end_object(&j);
		json_finish(&j);
	} else if (r == 0 && (co.dry_run || co.progress != PROGRESS_QUIET)) {
		if (res.resumed)
			printf("completing an interrupted delete (%s)\n",
			       res.into_parent ? "commit into the parent"
					       : "pull into the children");
		else if (res.can_commit)
			printf("%s: pull into the children copies %" PRIu64
			       " bytes, commit into the parent %" PRIu64 " bytes\n",
			       res.into_parent ? "commit" : "pull", res.pull_bytes,
			       res.commit_bytes);
		else
			printf("pull: into the children, %" PRIu64
			       " bytes (commit into the parent not possible)\n",
			       res.pull_bytes);
		print_job_plan(&plan, &co);
	}
	qcow2_plan_release(&plan);
	return r < 0 ? fail_lib() : EXIT_OK;
}
