/* SPDX-License-Identifier: MIT */
/*
 * testutil.h - assertions shared by the Criterion unit tests.
 */
#ifndef TESTUTIL_H
#define TESTUTIL_H

#include <criterion/criterion.h>
#include <string.h>

#include "qcow2.h"

/* The library's last error message contains @text (errors must say what and where). */
#define assert_error_mentions(text)                                                    \
	cr_assert(strstr(qcow2_last_error(), (text)) != NULL, "error '%s' lacks '%s'", \
		  qcow2_last_error(), (text))

#endif
