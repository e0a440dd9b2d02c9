"""The /weighted/ route entry: canary-v2 at weight 20 of 100, with its own
session cookie (my-weighted-cookie)."""

from __future__ import annotations

import concurrent.futures
import math

import testkit

COOKIE = "my-weighted-cookie"
USERS = 2000
SHARE = 0.20
RETURNING = 200
THREADS = 4


def _new_users(port: int, n: int) -> list[tuple[str | None, list[str], str | None]]:
    out = []
    with testkit.Client(port) as c:
        for i in range(n):
            r = c.get(f"/weighted/x?u={i}")
            assert r.status == 200, r
            out.append((r.name, r.set_cookies, r.hostname))
    return out


def test_weighted_split_and_stickiness(stack):
    """2,000 new users (no cookie) on /weighted/x: the canary-v2 share must be
    within 20% +- 5 binomial standard deviations, sd = sqrt(n p (1-p))
    = sqrt(2000 * 0.2 * 0.8) = 17.9 users, i.e. 400 +- 89 (311..489) users.
    Every user gets exactly one Set-Cookie, for my-weighted-cookie (the route
    entry's cookie), never the global my-sticky-cookie. Then 200 of them
    come back with their cookie: 100% keep their version, and their pod."""
    per_thread = USERS // THREADS
    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        chunks = list(pool.map(lambda _: _new_users(stack.envoy.port, per_thread), range(THREADS)))
    users = [u for chunk in chunks for u in chunk]
    assert len(users) == USERS

    names = [name for name, _, _ in users]
    assert set(names) <= {"canary-v1", "canary-v2"}
    v2 = names.count("canary-v2")
    sd = math.sqrt(USERS * SHARE * (1 - SHARE))
    low, high = USERS * SHARE - 5 * sd, USERS * SHARE + 5 * sd
    assert low <= v2 <= high, f"{v2} of {USERS} users on canary-v2, expected {low:.0f}..{high:.0f}"

    sessions = []
    for name, set_cookies, hostname in users:
        assert len(set_cookies) == 1, set_cookies
        c = testkit.parse_set_cookie(set_cookies[0])
        assert c.name == COOKIE
        # Attributes come from the global cookie settings (merged), only the name differs.
        assert c.attribute_set == {"Path=/", "Max-Age=3600", "Secure", "HttpOnly", "SameSite=None"}
        sessions.append((c.value, name, hostname))
    assert len({v for v, _, _ in sessions}) == USERS, "every new user gets a distinct session"

    # Returning users: every 10th, so both versions are in the sample.
    sample = sessions[:: USERS // RETURNING][:RETURNING]
    assert {name for _, name, _ in sample} == {"canary-v1", "canary-v2"}
    kept = 0
    with testkit.Client(stack.envoy.port) as c:
        for value, name, hostname in sample:
            r = c.get("/weighted/y", cookies={COOKIE: value})
            assert r.status == 200
            assert r.set_cookies == [], "a valid, unchanged cookie must not be re-issued"
            if r.name == name and r.hostname == hostname:
                kept += 1
    assert kept == len(sample)


def test_weighted_cookie_does_not_leak_into_global_route(client):
    """The two session cookies are independent: the weighted cookie means
    nothing on /, where the global policy (canary-v2 weight 0) applies."""
    for _ in range(30):
        r = client.get("/weighted/x")
        [c] = r.cookies_named(COOKIE)
        g = client.get("/", cookies={COOKIE: c.value})
        assert g.name == "canary-v1"
        assert len(g.cookies_named("my-sticky-cookie")) == 1
        assert g.cookies_named(COOKIE) == []
