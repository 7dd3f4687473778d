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
/* -o no_default_permissions and -o allow_other as given: see check_permissions() */
static bool no_default_permissions, allow_other;
#define MAX_READAHEAD_KB (1024 * 1024) /* 1 GiB: more than any disk streams ahead usefully */
/* -o max_read=N, 0 when not given */
static unsigned max_read;
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

/* libfuse's own messages, to stderr as its default handler prints them; an error among them
 * (an unknown -o option, a failed mount) is already the one line naming the cause. */
static bool fuse_reported;

static void fuse_message(enum fuse_log_level level, const char *fmt, va_list ap)
{
	if (level <= FUSE_LOG_ERR)
		fuse_reported = true;
	vfprintf(stderr, fmt, ap);
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
		"                       0 keeps the kernel's), no_default_permissions (no mode\n"
		"                       checks by the kernel; refused with allow_other), and any\n"
		"                       other FUSE mount option\n"
		"  --backing-dir DIR    allow files below DIR (outside SOURCE): backing and data\n"
		"                       files, images symlinks in SOURCE lead to; repeatable\n"
		"  -h, --help           this text\n"
		"  -V, --version        the version\n\n"
		"The flat view of a leaf image (no image in SOURCE uses it as its backing file) is\n"
		"writable, unless the mount is read-only, the image file is not writable, another\n"
		"process holds it for writing or it is marked corrupt: writes go copy-on-write into\n"
		"that image. Snapshot views and backing layers are read-only.\n\n"
		"A view's owner and group are its image file's; its mode never grants more than\n"
		"every file of its chain does (the kernel checks it: default_permissions). With\n"
		"allow_other, other users get exactly that.\n");
}

unsigned qfs_max_read(void)
{
	return max_read;
}

/* The value of -o NAME=VALUE: decimal digits only (strtoul would take "-5" as 2^32 - 5 and
 * "abc" as 0), at most @max. Prints one line naming the option and returns -1 otherwise. */
static int parse_uint_opt(const char *tok, size_t name_len, unsigned long max, unsigned *out)
{
	const char *v = tok + name_len + 1;
	unsigned long n = 0;
	const char *p;

	for (p = v; *p >= '0' && *p <= '9' && n <= max; p++)
		n = n * 10 + (unsigned long)(*p - '0');
	if (p == v || *p || n > max) {
		fprintf(stderr, "qcowfs: -o %.*s='%s': not a whole number from 0 to %lu\n",
			(int)name_len, tok, v, max);
		return -1;
	}
	*out = (unsigned)n;
	return 0;
}

/* Split -o options: ours are consumed, the rest go to FUSE. max_read goes to both: libfuse
 * passes it to the kernel and fails INIT unless the init callback asks for the same value
 * (qfs_max_read()). Prints one line naming the option on a refusal and returns -1. */
static int parse_o(const char *arg, struct qfs_config *cfg, char *fuse_opts, size_t cap)
{
	char *copy = strdup(arg), *save = NULL, *tok;
	int r = 0;

	if (!copy)
		return -1;
	for (tok = strtok_r(copy, ",", &save); tok && r == 0; tok = strtok_r(NULL, ",", &save)) {
		if (strncmp(tok, "readahead_kb=", 13) == 0) {
			r = parse_uint_opt(tok, 12, MAX_READAHEAD_KB, &readahead_kb);
			continue;
		}
		if (strcmp(tok, "no_default_permissions") == 0) {
			no_default_permissions = true;
			continue;
		}
		if (strcmp(tok, "default_permissions") == 0)
			continue; /* the default: added once by check_permissions() */
		if (strcmp(tok, "allow_other") == 0)
			allow_other = true;
		if (strncmp(tok, "max_read=", 9) == 0 &&
		    (r = parse_uint_opt(tok, 8, UINT32_MAX, &max_read)) < 0)
			break;
		if (strcmp(tok, "ro") == 0)
			cfg->read_only = true;
		if (strlen(fuse_opts) + strlen(tok) + 2 > cap) {
			fprintf(stderr, "qcowfs: -o '%s': too many mount options\n", tok);
			r = -1;
			break;
		}
		strcat(fuse_opts, ",");
		strcat(fuse_opts, tok);
	}
	free(copy);
	return r;
}

/* The kernel checks every access against the views' modes (default_permissions), which never
 * grant more than the source files (tree.c derives them). Opting out leaves the
 * daemon, which runs as root, to answer every request it can serve, so it is refused with
 * allow_other: only a mount that FUSE keeps to its owner may do without. 0, or -1 after a
 * message. */
static int check_permissions(char *fuse_opts, size_t cap)
{
	if (no_default_permissions && allow_other) {
		fprintf(stderr, "qcowfs: -o no_default_permissions would let every user read and "
				"write every view: not with allow_other\n");
		return -1;
	}
	if (no_default_permissions)
		return 0;
	if (strlen(fuse_opts) + sizeof(",default_permissions") > cap) {
		fprintf(stderr, "qcowfs: bad -o option\n");
		return -1;
	}
	strcat(fuse_opts, ",default_permissions");
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

/* Refuse, before anything is mounted, a SOURCE that is neither a directory nor a regular file
 * (or a directory the daemon cannot list) and a MOUNTPOINT that is not a directory (the kernel
 * mounts over a file too, and every access then fails). Sets mount_path. One line naming the
 * argument on a refusal. */
static int check_args(const char *source, const char *mnt)
{
	struct stat st;

	if (stat(source, &st) < 0) {
		fprintf(stderr, "qcowfs: cannot use source '%s': %s\n", source, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) {
		fprintf(stderr, "qcowfs: cannot use source '%s': %s\n", source,
			"not a directory or an image file");
		return -1;
	}
	if (S_ISDIR(st.st_mode) && access(source, R_OK | X_OK) < 0) {
		fprintf(stderr, "qcowfs: cannot use source '%s': %s\n", source, strerror(errno));
		return -1;
	}
	if (!realpath(mnt, mount_path) || stat(mount_path, &st) < 0) {
		fprintf(stderr, "qcowfs: cannot use mount point '%s': %s\n", mnt, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		fprintf(stderr, "qcowfs: cannot use mount point '%s': %s\n", mnt,
			strerror(ENOTDIR));
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *backing_dirs[MAX_BACKING_DIRS], *pos[2];
	struct qfs_config cfg = { 0 };
	char fuse_opts[4096] = "fsname=qcowfs,subtype=qcowfs", msg[1024];
	bool foreground = false, debug = false, single = false;
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_loop_config lcfg = { .clone_fd = 0, .max_idle_threads = 16 };
	struct fuse_session *se;
	struct qfs_tree *tree;
	size_t n_pos = 0;
	int i, r;

	cfg.backing_dirs = backing_dirs;
	fuse_set_log_func(fuse_message);
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
			if (!v) {
				fprintf(stderr, "qcowfs: -o needs a value (see --help)\n");
				return 1;
			}
			if (parse_o(v, &cfg, fuse_opts, sizeof(fuse_opts)) < 0)
				return 1;
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
	if (check_permissions(fuse_opts, sizeof(fuse_opts)) < 0)
		return 1;
	cfg.check_callers = !no_default_permissions;
	cfg.source = pos[0];
	if (check_args(pos[0], pos[1]) < 0)
		return 1;
	cfg.mount_point = mount_path;
	r = qfs_tree_new(&cfg, &tree);
	if (r < 0) {
		fprintf(stderr, "qcowfs: cannot use source '%s': %s\n", cfg.source, strerror(-r));
		return 1;
	}
	if (qfs_tree_check_source(tree, msg, sizeof(msg)) < 0) {
		fprintf(stderr, "qcowfs: cannot use source '%s': %s\n", cfg.source, msg);
		qfs_tree_free(tree);
		return 1;
	}
	if (fuse_opt_add_arg(&args, argv[0]) || fuse_opt_add_arg(&args, "-o") ||
	    fuse_opt_add_arg(&args, fuse_opts) || (debug && fuse_opt_add_arg(&args, "-d"))) {
		fprintf(stderr, "qcowfs: out of memory\n");
		return 1;
	}
	se = fuse_session_new(&args, &qfs_ops, sizeof(qfs_ops), tree);
	if (!se) {
		if (!fuse_reported)
			fprintf(stderr, "qcowfs: cannot create the FUSE session\n");
		fuse_opt_free_args(&args);
		qfs_tree_free(tree);
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
	if (r > 0)
		r = 0; /* ended by SIGINT, SIGTERM or SIGHUP (its number): as asked, no failure */
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
