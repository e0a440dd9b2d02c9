"""The labelled counters, end to end: a known mix of requests goes through
the real Envoy running envoy-config/envoy-local.yaml (its `stats_tags`
turn the labels in the counter names into Prometheus labels), then
`/stats/prometheus` is scraped and every `sticky_canary_*` series must have
exactly the expected value. Every series not listed must be 0, so a request
counted twice, or under the wrong label, fails the test.

Sessions whose age matters (renewal, expiry, drain) use plain cookies made
here with an expiry chosen by the test (the plain format of src/session.rs,
valid because envoy-local.yaml configures no secrets), so no test waits for
a clock. The re-pin case runs in persistent mode: a pinned pod leaves the
cluster (EDS) and its users' cookies are re-pinned.

Finally `promtool check metrics` (Debian package `prometheus`) reads the
scrape filtered to our metrics and must find nothing to complain about but
the missing HELP text (Envoy never emits HELP lines).
"""

from __future__ import annotations

import collections
import copy
import json
import os
import re

import pytest

import testkit
from testkit.cookie_format import bucket, open_cookie, plain_cookie
from testkit.persistent import V1, V2, User, config as persistent_config, plugin as persistent_plugin
from testkit.persistent import set_endpoints, start_pods_with_eds
from testkit.tools import promtool

COOKIE = "my-sticky-cookie"
WEIGHTED_COOKIE = "my-weighted-cookie"
USER_COOKIE = "my-user-cookie"

# The shipped plugin JSON plus two route entries of our own: /user/ keys the
# session on the x-user-id header (a request without it falls back to a
# cookie key), /static/ passes requests through untouched.
PLUGIN = copy.deepcopy(testkit.plugin_config(testkit.load_config()))
PLUGIN["routes"] += [
    {"name": "user", "match": {"path_prefix": "/user/"},
     "session": {"key": {"from": "header", "name": "x-user-id"}, "cookie": {"name": USER_COOKIE}}},
    {"name": "static", "match": {"path_prefix": "/static/"}, "enabled": False},
]


# ---------------------------------------------------------------------------
# Prometheus text format


def our_lines(text: str, prefix: str = "sticky_canary_") -> str:
    """The scrape restricted to our metrics: their TYPE lines and samples."""
    keep = [l for l in text.splitlines()
            if l.startswith(prefix) or l.startswith(f"# TYPE {prefix}") or l.startswith(f"# HELP {prefix}")]
    return "\n".join(keep) + "\n"


def series(text: str) -> dict[tuple, int]:
    """Our series as {(name, frozenset of labels): value}."""
    out = {}
    for s, v in testkit.parse_prometheus(text, "sticky_canary_").items():
        name, labels = testkit.split_series(s)
        out[(name, frozenset(labels.items()))] = int(v)
    return out


def key(name: str, **labels: str) -> tuple:
    return (name, frozenset(labels.items()))


def dec(route, version, reason):
    return key("sticky_canary_decisions_total", route=route, version=version, reason=reason)


def ses(route, version, event):
    return key("sticky_canary_sessions_total", route=route, version=version, event=event)


def rej(route, cause):
    return key("sticky_canary_cookie_rejected_total", route=route, cause=cause)


def assert_exact(got: dict[tuple, int], want: collections.Counter) -> None:
    """Every expected series has its value; every other series is 0; and
    every expected series exists in the scrape at all."""
    missing = [k for k in want if k not in got]
    assert not missing, f"series missing from the scrape: {missing}"
    wrong = {k: (got[k], want.get(k, 0)) for k in got if got[k] != want.get(k, 0)}
    assert not wrong, "series (got, want): " + json.dumps(
        {f"{n}{dict(sorted(l))}": v for (n, l), v in wrong.items()}, indent=1)


def promtool_check(text: str) -> list[str]:
    """`promtool check metrics` on `text`: its complaint lines."""
    p = promtool("check", "metrics", input=text, timeout=60)
    lines = [l for l in (p.stdout + p.stderr).splitlines() if l.strip()]
    # Exit status 3 means lint problems only; anything else but 0 is an error.
    assert p.returncode in (0, 3), (p.returncode, lines)
    return lines


def without_help_complaints(lines: list[str]) -> list[str]:
    return [l for l in lines if not re.fullmatch(r"sticky_canary_[a-z_]+ no help text", l)]


def config_loads(e: testkit.Envoy, line: str) -> int:
    """How many times the filter logged `line` (once per config load)."""
    return sum(line in l for l in e.log().splitlines())


def new_key() -> bytes:
    return os.urandom(16)


def key_in(lo: int, hi: int) -> bytes:
    """A random key whose bucket (of 100) is in [lo, hi)."""
    for _ in range(100_000):
        k = new_key()
        if lo <= bucket(k) < hi:
            return k
    raise AssertionError("no key found")  # pragma: no cover (p < 1e-100)


# ---------------------------------------------------------------------------
# The known mix (balanced mode, envoy-local.yaml)


@pytest.fixture(scope="module")
def local(workdir, backends):
    envoy = testkit.start_envoy(testkit.load_config(), workdir / "metrics", backends=backends, plugin=PLUGIN)
    yield envoy
    envoy.stop()


def test_labelled_counts_of_a_known_mix(local):
    e = local
    c = e.client()
    want = collections.Counter()
    G = "global"

    def get(path="/", headers=None, cookies=None, expect=None, cookie_name=COOKIE, issued=None):
        r = c.get(path, headers=headers, cookies=cookies)
        assert r.status == 200, r
        if expect is not None:
            assert r.name == expect, r
        if issued is not None:
            assert bool(r.cookies_named(cookie_name)) == issued, r.set_cookies
        return r

    # Global policy: canary-v1 takes the whole weight (canary-v2 at 0).
    # 40 new users by weight: all canary-v1, each gets a session.
    newcomers = []
    for _ in range(40):
        r = get(expect=V1, issued=True)
        newcomers.append(r.cookies_named(COOKIE)[0].value)
    want[dec(G, V1, "new")] += 40
    want[ses(G, V1, "issued")] += 40

    # 10 of them come back: returning, no Set-Cookie (far from renewal).
    for v in newcomers[:10]:
        get(cookies={COOKIE: v}, expect=V1, issued=False)
    want[dec(G, V1, "returning")] += 10

    # Rules: `x-canary: always` x5, `x-canary: never` x3, cookie canary=v2 x4,
    # all without a session: new sessions on the rule's version.
    for _ in range(5):
        get(headers={"x-canary": "always"}, expect=V2, issued=True)
    for _ in range(3):
        get(headers={"x-canary": "never"}, expect=V1, issued=True)
    rule_v2 = []
    for _ in range(4):
        r = get(cookies={"canary": "v2"}, expect=V2, issued=True)
        rule_v2.append(r.cookies_named(COOKIE)[0].value)
    want[dec(G, V2, "rule")] += 5 + 4
    want[dec(G, V1, "rule")] += 3
    want[ses(G, V2, "issued")] += 5 + 4
    want[ses(G, V1, "issued")] += 3

    # The 4 cookie-rule users come back without the rule cookie: their
    # session remembers canary-v2 (placed by a rule), which is at weight 0,
    # so they drain: kept on canary-v2, no renewal, no Set-Cookie.
    for v in rule_v2:
        assert open_cookie(v).by_rule, "a rule-placed session"
        get(cookies={COOKIE: v}, expect=V2, issued=False)
    want[dec(G, V2, "drain")] += 4

    # 2 returning canary-v1 users send `x-canary: always`: the rule moves
    # them to canary-v2 and their session switches.
    for v in newcomers[10:12]:
        get(headers={"x-canary": "always"}, cookies={COOKIE: v}, expect=V2, issued=True)
    want[dec(G, V2, "rule")] += 2
    want[ses(G, V2, "switched")] += 2

    # 3 canary-v1 sessions with less than half of the ttl (3600 s) left:
    # returning, and renewed.
    for _ in range(3):
        v = plain_cookie(COOKIE, V1, new_key(), expires_in=600)
        r = get(cookies={COOKIE: v}, expect=V1, issued=True)
        assert open_cookie(r.cookies_named(COOKIE)[0].value).key == open_cookie(v).key, "same key"
    want[dec(G, V1, "returning")] += 3
    want[ses(G, V1, "renewed")] += 3

    # 2 users placed by weight on canary-v2 (now at weight 0): they drain,
    # kept on canary-v2, no renewal, no Set-Cookie.
    for _ in range(2):
        v = plain_cookie(COOKIE, V2, new_key(), expires_in=3000)
        get(cookies={COOKIE: v}, expect=V2, issued=False)
    want[dec(G, V2, "drain")] += 2

    # Rejected session cookies: each user is then placed as new by weight
    # and gets a fresh session.
    bad = {
        # Not ours: a bad marker, bad base64, too short.
        "garbled": ["garbage", "1!!not-base64!!", "1AAAA"],
        # Well formed, but the check does not verify.
        "forged": [plain_cookie(COOKIE, V2, new_key(), expires_in=3000, rule=True, check_xor=1) for _ in range(3)],
        "expired": [plain_cookie(COOKIE, V1, new_key(), expires_in=-600) for _ in range(2)],
    }
    for cause, values in bad.items():
        for v in values:
            get(cookies={COOKIE: v}, expect=V1, issued=True)
        want[rej(G, cause)] += len(values)
        want[dec(G, V1, "new")] += len(values)
        want[ses(G, V1, "issued")] += len(values)

    # Conflicting valid copies (two sessions in one Cookie header), twice:
    # duplicated; placed by weight with a key derived from both; no cookie.
    for _ in range(2):
        a = plain_cookie(COOKIE, V1, new_key(), expires_in=3000)
        b = plain_cookie(COOKIE, V2, new_key(), expires_in=3000, rule=True)
        get(cookies=f"{COOKIE}={a}; {COOKIE}={b}", expect=V1, issued=False)
    want[rej(G, "duplicated")] += 2
    want[dec(G, V1, "new")] += 2

    # Route entry `weighted` (/weighted/): canary-v2 at 20 of 100.
    W = "weighted"
    seen = collections.Counter()
    weighted_sessions = []
    for i in range(60):
        r = get(f"/weighted/{i}", cookie_name=WEIGHTED_COOKIE, issued=True)
        value = r.cookies_named(WEIGHTED_COOKIE)[0].value
        s = open_cookie(value)
        k, by_rule = s.key, s.by_rule
        # The version is the one the key's bucket gives (not a rule).
        assert not by_rule and r.name == (V2 if bucket(k) < 20 else V1), (bucket(k), r)
        seen[r.name] += 1
        weighted_sessions.append((value, r.name))
    # 20% of 60 = 12; 5 sd = 5 * sqrt(60 * 0.2 * 0.8) = 15.5.
    assert abs(seen[V2] - 12) <= 15.5, seen
    for version, n in seen.items():
        want[dec(W, version, "new")] += n
        want[ses(W, version, "issued")] += n
    # 6 of them come back.
    for value, version in weighted_sessions[:6]:
        get("/weighted/again", cookies={WEIGHTED_COOKIE: value}, expect=version, cookie_name=WEIGHTED_COOKIE,
            issued=False)
        want[dec(W, version, "returning")] += 1
    # 2 weight-placed canary-v2 sessions whose bucket now gives canary-v1:
    # reassigned, their session switches to canary-v1.
    for _ in range(2):
        v = plain_cookie(WEIGHTED_COOKIE, V2, key_in(20, 100), expires_in=3000)
        get("/weighted/", cookies={WEIGHTED_COOKIE: v}, expect=V1, cookie_name=WEIGHTED_COOKIE, issued=True)
    want[dec(W, V1, "reassigned")] += 2
    want[ses(W, V1, "switched")] += 2
    # The global session cookie means nothing here: a new user.
    r = get("/weighted/", cookies={COOKIE: newcomers[0]}, cookie_name=WEIGHTED_COOKIE, issued=True)
    k = open_cookie(r.cookies_named(WEIGHTED_COOKIE)[0].value).key
    assert r.name == (V2 if bucket(k) < 20 else V1), r
    want[dec(W, r.name, "new")] += 1
    want[ses(W, r.name, "issued")] += 1

    # Route entry `user` (/user/): the key is the x-user-id header.
    U = "user"
    # 3 requests without the header: the key falls back to a cookie key.
    for _ in range(3):
        get("/user/", cookie_name=USER_COOKIE, issued=True)
    want[key("sticky_canary_key_fallback_total", route=U)] += 3
    # alice, with the header: a new session, then returning with it.
    r = get("/user/", headers={"x-user-id": "alice"}, cookie_name=USER_COOKIE, issued=True)
    alice = r.cookies_named(USER_COOKIE)[0].value
    get("/user/", headers={"x-user-id": "alice"}, cookies={USER_COOKIE: alice}, cookie_name=USER_COOKIE,
        issued=False)
    # bob presents alice's session: made for another key, rejected.
    get("/user/", headers={"x-user-id": "bob"}, cookies={USER_COOKIE: alice}, cookie_name=USER_COOKIE, issued=True)
    # canary-v2 has weight 0 under the global weights this entry inherits.
    want[dec(U, V1, "new")] += 3 + 1 + 1
    want[dec(U, V1, "returning")] += 1
    want[ses(U, V1, "issued")] += 3 + 1 + 1
    want[rej(U, "other_key")] += 1

    # Route entry `static` (enabled: false): passed through, counted once.
    for _ in range(4):
        r = get("/static/app.js", issued=False)
        assert r.whoami.header_values("x-canary-version") == [], r
    want[key("sticky_canary_passthrough_total")] += 4

    # Config loads, all accepted: one per "configured" log line (with
    # --concurrency 1 Envoy configures the plugin 3 times: twice on the
    # main thread, once on the worker). The gauge says it serves.
    loads = config_loads(e, "sticky-canary: configured:")
    assert loads >= 2, e.log()
    want[key("sticky_canary_config_total", result="accepted")] += loads
    want[key("sticky_canary_config_invalid")] += 0
    # Every request above that changed a header cleared the route cache.
    want[key("sticky_canary_route_cache_clear_failed_total")] += 0

    text = e.prometheus()
    got = series(text)
    assert_exact(got, want)
    print("MEASURED: labelled counts:", json.dumps(
        {f"{n}{dict(sorted(l))}": v for (n, l), v in sorted(want.items(), key=str) if v}, indent=1))

    # Every counter is defined up front (zeros included), so dashboards see
    # every version, reason and cause from the start.
    for route, versions in ((G, (V1, V2)), (W, (V1, V2)), (U, (V1, V2))):
        for v in versions:
            for reason in ("rule", "returning", "new", "reassigned", "drain", "rollback"):
                assert dec(route, v, reason) in got
            for event in ("issued", "renewed", "switched", "repinned"):
                assert ses(route, v, event) in got
        for cause in ("garbled", "forged", "expired", "other_key", "duplicated"):
            assert rej(route, cause) in got

    # The example scrape in docs/metrics.md is this one, line for line.
    doc = (testkit.REPO_ROOT / "docs" / "metrics.md").read_text()
    example = doc.split("An example scrape, from the end-to-end test:\n\n```\n", 1)[1].split("```", 1)[0]
    lines = set(text.splitlines())
    assert [l for l in example.splitlines() if l not in lines] == [], example

    # The scrape passes promtool's lint but for the HELP lines Envoy omits.
    ours = our_lines(text)
    assert "# TYPE sticky_canary_decisions_total counter" in ours
    assert "# TYPE sticky_canary_config_invalid gauge" in ours
    complaints = promtool_check(ours)
    assert without_help_complaints(complaints) == [], complaints


def test_promtool_would_catch_a_bad_metric():
    """The lint is live: a counter without `_total` is reported."""
    lines = promtool_check("# TYPE sticky_canary_bad counter\nsticky_canary_bad 1\n")
    assert "sticky_canary_bad counter metrics should have \"_total\" suffix" in lines, lines


# ---------------------------------------------------------------------------
# A refused config: counted, the gauge is 1, requests pass through


def test_refused_config_is_counted_and_passes_through(workdir, backends):
    bad = copy.deepcopy(PLUGIN)
    bad["versions"][1]["weight"] = 150  # over weight_total 100
    e = testkit.start_envoy(testkit.load_config(), workdir / "metrics-bad", backends=backends, plugin=bad)
    try:
        c = e.client()
        for path in ("/", "/weighted/", "/user/", "/static/"):
            r = c.get(path, headers={"x-canary": "always"})
            assert (r.status, r.name, r.set_cookies) == (200, V1, []), r
        got = series(e.prometheus())
        refused = config_loads(e, "sticky-canary: invalid plugin config: versions[1].weight = 150")
        assert refused >= 2, e.log()
        want = collections.Counter({
            key("sticky_canary_config_total", result="refused"): refused,
            key("sticky_canary_config_invalid"): 1,
            key("sticky_canary_passthrough_total"): 4,
        })
        # Nothing was accepted: that series is not even defined.
        assert key("sticky_canary_config_total", result="accepted") not in got
        assert_exact(got, want)
        complaints = promtool_check(our_lines(e.prometheus()))
        assert without_help_complaints(complaints) == [], complaints
    finally:
        e.stop()


# ---------------------------------------------------------------------------
# Persistent mode: a pinned pod leaves, its users are re-pinned


def test_repinned_sessions_are_counted(workdir):
    base = workdir / "metrics-persistent"
    pods, eds = start_pods_with_eds(base, [(V1, "m-v1-a"), (V1, "m-v1-b"), (V2, "m-v2-a")])
    e = testkit.start_envoy(persistent_config(eds), base, plugin=persistent_plugin())
    try:
        set_endpoints(eds, e, V1, [pods["m-v1-a"], pods["m-v1-b"]])
        c = e.client()
        users = []
        for _ in range(30):
            u = User()
            r = u.get(c)
            assert (r.status, r.name, u.issued) == (200, V1, 1), r
            users.append((u, r.hostname))
        on_a = [u for u, pod in users if pod == "m-v1-a"]
        assert 0 < len(on_a) < 30, "both pods got sessions"
        # m-v1-a leaves the cluster: its users land on m-v1-b, re-pinned.
        set_endpoints(eds, e, V1, [pods["m-v1-b"]])
        for u, pod in users:
            r = u.get(c)
            assert (r.status, r.hostname) == (200, "m-v1-b"), r
            assert u.issued == (2 if pod == "m-v1-a" else 1), r.set_cookies
        got = series(e.prometheus())
        G = "global"
        want = collections.Counter({
            dec(G, V1, "new"): 30,
            ses(G, V1, "issued"): 30,
            dec(G, V1, "returning"): 30,
            ses(G, V1, "repinned"): len(on_a),
            key("sticky_canary_config_total", result="accepted"): config_loads(e, "sticky-canary: configured:"),
            key("sticky_canary_config_invalid"): 0,
        })
        # The shipped persistent plugin's own route entries, all zero.
        got = {k: v for k, v in got.items() if dict(k[1]).get("route", G) == G}
        assert_exact(got, want)
        print(f"MEASURED: persistent: 30 sessions, {len(on_a)} re-pinned when their pod left")
    finally:
        e.stop()
        for p in pods.values():
            p.stop()
