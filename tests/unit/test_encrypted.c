/* SPDX-License-Identifier: MIT */
/*
 * test_encrypted.c - the data of an encrypted (LUKS) image, in memory: what the engine writes
 * is ciphertext in the file and plaintext through the read path with the key (any range, whole
 * sectors or not); the same bytes reopened without a key serve metadata only, every data read
 * and write refused naming the image; a wrong key fails the open; writes must be whole sectors;
 * compressed clusters are refused. The images are made by the library's own LUKS create (its
 * layout is checked against qemu-img by the e2e tests, encrypt*.sh).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "jobs/jobs.h"

#define SIZE (4u << 20)

static uint8_t pass_bytes[] = "unit test passphrase";
static uint8_t wrong_bytes[] = "not it";
static const struct qcow2_key pass = {pass_bytes, sizeof(pass_bytes) - 1};
static const struct qcow2_key wrong = {wrong_bytes, sizeof(wrong_bytes) - 1};

static struct qcow2_image *create_luks(void)
{
	struct qcow2_io *io = qcow2_io_mem_new("enc.qcow2", NULL, 0);
	struct qcow2_luks_params p;
	struct qcow2_create_opts o;
	struct qcow2_image *img;

	cr_assert_not_null(io);
	qcow2_create_opts_default(&o);
	qcow2_luks_params_default(&p);
	p.iter_time_ms = 10;
	o.size = SIZE;
	o.luks = &p;
	o.luks_key = &pass;
	cr_assert_eq(qcow2_image_create_io(io, "enc.qcow2", &o, &img), 0, "%s", qcow2_last_error());
	return img;
}

/* A copy of @img's bytes opened with @key (NULL: none); the open's result in *@r. */
static struct qcow2_image *reopen(struct qcow2_image *img, const struct qcow2_key *key, int *r)
{
	size_t len;
	const void *b = qcow2_io_mem_bytes(qcow2_image_io(img), &len);
	struct qcow2_io *copy = qcow2_io_mem_new("copy.qcow2", b, len);
	struct qcow2_image_opts o = {.key = key};
	struct qcow2_image *out = NULL;

	cr_assert_not_null(copy);
	*r = qcow2_image_open(copy, "copy.qcow2", &o, &out);
	return out;
}

static void pattern(uint8_t *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(seed + i * 7 + i / 512);
}

/* The host offset of guest offset @off (allocated data). */
static uint64_t host_of(struct qcow2_image *img, uint64_t off)
{
	struct qcow2_extent e;

	cr_assert_eq(qcow2_image_map(img, NULL, off, 512, &e), 0, "%s", qcow2_last_error());
	cr_assert_eq(e.kind, QCOW2_EXTENT_DATA);
	return e.host_off;
}

Test(encrypted, data_is_ciphertext_in_the_file_and_plaintext_with_the_key)
{
	struct qcow2_image *img = create_luks(), *ro;
	uint8_t *want = malloc(65536), *got = malloc(65536);
	uint64_t host;
	int r;

	pattern(want, 65536, 3);
	cr_assert_eq(qcow2_image_write(img, want, 65536, 131072, NULL), 0, "%s",
		     qcow2_last_error());
	cr_assert_eq(qcow2_image_flush(img), 0);
	host = host_of(img, 131072);
	cr_assert_eq(qcow2_io_pread(qcow2_image_io(img), got, 65536, host), 65536);
	cr_assert_neq(memcmp(got, want, 512), 0, "plaintext in the file");
	ro = reopen(img, &pass, &r);
	cr_assert_eq(r, 0, "%s", qcow2_last_error());
	cr_assert(qcow2_image_data_readable(ro));
	cr_assert_eq(qcow2_image_read_data(ro, got, 65536, host, 131072), 0);
	cr_assert_eq(memcmp(got, want, 65536), 0);
	/* a range that starts and ends inside sectors */
	memset(got, 0, 65536);
	cr_assert_eq(qcow2_image_read_data(ro, got, 1000, host + 100, 131072 + 100), 0);
	cr_assert_eq(memcmp(got, want + 100, 1000), 0);
	qcow2_image_close(ro);
	qcow2_image_close(img);
	free(want);
	free(got);
}

Test(encrypted, without_a_key_metadata_only)
{
	struct qcow2_image *img = create_luks(), *ro;
	uint8_t buf[4096] = {1};
	int r;

	cr_assert_eq(qcow2_image_write(img, buf, sizeof(buf), 0, NULL), 0, "%s",
		     qcow2_last_error());
	cr_assert_eq(qcow2_image_flush(img), 0);
	ro = reopen(img, NULL, &r);
	cr_assert_eq(r, 0, "%s", qcow2_last_error());
	cr_assert(qcow2_image_encrypted(ro));
	cr_assert_not(qcow2_image_data_readable(ro));
	cr_assert_eq(qcow2_image_read_data(ro, buf, sizeof(buf), host_of(ro, 0), 0), -ENOKEY);
	cr_assert(strstr(qcow2_last_error(),
			 "'copy.qcow2': encrypted, no key given (--key IMAGE=KEYFILE)"),
		  "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_data_writable(ro), -ENOKEY);
	qcow2_image_close(ro);
	qcow2_image_close(img);
}

Test(encrypted, a_wrong_key_fails_the_open_naming_the_image)
{
	struct qcow2_image *img = create_luks(), *ro;
	int r;

	ro = reopen(img, &wrong, &r);
	cr_assert_eq(r, -EKEYREJECTED);
	cr_assert_null(ro);
	cr_assert_str_eq(qcow2_last_error(), "wrong key for 'copy.qcow2'");
	qcow2_image_close(img);
}

Test(encrypted, writes_are_whole_sectors_and_never_compressed)
{
	struct qcow2_image *img = create_luks();
	uint8_t *buf = calloc(1, 65536);

	/* (a cluster written whole the first time; then in place) */
	cr_assert_eq(qcow2_image_write(img, buf, 4096, 0, NULL), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_write(img, buf, 100, 512, NULL), -EINVAL);
	cr_assert(strstr(qcow2_last_error(), "512-byte sectors"), "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_write_compressed(img, buf, 0), -ENOTSUP);
	cr_assert(strstr(qcow2_last_error(), "compression and encryption"), "%s",
		  qcow2_last_error());
	qcow2_image_close(img);
	free(buf);
}

Test(encrypted, a_key_check_tells_no_key_wrong_key_and_the_right_one)
{
	struct qcow2_image *img = create_luks();
	struct qcow2_io *io = qcow2_image_io(img);
	const struct qcow2_header *h = qcow2_image_header(img);

	cr_assert_eq(qcow2_image_key_check(io, "enc.qcow2", h, NULL), -ENOKEY);
	cr_assert_eq(qcow2_image_key_check(io, "enc.qcow2", h, &wrong), -EKEYREJECTED);
	cr_assert_str_eq(qcow2_last_error(), "wrong key for 'enc.qcow2'");
	cr_assert_eq(qcow2_image_key_check(io, "enc.qcow2", h, &pass), 0, "%s", qcow2_last_error());
	qcow2_image_close(img);
}
