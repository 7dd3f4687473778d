/* SPDX-License-Identifier: MIT */
/*
 * cmd-snapshot-tree.c - qcowctl snapshot list --tree IMAGE: the disk's points in time
 * together, as `virsh snapshot-list --tree` draws snapshots: the files of IMAGE's backing
 * chain (external snapshots, the base at the root), the branches (other images under IMAGE's
 * directory whose chain passes through a file of IMAGE's chain, found by the directory scan
 * `qcowctl tree` uses) and each file's internal snapshots with their date and VM state size
 * (as `qemu-img snapshot -l` shows them). Nothing is written and no lock is taken.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "qcow2.h"
#include "qcowctl.h"

struct tnode {
	char *path;
	int parent; /* -1: the root (the chain's base) */
	bool in_chain, current;
	struct qcow2_snapshot *snaps;
	uint32_t n_snaps;
};

struct ttree {
	struct tnode *v;
	size_t n, cap;
	char dir[PATH_MAX]; /* IMAGE's directory: names are shown relative to it */
	char indent[4096];
};

static void list_tree_usage(FILE *f)
{
	fprintf(f, "usage: qcowctl snapshot list --tree [--json] IMAGE\n\n"
		   "The points in time of IMAGE's disk as a tree, as virsh snapshot-list --tree\n"
		   "draws them: the files of IMAGE's backing chain (external snapshots; the base\n"
		   "at the root), branches (other images under IMAGE's directory whose chain\n"
		   "passes through one of them), and below each file its internal snapshots\n"
		   "(ID, name, date and VM state size, as qemu-img snapshot -l). IMAGE is marked\n"
		   "\"(current)\". Dates are local time. Nothing is written, no lock is taken.\n\n"
		   "  --tree             required: the tree\n"
		   "  --json             {\"image\", \"tree\"}: each node with filename,\n"
		   "                     full-path, current, in-chain, snapshots [{id, name,\n"
		   "                     date-sec, date-nsec, vm-state-size}] and children\n"
		   "  --output=json|human  as --json, or the text (the default)\n"
		   "  -U, --force-share  accepted (no lock is taken anyway)\n"
		   "  -f qcow2           IMAGE's format (only qcow2)\n"
		   "  -h, --help         this text\n");
}

static int add_node(struct ttree *t, const char *path, int parent, bool in_chain)
{
	struct tnode *nd;

	if (t->n == t->cap) {
		size_t cap = t->cap ? 2 * t->cap : 16;
		struct tnode *v = realloc(t->v, cap * sizeof(*v));

		if (!v)
			return qcow2_oom();
		t->v = v;
		t->cap = cap;
	}
	nd = &t->v[t->n];
	memset(nd, 0, sizeof(*nd));
	nd->path = strdup(path);
	if (!nd->path)
		return qcow2_oom();
	nd->parent = parent;
	nd->in_chain = in_chain;
	t->n++;
	return 0;
}

static int find_node(const struct ttree *t, const char *path)
{
	size_t i;

	for (i = 0; i < t->n; i++)
		if (strcmp(t->v[i].path, path) == 0)
			return (int)i;
	return -1;
}

/* The internal snapshots of @nd's file (none if it cannot be read: not qcow2). */
static void load_snaps(struct tnode *nd)
{
	struct qcow2_header h;
	struct qcow2_io *io;

	if (qcow2_io_open_file(nd->path, false, &io) < 0) {
		qcow2_clear_error();
		return;
	}
	if (qcow2_header_read(io, &h) == 0 && h.nb_snapshots &&
	    qcow2_snapshot_read(io, &h, &nd->snaps) == 0)
		nd->n_snaps = h.nb_snapshots;
	qcow2_clear_error();
	qcow2_io_close(io);
}

/* The chain of @image, base first, then every scanned image whose backing file is a node,
 * until none is added. */
static int build_tree(struct ttree *t, const char *image)
{
	struct qcow2_chain_opts co = {.keys = *cli_keys()};
	struct qcow2_dir_image *v = NULL;
	struct qcow2_layer_info li;
	struct qcow2_chain *c;
	size_t n = 0, i;
	unsigned d, k;
	bool added = true;
	char tmp[PATH_MAX];
	int r = qcow2_chain_open(image, &co, &c);

	if (r < 0)
		return r;
	d = qcow2_chain_depth(c);
	for (k = d; k-- > 0 && r == 0;) {
		qcow2_chain_layer(c, k, &li);
		r = add_node(t, li.path, k + 1 == d ? -1 : (int)t->n - 1, true);
	}
	if (r == 0)
		t->v[t->n - 1].current = true;
	qcow2_chain_layer(c, 0, &li);
	snprintf(tmp, sizeof(tmp), "%s", li.path);
	snprintf(t->dir, sizeof(t->dir), "%s", dirname(tmp));
	qcow2_chain_close(c);
	if (r == 0)
		r = qcow2_dir_scan(t->dir, &v, &n);
	while (r == 0 && added) {
		added = false;
		for (i = 0; i < n && r == 0; i++) {
			int p;

			if (v[i].err || !v[i].backing || find_node(t, v[i].path) >= 0)
				continue;
			p = find_node(t, v[i].backing);
			if (p < 0)
				continue;
			r = add_node(t, v[i].path, p, false);
			added = true;
		}
	}
	qcow2_dir_images_free(v, n);
	for (i = 0; r == 0 && i < t->n; i++)
		load_snaps(&t->v[i]);
	return r;
}

static const char *rel(const struct ttree *t, const char *path)
{
	size_t n = strlen(t->dir);

	return strncmp(path, t->dir, n) == 0 && path[n] == '/' ? path + n + 1 : path;
}

/* The children of @p in path order (a node's children are added in scan order, which is
 * sorted by path, the chain's own child first: sort them here). */
static size_t children_of(const struct ttree *t, int p, int *out, size_t cap)
{
	size_t i, n = 0, a, b;

	for (i = 0; i < t->n && n < cap; i++)
		if (t->v[i].parent == p && (int)i != p)
			out[n++] = (int)i;
	for (a = 1; a < n; a++)
		for (b = a; b > 0 && strcmp(t->v[out[b - 1]].path, t->v[out[b]].path) > 0; b--) {
			int x = out[b];

			out[b] = out[b - 1];
			out[b - 1] = x;
		}
	return n;
}

static void snap_line(const struct ttree *t, const struct qcow2_snapshot *s)
{
	char vm[32], date[32] = "";
	time_t tt = (time_t)s->date_sec;
	struct tm tm;

	format_size(s->vm_state_bytes, vm, sizeof(vm));
	if (localtime_r(&tt, &tm))
		strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
	printf("%ssnapshot %s: %s (%s, VM state %s)\n", t->indent, s->id, s->name, date, vm);
}

static void print_tnode(struct ttree *t, int i, bool root, bool last)
{
	const struct tnode *nd = &t->v[i];
	size_t len = strlen(t->indent), k, n;
	int kids[256];

	printf("%s%s%s%s\n", t->indent, root ? "" : "+- ", rel(t, nd->path),
	       nd->current ? " (current)" : "");
	if (len + 8 >= sizeof(t->indent))
		return;
	strcpy(t->indent + len, root ? "  " : last ? "    " : "|   ");
	for (k = 0; k < nd->n_snaps; k++)
		snap_line(t, &nd->snaps[k]);
	n = children_of(t, i, kids, 256);
	for (k = 0; k < n; k++) {
		printf("%s|\n", t->indent);
		print_tnode(t, kids[k], false, k + 1 == n);
	}
	t->indent[len] = '\0';
}

static void json_tnode(struct json *j, const struct ttree *t, int i)
{
	const struct tnode *nd = &t->v[i];
	int kids[256];
	size_t k, n;

	json_begin_object(j, NULL);
	json_string(j, "filename", rel(t, nd->path));
	json_string(j, "full-path", nd->path);
	json_bool(j, "current", nd->current);
	json_bool(j, "in-chain", nd->in_chain);
	json_begin_array(j, "snapshots");
	for (k = 0; k < nd->n_snaps; k++) {
		json_begin_object(j, NULL);
		json_string(j, "id", nd->snaps[k].id);
		json_string(j, "name", nd->snaps[k].name);
		json_uint(j, "date-sec", nd->snaps[k].date_sec);
		json_uint(j, "date-nsec", nd->snaps[k].date_nsec);
		json_uint(j, "vm-state-size", nd->snaps[k].vm_state_bytes);
		json_end_object(j);
	}
	json_end_array(j);
	json_begin_array(j, "children");
	n = children_of(t, i, kids, 256);
	for (k = 0; k < n; k++)
		json_tnode(j, t, kids[k]);
	json_end_array(j);
	json_end_object(j);
}

int snapshot_list_tree(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"tree", no_argument, NULL, 't'},
	    {"json", no_argument, NULL, OPT_JSON},
	    {"force-share", no_argument, NULL, 'U'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct ttree t = {0};
	struct common_opts o = {0};
	struct json j;
	size_t i;
	int c, r;

	optind = 1;
	while ((c = next_option(argc, argv, "hU", longopts, "snapshot")) != -1) {
		if (c == 'h') {
			list_tree_usage(stdout);
			return EXIT_OK;
		}
		if (c == 't' || c == 'U')
			continue;
		if (c != OPT_JSON || !common_opt(c, &o))
			return EXIT_USAGE;
	}
	if (optind + 1 != argc)
		return usage_error("snapshot", "list --tree takes one IMAGE");
	r = build_tree(&t, argv[optind]);
	if (r == 0 && o.json) {
		json_init(&j, stdout);
		json_begin_object(&j, NULL);
		for (i = 0; i < t.n; i++)
			if (t.v[i].current)
				json_string(&j, "image", t.v[i].path);
		json_begin_array(&j, "tree");
		json_tnode(&j, &t, 0);
		json_end_array(&j);
		json_end_object(&j);
		json_finish(&j);
	}
	if (r == 0 && !o.json)
		print_tnode(&t, 0, true, true);
	for (i = 0; i < t.n; i++) {
		free(t.v[i].path);
		qcow2_snapshots_free(t.v[i].snaps, t.v[i].n_snaps);
	}
	free(t.v);
	return r < 0 ? fail_lib() : EXIT_OK;
}
