/* SPDX-License-Identifier: MIT */
/*
 * cmd-measure.c - qcowctl measure [--size SIZE | IMAGE] [-O qcow2|raw] [-o OPTIONS]: the
 * size a new image would need, printed as `qemu-img measure` prints it (text and JSON).
 */
#include <getopt.h>
#include <inttypes.h>
#include <string.h>

#include "qcow2.h"
#include "qcowctl.h"

static void measure_usage(FILE *f)
{
	fprintf(f,
		"usage: qcowctl measure [-O qcow2|raw] [-o OPTIONS] [--json] [-U] [-f qcow2]\n"
		"                       (--size SIZE | IMAGE)\n\n"
		"Print the size a new image would take, as 'qemu-img measure' does: holding the\n"
		"flat view of IMAGE's chain (as 'qcowctl copy' would copy it), or empty and of\n"
		"SIZE bytes. \"required size\" counts the metadata and the clusters that hold\n"
		"data; \"fully allocated size\" every cluster; \"bitmaps size\" (a qcow2 IMAGE\n"
		"into compat=1.1) what its persistent bitmaps add.\n\n"
		"  --size SIZE        an empty image of SIZE (bytes, or with a suffix k/K, M, G,\n"
		"                     T, P, E)\n"
		"  -O qcow2|raw       the new image's format (default raw, as qemu-img)\n"
		"  -o OPTIONS         qcow2's layout, comma-separated: cluster_size=SIZE,\n"
		"                     compat=0.10|1.1, refcount_bits=N, extended_l2=on|off,\n"
		"                     lazy_refcounts=on|off, preallocation=off|metadata|falloc|\n"
		"                     full (falloc, full: every cluster required), backing_file=\n"
		"                     NAME (every cluster required: the backing file may share\n"
		"                     nothing with IMAGE)\n"
		"  --json             JSON, with qemu-img measure's field names\n"
		"  --output=json|human  as --json, or the text (the default)\n"
		"  -U, --force-share  do not take (or respect) IMAGE's locks\n"
		"  -f qcow2           IMAGE's format (only qcow2)\n"
		"  -h, --help         this text\n");
}

struct measure_args {
	struct qcow2_measure_opts o;
	bool have_size, json;
};

static int measure_option(void *ctx, const char *key, const char *val)
{
	struct measure_args *a = ctx;
	int r = parse_create_option("measure", &a->o.create, key, val);

	if (r <= 0)
		return r;
	if (!strcmp(key, "backing_file")) {
		a->o.backing = val[0] != '\0';
		return 0;
	}
	if (!strcmp(key, "backing_fmt"))
		return 0; /* no bearing on the size */
	return usage_error("measure", "unknown option '%s' in -o", key), -1;
}

static void print(const struct measure_args *a, const struct qcow2_measure *m)
{
	struct json j;

	if (!a->json) {
		printf("required size: %" PRIu64 "\nfully allocated size: %" PRIu64 "\n",
		       m->required, m->fully_allocated);
		if (m->has_bitmaps)
			printf("bitmaps size: %" PRIu64 "\n", m->bitmaps);
		return;
	}
	json_init(&j, stdout);
	json_begin_object(&j, NULL);
	if (m->has_bitmaps)
		json_uint(&j, "bitmaps", m->bitmaps);
	json_uint(&j, "required", m->required);
	json_uint(&j, "fully-allocated", m->fully_allocated);
	json_end_object(&j);
	json_finish(&j);
}

int cmd_measure(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"size", required_argument, NULL, 's'},
	    {"json", no_argument, NULL, OPT_JSON},
	    {"force-share", no_argument, NULL, 'U'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct measure_args a = {.o.raw = true};
	struct qcow2_measure m;
	const char *src;
	int c;

	qcow2_create_opts_default(&a.o.create);
	while ((c = next_option(argc, argv, "hUO:o:", longopts, "measure")) != -1) {
		switch (c) {
		case 's':
			if (parse_size(optarg, &a.o.size) < 0)
				return usage_error("measure", "invalid size '%s'", optarg);
			a.have_size = true;
			break;
		case OPT_JSON:
			a.json = true;
			break;
		case 'U':
			a.o.force_share = true;
			break;
		case 'O':
			if (strcmp(optarg, "qcow2") != 0 && strcmp(optarg, "raw") != 0)
				return usage_error("measure",
						   "output format '%s' not supported "
						   "(qcow2 or raw)",
						   optarg);
			a.o.raw = !strcmp(optarg, "raw");
			break;
		case 'o':
			if (parse_o_list("measure", optarg, measure_option, &a) < 0)
				return EXIT_USAGE;
			break;
		case 'h':
			measure_usage(stdout);
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (a.have_size && optind != argc)
		return usage_error("measure", "--size cannot be used together with an IMAGE");
	if (!a.have_size && optind + 1 != argc)
		return usage_error("measure", "takes --size SIZE or one IMAGE");
	src = a.have_size ? NULL : argv[optind];
	if (qcow2_measure(src, &a.o, &m) < 0)
		return fail_lib();
	print(&a, &m);
	return EXIT_OK;
}
