/* SPDX-License-Identifier: MIT */
/*
 * test_path.c - how the library reaches files: qcow2_file_open() (io.c) never blocks
 * and admits only regular files (block devices on request), qcow2_path_resolve() (path.c)
 * resolves like realpath() but refuses a path through a forbidden directory before looking it
 * up, and chains confine their top image, backing and data files and never open a FIFO. Each
 * test works in its own mkdtemp() directory; tests that could hang on the old code have a
 * timeout, so a hang fails.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imgbuild.h"
#include "qcow2.h"

static char dir[64];

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/qcowfs-path-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
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
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(path, .init = setup, .fini = teardown);

static const char *at(const char *name)
{
	static char bufs[4][PATH_MAX];
	static int next;
	char *p = bufs[next++ % 4];

	snprintf(p, PATH_MAX, "%s/%s", dir, name);
	return p;
}

static void make_file(const char *name, const char *text)
{
	cr_assert_eq(imgbuild_write_file(at(name), text, strlen(text)), 0);
}

static void assert_error_mentions(const char *what)
{
	cr_assert(strstr(qcow2_last_error(), what), "error '%s' does not mention '%s'",
		  qcow2_last_error(), what);
}

/* ---- qcow2_file_open() ---- */

Test(path, regular_files_open_without_o_nonblock)
{
	int fd;

	make_file("f", "data");
	fd = qcow2_file_open(at("f"), QCOW2_OPEN_WRITE);
	cr_assert_geq(fd, 0, "%s", qcow2_last_error());
	cr_assert_eq(fcntl(fd, F_GETFL) & (O_NONBLOCK | O_ACCMODE), O_RDWR);
	cr_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	close(fd);
}

/* On the old code the open itself waited for a writer forever: the timeout fails it. */
Test(path, a_fifo_is_refused_without_blocking, .timeout = 10)
{
	struct qcow2_io *io = NULL;

	cr_assert_eq(mkfifo(at("pipe"), 0600), 0);
	cr_assert_eq(qcow2_io_open_file(at("pipe"), false, &io), -EINVAL);
	assert_error_mentions(at("pipe"));
	assert_error_mentions("FIFO");
	cr_assert_eq(qcow2_file_open(at("pipe"), QCOW2_OPEN_WRITE | QCOW2_OPEN_BLOCKDEV), -EINVAL);
}

Test(path, directories_and_character_devices_are_refused)
{
	cr_assert_eq(mkdir(at("d"), 0700), 0);
	cr_assert_eq(qcow2_file_open(at("d"), 0), -EISDIR);
	assert_error_mentions("directory");
	cr_assert_eq(qcow2_file_open("/dev/null", QCOW2_OPEN_BLOCKDEV), -EINVAL);
	assert_error_mentions("character device");
}

Test(path, nofollow_refuses_a_symlink_only_when_asked)
{
	int fd;

	make_file("f", "data");
	cr_assert_eq(symlink("f", at("l")), 0);
	fd = qcow2_file_open(at("l"), 0);
	cr_assert_geq(fd, 0, "%s", qcow2_last_error());
	close(fd);
	cr_assert_eq(qcow2_file_open(at("l"), QCOW2_OPEN_NOFOLLOW), -ELOOP);
	assert_error_mentions(at("l"));
}

/* The first block device this process may read, or NULL. */
static const char *find_block_device(char *buf, size_t cap)
{
	struct dirent *d;
	struct stat st;
	DIR *dp = opendir("/dev");

	if (!dp)
		return NULL;
	while ((d = readdir(dp))) {
		snprintf(buf, cap, "/dev/%s", d->d_name);
		if (stat(buf, &st) == 0 && S_ISBLK(st.st_mode) && access(buf, R_OK) == 0) {
			closedir(dp);
			return buf;
		}
	}
	closedir(dp);
	return NULL;
}

Test(path, block_devices_only_when_the_caller_allows_them)
{
	char buf[PATH_MAX];
	const char *dev = find_block_device(buf, sizeof(buf));
	int fd;

	if (!dev)
		cr_skip_test("no readable block device");
	cr_assert_eq(qcow2_file_open(dev, 0), -EINVAL);
	assert_error_mentions("block device");
	fd = qcow2_file_open(dev, QCOW2_OPEN_BLOCKDEV);
	if (fd == -ENXIO || fd == -ENOMEDIUM)
		cr_skip_test("%s has no medium", dev);
	cr_assert_geq(fd, 0, "%s", qcow2_last_error());
	close(fd);
}

/* ---- qcow2_path_resolve() ---- */

static void assert_resolves_like_realpath(const char *path)
{
	char want[PATH_MAX], got[PATH_MAX];

	cr_assert_not_null(realpath(path, want), "realpath(%s)", path);
	cr_assert_eq(qcow2_path_resolve(path, NULL, got, sizeof(got)), 0, "%s", qcow2_last_error());
	cr_assert_str_eq(got, want, "resolving %s", path);
}

Test(path, resolves_as_realpath_does)
{
	char cwd[PATH_MAX];

	cr_assert_eq(mkdir(at("a"), 0700), 0);
	cr_assert_eq(mkdir(at("a/b"), 0700), 0);
	make_file("a/b/f", "x");
	cr_assert_eq(symlink("b", at("a/lb")), 0);
	cr_assert_eq(symlink("../a/lb/f", at("a/rel")), 0);
	cr_assert_eq(symlink(at("a/rel"), at("abs")), 0);
	cr_assert_eq(symlink("a/lb/", at("dirlink")), 0);
	assert_resolves_like_realpath(at("a/b/f"));
	assert_resolves_like_realpath(at("a/./b/../b//f"));
	assert_resolves_like_realpath(at("a/lb/f"));
	assert_resolves_like_realpath(at("a/rel"));
	assert_resolves_like_realpath(at("abs"));
	assert_resolves_like_realpath(at("dirlink/../b/f"));
	assert_resolves_like_realpath(at("dirlink"));
	assert_resolves_like_realpath(at("a/b/"));
	assert_resolves_like_realpath(at("a/lb//"));
	assert_resolves_like_realpath("/");
	cr_assert_not_null(getcwd(cwd, sizeof(cwd)));
	cr_assert_eq(chdir(at("a")), 0);
	assert_resolves_like_realpath("lb/f");
	assert_resolves_like_realpath("..");
	cr_assert_eq(chdir(cwd), 0);
}

Test(path, errors_are_those_of_realpath)
{
	char out[PATH_MAX];

	make_file("f", "x");
	cr_assert_eq(symlink("loop2", at("loop1")), 0);
	cr_assert_eq(symlink("loop1", at("loop2")), 0);
	cr_assert_eq(qcow2_path_resolve(at("missing"), NULL, out, sizeof(out)), -ENOENT);
	assert_error_mentions(at("missing"));
	cr_assert_eq(qcow2_path_resolve(at("f/x"), NULL, out, sizeof(out)), -ENOTDIR);
	cr_assert_eq(qcow2_path_resolve(at("f/"), NULL, out, sizeof(out)), -ENOTDIR);
	cr_assert_eq(qcow2_path_resolve(at("loop1"), NULL, out, sizeof(out)), -ELOOP);
	cr_assert_eq(qcow2_path_resolve(at("f"), NULL, out, 4), -ENAMETOOLONG);
}

/* The directory to avoid need not even exist: it is refused by name, before any lookup, which
 * is what keeps the daemon from waiting on its own mount. */
Test(path, a_path_through_the_avoided_directory_is_refused_before_lookup)
{
	char avoid[PATH_MAX], out[PATH_MAX];

	snprintf(avoid, sizeof(avoid), "%s", at("mnt"));
	cr_assert_eq(qcow2_path_resolve(at("mnt/x/y"), avoid, out, sizeof(out)), -EPERM);
	assert_error_mentions("mount point");
	cr_assert_eq(qcow2_path_resolve(at("mnt"), avoid, out, sizeof(out)), -EPERM);
	cr_assert_eq(qcow2_path_resolve(at("mnt/../f"), avoid, out, sizeof(out)), -EPERM);
	cr_assert_eq(symlink("mnt/x", at("into")), 0);
	cr_assert_eq(symlink(avoid, at("to")), 0);
	cr_assert_eq(qcow2_path_resolve(at("into"), avoid, out, sizeof(out)), -EPERM);
	cr_assert_eq(qcow2_path_resolve(at("to/x"), avoid, out, sizeof(out)), -EPERM);
	/* a sibling sharing the prefix is another directory */
	cr_assert_eq(mkdir(at("mnt2"), 0700), 0);
	cr_assert_eq(qcow2_path_resolve(at("mnt2"), avoid, out, sizeof(out)), 0, "%s",
		     qcow2_last_error());
}

/* ---- chains ---- */

static void save_image(const char *name, const char *backing, const char *fmt,
		       const char *data_file)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct imgbuild *img;

	o.size = 1 << 20;
	o.backing_file = backing;
	o.backing_fmt = fmt;
	o.data_file = data_file;
	img = imgbuild_new(&o);
	cr_assert_not_null(img);
	cr_assert_eq(imgbuild_save(img, at(name)), 0);
	imgbuild_free(img);
}

Test(chain_files, a_fifo_as_backing_file_fails_the_open_at_once, .init = setup, .fini = teardown,
     .timeout = 10)
{
	struct qcow2_chain *c = NULL;

	cr_assert_eq(mkfifo(at("pipe.raw"), 0600), 0);
	save_image("raw.qcow2", "pipe.raw", "raw", NULL);
	save_image("probe.qcow2", "pipe.raw", NULL, NULL);
	cr_assert_eq(qcow2_chain_open(at("raw.qcow2"), NULL, &c), -EINVAL);
	assert_error_mentions("pipe.raw");
	cr_assert_eq(qcow2_chain_open(at("probe.qcow2"), NULL, &c), -EINVAL);
	assert_error_mentions("FIFO");
	cr_assert_null(c);
}

Test(chain_files, a_directory_as_backing_file_is_refused, .init = setup, .fini = teardown)
{
	struct qcow2_chain *c = NULL;

	cr_assert_eq(mkdir(at("dir.raw"), 0700), 0);
	save_image("top.qcow2", "dir.raw", "raw", NULL);
	cr_assert_eq(qcow2_chain_open(at("top.qcow2"), NULL, &c), -EISDIR);
	assert_error_mentions("dir.raw");
}

Test(chain_files, the_top_is_confined_like_a_backing_file, .init = setup, .fini = teardown)
{
	struct qcow2_chain_opts o = {0};
	const char *allow[1];
	struct qcow2_chain *c = NULL;

	cr_assert_eq(mkdir(at("src"), 0700), 0);
	cr_assert_eq(mkdir(at("out"), 0700), 0);
	save_image("out/far.qcow2", NULL, NULL, NULL);
	cr_assert_eq(symlink("../out/far.qcow2", at("src/link.qcow2")), 0);
	o.root = at("src");
	cr_assert_eq(qcow2_chain_open(at("src/link.qcow2"), &o, &c), -EPERM);
	assert_error_mentions("--backing-dir");
	allow[0] = at("out");
	o.allow_dirs = allow;
	o.n_allow_dirs = 1;
	cr_assert_eq(qcow2_chain_open(at("src/link.qcow2"), &o, &c), 0, "%s", qcow2_last_error());
	qcow2_chain_close(c);
}

Test(chain_files, no_backing_name_is_resolved_through_the_mount_point, .init = setup,
     .fini = teardown)
{
	struct qcow2_chain_opts o = {0};
	struct qcow2_chain *c = NULL;
	char mnt[PATH_MAX];

	cr_assert_eq(mkdir(at("mnt"), 0700), 0);
	save_image("mnt/base.qcow2", NULL, NULL, NULL);
	save_image("top.qcow2", "mnt/base.qcow2", "qcow2", NULL);
	snprintf(mnt, sizeof(mnt), "%s", at("mnt"));
	o.mount_point = mnt;
	cr_assert_eq(qcow2_chain_open(at("top.qcow2"), &o, &c), -EPERM);
	assert_error_mentions("mount point");
	cr_assert_eq(qcow2_chain_open(at("mnt/base.qcow2"), &o, &c), -EPERM);
}

Test(chain_files, a_backing_name_in_a_refused_header_is_still_read, .init = setup, .fini = teardown)
{
	struct qcow2_io *io;
	char name[QCOW2_MAX_BACKING_NAME + 1];
	uint8_t bit20[8] = {0, 0, 0, 0, 0, 0x10, 0, 0};
	struct qcow2_header h;
	int fd;

	save_image("top.qcow2", "base.qcow2", "qcow2", NULL);
	fd = open(at("top.qcow2"), O_WRONLY);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pwrite(fd, bit20, 8, 72), 8); /* an unknown incompatible feature */
	close(fd);
	cr_assert_eq(qcow2_io_open_file(at("top.qcow2"), false, &io), 0);
	cr_assert_eq(qcow2_header_read(io, &h), -ENOTSUP);
	cr_assert_eq(qcow2_header_read_backing_name(io, name, sizeof(name)), 1);
	cr_assert_str_eq(name, "base.qcow2");
	qcow2_io_close(io);
	save_image("alone.qcow2", NULL, NULL, NULL);
	cr_assert_eq(qcow2_io_open_file(at("alone.qcow2"), false, &io), 0);
	cr_assert_eq(qcow2_header_read_backing_name(io, name, sizeof(name)), 0);
	qcow2_io_close(io);
}

/* A canonical path is used following no symlink: a directory on it swapped for a symlink
 * since it was resolved (say into the daemon's mount) fails the open instead of leading there. */
Test(path, canonical_paths_follow_no_symlink_put_in_their_way)
{
	char canon[PATH_MAX];
	struct stat st;
	int fd;

	cr_assert_eq(mkdir(at("a"), 0700), 0);
	cr_assert_eq(mkdir(at("elsewhere"), 0700), 0);
	make_file("a/f", "x");
	make_file("elsewhere/f", "y");
	cr_assert_eq(qcow2_path_resolve(at("a/f"), NULL, canon, sizeof(canon)), 0);
	fd = qcow2_path_open_canonical(canon, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	close(fd);
	cr_assert_eq(qcow2_path_stat(canon, &st), 0);
	cr_assert_eq(rename(at("a"), at("old-a")), 0);
	cr_assert_eq(symlink("elsewhere", at("a")), 0);
	cr_assert_eq(qcow2_path_open_canonical(canon, O_RDONLY | O_CLOEXEC), -ELOOP);
	cr_assert_eq(qcow2_path_stat(canon, &st), -ELOOP);
	cr_assert_eq(qcow2_file_open(canon, QCOW2_OPEN_NOFOLLOW), -ELOOP);
	assert_error_mentions(canon);
}

Test(chain_files, a_fifo_as_data_file_fails_the_open_at_once, .init = setup, .fini = teardown,
     .timeout = 10)
{
	struct qcow2_chain *c = NULL;

	save_image("top.qcow2", NULL, NULL, "top.data");
	cr_assert_eq(mkfifo(at("top.data"), 0600), 0);
	cr_assert_eq(qcow2_chain_open(at("top.qcow2"), NULL, &c), -EINVAL);
	assert_error_mentions("top.data");
	assert_error_mentions("FIFO");
	cr_assert_null(c);
}

/* ---- qcow2_data_file_open(): the one opener of external data files ---- */

Test(data_file, resolved_from_the_image_directory_and_confined, .init = setup, .fini = teardown)
{
	struct qcow2_chain_opts o = {0};
	struct qcow2_io *io = (struct qcow2_io *)&o; /* any non-NULL: it must be reset */
	char root[PATH_MAX], buf[8] = "";

	snprintf(root, sizeof(root), "%s", at("in"));
	o.root = root;
	cr_assert_eq(mkdir(at("in"), 0700), 0);
	make_file("in/top.data", "inside");
	make_file("out.data", "outside");
	cr_assert_eq(qcow2_data_file_open(&o, at("in/top.qcow2"), "top.data", false, &io), 0, "%s",
		     qcow2_last_error());
	cr_assert_eq(qcow2_io_pread(io, buf, 6, 0), 6);
	cr_assert_str_eq(buf, "inside");
	cr_assert_eq(qcow2_io_pwrite(io, "x", 1, 0), -EBADF, "opened read-only");
	qcow2_io_close(io);

	io = (struct qcow2_io *)&o;
	cr_assert_eq(qcow2_data_file_open(&o, at("in/top.qcow2"), "../out.data", false, &io),
		     -EPERM);
	cr_assert_null(io);
	assert_error_mentions("outside the source directory");
	io = (struct qcow2_io *)&o;
	cr_assert_eq(qcow2_data_file_open(&o, at("in/top.qcow2"), "gone.data", false, &io),
		     -ENOENT);
	cr_assert_null(io);
	assert_error_mentions("gone.data");
}

Test(data_file, writable_when_asked_and_locked_as_a_reader, .init = setup, .fini = teardown)
{
	struct qcow2_chain_opts o = {.lock = true};
	struct qcow2_io *io = NULL, *other = NULL;

	make_file("top.data", "data");
	cr_assert_eq(qcow2_data_file_open(&o, at("top.qcow2"), "top.data", true, &io), 0, "%s",
		     qcow2_last_error());
	cr_assert_eq(qcow2_io_pwrite(io, "D", 1, 0), 0, "%s", qcow2_last_error());
	/* QEMU's writer would be refused: the data file is held as a reader holds it */
	cr_assert_eq(qcow2_io_open(at("top.data"), 0, &other), 0);
	cr_assert_eq(qcow2_io_lock_check(other, QCOW2_PERM_CONSISTENT_READ | QCOW2_PERM_WRITE,
					 QCOW2_PERM_ALL),
		     -EBUSY);
	qcow2_io_close(io);
	cr_assert_eq(qcow2_io_lock_check(other, QCOW2_PERM_CONSISTENT_READ | QCOW2_PERM_WRITE,
					 QCOW2_PERM_ALL),
		     0, "the lock goes with the io");
	qcow2_io_close(other);
}

Test(data_file, opened_by_its_canonical_path, .init = setup, .fini = teardown)
{
	struct qcow2_chain_opts o = {0};
	struct qcow2_io *io = NULL;

	/* the name resolves through the symlink; the canonical path is what is opened */
	make_file("real.data", "real");
	cr_assert_eq(symlink("real.data", at("link.data")), 0);
	cr_assert_eq(qcow2_data_file_open(&o, at("top.qcow2"), "link.data", false, &io), 0, "%s",
		     qcow2_last_error());
	cr_assert_str_eq(qcow2_io_name(io), at("real.data"));
	qcow2_io_close(io);
}
