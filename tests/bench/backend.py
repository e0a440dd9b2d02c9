#!/usr/bin/env python3
"""A tiny fixed-answer HTTP/1.1 backend for the benchmark (tests/bench).

Listens on 127.0.0.1 on each port given (`--ports 0,0,0,0` picks free
ones), keep-alive, one thread per connection. Every request is answered
200 with a small body that names the pod (its port) and echoes the
headers the filter writes, so the bench can check, request by request,
which version and pod answered and what Envoy forwarded::

    pod=8081 version=v1 hash=0123456789abcdef endpoint=-

The answer has the same length for the same request, which keeps Envoy's
instruction counts repeatable. Prints one line `backend ports P1,P2,...`
once listening; SIGTERM stops it. Only requests without a body (GET) are
expected.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading

ECHO = (b"x-canary-version", b"x-sticky-hash", b"x-sticky-endpoint")


def answer(port: int, head: bytes) -> bytes:
    seen = {}
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        k = k.strip().lower()
        if k in ECHO:
            seen[k] = v.strip()
    body = b"pod=%d version=%s hash=%s endpoint=%s\n" % (
        port, seen.get(ECHO[0], b"-"), seen.get(ECHO[1], b"-"), seen.get(ECHO[2], b"-"))
    return (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n" % len(body)) + body


def serve_conn(conn: socket.socket, port: int) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    try:
        while True:
            while b"\r\n\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
                if len(buf) > 1 << 20:
                    return
            head, _, buf = buf.partition(b"\r\n\r\n")
            conn.sendall(answer(port, head))
    except OSError:
        pass
    finally:
        conn.close()


def serve(sock: socket.socket) -> None:
    port = sock.getsockname()[1]
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        threading.Thread(target=serve_conn, args=(conn, port), daemon=True).start()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ports", default="0,0,0,0", help="comma-separated ports (0 = a free one)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    socks = []
    for p in args.ports.split(","):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", int(p)))
        s.listen(64)
        socks.append(s)
    for s in socks:
        threading.Thread(target=serve, args=(s,), daemon=True).start()
    print("backend ports " + ",".join(str(s.getsockname()[1]) for s in socks), flush=True)
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
