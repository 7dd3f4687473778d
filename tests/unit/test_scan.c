/* SPDX-License-Identifier: MIT */
/*
 * test_scan.c - qcow2_dir_scan() on real directories (mkdtemp()): which files are listed
 * (qcow2 images, raw files used as backing, not other files), backing names resolved from each
 * image's directory, missing backing files, malformed images recorded and not fatal, symlinked
 * files listed once, symlink loops, fifos skipped, and qcow2_dir_users_of().
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imgbuild.h"
#include "testutil.h"
#include "qcow2.h"

static char dir[64];
static struct qcow2_dir_image *v;
static size_t n;

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/qcowfs-scan-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	v = NULL;
	n = 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void teardown(void)
{
	qcow2_dir_images_free(v, n);
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(scan, .init = setup, .fini = teardown);

static const char *path_of(const char *name)
{
	static char bufs[4][PATH_MAX];
	static int next;
	char *p = bufs[next++ % 4];

	snprintf(p, PATH_MAX, "%s/%s", dir, name);
	return p;
}

/* A 1 MiB image (4 KiB clusters) with @snapshots internal snapshots, saved as @name. */
static void save_image(const char *name, const char *backing, const char *fmt, int snapshots)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct imgbuild *img;
	int i;

	o.size = 1 << 20;
	o.cluster_bits = 12;
	o.backing_file = backing;
	o.backing_fmt = fmt;
	img = imgbuild_new(&o);
	cr_assert_eq(imgbuild_fill(img, 4096, 0x5a, 4096), 0);
	for (i = 0; i < snapshots; i++)
		cr_assert_eq(imgbuild_snapshot_add(img, NULL), 0);
	cr_assert_eq(imgbuild_save(img, path_of(name)), 0);
	imgbuild_free(img);
}

static void save_bytes(const char *name, const void *bytes, size_t len)
{
	cr_assert_eq(imgbuild_write_file(path_of(name), bytes, len), 0);
}

static void scan(void)
{
	cr_assert_eq(qcow2_dir_scan(dir, &v, &n), 0, "%s", qcow2_last_error());
}

/* The entry for @name, failing the test if it is not listed. */
static const struct qcow2_dir_image *entry(const char *name)
{
	char canon[PATH_MAX];
	size_t i;

	cr_assert_not_null(realpath(path_of(name), canon), "%s", name);
	for (i = 0; i < n; i++)
		if (strcmp(v[i].path, canon) == 0)
			return &v[i];
	cr_assert_fail("'%s' not listed", name);
	return NULL;
}

static bool listed_name(const char *name)
{
	size_t i, len = strlen(name);

	for (i = 0; i < n; i++) {
		size_t pl = strlen(v[i].path);
		if (pl > len && v[i].path[pl - len - 1] == '/' &&
		    strcmp(v[i].path + pl - len, name) == 0)
			return true;
	}
	return false;
}

static void expect_backing(const char *name, const char *backing_name)
{
	char canon[PATH_MAX];
	const struct qcow2_dir_image *e = entry(name);

	cr_assert_not_null(realpath(path_of(backing_name), canon));
	cr_assert_not_null(e->backing, "%s has no backing", name);
	cr_assert_str_eq(e->backing, canon);
	cr_assert_eq(e->backing_err, 0);
}

Test(scan, lists_images_and_resolves_backing_from_each_images_directory)
{
	cr_assert_eq(mkdir(path_of("sub"), 0755), 0);
	save_image("base.qcow2", NULL, NULL, 2);
	save_image("ov1.qcow2", "base.qcow2", "qcow2", 0);
	save_image("sub/ov2.qcow2", "../base.qcow2", NULL, 1);
	save_image("sub/ov3.qcow2", path_of("sub/ov2.qcow2"), "qcow2", 0);
	scan();
	cr_assert_eq(n, 4);
	for (size_t i = 1; i < n; i++)
		cr_assert_lt(strcmp(v[i - 1].path, v[i].path), 0, "sorted by path");
	cr_assert(entry("base.qcow2")->qcow2);
	cr_assert_null(entry("base.qcow2")->backing);
	cr_assert_null(entry("base.qcow2")->backing_fmt);
	cr_assert_eq(entry("base.qcow2")->nb_snapshots, 2);
	cr_assert_eq(entry("sub/ov2.qcow2")->nb_snapshots, 1);
	expect_backing("ov1.qcow2", "base.qcow2");
	cr_assert_str_eq(entry("ov1.qcow2")->backing_fmt, "qcow2");
	expect_backing("sub/ov2.qcow2", "base.qcow2");
	cr_assert_null(entry("sub/ov2.qcow2")->backing_fmt);
	expect_backing("sub/ov3.qcow2", "sub/ov2.qcow2");
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(v[i].err, 0, "%s", v[i].path);
}

Test(scan, raw_files_are_listed_only_when_used_as_backing)
{
	static const char junk[] = "not an image, nobody's backing file";
	uint8_t raw[8192];

	memset(raw, 0x77, sizeof(raw));
	save_bytes("disk.raw", raw, sizeof(raw));
	save_bytes("notes.txt", junk, sizeof(junk));
	save_bytes("empty", "", 0);
	save_image("ov.qcow2", "disk.raw", "raw", 0);
	scan();
	cr_assert_eq(n, 2);
	cr_assert_not(entry("disk.raw")->qcow2);
	cr_assert_eq(entry("disk.raw")->err, 0);
	cr_assert_null(entry("disk.raw")->backing);
	expect_backing("ov.qcow2", "disk.raw");
	cr_assert_str_eq(entry("ov.qcow2")->backing_fmt, "raw");
	cr_assert_not(listed_name("notes.txt"));
	cr_assert_not(listed_name("empty"));
}

Test(scan, a_missing_backing_file_is_noted_with_its_joined_name)
{
	char want[PATH_MAX];
	const struct qcow2_dir_image *e;

	save_image("orphan.qcow2", "gone/base.qcow2", NULL, 0);
	scan();
	cr_assert_eq(n, 1);
	e = entry("orphan.qcow2");
	cr_assert_eq(e->err, 0);
	cr_assert_eq(e->backing_err, -ENOENT);
	cr_assert_not_null(realpath(dir, want));
	strcat(want, "/gone/base.qcow2");
	cr_assert_str_eq(e->backing, want);
}

Test(scan, a_malformed_image_is_recorded_and_the_scan_goes_on)
{
	struct imgbuild *img = imgbuild_new(NULL);
	uint8_t magic_only[512] = {'Q', 'F', 'I', 0xfb, 0, 0, 0, 3};

	imgbuild_put_be32(img, 20, 30); /* cluster_bits 30: out of range */
	cr_assert_eq(imgbuild_save(img, path_of("bad.qcow2")), 0);
	imgbuild_free(img);
	save_bytes("short.qcow2", magic_only, sizeof(magic_only));
	save_image("good.qcow2", NULL, NULL, 0);
	scan();
	cr_assert_eq(n, 3);
	cr_assert(entry("bad.qcow2")->qcow2);
	cr_assert_eq(entry("bad.qcow2")->err, -EINVAL);
	cr_assert(entry("short.qcow2")->qcow2);
	cr_assert_lt(entry("short.qcow2")->err, 0);
	cr_assert_eq(entry("good.qcow2")->err, 0);
	cr_assert_str_eq(qcow2_last_error(), "", "a bad file is no failure of the scan");
}

Test(scan, symlinks_are_followed_once_and_loops_end)
{
	char target[PATH_MAX];

	cr_assert_eq(mkdir(path_of("d"), 0755), 0);
	save_image("d/base.qcow2", NULL, NULL, 0);
	save_image("top.qcow2", "base-link.qcow2", NULL, 0);
	snprintf(target, sizeof(target), "%s", "d/base.qcow2");
	cr_assert_eq(symlink(target, path_of("base-link.qcow2")), 0);
	cr_assert_eq(symlink("..", path_of("d/up")), 0);   /* a loop back to the top */
	cr_assert_eq(symlink("d", path_of("d-again")), 0); /* the same directory twice */
	cr_assert_eq(symlink("nowhere", path_of("dangling")), 0);
	cr_assert_eq(mkfifo(path_of("fifo"), 0644), 0); /* opening it would block */
	scan();
	cr_assert_eq(n, 2);
	cr_assert(entry("d/base.qcow2")->qcow2);
	expect_backing("top.qcow2", "d/base.qcow2");
}

Test(scan, users_of_names_the_images_backed_by_a_file)
{
	size_t idx[4], got;

	cr_assert_eq(mkdir(path_of("sub"), 0755), 0);
	save_image("base.qcow2", NULL, NULL, 0);
	save_image("a.qcow2", "base.qcow2", NULL, 0);
	save_image("sub/b.qcow2", "../base.qcow2", NULL, 0);
	save_image("c.qcow2", "a.qcow2", NULL, 0);
	scan();
	got = qcow2_dir_users_of(v, n, path_of("sub/../base.qcow2"), idx, 4);
	cr_assert_eq(got, 2);
	cr_assert_eq(&v[idx[0]], entry("a.qcow2"));
	cr_assert_eq(&v[idx[1]], entry("sub/b.qcow2"));
	cr_assert_eq(qcow2_dir_users_of(v, n, path_of("base.qcow2"), NULL, 0), 2, "count only");
	got = qcow2_dir_users_of(v, n, path_of("a.qcow2"), idx, 1);
	cr_assert_eq(got, 1);
	cr_assert_eq(&v[idx[0]], entry("c.qcow2"));
	cr_assert_eq(qcow2_dir_users_of(v, n, path_of("c.qcow2"), idx, 4), 0);
	cr_assert_eq(qcow2_dir_users_of(v, n, path_of("missing"), idx, 4), 0);
}

Test(scan, an_unreadable_file_is_recorded)
{
	if (geteuid() == 0)
		cr_skip_test("root reads files without read permission");
	save_image("locked.qcow2", NULL, NULL, 0);
	cr_assert_eq(chmod(path_of("locked.qcow2"), 0), 0);
	scan();
	cr_assert_eq(n, 1);
	cr_assert_eq(entry("locked.qcow2")->err, -EACCES);
	cr_assert_not(entry("locked.qcow2")->qcow2);
}

Test(scan, an_empty_directory_gives_nothing)
{
	scan();
	cr_assert_eq(n, 0);
	cr_assert_null(v);
}

Test(scan, a_missing_directory_fails_naming_it)
{
	cr_assert_eq(qcow2_dir_scan(path_of("nope"), &v, &n), -ENOENT);
	assert_error_mentions("nope");
	cr_assert_eq(n, 0);
}

Test(scan, a_file_is_not_a_directory)
{
	save_image("x.qcow2", NULL, NULL, 0);
	cr_assert_eq(qcow2_dir_scan(path_of("x.qcow2"), &v, &n), -ENOTDIR);
	assert_error_mentions("x.qcow2");
}
