/* SPDX-License-Identifier: MIT */
/*
 * cmd-copy.c - qcowctl copy (alias convert) [--shallow] [-O qcow2|raw] [-o OPTS] [-c] [-B BACKING
 * [-F FMT]] [-S SIZE] [-n] [-l SNAP] SRC[@SNAP] DEST: virsh blockcopy and qemu-img convert,
 * with qemu-img convert's spellings. Each option is parsed by one case of the option loop
 * and stored in struct qcow2_convert_opts; the library does the rest.
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"
#include "qcowctl.h"

static void copy_usage(FILE *f, const char *cmd)
{
	fprintf(f,
		"usage: qcowctl %s [--shallow] [-f qcow2] [-O qcow2|raw] [-o OPTIONS] [-c]\n"
		"         [-B BACKING [-F FMT]] [-S SIZE] [-n] [-l SNAPSHOT | -s SNAPSHOT] [-W]\n"
		"         [-m N] [--dry-run] [--json] [-p|-q] SRC[@SNAP] DEST\n\n",
		cmd);
	fprintf(
	    f,
	    "Copy the flat view of SRC's chain into a new standalone image DEST (virsh\n"
	    "blockcopy, qemu-img convert), or with --shallow only SRC's own layer, DEST then\n"
	    "backing onto SRC's backing file. 'copy' and 'convert' are the same command, with\n"
	    "qemu-img convert's options. Only allocated data is read and written: holes and\n"
	    "zeros stay holes (unless -S 0), and a raw DEST is a sparse file. DEST is replaced\n"
	    "if it exists (unless -n).\n\n"
	    "  --shallow          copy the top layer only and keep its backing file\n"
	    "  -f FMT             SRC's format: qcow2 (the only one accepted)\n"
	    "  -O FMT             DEST's format: qcow2 (default) or raw\n"
	    "  -o OPTIONS         DEST's options, as 'qcowctl create -o' reads them:\n"
	    "                       cluster_size, compat, refcount_bits, lazy_refcounts,\n"
	    "                       extended_l2, compression_type=zlib|zstd, preallocation,\n"
	    "                       backing_file, backing_fmt (as -B, -F), encrypt.format=luks\n"
	    "                       and encrypt.* (the passphrase by --key DEST=KEYFILE); SRC's\n"
	    "                       cluster size,\n"
	    "                       compat level and extended_l2 are kept unless given\n"
	    "  -c, --compress     write compressed clusters (whole clusters, with DEST's\n"
	    "                     compression_type: zlib unless -o compression_type=zstd)\n"
	    "  -B BACKING         DEST backs onto BACKING (stored as given, relative to DEST's\n"
	    "                     directory) and holds only what differs from BACKING's view\n"
	    "  -F FMT             BACKING's format, qcow2 or raw (default: probed)\n"
	    "  -S SIZE            runs of zeros in data shorter than SIZE are written, longer\n"
	    "                     ones left unallocated (default 4k; a multiple of 512 up to\n"
	    "                     16M); -S 0 writes everything: DEST is fully allocated\n"
	    "  -n                 DEST exists (a qcow2 image at least as large as SRC): write\n"
	    "                     into it in place instead of creating it (no -o then)\n"
	    "  -l SNAPSHOT        copy SRC's internal snapshot: snapshot.name=NAME,\n"
	    "                     snapshot.id=ID, or an id or name (as SRC@SNAP)\n"
	    "  -s SNAPSHOT        the same (qemu-img's deprecated spelling)\n"
	    "  -W                 accepted for qemu-img's sake: writes are always in order\n"
	    "                     (the result is the same without it)\n"
	    "  --bitmaps          keep SRC's persistent bitmaps (qemu-img convert --bitmaps;\n"
	    "                     --skip-broken-bitmaps leaves out those in use)\n"
	    "  -m N               with -c, compress on N threads (1 to 16; default: one per\n"
	    "                     CPU, up to 4); clusters are stored in order, so the result\n"
	    "                     is the same. SRC is always read ahead by 4 threads\n"
	    "  --dry-run          print the plan and change nothing\n"
	    "  --json             print the plan as JSON\n"
	    "  --output=json|human  as --json, or the text (the default)\n"
	    "  -p, --progress     show progress even when not on a terminal\n"
	    "  -q, --quiet        print nothing but errors\n"
	    "  -v, --verbose      print where the time went (the phases, on stderr)\n"
	    "  --key IMAGE=KEYFILE  the passphrase of an encrypted image of SRC's chain, or of\n"
	    "                     DEST when it is made encrypted (-o encrypt.format=luks);\n"
	    "                     repeatable\n"
	    "  -h, --help         this text\n\n"
	    "The copy is built under a hidden name next to DEST and renamed to DEST once it is\n"
	    "complete and durable: interrupted or killed, DEST is untouched; running the same\n"
	    "command again makes the copy. With -n, DEST is written in place: interrupted, it\n"
	    "is valid but holds part of the copy.\n");
}

enum { OPT_SHALLOW = 0x200 };
enum { OPT_BITMAPS = 0x300, OPT_SKIP_BROKEN }; /* copy --bitmaps (cmd-bitmap.c) */

struct copy_args {
	struct qcow2_convert_opts o;
	struct qcow2_create_opts create;
	struct common_opts co;
	const char *cmd;
	bool have_o; /* -o given */
	char *snap;  /* -l / -s */
	int bitmaps; /* 1: --bitmaps, 2: with --skip-broken-bitmaps */
};

static int parse_sparse(const char *cmd, const char *val, struct qcow2_convert_opts *o)
{
	uint64_t v;

	if (parse_size(val, &v) < 0 || v % 512 || v > (16u << 20))
		return usage_error(cmd,
				   "invalid -S '%s': a multiple of 512 up to 16M, or 0 to write "
				   "everything",
				   val),
		       -1;
	o->no_sparse = v == 0;
	o->min_sparse = v;
	return 0;
}

/* -l snapshot.name=NAME | snapshot.id=ID | ID_OR_NAME (qemu-img's forms). */
static int parse_snapshot(struct copy_args *a, const char *val)
{
	const char *v = val;

	if (!strncmp(val, "snapshot.name=", 14))
		v = val + 14;
	else if (!strncmp(val, "snapshot.id=", 12))
		v = val + 12;
	else if (!strncmp(val, "snapshot.", 9) || !*val)
		return usage_error(a->cmd,
				   "invalid -l '%s': snapshot.name=NAME, snapshot.id=ID or a name",
				   val),
		       -1;
	if (a->snap)
		return usage_error(a->cmd, "one snapshot only (-l or -s)"), -1;
	a->snap = strdup(v);
	if (!a->snap)
		return error("out of memory"), -1;
	return 0;
}

static int parse_format(const char *cmd, int c, const char *val, struct qcow2_convert_opts *o)
{
	if (c == 'f' && strcmp(val, "qcow2") != 0)
		return usage_error(cmd, "cannot read '%s' images: only qcow2 sources", val), -1;
	if (c == 'O' && !strcmp(val, "raw"))
		o->raw = true;
	else if (c == 'O' && strcmp(val, "qcow2") != 0)
		return usage_error(cmd, "output format '%s' not supported (qcow2 or raw)", val), -1;
	return 0;
}

static int parse_workers(const char *cmd, const char *val, unsigned *threads)
{
	char *end;
	long n = strtol(val, &end, 10);

	if (*end || end == val || n < 1 || n > 16)
		return usage_error(cmd, "invalid -m '%s': 1 to 16", val), -1;
	*threads = (unsigned)n;
	return 0;
}

/* One option of the loop; 1: not one of convert's own. */
static int copy_opt(struct copy_args *a, int c)
{
	switch (c) {
	case OPT_SHALLOW:
		a->o.shallow = true;
		return 0;
	case 'c':
		a->o.compress = true;
		return 0;
	case 'f':
	case 'O':
		return parse_format(a->cmd, c, optarg, &a->o);
	case 'o':
		a->have_o = true;
		return parse_image_options(optarg, a->cmd, &a->create, &a->o.backing,
					   &a->o.backing_fmt);
	case 'B':
		a->o.backing = optarg;
		return 0;
	case 'F':
		a->o.backing_fmt = optarg;
		return 0;
	case 'S':
		return parse_sparse(a->cmd, optarg, &a->o);
	case 'n':
		a->o.existing = true;
		return 0;
	case 'l':
	case 's':
		return parse_snapshot(a, optarg);
	case 'W':
		return 0; /* out-of-order writes: ours are in order, the result is the same */
	case 'm':
		return parse_workers(a->cmd, optarg, &a->o.threads);
	default:
		return 1;
	}
}

static int check_args(struct copy_args *a)
{
	if (a->o.backing_fmt && !a->o.backing)
		return usage_error(a->cmd, "-F needs -B"), -1;
	if (a->o.backing_fmt && strcmp(a->o.backing_fmt, "qcow2") &&
	    strcmp(a->o.backing_fmt, "raw"))
		return usage_error(a->cmd, "backing format '%s' not supported (qcow2 or raw)",
				   a->o.backing_fmt),
		       -1;
	if (a->have_o && a->o.existing)
		return usage_error(a->cmd, "-o has no effect when skipping image creation (-n)"),
		       -1;
	if (a->have_o && a->o.raw)
		return usage_error(a->cmd, "-o options are for a qcow2 DEST"), -1;
	return 0;
}

static int parse_args(int argc, char **argv, struct copy_args *a)
{
	static const struct option longopts[] = {
	    {"shallow", no_argument, NULL, OPT_SHALLOW},
	    {"compress", no_argument, NULL, 'c'},
	    {"bitmaps", no_argument, NULL, OPT_BITMAPS},
	    {"skip-broken-bitmaps", no_argument, NULL, OPT_SKIP_BROKEN},
	    {"help", no_argument, NULL, 'h'},
	    COMMON_LONGOPTS,
	    VERBOSE_LONGOPT,
	    {NULL, 0, NULL, 0},
	};
	int c, r;

	while ((c = next_option(argc, argv, "hpqvcf:O:o:B:F:S:nl:s:Wm:", longopts, a->cmd)) != -1) {
		if (common_opt(c, &a->co))
			continue;
		if (c == 'h') {
			copy_usage(stdout, a->cmd);
			exit(EXIT_OK);
		}
		if (c == OPT_BITMAPS || c == OPT_SKIP_BROKEN) {
			a->bitmaps = c == OPT_SKIP_BROKEN || a->bitmaps == 2 ? 2 : 1;
			continue;
		}
		r = copy_opt(a, c);
		if (r != 0)
			return -1; /* 1: getopt's OPT_BAD, its line already printed */
	}
	if (argc - optind != 2)
		return usage_error(a->cmd, "takes SRC and DEST"), -1;
	return check_args(a);
}

int cmd_copy(int argc, char **argv)
{
	struct copy_args a = {.cmd = argv[0]};
	struct qcow2_plan plan;
	struct qcow2_job job;
	struct progress p;
	char *src = NULL, *snap = NULL;
	int r;

	qcow2_create_opts_default(&a.create);
	a.o.create = &a.create;
	a.o.min_sparse = 4096; /* -S's default, as qemu-img's */
	if (parse_args(argc, argv, &a) < 0) {
		free(a.snap);
		return EXIT_USAGE;
	}
	if (split_image_snapshot(argv[optind], &src, &snap) < 0) {
		free(a.snap);
		return fail_lib();
	}
	if (snap && a.snap) {
		error("a snapshot in SRC and with -l: one only");
		free(a.snap);
		free(src);
		free(snap);
		return EXIT_USAGE;
	}
	/* -o encrypt.format=luks: the new image's passphrase is DEST's --key */
	if (a.create.luks && !(a.create.luks_key = key_for(argv[optind + 1]))) {
		error("encrypt.format=luks needs the passphrase of '%s': --key %s=KEYFILE",
		      argv[optind + 1], argv[optind + 1]);
		free(a.snap);
		free(src);
		free(snap);
		return EXIT_USAGE;
	}
	a.o.snapshot = snap ? snap : a.snap;
	a.o.dry_run = a.co.dry_run;
	if (a.bitmaps && (a.o.raw || a.o.snapshot)) {
		error("--bitmaps copies the bitmaps of SRC's active state into a qcow2 DEST");
		free(a.snap);
		free(src);
		free(snap);
		return EXIT_USAGE;
	}
	if (a.bitmaps && bitmaps_copy(src, NULL, a.bitmaps == 2) < 0) {
		free(a.snap);
		free(src);
		free(snap);
		return fail_lib();
	}
	catch_interrupts();
	progress_init(&p, &a.co, "copy");
	job_init(&job, &p);
	r = qcow2_convert(src, argv[optind + 1], &a.o, &job, &plan);
	progress_end(&p);
	if (r == 0 && a.bitmaps && !a.co.dry_run)
		r = bitmaps_copy(src, argv[optind + 1], a.bitmaps == 2);
	if (r == 0)
		print_job_plan(&plan, &a.co);
	qcow2_plan_release(&plan);
	free(a.snap);
	free(src);
	free(snap);
	return r < 0 ? fail_lib() : EXIT_OK;
}
