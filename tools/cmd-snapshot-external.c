/* SPDX-License-Identifier: MIT */
/*
 * cmd-snapshot-external.c - qcowctl snapshot create --external IMAGE NEW: a disk-only
 * external snapshot (virsh snapshot-create --disk-only): NEW, an overlay on IMAGE, becomes
 * the active image.
 */
#include <getopt.h>
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
		"under a hidden name and given its name only when complete.\n\n"
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
	return r < 0 ? fail_lib() : EXIT_OK;
}
