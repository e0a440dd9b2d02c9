"""A bad plugin config is refused: Envoy does not start, and its log names
the field path and the offending value (see src/compile.rs)."""

from __future__ import annotations

import copy
import json

import pytest

import harness

BASE = harness.plugin_config(harness.load_config())


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


@pytest.fixture(scope="module")
def outcomes(workdir):
    """Start one Envoy per bad config, all at once (each takes ~2 s)."""
    config = harness.load_config()
    jobs = [(config, workdir / "bad-config" / case, plugin) for case, (plugin, _) in CASES.items()]
    results = harness.run_many_expect_failure(jobs, timeout=harness.START_TIMEOUT)
    return dict(zip(CASES, results))


@pytest.mark.parametrize("case", list(CASES))
def test_bad_config_is_refused(outcomes, case):
    plugin, expected = CASES[case]
    out = outcomes[case]
    assert out.returncode is not None, f"Envoy still running after {harness.START_TIMEOUT:.0f} s:\n{out.log[-3000:]}"
    assert out.returncode != 0, out.log[-3000:]
    lines = [line for line in out.log.splitlines() if "sticky-canary: invalid plugin config:" in line]
    assert lines, out.log[-3000:]
    assert any(expected in line for line in lines), "\n".join(lines)
    # Envoy says why it stopped.
    assert "Unable to create Wasm plugin sticky-canary" in out.log


def test_the_shipped_config_itself_is_accepted(stack):
    """Control for the table above: the same harness path with the shipped
    plugin JSON starts and serves."""
    assert stack.envoy.alive()
    assert json.loads(harness.wasm_plugins(stack.envoy.config)[0]["configuration"]["value"]) == BASE
