"""HTTP clients for Envoy's listeners, and what they return.

``Client(port, host="127.0.0.1", timeout=REQUEST_TIMEOUT, authority=None)``:
one keep-alive HTTP/1.1 connection (reconnects once if the server closed an
idle one). ``client.get(path="/", headers=None, cookies=None) ->
Response``, ``client.get_ok(...)`` (the same, failing the test unless the
status is 200) and ``client.request(method, path, headers=None,
cookies=None, body=None)``. ``headers``: a dict or a list of ``(name,
value)`` pairs (duplicates allowed); a ``Host`` among them replaces the one
http.client would add, and ``authority`` sets it for every request (a
virtual host such as ``my-app.example.com``). ``cookies``: a dict or list
of pairs joined into one ``Cookie`` header, or a str sent verbatim.

``Response``: ``.status``, ``.headers`` (list of pairs, as received),
``.header(name)`` (first value or None), ``.header_values(name)``,
``.set_cookies`` (every ``Set-Cookie`` value, in order),
``.cookies_named(name) -> [SetCookie]``, ``.text``, ``.whoami``
(``Whoami`` or None when the body is not a whoami answer), and the
shortcuts ``.name`` / ``.hostname`` (None when not whoami).

``Whoami``: ``.name``, ``.hostname``, ``.remote_addr``, ``.request_line``,
``.headers`` (list of ``(Canonical-Name, value)`` as the backend received
them), ``.header_values(name)`` (case-insensitive).

``parse_set_cookie(text) -> SetCookie``: ``.name``, ``.value``,
``.attributes`` (list of attribute strings exactly as emitted, e.g.
``["Path=/", "Max-Age=3600", "Secure"]``), ``.attribute_set``, ``.pair``
(``"name=value"``, to send back).

Raw clients, for hostile input that ``http.client`` will not send
(non-UTF-8 or control bytes, odd header names, repeated headers, cookie
crumbs):

``raw_http1_bytes(method, target, headers, host="example.test") -> bytes``:
a request head byte for byte (``Host`` first, the ``(name, value)`` pairs
as given, str as latin-1, ``Connection: close``). ``raw_http1(port,
request, timeout=REQUEST_TIMEOUT) -> Response``: sends it on a new
connection and reads the answer (headers decoded as latin-1).

``h2_request(port, path="/", headers=(), method="GET",
authority="example.test", timeout=REQUEST_TIMEOUT) -> Response``: one
HTTP/2 request (h2c, prior knowledge, PyPI ``h2``) on its own connection;
``headers`` go out as given, one HPACK field each, unvalidated, so two
``("cookie", ...)`` pairs are two cookie crumbs.
"""

from __future__ import annotations

import http.client
import socket
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

from .ports import LOOPBACK
from .wait import REQUEST_TIMEOUT


@dataclass
class SetCookie:
    name: str
    value: str
    attributes: list[str]

    @property
    def attribute_set(self) -> set[str]:
        return set(self.attributes)

    @property
    def pair(self) -> str:
        return f"{self.name}={self.value}"


def parse_set_cookie(text: str) -> SetCookie:
    parts = [p.strip() for p in text.split(";")]
    name, _, value = parts[0].partition("=")
    return SetCookie(name.strip(), value.strip(), [p for p in parts[1:] if p])


@dataclass
class Whoami:
    name: str | None
    hostname: str | None
    remote_addr: str | None
    request_line: str | None
    headers: list[tuple[str, str]]

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


def parse_whoami(text: str) -> Whoami | None:
    lines = text.split("\r\n") if "\r\n" in text else text.split("\n")
    fields: dict[str, str] = {}
    i = 0
    while i < len(lines):
        key, sep, value = lines[i].partition(": ")
        if sep and key in ("Name", "Hostname", "IP", "RemoteAddr"):
            fields.setdefault(key, value)
            i += 1
            continue
        break
    if "Hostname" not in fields or i >= len(lines):
        return None
    request_line = lines[i]
    headers = []
    for line in lines[i + 1:]:
        if line == "":
            break
        k, sep, v = line.partition(": ")
        if sep:
            headers.append((k, v))
    return Whoami(fields.get("Name"), fields.get("Hostname"), fields.get("RemoteAddr"), request_line, headers)


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    text: str

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def header(self, name: str) -> str | None:
        vals = self.header_values(name)
        return vals[0] if vals else None

    @property
    def set_cookies(self) -> list[str]:
        return self.header_values("set-cookie")

    def cookies_named(self, name: str) -> list[SetCookie]:
        return [c for c in map(parse_set_cookie, self.set_cookies) if c.name == name]

    @property
    def whoami(self) -> Whoami | None:
        return parse_whoami(self.text)

    @property
    def name(self) -> str | None:
        w = self.whoami
        return w.name if w else None

    @property
    def hostname(self) -> str | None:
        w = self.whoami
        return w.hostname if w else None

    def __repr__(self) -> str:  # short, for assertion messages
        return f"Response(status={self.status}, name={self.name!r}, hostname={self.hostname!r}, set_cookies={self.set_cookies!r})"


def _cookie_header(cookies) -> str | None:
    if cookies is None:
        return None
    if isinstance(cookies, str):
        return cookies
    pairs = cookies.items() if isinstance(cookies, Mapping) else cookies
    return "; ".join(f"{k}={v}" for k, v in pairs)


def get_once(conn: http.client.HTTPConnection, path: str) -> tuple[int, str]:
    """One GET on `conn`, then close it: (status, body)."""
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        conn.close()


class Client:
    """A keep-alive HTTP/1.1 client for one Envoy listener."""

    def __init__(self, port: int, host: str = LOOPBACK, timeout: float = REQUEST_TIMEOUT,
                 authority: str | None = None):
        self.host = host
        self.port = port
        self.timeout = timeout
        self.authority = authority  # the Host header of every request (None: host:port)
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _connection(self) -> http.client.HTTPConnection:
        """A new connection to the listener (``testkit.netns`` makes its
        sockets inside a network namespace)."""
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def _send(self, method, path, headers, body) -> Response:
        if self._conn is None:
            self._conn = self._connection()
        conn = self._conn
        if self.authority is not None and not any(k.lower() == "host" for k, _ in headers):
            headers = [("Host", self.authority), *headers]
        has_host = any(k.lower() == "host" for k, _ in headers)
        conn.putrequest(method, path, skip_host=has_host, skip_accept_encoding=True)
        for k, v in headers:
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        data = r.read()
        resp = Response(r.status, list(r.getheaders()), data.decode("utf-8", errors="replace"))
        if r.will_close:
            self.close()
        return resp

    def request(self, method: str, path: str, headers=None, cookies=None, body: bytes | None = None) -> Response:
        hdrs = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
        cookie = _cookie_header(cookies)
        if cookie is not None:
            hdrs.append(("Cookie", cookie))
        reused = self._conn is not None
        try:
            return self._send(method, path, hdrs, body)
        except (http.client.RemoteDisconnected, http.client.BadStatusLine, ConnectionResetError, BrokenPipeError):
            self.close()
            if not reused:
                raise
            return self._send(method, path, hdrs, body)  # the server closed an idle connection

    def get(self, path: str = "/", headers=None, cookies=None) -> Response:
        return self.request("GET", path, headers=headers, cookies=cookies)

    def get_ok(self, path: str = "/", headers=None, cookies=None) -> Response:
        """`get`, failing the test unless the answer is 200."""
        r = self.get(path, headers=headers, cookies=cookies)
        assert r.status == 200, r
        return r


# ---------------------------------------------------------------------------
# Raw HTTP/1.1 and HTTP/2 clients


def _to_bytes(x: bytes | str) -> bytes:
    return x if isinstance(x, bytes) else x.encode("latin-1")


def raw_http1_bytes(method: str, target: bytes | str, headers: Sequence[tuple[bytes | str, bytes | str]], host: str = "example.test") -> bytes:
    """One HTTP/1.1 request head, byte for byte: `Host` first, then every
    `(name, value)` exactly as given (str is sent as latin-1, so only bytes
    carry UTF-8), then `Connection: close`. No validation at all."""
    lines = [_to_bytes(method) + b" " + _to_bytes(target) + b" HTTP/1.1", b"Host: " + _to_bytes(host)]
    lines += [_to_bytes(k) + b": " + _to_bytes(v) for k, v in headers]
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def raw_http1(port: int, request: bytes, *, host: str = LOOPBACK, timeout: float = REQUEST_TIMEOUT) -> Response:
    """Send `request` (a whole HTTP/1.1 request, e.g. from `raw_http1_bytes`)
    on a new connection and read the answer until Envoy closes it (the
    request should say `Connection: close`). Header names and values are
    decoded as latin-1, the body as UTF-8. Raises `ConnectionError` when the
    connection closes before a status line arrives."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        deadline = time.monotonic() + timeout  # a hang guard only
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                length = None
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        length = int(v.strip())
                if length is not None and len(body) >= length:
                    break
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise ConnectionError(f"no HTTP response (got {data[:200]!r})")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    hdrs = []
    for line in lines:
        k, _, v = line.partition(":")
        hdrs.append((k.strip(), v.strip()))
    return Response(status, hdrs, body.decode("utf-8", errors="replace"))


def h2_request(
    port: int,
    path: bytes | str = "/",
    headers: Sequence[tuple[bytes | str, bytes | str]] = (),
    *,
    method: str = "GET",
    authority: str = "example.test",
    host: str = LOOPBACK,
    timeout: float = REQUEST_TIMEOUT,
) -> Response:
    """One HTTP/2 request over cleartext with prior knowledge (h2c, PyPI
    `h2`), on its own connection. `headers` go out exactly as given, one
    HPACK field each, in order, with no validation and no normalisation: two
    `("cookie", ...)` pairs are two cookie crumbs. Response header names and
    values are decoded as latin-1. Raises `ConnectionError` on a stream reset
    or GOAWAY before the response ends."""
    import h2.config
    import h2.connection
    import h2.events

    cfg = h2.config.H2Configuration(
        client_side=True, header_encoding=None, validate_outbound_headers=False,
        normalize_outbound_headers=False, validate_inbound_headers=False,
    )
    conn = h2.connection.H2Connection(config=cfg)
    request_headers = [
        (b":method", _to_bytes(method)), (b":scheme", b"http"),
        (b":authority", _to_bytes(authority)), (b":path", _to_bytes(path)),
    ] + [(_to_bytes(k), _to_bytes(v)) for k, v in headers]
    with socket.create_connection((host, port), timeout=timeout) as s:
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, request_headers, end_stream=True)
        s.sendall(conn.data_to_send())
        status, hdrs, body, done = None, [], b"", False
        deadline = time.monotonic() + timeout  # a hang guard only
        while not done and time.monotonic() < deadline:
            data = s.recv(65536)
            if not data:
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == stream:
                    for k, v in ev.headers:
                        k, v = k.decode("latin-1"), v.decode("latin-1")
                        if k == ":status":
                            status = int(v)
                        else:
                            hdrs.append((k, v))
                elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == stream:
                    body += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, stream)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == stream:
                    done = True
                elif isinstance(ev, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                    raise ConnectionError(f"HTTP/2 request ended early: {ev!r}")
            out = conn.data_to_send()
            if out:
                s.sendall(out)
    if not done or status is None:
        raise ConnectionError("HTTP/2 response did not end")
    return Response(status, hdrs, body.decode("utf-8", errors="replace"))
