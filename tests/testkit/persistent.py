"""The setup of the persistent-mode tests (test_persistent.py,
test_cookie_security.py, test_replicas.py, test_failover_concurrency.py,
test_metrics.py, test_hostile_input.py) and of `make soak --mode
persistent`.

They all run ``envoy-config/persistent/envoy-local-persistent.yaml`` with
its EDS files moved to a temporary directory (``testkit.xds.Eds``), so pods
can be added and removed while Envoy runs, exactly as a user would: write
the new endpoint list to a temporary file in the watched directory, then
rename it over the old one.

``plugin(secrets=None, v2_weight=None)``: the shipped plugin JSON plus
per-route entries (``ROUTE_ENTRIES``: /keep/, /balanced/, /other/, /short/,
/plain/) so one Envoy serves every variant a module needs.
``config(eds, fast_health_checks=True)``: the shipped config reading its
endpoints from `eds`.
``start_pods_with_eds(workdir, [(version, hostname), ...]) -> (pods, eds)``:
whoami pods (``{hostname: Backend}``) and an EDS directory listing each
version's pods, in that order.
``wait_hosts(envoys, cluster, addresses, healthy=True)``: until every
Envoy's cluster holds exactly those hosts (and they pass their health
check); ``wait_eds(envoys, eds)``: that, for every cluster `eds` lists;
``set_endpoints(eds, envoys, cluster, pods)``: write them and wait.
``User``: a browser that keeps the session cookie it was given;
``endpoint_seen(response)``: the x-sticky-endpoint values the backend got;
``attempts(response)``: the upstream attempts Envoy made for it;
``decode_cookie(value)``: the bytes behind a cookie value.
"""

from __future__ import annotations

import base64
import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from .backends import Backend, start_pods
from .clients import Client, Response
from .envoy import Envoy
from .envoy_config import load_config, plugin_config
from .paths import PERSISTENT_CONFIG
from .wait import wait_until
from .xds import Eds

COOKIE = "sticky-pod"
# The demo key of envoy-local-persistent.yaml and a second one for rotation.
KEY_OLD = "Q1lG7l18ymBfHj+aouEhmFQVKqbdmDCszs+N7gTOhAo="
KEY_NEW = "kZFj/X5ItAqmuAew8uWTKYwsEYSpk0WBHtI7OfFwAAI="
V1, V2 = "canary-v1", "canary-v2"
SHORT_TTL = 5  # session.ttl of the /short/ route entry, seconds

# Per-route entries added to the shipped plugin JSON (path prefix -> entry).
ROUTE_ENTRIES = [
    # change_on_failure false: the pin stays when the pinned pod fails.
    {"name": "keep", "match": {"path_prefix": "/keep/"},
     "session": {"change_on_failure": False, "cookie": {"name": "sticky-keep"}}},
    # Balanced mode, sealed cookie (same secrets as the global policy).
    {"name": "balanced", "match": {"path_prefix": "/balanced/"},
     "session": {"mode": "balanced", "cookie": {"name": "sticky-bal"}}},
    # Another route's cookie, to prove cookies do not cross routes.
    {"name": "other", "match": {"path_prefix": "/other/"},
     "session": {"cookie": {"name": "sticky-other"}}},
    # A 5-second server-side lifetime, to get expired cookies quickly while
    # leaving a busy machine 4 s to use a fresh one (whole seconds).
    {"name": "short", "match": {"path_prefix": "/short/"},
     "session": {"ttl": SHORT_TTL, "cookie": {"name": "sticky-short"}}},
    # No secrets: plain (unsealed) cookies, for the unsigned-cookie control.
    {"name": "plain", "match": {"path_prefix": "/plain/"},
     "session": {"mode": "balanced", "secrets": [], "cookie": {"name": "sticky-plain"}}},
]


def plugin(*, secrets: Sequence[str] | None = None, v2_weight: int | None = None) -> dict:
    """The shipped plugin JSON plus ROUTE_ENTRIES; optionally other secrets
    or another canary-v2 weight."""
    p = copy.deepcopy(plugin_config(load_config(PERSISTENT_CONFIG)))
    if secrets is not None:
        p["session"]["secrets"] = list(secrets)
    if v2_weight is not None:
        for v in p["versions"]:
            if v["name"] == V2:
                v["weight"] = v2_weight
    p["routes"] = copy.deepcopy(ROUTE_ENTRIES)
    return p


def config(eds: Eds, *, fast_health_checks: bool = True) -> dict:
    """The shipped persistent config with its EDS paths pointing at `eds`,
    the attempt count echoed in responses (`x-envoy-attempt-count`), and
    (by default) health checks every 0.5 s so tests need not wait (the
    shipped 5 s timeout kept: a busy machine may answer late)."""
    cfg = load_config(PERSISTENT_CONFIG)
    for c in cfg["static_resources"]["clusters"]:
        pcs = c["eds_cluster_config"]["eds_config"]["path_config_source"]
        pcs["path"] = str(eds.path(c["name"]))
        pcs["watched_directory"] = {"path": str(eds.dir)}
        if fast_health_checks:
            for hc in c.get("health_checks", []):
                hc.update(interval="0.5s", no_traffic_interval="0.5s", timeout="5s")
            # Health changes reach the workers at once instead of being
            # batched for 1 s (the default), so a pod reported healthy by
            # the admin API is already used by the fallback.
            c.setdefault("common_lb_config", {})["update_merge_window"] = "0s"
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    for vh in hcm["route_config"]["virtual_hosts"]:
        vh["include_attempt_count_in_response"] = True
    return cfg


def start_pods_with_eds(workdir: Path, spec: Sequence[tuple[str, str]]) -> tuple[dict[str, Backend], Eds]:
    """Start the pods of `spec` (`(version, hostname)`, under workdir/pods)
    and write each version's pods, in spec order, into a new EDS directory
    (workdir/eds)."""
    pods = start_pods(Path(workdir) / "pods", spec)
    eds = Eds(Path(workdir) / "eds")
    for version in dict.fromkeys(v for v, _ in spec):
        eds.write(version, [pods[h].address for v, h in spec if v == version])
    return pods, eds


def wait_hosts(envoys: Envoy | Sequence[Envoy], cluster: str, addresses: Iterable[str],
               *, healthy: bool = True, timeout: float = 60.0) -> float:
    """Wait until every Envoy's cluster holds exactly `addresses` (and all
    of them pass their health check). Returns the seconds it took."""
    envoys = [envoys] if isinstance(envoys, Envoy) else list(envoys)
    want = set(addresses)
    last: dict[str, str] = {}

    def there() -> bool:
        nonlocal last
        for e in envoys:
            last = e.cluster_hosts(cluster)
            if set(last) != want or (healthy and any(f != "healthy" for f in last.values())):
                return False
        return True

    t0 = time.monotonic()
    wait_until(there, lambda: f"{cluster}: hosts {last} to become {sorted(want)} (healthy={healthy})", timeout)
    return time.monotonic() - t0


def wait_eds(envoys: Envoy | Sequence[Envoy], eds: Eds) -> None:
    """``wait_hosts`` for every cluster `eds` has written."""
    for cluster, addresses in eds.current.items():
        wait_hosts(envoys, cluster, addresses)


def set_endpoints(eds: Eds, envoys, cluster: str, pods: Iterable[Backend]) -> float:
    """Make `pods` the cluster's endpoints and wait until Envoy uses them.
    Returns the seconds until the admin API showed them all healthy."""
    addresses = [p.address for p in pods]
    eds.write(cluster, addresses)
    took = wait_hosts(envoys, cluster, addresses)
    time.sleep(0.3)  # the workers get the main thread's view a moment later
    return took


@dataclass
class User:
    """A browser: keeps the session cookie it was given."""

    cookie_name: str = COOKIE
    value: str | None = None
    extra: dict = field(default_factory=dict)  # other cookies sent every time
    issued: int = 0  # Set-Cookies received

    def cookies(self) -> dict:
        out = dict(self.extra)
        if self.value is not None:
            out[self.cookie_name] = self.value
        return out

    def get(self, client: Client, path: str = "/", headers=None) -> Response:
        r = client.get(path, headers=headers, cookies=self.cookies() or None)
        mine = r.cookies_named(self.cookie_name)
        if mine:
            self.issued += 1
            self.value = mine[-1].value
        return r


def attempts(r: Response) -> int:
    """How many upstream attempts Envoy made (x-envoy-attempt-count, which
    ``config()`` has Envoy echo)."""
    return int(r.header("x-envoy-attempt-count") or 0)


def endpoint_seen(r: Response, header: str = "x-sticky-endpoint") -> list[str]:
    """The x-sticky-endpoint values the backend received."""
    w = r.whoami
    return w.header_values(header) if w else []


def decode_cookie(value: str) -> bytes:
    """The bytes behind a cookie value (marker character dropped)."""
    body = value[1:]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
