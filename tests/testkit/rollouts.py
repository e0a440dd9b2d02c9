"""Simulated users across Envoy replicas: the setup of the rollout tests
(test_rollouts.py, test_keys_sources.py, test_keys_client_ip.py).

``envoy_config(versions=(V1, V2), hcm=None)``: envoy-local.yaml's listener
and filter with one route and one RING_HASH cluster per version, routed on
the x-canary-version header the filter writes (the first version is the
default route); ``hcm``: extra HttpConnectionManager fields. Start replicas
of it with ``testkit.start_envoys(specs, workdir, pod_endpoints(backends))``.

``User(uid)``: a user with its own cookie jar; ``.session()`` opens its
session cookie (``cookie_format.open_cookie``). ``visit(client, user,
path="/", headers=None, cookies=None, use_jar=True) -> Seen``: one request
(the jar goes along, Set-Cookie updates it); ``Seen``: ``.version``,
``.pod``, ``.hash`` (x-sticky-hash as the backend saw it), ``.issued``.
``visit_all(envoys, users, shift=0, each=None, **kw)``: every user once,
user i on replica (i + shift) % len(envoys), from THREADS threads.

Tolerances: a count over n independent users is Binomial(n, p);
``assert_binomial(count, n, p, what)`` checks it within SIGMAS (5)
standard deviations, ``binomial(n, p) -> (mean, half-width)``,
``pct(k, n)``. ``report(line)`` prints a measured figure for ``pytest -s``.
"""

from __future__ import annotations

import concurrent.futures
import copy
import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from .backends import BackendSet
from .clients import Client
from .cookie_format import CookieSession, open_cookie
from .envoy import Envoy
from .envoy_config import load_config

V1, V2, V3 = "canary-v1", "canary-v2", "canary-v3"
COOKIE = "sticky-canary"  # the default session cookie name
THREADS = 4  # client threads; each keeps one keep-alive connection per replica
SIGMAS = 5


def report(line: str) -> None:
    """A measured figure, printed for `pytest -s` (and the README)."""
    print(f"measured: {line}")


# ---------------------------------------------------------------------------
# Envoy configuration


def envoy_config(versions: Sequence[str] = (V1, V2), *, hcm: Mapping | None = None) -> dict:
    """envoy-local.yaml's listener and filter, with one route and one RING_HASH
    cluster per version (the first is the default route). `hcm`: extra
    HttpConnectionManager fields (use_remote_address, xff_num_trusted_hops)."""
    cfg = load_config()
    listener = cfg["static_resources"]["listeners"][0]
    # A port taken by another Envoy on this machine must fail the bind (the
    # launcher then retries elsewhere) instead of silently sharing it.
    listener["enable_reuse_port"] = False
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    manager.update(hcm or {})
    hash_policy = [{"header": {"header_name": "x-sticky-hash"}}]
    routes = [
        {
            "name": v,
            "match": {"prefix": "/", "headers": [{"name": "x-canary-version", "string_match": {"exact": v}}]},
            "route": {"cluster": v, "hash_policy": hash_policy},
        }
        for v in versions[1:]
    ]
    routes.append({"name": versions[0], "match": {"prefix": "/"}, "route": {"cluster": versions[0], "hash_policy": hash_policy}})
    manager["route_config"]["virtual_hosts"][0]["routes"] = routes
    template = cfg["static_resources"]["clusters"][0]
    clusters = []
    for v in versions:
        c = copy.deepcopy(template)
        c["name"] = v
        c["load_assignment"]["cluster_name"] = v
        clusters.append(c)
    cfg["static_resources"]["clusters"] = clusters
    return cfg


def pod_endpoints(backends: BackendSet) -> dict[str, list[str]]:
    return {cluster: [b.address for b in pods] for cluster, pods in backends.by_cluster.items()}


# ---------------------------------------------------------------------------
# Simulated users


@dataclass
class User:
    uid: str
    jar: dict[str, str] = field(default_factory=dict)

    def session(self) -> CookieSession:
        return open_cookie(self.jar[COOKIE])


@dataclass
class Seen:
    version: str
    pod: str
    hash: str
    issued: bool  # a session Set-Cookie came back


def visit(client: Client, user: User, path: str = "/", headers=None, cookies=None, use_jar: bool = True) -> Seen:
    """One request of `user`: its jar (plus `cookies`) goes along, Set-Cookie
    updates the jar."""
    jar = dict(user.jar) if use_jar else {}
    jar.update(cookies or {})
    r = client.get(path, headers=headers, cookies=jar or None)
    assert r.status == 200, r
    issued = r.cookies_named(COOKIE)
    assert len(issued) <= 1, r.set_cookies
    if use_jar:
        for c in issued:
            user.jar[c.name] = c.value
    w = r.whoami
    [h] = w.header_values("X-Sticky-Hash")
    assert w.header_values("X-Canary-Version") == [w.name]
    return Seen(w.name, w.hostname, h, bool(issued))


def visit_all(envoys: Sequence[Envoy], users: Sequence[User], *, shift: int = 0,
              each: Callable[[User], dict] | None = None, **kw) -> list[Seen]:
    """Every user makes one request, user i to replica (i + shift) % len(envoys),
    from THREADS threads. `each(user)` adds per-user `visit` arguments."""
    out: list[Seen | None] = [None] * len(users)

    def work(t: int) -> None:
        clients: dict[int, Client] = {}
        try:
            for i in range(t, len(users), THREADS):
                e = envoys[(i + shift) % len(envoys)]
                c = clients.get(e.port) or clients.setdefault(e.port, e.client())
                args = dict(kw, **(each(users[i]) if each else {}))
                out[i] = visit(c, users[i], **args)
        finally:
            for c in clients.values():
                c.close()

    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(work, range(THREADS)))
    return out  # type: ignore[return-value]


def binomial(n: int, p: float) -> tuple[float, float]:
    """(mean, 5-sigma half-width)."""
    return n * p, SIGMAS * math.sqrt(n * p * (1 - p))


def assert_binomial(count: int, n: int, p: float, what: str) -> None:
    mean, tol = binomial(n, p)
    assert abs(count - mean) <= tol + 1e-9, f"{what}: {count} of {n}, expected {mean:.0f} +- {tol:.0f}"


def pct(k: int, n: int) -> str:
    return f"{100 * k / n:.1f}%"
