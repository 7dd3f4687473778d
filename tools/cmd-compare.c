/* SPDX-License-Identifier: MIT */
/*
 * cmd-compare.c - qcowctl compare [-s] [-p|-q] [-U] IMAGE1 IMAGE2: do two images show the same
 * flat view? Printed and exited as `qemu-img compare`: 0 identical, 1 different, 2 an error.
 */
#include <getopt.h>
#include <inttypes.h>
#include <string.h>

#include "qcow2.h"
#include "qcowctl.h"

enum { COMPARE_SAME = 0, COMPARE_DIFFER = 1, COMPARE_ERROR = 2 };

static void compare_usage(FILE *f)
{
	fprintf(f,
		"usage: qcowctl compare [-s] [-p|-q] [-U] [-f qcow2] [-F qcow2] IMAGE1 IMAGE2\n\n"
		"Do IMAGE1 and IMAGE2 (qcow2 chains or raw files) show the same flat view? As\n"
		"'qemu-img compare': when their sizes differ, the longer one must read zeros\n"
		"past the end of the shorter. Ranges that both show as zeros, or as the same\n"
		"cluster of the same file (an image and its overlay), are not read.\n"
		"Exit status: 0 identical, 1 different (\"Content mismatch at offset N!\"),\n"
		"2 an error.\n\n"
		"  -s, --strict       sizes must match, and so must the allocation of every\n"
		"                     range (a hole, zeros, data, compressed data, as map\n"
		"                     tells it)\n"
		"  -p, --progress     show a progress bar (default: on a terminal)\n"
		"  -q, --quiet        print nothing (the exit status tells)\n"
		"  -U, --force-share  do not take (or respect) image locks\n"
		"  -f qcow2           IMAGE1's format, -F qcow2 IMAGE2's (only qcow2; raw\n"
		"                     files are recognised without it)\n"
		"  -h, --help         this text\n");
}

static void say(bool quiet, const char *fmt, uint64_t v)
{
	if (!quiet)
		printf(fmt, v);
}

int cmd_compare(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"strict", no_argument, NULL, 's'}, {"progress", no_argument, NULL, 'p'},
	    {"quiet", no_argument, NULL, 'q'},	{"force-share", no_argument, NULL, 'U'},
	    {"help", no_argument, NULL, 'h'},	{NULL, 0, NULL, 0},
	};
	struct qcow2_compare_opts o = {0};
	struct qcow2_compare_result res;
	struct common_opts co = {0};
	struct qcow2_job job;
	struct progress p;
	bool quiet;
	int c, r;

	while ((c = next_option(argc, argv, "hpqsUF:", longopts, "compare")) != -1) {
		if (common_opt(c, &co))
			continue;
		switch (c) {
		case 's':
			o.strict = true;
			break;
		case 'U':
			o.force_share = true;
			break;
		case 'F':
			if (strcmp(optarg, "qcow2") != 0)
				return usage_error(
				    "compare", "only qcow2 images are supported (-F %s)", optarg);
			break;
		case 'h':
			compare_usage(stdout);
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind + 2 != argc)
		return usage_error("compare", "takes IMAGE1 IMAGE2");
	quiet = co.progress == PROGRESS_QUIET;
	catch_interrupts();
	progress_init(&p, &co, "compare");
	job_init(&job, &p);
	r = qcow2_compare(argv[optind], argv[optind + 1], &o, &job, &res);
	progress_end(&p);
	if (r < 0) {
		fail_lib();
		return COMPARE_ERROR;
	}
	if (res.size_mismatch && o.strict) {
		say(quiet, "Strict mode: Image size mismatch!\n", 0);
		return COMPARE_DIFFER;
	}
	if (res.status_mismatch) {
		say(quiet, "Strict mode: Offset %" PRIu64 " block status mismatch!\n", res.offset);
		return COMPARE_DIFFER;
	}
	/* as qemu-img: the warning once the common part is found the same */
	if (res.size_mismatch && (!res.differ || res.offset >= res.common_bytes))
		say(quiet, "Warning: Image size mismatch!\n", 0);
	if (res.differ) {
		say(quiet, "Content mismatch at offset %" PRIu64 "!\n", res.offset);
		return COMPARE_DIFFER;
	}
	say(quiet, "Images are identical.\n", 0);
	return COMPARE_SAME;
}
