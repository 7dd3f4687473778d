/* SPDX-License-Identifier: MIT */
/*
 * tree-open.c - opening views: the chain behind a flat view, shared by every open handle of
 * its node, opened with the first handle (locked, L1 loaded) and closed with the last; the
 * write lock held while a handle writes; raw backing files opened for reading; a flat view
 * grown by truncate. Every open is checked against the files the permission check saw.
 *
 * Locking: takes t->lock (only to read the src cache, never across a chain open or any read
 * of image data), then, after releasing it, the node's open_lock, which guards the node's
 * chain and counts; under open_lock it takes t->lock again only briefly (note_writer(), the
 * write refusal): open_lock -> t->lock, never the other way (qcowfs.h). Two nodes' open_locks
 * are held at once only by adopt() (a chain moved by a live job taken by its new top's view),
 * the lower ino's first, with nothing but the library's layer lock taken under them. The
 * library's own locks are taken inside the chain calls.
 *
 * A handle keeps the chain it opened: after a live job moved it (n->moved), its node opens its
 * own chain afresh, so that a node's counts are always those of the handles of one chain, and
 * a release finds the node that holds its chain now (qfs_tree_release()).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "perm.h"
#include "qcowfs.h"
#include "src.h"
#include "tree.h"
#include "verdict.h"

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

/* The nodes of the tree (t->lock taken here, briefly): nodes live as long as the mount, so the
 * pointers stay good after the lock is released. NULL when out of memory. */
static struct qfs_node **all_nodes(struct qfs_tree *t, size_t *n)
{
	struct qfs_node **v;

	pthread_mutex_lock(&t->lock);
	*n = t->n_nodes;
	v = malloc((*n ? *n : 1) * sizeof(*v));
	if (v && *n)
		memcpy(v, t->nodes, *n * sizeof(*v));
	pthread_mutex_unlock(&t->lock);
	return v;
}

/* Count a writer of the top of open chain @c (its node's open_lock held): its lock is ours,
 * not a conflict. The top is its node's own file, or the one a live job moved the chain to
 * (live.c; qfs_tree_writers_moved() moved the count with it). */
static void note_writer(struct qfs_tree *t, struct qcow2_chain *c, int delta)
{
	char top[PATH_MAX];
	struct qfs_src *s;

	qcow2_chain_top_path(c, top, sizeof(top));
	pthread_mutex_lock(&t->lock);
	s = qfs_src_get(&t->cache, top);
	if (s && (delta > 0 || s->our_writers >= (unsigned)-delta))
		s->our_writers += (unsigned)delta;
	pthread_mutex_unlock(&t->lock);
}

/* The node that holds open chain @c (in its own slot or its moved one), with its open_lock
 * held (taken here): @n first, else the one that adopted it. A chain is on exactly one node at
 * any time (an adoption moves it holding both nodes' open_locks), and cannot close while the
 * caller's handle or pin counts on it, so the search finds it. NULL only if it is nowhere
 * (out of memory, or a bug: logged). */
static struct qfs_node *lock_holder(struct qfs_tree *t, struct qfs_node *n, struct qcow2_chain *c)
{
	struct qfs_node **v, *m = NULL;
	size_t i, k;

	pthread_mutex_lock(&n->open_lock);
	if (c && (n->chain == c || n->moved == c))
		return n;
	pthread_mutex_unlock(&n->open_lock);
	v = all_nodes(t, &k);
	for (i = 0; v && c && i < k && !m; i++) {
		if (v[i] == n || v[i]->kind != QFS_FLAT)
			continue;
		pthread_mutex_lock(&v[i]->open_lock);
		if (v[i]->chain == c || v[i]->moved == c)
			m = v[i];
		else
			pthread_mutex_unlock(&v[i]->open_lock);
	}
	free(v);
	if (!m)
		qfs_log("'%s': a handle's chain is held by no view", n->rel);
	return m;
}

/* How many nodes hold a moved chain (n->moved) that no node adopted yet: opens look for one
 * to adopt only while there is one. */
static _Atomic unsigned n_moved;

/* The chain leaves @n's own slot for n->moved (its handles and pins go on with it, counted
 * there) when the slot is free; else it stays, and new opens of @n are refused until its
 * handles close (hold_chain()). */
void qfs_tree_writers_moved(struct qfs_tree *t, struct qfs_node *n, struct qcow2_chain *c,
			    const char *old_top)
{
	char top[PATH_MAX];
	struct qfs_node *m = lock_holder(t, n, c);
	struct qfs_src *s;
	unsigned k;

	if (!m)
		return;
	k = m->chain == c ? m->writers : m->moved_writers;
	qcow2_chain_top_path(c, top, sizeof(top));
	pthread_mutex_lock(&t->lock);
	qfs_src_cache_next_gen(&t->cache); /* (the files changed: their views are judged again) */
	s = qfs_src_get(&t->cache, old_top);
	if (s)
		s->our_writers = s->our_writers > k ? s->our_writers - k : 0;
	s = qfs_src_get(&t->cache, top);
	if (s && k) {
		s->our_writers += k;
		s->busy = false; /* it was our own lock that made it look busy */
	}
	pthread_mutex_unlock(&t->lock);
	if (m->chain == c && !m->moved) {
		m->moved = m->chain;
		m->moved_opens = m->opens;
		m->moved_writers = m->writers;
		m->chain = NULL;
		m->opens = m->writers = 0;
		m->foreign = 0;
		m->stale_pages = true; /* (pages of the moved handles' writes) */
		n_moved++;
	}
	pthread_mutex_unlock(&m->open_lock);
}

/* Under both nodes' open_locks: move @m's moved chain, with its counts, into @n's own slot. */
static void adopt_from(struct qfs_node *n, struct qfs_node *m)
{
	n->chain = m->moved;
	n->opens = m->moved_opens;
	n->writers = m->moved_writers;
	n->stamp = 0;
	n->foreign = m->moved_opens;
	n->stale_pages = true;
	m->away += m->moved_opens;
	m->moved = NULL;
	m->moved_opens = m->moved_writers = 0;
	n_moved--;
}

/* @n (a flat view of @src, not a snapshot view) with no open chain adopts a chain a live job
 * moved to @src as its top, if one is waiting (n->moved of another node): the view of the new
 * top then serves the disk the old handles write (writable), shared with them. Two open_locks
 * are held at once only here, the lower ino's first (no other code holds two), then nothing
 * but the library's layer lock (qcow2_chain_top_is()). */
static void adopt(struct qfs_tree *t, struct qfs_node *n, const char *src)
{
	struct qfs_node **v;
	bool done = false;
	size_t i, k;

	if (!n_moved)
		return;
	v = all_nodes(t, &k);
	for (i = 0; v && i < k && !done; i++) {
		struct qfs_node *m = v[i], *lo = m->ino < n->ino ? m : n, *hi = lo == m ? n : m;

		if (m == n || m->kind != QFS_FLAT)
			continue;
		pthread_mutex_lock(&lo->open_lock);
		pthread_mutex_lock(&hi->open_lock);
		done = n->chain != NULL; /* (an open of its own came first) */
		if (!done && m->moved && qcow2_chain_top_is(m->moved, src)) {
			adopt_from(n, m);
			done = true;
		}
		pthread_mutex_unlock(&hi->open_lock);
		pthread_mutex_unlock(&lo->open_lock);
	}
	free(v);
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
static bool layers_are(struct qcow2_chain *c, const struct ident *ids, unsigned n);

static bool chain_is(struct qcow2_chain *c, const struct ident *ids, unsigned n)
{
	bool same;

	qcow2_chain_layers_hold(c); /* (a live job may be changing them: live.c) */
	same = layers_are(c, ids, n);
	qcow2_chain_layers_release(c);
	return same;
}

static bool layers_are(struct qcow2_chain *c, const struct ident *ids, unsigned n)
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
	r = qfs_tree_attr(t, n, &st);
	return r ? r : qfs_caller_may(who, &st) ? 0 : -EACCES;
}

/* What an open is decided on, read from the src cache in one go under t->lock. */
struct open_plan {
	char *src;  /* the view's source file; NULL: not a flat view (or out of memory) */
	char *snap; /* its snapshot id, or NULL */
	bool writable, busy;
	uint64_t stamp;
	struct ident *ids; /* with a caller to check: the files the check saw, top first */
	unsigned n_ids;
	struct qcow2_chain_opts o;
};

/* Under n->open_lock: is the top of @n's open chain still @n's own file? (A live external
 * snapshot or an active commit with pivot gives the chain another top.) */
static bool top_is_own(struct qfs_node *n, const struct open_plan *p)
{
	return p->snap || qcow2_chain_top_is(n->chain, p->src);
}

static void plan_free(struct open_plan *p)
{
	free(p->src);
	free(p->snap);
	free(p->ids);
}

/* Check @who (unless NULL) against @n and read what opening @n is decided on into @p, both
 * under t->lock (taken here). 0 or a negative errno; @p is freed by the caller either way. */
static int plan_open(struct qfs_tree *t, struct qfs_node *n, const struct qfs_caller *who,
		     struct open_plan *p)
{
	blkcnt_t blocks;
	struct qfs_src *s;
	int r;

	if (who && !(p->ids = calloc(QCOW2_DEFAULT_MAX_DEPTH + 1, sizeof(*p->ids))))
		return -ENOMEM;
	pthread_mutex_lock(&t->lock);
	qfs_src_cache_next_gen(&t->cache);
	s = n->kind == QFS_FLAT ? qfs_src_get(&t->cache, n->src) : NULL;
	if (s) /* a writer that came since the last probe makes the view read-only now */
		qfs_src_lock_probe(&t->cache, s);
	r = s ? check_caller(t, n, who) : 0;
	if (r == 0 && s) {
		if (p->ids)
			p->n_ids = chain_idents(t, s, p->ids, QCOW2_DEFAULT_MAX_DEPTH + 1);
		qfs_src_chain_facts(&t->cache, s, &blocks, &p->stamp);
		p->src = strdup(n->src);
		p->snap = n->snap_id ? strdup(n->snap_id) : NULL;
		/* a view no one may write (no write bit left) is not written for root either */
		p->writable = !p->snap &&
			      qfs_verdict(&t->cache, s, false, NULL, NULL, NULL, 0) == QFS_STATE_RW;
		p->busy = s->busy;
	}
	p->o = t->copts;
	pthread_mutex_unlock(&t->lock);
	return r;
}

/* The library refused to open @src for writing: its views are read-only until it changes. */
static void note_refused(struct qfs_tree *t, const char *src)
{
	struct qfs_src *s;

	pthread_mutex_lock(&t->lock);
	s = qfs_src_get(&t->cache, src);
	if (s)
		s->write_refused = true;
	pthread_mutex_unlock(&t->lock);
}

/* Under n->open_lock (taken here): open @n's chain as @p plans unless it is open, hold it to
 * the files the caller was checked against, take the write lock for the first writer and count
 * the handle; close the chain again on failure when no other handle has it. 0 or a negative
 * errno. */
static int hold_chain(struct qfs_tree *t, struct qfs_node *n, const struct open_plan *p, bool write,
		      bool *keep_cache, bool *direct, const struct qfs_caller *who,
		      struct qcow2_chain **c)
{
	bool refused = false;
	int r = 0;

	/* n->open_lock is held across the chain open, which cannot wait on a request to this
	 * daemon: every name is resolved with our mount point refused (p->o.mount_point) and every
	 * file is opened following no symlink and without blocking (qcow2_file_open()). */
	pthread_mutex_lock(&n->open_lock);
	if (!n->chain)
		r = open_chain(n, p->src, p->o, p->writable, p->busy, p->snap, &refused);
	if (refused)
		note_refused(t, p->src);
	if (r == 0 && !top_is_own(n, p)) {
		/* a live job (live.c) made another file the top of the open chain, and its chain
		 * could not leave (a chain moved before still has handles): its handles go on
		 * with it, but a new open would be served another file's disk */
		qfs_log("'%s': a live job moved its open handles to another image: not opened "
			"again until they close",
			n->rel);
		r = -EBUSY;
	}
	if (r == 0 && p->ids && !chain_is(n->chain, p->ids, p->n_ids)) {
		qfs_log("'%s': a file of its chain was replaced since it was checked (or since "
			"the view was opened): not served to uid %u",
			n->rel, (unsigned)who->uid);
		r = -ESTALE;
	}
	if (r == 0 && write && !qcow2_chain_writable(n->chain))
		r = -EROFS;
	if (r == 0 && write && n->writers == 0) {
		note_writer(t, n->chain, 1);
		r = qcow2_chain_lock_write(n->chain, true);
		if (r < 0) {
			qfs_log("cannot write '%s': %s", n->rel, qcow2_last_error());
			note_writer(t, n->chain, -1);
		}
	}
	if (r == 0) {
		/* the disk is also written through another view's inode (the handles a live job
		 * moved): this inode's page cache would not see those writes; once no such handle
		 * is left, the first cached open drops what the inode kept meanwhile */
		*direct = n->moved || n->away || n->foreign;
		*keep_cache = !n->stale_pages && (n->opens == 0 ? p->stamp == n->stamp : true);
		if (!*direct)
			n->stale_pages = false;
		n->stamp = p->stamp;
		n->opens++;
		n->writers += write;
		*c = n->chain;
	} else if (n->opens == 0) {
		qcow2_chain_close(n->chain);
		n->chain = NULL;
	}
	pthread_mutex_unlock(&n->open_lock);
	return r;
}

/* The permission check and the open are not one step: the caller is checked against the files
 * the src cache holds (canonical paths, canon_stat()), their identities are kept, and the
 * descriptors of the open chain must be of those same files. A file swapped in between (a
 * symlink, or a rename within a directory the caller owns), or replaced while the chain was
 * already open for someone else, would otherwise be served to a caller who was checked
 * against another file. */
int qfs_tree_open(struct qfs_tree *t, struct qfs_node *n, bool write, bool *keep_cache,
		  bool *direct, const struct qfs_caller *who, struct qcow2_chain **c)
{
	struct open_plan p = {0};
	int r;

	*direct = false;
	r = plan_open(t, n, who, &p);
	if (r == 0 && (!p.src || (write && !p.writable)))
		r = p.src ? -EROFS : -ENOENT;
	if (r == 0 && !p.snap)
		adopt(t, n, p.src);
	if (r == 0)
		r = hold_chain(t, n, &p, write, keep_cache, direct, who, c);
	plan_free(&p);
	return r;
}

int qfs_tree_open_raw(struct qfs_tree *t, struct qfs_node *n, const struct qfs_caller *who, int *fd)
{
	char path[PATH_MAX];
	struct ident id = {0};
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

/* Under n->open_lock: release one handle of the chain in *@cp, counted in *@opens and
 * *@writers (the node's own slot or its moved one). */
static void release_in(struct qfs_tree *t, struct qfs_node *n, struct qcow2_chain **cp,
		       unsigned *opens, unsigned *writers, bool write)
{
	if (write && *writers && --*writers == 0) {
		if (qcow2_chain_lock_write(*cp, false) < 0)
			qfs_log("writing back '%s' failed: %s", n->rel, qcow2_last_error());
		note_writer(t, *cp, -1);
	}
	if (*opens && --*opens == 0) {
		if (qcow2_chain_flush(*cp) < 0)
			qfs_log("writing back '%s' failed: %s", n->rel, qcow2_last_error());
		qcow2_chain_close(*cp);
		*cp = NULL;
		if (cp == &n->moved)
			n_moved--;
	}
}

/* A handle counts on the chain it opened: on @n's own slot, on its moved one once a live job
 * moved the chain, or on the node of the new top that adopted it (adopt()). */
void qfs_tree_release(struct qfs_tree *t, struct qfs_node *n, struct qcow2_chain *c, bool write)
{
	struct qfs_node *m = lock_holder(t, n, c);

	if (!m)
		return;
	if (m != n && m->chain == c && m->foreign)
		m->foreign--; /* a handle opened on another node, that node's "away" below */
	if (m->chain == c)
		release_in(t, m, &m->chain, &m->opens, &m->writers, write);
	else
		release_in(t, m, &m->moved, &m->moved_opens, &m->moved_writers, write);
	pthread_mutex_unlock(&m->open_lock);
	if (m == n)
		return;
	pthread_mutex_lock(&n->open_lock); /* (one open_lock at a time) */
	if (n->away)
		n->away--;
	pthread_mutex_unlock(&n->open_lock);
}

int qfs_tree_truncate(struct qfs_tree *t, struct qfs_node *n, struct qcow2_chain *c, uint64_t size,
		      const struct qfs_caller *who)
{
	bool keep, direct, opened = false;
	int r;

	if (n->kind != QFS_FLAT)
		return n->kind == QFS_DIR ? -EISDIR : -EROFS;
	if (!c) { /* truncate(2) by name: open the view for writing for the time of it */
		r = qfs_tree_open(t, n, true, &keep, &direct, who, &c);
		if (r)
			return r;
		opened = true;
	}
	if (size < qcow2_chain_size(c)) {
		r = -EINVAL; /* a view never shrinks: that would cut the guest disk */
	} else {
		r = qcow2_chain_grow(c, size);
		if (r < 0)
			qfs_log("growing '%s' failed: %s", n->rel, qcow2_last_error());
	}
	if (opened)
		qfs_tree_release(t, n, c, true);
	return r;
}

/* The layer of open chain @c (NULL: none) that is the file @dev:@ino, or -1. */
static int layer_in(struct qcow2_chain *c, dev_t dev, ino_t ino)
{
	struct qcow2_layer_info li;
	unsigned i;
	int found = -1;

	if (!c)
		return -1;
	qcow2_chain_layers_hold(c); /* (a live job may be changing them: live.c) */
	for (i = 0; found < 0 && i < qcow2_chain_depth(c); i++)
		if (qcow2_chain_layer(c, i, &li) == 0 && io_is(li.io, dev, ino))
			found = (int)i;
	qcow2_chain_layers_release(c);
	return found;
}

/* Under n->open_lock: the layer that is the file @dev:@ino of @n's open chain or of its moved
 * one (*@moved: of the moved one), the lower of the two, or -1. */
static int layer_of(struct qfs_node *n, dev_t dev, ino_t ino, bool *moved)
{
	int own = layer_in(n->chain, dev, ino), away = layer_in(n->moved, dev, ino);

	*moved = away >= 0 && (own < 0 || away < own);
	return *moved ? away : own;
}

/* Under its node's open_lock: count one more handle on the open chain *@cp (counted in
 * *@opens and *@writers), as a writer if @write (the write lock taken for the first, as
 * hold_chain() does). */
static int pin_locked(struct qfs_tree *t, struct qcow2_chain *c, unsigned *opens, unsigned *writers,
		      bool write)
{
	int r;

	if (write && !qcow2_chain_writable(c))
		return -EROFS;
	if (write && *writers == 0) {
		note_writer(t, c, 1);
		r = qcow2_chain_lock_write(c, true);
		if (r < 0) {
			note_writer(t, c, -1);
			return r;
		}
	}
	(*opens)++;
	*writers += write;
	return 0;
}

/* The flat view whose open chain (or moved chain) has the file @dev:@ino as its lowest layer,
 * or NULL. */
static struct qfs_node *find_file(struct qfs_tree *t, dev_t dev, ino_t ino)
{
	struct qfs_node **v, *best = NULL;
	int best_layer = -1;
	size_t i, n;
	bool moved;

	v = all_nodes(t, &n);
	/* the flat view whose top is the file wins over a view it is a backing layer of, and
	 * over its snapshot views (which only read it) */
	for (i = 0; v && i < n && best_layer != 0; i++) {
		int l;

		if (v[i]->kind != QFS_FLAT)
			continue;
		pthread_mutex_lock(&v[i]->open_lock);
		l = v[i]->snap_id ? -1 : layer_of(v[i], dev, ino, &moved);
		pthread_mutex_unlock(&v[i]->open_lock);
		if (l >= 0 && (best_layer < 0 || l < best_layer))
			best = v[i], best_layer = l;
	}
	free(v);
	return best;
}

int qfs_tree_pin_file(struct qfs_tree *t, dev_t dev, ino_t ino, bool write, struct qfs_node **out,
		      unsigned *layer, struct qcow2_chain **c)
{
	struct qfs_node *best;
	int best_layer = -1, r = -ENOENT, tries;
	bool moved = false;

	/* a chain may move (a live job, an adoption) between the search and the pin: search
	 * again, a few times */
	for (tries = 0; tries < 3 && r == -ENOENT; tries++) {
		best = find_file(t, dev, ino);
		if (!best)
			break;
		pthread_mutex_lock(&best->open_lock);
		best_layer = layer_of(best, dev, ino, &moved);
		if (best_layer < 0)
			r = -ENOENT;
		else if (write && best_layer != 0)
			r = -EROFS; /* a backing layer of the view: read-only while it is open */
		else if (moved)
			r = pin_locked(t, best->moved, &best->moved_opens, &best->moved_writers,
				       write);
		else
			r = pin_locked(t, best->chain, &best->opens, &best->writers, write);
		if (r == 0) {
			*c = moved ? best->moved : best->chain;
			*out = best;
			*layer = (unsigned)best_layer;
		}
		pthread_mutex_unlock(&best->open_lock);
	}
	return r;
}

void qfs_tree_each_open(struct qfs_tree *t,
			void (*visit)(void *ctx, const struct qfs_node *n, const char *src,
				      const char *snap_id),
			void *ctx)
{
	struct qfs_node **v;
	size_t i, n;

	v = all_nodes(t, &n);
	if (!v)
		return;
	for (i = 0; i < n; i++) {
		char src[PATH_MAX] = "", snap[256] = "";

		if (v[i]->kind != QFS_FLAT)
			continue;
		pthread_mutex_lock(&t->lock); /* src and snap_id are under t->lock */
		snprintf(src, sizeof(src), "%s", v[i]->src ? v[i]->src : "");
		snprintf(snap, sizeof(snap), "%s", v[i]->snap_id ? v[i]->snap_id : "");
		pthread_mutex_unlock(&t->lock);
		pthread_mutex_lock(&v[i]->open_lock);
		if (v[i]->opens || v[i]->moved_opens)
			visit(ctx, v[i], src, v[i]->snap_id ? snap : NULL);
		pthread_mutex_unlock(&v[i]->open_lock);
	}
	free(v);
}

const struct qcow2_chain_opts *qfs_tree_chain_opts(const struct qfs_tree *t)
{
	return &t->copts;
}

const char *qfs_tree_mount_point(const struct qfs_tree *t)
{
	return t->mount_point;
}
