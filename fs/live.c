/* SPDX-License-Identifier: MIT */
/*
 * live.c - the live chain jobs run by the daemon on the chain of an open view (the handlers of
 * `qcowctl snapshot create --external`, `qcowctl commit` and `qcowctl pull` forwarded to it):
 * the library's live jobs (format/jobs/live.c) on the view's own open chain, while its handles
 * go on reading and writing it. Each runs as a job of the registry (progress, `qcowctl job
 * cancel`, the client's interrupt); its plan goes back as records ("kind", "image", "detail",
 * "bytes"), which qcowctl prints as it prints its offline command's.
 *
 * What the views show afterwards: the view whose chain the job changed keeps serving its open
 * handles with the new layers (after an external snapshot they write into NEW; after an active
 * commit with pivot into base). The chain leaves the view's node (qfs_tree_writers_moved(),
 * tree-open.c): a new open of the view opens its own file's chain afresh (IMAGE's view then
 * shows the frozen point in time, read-only: NEW uses IMAGE as its backing file), and the view
 * of the new top adopts the moved chain at its next open (NEW's view: writable, the same disk
 * as the old handles).
 *
 * In fs/'s order: above ctl.c (its registry and sink), below main.c (which registers these).
 *
 * Locking: the view is pinned (n->open_lock taken and released inside the pin) for the whole
 * job, so its chain stays open; the library serializes live jobs on one chain itself (-EBUSY)
 * and takes its own locks inside its calls. A job that gives the chain another top holds
 * ctl-snapshot.c's lock throughout (run_live()); no other fs/ lock is held across a job.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "live.h"
#include "log.h"

enum live_kind { LIVE_SNAPSHOT, LIVE_COMMIT, LIVE_PULL };

struct live_job {
	enum live_kind kind;
	struct qfs_tree *tree;
	struct qcow2_chain *chain;
	const char *image, *arg; /* arg: NEW (snapshot), base (pull) */
	struct qcow2_commit_opts co;
	bool dry_run;
	struct qcow2_plan plan;
};

static int run_job(struct live_job *l, struct qcow2_job *job)
{
	const struct qcow2_chain_opts *o = qfs_tree_chain_opts(l->tree);

	switch (l->kind) {
	case LIVE_SNAPSHOT:
		return qcow2_chain_snapshot_external_live(l->chain, l->arg, o, l->dry_run,
							  &l->plan);
	case LIVE_PULL:
		return qcow2_chain_pull_live(l->chain, l->arg, o, l->dry_run, job, &l->plan);
	default:
		return qcow2_chain_commit_live(l->chain, &l->co, o, job, &l->plan);
	}
}

/* A job that gives the chain another top (an external snapshot, an active commit) holds the
 * internal snapshots' lock (ctl-snapshot.c) throughout: their operations work on the top's
 * image, which stops being the top (its write side ended, or closed). The wait for it is
 * shown and cancellable. */
static int run_live(void *ctx, struct qcow2_job *job)
{
	struct live_job *l = ctx;
	bool moves = l->kind == LIVE_SNAPSHOT || (l->kind == LIVE_COMMIT && !l->co.top);
	int r = moves ? qfs_ctl_job_lock(job, qfs_ctl_snapshot_mutex()) : 0;

	if (r < 0)
		return r;
	r = run_job(l, job);
	if (moves)
		pthread_mutex_unlock(qfs_ctl_snapshot_mutex());
	return r;
}

/* The plan, one record per step. */
static void send_plan(struct qfs_ctl_req *req, const struct qcow2_plan *p)
{
	size_t i;

	for (i = 0; i < p->n; i++) {
		struct ctlp_rec rec = {0};

		ctlp_rec_add(&rec, "kind", "%d", (int)p->v[i].kind);
		ctlp_rec_add(&rec, "image", "%s", p->v[i].image);
		if (p->v[i].detail)
			ctlp_rec_add(&rec, "detail", "%s", p->v[i].detail);
		ctlp_rec_add(&rec, "bytes", "%llu", (unsigned long long)p->v[i].bytes);
		qfs_ctl_record(req, &rec);
		ctlp_rec_free(&rec);
	}
}

/* Run @l on the view that has IMAGE (argv[0]) on top, pinned as a writer meanwhile. */
static int run_on_view(struct qfs_ctl_req *req, struct live_job *l, const char *kind)
{
	struct qfs_ctl_job_spec spec = {.kind = kind, .run = run_live, .ctx = l};
	struct qfs_node *n;
	unsigned layer;
	int r;

	if (qfs_ctl_pin_image(req, l->image, true, &n, &layer, &l->chain) < 0)
		return 1;
	l->tree = req->tree;
	spec.images = l->image;
	r = qfs_ctl_job_run(req, &spec, false);
	if (r == 0 && !l->dry_run && !qcow2_chain_top_is(l->chain, l->image))
		qfs_tree_writers_moved(req->tree, n, l->chain,
				       l->image); /* a new top: our lock moved */
	if (r < 0)
		qfs_ctl_err(req, "%s", qcow2_last_error());
	else
		send_plan(req, &l->plan);
	if (r == 0 && !l->dry_run)
		qfs_log("%s of '%s' done live (uid %u)", kind, l->image, (unsigned)req->uid);
	qcow2_plan_release(&l->plan);
	qfs_tree_release(req->tree, n, l->chain, true);
	return r == 0 ? 0 : 1;
}

/* Options before the operands: --dry-run, --force, --top T, --base B, --pivot. @argc words
 * left in *@i on. 0, or 64 for a bad word. */
static int parse(struct qfs_ctl_req *req, struct live_job *l, int *i, bool *pivot)
{
	for (*i = 0; *i < req->argc && req->argv[*i][0] == '-'; (*i)++) {
		const char *w = req->argv[*i];

		if (!strcmp(w, "--dry-run"))
			l->dry_run = l->co.dry_run = true;
		else if (!strcmp(w, "--force"))
			l->co.force = true;
		else if (!strcmp(w, "--pivot"))
			*pivot = true;
		else if (!strcmp(w, "--top") && *i + 1 < req->argc)
			l->co.top = req->argv[++*i];
		else if (!strcmp(w, "--base") && *i + 1 < req->argc)
			l->co.base = req->argv[++*i];
		else
			return 64;
	}
	return 0;
}

/* live snapshot-external [--dry-run] IMAGE NEW */
static int h_snapshot(struct qfs_ctl_req *req)
{
	struct live_job l = {.kind = LIVE_SNAPSHOT};
	bool pivot = false;
	int i;

	if (parse(req, &l, &i, &pivot) || req->argc - i != 2)
		return 64;
	l.image = req->argv[i];
	l.arg = req->argv[i + 1];
	return run_on_view(req, &l, "snapshot-external");
}

/* live commit [--dry-run] [--force] [--top T] [--base B] [--pivot] IMAGE: an active commit
 * (no --top, or --top IMAGE) pivots to base and needs --pivot (offline, it empties IMAGE). */
static int h_commit(struct qfs_ctl_req *req)
{
	struct live_job l = {.kind = LIVE_COMMIT};
	bool pivot = false;
	int i;

	if (parse(req, &l, &i, &pivot) || req->argc - i != 1)
		return 64;
	l.image = req->argv[i];
	if (l.co.top && !strcmp(l.co.top, l.image))
		l.co.top = NULL;
	if (!l.co.top && !pivot) {
		qfs_ctl_err(
		    req,
		    "'%s' is served by a qcowfs mount: an active commit runs live only with "
		    "--pivot (the view then goes on with the base as its top; the file is "
		    "kept)",
		    l.image);
		return 1;
	}
	return run_on_view(req, &l, l.co.top ? "commit" : "commit-active");
}

/* live pull [--dry-run] [--base B] IMAGE */
static int h_pull(struct qfs_ctl_req *req)
{
	struct live_job l = {.kind = LIVE_PULL};
	bool pivot = false;
	int i;

	if (parse(req, &l, &i, &pivot) || req->argc - i != 1)
		return 64;
	l.image = req->argv[i];
	l.arg = l.co.base;
	return run_on_view(req, &l, "pull");
}

void qfs_live_register(void)
{
	qfs_ctl_register("live snapshot-external", h_snapshot);
	qfs_ctl_register("live commit", h_commit);
	qfs_ctl_register("live pull", h_pull);
}
