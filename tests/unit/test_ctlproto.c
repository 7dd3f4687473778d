/* SPDX-License-Identifier: MIT */
/*
 * test_ctlproto.c - the control socket's frames (ctl/ctlproto.c) over a socket pair: a round
 * trip of every type, the bounds (a length past the limit, a frame cut short, a peer that
 * never sends), and the records' key=value lines.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../ctl/ctlproto.h"

static int sv[2];

static void open_pair(void)
{
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
}

static void close_pair(void)
{
	close(sv[0]);
	if (sv[1] >= 0)
		close(sv[1]);
}

TestSuite(ctlproto, .init = open_pair, .fini = close_pair);

Test(ctlproto, frames_round_trip)
{
	static const char big[] = "a longer payload, with a NUL inside";
	char type, *p;
	size_t len;

	cr_assert_eq(ctlp_send_str(sv[0], CTLP_ARG, "snapshot"), 0);
	cr_assert_eq(ctlp_send(sv[0], CTLP_END, NULL, 0), 0);
	cr_assert_eq(ctlp_send(sv[0], CTLP_OUT, big, sizeof(big)), 0);
	cr_assert_eq(ctlp_recv(sv[1], 1000, &type, &p, &len), 0);
	cr_assert(type == CTLP_ARG && len == 8 && !strcmp(p, "snapshot"));
	free(p);
	cr_assert_eq(ctlp_recv(sv[1], 1000, &type, &p, &len), 0);
	cr_assert(type == CTLP_END && len == 0 && p[0] == '\0');
	free(p);
	cr_assert_eq(ctlp_recv(sv[1], 1000, &type, &p, &len), 0);
	cr_assert(type == CTLP_OUT && len == sizeof(big) && !memcmp(p, big, len));
	free(p);
}

Test(ctlproto, a_length_past_the_limit_is_refused)
{
	unsigned char hdr[5] = {CTLP_OUT, 0x00, 0x10, 0x00, 0x01}; /* 1 MiB + 1 */
	char type, *p;
	size_t len;

	cr_assert_eq(ctlp_send(sv[0], CTLP_OUT, "", CTLP_MAX_PAYLOAD + 1), -EMSGSIZE);
	cr_assert_eq(write(sv[0], hdr, sizeof(hdr)), 5);
	cr_assert_eq(ctlp_recv(sv[1], 1000, &type, &p, &len), -EPROTO);
	cr_assert_null(p);
}

Test(ctlproto, a_frame_cut_short_is_refused)
{
	unsigned char hdr[7] = {CTLP_OUT, 0, 0, 0, 10, 'a', 'b'};
	char type, *p;
	size_t len;

	cr_assert_eq(write(sv[0], hdr, sizeof(hdr)), 7);
	close(sv[0]);
	sv[0] = -1;
	cr_assert_eq(ctlp_recv(sv[1], 1000, &type, &p, &len), -EPROTO);
	sv[0] = dup(sv[1]); /* for close_pair() */
}

Test(ctlproto, a_silent_peer_times_out)
{
	char type, *p;
	size_t len;

	cr_assert_eq(ctlp_recv(sv[1], 50, &type, &p, &len), -ETIMEDOUT);
}

Test(ctlproto, a_peer_gone_is_a_reset_and_no_signal)
{
	char type, *p;
	size_t len;

	close(sv[1]);
	sv[1] = -1;
	cr_assert_eq(ctlp_send_str(sv[0], CTLP_OUT, "x"), -EPIPE); /* MSG_NOSIGNAL: no SIGPIPE */
	close(sv[0]);
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	close(sv[0]);
	cr_assert_eq(ctlp_recv(sv[1], 1000, &type, &p, &len), -ECONNRESET);
	sv[0] = dup(sv[1]);
}

Test(ctlproto, records)
{
	struct ctlp_rec r = {0};
	char v[16];

	cr_assert_eq(ctlp_rec_add(&r, "id", "%d", 12), 0);
	cr_assert_eq(ctlp_rec_add(&r, "name", "%s", "two\nlines"), 0);
	cr_assert_eq(ctlp_rec_add(&r, "empty", "%s", ""), 0);
	cr_assert_str_eq(r.buf, "id=12\nname=two lines\nempty=\n");
	cr_assert_str_eq(ctlp_rec_get(r.buf, "name", v, sizeof(v)), "two lines");
	cr_assert_str_eq(ctlp_rec_get(r.buf, "empty", v, sizeof(v)), "");
	cr_assert_null(ctlp_rec_get(r.buf, "i", v, sizeof(v)));
	cr_assert_str_eq(ctlp_rec_get(r.buf, "name", v, 4), "two");
	cr_assert_eq(ctlp_rec_u64(r.buf, "id", 7), 12);
	cr_assert_eq(ctlp_rec_u64(r.buf, "name", 7), 7);
	cr_assert_eq(ctlp_rec_u64(r.buf, "none", 7), 7);
	ctlp_rec_free(&r);
}

/* A peer that keeps sending frames, @n of them @ms apart, and never the exit status. */
struct dripper {
	int fd, n, ms;
	size_t
	    frame_len; /* 0: whole empty OUT frames; else one frame of this length, a byte each */
};

static void *drip(void *arg)
{
	struct dripper *d = arg;

	if (d->frame_len) {
		uint8_t hdr[5] = {CTLP_OUT, 0, 0, (uint8_t)(d->frame_len >> 8),
				  (uint8_t)d->frame_len};

		if (send(d->fd, hdr, sizeof(hdr), MSG_NOSIGNAL) < 0)
			return NULL;
	}
	for (int i = 0; i < d->n; i++) {
		usleep((useconds_t)d->ms * 1000);
		if ((d->frame_len ? send(d->fd, "x", 1, MSG_NOSIGNAL)
				  : ctlp_send(d->fd, CTLP_OUT, NULL, 0)) < 0)
			return NULL;
	}
	if (!d->frame_len) /* at last the exit status, long after the caller's limit */
		ctlp_send(d->fd, CTLP_EXIT, "\0\0\0\0", 4);
	return NULL;
}

static void ignore_frame(void *ctx, char type, const char *p, size_t len)
{
	(void)ctx, (void)type, (void)p, (void)len;
}

/* A peer that answers a question with a frame now and then, but never ends, does not keep the
 * caller past its limit: the limit is the whole call's, not a wait between two frames (a
 * hostile socket in a user's directory held root's `qcowctl mounts` for as long as it liked). */
Test(ctlproto, call_is_bounded_by_a_peer_that_never_ends)
{
	struct dripper d = {.fd = sv[1], .n = 80, .ms = 100}; /* 8 s of frames */
	char *argv[] = {"status"};
	pthread_t th;
	int r;

	cr_assert_eq(pthread_create(&th, NULL, drip, &d), 0);
	r = ctlp_call(sv[0], 1, argv, 1000, ignore_frame, NULL, NULL);
	cr_expect_eq(r, -ETIMEDOUT, "the call ended with %d, not at its limit", r);
	shutdown(sv[0], SHUT_RDWR);
	pthread_join(th, NULL);
}

/* The rest of a frame must come within the frame's bound as a whole, not each byte within it:
 * a peer sending one byte at a time holds a reader (the daemon's request thread, or a client)
 * no longer than that. */
Test(ctlproto, a_frame_dripped_a_byte_at_a_time_is_cut_off, .timeout = 60)
{
	struct dripper d = {.fd = sv[1], .n = 300, .ms = 50, .frame_len = 300}; /* 15 s */
	pthread_t th;
	char type, *p;
	size_t len;

	cr_assert_eq(pthread_create(&th, NULL, drip, &d), 0);
	cr_expect_eq(ctlp_recv(sv[0], 1000, &type, &p, &len), -EPROTO);
	shutdown(sv[0], SHUT_RDWR);
	pthread_join(th, NULL);
}

static bool always_interrupted(void)
{
	return true;
}

/* The client's interrupt reaches a daemon that sends progress often (ten times a second): it
 * is asked at each frame, not only after a second without one. The peer stops once the
 * cancel came, and answers. */
struct canceller {
	int fd;
	bool got_cancel;
};

static void *progress_until_cancel(void *arg)
{
	struct canceller *c = arg;
	char type, *p;
	size_t len;

	while (ctlp_recv(c->fd, 1000, &type, &p, &len) == 0 && type != CTLP_END) /* the request */
		free(p);
	free(p);
	for (int i = 0; i < 100 && !c->got_cancel; i++) { /* 10 s of progress */
		uint8_t prog[16] = {0};

		usleep(100000);
		ctlp_send(c->fd, CTLP_PROGRESS, prog, sizeof(prog));
		if (ctlp_recv(c->fd, 0, &type, &p, &len) == 0) {
			c->got_cancel = type == CTLP_CANCEL;
			free(p);
		}
	}
	ctlp_send(c->fd, CTLP_EXIT, "\0\0\0\1", 4);
	return NULL;
}

Test(ctlproto, an_interrupt_is_sent_while_progress_keeps_coming)
{
	struct canceller c = {.fd = sv[1]};
	char *argv[] = {"snapshot", "delete"};
	pthread_t th;

	cr_assert_eq(pthread_create(&th, NULL, progress_until_cancel, &c), 0);
	cr_expect_eq(ctlp_call(sv[0], 2, argv, -1, ignore_frame, NULL, always_interrupted), 1);
	pthread_join(th, NULL);
	cr_expect(c.got_cancel, "the daemon never got the client's cancel");
}
