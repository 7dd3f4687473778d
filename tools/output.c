/* SPDX-License-Identifier: MIT */
/*
 * output.c - what qcowctl prints: errors, JSON, human-readable sizes.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "qcowctl.h"

static void verror(const char *fmt, va_list ap)
{
	fputs("qcowctl: ", stderr);
	vfprintf(stderr, fmt, ap);
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
