"""`sticky-canary explain` answers what the filter in the real Envoy decides.

The CLI is built natively from the filter's core; these tests send the same
requests through Envoy (envoy-config/envoy-local.yaml, and a header-keyed
plugin config) and compare the version and the sticky hash the backend sees
(X-Canary-Version, X-Sticky-Hash) and the cookie the filter sends with what
`explain --format json` says. The CLI reads the Envoy YAML itself, so the
plugin JSON embedded in it is checked on the way.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import testkit

BIN = Path(os.environ.get("STICKY_CANARY_BIN", testkit.REPO_ROOT / "target" / "debug" / "sticky-canary"))
COOKIE = "my-sticky-cookie"
WEIGHTED = "my-weighted-cookie"


@pytest.fixture(scope="module")
def cli():
    """The binary, built once (a no-op when `cargo build -p sticky-canary-cli` ran)."""
    if "STICKY_CANARY_BIN" not in os.environ:
        subprocess.run(
            ["cargo", "build", "-q", "-p", "sticky-canary-cli"],
            cwd=testkit.REPO_ROOT,
            check=True,
            timeout=testkit.hang_guard(1800),
        )
    assert BIN.exists(), BIN

    def explain(config, *args):
        out = subprocess.run(
            [str(BIN), "explain", "--config", str(config), "--format", "json", *args],
            capture_output=True,
            text=True,
            timeout=testkit.hang_guard(300),
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    return explain


def seen(r):
    """(version, hash) as the backend received them from the filter."""
    w = r.whoami
    assert w is not None, r
    [version] = w.header_values("X-Canary-Version")
    [hash_] = w.header_values("X-Sticky-Hash")
    return version, hash_


def attributes(set_cookie: str) -> list[str]:
    return testkit.parse_set_cookie(set_cookie).attributes


def test_new_and_returning_user_on_the_local_config(cli, client):
    local = testkit.LOCAL_CONFIG
    first = client.get("/")
    [sticky] = first.cookies_named(COOKIE)
    version, hash_ = seen(first)
    # A new user: explain's Set-Cookie has the filter's exact attributes.
    new = cli(local, "--path", "/")
    assert new["cookie_action"]["action"] == "new"
    assert attributes(new["cookie_action"]["set_cookie"]) == sticky.attributes
    assert new["version"] == version == "canary-v1"
    assert new["reason"]["kind"] == "weight"
    # The returning user: same version and hash as Envoy, no Set-Cookie either side.
    again = client.get("/", cookies={COOKIE: sticky.value})
    e = cli(local, "--cookie", sticky.pair)
    assert (e["version"], e["hash"]) == seen(again) == (version, hash_)
    assert e["session_cookie"]["state"] == "valid"
    assert e["cookie_action"]["set_cookie"] is None
    assert again.cookies_named(COOKIE) == []


@pytest.mark.parametrize(
    "headers, cookies, version, rule",
    [
        ({}, {"canary": "v2"}, "canary-v2", 0),
        ({"x-canary": "always"}, {}, "canary-v2", 2),
        ({"x-canary": "never"}, {"canary": "v3"}, "canary-v1", 2),
        ({"x-canary": "always"}, {"canary": "v1"}, "canary-v1", 1),
    ],
)
def test_rules_switch_the_session_as_in_envoy(cli, client, headers, cookies, version, rule):
    first = client.get("/")
    [sticky] = first.cookies_named(COOKIE)
    r = client.get("/", headers=headers, cookies={COOKIE: sticky.value, **cookies})
    args = ["--cookie", sticky.pair]
    for k, v in cookies.items():
        args += ["--cookie", f"{k}={v}"]
    for k, v in headers.items():
        args += ["--header", f"{k}: {v}"]
    e = cli(testkit.LOCAL_CONFIG, *args)
    assert (e["version"], e["hash"]) == seen(r)
    assert e["version"] == version
    assert e["reason"]["kind"] == "rule" and e["reason"]["rule"] == rule
    # A cookie goes out exactly when explain says one does.
    sent = r.cookies_named(COOKIE)
    if e["cookie_action"]["set_cookie"] is None:
        assert sent == [], r
    else:
        [c] = sent
        assert attributes(e["cookie_action"]["set_cookie"]) == c.attributes


def test_weighted_route_entry_buckets_match_envoy(cli, stack):
    """/weighted/ is a route entry at 20% canary-v2: 40 new users, then each
    user's next request, explained from the cookie Envoy gave them."""
    versions = set()
    for _ in range(40):
        c = stack.client()
        try:
            first = c.get("/weighted/x")
            [sticky] = first.cookies_named(WEIGHTED)
            r = c.get("/weighted/x", cookies={WEIGHTED: sticky.value})
        finally:
            c.close()
        e = cli(testkit.LOCAL_CONFIG, "--path", "/weighted/x", "--cookie", sticky.pair)
        assert e["policy"] == "route entry weighted"
        assert (e["version"], e["hash"]) == seen(r) == seen(first)
        assert e["reason"]["kind"] == "weight"
        versions.add(e["version"])
    # P(all 40 on one side at 20%) < 2e-4.
    assert versions == {"canary-v1", "canary-v2"}


HEADER_KEYED = {
    "versions": [{"name": "canary-v1"}, {"name": "canary-v2", "weight": 50}],
    "session": {"key": {"from": "header", "name": "x-user"}, "cookie": {"name": "uid-session", "max_age": 600}},
}


@pytest.fixture(scope="module")
def header_keyed(workdir, backends):
    envoy = testkit.start_envoy(
        testkit.load_config(), workdir / "cli-header-keyed", backends=backends, plugin=HEADER_KEYED
    )
    path = workdir / "cli-header-keyed.json"
    path.write_text(json.dumps(HEADER_KEYED))
    yield envoy, path
    envoy.stop()


def test_header_keyed_users_without_cookies(cli, header_keyed):
    envoy, config = header_keyed
    c = envoy.client()
    versions = set()
    try:
        for i in range(30):
            user = f"user-{i}"
            r = c.get("/", headers={"x-user": user})
            e = cli(config, "--header", f"x-user: {user}")
            assert (e["version"], e["hash"]) == seen(r), user
            [sent] = r.cookies_named("uid-session")
            assert attributes(e["cookie_action"]["set_cookie"]) == sent.attributes
            versions.add(e["version"])
    finally:
        c.close()
    assert versions == {"canary-v1", "canary-v2"}
