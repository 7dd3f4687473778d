/* SPDX-License-Identifier: MIT */
/*
 * cmd-check.c - qcowctl check [--repair [--dry-run]] [--json] [-p|-q] [-U] IMAGE: the
 * consistency report of `qemu-img check` (same counts, same words, same JSON field names, same
 * exit status), and its repair (`qemu-img check -r all`, plus what QEMU leaves broken).
 *
 * Each problem goes to stderr as it is found, the report to stdout, as qemu-img does.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"
#include "qcowctl.h"

struct check_opts {
	struct common_opts c;
	bool repair;
	bool leaks_only; /* -r leaks */
	bool force_share;
	bool drop_bad_snapshots;
	const char *drop_bitmap; /* --drop-bitmap NAME */
};

static void check_usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: qcowctl check [--repair|-r all|-r leaks [--drop-bad-snapshots] [--dry-run]]\n"
	    "                     [--json] [-p|-q] [-U] [-f qcow2] IMAGE\n\n"
	    "Check a qcow2 image as 'qemu-img check' does: the refcount of every cluster\n"
	    "against what points at it, tables against the file, the COPIED flags. Each\n"
	    "problem is printed to stderr, the report to stdout.\n"
	    "Exit status: 0 clean, 2 corruptions, 3 leaked clusters only, 1 the check could\n"
	    "not complete, 4 a repair would not have improved the image (nothing changed).\n\n"
	    "  --repair           fix what is found, as 'qemu-img check -r all' does, then\n"
	    "                     check again; L2 entries QEMU cannot read (misaligned, past\n"
	    "                     the end of the file) become zero clusters, data lying in\n"
	    "                     metadata gets a cluster of its own, a broken refcount\n"
	    "                     structure is rebuilt elsewhere; kept only if a check of the\n"
	    "                     result finds fewer errors and no more corruptions, else\n"
	    "                     every byte is put back; refused while another process uses\n"
	    "                     the image\n"
	    "  -r all             as --repair (qemu-img's spelling)\n"
	    "  -r leaks           only free leaked clusters (and set the COPIED flags that\n"
	    "                     leaves missing), as 'qemu-img check -r leaks'; refused on\n"
	    "                     an image with other errors\n"
	    "  --drop-bad-snapshots\n"
	    "                     with --repair: first remove from the snapshot table each\n"
	    "                     snapshot whose L1 table cannot be read (misaligned, too\n"
	    "                     large, past the end of the file); the repair then frees\n"
	    "                     what only it used. It could not be read anyway\n"
	    "  --drop-bitmap NAME with --repair: first take the persistent bitmap NAME out of\n"
	    "                     the bitmap directory if it is inconsistent (in use, or\n"
	    "                     damaged); the repair then frees its clusters\n"
	    "  --dry-run          with --repair: print what would be fixed, change nothing\n"
	    "  --json             JSON, with 'qemu-img check --output=json' field names\n"
	    "  --output=json|human  as --json, or the text report (the default)\n"
	    "  -f qcow2           IMAGE's format (only qcow2)\n"
	    "  -p, --progress     show a progress bar (default: on a terminal)\n"
	    "  -q, --quiet        no progress bar and no text report (the exit status tells)\n"
	    "  -v, --verbose      print where the time went (the phases, on stderr)\n"
	    "  -U, --force-share  do not take (or respect) image locks (not with --repair)\n"
	    "  --key IMAGE=KEYFILE  accepted: a check reads metadata only, no key needed\n"
	    "  -h, --help         this text\n");
}

struct msg_ctx {
	const struct check_opts *o;
	struct progress *p;
};

static void on_message(void *ctx, enum qcow2_check_msg kind, const char *text)
{
	const struct msg_ctx *m = ctx;

	if (m->p->drawn) { /* the line goes over the progress bar, which is drawn again */
		fputs("\r\033[K", stderr);
		m->p->drawn = false;
	}
	if (kind == QCOW2_CHECK_REPAIR && m->o->c.dry_run)
		fprintf(stderr, "(dry run) %s\n", text);
	else
		fprintf(stderr, "%s\n", text);
}

static void print_human(const struct qcow2_check_result *r)
{
	if (!r->corruptions && !r->leaks && !r->check_errors) {
		printf("No errors were found on the image.\n");
	} else {
		if (r->corruptions)
			printf("\n%" PRIu64
			       " errors were found on the image.\nData may be corrupted, "
			       "or further writes to the image may corrupt it.\n",
			       r->corruptions);
		if (r->leaks)
			printf("\n%" PRIu64 " leaked clusters were found on the image.\nThis means "
			       "waste of disk space, but no harm to data.\n",
			       r->leaks);
		if (r->check_errors)
			printf("\n%" PRIu64 " internal errors have occurred during the check.\n",
			       r->check_errors);
	}
	if (r->total_clusters && r->allocated_clusters)
		printf("%" PRIu64 "/%" PRIu64 " = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% "
		       "compressed clusters\n",
		       r->allocated_clusters, r->total_clusters,
		       (double)r->allocated_clusters * 100.0 / (double)r->total_clusters,
		       (double)r->fragmented_clusters * 100.0 / (double)r->allocated_clusters,
		       (double)r->compressed_clusters * 100.0 / (double)r->allocated_clusters);
	if (r->image_end_offset)
		printf("Image end offset: %" PRIu64 "\n", r->image_end_offset);
}

/* As qemu-img: a number that is 0 is left out, except check-errors. */
static void json_nonzero(struct json *j, const char *key, uint64_t v)
{
	if (v)
		json_uint(j, key, v);
}

static void print_json(const char *path, const struct qcow2_check_result *r, bool dry_run)
{
	struct json j;

	json_init(&j, stdout);
	json_begin_object(&j, NULL);
	json_nonzero(&j, "image-end-offset", r->image_end_offset);
	json_nonzero(&j, "total-clusters", r->total_clusters);
	json_uint(&j, "check-errors", r->check_errors);
	json_nonzero(&j, "corruptions", r->corruptions);
	json_nonzero(&j, "leaks", r->leaks);
	json_nonzero(&j, "corruptions-fixed", r->corruptions_fixed);
	json_nonzero(&j, "leaks-fixed", r->leaks_fixed);
	json_nonzero(&j, "allocated-clusters", r->allocated_clusters);
	json_string(&j, "filename", path);
	json_string(&j, "format", "qcow2");
	json_nonzero(&j, "fragmented-clusters", r->fragmented_clusters);
	json_nonzero(&j, "compressed-clusters", r->compressed_clusters);
	if (dry_run)
		json_bool(&j, "dry-run", true);
	json_end_object(&j);
	json_finish(&j);
}

/* What was (or, in a dry run, would be) repaired, as qemu-img words it. */
static void print_fixed(const struct check_opts *o, const struct qcow2_check_result *r)
{
	if (o->c.json || o->c.progress == PROGRESS_QUIET)
		return;
	printf("The following inconsistencies %s:\n\n    %" PRIu64 " leaked clusters\n    %" PRIu64
	       " corruptions\n\n%s",
	       o->c.dry_run ? "would be repaired (dry run: nothing was changed)"
			    : "were found and repaired",
	       r->leaks_fixed, r->corruptions_fixed,
	       o->c.dry_run ? "The image as it is:\n" : "Double checking the fixed image now...\n");
	fflush(stdout);
}

/* --drop-bad-snapshots: name each bad entry, then (unless a dry run) drop them all. */
static int drop_bad_snapshots(struct qcow2_image *img, const struct check_opts *o)
{
	uint32_t i, n = qcow2_image_snapshot_count(img), dropped;

	for (i = 0; i < n; i++) {
		const struct qcow2_snapshot *s = qcow2_image_snapshot(img, i);

		if (s->unreadable)
			fprintf(stderr, "%sRepairing snapshot table: %s snapshot %s (%s): %s\n",
				o->c.dry_run ? "(dry run) " : "",
				o->c.dry_run ? "would drop" : "dropping", s->id, s->name,
				s->invalid);
	}
	return o->c.dry_run ? 0 : qcow2_image_snapshot_drop_unreadable(img, &dropped);
}

/* --drop-bitmap NAME: the bitmap taken out of the directory if it is inconsistent, saying why;
 * the repair then frees its clusters. */
static int drop_bitmap(struct qcow2_image *img, const struct check_opts *o)
{
	char why[256];
	int r = qcow2_image_bitmap_drop(img, o->drop_bitmap, o->c.dry_run, why, sizeof(why));

	if (r == 0)
		fprintf(stderr, "%sRepairing bitmap directory: %s bitmap '%s', which %s\n",
			o->c.dry_run ? "(dry run) " : "", o->c.dry_run ? "would drop" : "dropping",
			o->drop_bitmap, why);
	return r;
}

/* Check (or repair, then check again) the image @*img at @path into @res. The check after a
 * repair is made on the image opened afresh: it reads what is on disk, as qemu-img would.
 * *@unimproved: the repair put everything back, since it would not have improved the image. */
static int run(struct qcow2_image **img, const char *path, const struct check_opts *o,
	       struct progress *p, struct qcow2_check_result *res, bool *unimproved)
{
	struct qcow2_chain_opts co = {.lock = !o->force_share};
	struct msg_ctx m = {o, p};
	struct qcow2_job job;
	struct qcow2_check_opts ck = {&job, on_message, &m};
	struct qcow2_check_result after;
	int r;

	*unimproved = false;
	job_init(&job, p);
	if (!o->repair)
		return qcow2_image_check_report(*img, &ck, res);
	r = o->leaks_only ? qcow2_image_repair_leaks(*img, o->c.dry_run, res)
			  : qcow2_image_repair(*img, &ck, o->c.dry_run, res);
	if (r == -ENOTRECOVERABLE) {
		*unimproved = true;
		return 0;
	}
	if (r < 0 || (!res->leaks_fixed && !res->corruptions_fixed))
		return r;
	print_fixed(o, res);
	if (o->c.dry_run)
		return 0;
	qcow2_image_close(*img);
	*img = NULL;
	r = qcow2_image_open_path(path, &co, img);
	if (r == 0)
		r = qcow2_image_check_report(*img, &ck, &after);
	after.leaks_fixed = res->leaks_fixed;
	after.corruptions_fixed = res->corruptions_fixed;
	*res = after;
	return r;
}

static int check_image(const char *path, const struct check_opts *o)
{
	struct qcow2_chain_opts co = {.lock = !o->force_share, .top_blockdev = true};
	struct qcow2_check_result res;
	struct qcow2_image *img;
	struct progress p;
	bool unimproved;
	int r;

	catch_interrupts();
	co.repair = o->repair && !o->c.dry_run;
	r = qcow2_image_open_path(path, &co, &img);
	if (r < 0)
		return fail_lib();
	progress_init(&p, &o->c, o->repair && !o->c.dry_run ? "repairing" : "checking");
	r = o->drop_bad_snapshots ? drop_bad_snapshots(img, o) : 0;
	if (r == 0 && o->drop_bitmap)
		r = drop_bitmap(img, o);
	if (r == 0)
		r = run(&img, path, o, &p, &res, &unimproved);
	progress_end(&p);
	qcow2_image_close(img);
	if (r < 0)
		return fail_lib();
	if (unimproved) {
		/* the image as found (and as it still is), then why nothing was changed */
		if (o->c.json)
			print_json(path, &res, false);
		else if (o->c.progress != PROGRESS_QUIET)
			print_human(&res);
		error("%s", qcow2_last_error());
		return EXIT_NOT_IMPROVED;
	}
	if (o->c.json)
		print_json(path, &res, o->repair && o->c.dry_run);
	else if (o->c.progress != PROGRESS_QUIET)
		print_human(&res);
	if (res.check_errors) {
		error("check of '%s' failed", path);
		return EXIT_FAIL;
	}
	return res.corruptions ? EXIT_CORRUPT : res.leaks ? EXIT_LEAKS : EXIT_OK;
}

int cmd_check(int argc, char **argv)
{
	static const struct option longopts[] = {
	    COMMON_LONGOPTS,
	    VERBOSE_LONGOPT,
	    {"repair", no_argument, NULL, 'R'},
	    {"force-share", no_argument, NULL, 'U'},
	    {"drop-bad-snapshots", no_argument, NULL, 'D'},
	    {"drop-bitmap", required_argument, NULL, 'B'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct check_opts o = {0};
	int c;

	while ((c = next_option(argc, argv, "hpqvUr:", longopts, "check")) != -1) {
		if (common_opt(c, &o.c))
			continue;
		switch (c) {
		case 'R':
			o.repair = true;
			break;
		case 'r': /* qemu-img's spelling */
			if (strcmp(optarg, "all") != 0 && strcmp(optarg, "leaks") != 0)
				return usage_error(
				    "check", "option '-r' takes leaks or all, not '%s'", optarg);
			o.repair = true;
			o.leaks_only = !strcmp(optarg, "leaks");
			break;
		case 'U':
			o.force_share = true;
			break;
		case 'D':
			o.drop_bad_snapshots = true;
			break;
		case 'B':
			o.drop_bitmap = optarg;
			break;
		case 'h':
			check_usage(stdout);
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind + 1 != argc) {
		return usage_error("check", "takes one IMAGE");
	}
	if (o.drop_bitmap && (!o.repair || o.leaks_only))
		return usage_error("check", "--drop-bitmap is a repair: use it with --repair");
	if (o.drop_bad_snapshots && (!o.repair || o.leaks_only))
		return usage_error("check",
				   "--drop-bad-snapshots is a repair: use it with --repair");
	if (o.repair && o.force_share && !o.c.dry_run)
		return usage_error("check", "--force-share cannot be used with --repair: a repair "
					    "needs the image alone");
	return check_image(argv[optind], &o);
}
