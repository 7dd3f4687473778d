/* SPDX-License-Identifier: MIT */
/*
 * qcowctl.h - shared declarations of the qcowctl command-line tool: argument parsing and
 * output only; every fact about an image comes from format/ (qcow2.h).
 */
#ifndef QCOWCTL_H
#define QCOWCTL_H

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "qcow2.h"

enum qcowctl_exit {
	EXIT_OK = 0,
	EXIT_FAIL = 1,
	EXIT_CORRUPT = 2,
	EXIT_LEAKS = 3,
	EXIT_NOT_IMPROVED =
	    4, /* check --repair: the repair would not improve it; nothing changed */
	EXIT_USAGE = 64,
};

/* Print "qcowctl: MESSAGE" to stderr. */
void error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* error(), then exit with @code. */
void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

/* File names in messages are spelled as the user typed them: the operands of the command
 * (argv[@first..]) are remembered with their resolved paths, which error() writes as typed.
 * next_option() calls it once the options are parsed. */
void remember_operands(int argc, char **argv, int first);

/* A usage error, the one style of them all: "qcowctl CMD: MESSAGE (see 'qcowctl CMD --help')",
 * one line on stderr. Returns EXIT_USAGE. */
int usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A minimal JSON writer (output.c): values are written as they come, commas handled here. */
struct json {
	FILE *f;
	int depth;
	bool need_comma[32];
	bool pretty;
};
void json_init(struct json *j, FILE *f);
void json_begin_object(struct json *j, const char *key);
void json_end_object(struct json *j);
void json_begin_array(struct json *j, const char *key);
void json_end_array(struct json *j);
void json_string(struct json *j, const char *key, const char *value);
void json_uint(struct json *j, const char *key, uint64_t value);
void json_bool(struct json *j, const char *key, bool value);
void json_finish(struct json *j);

/* "1 GiB", "196 KiB", "0.977 MiB", "512 B": as qemu-img prints sizes (output.c). */
void format_size(uint64_t bytes, char *out, size_t cap);

/* Flags every command shares (common.c). Parse them with common_opt() from getopt_long's loop;
 * COMMON_LONGOPTS adds the long forms to a command's option table. */
enum progress_mode { PROGRESS_AUTO, PROGRESS_FORCE, PROGRESS_QUIET };
enum { OPT_DRY_RUN = 0x100, OPT_JSON };
struct common_opts {
	enum progress_mode progress;
	bool dry_run;
	bool json;
	bool verbose; /* -v: where the job's time went (commands with VERBOSE_LONGOPT) */
};
/* -v, --verbose: the commands that time their phases add it to their table (and 'v' to their
 * short options); progress_end() then prints the phases on stderr. */
#define VERBOSE_LONGOPT                           \
	{                                         \
		"verbose", no_argument, NULL, 'v' \
	}
/* --key IMAGE=KEYFILE (repeatable): the passphrase of an encrypted image, read from a file
 * (never given on the command line). Commands with their own option table add KEY_LONGOPT and
 * pass OPT_KEY to common_opt(). */
enum { OPT_KEY = 0x180 };
#define KEY_LONGOPT                                     \
	{                                               \
		"key", required_argument, NULL, OPT_KEY \
	}
#define COMMON_LONGOPTS                                                          \
	{"progress", no_argument, NULL, 'p'}, {"quiet", no_argument, NULL, 'q'}, \
	    {"dry-run", no_argument, NULL, OPT_DRY_RUN}, KEY_LONGOPT,            \
	{                                                                        \
		"json", no_argument, NULL, OPT_JSON                              \
	}
/* True if @c was one of the shared flags (and stored it in @o). */
bool common_opt(int c, struct common_opts *o);

/* The keys given with --key (common.c): each IMAGE=KEYFILE is parsed and its file read when the
 * option is seen (a malformed value or an unreadable, empty file ends the command with one
 * line). key_for(@path): the passphrase of the image at @path, matched by its real path (as the
 * library resolves images, symlinks followed; an image not created yet by the real path of its
 * directory), or NULL if no --key names it. The keys live in locked memory, wiped at exit. */
struct qcow2_key;
void key_add(const char *arg);
const struct qcow2_key *key_for(const char *path);
/* The same, in the form of a lookup callback (@ctx unused). */
const struct qcow2_key *key_lookup(void *ctx, const char *path);
/* The same keys as the library's chain options and jobs take them (key_for() by path). */
struct qcow2_keys;
const struct qcow2_keys *cli_keys(void);

/* getopt_long() for every command's option loop, the one place options are parsed: returns
 * the next option, -1 after the last, or OPT_BAD once it has printed one line naming an
 * unknown, ambiguous or misused option ("qcowctl @cmd: unknown option '-l' (see 'qcowctl @cmd
 * --help')"), where the caller returns EXIT_USAGE. qemu-img's "-f qcow2" is taken (and any
 * other format refused) unless @shortopts has 'f', and "--output=json|human" wherever
 * @longopts has "json" (returned as that option). getopt's own messages are off. A caller never moves
 * optind itself (past argc, glibc's getopt reads beyond argv and never returns -1). */
enum { OPT_BAD = '?' };
int next_option(int argc, char **argv, const char *shortopts, const struct option *longopts,
		const char *cmd);

/* A progress bar on stderr: shown on a terminal, or always with -p, never with -q. It shows
 * the share done, the bytes, the rate since the start and the time left at that rate. */
struct progress {
	const char *what;
	bool on, drawn;
	uint64_t done, total;
	double last;
	double start; /* when progress_init() ran (CLOCK_MONOTONIC seconds) */
	bool verbose; /* -v: job_init() asks the job for @times, progress_end() prints them */
	struct qcow2_job_times times;
};
void progress_init(struct progress *p, const struct common_opts *o, const char *what);
void progress_update(struct progress *p, uint64_t done, uint64_t total);
/* Draw the final state and end the line (if anything was drawn). */
void progress_end(struct progress *p);

/* SIGINT, SIGTERM and SIGHUP set a flag instead of killing the process: long work polls it
 * (through a qcow2_job) and stops at a safe point, leaving every image valid. */
void catch_interrupts(void);
bool was_interrupted(void);
struct qcow2_job;
/* A job whose progress goes to @p and which is cancelled by an interrupt. */
void job_init(struct qcow2_job *job, struct progress *p);

/* Open the chain of @path with its top writable and QEMU's write locks taken: refused with
 * -EBUSY naming the holder if another process (the mounted daemon included) writes it. */
struct qcow2_chain;
int open_for_write(const char *path, struct qcow2_chain **out);
/* Flush and close @c (NULL: nothing); returns @r, or the flush's error if @r was 0. */
int finish_write(struct qcow2_chain *c, int r);
/* Print the library's last error ("interrupted" after a signal) and return EXIT_FAIL. */
int fail_lib(void);

/* Split IMAGE[@SNAP]: the whole argument if such a file exists, else the longest part before an
 * '@' that names an existing file. *@path and *@snap (NULL: none) are allocated. */
int split_image_snapshot(const char *arg, char **path, char **snap);

/* Print a job's plan (what it did, or with --dry-run what it would do): text or JSON. */
struct qcow2_plan;
void print_job_plan(const struct qcow2_plan *p, const struct common_opts *o);

int cmd_info(int argc, char **argv);
int cmd_commit(int argc, char **argv);
int cmd_pull(int argc, char **argv);
int cmd_rebase(int argc, char **argv);
int cmd_copy(int argc, char **argv);
/* snapshot create --external (cmd-snapshot-external.c) */
int snapshot_create_external(int argc, char **argv);
/* snapshot revert|delete --external (cmd-snapshot-external.c), list --tree (cmd-snapshot-tree.c) */
int snapshot_revert_external(int argc, char **argv);
int snapshot_delete_external(int argc, char **argv);
int snapshot_list_tree(int argc, char **argv);

/* create and resize (cmd-create.c, cmd-resize.c) */
/* A size as qemu-img reads one: digits, an optional fraction and a suffix b, k/K, M, G, T, P
 * or E (powers of 1024; no suffix: bytes). 0, -EINVAL or -ERANGE (over 2^63 - 1). */
int parse_size(const char *s, uint64_t *out);
/* -o KEY=VALUE,...: each item to @one (a negative return stops: a usage error for @cmd was
 * printed). @list is modified; its strings stay in use. 0 or -1. */
int parse_o_list(const char *cmd, char *list,
		 int (*one)(void *ctx, const char *key, const char *val), void *ctx);
/* One of create's -o options that describe the image's layout (cluster_size, compat,
 * refcount_bits, lazy_refcounts, extended_l2, preallocation) into @o: 0, 1 when @key is none
 * of them (nothing printed), -1 after a usage error for @cmd. */
struct qcow2_create_opts;
int parse_create_option(const char *cmd, struct qcow2_create_opts *o, const char *key,
			const char *val);
int cmd_create(int argc, char **argv);
/* -o OPTIONS as create reads them (cmd-create.c, the one parser of image options), for another
 * command @cmd (convert): "key=value,..." into @o, with @o->set telling which were given;
 * backing_file= and backing_fmt= go to *@backing and *@backing_fmt, size= is refused. @list is
 * modified and its strings stay in use. -1 after printing one line. */
struct qcow2_create_opts;
int parse_image_options(char *list, const char *cmd, struct qcow2_create_opts *o,
			const char **backing, const char **backing_fmt);
int cmd_resize(int argc, char **argv);
int cmd_snapshot(int argc, char **argv);
int cmd_check(int argc, char **argv);
/* qcowctl inspect */
int cmd_map(int argc, char **argv);
int cmd_checksum(int argc, char **argv);
int cmd_tree(int argc, char **argv);
/* qcowctl bitmap (cmd-bitmap.c), and the bitmap listing info shares */
struct qcow2_image;
struct qcow2_bitmap;
int cmd_bitmap(int argc, char **argv);
/* The bitmaps of @img (named @path in warnings), read leniently: an entry QEMU refuses is kept,
 * with a warning on stderr saying why. Free with qcow2_bitmaps_free(). */
int bitmaps_load(struct qcow2_image *img, const char *path, struct qcow2_bitmap **b, uint32_t *n);
/* The "bitmaps:" block of qemu-img info's text, each line after @indent (nothing when @n is 0). */
void bitmaps_print_text(const struct qcow2_bitmap *b, uint32_t n, const char *indent);
/* qcowctl map --bitmap NAME: the dirty extents of bitmap @name of @path, in the JSON shape
 * qemu-img map prints for an export of it through qemu-nbd (x-dirty-bitmap), or as text. */
int bitmap_map(const char *path, const char *name, bool json, bool force_share);
/* copy --bitmaps: with @dst NULL, check before a copy that every bitmap of @src can be copied
 * (none in use, unless @skip_broken); else copy them into @dst, as qemu-img convert --bitmaps. */
int bitmaps_copy(const char *src, const char *dst, bool skip_broken);
/* The "bitmaps" array of qemu-img info's JSON (nothing when @n is 0). */
void bitmaps_print_json(struct json *j, const struct qcow2_bitmap *b, uint32_t n);
int cmd_measure(int argc, char **argv);
/* The control socket's client (ctl.c): qcowctl mounts, qcowctl job list|cancel. */
int cmd_mounts(int argc, char **argv);
int cmd_job(int argc, char **argv);
/* Take --offline out of the command line of a command that can be forwarded (before any
 * "--"): it then never is. Returns the new argc. */
int ctl_take_offline(int argc, char **argv);
/* The image at @path is held by another process: if a qcowfs mount serves it (one of its
 * open views reads that file), run @argv (@argc words: the command's words, then its
 * operands, the image's path absolute) in that daemon, printing its messages and progress
 * (@p, unless NULL) and handing each result record ("key=value" lines) to @record. The exit
 * status, or -1 when no mount serves it or with --offline (the caller refuses as always). */
struct progress;
int ctl_forward(const char *path, int argc, char **argv, void (*record)(void *ctx, const char *rec),
		void *ctx, struct progress *p);
/* The value of @key in record @rec into @out (NULL when absent). */
const char *ctl_rec_get(const char *rec, const char *key, char *out, size_t cap);
int cmd_compare(int argc, char **argv);
int cmd_amend(int argc, char **argv);
/* live.c: the image is held by another process: if a qcowfs mount serves it, run @argv (the
 * words of the daemon's live handler, paths absolute) there, printing its progress and then
 * its plan as the offline command prints its own. The exit status, or -1 when no mount serves
 * @image (the caller refuses as always). */
int live_forward(const char *image, int argc, char **argv, const struct common_opts *co,
		 const char *what);
/* @path made absolute (its directory resolved when the file does not exist). 0 or -1. */
int live_abs_path(const char *path, char *out, size_t cap);
/* A layer named as commit and pull take it (a path, or a name relative to @image's directory)
 * made absolute. 0 or -1. */
int live_layer_path(const char *image, const char *name, char *out, size_t cap);

#endif
