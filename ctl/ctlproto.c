/* SPDX-License-Identifier: MIT */
/*
 * ctlproto.c - the control socket's frames (ctlproto.h): sending and receiving them with
 * bounded waits, the sockets' directory, and the "key=value" records of results. No state,
 * no lock: each call works on the descriptor it is given.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ctlproto.h"

/* The longest wait for the rest of a frame once its first byte came. */
#define FRAME_MS 10000

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Write all of @len bytes (EINTR retried; the socket's send timeout bounds each wait). */
static int send_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == EWOULDBLOCK ? -EAGAIN : -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int ctlp_send(int fd, enum ctlp_type type, const void *payload, size_t len)
{
	uint8_t hdr[5];
	int r;

	if (len > CTLP_MAX_PAYLOAD)
		return -EMSGSIZE;
	hdr[0] = (uint8_t)type;
	put_be32(hdr + 1, (uint32_t)len);
	r = send_all(fd, hdr, sizeof(hdr));
	if (r == 0 && len)
		r = send_all(fd, payload, len);
	return r;
}

int ctlp_send_str(int fd, enum ctlp_type type, const char *s)
{
	return ctlp_send(fd, type, s, strlen(s));
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Read exactly @len bytes, all of them by @deadline (now_ms(); -1: none). A deadline on the
 * whole read, not on each part: a peer sending a byte now and then is cut off all the same. */
static int recv_all(int fd, void *buf, size_t len, int64_t deadline)
{
	char *p = buf;

	while (len) {
		struct pollfd pf = {.fd = fd, .events = POLLIN};
		int64_t left = deadline < 0 ? -1 : deadline - now_ms();
		ssize_t n;
		int r;

		if (deadline >= 0 && left < 0)
			left = 0; /* one look without waiting: what is there is taken */
		r = poll(&pf, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -ETIMEDOUT;
		n = recv(fd, p, len, 0);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ECONNRESET;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int ctlp_recv(int fd, int timeout_ms, char *type, char **payload, size_t *len)
{
	uint8_t hdr[5];
	int64_t rest;
	uint32_t n;
	char *p;
	int r;

	*payload = NULL;
	/* @timeout_ms bounds the wait for a frame */
	r = recv_all(fd, hdr, 1, timeout_ms < 0 ? -1 : now_ms() + timeout_ms);
	/* the rest of a frame follows at once, all of it within FRAME_MS: a peer that stalls
	 * inside one is broken */
	rest = now_ms() + FRAME_MS;
	if (r == 0)
		r = recv_all(fd, hdr + 1, sizeof(hdr) - 1, rest);
	if (r < 0)
		return r;
	n = get_be32(hdr + 1);
	if (n > CTLP_MAX_PAYLOAD)
		return -EPROTO;
	p = malloc((size_t)n + 1);
	if (!p)
		return -ENOMEM;
	r = recv_all(fd, p, n, rest);
	if (r < 0) {
		free(p);
		return r == -ECONNRESET || r == -ETIMEDOUT ? -EPROTO : r;
	}
	p[n] = '\0';
	*type = (char)hdr[0];
	*payload = p;
	*len = n;
	return 0;
}

int ctlp_dir(uid_t uid, char *out, size_t cap)
{
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	int n;

	if (uid == 0)
		n = snprintf(out, cap, "/run/qcowfs");
	else if (xdg && xdg[0] == '/')
		n = snprintf(out, cap, "%s/qcowfs", xdg);
	else
		n = snprintf(out, cap, "/run/user/%u/qcowfs", (unsigned)uid);
	return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

/* Is the process listening on @path, connected as @fd, one this client may believe? What the
 * kernel says of it (SO_PEERCRED), never what it says of itself: root, this client's own uid,
 * or (for root, who asks every user's mounts) the owner of the socket's directory; and the pid
 * its name gives (PID.sock), so that no process poses as another daemon. 0 or -EPERM. */
static int peer_trusted(int fd, const char *path)
{
	const char *base = strrchr(path, '/');
	char dir[PATH_MAX], *end;
	struct stat st;
	uid_t uid = 0;
	pid_t pid = 0;
	long named;

	if (ctlp_peer(fd, &uid, &pid) < 0)
		return -EPERM;
	base = base ? base + 1 : path;
	named = strtol(base, &end, 10);
	if (named > 0 && !strcmp(end, ".sock") && named != (long)pid)
		return -EPERM;
	if (uid == 0 || uid == getuid())
		return 0;
	if (getuid() != 0 || base == path || (size_t)(base - path) >= sizeof(dir))
		return -EPERM;
	memcpy(dir, path, (size_t)(base - path - 1));
	dir[base - path - 1] = '\0';
	if (lstat(dir[0] ? dir : "/", &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != uid)
		return -EPERM;
	return 0;
}

int ctlp_connect(const char *path, int timeout_ms)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd, r, waited = 0;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	/* a Unix socket whose backlog is full answers EAGAIN (a blocking connect would wait for
	 * room, for good if the daemon hangs): try again every 10 ms until @timeout_ms */
	while ((r = connect(fd, (struct sockaddr *)&sa, sizeof(sa))) < 0 && errno == EAGAIN &&
	       (timeout_ms < 0 || waited < timeout_ms)) {
		usleep(10000);
		waited += 10;
	}
	if (r < 0) {
		r = errno == EAGAIN ? -ETIMEDOUT : -errno;
		close(fd);
		return r;
	}
	r = peer_trusted(fd, path);
	if (r < 0) {
		close(fd);
		return r;
	}
	/* blocking from here on: each wait is bounded by poll() (recv) or the peer reading */
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	return fd;
}

int ctlp_peer(int fd, uid_t *uid, pid_t *pid)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return -errno;
	*uid = cred.uid;
	*pid = cred.pid;
	return 0;
}

int ctlp_rec_add(struct ctlp_rec *r, const char *key, const char *fmt, ...)
{
	char val[4096];
	size_t need;
	va_list ap;
	char *p;

	va_start(ap, fmt);
	vsnprintf(val, sizeof(val), fmt, ap);
	va_end(ap);
	for (p = val; *p; p++)
		if (*p == '\n')
			*p = ' ';
	need = r->len + strlen(key) + strlen(val) + 3;
	if (need > r->cap) {
		size_t cap = need * 2;

		p = realloc(r->buf, cap);
		if (!p)
			return -ENOMEM;
		r->buf = p;
		r->cap = cap;
	}
	r->len += (size_t)sprintf(r->buf + r->len, "%s=%s\n", key, val);
	return 0;
}

void ctlp_rec_free(struct ctlp_rec *r)
{
	free(r->buf);
	memset(r, 0, sizeof(*r));
}

const char *ctlp_rec_get(const char *rec, const char *key, char *out, size_t cap)
{
	size_t klen = strlen(key);
	const char *p = rec;

	while (p && *p) {
		const char *eol = strchr(p, '\n');
		size_t n = eol ? (size_t)(eol - p) : strlen(p);

		if (n >= klen + 1 && !strncmp(p, key, klen) && p[klen] == '=') {
			n -= klen + 1;
			if (n >= cap)
				n = cap - 1;
			memcpy(out, p + klen + 1, n);
			out[n] = '\0';
			return out;
		}
		p = eol ? eol + 1 : NULL;
	}
	return NULL;
}

uint64_t ctlp_rec_u64(const char *rec, const char *key, uint64_t dflt)
{
	char v[32], *end;
	unsigned long long n;

	if (!ctlp_rec_get(rec, key, v, sizeof(v)) || !v[0])
		return dflt;
	errno = 0;
	n = strtoull(v, &end, 10);
	return *end || errno ? dflt : (uint64_t)n;
}

/* The sockets of one directory, @owner's; stale ones (their pid gone) removed. A directory
 * that is not @owner's own, closed to others' writes (a symlink, one another user made where
 * $XDG_RUNTIME_DIR points, one opened to all) is skipped whole: what its sockets say is not
 * believed, and nothing in it is removed. */
static int each_in(const char *dir, uid_t owner,
		   int (*visit)(void *ctx, const char *path, pid_t pid), void *ctx)
{
	char path[512];
	struct dirent *e;
	struct stat st;
	DIR *d;
	int r = 0, dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	if (dfd < 0)
		return 0;
	if (fstat(dfd, &st) < 0 || st.st_uid != owner || (st.st_mode & 022) ||
	    !(d = fdopendir(dfd))) {
		close(dfd);
		return 0;
	}
	while (r == 0 && (e = readdir(d))) {
		char *end;
		long pid = strtol(e->d_name, &end, 10);

		if (pid <= 0 || strcmp(end, ".sock") != 0)
			continue;
		if (fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISSOCK(st.st_mode))
			continue;
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) >= sizeof(path))
			continue;
		if (kill((pid_t)pid, 0) < 0 && errno == ESRCH) {
			unlinkat(dfd, e->d_name, 0);
			continue;
		}
		r = visit(ctx, path, (pid_t)pid);
	}
	closedir(d);
	return r;
}

int ctlp_each_socket(uid_t uid, int (*visit)(void *ctx, const char *path, pid_t pid), void *ctx)
{
	char dir[512];
	struct dirent *e;
	DIR *d;
	int r;

	if (ctlp_dir(uid, dir, sizeof(dir)) == 0 && (r = each_in(dir, uid, visit, ctx)))
		return r;
	if (uid != 0)
		return 0;
	d = opendir("/run/user");
	if (!d)
		return 0;
	r = 0;
	while (r == 0 && (e = readdir(d))) {
		char *end;
		unsigned long owner = strtoul(e->d_name, &end, 10);

		if (e->d_name[0] < '0' || e->d_name[0] > '9' || *end || owner == 0)
			continue; /* root's are in /run/qcowfs, asked above */
		if ((size_t)snprintf(dir, sizeof(dir), "/run/user/%s/qcowfs", e->d_name) <
		    sizeof(dir))
			r = each_in(dir, (uid_t)owner, visit, ctx);
	}
	closedir(d);
	return r;
}

int ctlp_call(int fd, int argc, char *const *argv, int timeout_ms,
	      void (*frame)(void *ctx, char type, const char *payload, size_t len), void *ctx,
	      bool (*interrupted)(void))
{
	int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
	bool cancel_sent = false;
	int i, r = 0;

	int sent = 0;

	for (i = 0; i < argc && sent == 0; i++)
		sent = ctlp_send_str(fd, CTLP_ARG, argv[i]);
	if (sent == 0)
		sent = ctlp_send(fd, CTLP_END, NULL, 0);
	/* a send that failed may be a refusal the daemon sent before closing: read it */
	while (r == 0) {
		char type, *p;
		size_t len;

		/* the limit is the whole call's: a peer sending a frame now and then, and never
		 * its exit status, is not waited for past it */
		if (deadline >= 0 && now_ms() >= deadline)
			return -ETIMEDOUT;
		/* asked at each frame too: a job sending progress ten times a second never
		 * leaves a second without a frame */
		if (interrupted && !cancel_sent && interrupted()) {
			ctlp_send(fd, CTLP_CANCEL, NULL, 0);
			cancel_sent = true;
		}
		r = ctlp_recv(fd, 1000, &type, &p, &len);
		if (r == -ETIMEDOUT) {
			r = 0;
			continue;
		}
		if (r < 0)
			break;
		if (type == CTLP_EXIT) {
			r = len == 4 ? (int)get_be32((const uint8_t *)p) : -EPROTO;
			free(p);
			return r;
		}
		frame(ctx, type, p, len);
		free(p);
	}
	return sent < 0 ? sent : r;
}
