/* SPDX-License-Identifier: MIT */
/*
 * ctl.c - qcowctl's side of the control socket (ctlproto.h): forwarding a command to the qcowfs
 * daemon that holds its image (found by asking each mount's socket whether an open view of it
 * reads that file, by device and inode), `qcowctl mounts`, `qcowctl job list|cancel`, and
 * --offline, which forces the refusal instead.
 *
 * The daemon sends results (records), not text, for what qcowctl prints offline: the command's
 * own formatter prints both (cmd-snapshot.c). What only a daemon knows (its status, its jobs)
 * the daemon formats; mounts and job list print it as it comes.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ctlproto.h"
#include "qcowctl.h"

#define ASK_TIMEOUT_MS 10000 /* a daemon that does not answer a question in time is skipped */

static bool offline;

/* The commands that may be forwarded: their first two words. */
static const char *const forwardable[] = {"snapshot list", "snapshot create", "snapshot delete",
					  "snapshot apply"};

static bool is_forwardable(int argc, char **argv)
{
	char two[128];
	size_t i;

	/* commit and pull run live in the daemon (live.c) */
	if (argc >= 2 && (!strcmp(argv[1], "commit") || !strcmp(argv[1], "pull")))
		return true;
	if (argc < 3)
		return false;
	if (!strcmp(argv[1], "snapshot") && argv[2][0] == '-' && strcmp(argv[2], "--"))
		return true; /* qemu-img's spelling: -l, -c, -a, -d */
	snprintf(two, sizeof(two), "%s %s", argv[1], argv[2]);
	for (i = 0; i < sizeof(forwardable) / sizeof(forwardable[0]); i++)
		if (!strcmp(two, forwardable[i]))
			return true;
	return false;
}

int ctl_take_offline(int argc, char **argv)
{
	int i, j;

	if (!is_forwardable(argc, argv))
		return argc;
	for (i = j = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--"))
			break;
		if (!strcmp(argv[i], "--offline"))
			offline = true;
		else
			argv[j++] = argv[i];
	}
	for (; i < argc; i++)
		argv[j++] = argv[i];
	argv[j] = NULL;
	return j;
}

/* ---- finding the daemon ---- */

struct find {
	char args[2][32]; /* dev, ino */
	uid_t owner;	  /* the image's */
	char path[PATH_MAX];
};

/* May a command on an image owned by @owner be run by the daemon at the other end of @fd? Its
 * uid (the kernel's word) must be root's, this user's or the image's owner's: a daemon of
 * another user (root asks every user's mounts) could say it serves and has done anything. */
static bool may_forward_to(int fd, uid_t owner)
{
	uid_t uid;
	pid_t pid;

	return ctlp_peer(fd, &uid, &pid) == 0 && (uid == 0 || uid == getuid() || uid == owner);
}

static void ignore_frame(void *ctx, char type, const char *p, size_t len)
{
}

static int ask_serves(void *ctx, const char *path, pid_t pid)
{
	struct find *f = ctx;
	char *argv[3] = {"serves", f->args[0], f->args[1]};
	int fd = ctlp_connect(path, ASK_TIMEOUT_MS), r;

	if (fd < 0)
		return 0;
	if (!may_forward_to(fd, f->owner)) {
		close(fd);
		return 0;
	}
	r = ctlp_call(fd, 3, argv, ASK_TIMEOUT_MS, ignore_frame, NULL, NULL);
	close(fd);
	if (r != 0)
		return 0;
	snprintf(f->path, sizeof(f->path), "%s", path);
	return 1;
}

/* ---- a forwarded call ---- */

struct call {
	void (*record)(void *ctx, const char *rec);
	void *ctx;
	struct progress *progress;
};

static void on_frame(void *ctx, char type, const char *p, size_t len)
{
	struct call *c = ctx;
	uint64_t done = 0, total = 0;
	int i;

	switch (type) {
	case CTLP_OUT:
		fwrite(p, 1, len, stdout);
		break;
	case CTLP_ERR:
		error("%s", p);
		break;
	case CTLP_RECORD:
		if (c->record)
			c->record(c->ctx, p);
		break;
	case CTLP_PROGRESS:
		if (len != 16 || !c->progress)
			break;
		for (i = 0; i < 8; i++) {
			done = done << 8 | (uint8_t)p[i];
			total = total << 8 | (uint8_t)p[8 + i];
		}
		progress_update(c->progress, done, total);
		break;
	default:
		break;
	}
}

int ctl_forward(const char *image, int argc, char **argv,
		void (*record)(void *ctx, const char *rec), void *ctx, struct progress *p)
{
	struct call c = {record, ctx, p};
	struct find f;
	struct stat st;
	int fd, r;

	if (offline || stat(image, &st) < 0)
		return -1;
	snprintf(f.args[0], sizeof(f.args[0]), "%llu", (unsigned long long)st.st_dev);
	snprintf(f.args[1], sizeof(f.args[1]), "%llu", (unsigned long long)st.st_ino);
	f.owner = st.st_uid;
	if (!ctlp_each_socket(getuid(), ask_serves, &f))
		return -1; /* no mount serves it: the holder is someone else (a VM, qemu-io) */
	fd = ctlp_connect(f.path, ASK_TIMEOUT_MS);
	if (fd >= 0 && !may_forward_to(fd, f.owner)) { /* another process on that name now */
		close(fd);
		fd = -EPERM;
	}
	if (fd < 0) {
		error("cannot reach the qcowfs daemon serving '%s' (%s): %s", image, f.path,
		      strerror(-fd));
		return EXIT_FAIL;
	}
	catch_interrupts(); /* an interrupt asks the daemon to cancel, as offline */
	r = ctlp_call(fd, argc, argv, -1, on_frame, &c, was_interrupted);
	close(fd);
	if (p)
		progress_end(p);
	if (r < 0) {
		error("the qcowfs daemon serving '%s' stopped answering: %s", image, strerror(-r));
		return EXIT_FAIL;
	}
	return r;
}

/* ---- qcowctl mounts, job list, job cancel ---- */

struct each {
	char **argv;
	int argc;
	bool json;
	unsigned n;
	int status;
};

static void print_frame(void *ctx, char type, const char *p, size_t len)
{
	struct each *e = ctx;

	if (type == CTLP_OUT) {
		if (e->json && e->n++)
			fputs(",\n", stdout);
		fwrite(p, 1, len, stdout);
	} else if (type == CTLP_ERR) {
		error("%s", p);
	}
}

static int ask_each(void *ctx, const char *path, pid_t pid)
{
	struct each *e = ctx;
	int fd = ctlp_connect(path, ASK_TIMEOUT_MS), r;

	if (fd < 0) {
		error("the qcowfs daemon pid %d does not answer on '%s': %s", (int)pid, path,
		      strerror(-fd));
		e->status = EXIT_FAIL;
		return 0;
	}
	r = ctlp_call(fd, e->argc, e->argv, ASK_TIMEOUT_MS, print_frame, e, NULL);
	close(fd);
	if (r < 0) {
		error("the qcowfs daemon pid %d does not answer on '%s': %s", (int)pid, path,
		      strerror(-r));
		e->status = EXIT_FAIL;
	} else if (r != 0) {
		e->status = r;
	}
	return 0;
}

static void mounts_usage(FILE *f)
{
	fprintf(f, "usage: qcowctl mounts [--json]\n\n"
		   "Every qcowfs mount this user may control (root: every mount), asked on its\n"
		   "control socket: its pid, source, mount point and owner, the views open (with\n"
		   "their writers) and its jobs.\n\n"
		   "  --json      one JSON array, an object per mount\n"
		   "  -h, --help  this text\n");
}

int cmd_mounts(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"json", no_argument, NULL, OPT_JSON},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	char *words[2] = {"status", "--json"};
	struct each e = {.argv = words, .argc = 1};
	int c;

	while ((c = next_option(argc, argv, "h", longopts, "mounts")) != -1) {
		if (c == 'h') {
			mounts_usage(stdout);
			return EXIT_OK;
		}
		if (c != OPT_JSON)
			return EXIT_USAGE;
		e.json = true;
		e.argc = 2;
	}
	if (optind != argc)
		return usage_error("mounts", "takes no operand");
	if (e.json)
		fputs("[", stdout);
	ctlp_each_socket(getuid(), ask_each, &e);
	if (e.json)
		fputs("]\n", stdout);
	return e.status;
}

static void job_usage(FILE *f)
{
	fprintf(
	    f, "usage: qcowctl job list [--json]\n"
	       "       qcowctl job cancel ID\n\n"
	       "The jobs qcowfs daemons run on mounted chains (commands forwarded to them).\n\n"
	       "  list    every job of every mount this user may control: its ID (PID-N, the\n"
	       "          daemon's pid), kind, state (running, done, failed, cancelled), share\n"
	       "          done and images\n"
	       "  cancel  stop job ID at its next safe point (every image stays valid, every view\n"
	       "          unchanged) and wait for it to stop\n\n"
	       "  --json      list: a JSON array, an object per job\n"
	       "  -h, --help  this text\n");
}

/* job cancel PID-N: the daemon of that pid (its socket, PID.sock, answers for its jobs). */
struct cancel {
	char *argv[3];
	int pid;
	int status;
	bool found;
};

static int ask_cancel(void *ctx, const char *path, pid_t pid)
{
	struct cancel *k = ctx;
	struct each e = {.argv = k->argv, .argc = 3};
	int fd, r;

	if (pid != k->pid)
		return 0;
	k->found = true;
	fd = ctlp_connect(path, ASK_TIMEOUT_MS);
	if (fd < 0) {
		error("the qcowfs daemon pid %d does not answer: %s", (int)pid, strerror(-fd));
		return 1;
	}
	r = ctlp_call(fd, 3, k->argv, -1, print_frame, &e, NULL);
	close(fd);
	k->status = r == 3 ? (error("no job %s", k->argv[2]), EXIT_FAIL) : r < 0 ? EXIT_FAIL : r;
	return 1;
}

int cmd_job(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"json", no_argument, NULL, OPT_JSON},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	char *words[3] = {"job", "list", "--json"};
	struct each e = {.argv = words, .argc = 2};
	bool list;
	int c;

	if (argc < 2 || (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		if (argc < 2)
			return usage_error("job", "needs a subcommand: list or cancel");
		job_usage(stdout);
		return EXIT_OK;
	}
	list = !strcmp(argv[1], "list");
	if (!list && strcmp(argv[1], "cancel"))
		return usage_error("job", "unknown subcommand '%s'", argv[1]);
	argc--, argv++;
	while ((c = next_option(argc, argv, "h", longopts, "job")) != -1) {
		if (c == 'h') {
			job_usage(stdout);
			return EXIT_OK;
		}
		if (c != OPT_JSON || !list)
			return c == OPT_BAD ? EXIT_USAGE
					    : usage_error("job", "option '--json' is for list");
		e.json = true;
		e.argc = 3;
	}
	if (list) {
		if (optind != argc)
			return usage_error("job", "list takes no operand");
		if (e.json)
			fputs("[", stdout);
		else
			printf(CTLP_JOB_HEADER);
		ctlp_each_socket(getuid(), ask_each, &e);
		if (e.json)
			fputs("]\n", stdout);
		return e.status;
	}
	if (optind + 1 != argc)
		return usage_error("job", "cancel takes one ID");
	struct cancel k = {.argv = {"job", "cancel", argv[optind]}, .status = EXIT_FAIL};
	char *end;

	k.pid = (int)strtol(argv[optind], &end, 10);
	if (k.pid <= 0 || *end != '-')
		return usage_error("job", "'%s' is not a job ID (PID-N, as job list shows)",
				   argv[optind]);
	ctlp_each_socket(getuid(), ask_cancel, &k);
	if (!k.found)
		error("no job %s: no qcowfs daemon pid %d answers", argv[optind], k.pid);
	return k.status;
}

const char *ctl_rec_get(const char *rec, const char *key, char *out, size_t cap)
{
	return ctlp_rec_get(rec, key, out, cap);
}
