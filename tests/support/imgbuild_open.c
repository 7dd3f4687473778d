/* SPDX-License-Identifier: MIT */
/*
 * imgbuild_open.c - what the builder built, opened from memory (the external data file too):
 * loaded by the image layer (imgbuild_load(), for tests of that layer and the ones below it) or
 * opened through the engine's public entry point (imgbuild_open(), in its own library, so that
 * a test below the engine does not link it).
 */
#include <stdint.h>
#include <string.h>

#include "imgbuild.h"
#include "image/image.h"

static int open_mem_data(void *ctx, const char *stored_name, struct qcow2_io **io)
{
	const struct imgbuild *img = ctx;

	(void)stored_name;
	*io = imgbuild_data_io(img);
	return 0;
}

static void mem_opts(const struct imgbuild *img, struct qcow2_image_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->open_data_file = open_mem_data;
	o->ctx = (void *)(uintptr_t)img;
}

#ifdef IMGBUILD_OPEN
int imgbuild_open(const struct imgbuild *img, struct qcow2_image **out)
{
	struct qcow2_image_opts o;

	mem_opts(img, &o);
	return qcow2_image_open(imgbuild_io(img), "mem.qcow2", &o, out);
}
#else
int imgbuild_load(const struct imgbuild *img, struct qcow2_image **out)
{
	struct qcow2_image_opts o;

	mem_opts(img, &o);
	return qcow2_image_load(imgbuild_io(img), "mem.qcow2", &o, out);
}
#endif
