/* SPDX-License-Identifier: MIT */
/*
 * codec.c - decompression of compressed clusters (zlib raw deflate, zstd).
 *
 * A compressed cluster's stored length is a whole number of 512-byte sectors, so the input may
 * carry trailing bytes of the next cluster; decompression stops once a full cluster has been
 * produced. Output shorter than a cluster is corruption. This is the only file that knows
 * whether zstd was built in.
 *
 * Compression (copy --compress) writes what QEMU writes: a raw deflate stream (window bits
 * -12) or one zstd frame, used only when it is shorter than the cluster.
 *
 * Locks: none (no state shared between calls).
 */
#include <errno.h>
#include <limits.h>
#include <zlib.h>

#include "config.h"
#include "base/base.h"

#if HAVE_ZSTD
#include <zstd.h>
#endif

static int inflate_cluster(const void *in, size_t in_len, void *out, size_t out_len)
{
	z_stream s = {0};
	int r;

	if (in_len > UINT_MAX || out_len > UINT_MAX)
		return qcow2_set_error(-EUCLEAN, "compressed cluster too large");
	if (inflateInit2(&s, -12) != Z_OK)
		return qcow2_set_error(-ENOMEM, "cannot start zlib");
	s.next_in = (Bytef *)(uintptr_t)in;
	s.avail_in = (uInt)in_len;
	s.next_out = out;
	s.avail_out = (uInt)out_len;
	r = inflate(&s, Z_FINISH);
	inflateEnd(&s);
	/* Z_BUF_ERROR with a full output: the stream continues into padding, which is fine. */
	if ((r == Z_STREAM_END || r == Z_BUF_ERROR || r == Z_OK) && s.avail_out == 0)
		return 0;
	return qcow2_set_error(-EUCLEAN, "corrupt zlib-compressed cluster");
}

#if HAVE_ZSTD
static int zstd_cluster(const void *in, size_t in_len, void *out, size_t out_len)
{
	ZSTD_DCtx *d = ZSTD_createDCtx();
	ZSTD_inBuffer ib = {in, in_len, 0};
	ZSTD_outBuffer ob = {out, out_len, 0};
	size_t r = 0;

	if (!d)
		return qcow2_set_error(-ENOMEM, "cannot start zstd");
	while (ob.pos < ob.size && ib.pos < ib.size) {
		r = ZSTD_decompressStream(d, &ob, &ib);
		if (ZSTD_isError(r) || r == 0)
			break;
	}
	ZSTD_freeDCtx(d);
	if (!ZSTD_isError(r) && ob.pos == ob.size)
		return 0;
	return qcow2_set_error(-EUCLEAN, "corrupt zstd-compressed cluster");
}
#endif

bool qcow2_codec_available(uint8_t type)
{
	return type == QCOW2_COMPRESSION_ZLIB || (type == QCOW2_COMPRESSION_ZSTD && HAVE_ZSTD);
}

int qcow2_codec_decompress(uint8_t type, const void *in, size_t in_len, void *out, size_t out_len)
{
	switch (type) {
	case QCOW2_COMPRESSION_ZLIB:
		return inflate_cluster(in, in_len, out, out_len);
	case QCOW2_COMPRESSION_ZSTD:
#if HAVE_ZSTD
		return zstd_cluster(in, in_len, out, out_len);
#else
		return qcow2_set_error(-ENOTSUP, "zstd compression not built in");
#endif
	default:
		return qcow2_set_error(-ENOTSUP, "unknown compression type %u", type);
	}
}

static ssize_t deflate_cluster(const void *in, size_t in_len, void *out, size_t out_cap)
{
	z_stream s = {0};
	int r;

	if (in_len > UINT_MAX || out_cap > UINT_MAX)
		return qcow2_set_error(-EINVAL, "cluster too large to compress");
	if (deflateInit2(&s, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) != Z_OK)
		return qcow2_set_error(-ENOMEM, "cannot start zlib");
	s.next_in = (Bytef *)(uintptr_t)in;
	s.avail_in = (uInt)in_len;
	s.next_out = out;
	s.avail_out = (uInt)out_cap;
	r = deflate(&s, Z_FINISH);
	deflateEnd(&s);
	return r == Z_STREAM_END ? (ssize_t)(out_cap - s.avail_out) : 0;
}

ssize_t qcow2_codec_compress(uint8_t type, const void *in, size_t in_len, void *out, size_t out_cap)
{
	switch (type) {
	case QCOW2_COMPRESSION_ZLIB:
		return deflate_cluster(in, in_len, out, out_cap);
	case QCOW2_COMPRESSION_ZSTD:
#if HAVE_ZSTD
	{
		size_t r = ZSTD_compress(out, out_cap, in, in_len, 3);
		return ZSTD_isError(r) ? 0 : (ssize_t)r;
	}
#else
		return qcow2_set_error(-ENOTSUP, "zstd compression not built in");
#endif
	default:
		return qcow2_set_error(-ENOTSUP, "unknown compression type %u", type);
	}
}
