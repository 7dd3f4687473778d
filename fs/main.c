/* SPDX-License-Identifier: MIT */
/*
 * main.c - qcowfs's command line and the FUSE session's lifetime: the top of fs/ (qcowfs.h
 * draws the order). The log (log.c) and the read-ahead window (readahead.c) are set up here.
 *
 * The command line is read by getopt_long(); -o values are split here, ours taken out and
 * checked, the rest handed to libfuse, which refuses what it does not know. Every refusal is
 * one line on stderr naming the option or argument, before anything is mounted.
 *
 * Locking: takes no lock of its own; the tree takes its lock inside qfs_tree_new() and
 * qfs_tree_check_source(), before the session's threads start.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "ctl.h"
#include "live.h"
#include "log.h"
#include "qcowfs.h"
#include "readahead.h"

#define MAX_BACKING_DIRS 64
#define MAX_KEYS	 256

/* The exit status of a usage error (an unknown option, a bad value, a missing argument): 1, as
 * every other refusal (EXIT_FAILURE: a SOURCE or MOUNTPOINT that cannot be used, a failed
 * mount), as it always was. */
#define EXIT_USAGE 1

/* What the command line asks for. */
struct cmdline {
	struct qfs_config cfg;
	const char *backing_dirs[MAX_BACKING_DIRS];
	/* relative --backing-dir values made absolute: the daemon works from / once detached */
	char backing_abs[MAX_BACKING_DIRS][PATH_MAX];
	const char *pos[2]; /* SOURCE, MOUNTPOINT */
	size_t n_pos;
	char fuse_opts[4096]; /* the -o options libfuse gets */
	bool foreground, debug, single;
	/* -o no_default_permissions and -o allow_other as given: see check_permissions() */
	bool no_default_permissions, allow_other;
	/* -o writeback: the kernel's writeback cache */
	bool writeback;
	unsigned readahead_kb;		/* -o readahead_kb=N */
	unsigned max_read;		/* -o max_read=N, 0 when not given */
	char log_file[PATH_MAX];	/* --log-file, made absolute; "" when not given */
	const char *key_args[MAX_KEYS]; /* --key IMAGE=KEYFILE, as given */
	size_t n_keys;
};

/* The passphrases of --key: the image's canonical path and the key file's content (locked
 * memory), read before the session starts and kept until it ends. */
struct key_entry {
	char path[PATH_MAX];
	struct qcow2_key key;
};
static struct key_entry keys[MAX_KEYS];
static size_t n_keys;

static char mount_path[PATH_MAX];

/* libfuse's own messages, to stderr as its default handler prints them; an error among them
 * (an unknown -o option, a failed mount) is already the one line naming the cause. */
static bool fuse_reported;
/* Once mounted, libfuse's messages go to our log where that is not stderr (detached, or
 * --log-file): set before the session's threads start. */
static bool fuse_to_log;

static void fuse_message(enum fuse_log_level level, const char *fmt, va_list ap)
{
	char line[1024];
	size_t n;

	if (level <= FUSE_LOG_ERR)
		fuse_reported = true;
	if (!fuse_to_log) {
		vfprintf(stderr, fmt, ap);
		return;
	}
	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	while (n && line[n - 1] == '\n')
		line[--n] = '\0';
	if (n)
		qfs_log("%s", line);
}

static void usage(FILE *f)
{
	fprintf(
	    f,
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
	    "                       checks by the kernel; refused with allow_other),\n"
	    "                       writeback (the kernel caches writes until fsync or close:\n"
	    "                       faster small writes; a write past the end of a view is then\n"
	    "                       refused by fsync and close, not by write), and any\n"
	    "                       other FUSE mount option\n"
	    "  --backing-dir DIR    allow files below DIR (outside SOURCE): backing and data\n"
	    "                       files, images symlinks in SOURCE lead to; repeatable\n"
	    "  --log-file PATH      append the log to PATH, timestamped (opened again on\n"
	    "                       SIGHUP, for logrotate); without it the log goes to stderr,\n"
	    "                       or once detached to syslog (stderr when there is none)\n"
	    "  --key IMAGE=KEYFILE  the passphrase of the encrypted image IMAGE (a path relative\n"
	    "                       to SOURCE) is the content of KEYFILE; repeatable, one for\n"
	    "                       each encrypted image of a chain\n"
	    "  --status [--json] MOUNTPOINT\n"
	    "                       what the mount at MOUNTPOINT serves (views open, writers,\n"
	    "                       jobs), asked on its control socket\n"
	    "  -h, --help           this text\n"
	    "  -V, --version        the version\n\n"
	    "The flat view of a leaf image (no image in SOURCE uses it as its backing file) is\n"
	    "writable, unless the mount is read-only, the image file is not writable, another\n"
	    "process holds it for writing or it is marked corrupt: writes go copy-on-write into\n"
	    "that image. Snapshot views and backing layers are read-only.\n\n"
	    "A view's owner and group are its image file's; its mode never grants more than\n"
	    "every file of its chain does (the kernel checks it: default_permissions). With\n"
	    "allow_other, other users get exactly that.\n\n"
	    "'getfattr -d VIEW' shows a view's chain and why it is read-only; 'cat\n"
	    "MOUNTPOINT/.qcowfs-status.json' lists every image refused or read-only, and why.\n"
	    "An encrypted image (LUKS, legacy AES) is shown only with its key: without one, or\n"
	    "with a wrong one, it is refused (the log says why). Legacy AES views are "
	    "read-only.\n");
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

/* Add ",@tok" to the options libfuse gets. -1 after a message when they would not fit. */
static int add_fuse_opt(struct cmdline *cl, const char *tok)
{
	if (strlen(cl->fuse_opts) + strlen(tok) + 2 > sizeof(cl->fuse_opts)) {
		fprintf(stderr, "qcowfs: -o '%s': too many mount options\n", tok);
		return -1;
	}
	strcat(cl->fuse_opts, ",");
	strcat(cl->fuse_opts, tok);
	return 0;
}

/* Split -o options: ours are consumed, the rest go to FUSE. max_read goes to both: libfuse
 * passes it to the kernel and fails INIT unless the init callback asks for the same value
 * (qfs_readahead_max_read()). Prints one line naming the option on a refusal and returns -1. */
static int parse_o(struct cmdline *cl, const char *arg)
{
	char *copy = strdup(arg), *save = NULL, *tok;
	int r = 0;

	if (!copy) {
		fprintf(stderr, "qcowfs: out of memory\n");
		return -1;
	}
	for (tok = strtok_r(copy, ",", &save); tok && r == 0; tok = strtok_r(NULL, ",", &save)) {
		if (strncmp(tok, "readahead_kb=", 13) == 0)
			r = parse_uint_opt(tok, 12, QFS_MAX_READAHEAD_KB, &cl->readahead_kb);
		else if (strcmp(tok, "no_default_permissions") == 0)
			cl->no_default_permissions = true;
		else if (strcmp(tok, "writeback") == 0)
			cl->writeback = true;
		else if (strcmp(tok, "default_permissions") == 0)
			; /* the default: added once by check_permissions() */
		else if (strncmp(tok, "max_read=", 9) == 0)
			r = parse_uint_opt(tok, 8, UINT32_MAX, &cl->max_read) < 0
				? -1
				: add_fuse_opt(cl, tok);
		else
			r = add_fuse_opt(cl, tok);
		if (strcmp(tok, "allow_other") == 0)
			cl->allow_other = true;
		if (strcmp(tok, "ro") == 0)
			cl->cfg.read_only = true;
	}
	free(copy);
	return r;
}

/* A --backing-dir value: a directory name (it need not exist yet: it is looked up each time
 * a file below it is), relative to the directory qcowfs was started in. -1 after a message
 * naming the option otherwise. */
static int add_backing_dir(struct cmdline *cl, const char *dir)
{
	char cwd[PATH_MAX], *abs;
	int n;

	if (!dir[0]) {
		fprintf(stderr, "qcowfs: --backing-dir '': an empty directory name\n");
		return -1;
	}
	if (cl->cfg.n_backing_dirs == MAX_BACKING_DIRS) {
		fprintf(stderr, "qcowfs: --backing-dir '%s': more than %d directories\n", dir,
			MAX_BACKING_DIRS);
		return -1;
	}
	if (dir[0] != '/') {
		abs = cl->backing_abs[cl->cfg.n_backing_dirs];
		n = -1;
		if (getcwd(cwd, sizeof(cwd)))
			n = snprintf(abs, PATH_MAX, "%s/%s", cwd, dir);
		if (n < 0 || n >= PATH_MAX) {
			fprintf(stderr, "qcowfs: --backing-dir '%s': %s\n", dir,
				n < 0 ? strerror(errno) : strerror(ENAMETOOLONG));
			return -1;
		}
		dir = abs;
	}
	cl->backing_dirs[cl->cfg.n_backing_dirs++] = dir;
	return 0;
}

/* --log-file PATH: made absolute (the daemon leaves its working directory), opened now, before
 * anything is mounted: a PATH that cannot be written is refused on the command line. -1 after
 * a message naming the option otherwise. */
static int set_log_file(struct cmdline *cl, const char *path)
{
	char cwd[PATH_MAX];
	int n = -1, r;

	if (!path[0]) {
		fprintf(stderr, "qcowfs: --log-file '': an empty file name\n");
		return -1;
	}
	if (path[0] == '/')
		n = snprintf(cl->log_file, sizeof(cl->log_file), "%s", path);
	else if (getcwd(cwd, sizeof(cwd)))
		n = snprintf(cl->log_file, sizeof(cl->log_file), "%s/%s", cwd, path);
	r = n < 0 ? -errno : n >= (int)sizeof(cl->log_file) ? -ENAMETOOLONG : 0;
	if (r == 0)
		r = qfs_log_to_file(cl->log_file);
	if (r < 0) {
		fprintf(stderr, "qcowfs: --log-file '%s': %s\n", path, strerror(-r));
		return -1;
	}
	return 0;
}

/* A --key value, IMAGE=KEYFILE: read once SOURCE is known (resolve_keys()). */
static int add_key(struct cmdline *cl, const char *arg)
{
	const char *eq = strrchr(arg, '=');

	if (!eq || eq == arg || !eq[1]) {
		fprintf(stderr, "qcowfs: --key '%s': expected IMAGE=KEYFILE\n", arg);
		return -1;
	}
	if (cl->n_keys == MAX_KEYS) {
		fprintf(stderr, "qcowfs: --key '%s': more than %d keys\n", arg, MAX_KEYS);
		return -1;
	}
	cl->key_args[cl->n_keys++] = arg;
	return 0;
}

/* The key of the image at canonical @path (struct qcow2_keys). */
static int find_key(void *ctx, const char *path, const struct qcow2_key **key)
{
	size_t i;

	(void)ctx;
	for (i = 0; i < n_keys; i++) {
		if (strcmp(keys[i].path, path) == 0) {
			*key = &keys[i].key;
			return 1;
		}
	}
	return 0;
}

/* Read every --key: IMAGE resolved from SOURCE (its directory when SOURCE is a file) to its
 * canonical path, KEYFILE read into locked memory (relative to the directory qcowfs was
 * started in). A key file other users may read is named in a warning; its content is never
 * printed. -1 after one line naming the option otherwise. */
static int resolve_keys(const struct cmdline *cl, const char *source)
{
	char root[PATH_MAX], joined[PATH_MAX * 2];
	struct stat st;
	size_t i;

	if (!realpath(source, root) || stat(root, &st) < 0)
		return 0; /* check_args() says why */
	if (!S_ISDIR(st.st_mode))
		*strrchr(root, '/') = '\0';
	for (i = 0; i < cl->n_keys; i++) {
		const char *arg = cl->key_args[i], *eq = strchr(arg, '=');
		struct key_entry *k = &keys[n_keys];

		if (arg[0] == '/')
			snprintf(joined, sizeof(joined), "%.*s", (int)(eq - arg), arg);
		else
			snprintf(joined, sizeof(joined), "%s/%.*s", root, (int)(eq - arg), arg);
		if (!realpath(joined, k->path)) {
			fprintf(stderr, "qcowfs: --key '%.*s': %s\n", (int)(eq - arg), arg,
				strerror(errno));
			return -1;
		}
		if (qcow2_key_file_read(eq + 1, &k->key) < 0) {
			fprintf(stderr, "qcowfs: --key '%.*s': %s\n", (int)(eq - arg), arg,
				qcow2_last_error());
			return -1;
		}
		n_keys++;
		if (stat(eq + 1, &st) == 0 && (st.st_mode & 0077))
			fprintf(stderr,
				"qcowfs: warning: key file '%s' can be read by other users\n",
				eq + 1);
	}
	return 0;
}

static void release_keys(void)
{
	while (n_keys)
		qcow2_key_release(&keys[--n_keys].key);
}

/* SOURCE, then MOUNTPOINT. -1 after a message when both are there already. */
static int add_arg(struct cmdline *cl, const char *arg)
{
	if (cl->n_pos == 2) {
		fprintf(stderr, "qcowfs: too many arguments (see --help)\n");
		return -1;
	}
	cl->pos[cl->n_pos++] = arg;
	return 0;
}

/* getopt_long()'s answers beyond the letters: an argument ("-" mode), --backing-dir. */
enum { OPT_ARG = 1, OPT_BACKING_DIR = 256, OPT_LOG_FILE, OPT_KEY };

static const struct option long_opts[] = {
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {"backing-dir", required_argument, NULL, OPT_BACKING_DIR},
    {"log-file", required_argument, NULL, OPT_LOG_FILE},
    {"key", required_argument, NULL, OPT_KEY},
    {NULL, 0, NULL, 0},
};

/* Why getopt_long() refused an option (@c: '?' unknown, ':' missing value). @arg is the
 * argument it was reading: a long option is named as typed ("--help=x", which takes no
 * value, included), a short one by its letter (it may sit inside a cluster, "-fx"). */
static void refuse_option(int c, const char *arg)
{
	bool is_long = strncmp(arg, "--", 2) == 0 && arg[2];

	if (c == ':' && optopt == OPT_BACKING_DIR)
		fprintf(stderr, "qcowfs: --backing-dir needs a directory\n");
	else if (c == ':' && optopt == OPT_LOG_FILE)
		fprintf(stderr, "qcowfs: --log-file needs a file name\n");
	else if (c == ':' && optopt == OPT_KEY)
		fprintf(stderr, "qcowfs: --key needs IMAGE=KEYFILE\n");
	else if (c == ':')
		fprintf(stderr, "qcowfs: -%c needs a value (see --help)\n", optopt);
	else if (is_long)
		fprintf(stderr, "qcowfs: unknown option '%s' (see --help)\n", arg);
	else
		fprintf(stderr, "qcowfs: unknown option '-%c' (see --help)\n", optopt);
}

/* Read the command line into @cl. Options and arguments may come in any order (taken as they
 * are given: "-" first in the option string), "--" ends the options. 0 to go on, 1 when done
 * (--help, --version), -1 after a refusal (one line naming the option or argument; the usage
 * text for a missing argument). */
static int parse_cmdline(int argc, char **argv, struct cmdline *cl)
{
	int c;

	opterr = 0; /* our own messages */
	for (;;) {
		const char *arg = optind < argc ? argv[optind] : "";

		c = getopt_long(argc, argv, "-:hVfdso:", long_opts, NULL);
		if (c == -1)
			break;
		switch (c) {
		case 'h':
			usage(stdout);
			return 1;
		case 'V':
			printf("qcowfs %s (libfuse %s)\n", QCOWFS_VERSION, fuse_pkgversion());
			return 1;
		case 'f':
			cl->foreground = true;
			break;
		case 'd':
			cl->foreground = cl->debug = true;
			break;
		case 's':
			cl->single = true;
			break;
		case 'o':
			if (parse_o(cl, optarg) < 0)
				return -1;
			break;
		case OPT_BACKING_DIR:
			if (add_backing_dir(cl, optarg) < 0)
				return -1;
			break;
		case OPT_LOG_FILE:
			if (set_log_file(cl, optarg) < 0)
				return -1;
			break;
		case OPT_KEY:
			if (add_key(cl, optarg) < 0)
				return -1;
			break;
		case OPT_ARG:
			if (add_arg(cl, optarg) < 0)
				return -1;
			break;
		default:
			refuse_option(c, arg);
			return -1;
		}
	}
	for (; optind < argc; optind++) /* after "--" */
		if (add_arg(cl, argv[optind]) < 0)
			return -1;
	if (cl->n_pos != 2) {
		usage(stderr);
		return -1;
	}
	return 0;
}

/* The kernel checks every access against the views' modes (default_permissions), which never
 * grant more than the source files (tree-attr.c derives them). Opting out leaves the
 * daemon, which runs as root, to answer every request it can serve, so it is refused with
 * allow_other: only a mount that FUSE keeps to its owner may do without. 0, or -1 after a
 * message. */
static int check_permissions(struct cmdline *cl)
{
	if (cl->no_default_permissions && cl->allow_other) {
		fprintf(stderr, "qcowfs: -o no_default_permissions would let every user read and "
				"write every view: not with allow_other\n");
		return -1;
	}
	if (cl->no_default_permissions)
		return 0;
	if (strlen(cl->fuse_opts) + sizeof(",default_permissions") > sizeof(cl->fuse_opts)) {
		fprintf(stderr, "qcowfs: bad -o option\n");
		return -1;
	}
	strcat(cl->fuse_opts, ",default_permissions");
	return 0;
}

/* The mount's source as /proc/mounts, mount(8) and df show it: fsname=SOURCE (canonical), in
 * the -o options libfuse gets, where a backslash and a comma are escaped with a backslash (the
 * kernel escapes spaces and the like in /proc/mounts itself). The type is fuse.qcowfs
 * (subtype). A -o fsname= of the command line comes after it, and wins. -1 after a message. */
static int set_fsname(struct cmdline *cl, const char *source)
{
	char canon[PATH_MAX], opts[sizeof(cl->fuse_opts)];
	size_t n = 0;
	const char *p;

	if (!realpath(source, canon)) {
		fprintf(stderr, "qcowfs: cannot use source '%s': %s\n", source, strerror(errno));
		return -1;
	}
	n = (size_t)snprintf(opts, sizeof(opts), "subtype=qcowfs,fsname=");
	for (p = canon; *p && n + 3 < sizeof(opts); p++) {
		if (*p == ',' || *p == '\\')
			opts[n++] = '\\';
		opts[n++] = *p;
	}
	if (*p || n + strlen(cl->fuse_opts) + 1 > sizeof(opts)) {
		fprintf(stderr, "qcowfs: cannot use source '%s': %s\n", source,
			"its name is too long for the mount options");
		return -1;
	}
	snprintf(opts + n, sizeof(opts) - n, "%s", cl->fuse_opts);
	memcpy(cl->fuse_opts, opts, sizeof(opts));
	return 0;
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

/* The tree of SOURCE, checked (a single file must be an image the mount serves), or NULL with
 * the cause on stderr. */
static struct qfs_tree *open_tree(const struct qfs_config *cfg)
{
	struct qfs_tree *tree;
	char msg[1024];
	int r;

	r = qfs_tree_new(cfg, &tree);
	if (r < 0) {
		fprintf(stderr, "qcowfs: cannot use source '%s': %s\n", cfg->source, strerror(-r));
		return NULL;
	}
	if (qfs_tree_check_source(tree, msg, sizeof(msg)) < 0) {
		fprintf(stderr, "qcowfs: cannot use source '%s': %s\n", cfg->source, msg);
		qfs_tree_free(tree);
		return NULL;
	}
	return tree;
}

/* SIGHUP with --log-file: open the log file again (logrotate moved it). */
static void reopen_log(int sig)
{
	(void)sig;
	qfs_log_reopen();
}

/* Mount session @se and serve it until it ends (unmounted, or a signal). 0, or nonzero when it
 * could not be mounted or its loop failed. */
static int serve(struct fuse_session *se, const struct cmdline *cl, struct qfs_tree *tree)
{
	struct fuse_loop_config lcfg = {.clone_fd = 0, .max_idle_threads = 16};
	int r = 1;

	if (fuse_set_signal_handlers(se) != 0)
		return r;
	if (cl->log_file[0])
		signal(SIGHUP, reopen_log); /* libfuse's handler would end the session */
	if (fuse_session_mount(se, mount_path) == 0) {
		if (!cl->foreground)
			qfs_log_detach();
		fuse_to_log = !cl->foreground || cl->log_file[0];
		fuse_daemonize(cl->foreground);
		qfs_readahead_start(mount_path);
		qfs_ctl_snapshot_register();
		qfs_live_register();
		qfs_ctl_start(tree); /* after daemonizing: the socket is named by the final pid */
		r = cl->single ? fuse_session_loop(se) : fuse_session_loop_mt(se, &lcfg);
		qfs_ctl_stop(); /* the socket removed, its jobs cancelled and waited for */
		/* ended by SIGINT, SIGTERM or SIGHUP (its number): as asked, no failure */
		if (r > 0)
			r = 0;
		fuse_session_unmount(se);
	}
	fuse_remove_signal_handlers(se);
	return r;
}

/* qcowfs --status [--json] MOUNTPOINT: what the daemon serving MOUNTPOINT serves, asked on
 * its control socket (ctl.c formats it). */
static int status(int argc, char **argv)
{
	bool json = argc == 4 && !strcmp(argv[2], "--json");

	if (argc != 3 + json || argv[2 + json][0] == '-') {
		fprintf(stderr, "qcowfs: usage: qcowfs --status [--json] MOUNTPOINT\n");
		return EXIT_USAGE;
	}
	return qfs_ctl_status_client(argv[2 + json], json) ? EXIT_FAILURE : EXIT_SUCCESS;
}

int main(int argc, char **argv)
{
	static struct cmdline cl = {
	    .fuse_opts = "", /* set_fsname() puts fsname and subtype first */
	    .readahead_kb = QFS_DEFAULT_READAHEAD_KB,
	};
	struct qfs_config *cfg = &cl.cfg;
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_session *se;
	struct qfs_tree *tree;
	int r;

	cfg->backing_dirs = cl.backing_dirs;
	if (argc >= 2 && !strcmp(argv[1], "--status")) /* qcowfs --status [--json] MOUNTPOINT */
		return status(argc, argv);
	fuse_set_log_func(fuse_message);
	r = parse_cmdline(argc, argv, &cl);
	if (r != 0)
		return r > 0 ? EXIT_SUCCESS : EXIT_USAGE;
	if (check_permissions(&cl) < 0)
		return EXIT_USAGE;
	cfg->check_callers = !cl.no_default_permissions;
	cfg->source = cl.pos[0];
	cfg->argc = argc - 1;
	cfg->argv = argv + 1;
	cfg->allow_other = cl.allow_other;
	cfg->log_file = cl.log_file[0] ? cl.log_file : NULL;
	if (check_args(cl.pos[0], cl.pos[1]) < 0 || set_fsname(&cl, cl.pos[0]) < 0)
		return EXIT_FAILURE;
	cfg->mount_point = mount_path;
	if (resolve_keys(&cl, cl.pos[0]) < 0) {
		release_keys();
		return EXIT_FAILURE;
	}
	cfg->keys.find = find_key;
	tree = open_tree(cfg);
	if (!tree) {
		release_keys();
		return EXIT_FAILURE;
	}
	if (!cl.max_read) { /* reads a pipe of libfuse's can splice (readahead.h) */
		char tok[32];
		snprintf(tok, sizeof(tok), "max_read=%u", QFS_DEFAULT_MAX_READ);
		if (add_fuse_opt(&cl, tok) < 0)
			return EXIT_FAILURE;
		cl.max_read = QFS_DEFAULT_MAX_READ;
	}
	if (fuse_opt_add_arg(&args, argv[0]) || fuse_opt_add_arg(&args, "-o") ||
	    fuse_opt_add_arg(&args, cl.fuse_opts) || (cl.debug && fuse_opt_add_arg(&args, "-d"))) {
		fprintf(stderr, "qcowfs: out of memory\n");
		return EXIT_FAILURE;
	}
	qfs_readahead_set(cl.readahead_kb, cl.max_read);
	qfs_ops_writeback(cl.writeback);
	se = fuse_session_new(&args, &qfs_ops, sizeof(qfs_ops), tree);
	if (!se) {
		if (!fuse_reported)
			fprintf(stderr, "qcowfs: cannot create the FUSE session\n");
		fuse_opt_free_args(&args);
		qfs_tree_free(tree);
		release_keys();
		return EXIT_FAILURE;
	}
	r = serve(se, &cl, tree);
	fuse_session_destroy(se);
	qfs_release_all(tree);
	fuse_opt_free_args(&args);
	qfs_tree_free(tree);
	release_keys();
	return r ? EXIT_FAILURE : EXIT_SUCCESS;
}
