/* SPDX-License-Identifier: MIT */
/*
 * test_chain.c - backing chains on real files (qcow2_chain_open() works on paths): backing
 * names resolved from the image's directory, raw and short backing files, loops, depth, the
 * root/allow_dirs confinement, qcow2_chain_pread() and qcow2_chain_seek() against a byte
 * model of the flat view, internal snapshots of the top, reads from several threads, and the
 * open by path of one image for a repair (qcow2_image_open_path() with @repair).
 * Each test works in its own mkdtemp() directory.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imgbuild.h"
#include "testutil.h"
#include "qcow2.h"

static char dir[64];
static struct qcow2_chain *chain;

#define MAX_LAYERS 128

/* The chain under test, top first, for the model. A NULL image is a raw layer. */
static struct {
	struct imgbuild *img;
	uint8_t *raw;
	size_t raw_len;
} layers[MAX_LAYERS];
static unsigned n_layers;

/* The whole flat view, computed once per test (layers do not change after opening). */
static uint8_t *flat;
static uint64_t flat_size;

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/qcowfs-chain-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	chain = NULL;
	n_layers = 0;
	flat = NULL;
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
	unsigned i;

	qcow2_chain_close(chain);
	free(flat);
	for (i = 0; i < n_layers; i++) {
		imgbuild_free(layers[i].img);
		free(layers[i].raw);
	}
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(chain, .init = setup, .fini = teardown);

static const char *path_of(const char *name)
{
	static char bufs[4][PATH_MAX];
	static int next;
	char *p = bufs[next++ % 4];

	snprintf(p, PATH_MAX, "%s/%s", dir, name);
	return p;
}

static void make_dir(const char *name)
{
	cr_assert_eq(mkdir(path_of(name), 0755), 0);
}

static struct imgbuild *new_image(uint64_t size, const char *backing, const char *fmt)
{
	struct imgbuild_opts o = imgbuild_defaults();

	o.size = size;
	o.cluster_bits = 12;
	o.backing_file = backing;
	o.backing_fmt = fmt;
	return imgbuild_new(&o);
}

/* Save @img as @name and append it to the model (call from the top down). */
static void add_qcow2(struct imgbuild *img, const char *name)
{
	cr_assert_lt(n_layers, MAX_LAYERS);
	cr_assert_eq(imgbuild_save(img, path_of(name)), 0);
	layers[n_layers].img = img;
	layers[n_layers].raw = NULL;
	n_layers++;
}

static void add_raw(const char *name, size_t len, uint64_t seed)
{
	uint8_t *b = malloc(len ? len : 1);
	size_t i;

	cr_assert_not_null(b);
	for (i = 0; i < len; i++)
		b[i] = (uint8_t)(imgbuild_rand(&seed) >> 13);
	cr_assert_eq(imgbuild_write_file(path_of(name), b, len), 0);
	layers[n_layers].img = NULL;
	layers[n_layers].raw = b;
	layers[n_layers].raw_len = len;
	n_layers++;
}

/* The expected flat view of [@off, +@len) of the model from layer @from down. The top layer
 * may be shown at snapshot @snap. */
static void expect_from(unsigned from, int snap, uint64_t off, size_t len, uint8_t *out)
{
	uint8_t *below = calloc(1, len ? len : 1);
	unsigned i;
	size_t k;

	cr_assert_not_null(below);
	for (i = n_layers; i-- > from;) {
		if (layers[i].img) {
			imgbuild_expect(layers[i].img, i == 0 ? snap : -1, off, len,
					i + 1 < n_layers ? below : NULL, out);
		} else {
			for (k = 0; k < len; k++)
				out[k] = off + k < layers[i].raw_len ? layers[i].raw[off + k] : 0;
		}
		memcpy(below, out, len);
	}
	free(below);
}

static void expect(uint64_t off, size_t len, uint8_t *out)
{
	if (!flat) {
		flat_size = layers[0].img ? layers[0].img->o.size : layers[0].raw_len;
		flat = malloc(flat_size ? flat_size : 1);
		cr_assert_not_null(flat);
		expect_from(0, -1, 0, (size_t)flat_size, flat);
	}
	cr_assert_leq(off + len, flat_size);
	memcpy(out, flat + off, len);
}

/* Is @off data in the flat view (not a hole: zero clusters and unallocated ranges are)? */
static bool model_is_data(uint64_t off)
{
	unsigned i;

	for (i = 0; i < n_layers; i++) {
		if (!layers[i].img)
			return off < layers[i].raw_len;
		if (off >= layers[i].img->o.size)
			return false;
		switch (imgbuild_state(layers[i].img, -1, off)) {
		case IMGBUILD_DATA:
			return true;
		case IMGBUILD_ZERO:
			return false;
		case IMGBUILD_UNALLOCATED:
			break;
		}
	}
	return false;
}

static int open_chain(const char *name, const struct qcow2_chain_opts *o)
{
	qcow2_chain_close(chain);
	chain = NULL;
	return qcow2_chain_open(path_of(name), o, &chain);
}

/* Index of the first byte where @a and @b differ, or -1. */
static long first_diff(const uint8_t *a, const uint8_t *b, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (a[i] != b[i])
			return (long)i;
	return -1;
}

/* qcow2_chain_read_pieces()'s callback: the pieces' bytes, one after the other, at *@ctx (a
 * file range read with pread, as splice would take it). -EIO when a file range is short. */
static int gather_pieces(void *ctx, const struct qcow2_read_piece *p, unsigned n)
{
	uint8_t **at = ctx;
	unsigned i;

	for (i = 0; i < n; i++) {
		if (p[i].fd >= 0) {
			if (pread(p[i].fd, *at, p[i].len, (off_t)p[i].fd_off) != (ssize_t)p[i].len)
				return -EIO;
		} else {
			memcpy(*at, p[i].mem, p[i].len);
		}
		*at += p[i].len;
	}
	return 0;
}

/* Read [@off, +@len) through qcow2_chain_pread() and through qcow2_chain_read_pieces(): both
 * read as the model says. */
static void check_read(uint64_t off, size_t len)
{
	uint8_t *want = malloc(len ? len : 1), *got = malloc(len ? len : 1), *at = got;
	long diff = -1;
	int r, rp;

	cr_assert(want && got);
	expect(off, len, want);
	memset(got, 0xa5, len);
	r = qcow2_chain_pread(chain, got, len, off);
	if (r == 0)
		diff = first_diff(got, want, len);
	cr_assert_eq(r, 0, "read %#llx+%zu: %s", (unsigned long long)off, len, qcow2_last_error());
	cr_assert_eq(diff, -1, "read %#llx+%zu differs from byte %ld", (unsigned long long)off, len,
		     diff);
	memset(got, 0xa5, len);
	rp = qcow2_chain_read_pieces(chain, len, off, gather_pieces, &at);
	if (rp == 0)
		diff = at == got + len ? first_diff(got, want, len) : (long)(at - got);
	free(want);
	free(got);
	cr_assert_eq(rp, 0, "pieces %#llx+%zu: %s", (unsigned long long)off, len,
		     qcow2_last_error());
	cr_assert_eq(diff, -1, "pieces %#llx+%zu differ from byte %ld", (unsigned long long)off,
		     len, diff);
}

/* Read the whole view in pieces of @piece bytes, then @n random ranges. */
static void check_reads(size_t piece, unsigned n, uint64_t seed)
{
	uint64_t size = qcow2_chain_size(chain), off;
	unsigned i;

	for (off = 0; off < size; off += piece)
		check_read(off, (size_t)(size - off < piece ? size - off : piece));
	for (i = 0; i < n; i++) {
		uint64_t len = imgbuild_rand(&seed) % 70000;
		off = imgbuild_rand(&seed) % size;
		if (len > size - off)
			len = size - off;
		check_read(off, (size_t)len);
	}
}

/* ---- resolution ---- */

Test(chain, single_image_reads_like_its_model)
{
	struct imgbuild *top = new_image(4 << 20, NULL, NULL);

	imgbuild_scramble(top, 1, 200, 0);
	add_qcow2(top, "top.qcow2");
	cr_assert_eq(open_chain("top.qcow2", NULL), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_chain_depth(chain), 1);
	cr_assert_eq(qcow2_chain_size(chain), 4 << 20);
	check_reads(65536, 200, 2);
}

Test(chain, backing_names_resolve_from_the_image_directory)
{
	struct qcow2_layer_info li;
	struct imgbuild *top, *base;
	char cwd[PATH_MAX], want[PATH_MAX];

	make_dir("vm");
	make_dir("images");
	top = new_image(2 << 20, "../images/base.qcow2", "qcow2");
	base = new_image(2 << 20, NULL, NULL);
	imgbuild_fill(top, 0, 0x11, 5000);
	imgbuild_fill(base, 4096, 0x22, 100000);
	add_qcow2(top, "vm/top.qcow2");
	add_qcow2(base, "images/base.qcow2");
	/* Open from elsewhere: the name must not be resolved from the working directory. */
	cr_assert_not_null(getcwd(cwd, sizeof(cwd)));
	cr_assert_eq(chdir("/"), 0);
	cr_assert_eq(open_chain("vm/top.qcow2", NULL), 0, "%s", qcow2_last_error());
	cr_assert_eq(chdir(cwd), 0);
	cr_assert_eq(qcow2_chain_depth(chain), 2);
	cr_assert_eq(qcow2_chain_layer(chain, 1, &li), 0);
	cr_assert_not_null(realpath(path_of("images/base.qcow2"), want));
	cr_assert_str_eq(li.path, want, "the resolved, absolute path");
	cr_assert_str_eq(li.format, "qcow2");
	cr_assert_not_null(li.image);
	cr_assert_eq(qcow2_chain_layer(chain, 2, &li), -ENOENT);
	check_reads(32768, 100, 3);
}

Test(chain, absolute_backing_names_work)
{
	struct imgbuild *top, *base;

	base = new_image(1 << 20, NULL, NULL);
	imgbuild_fill(base, 0, 0x33, 1 << 20);
	top = new_image(1 << 20, path_of("base.qcow2"), NULL);
	imgbuild_fill(top, 100, 0x44, 10);
	add_qcow2(top, "top.qcow2");
	add_qcow2(base, "base.qcow2");
	cr_assert_eq(open_chain("top.qcow2", NULL), 0, "%s", qcow2_last_error());
	check_reads(65536, 20, 4);
}

Test(chain, missing_backing_file_is_enoent)
{
	struct imgbuild *top = new_image(1 << 20, "nothere.qcow2", NULL);

	add_qcow2(top, "top.qcow2");
	cr_assert_eq(open_chain("top.qcow2", NULL), -ENOENT);
	assert_error_mentions("nothere.qcow2");
	cr_assert_null(chain);
}

Test(chain, raw_backing_files_with_and_without_a_format)
{
	struct qcow2_layer_info li;
	struct imgbuild *top;
	const char *fmts[] = {"raw", NULL};
	int i;

	for (i = 0; i < 2; i++) {
		top = new_image(1 << 20, "base.raw", fmts[i]);
		imgbuild_fill(top, 70000, 0x55, 9000);
		imgbuild_zero(top, 0, 4096);
		add_qcow2(top, "top.qcow2");
		add_raw("base.raw", 1 << 20, 10);
		cr_assert_eq(open_chain("top.qcow2", NULL), 0, "%s", qcow2_last_error());
		cr_assert_eq(qcow2_chain_layer(chain, 1, &li), 0);
		cr_assert_str_eq(li.format, "raw");
		cr_assert_null(li.image);
		cr_assert_eq(li.size, 1 << 20);
		check_reads(65536, 50, 5);
		qcow2_chain_close(chain);
		chain = NULL;
		imgbuild_free(layers[0].img);
		free(layers[1].raw);
		n_layers = 0;
	}
}

Test(chain, qcow2_file_named_as_raw_is_read_raw)
{
	struct imgbuild *top, *base;

	base = new_image(1 << 20, NULL, NULL);
	imgbuild_fill(base, 0, 0x66, 4096);
	top = new_image(1 << 20, "base.qcow2", "raw");
	add_qcow2(top, "top.qcow2");
	cr_assert_eq(imgbuild_save(base, path_of("base.qcow2")), 0);
	/* The model: the qcow2 file's bytes as a raw disk. */
	layers[1].img = NULL;
	layers[1].raw = malloc(base->len);
	memcpy(layers[1].raw, base->bytes, base->len);
	layers[1].raw_len = base->len;
	n_layers = 2;
	imgbuild_free(base);
	cr_assert_eq(open_chain("top.qcow2", NULL), 0, "%s", qcow2_last_error());
	check_read(0, 8);
}

Test(chain, raw_file_in_a_qcow2_slot_is_refused)
{
	struct imgbuild *top = new_image(1 << 20, "base.raw", "qcow2");

	add_qcow2(top, "top.qcow2");
	add_raw("base.raw", 1 << 20, 11);
	cr_assert_eq(open_chain("top.qcow2", NULL), -EINVAL);
}

Test(chain, unsupported_backing_format_is_refused)
{
	struct imgbuild *top = new_image(1 << 20, "base.vmdk", "vmdk");

	/* A file in a format the library cannot read must not be exposed as raw bytes. */
	add_qcow2(top, "top.qcow2");
	add_raw("base.vmdk", 1 << 20, 12);
	cr_assert_eq(open_chain("top.qcow2", NULL), -ENOTSUP, "backing_fmt 'vmdk' was accepted");
	assert_error_mentions("vmdk");
}

/* ---- short backing files ---- */

Test(chain, reads_past_a_short_qcow2_backing_file_are_zeros)
{
	struct imgbuild *top, *base;

	base = new_image(1 << 20, NULL, NULL);
	imgbuild_fill(base, 0, 0x77, 1 << 20);
	top = new_image(4 << 20, "base.qcow2", "qcow2");
	imgbuild_fill(top, 3 << 20, 0x78, 4096);
	add_qcow2(top, "top.qcow2");
	add_qcow2(base, "base.qcow2");
	cr_assert_eq(open_chain("top.qcow2", NULL), 0, "%s", qcow2_last_error());
	check_read((1 << 20) - 100, 200);
	check_reads(65536, 50, 6);
}

Test(chain, reads_past_a_short_raw_backing_file_are_zeros)
{
	struct imgbuild *top;

	top = new_image(1 << 20, "base.raw", "raw");
	add_qcow2(top, "top.qcow2");
	add_raw("base.raw", 100001, 13); /* not even sector aligned */
	cr_assert_eq(open_chain("top.qcow2", NULL), 0, "%s", qcow2_last_error());
	check_read(100000, 2);
	check_read(99000, 5000);
	check_reads(50000, 50, 7);
}

Test(chain, short_middle_layer_hides_the_layers_below_past_its_end)
{
	struct imgbuild *top, *mid, *base;

	base = new_image(2 << 20, NULL, NULL);
	imgbuild_fill(base, 0, 0x79, 2 << 20);
	mid = new_image(1 << 20, "base.qcow2", "qcow2");
	top = new_image(2 << 20, "mid.qcow2", "qcow2");
	add_qcow2(top, "top.qcow2");
	add_qcow2(mid, "mid.qcow2");
	add_qcow2(base, "base.qcow2");
	cr_assert_eq(open_chain("top.qcow2", NULL), 0, "%s", qcow2_last_error());
	check_read((1 << 20) - 4096, 8192); /* base shows through mid, then zeros */
	check_reads(65536, 30, 8);
}

/* ---- loops, depth and confinement ---- */

Test(chain, backing_loops_are_eloop)
{
	struct imgbuild *a = new_image(1 << 20, "b.qcow2", NULL);
	struct imgbuild *b = new_image(1 << 20, "a.qcow2", NULL);
	struct imgbuild *self = new_image(1 << 20, "self.qcow2", NULL);

	add_qcow2(a, "a.qcow2");
	add_qcow2(b, "b.qcow2");
	add_qcow2(self, "self.qcow2");
	cr_assert_eq(open_chain("a.qcow2", NULL), -ELOOP);
	assert_error_mentions("loop");
	cr_assert_eq(open_chain("self.qcow2", NULL), -ELOOP);
	cr_assert_eq(symlink("a.qcow2", path_of("link.qcow2")), 0);
	cr_assert_eq(open_chain("link.qcow2", NULL), -ELOOP);
}

Test(chain, loop_through_a_symlink_is_eloop)
{
	struct imgbuild *a = new_image(1 << 20, "alias.qcow2", NULL);

	add_qcow2(a, "a.qcow2");
	cr_assert_eq(symlink("a.qcow2", path_of("alias.qcow2")), 0);
	cr_assert_eq(open_chain("a.qcow2", NULL), -ELOOP);
}

Test(chain, chains_deeper_than_max_depth_are_refused)
{
	struct qcow2_chain_opts o = {0};
	char name[32], backing[32];
	int i;

	for (i = 0; i < 4; i++) {
		snprintf(name, sizeof(name), "l%d.qcow2", i);
		snprintf(backing, sizeof(backing), "l%d.qcow2", i + 1);
		add_qcow2(new_image(1 << 20, i < 3 ? backing : NULL, NULL), name);
	}
	o.max_depth = 4;
	cr_assert_eq(open_chain("l0.qcow2", &o), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_chain_depth(chain), 4);
	o.max_depth = 3;
	cr_assert_eq(open_chain("l0.qcow2", &o), -ELOOP);
	assert_error_mentions("deeper");
}

Test(chain, backing_outside_root_is_eperm_unless_allowed)
{
	const char *allow[1];
	struct qcow2_chain_opts o = {0};
	struct imgbuild *top, *base;
	char inner[PATH_MAX], outside[PATH_MAX];

	make_dir("inner");
	make_dir("outside");
	base = new_image(1 << 20, NULL, NULL);
	imgbuild_fill(base, 0, 0x5e, 4096);
	top = new_image(1 << 20, "../outside/base.qcow2", NULL);
	add_qcow2(top, "inner/top.qcow2");
	add_qcow2(base, "outside/base.qcow2");
	snprintf(inner, sizeof(inner), "%s", path_of("inner"));
	o.root = inner;
	cr_assert_eq(open_chain("inner/top.qcow2", &o), -EPERM);
	assert_error_mentions("outside");
	assert_error_mentions("--backing-dir");
	cr_assert_null(chain);

	snprintf(outside, sizeof(outside), "%s", path_of("outside"));
	allow[0] = outside;
	o.allow_dirs = allow;
	o.n_allow_dirs = 1;
	cr_assert_eq(open_chain("inner/top.qcow2", &o), 0, "%s", qcow2_last_error());
	check_read(0, 8192);
}

Test(chain, prefix_of_the_root_name_is_not_inside_it)
{
	struct qcow2_chain_opts o = {0};
	struct imgbuild *top;
	char root[PATH_MAX];

	make_dir("img");
	make_dir("img2");
	top = new_image(1 << 20, "../img2/base.raw", "raw");
	add_qcow2(top, "img/top.qcow2");
	add_raw("img2/base.raw", 4096, 14);
	snprintf(root, sizeof(root), "%s", path_of("img"));
	o.root = root;
	cr_assert_eq(open_chain("img/top.qcow2", &o), -EPERM);
}

Test(chain, symlink_leaving_the_root_is_eperm)
{
	struct qcow2_chain_opts o = {0};
	struct imgbuild *top;
	char root[PATH_MAX];

	make_dir("root");
	top = new_image(1 << 20, "passwd.raw", "raw");
	add_qcow2(top, "root/top.qcow2");
	cr_assert_eq(symlink("/etc/passwd", path_of("root/passwd.raw")), 0);
	snprintf(root, sizeof(root), "%s", path_of("root"));
	o.root = root;
	cr_assert_eq(open_chain("root/top.qcow2", &o), -EPERM);
	assert_error_mentions("/etc/passwd");
}

Test(chain, absolute_backing_outside_root_is_eperm)
{
	struct qcow2_chain_opts o = {0};
	struct imgbuild *top = new_image(1 << 20, "/etc/passwd", "raw");
	char root[PATH_MAX];

	add_qcow2(top, "top.qcow2");
	snprintf(root, sizeof(root), "%s", dir);
	o.root = root;
	cr_assert_eq(open_chain("top.qcow2", &o), -EPERM);
}

Test(chain, resolve_path_reports_its_decision)
{
	struct qcow2_chain_opts o = {0};
	char out[PATH_MAX], root[PATH_MAX], want[PATH_MAX];

	make_dir("a");
	add_raw("a/x.raw", 10, 1);
	snprintf(root, sizeof(root), "%s", path_of("a"));
	o.root = root;
	cr_assert_eq(
	    qcow2_chain_resolve_path(&o, path_of("a/top.qcow2"), "x.raw", out, sizeof(out)), 0,
	    "%s", qcow2_last_error());
	cr_assert_not_null(realpath(path_of("a/x.raw"), want));
	cr_assert_str_eq(out, want);
	cr_assert_eq(qcow2_chain_resolve_path(&o, path_of("a/top.qcow2"), "x.raw", out, 5),
		     -ENAMETOOLONG);
	cr_assert_eq(qcow2_chain_resolve_path(&o, path_of("a/top.qcow2"), "..", out, sizeof(out)),
		     -EPERM);
	cr_assert_eq(
	    qcow2_chain_resolve_path(&o, path_of("a/top.qcow2"), "y.raw", out, sizeof(out)),
	    -ENOENT);
}

/* ---- the flat view ---- */

/* top (extended L2, 64 KiB clusters) -> mid (4 KiB clusters, zeros and compressed) -> base
 * (raw), each scrambled. */
static void build_three_layers(void)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct imgbuild *top, *mid;

	o.size = 6 << 20;
	o.extended_l2 = true;
	o.backing_file = "mid.qcow2";
	o.backing_fmt = "qcow2";
	top = imgbuild_new(&o);
	imgbuild_scramble(top, 21, 120, 0);
	o = imgbuild_defaults();
	o.size = 5 << 20;
	o.cluster_bits = 12;
	o.backing_file = "base.raw";
	mid = imgbuild_new(&o);
	imgbuild_scramble(mid, 22, 400, 0);
	add_qcow2(top, "top.qcow2");
	add_qcow2(mid, "mid.qcow2");
	add_raw("base.raw", (4 << 20) + 1234, 23);
}

Test(chain, three_layers_read_like_the_model)
{
	build_three_layers();
	cr_assert_eq(open_chain("top.qcow2", NULL), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_chain_depth(chain), 3);
	cr_assert_eq(qcow2_chain_size(chain), 6 << 20);
	check_reads(65536, 300, 24);
	/* Again, now that the owner map knows every chunk. */
	check_reads(4096 * 3 + 17, 300, 25);
}

Test(chain, reads_past_the_end_are_refused)
{
	uint8_t b[2];

	build_three_layers();
	cr_assert_eq(open_chain("top.qcow2", NULL), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_chain_pread(chain, b, 2, (6 << 20) - 1), -EINVAL);
	cr_assert_eq(qcow2_chain_pread(chain, b, 1, UINT64_MAX), -EINVAL);
	cr_assert_eq(qcow2_chain_pread(chain, b, 0, 6 << 20), 0);
}

Test(chain, map_reports_the_providing_layer)
{
	struct qcow2_extent e;
	uint64_t off, size;

	build_three_layers();
	cr_assert_eq(open_chain("top.qcow2", NULL), 0, "%s", qcow2_last_error());
	size = qcow2_chain_size(chain);
	for (off = 0; off < size; off += e.len) {
		cr_assert_eq(qcow2_chain_map(chain, off, size - off, &e), 0, "%s",
			     qcow2_last_error());
		cr_assert_eq(e.guest_off, off);
		cr_assert(e.len > 0 && e.len <= size - off);
		if (e.kind == QCOW2_EXTENT_UNALLOCATED) {
			cr_assert_eq(e.layer, -1, "a hole belongs to no layer");
		} else {
			cr_assert(e.layer >= 0 && e.layer < 3);
			if (e.layer < 2)
				cr_assert_neq(imgbuild_state(layers[e.layer].img, -1, off),
					      IMGBUILD_UNALLOCATED);
		}
		if (e.kind == QCOW2_EXTENT_DATA || e.kind == QCOW2_EXTENT_COMPRESSED)
			cr_assert(model_is_data(off), "data at %#llx", (unsigned long long)off);
		else
			cr_assert_not(model_is_data(off), "hole at %#llx", (unsigned long long)off);
	}
	cr_assert_eq(qcow2_chain_map(chain, size, 1, &e), -EINVAL);
}

/* A raw layer of @len bytes that is a hole but for [@data_off, +@data_len) (random bytes):
 * its map changes every file system block, finer than any cluster above it. */
static void add_sparse_raw(const char *name, size_t len, uint64_t data_off, size_t data_len)
{
	uint64_t seed = 40;
	uint8_t *b = calloc(1, len);
	size_t i;
	FILE *f;

	cr_assert_not_null(b);
	for (i = 0; i < data_len; i++)
		b[data_off + i] = (uint8_t)(imgbuild_rand(&seed) >> 13) | 1;
	f = fopen(path_of(name), "w");
	cr_assert_not_null(f);
	cr_assert_eq(ftruncate(fileno(f), (off_t)len), 0);
	cr_assert_eq(pwrite(fileno(f), b + data_off, data_len, (off_t)data_off), (ssize_t)data_len);
	fclose(f);
	layers[n_layers].img = NULL;
	layers[n_layers].raw = b;
	layers[n_layers].raw_len = len;
	n_layers++;
}

/* A raw extent that ends inside the first chunk of a lookup, before the offset asked for,
 * must not be recorded as the owner of the chunks after it. */
Test(chain, raw_extents_shorter_than_a_chunk_do_not_hide_the_layers_above)
{
	struct imgbuild_opts o = imgbuild_defaults(); /* 64 KiB clusters: 64 KiB chunks */
	struct imgbuild *top;
	struct qcow2_extent e;
	uint8_t pattern[65536];

	o.size = 1 << 20;
	o.backing_file = "base.raw";
	o.backing_fmt = "raw";
	top = imgbuild_new(&o);
	imgbuild_pattern(pattern, sizeof(pattern), 6 << 16, 0x7e);
	cr_assert_eq(imgbuild_write(top, 6 << 16, pattern, sizeof(pattern)), 0);
	add_qcow2(top, "top.qcow2");
	add_sparse_raw("base.raw", 1 << 20, 65 * 4096, 3 * 4096);
	cr_assert_eq(open_chain("top.qcow2", NULL), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_chain_map(chain, 65 * 4096, 1 << 16, &e), 0);
	cr_assert_eq(e.kind, QCOW2_EXTENT_DATA);
	cr_assert_eq(qcow2_chain_map(chain, 68 * 4096, 1 << 16, &e), 0);
	cr_assert_eq(e.layer, 1);
	cr_assert_eq(e.kind, QCOW2_EXTENT_ZERO);
	cr_assert_eq(qcow2_chain_map(chain, 6 << 16, 1 << 16, &e), 0);
	cr_assert_eq(e.layer, 0, "the top's cluster, not the raw file below");
	check_reads(4096, 200, 41);
}

/* The next offset after @off where the model may change: a unit boundary or the end of a
 * raw layer. */
static uint64_t model_next(uint64_t off, uint64_t unit)
{
	uint64_t next = (off / unit + 1) * unit;
	unsigned i;

	for (i = 0; i < n_layers; i++)
		if (!layers[i].img && layers[i].raw_len > off && layers[i].raw_len < next)
			next = layers[i].raw_len;
	return next;
}

static uint64_t model_seek(uint64_t off, bool data, uint64_t size, uint64_t unit)
{
	for (; off < size; off = model_next(off, unit))
		if (model_is_data(off) == data)
			return off;
	return data ? UINT64_MAX : size;
}

Test(chain, seek_data_and_hole_follow_the_model)
{
	uint64_t size, off, got, want, seed = 26;
	int i, r;

	build_three_layers();
	cr_assert_eq(open_chain("top.qcow2", NULL), 0, "%s", qcow2_last_error());
	size = qcow2_chain_size(chain);
	for (i = 0; i < 400; i++) {
		off = i < 200 ? (uint64_t)i * 2048 * 13 % size : imgbuild_rand(&seed) % size;
		want = model_seek(off, true, size, 2048);
		r = qcow2_chain_seek(chain, off, SEEK_DATA, &got);
		if (want == UINT64_MAX) {
			cr_assert_eq(r, -ENXIO, "SEEK_DATA %#llx", (unsigned long long)off);
		} else {
			cr_assert_eq(r, 0, "%s", qcow2_last_error());
			cr_assert_eq(got, want, "SEEK_DATA %#llx: %#llx, want %#llx",
				     (unsigned long long)off, (unsigned long long)got,
				     (unsigned long long)want);
		}
		want = model_seek(off, false, size, 2048);
		cr_assert_eq(qcow2_chain_seek(chain, off, SEEK_HOLE, &got), 0, "%s",
			     qcow2_last_error());
		cr_assert_eq(got, want, "SEEK_HOLE %#llx: %#llx, want %#llx",
			     (unsigned long long)off, (unsigned long long)got,
			     (unsigned long long)want);
	}
	cr_assert_eq(qcow2_chain_seek(chain, 0, SEEK_SET, &got), -EINVAL);
	cr_assert_eq(qcow2_chain_seek(chain, size, SEEK_DATA, &got), -ENXIO);
}

Test(chain, seek_in_a_fully_allocated_and_an_empty_image)
{
	struct imgbuild *img = new_image(1 << 20, NULL, NULL);
	uint64_t got;

	add_qcow2(img, "empty.qcow2");
	cr_assert_eq(open_chain("empty.qcow2", NULL), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_chain_seek(chain, 0, SEEK_DATA, &got), -ENXIO);
	cr_assert_eq(qcow2_chain_seek(chain, 0, SEEK_HOLE, &got), 0);
	cr_assert_eq(got, 0);
	cr_assert_eq(imgbuild_fill(img, 0, 1, 1 << 20), 0);
	cr_assert_eq(imgbuild_save(img, path_of("full.qcow2")), 0);
	cr_assert_eq(open_chain("full.qcow2", NULL), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_chain_seek(chain, 5, SEEK_DATA, &got), 0);
	cr_assert_eq(got, 5);
	cr_assert_eq(qcow2_chain_seek(chain, 5, SEEK_HOLE, &got), 0);
	cr_assert_eq(got, 1 << 20, "the end of the disk is a hole");
}

Test(chain, compressed_clusters_read_at_any_offset)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct imgbuild *img;
	uint8_t *data;
	uint64_t cs;

	o.size = 1 << 20;
	img = imgbuild_new(&o);
	cs = img->cluster_bytes;
	data = malloc(cs);
	imgbuild_pattern(data, cs, 0, 1);
	cr_assert_eq(imgbuild_write_compressed(img, 0, data, NULL, NULL), 0);
	imgbuild_pattern(data, cs, cs, 2);
	cr_assert_eq(imgbuild_write_compressed(img, cs, data, NULL, NULL), 0);
	free(data);
	add_qcow2(img, "comp.qcow2");
	cr_assert_eq(open_chain("comp.qcow2", NULL), 0, "%s", qcow2_last_error());
	check_read(0, 2 * cs);
	check_read(4096, 4096); /* inside a compressed cluster */
	check_read(cs - 100, 200);
	check_read(cs + 12345, 1);
}

Test(chain, compressed_backing_clusters_read_at_any_offset)
{
	struct imgbuild *top, *base;
	uint8_t *data;
	uint64_t cs;

	base = new_image(1 << 20, NULL, NULL);
	cs = base->cluster_bytes;
	data = malloc(cs);
	imgbuild_pattern(data, cs, 0, 3);
	cr_assert_eq(imgbuild_write_compressed(base, 0, data, NULL, NULL), 0);
	free(data);
	top = new_image(1 << 20, "base.qcow2", NULL);
	add_qcow2(top, "top.qcow2");
	add_qcow2(base, "base.qcow2");
	cr_assert_eq(open_chain("top.qcow2", NULL), 0, "%s", qcow2_last_error());
	check_read(0, cs);     /* the owner map learns the chunk ... */
	check_read(1000, 100); /* ... then a read from its middle */
}

Test(chain, chain_of_depth_100_reads_right)
{
	char name[32], backing[32];
	struct qcow2_chain_opts o = {0};
	unsigned i;

	for (i = 0; i < 100; i++) {
		struct imgbuild *img;

		snprintf(name, sizeof(name), "l%03u.qcow2", i);
		snprintf(backing, sizeof(backing), "l%03u.qcow2", i + 1);
		img = new_image(1 << 20, i < 99 ? backing : NULL, i < 99 ? "qcow2" : NULL);
		/* Each layer owns a few clusters, some shadowed by upper layers. */
		imgbuild_fill(img, (uint64_t)i * 8192, (int)i, 4096);
		imgbuild_fill(img, (uint64_t)(i * 37 % 200) * 4096 + 100, (int)(i + 100), 300);
		if (i % 10 == 5)
			imgbuild_zero(img, (uint64_t)(i + 3) * 8192, 4096);
		add_qcow2(img, name);
	}
	o.root = dir;
	cr_assert_eq(open_chain("l000.qcow2", &o), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_chain_depth(chain), 100);
	check_reads(65536, 100, 27);
	check_reads(65536, 0, 0);
}

Test(chain, snapshot_of_the_top_is_shown_over_the_backing_chain)
{
	struct imgbuild_snapshot_opts so = {0};
	struct qcow2_chain_opts o = {0};
	struct imgbuild *top, *base;
	uint8_t *want, *got;
	uint64_t size = 2 << 20;

	base = new_image(2 << 20, NULL, NULL);
	imgbuild_fill(base, 0, 0x10, 2 << 20);
	top = new_image(2 << 20, "base.qcow2", NULL);
	imgbuild_fill(top, 4096, 0x20, 4096);
	so.name = "before";
	so.disk_bytes = 1 << 20;
	cr_assert_eq(imgbuild_snapshot_add(top, &so), 0);
	imgbuild_fill(top, 4096, 0x30, 8192);
	add_qcow2(top, "top.qcow2");
	add_qcow2(base, "base.qcow2");

	o.snapshot = "before";
	cr_assert_eq(open_chain("top.qcow2", &o), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_chain_size(chain), 1 << 20, "the size at the snapshot");
	size = 1 << 20;
	want = malloc(size);
	got = malloc(size);
	expect_from(0, 0, 0, size, want);
	cr_assert_eq(qcow2_chain_pread(chain, got, size, 0), 0, "%s", qcow2_last_error());
	cr_assert_arr_eq(got, want, size);
	free(want);
	free(got);

	o.snapshot = "1"; /* by id */
	cr_assert_eq(open_chain("top.qcow2", &o), 0, "%s", qcow2_last_error());
	o.snapshot = "after";
	cr_assert_eq(open_chain("top.qcow2", &o), -ENOENT);
	assert_error_mentions("after");
}

Test(chain, raw_top_has_no_snapshots)
{
	struct qcow2_chain_opts o = {0};

	add_raw("disk.raw", 8192, 30);
	cr_assert_eq(open_chain("disk.raw", NULL), 0, "%s", qcow2_last_error());
	check_read(0, 8192);
	o.snapshot = "x";
	cr_assert_eq(open_chain("disk.raw", &o), -EINVAL);
}

Test(chain, data_file_is_resolved_and_confined)
{
	struct imgbuild_opts io = imgbuild_defaults();
	struct qcow2_chain_opts o = {0};
	struct imgbuild *img;
	char root[PATH_MAX];

	io.size = 1 << 20;
	io.data_file = "disk.data";
	io.data_file_raw = true;
	img = imgbuild_new(&io);
	imgbuild_scramble(img, 31, 60, 0);
	add_qcow2(img, "disk.qcow2");
	cr_assert_eq(imgbuild_save_data(img, path_of("disk.data")), 0);
	cr_assert_eq(open_chain("disk.qcow2", NULL), 0, "%s", qcow2_last_error());
	check_reads(65536, 50, 32);

	make_dir("r");
	cr_assert_eq(rename(path_of("disk.qcow2"), path_of("r/disk.qcow2")), 0);
	cr_assert_eq(symlink("../disk.data", path_of("r/disk.data")), 0);
	snprintf(root, sizeof(root), "%s", path_of("r"));
	o.root = root;
	cr_assert_eq(open_chain("r/disk.qcow2", &o), -EPERM);
}

Test(chain, allocated_bytes_cover_every_file)
{
	uint64_t bytes;

	build_three_layers();
	cr_assert_eq(open_chain("top.qcow2", NULL), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_chain_allocated_bytes(chain, &bytes), 0);
	cr_assert_gt(bytes, 4 << 20, "at least the raw base");
}

/* ---- threads ---- */

struct reader {
	uint64_t seed;
	const uint8_t *model;
	uint64_t size;
	int bad;
	int err;
};

static void *reader_main(void *arg)
{
	struct reader *rd = arg;
	uint8_t *buf = malloc(200000);
	int i;

	for (i = 0; i < 300 && buf; i++) {
		uint64_t off = imgbuild_rand(&rd->seed) % rd->size;
		uint64_t len = imgbuild_rand(&rd->seed) % 200000;
		int r;

		if (len > rd->size - off)
			len = rd->size - off;
		r = qcow2_chain_pread(chain, buf, (size_t)len, off);
		if (r < 0)
			rd->err = r;
		else if (memcmp(buf, rd->model + off, (size_t)len) != 0)
			rd->bad++;
	}
	free(buf);
	return NULL;
}

Test(chain, concurrent_reads_agree_with_the_model)
{
	struct reader rd[6];
	pthread_t t[6];
	uint8_t *model;
	uint64_t size;
	int i;

	build_three_layers();
	cr_assert_eq(open_chain("top.qcow2", NULL), 0, "%s", qcow2_last_error());
	size = qcow2_chain_size(chain);
	model = malloc(size);
	cr_assert_not_null(model);
	expect(0, size, model);
	for (i = 0; i < 6; i++) {
		rd[i] = (struct reader){.seed = 40 + (uint64_t)i, .model = model, .size = size};
		cr_assert_eq(pthread_create(&t[i], NULL, reader_main, &rd[i]), 0);
	}
	for (i = 0; i < 6; i++)
		pthread_join(t[i], NULL);
	free(model);
	for (i = 0; i < 6; i++) {
		cr_assert_eq(rd[i].err, 0, "thread %d: error %d", i, rd[i].err);
		cr_assert_eq(rd[i].bad, 0, "thread %d: %d reads differ from the model", i,
			     rd[i].bad);
	}
}

/* The one open by path (qcow2_image_open_path()) for a repair: an image marked corrupt opens
 * writable, which the ordinary writable open refuses; it holds QEMU's writer lock (another
 * reader of the file is refused); the repair clears the bit, after which the ordinary open
 * takes the image; and it is confined like every other open. */
Test(chain, the_open_by_path_for_a_repair_is_writable_locked_and_confined)
{
	struct imgbuild_opts io = imgbuild_defaults();
	struct qcow2_chain_opts o = {.lock = true, .writable = true};
	struct qcow2_check_result res;
	struct qcow2_image *img = NULL;
	struct qcow2_io *other;
	char root[PATH_MAX];

	io.size = 1 << 20;
	io.incompat = QCOW2_INCOMPAT_CORRUPT;
	add_qcow2(imgbuild_new(&io), "bad.qcow2");
	cr_assert_eq(qcow2_image_open_path(path_of("bad.qcow2"), &o, &img), -EROFS);
	cr_assert(strstr(qcow2_last_error(), "marked corrupt"), "%s", qcow2_last_error());

	o.writable = false;
	o.repair = true;
	cr_assert_eq(qcow2_image_open_path(path_of("bad.qcow2"), &o, &img), 0, "%s",
		     qcow2_last_error());
	cr_assert_eq(qcow2_io_open_file(path_of("bad.qcow2"), false, &other), 0);
	cr_assert_eq(qcow2_io_lock_check_reader(other), -EBUSY);
	qcow2_io_close(other);
	cr_assert_eq(qcow2_image_repair(img, NULL, false, &res), 0, "%s", qcow2_last_error());
	qcow2_image_close(img);

	o.repair = false;
	o.writable = true;
	cr_assert_eq(qcow2_image_open_path(path_of("bad.qcow2"), &o, &img), 0, "%s",
		     qcow2_last_error());
	cr_assert_eq(qcow2_image_header(img)->incompat & QCOW2_INCOMPAT_CORRUPT, 0);
	qcow2_image_close(img);

	make_dir("r");
	snprintf(root, sizeof(root), "%s", path_of("r"));
	o.root = root;
	o.writable = false;
	o.repair = true;
	cr_assert_eq(qcow2_image_open_path(path_of("bad.qcow2"), &o, &img), -EPERM);
	cr_assert(strstr(qcow2_last_error(), "lies outside the source directory"), "%s",
		  qcow2_last_error());
}
