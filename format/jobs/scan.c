/* SPDX-License-Identifier: MIT */
/*
 * scan.c - what a directory tree holds: its qcow2 images, their backing files, and the raw
 * files they use as backing (qcowctl tree; commit's check that no other image uses a base).
 *
 * The walk follows symlinks (a chain is often built of links) but enters each directory once,
 * by device and inode, so a symlink loop ends; it goes at most SCAN_MAX_DEPTH levels down. A
 * symlink to a directory is entered only if the directory lies inside the one scanned: a link
 * to '/' or '..' would otherwise make the walk read every file of the machine (devices, /proc,
 * other mounts that may hang). A symlink to a file may lead anywhere: that file alone is read.
 * No FUSE file system mounted below the directory is looked into (mounts.c: its daemon may
 * hang), not by an entry, a symlink or a backing name: names are resolved with those mounts
 * avoided (qcow2_path_resolve_avoiding()), then used following no symlink.
 * Only regular files are opened (a fifo would block the open). Each file is probed by its
 * magic; a qcow2 file has its header read and checked, nothing more: no L1 table, no lock, so
 * an image in use or a malformed one is still listed, with @err saying why it could not be
 * read. Files that are not qcow2 are kept only if some image names them as backing, or if they
 * could not be opened at all (they may be images). Entries are identified by their resolved
 * path: a file reached through several symlinks is listed once. Nothing here is shared
 * between threads.
 *
 * Locks: none (no QEMU lock either: the headers are only read).
 */
#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "jobs/jobs.h"

#define SCAN_MAX_DEPTH 64

struct dir_id {
	dev_t dev;
	ino_t ino;
};

struct scan {
	struct qcow2_dir_image *v;
	size_t n, cap;
	struct dir_id *dirs; /* every directory entered */
	size_t n_dirs, cap_dirs;
	const char *root;	       /* the canonical directory scanned */
	struct qcow2_chain_opts avoid; /* the FUSE mounts below it, avoided; confines nothing */
};

static int grow(void **p, size_t *cap, size_t n, size_t size)
{
	size_t new_cap;
	void *q;

	if (n < *cap)
		return 0;
	new_cap = *cap ? 2 * *cap : 64;
	q = realloc(*p, new_cap * size);
	if (!q)
		return qcow2_oom();
	*p = q;
	*cap = new_cap;
	return 0;
}

/* Remember the directory open as @fd; 1 if it was entered before. */
static int enter_dir(struct scan *s, int fd)
{
	struct stat st;
	size_t i;
	int r;

	if (fstat(fd, &st) < 0)
		return 1; /* cannot identify it: do not risk a loop */
	for (i = 0; i < s->n_dirs; i++)
		if (s->dirs[i].dev == st.st_dev && s->dirs[i].ino == st.st_ino)
			return 1;
	r = grow((void **)&s->dirs, &s->cap_dirs, s->n_dirs, sizeof(*s->dirs));
	if (r < 0)
		return r;
	s->dirs[s->n_dirs++] = (struct dir_id){st.st_dev, st.st_ino};
	return 0;
}

/* @name as stored in the image at @image_path, joined to that image's directory. */
static char *join_backing(const char *image_path, const char *name)
{
	char dir[PATH_MAX];
	char *out;

	if (name[0] == '/')
		return strdup(name);
	snprintf(dir, sizeof(dir), "%s", image_path);
	if (asprintf(&out, "%s/%s", dirname(dir), name) < 0)
		return NULL;
	return out;
}

/* Fill @e's backing fields from the header @h of the image at @e->path. */
static int note_backing(struct scan *s, struct qcow2_dir_image *e, const struct qcow2_header *h)
{
	char resolved[PATH_MAX];

	e->nb_snapshots = h->nb_snapshots;
	if (h->backing_fmt[0] && !(e->backing_fmt = strdup(h->backing_fmt)))
		return qcow2_oom();
	if (!h->backing_file[0])
		return 0;
	e->backing_err = qcow2_chain_resolve_path(&s->avoid, e->path, h->backing_file, resolved,
						  sizeof(resolved));
	e->backing =
	    e->backing_err == 0 ? strdup(resolved) : join_backing(e->path, h->backing_file);
	if (!e->backing)
		return qcow2_oom();
	return 0;
}

/* Probe the file at @e->path: qcow2 (header read, or @err), another kind, or unreadable. Only
 * running out of memory fails. */
static int probe(struct scan *s, struct qcow2_dir_image *e)
{
	struct qcow2_header h;
	struct qcow2_io *io;
	int r;

	e->err = qcow2_io_open_file(e->path, false, &io);
	if (e->err < 0)
		return 0;
	e->err = qcow2_header_probe(io, &e->qcow2, &h);
	if (e->err == 0 && e->qcow2 && (r = note_backing(s, e, &h)) < 0) {
		qcow2_io_close(io);
		return r;
	}
	qcow2_io_close(io);
	return 0;
}

/* Add the regular file at the canonical @canon. */
static int add_file(struct scan *s, const char *canon)
{
	struct qcow2_dir_image *e;
	int r;

	r = grow((void **)&s->v, &s->cap, s->n, sizeof(*s->v));
	if (r < 0)
		return r;
	e = &s->v[s->n];
	memset(e, 0, sizeof(*e));
	e->path = strdup(canon);
	if (!e->path)
		return qcow2_oom();
	s->n++;
	return probe(s, e);
}

static int walk(struct scan *s, const char *path, unsigned depth);

/* One entry @name of the directory @dir. */
static int visit(struct scan *s, const char *dir, const char *name, unsigned depth)
{
	char child[PATH_MAX], canon[PATH_MAX];
	struct stat st;

	if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return 0;
	if (snprintf(child, sizeof(child), "%s/%s", dir, name) >= (int)sizeof(child))
		return 0;
	/* resolved with the FUSE mounts avoided (a mount point itself is an entry here), then
	 * reached following no symlink: a dangling symlink, a loop, gone, or avoided: skipped */
	if (qcow2_path_resolve_avoiding(child, NULL, &s->avoid.avoid, canon, sizeof(canon)) < 0 ||
	    qcow2_path_stat(canon, &st) < 0)
		return 0;
	if (S_ISDIR(st.st_mode)) {
		/* a directory reached through a symlink: only inside the scanned one */
		if (!qcow2_path_below(canon, s->root))
			return 0;
		return depth < SCAN_MAX_DEPTH ? walk(s, canon, depth + 1) : 0;
	}
	if (S_ISREG(st.st_mode))
		return add_file(s, canon);
	return 0;
}

/* Walk the directory @path. Only the top directory's failure to open is an error. */
static int walk(struct scan *s, const char *path, unsigned depth)
{
	struct dirent *de;
	DIR *d;
	int r;

	d = opendir(path);
	if (!d)
		return depth
			   ? 0
			   : qcow2_set_error(-errno, "cannot open '%s': %s", path, strerror(errno));
	r = enter_dir(s, dirfd(d));
	if (r != 0) {
		closedir(d);
		return r < 0 ? r : 0;
	}
	while (r == 0 && (de = readdir(d)))
		r = visit(s, path, de->d_name, depth);
	closedir(d);
	return r;
}

static int by_path(const void *a, const void *b)
{
	return strcmp(((const struct qcow2_dir_image *)a)->path,
		      ((const struct qcow2_dir_image *)b)->path);
}

static void release(struct qcow2_dir_image *e)
{
	free(e->path);
	free(e->backing);
	free(e->backing_fmt);
}

/* Mark in @used the entries (sorted by path) that some image names as its backing file. */
static void mark_backing_files(const struct scan *s, bool *used)
{
	struct qcow2_dir_image key;
	const struct qcow2_dir_image *hit;
	size_t i;

	for (i = 0; i < s->n; i++) {
		if (!s->v[i].qcow2 || !s->v[i].backing)
			continue;
		key.path = s->v[i].backing;
		hit = bsearch(&key, s->v, s->n, sizeof(*s->v), by_path);
		if (hit)
			used[hit - s->v] = true;
	}
}

/* Sort by path, drop repeats (one file through several links) and the readable files that are
 * neither qcow2 nor anyone's backing file. */
static int settle(struct scan *s)
{
	size_t i, k = 0;
	bool *used;

	if (!s->n)
		return 0;
	qsort(s->v, s->n, sizeof(*s->v), by_path);
	for (i = 0; i < s->n; i++)
		if (k && strcmp(s->v[k - 1].path, s->v[i].path) == 0)
			release(&s->v[i]);
		else
			s->v[k++] = s->v[i];
	s->n = k;
	used = calloc(s->n, sizeof(*used));
	if (!used)
		return qcow2_oom();
	mark_backing_files(s, used);
	for (i = k = 0; i < s->n; i++)
		if (s->v[i].qcow2 || s->v[i].err || used[i])
			s->v[k++] = s->v[i];
		else
			release(&s->v[i]);
	s->n = k;
	free(used);
	return 0;
}

int qcow2_dir_scan(const char *dir, struct qcow2_dir_image **out, size_t *n)
{
	struct scan s = {0};
	struct qcow2_mounts *mounts;
	char canon[PATH_MAX];
	int r;

	*out = NULL;
	*n = 0;
	if (!realpath(dir, canon))
		return qcow2_set_error(-errno, "cannot open '%s': %s", dir, strerror(errno));
	s.root = canon;
	r = qcow2_mounts_new((const char *const[]){canon}, 1, &mounts);
	if (r < 0)
		return qcow2_oom();
	s.avoid.avoid.fn = qcow2_mounts_avoid;
	s.avoid.avoid.ctx = mounts;
	r = walk(&s, canon, 0);
	qcow2_mounts_free(mounts);
	free(s.dirs);
	if (r == 0)
		r = settle(&s);
	if (r < 0) {
		qcow2_dir_images_free(s.v, s.n);
		return r;
	}
	if (!s.n) {
		free(s.v);
		s.v = NULL;
	}
	*out = s.v;
	*n = s.n;
	qcow2_clear_error(); /* what one file's failure left behind is no failure of the scan */
	return 0;
}

void qcow2_dir_images_free(struct qcow2_dir_image *v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		release(&v[i]);
	free(v);
}

size_t qcow2_dir_users_of(const struct qcow2_dir_image *v, size_t n, const char *path, size_t *idx,
			  size_t cap)
{
	char canon[PATH_MAX];
	size_t i, count = 0;

	if (!realpath(path, canon))
		snprintf(canon, sizeof(canon), "%s", path);
	for (i = 0; i < n; i++) {
		if (v[i].err || !v[i].backing || strcmp(v[i].backing, canon) != 0)
			continue;
		if (count < cap)
			idx[count] = i;
		count++;
	}
	return count;
}
