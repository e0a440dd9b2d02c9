"""Shared pieces of the persistent-mode end-to-end tests (this module holds
no tests; pytest collects it because of its name and finds none).

Used by test_persistent.py, test_cookie_security.py and test_replicas.py.
They all run ``envoy-config/persistent/envoy-local-persistent.yaml`` with
its EDS files moved to a temporary directory, so the tests can add and
remove pods while Envoy runs, exactly as a user would: write the new
endpoint list to a temporary file in the watched directory, then rename it
over the old one.

The plugin JSON of that config is extended with per-route entries (see
``plugin()``) so one Envoy serves every variant a module needs.
"""

from __future__ import annotations

import base64
import concurrent.futures
import copy
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import yaml

import harness

PERSISTENT_CONFIG = harness.REPO_ROOT / "envoy-config" / "persistent" / "envoy-local-persistent.yaml"
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
    p = harness.plugin_config(harness.load_config(PERSISTENT_CONFIG))
    p = copy.deepcopy(p)
    if secrets is not None:
        p["session"]["secrets"] = list(secrets)
    if v2_weight is not None:
        for v in p["versions"]:
            if v["name"] == V2:
                v["weight"] = v2_weight
    p["routes"] = copy.deepcopy(ROUTE_ENTRIES)
    return p


# ---------------------------------------------------------------------------
# EDS from a watched directory


def eds_document(cluster: str, addresses: Iterable[str], version: int) -> dict:
    lb = []
    for a in addresses:
        host, port = a.rsplit(":", 1)
        lb.append({"endpoint": {"address": {"socket_address": {"address": host, "port_value": int(port)}}}})
    return {
        "version_info": str(version),
        "resources": [{
            "@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            "cluster_name": cluster,
            "endpoints": [{"lb_endpoints": lb}],
        }],
    }


class Eds:
    """One EDS file per cluster in a directory Envoy watches."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.version = 0
        self.current: dict[str, list[str]] = {}

    def path(self, cluster: str) -> Path:
        return self.dir / f"{cluster}.yaml"

    def write(self, cluster: str, addresses: Iterable[str]) -> None:
        """Replace the cluster's endpoints atomically (write, then rename)."""
        addresses = list(addresses)
        self.version += 1
        tmp = self.dir / f".{cluster}.{self.version}.tmp"
        tmp.write_text(yaml.safe_dump(eds_document(cluster, addresses, self.version)))
        os.rename(tmp, self.path(cluster))
        self.current[cluster] = addresses


def config(eds: Eds, *, fast_health_checks: bool = True) -> dict:
    """The shipped persistent config with its EDS paths pointing at `eds`,
    the attempt count echoed in responses (`x-envoy-attempt-count`), and
    (by default) health checks every 0.5 s so tests need not wait (the
    shipped 5 s timeout kept: a busy machine may answer late)."""
    cfg = harness.load_config(PERSISTENT_CONFIG)
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


# ---------------------------------------------------------------------------
# Pods


def start_pods(workdir: Path, spec: Sequence[tuple[str, str]]) -> dict[str, harness.Backend]:
    """Start whoami pods `(version, hostname)` on free ports, in parallel."""
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futs = {h: pool.submit(harness.start_backend, workdir, v, h) for v, h in spec}
        return {h: f.result() for h, f in futs.items()}


def kill_pod(pod: harness.Backend) -> None:
    """SIGKILL, as a crashed pod or a node loss: no goodbye on open sockets."""
    if pod.proc.alive():
        os.kill(pod.proc.pid, signal.SIGKILL)
    pod.proc.wait(5)
    pod.proc.stop()


def cluster_hosts(envoy: harness.Envoy, cluster: str) -> dict[str, str]:
    """{address: health flags} of a cluster, from admin /clusters."""
    _, text = envoy.admin("/clusters")
    out = {}
    for line in text.splitlines():
        parts = line.split("::")
        if len(parts) >= 4 and parts[0] == cluster and parts[2] == "health_flags":
            out[parts[1]] = parts[3]
    return out


def wait_hosts(envoys: harness.Envoy | Sequence[harness.Envoy], cluster: str, addresses: Iterable[str],
               *, healthy: bool = True, timeout: float = harness.hang_guard(60.0)) -> float:
    """Wait until every Envoy's cluster holds exactly `addresses` (and all
    of them pass their health check). Returns the seconds it took."""
    envoys = [envoys] if isinstance(envoys, harness.Envoy) else list(envoys)
    want = set(addresses)
    t0 = time.monotonic()
    last = {}
    while time.monotonic() - t0 < timeout:
        ok = True
        for e in envoys:
            last = cluster_hosts(e, cluster)
            if set(last) != want or (healthy and any(f != "healthy" for f in last.values())):
                ok = False
                break
        if ok:
            return time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError(f"{cluster}: hosts {last} never became {sorted(want)} (healthy={healthy})")


def set_endpoints(eds: Eds, envoys, cluster: str, pods: Iterable[harness.Backend]) -> float:
    """Make `pods` the cluster's endpoints and wait until Envoy uses them.
    Returns the seconds until the admin API showed them all healthy."""
    addresses = [p.address for p in pods]
    eds.write(cluster, addresses)
    took = wait_hosts(envoys, cluster, addresses)
    time.sleep(0.3)  # the workers get the main thread's view a moment later
    return took


# ---------------------------------------------------------------------------
# Users


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

    def get(self, client: harness.Client, path: str = "/", headers=None) -> harness.Response:
        r = client.get(path, headers=headers, cookies=self.cookies() or None)
        mine = r.cookies_named(self.cookie_name)
        if mine:
            self.issued += 1
            self.value = mine[-1].value
        return r


def endpoint_seen(r: harness.Response, header: str = "x-sticky-endpoint") -> list[str]:
    """The x-sticky-endpoint values the backend received."""
    w = r.whoami
    return w.header_values(header) if w else []


def decode_cookie(value: str) -> bytes:
    """The bytes behind a cookie value (marker character dropped)."""
    body = value[1:]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


def start_envoys(cfgs: Sequence[tuple[dict, Path, dict]]) -> list[harness.Envoy]:
    """Start several Envoys, `(config, workdir, plugin)` each, one after the
    other from the calling thread: an Envoy started from a worker thread is
    sent SIGTERM when that thread exits (seen with Envoy 1.40 here), so
    they cannot be started from a thread pool."""
    return [harness.start_envoy(c, w, plugin=p) for c, w, p in cfgs]
