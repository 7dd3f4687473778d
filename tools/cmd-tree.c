/* SPDX-License-Identifier: MIT */
/*
 * cmd-tree.c - qcowctl tree [--json] DIR: every backing chain under DIR as a forest (a base at
 * the root, the overlays that use it as its children), each image with its internal
 * snapshots, drawn as `virsh snapshot-list --tree` draws snapshots.
 *
 * The images come from qcow2_dir_scan() (headers only). Images whose backing file is missing,
 * lies outside DIR, or whose chain loops are roots with a note; raw files some image uses as
 * backing are roots. Snapshot tables are read without taking locks: an image another process
 * holds for writing is listed with "(in use)" (its table may be changing, so what it shows
 * may be stale). Nothing is written.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"
#include "qcowctl.h"

struct node {
	const struct qcow2_dir_image *img;
	int parent; /* index of the backing file's node, or -1 */
	size_t *children, n_children;
	struct qcow2_snapshot *snaps; /* NULL: none or not readable */
	uint32_t n_snaps;
	bool in_use;
	bool shown;
	int snap_err; /* why the snapshot table could not be read, or 0 */
};

struct forest {
	const char *dir; /* canonical */
	struct qcow2_dir_image *v;
	struct node *nodes;
	size_t n;
	char *indent; /* text output: the prefix of the current depth */
};

static void tree_usage(FILE *f)
{
	fprintf(f,
		"usage: qcowctl tree [--json] DIR\n\n"
		"Show every backing chain under DIR (searched recursively) as a forest: each\n"
		"base image at the root, the overlays that use it below it, every image with its\n"
		"internal snapshots (id: name). Raw files used as backing are roots; images whose\n"
		"backing file is missing or outside DIR are roots with a note; an image another\n"
		"process holds for writing is marked \"(in use)\".\n\n"
		"  --json      {\"directory\": DIR, \"images\": [roots]}, each image with\n"
		"              filename (relative to DIR), format, snapshots [{id, name}],\n"
		"              full-backing-filename, backing-filename-format, in-use, error,\n"
		"              note and children\n"
		"  --output=json|human  as --json, or the text (the default)\n"
		"  -f qcow2    accepted for qemu-img's sake (only qcow2)\n"
		"  -h, --help  this text\n");
}

/* The file's name relative to the directory (absolute if it lies outside). */
static const char *rel_name(const struct forest *f, const char *path)
{
	size_t n = strlen(f->dir);

	if (strncmp(path, f->dir, n) == 0 && path[n] == '/')
		return path + n + 1;
	return path;
}

static int by_path(const void *a, const void *b)
{
	return strcmp(((const struct qcow2_dir_image *)a)->path,
		      ((const struct qcow2_dir_image *)b)->path);
}

/* Read the snapshot table of @nd's image and whether a writer holds it. Never fails the tree:
 * what cannot be read is noted. */
static void load_snapshots(struct node *nd)
{
	struct qcow2_header h;
	struct qcow2_io *io;
	int r;

	if (!nd->img->qcow2 || qcow2_io_open_file(nd->img->path, false, &io) < 0)
		return;
	nd->in_use = qcow2_io_lock_check_reader(io) == -EBUSY;
	if (!nd->img->err && nd->img->nb_snapshots) {
		r = qcow2_header_read(io, &h);
		if (r == 0)
			r = qcow2_snapshot_read(io, &h, &nd->snaps);
		if (r == 0)
			nd->n_snaps = h.nb_snapshots;
		nd->snap_err = r;
	}
	qcow2_io_close(io);
}

static int add_child(struct node *parent, size_t child)
{
	size_t *c = realloc(parent->children, (parent->n_children + 1) * sizeof(*c));

	if (!c)
		return qcow2_oom();
	c[parent->n_children++] = child;
	parent->children = c;
	return 0;
}

/* Link every image to its backing file's node (v is sorted by path). */
static int build(struct forest *f)
{
	struct qcow2_dir_image key;
	size_t i;
	int r;

	f->nodes = calloc(f->n ? f->n : 1, sizeof(*f->nodes));
	if (!f->nodes)
		return qcow2_oom();
	for (i = 0; i < f->n; i++) {
		const struct qcow2_dir_image *hit = NULL;
		struct node *nd = &f->nodes[i];

		nd->img = &f->v[i];
		key.path = f->v[i].backing;
		if (key.path && !f->v[i].backing_err)
			hit = bsearch(&key, f->v, f->n, sizeof(*f->v), by_path);
		nd->parent = hit && hit != &f->v[i] ? (int)(hit - f->v) : -1;
		load_snapshots(nd);
	}
	for (i = 0; i < f->n; i++)
		if (f->nodes[i].parent >= 0 &&
		    (r = add_child(&f->nodes[f->nodes[i].parent], i)) < 0)
			return r;
	return 0;
}

/* Why a root is a root although it names a backing file, or NULL. */
static const char *root_note(const struct forest *f, const struct node *nd, bool loop)
{
	size_t n = strlen(f->dir);

	if (loop || (nd->img->backing && strcmp(nd->img->backing, nd->img->path) == 0))
		return "its backing chain loops";
	if (nd->parent >= 0 || !nd->img->backing)
		return NULL;
	/* say why its name leads nowhere: a loop of symlinks is no missing file */
	if (nd->img->backing_err == -ELOOP)
		return "backing file name loops through symlinks";
	if (nd->img->backing_err == -ENAMETOOLONG)
		return "backing file name too long";
	if (nd->img->backing_err == -ENOENT || nd->img->backing_err == -ENOTDIR)
		return "backing file missing";
	if (nd->img->backing_err)
		return "backing file cannot be reached";
	if (strncmp(nd->img->backing, f->dir, n) != 0 || nd->img->backing[n] != '/')
		return "backing file outside the directory";
	return "backing file not an image";
}

/* Why a file could not be read, in words (the library's message is not kept by the scan). */
static const char *err_text(int err)
{
	switch (-err) {
	case EUCLEAN:
		return "malformed qcow2 file";
	case EINVAL:
		return "invalid qcow2 header";
	case ENOTSUP:
		return "uses a qcow2 feature not supported";
	default:
		return strerror(-err);
	}
}

/* ---- text ---- */

static void print_label(const struct forest *f, const struct node *nd, const char *note)
{
	fputs(rel_name(f, nd->img->path), stdout);
	if (!nd->img->qcow2 && !nd->img->err)
		fputs(" (raw)", stdout);
	if (nd->img->err)
		printf(" (cannot read: %s)", err_text(nd->img->err));
	if (nd->in_use)
		fputs(" (in use)", stdout);
	if (note)
		printf(" (%s: %s)", note, nd->img->backing);
	putchar('\n');
}

/* Print @i and its subtree; f->indent holds the prefix of its line. */
static void print_node(struct forest *f, size_t i, bool root, bool last, const char *note)
{
	struct node *nd = &f->nodes[i];
	size_t len = strlen(f->indent), k;

	nd->shown = true;
	printf("%s%s", f->indent, root ? "" : "+- ");
	print_label(f, nd, note);
	/* the prefix of everything below this image: a bar while later siblings follow */
	strcpy(f->indent + len, root ? "  " : last ? "    " : "|   ");
	for (k = 0; k < nd->n_snaps; k++)
		printf("%ssnapshot %s: %s%s%s%s\n", f->indent, nd->snaps[k].id, nd->snaps[k].name,
		       nd->snaps[k].invalid ? " (unusable: " : "",
		       nd->snaps[k].invalid ? nd->snaps[k].invalid : "",
		       nd->snaps[k].invalid ? ")" : "");
	if (nd->snap_err)
		printf("%s(snapshots not readable: %s)\n", f->indent, err_text(nd->snap_err));
	for (k = 0; k < nd->n_children; k++) {
		if (f->nodes[nd->children[k]].shown)
			continue;
		printf("%s|\n", f->indent);
		print_node(f, nd->children[k], false, k + 1 == nd->n_children, NULL);
	}
	f->indent[len] = '\0';
}

static void print_text(struct forest *f)
{
	size_t i;

	for (i = 0; i < f->n; i++)
		if (f->nodes[i].parent < 0)
			print_node(f, i, true, true, root_note(f, &f->nodes[i], false));
	for (i = 0; i < f->n; i++) /* what no root reaches: backing loops */
		if (!f->nodes[i].shown)
			print_node(f, i, true, true, root_note(f, &f->nodes[i], true));
}

/* ---- JSON ---- */

static void json_node(struct json *j, struct forest *f, size_t i, const char *note)
{
	struct node *nd = &f->nodes[i];
	size_t k;

	nd->shown = true;
	json_begin_object(j, NULL);
	json_string(j, "filename", rel_name(f, nd->img->path));
	json_string(j, "full-path", nd->img->path);
	json_string(j, "format", nd->img->qcow2 ? "qcow2" : nd->img->err ? "unknown" : "raw");
	if (nd->img->backing)
		json_string(j, "full-backing-filename", nd->img->backing);
	if (nd->img->backing_fmt)
		json_string(j, "backing-filename-format", nd->img->backing_fmt);
	if (nd->img->qcow2)
		json_bool(j, "in-use", nd->in_use);
	if (nd->img->err || nd->snap_err)
		json_string(j, "error", err_text(nd->img->err ? nd->img->err : nd->snap_err));
	if (note)
		json_string(j, "note", note);
	if (nd->n_snaps) {
		json_begin_array(j, "snapshots");
		for (k = 0; k < nd->n_snaps; k++) {
			json_begin_object(j, NULL);
			json_string(j, "id", nd->snaps[k].id);
			json_string(j, "name", nd->snaps[k].name);
			if (nd->snaps[k].invalid)
				json_string(j, "invalid", nd->snaps[k].invalid);
			json_end_object(j);
		}
		json_end_array(j);
	}
	json_begin_array(j, "children");
	for (k = 0; k < nd->n_children; k++)
		if (!f->nodes[nd->children[k]].shown)
			json_node(j, f, nd->children[k], NULL);
	json_end_array(j);
	json_end_object(j);
}

static void print_json(struct forest *f)
{
	struct json j;
	size_t i;

	json_init(&j, stdout);
	json_begin_object(&j, NULL);
	json_string(&j, "directory", f->dir);
	json_begin_array(&j, "images");
	for (i = 0; i < f->n; i++)
		if (f->nodes[i].parent < 0)
			json_node(&j, f, i, root_note(f, &f->nodes[i], false));
	for (i = 0; i < f->n; i++)
		if (!f->nodes[i].shown)
			json_node(&j, f, i, root_note(f, &f->nodes[i], true));
	json_end_array(&j);
	json_end_object(&j);
	json_finish(&j);
}

static int run_tree(const char *dir, bool json)
{
	struct forest f = {0};
	char canon[PATH_MAX];
	size_t i;
	int r;

	if (!realpath(dir, canon))
		return qcow2_set_error(-errno, "cannot open '%s': %s", dir, strerror(errno));
	f.dir = canon;
	r = qcow2_dir_scan(canon, &f.v, &f.n);
	if (r < 0)
		return r;
	r = build(&f);
	f.indent = malloc(4 * f.n + 8); /* 4 bytes per level at most */
	if (r == 0 && !f.indent)
		r = qcow2_oom();
	if (r == 0) {
		f.indent[0] = '\0';
		if (json)
			print_json(&f);
		else
			print_text(&f);
	}
	for (i = 0; f.nodes && i < f.n; i++) {
		free(f.nodes[i].children);
		qcow2_snapshots_free(f.nodes[i].snaps, f.nodes[i].n_snaps);
	}
	free(f.nodes);
	free(f.indent);
	qcow2_dir_images_free(f.v, f.n);
	return r;
}

int cmd_tree(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"json", no_argument, NULL, OPT_JSON},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	bool json = false;
	int c;

	while ((c = next_option(argc, argv, "h", longopts, "tree")) != -1) {
		switch (c) {
		case OPT_JSON:
			json = true;
			break;
		case 'h':
			tree_usage(stdout);
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind + 1 != argc) {
		return usage_error("tree", "takes one DIR");
	}
	if (run_tree(argv[optind], json) < 0) {
		error("%s", qcow2_last_error());
		return EXIT_FAIL;
	}
	return EXIT_OK;
}
