/* SPDX-License-Identifier: MIT */
/*
 * ctlproto.h - the control socket's protocol, shared by the daemon (fs/ctl.c) and qcowctl
 * (tools/ctl.c): framed messages on a Unix stream socket, and where each mount's socket lives.
 * Nothing here knows images or FUSE. docs/design.md, "The control socket", describes it.
 *
 * A frame is a 5-byte header, its type (one byte, enum ctlp_type) and the payload's length
 * (4 bytes, big-endian, at most CTLP_MAX_PAYLOAD), then the payload.
 *
 * A request is CTLP_ARG frames (the command's words, then its operands, image paths made
 * absolute by the client), then CTLP_END. The caller's identity is what the kernel says of the
 * peer (SO_PEERCRED), never a field of the message. The reply is any number of CTLP_OUT,
 * CTLP_ERR, CTLP_PROGRESS and CTLP_RECORD frames, then one CTLP_EXIT. While a request runs the
 * client may send CTLP_CANCEL (an interrupt): the job it started stops at a safe point.
 */
#ifndef CTLPROTO_H
#define CTLPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum ctlp_type {
	CTLP_ARG = 'A',	     /* request: one word, not NUL-terminated */
	CTLP_END = 'E',	     /* request: the last frame (empty) */
	CTLP_CANCEL = 'C',   /* request, while it runs: cancel what it started (empty) */
	CTLP_OUT = 'O',	     /* reply: text for stdout, as is */
	CTLP_ERR = 'R',	     /* reply: one message for stderr (no "qcowctl: ", no newline) */
	CTLP_PROGRESS = 'P', /* reply: 16 bytes, done and total (big-endian 64-bit) */
	CTLP_RECORD = 'D',   /* reply: one result, "key=value" lines (values have no newline) */
	CTLP_EXIT = 'X',     /* reply: the exit status, 4 bytes big-endian; the last frame */
};

#define CTLP_MAX_PAYLOAD (1u << 20)
#define CTLP_MAX_ARGS	 64

/* Send one frame on @fd (MSG_NOSIGNAL: a vanished peer is -EPIPE, not a signal). 0 or a
 * negative errno (-EAGAIN once the socket's send timeout ran out). */
int ctlp_send(int fd, enum ctlp_type type, const void *payload, size_t len);
/* ctlp_send() of a NUL-terminated string. */
int ctlp_send_str(int fd, enum ctlp_type type, const char *s);
/* Receive one frame: its type in *@type, its payload NUL-terminated in *@payload (malloc'd,
 * the caller frees) and its length in *@len. @timeout_ms bounds the wait for its first byte
 * (-1: none); the rest must then come within 10 s, all of it (a peer sending a byte now and
 * then is cut off all the same). 0, -ECONNRESET at the peer's end, -ETIMEDOUT, -EPROTO for a bad frame, or another
 * negative errno. */
int ctlp_recv(int fd, int timeout_ms, char *type, char **payload, size_t *len);

/* The directory of the sockets of mounts made by @uid: /run/qcowfs for root,
 * $XDG_RUNTIME_DIR/qcowfs (else /run/user/UID/qcowfs) for another user. 0 or -ENAMETOOLONG. */
int ctlp_dir(uid_t uid, char *out, size_t cap);
/* Connect to the socket at @path, waiting at most @timeout_ms. The fd, or a negative errno:
 * -EPERM when the process listening is not one this client believes (SO_PEERCRED): root's,
 * the client's own uid's, or for a root client the uid that owns the socket's directory; and
 * the pid of the socket's name (PID.sock). */
int ctlp_connect(const char *path, int timeout_ms);
/* The uid and pid of @fd's peer, as the kernel says (SO_PEERCRED). 0 or a negative errno. */
int ctlp_peer(int fd, uid_t *uid, pid_t *pid);

/* Call @visit for each mount's socket a client of uid @uid may reach: those of the sockets'
 * directory of @uid and, for root, of every user's (/run/user/UID/qcowfs); a directory that is
 * not its user's own, closed to others' writes, is skipped. @pid is the
 * daemon's (the socket's name, PID.sock). A socket whose daemon is gone (no such pid) is
 * removed on the way: a daemon killed with SIGKILL cannot remove its own. @visit returns
 * nonzero to stop the walk (that value is returned). */
int ctlp_each_socket(uid_t uid, int (*visit)(void *ctx, const char *path, pid_t pid), void *ctx);

/* A client's call: send @argv (@argc words) as a request on @fd, then hand every reply frame
 * to @frame until CTLP_EXIT, whose status is returned (or a negative errno: the daemon went
 * away, a bad frame, or no exit status within @timeout_ms, the whole call's limit: frames
 * that keep coming do not extend it). At each frame and each second without one,
 * @interrupted (unless NULL) is asked; once it says yes, CTLP_CANCEL is sent (once) and the
 * call goes on to the daemon's answer. */
int ctlp_call(int fd, int argc, char *const *argv, int timeout_ms,
	      void (*frame)(void *ctx, char type, const char *payload, size_t len), void *ctx,
	      bool (*interrupted)(void));

/* Rows of `qcowctl job list` (the daemon prints the rows, qcowctl the header once). */
#define CTLP_JOB_HEADER	 "%-10s %-18s %-10s %7s  %s\n", "ID", "KIND", "STATE", "DONE", "IMAGES"
#define CTLP_JOB_ROW_FMT "%-10s %-18s %-10s %6.1f%%  %s\n"

/* A record: "key=value" lines. ctlp_rec_add() appends one (a newline in @value becomes a
 * space); ctlp_rec_get() finds @key's value in @rec into @out (NULL when absent). */
struct ctlp_rec {
	char *buf;
	size_t len, cap;
};
int ctlp_rec_add(struct ctlp_rec *r, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void ctlp_rec_free(struct ctlp_rec *r);
const char *ctlp_rec_get(const char *rec, const char *key, char *out, size_t cap);
/* The value of @key as an unsigned number (@dflt when absent or not a number). */
uint64_t ctlp_rec_u64(const char *rec, const char *key, uint64_t dflt);

#endif
