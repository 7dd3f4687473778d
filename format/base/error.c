/* SPDX-License-Identifier: MIT */
/*
 * error.c - the thread-local error message.
 *
 * Errors are recorded once, where they are found, with qcow2_set_error(); callers higher up
 * return the code unchanged so the first (most precise) message survives. fs/ and tools/ print
 * it; nothing in format/ does.
 *
 * Locks: none (the message is per thread).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/base.h"

static __thread char last_error[512];

int qcow2_set_error(int err, const char *fmt, ...)
{
	char buf[sizeof(last_error)];
	va_list ap;

	/* Format into a copy: the arguments may include qcow2_last_error() itself. */
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	memcpy(last_error, buf, sizeof(buf));
	return err;
}

int qcow2_oom(void)
{
	return qcow2_set_error(-ENOMEM, "out of memory");
}

int qcow2_oom_for(const char *fmt, ...)
{
	char what[sizeof(last_error)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	return qcow2_set_error(-ENOMEM, "out of memory for %s", what);
}

int qcow2_error_prefix(int err, const char *name)
{
	size_t n = strlen(name);

	if (last_error[0] == '\'' && strncmp(last_error + 1, name, n) == 0 &&
	    last_error[n + 1] == '\'')
		return err;
	return qcow2_set_error(err, "'%s': %s", name, last_error);
}

const char *qcow2_last_error(void)
{
	return last_error;
}

void qcow2_clear_error(void)
{
	last_error[0] = '\0';
}
