"""Support for test_istio_real.py: the shipped manifests applied to a real
istiod, served by a real pilot-agent and Envoy (testkit.kube, testkit.istio).

``cluster(workdir)`` (a context manager, one per test module) makes the
``Cluster``: a private network namespace (``testkit.netns``) holding the
OCI registry with the image pushed as ``make oci-push
REGISTRY=127.0.0.1:5000`` pushes it (``testkit.registry``), and etcd +
kube-apiserver with Istio's CRDs. The manifests are the files of istio/ as
that command renders them into ``dist/``: the registry and the digest of
the image just built and pushed. ``cluster.docs(*rel)`` loads rendered files
and records what differs from the shipped ones (printed, and in the
session summary); ``cluster.reset()`` deletes every Istio object between
stacks.

``Stack`` (one per test class): whoami pods declared as ServiceEntry +
WorkloadEntry, the manifests applied (or written into a config directory
for istiod's file mode), istiod, and the gateway; ``.client(host)``,
``.stop()``. ``.all`` lists every process, so a failing test gets the logs
of istiod, pilot-agent (which includes Envoy's), kube-apiserver and the
pods, and Envoy's config_dump.

``ReturningUsers``: returning users sending requests from threads while a
test changes the config; counts every request and every failure, and where
each user was answered.

``note(line)``: a line for the end-of-session summary (the Istio version,
substitutions, measured figures).
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import os
import re
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import pytest
import yaml

import testkit
from testkit import istio, kube
from testkit.netns import Namespace, namespace_problem
from testkit.registry import oci_build_and_push, start_registry
from testkit.stats import parse_stats
from testkit.cookie_format import bucket, open_cookie, version_for_bucket
from testkit.wait import hang_guard, wait_until

REPO = testkit.REPO_ROOT
HOST = "my-app.example.com"
MY_APP = "my-app.default.svc.cluster.local"
V1, V2 = "canary-v1", "canary-v2"
COOKIE = "my-sticky-cookie"
# The demo app of istio/base/app.yaml: two pods per version.
PODS = [(V1, "my-app-v1-0"), (V1, "my-app-v1-1"), (V2, "my-app-v2-0"), (V2, "my-app-v2-1")]
WASMPLUGIN_ECDS = "extensions.istio.io/trafficextension/istio-system.sticky-canary~istio-translated-wasmplugin"
TRAFFICEXTENSION_ECDS = "extensions.istio.io/trafficextension/istio-system.sticky-canary"
ACCEPTED = "sticky_canary_config_total.result=.=accepted;.;"
REFUSED = "sticky_canary_config_total.result=.=refused;.;"
CLEAR_FAILED = "sticky_canary_route_cache_clear_failed_total"
INVALID = "sticky_canary_config_invalid"

SUMMARY: list[str] = []
STARTS: list[tuple[str, float, float]] = []  # (stack, istiod ready s, gateway LIVE s), informative


def note(line: str) -> None:
    """Print `line` and keep it for the session summary (tests/istio/conftest.py)."""
    print(line)
    if line not in SUMMARY:
        SUMMARY.append(line)


# ---------------------------------------------------------------------------
# the cluster: registry, image, API server


def istio_kinds() -> list[tuple[str, str]]:
    """(apiVersion, kind) of every Istio CRD, at its storage version."""
    out = []
    for crd in istio.istio_crds():
        spec = crd["spec"]
        (stored,) = [v["name"] for v in spec["versions"] if v.get("storage")]
        out.append((f"{spec['group']}/{stored}", spec["names"]["kind"]))
    return out


@dataclass
class Cluster:
    workdir: Path
    kube: kube.Kube
    registry: str  # host:port of the loopback registry
    image: dict  # istio/oci.py --json
    dist: Path
    ns: object  # testkit.netns.Namespace
    procs: list = field(default_factory=list)

    @property
    def digest(self) -> str:
        return self.image["manifest_digest"].split(":", 1)[1]

    def rendered(self, rel: str) -> Path:
        return self.dist / "istio" / rel

    def docs(self, *rels: str) -> list[dict]:
        """The rendered documents of istio/<rel>, after noting every line
        that differs from the shipped file."""
        out = []
        for rel in rels:
            shipped = (REPO / "istio" / rel).read_text().splitlines()
            rendered = self.rendered(rel).read_text()
            changed = [line.strip() for line in difflib.ndiff(shipped, rendered.splitlines())
                       if line.startswith("+ ")]
            for line in changed:
                note(f"substituted in istio/{rel}: {line[2:].strip()}")
            out += [d for d in yaml.safe_load_all(rendered) if d]
        return out

    def reset(self) -> None:
        """Delete every Istio object (the next stack starts from nothing)."""
        self.kube.api.delete_all(istio_kinds())

    def namespaces(self, *names: str) -> None:
        for n in names:
            self.kube.api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}})

    @property
    def all(self) -> list:
        return [*self.kube.all, *self.procs]


# ---------------------------------------------------------------------------
# a stack: pods, manifests, istiod, gateway


@dataclass
class Pod:
    version: str
    backend: testkit.Backend
    labels: dict


class Stack:
    def __init__(self, cluster: Cluster, name: str):
        self.cluster = cluster
        self.workdir = cluster.workdir / name
        self.pods: dict[str, Pod] = {}
        self.istiod: istio.Istiod | None = None
        self.envoy: istio.Gateway | None = None
        self.config_dir: Path | None = None

    @property
    def api(self) -> kube.KubeAPI:
        return self.cluster.kube.api

    @property
    def backends(self) -> list[testkit.Backend]:
        return [p.backend for p in self.pods.values()]

    @property
    def all(self) -> list:
        return [x for x in (self.istiod and self.istiod.proc, self.envoy, *self.backends, *self.cluster.all) if x]

    def start_pods(self, service_host: str, namespace: str, spec: Sequence[tuple[str, str]],
                   app: str | None = None, port: int = 80) -> list[dict]:
        """whoami pods `(version, hostname)` (whoami's Name is the version)
        and their ServiceEntry + WorkloadEntries (not applied)."""
        app = app or service_host.split(".")[0]
        started = testkit.start_pods(self.workdir / "pods", spec, ns=self.cluster.ns)
        pods = []
        for version, hostname in spec:
            labels = {"app": app, "version": version}
            self.pods[hostname] = Pod(version, started[hostname], labels)
            pods.append((labels, started[hostname]))
        return istio.backend_objects(service_host, namespace, pods, selector={"app": app}, port=port)

    def add_pod(self, version: str, hostname: str, namespace: str = "default", app: str = "my-app") -> Pod:
        """Scale up: a new pod and its WorkloadEntry, applied."""
        backend = testkit.start_backend(self.workdir / "pods", version, hostname, ns=self.cluster.ns)
        pod = Pod(version, backend, {"app": app, "version": version})
        self.pods[hostname] = pod
        self.api.apply(istio.workload_entry(backend, namespace, pod.labels))
        return pod

    def apply(self, docs: Iterable[dict]) -> None:
        self.api.apply_all(docs)

    def write_config(self, docs: Iterable[dict], name: str) -> Path:
        """Write docs as one file of istiod's config directory (for
        ``start(files=True)``), atomically: a temporary file renamed over
        the old one."""
        if self.config_dir is None:
            self.config_dir = self.workdir / "config"
            self.config_dir.mkdir(parents=True, exist_ok=True)
        path = self.config_dir / f"{name}.yaml"
        tmp = self.config_dir / f".{name}.tmp"
        tmp.write_text(yaml.safe_dump_all(list(docs), sort_keys=False))
        os.replace(tmp, path)
        return path

    def start(self, *, files: bool = False, env: Mapping[str, str] | None = None) -> "Stack":
        """istiod (from the API server, or with `files` from the files
        `write_config` wrote) and then the gateway."""
        assert not files or self.config_dir is not None, "write_config first"
        ns = self.cluster.ns
        t0 = time.monotonic()
        self.istiod = istio.start_istiod(self.workdir / "istiod", self.cluster.kube, ns,
                                         config_dir=self.config_dir if files else None)
        t1 = time.monotonic()
        self.envoy = istio.start_gateway(self.workdir / "gateway", self.istiod, ns, env=env)
        t2 = time.monotonic()
        STARTS.append((self.workdir.name, t1 - t0, t2 - t1))
        return self

    def client(self, host: str = HOST) -> testkit.Client:
        return self.cluster.ns.client(istio.GATEWAY_PORT, authority=host)

    def dump(self, eds: bool = False) -> dict:
        assert self.envoy is not None
        return self.envoy.config_dump_json(eds)

    def stat(self, name: str) -> int | None:
        """One stat by its full name from admin /stats (also one never
        incremented: defined at 0), None when Envoy does not have it."""
        # The filter's stats carry Envoy's "wasmcustom." prefix (parse_stats drops it).
        pattern = urllib.parse.quote(f"(^|\\.){re.escape(name)}$")
        status, text = self.envoy.admin(f"/stats?filter={pattern}")
        assert status == 200, text[:300]
        return parse_stats(text).get(name)

    def assert_route_cache_cleared(self) -> None:
        """The filter asked Envoy to clear the route cache after setting its
        headers, and Envoy never refused (the counter exists and is 0)."""
        assert self.stat(CLEAR_FAILED) == 0, self.stat(CLEAR_FAILED)

    def config_counts(self) -> tuple[int, int]:
        """(accepted, refused): the filter's config_total counters."""
        c = self.envoy.counters("sticky_canary_config_total")
        return c.get(ACCEPTED, 0), c.get(REFUSED, 0)

    def wait_config(self, before: tuple[int, int], result: str, timeout: float = 120.0) -> tuple[int, int]:
        """Until the filter counted one more accepted (or refused) config
        than `before`; returns the new counts."""
        i = 0 if result == "accepted" else 1

        def moved():
            now = self.config_counts()
            return now if now[i] > before[i] else None

        return wait_until(moved, lambda: f"the filter to count a {result} config (before {before}, "
                          f"now {self.config_counts()})", timeout=timeout, interval=0.1)

    def stop(self) -> None:
        for p in (self.envoy, self.istiod):
            if p is not None:
                p.stop()
        for b in self.backends:
            b.stop()


@contextlib.contextmanager
def stack(cluster: Cluster, name: str):
    """A Stack whose processes are stopped (and whose Istio objects are
    deleted) at the end, whatever happens."""
    cluster.reset()
    s = Stack(cluster, name)
    try:
        yield s
    finally:
        s.stop()


def wait_for_plugin(s: Stack, host: str = HOST, cookie: str = COOKIE, timeout: float = 120.0) -> testkit.Response:
    """Until a new user on `host` gets the session cookie: the filter is
    configured and serving."""
    def issued():
        with s.client(host) as c:
            r = c.get("/")
        return r if r.status == 200 and r.cookies_named(cookie) else None

    return wait_until(issued, f"a {cookie} cookie from {host}", timeout=timeout, interval=0.25)


# ---------------------------------------------------------------------------
# users


@dataclass
class User:
    cookie: str  # "name=value"
    version: str
    pod: str

    @property
    def key(self) -> bytes:
        return open_cookie(self.cookie.split("=", 1)[1]).key

    @property
    def bucket(self) -> int:
        return bucket(self.key)


def new_users(s: Stack, n: int, host: str = HOST, cookie: str = COOKIE) -> list[User]:
    """`n` first visits: each user's cookie, version and pod."""
    users = []
    with s.client(host) as c:
        for _ in range(n):
            r = c.get_ok("/")
            (sc,) = r.cookies_named(cookie)
            users.append(User(sc.pair, r.name, r.hostname))
    return users


class ReturningUsers:
    """Returning users on `threads` threads, each user's requests in turn,
    with a browser's cookie jar (a new Set-Cookie replaces the cookie).
    Counts every request and failure (anything but a whoami 200); `phase`
    (set by the test) labels where each answer falls."""

    def __init__(self, s: Stack, users: Sequence[User], threads: int = 4, host: str = HOST, cookie: str = COOKIE):
        self.stack, self.users, self.host, self.cookie_name = s, list(users), host, cookie
        self.jar = [u.cookie for u in self.users]
        self.phase = "before"
        self.requests = Counter()  # phase -> requests
        self.failures: list[tuple[str, str]] = []
        self.answers: dict[int, list[tuple[str, str, str]]] = {i: [] for i in range(len(users))}  # phase, version, pod
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(k, threads), daemon=True) for k in range(threads)]

    def _run(self, k: int, n: int) -> None:
        mine = list(range(k, len(self.users), n))
        with self.stack.client(self.host) as c:
            while not self._stop.is_set():
                for i in mine:
                    if self._stop.is_set():
                        break
                    phase = self.phase
                    try:
                        r = c.get("/", cookies=self.jar[i])
                    except OSError as e:
                        with self._lock:
                            self.requests[phase] += 1
                            self.failures.append((phase, repr(e)))
                        continue
                    with self._lock:
                        self.requests[phase] += 1
                        if r.status != 200 or r.name is None:
                            self.failures.append((phase, f"{r.status} {r.text[:200]!r}"))
                            continue
                        self.answers[i].append((phase, r.name, r.hostname))
                        issued = r.cookies_named(self.cookie_name)
                        if issued:
                            self.jar[i] = issued[0].pair

    def seen_in(self, phase: str) -> int:
        """How many users were answered at least once in `phase`."""
        with self._lock:
            return sum(1 for a in self.answers.values() if any(p == phase for p, _, _ in a))

    def wait_all_seen(self, phase: str, times: int = 2, timeout: float = 180.0) -> None:
        """Until every user was answered `times` times in `phase` (or a hang guard)."""
        def done():
            with self._lock:
                return all(sum(1 for p, _, _ in a if p == phase) >= times for a in self.answers.values())

        wait_until(done, lambda: f"every user answered {times}x in phase {phase} "
                   f"({self.seen_in(phase)} of {len(self.users)} seen)", timeout=timeout, interval=0.1)

    def last(self, i: int) -> tuple[str, str]:
        _, version, pod = self.answers[i][-1]
        return version, pod

    def __enter__(self) -> "ReturningUsers":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(hang_guard(60))


def expected_after_weight(users: Sequence[User], layout: Sequence[tuple[str, int]]) -> dict[int, str]:
    """Each user's version under `layout` (the core's bucket rule, from
    testkit.cookie_format)."""
    return {i: version_for_bucket(layout, u.bucket) for i, u in enumerate(users)}


def set_weight(doc: dict, weight: int) -> dict:
    """A copy of a WasmPlugin or TrafficExtension with canary-v2's weight
    in the first route entry set to `weight` (any value, valid or not)."""
    d = copy.deepcopy(doc)
    spec = d["spec"]["wasm"] if d["kind"] == "TrafficExtension" else d["spec"]
    (v2,) = [v for v in spec["pluginConfig"]["routes"][0]["versions"] if v["name"] == V2]
    v2["weight"] = weight
    return d


def one(kind: str, docs: Sequence[dict]) -> dict:
    (d,) = [d for d in docs if d["kind"] == kind]
    return d




# ---------------------------------------------------------------------------
# the cluster of a test module


@contextlib.contextmanager
def cluster(workdir: Path):
    """A Cluster in a private network namespace: the registry with the
    image `make oci-push` pushed, etcd and kube-apiserver with Istio's
    CRDs. Everything is stopped at the end, whatever happens."""
    testkit.require_envoy_and_wasm()
    problem = namespace_problem("the Istio tests (istiod, pilot-agent, kube-apiserver)")
    if problem:
        pytest.fail(problem, pytrace=False)
    ns = Namespace(workdir / "netns")
    k = reg = None
    try:
        t0 = time.monotonic()
        reg = start_registry(workdir / "registry", ns=ns)
        # make oci-push REGISTRY=127.0.0.1:5000: build, render dist/, push with ORAS.
        image = oci_build_and_push(reg.address, workdir / "image", ns=ns)
        t1 = time.monotonic()
        k = kube.start_kube(workdir / "kube", ns)
        t2 = time.monotonic()
        k.api.install_crds(istio.istio_crds())
        t3 = time.monotonic()
        note(f"Istio {istio.istio_release()} development: istio.io/istio@{istio.ISTIO_VERSION} "
             "(pilot-discovery and pilot-agent built from it), Kubernetes API: kube-apiserver "
             f"{kube.kube_version()}")
        note(f"start-up (informative, this machine): registry + make oci-push {t1 - t0:.1f} s, "
             f"etcd + kube-apiserver ready {t2 - t1:.1f} s, Istio's CRDs Established {t3 - t2:.1f} s")
        yield Cluster(workdir, k, reg.address, image, workdir / "image" / "dist", ns, [reg.proc])
    finally:
        if k is not None:
            k.stop()
        if reg is not None:
            reg.stop()
        ns.stop()
