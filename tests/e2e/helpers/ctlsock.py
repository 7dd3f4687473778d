"""A client of a qcowfs control socket written from the protocol's description (docs/design.md,
"The control socket"), independent of qcowctl's: frames are a type byte, a 4-byte big-endian
length and the payload; a request is ARG frames then END; the reply ends with EXIT."""
import socket
import struct
import sys


def _recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        part = s.recv(n - len(buf))
        if not part:
            raise ConnectionResetError("the daemon closed the connection")
        buf += part
    return buf


def cmd_ctl_call_cancel(path, *words):
    """As ctl-call, with CANCEL sent right after the request, in the same write (the
    client's interrupt, already there when the command starts)."""
    cmd_ctl_call(path, *words, cancel=True)


def cmd_ctl_call(path, *words, cancel=False):
    """Send WORDS as a request on the socket PATH; print each reply frame as "out: TEXT",
    "err: TEXT", "record: k=v;k=v", "progress: DONE TOTAL", then "exit N" and exit 0. A
    connection refused by the system prints "connect: ERRNO"."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    try:
        s.connect(path)
    except OSError as e:
        print("connect: %s" % (e.strerror or e))
        return
    req = b""
    for w in words:
        b = w.encode()
        req += b"A" + struct.pack(">I", len(b)) + b
    req += b"E" + struct.pack(">I", 0)
    if cancel:
        req += b"C" + struct.pack(">I", 0)
    try:
        s.sendall(req)
    except OSError:
        pass  # a refusal may come before the request is read: read it
    while True:
        t, n = struct.unpack(">cI", _recv_exact(s, 5))
        p = _recv_exact(s, n)
        if t == b"X":
            print("exit %d" % struct.unpack(">i", p)[0])
            return
        if t == b"O":
            sys.stdout.write("out: " + p.decode())
        elif t == b"R":
            print("err: " + p.decode())
        elif t == b"D":
            print("record: " + ";".join(p.decode().splitlines()))
        elif t == b"P":
            print("progress: %d %d" % struct.unpack(">QQ", p))
        else:
            print("frame %r: %r" % (t, p))
