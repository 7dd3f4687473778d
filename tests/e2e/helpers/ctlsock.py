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


def cmd_ctl_fake_daemon(directory, mode):
    """A process posing as a qcowfs daemon: listen on DIRECTORY/PID.sock (its own pid, mode
    0777), print that path, and answer every request. MODE "yes": whatever was asked, say it
    was done (a status naming /fake-source, a record id=1, exit 0). MODE "drip": an empty OUT
    frame every 0.3 s, never the exit status. Runs until killed."""
    import os
    import threading
    import time

    path = os.path.join(directory, "%d.sock" % os.getpid())
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    os.chmod(path, 0o777)
    srv.listen(16)
    print(path, flush=True)

    def serve(c):
        try:
            words = []
            while True:
                t, n = struct.unpack(">cI", _recv_exact(c, 5))
                p = _recv_exact(c, n)
                if t == b"E":
                    break
                words.append(p.decode())
            if mode == "drip":
                while True:
                    c.sendall(b"O" + struct.pack(">I", 0))
                    time.sleep(0.3)
            if words[:1] == ["status"]:
                text = b"qcowfs pid %d: /fake-source on /fake-mnt, owner uid 0\n" % os.getpid()
                c.sendall(b"O" + struct.pack(">I", len(text)) + text)
            else:
                c.sendall(b"D" + struct.pack(">I", 5) + b"id=1\n")
            c.sendall(b"X" + struct.pack(">I", 4) + struct.pack(">i", 0))
        except OSError:
            pass
        finally:
            c.close()

    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
