/* SPDX-License-Identifier: MIT */
/*
 * tree.c - the mounted tree: which names exist under the mount point and what each shows.
 *
 * A directory's names are computed from the cache of source files (src.c) when it is listed,
 * or when a name is looked up and something changed (SPEC 2): flat views of valid qcow2
 * chains, snapshot views, raw backing files, with the collision rule. Nodes give every name a
 * stable inode number. Images are opened (locked, L1 loaded) only when a flat view is opened,
 * and closed with its last handle. Owners and modes derive from the source files, so that a
 * view never grants more than they do (SPEC 3a, perm.c).
 *
 * Locking: t->lock guards the src cache, the node table and every node field marked so. It is
 * never held across a chain open or any read of image data; node->open_lock is taken after it
 * is released.
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

#include "tree-internal.h"

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
};

const char *qfs_tree_source(const struct qfs_tree *t)
{
	return t->source;
}

/* ---- nodes ---- */

static struct qfs_node *node_get(struct qfs_tree *t, const char *rel, enum qfs_kind kind,
				 const char *src, const char *snap_id)
{
	unsigned b = hash_str(rel);
	struct qfs_node *n;

	for (n = t->by_rel[b]; n; n = n->hnext)
		if (strcmp(n->rel, rel) == 0)
			break;
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
		n->hnext = t->by_rel[b];
		t->by_rel[b] = n;
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

	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 32;
		struct entry *ne = realloc(l->e, cap * sizeof(*ne));
		if (!ne)
			return -ENOMEM;
		l->e = ne;
		l->cap = cap;
	}
	e = &l->e[l->n++];
	e->name = strdup(name);
	e->kind = kind;
	e->src = strdup(src);
	e->snap_id = snap_id ? strdup(snap_id) : NULL;
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
	memset(l, 0, sizeof(*l));
}

static bool listing_has(const struct listing *l, const char *name)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		if (strcmp(l->e[i].name, name) == 0)
			return true;
	return false;
}

/* "NAME.qcow2" -> "NAME" (also .qcow, .img); other names unchanged. */
static void stem_of(const char *name, char *out, size_t cap)
{
	static const char *const sfx[] = { ".qcow2", ".qcow", ".img" };
	size_t n = strlen(name), i;

	snprintf(out, cap, "%s", name);
	for (i = 0; i < 3; i++) {
		size_t k = strlen(sfx[i]);
		if (n > k && strcmp(name + n - k, sfx[i]) == 0) {
			out[n - k] = '\0';
			return;
		}
	}
}

/* Snapshot names in file names: '/' is "%2F" and '%' is "%25" (SPEC 2). */
static void encode_snap(const char *s, char *out, size_t cap)
{
	size_t o = 0;

	for (; *s && o + 4 < cap; s++) {
		if (*s == '/' || *s == '%')
			o += (size_t)snprintf(out + o, cap - o, "%%%02X", (unsigned char)*s);
		else
			out[o++] = *s;
	}
	out[o] = '\0';
}

/* A file found in the directory being scanned. */
struct found {
	char *name;
	struct src *s; /* NULL for a subdirectory */
	char *dir;     /* subdirectory: its path */
	char *flat;    /* chosen flat name */
};

static void add_image(struct qfs_tree *t, struct listing *l, struct found *f)
{
	char snapname[2 * NAME_MAX + 3 * 1024 + 8], enc[3 * 1024 + 1], base[NAME_MAX + 1];
	const char *msg;
	uint32_t i;

	if (chain_check(t, f->s, &msg) < 0) {
		log_refusal(f->s, msg);
		return;
	}
	listing_add(l, f->flat, QFS_FLAT, f->s->path, NULL);
	snprintf(base, sizeof(base), "%.*s", (int)(strlen(f->flat) - 4), f->flat);
	for (i = 0; i < f->s->nsnaps; i++) {
		encode_snap(f->s->snaps[i].name, enc, sizeof(enc));
		snprintf(snapname, sizeof(snapname), "%s@%s.raw", base, enc);
		if (strlen(snapname) <= NAME_MAX && !listing_has(l, snapname))
			listing_add(l, snapname, QFS_FLAT, f->s->path, f->s->snaps[i].id);
	}
}

/* Choose flat names: "STEM.raw", or "NAME.raw" where two would collide (SPEC 2). */
static void choose_names(struct found *f, size_t n)
{
	char stem[NAME_MAX + 1], cand[NAME_MAX + 8];
	size_t i, j;

	for (i = 0; i < n; i++) {
		if (!f[i].s || !f[i].s->qcow2)
			continue;
		stem_of(f[i].name, stem, sizeof(stem));
		snprintf(cand, sizeof(cand), "%s.raw", stem);
		for (j = 0; j < n; j++) {
			char other[NAME_MAX + 8];
			if (j == i)
				continue;
			if (f[j].s && f[j].s->qcow2) {
				stem_of(f[j].name, stem, sizeof(stem));
				snprintf(other, sizeof(other), "%s.raw", stem);
			} else {
				snprintf(other, sizeof(other), "%s", f[j].name);
			}
			if (strcmp(cand, other) == 0)
				break;
		}
		if (j < n)
			snprintf(cand, sizeof(cand), "%s.raw", f[i].name);
		f[i].flat = strdup(cand);
	}
}

/* Fold "." and ".." out of the absolute path @p, in place, without asking the file system. */
static void normalize(char *p)
{
	char *out = p, *seg = p;

	while (*seg) {
		char *end;
		size_t len;

		while (*seg == '/')
			seg++;
		end = strchrnul(seg, '/');
		len = (size_t)(end - seg);
		if (len == 2 && seg[0] == '.' && seg[1] == '.') {
			while (out > p && *--out != '/')
				;
		} else if (len && !(len == 1 && seg[0] == '.')) {
			*out++ = '/';
			memmove(out, seg, len);
			out += len;
		}
		seg = end;
	}
	if (out == p)
		*out++ = '/';
	*out = '\0';
}

/* realpath() of the symlink @path, refusing (false) a link that leads into our own mount: the
 * resolution would wait on this daemon, which holds the tree lock. Each hop is checked before
 * it is followed. */
static bool resolve_link(struct qfs_tree *t, const char *path, char *canon)
{
	char cur[PATH_MAX], target[PATH_MAX], next[PATH_MAX];
	size_t mlen = strlen(t->mount_point);
	struct stat st;
	int hops;

	snprintf(cur, sizeof(cur), "%s", path);
	for (hops = 0; hops < 40; hops++) {
		ssize_t n = readlink(cur, target, sizeof(target) - 1);

		if (n < 0)
			return errno == EINVAL && realpath(cur, canon); /* not a link any more */
		target[n] = '\0';
		if (target[0] == '/')
			snprintf(next, sizeof(next), "%s", target);
		else if (snprintf(next, sizeof(next), "%.*s/%s", (int)(strrchr(cur, '/') - cur), cur,
				  target) >= (int)sizeof(next))
			return false;
		normalize(next);
		if (mlen && strncmp(next, t->mount_point, mlen) == 0 &&
		    (next[mlen] == '/' || next[mlen] == '\0'))
			return false;
		snprintf(cur, sizeof(cur), "%s", next);
		if (lstat(cur, &st) < 0)
			return false;
		if (!S_ISLNK(st.st_mode))
			return realpath(cur, canon) != NULL;
	}
	return false;
}

/* Collect the directory's subdirectories, qcow2 images and raw backing files. */
static size_t collect(struct qfs_tree *t, const char *dir, struct found **out)
{
	struct found *f = NULL;
	size_t n = 0, cap = 0;
	struct dirent *d;
	DIR *dp;
	int fd;

	if (t->single_file) {
		struct src *s = src_get(t, t->source);
		if (!s || !s->qcow2 || !(f = calloc(1, sizeof(*f))))
			return 0;
		f->name = strdup(strrchr(t->source, '/') + 1);
		f->s = s;
		*out = f;
		return 1;
	}
	fd = canon_open(dir, O_RDONLY | O_DIRECTORY);
	if (fd < 0 || !(dp = fdopendir(fd))) {
		if (fd >= 0)
			close(fd);
		return 0;
	}
	while ((d = readdir(dp))) {
		char path[PATH_MAX], canon[PATH_MAX];
		struct stat st;
		struct src *s = NULL;

		if (strcmp(d->d_name, ".") == 0 || strcmp(d->d_name, "..") == 0)
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", dir, d->d_name) >= (int)sizeof(path) ||
		    strcmp(path, t->mount_point) == 0 || lstat(path, &st) < 0)
			continue;
		if (!S_ISDIR(st.st_mode)) {
			if (S_ISLNK(st.st_mode) ? !resolve_link(t, path, canon) :
						  !snprintf(canon, sizeof(canon), "%s", path))
				continue;
			s = src_get(t, canon);
			if (!s)
				continue;
		}
		if (n == cap) {
			struct found *nf = realloc(f, (cap = cap ? 2 * cap : 32) * sizeof(*nf));
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
	struct found *f = NULL;
	size_t n, i;

	t->gen++;
	n = collect(t, dir->src, &f);
	choose_names(f, n);
	for (i = 0; i < n; i++) {
		if (!f[i].s)
			listing_add(l, f[i].name, QFS_DIR, f[i].dir, NULL);
		else if (f[i].s->qcow2 && f[i].s->err)
			log_refusal(f[i].s, f[i].s->errmsg);
		else if (f[i].s->qcow2)
			add_image(t, l, &f[i]);
		else if (src_is_backing(t, f[i].s))
			listing_add(l, f[i].name, QFS_RAW, f[i].s->path, NULL);
	}
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

	if (depth > 64 || !(dp = opendir(dir)))
		return;
	while ((d = readdir(dp))) {
		char path[PATH_MAX];
		struct stat st;

		if (d->d_name[0] == '.' && (!d->d_name[1] || (d->d_name[1] == '.' && !d->d_name[2])))
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", dir, d->d_name) >= (int)sizeof(path) ||
		    strcmp(path, t->mount_point) == 0 || lstat(path, &st) < 0)
			continue;
		if (S_ISDIR(st.st_mode))
			preload(t, path, depth + 1);
		else if (S_ISREG(st.st_mode))
			src_get(t, path);
	}
	closedir(dp);
}

static const struct entry *find_entry(const struct listing *l, const char *name)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		if (strcmp(l->e[i].name, name) == 0)
			return &l->e[i];
	return NULL;
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
	struct src *s = src_get(t, n->src);
	const char *msg;
	uint64_t stamp, size;
	blkcnt_t blocks;
	uint32_t i;

	if (!s || !s->qcow2 || s->err || chain_check(t, s, &msg) < 0)
		return ENOENT;
	size = s->vsize;
	if (n->snap_id) {
		for (i = 0; i < s->nsnaps && strcmp(s->snaps[i].id, n->snap_id) != 0; i++)
			;
		if (i == s->nsnaps)
			return ENOENT;
		size = s->snaps[i].size;
	}
	chain_facts(t, s, &blocks, &stamp);
	*st = s->st;
	st->st_mode = S_IFREG | view_mode(t, s, !n->snap_id && src_writable(t, s));
	st->st_nlink = 1;
	st->st_size = (off_t)size;
	st->st_blocks = blocks;
	st->st_blksize = 65536;
	return 0;
}

static int node_attr(struct qfs_tree *t, struct qfs_node *n, struct stat *st)
{
	struct src *s;

	switch (n->kind) {
	case QFS_DIR:
		if (canon_stat(n->src, st) < 0)
			return errno;
		if (!S_ISDIR(st->st_mode))
			return ENOENT;
		st->st_mode = S_IFDIR | dir_mode(n->src, st);
		break;
	case QFS_RAW:
		s = src_get(t, n->src);
		if (!s)
			return ENOENT;
		*st = s->st;
		st->st_mode = S_IFREG | view_mode(t, s, false);
		break;
	case QFS_FLAT: {
		int r = flat_attr(t, n, st);
		if (r)
			return r;
		break;
	}
	}
	st->st_ino = n->ino;
	return 0;
}

/* Is the node still what the directory would show (no rescan needed)? */
static bool node_current(struct qfs_tree *t, struct qfs_node *dir, struct qfs_node *n)
{
	struct stat st;

	if (!t->single_file && (canon_stat(dir->src, &st) < 0 || !dir->scanned ||
				st.st_mtim.tv_sec != dir->scan_mtime.tv_sec ||
				st.st_mtim.tv_nsec != dir->scan_mtime.tv_nsec))
		return false;
	return node_attr(t, n, &st) == 0;
}

static void note_scanned(struct qfs_tree *t, struct qfs_node *dir)
{
	struct stat st;

	if (!t->single_file && canon_stat(dir->src, &st) == 0) {
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
	*err = ENOENT;
	if (dir->kind != QFS_DIR) {
		*err = ENOTDIR;
		goto out;
	}
	child_rel(dir, name, rel, sizeof(rel));
	t->gen++;
	for (n = t->by_rel[hash_str(rel)]; n && strcmp(n->rel, rel) != 0; n = n->hnext)
		;
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
		*err = ENOENT;
	}
	pthread_mutex_unlock(&t->lock);
	listing_free(&l);
	return n;
}

int qfs_tree_getattr(struct qfs_tree *t, struct qfs_node *n, struct stat *st)
{
	int r;

	pthread_mutex_lock(&t->lock);
	t->gen++;
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
		r = ENOTDIR;
		goto out;
	}
	scan_dir(t, dir, &l);
	note_scanned(t, dir);
	d = calloc(l.n ? l.n : 1, sizeof(*d));
	if (!d) {
		r = ENOMEM;
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
 * permission so that it does not stand in the writer's way. */
static int open_chain(struct qfs_node *n, const char *src, struct qcow2_chain_opts o,
		      bool writable, bool busy, const char *snap)
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
	struct src *s;

	pthread_mutex_lock(&t->lock);
	s = src_get(t, n->src);
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
static unsigned chain_idents(struct qfs_tree *t, struct src *s, struct ident *ids, unsigned cap)
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
		as_raw = s->backing_fmt == FMT_RAW; /* a qcow2 file named as raw: its bytes */
		s = src_get(t, s->backing);
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
 * src state as the identities the open is then held to. 0 or a positive errno. */
static int check_caller(struct qfs_tree *t, struct qfs_node *n, const struct qfs_caller *who)
{
	struct stat st;
	int r;

	if (!who)
		return 0;
	r = node_attr(t, n, &st);
	return r ? r : qfs_caller_may(who, &st) ? 0 : EACCES;
}

/* The permission check and the open are not one step: the caller is checked against the files
 * the src cache holds (canonical paths, canon_stat()), their identities are kept, and the
 * descriptors of the open chain must be of those same files. A file swapped in between (a
 * symlink, or a rename within a directory the caller owns), or replaced while the chain was
 * already open for someone else, would otherwise be served to a caller who was checked
 * against another file (SPEC 3a). */
int qfs_tree_open(struct qfs_tree *t, struct qfs_node *n, bool write, bool *keep_cache,
		  const struct qfs_caller *who)
{
	struct qcow2_chain_opts o;
	char *src = NULL, *snap = NULL;
	bool writable = false, busy = false;
	struct ident *ids = NULL;
	unsigned n_ids = 0;
	uint64_t stamp = 0;
	blkcnt_t blocks;
	struct src *s;
	int r = 0;

	if (who && !(ids = calloc(QCOW2_DEFAULT_MAX_DEPTH + 1, sizeof(*ids))))
		return ENOMEM;
	pthread_mutex_lock(&t->lock);
	t->gen++;
	s = n->kind == QFS_FLAT ? src_get(t, n->src) : NULL;
	r = s ? check_caller(t, n, who) : 0;
	if (r) {
		pthread_mutex_unlock(&t->lock);
		free(ids);
		return r;
	}
	if (s && ids)
		n_ids = chain_idents(t, s, ids, QCOW2_DEFAULT_MAX_DEPTH + 1);
	if (s) {
		chain_facts(t, s, &blocks, &stamp);
		src = strdup(n->src);
		snap = n->snap_id ? strdup(n->snap_id) : NULL;
		/* a view no one may write (no write bit left) is not written for root either */
		writable = !snap && src_writable(t, s) && (view_mode(t, s, true) & 0222);
		busy = s->busy;
	}
	o = t->copts;
	pthread_mutex_unlock(&t->lock);
	if (!src || (write && !writable)) {
		free(src);
		free(snap);
		free(ids);
		return src ? EROFS : ENOENT;
	}

	pthread_mutex_lock(&n->open_lock);
	if (!n->chain)
		r = open_chain(n, src, o, writable, busy, snap);
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
	return -r;
}

int qfs_tree_open_raw(struct qfs_tree *t, struct qfs_node *n, const struct qfs_caller *who,
		      int *fd)
{
	char path[PATH_MAX];
	struct ident id = { 0 };
	struct stat st;
	struct src *s;
	int r;

	pthread_mutex_lock(&t->lock);
	t->gen++;
	s = n->kind == QFS_RAW ? src_get(t, n->src) : NULL;
	r = s ? check_caller(t, n, who) : n->kind == QFS_RAW ? ENOENT : EISDIR;
	if (r == 0) {
		id.dev = s->st.st_dev;
		id.ino = s->st.st_ino;
		snprintf(path, sizeof(path), "%s", s->path);
	}
	pthread_mutex_unlock(&t->lock);
	if (r)
		return r;
	/* no symlink followed, no FIFO waited on: the file the check saw, or nothing */
	*fd = canon_open(path, O_RDONLY | O_NONBLOCK);
	if (*fd < 0)
		return errno == ELOOP ? ESTALE : errno;
	if (fstat(*fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_dev != id.dev ||
	    st.st_ino != id.ino) {
		close(*fd);
		*fd = -1;
		return ESTALE;
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
		return n->kind == QFS_DIR ? EISDIR : EROFS;
	if (!c) { /* truncate(2) by name: open the view for writing for the time of it */
		r = qfs_tree_open(t, n, true, &keep, who);
		if (r)
			return r;
		opened = true;
		c = n->chain;
	}
	if (size < qcow2_chain_size(c)) {
		r = EINVAL; /* shrinking would lose data (SPEC 3) */
	} else {
		r = -qcow2_chain_grow(c, size);
		if (r)
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
	char canon[PATH_MAX];
	struct stat st;

	if (!t)
		return -ENOMEM;
	if (!realpath(cfg->source, canon) || stat(canon, &st) < 0) {
		free(t);
		return -errno;
	}
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
	t->copts.lock = true;
	node_get(t, "", QFS_DIR, t->root_dir, NULL); /* ino 1 = FUSE_ROOT_ID */
	pthread_mutex_lock(&t->lock);
	t->gen++;
	if (t->single_file)
		src_get(t, t->source);
	else
		preload(t, t->root_dir, 0);
	pthread_mutex_unlock(&t->lock);
	*out = t;
	return 0;
}

void qfs_tree_free(struct qfs_tree *t)
{
	unsigned b;
	size_t i;

	if (!t)
		return;
	for (b = 0; b < HASH_BUCKETS; b++) {
		struct src *s = t->srcs[b], *next;
		for (; s; s = next) {
			next = s->hnext;
			src_clear(s);
			free(s->logged_msg);
			free(s->path);
			free(s);
		}
	}
	for (i = 0; i < t->n_nodes; i++) {
		struct qfs_node *n = t->nodes[i];
		qcow2_chain_close(n->chain);
		pthread_mutex_destroy(&n->open_lock);
		free(n->rel);
		free(n->src);
		free(n->snap_id);
		free(n);
	}
	free(t->nodes);
	free(t->source);
	free(t->root_dir);
	free(t->mount_point);
	pthread_mutex_destroy(&t->lock);
	free(t);
}
