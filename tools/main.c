/* SPDX-License-Identifier: MIT */
/*
 * main.c - qcowctl's subcommand table and dispatch.
 */
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "qcowctl.h"

struct subcommand {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary;
};

static const struct subcommand subcommands[] = {
    {"info", cmd_info, "header facts, backing chain, snapshots and allocation of an image"},
    {"commit", cmd_commit, "merge layers of a chain into a lower one (blockcommit)"},
    {"pull", cmd_pull, "copy the data of backing layers into an image (blockpull)"},
    {"rebase", cmd_rebase, "change an image's backing file, keeping its content"},
    {"copy", cmd_copy, "copy a chain's flat view, or its top layer, into a new image"},
    {"convert", cmd_copy, "the same as copy (qemu-img convert's name and options)"},
    {"create", cmd_create, "a new qcow2 image or overlay (as qemu-img create)"},
    {"resize", cmd_resize, "grow the virtual size of an image (as qemu-img resize)"},
    {"snapshot", cmd_snapshot, "internal snapshots: list, create, apply, delete"},
    {"check", cmd_check, "consistency check of an image, and its repair (as qemu-img check)"},
    /* qcowctl inspect */
    {"map", cmd_map, "which layer provides each range of the flat view (as qemu-img map)"},
    {"checksum", cmd_checksum, "SHA-256 of the flat view of an image or of a snapshot"},
    {"tree", cmd_tree, "every backing chain under a directory, with internal snapshots"},
    {"bitmap", cmd_bitmap, "persistent dirty bitmaps: list, add, remove, clear, merge"},
    {"measure", cmd_measure, "the size a new image would take (as qemu-img measure)"},
    {"compare", cmd_compare, "do two images show the same data? (as qemu-img compare)"},
    {"amend", cmd_amend, "change an image's version or lazy refcounts (as qemu-img amend)"},
    {"mounts", cmd_mounts, "the qcowfs mounts, what each serves and its jobs"},
    {"job", cmd_job, "jobs of qcowfs mounts: list, cancel"},
};

static void usage(FILE *f)
{
	size_t i;

	fprintf(f, "usage: qcowctl COMMAND [OPTIONS] ARGS...\n\n"
		   "Inspect and manage qcow2 images and backing chains.\n\ncommands:\n");
	for (i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]); i++)
		fprintf(f, "  %-10s %s\n", subcommands[i].name, subcommands[i].summary);
	fprintf(f, "\n'qcowctl COMMAND --help' describes a command.\n"
		   "options:\n  -h, --help     this text\n  -V, --version  the version\n");
}

int main(int argc, char **argv)
{
	size_t i;

	if (argc < 2) {
		error("a COMMAND is needed (see 'qcowctl --help')");
		return EXIT_USAGE;
	}
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		usage(stdout);
		return EXIT_OK;
	}
	if (strcmp(argv[1], "-V") == 0 || strcmp(argv[1], "--version") == 0) {
		printf("qcowctl %s\n", QCOWFS_VERSION);
		return EXIT_OK;
	}
	argc = ctl_take_offline(argc, argv);
	for (i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]); i++)
		if (strcmp(argv[1], subcommands[i].name) == 0)
			return subcommands[i].run(argc - 1, argv + 1);
	error("unknown command '%s' (see 'qcowctl --help')", argv[1]);
	return EXIT_USAGE;
}
