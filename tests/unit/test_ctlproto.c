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
