"""What Envoy 1.40 hands an HTTP filter, pinned so a new Envoy that changes
it fails here first. The filter's header reads are designed on these facts.

Envoy runs envoy-local.yaml's listener (``codec_type: AUTO``: HTTP/1.1 and
h2c with prior knowledge) with one Lua filter instead of the wasm filter.
The Lua filter answers every request itself, with one line per request
header entry exactly as the filter chain sees it (name and value in hex),
so no backend or log parsing is involved.

Facts:

- HTTP/1.1: two ``Cookie:`` lines stay **two entries** (not joined).
- HTTP/2: cookie crumbs (separate ``cookie`` fields) arrive **joined into
  one entry** with ``"; "``.
- Non-UTF-8 bytes (obs-text, 0x80-0xFF) in header values **reach the
  filter** unchanged, over HTTP/1.1 and HTTP/2; so do tabs inside a value.
  HTTP/1.1 strips leading and trailing whitespace, HTTP/2 does not.
- Non-UTF-8 bytes in header names, and control characters (0x01, 0x7F) in
  values, never reach a filter: HTTP/1.1 answers 400, HTTP/2 closes the
  connection (``http2.rx_messaging_error``). A raw non-UTF-8 byte in an
  HTTP/1.1 request target is a 400 too, but over HTTP/2 it reaches the
  filter in ``:path``.
- A bare LF ends a header line in HTTP/1.1: ``X-A: a\\nSet-Cookie: b`` is two
  request headers, ``x-a`` and ``set-cookie``.
"""

from __future__ import annotations

import copy

import pytest

import testkit

LUA = r"""
local function hex(s)
  return (s:gsub('.', function(c) return string.format('%02x', string.byte(c)) end))
end
function envoy_on_request(h)
  local out = {}
  for k, v in pairs(h:headers()) do out[#out + 1] = hex(k) .. '=' .. hex(v) end
  h:respond({[':status'] = '200', ['content-type'] = 'text/plain'}, table.concat(out, '\n') .. '\n')
end
"""


@pytest.fixture(scope="module")
def envoy(workdir):
    cfg = copy.deepcopy(testkit.load_config())
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"] = [
        {"name": "envoy.filters.http.lua", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": LUA}}},
        {"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
    ]
    e = testkit.start_envoy(cfg, workdir / "header-facts")
    yield e
    e.stop()


def entries(r: testkit.Response) -> list[tuple[bytes, bytes]]:
    """The request header entries the Lua filter saw, minus pseudo headers
    and the ones Envoy adds."""
    assert r.status == 200, r
    out = []
    for line in r.text.splitlines():
        k, _, v = line.partition("=")
        name, value = bytes.fromhex(k), bytes.fromhex(v)
        if name.startswith(b":") or name in (b"x-request-id", b"x-forwarded-proto", b"host"):
            continue
        out.append((name, value))
    return out


def h1(envoy, headers, target="/"):
    return testkit.raw_http1(envoy.port, testkit.raw_http1_bytes("GET", target, headers))


def test_http1_cookie_lines_stay_separate(envoy):
    got = entries(h1(envoy, [("Cookie", "a=1"), ("Cookie", "b=2")]))
    assert got == [(b"cookie", b"a=1"), (b"cookie", b"b=2")]


def test_http2_cookie_crumbs_are_joined(envoy):
    got = entries(testkit.h2_request(envoy.port, "/", [("cookie", "a=1"), ("x-n", "1"), ("cookie", "b=2")]))
    assert sorted(got) == [(b"cookie", b"a=1; b=2"), (b"x-n", b"1")]


@pytest.mark.parametrize("proto", ["http1", "http2"])
def test_non_utf8_values_reach_the_filter(envoy, proto):
    hdrs = [("X-Note", b"caf\xe9"), ("Cookie", b"sc=\xe9\xff"), ("X-Tab", b" a\tb\t")]
    if proto == "http1":
        r = h1(envoy, hdrs)
    else:
        r = testkit.h2_request(envoy.port, "/", [(k.lower(), v) for k, v in hdrs])
    # HTTP/1.1 strips leading and trailing whitespace; HTTP/2 passes it on.
    tab = b"a\tb" if proto == "http1" else b" a\tb\t"
    assert sorted(entries(r)) == [(b"cookie", b"sc=\xe9\xff"), (b"x-note", b"caf\xe9"), (b"x-tab", tab)]


def test_http2_non_utf8_path_reaches_the_filter(envoy):
    r = testkit.h2_request(envoy.port, b"/?note=caf\xe9", [])
    paths = [line for line in r.text.splitlines() if line.startswith(b":path".hex() + "=")]
    assert paths == [b":path".hex() + "=" + b"/?note=caf\xe9".hex()]


@pytest.mark.parametrize("header", [
    pytest.param((b"X-N\xe9te", b"a"), id="non-utf8-name"),
    pytest.param((b"X Note", b"a"), id="space-in-name"),
    pytest.param((b"X-Note", b"a\x01b"), id="ctl-01-value"),
    pytest.param((b"X-Note", b"a\x7fb"), id="ctl-7f-value"),
])
def test_http1_refuses_bad_names_and_control_bytes(envoy, header):
    assert h1(envoy, [header]).status == 400


def test_http1_refuses_non_utf8_target(envoy):
    assert h1(envoy, [], target=b"/?note=caf\xe9").status == 400


@pytest.mark.parametrize("header", [
    pytest.param((b"x-n\xe9te", b"a"), id="non-utf8-name"),
    pytest.param((b"x-note", b"a\x01b"), id="ctl-01-value"),
    pytest.param((b"x-note", b"a\x7fb"), id="ctl-7f-value"),
    pytest.param((b"x-note", b"a\r\nset-cookie: x=1"), id="crlf-value"),
])
def test_http2_closes_on_bad_names_and_control_bytes(envoy, header):
    with pytest.raises(ConnectionError):
        testkit.h2_request(envoy.port, "/", [header])
    # The listener is fine afterwards.
    assert entries(testkit.h2_request(envoy.port, "/", [("x-ok", "1")])) == [(b"x-ok", b"1")]


def test_http1_bare_lf_ends_a_header_line(envoy):
    req = b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\nSet-Cookie: b\r\nConnection: close\r\n\r\n"
    got = entries(testkit.raw_http1(envoy.port, req))
    assert got == [(b"x-a", b"a"), (b"set-cookie", b"b")]
