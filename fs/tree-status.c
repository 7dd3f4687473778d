/* SPDX-License-Identifier: MIT */
/*
 * tree-status.c - the status file, .qcowfs-status.json at the mount's root: the daemon's
 * version, pid, source, mount point and options, and every file of SOURCE the mount does not
 * serve as a writable view, with the reason verdict.c gives (the same words as the views'
 * user.qcowfs.mode): "refused" lists images without a view and files that are no image,
 * "read_only" the images whose view is read-only. It is computed whole when the file is opened
 * (ops.c keeps it with the handle, so every read of one open sees one snapshot) and when its
 * size is asked. A caller the daemon checks sees only the files it may read (perm.c's rule for
 * the file itself: its mode and ACL, and search permission on the directories above it), as a
 * directory listing would show them.
 *
 * SOURCE is walked as tree.c's first load walks it: directories and regular files found by
 * their directory entries, symlinks not followed, never into the mount point or another FUSE
 * mount (tree.h says why no path looked up under t->lock may enter our own mount).
 *
 * Locking: qfs_tree_status() takes t->lock for the walk. No other lock.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "perm.h"
#include "qcowfs.h"
#include "src.h"
#include "tree.h"
#include "verdict.h"

/* The JSON text being built. */
struct json {
	char *p;
	size_t len, cap;
	int err;
	bool first; /* no member written yet in the current array */
};

static void put(struct json *j, const char *s, size_t n)
{
	size_t cap;
	char *np;

	if (j->err)
		return;
	if (j->len + n + 1 > j->cap) {
		cap = j->cap ? j->cap : 4096;
		while (cap < j->len + n + 1)
			cap *= 2;
		if (!(np = realloc(j->p, cap))) {
			j->err = -ENOMEM;
			return;
		}
		j->p = np;
		j->cap = cap;
	}
	memcpy(j->p + j->len, s, n);
	j->len += n;
}

static void putf(struct json *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void putf(struct json *j, const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	put(j, buf, n < 0 ? 0 : (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

/* The length of the UTF-8 sequence at @s (at most @n bytes), or 0 if it is not one. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	size_t len = s[0] >= 0xf0 && s[0] <= 0xf4  ? 4
		     : s[0] >= 0xe0		   ? 3
		     : s[0] >= 0xc2 && s[0] < 0xe0 ? 2
						   : 0;
	size_t i;

	if (!len || len > n)
		return 0;
	for (i = 1; i < len; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	return len;
}

/* A JSON string of @s. File names are bytes: a byte that is not part of UTF-8 is written as
 * the six characters "\\xNN" (a backslash, x, two hex digits), so the text stays JSON. */
static void put_str(struct json *j, const char *s)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t n = strlen(s), i = 0, k;

	put(j, "\"", 1);
	while (i < n) {
		if (u[i] == '"' || u[i] == '\\') {
			put(j, "\\", 1);
			put(j, s + i++, 1);
		} else if (u[i] < 0x20 || u[i] == 0x7f) {
			putf(j, "\\u%04x", u[i++]);
		} else if (u[i] < 0x80) {
			put(j, s + i++, 1);
		} else if ((k = utf8_len(u + i, n - i))) {
			put(j, s + i, k);
			i += k;
		} else {
			putf(j, "\\\\x%02x", u[i++]);
		}
	}
	put(j, "\"", 1);
}

static void put_key(struct json *j, const char *key)
{
	putf(j, "%s\n  ", j->first ? "" : ",");
	j->first = false;
	put_str(j, key);
	put(j, ": ", 2);
}

/* One file and its reason, in the array being written. */
static void put_entry(struct json *j, bool *first, const char *path, const char *why)
{
	put(j, *first ? "\n    {" : ",\n    {", *first ? 6 : 7);
	*first = false;
	put(j, "\"file\": ", 8);
	put_str(j, path);
	put(j, ", \"reason\": ", 12);
	put_str(j, why);
	put(j, "}", 1);
}

/* What is walked: SOURCE's regular files (canonical paths) and symlinks. */
struct file {
	char *path;
	bool link;
};

struct files {
	struct file *p;
	size_t n, cap;
};

static void files_add(struct files *f, const char *path, bool link)
{
	struct file *np;

	if (f->n == f->cap) {
		size_t cap = f->cap ? 2 * f->cap : 64;

		if (!(np = realloc(f->p, cap * sizeof(*np))))
			return; /* out of memory: fewer files listed */
		f->p = np;
		f->cap = cap;
	}
	f->p[f->n].link = link;
	if ((f->p[f->n].path = strdup(path)))
		f->n++;
}

static int cmp_path(const void *a, const void *b)
{
	return strcmp(((const struct file *)a)->path, ((const struct file *)b)->path);
}

/* The regular files and symlinks below SOURCE (a symlink is resolved later, as tree-dir.c
 * resolves one). */
static void walk_one(void *ctx, const char *path, const struct stat *st)
{
	if (S_ISREG(st->st_mode) || S_ISLNK(st->st_mode))
		files_add(ctx, path, S_ISLNK(st->st_mode));
}

/* The src of @f for @who (t->lock held), or NULL: then @why says why a symlink is not
 * followed (only to a caller not checked: the link's target is not the caller's to know), or
 * is "" (the file is gone, or not the caller's to know). A symlink is resolved as tree-dir.c
 * resolves one: confined to SOURCE and --backing-dir, never through the mount point. */
static struct qfs_src *file_src(struct qfs_tree *t, const struct file *f,
				const struct qfs_caller *who, char *why, size_t cap)
{
	char canon[PATH_MAX];
	struct qfs_src *s;

	why[0] = '\0';
	if (f->link && qcow2_chain_resolve_top(&t->copts, f->path, canon, sizeof(canon)) < 0) {
		if (!who)
			snprintf(why, cap, "symlink not followed: %s", qcow2_last_error());
		return NULL;
	}
	s = qfs_src_get(&t->cache, f->link ? canon : f->path);
	if (s) /* the verdict names a writer that came since the last probe */
		qfs_src_lock_probe(&t->cache, s);
	return s && qfs_verdict_may_know(&t->cache, s, who) ? s : NULL;
}

/* The "refused" and "read_only" arrays (t->lock held). */
static void put_files(struct qfs_tree *t, struct json *j, const struct qfs_caller *who)
{
	struct files f = {0};
	char why[1024];
	bool first[2] = {true, true};
	struct json ro = {0};
	size_t i;

	if (t->single_file)
		files_add(&f, t->source, false);
	else
		qfs_tree_walk(t, t->root_dir, walk_one, &f);
	if (f.n)
		qsort(f.p, f.n, sizeof(*f.p), cmp_path);
	put_key(j, "refused");
	put(j, "[", 1);
	for (i = 0; i < f.n; i++) {
		struct qfs_src *s;
		enum qfs_state st;

		if (!(s = file_src(t, &f.p[i], who, why, sizeof(why)))) {
			if (why[0])
				put_entry(j, &first[0], f.p[i].path, why);
			continue;
		}
		/* who asks to read (R_OK): reasons name only files it may know of */
		st = qfs_verdict(&t->cache, s, false, NULL, who, why, sizeof(why));
		if (st == QFS_STATE_REFUSED || st == QFS_STATE_NOT_SHOWN)
			put_entry(j, &first[0], f.p[i].path, why);
		else if (st == QFS_STATE_RO)
			put_entry(&ro, &first[1], f.p[i].path, why);
	}
	put(j, first[0] ? "]" : "\n  ]", first[0] ? 1 : 4);
	put_key(j, "read_only");
	put(j, "[", 1);
	if (ro.err)
		j->err = ro.err;
	else if (ro.len)
		put(j, ro.p, ro.len);
	put(j, first[1] ? "]" : "\n  ]", first[1] ? 1 : 4);
	free(ro.p);
	for (i = 0; i < f.n; i++)
		free(f.p[i].path);
	free(f.p);
}

/* The daemon's facts and options. */
static void put_daemon(struct qfs_tree *t, struct json *j)
{
	size_t i;

	put_key(j, "version");
	put_str(j, QCOWFS_VERSION);
	put_key(j, "pid");
	putf(j, "%ld", (long)getpid());
	put_key(j, "source");
	put_str(j, t->source);
	put_key(j, "mount_point");
	put_str(j, t->mount_point);
	put_key(j, "options");
	putf(j, "{\"read_only\": %s, \"allow_other\": %s, \"default_permissions\": %s, ",
	     t->read_only ? "true" : "false", t->cfg.allow_other ? "true" : "false",
	     t->check_callers ? "true" : "false");
	put(j, "\"backing_dirs\": [", 17);
	for (i = 0; i < t->cfg.n_backing_dirs; i++) {
		if (i)
			put(j, ", ", 2);
		put_str(j, t->cfg.backing_dirs[i]);
	}
	put(j, "], \"log_file\": ", 15);
	if (t->cfg.log_file)
		put_str(j, t->cfg.log_file);
	else
		put(j, "null", 4);
	put(j, "}", 1);
	put_key(j, "command_line");
	put(j, "[", 1);
	for (i = 0; i < (size_t)(t->cfg.argc > 0 ? t->cfg.argc : 0); i++) {
		if (i)
			put(j, ", ", 2);
		put_str(j, t->cfg.argv[i]);
	}
	put(j, "]", 1);
}

int qfs_tree_status(struct qfs_tree *t, const struct qfs_caller *who, char **out, size_t *len)
{
	struct json j = {.first = true};

	put(&j, "{", 1);
	put_daemon(t, &j);
	pthread_mutex_lock(&t->lock);
	qfs_src_cache_next_gen(&t->cache);
	put_files(t, &j, who);
	pthread_mutex_unlock(&t->lock);
	put(&j, "\n}\n", 3);
	if (j.err) {
		free(j.p);
		return j.err;
	}
	*out = j.p;
	*len = j.len;
	return 0;
}
