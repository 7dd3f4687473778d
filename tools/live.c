/* SPDX-License-Identifier: MIT */
/*
 * live.c - the live forms of snapshot create --external, commit and pull: when the image is
 * held by a qcowfs mount, the command runs in that daemon on the view's open chain (its
 * handler: fs/live.c) through the control socket (ctl.c), and its plan comes back as records,
 * printed here as the offline command prints its own.
 */
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"
#include "qcowctl.h"

/* A step record ("kind", "image", "detail", "bytes") appended to the plan. */
static void plan_record(void *ctx, const char *rec)
{
	struct qcow2_plan *p = ctx;
	char kind[16], image[PATH_MAX], detail[PATH_MAX], bytes[32];
	struct qcow2_step *s;

	if (!ctl_rec_get(rec, "kind", kind, sizeof(kind)) ||
	    !ctl_rec_get(rec, "image", image, sizeof(image)))
		return;
	if (p->n == p->cap) {
		size_t cap = p->cap ? 2 * p->cap : 8;
		struct qcow2_step *v = realloc(p->v, cap * sizeof(*v));

		if (!v)
			return;
		p->v = v;
		p->cap = cap;
	}
	s = &p->v[p->n];
	s->kind = (enum qcow2_step_kind)atoi(kind);
	s->image = strdup(image);
	s->detail = ctl_rec_get(rec, "detail", detail, sizeof(detail)) ? strdup(detail) : NULL;
	s->bytes = ctl_rec_get(rec, "bytes", bytes, sizeof(bytes)) ? strtoull(bytes, NULL, 10) : 0;
	if (s->image)
		p->n++;
}

int live_abs_path(const char *path, char *out, size_t cap)
{
	char dir[PATH_MAX], base[PATH_MAX], real[PATH_MAX];
	int n;

	if (realpath(path, out))
		return 0;
	snprintf(dir, sizeof(dir), "%s", path);
	snprintf(base, sizeof(base), "%s", path);
	if (!realpath(dirname(dir), real))
		return -1;
	n = snprintf(out, cap, "%s/%s", strcmp(real, "/") ? real : "", basename(base));
	return n < 0 || (size_t)n >= cap ? -1 : 0;
}

int live_layer_path(const char *image, const char *name, char *out, size_t cap)
{
	char dir[PATH_MAX], joined[PATH_MAX * 2];

	if (name[0] == '/' || realpath(name, out))
		return live_abs_path(name, out, cap);
	snprintf(dir, sizeof(dir), "%s", image);
	snprintf(joined, sizeof(joined), "%s/%s", dirname(dir), name);
	return realpath(joined, out) ? 0 : -1;
}

int live_forward(const char *image, int argc, char **argv, const struct common_opts *co,
		 const char *what)
{
	struct qcow2_plan plan = {0};
	struct progress p;
	int r;

	progress_init(&p, co, what);
	r = ctl_forward(image, argc, argv, plan_record, &plan, &p);
	if (r == 0)
		print_job_plan(&plan, co);
	qcow2_plan_release(&plan);
	return r;
}
