/* SPDX-License-Identifier: MIT */
/*
 * cmd-checksum.c - qcowctl checksum [--json] [-p|-q] [-U] IMAGE[@SNAP]: the SHA-256 of the flat
 * view (of internal snapshot SNAP of IMAGE), i.e. of what `qemu-img convert -O raw` writes, in
 * sha256sum's format.
 *
 * Sparse-aware: the view is mapped first; holes and zero extents are hashed from a static zero
 * buffer without reading anything, data (plain or compressed) is read in chunks of up to
 * CHUNK_BYTES, gathering small adjacent extents into one read. The zeros still cost hashing
 * time (SHA-256 has no shortcut for them: about 1.5 GB/s here), but no I/O. Read-only: an
 * interrupt (SIGINT, SIGTERM) stops between chunks with nothing to undo.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "qcow2.h"
#include "qcowctl.h"

#define CHUNK_BYTES (4u << 20)
#define ZERO_BYTES  (1u << 20)

static const uint8_t zeros[ZERO_BYTES];

struct hasher {
	struct qcow2_chain *c;
	EVP_MD_CTX *md;
	uint8_t *buf;			   /* CHUNK_BYTES */
	uint64_t pending_off, pending_len; /* data gathered for one read */
	uint64_t size;
	struct progress progress;
};

static void checksum_usage(FILE *f)
{
	fprintf(f,
		"usage: qcowctl checksum [--json] [-p|-q] [-U] IMAGE[@SNAP]\n\n"
		"Print the SHA-256 of IMAGE's flat view (the bytes `qemu-img convert -O raw`\n"
		"gives), or of its internal snapshot SNAP (an id or a name), as sha256sum does.\n"
		"Holes and zero clusters are hashed without being read. If a file named\n"
		"IMAGE@SNAP exists, it is the image; otherwise the longest existing IMAGE is.\n\n"
		"  --json             {\"filename\": ..., \"sha256\": ...}\n"
		"  -p, --progress     show a progress bar (default: on a terminal)\n"
		"  -q, --quiet        no progress bar\n"
		"  --output=json|human  as --json, or the text (the default)\n"
		"  -U, --force-share  do not take (or respect) image locks\n"
		"  -f qcow2           IMAGE's format (only qcow2; a raw IMAGE is recognised)\n"
		"  --key IMAGE=KEYFILE  the passphrase of an encrypted image of the chain "
		"(repeatable)\n"
		"  -h, --help         this text\n");
}

static int hash(struct hasher *h, const void *p, size_t n)
{
	if (EVP_DigestUpdate(h->md, p, n) != 1)
		return qcow2_set_error(-EIO, "SHA-256 failed");
	return 0;
}

/* Between steps: show progress, stop on an interrupt. */
static int step(struct hasher *h, uint64_t done)
{
	progress_update(&h->progress, done, h->size);
	if (was_interrupted())
		return qcow2_set_error(-ECANCELED, "interrupted");
	return 0;
}

/* Read and hash the data gathered so far. */
static int flush_pending(struct hasher *h)
{
	int r;

	if (!h->pending_len)
		return 0;
	r = qcow2_chain_pread(h->c, h->buf, (size_t)h->pending_len, h->pending_off);
	if (r == 0)
		r = hash(h, h->buf, (size_t)h->pending_len);
	if (r == 0)
		r = step(h, h->pending_off + h->pending_len);
	h->pending_off += h->pending_len;
	h->pending_len = 0;
	return r;
}

/* Data at [@off, @off + @len): gather it, reading whenever a whole chunk is gathered. */
static int add_data(struct hasher *h, uint64_t off, uint64_t len)
{
	int r = 0;

	if (h->pending_len && h->pending_len + len > CHUNK_BYTES)
		r = flush_pending(h);
	if (!h->pending_len)
		h->pending_off = off;
	while (r == 0 && len) {
		uint64_t n = CHUNK_BYTES - h->pending_len;
		if (n > len)
			n = len;
		h->pending_len += n;
		len -= n;
		if (h->pending_len == CHUNK_BYTES)
			r = flush_pending(h);
	}
	return r;
}

/* Zeros at [@off, @off + @len): hashed from the zero buffer, nothing read. */
static int add_zeros(struct hasher *h, uint64_t off, uint64_t len)
{
	int r = flush_pending(h);

	while (r == 0 && len) {
		size_t n = len < ZERO_BYTES ? (size_t)len : ZERO_BYTES;
		r = hash(h, zeros, n);
		off += n;
		len -= n;
		if (r == 0)
			r = step(h, off);
	}
	return r;
}

static int hash_view(struct hasher *h)
{
	uint64_t off = 0;
	int r = 0;

	while (r == 0 && off < h->size) {
		struct qcow2_extent e;

		r = qcow2_chain_map(h->c, off, h->size - off, &e);
		if (r < 0)
			break;
		if (e.kind == QCOW2_EXTENT_DATA || e.kind == QCOW2_EXTENT_COMPRESSED)
			r = add_data(h, off, e.len);
		else
			r = add_zeros(h, off, e.len);
		off += e.len;
	}
	if (r == 0)
		r = flush_pending(h);
	return r;
}

/* Open @path (at @snap if not NULL) and hash its view into @digest (32 bytes). */
static int checksum(const char *path, const char *snap, bool force_share,
		    const struct common_opts *o, uint8_t *digest)
{
	struct qcow2_chain_opts co = {
	    .lock = !force_share, .snapshot = snap, .top_blockdev = true, .keys = *cli_keys()};
	struct hasher h = {0};
	unsigned len = 0;
	int r;

	r = qcow2_chain_open(path, &co, &h.c);
	if (r < 0)
		return r;
	h.size = qcow2_chain_size(h.c);
	h.md = EVP_MD_CTX_new();
	h.buf = malloc(CHUNK_BYTES);
	if (!h.md || !h.buf)
		r = qcow2_oom();
	else if (EVP_DigestInit_ex(h.md, EVP_sha256(), NULL) != 1)
		r = qcow2_set_error(-EIO, "SHA-256 is not available");
	progress_init(&h.progress, o, "checksum");
	if (r == 0)
		r = hash_view(&h);
	if (r == 0 && (EVP_DigestFinal_ex(h.md, digest, &len) != 1 || len != 32))
		r = qcow2_set_error(-EIO, "SHA-256 failed");
	progress_end(&h.progress);
	free(h.buf);
	EVP_MD_CTX_free(h.md);
	qcow2_chain_close(h.c);
	return r;
}

static void print_result(const char *arg, const uint8_t *digest, bool json)
{
	char hex[65];
	struct json j;
	int i;

	for (i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", digest[i]);
	if (!json) {
		printf("%s  %s\n", hex, arg);
		return;
	}
	json_init(&j, stdout);
	json_begin_object(&j, NULL);
	json_string(&j, "filename", arg);
	json_string(&j, "sha256", hex);
	json_end_object(&j);
	json_finish(&j);
}

int cmd_checksum(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"json", no_argument, NULL, OPT_JSON},
	    {"progress", no_argument, NULL, 'p'},
	    {"quiet", no_argument, NULL, 'q'},
	    {"force-share", no_argument, NULL, 'U'},
	    {"help", no_argument, NULL, 'h'},
	    KEY_LONGOPT,
	    {NULL, 0, NULL, 0},
	};
	struct common_opts o = {0};
	bool force_share = false;
	uint8_t digest[32];
	char *path, *snap;
	int c, r;

	while ((c = next_option(argc, argv, "hpqU", longopts, "checksum")) != -1) {
		if (common_opt(c, &o))
			continue;
		switch (c) {
		case 'U':
			force_share = true;
			break;
		case 'h':
			checksum_usage(stdout);
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind + 1 != argc) {
		return usage_error("checksum", "takes one IMAGE[@SNAP]");
	}
	catch_interrupts();
	r = split_image_snapshot(argv[optind], &path, &snap);
	if (r == 0)
		r = checksum(path, snap, force_share, &o, digest);
	free(path);
	free(snap);
	if (r < 0)
		return fail_lib();
	print_result(argv[optind], digest, o.json);
	return EXIT_OK;
}
