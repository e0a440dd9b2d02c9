"""Persistent mode: a pinned pod dies while many clients use its sessions.

When a pod dies, the next request of every session pinned to it fails its
first attempt (override_host does not look at health) and is retried on
another pod of the version. All those retries happen at the same moment.
Envoy's default retry circuit breaker allows 3 concurrent retries per
cluster and answers the rest 503 (`upstream_rq_retry_overflow`); the
shipped persistent configs set a retry budget for this (see
envoy-config/persistent/README.md, "Failover under concurrency").

The test: 24 client threads, each with its own sessions pinned to one pod,
send one round of requests; the pod is stopped (`Backend.stop()`), and as
soon as Envoy has seen its connections close, all 24 clients send their
sessions' requests at once, four rounds each. Expected: every GET is a 200
from another pod of the version; the first request of each session was
retried once (2 attempts) and re-pinned (a new Set-Cookie); the later ones
go straight to the new pod (1 attempt, no Set-Cookie); the retry overflow
counter does not move. The control runs the same burst with the retry
budget removed from the config and must see overflows and 503s, which
shows that the budget is what makes the difference.

Requests that are in flight *at* the dying pod at the instant it dies are
another matter (their request was sent; only `retry_on: reset` retries
them): the README gives those figures.

Envoy is started from the test's thread; threads are used for clients
only (see testkit/envoy.py on PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import threading

import testkit
from testkit.persistent import V1, V2, User, attempts, config, endpoint_seen, plugin, start_pods_with_eds

N_CLIENTS = 24
SESSIONS_PER_CLIENT = 6
ROUNDS_AFTER = 4
HANG_GUARD = testkit.hang_guard(120.0)  # seconds; only against a hang, never reached normally
RETRY_COUNTERS = "cluster.canary-v1.upstream_rq_retry"


class Result:
    def __init__(self):
        self.lock = threading.Lock()
        self.sent = 0
        self.failed: list = []
        self.in_flight = 0
        self.peak = 0

    def begin(self):
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)

    def end(self, failure=None):
        with self.lock:
            self.in_flight -= 1
            self.sent += 1
            if failure is not None:
                self.failed.append(failure)


def run_failover(workdir, *, budget: bool) -> dict:
    """Pin sessions, kill their pod, burst. Returns the figures; asserts
    per-request facts only when `budget` (the shipped config)."""
    pods, eds = start_pods_with_eds(workdir, [(V1, "fo-a"), (V1, "fo-b"), (V1, "fo-c"), (V2, "fo-v2")])
    cfg = config(eds)
    for c in cfg["static_resources"]["clusters"]:
        assert "retry_budget" in str(c.get("circuit_breakers")), "the shipped config sets a retry budget"
        if not budget:
            del c["circuit_breakers"]
        # A stopped pod refuses connections at once; this only keeps a busy
        # machine's slow accept() on a live pod (a Python server with a
        # listen backlog of 5) from turning into a 503 after the shipped 1 s.
        c["connect_timeout"] = "15s"
    envoy = testkit.start_envoy(cfg, workdir, plugin=plugin())
    victim = pods["fo-a"]
    try:
        # Pin sessions until the victim holds enough of them.
        c = envoy.client()
        mine: list[User] = []
        for _ in range(5000):
            if len(mine) == N_CLIENTS * SESSIONS_PER_CLIENT:
                break
            u = User()
            r = u.get(c)
            assert r.status == 200 and r.name == V1 and u.issued == 1, r
            if r.hostname == victim.hostname:
                mine.append(u)
        c.close()
        assert len(mine) == N_CLIENTS * SESSIONS_PER_CLIENT
        groups = [mine[i::N_CLIENTS] for i in range(N_CLIENTS)]

        barrier = threading.Barrier(N_CLIENTS + 1, timeout=HANG_GUARD)
        before_res, after_res = Result(), Result()
        # Per session: the answers after the kill (status, pod, attempts, new cookie?).
        seen: dict[int, list] = {id(u): [] for u in mine}

        def client(group: list[User]) -> None:
            cl = testkit.Client(envoy.port)
            try:
                for u in group:  # before: every session on its pinned pod
                    before_res.begin()
                    try:
                        r = u.get(cl)
                        ok = (r.status, r.hostname, attempts(r)) == (200, victim.hostname, 1)
                        before_res.end(None if ok else repr(r))
                    except Exception as e:  # noqa: BLE001 - any failure counts
                        before_res.end(repr(e))
                        cl.close()
                barrier.wait()  # the main thread stops the pod
                barrier.wait()  # ... and releases every client at once
                for _ in range(ROUNDS_AFTER):
                    for u in group:
                        old = u.value
                        after_res.begin()
                        try:
                            r = u.get(cl)
                        except Exception as e:  # noqa: BLE001
                            after_res.end(repr(e))
                            cl.close()
                            continue
                        fine = r.status == 200 and r.name == V1 and r.hostname not in (None, victim.hostname)
                        seen[id(u)].append((r.status, r.hostname, attempts(r), u.value != old, endpoint_seen(r)))
                        after_res.end(None if fine else (r.status, r.header("x-envoy-attempt-count"), r.text[:120]))
            finally:
                cl.close()

        threads = [threading.Thread(target=client, args=(g,), daemon=True) for g in groups]
        for t in threads:
            t.start()
        barrier.wait()
        retries_before = envoy.counters(RETRY_COUNTERS)
        victim.stop()
        assert not victim.alive()
        # Envoy has seen the pod's pooled connections close (so no request
        # can be written into a socket the pod closed a moment ago).
        testkit.wait_until(lambda: envoy.host_stat(V1, victim.address, "cx_active") == 0,
                           "the victim's connections to close")
        barrier.wait()
        for t in threads:
            t.join(HANG_GUARD)
        assert not any(t.is_alive() for t in threads), "a client hung"
        retries_after = envoy.counters(RETRY_COUNTERS)
        delta = {k.removeprefix("cluster.canary-v1."): retries_after.get(k, 0) - retries_before.get(k, 0)
                 for k in set(retries_after) | set(retries_before)}
        assert before_res.failed == [], before_res.failed[:5]
        return {"sessions": len(mine), "after": after_res, "seen": seen, "delta": delta, "pods": pods, "envoy": envoy}
    finally:
        envoy.stop()
        for p in pods.values():
            p.stop()


def test_killed_pod_under_concurrency_loses_no_request(workdir):
    out = run_failover(workdir / "failover-budget", budget=True)
    after, seen, delta, pods = out["after"], out["seen"], out["delta"], out["pods"]
    n = out["sessions"]
    assert after.sent == n * ROUNDS_AFTER
    assert after.failed == [], f"{len(after.failed)} of {after.sent} failed: {after.failed[:5]}"
    assert delta.get("upstream_rq_retry_overflow", 0) == 0, delta
    # Exactly one retry per session: its first request after the kill.
    assert delta.get("upstream_rq_retry", 0) == n, delta
    assert delta.get("upstream_rq_retry_success", 0) == n, delta
    landed = {}
    for answers in seen.values():
        first, *later = answers
        status, pod, n_att, new_cookie, _ = first
        assert (status, n_att, new_cookie) == (200, 2, True), first  # retried once, re-pinned
        for a in later:
            # Straight to the new pod, asked for by address; no new cookie.
            assert a == (200, pod, 1, False, [pods[pod].address]), (first, a)
        landed[pod] = landed.get(pod, 0) + 1
    assert set(landed) <= {"fo-b", "fo-c"}
    print(
        f"MEASURED: failover under concurrency: {N_CLIENTS} clients, {n} sessions of the stopped pod, "
        f"{after.sent} GETs after the stop (peak {after.peak} in flight), {len(after.failed)} failed; "
        f"retries {delta.get('upstream_rq_retry', 0)}, overflow {delta.get('upstream_rq_retry_overflow', 0)}; "
        f"re-pinned to {landed}"
    )


def test_without_the_retry_budget_the_same_burst_overflows(workdir):
    """Control: the shipped config minus its circuit_breakers (Envoy's
    default, 3 concurrent retries) fails requests in the same burst."""
    out = run_failover(workdir / "failover-default", budget=False)
    after, delta = out["after"], out["delta"]
    overflow = delta.get("upstream_rq_retry_overflow", 0)
    assert overflow > 0, delta
    assert len(after.failed) >= overflow > 0
    assert all(f[0] == 503 for f in after.failed if isinstance(f, tuple)), after.failed[:5]
    print(
        f"MEASURED: failover without the retry budget: {after.sent} GETs, {len(after.failed)} failed (503), "
        f"retry overflow {overflow}, retries {delta.get('upstream_rq_retry', 0)}"
    )
