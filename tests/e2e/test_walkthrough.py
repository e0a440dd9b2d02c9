"""The Traefik "canary routing with sticky sessions" walkthrough (its Verify
section), against Envoy + sticky-canary with envoy-config/envoy-local.yaml.

    curl -v http://127.0.0.1:10000/                          -> Name: canary-v1 + Set-Cookie
    curl -v -b canary=v2 http://127.0.0.1:10000/             -> Name: canary-v2 + Set-Cookie
    curl -b my-sticky-cookie=<value> http://127.0.0.1:10000/ -> the same Hostname every time
"""

from __future__ import annotations

import re

import pytest

COOKIE = "my-sticky-cookie"
# The attributes the plugin JSON asks for, as the filter emits them.
EXPECTED_ATTRIBUTES = {"Path=/", "Max-Age=3600", "Secure", "HttpOnly", "SameSite=None"}
V1_PODS = {"canary-v1-0", "canary-v1-1"}
V2_PODS = {"canary-v2-0", "canary-v2-1"}
HEX16 = re.compile(r"^[0-9a-f]{16}$")


def only_session_cookie(resp, name=COOKIE):
    """The one Set-Cookie of the response, which must be the session cookie."""
    assert resp.status == 200, resp
    assert len(resp.set_cookies) == 1, resp.set_cookies
    cookies = resp.cookies_named(name)
    assert len(cookies) == 1, resp.set_cookies
    c = cookies[0]
    assert re.fullmatch(r"[A-Za-z0-9_-]+", c.value), c.value
    return c


def test_default_goes_to_v1_with_sticky_cookie(client):
    r = client.get("/")
    assert r.status == 200
    assert r.name == "canary-v1"
    assert r.hostname in V1_PODS
    c = only_session_cookie(r)
    assert c.attribute_set == EXPECTED_ATTRIBUTES
    assert len(c.attributes) == len(EXPECTED_ATTRIBUTES)  # no attribute twice
    # What the backend saw: the filter's headers, exactly once each.
    assert r.whoami.header_values("X-Canary-Version") == ["canary-v1"]
    [h] = r.whoami.header_values("X-Sticky-Hash")
    assert HEX16.match(h), h


def test_canary_cookie_goes_to_v2_with_sticky_cookie(client):
    r = client.get("/", cookies={"canary": "v2"})
    assert r.name == "canary-v2"
    assert r.hostname in V2_PODS
    c = only_session_cookie(r)
    assert c.attribute_set == EXPECTED_ATTRIBUTES
    assert r.whoami.header_values("X-Canary-Version") == ["canary-v2"]


def test_version_sticks_without_canary_cookie(client):
    first = client.get("/", cookies={"canary": "v2"})
    assert first.name == "canary-v2"
    sticky = only_session_cookie(first)
    for _ in range(5):
        r = client.get("/", cookies={COOKIE: sticky.value})
        assert r.status == 200
        assert r.name == "canary-v2", r
        assert r.hostname == first.hostname, r
        assert r.set_cookies == [], "a valid, unchanged cookie must not be re-issued"


def test_canary_cookie_switches_version_and_reissues(client):
    """Switching v1 -> v2 (and back) with the canary cookie gives a new session
    cookie each time; the new one then keeps the user on the new version."""
    v1 = client.get("/")
    assert v1.name == "canary-v1"
    c1 = only_session_cookie(v1)

    v2 = client.get("/", cookies=[(COOKIE, c1.value), ("canary", "v2")])
    assert v2.name == "canary-v2"
    c2 = only_session_cookie(v2)
    assert c2.value != c1.value
    assert client.get("/", cookies={COOKIE: c2.value}).name == "canary-v2"

    back = client.get("/", cookies=[(COOKIE, c2.value), ("canary", "v1")])
    assert back.name == "canary-v1"
    c3 = only_session_cookie(back)
    assert c3.value not in (c1.value, c2.value)
    again = client.get("/", cookies={COOKIE: c3.value})
    assert again.name == "canary-v1"
    assert again.set_cookies == []


@pytest.mark.parametrize("canary", [None, "v2"], ids=["v1-session", "v2-session"])
def test_sticky_cookie_pins_one_pod(client, canary):
    first = client.get("/", cookies={"canary": canary} if canary else None)
    sticky = only_session_cookie(first)
    pods = V2_PODS if canary else V1_PODS
    assert first.hostname in pods
    hostnames = set()
    hashes = set()
    for _ in range(50):
        r = client.get("/", cookies={COOKIE: sticky.value})
        assert r.status == 200
        hostnames.add(r.hostname)
        hashes.update(r.whoami.header_values("X-Sticky-Hash"))
    assert hostnames == {first.hostname}
    assert hashes == set(first.whoami.header_values("X-Sticky-Hash"))


def test_sessions_spread_over_both_pods(client):
    """Pinning, not a single pod: 40 new sessions use both canary-v1 pods,
    and each session then stays on the pod it started on."""
    sessions = []
    for _ in range(40):
        r = client.get("/")
        assert r.name == "canary-v1"
        sessions.append((only_session_cookie(r).value, r.hostname))
    assert {h for _, h in sessions} == V1_PODS
    for value, hostname in sessions:
        assert client.get("/", cookies={COOKIE: value}).hostname == hostname


def test_valid_unchanged_cookie_gets_no_set_cookie(client):
    first = client.get("/")
    sticky = only_session_cookie(first)
    r = client.get("/", cookies={COOKIE: sticky.value})
    assert r.status == 200
    assert r.name == "canary-v1"
    assert r.set_cookies == []
    # Other cookies next to it change nothing.
    r = client.get("/", cookies=[("theme", "dark"), (COOKIE, sticky.value), ("lang", "en")])
    assert r.name == "canary-v1"
    assert r.hostname == first.hostname
    assert r.set_cookies == []


def test_no_duplicate_set_cookie_when_the_app_sets_it(client):
    """A new session normally gets the filter's Set-Cookie; when the app's
    response already sets a cookie of that name, the filter adds none (the
    app's wins, never two). Other app cookies do not stop the filter."""
    r = client.get("/", headers={"x-whoami-set-cookie": "my-sticky-cookie=from-the-app; Path=/"})
    assert r.status == 200
    assert [c.value for c in r.cookies_named("my-sticky-cookie")] == ["from-the-app"]
    assert len([h for h in r.set_cookies if h.startswith("my-sticky-cookie=")]) == 1

    r = client.get("/", headers={"x-whoami-set-cookie": "theme=dark; Path=/"})
    [ours] = r.cookies_named("my-sticky-cookie")
    assert ours.value.startswith("1") and ours.value != "from-the-app"
    assert any(h.startswith("theme=dark") for h in r.set_cookies)
