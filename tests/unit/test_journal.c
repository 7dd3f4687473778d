/* SPDX-License-Identifier: MIT */
/*
 * test_journal.c - the journals that let a rerun complete an interrupted job (journal.c), in a
 * mkdtemp() directory: where a journal lives, that what is written is read back whole, that a
 * rewrite replaces it and leaves no temporary file, that removing it twice is fine, and that a
 * FIFO or a symlink put in its place is refused at once rather than blocking or followed.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base.h"

static char dir[64];
static char image[128];
static char journal[PATH_MAX];

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/qcowfs-journal-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(image, sizeof(image), "%s/disk.qcow2", dir);
	cr_assert_eq(qcow2_journal_path(image, "test", journal, sizeof(journal)), 0);
}

static void teardown(void)
{
	unlink(journal);
	cr_assert_eq(rmdir(dir), 0, "the directory holds more than the journal");
}

TestSuite(journal, .init = setup, .fini = teardown);

Test(journal, lives_hidden_next_to_its_image)
{
	char want[PATH_MAX], out[PATH_MAX];

	snprintf(want, sizeof(want), "%s/.disk.qcow2.qcowctl-test", dir);
	cr_assert_str_eq(journal, want);
	cr_assert_eq(qcow2_journal_path("disk.qcow2", "commit", out, sizeof(out)), 0);
	cr_assert_str_eq(out, "./.disk.qcow2.qcowctl-commit");
	cr_assert_eq(qcow2_journal_path(image, "test", out, 10), -ENAMETOOLONG);
}

Test(journal, none_reads_as_none)
{
	char *text = (char *)1;

	cr_assert_eq(qcow2_journal_read(journal, &text), 0);
	cr_assert_null(text);
	cr_assert_eq(qcow2_journal_remove(journal), 0);
}

Test(journal, what_is_written_is_read_back_and_a_rewrite_replaces_it)
{
	char tmp[PATH_MAX + 8], *text;
	struct stat st;

	cr_assert_eq(qcow2_journal_write(journal, "first line\nsecond line\n"), 0);
	cr_assert_eq(qcow2_journal_read(journal, &text), 1);
	cr_assert_str_eq(text, "first line\nsecond line\n");
	free(text);
	cr_assert_eq(qcow2_journal_write(journal, "short\n"), 0);
	cr_assert_eq(qcow2_journal_read(journal, &text), 1);
	cr_assert_str_eq(text, "short\n");
	free(text);
	snprintf(tmp, sizeof(tmp), "%s.tmp", journal);
	cr_assert_neq(access(tmp, F_OK), 0, "the temporary file was left");
	cr_assert_eq(stat(journal, &st), 0);
	cr_assert_eq(st.st_mode & 077, 0, "readable by others: %o", st.st_mode);
	cr_assert_eq(qcow2_journal_remove(journal), 0);
	cr_assert_neq(access(journal, F_OK), 0);
	cr_assert_eq(qcow2_journal_remove(journal), 0, "removing it twice");
	cr_assert_eq(qcow2_journal_read(journal, &text), 0);
}

Test(journal, a_fifo_in_its_place_is_refused_without_blocking, .timeout = 10)
{
	char *text = NULL;

	cr_assert_eq(mkfifo(journal, 0600), 0);
	cr_assert_eq(qcow2_journal_read(journal, &text), -EINVAL);
	cr_assert_null(text);
	cr_assert_str_neq(qcow2_last_error(), "");
}

Test(journal, a_symlink_in_its_place_is_not_followed)
{
	char target[PATH_MAX + 8], *text = NULL;

	snprintf(target, sizeof(target), "%s/target", dir);
	cr_assert_eq(symlink(target, journal), 0);
	cr_assert_lt(qcow2_journal_read(journal, &text), 0);
	cr_assert_null(text);
	cr_assert_eq(qcow2_journal_write(journal, "x\n"), 0);
	cr_assert_neq(access(target, F_OK), 0, "written through the symlink");
	cr_assert_eq(qcow2_journal_read(journal, &text), 1, "the rename replaced the symlink");
	free(text);
}
