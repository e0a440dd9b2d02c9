"""A bad plugin config never takes traffic down.

- Static Envoy config: Envoy starts, the filter logs the error (field path
  and value), counts it (``sticky_canary_config_total`` with
  ``result=refused``, gauge ``sticky_canary_config_invalid`` = 1) and passes
  every request through: no Set-Cookie, and a client's copy of the
  override headers is still removed, so the default route serves.
- ``"on_invalid_config": "refuse"``: the old strict behaviour, Envoy
  refuses the filter and does not start.
- ECDS (how Istio delivers plugin config, with no default config; Envoy
  Gateway inlines it in the listener instead: tests/envoy_gateway): a fresh start with a bad config serves pass-through, a good
  update takes over, and a bad update after it keeps the last good config
  serving; 0 failed requests throughout.
"""

from __future__ import annotations

import copy
import json

import pytest

import testkit

BASE = testkit.plugin_config(testkit.load_config())
REFUSED = "sticky_canary_config_total.result=.=refused;.;"
ACCEPTED = "sticky_canary_config_total.result=.=accepted;.;"
INVALID = "sticky_canary_config_invalid"


def with_(**changes):
    cfg = copy.deepcopy(BASE)
    cfg.update(changes)
    return cfg


def cookie(**changes):
    cfg = copy.deepcopy(BASE)
    cfg["session"]["cookie"].update(changes)
    return cfg


def rule(**r):
    cfg = copy.deepcopy(BASE)
    cfg["rules"] = [r]
    return cfg


def route_weight(w):
    cfg = copy.deepcopy(BASE)
    cfg["routes"][0]["versions"][1]["weight"] = w
    return cfg


# id -> (plugin config, text the log must contain)
CASES = {
    "weight-over-total": (
        with_(versions=[{"name": "canary-v1"}, {"name": "canary-v2", "weight": 150}]),
        "invalid plugin config: versions[1].weight = 150: over weight_total 100",
    ),
    "unknown-key": (
        with_(colour="blue"),
        'invalid plugin config: colour = "blue": unknown field `colour`',
    ),
    "bad-regex": (
        rule(header="x-canary", regex="(unclosed", version="canary-v2"),
        'invalid plugin config: rules[0].regex = "(unclosed": bad regex',
    ),
    "unknown-version": (
        rule(cookie="canary", value="v3", version="canary-v3"),
        'invalid plugin config: rules[0].version = "canary-v3": unknown version; known: "canary-v1", "canary-v2"',
    ),
    "bad-cookie-name": (
        cookie(name="bad name"),
        'invalid plugin config: session.cookie.name = "bad name": not a valid cookie name',
    ),
    "samesite-none-without-secure": (
        cookie(secure=False),
        'invalid plugin config: session.cookie.same_site = "None": SameSite=None requires "secure": true',
    ),
    "route-entry-weight": (
        route_weight(101),
        "invalid plugin config: routes[0].versions[1].weight = 101: over weight_total 100",
    ),
    "not-json": (
        '{"versions": [',
        "invalid plugin config: $: not valid JSON",
    ),
}


def strict(plugin):
    out = copy.deepcopy(plugin)
    out["on_invalid_config"] = "refuse"
    return out


def assert_pass_through(envoy: testkit.Envoy):
    """Requests are served by the default route, untouched by the filter,
    with a client's copy of the version header removed."""
    c = envoy.client()
    try:
        for headers, cookies in [
            (None, None),
            ({"x-canary-version": "canary-v2", "x-sticky-endpoint": "127.0.0.1:1"}, None),
            ({"x-canary": "always"}, {"canary": "v2"}),
        ]:
            r = c.get("/", headers=headers, cookies=cookies)
            assert r.status == 200, r.text
            assert r.name == "canary-v1", "pass-through: the default route serves"
            assert r.set_cookies == [], r.set_cookies
            assert r.whoami.header_values("x-canary-version") == []
            assert r.whoami.header_values("x-sticky-endpoint") == []
    finally:
        c.close()


@pytest.fixture(scope="module")
def started(workdir, backends):
    """One Envoy per bad config, each serving pass-through."""
    config = testkit.load_config()
    out = {}
    try:
        for case, (plugin, _) in CASES.items():
            out[case] = testkit.start_envoy(config, workdir / "bad-config" / case, backends=backends, plugin=plugin)
        yield out
    finally:
        for envoy in out.values():
            envoy.stop()


@pytest.mark.parametrize("case", list(CASES))
def test_bad_config_serves_pass_through(started, case):
    _, expected = CASES[case]
    envoy = started[case]
    log = envoy.log()
    lines = [line for line in log.splitlines() if "sticky-canary: invalid plugin config:" in line]
    assert lines, log[-3000:]
    assert any(expected in line for line in lines), "\n".join(lines)
    assert any("no earlier config: passing every request through" in line for line in lines)
    assert_pass_through(envoy)
    counters = envoy.counters()
    # One VM on the main thread and one per worker (--concurrency 1).
    assert counters.get(REFUSED, 0) >= 1, counters
    assert counters.get(ACCEPTED, 0) == 0
    assert counters.get(INVALID) == 1
    assert counters.get("sticky_canary_passthrough_total") == 3
    assert not any(k.startswith("sticky_canary_decisions_total") for k in counters)


@pytest.fixture(scope="module")
def strict_outcomes(workdir):
    config = testkit.load_config()
    jobs = [
        (config, workdir / "bad-config-strict" / case, strict(plugin))
        for case, (plugin, _) in CASES.items()
        if isinstance(plugin, dict)
    ]
    results = testkit.run_many_expect_failure(jobs, timeout=testkit.START_TIMEOUT)
    return dict(zip([c for c, (p, _) in CASES.items() if isinstance(p, dict)], results))


@pytest.mark.parametrize("case", [c for c, (p, _) in CASES.items() if isinstance(p, dict)])
def test_strict_refusal_stops_envoy(strict_outcomes, case):
    _, expected = CASES[case]
    out = strict_outcomes[case]
    assert out.returncode is not None, f"Envoy still running after {testkit.START_TIMEOUT:.0f} s:\n{out.log[-3000:]}"
    assert out.returncode != 0, out.log[-3000:]
    lines = [line for line in out.log.splitlines() if "sticky-canary: invalid plugin config:" in line]
    assert any(expected in line and "refusing it (on_invalid_config: refuse)" in line for line in lines), "\n".join(lines)
    assert "Unable to create Wasm plugin sticky-canary" in out.log


def test_the_shipped_config_itself_is_accepted(stack):
    """Control for the tables above: the shipped plugin JSON serves."""
    assert stack.envoy.alive()
    assert json.loads(testkit.wasm_plugins(stack.envoy.config)[0]["configuration"]["value"]) == BASE
    counters = stack.envoy.counters()
    assert counters.get(ACCEPTED, 0) >= 1
    assert counters.get(REFUSED, 0) == 0
    assert counters.get(INVALID) == 0


# ---------------------------------------------------------------------------
# ECDS, as Istio delivers WasmPlugin config: no default config.

ECDS_NAME = "sticky-canary"


def reloads(envoy) -> int:
    return sum(v for k, v in envoy.counters().items() if k.endswith(f"{ECDS_NAME}.config_reload"))


def test_ecds_bad_start_good_update_bad_update(workdir, backends):
    bad = with_(versions=[{"name": "canary-v1"}, {"name": "canary-v2", "weight": 200}])
    # envoy-local.yaml with the Wasm filter delivered by ECDS from a watched
    # file, and no default config (as istiod does); the first file is bad.
    cfg, ecds = testkit.use_ecds(testkit.load_config(), workdir / "ecds", plugin=bad, name=ECDS_NAME)
    envoy = testkit.start_envoy(cfg, workdir / "ecds-envoy", backends=backends)
    try:
        testkit.wait_until(lambda: reloads(envoy) >= 1, "the first ECDS config")
        # A fresh start with a bad config: served, as pass-through.
        assert_pass_through(envoy)
        assert envoy.counters().get(INVALID) == 1
        assert "no earlier config: passing every request through" in envoy.log()

        c = envoy.client()
        failures = []

        def burst(n, **kw):
            out = []
            for _ in range(n):
                r = c.get("/", **kw)
                if r.status != 200:
                    failures.append(r.status)
                out.append(r)
            return out

        # A good update takes over.
        good = with_(versions=[{"name": "canary-v1"}, {"name": "canary-v2", "weight": 0}])
        testkit.write_ecds(ecds, good)
        testkit.wait_until(lambda: reloads(envoy) >= 2, "the good ECDS update")
        first = burst(1, cookies={"canary": "v2"})[0]
        session = first.cookies_named("my-sticky-cookie")
        assert first.name == "canary-v2" and len(session) == 1, first.set_cookies
        returning = {"my-sticky-cookie": session[0].value}
        assert {r.name for r in burst(20, cookies=returning)} == {"canary-v2"}
        assert envoy.counters().get(INVALID) == 0

        # A bad update: the last good config keeps serving, the returning
        # user stays on canary-v2, new users still get a session.
        testkit.write_ecds(ecds, bad)
        testkit.wait_until(lambda: reloads(envoy) >= 3, "the bad ECDS update")
        assert {r.name for r in burst(20, cookies=returning)} == {"canary-v2"}
        fresh = burst(1)[0]
        assert fresh.name == "canary-v1" and len(fresh.cookies_named("my-sticky-cookie")) == 1
        assert "keeping the last good config" in envoy.log()
        assert envoy.counters().get(INVALID) == 1
        assert failures == []
        c.close()
    finally:
        envoy.stop()
