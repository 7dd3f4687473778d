/* SPDX-License-Identifier: MIT */
/*
 * tree-dir.c - the names a directory shows, and looking one up. They are computed from the
 * cache of source files (src.c) when the directory is listed, or when a name is looked up and
 * something changed: flat views of valid qcow2 chains, snapshot views, raw backing
 * files, with the collision rule (the names themselves: names.c). Each name gets its node
 * (tree.c), so its inode number stays. A snapshot view is a name only for a caller who may read
 * it: its name comes from inside the image.
 *
 * Locking: qfs_tree_lookup() and qfs_tree_list() take t->lock and hold it across the scan
 * (tree.h: why no path looked up under it may enter our own mount). No other lock.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "names.h"
#include "perm.h"
#include "qcowfs.h"
#include "src.h"
#include "tree.h"

/* One name a directory shows, as computed by a scan. */
struct entry {
	char *name;
	enum qfs_kind kind;
	char *src;
	char *snap_id;
};

struct listing {
	struct entry *e;
	size_t n, cap;
	struct qfs_strmap by_name; /* name -> index in e: listing_has() and find_entry() in O(1) */
};

/* ---- directory scans ---- */

static int listing_add(struct listing *l, const char *name, enum qfs_kind kind, const char *src,
		       const char *snap_id)
{
	struct entry *e;
	int r = -ENOMEM;

	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 32;
		struct entry *ne = realloc(l->e, cap * sizeof(*ne));
		if (!ne)
			return -ENOMEM;
		l->e = ne;
		l->cap = cap;
	}
	e = &l->e[l->n];
	e->name = strdup(name);
	e->kind = kind;
	e->src = strdup(src);
	e->snap_id = snap_id ? strdup(snap_id) : NULL;
	/* a name already listed is not listed again: never two entries of one name (the naming
	 * rule, names.c, gives every view its own; this holds even if it did not) */
	if (!e->name || !e->src || (snap_id && !e->snap_id) ||
	    (r = qfs_strmap_put(&l->by_name, e->name, l->n)) <= 0) {
		free(e->name);
		free(e->src);
		free(e->snap_id);
		return r == 0 ? -EEXIST : -ENOMEM;
	}
	l->n++;
	return 0;
}

static void listing_free(struct listing *l)
{
	size_t i;

	for (i = 0; i < l->n; i++) {
		free(l->e[i].name);
		free(l->e[i].src);
		free(l->e[i].snap_id);
	}
	free(l->e);
	qfs_strmap_free(&l->by_name);
	memset(l, 0, sizeof(*l));
}

static bool listing_has(const struct listing *l, const char *name)
{
	return qfs_strmap_get(&l->by_name, name) >= 0;
}

/* List image @f's flat view and its snapshot views. Flat names hold no '@' and differ from
 * each other and from @own (qfs_names_choose), and a snapshot view's name is its image's flat name
 * (without ".raw"), '@', then more: so a snapshot view can only collide with a name in @own
 * (a file or subdirectory whose name holds '@') or with another snapshot of the same image
 * (repeated ids: a hostile table). The first moves the view to its next name. */
static void add_image(struct qfs_tree *t, struct listing *l, const struct qfs_strmap *own,
		      struct qfs_found *f, struct qfs_name_log *log)
{
	char snapname[NAME_MAX + 1], first[NAME_MAX + 1], base[NAME_MAX + 1];
	const char *msg;
	unsigned level;
	uint32_t i;
	bool ok;

	if (!f->flat)
		return;
	if (qfs_src_chain_check(&t->cache, f->s, &msg) < 0) {
		qfs_src_log_refusal(f->s, msg);
		return;
	}
	listing_add(l, f->flat, QFS_FLAT, f->s->path, NULL);
	snprintf(base, sizeof(base), "%.*s", (int)(strlen(f->flat) - 4), f->flat);
	for (i = 0; i < f->s->nsnaps; i++) {
		struct qfs_snap *sn = &f->s->snaps[i];

		if (qfs_strmap_get(&f->s->snap_by_id, sn->id) != (long)i) { /* a repeated id */
			if (!sn->logged)
				qfs_log("'%s': snapshot '%.64s' (id %.32s) has no view: its id is "
					"repeated",
					f->s->path, sn->name, sn->id);
			sn->logged = true;
			continue;
		}
		for (level = 0; (ok = qfs_names_snap_view(f->s, sn, base, level, snapname));
		     level++) {
			if (!level)
				snprintf(first, sizeof(first), "%s", snapname);
			if (qfs_strmap_get(own, snapname) < 0 && !listing_has(l, snapname))
				break;
		}
		if (!ok)
			continue; /* no name fits (logged) */
		if (level)
			qfs_names_note(
			    log,
			    "'%s': snapshot '%.64s' (id %.32s) is shown as '%s': '%s' is the "
			    "name of a file or subdirectory",
			    f->s->path, sn->name, sn->id, snapname, first);
		listing_add(l, snapname, QFS_FLAT, f->s->path, sn->id);
	}
}

/* SOURCE is one file: it is the only entry, when it is an image or a file that cannot be read. */
static size_t collect_single(struct qfs_tree *t, struct qfs_found **out)
{
	struct qfs_src *s = qfs_src_get(&t->cache, t->source);
	struct qfs_found *f;

	if (!s || (!s->qcow2 && !s->err) || !(f = calloc(1, sizeof(*f))))
		return 0;
	f->name = strdup(strrchr(t->source, '/') + 1);
	f->s = s;
	*out = f;
	return 1;
}

/* Entry @name of directory @dir (open as @dp): its path into @path, and false when it is not
 * collected (".", "..", the mount point, a FUSE mount, gone, a symlink refused or dangling);
 * else *s is its src, or NULL for a subdirectory. */
static bool entry_src(struct qfs_tree *t, DIR *dp, const char *dir, const char *name,
		      char path[PATH_MAX], struct qfs_src **s)
{
	char canon[PATH_MAX];
	struct stat st;
	int r = 0;

	*s = NULL;
	if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return false;
	if (snprintf(path, PATH_MAX, "%s/%s", dir, name) >= PATH_MAX ||
	    strcmp(path, t->mount_point) == 0)
		return false;
	/* before the fstatat() below: that would be a request to the mount's daemon */
	if (qcow2_mounts_avoid(t->mounts, path)) {
		qfs_src_link_refusal(&t->cache, path,
				     "a FUSE file system mounted below the source: not looked into "
				     "(its daemon may hang, or be this one)");
		return false;
	}
	if (fstatat(dirfd(dp), name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return false;
	if (S_ISDIR(st.st_mode))
		return true;
	/* A symlink is followed one component at a time, never into our own mount (that lookup
	 * would wait on this daemon, which holds t->lock), and its target must lie in SOURCE or a
	 * --backing-dir like any backing file. */
	if (!S_ISLNK(st.st_mode)) {
		/* the stat above is of the canonical path (@dp was opened by it following no
		 * symlink, the name is one component not followed): not made again */
		*s = qfs_src_get_stat(&t->cache, path, &st);
		return *s != NULL;
	}
	r = qcow2_chain_resolve_top(&t->copts, path, canon, sizeof(canon));
	/* outside, into the mount point, a loop; dangling: quietly */
	if (r == -EPERM || r == -ELOOP)
		qfs_src_link_refusal(&t->cache, path, qcow2_last_error());
	if (r < 0)
		return false;
	*s = qfs_src_get(&t->cache, canon);
	return *s != NULL;
}

/* Collect the directory's subdirectories, qcow2 images and raw backing files. */
static size_t collect(struct qfs_tree *t, const char *dir, struct qfs_found **out)
{
	struct qfs_found *f = NULL;
	size_t n = 0, cap = 0;
	struct dirent *d;
	DIR *dp;

	if (t->single_file)
		return collect_single(t, out);
	if (!(dp = qfs_tree_opendir(t, dir))) {
		return 0;
	}
	while ((d = readdir(dp))) {
		char path[PATH_MAX];
		struct qfs_src *s;

		if (!entry_src(t, dp, dir, d->d_name, path, &s))
			continue;
		if (n == cap) {
			struct qfs_found *nf = realloc(f, (cap = cap ? 2 * cap : 32) * sizeof(*nf));
			if (!nf)
				break;
			f = nf;
		}
		memset(&f[n], 0, sizeof(f[n]));
		f[n].name = strdup(d->d_name);
		f[n].s = s;
		f[n].dir = s ? NULL : strdup(path);
		n++;
	}
	closedir(dp);
	*out = f;
	return n;
}

/* Compute the names directory @dir shows. Called with t->lock held. */
static void scan_dir(struct qfs_tree *t, struct qfs_node *dir, struct listing *l)
{
	struct qfs_name_log log = {dir->src, dir->renamed, dir->n_renamed, NULL, 0, 0};
	struct qfs_strmap own = {0};
	struct qfs_found *f = NULL;
	size_t n, i;

	qfs_src_cache_next_gen(&t->cache);
	n = collect(t, dir->src, &f);
	/* Subdirectories and files that are not images keep their names (shown under them, or
	 * not at all); views take other names (qfs_names_choose, add_image). */
	for (i = 0; i < n; i++)
		if (f[i].name && !(f[i].s && f[i].s->qcow2) &&
		    qfs_strmap_put(&own, f[i].name, i) < 0)
			f[i].name[0] = '\0'; /* out of memory: not listed rather than twice */
	qfs_names_choose(&log, f, n, &own);
	for (i = 0; i < n; i++) {
		if (!f[i].name || !f[i].name[0])
			continue;
		/* a subdirectory or a raw file keeps its name; views' names end in .raw */
		if (!dir->rel[0] && !(f[i].s && f[i].s->qcow2) &&
		    strcmp(f[i].name, QFS_STATUS_NAME) == 0) {
			qfs_names_note(&log, "'%s/%s': not shown: the status file has its name",
				       dir->src, f[i].name);
			continue; /* the root's node of that name is the status file's */
		}
		if (!f[i].s)
			listing_add(l, f[i].name, QFS_DIR, f[i].dir, NULL);
		else if (f[i].s->err) /* a bad image, or a file that cannot be read */
			qfs_src_log_refusal(f[i].s, f[i].s->errmsg);
		else if (f[i].s->qcow2)
			add_image(t, l, &own, &f[i], &log);
		else if (qfs_src_is_backing(&t->cache, f[i].s))
			listing_add(l, f[i].name, QFS_RAW, f[i].s->path, NULL);
	}
	qfs_names_commit(&log, &dir->renamed, &dir->n_renamed);
	qfs_strmap_free(&own);
	for (i = 0; i < n; i++) {
		free(f[i].name);
		free(f[i].dir);
		free(f[i].flat);
	}
	free(f);
}

static const struct entry *find_entry(const struct listing *l, const char *name)
{
	long i = qfs_strmap_get(&l->by_name, name);

	return i < 0 ? NULL : &l->e[i];
}

static void child_rel(const struct qfs_node *dir, const char *name, char *out, size_t cap)
{
	if (dir->rel[0])
		snprintf(out, cap, "%s/%s", dir->rel, name);
	else
		snprintf(out, cap, "%s", name);
}

/* Is the node still what the directory would show (no rescan needed)? Its attributes into
 * @st then (computed once per lookup: they cost a walk of the chain and its permissions). */
static bool node_current(struct qfs_tree *t, struct qfs_node *dir, struct qfs_node *n,
			 struct stat *st)
{
	if (!t->single_file && (qfs_src_dir_stat(&t->cache, dir->src, st) < 0 || !dir->scanned ||
				st->st_mtim.tv_sec != dir->scan_mtime.tv_sec ||
				st->st_mtim.tv_nsec != dir->scan_mtime.tv_nsec))
		return false;
	return qfs_tree_attr(t, n, st) == 0;
}

static void note_scanned(struct qfs_tree *t, struct qfs_node *dir)
{
	struct stat st;

	if (!t->single_file && qfs_src_dir_stat(&t->cache, dir->src, &st) == 0) {
		dir->scan_mtime = st.st_mtim;
		dir->scanned = true;
	}
}

struct qfs_node *qfs_tree_lookup(struct qfs_tree *t, struct qfs_node *dir, const char *name,
				 struct stat *st, int *err, const struct qfs_caller *who)
{
	char rel[PATH_MAX];
	struct listing l = {0};
	const struct entry *e;
	struct qfs_node *n = NULL;

	pthread_mutex_lock(&t->lock);
	*err = -ENOENT;
	if (dir->kind != QFS_DIR) {
		*err = -ENOTDIR;
		goto out;
	}
	child_rel(dir, name, rel, sizeof(rel));
	qfs_src_cache_next_gen(&t->cache);
	n = qfs_tree_node_find(t, rel);
	if (n && n->kind == QFS_STATUS) { /* found by name, never listed: hidden from ls */
		*err = qfs_tree_attr(t, n, st);
		if (*err)
			n = NULL;
		goto out;
	}
	if (n && node_current(t, dir, n, st)) {
		*err = 0;
		goto out;
	}
	scan_dir(t, dir, &l);
	note_scanned(t, dir);
	e = find_entry(&l, name);
	n = e ? qfs_tree_node_get(t, rel, e->kind, e->src, e->snap_id) : NULL;
	if (n && (*err = qfs_tree_attr(t, n, st)) != 0)
		n = NULL;
out:
	if (n && n->snap_id && who && !qfs_caller_may(who, st)) {
		n = NULL; /* a snapshot's name is the image's content */
		*err = -ENOENT;
	}
	pthread_mutex_unlock(&t->lock);
	listing_free(&l);
	return n;
}

/* May @who (unless NULL) see snapshot node @c, with the read bits of its image's view? @memo
 * keeps the last image's answer (a directory lists an image's snapshots one after another). */
static bool snapshot_shown(struct qfs_tree *t, struct qfs_node *c, const struct qfs_caller *who,
			   const char **memo_src, bool *memo_ok)
{
	struct stat st;

	if (!who || !c->snap_id)
		return true;
	if (!*memo_src || strcmp(*memo_src, c->src) != 0) {
		*memo_src = c->src;
		*memo_ok = qfs_tree_attr(t, c, &st) == 0 && qfs_caller_may(who, &st);
	}
	return *memo_ok;
}

int qfs_tree_list(struct qfs_tree *t, struct qfs_node *dir, struct qfs_dirent **out, size_t *n,
		  const struct qfs_caller *who)
{
	struct listing l = {0};
	struct qfs_dirent *d = NULL;
	const char *memo_src = NULL;
	bool memo_ok = false;
	char rel[PATH_MAX];
	size_t i, k = 0;
	int r = 0;

	pthread_mutex_lock(&t->lock);
	if (dir->kind != QFS_DIR) {
		r = -ENOTDIR;
		goto out;
	}
	scan_dir(t, dir, &l);
	note_scanned(t, dir);
	d = calloc(l.n ? l.n : 1, sizeof(*d));
	if (!d) {
		r = -ENOMEM;
		goto out;
	}
	for (i = 0; i < l.n; i++) {
		struct qfs_node *c;

		child_rel(dir, l.e[i].name, rel, sizeof(rel));
		c = qfs_tree_node_get(t, rel, l.e[i].kind, l.e[i].src, l.e[i].snap_id);
		if (c && !snapshot_shown(t, c, who, &memo_src, &memo_ok))
			continue;
		d[k].name = strdup(l.e[i].name);
		d[k].ino = c ? c->ino : 0;
		d[k++].type = l.e[i].kind == QFS_DIR ? S_IFDIR : S_IFREG;
	}
	*out = d;
	*n = k;
out:
	pthread_mutex_unlock(&t->lock);
	listing_free(&l);
	return r;
}

void qfs_dirents_free(struct qfs_dirent *d, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(d[i].name);
	free(d);
}
