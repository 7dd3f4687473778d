/* SPDX-License-Identifier: MIT */
/*
 * test_write_parallel.c - first writes of one image from several threads at once (write.c's
 * in-flight table, docs/design.md "Parallel first writes"): a copy-on-write that is still
 * reading what lies below does not hold up a first write into another cluster (its fill waits
 * for that write to finish, and fails after a bounded wait if it never does, so a serialized
 * engine fails the test instead of hanging it); a second first write of the same cluster waits
 * for the first and both are kept; a failed data write gives its cluster back; threads writing
 * interleaved parts of the same clusters, with a flush running beside them, leave exactly what
 * a byte model says, no leak and no corruption.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "imgbuild.h"
#include "engine/engine.h"

#define WAIT_SECONDS 5

static struct imgbuild *img;
static struct qcow2_image *qi;

static void setup(void)
{
	img = NULL;
	qi = NULL;
}

static void teardown(void)
{
	qcow2_image_close(qi);
	imgbuild_free(img);
}

TestSuite(write_parallel, .init = setup, .fini = teardown);

/* What the layers below show at guest offset @off. */
static uint8_t below(uint64_t off)
{
	return (uint8_t)(off * 131 + (off >> 9) * 7 + 1);
}

static int fill_pattern(void *ctx, void *buf, size_t n, uint64_t off)
{
	uint8_t *p = buf;
	size_t i;

	(void)ctx;
	for (i = 0; i < n; i++)
		p[i] = below(off + i);
	return 0;
}

static struct qcow2_image *open_writable(void)
{
	struct qcow2_image_opts o = {.writable = true};
	struct qcow2_image *q;

	cr_assert_eq(qcow2_image_open(imgbuild_io(img), "mem.qcow2", &o, &q), 0, "%s",
		     qcow2_last_error());
	return q;
}

/* What the chain would show at [@off, @off + @n): the image's data, else what lies below. */
static void view_read(struct qcow2_image *q, uint8_t *buf, size_t n, uint64_t off)
{
	while (n) {
		struct qcow2_extent e;

		cr_assert_eq(qcow2_image_map(q, NULL, off, n, &e), 0, "%s", qcow2_last_error());
		if (e.kind == QCOW2_EXTENT_DATA)
			cr_assert_eq(qcow2_io_pread_full(e.io, buf, e.len, e.host_off), 0);
		else if (e.kind == QCOW2_EXTENT_ZERO)
			memset(buf, 0, e.len);
		else
			fill_pattern(NULL, buf, e.len, off);
		buf += e.len;
		off += e.len;
		n -= e.len;
	}
}

static void assert_clean(struct qcow2_image *q)
{
	struct qcow2_check_result res;

	cr_assert_eq(qcow2_image_check(q, &res), 0, "%s", qcow2_last_error());
	cr_assert_eq(res.corruptions, 0, "%lu corruptions", (unsigned long)res.corruptions);
	cr_assert_eq(res.leaks, 0, "%lu leaked clusters", (unsigned long)res.leaks);
}

/* ---- a copy-on-write that waits for a first write elsewhere ---- */

struct rendezvous {
	pthread_mutex_t m;
	pthread_cond_t c;
	bool in_fill;	  /* the first writer is reading below */
	bool second_done; /* the second write returned */
	int first_r;
};

static struct rendezvous rv = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, false,
			       0};

/* Wait on rv.c until *@flag, at most WAIT_SECONDS. Returns whether it came. rv.m held. */
static bool wait_for(bool *flag)
{
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += WAIT_SECONDS;
	while (!*flag)
		if (pthread_cond_timedwait(&rv.c, &rv.m, &until) == ETIMEDOUT)
			break;
	return *flag;
}

/* The first writer's fill: says it is reading, then waits for the second write to finish. */
static int fill_blocking(void *ctx, void *buf, size_t n, uint64_t off)
{
	bool came;

	pthread_mutex_lock(&rv.m);
	rv.in_fill = true;
	pthread_cond_broadcast(&rv.c);
	came = wait_for(&rv.second_done);
	pthread_mutex_unlock(&rv.m);
	if (!came)
		return qcow2_set_error(-ETIMEDOUT, "the second first write did not finish");
	return fill_pattern(ctx, buf, n, off);
}

static void *first_writer(void *arg)
{
	struct qcow2_fill fill = {fill_blocking, NULL, true};
	uint8_t data[4096];

	(void)arg;
	memset(data, 0xa1, sizeof(data));
	qcow2_image_read_begin(qi);
	rv.first_r = qcow2_image_write(qi, data, sizeof(data), 8192, &fill);
	qcow2_image_read_end(qi);
	return NULL;
}

Test(write_parallel, a_copy_on_write_reading_below_does_not_hold_up_another_clusters_first_write)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct qcow2_fill fill = {fill_pattern, NULL, true};
	uint64_t cs, second;
	uint8_t data[4096], got[4096], want[4096];
	pthread_t t;
	bool started;
	size_t i;
	int r;

	o.size = 4u << 20;
	img = imgbuild_new(&o);
	qi = open_writable();
	cs = qi->cluster_bytes;
	second = 10 * cs + 512;
	cr_assert_eq(pthread_create(&t, NULL, first_writer, NULL), 0);
	pthread_mutex_lock(&rv.m);
	started = wait_for(&rv.in_fill);
	pthread_mutex_unlock(&rv.m);
	cr_assert(started, "the first write never read below");

	memset(data, 0xb2, sizeof(data));
	qcow2_image_read_begin(qi);
	r = qcow2_image_write(qi, data, sizeof(data), second, &fill);
	qcow2_image_read_end(qi);
	pthread_mutex_lock(&rv.m);
	rv.second_done = true;
	pthread_cond_broadcast(&rv.c);
	pthread_mutex_unlock(&rv.m);
	pthread_join(t, NULL);
	cr_assert_eq(r, 0, "second write: %s", qcow2_last_error());
	cr_assert_eq(rv.first_r, 0,
		     "the first write's copy-on-write waited in vain: the second write into "
		     "another cluster waited for it (%d)",
		     rv.first_r);

	/* both clusters hold the new data over what lies below */
	view_read(qi, got, sizeof(got), 8192);
	memset(want, 0xa1, sizeof(want));
	cr_assert_arr_eq(got, want, sizeof(want));
	view_read(qi, got, sizeof(got), 4096);
	for (i = 0; i < sizeof(want); i++)
		want[i] = below(4096 + i);
	cr_assert_arr_eq(got, want, sizeof(want), "the rest of the first cluster, from below");
	view_read(qi, got, sizeof(got), second);
	cr_assert_arr_eq(got, data, sizeof(data));
	view_read(qi, got, 512, 10 * cs);
	for (i = 0; i < 512; i++)
		want[i] = below(10 * cs + i);
	cr_assert_arr_eq(got, want, 512, "the head of the second cluster, from below");
	cr_assert_eq(qcow2_image_flush(qi), 0, "%s", qcow2_last_error());
	assert_clean(qi);
}

/* ---- many writers against a byte model ---- */

#define WRITERS 4

struct segment {
	uint64_t off;
	uint32_t len;
	uint8_t owner, seed;
};

struct writer {
	struct segment *segs;
	size_t n;
	unsigned id;
	int r;
};

static void segment_bytes(const struct segment *s, uint8_t *buf)
{
	uint32_t i;

	for (i = 0; i < s->len; i++)
		buf[i] = (uint8_t)(s->seed + i * 3 + (i >> 9));
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	struct qcow2_fill fill = {fill_pattern, NULL, true};
	uint8_t *buf = malloc(4u << 16);
	size_t i;

	for (i = 0; i < w->n && w->r == 0; i++) {
		segment_bytes(&w->segs[i], buf);
		qcow2_image_read_begin(qi);
		w->r = qcow2_image_write(qi, buf, w->segs[i].len, w->segs[i].off, &fill);
		qcow2_image_read_end(qi);
	}
	free(buf);
	return NULL;
}

static volatile bool writers_done;

static void *flusher_main(void *arg)
{
	int *r = arg;

	while (!writers_done && *r == 0)
		*r = qcow2_image_flush(qi);
	return NULL;
}

struct shape {
	uint32_t cluster_bits;
	bool extended_l2;
};

ParameterizedTestParameters(write_parallel,
			    interleaved_first_writes_from_many_threads_match_a_model)
{
	static struct shape cases[] = {{16, false}, {12, false}, {16, true}};
	return cr_make_param_array(struct shape, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct shape *c, write_parallel,
		  interleaved_first_writes_from_many_threads_match_a_model)
{
	static const uint32_t sectors[] = {1, 2, 8, 9, 128, 256, 300};
	struct imgbuild_opts o = imgbuild_defaults();
	uint64_t size = 16u << 20, off = 0;
	uint8_t *model = malloc(size), *got = malloc(size);
	struct segment *all = calloc(size / 512, sizeof(*all));
	struct writer w[WRITERS] = {{0}};
	pthread_t t[WRITERS], ft;
	size_t n = 0, i;
	int flush_r = 0;

	o.size = size;
	o.cluster_bits = c->cluster_bits;
	o.extended_l2 = c->extended_l2;
	o.backing_file = "below.raw"; /* (the fill stands for it) */
	img = imgbuild_new(&o);
	qi = open_writable();
	fill_pattern(NULL, model, size, 0);
	srand(c->cluster_bits + c->extended_l2);
	/* a partition of the first 12 MiB into segments of every shape, each a thread's */
	while (off < (12u << 20)) {
		struct segment s = {off, sectors[(unsigned)rand() % 7] * 512u,
				    (uint8_t)((unsigned)rand() % WRITERS), (uint8_t)rand()};

		segment_bytes(&s, model + off);
		all[n++] = s;
		off += s.len;
	}
	for (i = 0; i < WRITERS; i++) {
		w[i].segs = calloc(n, sizeof(struct segment));
		w[i].id = (unsigned)i;
	}
	/* each thread writes its own in a shuffled order */
	for (i = n; i > 1; i--) {
		size_t j = (size_t)rand() % i;
		struct segment s = all[i - 1];

		all[i - 1] = all[j];
		all[j] = s;
	}
	for (i = 0; i < n; i++)
		w[all[i].owner].segs[w[all[i].owner].n++] = all[i];
	writers_done = false;
	cr_assert_eq(pthread_create(&ft, NULL, flusher_main, &flush_r), 0);
	for (i = 0; i < WRITERS; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, writer_main, &w[i]), 0);
	for (i = 0; i < WRITERS; i++)
		pthread_join(t[i], NULL);
	writers_done = true;
	pthread_join(ft, NULL);
	for (i = 0; i < WRITERS; i++)
		cr_assert_eq(w[i].r, 0, "writer %zu: %s", i, qcow2_last_error());
	cr_assert_eq(flush_r, 0, "flush beside the writers failed");
	view_read(qi, got, size, 0);
	cr_assert_arr_eq(got, model, size, "the view after parallel writes");
	cr_assert_eq(qcow2_image_flush(qi), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_flush(qi), 0, "%s", qcow2_last_error());
	assert_clean(qi);
	for (i = 0; i < WRITERS; i++)
		free(w[i].segs);
	free(all);
	free(model);
	free(got);
}

/* ---- a second first write of the same cluster, and a failed one ---- */

struct gate {
	pthread_mutex_t m;
	pthread_cond_t c;
	bool in_fill, open;
};

static struct gate gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, false};

/* Says it is reading below, then waits until the gate opens (at most WAIT_SECONDS). */
static int fill_gated(void *ctx, void *buf, size_t n, uint64_t off)
{
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += WAIT_SECONDS;
	pthread_mutex_lock(&gate.m);
	gate.in_fill = true;
	pthread_cond_broadcast(&gate.c);
	while (!gate.open)
		if (pthread_cond_timedwait(&gate.c, &gate.m, &until) == ETIMEDOUT)
			break;
	pthread_mutex_unlock(&gate.m);
	return fill_pattern(ctx, buf, n, off);
}

struct job {
	uint64_t off;
	uint8_t byte;
	bool gated;
	int r;
};

static void *write_job(void *arg)
{
	struct job *j = arg;
	struct qcow2_fill fill = {j->gated ? fill_gated : fill_pattern, NULL, true};
	uint8_t data[4096];

	memset(data, j->byte, sizeof(data));
	qcow2_image_read_begin(qi);
	j->r = qcow2_image_write(qi, data, sizeof(data), j->off, &fill);
	qcow2_image_read_end(qi);
	return NULL;
}

Test(write_parallel, a_second_first_write_of_the_same_cluster_waits_and_keeps_both)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct job a = {0}, b = {0};
	uint8_t got[65536], want[65536];
	struct timespec pause = {0, 100 * 1000 * 1000};
	pthread_t ta, tb;
	uint64_t cs;
	bool started;

	o.size = 4u << 20;
	img = imgbuild_new(&o);
	qi = open_writable();
	cs = qi->cluster_bytes;
	a = (struct job){3 * cs, 0xa1, true, 0};
	b = (struct job){3 * cs + 8192, 0xb2, false, 0};
	cr_assert_eq(pthread_create(&ta, NULL, write_job, &a), 0);
	pthread_mutex_lock(&gate.m);
	for (started = gate.in_fill; !started;) {
		struct timespec until;

		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += WAIT_SECONDS;
		if (pthread_cond_timedwait(&gate.c, &gate.m, &until) == ETIMEDOUT)
			break;
		started = gate.in_fill;
	}
	pthread_mutex_unlock(&gate.m);
	cr_assert(started, "the first write never read below");
	/* the second write of the cluster starts while the first is still reading below: it
	 * must wait for it, not allocate the cluster a second time (one of the two would be lost) */
	cr_assert_eq(pthread_create(&tb, NULL, write_job, &b), 0);
	nanosleep(&pause, NULL);
	pthread_mutex_lock(&gate.m);
	gate.open = true;
	pthread_cond_broadcast(&gate.c);
	pthread_mutex_unlock(&gate.m);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	cr_assert_eq(a.r, 0);
	cr_assert_eq(b.r, 0);
	fill_pattern(NULL, want, cs, 3 * cs);
	memset(want, 0xa1, 4096);
	memset(want + 8192, 0xb2, 4096);
	view_read(qi, got, cs, 3 * cs);
	cr_assert_arr_eq(got, want, cs, "both writes of the cluster, the rest from below");
	cr_assert_eq(qcow2_image_flush(qi), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_flush(qi), 0, "%s", qcow2_last_error());
	assert_clean(qi);
}

Test(write_parallel, a_copy_on_write_whose_data_write_fails_gives_its_cluster_back)
{
	struct imgbuild_opts o = imgbuild_defaults();
	struct job first = {0, 0x11, false, 0}, failing, again;
	uint8_t got[65536], want[65536];
	uint64_t cs;

	o.size = 4u << 20;
	img = imgbuild_new(&o);
	qi = open_writable();
	cs = qi->cluster_bytes;
	write_job(&first); /* the first change of the open (header, bitmaps) is behind us */
	cr_assert_eq(first.r, 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_flush(qi), 0, "%s", qcow2_last_error());
	failing = (struct job){5 * cs + 4096, 0x22, false, 0};
	qcow2_io_mem_fail_nth(qcow2_image_io(qi), QCOW2_IO_WRITE, 1, -EIO);
	write_job(&failing);
	cr_assert_eq(failing.r, -EIO, "the data write failed: %d", failing.r);
	fill_pattern(NULL, want, cs, 5 * cs);
	view_read(qi, got, cs, 5 * cs);
	cr_assert_arr_eq(got, want, cs, "the cluster still shows what lies below");
	cr_assert_eq(qcow2_image_flush(qi), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_flush(qi), 0, "%s", qcow2_last_error());
	assert_clean(qi); /* the cluster was given back: no leak */
	again = (struct job){5 * cs + 4096, 0x33, false, 0};
	write_job(&again);
	cr_assert_eq(again.r, 0, "%s", qcow2_last_error());
	memset(want + 4096, 0x33, 4096);
	view_read(qi, got, cs, 5 * cs);
	cr_assert_arr_eq(got, want, cs);
	cr_assert_eq(qcow2_image_flush(qi), 0, "%s", qcow2_last_error());
	cr_assert_eq(qcow2_image_flush(qi), 0, "%s", qcow2_last_error());
	assert_clean(qi);
}
