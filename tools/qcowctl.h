/* SPDX-License-Identifier: MIT */
/*
 * qcowctl.h - shared declarations of the qcowctl command-line tool: argument parsing and
 * output only; every fact about an image comes from format/ (qcow2.h).
 */
#ifndef QCOWCTL_H
#define QCOWCTL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

enum qcowctl_exit {
	EXIT_OK = 0,
	EXIT_FAIL = 1,
	EXIT_CORRUPT = 2,
	EXIT_LEAKS = 3,
	EXIT_USAGE = 64,
};

/* Print "qcowctl: MESSAGE" to stderr. */
void error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* error(), then exit with @code. */
void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

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

/* "1 GiB", "196 KiB", "512 B": as qemu-img prints sizes. */
void format_size(uint64_t bytes, char *out, size_t cap);

int cmd_info(int argc, char **argv);

#endif
