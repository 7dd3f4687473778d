/* SPDX-License-Identifier: MIT */
/*
 * ctl.c - the mount's control socket (ctl.h): one Unix socket per mount, PID.sock in
 * /run/qcowfs (root) or $XDG_RUNTIME_DIR/qcowfs (a user's mount), mode 0600 in a 0700
 * directory; the peer of every connection checked (SO_PEERCRED: root or the mount's owner,
 * else refused with one line); one thread accepts, each request runs in a thread of its own;
 * the registry of handlers and of jobs; the built-in handlers (status, serves, job list,
 * job cancel). The frames are ctlproto.h's; docs/design.md, "The control socket", tells the
 * protocol.
 *
 * In fs/'s order (qcowfs.h) ctl.c sits above ops.c and below the handlers' files
 * (ctl-snapshot.c) and main.c: it calls the tree (qfs_tree_pin_file(), qfs_tree_each_open(),
 * qfs_tree_release()), and nothing below calls it.
 *
 * Never blocking for good on a client: a whole request must arrive within REQ_TIMEOUT_MS,
 * replies are sent with a send timeout (SO_SNDTIMEO) and MSG_NOSIGNAL, and a client that left
 * is noticed (a failed send) and no longer written to: its command goes on, it is not waited
 * on, and nothing is cancelled but what it asked to cancel (CTLP_CANCEL while its own
 * foreground job runs, or `job cancel`). At stop, every connection still open is shut down.
 *
 * Locking: reg_lock guards the jobs list, the list of requests alive and the counts of running
 * requests and jobs (with reg_cond to wait for them at stop); a leaf: no call is made and
 * nothing is sent under it (shutdown() of the requests' sockets aside, which does not block).
 * The handlers' table is filled before the accept thread starts and only read afterwards. A
 * request's send_lock (ctl.h) is a leaf as well. A job's done, total and cancel are atomics,
 * its state and error under reg_lock.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"
#include "log.h"

#define REQ_TIMEOUT_MS	  10000 /* the longest wait for a whole request */
#define SEND_TIMEOUT_S	  10	/* the longest wait for a client to take a reply frame */
#define MAX_HANDLERS	  64
#define MAX_FINISHED_JOBS 32 /* finished jobs kept for job list */
#define CANCEL_WAIT_S	  30 /* job cancel waits this long for the job to stop */

enum job_state { JOB_RUNNING, JOB_DONE, JOB_FAILED, JOB_CANCELLED, JOB_WAITING };
static const char *const state_names[] = {"running", "done", "failed", "cancelled", "waiting"};

struct qfs_ctl_job {
	unsigned id;
	char kind[32];
	char images[1024];
	struct qfs_ctl_job_spec spec;
	struct qfs_ctl_req *req; /* the client listening (NULL for a background job) */
	_Atomic uint64_t done, total;
	atomic_bool cancel;
	enum job_state state;	  /* under reg_lock */
	char error[512];	  /* under reg_lock: why it failed */
	struct qfs_ctl_job *next; /* under reg_lock */
};

static struct {
	const char *name;
	qfs_ctl_handler h;
} handlers[MAX_HANDLERS];
static size_t n_handlers;

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t reg_cond = PTHREAD_COND_INITIALIZER;
static struct qfs_ctl_job *jobs;   /* under reg_lock, newest first */
static unsigned next_job_id = 1;   /* under reg_lock */
static unsigned running;	   /* under reg_lock: requests and background jobs alive */
static struct qfs_ctl_req *active; /* under reg_lock: the requests alive, their fds open */

/* Set by qfs_ctl_start(), cleared by qfs_ctl_stop() (after the accept thread ended). */
static struct qfs_tree *ctl_tree;
static int listen_fd = -1, wake_pipe[2] = {-1, -1};
static char sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static pthread_t accept_thread;
static bool accepting;

int qfs_ctl_register(const char *name, qfs_ctl_handler h)
{
	size_t i;

	for (i = 0; i < n_handlers; i++)
		if (!strcmp(handlers[i].name, name))
			return -EEXIST;
	if (n_handlers == MAX_HANDLERS)
		return -ENOMEM;
	handlers[n_handlers].name = name;
	handlers[n_handlers++].h = h;
	return 0;
}

static qfs_ctl_handler find_handler(int argc, char **argv, int *words)
{
	char two[256];
	size_t i;

	if (argc >= 2) {
		snprintf(two, sizeof(two), "%s %s", argv[0], argv[1]);
		for (i = 0; i < n_handlers; i++)
			if (!strcmp(handlers[i].name, two)) {
				*words = 2;
				return handlers[i].h;
			}
	}
	for (i = 0; argc >= 1 && i < n_handlers; i++)
		if (!strcmp(handlers[i].name, argv[0])) {
			*words = 1;
			return handlers[i].h;
		}
	return NULL;
}

/* ---- the output sink ---- */

static void send_frame(struct qfs_ctl_req *req, enum ctlp_type type, const void *p, size_t len)
{
	pthread_mutex_lock(&req->send_lock);
	if (!req->gone && ctlp_send(req->fd, type, p, len) < 0)
		req->gone = true; /* the client left (or stalled past the timeout) */
	pthread_mutex_unlock(&req->send_lock);
}

void qfs_ctl_record(struct qfs_ctl_req *req, const struct ctlp_rec *rec)
{
	send_frame(req, CTLP_RECORD, rec->buf ? rec->buf : "", rec->len);
}

void qfs_ctl_out(struct qfs_ctl_req *req, const char *fmt, ...)
{
	char *s = NULL;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n >= 0)
		send_frame(req, CTLP_OUT, s, (size_t)n);
	free(s);
}

void qfs_ctl_err(struct qfs_ctl_req *req, const char *fmt, ...)
{
	char line[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	qfs_log("control: uid %u: %s%s%s: %s", (unsigned)req->uid, req->argv[-1],
		req->argc ? " " : "", req->argc ? req->argv[0] : "", line);
	send_frame(req, CTLP_ERR, line, strlen(line));
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void qfs_ctl_progress(struct qfs_ctl_req *req, uint64_t done, uint64_t total)
{
	uint8_t p[16];
	uint64_t t = now_ns();
	int i;

	pthread_mutex_lock(&req->send_lock);
	/* at most ten a second, and the last one */
	if (done < total && t - req->last_progress_ns < 100000000u) {
		pthread_mutex_unlock(&req->send_lock);
		return;
	}
	req->last_progress_ns = t;
	for (i = 0; i < 8; i++) {
		p[i] = (uint8_t)(done >> (56 - 8 * i));
		p[8 + i] = (uint8_t)(total >> (56 - 8 * i));
	}
	if (!req->gone && ctlp_send(req->fd, CTLP_PROGRESS, p, sizeof(p)) < 0)
		req->gone = true;
	pthread_mutex_unlock(&req->send_lock);
}

int qfs_ctl_pin_image(struct qfs_ctl_req *req, const char *path, bool write, struct qfs_node **n,
		      unsigned *layer, struct qcow2_chain **c)
{
	struct stat st;
	int r;

	if (path[0] != '/' || stat(path, &st) < 0) {
		r = path[0] != '/' ? -EINVAL : -errno;
		qfs_ctl_err(req, "'%s': %s", path, strerror(-r));
		return r;
	}
	r = qfs_tree_pin_file(req->tree, st.st_dev, st.st_ino, write, n, layer, c);
	if (r == -EROFS &&
	    qfs_tree_pin_file(req->tree, st.st_dev, st.st_ino, false, n, layer, c) == 0) {
		qfs_tree_release(req->tree, *n, *c, false);
		if (*layer)
			qfs_ctl_err(req,
				    "'%s' cannot be changed live: it is a backing layer of an open "
				    "view (read-only while the view is open)",
				    path);
		else
			qfs_ctl_err(req,
				    "'%s' cannot be changed live: the mount serves it read-only",
				    path);
	} else if (r == -ENOENT || r == -EROFS) {
		qfs_ctl_err(req, "'%s' is not served by this mount (no view of it is open)", path);
	} else if (r < 0)
		qfs_ctl_err(req, "%s", qcow2_last_error());
	return r;
}

/* ---- jobs ---- */

static void job_progress(void *ctx, uint64_t done, uint64_t total)
{
	struct qfs_ctl_job *j = ctx;

	atomic_store(&j->done, done);
	atomic_store(&j->total, total);
	if (j->req)
		qfs_ctl_progress(j->req, done, total);
}

/* A foreground job's client may send CTLP_CANCEL (its interrupt): read without waiting. A
 * client that left cancels nothing. */
static bool client_cancelled(struct qfs_ctl_req *req)
{
	uint8_t hdr[5];
	ssize_t n = recv(req->fd, hdr, sizeof(hdr), MSG_DONTWAIT);

	return n == (ssize_t)sizeof(hdr) && hdr[0] == CTLP_CANCEL;
}

static bool job_cancelled(void *ctx)
{
	struct qfs_ctl_job *j = ctx;

	if (!atomic_load(&j->cancel) && j->req && client_cancelled(j->req))
		atomic_store(&j->cancel, true);
	return atomic_load(&j->cancel);
}

/* Drop finished jobs beyond MAX_FINISHED_JOBS (reg_lock held). */
static void prune_jobs(void)
{
	struct qfs_ctl_job **pp = &jobs, *j;
	unsigned kept = 0;

	while ((j = *pp)) {
		if (j->state != JOB_RUNNING && j->state != JOB_WAITING &&
		    ++kept > MAX_FINISHED_JOBS) {
			*pp = j->next;
			free(j);
			continue;
		}
		pp = &j->next;
	}
}

static void set_state(struct qfs_ctl_job *j, enum job_state st)
{
	pthread_mutex_lock(&reg_lock);
	j->state = st;
	pthread_mutex_unlock(&reg_lock);
}

int qfs_ctl_job_lock(const struct qcow2_job *job, pthread_mutex_t *m)
{
	struct qfs_ctl_job *j = job->ctx;
	struct timespec ts;

	set_state(j, JOB_WAITING);
	for (;;) {
		if (job_cancelled(j)) { /* before each try: a cancel already sent wins */
			set_state(j, JOB_RUNNING);
			return qcow2_set_error(-ECANCELED,
					       "cancelled before it began: nothing changed");
		}
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 50000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		if (pthread_mutex_timedlock(m, &ts) == 0)
			break;
	}
	set_state(j, JOB_RUNNING);
	return 0;
}

/* Run job @j to its end, record the outcome and call its done callback. */
static int job_body(struct qfs_ctl_job *j)
{
	struct qcow2_job qj = {.progress = job_progress, .cancelled = job_cancelled, .ctx = j};
	/* once finished, @j may be freed by a newer job's prune_jobs(): what follows is copied */
	void (*done)(void *ctx, int r) = j->spec.done;
	void *ctx = j->spec.ctx;
	int r;

	qcow2_clear_error();
	r = j->spec.run(ctx, &qj);
	pthread_mutex_lock(&reg_lock);
	j->state = r == 0 ? JOB_DONE : atomic_load(&j->cancel) ? JOB_CANCELLED : JOB_FAILED;
	if (r < 0)
		snprintf(j->error, sizeof(j->error), "%s",
			 qcow2_last_error()[0] ? qcow2_last_error() : strerror(-r));
	j->req = NULL;
	pthread_cond_broadcast(&reg_cond);
	pthread_mutex_unlock(&reg_lock);
	if (done)
		done(ctx, r);
	return r;
}

static void *job_thread(void *arg)
{
	job_body(arg);
	pthread_mutex_lock(&reg_lock);
	running--;
	pthread_cond_broadcast(&reg_cond);
	pthread_mutex_unlock(&reg_lock);
	return NULL;
}

int qfs_ctl_job_run(struct qfs_ctl_req *req, const struct qfs_ctl_job_spec *spec, bool background)
{
	struct qfs_ctl_job *j = calloc(1, sizeof(*j));
	struct ctlp_rec rec = {0};
	pthread_attr_t attr;
	pthread_t th;
	unsigned id;
	int r;

	if (!j) {
		if (spec->done)
			spec->done(spec->ctx, -ENOMEM);
		return -ENOMEM;
	}
	j->spec = *spec;
	snprintf(j->kind, sizeof(j->kind), "%s", spec->kind);
	snprintf(j->images, sizeof(j->images), "%s", spec->images ? spec->images : "");
	j->req = background ? NULL : req;
	pthread_mutex_lock(&reg_lock);
	j->id = id = next_job_id++;
	j->next = jobs;
	jobs = j;
	prune_jobs();
	if (background)
		running++;
	pthread_mutex_unlock(&reg_lock);
	if (!background)
		return job_body(j);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	r = -pthread_create(&th, &attr, job_thread, j);
	pthread_attr_destroy(&attr);
	if (r < 0) {
		pthread_mutex_lock(&reg_lock);
		j->state = JOB_FAILED;
		snprintf(j->error, sizeof(j->error), "cannot start: %s", strerror(-r));
		running--;
		pthread_cond_broadcast(&reg_cond);
		pthread_mutex_unlock(&reg_lock);
		if (spec->done)
			spec->done(spec->ctx, r);
		return qcow2_set_error(r, "cannot start the job: %s", strerror(-r));
	}
	ctlp_rec_add(&rec, "job", "%d-%u", (int)getpid(), id); /* @j may be gone already */
	qfs_ctl_record(req, &rec);
	ctlp_rec_free(&rec);
	return 0;
}

/* ---- built-in handlers ---- */

/* Does @arg equal @opt, an option among the operands? */
static bool has_opt(const struct qfs_ctl_req *req, const char *opt)
{
	for (int i = 0; i < req->argc; i++)
		if (!strcmp(req->argv[i], opt))
			return true;
	return false;
}

/* serves DEV INO: exit 0 when an open view of this mount reads that file, else 3. */
static int h_serves(struct qfs_ctl_req *req)
{
	struct qcow2_chain *c;
	struct qfs_node *n;
	unsigned layer;
	unsigned long long dev, ino;

	if (req->argc != 2 || sscanf(req->argv[0], "%llu", &dev) != 1 ||
	    sscanf(req->argv[1], "%llu", &ino) != 1) {
		qfs_ctl_err(req, "serves takes DEV INO");
		return 64;
	}
	if (qfs_tree_pin_file(req->tree, (dev_t)dev, (ino_t)ino, false, &n, &layer, &c) < 0)
		return 3;
	qfs_tree_release(req->tree, n, c, false);
	return 0;
}

/* The status: text or JSON, built into a buffer and sent as one CTLP_OUT frame. */
struct status {
	char *buf;
	size_t len;
	FILE *f;
	bool json;
	unsigned n;
};

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

static void status_view(void *ctx, const struct qfs_node *n, const char *src, const char *snap)
{
	struct status *s = ctx;

	if (s->json) {
		fprintf(s->f, "%s\n    {\"view\": ", s->n++ ? "," : "");
		json_str(s->f, n->rel);
		fprintf(s->f, ", \"image\": ");
		json_str(s->f, src);
		if (snap) {
			fprintf(s->f, ", \"snapshot\": ");
			json_str(s->f, snap);
		}
		fprintf(s->f, ", \"handles\": %u, \"writers\": %u}", n->opens + n->moved_opens,
			n->writers + n->moved_writers);
	} else {
		fprintf(s->f, "  view %s: %u open, %u writing (%s%s%s)\n", n->rel,
			n->opens + n->moved_opens, n->writers + n->moved_writers, src,
			snap ? ", snapshot " : "", snap ? snap : "");
	}
}

static void status_jobs(struct status *s)
{
	struct qfs_ctl_job *j;
	unsigned n = 0;

	pthread_mutex_lock(&reg_lock);
	for (j = jobs; j; j = j->next) {
		uint64_t done = atomic_load(&j->done), total = atomic_load(&j->total);

		if (s->json) {
			fprintf(s->f, "%s\n    {\"id\": \"%d-%u\", \"kind\": ", n++ ? "," : "",
				(int)getpid(), j->id);
			json_str(s->f, j->kind);
			fprintf(s->f,
				", \"state\": \"%s\", \"done\": %" PRIu64 ", \"total\": %" PRIu64
				", \"images\": ",
				state_names[j->state], done, total);
			json_str(s->f, j->images);
			if (j->state == JOB_FAILED || j->state == JOB_CANCELLED) {
				fprintf(s->f, ", \"error\": ");
				json_str(s->f, j->error);
			}
			fprintf(s->f, "}");
		} else if (j->state == JOB_RUNNING || j->state == JOB_WAITING) {
			fprintf(s->f, "  job %d-%u: %s of %s, %s, %.1f%%\n", (int)getpid(), j->id,
				j->kind, j->images, state_names[j->state],
				total ? 100.0 * (double)done / (double)total : 0);
		}
	}
	pthread_mutex_unlock(&reg_lock);
}

/* status [--json] [MOUNTPOINT]: this mount's status; exit 3 when MOUNTPOINT is given and is
 * not this mount's (qcowfs --status asks every daemon). */
static int h_status(struct qfs_ctl_req *req)
{
	const char *mnt = qfs_tree_mount_point(req->tree);
	struct status s = {.json = has_opt(req, "--json")};
	char canon[PATH_MAX];

	for (int i = 0; i < req->argc; i++)
		if (req->argv[i][0] != '-' &&
		    (!realpath(req->argv[i], canon) || strcmp(canon, mnt)))
			return 3;
	s.f = open_memstream(&s.buf, &s.len);
	if (!s.f) {
		qfs_ctl_err(req, "out of memory");
		return 1;
	}
	if (s.json) {
		fprintf(s.f, "{\"pid\": %d, \"source\": ", (int)getpid());
		json_str(s.f, qfs_tree_source(req->tree));
		fprintf(s.f, ", \"mount-point\": ");
		json_str(s.f, mnt);
		fprintf(s.f, ", \"owner\": %u, \"read-only\": %s, \"socket\": ", (unsigned)getuid(),
			qfs_tree_read_only(req->tree) ? "true" : "false");
		json_str(s.f, sock_path);
		fprintf(s.f, ",\n  \"views\": [");
		qfs_tree_each_open(req->tree, status_view, &s);
		fprintf(s.f, "%s],\n  \"jobs\": [", s.n ? "\n  " : "");
		s.n = 0;
		status_jobs(&s);
		fprintf(s.f, "%s]}", s.n ? "\n  " : "");
	} else {
		fprintf(s.f, "qcowfs pid %d: %s on %s, owner uid %u%s\n", (int)getpid(),
			qfs_tree_source(req->tree), mnt, (unsigned)getuid(),
			qfs_tree_read_only(req->tree) ? ", read-only" : "");
		qfs_tree_each_open(req->tree, status_view, &s);
		status_jobs(&s);
	}
	fclose(s.f);
	send_frame(req, CTLP_OUT, s.buf, s.len);
	free(s.buf);
	return 0;
}

/* job list [--json]: the rows of this daemon's jobs (qcowctl prints the header, and the
 * brackets of the JSON array around every daemon's objects). */
static int h_job_list(struct qfs_ctl_req *req)
{
	struct status s = {.json = has_opt(req, "--json")};
	struct qfs_ctl_job *j;
	char id[32];

	if (!s.json) {
		s.f = open_memstream(&s.buf, &s.len);
		if (!s.f)
			return 1;
		pthread_mutex_lock(&reg_lock);
		for (j = jobs; j; j = j->next) {
			uint64_t done = atomic_load(&j->done), total = atomic_load(&j->total);

			snprintf(id, sizeof(id), "%d-%u", (int)getpid(), j->id);
			fprintf(s.f, CTLP_JOB_ROW_FMT, id, j->kind, state_names[j->state],
				total		       ? 100.0 * (double)done / (double)total
				: j->state == JOB_DONE ? 100.0
						       : 0.0,
				j->images);
		}
		pthread_mutex_unlock(&reg_lock);
	} else {
		s.f = open_memstream(&s.buf, &s.len);
		if (!s.f)
			return 1;
		status_jobs(&s);
	}
	fclose(s.f);
	if (s.len)
		send_frame(req, CTLP_OUT, s.buf, s.len);
	free(s.buf);
	return 0;
}

/* job cancel ID (PID-N): cancel the job and wait (CANCEL_WAIT_S at most) for it to stop at a
 * safe point. Exit 3: not a job of this daemon. */
static int h_job_cancel(struct qfs_ctl_req *req)
{
	struct qfs_ctl_job *j;
	struct timespec until;
	int pid = 0, r = 0;
	unsigned id = 0;
	char tail;

	if (req->argc != 1 || sscanf(req->argv[0], "%d-%u%c", &pid, &id, &tail) != 2 ||
	    pid != (int)getpid())
		return 3;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += CANCEL_WAIT_S;
	pthread_mutex_lock(&reg_lock);
	for (j = jobs; j && j->id != id; j = j->next)
		;
	if (j && (j->state == JOB_RUNNING || j->state == JOB_WAITING)) {
		atomic_store(&j->cancel, true);
		while ((j->state == JOB_RUNNING || j->state == JOB_WAITING) && r != ETIMEDOUT)
			r = pthread_cond_timedwait(&reg_cond, &reg_lock, &until);
	}
	pthread_mutex_unlock(&reg_lock);
	/* j stays valid: finished jobs are freed only by prune_jobs() of a newer job, and its
	 * fields are read again under the lock below */
	pthread_mutex_lock(&reg_lock);
	for (j = jobs; j && j->id != id; j = j->next)
		;
	if (!j) {
		pthread_mutex_unlock(&reg_lock);
		qfs_ctl_err(req, "no job %s", req->argv[0]);
		return 1;
	}
	r = j->state;
	pthread_mutex_unlock(&reg_lock);
	if (r == JOB_RUNNING || r == JOB_WAITING) {
		qfs_ctl_err(req, "job %s: still stopping after %d s", req->argv[0], CANCEL_WAIT_S);
		return 1;
	}
	qfs_ctl_out(req, "job %s: %s\n", req->argv[0], state_names[r]);
	return 0;
}

/* ---- the socket ---- */

/* May the peer of @fd talk to this mount? Fills @req's identity. 0, or -EACCES after the
 * one-line refusal is sent. */
static int check_peer(struct qfs_ctl_req *req)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	char line[256];

	if (getsockopt(req->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return -errno;
	req->uid = cred.uid;
	req->gid = cred.gid;
	req->pid = cred.pid;
	if (cred.uid == 0 || cred.uid == getuid())
		return 0;
	snprintf(line, sizeof(line),
		 "permission denied: uid %u may not control this mount (only root and its "
		 "owner, uid %u)",
		 (unsigned)cred.uid, (unsigned)getuid());
	qfs_log("control: %s", line);
	ctlp_send_str(req->fd, CTLP_ERR, line);
	ctlp_send(req->fd, CTLP_EXIT, "\0\0\0\1", 4);
	return -EACCES;
}

/* Read the request's words, all of them within REQ_TIMEOUT_MS (a client dripping frames
 * does not keep a thread for ever). 0 or a negative errno. */
static int read_request(struct qfs_ctl_req *req, char **words, int *n)
{
	uint64_t deadline = now_ns() + (uint64_t)REQ_TIMEOUT_MS * 1000000u, t;
	char type, *p;
	size_t len;
	int r;

	*n = 0;
	for (;;) {
		t = now_ns();
		if (t >= deadline)
			return -ETIMEDOUT;
		r = ctlp_recv(req->fd, (int)((deadline - t) / 1000000u) + 1, &type, &p, &len);
		if (r < 0)
			return r;
		if (type == CTLP_END) {
			free(p);
			words[*n] = NULL;
			return *n ? 0 : -EPROTO;
		}
		if (type != CTLP_ARG || *n == CTLP_MAX_ARGS || strlen(p) != len) {
			free(p);
			return -EPROTO;
		}
		words[(*n)++] = p;
	}
}

static void *request_thread(void *arg)
{
	struct qfs_ctl_req *req = arg;
	struct timeval tv = {.tv_sec = SEND_TIMEOUT_S};
	char *words[CTLP_MAX_ARGS + 1];
	qfs_ctl_handler h = NULL;
	struct qfs_ctl_req **pp;
	int n = 0, skip = 0, status = 1;
	uint8_t be[4];

	setsockopt(req->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (check_peer(req) == 0 && read_request(req, words, &n) == 0) {
		h = find_handler(n, words, &skip);
		req->argc = n - skip;
		req->argv = words + skip;
		if (h) {
			status = h(req);
		} else {
			req->argv = words + 1; /* qfs_ctl_err() names the command */
			req->argc = 0;
			qfs_ctl_err(req, "the daemon cannot run '%s%s%s' live", words[0],
				    n > 1 ? " " : "", n > 1 ? words[1] : "");
		}
		be[0] = (uint8_t)(status >> 24);
		be[1] = (uint8_t)(status >> 16);
		be[2] = (uint8_t)(status >> 8);
		be[3] = (uint8_t)status;
		send_frame(req, CTLP_EXIT, be, 4);
	}
	while (n)
		free(words[--n]);
	pthread_mutex_lock(&reg_lock);
	for (pp = &active; *pp != req; pp = &(*pp)->next_active)
		;
	*pp = req->next_active;
	running--;
	pthread_cond_broadcast(&reg_cond);
	pthread_mutex_unlock(&reg_lock);
	close(req->fd); /* after leaving the list: qfs_ctl_stop() shuts down only open fds */
	pthread_mutex_destroy(&req->send_lock);
	free(req);
	return NULL;
}

static void start_request(int fd)
{
	struct qfs_ctl_req *req = calloc(1, sizeof(*req));
	pthread_attr_t attr;
	pthread_t th;

	if (!req) {
		close(fd);
		return;
	}
	req->fd = fd;
	req->tree = ctl_tree;
	pthread_mutex_init(&req->send_lock, NULL);
	pthread_mutex_lock(&reg_lock);
	running++;
	req->next_active = active;
	active = req;
	pthread_mutex_unlock(&reg_lock);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&th, &attr, request_thread, req) != 0) {
		pthread_mutex_lock(&reg_lock);
		active = req->next_active; /* still first: the list changes only here and in
					    * request threads, and this one never started */
		running--;
		pthread_mutex_unlock(&reg_lock);
		close(fd);
		pthread_mutex_destroy(&req->send_lock);
		free(req);
	}
	pthread_attr_destroy(&attr);
}

static void *accept_loop(void *arg)
{
	struct pollfd pf[2] = {{.fd = listen_fd, .events = POLLIN},
			       {.fd = wake_pipe[0], .events = POLLIN}};

	(void)arg;
	for (;;) {
		int fd;

		if (poll(pf, 2, -1) < 0 && errno != EINTR)
			break;
		if (pf[1].revents)
			break;
		if (!(pf[0].revents & POLLIN))
			continue;
		fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0)
			start_request(fd);
	}
	return NULL;
}

/* The sockets' directory: made 0700 if missing; it must be a directory of ours that nobody
 * else may enter or write (else a socket put in it could be swapped). */
static int make_dir(const char *dir)
{
	struct stat st;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	if (lstat(dir, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode) || st.st_uid != getuid() || (st.st_mode & 0077)) {
		qfs_log("control socket: '%s' is not a directory of uid %u closed to others: no "
			"control socket",
			dir, (unsigned)getuid());
		return -EPERM;
	}
	return 0;
}

static void remove_socket(void)
{
	if (sock_path[0])
		unlink(sock_path);
}

int qfs_ctl_start(struct qfs_tree *t)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char dir[sizeof(sa.sun_path)];
	int r, n;

	qfs_ctl_register("serves", h_serves);
	qfs_ctl_register("status", h_status);
	qfs_ctl_register("job list", h_job_list);
	qfs_ctl_register("job cancel", h_job_cancel);
	r = ctlp_dir(getuid(), dir, sizeof(dir) - 16);
	if (r == 0)
		r = make_dir(dir);
	if (r < 0) {
		qfs_log("control socket: cannot use '%s': %s", dir, strerror(-r));
		return r;
	}
	n = snprintf(sock_path, sizeof(sock_path), "%s/%d.sock", dir, (int)getpid());
	if (n < 0 || (size_t)n >= sizeof(sock_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, sock_path);
	unlink(sock_path); /* a stale socket of a dead daemon that had our pid */
	listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    chmod(sock_path, 0600) < 0 || listen(listen_fd, 16) < 0 ||
	    pipe2(wake_pipe, O_CLOEXEC) < 0) {
		r = -errno;
		qfs_log("control socket '%s': %s", sock_path, strerror(-r));
		qfs_ctl_stop();
		return r;
	}
	atexit(remove_socket); /* exit() on any path removes it; SIGKILL: the next lister */
	ctl_tree = t;
	r = -pthread_create(&accept_thread, NULL, accept_loop, NULL);
	if (r < 0) {
		qfs_ctl_stop();
		return r;
	}
	accepting = true;
	return 0;
}

void qfs_ctl_stop(void)
{
	struct qfs_ctl_job *j;

	if (accepting) {
		if (write(wake_pipe[1], "x", 1) < 0)
			qfs_log("control socket: cannot stop its thread: %s", strerror(errno));
		pthread_join(accept_thread, NULL);
		accepting = false;
	}
	remove_socket();
	sock_path[0] = '\0';
	if (listen_fd >= 0)
		close(listen_fd);
	listen_fd = -1;
	for (int i = 0; i < 2; i++) {
		if (wake_pipe[i] >= 0)
			close(wake_pipe[i]);
		wake_pipe[i] = -1;
	}
	/* the session has ended: cancel every job, wait for them and for every request (each
	 * bounded: jobs stop at their next safe point, sends time out) */
	pthread_mutex_lock(&reg_lock);
	for (j = jobs; j; j = j->next)
		atomic_store(&j->cancel, true);
	/* a client still sending its request, or reading a reply, is not waited for: its
	 * connection is shut down (its fd stays open until its thread leaves the list) */
	for (struct qfs_ctl_req *q = active; q; q = q->next_active)
		shutdown(q->fd, SHUT_RDWR);
	while (running)
		pthread_cond_wait(&reg_cond, &reg_lock);
	while ((j = jobs)) {
		jobs = j->next;
		free(j);
	}
	pthread_mutex_unlock(&reg_lock);
	ctl_tree = NULL;
}

/* ---- qcowfs --status ---- */

struct status_call {
	const char *mount_point;
	bool json;
	int status;
};

static void print_frame(void *ctx, char type, const char *p, size_t len)
{
	if (type == CTLP_OUT)
		fwrite(p, 1, len, stdout);
	else if (type == CTLP_ERR)
		fprintf(stderr, "qcowfs: %s\n", p);
}

static int ask_status(void *ctx, const char *path, pid_t pid)
{
	struct status_call *c = ctx;
	char *argv[3] = {"status", (char *)c->mount_point, "--json"};
	int fd = ctlp_connect(path, REQ_TIMEOUT_MS), r;

	(void)pid;
	if (fd < 0)
		return 0;
	r = ctlp_call(fd, c->json ? 3 : 2, argv, REQ_TIMEOUT_MS, print_frame, NULL, NULL);
	close(fd);
	if (r == 3 || r < 0)
		return 0; /* not this one, or it did not answer: ask the next */
	c->status = r;
	return 1;
}

int qfs_ctl_status_client(const char *mount_point, bool json)
{
	struct status_call c = {.json = json, .status = 1};
	char canon[PATH_MAX];

	if (!realpath(mount_point, canon)) {
		fprintf(stderr, "qcowfs: --status '%s': %s\n", mount_point, strerror(errno));
		return 1;
	}
	c.mount_point = canon;
	if (!ctlp_each_socket(getuid(), ask_status, &c)) {
		fprintf(stderr, "qcowfs: --status '%s': no qcowfs mount there answers\n",
			mount_point);
		return 1;
	}
	if (json)
		putchar('\n');
	return c.status;
}
