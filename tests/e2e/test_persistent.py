"""Persistent mode in a real Envoy: exact pod pinning through
`override_host`, scaling with endpoints that change while Envoy runs (EDS
from a watched directory), failover when the pinned pod dies or fails, and
`change_on_failure`. Balanced mode's move ratio is measured on the same
cluster for comparison.

Envoy runs envoy-config/persistent/envoy-local-persistent.yaml (EDS files in
a temporary directory, health checks every 0.5 s, the attempt count echoed
in `x-envoy-attempt-count`). Each test starts its own pods and writes them
into the EDS files, so tests do not depend on each other.

Every test prints a `MEASURED:` line (run with `-s` to see them); the
README's figures come from these lines.
"""

from __future__ import annotations

import collections
import threading
import time

import pytest

import testkit
from testkit import start_pods
from testkit.persistent import COOKIE, V1, V2, User, attempts, config, endpoint_seen, plugin, set_endpoints
from testkit.persistent import start_pods_with_eds


class Stack:
    def __init__(self, workdir):
        self.workdir = workdir
        self.base, self.eds = start_pods_with_eds(
            workdir, [(V1, "base-v1-0"), (V1, "base-v1-1"), (V2, "base-v2-0"), (V2, "base-v2-1")])
        self.envoy = testkit.start_envoy(config(self.eds), workdir, plugin=plugin())

    def pods(self, name: str, spec) -> dict[str, testkit.Backend]:
        return start_pods(self.workdir / name, spec)

    def use(self, cluster: str, pods) -> float:
        return set_endpoints(self.eds, self.envoy, cluster, pods)

    def client(self) -> testkit.Client:
        return self.envoy.client()

    def stop(self):
        self.envoy.stop()
        for p in self.base.values():
            p.stop()


@pytest.fixture(scope="module")
def stack(workdir):
    s = Stack(workdir / "persistent")
    yield s
    s.stop()


def test_pins_the_exact_pod(stack):
    pods = stack.pods("pin", [(V1, "pin-a"), (V1, "pin-b"), (V1, "pin-c"), (V2, "pin-d"), (V2, "pin-e")])
    stack.use(V1, [pods["pin-a"], pods["pin-b"], pods["pin-c"]])
    stack.use(V2, [pods["pin-d"], pods["pin-e"]])
    c = stack.client()
    by_pod = collections.Counter()
    for i in range(30):
        u = User()
        first = u.get(c)
        assert first.status == 200 and first.name == V1, first
        assert u.issued == 1 and u.value.startswith("2"), first.set_cookies  # sealed format
        assert endpoint_seen(first) == []  # nothing pinned before the first answer
        pod = pods[first.hostname]
        by_pod[first.hostname] += 1
        for _ in range(10):
            r = u.get(c)
            assert (r.status, r.name, r.hostname) == (200, V1, pod.hostname), r
            # The filter asked Envoy for exactly that pod, and got it first time.
            assert endpoint_seen(r) == [pod.address]
            assert attempts(r) == 1
        assert u.issued == 1, "no Set-Cookie once the pin is in the cookie"
    # New sessions spread over the pods (the fallback hash picks the first).
    assert len(by_pod) == 3, by_pod
    print(f"MEASURED: pin: 30 sessions x 11 requests, all on their first pod; first pods {dict(by_pod)}")


class Traffic(threading.Thread):
    """Idempotent GETs from every user in turn, until stopped; records any
    answer that is not a 200 from canary-v1."""

    def __init__(self, port: int, users: list[User]):
        super().__init__(daemon=True)
        self.port, self.users = port, users
        self.halt = threading.Event()
        self.sent = 0
        self.failures: list = []

    def run(self):
        c = testkit.Client(self.port)
        i = 0
        while not self.halt.is_set() and i < 1_000_000:
            u = self.users[i % len(self.users)]
            i += 1
            try:
                r = c.get("/", cookies={COOKIE: u.value})
            except Exception as e:  # noqa: BLE001 - any failure counts
                self.failures.append(repr(e))
                c.close()
                continue
            self.sent += 1
            if r.status != 200 or r.name != V1:
                self.failures.append((r.status, r.name, r.text[:200]))
        c.close()

    def advance(self, n: int = 200) -> None:
        """Wait until `n` more GETs were answered, so traffic provably ran
        across the change just made, however slow the machine (the bound is
        a hang guard)."""
        goal = self.sent + n
        deadline = time.monotonic() + testkit.hang_guard(120)
        while self.sent < goal and self.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.sent >= goal, f"traffic stalled at {self.sent} GETs (waited for {goal}): {self.failures[:5]}"

    def finish(self):
        self.halt.set()
        self.join(testkit.hang_guard(60))


def test_scaling_moves_only_the_sessions_of_a_removed_pod(stack):
    """Pin 600 sessions on 3 pods; add 2 pods: none moves; remove a pod:
    only its sessions move; GETs run all along and none fails."""
    names = [f"sc-{i}" for i in range(5)]
    pods = stack.pods("scale", [(V1, n) for n in names])
    p = [pods[n] for n in names]
    stack.use(V1, p[:3])
    c = stack.client()
    n_users = 600
    users = [User() for _ in range(n_users)]
    pinned = {}
    for u in users:
        r = u.get(c)
        assert r.status == 200 and r.name == V1, r
        pinned[id(u)] = r.hostname
    assert set(pinned.values()) == set(names[:3])

    traffic = Traffic(stack.envoy.port, users)
    traffic.start()
    try:
        # Scale up: two pods join while traffic flows.
        traffic.advance()
        up_secs = stack.use(V1, p)
        traffic.advance()
        moved = issued = 0
        for u in users:
            before = u.issued
            r = u.get(c)
            assert r.status == 200, r
            moved += r.hostname != pinned[id(u)]
            issued += u.issued != before
        assert (moved, issued) == (0, 0), f"scale-up moved {moved} sessions, re-issued {issued} cookies"

        # New sessions do reach the new pods.
        fresh = collections.Counter(User().get(c).hostname for _ in range(200))
        new_share = (fresh[names[3]] + fresh[names[4]]) / 200

        # Scale down: sc-1 leaves the endpoint list (then its process stops).
        gone = names[1]
        down_secs = stack.use(V1, [x for x in p if x.hostname != gone])
        traffic.advance()
        on_gone = sum(1 for u in users if pinned[id(u)] == gone)
        moved_gone = moved_other = repinned = 0
        landed = collections.Counter()
        for u in users:
            before = u.issued
            r = u.get(c)
            assert r.status == 200 and r.name == V1, r
            if pinned[id(u)] == gone:
                assert r.hostname != gone
                moved_gone += 1
                repinned += u.issued != before
                landed[r.hostname] += 1
            else:
                moved_other += r.hostname != pinned[id(u)]
                assert u.issued == before
            pinned[id(u)] = r.hostname
        pods[gone].stop()
        time.sleep(0.5)
        # After the pod is gone for good, everyone stays where they are now.
        for u in users:
            r = u.get(c)
            assert (r.status, r.hostname) == (200, pinned[id(u)]), r
        traffic.advance()
    finally:
        traffic.finish()
        for x in p:
            x.stop()
    assert moved_other == 0, f"{moved_other} sessions of other pods moved"
    assert moved_gone == on_gone == repinned
    assert traffic.failures == [], traffic.failures[:5]
    assert new_share > 0.2, fresh
    print(
        f"MEASURED: persistent {n_users} sessions on 3 pods: +2 pods (EDS applied in {up_secs:.2f} s) "
        f"-> 0 moved, 0 cookies re-issued; new sessions on the new pods {new_share:.0%}; "
        f"-1 pod (applied in {down_secs:.2f} s) -> {moved_gone}/{on_gone} of its sessions moved "
        f"(to {dict(landed)}), {moved_other} others moved, all re-pinned; "
        f"{traffic.sent} GETs during the changes, {len(traffic.failures)} failed"
    )


def _where(c, users, path):
    out = []
    for u in users:
        r = u.get(c, path)
        assert r.status == 200 and r.name == V1, r
        out.append(r.hostname)
    return out


def test_balanced_mode_moves_about_one_in_n_plus_one(stack):
    """Balanced mode on the same cluster (override_host falls back to Maglev
    on x-sticky-hash): 2->3 and 3->4 pods move ~1/3 and ~1/4 of the
    sessions, all of them to the new pod; 4->3 moves the removed pod's
    sessions and (almost) no other."""
    names = [f"bal-{i}" for i in range(4)]
    pods = stack.pods("balanced", [(V1, n) for n in names])
    p = [pods[n] for n in names]
    stack.use(V1, p[:2])
    c = stack.client()
    users = [User(cookie_name="sticky-bal") for _ in range(1000)]
    try:
        before = _where(c, users, "/balanced/")
        assert all(u.value.startswith("2") for u in users)  # sealed balanced cookies
        lines = []
        for n in (2, 3):
            stack.use(V1, p[: n + 1])
            after = _where(c, users, "/balanced/")
            moved = [a for b, a in zip(before, after) if a != b]
            share = len(moved) / len(users)
            to_new = sum(1 for a in moved if a == names[n]) / max(1, len(moved))
            ideal = 1 / (n + 1)
            lines.append(f"{n}->{n + 1} pods: {share:.3f} moved (ideal {ideal:.3f}), {to_new:.0%} of them to the new pod")
            # Tolerance: 1000 sessions give a standard deviation of ~0.015.
            assert abs(share - ideal) <= 0.05, lines[-1]
            assert to_new >= 0.95, lines[-1]
            before = after
        # Scale down 4 -> 3: only the removed pod's sessions move.
        stack.use(V1, p[1:])
        after = _where(c, users, "/balanced/")
        others_moved = sum(1 for b, a in zip(before, after) if b != names[0] and a != b)
        on_removed = sum(1 for b in before if b == names[0])
        others = len(users) - on_removed
        lines.append(f"4->3 pods: {on_removed} sessions of the removed pod moved, {others_moved} of {others} others")
        # Maglev's disruption is near-minimal, not minimal: a removal may
        # shift a few table entries between the remaining pods.
        assert others_moved <= 0.01 * others, lines[-1]
    finally:
        for x in p:
            x.stop()
    print("MEASURED: balanced (Maglev), 1000 sessions: " + "; ".join(lines))


def _pin_users(c, n, version_cookie=None, path="/", cookie_name=COOKIE):
    users = []
    for _ in range(n):
        u = User(cookie_name=cookie_name, extra=dict(version_cookie or {}))
        r = u.get(c, path)
        assert r.status == 200, r
        u.extra = {}  # the version is remembered in the session cookie from now on
        u.pod = r.hostname
        u.version = r.name
        users.append(u)
    return users


def _wait_flag(envoy, address, flag):
    testkit.wait_until(lambda: flag in envoy.cluster_hosts(V1).get(address, ""),
                       lambda: f"{address} to get {flag}: {envoy.cluster_hosts(V1)}")


def test_killed_pinned_pod_is_replaced_and_the_cookie_repinned(stack):
    """SIGKILL the pinned pod mid-session (3 pods in canary-v1, 2 in
    canary-v2): the next request is retried on another pod of the same
    version, the cookie is re-pinned there, and later requests go straight
    to the new pod."""
    spec = [(V1, "k1-a"), (V1, "k1-b"), (V1, "k1-c"), (V2, "k2-a"), (V2, "k2-b")]
    pods = stack.pods("kill", spec)
    stack.use(V1, [pods["k1-a"], pods["k1-b"], pods["k1-c"]])
    stack.use(V2, [pods["k2-a"], pods["k2-b"]])
    c = stack.client()
    users = _pin_users(c, 90) + _pin_users(c, 90, {"canary": "v2"})
    for u in users:  # mid-session: a few requests on the pinned pod first
        r = u.get(c)
        assert (r.hostname, attempts(r), u.issued) == (u.pod, 1, 1), r
    victims = {"k1-a", "k2-a"}
    for v in victims:
        pods[v].kill()
    affected = [u for u in users if u.pod in victims]
    assert len(affected) > 40
    t0 = time.monotonic()
    for u in affected:
        r = u.get(c)
        assert r.status == 200 and r.name == u.version, r
        assert r.hostname not in victims and pods[r.hostname].name == u.version, r
        assert attempts(r) == 2, "first attempt on the dead pinned pod, then a retry"
        assert u.issued == 2, "re-pinned to the pod that answered"
        u.new_pod = r.hostname
    failover_ms = (time.monotonic() - t0) / len(affected) * 1000
    for u in users:
        r = u.get(c)
        want = getattr(u, "new_pod", u.pod)
        assert (r.status, r.hostname, attempts(r)) == (200, want, 1), r
        assert endpoint_seen(r) == [pods[want].address]
    for p in pods.values():
        p.stop()
    print(
        f"MEASURED: kill: {len(affected)} sessions pinned to 2 SIGKILLed pods (one in a 3-pod, one in a "
        f"2-pod version): all served by another pod of their version on the next request "
        f"(2 attempts, {failover_ms:.1f} ms per request), all re-pinned, then 1 attempt"
    )


def test_change_on_failure_false_keeps_the_pin(stack):
    """/keep/ has change_on_failure false: while the pinned pod is dead each
    request is served by another pod of the version but the cookie is not
    changed; when the pod comes back (same address) the session is back on
    it; when the pod leaves the endpoint list the session is re-pinned."""
    pods = stack.pods("keep", [(V1, "kp-a"), (V1, "kp-b"), (V1, "kp-c")])
    stack.use(V1, pods.values())
    c = stack.client()
    users = _pin_users(c, 60, path="/keep/", cookie_name="sticky-keep")
    victim = pods["kp-a"]
    mine = [u for u in users if u.pod == "kp-a"]
    assert len(mine) > 5
    victim.kill()
    # Once the health check has failed the dead pod, the retry's fallback
    # (Maglev over the healthy pods) is one fixed pod per session.
    _wait_flag(stack.envoy, victim.address, "failed_active_hc")
    fallback = {}
    for rnd in range(2):
        for u in mine:
            r = u.get(c, "/keep/")
            assert r.status == 200 and r.name == V1 and r.hostname != "kp-a", r
            assert attempts(r) == 2 and u.issued == 1, "pin kept: the old pod is tried first every time"
            # The fallback is the same pod each time (hash of the session).
            assert fallback.setdefault(id(u), r.hostname) == r.hostname
    # The pod comes back at the same address: its sessions return to it.
    back = testkit.start_backend(stack.workdir / "keep", V1, "kp-a", port=victim.port)
    try:
        for u in mine:
            r = u.get(c, "/keep/")
            assert (r.status, r.hostname, attempts(r), u.issued) == (200, "kp-a", 1, 1), r
        # The pod leaves the endpoint list: now the session is re-pinned.
        stack.use(V1, [pods["kp-b"], pods["kp-c"]])
        for u in mine:
            r = u.get(c, "/keep/")
            assert r.status == 200 and r.hostname in ("kp-b", "kp-c") and attempts(r) == 1, r
            assert u.issued == 2, "a pod that left the cluster is replaced even with change_on_failure false"
            u.pod = r.hostname
        for u in mine:
            r = u.get(c, "/keep/")
            assert (r.hostname, u.issued) == (u.pod, 2)
    finally:
        back.stop()
        for p in pods.values():
            p.stop()
    print(f"MEASURED: change_on_failure false: {len(mine)} sessions kept their pin through a pod crash "
          f"(2 attempts per request while down), returned to the pod when it came back, re-pinned when it left EDS")


def test_pinned_pod_answering_503_is_retried_and_repinned(stack):
    """A pinned pod that still accepts connections but answers 503 (and
    fails its health check): the request is retried on another pod and the
    session re-pinned. (override_host itself ignores health.)"""
    pods = stack.pods("sick", [(V1, "sk-a"), (V1, "sk-b"), (V1, "sk-c")])
    stack.use(V1, pods.values())
    c = stack.client()
    users = _pin_users(c, 60)
    mine = [u for u in users if u.pod == "sk-a"]
    assert len(mine) > 5
    pods["sk-a"].set_health(503)
    try:
        for u in mine:
            r = u.get(c)
            assert r.status == 200 and r.hostname != "sk-a" and attempts(r) == 2, r
            assert u.issued == 2
        # New sessions are not pinned to it either (health-checked fallback).
        _wait_flag(stack.envoy, pods["sk-a"].address, "failed_active_hc")
        fresh = collections.Counter(User().get(c).hostname for _ in range(60))
        assert fresh["sk-a"] == 0, fresh
    finally:
        for p in pods.values():
            p.stop()
    print(f"MEASURED: 503 pod: {len(mine)} pinned sessions retried on another pod and re-pinned; "
          f"new sessions after its health check failed: {dict(fresh)}")
