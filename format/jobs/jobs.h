/* SPDX-License-Identifier: MIT */
/*
 * jobs.h - the block jobs (commit, pull, rebase, copy, convert, create) and the directory
 * scan: the top layer (docs/design.md).
 */
#ifndef QCOW2_JOBS_H
#define QCOW2_JOBS_H

#include "chain/chain.h"

/* The keys of encrypted images a job opens (struct qcow2_job's; none without them). */
static inline struct qcow2_keys qcow2_job_keys(const struct qcow2_job *job)
{
	struct qcow2_keys none = {NULL, NULL};

	return job && job->keys ? *job->keys : none;
}

/* commit.c: what the block jobs (commit.c) share with convert.c. */
int qcow2_commit_plan_add(struct qcow2_plan *p, enum qcow2_step_kind kind, const char *image,
			  const char *detail, uint64_t bytes);
/* The path and format ("qcow2", "raw") of layer @i of @c ("" / "raw" if there is none). */
const char *qcow2_commit_layer_path(struct qcow2_chain *c, unsigned i);
const char *qcow2_commit_layer_format(struct qcow2_chain *c, unsigned i);
/* The layer of @c that is the file @name (as given, or relative to the top's directory). */
int qcow2_commit_find_layer(struct qcow2_chain *c, const char *name, unsigned *idx);
/* @target (absolute) as @image should store it: relative to @image's directory when
 * @relative, else absolute. */
int qcow2_commit_name_for(const char *image, const char *target, bool relative, char *out,
			  size_t cap);

#endif
