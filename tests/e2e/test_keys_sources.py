"""Session keys from a user-id header or a query parameter, and the
fallback to a generated cookie when the configured source is missing.

`session.key: {"from": "header", "name": "x-user-id"}` makes the user id
the session key: its bucket picks the version and its hash picks the pod,
so the same user gets the same version and the same pod from any browser,
any device, any Envoy replica, with or without cookies. The same value
through a query parameter (`{"from": "query", "name": "uid"}`) gives the
same key. Without the header, the filter falls back to a generated cookie
and counts `sticky_canary_key_fallback_total{route}`.

Setup and tolerances as in test_rollouts.py (real Envoy replicas, real
whoami pods, the documented bucket recomputed from the user id).
"""

from __future__ import annotations

import collections

import pytest

import testkit
from testkit.cookie_format import bucket, derive_key, pod_hash, version_for_bucket
from testkit.rollouts import COOKIE, V1, V2, User, assert_binomial
from testkit.rollouts import envoy_config, pod_endpoints, report, visit, visit_all

WEIGHT = 50
LAYOUT = [(V1, 100 - WEIGHT), (V2, WEIGHT)]
PLUGIN = {
    "versions": [{"name": V1}, {"name": V2, "weight": WEIGHT}],
    "session": {"key": {"from": "header", "name": "x-user-id"}},
    "routes": [{"name": "query", "match": {"path_prefix": "/q/"}, "session": {"key": {"from": "query", "name": "uid"}}}],
}
IDS = [f"user-{i:04d}@example.com" for i in range(300)]


@pytest.fixture(scope="module")
def replicas(workdir, backends):
    cfg = envoy_config((V1, V2))
    envoys = testkit.start_envoys({"uid-a": (cfg, PLUGIN), "uid-b": (cfg, PLUGIN)}, workdir / "keys", pod_endpoints(backends))
    yield [envoys["uid-a"], envoys["uid-b"]]
    for e in envoys.values():
        e.stop()


def by_id(u: User) -> dict:
    return {"headers": {"x-user-id": u.uid}}


def test_same_user_id_same_version_and_pod_everywhere(replicas):
    """300 user ids, each from three places: a browser that keeps cookies
    (replica a), a client that never sends cookies (replica b), and the id
    in a query parameter instead of the header (replica a, no cookies).
    All three get the same version, the same pod and the same sticky hash,
    which is the hash of the user id; the version is the id's bucket."""
    jar = [User(i) for i in IDS]
    first = visit_all(replicas[:1], jar, each=by_id)
    again = visit_all(replicas[:1], jar, each=by_id)
    bare = visit_all(replicas[1:], [User(i) for i in IDS], each=by_id, use_jar=False)
    query = visit_all(replicas[:1], [User(i) for i in IDS], use_jar=False,
                      each=lambda u: {"path": "/q/x?uid=" + u.uid.replace("@", "%40")})
    for uid, a, b, c, d in zip(IDS, first, again, bare, query):
        key = derive_key(uid)
        assert a.hash == pod_hash(key)
        assert a.version == version_for_bucket(LAYOUT, bucket(key))
        for other in (b, c, d):
            assert (other.version, other.pod, other.hash) == (a.version, a.pod, a.hash), uid
        assert a.issued and not b.issued  # the cookie (keyed on the id) is issued once
    canary = sum(s.version == V2 for s in first)
    assert_binomial(canary, len(IDS), WEIGHT / 100, "canary share by user id")
    pods = collections.Counter(s.pod for s in first)
    assert len(pods) == 4, pods  # both pods of both versions serve someone
    report(f"user-id key: {len(IDS)} ids x (cookie jar, no cookie on another replica, query parameter): "
           f"100% same version and pod; {canary} ({100 * canary / len(IDS):.1f}%) on the canary at weight {WEIGHT}")


def test_cookie_of_another_identity_is_ignored(replicas):
    """A browser that switches user (alice's cookie, bob's header) is routed
    as bob and gets a cookie for bob: the identity wins over a stale cookie."""
    ids = IDS[:100]
    with replicas[0].client() as c:
        for a, b in zip(ids, ids[1:] + ids[:1]):
            alice = User(a)
            visit(c, alice, headers={"x-user-id": a})
            bob_alone = visit(c, User(b), headers={"x-user-id": b}, use_jar=False)
            switched = visit(c, alice, headers={"x-user-id": b})
            assert (switched.version, switched.pod, switched.hash) == (bob_alone.version, bob_alone.pod, bob_alone.hash)
            assert switched.issued
            assert alice.session().key == derive_key(b)


def test_missing_header_falls_back_to_a_generated_cookie(replicas):
    """200 requests without x-user-id: each is served (200), gets a generated
    session cookie and counts key_fallback. Coming back with that cookie (still
    no header), each keeps its version and pod; key_fallback counts those
    requests too (the configured source is still missing). Once the user
    sends its id, the decision and the cookie follow the id."""
    e = replicas[0]
    before = e.metric("sticky_canary_key_fallback_total", route="global")
    users = [User(f"anon{i}") for i in range(200)]
    first = visit_all([e], users)
    assert all(s.issued for s in first)
    keys = [u.session().key for u in users]
    assert len(set(keys)) == len(users), "every fallback session gets its own random key"
    for k, s in zip(keys, first):
        assert s.version == version_for_bucket(LAYOUT, bucket(k))
        assert s.hash == pod_hash(k)
    again = visit_all([e], users)
    for a, b in zip(first, again):
        assert (b.version, b.pod, b.issued) == (a.version, a.pod, False)
    after = e.metric("sticky_canary_key_fallback_total", route="global")
    assert after - before == 2 * len(users)
    canary = sum(s.version == V2 for s in first)
    assert_binomial(canary, len(users), WEIGHT / 100, "canary share of fallback sessions")
    logged_in = visit_all([e], users, each=lambda u: {"headers": {"x-user-id": "id-" + u.uid}})
    for u, s in zip(users, logged_in):
        key = derive_key("id-" + u.uid)
        assert s.version == version_for_bucket(LAYOUT, bucket(key)) and s.hash == pod_hash(key)
        assert u.session().key == key
    report(f"user-id key, header missing: {len(users)} of {len(users)} requests served with a generated cookie, "
           f"key_fallback +{after - before} over {2 * len(users)} requests, 100% kept their pod with the cookie")


def test_empty_or_duplicated_header_is_missing(replicas):
    """An empty x-user-id, or two of them, count as missing (fallback)."""
    e = replicas[1]
    before = e.metric("sticky_canary_key_fallback_total", route="global")
    with e.client() as c:
        for headers in ({"x-user-id": ""}, [("x-user-id", "alice"), ("x-user-id", "bob")]):
            r = c.get("/", headers=headers)
            assert r.status == 200
            assert len(r.cookies_named(COOKIE)) == 1  # a generated session
            assert r.whoami.header_values("X-Sticky-Hash") != [pod_hash(derive_key("alice"))]
    assert e.metric("sticky_canary_key_fallback_total", route="global") - before == 2
