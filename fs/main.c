/* SPDX-License-Identifier: MIT */
/*
 * main.c - qcowfs's command line, logging and FUSE session lifetime.
 *
 * After the mount is set up and the kernel's INIT has been answered, the mount's read-ahead
 * window is raised (read_ahead_kb of its bdi, default 4 MiB): with the kernel's default of
 * 128 KiB a FUSE file reads sequentially at a fraction of the disk's speed (PERF-NOTES).
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include "config.h"
#include "qcowfs.h"

#define MAX_BACKING_DIRS 64

static bool log_to_stderr = true;
static unsigned readahead_kb = 4096;
static char mount_path[PATH_MAX];
static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t init_cond = PTHREAD_COND_INITIALIZER;
static bool init_done; /* under init_lock */

void qfs_init_done(void)
{
	pthread_mutex_lock(&init_lock);
	init_done = true;
	pthread_cond_broadcast(&init_cond);
	pthread_mutex_unlock(&init_lock);
}

void qfs_log(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (log_to_stderr) {
		fputs("qcowfs: ", stderr);
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
		fflush(stderr);
	} else {
		vsyslog(LOG_WARNING, fmt, ap);
	}
	va_end(ap);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: qcowfs [OPTIONS] SOURCE MOUNTPOINT\n\n"
		"Show every qcow2 chain in SOURCE (a directory, scanned recursively, or one image)\n"
		"as a flat raw file under MOUNTPOINT: NAME.qcow2 -> NAME.raw, internal snapshot S ->\n"
		"NAME@S.raw, raw backing files under their own names. Unmount with\n"
		"'fusermount3 -u MOUNTPOINT' (or SIGINT/SIGTERM to the daemon).\n\n"
		"options:\n"
		"  -f                   stay in the foreground (log to stderr, not syslog)\n"
		"  -d                   FUSE debug output (implies -f)\n"
		"  -s                   single-threaded\n"
		"  -o OPT[,OPT...]      mount options: ro (every view read-only), allow_other,\n"
		"                       readahead_kb=N (read-ahead of the mount, default 4096,\n"
		"                       0 keeps the kernel's), and any other FUSE mount option\n"
		"  --backing-dir DIR    allow files below DIR (outside SOURCE): backing and data\n"
		"                       files, images symlinks in SOURCE lead to; repeatable\n"
		"  -h, --help           this text\n"
		"  -V, --version        the version\n\n"
		"The flat view of a leaf image (no image in SOURCE uses it as its backing file) is\n"
		"writable, unless the mount is read-only, the image file is not writable, another\n"
		"process holds it for writing or it is marked corrupt: writes go copy-on-write into\n"
		"that image. Snapshot views and backing layers are read-only.\n");
}

/* Split -o options: ours are consumed, the rest go to FUSE. */
static int parse_o(const char *arg, struct qfs_config *cfg, char *fuse_opts, size_t cap)
{
	char *copy = strdup(arg), *save = NULL, *tok;

	if (!copy)
		return -1;
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (strncmp(tok, "readahead_kb=", 13) == 0) {
			readahead_kb = (unsigned)strtoul(tok + 13, NULL, 10);
			continue;
		}
		if (strcmp(tok, "ro") == 0)
			cfg->read_only = true;
		if (strlen(fuse_opts) + strlen(tok) + 2 > cap) {
			free(copy);
			return -1;
		}
		strcat(fuse_opts, ",");
		strcat(fuse_opts, tok);
	}
	free(copy);
	return 0;
}

/* Raise the mount's read-ahead once the kernel has processed INIT (whose reply caps it). */
static void *tune_readahead(void *arg)
{
	char line[8192], path[128];
	int tries;

	(void)arg;
	pthread_mutex_lock(&init_lock);
	while (!init_done)
		pthread_cond_wait(&init_cond, &init_lock);
	pthread_mutex_unlock(&init_lock);
	for (tries = 0; tries < 100; tries++) {
		FILE *f = fopen("/proc/self/mountinfo", "r");
		unsigned maj, min;
		bool done = false;

		usleep(50000);
		if (!f)
			return NULL;
		while (!done && fgets(line, sizeof(line), f)) {
			char mnt[PATH_MAX];
			if (sscanf(line, "%*u %*u %u:%u %*s %4095s", &maj, &min, mnt) == 3 &&
			    strcmp(mnt, mount_path) == 0 && strstr(line, "fuse")) {
				FILE *ra;
				snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb", maj,
					 min);
				usleep(100000); /* INIT's reply, which caps the window, goes first */
				ra = fopen(path, "w");
				if (ra) {
					fprintf(ra, "%u\n", readahead_kb);
					fclose(ra);
				}
				done = true;
			}
		}
		fclose(f);
		if (done)
			return NULL;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	const char *backing_dirs[MAX_BACKING_DIRS], *pos[2];
	struct qfs_config cfg = { 0 };
	char fuse_opts[4096] = "fsname=qcowfs,subtype=qcowfs";
	bool foreground = false, debug = false, single = false;
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_loop_config lcfg = { .clone_fd = 0, .max_idle_threads = 16 };
	struct fuse_session *se;
	struct qfs_tree *tree;
	size_t n_pos = 0;
	int i, r;

	cfg.backing_dirs = backing_dirs;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
			printf("qcowfs %s (libfuse %s)\n", QCOWFS_VERSION, fuse_pkgversion());
			return 0;
		} else if (strcmp(a, "-f") == 0) {
			foreground = true;
		} else if (strcmp(a, "-d") == 0) {
			foreground = debug = true;
		} else if (strcmp(a, "-s") == 0) {
			single = true;
		} else if (strcmp(a, "-o") == 0 || strncmp(a, "-o", 2) == 0) {
			const char *v = a[2] ? a + 2 : (i + 1 < argc ? argv[++i] : NULL);
			if (!v || parse_o(v, &cfg, fuse_opts, sizeof(fuse_opts)) < 0) {
				fprintf(stderr, "qcowfs: bad -o option\n");
				return 1;
			}
		} else if (strcmp(a, "--backing-dir") == 0 || strncmp(a, "--backing-dir=", 14) == 0) {
			const char *v = a[13] == '=' ? a + 14 : (i + 1 < argc ? argv[++i] : NULL);
			if (!v || cfg.n_backing_dirs == MAX_BACKING_DIRS) {
				fprintf(stderr, "qcowfs: --backing-dir needs a directory\n");
				return 1;
			}
			backing_dirs[cfg.n_backing_dirs++] = v;
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "qcowfs: unknown option '%s' (see --help)\n", a);
			return 1;
		} else if (n_pos < 2) {
			pos[n_pos++] = a;
		} else {
			fprintf(stderr, "qcowfs: too many arguments (see --help)\n");
			return 1;
		}
	}
	if (n_pos != 2) {
		usage(stderr);
		return 1;
	}
	cfg.source = pos[0];
	if (!realpath(pos[1], mount_path)) {
		fprintf(stderr, "qcowfs: cannot use mount point '%s': %s\n", pos[1], strerror(errno));
		return 1;
	}
	cfg.mount_point = mount_path;
	r = qfs_tree_new(&cfg, &tree);
	if (r < 0) {
		fprintf(stderr, "qcowfs: cannot use source '%s': %s\n", cfg.source, strerror(-r));
		return 1;
	}
	if (fuse_opt_add_arg(&args, argv[0]) || fuse_opt_add_arg(&args, "-o") ||
	    fuse_opt_add_arg(&args, fuse_opts) || (debug && fuse_opt_add_arg(&args, "-d"))) {
		fprintf(stderr, "qcowfs: out of memory\n");
		return 1;
	}
	se = fuse_session_new(&args, &qfs_ops, sizeof(qfs_ops), tree);
	if (!se) {
		fprintf(stderr, "qcowfs: cannot create the FUSE session\n");
		return 1;
	}
	r = 1;
	if (fuse_set_signal_handlers(se) != 0)
		goto out_session;
	if (fuse_session_mount(se, mount_path) != 0)
		goto out_signals;
	if (!foreground) {
		log_to_stderr = false;
		openlog("qcowfs", LOG_PID, LOG_DAEMON);
	}
	fuse_daemonize(foreground);
	if (readahead_kb) {
		pthread_t th;
		if (pthread_create(&th, NULL, tune_readahead, NULL) == 0)
			pthread_detach(th);
	}
	r = single ? fuse_session_loop(se) : fuse_session_loop_mt(se, &lcfg);
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_session:
	fuse_session_destroy(se);
	qfs_release_all(tree);
	fuse_opt_free_args(&args);
	qfs_tree_free(tree);
	return r ? 1 : 0;
}
