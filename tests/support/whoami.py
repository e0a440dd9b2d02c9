#!/usr/bin/env python3
"""A stand-in for traefik/whoami, for tests and `make run` (pure stdlib).

Every GET (or any other method) answers 200 with a plain-text body in the
shape traefik/whoami uses::

    Name: canary-v1
    Hostname: canary-v1-0
    IP: 127.0.0.1
    RemoteAddr: 127.0.0.1:53422
    GET /path?query HTTP/1.1
    Host: 127.0.0.1:10000
    Accept: */*
    X-Canary-Version: canary-v1
    ...

`Name` comes first; then the request line and every request header, one
line per value, names in Go's canonical form (`X-Sticky-Hash`), sorted by
name like Go's `Request.Write` does (Host first). A request body, if any,
follows the headers after a blank line.

Like whoami, `/health` answers with the current health status (200 unless
changed) and a POST to `/health` whose body is a status code changes it;
while unhealthy every other path answers that status too (the whoami
body is still sent), so tests can make a "pod" fail.

Test hook: each `X-Whoami-Set-Cookie: <value>` request header is answered
with a `Set-Cookie: <value>` response header (an app setting cookies).

CLI::

    python3 whoami.py --port 8081 --name canary-v1 --hostname canary-v1-0

`--port 0` picks a free port. Once listening it prints one line
`whoami listening on 127.0.0.1:<port> name=<name> hostname=<hostname>` to
stdout. `--verbose` logs one line per request to stderr (default: quiet).
`--one-write` sends each answer's headers and body in one write, as the
real traefik/whoami (Go's net/http buffers a small response and flushes it
once): a pod killed mid-request then either delivered its whole answer or
none of it, which a proxy can retry. By default they go out in two writes,
so a kill between them cuts the body short (what
envoy-config/persistent/README.md measures).
Binds 127.0.0.1 only. SIGTERM and SIGINT stop it cleanly (exit status 0).
"""

from __future__ import annotations

import argparse
import http.server
import signal
import sys
import threading


def canonical(name: str) -> str:
    """Go's textproto.CanonicalMIMEHeaderKey: `x-sticky-hash` -> `X-Sticky-Hash`."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


class WhoamiHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every answer has Content-Length
    # Headers and body go out in separate writes: without TCP_NODELAY the
    # body waits for the peer's delayed ACK (~40 ms per request).
    disable_nagle_algorithm = True
    server_version = "whoami-py"

    def version_string(self) -> str:
        return self.server_version

    # Set on the class by main().
    whoami_name = ""
    whoami_hostname = ""
    verbose = False
    one_write = False
    health = 200
    health_lock = threading.Lock()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (stdlib signature)
        if self.verbose:
            sys.stderr.write(
                "%s %s %s\n" % (self.whoami_hostname, self.address_string(), format % args)
            )
            sys.stderr.flush()

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            n = int(length)
        except ValueError:
            return b""
        return self.rfile.read(n) if n > 0 else b""

    def _body(self, request_body: bytes) -> bytes:
        lines = []
        if self.whoami_name:
            lines.append(f"Name: {self.whoami_name}")
        lines.append(f"Hostname: {self.whoami_hostname}")
        lines.append("IP: 127.0.0.1")
        host, port = self.client_address[:2]
        lines.append(f"RemoteAddr: {host}:{port}")
        lines.append(f"{self.command} {self.path} {self.request_version}")
        items = [(canonical(k), v) for k, v in self.headers.items()]
        hosts = [v for k, v in items if k == "Host"]
        for v in hosts[:1]:
            lines.append(f"Host: {v}")
        # sorted() is stable: several values of one header keep their order.
        for k, v in sorted((kv for kv in items if kv[0] != "Host"), key=lambda kv: kv[0]):
            lines.append(f"{k}: {v}")
        # LF line ends, as traefik/whoami prints them.
        text = "\n".join(lines) + "\n"
        out = text.encode("utf-8", "replace")
        if request_body:
            out += b"\n" + request_body
        return out

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        # Test hook (not in traefik/whoami): the app sets a cookie of its own.
        for value in self.headers.get_all("X-Whoami-Set-Cookie") or []:
            self.send_header("Set-Cookie", value)
        if self.one_write:
            self._headers_buffer.append(b"\r\n")
            head, self._headers_buffer = b"".join(self._headers_buffer), []
            self.wfile.write(head + (body if self.command != "HEAD" else b""))
            return
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        request_body = self._read_body()
        path = self.path.split("?", 1)[0]
        if path == "/health":
            cls = type(self)
            if self.command == "POST":
                try:
                    code = int(request_body.decode().strip())
                    if not 100 <= code <= 599:
                        raise ValueError
                except ValueError:
                    self._answer(400, b"body must be an HTTP status code\n")
                    return
                with cls.health_lock:
                    cls.health = code
            with cls.health_lock:
                code = cls.health
            self._answer(code, f"{code}\n".encode())
            return
        self._answer(type(self).health, self._body(request_body))

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _handle


class Server(http.server.ThreadingHTTPServer):
    # socketserver's default backlog of 5 makes a new connection wait on a
    # busy machine, which Envoy's 1 s connect_timeout turns into a 503.
    request_queue_size = 128
    daemon_threads = True  # keep-alive connections must not block exit
    allow_reuse_address = True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="traefik/whoami stand-in on 127.0.0.1")
    ap.add_argument("--port", type=int, required=True, help="port on 127.0.0.1 (0: pick one)")
    ap.add_argument("--name", default="", help="the Name: line (WHOAMI_NAME)")
    ap.add_argument("--hostname", default="", help="the Hostname: line (default: --name)")
    ap.add_argument("--verbose", action="store_true", help="log each request to stderr")
    ap.add_argument("--one-write", action="store_true", help="headers and body of an answer in one write")
    args = ap.parse_args(argv)

    WhoamiHandler.whoami_name = args.name
    WhoamiHandler.whoami_hostname = args.hostname or args.name or "whoami"
    WhoamiHandler.verbose = args.verbose
    WhoamiHandler.one_write = args.one_write

    server = Server(("127.0.0.1", args.port), WhoamiHandler)

    def stop(signum, frame):  # runs in the main thread, inside serve_forever
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    port = server.server_address[1]
    print(
        f"whoami listening on 127.0.0.1:{port} name={args.name} hostname={WhoamiHandler.whoami_hostname}",
        flush=True,
    )
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
