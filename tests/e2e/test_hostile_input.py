"""Hostile input, end to end in the real Envoy 1.40 (issue 8): no request a
client can send makes the filter the reason a request fails.

Every case sends one hostile request through Envoy and checks:

1. **That request is served**: 200 from a pod of an allowed version (the
   exact version and pod where the case says so), or, for input Envoy itself
   refuses before any filter runs, Envoy's 400/431 (HTTP/1.1) or closed
   connection (HTTP/2) with no sticky-canary counter moving.
2. **Every Set-Cookie is well formed**: printable ASCII, exactly one
   ``name=value`` with one of our cookie names and a value in our format
   (``1``/``2`` + base64url, at most 256 bytes), only our attributes
   (``Path=/; Max-Age=3600; Secure; HttpOnly`` and ``SameSite=None`` unless
   the browser is one that rejects it), each once, and one cookie per name.
   Nothing a client sent (``Domain=evil.example``, a CR/LF) shows up in any
   response header.
3. **The counters move**: exactly one decision counter
   (``sticky_canary_decisions_total{route, version, reason}``) of the case's scope
   rises by 1 (the expected version and reason where given), none of another
   scope; ``sticky_canary_cookie_rejected_total`` and ``sticky_canary_key_fallback_total`` rise by exactly what the
   case says.
4. **The next requests are served**: a new user gets canary-v1 by weight
   with a new cookie, a returning canary-v2 user keeps canary-v2 and its pod
   with no new cookie, and those two decisions are counted.

Before each case the test waits (bounded) until Envoy serves a plain
request, so a crash in one case cannot fail the next one; the follow-up
requests are sent at once, so a crash still fails its own case.

Expected behaviour per class, and why
=====================================

non-utf8 / control (header values, names, query)
    A header value with non-UTF-8 bytes counts as absent, for rules, keys,
    the user agent and the cookie; every other header is read normally
    (``X-Note: caf\\xe9`` beside ``X-Canary: always`` still selects the
    canary). A Cookie header line with a non-UTF-8 cookie does not hide a
    session cookie sent on another line; within the same line (or joined
    HTTP/2 crumbs) the filter may keep or drop the session, but serves the
    request. A key source that is not UTF-8 (X-Forwarded-For, a key header)
    falls back to a cookie key and counts ``sticky_canary_key_fallback_total``. Envoy refuses
    non-UTF-8 header names, control bytes (0x01, 0x7F) in values and raw
    non-UTF-8 in an HTTP/1.1 target itself (see test_envoy_header_facts.py):
    those cases check that Envoy keeps serving afterwards. Tabs pass:
    HTTP/1.1 strips them around a value, so ``X-Canary: \\talways\\t`` is
    ``always``; inside a value they are ordinary bytes.
response (non-UTF-8 in the app's response headers)
    The response phase reads the response headers too (to leave an app's
    own cookie of our name alone). A response header with non-UTF-8 bytes
    (added by a Lua filter that runs before ours on the response, so the
    request stays plain ASCII) is passed through untouched, and our cookie
    is still added when due.
limits
    Envoy's defaults are 60 KiB of request headers and 100 headers. A
    59 KiB Cookie header, 500 cookies in one header or 90 Cookie lines
    still carry a valid session cookie: it is read. An oversized session
    cookie value (50 KiB) is invalid: counted, replaced by a new session.
    Beyond the limits Envoy answers 431 itself.
duplicates
    Browsers send two copies of a cookie after its Path or Domain changed.
    Copies that open and agree (same key, version, origin, pin; expiry may
    differ: issued at different times) keep the session, and are not
    invalid. Conflicting valid copies (a second user's cookie planted
    beside the victim's) keep nothing: no remembered version, no pin; the
    user is placed by weight with a key derived from all copies, so the
    planted canary cookie gets nobody onto the canary (the global canary
    has weight 0), and repeated requests land on the same version and pod
    (checked on a 50/50 route). In persistent mode (sealed cookies that pin
    a pod) two copies of one's own cookie keep the pin, and a planted
    cookie pinned to another pod (of the same version or of the canary)
    pins nothing: no ``x-sticky-endpoint`` reaches the pod, and the
    victim stays on one pod. Invalid copies beside one valid copy are
    ignored (the session is kept). Conflicting copies and invalid copies
    are counted in ``sticky_canary_cookie_rejected_total`` (the request did carry a bad or
    planted session cookie); agreeing copies are not.
cookie-syntax
    RFC 6265 values may be quoted: ``name="value"`` reads as ``value``.
    Pieces with an empty name (``=x``) or without ``=`` are skipped, never
    taken for another cookie. Whitespace around pieces and separators
    without a space are accepted. Names are case-sensitive. A session
    cookie that is absent (only a bare name, another case) is not invalid.
injection
    Header values that try to add a cookie attribute or a second cookie
    (``; Path=/; Domain=evil.example``, a bare LF that Envoy takes as a new
    header line, percent-encoded CR/LF in a key) never reach a Set-Cookie:
    values only ever feed a hash or a comparison.
h2-crumbs
    HTTP/2 clients send each cookie as its own ``cookie`` field. Envoy
    joins them with ``"; "`` before the filter (test_envoy_header_facts.py),
    so a session cookie in one crumb reads as in HTTP/1, and two crumbs
    with the session cookie follow the duplicate rules above.
query
    A query parameter sent twice (same or different values, also after
    percent-decoding its name: ``canary=v2&%63anary=v2``) is ambiguous and
    counts as absent. Percent-encoded names and values are decoded
    (``%63anary=%76%32`` is ``canary=v2``). Bad escapes (``%zz``, a
    trailing ``%``, ``%+a`` with a sign, an escape decoding to non-UTF-8)
    make the parameter absent: a rule does not match, a query key source
    falls back.
"""

from __future__ import annotations

import copy
import re
import time
from dataclasses import dataclass
from typing import Callable

import pytest

import testkit
from testkit.cookie_format import with_expiry

V1, V2 = "canary-v1", "canary-v2"
C = "my-sticky-cookie"
COOKIE_OF = {"global": C, "weighted": "my-weighted-cookie", "ipkey": "ip-cookie", "qkey": "q-cookie", "hkey": "h-cookie"}
REQUIRED_ATTRS = {"Path=/", "Max-Age=3600", "Secure", "HttpOnly"}
OPTIONAL_ATTRS = {"SameSite=None"}  # omitted for browsers that reject it (same_site_none_compat)
APP_COOKIE = "app"  # an app's own cookie (added by RESPONSE_LUA), passed through untouched
COOKIE_VALUE = re.compile(r"[12][A-Za-z0-9_-]{20,255}")
SETTLE_TIMEOUT = testkit.hang_guard(60.0)  # a hang guard: how long a crashed VM may take to come back

PLUGIN = {
    "versions": [{"name": V1}, {"name": V2, "weight": 0}],
    "rules": [
        {"cookie": "canary", "value": "v2", "version": V2},
        {"header": "x-canary", "version": V2},
        {"query": "canary", "value": "v2", "version": V2},
    ],
    "session": {"cookie": {
        "name": C, "path": "/", "max_age": 3600, "secure": True, "http_only": True,
        "same_site": "None", "same_site_none_compat": True,
    }},
    "routes": [
        {"name": "weighted", "match": {"path_prefix": "/weighted/"},
         "versions": [{"name": V1}, {"name": V2, "weight": 50}],
         "session": {"cookie": {"name": COOKIE_OF["weighted"]}}},
        {"name": "ipkey", "match": {"path_prefix": "/ipkey/"},
         "session": {"key": {"from": "client_ip", "xff_trusted_hops": 1}, "cookie": {"name": COOKIE_OF["ipkey"]}}},
        {"name": "qkey", "match": {"path_prefix": "/qkey/"},
         "session": {"key": {"from": "query", "name": "user"}, "cookie": {"name": COOKIE_OF["qkey"]}}},
        {"name": "hkey", "match": {"path_prefix": "/hkey/"},
         "session": {"key": {"from": "header", "name": "x-user"}, "cookie": {"name": COOKIE_OF["hkey"]}}},
    ],
}


# -- the stack ----------------------------------------------------------------

# Between the wasm filter and the router, so it runs before the wasm filter
# on the response: `X-Hostile-Response: <name>=<hex>` makes it add the
# response header <name> with those bytes (as a backend could send; the
# request itself stays plain ASCII). Without that header it does nothing.
RESPONSE_LUA = r"""
function envoy_on_request(h)
  local spec = h:headers():get("x-hostile-response")
  if spec then h:streamInfo():dynamicMetadata():set("hostile", "spec", spec) end
end
function envoy_on_response(h)
  local md = h:streamInfo():dynamicMetadata():get("hostile")
  if not md then return end
  local name, hex = string.match(md["spec"], "^([^=]+)=(%x*)$")
  if not name then return end
  local value = (hex:gsub("%x%x", function(b) return string.char(tonumber(b, 16)) end))
  h:headers():add(name, value)
end
"""


def config() -> dict:
    """envoy-local.yaml plus the RESPONSE_LUA filter before the router."""
    cfg = copy.deepcopy(testkit.load_config())
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"].insert(len(hcm["http_filters"]) - 1, {
        "name": "envoy.filters.http.lua",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": RESPONSE_LUA},
        },
    })
    return cfg


@dataclass
class User:
    cookie: str  # the session cookie value
    version: str
    hostname: str


class Env:
    """Envoy (envoy-local.yaml with PLUGIN) and users with valid sessions:

    - ``V1``: a new user, canary-v1 by weight;
    - ``V2``: canary-v2 by the cookie rule (remembered from a rule);
    - ``P2``: another user on canary-v2 by the rule (the planted cookie);
    - ``V2OLD``: V2's own session issued 600 s earlier (same key, version);
    - ``V2EXPIRED``: V2's own session, expired;
    - ``W1``/``W2``: on /weighted/ (50/50): a user on canary-v1 by weight
      and another on canary-v2 by the header rule.
    """

    def __init__(self, workdir, backends):
        self.envoy = testkit.start_envoy(config(), workdir, backends=backends, plugin=PLUGIN)
        self.users: dict[str, User] = {}
        with testkit.Client(self.envoy.port) as c:
            self.users["V1"] = self._user(c.get("/"), C)
            self.users["V2"] = self._user(c.get("/", cookies={"canary": "v2"}), C)
            self.users["P2"] = self._user(c.get("/", cookies={"canary": "v2"}), C)
            for _ in range(100):  # bounded: 50% per try
                w1 = self._user(c.get("/weighted/x"), COOKIE_OF["weighted"])
                if w1.version == V1:
                    break
            self.users["W1"] = w1
            self.users["W2"] = self._user(c.get("/weighted/x", headers={"x-canary": "always"}), COOKIE_OF["weighted"])
        v2 = self.users["V2"]
        self.users["V2OLD"] = User(with_expiry(v2.cookie, C, -600), V2, v2.hostname)
        self.users["V2EXPIRED"] = User(with_expiry(v2.cookie, C, -7200), V2, v2.hostname)
        assert self.users["V1"].version == V1 and self.users["V2"].version == V2 and self.users["P2"].version == V2
        assert self.users["W1"].version == V1 and self.users["W2"].version == V2
        assert self.users["P2"].cookie != v2.cookie and self.users["V2OLD"].cookie != v2.cookie

    @staticmethod
    def _user(r: testkit.Response, name: str) -> User:
        assert r.status == 200, r
        [c] = r.cookies_named(name)
        return User(c.value, r.name, r.hostname)

    def fill(self, x):
        """Replace `$V1`, `$V2`, ... by those users' cookie values (str or bytes)."""
        for token in sorted(self.users, key=len, reverse=True):
            v = self.users[token].cookie
            x = x.replace("$" + token, v) if isinstance(x, str) else x.replace(b"$" + token.encode(), v.encode())
        return x

    def counters(self) -> dict[str, int]:
        return self.envoy.counters("sticky_canary")

    def settle(self) -> None:
        """Wait until Envoy serves a plain request (a crashed VM recovers)."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while time.monotonic() < deadline:
            try:
                with testkit.Client(self.envoy.port) as c:
                    if c.get("/").status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"Envoy did not serve a plain request within {SETTLE_TIMEOUT:.0f} s")


@pytest.fixture(scope="module")
def env(workdir, backends):
    e = Env(workdir / "hostile", backends)
    yield e
    e.envoy.stop()


# -- checks -------------------------------------------------------------------


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after) if after.get(k, 0) != before.get(k, 0)}


def decisions(d: dict[str, int]) -> dict[tuple[str, str, str], int]:
    """{(route, version, reason): increase} from a counter delta."""
    out = {}
    for k, n in d.items():
        name, labels = testkit.parse_metric(k)
        if name == "sticky_canary_decisions_total":
            out[(labels["route"], labels["version"], labels["reason"])] = n
    return out


def moved(d: dict[str, int], metric: str, **labels: str) -> int:
    """The increase of a labelled counter (summed over unnamed labels)."""
    total = 0
    for k, n in d.items():
        name, got = testkit.parse_metric(k)
        if name == metric and all(got.get(a) == b for a, b in labels.items()):
            total += n
    return total


def routes_moved(d: dict[str, int]) -> set[str]:
    """The route labels of the counters that moved."""
    return {testkit.parse_metric(k)[1]["route"] for k in d if "route" in testkit.parse_metric(k)[1]}


def assert_set_cookies_well_formed(r: testkit.Response, required=REQUIRED_ATTRS, optional=OPTIONAL_ATTRS,
                                   names_allowed=tuple(COOKIE_OF.values())) -> None:
    names = []
    for raw in r.set_cookies:
        if raw.startswith(APP_COOKIE + "="):
            continue  # the app's own cookie (RESPONSE_LUA), checked by its case
        assert all(0x20 <= ord(ch) < 0x7F for ch in raw), f"non-printable byte in Set-Cookie {raw!r}"
        first, *attrs = [p.strip() for p in raw.split(";")]
        assert first.count("=") == 1, f"not one name=value: {raw!r}"
        name, value = first.split("=")
        assert name in names_allowed, f"not our cookie: {raw!r}"
        assert COOKIE_VALUE.fullmatch(value), f"not our value format: {raw!r}"
        assert len(attrs) == len(set(attrs)), f"repeated attribute: {raw!r}"
        assert required <= set(attrs) <= required | optional, f"attributes: {raw!r}"
        names.append(name)
    assert len(names) == len(set(names)), f"two Set-Cookie for one name: {r.set_cookies!r}"
    for k, v in r.headers:
        assert "evil" not in v.lower() and "evil" not in k.lower(), f"client input in response header {k}: {v!r}"


def assert_follow_ups_served(env: Env) -> None:
    """A new user and a returning canary-v2 user, at once after the case."""
    before = env.counters()
    with testkit.Client(env.envoy.port) as c:
        new = c.get("/")
        back = c.get("/", cookies={C: env.users["V2"].cookie})
    assert new.status == 200 and new.name == V1, f"new user after the case: {new!r}"
    assert len(new.cookies_named(C)) == 1, new
    assert_set_cookies_well_formed(new)
    assert back.status == 200 and back.name == V2 and back.hostname == env.users["V2"].hostname, f"returning user after the case: {back!r}"
    assert back.set_cookies == [], back
    d = delta(before, env.counters())
    # V2 is remembered from a rule on canary-v2, at weight 0 here: it drains.
    assert decisions(d) == {("global", V1, "new"): 1, ("global", V2, "drain"): 1}, d
    assert moved(d, "sticky_canary_sessions_total") == moved(d, "sticky_canary_sessions_total", event="issued") == 1, d
    assert moved(d, "sticky_canary_cookie_rejected_total") == 0, d


@dataclass
class Case:
    id: str
    send: Callable[[Env], testkit.Response]  # may raise ConnectionError (HTTP/2 refused)
    version: str | None = V1  # None: any allowed version
    pod: str | None = None  # a user token: served by that user's pod
    reason: str | None = None  # rule / drain / new
    scope: str = "global"
    invalid: int | tuple[int, ...] = 0  # allowed increases of sticky_canary_cookie_rejected_total
    fallback: int = 0  # increase of sticky_canary_key_fallback_total
    fresh: bool = False  # a new session cookie must be issued (and must work)
    unchanged: bool = False  # the session is kept as it is: no Set-Cookie
    rejected: bool = False  # Envoy refuses it before the filter
    check: Callable[[Env, testkit.Response], None] | None = None

    def __repr__(self) -> str:
        return self.id


def run(env: Env, case: Case) -> None:
    env.settle()
    before = env.counters()
    try:
        r = case.send(env)
    except ConnectionError:
        r = None
    if case.rejected and (r is None or r.status in (400, 431)):
        assert delta(before, env.counters()) == {}, "the filter ran on a request Envoy refused"
        assert_follow_ups_served(env)
        return
    assert r is not None, "connection closed without an answer"
    assert r.status == 200, f"hostile request not served: {r!r}"
    allowed = (case.version,) if case.version else (V1, V2)
    assert r.name in allowed, r
    assert r.hostname and r.hostname.startswith(r.name + "-"), r
    if case.pod:
        assert r.hostname == env.users[case.pod].hostname, r
    assert_set_cookies_well_formed(r)
    d = delta(before, env.counters())
    assert routes_moved(d) <= {case.scope}, f"counters of another route moved: {d}"
    decided = decisions(d)
    assert sum(decided.values()) == 1 and all(s == case.scope for s, _, _ in decided), f"decision counters: {d}"
    [(_, version, reason)] = decided
    assert version == r.name, d
    if case.reason:
        assert reason == case.reason, d
    allowed_invalid = case.invalid if isinstance(case.invalid, tuple) else (case.invalid,)
    assert moved(d, "sticky_canary_cookie_rejected_total", route=case.scope) in allowed_invalid, d
    assert moved(d, "sticky_canary_key_fallback_total", route=case.scope) == case.fallback, d
    if case.unchanged:
        assert [c for c in r.set_cookies if not c.startswith(APP_COOKIE + "=")] == [], r
    if case.fresh:
        [fresh] = r.cookies_named(COOKIE_OF[case.scope])
        if case.scope == "global":
            with testkit.Client(env.envoy.port) as c:
                again = c.get("/", cookies={C: fresh.value})
            assert (again.status, again.name, again.hostname, again.set_cookies) == (200, r.name, r.hostname, []), again
    if case.check:
        case.check(env, r)
    assert_follow_ups_served(env)


# -- senders ------------------------------------------------------------------


def h1(headers=(), target: str | bytes = "/") -> Callable[[Env], testkit.Response]:
    """Raw HTTP/1.1: `headers` as (name, value) pairs, `$V2`... filled in."""
    def send(env: Env) -> testkit.Response:
        hdrs = [(k, env.fill(v)) for k, v in headers]
        return testkit.raw_http1(env.envoy.port, testkit.raw_http1_bytes("GET", env.fill(target), hdrs))
    return send


def h2(headers=(), path: str | bytes = "/") -> Callable[[Env], testkit.Response]:
    """HTTP/2 (h2c): each ("cookie", ...) pair is its own crumb."""
    def send(env: Env) -> testkit.Response:
        hdrs = [(k, env.fill(v)) for k, v in headers]
        return testkit.h2_request(env.envoy.port, env.fill(path), hdrs)
    return send


def h1_raw(request: bytes) -> Callable[[Env], testkit.Response]:
    return lambda env: testkit.raw_http1(env.envoy.port, env.fill(request))


def cookie(v):
    return ("Cookie", v)


def kept(id, send, **kw) -> Case:
    """The V2 user's session is read: canary-v2, its pod, remembered, and
    not re-issued (canary-v2 is at weight 0, so the user drains)."""
    kw.setdefault("unchanged", True)
    return Case(id, send, version=V2, pod="V2", reason="drain", **kw)


def kept_dup(id, send, **kw) -> Case:
    """As `kept`, for duplicated copies: whether the filter re-issues the
    cookie then is left open."""
    return kept(id, send, unchanged=False, **kw)


def new_user(id, send, **kw) -> Case:
    """No usable session: canary-v1 by weight, a new working cookie (for
    conflicting copies: no cookie, so the placement stays stable)."""
    kw.setdefault("fresh", True)
    return Case(id, send, version=V1, reason="new", **kw)


def by_rule(id, send, **kw) -> Case:
    return Case(id, send, version=V2, reason="rule", **kw)


def same_site_none_sent(env: Env, r: testkit.Response) -> None:
    [c] = r.cookies_named(C)
    assert "SameSite=None" in c.attribute_set, c


def params(cases):
    return [pytest.param(c, id=c.id) for c in cases]


# -- non-UTF-8 bytes and control characters ----------------------------------

NON_UTF8 = [
    new_user("cookie-other-non-utf8", h1([cookie(b"sc=\xe9\xff")])),
    new_user("cookie-session-non-utf8", h1([cookie(b"my-sticky-cookie=\xe9\xff")]), invalid=(0, 1)),
    kept("cookie-non-utf8-own-line", h1([cookie(b"sc=\xe9\xff"), cookie(f"{C}=$V2")])),
    Case("cookie-non-utf8-same-line", h1([cookie(f"sc=\xe9\xff; {C}=$V2".encode("latin-1"))]), version=None),
    new_user("rule-header-non-utf8", h1([("X-Canary", b"always\xe9")])),
    by_rule("unrelated-header-non-utf8-rule-still-read", h1([("X-Note", b"caf\xe9"), ("X-Canary", "always")]), fresh=False),
    kept("unrelated-header-non-utf8-session-kept", h1([("X-Note", b"caf\xe9"), cookie(f"{C}=$V2")])),
    new_user("user-agent-non-utf8", h1([("User-Agent", b"Mozilla/5.0 (caf\xe9)")]), check=same_site_none_sent),
    Case("xff-non-utf8", h1([("X-Forwarded-For", b"203.0.113.\xe9")], "/ipkey/x"), scope="ipkey", fallback=1),
    Case("key-header-non-utf8", h1([("X-User", b"caf\xe9")], "/hkey/x"), scope="hkey", fallback=1),
    Case("header-name-non-utf8", h1([(b"X-N\xe9te", "a")]), rejected=True),
    Case("target-non-utf8", h1(target=b"/?note=caf\xe9"), rejected=True),
    by_rule("h2-value-non-utf8-rule-still-read", h2([("x-note", b"caf\xe9"), ("x-canary", "always")])),
    Case("h2-cookie-crumb-non-utf8", h2([("cookie", b"sc=\xe9\xff"), ("cookie", f"{C}=$V2")]), version=None),
    kept("h2-path-non-utf8", h2([("cookie", f"{C}=$V2")], path=b"/?note=caf\xe9")),
    Case("h2-header-name-non-utf8", h2([(b"x-n\xe9te", "a")]), rejected=True),
]

CONTROL = [
    Case("ctl-01-value", h1([("X-Note", b"a\x01b")]), rejected=True),
    Case("ctl-7f-value", h1([("X-Note", b"a\x7fb")]), rejected=True),
    Case("ctl-01-cookie", h1([cookie(f"{C}=$V2\x01")]), rejected=True),
    Case("ctl-01-target", h1(target=b"/?canary=v\x012"), rejected=True),
    Case("h2-ctl-01-value", h2([("x-note", b"a\x01b")]), rejected=True),
    Case("h2-ctl-7f-cookie", h2([("cookie", f"{C}=$V2\x7f")]), rejected=True),
    new_user("tab-inside-rule-value", h1([("X-Canary", b"al\tways")])),
    by_rule("tab-around-rule-value", h1([("X-Canary", b"\talways\t")])),
    kept("tab-in-cookie-header", h1([cookie(f"a=1;\t{C}=$V2\t;\tb=2")])),
    new_user("ctl-escaped-in-query", h1(target="/?canary=v2%01")),
]


@pytest.mark.parametrize("case", params(NON_UTF8))
def test_non_utf8(env, case):
    run(env, case)


@pytest.mark.parametrize("case", params(CONTROL))
def test_control_characters(env, case):
    run(env, case)


# -- non-UTF-8 bytes in response headers (the app's) -------------------------


def app_cookie_passed(value: bytes) -> Callable[[Env, testkit.Response], None]:
    def check(env: Env, r: testkit.Response) -> None:
        assert r.header_values("set-cookie").count(f"{APP_COOKIE}=" + value.decode("latin-1")) == 1, r.set_cookies
    return check


def hostile_response(name: str, value: bytes) -> tuple[str, str]:
    return ("X-Hostile-Response", f"{name}={value.hex()}")


def app_note_passed(env: Env, r: testkit.Response) -> None:
    assert r.header_values("x-app-note") == ["caf\xe9"], r.headers


RESPONSE = [
    new_user("app-header-non-utf8", h1([hostile_response("x-app-note", b"caf\xe9")]), check=app_note_passed),
    new_user("app-set-cookie-non-utf8", h1([hostile_response("set-cookie", b"app=caf\xe9")]), check=app_cookie_passed(b"caf\xe9")),
    kept("app-set-cookie-non-utf8-returning-user", h1([hostile_response("set-cookie", b"app=caf\xe9"), cookie(f"{C}=$V2")]),
         check=app_cookie_passed(b"caf\xe9")),
]


@pytest.mark.parametrize("case", params(RESPONSE))
def test_non_utf8_response_headers(env, case):
    run(env, case)


# -- limits -------------------------------------------------------------------


def filler(total: int) -> str:
    """Cookies `f0=xxx...; f1=...` of about `total` bytes."""
    out, i = [], 0
    while sum(len(p) + 2 for p in out) < total:
        out.append(f"f{i}=" + "x" * 200)
        i += 1
    return "; ".join(out)


LIMITS = [
    kept("cookie-header-59KiB", h1([cookie(filler(59 * 1024 - 200) + f"; {C}=$V2")])),
    kept("cookie-500-pieces", h1([cookie("; ".join([f"c{i}=v{i}" for i in range(250)] + [f"{C}=$V2"] + [f"d{i}=v" for i in range(250)]))])),
    kept("cookie-90-lines", h1([cookie(f"c{i}=v{i}") for i in range(45)] + [cookie(f"{C}=$V2")] + [cookie(f"d{i}=v") for i in range(44)])),
    new_user("session-cookie-50KiB", h1([cookie(f"{C}=" + "A" * 50 * 1024)]), invalid=1),
    new_user("session-cookie-257B", h1([cookie(f"{C}=1" + "A" * 256)]), invalid=1),
    Case("cookie-header-61KiB", h1([cookie(filler(61 * 1024) + f"; {C}=$V2")]), rejected=True),
    Case("101-headers", h1([(f"X-F{i}", "1") for i in range(101)]), rejected=True),
]


@pytest.mark.parametrize("case", params(LIMITS))
def test_limits(env, case):
    run(env, case)


# -- duplicated session cookies ----------------------------------------------

DUPLICATES = [
    kept_dup("same-value-one-line", h1([cookie(f"{C}=$V2; {C}=$V2")])),
    kept_dup("same-value-two-lines", h1([cookie(f"{C}=$V2"), cookie(f"{C}=$V2")])),
    kept_dup("same-value-three-copies", h1([cookie(f"{C}=$V2; a=1; {C}=$V2"), cookie(f"{C}=$V2")])),
    kept_dup("same-session-issued-earlier", h1([cookie(f"{C}=$V2; {C}=$V2OLD")])),
    kept_dup("same-session-issued-earlier-first", h1([cookie(f"{C}=$V2OLD"), cookie(f"{C}=$V2")])),
    new_user("planted-canary-beside-stable-user", h1([cookie(f"{C}=$V1; {C}=$P2")]), invalid=1, fresh=False, unchanged=True),
    new_user("planted-canary-first", h1([cookie(f"{C}=$P2"), cookie(f"{C}=$V1")]), invalid=1, fresh=False, unchanged=True),
    new_user("conflicting-canary-and-stable", h1([cookie(f"{C}=$V2; {C}=$V1")]), invalid=1, fresh=False, unchanged=True),
    kept_dup("valid-and-garbage", h1([cookie(f"{C}=$V2; {C}=garbage")]), invalid=1),
    kept_dup("garbage-and-valid", h1([cookie(f"{C}=garbage"), cookie(f"{C}=$V2")]), invalid=1),
    kept_dup("valid-and-empty", h1([cookie(f"{C}=$V2; {C}=")]), invalid=1),
    kept_dup("valid-and-expired-copy", h1([cookie(f"{C}=$V2EXPIRED; {C}=$V2")]), invalid=1),
]


@pytest.mark.parametrize("case", params(DUPLICATES))
def test_duplicated_session_cookies(env, case):
    run(env, case)


W = COOKIE_OF["weighted"]
PLANTED_WEIGHTED = {
    "one-line": h1([cookie(f"{W}=$W1; {W}=$W2")], "/weighted/x"),
    "two-lines": h1([cookie(f"{W}=$W2"), cookie(f"{W}=$W1")], "/weighted/x"),
    "h2-crumbs": h2([("cookie", f"{W}=$W1"), ("cookie", f"{W}=$W2")], "/weighted/x"),
}


@pytest.mark.parametrize("how", list(PLANTED_WEIGHTED))
def test_planted_cookie_places_by_weight_and_is_stable(env, how):
    """On /weighted/ (50/50) a canary cookie planted beside a stable user's
    cookie does not decide: every request is placed by weight, and the same
    two cookies give the same version and pod every time (a random key per
    request would bounce: all 8 alike by chance has probability 4^-7)."""
    env.settle()
    before = env.counters()
    answers = set()
    for _ in range(8):
        r = PLANTED_WEIGHTED[how](env)
        assert r.status == 200, r
        assert_set_cookies_well_formed(r)
        answers.add((r.name, r.hostname))
    d = delta(before, env.counters())
    assert len(answers) == 1, f"bounced: {answers}"
    [(version, _)] = answers
    assert decisions(d) == {("weighted", version, "new"): 8}, d
    assert moved(d, "sticky_canary_cookie_rejected_total", route="weighted", cause="duplicated") == 8, d
    assert_follow_ups_served(env)


# -- cookie syntax ------------------------------------------------------------

COOKIE_SYNTAX = [
    kept("quoted-session-value", h1([cookie(f'{C}="$V2"')])),
    by_rule("quoted-rule-value", h1([cookie('canary="v2"')])),
    kept("empty-name-beside", h1([cookie(f"=x; {C}=$V2")])),
    new_user("empty-name-with-session-value", h1([cookie("=$V2")])),
    kept("pieces-without-equals", h1([cookie(f"junk; {C}=$V2; flag")])),
    new_user("bare-session-name", h1([cookie(C)])),
    kept("whitespace-around-pieces", h1([cookie(f"a=1 ;   {C}=$V2   ;  b=2")])),
    kept("no-space-separators", h1([cookie(f"a=1;{C}=$V2;b=2")])),
    kept("empty-pieces", h1([cookie(f";; {C}=$V2 ;;")])),
    new_user("session-name-other-case", h1([cookie("My-Sticky-Cookie=$V2")])),
    new_user("rule-value-with-equals", h1([cookie("canary=v2=x")])),
]


@pytest.mark.parametrize("case", params(COOKIE_SYNTAX))
def test_cookie_syntax(env, case):
    run(env, case)


# -- injection ----------------------------------------------------------------

EVIL = "; Path=/; Domain=evil.example"
INJECTION = [
    Case("key-header-attributes", h1([("X-User", "alice" + EVIL)], "/hkey/x"), scope="hkey", fresh=True),
    new_user("rule-header-attributes", h1([("X-Canary", "always" + EVIL)])),
    by_rule("rule-cookie-attributes", h1([cookie("canary=v2" + EVIL)])),
    new_user("user-agent-attributes", h1([("User-Agent", "Mozilla/5.0" + EVIL)])),
    Case("key-header-bare-lf-set-cookie", h1_raw(
        b"GET /hkey/x HTTP/1.1\r\nHost: t\r\nX-User: alice\nSet-Cookie: evil=1; Domain=evil.example\r\nConnection: close\r\n\r\n"),
        scope="hkey", fresh=True),
    Case("query-key-crlf-set-cookie", h1(target="/qkey/x?user=alice%0d%0aSet-Cookie:%20evil=1%3b%20Domain=evil.example"),
         scope="qkey", fresh=True),
    kept("cookie-quoted-attributes", h1([cookie(f'x="a; Domain=evil.example"; {C}=$V2')])),
    Case("h2-key-header-crlf", h2([("x-user", b"alice\r\nset-cookie: evil=1")], "/hkey/x"), scope="hkey", rejected=True),
]


@pytest.mark.parametrize("case", params(INJECTION))
def test_injection(env, case):
    run(env, case)


# -- HTTP/2 cookie crumbs -----------------------------------------------------

H2_CRUMBS = [
    kept("session-in-one-crumb", h2([("cookie", "a=1"), ("cookie", f"{C}=$V2"), ("cookie", "b=2")])),
    by_rule("rule-cookie-in-one-crumb", h2([("cookie", "x=1"), ("cookie", "canary=v2")])),
    kept_dup("same-value-two-crumbs", h2([("cookie", f"{C}=$V2"), ("cookie", f"{C}=$V2")])),
    kept_dup("same-session-issued-earlier", h2([("cookie", f"{C}=$V2OLD"), ("cookie", f"{C}=$V2")])),
    new_user("planted-canary-crumb", h2([("cookie", f"{C}=$V1"), ("cookie", f"{C}=$P2")]), invalid=1, fresh=False, unchanged=True),
    kept_dup("valid-and-garbage-crumbs", h2([("cookie", f"{C}=$V2"), ("cookie", f"{C}=garbage")]), invalid=1),
]


@pytest.mark.parametrize("case", params(H2_CRUMBS))
def test_h2_cookie_crumbs(env, case):
    run(env, case)


# -- query strings ------------------------------------------------------------

QUERY = [
    new_user("repeated-same-value", h1(target="/?canary=v2&canary=v2")),
    new_user("repeated-conflicting", h1(target="/?canary=v2&canary=v1")),
    new_user("repeated-bare-key", h1(target="/?canary=v2&canary")),
    by_rule("percent-encoded-key", h1(target="/?%63anary=v2")),
    by_rule("percent-encoded-value", h1(target="/?canary=%76%32")),
    new_user("percent-encoded-key-repeated", h1(target="/?canary=v2&%63anary=v2")),
    by_rule("empty-pieces", h1(target="/?&&canary=v2&&")),
    new_user("bad-escape-zz", h1(target="/?canary=v2%zz")),
    new_user("trailing-percent", h1(target="/?canary=v2%")),
    new_user("short-escape", h1(target="/?canary=v%3")),
    new_user("signed-escape-in-rule", h1(target="/?canary=v2%+a")),
    new_user("non-utf8-escape", h1(target="/?canary=%E9%FF")),
    Case("key-source-control", h1(target="/qkey/x?user=alice"), scope="qkey", fresh=True),
    Case("key-source-signed-escape", h1(target="/qkey/x?user=%+a"), scope="qkey", fallback=1, fresh=True),
    Case("key-source-bad-escape", h1(target="/qkey/x?user=%zz"), scope="qkey", fallback=1, fresh=True),
    Case("key-source-non-utf8-escape", h1(target="/qkey/x?user=%E9%FF"), scope="qkey", fallback=1, fresh=True),
    Case("key-source-repeated", h1(target="/qkey/x?user=alice&user=bob"), scope="qkey", fallback=1, fresh=True),
]


@pytest.mark.parametrize("case", params(QUERY))
def test_query_strings(env, case):
    run(env, case)


# -- duplicated cookies in persistent mode (pinned pods) ------------------------


class PersistentEnv:
    """envoy-local-persistent.yaml (sealed cookies that pin a pod) in front
    of two pods per version. Users: ``A`` and ``B`` on canary-v1 pinned to
    different pods, ``C2`` on canary-v2 by the cookie rule, pinned to a
    canary-v2 pod."""

    def __init__(self, workdir):
        from testkit.persistent import config, plugin, start_pods_with_eds, wait_eds

        self.pods, eds = start_pods_with_eds(workdir, [(V1, "hp-v1-a"), (V1, "hp-v1-b"), (V2, "hp-v2-a"), (V2, "hp-v2-b")])
        self.plugin = plugin()
        self.cookie = self.plugin["session"]["cookie"]["name"]
        self.envoy = testkit.start_envoy(config(eds), workdir / "envoy", plugin=self.plugin)
        wait_eds(self.envoy, eds)
        self.users: dict[str, tuple[str, str]] = {}  # token -> (cookie value, pinned hostname)
        for _ in range(60):  # bounded: each new user lands on either v1 pod
            value, host = self._pinned_user({})
            self.users.setdefault("A", (value, host))
            if host != self.users["A"][1]:
                self.users["B"] = (value, host)
                break
        self.users["C2"] = self._pinned_user({"canary": "v2"})
        assert "B" in self.users, self.users
        assert [self.pods[self.users[t][1]].name for t in ("A", "B", "C2")] == [V1, V1, V2], self.users

    def _pinned_user(self, extra: dict) -> tuple[str, str]:
        """A new session (with `extra` cookies on the first request), sent
        back once so it is pinned: (cookie value, pod hostname)."""
        with testkit.Client(self.envoy.port) as c:
            r = c.get("/", cookies=extra or None)
            [first] = r.cookies_named(self.cookie)
            r = c.get("/", cookies={self.cookie: first.value})
            value = (r.cookies_named(self.cookie) or [first])[-1].value
            r = c.get("/", cookies={self.cookie: value})
        assert r.status == 200 and self.pinned(r) == [self.pods[r.hostname].address], r
        return value, r.hostname

    def pinned(self, r: testkit.Response) -> list[str]:
        """The x-sticky-endpoint values the pod received (the pin used)."""
        w = r.whoami
        return w.header_values("x-sticky-endpoint") if w else []

    def send(self, tokens: list[str], how: str) -> testkit.Response:
        pairs = [f"{self.cookie}={self.users[t][0]}" for t in tokens]
        if how == "one-line":
            hdrs = [cookie("; ".join(pairs))]
            return testkit.raw_http1(self.envoy.port, testkit.raw_http1_bytes("GET", "/", hdrs))
        if how == "two-lines":
            return testkit.raw_http1(self.envoy.port, testkit.raw_http1_bytes("GET", "/", [cookie(p) for p in pairs]))
        return testkit.h2_request(self.envoy.port, "/", [("cookie", p) for p in pairs])

    def stop(self):
        self.envoy.stop()
        for p in self.pods.values():
            p.stop()


@pytest.fixture(scope="module")
def penv(workdir):
    e = PersistentEnv(workdir / "hostile-persistent")
    yield e
    e.stop()


PERSISTENT_ATTRS = {"Path=/", "Max-Age=3600", "HttpOnly", "SameSite=Lax"}
HOW = ["one-line", "two-lines", "h2-crumbs"]


@pytest.mark.parametrize("how", HOW)
def test_persistent_own_cookie_twice_keeps_the_pin(penv, how):
    """Two copies of the user's own sealed cookie: the pin is kept."""
    value, host = penv.users["A"]
    before = penv.envoy.counters("sticky_canary")
    r = penv.send(["A", "A"], how)
    assert r.status == 200 and r.hostname == host, r
    assert penv.pinned(r) == [penv.pods[host].address], r
    assert_set_cookies_well_formed(r, PERSISTENT_ATTRS, set(), (penv.cookie,))
    d = delta(before, penv.envoy.counters("sticky_canary"))
    assert sum(decisions(d).values()) == 1 and moved(d, "sticky_canary_cookie_rejected_total") == 0, d


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("planted", ["other-pod", "canary-pin"])
def test_persistent_planted_cookie_pins_nothing(penv, how, planted):
    """A victim on pod A with a planted sealed cookie beside it (another
    user's, pinned to the other canary-v1 pod, or to a canary-v2 pod): no
    pin is used, the victim stays on canary-v1 (placed by weight; the
    canary has weight 0), and 10 requests land on one pod (a random key per
    request would bounce between the two: all 10 alike has probability
    2^-9)."""
    token = {"other-pod": "B", "canary-pin": "C2"}[planted]
    before = penv.envoy.counters("sticky_canary")
    hosts = set()
    for _ in range(10):
        r = penv.send(["A", token], how)
        assert r.status == 200 and r.name == V1, r
        assert penv.pinned(r) == [], f"a pin was used: {penv.pinned(r)}"
        assert_set_cookies_well_formed(r, PERSISTENT_ATTRS, set(), (penv.cookie,))
        hosts.add(r.hostname)
    assert len(hosts) == 1, f"bounced: {hosts}"
    d = delta(before, penv.envoy.counters("sticky_canary"))
    assert decisions(d) == {("global", V1, "new"): 10}, d
    assert moved(d, "sticky_canary_cookie_rejected_total", route="global", cause="duplicated") == 10, d
