/* SPDX-License-Identifier: MIT */
/*
 * times.c - a job's phase timers (struct qcow2_job_times, qcow2.h): where the time of a
 * commit, pull, copy or check goes, measured by the jobs and printed by the tools (-v).
 *
 * Locks: none. A job's times belong to the thread that runs the job (its helper threads
 * measure nothing).
 */
#include <time.h>

#include "base/base.h"

double qcow2_clock(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void qcow2_job_time(const struct qcow2_job *job, const char *name, double secs, uint64_t bytes)
{
	struct qcow2_job_times *t = job ? job->times : NULL;
	unsigned i;

	if (!t)
		return;
	for (i = 0; i < t->n && strcmp(t->v[i].name, name) != 0; i++)
		;
	if (i == t->n) {
		if (t->n == QCOW2_JOB_MAX_PHASES)
			return;
		t->v[t->n++] = (struct qcow2_job_phase){name, 0, 0};
	}
	t->v[i].secs += secs < 0 ? 0 : secs;
	t->v[i].bytes += bytes;
}

void qcow2_job_phase(const struct qcow2_job *job, const char *name, struct qcow2_phase_mark m,
		     uint64_t bytes)
{
	double sync = qcow2_io_sync_secs() - m.sync;

	if (!job || !job->times)
		return;
	qcow2_job_time(job, name, qcow2_clock() - m.t - sync, bytes);
	if (sync > 0)
		qcow2_job_time(job, "sync", sync, 0);
}
