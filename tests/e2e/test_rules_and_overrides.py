"""Header rules, and headers a client must not be able to forge."""

from __future__ import annotations

import pytest

COOKIE = "my-sticky-cookie"


@pytest.mark.parametrize(
    "value, expected",
    [("always", "canary-v2"), ("never", "canary-v1"), ("other", "canary-v1"), ("ALWAYS", "canary-v1")],
)
def test_header_rule(client, value, expected):
    """`{"header": "x-canary", "version": "canary-v2"}` without a value:
    `always` -> the rule's version, `never` -> the default, anything else
    falls through (to the weighted choice: canary-v2 has weight 0)."""
    r = client.get("/", headers={"x-canary": value})
    assert r.status == 200
    assert r.name == expected, r
    assert r.whoami.header_values("X-Canary-Version") == [expected]


def test_rules_first_match_wins(client):
    # The canary cookie rule comes before the header rule.
    assert client.get("/", headers={"x-canary": "never"}, cookies={"canary": "v2"}).name == "canary-v2"
    assert client.get("/", headers={"x-canary": "always"}, cookies={"canary": "v1"}).name == "canary-v1"
    # A canary cookie value no rule names falls through to the header rule.
    assert client.get("/", headers={"x-canary": "always"}, cookies={"canary": "v3"}).name == "canary-v2"


def test_rule_hits_are_counted(stack, client):
    count = lambda: stack.envoy.metric("sticky_canary_decisions_total", route="global", version="canary-v2", reason="rule")
    before = count()
    assert client.get("/", headers={"x-canary": "always"}).name == "canary-v2"
    assert client.get("/", cookies={"canary": "v2"}).name == "canary-v2"
    assert count() - before == 2


def test_client_version_header_is_overwritten(client):
    """A client-sent x-canary-version does not pick the route: with no rule
    matching, the request goes to canary-v1, and the backend sees exactly
    one X-Canary-Version header, the filter's."""
    r = client.get("/", headers={"x-canary-version": "canary-v2"})
    assert r.status == 200
    assert r.name == "canary-v1"
    assert r.whoami.header_values("X-Canary-Version") == ["canary-v1"]

    r = client.get("/", headers=[("x-canary-version", "canary-v2"), ("X-Canary-Version", "canary-v2")])
    assert r.name == "canary-v1"
    assert r.whoami.header_values("X-Canary-Version") == ["canary-v1"]

    # Same on the weighted route.
    r = client.get("/weighted/x", headers={"x-canary-version": "canary-v2"})
    [sticky] = r.cookies_named("my-weighted-cookie")
    expected = client.get("/weighted/x", cookies={"my-weighted-cookie": sticky.value}).name
    assert r.name == expected
    assert r.whoami.header_values("X-Canary-Version") == [expected]


def test_client_sticky_hash_is_overwritten(client):
    """A client-sent x-sticky-hash changes neither the hash the backend sees
    nor the pod: compare with the same cookie sent without it."""
    for canary in (None, None, None, "v2", "v2", "v2"):
        first = client.get("/", cookies={"canary": canary} if canary else None)
        [sticky] = first.cookies_named(COOKIE)
        plain = client.get("/", cookies={COOKIE: sticky.value})
        [own_hash] = plain.whoami.header_values("X-Sticky-Hash")
        for forged in ("0000000000000000", "ffffffffffffffff", "0123456789abcdef", "not-a-hash"):
            r = client.get("/", headers={"x-sticky-hash": forged}, cookies={COOKIE: sticky.value})
            assert r.status == 200
            assert r.name == plain.name
            assert r.hostname == plain.hostname, (forged, r)
            assert r.whoami.header_values("X-Sticky-Hash") == [own_hash]


def test_pass_through_strips_forged_override_headers(workdir, backends):
    """A request no policy covers passes through untouched, except that a
    client's copies of the filter's headers are removed: with the Envoy
    routes of envoy-local.yaml, a forged `x-canary-version: canary-v2`
    would otherwise pick canary-v2 on a route the plugin does not cover."""
    import testkit

    cfg = testkit.load_config()
    plugin = testkit.plugin_config(cfg)
    # Only the /weighted/ entry stays: "/" is not covered by any policy.
    del plugin["versions"], plugin["rules"]
    envoy = testkit.start_envoy(cfg, workdir / "passthrough", backends=backends, plugin=plugin)
    try:
        c = envoy.client()
        forged = {"x-canary-version": "canary-v2", "x-sticky-hash": "0000000000000000", "x-sticky-endpoint": "127.0.0.1:1"}
        r = c.get("/", headers=forged)
        assert r.status == 200
        assert r.name == "canary-v1", r
        for h in ("X-Canary-Version", "X-Sticky-Hash", "X-Sticky-Endpoint"):
            assert r.whoami.header_values(h) == [], h
        assert r.set_cookies == []
        assert envoy.counters("sticky_canary_passthrough_total") == {"sticky_canary_passthrough_total": 1}
        # The covered route still decides.
        r = c.get("/weighted/x", headers=forged)
        assert r.whoami.header_values("X-Canary-Version") == [r.name]
        c.close()
    finally:
        envoy.stop()
