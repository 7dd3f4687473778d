/* SPDX-License-Identifier: MIT */
/*
 * ctl-snapshot.c - internal snapshots of an image whose view is open, run by the daemon on
 * its own open image (the handlers of `qcowctl snapshot list|create|delete` forwarded to it):
 * the library's snapshot code on the chain's top (format/snapshot/), which takes the image's
 * w->frees exclusive: new guest writes wait, in-flight ones finish, the metadata is written
 * back, the snapshot is taken and durable, writes resume. The results go back as records;
 * qcowctl prints them as it prints its offline command's (tools/cmd-snapshot.c).
 *
 * In fs/'s order: above ctl.c (its registry and sink), below main.c (which registers these).
 *
 * Locking: snap_lock serializes this file's operations (a list reads the snapshot array, which
 * a create or delete replaces: qcow2_image_snapshot()'s pointers go stale); it is taken after
 * the view is pinned (n->open_lock taken and released inside the pin) and released before it is
 * unpinned; a create or delete waits for it inside its job (qfs_ctl_job_lock(): shown waiting,
 * and cancellable until it has it). Under it: the library's locks inside its calls, and a
 * delete's look for an open snapshot view (qfs_tree_each_open(): t->lock, then each node's
 * open_lock, one at a time); nothing takes snap_lock under any of those.
 */
#include <errno.h>
#include <sys/types.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "log.h"

static pthread_mutex_t snap_lock = PTHREAD_MUTEX_INITIALIZER;

/* The image of the view pinned for @path (its top; the pinned chain in *@c), or NULL after a
 * line to the client. */
static struct qcow2_image *pin_top(struct qfs_ctl_req *req, const char *path, bool write,
				   struct qfs_node **n, struct qcow2_chain **c)
{
	struct qcow2_layer_info li;
	unsigned layer;

	if (qfs_ctl_pin_image(req, path, write, n, &layer, c) < 0)
		return NULL;
	if (qcow2_chain_layer(*c, layer, &li) == 0 && li.image)
		return li.image;
	qfs_ctl_err(req, "'%s' is not a qcow2 image: it has no internal snapshots", path);
	qfs_tree_release(req->tree, *n, *c, write);
	return NULL;
}

/* snapshot list IMAGE: one record per snapshot, qemu-img's fields (made under snap_lock, sent
 * after it: a slow client holds up no snapshot operation). */
static int h_list(struct qfs_ctl_req *req)
{
	struct qcow2_image *img;
	struct ctlp_rec *recs;
	struct qcow2_chain *ch;
	struct qfs_node *n;
	uint32_t i, count;

	if (req->argc != 1)
		return 64;
	img = pin_top(req, req->argv[0], false, &n, &ch);
	if (!img)
		return 1;
	pthread_mutex_lock(&snap_lock);
	count = qcow2_image_snapshot_count(img);
	recs = calloc(count ? count : 1, sizeof(*recs));
	for (i = 0; recs && i < count; i++) {
		const struct qcow2_snapshot *s = qcow2_image_snapshot(img, i);
		struct ctlp_rec *rec = &recs[i];

		ctlp_rec_add(rec, "id", "%s", s->id);
		ctlp_rec_add(rec, "name", "%s", s->name);
		ctlp_rec_add(rec, "vm-state-size", "%llu", (unsigned long long)s->vm_state_bytes);
		ctlp_rec_add(rec, "date-sec", "%u", s->date_sec);
		ctlp_rec_add(rec, "date-nsec", "%u", s->date_nsec);
		ctlp_rec_add(rec, "vm-clock-nsec", "%llu", (unsigned long long)s->vm_clock_nsec);
		ctlp_rec_add(rec, "icount", "%llu", (unsigned long long)s->icount);
		ctlp_rec_add(rec, "disk-size", "%llu", (unsigned long long)s->disk_bytes);
	}
	pthread_mutex_unlock(&snap_lock);
	qfs_tree_release(req->tree, n, ch, false);
	if (!recs) {
		qfs_ctl_err(req, "out of memory");
		return 1;
	}
	for (i = 0; i < count; i++) {
		qfs_ctl_record(req, &recs[i]);
		ctlp_rec_free(&recs[i]);
	}
	free(recs);
	return 0;
}

struct create_job {
	struct qcow2_image *img;
	const char *name;
	char id[64];
};

static int run_create(void *ctx, struct qcow2_job *job)
{
	struct create_job *c = ctx;
	int r;

	/* cancellable while it waits for another snapshot operation; then one crash-safe step,
	 * short, not cancelled midway */
	r = qfs_ctl_job_lock(job, &snap_lock);
	if (r < 0)
		return r;
	r = qcow2_image_snapshot_create(c->img, c->name);
	if (r == 0)
		snprintf(c->id, sizeof(c->id), "%s",
			 qcow2_image_snapshot(c->img, qcow2_image_snapshot_count(c->img) - 1)->id);
	pthread_mutex_unlock(&snap_lock);
	return r;
}

/* snapshot create IMAGE NAME: a record with the new snapshot's id. */
static int h_create(struct qfs_ctl_req *req)
{
	struct create_job c = {.name = NULL};
	struct qfs_ctl_job_spec spec = {.kind = "snapshot-create", .run = run_create, .ctx = &c};
	struct ctlp_rec rec = {0};
	struct qcow2_chain *ch;
	struct qfs_node *n;
	int r;

	if (req->argc != 2)
		return 64;
	c.img = pin_top(req, req->argv[0], true, &n, &ch);
	if (!c.img)
		return 1;
	c.name = req->argv[1];
	spec.images = req->argv[0];
	r = qfs_ctl_job_run(req, &spec, false);
	if (r == 0) {
		qfs_log("snapshot '%s' of '%s' created (uid %u)", c.name, req->argv[0],
			(unsigned)req->uid);
		ctlp_rec_add(&rec, "id", "%s", c.id);
		qfs_ctl_record(req, &rec);
		ctlp_rec_free(&rec);
	} else {
		qfs_ctl_err(req, "%s", qcow2_last_error());
	}
	qfs_tree_release(req->tree, n, ch, true);
	return r == 0 ? 0 : 1;
}

/* A delete refused while the snapshot's view is open: the view found by image and id. */
struct open_snap {
	const char *src, *id;
	char holder[PATH_MAX + 64];
};

static void find_snap_view(void *ctx, const struct qfs_node *n, const char *src,
			   const char *snap_id)
{
	struct open_snap *o = ctx;

	pid_t pids[4];
	size_t k, i, len;

	if (!snap_id || o->holder[0] || strcmp(src, o->src) || strcmp(snap_id, o->id))
		return;
	len = (size_t)snprintf(o->holder, sizeof(o->holder), "'%s' is open", n->rel);
	k = qfs_ops_openers(n, pids, 4);
	for (i = 0; i < k && len < sizeof(o->holder); i++) {
		char path[64], comm[64] = "?";
		FILE *f;

		snprintf(path, sizeof(path), "/proc/%d/comm", (int)pids[i]);
		f = fopen(path, "r");
		if (f && fgets(comm, sizeof(comm), f))
			comm[strcspn(comm, "\n")] = '\0';
		if (f)
			fclose(f);
		len += (size_t)snprintf(o->holder + len, sizeof(o->holder) - len, "%s pid %d (%s)",
					i ? "," : ":", (int)pids[i], comm);
	}
}

struct delete_job {
	struct qfs_ctl_req *req;
	struct qcow2_image *img;
	const char *arg, *path;
	struct qcow2_snapshot_resume res;
};

static int run_delete(void *ctx, struct qcow2_job *job)
{
	struct delete_job *d = ctx;
	struct open_snap o = {.src = NULL};
	char canon[PATH_MAX];
	int i, r;

	r = qfs_ctl_job_lock(job, &snap_lock); /* cancellable while it waits */
	if (r < 0)
		return r;
	i = qcow2_image_find_snapshot(d->img, d->arg);
	if (i >= 0 && realpath(d->path, canon)) {
		o.src = canon;
		o.id = qcow2_image_snapshot(d->img, (uint32_t)i)->id;
		qfs_tree_each_open(d->req->tree, find_snap_view, &o);
	}
	if (o.holder[0])
		r = qcow2_set_error(-EBUSY, "'%s': snapshot '%s' is in use: its view %s", d->path,
				    d->arg, o.holder);
	else /* one crash-safe step: not cancelled midway */
		r = qcow2_image_snapshot_delete_resumable(d->img, d->arg, d->path, &d->res);
	pthread_mutex_unlock(&snap_lock);
	return r;
}

/* snapshot delete IMAGE SNAPSHOT: refused while that snapshot's view is open (naming it);
 * a record of what the delete did (the cleanup of an interrupted one). */
static int h_delete(struct qfs_ctl_req *req)
{
	struct delete_job d = {.req = req};
	struct qfs_ctl_job_spec spec = {.kind = "snapshot-delete", .run = run_delete, .ctx = &d};
	struct ctlp_rec rec = {0};
	struct qcow2_chain *ch;
	struct qfs_node *n;
	int r;

	if (req->argc != 2)
		return 64;
	d.img = pin_top(req, req->argv[0], true, &n, &ch);
	if (!d.img)
		return 1;
	d.path = req->argv[0];
	d.arg = req->argv[1];
	spec.images = d.path;
	r = qfs_ctl_job_run(req, &spec, false);
	if (r < 0) {
		qfs_ctl_err(req, "%s", qcow2_last_error());
	} else {
		ctlp_rec_add(&rec, "already-deleted", "%d", d.res.already_deleted);
		ctlp_rec_add(&rec, "leaks-fixed", "%llu", (unsigned long long)d.res.leaks_fixed);
		ctlp_rec_add(&rec, "copied-fixed", "%llu", (unsigned long long)d.res.copied_fixed);
		qfs_ctl_record(req, &rec);
		ctlp_rec_free(&rec);
	}
	qfs_tree_release(req->tree, n, ch, true);
	return r == 0 ? 0 : 1;
}

/* snapshot apply IMAGE SNAPSHOT: refused live, with why. */
static int h_apply(struct qfs_ctl_req *req)
{
	qfs_ctl_err(req,
		    "'%s': snapshot apply cannot run while a view of it is open: it would change "
		    "the disk under the view's readers and writers (close the view, or unmount)",
		    req->argc ? req->argv[0] : "");
	return 1;
}

pthread_mutex_t *qfs_ctl_snapshot_mutex(void)
{
	return &snap_lock;
}

void qfs_ctl_snapshot_register(void)
{
	qfs_ctl_register("snapshot apply", h_apply);
	qfs_ctl_register("snapshot list", h_list);
	qfs_ctl_register("snapshot create", h_create);
	qfs_ctl_register("snapshot delete", h_delete);
}
