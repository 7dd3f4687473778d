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
 * unpinned; the library's locks are taken inside its calls, under it.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "log.h"

static pthread_mutex_t snap_lock = PTHREAD_MUTEX_INITIALIZER;

/* The image of the view pinned for @path (its top), or NULL after a line to the client. */
static struct qcow2_image *pin_top(struct qfs_ctl_req *req, const char *path, bool write,
				   struct qfs_node **n)
{
	struct qcow2_layer_info li;
	unsigned layer;

	if (qfs_ctl_pin_image(req, path, write, n, &layer) < 0)
		return NULL;
	if (qcow2_chain_layer((*n)->chain, layer, &li) == 0 && li.image)
		return li.image;
	qfs_ctl_err(req, "'%s' is not a qcow2 image: it has no internal snapshots", path);
	qfs_tree_release(req->tree, *n, write);
	return NULL;
}

/* snapshot list IMAGE: one record per snapshot, qemu-img's fields. */
static int h_list(struct qfs_ctl_req *req)
{
	struct qcow2_image *img;
	struct qfs_node *n;
	uint32_t i, count;

	if (req->argc != 1)
		return 64;
	img = pin_top(req, req->argv[0], false, &n);
	if (!img)
		return 1;
	pthread_mutex_lock(&snap_lock);
	count = qcow2_image_snapshot_count(img);
	for (i = 0; i < count; i++) {
		const struct qcow2_snapshot *s = qcow2_image_snapshot(img, i);
		struct ctlp_rec rec = {0};

		ctlp_rec_add(&rec, "id", "%s", s->id);
		ctlp_rec_add(&rec, "name", "%s", s->name);
		ctlp_rec_add(&rec, "vm-state-size", "%llu", (unsigned long long)s->vm_state_bytes);
		ctlp_rec_add(&rec, "date-sec", "%u", s->date_sec);
		ctlp_rec_add(&rec, "date-nsec", "%u", s->date_nsec);
		ctlp_rec_add(&rec, "vm-clock-nsec", "%llu", (unsigned long long)s->vm_clock_nsec);
		ctlp_rec_add(&rec, "icount", "%llu", (unsigned long long)s->icount);
		ctlp_rec_add(&rec, "disk-size", "%llu", (unsigned long long)s->disk_bytes);
		qfs_ctl_record(req, &rec);
		ctlp_rec_free(&rec);
	}
	pthread_mutex_unlock(&snap_lock);
	qfs_tree_release(req->tree, n, false);
	return 0;
}

/* snapshot create IMAGE NAME: a record with the new snapshot's id. */
static int h_create(struct qfs_ctl_req *req)
{
	struct ctlp_rec rec = {0};
	struct qcow2_image *img;
	struct qfs_node *n;
	int r;

	if (req->argc != 2)
		return 64;
	img = pin_top(req, req->argv[0], true, &n);
	if (!img)
		return 1;
	pthread_mutex_lock(&snap_lock);
	r = qcow2_image_snapshot_create(img, req->argv[1]);
	if (r == 0)
		ctlp_rec_add(&rec, "id", "%s",
			     qcow2_image_snapshot(img, qcow2_image_snapshot_count(img) - 1)->id);
	else
		qfs_ctl_err(req, "%s", qcow2_last_error());
	pthread_mutex_unlock(&snap_lock);
	if (r == 0) {
		qfs_log("snapshot '%s' of '%s' created (uid %u)", req->argv[1], req->argv[0],
			(unsigned)req->uid);
		qfs_ctl_record(req, &rec);
	}
	ctlp_rec_free(&rec);
	qfs_tree_release(req->tree, n, true);
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

	if (snap_id && !o->holder[0] && !strcmp(src, o->src) && !strcmp(snap_id, o->id))
		snprintf(o->holder, sizeof(o->holder), "'%s' (%u open handle%s)", n->rel, n->opens,
			 n->opens == 1 ? "" : "s");
}

struct delete_job {
	struct qcow2_image *img;
	const char *arg, *path;
	struct qcow2_snapshot_resume res;
};

static int run_delete(void *ctx, struct qcow2_job *job)
{
	struct delete_job *d = ctx;

	(void)job; /* one crash-safe step: not cancelled midway */
	return qcow2_image_snapshot_delete_resumable(d->img, d->arg, d->path, &d->res);
}

/* snapshot delete IMAGE SNAPSHOT: refused while that snapshot's view is open (naming it);
 * a record of what the delete did (the cleanup of an interrupted one). */
static int h_delete(struct qfs_ctl_req *req)
{
	struct delete_job d = {.arg = NULL};
	struct open_snap o = {.src = NULL};
	struct qfs_ctl_job_spec spec = {.kind = "snapshot-delete", .run = run_delete, .ctx = &d};
	struct ctlp_rec rec = {0};
	struct qfs_node *n;
	char canon[PATH_MAX];
	int i, r;

	if (req->argc != 2)
		return 64;
	d.img = pin_top(req, req->argv[0], true, &n);
	if (!d.img)
		return 1;
	d.path = req->argv[0];
	d.arg = req->argv[1];
	spec.images = d.path;
	pthread_mutex_lock(&snap_lock);
	i = qcow2_image_find_snapshot(d.img, d.arg);
	if (i >= 0 && realpath(d.path, canon)) {
		o.src = canon;
		o.id = qcow2_image_snapshot(d.img, (uint32_t)i)->id;
		qfs_tree_each_open(req->tree, find_snap_view, &o);
	}
	if (o.holder[0]) {
		qfs_ctl_err(req, "'%s': snapshot '%s' is in use: its view %s is open", d.path,
			    d.arg, o.holder);
		r = -EBUSY;
	} else {
		r = qfs_ctl_job_run(req, &spec, false);
		if (r < 0)
			qfs_ctl_err(req, "%s", qcow2_last_error());
	}
	pthread_mutex_unlock(&snap_lock);
	if (r == 0) {
		ctlp_rec_add(&rec, "already-deleted", "%d", d.res.already_deleted);
		ctlp_rec_add(&rec, "leaks-fixed", "%llu", (unsigned long long)d.res.leaks_fixed);
		ctlp_rec_add(&rec, "copied-fixed", "%llu", (unsigned long long)d.res.copied_fixed);
		qfs_ctl_record(req, &rec);
		ctlp_rec_free(&rec);
	}
	qfs_tree_release(req->tree, n, true);
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

void qfs_ctl_snapshot_register(void)
{
	qfs_ctl_register("snapshot apply", h_apply);
	qfs_ctl_register("snapshot list", h_list);
	qfs_ctl_register("snapshot create", h_create);
	qfs_ctl_register("snapshot delete", h_delete);
}
