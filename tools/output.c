/* SPDX-License-Identifier: MIT */
/*
 * output.c - what qcowctl prints: errors, JSON, human-readable sizes.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "qcowctl.h"

/* The command's operands as typed and as the library names them (resolved): every message
 * spells a file the way its user typed it (remember_operands()). */
#define MAX_OPERANDS 8
static struct {
	const char *typed;
	char *real;
} operands[MAX_OPERANDS];
static unsigned n_operands;

void remember_operands(int argc, char **argv, int first)
{
	char *real;
	int i;

	for (i = first; i < argc && n_operands < MAX_OPERANDS; i++) {
		real = realpath(argv[i], NULL);
		if (real && strcmp(real, argv[i]) != 0) {
			operands[n_operands].typed = argv[i];
			operands[n_operands++].real = real;
		} else {
			free(real);
		}
	}
}

/* @msg with each "'RESOLVED'" of an operand written "'TYPED'". */
static void put_spelled(FILE *f, const char *msg)
{
	const char *p = msg;
	unsigned i;
	size_t len;

	while (*p) {
		for (i = 0; i < n_operands; i++) {
			len = strlen(operands[i].real);
			if (p[0] == '\'' && !strncmp(p + 1, operands[i].real, len) &&
			    p[len + 1] == '\'')
				break;
		}
		if (i < n_operands) {
			fprintf(f, "'%s'", operands[i].typed);
			p += len + 2;
		} else {
			fputc(*p++, f);
		}
	}
}

static void verror(const char *fmt, va_list ap)
{
	char msg[4096];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	fputs("qcowctl: ", stderr);
	put_spelled(stderr, msg);
	fputc('\n', stderr);
}

void error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	verror(fmt, ap);
	va_end(ap);
}

void die(int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	verror(fmt, ap);
	va_end(ap);
	exit(code);
}

void json_init(struct json *j, FILE *f)
{
	memset(j, 0, sizeof(*j));
	j->f = f;
	j->pretty = true;
}

static void indent(struct json *j)
{
	int i;

	if (!j->pretty)
		return;
	fputc('\n', j->f);
	for (i = 0; i < j->depth; i++)
		fputs("    ", j->f);
}

static void put_escaped(FILE *f, const char *s)
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

static void key(struct json *j, const char *k)
{
	if (j->depth > 0 && j->need_comma[j->depth])
		fputc(',', j->f);
	if (j->depth > 0)
		indent(j);
	j->need_comma[j->depth] = true;
	if (k) {
		put_escaped(j->f, k);
		fputs(": ", j->f);
	}
}

static void begin(struct json *j, const char *k, char open)
{
	key(j, k);
	fputc(open, j->f);
	if (j->depth < 31)
		j->depth++;
	j->need_comma[j->depth] = false;
}

static void end(struct json *j, char close)
{
	bool had = j->need_comma[j->depth];

	j->depth--;
	if (had)
		indent(j);
	fputc(close, j->f);
}

void json_begin_object(struct json *j, const char *k)
{
	begin(j, k, '{');
}

void json_end_object(struct json *j)
{
	end(j, '}');
}

void json_begin_array(struct json *j, const char *k)
{
	begin(j, k, '[');
}

void json_end_array(struct json *j)
{
	end(j, ']');
}

void json_string(struct json *j, const char *k, const char *value)
{
	key(j, k);
	put_escaped(j->f, value);
}

void json_uint(struct json *j, const char *k, uint64_t value)
{
	key(j, k);
	fprintf(j->f, "%" PRIu64, value);
}

void json_bool(struct json *j, const char *k, bool value)
{
	key(j, k);
	fputs(value ? "true" : "false", j->f);
}

void json_finish(struct json *j)
{
	fputc('\n', j->f);
}

/* qemu-img's rule (size_to_str()): the largest unit the size is at least 1000 of... less one:
 * a value of 1000 units or more is written in the next unit ("0.977 MiB", not "1000 KiB"),
 * with three significant digits. Where qemu-img's "%.3g" rounds up to 1000 (999.5 units and
 * above: it prints "1e+03 KiB"), the next unit is taken too ("0.976 MiB"): never an exponent. */
void format_size(uint64_t bytes, char *out, size_t cap)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
	double v = (double)bytes;
	int u = 0;

	while (v >= 999.5 && u < 6) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(out, cap, "%" PRIu64 " B", bytes);
	else
		snprintf(out, cap, "%.3g %s", v, units[u]);
}
