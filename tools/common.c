/* SPDX-License-Identifier: MIT */
/*
 * common.c - what every qcowctl command shares: the -p/-q/--dry-run/--json flags, the progress
 * bar, SIGINT/SIGTERM turned into a cancellation the library polls between steps, and opening
 * an image for modification (QEMU's write locks taken, a holder named on refusal).
 */
#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "qcow2.h"
#include "qcowctl.h"

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	interrupted = sig;
}

void catch_interrupts(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
}

bool was_interrupted(void)
{
	return interrupted != 0;
}

bool common_opt(int c, struct common_opts *o)
{
	switch (c) {
	case 'p':
		o->progress = PROGRESS_FORCE;
		return true;
	case 'q':
		o->progress = PROGRESS_QUIET;
		return true;
	case OPT_DRY_RUN:
		o->dry_run = true;
		return true;
	case OPT_JSON:
		o->json = true;
		return true;
	case 'v':
		o->verbose = true;
		return true;
	case OPT_KEY:
		key_add(optarg);
		return true;
	default:
		return false;
	}
}

/* Does --@name (up to '=') name one long option exactly or, as a prefix, several? */
static int long_matches(const struct option *longopts, const char *name, const struct option **hit)
{
	size_t len = strcspn(name, "=");
	int n = 0;

	for (; longopts->name; longopts++) {
		if (strncmp(longopts->name, name, len) != 0)
			continue;
		*hit = longopts;
		if (longopts->name[len] == '\0')
			return 1; /* exact: getopt takes it whatever else it prefixes */
		n++;
	}
	return n;
}

int usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "qcowctl %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (see 'qcowctl %s --help')\n", cmd);
	return EXIT_USAGE;
}

/* Print why getopt_long refused an option (@c: '?' or ':'), naming it as the user wrote it.
 * A long option's argument is argv[optind - 1] (getopt has stepped past it); a short one is
 * '-' and optopt, which may sit in the middle of a cluster ("-qx") that optind still points at,
 * after an argument that was itself a long option. */
static void refuse_option(char **argv, const struct option *longopts, int c, const char *cmd)
{
	const char *a = optind > 0 ? argv[optind - 1] : "", *what = "unknown option", *tail = "";
	const struct option *hit = NULL;
	bool is_long = strncmp(a, "--", 2) == 0 && a[2];
	char name[64];
	int n = is_long ? long_matches(longopts, a + 2, &hit) : 0;

	if (is_long && c == '?' && optopt) /* --name=value to an option without a value */
		is_long = strchr(a, '=') && n == 1 && hit->val == optopt && !hit->has_arg;
	if (is_long) {
		snprintf(name, sizeof(name), "%.*s", (int)strcspn(a, "="), a);
		if (c == ':')
			what = "option", tail = " needs a value";
		else if (optopt)
			what = "option", tail = " takes no value";
		else if (n > 1)
			what = "ambiguous option";
	} else {
		snprintf(name, sizeof(name), "-%c", optopt);
		if (c == ':')
			what = "option", tail = " needs a value";
	}
	usage_error(cmd, "%s '%s'%s", what, name, tail);
}

/* qemu-img's spellings that every command takes, added here once (its own table wins):
 * "-f FMT" (only qcow2: the format is always probed, and QEMU's other drivers are not ours)
 * and, where a command has "--json", "--output=json|human". */
enum { OPT_OUTPUT = 0x1ff };
#define MAX_LONGOPTS 64

static bool has_short(const char *shortopts, char c)
{
	return strchr(shortopts, c) != NULL;
}

static const struct option *find_long(const struct option *longopts, const char *name)
{
	for (; longopts->name; longopts++)
		if (!strcmp(longopts->name, name))
			return longopts;
	return NULL;
}

/* @longopts with "--output" added (when it has "--json" and no "--output") into @buf. */
static const struct option *with_output(const struct option *longopts, struct option *buf)
{
	size_t n = 0;

	if (!find_long(longopts, "json") || find_long(longopts, "output"))
		return longopts;
	for (; longopts[n].name && n + 2 < MAX_LONGOPTS; n++)
		buf[n] = longopts[n];
	buf[n++] = (struct option){"output", required_argument, NULL, OPT_OUTPUT};
	buf[n] = (struct option){NULL, 0, NULL, 0};
	return buf;
}

int next_option(int argc, char **argv, const char *shortopts, const struct option *longopts,
		const char *cmd)
{
	struct option buf[MAX_LONGOPTS];
	const struct option *lo = with_output(longopts, buf);
	bool own_f = has_short(shortopts, 'f');
	char spec[64];
	int c, idx;

	/* A leading ':' makes a missing value ':' rather than '?'; opterr 0: our own message. */
	snprintf(spec, sizeof(spec), "%s%s%s", shortopts[0] == ':' ? "" : ":", shortopts,
		 own_f ? "" : "f:");
	opterr = 0;
	for (;;) {
		idx = -1;
		c = getopt_long(argc, argv, spec, lo, &idx);
		if (c == '?' || c == ':') {
			refuse_option(argv, lo, c, cmd);
			return OPT_BAD;
		}
		if (c == 'f' && idx < 0 && !own_f) {
			if (strcmp(optarg, "qcow2") != 0) {
				usage_error(cmd, "only qcow2 images are supported (-f %s)", optarg);
				return OPT_BAD;
			}
			continue;
		}
		if (c == -1)
			remember_operands(argc, argv, optind);
		if (c != OPT_OUTPUT)
			return c;
		if (!strcmp(optarg, "json"))
			return find_long(longopts, "json")->val;
		if (strcmp(optarg, "human") != 0) {
			usage_error(cmd, "option '--output' takes json or human, not '%s'", optarg);
			return OPT_BAD;
		}
	}
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

void progress_init(struct progress *p, const struct common_opts *o, const char *what)
{
	memset(p, 0, sizeof(*p));
	p->what = what;
	p->start = now();
	p->on = o->progress == PROGRESS_FORCE || (o->progress == PROGRESS_AUTO && isatty(2));
	p->verbose = o->verbose;
}

/* -v: one line on stderr, the job's phases in the order they ran ("commit: open 0.001 s, plan
 * 0.012 s, copy 3.204 s (512 MiB; reads 1.902 s, writes 1.011 s), flush 0.402 s, sync 0.611
 * s, pointer 0.010 s; total 4.301 s, other 0.061 s"): other is what no phase measured. */
static void print_times(const struct progress *p, double total)
{
	const struct qcow2_job_times *t = &p->times;
	double sum = 0;
	char size[32];
	unsigned i;

	fprintf(stderr, "%s:", p->what);
	for (i = 0; i < t->n; i++) {
		sum += t->v[i].secs;
		fprintf(stderr, "%s %s %.3f s", i ? "," : "", t->v[i].name, t->v[i].secs);
		if (strcmp(t->v[i].name, "copy") == 0) {
			format_size(t->v[i].bytes, size, sizeof(size));
			fprintf(stderr, " (%s; reads %.3f s, writes %.3f s)", size, t->copy_reads,
				t->copy_writes);
		}
	}
	fprintf(stderr, "%s total %.3f s, other %.3f s\n", t->n ? ";" : "", total,
		total - sum > 0 ? total - sum : 0);
}

/* "ETA 1:02:03" or "ETA 2:03" from the rate so far ("ETA --:--" before there is one). */
static void eta(char *out, size_t cap, double secs)
{
	unsigned long t = secs < 0 || secs > 359999 ? 0 : (unsigned long)(secs + 0.5);

	if (secs < 0 || secs > 359999)
		snprintf(out, cap, "ETA --:--");
	else if (t >= 3600)
		snprintf(out, cap, "ETA %lu:%02lu:%02lu", t / 3600, t / 60 % 60, t % 60);
	else
		snprintf(out, cap, "ETA %lu:%02lu", t / 60, t % 60);
}

static void draw(struct progress *p)
{
	char a[32], b[32], r[32], e[32];
	double pct = p->total ? 100.0 * (double)p->done / (double)p->total : 0;
	double secs = now() - p->start, rate = secs > 0 ? (double)p->done / secs : 0;
	int i, fill = (int)(pct / 5);

	format_size(p->done, a, sizeof(a));
	format_size(p->total, b, sizeof(b));
	format_size((uint64_t)rate, r, sizeof(r));
	eta(e, sizeof(e),
	    p->done >= p->total ? 0
	    : rate > 0		? (double)(p->total - p->done) / rate
				: -1);
	fprintf(stderr, "\r%s [", p->what);
	for (i = 0; i < 20; i++)
		fputc(i < fill ? '#' : ' ', stderr);
	fprintf(stderr, "] %5.1f%% %s of %s, %s/s, %s   ", pct, a, b, r, e);
	fflush(stderr);
}

void progress_update(struct progress *p, uint64_t done, uint64_t total)
{
	double t;

	if (!p->on)
		return;
	p->done = done;
	p->total = total;
	t = now();
	if (t - p->last < 0.1 && done < total)
		return;
	p->last = t;
	draw(p);
	p->drawn = true;
}

void progress_end(struct progress *p)
{
	double total = now() - p->start;

	if (p->on && p->drawn) {
		draw(p);
		fputc('\n', stderr);
	}
	p->drawn = false;
	if (p->verbose)
		print_times(p, total);
	p->verbose = false; /* printed once */
}

/* qcow2_job callbacks: the bar and the interrupt flag. */
static void job_progress(void *ctx, uint64_t done, uint64_t total)
{
	progress_update(ctx, done, total);
}

static bool job_cancelled(void *ctx)
{
	return was_interrupted();
}

/* The keys of --key as the library asks for them (struct qcow2_keys). */
static int find_cli_key(void *ctx, const char *path, const struct qcow2_key **key)
{
	(void)ctx;
	*key = key_for(path);
	return *key != NULL;
}

const struct qcow2_keys *cli_keys(void)
{
	static const struct qcow2_keys keys = {find_cli_key, NULL};

	return &keys;
}

void job_init(struct qcow2_job *job, struct progress *p)
{
	memset(job, 0, sizeof(*job));
	job->progress = job_progress;
	job->cancelled = job_cancelled;
	job->ctx = p;
	job->keys = cli_keys();
	job->times = p->verbose ? &p->times : NULL;
}

int open_for_write(const char *path, struct qcow2_chain **out)
{
	struct qcow2_chain_opts co = {
	    .lock = true, .writable = true, .top_blockdev = true, .keys = *cli_keys()};
	struct qcow2_chain *c;
	int r;

	r = qcow2_chain_open(path, &co, &c);
	if (r < 0)
		return r;
	r = qcow2_chain_lock_write(c, true);
	if (r < 0) {
		qcow2_chain_close(c);
		return r;
	}
	*out = c;
	return 0;
}

int finish_write(struct qcow2_chain *c, int r)
{
	int f;

	if (!c)
		return r;
	f = qcow2_chain_flush(c);
	if (r == 0)
		r = f;
	qcow2_chain_close(c);
	return r;
}

int fail_lib(void)
{
	error("%s", was_interrupted() ? "interrupted" : qcow2_last_error());
	return EXIT_FAIL;
}

void print_job_plan(const struct qcow2_plan *p, const struct common_opts *o)
{
	struct json j;
	size_t i;

	if (o->json) {
		json_init(&j, stdout);
		json_begin_object(&j, NULL);
		json_bool(&j, "dry-run", o->dry_run);
		json_begin_array(&j, "steps");
		for (i = 0; i < p->n; i++) {
			const struct qcow2_step *s = &p->v[i];

			json_begin_object(&j, NULL);
			json_string(&j, "step", qcow2_step_name(s->kind));
			json_string(&j, "image", s->image);
			if (s->kind == QCOW2_STEP_CREATE)
				json_string(&j, "format", s->detail ? s->detail : "");
			if (s->kind == QCOW2_STEP_REPOINT)
				json_string(&j, "backing", s->detail ? s->detail : "");
			if (s->kind == QCOW2_STEP_COPY || s->kind == QCOW2_STEP_GROW)
				json_uint(&j, "bytes", s->bytes);
			if (s->kind == QCOW2_STEP_BITMAPS)
				json_string(&j, "bitmaps", s->detail ? s->detail : "");
			json_end_object(&j);
		}
		json_end_array(&j);
		json_end_object(&j);
		json_finish(&j);
		return;
	}
	if (o->progress == PROGRESS_QUIET && !o->dry_run)
		return;
	if (o->dry_run)
		printf("dry run: nothing changed. The plan:\n");
	for (i = 0; i < p->n; i++) {
		const struct qcow2_step *s = &p->v[i];
		char size[32];

		format_size(s->bytes, size, sizeof(size));
		switch (s->kind) {
		case QCOW2_STEP_GROW:
			printf("  grow     '%s' to %s\n", s->image, size);
			break;
		case QCOW2_STEP_COPY:
			printf("  copy     %s (%" PRIu64 " bytes) into '%s'\n", size, s->bytes,
			       s->image);
			break;
		case QCOW2_STEP_REPOINT:
			if (s->detail && s->detail[0])
				printf("  repoint  '%s' to backing file '%s'\n", s->image,
				       s->detail);
			else
				printf("  repoint  '%s' to no backing file\n", s->image);
			break;
		case QCOW2_STEP_EMPTY:
			printf("  empty    '%s'\n", s->image);
			break;
		case QCOW2_STEP_UNUSED:
			printf("  unused   '%s' (no longer in the chain)\n", s->image);
			break;
		case QCOW2_STEP_DELETE:
			printf("  delete   '%s'\n", s->image);
			break;
		case QCOW2_STEP_CREATE:
			printf("  create   '%s' (%s)\n", s->image, s->detail ? s->detail : "");
			break;
		case QCOW2_STEP_BITMAPS:
			printf("  bitmaps  '%s': the ranges copied are marked dirty in %s\n",
			       s->image, s->detail ? s->detail : "");
			break;
		}
	}
}

int split_image_snapshot(const char *arg, char **path, char **snap)
{
	struct stat st;
	const char *at;

	*snap = NULL;
	*path = strdup(arg);
	if (!*path)
		return qcow2_oom();
	if (stat(arg, &st) == 0)
		return 0;
	for (at = strrchr(arg, '@'); at; at = at == arg ? NULL : memrchr(arg, '@', at - arg)) {
		(*path)[at - arg] = '\0';
		if (at > arg && stat(*path, &st) == 0) {
			*snap = strdup(at + 1);
			return *snap ? 0 : qcow2_oom();
		}
	}
	strcpy(*path, arg);
	return 0; /* opening it will say why not */
}

/* ---- --key IMAGE=KEYFILE ---- */

struct cli_key {
	char *image;	     /* as given */
	char real[PATH_MAX]; /* its real path (or its directory's, plus its name) */
	struct qcow2_key key;
};
static struct cli_key *keys;
static size_t n_keys;

/* The real path of @path, or of its directory joined with its name when it does not exist yet
 * (an image about to be created). False if neither resolves. */
static bool real_image_path(const char *path, char *out)
{
	char dir[PATH_MAX], base[PATH_MAX], real_dir[PATH_MAX];

	if (realpath(path, out))
		return true;
	if (strlen(path) >= PATH_MAX)
		return false;
	strcpy(dir, path);
	strcpy(base, path);
	if (!realpath(dirname(dir), real_dir))
		return false;
	return snprintf(out, PATH_MAX, "%s/%s", strcmp(real_dir, "/") ? real_dir : "",
			basename(base)) < PATH_MAX;
}

static void keys_release(void)
{
	for (size_t i = 0; i < n_keys; i++) {
		qcow2_key_release(&keys[i].key);
		free(keys[i].image);
	}
	free(keys);
	keys = NULL;
	n_keys = 0;
}

void key_add(const char *arg)
{
	/* IMAGE=KEYFILE, split at the last '=': a key file's name is ours to choose, an image's
	 * may be anything */
	const char *eq = strrchr(arg, '=');
	struct cli_key *k;

	if (!eq || eq == arg || !eq[1])
		die(EXIT_USAGE, "invalid --key '%s': expected IMAGE=KEYFILE", arg);
	if (!n_keys)
		atexit(keys_release);
	k = realloc(keys, (n_keys + 1) * sizeof(*keys));
	if (!k)
		die(EXIT_FAIL, "out of memory");
	keys = k;
	k = &keys[n_keys];
	memset(k, 0, sizeof(*k));
	k->image = strndup(arg, (size_t)(eq - arg));
	if (!k->image)
		die(EXIT_FAIL, "out of memory");
	n_keys++; /* from here on keys_release() frees it, if we die below */
	if (!real_image_path(k->image, k->real))
		die(EXIT_FAIL, "--key: cannot resolve '%s': %s", k->image, strerror(errno));
	for (size_t i = 0; i + 1 < n_keys; i++)
		if (strcmp(keys[i].real, k->real) == 0)
			die(EXIT_USAGE, "--key given twice for '%s'", k->image);
	if (qcow2_key_file_read(eq + 1, &k->key) < 0)
		die(EXIT_FAIL, "%s", qcow2_last_error());
}

const struct qcow2_key *key_for(const char *path)
{
	char real[PATH_MAX];

	if (!n_keys || !real_image_path(path, real))
		return NULL;
	for (size_t i = 0; i < n_keys; i++)
		if (strcmp(keys[i].real, real) == 0)
			return &keys[i].key;
	return NULL;
}

const struct qcow2_key *key_lookup(void *ctx, const char *path)
{
	(void)ctx;
	return key_for(path);
}
