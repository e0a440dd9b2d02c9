"""Many proxies, one answer: three Envoy processes with the same config
(envoy-config/persistent/envoy-local-persistent.yaml, sealed cookies,
canary-v2 at weight 50) in front of the same pods. A user's requests are
spread round-robin over the three: every replica accepts the cookie another
issued and routes it to the same version and the same pod, in persistent
mode (`/`) and in balanced mode (`/balanced/`). When a pinned pod leaves,
the three replicas move its sessions to the same new pod.
"""

from __future__ import annotations

import collections

import pytest

import testkit
from testkit.persistent import V1, V2, User, config, endpoint_seen, plugin, set_endpoints, start_pods_with_eds, wait_eds

N_USERS = 150
ROUNDS = 6  # requests per user after the first, each on the next replica


class Replicas:
    def __init__(self, workdir):
        spec = [(V1, "r1-a"), (V1, "r1-b"), (V1, "r1-c"), (V2, "r2-a"), (V2, "r2-b")]
        self.pods, self.eds = start_pods_with_eds(workdir, spec)
        cfg = config(self.eds)
        same = plugin(v2_weight=50)
        # One after the other from this thread (Envoy dies with the thread
        # that started it).
        self.envoys = [testkit.start_envoy(cfg, workdir / f"replica-{i}", plugin=same) for i in range(3)]
        wait_eds(self.envoys, self.eds)
        self.clients = [e.client() for e in self.envoys]

    def stop(self):
        for c in self.clients:
            c.close()
        for e in self.envoys:
            e.stop()
        for p in self.pods.values():
            p.stop()


@pytest.fixture(scope="module")
def replicas(workdir):
    r = Replicas(workdir / "replicas")
    yield r
    r.stop()


def _round_robin(replicas, path, cookie_name):
    """Each user starts on replica i % 3, then moves to the next replica on
    every request. Returns the users with their version and pod."""
    versions = collections.Counter()
    users = []
    for i in range(N_USERS):
        u = User(cookie_name=cookie_name)
        first = u.get(replicas.clients[i % 3], path)
        assert first.status == 200 and u.issued == 1, first
        u.version, u.pod = first.name, first.hostname
        for k in range(1, ROUNDS + 1):
            r = u.get(replicas.clients[(i + k) % 3], path)
            assert (r.status, r.name, r.hostname) == (200, u.version, u.pod), (i, k, r)
            assert u.issued == 1, f"replica {(i + k) % 3} re-issued a cookie another replica sealed"
        versions[u.version] += 1
        users.append(u)
    return users, versions


def test_persistent_mode_same_version_and_pod_on_every_replica(replicas):
    users, versions = _round_robin(replicas, "/", "sticky-pod")
    # Weight 50: both versions have users (the same bucket on every replica).
    assert versions[V1] > 40 and versions[V2] > 40, versions
    # The pin in the cookie is what each replica asked Envoy for.
    u = users[0]
    for c in replicas.clients:
        r = u.get(c)
        assert endpoint_seen(r) == [replicas.pods[u.pod].address]
    print(f"MEASURED: replicas persistent: {N_USERS} users x {ROUNDS + 1} requests round-robin over 3 Envoys: "
          f"one version and one pod per user, no cookie re-issued; versions {dict(versions)}")


def test_balanced_mode_same_version_and_pod_on_every_replica(replicas):
    users, versions = _round_robin(replicas, "/balanced/", "sticky-bal")
    assert versions[V1] > 40 and versions[V2] > 40, versions
    assert all(u.value.startswith("2") for u in users)  # sealed
    print(f"MEASURED: replicas balanced: {N_USERS} users x {ROUNDS + 1} requests round-robin over 3 Envoys: "
          f"one version and one pod per user; versions {dict(versions)}")


def test_replicas_move_a_removed_pods_sessions_to_the_same_pod(replicas):
    """Pin users on r1-a, remove r1-a from EDS (all three replicas read the
    same files): the old cookie goes to the same new pod on every replica,
    and the cookie any of them re-issues is accepted by the others."""
    users = []
    while len(users) < 20:
        u = User(extra={"canary": "v1"})
        r = u.get(replicas.clients[len(users) % 3])
        u.extra = {}
        if r.hostname == "r1-a":
            users.append(u)
    pods = replicas.pods
    try:
        set_endpoints(replicas.eds, replicas.envoys, V1, [pods["r1-b"], pods["r1-c"]])
        for u in users:
            old = u.value
            landed, reissued = set(), []
            for c in replicas.clients:
                u.value = old
                r = u.get(c)
                assert r.status == 200 and r.name == V1, r
                landed.add(r.hostname)
                reissued.append(u.value)
            assert len(landed) == 1 and landed != {"r1-a"}, landed
            assert len(set(reissued)) == 3 and old not in reissued  # fresh nonces, new pin
            # Replica 0's new cookie is accepted as is by replicas 1 and 2.
            u.value = reissued[0]
            n = u.issued
            for c in replicas.clients[1:]:
                r = u.get(c)
                assert (r.hostname, u.issued) == (next(iter(landed)), n), r
                assert endpoint_seen(r) == [pods[r.hostname].address]
    finally:
        set_endpoints(replicas.eds, replicas.envoys, V1, [pods[h] for h in ("r1-a", "r1-b", "r1-c")])
    print(f"MEASURED: replicas after removing a pod: {len(users)} of its sessions each moved to one pod, "
          f"the same on all 3 replicas; every replica accepted the others' re-pinned cookies")
