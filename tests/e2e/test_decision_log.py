"""The decision where operators look: Envoy's access log (filter state,
``"filter_state": true``) and, when configured, a debug response header.

envoy-config/envoy-local.yaml logs
``version=%FILTER_STATE(wasm.sticky_canary.version:PLAIN)%``,
``reason=...reason...`` and ``session=...session...``; this test sends a new
user, a rule hit, a returning user and a garbled cookie, and checks the
exact fields of each access-log line, and the debug header's exact value.
"""

from __future__ import annotations

import re
import time

import pytest

import testkit

DEBUG = "x-sticky-canary-debug"


@pytest.fixture(scope="module")
def envoy(workdir, backends):
    plugin = testkit.plugin_config(testkit.load_config())
    assert plugin.get("filter_state") is True, "the shipped config records the decision"
    plugin["debug_header"] = DEBUG
    e = testkit.start_envoy(testkit.load_config(), workdir / "decision-log", backends=backends, plugin=plugin)
    yield e
    e.stop()


LINE = re.compile(r'"GET (?P<path>\S+)" 200 route=\S+ version=(?P<version>\S+) reason=(?P<reason>\S+) session=(?P<session>\S+) ')


def access_lines(envoy, n: int) -> list[dict]:
    """The first `n` access-log lines (Envoy writes them at stream end;
    poll as a hang guard)."""
    deadline = time.monotonic() + testkit.hang_guard(30)
    while True:
        found = [m.groupdict() for m in LINE.finditer(envoy.log())]
        if len(found) >= n or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_access_log_and_debug_header_show_the_decision(envoy):
    c = envoy.client()
    new = c.get("/a")
    session = new.cookies_named("my-sticky-cookie")[0].value
    rule = c.get("/b", cookies={"canary": "v2"})
    back = c.get("/c", cookies={"my-sticky-cookie": session})
    garbled = c.get("/d", cookies={"my-sticky-cookie": "1garbage"})
    c.close()
    assert new.header(DEBUG) == "route=global; version=canary-v1; reason=new; cookie=absent; session=issued"
    assert rule.header(DEBUG) == "route=global; version=canary-v2; reason=rule; rule=0; cookie=absent; session=issued"
    assert back.header(DEBUG) == "route=global; version=canary-v1; reason=returning; cookie=valid; session=none"
    assert garbled.header(DEBUG) == (
        "route=global; version=canary-v1; reason=new; cookie=invalid; rejected=garbled; session=issued"
    )
    lines = {d["path"]: d for d in access_lines(envoy, 4)}
    assert lines["/a"] == {"path": "/a", "version": "canary-v1", "reason": "new", "session": "issued"}
    assert lines["/b"] == {"path": "/b", "version": "canary-v2", "reason": "rule", "session": "issued"}
    assert lines["/c"] == {"path": "/c", "version": "canary-v1", "reason": "returning", "session": "none"}
    assert lines["/d"] == {"path": "/d", "version": "canary-v1", "reason": "new", "session": "issued"}


def test_no_debug_header_unless_configured(stack):
    with stack.client() as c:
        r = c.get("/")
    assert r.status == 200 and r.header(DEBUG) is None
    assert not [k for k, _ in r.headers if "sticky" in k.lower() and k.lower() != "set-cookie"]
