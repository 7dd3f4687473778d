/* SPDX-License-Identifier: MIT */
/*
 * test_live.c - the live jobs (jobs/live.c, chain/live.c) on an open chain that a writer thread
 * writes meanwhile: a live external snapshot, a live pull, a live intermediate commit and an
 * active commit with pivot.
 *
 * The writer keeps a byte model of the view (it is the only writer, and updates the model
 * after each write returns); it writes before, during and after the job. Afterwards the chain
 * reads the model, the chain's layers are the ones asked for, every image passes our check
 * and qemu-img's, and the files reopened from disk show the model (qemu-img compare too). A
 * cancelled job leaves the layers and the view as they were.
 */
#include <pthread.h>
#include <sched.h>

#include "jobs_harness.h"

TestSuite(live, .init = jh_setup, .fini = jh_teardown);

#define CLUSTERS 2048u /* 8 MiB: the writes reach L2 tables the top did not have */

static struct qcow2_chain *chain;
static struct qcow2_chain_opts copts;
static uint8_t *model;
static uint64_t model_size;
static volatile bool job_done;
static unsigned writes_after;		/* writes made after the job ended */
static volatile unsigned writes_before; /* ... and before */

/* base <- mid <- top, written to the test directory, the chain of top opened writable and
 * locked, as the daemon opens it. */
static void open_chain(void)
{
	struct imgbuild *base = jh_qcow2("base.qcow2", CLUSTERS, NULL, NULL);
	struct imgbuild *mid = jh_qcow2("mid.qcow2", CLUSTERS, "base.qcow2", "qcow2");
	struct imgbuild *top = jh_qcow2("top.qcow2", CLUSTERS, "mid.qcow2", "qcow2");

	jh_data(base, 0, 100, 0xb0);
	jh_data(mid, 10, 30, 0x30);
	jh_zero(mid, 50, 4);
	jh_data(mid, 80, 20, 0x31);
	jh_data(top, 20, 5, 0x70);
	jh_zero(top, 90, 3);
	jh_data(top, 120, 8, 0x71);
	jh_data(base, 1500, 40, 0xb1);
	jh_data(mid, 1520, 10, 0x32);
	jh_save_all();
	model = jh_model_view("top.qcow2", &model_size);
	memset(&copts, 0, sizeof(copts));
	copts.lock = true;
	copts.writable = true;
	cr_assert_eq(qcow2_chain_open(jh_path("top.qcow2"), &copts, &chain), 0, "%s",
		     qcow2_last_error());
	cr_assert_eq(qcow2_chain_lock_write(chain, true), 0, "%s", qcow2_last_error());
	job_done = false;
	writes_after = 0;
	writes_before = 0;
}

/* Random writes (and now and then a zeroing or a flush) until the job is done and a few more. */
static void *writer(void *arg)
{
	uint64_t seed = (uint64_t)(uintptr_t)arg;
	uint8_t buf[3 * 4096];

	while (!job_done || writes_after < 32) {
		uint64_t len = 1 + imgbuild_rand(&seed) % sizeof(buf);
		uint64_t off = imgbuild_rand(&seed) % (model_size - len);
		unsigned kind = (unsigned)(imgbuild_rand(&seed) % 16);
		size_t i;
		int r;

		if (kind == 0) {
			r = qcow2_chain_zero(chain, off, len, 0);
			memset(buf, 0, len);
		} else {
			for (i = 0; i < len; i++)
				buf[i] = (uint8_t)imgbuild_rand(&seed);
			r = qcow2_chain_pwrite(chain, buf, len, off);
		}
		cr_assert_eq(r, 0, "write at %llu: %s", (unsigned long long)off,
			     qcow2_last_error());
		memcpy(model + off, buf, len);
		if (kind == 1)
			cr_assert_eq(qcow2_chain_flush(chain), 0, "%s", qcow2_last_error());
		if (job_done)
			writes_after++;
		else
			writes_before++;
	}
	return NULL;
}

struct job_run {
	int (*run)(void);
	int result;
};

static void *job_thread(void *arg)
{
	struct job_run *j = arg;

	while (writes_before < 16) /* the writer is under way when the job starts */
		sched_yield();
	j->result = j->run();
	job_done = true;
	return NULL;
}

/* Run @run in a thread while the writer writes; its result. */
static int run_with_writer(int (*run)(void), uint64_t seed)
{
	struct job_run j = {run, 0};
	pthread_t w, t;

	cr_assert_eq(pthread_create(&w, NULL, writer, (void *)(uintptr_t)seed), 0);
	cr_assert_eq(pthread_create(&t, NULL, job_thread, &j), 0);
	pthread_join(t, NULL);
	pthread_join(w, NULL);
	return j.result;
}

/* The chain's layers are @names (top first), and it reads the model. */
static void expect_chain(const char *const *names, unsigned n)
{
	uint8_t *got = malloc(model_size);
	unsigned i;

	cr_assert_not_null(got);
	cr_assert_eq(qcow2_chain_depth(chain), n, "the chain has %u layers, not %u",
		     qcow2_chain_depth(chain), n);
	for (i = 0; i < n; i++) {
		struct qcow2_layer_info li;

		cr_assert_eq(qcow2_chain_layer(chain, i, &li), 0);
		cr_assert_str_eq(li.path, jh_path(names[i]), "layer %u", i);
	}
	cr_assert_eq(qcow2_chain_size(chain), model_size);
	cr_assert_eq(qcow2_chain_pread(chain, got, model_size, 0), 0, "%s", qcow2_last_error());
	cr_assert_eq(jh_first_diff(got, model, model_size), -1, "the view differs at %ld",
		     jh_first_diff(got, model, model_size));
	free(got);
}

/* Closed: every image valid (ours, qemu-img's), and @top's file shows the model. */
static void expect_files(const char *top, const char *const *all, unsigned n)
{
	unsigned i;

	qcow2_chain_close(chain);
	chain = NULL;
	for (i = 0; i < n; i++) {
		jh_check_image(all[i], false, all[i]);
		jh_qemu_check(all[i]);
	}
	jh_expect_view(top, model, model_size, "after the job");
	jh_qemu_compare(top, "qcow2", model, model_size);
	free(model);
}

/* ---- external snapshot ---- */

static int run_snapshot(void)
{
	struct qcow2_plan plan;
	int r =
	    qcow2_chain_snapshot_external_live(chain, jh_path("new.qcow2"), &copts, false, &plan);

	qcow2_plan_release(&plan);
	return r;
}

Test(live, external_snapshot_while_writing)
{
	const char *layers[] = {"new.qcow2", "top.qcow2", "mid.qcow2", "base.qcow2"};

	open_chain();
	cr_assert_eq(run_with_writer(run_snapshot, 1), 0, "%s", qcow2_last_error());
	expect_chain(layers, 4);
	cr_assert_gt(writes_after, 0);
	jh_expect_backing("new.qcow2", "top.qcow2", "qcow2", "after the snapshot");
	/* the old top is a reader now: another reader may open it, and no writer */
	{
		struct qcow2_chain_opts ro = {.lock = true};
		struct qcow2_chain *c2;

		cr_assert_eq(qcow2_chain_open(jh_path("top.qcow2"), &ro, &c2), 0, "%s",
			     qcow2_last_error());
		qcow2_chain_close(c2);
		ro.writable = true;
		cr_assert_eq(qcow2_chain_open(jh_path("new.qcow2"), &ro, &c2), -EBUSY,
			     "the new top is not locked");
	}
	expect_files("new.qcow2", layers, 4);
}

/* ---- pull ---- */

static int run_pull_all(void)
{
	struct qcow2_plan plan;
	int r = qcow2_chain_pull_live(chain, NULL, &copts, false, NULL, &plan);

	qcow2_plan_release(&plan);
	return r;
}

static int run_pull_mid(void)
{
	struct qcow2_plan plan;
	int r = qcow2_chain_pull_live(chain, jh_path("base.qcow2"), &copts, false, NULL, &plan);

	qcow2_plan_release(&plan);
	return r;
}

Test(live, pull_into_top_while_writing)
{
	const char *layers[] = {"top.qcow2", "base.qcow2"};
	const char *all[] = {"top.qcow2", "mid.qcow2", "base.qcow2"};

	open_chain();
	cr_assert_eq(run_with_writer(run_pull_mid, 2), 0, "%s", qcow2_last_error());
	expect_chain(layers, 2);
	jh_expect_backing("top.qcow2", "base.qcow2", "qcow2", "after the pull");
	jh_expect_unchanged("mid.qcow2", "after the pull");
	expect_files("top.qcow2", all, 3);
}

Test(live, pull_whole_chain_while_writing)
{
	const char *layers[] = {"top.qcow2"};
	const char *all[] = {"top.qcow2", "mid.qcow2", "base.qcow2"};

	open_chain();
	cr_assert_eq(run_with_writer(run_pull_all, 3), 0, "%s", qcow2_last_error());
	expect_chain(layers, 1);
	jh_expect_backing("top.qcow2", "", NULL, "after the pull");
	expect_files("top.qcow2", all, 3);
}

/* ---- commit ---- */

static int run_commit_mid(void)
{
	struct qcow2_commit_opts co = {.top = jh_path("mid.qcow2")};
	struct qcow2_plan plan;
	int r = qcow2_chain_commit_live(chain, &co, &copts, NULL, &plan);

	qcow2_plan_release(&plan);
	return r;
}

static int run_commit_active(void)
{
	struct qcow2_commit_opts co = {.base = jh_path("base.qcow2")};
	struct qcow2_plan plan;
	int r = qcow2_chain_commit_live(chain, &co, &copts, NULL, &plan);

	qcow2_plan_release(&plan);
	return r;
}

Test(live, intermediate_commit_while_writing)
{
	const char *layers[] = {"top.qcow2", "base.qcow2"};
	const char *all[] = {"top.qcow2", "mid.qcow2", "base.qcow2"};

	open_chain();
	cr_assert_eq(run_with_writer(run_commit_mid, 4), 0, "%s", qcow2_last_error());
	expect_chain(layers, 2);
	jh_expect_backing("top.qcow2", "base.qcow2", "qcow2", "after the commit");
	jh_expect_unchanged("mid.qcow2", "after the commit");
	expect_files("top.qcow2", all, 3);
}

Test(live, active_commit_with_pivot_while_writing)
{
	const char *layers[] = {"base.qcow2"};
	const char *all[] = {"top.qcow2", "mid.qcow2", "base.qcow2"};

	open_chain();
	cr_assert_eq(run_with_writer(run_commit_active, 5), 0, "%s", qcow2_last_error());
	expect_chain(layers, 1);
	/* base holds QEMU's write lock now: no other writer may open it */
	{
		struct qcow2_chain_opts wo = {.lock = true, .writable = true};
		struct qcow2_chain *c2;

		cr_assert_eq(qcow2_chain_open(jh_path("base.qcow2"), &wo, &c2), -EBUSY,
			     "base is not write-locked");
	}
	expect_files("base.qcow2", all, 3);
}

/* ---- cancel ---- */

static bool cancel_now(void *ctx)
{
	(void)ctx;
	return true;
}

Test(live, cancelled_jobs_change_nothing)
{
	const char *layers[] = {"top.qcow2", "mid.qcow2", "base.qcow2"};
	struct qcow2_job job = {.cancelled = cancel_now};
	struct qcow2_commit_opts active = {.base = jh_path("base.qcow2")};
	struct qcow2_commit_opts mid = {.top = jh_path("mid.qcow2")};
	struct qcow2_plan plan;

	open_chain();
	cr_assert_eq(qcow2_chain_pull_live(chain, NULL, &copts, false, &job, &plan), -ECANCELED);
	qcow2_plan_release(&plan);
	expect_chain(layers, 3);
	cr_assert_eq(qcow2_chain_commit_live(chain, &active, &copts, &job, &plan), -ECANCELED);
	qcow2_plan_release(&plan);
	expect_chain(layers, 3);
	cr_assert_eq(qcow2_chain_commit_live(chain, &mid, &copts, &job, &plan), -ECANCELED);
	qcow2_plan_release(&plan);
	expect_chain(layers, 3);
	jh_expect_backing("top.qcow2", "mid.qcow2", "qcow2", "after the cancels");
	/* every write lock given back: base and mid still take a reader */
	{
		struct qcow2_chain_opts ro = {.lock = true};
		struct qcow2_chain *c2;

		cr_assert_eq(qcow2_chain_open(jh_path("mid.qcow2"), &ro, &c2), 0, "%s",
			     qcow2_last_error());
		qcow2_chain_close(c2);
	}
	expect_files("top.qcow2", layers, 3);
}

/* ---- writes made from the job's own progress callback: at a chosen moment ---- */

struct midway {
	uint64_t off; /* where the callback writes */
	unsigned left;
	uint8_t tag;
};

/* Write 4 KiB at m->off (the model too), the first few times the job reports progress. */
static void write_midway(void *ctx, uint64_t done, uint64_t total)
{
	struct midway *m = ctx;
	uint8_t buf[4096];

	(void)done;
	(void)total;
	if (!m->left)
		return;
	m->left--;
	memset(buf, m->tag++, sizeof(buf));
	cr_assert_eq(qcow2_chain_pwrite(chain, buf, sizeof(buf), m->off), 0, "%s",
		     qcow2_last_error());
	memcpy(model + m->off, buf, sizeof(buf));
}

/* The first pass copies from offset 0 up: a write there after the first step lands on what it
 * copied already, and only the tracking of the top's changes brings it into base. */
Test(live, active_commit_copies_what_was_written_behind_it)
{
	const char *layers[] = {"base.qcow2"};
	const char *all[] = {"top.qcow2", "mid.qcow2", "base.qcow2"};
	struct midway m = {.off = 4096, .left = 3, .tag = 0xe0};
	struct qcow2_job job = {.progress = write_midway, .ctx = &m};
	struct qcow2_commit_opts co = {.base = jh_path("base.qcow2")};
	struct qcow2_plan plan;

	open_chain();
	cr_assert_eq(qcow2_chain_commit_live(chain, &co, &copts, &job, &plan), 0, "%s",
		     qcow2_last_error());
	qcow2_plan_release(&plan);
	cr_assert_eq(m.left, 0, "the job reported no progress to write from");
	expect_chain(layers, 1);
	expect_files("base.qcow2", all, 3);
}

/* A pull reaches the ranges of the layers below in order: a write further on, into a range
 * only mid holds, lands before the pull copies it, and the pull keeps it. */
Test(live, pull_keeps_what_the_guest_wrote_ahead_of_it)
{
	const char *layers[] = {"top.qcow2", "base.qcow2"};
	const char *all[] = {"top.qcow2", "mid.qcow2", "base.qcow2"};
	struct midway m = {.off = 1524ull << 12, .left = 1, .tag = 0xd0}; /* mid's data */
	struct qcow2_job job = {.progress = write_midway, .ctx = &m};
	struct qcow2_plan plan;

	open_chain();
	cr_assert_eq(
	    qcow2_chain_pull_live(chain, jh_path("base.qcow2"), &copts, false, &job, &plan), 0,
	    "%s", qcow2_last_error());
	qcow2_plan_release(&plan);
	cr_assert_eq(m.left, 0, "the job reported no progress to write from");
	expect_chain(layers, 2);
	expect_files("top.qcow2", all, 3);
}
