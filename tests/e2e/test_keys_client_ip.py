"""Session keys from the client IP, behind proxies that append to
X-Forwarded-For (XFF).

The deployment simulated here: client -> proxy P1 -> proxy P2 -> Envoy,
K = 2 trusted proxies. P1 appends the client's address to XFF, P2 appends
P1's address, so Envoy receives `XFF: <client>, <P1>` from P2 (the TCP
peer; here the test client on 127.0.0.1). A client can put anything in
front (`XFF: 6.6.6.6, <client>, <P1>`): only entries written by trusted
proxies count, i.e. the K-th entry from the right.

Two ways to get the client IP into the filter, both measured here for K = 2:

| Envoy HttpConnectionManager                      | filter `session.key`                          |
|--------------------------------------------------|-----------------------------------------------|
| `use_remote_address: true`, `xff_num_trusted_hops: K` | `{from: client_ip}` (hops 0: Envoy's address)  |
| `use_remote_address: false`, `xff_num_trusted_hops: K-1` | `{from: client_ip}` (hops 0)               |
| `use_remote_address: false` (Envoy does not append)  | `{from: client_ip, xff_trusted_hops: K}`      |
| `use_remote_address: true` (Envoy appends one entry) | `{from: client_ip, xff_trusted_hops: K+1}`    |

Envoy at the edge (K = 0): `use_remote_address: true` and hops 0 (the TCP
peer; a client-sent XFF changes nothing). The pitfall, also shown: Envoy's
defaults (`use_remote_address: false`, `xff_num_trusted_hops: 0`) with
hops 0 take the rightmost XFF entry, which a directly connected client
writes itself.

For every client IP the sticky hash the backend sees must be the hash of
exactly that IP (recomputed here), whatever the proxy chain in front of
the trusted hops and whatever a client forged on the left.
"""

from __future__ import annotations

import collections

import pytest

import testkit
from testkit.cookie_format import bucket, derive_key, pod_hash, version_for_bucket
from testkit.rollouts import V1, V2, User, assert_binomial, envoy_config, pod_endpoints, report, visit_all

WEIGHT = 50
LAYOUT = [(V1, 100 - WEIGHT), (V2, WEIGHT)]
CLIENTS = [f"203.0.113.{i}" for i in range(1, 201)]
P1, P1_OTHER = "198.51.100.10", "192.0.2.77"  # two different first proxies
PEER = "127.0.0.1"  # the TCP peer Envoy sees (our test client)

# id -> (HttpConnectionManager fields, filter xff_trusted_hops), for K = 2
SETTINGS = {
    "ura-true-xff2-hops0": ({"use_remote_address": True, "xff_num_trusted_hops": 2}, 0),
    "ura-false-xff1-hops0": ({"use_remote_address": False, "xff_num_trusted_hops": 1}, 0),
    "ura-false-hops2": ({"use_remote_address": False}, 2),
    "ura-true-hops3": ({"use_remote_address": True}, 3),
}
EDGE = "edge: ura-true-hops0"
PITFALL = "pitfall: envoy-defaults-hops0"
ALL = {**SETTINGS, EDGE: ({"use_remote_address": True}, 0), PITFALL: ({}, 0)}


def plugin(hops: int) -> dict:
    return {"versions": [{"name": V1}, {"name": V2, "weight": WEIGHT}],
            "session": {"key": {"from": "client_ip", "xff_trusted_hops": hops}}}


@pytest.fixture(scope="module")
def envoys(workdir, backends):
    specs = {f"xff{i}": (envoy_config((V1, V2), hcm=hcm), plugin(hops)) for i, (hcm, hops) in enumerate(ALL.values())}
    started = testkit.start_envoys(specs, workdir / "client-ip", pod_endpoints(backends))
    yield dict(zip(ALL, started.values()))
    for e in started.values():
        e.stop()


def chains(ip: str) -> dict[str, str]:
    """The XFF Envoy receives from P2 for client `ip`, through several chains."""
    return {
        "via P1": f"{ip}, {P1}",
        "via another P1": f"{ip}, {P1_OTHER}",
        "forged left entry": f"6.6.6.6, {ip}, {P1}",
        "forged left entries, other chain": f"10.0.0.1, 6.6.6.6,{ip},{P1_OTHER}",
    }


def xff_visits(envoy, xff_of) -> list:
    """One request per client, no cookies, with XFF `xff_of(ip)` (None: no XFF)."""
    return visit_all([envoy], [User(ip) for ip in CLIENTS], use_jar=False,
                     each=lambda u: {"headers": {"X-Forwarded-For": xff_of(u.uid)} if xff_of(u.uid) is not None else {}})


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_same_client_ip_through_any_chain(envoys, setting):
    """200 client IPs, each through four chains (two different first proxies,
    and with one or two forged entries on the left): the same version, the
    same pod and the sticky hash of exactly that IP."""
    e = envoys[setting]
    results = {name: xff_visits(e, lambda ip, name=name: chains(ip)[name]) for name in chains("x")}
    first = results["via P1"]
    for i, ip in enumerate(CLIENTS):
        key = derive_key(ip)
        assert first[i].hash == pod_hash(key), f"{setting}: {ip} not keyed on its IP"
        assert first[i].version == version_for_bucket(LAYOUT, bucket(key))
        for name, seen in results.items():
            assert (seen[i].version, seen[i].pod, seen[i].hash) == (first[i].version, first[i].pod, first[i].hash), (setting, name, ip)
    canary = sum(s.version == V2 for s in first)
    assert_binomial(canary, len(CLIENTS), WEIGHT / 100, "canary share by client IP")
    fallback = e.metric("sticky_canary_key_fallback_total", route="global")
    assert fallback == 0
    report(f"client IP, {setting}: {len(CLIENTS)} IPs x {len(results)} chains: 100% same version and pod, "
           f"keyed on the client IP; {canary} on the canary at weight {WEIGHT}")


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_too_few_xff_entries(envoys, setting):
    """XFF shorter than the trusted hops (no proxy in front, or one). When
    Envoy picks the address (hops 0) it falls back to the TCP peer: every
    such request shares the peer's key. When the filter reads XFF itself it
    falls back to a generated cookie and counts key_fallback."""
    e = envoys[setting]
    envoy_decides = ALL[setting][1] == 0
    for xff in (None, "203.0.113.250"):
        before = e.metric("sticky_canary_key_fallback_total", route="global")
        seen = xff_visits(e, lambda ip, xff=xff: xff)
        after = e.metric("sticky_canary_key_fallback_total", route="global")
        if envoy_decides:
            assert {s.hash for s in seen} == {pod_hash(derive_key(PEER))}
            assert after == before
        else:
            assert all(s.issued for s in seen)
            assert len({s.hash for s in seen}) == len(seen)  # one random key each
            assert after - before == len(seen)


def test_edge_ignores_client_sent_xff(envoys):
    """Envoy at the edge (use_remote_address true, hops 0): the key is the
    TCP peer, whatever XFF a client sends."""
    e = envoys[EDGE]
    for xff_of in (lambda ip: None, lambda ip: ip, lambda ip: chains(ip)["forged left entry"]):
        seen = xff_visits(e, xff_of)
        assert {s.hash for s in seen} == {pod_hash(derive_key(PEER))}


def test_pitfall_envoy_defaults_trust_the_client(envoys):
    """Why the table matters: with Envoy's defaults (use_remote_address false,
    xff_num_trusted_hops 0) and hops 0, Envoy's client address is the
    rightmost XFF entry, so a client that talks to Envoy directly picks its
    own key, version and pod by sending XFF."""
    e = envoys[PITFALL]
    seen = xff_visits(e, lambda ip: ip)
    for ip, s in zip(CLIENTS, seen):
        assert s.hash == pod_hash(derive_key(ip))
    versions = collections.Counter(s.version for s in seen)
    assert versions[V1] and versions[V2]  # a client can reach either version at will
