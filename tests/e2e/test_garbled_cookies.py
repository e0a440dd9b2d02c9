"""Broken session cookies are never an error: the request is served by the
default version and a fresh cookie replaces the broken one."""

from __future__ import annotations

import pytest

import testkit

COOKIE = "my-sticky-cookie"


def flip(value: str, index: int) -> str:
    """Change one base64url character (never into itself)."""
    c = value[index]
    repl = "A" if c != "A" else "B"
    return value[:index] + repl + value[index + 1:]


def _v2_cookie(client) -> str:
    r = client.get("/", cookies={"canary": "v2"})
    assert r.name == "canary-v2"
    [c] = r.cookies_named(COOKIE)
    return c.value


CASES = {
    "garbage": lambda v2: f"{COOKIE}=garbage",
    "4KB": lambda v2: f"{COOKIE}=" + "A" * 4096,
    "duplicated": lambda v2: f"{COOKIE}=a; {COOKIE}=b",
    "forged-middle": lambda v2: f"{COOKIE}={flip(v2, len(v2) // 2)}",
    "forged-first-body-char": lambda v2: f"{COOKIE}={flip(v2, 1)}",
    "forged-marker": lambda v2: f"{COOKIE}=2{v2[1:]}",
    "empty": lambda v2: f"{COOKIE}=",
}


@pytest.mark.parametrize("case", list(CASES))
def test_garbled_cookie_is_replaced(client, case):
    v2 = _v2_cookie(client)
    # Control: the untouched cookie keeps the user on canary-v2.
    control = client.get("/", cookies={COOKIE: v2})
    assert control.name == "canary-v2"
    assert control.set_cookies == []

    raw = CASES[case](v2)
    r = client.get("/", cookies=raw)
    assert r.status == 200
    assert r.name == "canary-v1", r
    fresh = r.cookies_named(COOKIE)
    assert len(fresh) == 1, r.set_cookies
    assert fresh[0].value not in ("", "garbage", v2)
    assert fresh[0].attribute_set == {"Path=/", "Max-Age=3600", "Secure", "HttpOnly", "SameSite=None"}
    # The replacement is a valid session: sent back, it sticks and is not re-issued.
    again = client.get("/", cookies={COOKIE: fresh[0].value})
    assert again.name == "canary-v1"
    assert again.hostname == r.hostname
    assert again.set_cookies == []


def test_cookie_for_other_name_is_not_accepted(client):
    """A valid weighted-route cookie value sent under the global name is not
    a valid global session (the check covers the cookie name)."""
    r = client.get("/weighted/x", headers={"x-canary": "always"})
    [w] = r.cookies_named("my-weighted-cookie")
    g = client.get("/", cookies={COOKIE: w.value})
    assert g.status == 200
    assert g.name == "canary-v1"
    assert len(g.cookies_named(COOKIE)) == 1


@pytest.mark.parametrize("raw", ["{c}={v}; {c}=garbage", "{c}=garbage; {c}={v}", "{c}={v}; {c}={v}"],
                         ids=["valid-then-garbage", "garbage-then-valid", "valid-twice"])
def test_a_valid_copy_beside_others_keeps_the_session(client, raw):
    """Browsers send two copies of a cookie after its Path or Domain
    changed: a valid copy keeps the session (version and pod), whatever
    garbage or identical copy comes with it."""
    v2 = _v2_cookie(client)
    control = client.get("/", cookies={COOKIE: v2})
    r = client.get("/", cookies=raw.format(c=COOKIE, v=v2))
    assert r.status == 200
    assert (r.name, r.hostname) == (control.name, control.hostname) == ("canary-v2", control.hostname)
    assert r.set_cookies == []


def test_garbled_cookie_is_counted(stack):
    with testkit.Client(stack.envoy.port) as c:
        before = stack.envoy.metric("sticky_canary_cookie_rejected_total", route="global")
        for raw in (f"{COOKIE}=garbage", f"{COOKIE}=a; {COOKIE}=b"):
            assert c.get("/", cookies=raw).name == "canary-v1"
        after = stack.envoy.metric("sticky_canary_cookie_rejected_total", route="global")
    assert after - before == 2
