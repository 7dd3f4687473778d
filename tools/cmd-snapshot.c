/* SPDX-License-Identifier: MIT */
/*
 * cmd-snapshot.c - qcowctl snapshot list|create|apply|delete IMAGE [NAME]: internal snapshots,
 * as `qemu-img snapshot` handles them. The work and its crash safety are the library's
 * (snapshot-plan.c, snapshot-write.c); this parses, opens the image (QEMU's write locks taken,
 * the holder named on refusal), calls it and prints.
 *
 * Each subcommand has its own entry in the table below and its own option table, so a new
 * subcommand or option (create --external) is one more entry.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "qcow2.h"
#include "qcowctl.h"

static void snapshot_usage(FILE *f)
{
	fprintf(
	    f, "usage: qcowctl snapshot list [--json] [-U] IMAGE\n"
	       "       qcowctl snapshot create [--dry-run [--json]] [-q] IMAGE NAME\n"
	       "       qcowctl snapshot create --external [--dry-run] [--json] [-q] IMAGE NEW\n"
	       "       qcowctl snapshot apply [--dry-run [--json]] [-q] IMAGE SNAPSHOT\n"
	       "       qcowctl snapshot delete [--dry-run [--json]] [-q] IMAGE SNAPSHOT\n"
	       "       qcowctl snapshot list --tree [--json] IMAGE\n"
	       "       qcowctl snapshot revert --external [--discard] [--dry-run] [--json]\n"
	       "                               [-q] IMAGE SNAP\n"
	       "       qcowctl snapshot delete --external [--dry-run] [--json] [-p] [-q]\n"
	       "                               IMAGE SNAP\n"
	       "       qcowctl snapshot [-l | -c NAME | -a SNAPSHOT | -d SNAPSHOT] [-q] [-U]\n"
	       "                        [-f qcow2] IMAGE   (qemu-img's spelling)\n\n"
	       "Internal snapshots of a qcow2 image, as qemu-img snapshot handles them.\n\n"
	       "  list    the snapshots: ID, tag, VM state size, date, VM clock, icount\n"
	       "  create  snapshot the active state as NAME (the next free number as its ID);\n"
	       "          with --external, make NEW, an overlay on IMAGE, the active image\n"
	       "  apply   make SNAPSHOT (an ID or a name) the active state, virtual size included\n"
	       "  delete  delete SNAPSHOT (an ID or a name), freeing what only it used;\n"
	       "          with --external, remove SNAP, a file of IMAGE's chain, every view\n"
	       "          above it unchanged ('snapshot delete --external --help')\n"
	       "  revert  --external: IMAGE becomes an empty overlay on SNAP, a file of its\n"
	       "          chain; the state left kept as IMAGE.branch-N, or deleted with\n"
	       "          --discard ('snapshot revert --external --help')\n"
	       "  list --tree  the chain's files, branches and internal snapshots as a tree\n"
	       "          ('snapshot list --tree --help')\n\n"
	       "  --json             list: JSON, with qemu-img info's snapshot field names;\n"
	       "                     with --dry-run: the plan as JSON\n"
	       "  -U, --force-share  list: do not take (or respect) image locks\n"
	       "  --dry-run          print what would change (snapshots, virtual size, tables\n"
	       "                     written, clusters whose refcount changes, clusters freed)\n"
	       "                     and change nothing\n"
	       "  -q, --quiet        print nothing on success\n"
	       "  -p, --progress     delete --external: show progress even when not on a\n"
	       "                     terminal\n"
	       "  --external         create, revert, delete: external snapshots (files)\n"
	       "  --discard          revert --external: delete the state left, no branch\n"
	       "  --tree             list: the tree of files, branches and snapshots\n"
	       "  --key IMAGE=KEYFILE  the passphrase of an encrypted image, from a file\n"
	       "  -l                 as list (qemu-img snapshot -l)\n"
	       "  -c NAME            as create IMAGE NAME, printing nothing on success\n"
	       "  -a SNAPSHOT        as apply IMAGE SNAPSHOT, printing nothing on success\n"
	       "  -d SNAPSHOT        as delete IMAGE SNAPSHOT, printing nothing on success\n"
	       "  -f qcow2           IMAGE's format (only qcow2)\n"
	       "  --output=json|human  list: as --json, or the table (the default)\n"
	       "  --key IMAGE=KEYFILE  the passphrase of an encrypted image of the chain "
	       "(repeatable)\n"
	       "  --offline          list, create, apply, delete: refuse an image a qcowfs mount\n"
	       "                     holds, as any other holder, instead of asking the\n"
	       "                     mount's daemon to run the command\n"
	       "  -h, --help         this text\n\n"
	       "On an image a qcowfs mount holds (a view of it open), list, create and delete\n"
	       "are run by the mount's daemon, on its open image, while the view is read and\n"
	       "written: the same output and exit status ('qcowctl mounts' lists the mounts).\n"
	       "create, apply and delete refuse while another process holds IMAGE for writing\n"
	       "(a running VM, qemu-io; a qcowfs mount with --offline) and name it; a qcowfs\n"
	       "mount refuses apply while the image's view is open.\n"
	       "Interrupted or killed at any point, they leave a valid image: before or after\n"
	       "the change, some clusters leaked at worst (qemu-img check -r leaks reclaims\n"
	       "them). A delete keeps a journal next to IMAGE (.IMAGE.qcowctl-snapshot-delete)\n"
	       "while it runs: run again after a kill, it completes the delete (exit 0), or,\n"
	       "if the snapshot was already gone, finishes its cleanup (the leaked clusters and\n"
	       "COPIED flags) and says it was already deleted. Without that journal a name that\n"
	       "is not there is an error.\n");
}

/* ---- list ---- */

/* Is @opt among the options of @argv (before a "--")? */
static bool has_option(int argc, char **argv, const char *opt)
{
	for (int i = 1; i < argc && strcmp(argv[i], "--"); i++)
		if (!strcmp(argv[i], opt))
			return true;
	return false;
}

/* A number of a daemon's record (0 when absent). */
static uint64_t rec_u64(const char *rec, const char *key)
{
	char v[32];

	return ctl_rec_get(rec, key, v, sizeof(v)) ? strtoull(v, NULL, 10) : 0;
}

/* One line of `qemu-img snapshot -l` (QEMU 7.2's columns). */
static void list_line(const struct qcow2_snapshot *s)
{
	char vm[32], date[32] = "", clock[48], icount[24] = "";
	time_t t = (time_t)s->date_sec;
	uint64_t secs = s->vm_clock_nsec / 1000000000;
	struct tm tm;

	format_size(s->vm_state_bytes, vm, sizeof(vm));
	if (localtime_r(&t, &tm))
		strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
	snprintf(clock, sizeof(clock), "%02" PRIu64 ":%02" PRIu64 ":%02" PRIu64 ".%03" PRIu64,
		 secs / 3600, secs / 60 % 60, secs % 60, s->vm_clock_nsec / 1000000 % 1000);
	if (s->icount != ~0ull)
		snprintf(icount, sizeof(icount), "%" PRIu64, s->icount);
	printf("%-9s %-16s %8s%20s%13s%11s\n", s->id, s->name, vm, date, clock, icount);
}

static void list_json(const struct qcow2_snapshot *v, uint32_t n)
{
	struct json j;
	uint32_t i;

	json_init(&j, stdout);
	json_begin_array(&j, NULL);
	for (i = 0; i < n; i++) {
		const struct qcow2_snapshot *s = &v[i];

		json_begin_object(&j, NULL);
		json_string(&j, "id", s->id);
		json_string(&j, "name", s->name);
		json_uint(&j, "vm-state-size", s->vm_state_bytes);
		json_uint(&j, "date-sec", s->date_sec);
		json_uint(&j, "date-nsec", s->date_nsec);
		json_uint(&j, "vm-clock-sec", s->vm_clock_nsec / 1000000000);
		json_uint(&j, "vm-clock-nsec", s->vm_clock_nsec % 1000000000);
		if (s->icount != ~0ull)
			json_uint(&j, "icount", s->icount);
		json_uint(&j, "disk-size", s->disk_bytes);
		json_end_object(&j);
	}
	json_end_array(&j);
	json_finish(&j);
}

/* The list, as text or JSON: the one formatter of a local list and of one a qcowfs daemon
 * ran (its records). */
static void list_print(const struct qcow2_snapshot *v, uint32_t n, bool json)
{
	uint32_t i;

	if (json) {
		list_json(v, n);
	} else if (n) {
		printf("Snapshot list:\n%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE",
		       "DATE", "VM CLOCK", "ICOUNT");
		for (i = 0; i < n; i++)
			list_line(&v[i]);
	}
}

/* The snapshots a daemon sent, one record each. */
struct remote_list {
	struct qcow2_snapshot *v;
	uint32_t n;
	char ids[1024][24];
	char *names[1024];
};

static void list_record(void *ctx, const char *rec)
{
	struct remote_list *l = ctx;
	struct qcow2_snapshot *s, *v;
	char name[4096];

	if (l->n == 1024 || !(v = realloc(l->v, (l->n + 1) * sizeof(*v))))
		return;
	l->v = v;
	s = &v[l->n];
	memset(s, 0, sizeof(*s));
	ctl_rec_get(rec, "id", l->ids[l->n], sizeof(l->ids[0]));
	l->names[l->n] = strdup(ctl_rec_get(rec, "name", name, sizeof(name)) ? name : "");
	s->id = l->ids[l->n];
	s->name = l->names[l->n] ? l->names[l->n] : "";
	s->vm_state_bytes = rec_u64(rec, "vm-state-size");
	s->date_sec = (uint32_t)rec_u64(rec, "date-sec");
	s->date_nsec = (uint32_t)rec_u64(rec, "date-nsec");
	s->vm_clock_nsec = rec_u64(rec, "vm-clock-nsec");
	s->icount = rec_u64(rec, "icount");
	s->disk_bytes = rec_u64(rec, "disk-size");
	l->n++;
}

/* snapshot list of an image a qcowfs mount holds: run by its daemon. -1: none serves it. */
static int list_remote(const char *path, bool json)
{
	struct remote_list *l = calloc(1, sizeof(*l));
	char real[PATH_MAX];
	char *words[] = {"snapshot", "list", real};
	int r;

	if (!l || !realpath(path, real)) {
		free(l);
		return -1;
	}
	r = ctl_forward(path, 3, words, list_record, l, NULL);
	if (r == 0)
		list_print(l->v, l->n, json);
	for (uint32_t i = 0; i < l->n; i++)
		free(l->names[i]);
	free(l->v);
	free(l);
	return r;
}

static int snapshot_list(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"json", no_argument, NULL, OPT_JSON},
	    {"force-share", no_argument, NULL, 'U'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct common_opts o = {0};
	struct qcow2_chain_opts co = {.lock = true, .top_blockdev = true, .keys = *cli_keys()};
	struct qcow2_snapshot *v;
	struct qcow2_image *img;
	uint32_t i, n;
	int c, r;

	if (has_option(argc, argv, "--tree"))
		return snapshot_list_tree(argc, argv);
	while ((c = next_option(argc, argv, "hU", longopts, "snapshot")) != -1) {
		if (c == 'h') {
			snapshot_usage(stdout);
			return EXIT_OK;
		}
		if (c == 'U')
			co.lock = false;
		else if (c != OPT_JSON || !common_opt(c, &o))
			return EXIT_USAGE;
	}
	if (optind + 1 != argc)
		return usage_error("snapshot", "list takes one IMAGE");
	r = qcow2_image_open_path(argv[optind], &co, &img);
	if (r < 0) {
		/* held by a qcowfs mount: its daemon reads its own open image */
		r = r == -EBUSY ? list_remote(argv[optind], o.json) : -1;
		return r >= 0 ? r : fail_lib();
	}
	n = qcow2_image_snapshot_count(img);
	v = calloc(n ? n : 1, sizeof(*v));
	if (!v) {
		qcow2_image_close(img);
		return fail_lib();
	}
	for (i = 0; i < n; i++)
		v[i] = *qcow2_image_snapshot(img, i);
	list_print(v, n, o.json);
	free(v);
	qcow2_image_close(img);
	return EXIT_OK;
}

/* ---- create, apply, delete ---- */

struct change {
	enum qcow2_snapshot_op op;
	const char *verb; /* "create" */
	const char *done; /* "created" */
	const char *path;
	const char *arg; /* the new name, or the snapshot's ID or name */
	struct common_opts o;
};

/* The name of the snapshot the plan is about, as the image knows it. */
static const char *plan_name(const struct qcow2_image *img, const struct change *ch,
			     const struct qcow2_snapshot_plan *p)
{
	int i;

	if (ch->op == QCOW2_SNAPSHOT_CREATE)
		return ch->arg;
	i = qcow2_image_find_snapshot(img, p->id);
	return i < 0 ? ch->arg : qcow2_image_snapshot(img, (uint32_t)i)->name;
}

static void print_count(const char *what, uint64_t clusters, uint64_t cs)
{
	char b[32];

	format_size(clusters * cs, b, sizeof(b));
	printf("  %-20s %" PRIu64 " (%s)\n", what, clusters, b);
}

static void plan_text(const struct qcow2_image *img, const struct change *ch,
		      const struct qcow2_snapshot_plan *p)
{
	uint64_t cs = qcow2_image_cluster_bytes(img);
	char a[32], b[32];

	printf("dry run: would %s snapshot '%s' (id %s) of '%s'; nothing was changed\n", ch->verb,
	       plan_name(img, ch, p), p->id, ch->path);
	printf("  %-20s %u -> %u\n", "snapshots:", p->nb_before, p->nb_after);
	format_size(p->size_before, a, sizeof(a));
	format_size(p->size_after, b, sizeof(b));
	printf("  %-20s %s -> %s\n", "virtual size:", a, b);
	if (ch->op != QCOW2_SNAPSHOT_APPLY)
		printf("  %-20s %" PRIu64 " bytes%s\n", "snapshot table:", p->table_bytes,
		       p->nb_after ? ", written to new clusters; the old one freed"
				   : ": none left");
	if (ch->op != QCOW2_SNAPSHOT_DELETE)
		printf("  %-20s %" PRIu64 " bytes, %s\n", "L1 table written:", p->l1_bytes,
		       ch->op == QCOW2_SNAPSHOT_CREATE
			   ? "the snapshot's copy of the active one"
			   : "the new active one, a copy of the snapshot's");
	print_count("new clusters:", p->new_clusters, cs);
	print_count("refcounts raised:", p->raised_clusters, cs);
	print_count("refcounts lowered:", p->lowered_clusters, cs);
	print_count("clusters freed:", p->freed_clusters, cs);
}

static void plan_json(const struct qcow2_image *img, const struct change *ch,
		      const struct qcow2_snapshot_plan *p, const struct qcow2_snapshot_resume *res)
{
	struct json j;

	json_init(&j, stdout);
	json_begin_object(&j, NULL);
	json_string(&j, "operation", ch->verb);
	json_string(&j, "filename", ch->path);
	json_string(&j, "id", p->id);
	json_string(&j, "name", plan_name(img, ch, p));
	json_uint(&j, "cluster-size", qcow2_image_cluster_bytes(img));
	json_uint(&j, "snapshots-before", p->nb_before);
	json_uint(&j, "snapshots-after", p->nb_after);
	json_uint(&j, "virtual-size-before", p->size_before);
	json_uint(&j, "virtual-size-after", p->size_after);
	json_uint(&j, "snapshot-table-bytes", p->table_bytes);
	json_uint(&j, "l1-table-bytes", p->l1_bytes);
	json_uint(&j, "new-clusters", p->new_clusters);
	json_uint(&j, "raised-clusters", p->raised_clusters);
	json_uint(&j, "lowered-clusters", p->lowered_clusters);
	json_uint(&j, "freed-clusters", p->freed_clusters);
	if (res) { /* first, the cleanup of an interrupted delete */
		json_uint(&j, "interrupted-leaked-clusters", res->leaks_fixed);
		json_uint(&j, "interrupted-copied-flags", res->copied_fixed);
	}
	json_end_object(&j);
	json_finish(&j);
}

/* The cleanup an interrupted delete left, as the library counts it. */
static void print_cleanup(const struct qcow2_snapshot_resume *res, const char *verb)
{
	printf("  %-20s %" PRIu64 "\n", "leaked clusters:", res->leaks_fixed);
	printf("  %-20s %" PRIu64 " %s\n", "COPIED flags:", res->copied_fixed, verb);
}

/* --dry-run of a delete whose snapshot is gone: a rerun after a kill past the switch would
 * finish its cleanup (the journal says so), or there is no such snapshot. */
static int dry_run_rerun(struct qcow2_image *img, const struct change *ch)
{
	struct qcow2_snapshot_resume res;
	struct json j;
	int r = qcow2_image_snapshot_delete_pending(img, ch->arg, ch->path, &res);

	if (r > 0)
		r = qcow2_io_lock_check(qcow2_image_io(img), QCOW2_WRITER_PERMS,
					QCOW2_WRITER_SHARED)
			?: 1;
	if (r == 0)
		error("'%s': no snapshot '%s'", ch->path, ch->arg);
	if (r <= 0)
		return r < 0 ? fail_lib() : EXIT_FAIL;
	if (ch->o.json) {
		json_init(&j, stdout);
		json_begin_object(&j, NULL);
		json_string(&j, "operation", ch->verb);
		json_string(&j, "filename", ch->path);
		json_string(&j, "name", ch->arg);
		json_bool(&j, "already-deleted", true);
		json_uint(&j, "interrupted-leaked-clusters", res.leaks_fixed);
		json_uint(&j, "interrupted-copied-flags", res.copied_fixed);
		json_end_object(&j);
		json_finish(&j);
		return EXIT_OK;
	}
	printf("dry run: snapshot '%s' of '%s' already deleted; would finish its cleanup; nothing "
	       "was changed\n",
	       ch->arg, ch->path);
	print_cleanup(&res, "to set");
	return EXIT_OK;
}

/* --dry-run: the image opened read-only, the plan printed, the write lock only tested. */
static int dry_run(const struct change *ch)
{
	struct qcow2_chain_opts co = {.lock = true, .top_blockdev = true, .keys = *cli_keys()};
	struct qcow2_snapshot_resume res;
	struct qcow2_snapshot_plan p;
	struct qcow2_image *img;
	int r;

	if (qcow2_image_open_path(ch->path, &co, &img) < 0)
		return fail_lib();
	r = qcow2_image_snapshot_plan(img, ch->op, ch->arg, &p);
	if (r == -ENOENT && ch->op == QCOW2_SNAPSHOT_DELETE) {
		r = dry_run_rerun(img, ch);
		qcow2_image_close(img);
		return r;
	}
	if (r == 0)
		r = qcow2_io_lock_check(qcow2_image_io(img), QCOW2_WRITER_PERMS,
					QCOW2_WRITER_SHARED);
	if (r == 0 && ch->op == QCOW2_SNAPSHOT_DELETE)
		r = qcow2_image_snapshot_delete_pending(img, ch->arg, ch->path, &res);
	if (r >= 0 && ch->o.json)
		plan_json(img, ch, &p, r ? &res : NULL);
	else if (r >= 0)
		plan_text(img, ch, &p);
	if (r > 0 && !ch->o.json) {
		printf("  first, the cleanup of an interrupted delete:\n");
		print_cleanup(&res, "to set");
	}
	if (r < 0)
		fail_lib();
	qcow2_image_close(img);
	return r < 0 ? EXIT_FAIL : EXIT_OK;
}

static int run_change(struct qcow2_image *img, const struct change *ch,
		      struct qcow2_snapshot_resume *res)
{
	switch (ch->op) {
	case QCOW2_SNAPSHOT_CREATE:
		return qcow2_image_snapshot_create(img, ch->arg);
	case QCOW2_SNAPSHOT_APPLY:
		return qcow2_image_snapshot_apply(img, ch->arg);
	default: /* with its journal next to the image: a rerun completes it */
		return qcow2_image_snapshot_delete_resumable(img, ch->arg, ch->path, res);
	}
}

/* What a create, apply or delete did, as it prints it: the one formatter of a local change
 * and of one a qcowfs daemon ran (its record). @id: a created snapshot's. */
static void print_change(const struct change *ch, const char *id,
			 const struct qcow2_snapshot_resume *res)
{
	if (ch->o.progress == PROGRESS_QUIET)
		return;
	if (res->already_deleted) {
		printf("snapshot '%s' of '%s' already deleted; finished its cleanup\n", ch->arg,
		       ch->path);
		print_cleanup(res, "set");
	} else if (ch->op == QCOW2_SNAPSHOT_CREATE)
		printf("created snapshot '%s' (id %s) of '%s'\n", ch->arg, id, ch->path);
	else
		printf("%s snapshot '%s' of '%s'\n", ch->done, ch->arg, ch->path);
	if (!res->already_deleted && (res->leaks_fixed || res->copied_fixed)) {
		printf("  first, the cleanup of an interrupted delete:\n");
		print_cleanup(res, "set");
	}
}

/* A change run by a qcowfs daemon: its record. */
struct remote_change {
	char id[24];
	struct qcow2_snapshot_resume res;
};

static void change_record(void *ctx, const char *rec)
{
	struct remote_change *rc = ctx;

	ctl_rec_get(rec, "id", rc->id, sizeof(rc->id));
	rc->res.already_deleted = rec_u64(rec, "already-deleted") != 0;
	rc->res.leaks_fixed = rec_u64(rec, "leaks-fixed");
	rc->res.copied_fixed = rec_u64(rec, "copied-fixed");
}

/* The image is held: if a qcowfs mount serves it, its daemon makes the change on its own
 * open image (apply is not run live: it would change the disk under the view). -1: none
 * serves it. */
static int change_remote(const struct change *ch)
{
	struct remote_change rc = {.id = ""};
	char real[PATH_MAX];
	char *words[] = {"snapshot", (char *)ch->verb, real, (char *)ch->arg};
	int r;

	if (!realpath(ch->path, real))
		return -1;
	r = ctl_forward(ch->path, 4, words, change_record, &rc, NULL);
	if (r == 0)
		print_change(ch, rc.id, &rc.res);
	return r;
}

static int change(const struct change *ch)
{
	struct qcow2_snapshot_resume res = {0};
	struct qcow2_layer_info li;
	struct qcow2_chain *c;
	int r;

	if (ch->o.dry_run)
		return dry_run(ch);
	catch_interrupts(); /* a signal waits for the change's end: it is short */
	r = open_for_write(ch->path, &c);
	if (r < 0) {
		r = r == -EBUSY ? change_remote(ch) : -1;
		return r >= 0 ? r : fail_lib();
	}
	qcow2_chain_layer(c, 0, &li);
	if (!li.image) {
		qcow2_chain_close(c);
		error("'%s' is not a qcow2 image: it has no internal snapshots", ch->path);
		return EXIT_FAIL;
	}
	r = run_change(li.image, ch, &res);
	if (r < 0) {
		fail_lib();
		finish_write(c, r);
		return EXIT_FAIL;
	}
	print_change(
	    ch,
	    ch->op == QCOW2_SNAPSHOT_CREATE
		? qcow2_image_snapshot(li.image, qcow2_image_snapshot_count(li.image) - 1)->id
		: "",
	    &res);
	if (finish_write(c, 0) < 0)
		return fail_lib();
	return EXIT_OK;
}

/* Options and the two arguments of create, apply and delete. */
static int parse_change(int argc, char **argv, const struct option *longopts, struct change *ch)
{
	int c;

	while ((c = next_option(argc, argv, "hq", longopts, "snapshot")) != -1) {
		if (c == 'h') {
			snapshot_usage(stdout);
			return EXIT_OK;
		}
		if (c == OPT_BAD)
			return EXIT_USAGE;
		if (c == 'p' || !common_opt(c, &ch->o))
			return usage_error("snapshot", "option '%s' does not apply here",
					   argv[optind - 1]);
	}
	if (optind + 2 != argc)
		return usage_error("snapshot", "%s takes IMAGE %s", ch->verb,
				   ch->op == QCOW2_SNAPSHOT_CREATE ? "NAME" : "SNAPSHOT");
	if (ch->o.json && !ch->o.dry_run)
		return usage_error("snapshot", "%s prints JSON only with --dry-run", ch->verb);
	ch->path = argv[optind];
	ch->arg = argv[optind + 1];
	return -1;
}

static const struct option change_longopts[] = {
    COMMON_LONGOPTS,
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int snapshot_create(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--external"))
			return snapshot_create_external(argc, argv);
	struct change ch = {.op = QCOW2_SNAPSHOT_CREATE, .verb = "create", .done = "created"};
	int r = parse_change(argc, argv, change_longopts, &ch);

	return r >= 0 ? r : change(&ch);
}

static int snapshot_apply(int argc, char **argv)
{
	struct change ch = {.op = QCOW2_SNAPSHOT_APPLY, .verb = "apply", .done = "applied"};
	int r = parse_change(argc, argv, change_longopts, &ch);

	return r >= 0 ? r : change(&ch);
}

static int snapshot_revert(int argc, char **argv)
{
	return snapshot_revert_external(argc, argv);
}

static int snapshot_delete(int argc, char **argv)
{
	if (has_option(argc, argv, "--external"))
		return snapshot_delete_external(argc, argv);
	struct change ch = {.op = QCOW2_SNAPSHOT_DELETE, .verb = "delete", .done = "deleted"};
	int r = parse_change(argc, argv, change_longopts, &ch);

	return r >= 0 ? r : change(&ch);
}

static const struct {
	const char *name;
	int (*run)(int argc, char **argv);
} snapshot_subcommands[] = {
    {"list", snapshot_list},	 {"create", snapshot_create}, {"apply", snapshot_apply},
    {"delete", snapshot_delete}, {"revert", snapshot_revert},
};

/* qemu-img's spelling: snapshot [-l | -c NAME | -a SNAPSHOT | -d SNAPSHOT] [-q] [-U]
 * [-f qcow2] IMAGE, run as the subcommand it means (create, apply and delete print nothing on
 * success, as qemu-img). */
static int snapshot_qemu_style(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"force-share", no_argument, NULL, 'U'},
	    {"quiet", no_argument, NULL, 'q'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *verb = NULL, *name = NULL;
	char *args[8];
	int c, n = 0;
	size_t i;
	bool force_share = false;

	while ((c = next_option(argc, argv, "hqUlc:a:d:", longopts, "snapshot")) != -1) {
		const char *v = c == 'l'   ? "list"
				: c == 'c' ? "create"
				: c == 'a' ? "apply"
				: c == 'd' ? "delete"
					   : NULL;

		if (c == 'h') {
			snapshot_usage(stdout);
			return EXIT_OK;
		}
		if (c == OPT_BAD)
			return EXIT_USAGE;
		if (c == 'U')
			force_share = true;
		if (!v)
			continue; /* -q: quiet is what this spelling is anyway */
		if (verb)
			return usage_error("snapshot", "only one of -l, -c, -a and -d at a time");
		verb = v;
		name = optarg;
	}
	if (!verb)
		return usage_error("snapshot",
				   "needs one of -l, -c NAME, -a SNAPSHOT, -d SNAPSHOT");
	if (optind + 1 != argc)
		return usage_error("snapshot", "-%c takes one IMAGE", verb[0]);
	if (force_share && name)
		return usage_error("snapshot", "-U is only for -l: a change needs the image alone");
	args[n++] = (char *)verb;
	if (force_share)
		args[n++] = "-U";
	if (name)
		args[n++] = "-q";
	args[n++] = "--";
	args[n++] = argv[optind];
	if (name)
		args[n++] = (char *)name;
	args[n] = NULL;
	optind = 0; /* the subcommand's option loop starts afresh on @args */
	for (i = 0; i < sizeof(snapshot_subcommands) / sizeof(snapshot_subcommands[0]); i++)
		if (!strcmp(verb, snapshot_subcommands[i].name))
			return snapshot_subcommands[i].run(n, args);
	return EXIT_USAGE;
}

int cmd_snapshot(int argc, char **argv)
{
	size_t i;

	if (argc < 2)
		return usage_error("snapshot", "needs a subcommand: list, create, apply or delete");
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		snapshot_usage(stdout);
		return EXIT_OK;
	}
	if (argv[1][0] == '-')
		return snapshot_qemu_style(argc, argv);
	for (i = 0; i < sizeof(snapshot_subcommands) / sizeof(snapshot_subcommands[0]); i++)
		if (!strcmp(argv[1], snapshot_subcommands[i].name))
			return snapshot_subcommands[i].run(argc - 1, argv + 1);
	return usage_error("snapshot", "unknown subcommand '%s'", argv[1]);
}
