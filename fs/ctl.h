/* SPDX-License-Identifier: MIT */
/*
 * ctl.h - the control socket of a mount (ctl.c) as its handlers see it: a request (the
 * caller's words and identity), the output sink (records, text, progress), the jobs registry,
 * and the open view serving an image. The built-in handlers (status, serves, job list,
 * job cancel) live in ctl.c; others register from their own files (ctl-snapshot.c: snapshot
 * list|create|delete), which sit above ctl.c in fs/'s order and are registered by main.c.
 *
 * Output: a handler formats nothing that qcowctl prints for the same offline command: it
 * sends results (qfs_ctl_record(), "key=value" lines) that qcowctl's own formatter prints,
 * errors as one line each (qfs_ctl_err(), the library's message), progress, and returns the
 * exit status (qcowctl's enum: 0 ok, 1 failure). What exists only in the daemon (the status
 * of the mount, its jobs) is formatted here, once, for both qcowfs --status and qcowctl.
 *
 * Locking: the registry's lock (handlers, jobs) is a leaf, never held across a handler or a
 * send; a request's send_lock orders the frames of its threads (a foreground job's progress
 * and the handler) and is a leaf too. Handlers take fs/ locks only through the tree's
 * functions (qfs_tree_pin_file(), qfs_tree_each_open()), never holding a ctl lock.
 */
#ifndef QCOWFS_CTL_H
#define QCOWFS_CTL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "ctlproto.h"
#include "qcowfs.h"

struct qfs_ctl_job;

/* One request, alive while its handler runs (and, for a background job, until the job's
 * done callback: see qfs_ctl_job_run()). */
struct qfs_ctl_req {
	struct qfs_tree *tree;
	uid_t uid; /* the caller, as the kernel says (SO_PEERCRED) */
	gid_t gid;
	pid_t pid;
	int argc;    /* the operands, after the handler's name */
	char **argv; /* argv[argc] is NULL */
	/* below: ctl.c's */
	int fd;
	pthread_mutex_t send_lock;	 /* a leaf: orders frames of the handler and its job */
	bool gone;			 /* under send_lock: the client left, sends are dropped */
	uint64_t last_progress_ns;	 /* under send_lock */
	struct qfs_ctl_job *job;	 /* the foreground job, if any */
	struct qfs_ctl_req *next_active; /* ctl.c's list of requests alive (under its lock) */
};

/* A handler: runs in the request's own thread. Returns the command's exit status (0, or 1
 * after qfs_ctl_err()). */
typedef int (*qfs_ctl_handler)(struct qfs_ctl_req *req);

/* Register @h for the command @name ("snapshot create": the words qcowctl sends first; a
 * request is matched on its first two words, then its first). Call before qfs_ctl_start().
 * 0, or -ENOMEM / -EEXIST. */
int qfs_ctl_register(const char *name, qfs_ctl_handler h);

/* The output sink. Sends never block for more than the socket's send timeout; once the client
 * is gone they do nothing (its command goes on: a client that leaves cancels nothing). */
void qfs_ctl_record(struct qfs_ctl_req *req, const struct ctlp_rec *rec);
void qfs_ctl_out(struct qfs_ctl_req *req, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* One line for qcowctl's stderr, printed there as "qcowctl: MESSAGE". Also logged. */
void qfs_ctl_err(struct qfs_ctl_req *req, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void qfs_ctl_progress(struct qfs_ctl_req *req, uint64_t done, uint64_t total);

/* The open flat view serving the image at absolute @path (stat'ed: its dev and ino), pinned
 * as qfs_tree_pin_file() does (a writer if @write). On failure one line is sent to the client
 * naming why and a negative errno is returned. Release with qfs_tree_release(req->tree, *n,
 * *c, write). */
int qfs_ctl_pin_image(struct qfs_ctl_req *req, const char *path, bool write, struct qfs_node **n,
		      unsigned *layer, struct qcow2_chain **c);

/* A job: @run does the work, polling @job (its progress lands in the registry and, while the
 * client listens, in progress frames; its cancel is `qcowctl job cancel`, or the client's
 * interrupt for a foreground job); @done, unless NULL, runs once after it (release pins, free
 * @ctx) with run's result. */
struct qfs_ctl_job_spec {
	const char *kind;   /* "snapshot-create" */
	const char *images; /* the images it changes, for job list */
	int (*run)(void *ctx, struct qcow2_job *job);
	void (*done)(void *ctx, int r);
	void *ctx;
};
/* Run @spec as a job of the registry: in the request's thread (returns run's result, after
 * done), or with @background in a thread of its own (a record "job=ID" is sent to the client;
 * returns 0 once started; the daemon waits for it, cancelled, at unmount). Negative errno
 * when it cannot start (done is then called with it). */
int qfs_ctl_job_run(struct qfs_ctl_req *req, const struct qfs_ctl_job_spec *spec, bool background);

/* Inside a job's run: take @m, the job shown "waiting" meanwhile, and cancellable: a cancel
 * before @m is taken ends the wait with -ECANCELED ("cancelled before it began: nothing
 * changed"), @m not taken. 0 once @m is held. */
int qfs_ctl_job_lock(const struct qcow2_job *job, pthread_mutex_t *m);

/* Open the control socket of the mount of @t (its directory made 0700 if missing, the socket
 * 0600) and start accepting. Call once the daemon has its final pid (after fuse_daemonize()).
 * 0, or a negative errno after a line in the log (the mount works without its socket). */
int qfs_ctl_start(struct qfs_tree *t);
/* Stop: the socket removed, every job cancelled and waited for, every request finished. Safe
 * to call when qfs_ctl_start() failed or was never called. */
void qfs_ctl_stop(void);

/* ctl-snapshot.c: the lock its operations take: a live job that gives a chain another top
 * (live.c) holds it too, so no internal snapshot operation runs on an image that stops being
 * a top meanwhile. */
pthread_mutex_t *qfs_ctl_snapshot_mutex(void);
/* ctl-snapshot.c: register snapshot list|create|delete. */
void qfs_ctl_snapshot_register(void);

/* qcowfs --status MOUNTPOINT: ask the daemon serving @mount_point and print its status
 * (@json: as JSON). The exit status: 0, or 1 after one line on stderr. */
int qfs_ctl_status_client(const char *mount_point, bool json);

#endif
