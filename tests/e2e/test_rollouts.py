"""Rollouts in the real Envoy: what moves when the canary weight changes,
A/B/n shares and bucket layout, rollback and drain, explicit targeting over
memory, fairness between returning and new users, and a timed ramp.

Setup. Every scenario runs the real Envoy (the listener and filter of
envoy-config/envoy-local.yaml; one RING_HASH cluster per version, routed on
the x-canary-version header the filter writes) in front of real whoami
backends, two pods per version, and simulates users that each keep their own
cookie jar. The decision is stateless, so a "weight change" is the user's
next request reaching an Envoy started with the new plugin config, which is
what a rolling restart or an Istio WasmPlugin update does. Every weight runs
on two replicas and each step sends a user to a different replica than the
step before, so the guarantees are shown across replicas too.

Tolerances. A count over n independent users is Binomial(n, p); every count
is checked within 5 standard deviations, |k - n p| <= 5 sqrt(n p (1 - p))
(a false alarm has probability < 1e-6 per check). Besides, who moves is
checked exactly: the documented bucket (src/hash.rs: FNV-1a of the seed and
the session key, multiply-shift into 0..weight_total) is recomputed here
from the key in each user's cookie (plain cookie format, src/session.rs) or
from the user id, and the users that move must be exactly those whose bucket
lies between the old and the new weight.

Run with `-s` to see the measured figures (lines starting with "measured:").

Note for anyone starting Envoys in parallel: Envoy sets
PR_SET_PDEATHSIG(SIGTERM), which fires when the *thread* that spawned it
exits. testkit.start_envoys starts them from long-lived threads; never start
one from a short-lived thread pool, or it is killed as soon as that pool
shuts down. The users, the per-version config and the tolerances are in
testkit/rollouts.py.
"""

from __future__ import annotations

import collections
import time

import pytest

import testkit
from testkit.cookie_format import bucket, derive_key, pod_hash, version_for_bucket, version_id
from testkit.rollouts import V1, V2, V3, Seen, User, assert_binomial
from testkit.rollouts import binomial, envoy_config, pct, pod_endpoints, report, visit, visit_all

N = 2000  # users per population (cookie users)
N_UID = 1000  # users keyed by a user-id header


def test_reference_hash_matches_the_filter(fleet):
    """The reference (testkit/cookie_format.py) reproduces the filter: for new users at weight 30
    the sticky hash the backend sees is pod_hash(key in the cookie), the
    version id in the cookie is fnv32 of the version name, and the version
    is the one the bucket layout gives; for a user id, the hash is that of
    the derived key."""
    with fleet["w30a"].client() as c:
        for i in range(50):
            u = User(f"ref{i}")
            seen = visit(c, u)
            s = u.session()
            assert seen.hash == pod_hash(s.key)
            assert s.version_id == version_id(seen.version) and not s.by_rule
            assert seen.version == version_for_bucket([(V1, 70), (V2, 30)], bucket(s.key))
            seen = visit(c, User("x"), path="/uid/x", headers={"x-user-id": f"user-{i}"}, use_jar=False)
            assert seen.hash == pod_hash(derive_key(f"user-{i}"))


# ---------------------------------------------------------------------------
# The fleet: every Envoy this module needs, started at once


RULES = [
    {"header": "x-canary", "version": V2},  # always -> canary-v2, never -> canary-v1
    {"cookie": "canary", "value": "v1", "version": V1},
    {"cookie": "canary", "value": "v2", "version": V2},
]
# The same policy keyed on a user id header, on /uid/ paths.
UID_ROUTE = {"name": "uid", "match": {"path_prefix": "/uid/"}, "session": {"key": {"from": "header", "name": "x-user-id"}}}
STEPS = [10, 30, 60, 30, 10]
ABN = {"abn-60-30-10": (30, 10), "abn-50-30-20": (30, 20), "abn-50-40-10": (40, 10)}


def two_versions(weight: int, **extra) -> dict:
    return {"versions": [{"name": V1}, {"name": V2, "weight": weight}], "rules": RULES, "routes": [UID_ROUTE], **extra}


def three_versions(w2: int, w3: int) -> dict:
    return {"versions": [{"name": V1}, {"name": V2, "weight": w2}, {"name": V3, "weight": w3}], "routes": [UID_ROUTE]}


@pytest.fixture(scope="module")
def pods(workdir, backends):
    """Two pods per version: envoy-local's canary-v1/v2 pods plus two canary-v3."""
    extra = testkit.start_backends(workdir / "pods-v3", [(V3, "canary-v3-0", 0), (V3, "canary-v3-1", 0)])
    yield testkit.BackendSet(backends.all + extra.all, {})
    extra.stop()


@pytest.fixture(scope="module")
def fleet(workdir, pods):
    two, three = envoy_config((V1, V2)), envoy_config((V1, V2, V3))
    specs: dict[str, tuple[dict, dict]] = {}
    for w in sorted(set(STEPS)):
        for replica in "ab":
            specs[f"w{w}{replica}"] = (two, two_versions(w))
    for name, (w2, w3) in ABN.items():
        specs[name] = (three, three_versions(w2, w3))
    specs["rollback"] = (two, two_versions(0, rollback=True))
    specs["drain"] = (two, two_versions(0))
    # canary-v2 removed from the config; canary-v3 takes its place.
    specs["removed"] = (three, {"versions": [{"name": V1}, {"name": V3, "weight": 30}]})
    envoys = testkit.start_envoys(specs, workdir / "fleet", pod_endpoints(pods))
    yield envoys
    for e in envoys.values():
        e.stop()


def replicas(fleet, weight: int) -> list[testkit.Envoy]:
    return [fleet[f"w{weight}a"], fleet[f"w{weight}b"]]


# ---------------------------------------------------------------------------
# Weight changes


def check_step(label: str, users: list[User], keys: list[bytes], before: list[Seen], after: list[Seen], w1: int, w2: int,
               last_pod: list[dict[str, str]], cookies: bool) -> None:
    n = len(users)
    moves = collections.Counter((b.version, a.version) for b, a in zip(before, after))
    up, down = moves[(V1, V2)], moves[(V2, V1)]
    if w2 > w1:
        assert down == 0, f"{label}: raising {w1}->{w2} moved {down} users canary->stable"
        assert_binomial(up, n, (w2 - w1) / 100, f"{label}: raising {w1}->{w2}, stable->canary")
    else:
        assert up == 0, f"{label}: lowering {w1}->{w2} moved {up} users stable->canary"
        assert_binomial(down, n, (w1 - w2) / 100, f"{label}: lowering {w1}->{w2}, canary->stable")
    # Exactly the users whose bucket lies between the two weights moved.
    lo, hi = min(w1, w2), max(w1, w2)
    expected = {i for i in range(n) if lo <= bucket(keys[i]) < hi}
    moved = {i for i in range(n) if before[i].version != after[i].version}
    assert moved == expected, f"{label}: {len(moved ^ expected)} users moved against their bucket"
    for i in range(n):
        # A user on a version it had before is on the same pod as before.
        prev = last_pod[i].get(after[i].version)
        assert prev in (None, after[i].pod), f"{label}: user {i} back on {after[i].version} but on another pod"
        last_pod[i][after[i].version] = after[i].pod
        if cookies:
            # The cookie is rewritten exactly when the version changes.
            assert after[i].issued == (i in moved), f"{label}: user {i} moved={i in moved} issued={after[i].issued}"
    word = "raising" if w2 > w1 else "lowering"
    report(f"{label}: {word} {w1}->{w2} moved {len(moved)} of {n} users ({pct(len(moved), n)}), "
           f"stable->canary {up}, canary->stable {down} (expected {abs(w2 - w1)}% = {n * abs(w2 - w1) // 100} "
           f"+- {binomial(n, abs(w2 - w1) / 100)[1]:.0f})")


def test_weight_steps_move_only_the_new_buckets(fleet):
    """2,000 users with a session cookie and 1,000 users keyed by an
    x-user-id header and sending no cookie at all, through canary weights
    10 -> 30 -> 60 -> 30 -> 10, each step served by other replicas than the
    step before.

    Raising w1 -> w2 moves about (w2 - w1)% of users, all stable->canary,
    none back; lowering moves only canary->stable; exactly the users whose
    bucket lies in [min, max) of the two weights move; unmoved users keep
    their pod; a user returning to a version returns to its old pod; the
    cookie is rewritten exactly for the users who moved. Back at 10 the
    canary users are the very same as at the start."""
    cookie_users = [User(f"c{i}") for i in range(N)]
    uid_users = [User(f"user-{i:05d}") for i in range(N_UID)]
    uid_keys = [derive_key(u.uid) for u in uid_users]
    pops = {
        "cookie users": dict(users=cookie_users, kw={}, cookies=True),
        "user-id users (no cookie)": dict(users=uid_users, kw=dict(path="/uid/x", use_jar=False,
                                                                  each=lambda u: {"headers": {"x-user-id": u.uid}}), cookies=False),
    }
    def rule_or_memory() -> dict[str, int]:
        return {f"{e.port}:{k}": v for w in set(STEPS) for e in replicas(fleet, w)
                for k, v in e.metrics("sticky_canary_decisions_total").items() if dict(k)["reason"] in ("rule", "drain")}

    counted_before = rule_or_memory()
    history: dict[str, list[list[Seen]]] = {k: [] for k in pops}
    last_pod = {k: [dict() for _ in pop["users"]] for k, pop in pops.items()}
    for step, w in enumerate(STEPS):
        for label, pop in pops.items():
            seen = visit_all(replicas(fleet, w), pop["users"], shift=step, **pop["kw"])
            users = pop["users"]
            if step == 0:
                n = len(users)
                canary = sum(s.version == V2 for s in seen)
                assert_binomial(canary, n, w / 100, f"{label}: canary share at {w}")
                report(f"{label}: at weight {w}, {canary} of {n} users ({pct(canary, n)}) on the canary")
                if pop["cookies"]:
                    assert all(s.issued for s in seen)
                for i, s in enumerate(seen):
                    last_pod[label][i][s.version] = s.pod
            keys = [u.session().key for u in users] if pop["cookies"] else uid_keys
            for i, s in enumerate(seen):
                assert s.version == version_for_bucket([(V1, 100 - w), (V2, w)], bucket(keys[i])), (label, i)
                assert s.hash == pod_hash(keys[i]), (label, i)
            if step > 0:
                check_step(label, users, keys, history[label][-1], seen, STEPS[step - 1], w, last_pod[label], pop["cookies"])
            history[label].append(seen)
    for label in pops:
        first = {i for i, s in enumerate(history[label][0]) if s.version == V2}
        last = {i for i, s in enumerate(history[label][-1]) if s.version == V2}
        assert first == last, f"{label}: after 10->...->10 the canary users differ"
    # Every decision above was by weight (no rule, nothing remembered).
    assert rule_or_memory() == counted_before


# ---------------------------------------------------------------------------
# A/B/n


def test_three_versions_shares_and_stickiness(fleet):
    """60/30/10 over 2,000 new users (cookie): each share within 5 sigma;
    every user is in the version its bucket says (canary-v2 owns buckets
    0-29, canary-v3 30-39, canary-v1 the rest); then every user comes back
    with its cookie (every 4th user twice): same version, same pod, no new
    Set-Cookie."""
    e = [fleet["abn-60-30-10"]]
    users = [User(f"abn{i}") for i in range(N)]
    first = visit_all(e, users)
    counts = collections.Counter(s.version for s in first)
    layout = [(V1, 60), (V2, 30), (V3, 10)]
    for name, w in layout:
        assert_binomial(counts[name], N, w / 100, f"share of {name}")
    for u, s in zip(users, first):
        assert s.issued
        assert s.version == version_for_bucket(layout, bucket(u.session().key))
    report("60/30/10 over {} new users: {}".format(N, ", ".join(f"{v} {counts[v]} ({pct(counts[v], N)})" for v, _ in layout)))
    again = users
    for rnd in range(2):  # everyone comes back, then every 4th user once more
        seen = visit_all(e, again, shift=rnd + 1)
        for a, b in zip(first[:: 4 ** rnd], seen):
            assert (b.version, b.pod, b.hash, b.issued) == (a.version, a.pod, a.hash, False)
        again = users[::4]
    # Returning users placed by weight count as returning, never reassigned.
    for reason in ("reassigned", "rule", "drain", "rollback"):
        assert e[0].metric("sticky_canary_decisions_total", route="global", reason=reason) == 0, reason
    report(f"60/30/10: {N} users came back once and {len(again)} twice: 100% same version and same pod, no cookie re-issued")


def test_three_versions_ramp_the_last_listed(fleet):
    """Why the last-listed canary is the one to ramp. 1,000 user-id users
    (no cookie) on 60/30/10 (versions listed v1, v2, v3), then:

    - raising the LAST-listed canary-v3 10 -> 20 (v1 60 -> 50): only
      canary-v1 -> canary-v3 moves (buckets 40-49), about 10%, nobody else;
    - raising the MIDDLE canary-v2 30 -> 40 (v1 60 -> 50): canary-v3's range
      shifts from 30-39 to 40-49, so every canary-v3 user moves to canary-v2
      and a fresh 10% moves from canary-v1 to canary-v3."""
    users = [User(f"user-{i:05d}") for i in range(N_UID)]
    n = len(users)
    keys = [derive_key(u.uid) for u in users]
    kw = dict(path="/uid/x", use_jar=False, each=lambda u: {"headers": {"x-user-id": u.uid}})
    seen = {name: visit_all([fleet[name]], users, **kw) for name in ABN}
    for name, (w2, w3) in ABN.items():
        layout = [(V1, 100 - w2 - w3), (V2, w2), (V3, w3)]
        for k, s in zip(keys, seen[name]):
            assert s.version == version_for_bucket(layout, bucket(k))
            assert s.hash == pod_hash(k)

    last = collections.Counter((a.version, b.version) for a, b in zip(seen["abn-60-30-10"], seen["abn-50-30-20"]) if a.version != b.version)
    assert set(last) <= {(V1, V3)}, last
    assert_binomial(last[(V1, V3)], n, 0.10, "raising the last-listed v3 10->20")
    report(f"A/B/n: raising the last-listed canary-v3 10->20 moved {last[(V1, V3)]} of {n} users ({pct(last[(V1, V3)], n)}), all canary-v1->canary-v3")

    mid = collections.Counter((a.version, b.version) for a, b in zip(seen["abn-60-30-10"], seen["abn-50-40-10"]) if a.version != b.version)
    assert set(mid) <= {(V3, V2), (V1, V3)}, mid
    v3_before = sum(s.version == V3 for s in seen["abn-60-30-10"])
    assert mid[(V3, V2)] == v3_before, "every canary-v3 user moves when a version listed before it grows"
    assert_binomial(mid[(V1, V3)], n, 0.10, "raising the middle v2 30->40, v1->v3")
    report(f"A/B/n: raising the middle canary-v2 30->40 moved all {mid[(V3, V2)]} canary-v3 users to canary-v2 "
           f"and {mid[(V1, V3)]} canary-v1 users ({pct(mid[(V1, V3)], n)}) to canary-v3")


# ---------------------------------------------------------------------------
# Rollback, drain, removed version


def test_rollback_drain_and_removed_version(fleet):
    """600 users get their version at canary weight 30: users 0-119 once
    send `x-canary: always` (the rule: canary-v2, remembered as rule-given),
    the others are split by weight. Then the canary goes to weight 0:

    - with `rollback: true`, every user is on canary-v1 at its next request,
      the cookie re-issued exactly for the users who were on canary-v2; on
      the request after, nothing changes and no cookie is issued;
    - without it (drain), every user who was on canary-v2, by rule or by
      weight, stays there (counted as `drain`), nobody else gets there,
      no cookie is re-issued, and 600 new users all get canary-v1;
    - with canary-v2 removed from the config (canary-v1 + canary-v3 at 30),
      nobody is routed to canary-v2; its users are reassigned by weight."""
    n, rule_users = 600, 120
    users = [User(f"rb{i}") for i in range(n)]
    before = visit_all(replicas(fleet, 30), users, each=lambda u: {"headers": {"x-canary": "always"}} if int(u.uid[2:]) < rule_users else {})
    jars = [dict(u.jar) for u in users]
    on_canary = {i for i, s in enumerate(before) if s.version == V2}
    by_rule = {i for i in range(n) if users[i].session().by_rule}
    assert by_rule == set(range(rule_users))
    assert by_rule <= on_canary
    by_weight = on_canary - by_rule
    assert_binomial(len(by_weight), n - rule_users, 0.30, "weight-given canary users at 30")
    report(f"rollback: {len(on_canary)} of {n} users on canary-v2 before ({rule_users} by rule, {len(by_weight)} by weight)")

    def returning() -> list[User]:
        return [User(u.uid, dict(j)) for u, j in zip(users, jars)]

    # Rollback.
    e = fleet["rollback"]
    back = returning()
    after = visit_all([e], back)
    assert all(s.version == V1 for s in after), collections.Counter(s.version for s in after)
    issued = {i for i, s in enumerate(after) if s.issued}
    assert issued == on_canary, "the cookie is re-issued exactly for the users who leave the canary"
    for i in on_canary:
        s = back[i].session()
        assert (s.version_id, s.by_rule) == (version_id(V1), False)
    again = visit_all([e], back, shift=1)
    assert all(s.version == V1 and not s.issued for s in again)
    for a, b in zip(after, again):
        assert a.pod == b.pod
    assert e.metric("sticky_canary_decisions_total", version=V2) == 0
    assert e.metric("sticky_canary_decisions_total", version=V1, reason="rollback") == len(on_canary)
    report(f"rollback: weight 0 + rollback: {n} of {n} users on canary-v1 at their next request, "
           f"{len(issued)} cookies re-issued (= the {len(on_canary)} canary users), 0 on the request after")

    # Drain.
    e = fleet["drain"]
    drained = visit_all([e], returning())
    stay = {i for i, s in enumerate(drained) if s.version == V2}
    assert stay == on_canary, f"{len(stay ^ on_canary)} users changed version under drain"
    assert not any(s.issued for s in drained), "drain rewrites no cookie"
    new = visit_all([e], [User(f"new{i}") for i in range(n)])
    assert all(s.version == V1 for s in new)
    # Every canary user drains, rule-placed or weight-placed.
    assert e.metric("sticky_canary_decisions_total", version=V2, reason="drain") == len(on_canary)
    assert e.metric("sticky_canary_decisions_total", version=V2, reason="new") == 0
    assert e.metric("sticky_canary_decisions_total", version=V2, reason="rule") == 0
    report(f"drain: weight 0 without rollback: {len(stay)} of {len(on_canary)} canary users stay on canary-v2 "
           f"(rule and weight alike), 0 of {n} new users get it")

    # Removed version.
    e = fleet["removed"]
    moved = returning()
    seen = visit_all([e], moved)
    layout = [(V1, 70), (V3, 30)]
    assert not any(s.version == V2 for s in seen)
    for u, s in zip(moved, seen):
        assert s.version == version_for_bucket(layout, bucket(u.session().key))
    from_v2 = collections.Counter(seen[i].version for i in on_canary)
    assert all(seen[i].issued for i in on_canary)
    report(f"removed: canary-v2 dropped from the config: its {len(on_canary)} users reassigned by weight "
           f"({from_v2[V3]} to canary-v3, {from_v2[V1]} to canary-v1), none routed to canary-v2")


def test_explicit_targeting_beats_memory(fleet):
    """At weight 30, users remembering canary-v1 (given by weight) send
    `x-canary: always`: they get canary-v2 and their cookie is rewritten to
    remember canary-v2 as rule-given; without the header they stay on
    canary-v2. Then `canary=v1` (a cookie rule) takes them back to canary-v1,
    cookie rewritten again. Users remembering canary-v2 (by weight) who send
    `x-canary: never` get canary-v1 and keep it. (ingress-nginx lets the
    affinity cookie win over the header, users complain: ingress-nginx #8246.)"""
    e = replicas(fleet, 30)
    users = [User(f"t{i}") for i in range(400)]
    first = visit_all(e, users)
    on_v1 = [u for u, s in zip(users, first) if s.version == V1]
    on_v2 = [u for u, s in zip(users, first) if s.version == V2]
    assert on_v1 and on_v2

    def expect(group, seen, version, issued, by_rule):
        for u, s in zip(group, seen):
            assert (s.version, s.issued) == (version, issued), (u.uid, s)
            c = u.session()
            assert (c.version_id, c.by_rule) == (version_id(version), by_rule), u.uid

    expect(on_v1, visit_all(e, on_v1, headers={"x-canary": "always"}), V2, True, True)
    expect(on_v1, visit_all(e, on_v1, shift=1), V2, False, True)
    expect(on_v1, visit_all(e, on_v1, cookies={"canary": "v1"}), V1, True, True)
    expect(on_v1, visit_all(e, on_v1, shift=1), V1, False, True)
    expect(on_v2, visit_all(e, on_v2, headers={"x-canary": "never"}), V1, True, True)
    expect(on_v2, visit_all(e, on_v2, shift=1), V1, False, True)
    report(f"targeting: {len(on_v1)} users remembering canary-v1 sent x-canary: always -> 100% canary-v2, cookie rewritten; "
           f"{len(on_v2)} remembering canary-v2 sent x-canary: never -> 100% canary-v1")


# ---------------------------------------------------------------------------
# Fairness


FAIR_NEW = 400


def test_fairness_returning_and_new_users(fleet):
    """No Flagger-style creep (flagger #1532: only canary hits were sticky,
    so the canary share grew with every visit). At weight 30 on two
    replicas, four rounds: every round all earlier users come back (with
    their cookie) and 400 new users arrive. In every round the share of
    active users on the canary, and the share of new users, stays within
    5 sigma of 30%, and no returning user changes version."""
    e = replicas(fleet, 30)
    users: list[User] = []
    version: list[str] = []
    shares = []
    for rnd in range(4):
        new = [User(f"f{rnd}-{i}") for i in range(FAIR_NEW)]
        seen = visit_all(e, users + new, shift=rnd)
        for i, s in enumerate(seen[: len(users)]):
            assert s.version == version[i] and not s.issued, f"returning user {i} changed version"
        version += [s.version for s in seen[len(users):]]
        users += new
        active = sum(s.version == V2 for s in seen)
        fresh = sum(s.version == V2 for s in seen[-len(new):])
        assert_binomial(active, len(seen), 0.30, f"round {rnd}: canary share of active users")
        assert_binomial(fresh, len(new), 0.30, f"round {rnd}: canary share of new users")
        shares.append(f"{pct(active, len(seen))} of {len(seen)}")
    report(f"fairness: canary share of active users per round (returning + {FAIR_NEW} new, weight 30): {', '.join(shares)}")


# ---------------------------------------------------------------------------
# Timed ramp


DAY = 86400


def ramp_weight(start: int, end: int, steps: int, now: int) -> int:
    """The filter's ramp 0 -> 100 at whole second `now` (src/compile.rs
    Weight::at)."""
    if now <= start:
        return 0
    if now >= end:
        return 100
    return 100 * ((now - start) * steps // (end - start)) // steps


def rfc3339(t: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def ramp_plugin(start: int | str, **ramp) -> dict:
    return {"versions": [{"name": V1}, {"name": V2, "ramp": {"start": start, "from": 0, "to": 100, **ramp}}]}


def test_timed_ramp_levels_in_real_envoy(workdir, pods):
    """One ramp 0 -> 100 over 3 days in 3 steps (0, 33, 66, 100), seen by
    five Envoys whose `start` puts the host clock a day before the start,
    half a day into each step and half a day after the end: the times are
    so far apart that no machine is slow enough to cross a step. A cohort
    of 300 returning users (cookies) visits them in that order: at each
    level exactly the users whose bucket is under the weight are on
    canary-v2, so nobody moves back; 150 new users per level are within 5
    sigma of the weight. One Envoy takes `start` and `end` as RFC 3339."""
    now = int(time.time())
    levels = {  # name: (ramp start relative to now, weight half a day into it)
        "before": (DAY, 0),
        "step0": (-DAY // 2, 0),
        "step1": (-3 * DAY // 2, 33),
        "step2": (-5 * DAY // 2, 66),
        "after": (-7 * DAY // 2, 100),
    }
    specs = {}
    for name, (offset, _) in levels.items():
        start = now + offset
        if name == "step2":
            plugin = ramp_plugin(rfc3339(start), end=rfc3339(start + 3 * DAY), steps=3)
        else:
            plugin = ramp_plugin(start, duration=3 * DAY, steps=3)
        assert ramp_weight(start, start + 3 * DAY, 3, now) == levels[name][1]
        specs[name] = (envoy_config((V1, V2)), plugin)
    envoys = testkit.start_envoys(specs, workdir / "ramp-levels", pod_endpoints(pods))
    try:
        cohort = [User(f"cohort{i}") for i in range(300)]
        history, shares = [], []
        for k, (name, (_, weight)) in enumerate(levels.items()):
            seen = visit_all([envoys[name]], cohort)
            history.append(seen)
            for u, s in zip(cohort, seen):
                assert (s.version == V2) == (bucket(u.session().key) < weight), f"{name}: cohort user {u.uid}"
            new = visit_all([envoys[name]], [User(f"n{k}-{i}") for i in range(150)])
            canary = sum(s.version == V2 for s in new)
            assert_binomial(canary, 150, weight / 100, f"{name}: new users at ramp weight {weight}")
            shares.append(f"{name} (weight {weight}): {pct(canary, 150)}")
    finally:
        for e in envoys.values():
            e.stop()
    for i in range(len(cohort)):
        path = [seen[i].version for seen in history]
        first_canary = path.index(V2) if V2 in path else len(path)
        assert all(v == V2 for v in path[first_canary:]), f"cohort user {i} moved back: {path}"
    assert all(s.version == V2 for s in history[-1])
    report("timed ramp 0->100 over 3 days in 3 steps, one Envoy per level: new users on canary-v2: "
           + ", ".join(shares) + f"; {len(cohort)} returning users across the levels, none moved back")


def test_timed_ramp_moves_in_a_running_envoy(workdir, pods):
    """The weight follows the clock inside one running Envoy: a ramp 0 ->
    100 in 2 steps over 4 s starts a few seconds after launch; a cohort of
    200 returning users is polled back to back until a poll begins after
    the end. Each poll is bracketed by the test's clock before and after
    it (the filter reads the same clock, in whole seconds), and only polls
    wholly within one step are checked: at weight 0 (before the start and
    in the first step) nobody is on canary-v2, in the middle step exactly
    the users whose bucket is under 50, after the end everybody; nobody
    ever moves back. A machine too slow to poll once at weight 0 gets a
    later start (up to three launches)."""
    duration, steps = 4, 2
    cohort = [User(f"live{i}") for i in range(200)]
    for attempt, lead in enumerate((5, 20, 60)):
        lead = int(testkit.hang_guard(lead))
        start = int(time.time()) + lead
        end = start + duration
        [envoy] = testkit.start_envoys({"live": (envoy_config((V1, V2)), ramp_plugin(start, duration=duration, steps=steps))},
                               workdir / f"ramp-live-{attempt}", pod_endpoints(pods)).values()
        polls = []  # (t0, t1, [Seen])
        try:
            for u in cohort:
                u.jar.clear()
            while not polls or int(polls[-1][0]) < end:
                assert len(polls) < 100_000, "the clock does not advance"
                t0 = time.time()
                seen = visit_all([envoy], cohort)
                polls.append((t0, time.time(), seen))
                if len(polls) == 1:
                    keys = [u.session().key for u in cohort]
        finally:
            envoy.stop()
        if ramp_weight(start, end, steps, int(polls[0][1])) == 0:
            break  # the first poll was served wholly at weight 0
    else:
        pytest.fail(f"no poll at weight 0 in 3 launches (lead up to {lead} s): first poll "
                    f"{polls[0][0] - start:+.1f}..{polls[0][1] - start:+.1f} s")

    assert keys == [u.session().key for u in cohort], "a session key changed"
    at = collections.Counter()
    for t0, t1, seen in polls:
        weights = {ramp_weight(start, end, steps, t) for t in range(int(t0), int(t1) + 1)}
        if len(weights) != 1:
            continue  # straddles a step
        [w] = weights
        at[w] += 1
        for key, s in zip(keys, seen):
            assert (s.version == V2) == (bucket(key) < w), f"poll at weight {w}"
    assert at[0] >= 1 and at[100] >= 1, at
    for i in range(len(cohort)):
        path = [seen[i].version for _, _, seen in polls]
        first_canary = path.index(V2) if V2 in path else len(path)
        assert all(v == V2 for v in path[first_canary:]), f"cohort user {i} moved back: {path}"
    report(f"timed ramp 0->100 in 2 steps over 4 s in one running Envoy: {len(cohort)} returning users polled "
           f"{len(polls)} times (wholly within a step: {at[0]} at weight 0, {at[50]} at 50, {at[100]} at 100), "
           f"none moved back")
