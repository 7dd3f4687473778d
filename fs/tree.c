/* SPDX-License-Identifier: MIT */
/*
 * tree.c - the mounted tree: which names exist under the mount point and what each shows.
 *
 * A directory's names are computed from the cache of source files (src.c) when it is listed,
 * or when a name is looked up and something changed: flat views of valid qcow2
 * chains, snapshot views, raw backing files, with the collision rule. Nodes give every name a
 * stable inode number. Images are opened (locked, L1 loaded) only when a flat view is opened,
 * and closed with its last handle. Owners and modes derive from the source files, so that a
 * view never grants more than they do (perm.c).
 *
 * Locking: t->lock guards the src cache, the node table and every node field marked so. It is
 * never held across a chain open or any read of image data; node->open_lock is taken after it
 * is released. It is held across lookups of SOURCE's files, which must never enter our own
 * mount (the request would wait for t->lock: the whole mount would hang for good): every name
 * looked up under it is a directory entry of SOURCE read relative to its directory (the mount
 * point skipped) or a canonical path from qcow2_path_resolve(), which refused anything at or
 * below the mount point before looking it up, used with qcow2_path_open_canonical() or
 * qcow2_path_stat(), which follow no symlink put in the way since. The same holds
 * for every FUSE mount below SOURCE (mounts.c: its daemon may hang, or be this one, the mount
 * point bound elsewhere): directory entries, resolved names and canonical paths at or below
 * one are refused before the lookup (qcow2_mounts_avoid(), qfs_src_path_stat(),
 * qfs_src_path_open()).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "log.h"
#include "names.h"
#include "perm.h"
#include "qcowfs.h"
#include "src.h"

/* The mounted tree. Locking: lock guards the source cache (src.c takes no lock of its own:
 * every call into it is made with lock held) and the fields marked; a node's open_lock is taken
 * only after lock is released (open_lock -> lock, never the other way). */
struct qfs_tree {
	pthread_mutex_t lock;
	char *source;	/* canonical SOURCE (a directory, or a file) */
	char *root_dir; /* SOURCE, or its directory for a single file */
	char *mount_point;
	bool single_file;
	bool read_only;		     /* -o ro */
	bool check_callers;	     /* default_permissions (main.c) */
	struct qcow2_chain_opts copts;
	struct qcow2_mounts *mounts; /* FUSE mounts never looked into (its own lock) */
	struct qfs_src_cache cache;  /* under lock */
	struct qfs_node **nodes;     /* under lock: by ino - 1 */
	size_t n_nodes, cap_nodes;
	struct qfs_node **by_rel; /* under lock: hash chains by rel, rel_mask + 1 of them, grown
				   * with the nodes so a lookup stays O(1) (65,536 snapshots) */
	size_t rel_mask;
};

/* The first size of the table of nodes by rel (grown with the nodes: rel_grow()). */
#define REL_BUCKETS 4096u

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

const char *qfs_tree_source(const struct qfs_tree *t)
{
	return t->source;
}

/* ---- nodes ---- */

static size_t rel_hash(const char *rel)
{
	size_t h = 2166136261u;

	while (*rel)
		h = (h ^ (unsigned char)*rel++) * 16777619u;
	return h ^ (h >> 15);
}

static struct qfs_node *node_find(const struct qfs_tree *t, const char *rel)
{
	struct qfs_node *n = t->by_rel[rel_hash(rel) & t->rel_mask];

	while (n && strcmp(n->rel, rel) != 0)
		n = n->hnext;
	return n;
}

/* Keep the chains short: twice the buckets once there are as many nodes as buckets. */
static void rel_grow(struct qfs_tree *t)
{
	size_t cap = 2 * (t->rel_mask + 1), i;
	struct qfs_node **b;

	if (t->n_nodes < t->rel_mask + 1 || !(b = calloc(cap, sizeof(*b))))
		return; /* out of memory: longer chains, still correct */
	for (i = 0; i < t->n_nodes; i++) {
		struct qfs_node *n = t->nodes[i];
		size_t k = rel_hash(n->rel) & (cap - 1);

		n->hnext = b[k];
		b[k] = n;
	}
	free(t->by_rel);
	t->by_rel = b;
	t->rel_mask = cap - 1;
}

static struct qfs_node *node_get(struct qfs_tree *t, const char *rel, enum qfs_kind kind,
				 const char *src, const char *snap_id)
{
	struct qfs_node *n = node_find(t, rel);
	size_t b;

	if (!n) {
		if (t->n_nodes == t->cap_nodes) {
			size_t cap = t->cap_nodes ? 2 * t->cap_nodes : 256;
			struct qfs_node **nn = realloc(t->nodes, cap * sizeof(*nn));
			if (!nn)
				return NULL;
			t->nodes = nn;
			t->cap_nodes = cap;
		}
		n = calloc(1, sizeof(*n));
		if (!n || !(n->rel = strdup(rel))) {
			free(n);
			return NULL;
		}
		pthread_mutex_init(&n->open_lock, NULL);
		t->nodes[t->n_nodes++] = n;
		n->ino = t->n_nodes;
		b = rel_hash(rel) & t->rel_mask;
		n->hnext = t->by_rel[b];
		t->by_rel[b] = n;
		rel_grow(t);
	}
	n->kind = kind;
	if (!n->src || strcmp(n->src, src) != 0) {
		free(n->src);
		n->src = strdup(src);
	}
	free(n->snap_id);
	n->snap_id = snap_id ? strdup(snap_id) : NULL;
	return n;
}

struct qfs_node *qfs_tree_node(struct qfs_tree *t, fuse_ino_t ino)
{
	struct qfs_node *n = NULL;

	pthread_mutex_lock(&t->lock);
	if (ino >= 1 && ino <= t->n_nodes)
		n = t->nodes[ino - 1];
	pthread_mutex_unlock(&t->lock);
	return n;
}

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
static void add_image(struct qfs_tree *t, struct listing *l,
		      const struct qfs_strmap *own, struct qfs_found *f, struct qfs_name_log *log)
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

/* opendir() of the canonical directory @dir of SOURCE, following no symlink on the way: one
 * put there since the scan that found @dir must not lead into our own mount (t->lock is held). */
static DIR *open_dir(struct qfs_tree *t, const char *dir)
{
	int fd = qfs_src_path_open(&t->cache, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *dp = fd >= 0 ? fdopendir(fd) : NULL;

	if (fd >= 0 && !dp)
		close(fd);
	return dp;
}

/* Collect the directory's subdirectories, qcow2 images and raw backing files. */
static size_t collect(struct qfs_tree *t, const char *dir, struct qfs_found **out)
{
	struct qfs_found *f = NULL;
	size_t n = 0, cap = 0;
	struct dirent *d;
	DIR *dp;

	if (t->single_file) {
		struct qfs_src *s = qfs_src_get(&t->cache, t->source);
		if (!s || (!s->qcow2 && !s->err) || !(f = calloc(1, sizeof(*f))))
			return 0;
		f->name = strdup(strrchr(t->source, '/') + 1);
		f->s = s;
		*out = f;
		return 1;
	}
	if (!(dp = open_dir(t, dir))) {
		return 0;
	}
	while ((d = readdir(dp))) {
		char path[PATH_MAX], canon[PATH_MAX];
		struct stat st;
		struct qfs_src *s = NULL;

		if (strcmp(d->d_name, ".") == 0 || strcmp(d->d_name, "..") == 0)
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", dir, d->d_name) >= (int)sizeof(path) ||
		    strcmp(path, t->mount_point) == 0)
			continue;
		/* before the fstatat() below: that would be a request to the mount's daemon */
		if (qcow2_mounts_avoid(t->mounts, path)) {
			qfs_src_link_refusal(&t->cache, path,
				     "a FUSE file system mounted below the source: not looked into "
				     "(its daemon may hang, or be this one)");
			continue;
		}
		if (fstatat(dirfd(dp), d->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (!S_ISDIR(st.st_mode)) {
			/* A symlink is followed one component at a time, never into our own mount
			 * (that lookup would wait on this daemon, which holds t->lock), and its
			 * target must lie in SOURCE or a --backing-dir like any backing file. */
			int r = 0;

			if (!S_ISLNK(st.st_mode))
				snprintf(canon, sizeof(canon), "%s", path);
			else
				r = qcow2_chain_resolve_top(&t->copts, path, canon, sizeof(canon));
			/* outside, into the mount point, a loop; dangling: quietly */
			if (r == -EPERM || r == -ELOOP)
				qfs_src_link_refusal(&t->cache, path, qcow2_last_error());
			if (r < 0)
				continue;
			s = qfs_src_get(&t->cache, canon);
			if (!s)
				continue;
		}
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
	struct qfs_name_log log = { dir->src, dir->renamed, dir->n_renamed, NULL, 0, 0 };
	struct qfs_strmap own = { 0 };
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

/* Load every file below @dir into the src cache (so raw backing files are known). */
static void preload(struct qfs_tree *t, const char *dir, unsigned depth)
{
	struct dirent *d;
	DIR *dp;

	if (depth > 64 || !(dp = open_dir(t, dir)))
		return;
	while ((d = readdir(dp))) {
		char path[PATH_MAX];
		struct stat st;

		if (d->d_name[0] == '.' &&
		    (!d->d_name[1] || (d->d_name[1] == '.' && !d->d_name[2])))
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", dir, d->d_name) >= (int)sizeof(path) ||
		    strcmp(path, t->mount_point) == 0 || qcow2_mounts_avoid(t->mounts, path) ||
		    fstatat(dirfd(dp), d->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (S_ISDIR(st.st_mode))
			preload(t, path, depth + 1);
		else if (S_ISREG(st.st_mode))
			qfs_src_get(&t->cache, path);
	}
	closedir(dp);
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

/* ---- attributes (modes: perm.c) ---- */

static int flat_attr(struct qfs_tree *t, struct qfs_node *n, struct stat *st)
{
	struct qfs_src *s = qfs_src_get(&t->cache, n->src);
	const char *msg;
	uint64_t stamp, size;
	blkcnt_t blocks;

	if (!s || !s->qcow2 || s->err || qfs_src_chain_check(&t->cache, s, &msg) < 0)
		return -ENOENT;
	size = s->vsize;
	if (n->snap_id) {
		long i = qfs_strmap_get(&s->snap_by_id, n->snap_id);

		if (i < 0)
			return -ENOENT;
		size = s->snaps[i].size;
	}
	qfs_src_chain_facts(&t->cache, s, &blocks, &stamp);
	*st = s->st;
	st->st_mode =
	    S_IFREG | qfs_perm_view(&t->cache, s, !n->snap_id && qfs_src_writable(&t->cache, s));
	st->st_nlink = 1;
	st->st_size = (off_t)size;
	st->st_blocks = blocks;
	st->st_blksize = 65536;
	return 0;
}

/* The attributes of @n as the mount shows them (t->lock held). 0 or a negative errno. */
static int node_attr(struct qfs_tree *t, struct qfs_node *n, struct stat *st)
{
	struct qfs_src *s;
	int r;

	switch (n->kind) {
	case QFS_DIR:
		r = qfs_src_path_stat(&t->cache, n->src, st);
		if (r < 0)
			return r;
		if (!S_ISDIR(st->st_mode))
			return -ENOENT;
		st->st_mode = S_IFDIR | qfs_perm_dir(&t->cache, n->src, st);
		break;
	case QFS_RAW:
		s = qfs_src_get(&t->cache, n->src);
		if (!s)
			return -ENOENT;
		*st = s->st;
		st->st_mode = S_IFREG | qfs_perm_view(&t->cache, s, false);
		break;
	case QFS_FLAT:
		r = flat_attr(t, n, st);
		if (r < 0)
			return r;
		break;
	}
	st->st_ino = n->ino;
	return 0;
}

/* Is the node still what the directory would show (no rescan needed)? */
static bool node_current(struct qfs_tree *t, struct qfs_node *dir, struct qfs_node *n)
{
	struct stat st;

	if (!t->single_file && (qfs_src_path_stat(&t->cache, dir->src, &st) < 0 || !dir->scanned ||
				st.st_mtim.tv_sec != dir->scan_mtime.tv_sec ||
				st.st_mtim.tv_nsec != dir->scan_mtime.tv_nsec))
		return false;
	return node_attr(t, n, &st) == 0;
}

static void note_scanned(struct qfs_tree *t, struct qfs_node *dir)
{
	struct stat st;

	if (!t->single_file && qfs_src_path_stat(&t->cache, dir->src, &st) == 0) {
		dir->scan_mtime = st.st_mtim;
		dir->scanned = true;
	}
}

struct qfs_node *qfs_tree_lookup(struct qfs_tree *t, struct qfs_node *dir, const char *name,
				 struct stat *st, int *err, const struct qfs_caller *who)
{
	char rel[PATH_MAX];
	struct listing l = { 0 };
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
	n = node_find(t, rel);
	if (n && node_current(t, dir, n) && node_attr(t, n, st) == 0) {
		*err = 0;
		goto out;
	}
	scan_dir(t, dir, &l);
	note_scanned(t, dir);
	e = find_entry(&l, name);
	n = e ? node_get(t, rel, e->kind, e->src, e->snap_id) : NULL;
	if (n && (*err = node_attr(t, n, st)) != 0)
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

int qfs_tree_getattr(struct qfs_tree *t, struct qfs_node *n, struct stat *st)
{
	int r;

	pthread_mutex_lock(&t->lock);
	qfs_src_cache_next_gen(&t->cache);
	r = node_attr(t, n, st);
	pthread_mutex_unlock(&t->lock);
	return r;
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
		*memo_ok = node_attr(t, c, &st) == 0 && qfs_caller_may(who, &st);
	}
	return *memo_ok;
}

int qfs_tree_list(struct qfs_tree *t, struct qfs_node *dir, struct qfs_dirent **out, size_t *n,
		  const struct qfs_caller *who)
{
	struct listing l = { 0 };
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
		c = node_get(t, rel, l.e[i].kind, l.e[i].src, l.e[i].snap_id);
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

/* ---- open views ---- */

/* Open @n's chain (n->open_lock held): writable when the view may be written, else
 * read-only; a snapshot view, or the view of an image another process writes, shares write
 * permission so that it does not stand in the writer's way. *@refused: the library refused to
 * open it for writing (logged here, once: the view is then read-only until the file changes). */
static int open_chain(struct qfs_node *n, const char *src, struct qcow2_chain_opts o, bool writable,
		      bool busy, const char *snap, bool *refused)
{
	int r;

	o.snapshot = snap;
	o.writable = writable && !snap;
	o.share_write = snap || busy;
	r = qcow2_chain_open(src, &o, &n->chain);
	if (r < 0 && o.writable) {
		qfs_log("cannot open '%s' for writing, serving it read-only: %s", n->rel,
			qcow2_last_error());
		o.writable = false;
		r = qcow2_chain_open(src, &o, &n->chain);
		*refused = r == 0;
	}
	if (r < 0) {
		qfs_log("cannot open '%s': %s", n->rel, qcow2_last_error());
		n->chain = NULL;
	}
	return r;
}

/* Count a writer of @src (its lock is ours, not a conflict). */
static void note_writer(struct qfs_tree *t, struct qfs_node *n, int delta)
{
	struct qfs_src *s;

	pthread_mutex_lock(&t->lock);
	s = qfs_src_get(&t->cache, n->src);
	if (s)
		s->our_writers += (unsigned)delta;
	pthread_mutex_unlock(&t->lock);
}

/* A layer's file and its external data file (data_ino 0: none) as the permission checks saw
 * them. */
struct ident {
	dev_t dev, data_dev;
	ino_t ino, data_ino;
};

/* The files of @top's chain, top first, as the src cache has them (t->lock held, right after
 * the check that read them). */
static unsigned chain_idents(struct qfs_tree *t, struct qfs_src *s, struct ident *ids, unsigned cap)
{
	bool as_raw = false;
	unsigned n = 0;

	while (s && n < cap) {
		ids[n].dev = s->st.st_dev;
		ids[n].data_dev = s->data_dev;
		ids[n].data_ino = s->data_file && !as_raw ? s->data_ino : 0;
		ids[n++].ino = s->st.st_ino;
		if (as_raw || !s->qcow2 || !s->backing)
			break;
		as_raw = s->backing_fmt == QFS_FMT_RAW; /* a qcow2 file named as raw: its bytes */
		s = qfs_src_get(&t->cache, s->backing);
	}
	return n;
}

/* Is @io the file @dev:@ino? */
static bool io_is(struct qcow2_io *io, dev_t dev, ino_t ino)
{
	struct stat st;

	return fstat(qcow2_io_fd(io), &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

/* Are the files the open chain @c reads (through its descriptors) the @n files @ids, external
 * data files included? */
static bool chain_is(struct qcow2_chain *c, const struct ident *ids, unsigned n)
{
	struct qcow2_layer_info li;
	struct qcow2_io *data;
	unsigned i;

	if (qcow2_chain_depth(c) != n)
		return false;
	for (i = 0; i < n; i++) {
		if (qcow2_chain_layer(c, i, &li) < 0 || !io_is(li.io, ids[i].dev, ids[i].ino))
			return false;
		data = li.image ? qcow2_image_data_io(li.image) : li.io;
		if ((data != li.io) != (ids[i].data_ino != 0) ||
		    (data != li.io && !io_is(data, ids[i].data_dev, ids[i].data_ino)))
			return false;
	}
	return true;
}

/* Under t->lock: may @who (unless NULL) open @n? Its attributes are computed from the same
 * src state as the identities the open is then held to. 0 or a negative errno. */
static int check_caller(struct qfs_tree *t, struct qfs_node *n, const struct qfs_caller *who)
{
	struct stat st;
	int r;

	if (!who)
		return 0;
	r = node_attr(t, n, &st);
	return r ? r : qfs_caller_may(who, &st) ? 0 : -EACCES;
}

/* The permission check and the open are not one step: the caller is checked against the files
 * the src cache holds (canonical paths, canon_stat()), their identities are kept, and the
 * descriptors of the open chain must be of those same files. A file swapped in between (a
 * symlink, or a rename within a directory the caller owns), or replaced while the chain was
 * already open for someone else, would otherwise be served to a caller who was checked
 * against another file. */
int qfs_tree_open(struct qfs_tree *t, struct qfs_node *n, bool write, bool *keep_cache,
		  const struct qfs_caller *who)
{
	struct qcow2_chain_opts o;
	char *src = NULL, *snap = NULL;
	bool writable = false, busy = false, refused = false;
	struct ident *ids = NULL;
	unsigned n_ids = 0;
	uint64_t stamp = 0;
	blkcnt_t blocks;
	struct qfs_src *s;
	int r = 0;

	if (who && !(ids = calloc(QCOW2_DEFAULT_MAX_DEPTH + 1, sizeof(*ids))))
		return -ENOMEM;
	pthread_mutex_lock(&t->lock);
	qfs_src_cache_next_gen(&t->cache);
	s = n->kind == QFS_FLAT ? qfs_src_get(&t->cache, n->src) : NULL;
	r = s ? check_caller(t, n, who) : 0;
	if (r) {
		pthread_mutex_unlock(&t->lock);
		free(ids);
		return r;
	}
	if (s && ids)
		n_ids = chain_idents(t, s, ids, QCOW2_DEFAULT_MAX_DEPTH + 1);
	if (s) {
		qfs_src_chain_facts(&t->cache, s, &blocks, &stamp);
		src = strdup(n->src);
		snap = n->snap_id ? strdup(n->snap_id) : NULL;
		/* a view no one may write (no write bit left) is not written for root either */
		writable = !snap && qfs_src_writable(&t->cache, s) &&
			   (qfs_perm_view(&t->cache, s, true) & 0222);
		busy = s->busy;
	}
	o = t->copts;
	pthread_mutex_unlock(&t->lock);
	if (!src || (write && !writable)) {
		free(src);
		free(snap);
		free(ids);
		return src ? -EROFS : -ENOENT;
	}

	/* n->open_lock is held across the chain open, which cannot wait on a request to this
	 * daemon: every name is resolved with our mount point refused (o.mount_point) and every
	 * file is opened following no symlink and without blocking (qcow2_file_open()). */
	pthread_mutex_lock(&n->open_lock);
	if (!n->chain)
		r = open_chain(n, src, o, writable, busy, snap, &refused);
	if (refused) {
		pthread_mutex_lock(&t->lock);
		s = qfs_src_get(&t->cache, src);
		if (s)
			s->write_refused = true;
		pthread_mutex_unlock(&t->lock);
	}
	if (r == 0 && ids && !chain_is(n->chain, ids, n_ids)) {
		qfs_log("'%s': a file of its chain was replaced since it was checked (or since "
			"the view was opened): not served to uid %u",
			n->rel, (unsigned)who->uid);
		r = -ESTALE;
	}
	if (r == 0 && write && !qcow2_chain_writable(n->chain))
		r = -EROFS;
	if (r == 0 && write && n->writers == 0) {
		note_writer(t, n, 1);
		r = qcow2_chain_lock_write(n->chain, true);
		if (r < 0) {
			qfs_log("cannot write '%s': %s", n->rel, qcow2_last_error());
			note_writer(t, n, -1);
		}
	}
	if (r == 0) {
		*keep_cache = n->opens == 0 ? stamp == n->stamp : true;
		n->stamp = stamp;
		n->opens++;
		n->writers += write;
	} else if (n->opens == 0) {
		qcow2_chain_close(n->chain);
		n->chain = NULL;
	}
	pthread_mutex_unlock(&n->open_lock);
	free(src);
	free(snap);
	free(ids);
	return r;
}

int qfs_tree_open_raw(struct qfs_tree *t, struct qfs_node *n, const struct qfs_caller *who,
		      int *fd)
{
	char path[PATH_MAX];
	struct ident id = { 0 };
	struct stat st;
	struct qfs_src *s;
	int r;

	pthread_mutex_lock(&t->lock);
	qfs_src_cache_next_gen(&t->cache);
	s = n->kind == QFS_RAW ? qfs_src_get(&t->cache, n->src) : NULL;
	r = s ? check_caller(t, n, who) : n->kind == QFS_RAW ? -ENOENT : -EISDIR;
	if (r == 0) {
		id.dev = s->st.st_dev;
		id.ino = s->st.st_ino;
		snprintf(path, sizeof(path), "%s", s->path);
	}
	pthread_mutex_unlock(&t->lock);
	if (r)
		return r;
	/* no symlink followed, no FIFO waited on: the file the check saw, or nothing */
	*fd = qfs_src_path_open(&t->cache, path, O_RDONLY | O_NONBLOCK);
	if (*fd < 0) {
		r = *fd == -ELOOP ? -ESTALE : *fd;
		*fd = -1;
		return r;
	}
	if (fstat(*fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_dev != id.dev ||
	    st.st_ino != id.ino) {
		close(*fd);
		*fd = -1;
		return -ESTALE;
	}
	return 0;
}

void qfs_tree_release(struct qfs_tree *t, struct qfs_node *n, bool write)
{
	pthread_mutex_lock(&n->open_lock);
	if (write && n->writers && --n->writers == 0) {
		if (qcow2_chain_lock_write(n->chain, false) < 0)
			qfs_log("writing back '%s' failed: %s", n->rel, qcow2_last_error());
		note_writer(t, n, -1);
	}
	if (n->opens && --n->opens == 0) {
		if (qcow2_chain_flush(n->chain) < 0)
			qfs_log("writing back '%s' failed: %s", n->rel, qcow2_last_error());
		qcow2_chain_close(n->chain);
		n->chain = NULL;
	}
	pthread_mutex_unlock(&n->open_lock);
}

int qfs_tree_truncate(struct qfs_tree *t, struct qfs_node *n, struct qcow2_chain *c,
		      uint64_t size, const struct qfs_caller *who)
{
	bool keep, opened = false;
	int r;

	if (n->kind != QFS_FLAT)
		return n->kind == QFS_DIR ? -EISDIR : -EROFS;
	if (!c) { /* truncate(2) by name: open the view for writing for the time of it */
		r = qfs_tree_open(t, n, true, &keep, who);
		if (r)
			return r;
		opened = true;
		c = n->chain;
	}
	if (size < qcow2_chain_size(c)) {
		r = -EINVAL; /* shrinking would lose data (SPEC 3) */
	} else {
		r = qcow2_chain_grow(c, size);
		if (r < 0)
			qfs_log("growing '%s' failed: %s", n->rel, qcow2_last_error());
	}
	if (opened)
		qfs_tree_release(t, n, true);
	return r;
}

bool qfs_tree_read_only(const struct qfs_tree *t)
{
	return t->read_only;
}

bool qfs_tree_checks_callers(const struct qfs_tree *t)
{
	return t->check_callers;
}

/* ---- lifetime ---- */

int qfs_tree_new(const struct qfs_config *cfg, struct qfs_tree **out)
{
	struct qfs_tree *t = calloc(1, sizeof(*t));
	const char **keep;
	char canon[PATH_MAX];
	struct stat st;
	size_t i;
	int r;

	if (!t)
		return -ENOMEM;
	if (!realpath(cfg->source, canon) || stat(canon, &st) < 0) {
		free(t);
		return -errno;
	}
	t->by_rel = calloc(REL_BUCKETS, sizeof(*t->by_rel));
	if (!t->by_rel) {
		free(t);
		return -ENOMEM;
	}
	t->rel_mask = REL_BUCKETS - 1;
	pthread_mutex_init(&t->lock, NULL);
	t->source = strdup(canon);
	t->single_file = !S_ISDIR(st.st_mode);
	t->read_only = cfg->read_only;
	t->check_callers = cfg->check_callers;
	if (t->single_file)
		*strrchr(canon, '/') = '\0';
	t->root_dir = strdup(canon[0] ? canon : "/");
	t->mount_point = strdup(cfg->mount_point ? cfg->mount_point : "");
	t->copts.root = t->root_dir;
	t->copts.allow_dirs = cfg->backing_dirs;
	t->copts.n_allow_dirs = cfg->n_backing_dirs;
	t->copts.mount_point = t->mount_point[0] ? t->mount_point : NULL;
	t->copts.lock = true;
	if (!t->root_dir || !t->source || !t->mount_point ||
	    !(keep = calloc(1 + cfg->n_backing_dirs, sizeof(*keep)))) {
		qfs_tree_free(t);
		return -ENOMEM;
	}
	keep[0] = t->root_dir;
	for (i = 0; i < cfg->n_backing_dirs; i++)
		keep[i + 1] = cfg->backing_dirs[i];
	r = qcow2_mounts_new(keep, 1 + cfg->n_backing_dirs, &t->mounts);
	free(keep);
	if (r < 0) {
		qfs_tree_free(t);
		return r;
	}
	t->copts.avoid.fn = qcow2_mounts_avoid;
	t->copts.avoid.ctx = t->mounts;
	qfs_src_cache_init(&t->cache, &t->copts, t->mounts, t->read_only);
	node_get(t, "", QFS_DIR, t->root_dir, NULL); /* ino 1 = FUSE_ROOT_ID */
	pthread_mutex_lock(&t->lock);
	qfs_src_cache_next_gen(&t->cache);
	if (t->single_file)
		qfs_src_get(&t->cache, t->source);
	else
		preload(t, t->root_dir, 0);
	pthread_mutex_unlock(&t->lock);
	*out = t;
	return 0;
}

int qfs_tree_check_source(struct qfs_tree *t, char *msg, size_t cap)
{
	const char *why = NULL;
	struct qfs_src *s;
	int r = 0;

	if (!t->single_file)
		return 0;
	pthread_mutex_lock(&t->lock);
	s = qfs_src_get(&t->cache, t->source);
	if (!s) {
		r = -EINVAL;
		snprintf(msg, cap, "not a regular file");
	} else if (s->err) {
		r = s->err;
		snprintf(msg, cap, "%s", s->errmsg ? s->errmsg : strerror(-r));
	} else if (!s->qcow2) {
		r = -EINVAL;
		snprintf(msg, cap, "not a qcow2 image");
	} else if ((r = qfs_src_chain_check(&t->cache, s, &why)) < 0) {
		snprintf(msg, cap, "%s", why && why[0] ? why : strerror(-r));
	}
	pthread_mutex_unlock(&t->lock);
	return r;
}

void qfs_tree_free(struct qfs_tree *t)
{
	size_t i;

	if (!t)
		return;
	qfs_src_cache_release(&t->cache);
	for (i = 0; i < t->n_nodes; i++) {
		struct qfs_node *n = t->nodes[i];
		qcow2_chain_close(n->chain);
		pthread_mutex_destroy(&n->open_lock);
		free(n->rel);
		free(n->src);
		free(n->snap_id);
		free(n->renamed);
		free(n);
	}
	qcow2_mounts_free(t->mounts);
	free(t->nodes);
	free(t->by_rel);
	free(t->source);
	free(t->root_dir);
	free(t->mount_point);
	pthread_mutex_destroy(&t->lock);
	free(t);
}
