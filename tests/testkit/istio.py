"""Istio's control plane for real: istiod (``pilot-discovery``) reading the
shipped manifests from a Kubernetes API server (``testkit.kube``), and an
ingress gateway the way a cluster runs one: ``pilot-agent proxy router``
starting the pip Envoy 1.40, taking its config from istiod over xDS and
pulling the ``oci://`` Wasm image itself. Both binaries are the pins of
scripts/go-tools.txt, built from Istio's Go module.

Everything runs on loopback inside a private network namespace, a
``testkit.netns.Namespace`` the caller made (``ns`` below): the gateway's
listeners bind every address (``0.0.0.0:80`` from the Gateway's port,
Envoy's health and Prometheus listeners, the agent's status port) on fixed
ports. The test talks to them through the namespace's sockets
(``Gateway.client``, ``Gateway.admin``, ``Istiod.debug``).

What differs from a gateway in a cluster, and why (istio/README.md, "How
this is tested", says the same for users):

- The Envoy is the upstream one from PyPI, not istio-proxy, so it lacks
  Istio's own extensions. istiod is told not to emit them:
  ``PILOT_ENABLE_METADATA_EXCHANGE=false`` (no ``istio.metadata_exchange``
  HTTP and cluster filters), ``PILOT_ENABLE_ALPN_FILTER=false`` (no
  ``istio.alpn``), and the mesh config has no metrics provider (no
  ``istio.stats``; Helm installs add a prometheus one). Envoy rejects a
  listener or cluster carrying any of them.
- No workload certificate and no mTLS: xDS is plaintext on loopback
  (``controlPlaneAuthPolicy: NONE``, istiod's plaintext port),
  ``FILE_MOUNTED_CERTS=true`` keeps the agent from asking for a certificate
  it could not get (no service-account token), and ``enableAutoMtls:
  false`` keeps gateway-to-backend traffic plaintext (the backends have no
  sidecars).
- Backends are whoami processes on 127.0.0.1, declared to istiod as a
  ``ServiceEntry`` plus one ``WorkloadEntry`` per pod (``backend_objects``):
  the endpoint addresses a cluster would get from Pods.
- The agent's Wasm cache is the absolute ``/var/lib/istio/data`` (not
  configurable); the agent runs in a mount namespace of its own where
  ``/var/lib`` is a directory of the test (``Gateway.wasm_cache``), so
  nothing is written outside the test's directory.
- ``proxyStatsMatcher: {inclusionRegexps: [".*"]}``: Envoy keeps every stat
  (Istio's bootstrap keeps an inclusion list), so tests can read ECDS and
  retry counters.

``ISTIO_VERSION``: the pinned module version; ``istio_release()``: what it
corresponds to (its VERSION file, e.g. ``1.31``); ``istio_source() ->
Path``: the module in Go's module cache (scripts/setup.sh downloaded it);
``istio_crds() -> [dict]``: its CRDs (``manifests/charts/base/files/crd-all.gen.yaml``).

``start_istiod(workdir, kube, ns, *, config_dir=None, env=None,
timeout=120) -> Istiod``: ``pilot-discovery discovery`` with the
kubeconfig, the mesh config above and every port on a free loopback port;
``config_dir``: read Istio config from files instead (``--configDir``;
Kubernetes is then only its service registry). Ready when ``/ready`` is
200. ``Istiod``: ``.proc``,
``.grpc_port`` (plaintext xDS), ``.http_port``, ``.log()``,
``.debug(path)``, ``.stop()``.

``start_gateway(workdir, istiod, ns, *, env=None, timeout=120) ->
Gateway``: ``pilot-agent proxy router`` as the pod ``istio-ingressgateway-0`` of
``istio-system`` with the labels ``istio: ingressgateway``; ready when its
Envoy is ``LIVE`` (Envoy waits for the listeners and their ECDS filters)
and port 80 accepts. ``env``: more environment (``STICKY_CANARY_KEYS``
reaches the Wasm VM through Envoy's environment). ``Gateway`` is a
``testkit.Envoy`` (``.counters``, ``.metric``, ``.cluster_hosts``,
``.config_dump()``, ``.admin(path)``, ``.client(authority=host)``; a failing
test gets its ``config_dump``) plus ``.config_dump_json(eds=False) ->
dict``, ``.wasm_cache``; ``.stop()`` SIGTERMs the agent (it drains and stops
Envoy) and then kills the agent's whole process group, because Envoy
outlives a killed agent.

``backend_objects(host, namespace, pods, selector=None, port=80) ->
[dict]``: a ``ServiceEntry`` for ``host`` (HTTP on ``port``, selecting the
labels the pods share) and a ``WorkloadEntry`` per ``(labels, Backend)`` at
``127.0.0.1:<its port>``; ``workload_entry(backend, namespace, labels)``:
one of those.

From a config_dump: ``http_filters(dump, listener="0.0.0.0_80") -> [name]``
(the HTTP filter chain in order), ``ecds_configs(dump) -> {name:
typed_config}``, ``cluster(dump, name) -> dict | None``,
``route_config(dump, name) -> dict | None``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Mapping, Sequence

import yaml

from .backends import Backend
from .clients import Client
from .envoy import Envoy
from .envoy_gateway import real_envoy_binary
from .ports import LOOPBACK
from .process import Process, start_process
from .tools import go_tool, go_tools, tool
from .wait import REQUEST_TIMEOUT, hang_guard

ISTIO_MODULE = "istio.io/istio"
(_PIN,) = [t for t in go_tools() if t.name == "pilot-discovery"]
ISTIO_VERSION = _PIN.version

# The pod the gateway pretends to be: what the Gateway's and the
# WasmPlugin's selectors match.
GATEWAY_NAMESPACE = "istio-system"
GATEWAY_POD = "istio-ingressgateway-0"
GATEWAY_LABELS = {"istio": "ingressgateway", "app": "istio-ingressgateway"}
# The gateway's IP as istiod knows it. Not 127.0.0.1, the backends'
# address: istiod would take the gateway for one of those workloads and
# translate the Gateway's ports through their Service.
GATEWAY_IP = "127.0.0.2"
GATEWAY_PORT = 80  # the shipped Gateway's port; istiod's listener 0.0.0.0_80

# istiod's mesh config. Not there, on purpose: defaultProviders and
# extensionProviders (a prometheus metrics provider adds istio.stats).
MESH = {
    "rootNamespace": GATEWAY_NAMESPACE,
    "trustDomain": "cluster.local",
    "enableAutoMtls": False,  # the backends have no sidecars; the gateway no certificate
}

# istiod's environment: the two Istio-proxy-only filters off, and nothing
# it would try to reach outside loopback or patch in the API server.
ISTIOD_ENV = {
    "PILOT_ENABLE_METADATA_EXCHANGE": "false",  # istio.metadata_exchange: istio-proxy only
    "PILOT_ENABLE_ALPN_FILTER": "false",  # istio.alpn: istio-proxy only
    "PILOT_ENABLE_ANALYSIS": "false",
    "PILOT_ENABLE_GATEWAY_API": "false",
    "PILOT_ENABLE_GATEWAY_API_DEPLOYMENT_CONTROLLER": "false",
    "VALIDATION_WEBHOOK_CONFIG_NAME": "",
    "INJECTION_WEBHOOK_CONFIG_NAME": "",
    "POD_NAME": "istiod-0",
    "POD_NAMESPACE": GATEWAY_NAMESPACE,
    "REVISION": "default",
    "ISTIOD_CUSTOM_HOST": "istiod.istio-system.svc",
}

# Variables of the test's own environment that must not leak into a
# gateway unless a test gives them (the migration tests set the keys).
_NOT_INHERITED = ("STICKY_CANARY_KEYS",)


@lru_cache(maxsize=None)
def istio_source() -> Path:
    """The pinned istio.io/istio module in Go's module cache."""
    out = subprocess.run([tool("go"), "env", "GOMODCACHE"], capture_output=True, text=True, check=True,
                         timeout=hang_guard(60))
    src = Path(out.stdout.strip()) / f"{ISTIO_MODULE}@{ISTIO_VERSION}"
    assert (src / "VERSION").exists(), (
        f"{src} is missing: run scripts/setup.sh test (make test does), which downloads it with pilot-discovery")
    return src


def istio_release() -> str:
    """The Istio release the pinned module is the development of (its VERSION file)."""
    return (istio_source() / "VERSION").read_text().strip()


def istio_crds() -> list[dict]:
    """Istio's CRDs, from the pinned module (never copied into this repository)."""
    path = istio_source() / "manifests" / "charts" / "base" / "files" / "crd-all.gen.yaml"
    return [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "CustomResourceDefinition"]


# ---------------------------------------------------------------------------
# istiod


@dataclass
class Istiod:
    proc: Process
    http_port: int
    grpc_port: int
    ns: object

    def log(self) -> str:
        return self.proc.log()

    def debug(self, path: str) -> str:
        """GET istiod's HTTP debug endpoint (``/debug/configz``, ...)."""
        status, text = self.ns.get(self.http_port, path, timeout=REQUEST_TIMEOUT)
        assert status == 200, f"istiod {path}: {status} {text[:300]}"
        return text

    def stop(self) -> None:
        self.proc.stop(grace=10.0)


def start_istiod(workdir: Path, kube, ns, *, config_dir: Path | None = None, env: Mapping[str, str] | None = None,
                 timeout: float = 120.0) -> Istiod:
    """pilot-discovery discovery against `kube` (a testkit.kube.Kube), inside `ns`."""
    d = Path(workdir)
    d.mkdir(parents=True, exist_ok=True)
    (d / "mesh.yaml").write_text(yaml.safe_dump(MESH))
    http_port, grpc, secure_grpc, https, monitoring, ctrlz = ns.free_ports(6)
    argv = [
        str(go_tool("pilot-discovery")), "discovery",
        f"--kubeconfig={kube.kubeconfig}",
        f"--meshConfig={d / 'mesh.yaml'}",
        f"--networksConfig={d / 'meshNetworks.yaml'}",  # absent: no networks
        f"--httpAddr={LOOPBACK}:{http_port}",
        f"--grpcAddr={LOOPBACK}:{grpc}",  # plaintext xDS, what the gateway uses
        f"--secureGRPCAddr={LOOPBACK}:{secure_grpc}",
        f"--httpsAddr={LOOPBACK}:{https}",
        f"--monitoringAddr={LOOPBACK}:{monitoring}",
        f"--ctrlz_port={ctrlz}", f"--ctrlz_address={LOOPBACK}",
        "--domain=cluster.local",
    ]
    if config_dir is not None:
        argv.append(f"--configDir={config_dir}")
    full_env = dict(os.environ, **ISTIOD_ENV, **(env or {}))

    def ready(proc: Process) -> bool:
        return ns.get(http_port, "/ready", timeout=2.0)[0] == 200

    proc = start_process("istiod", argv, d / "istiod.log", ready=ready, timeout=hang_guard(timeout), cwd=d,
                         env=full_env, poll=0.2, kill_group=True, preexec_fn=ns.preexec(d))
    return Istiod(proc, http_port, grpc, ns)


# ---------------------------------------------------------------------------
# the gateway: pilot-agent and its Envoy


class Gateway(Envoy):
    """pilot-agent in router mode and the Envoy it runs (admin on a free port)."""

    def __init__(self, proc: Process, admin_port: int, workdir: Path, ns):
        self.ns = ns
        super().__init__(proc, GATEWAY_PORT, admin_port, workdir / "etc/istio/proxy/envoy-rev.json", 0, {})
        self.workdir = workdir
        # /var/lib/istio/data as the agent sees it: its Wasm cache.
        self.wasm_cache = workdir / "var-lib" / "istio" / "data"

    def admin(self, path: str) -> tuple[int, str]:
        return self.ns.get(self.admin_port, path, timeout=REQUEST_TIMEOUT)

    def client(self, timeout: float = REQUEST_TIMEOUT, *, authority: str | None = None) -> Client:
        """A keep-alive client for the gateway's port 80 (`authority`: the Host)."""
        return self.ns.client(self.port, authority=authority, timeout=timeout)

    def config_dump_json(self, eds: bool = False) -> dict:
        status, text = self.admin("/config_dump" + ("?include_eds" if eds else ""))
        assert status == 200, text[:500]
        return json.loads(text)

    def stop(self) -> int | None:
        # SIGTERM: the agent drains for terminationDrainDuration and kills
        # Envoy; the group kill (kill_group) catches an Envoy left behind.
        return self.proc.stop(grace=15.0)


def _bootstrap_template(dst: Path) -> None:
    """The bootstrap template an istio-proxy image ships at
    /var/lib/istio/envoy/envoy_bootstrap_tmpl.json; the agent reads it
    relative to its working directory. Taken from the Istio module."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(istio_source() / "tools" / "packaging" / "common" / "envoy_bootstrap.json", dst)
    dst.chmod(0o644)


def start_gateway(workdir: Path, istiod: Istiod, ns, *, env: Mapping[str, str] | None = None,
                  timeout: float = 120.0) -> Gateway:
    """pilot-agent proxy router as the ingress gateway pod, inside `ns`; see
    the module doc."""
    d = Path(workdir)
    (d / "etc" / "istio" / "proxy").mkdir(parents=True, exist_ok=True)
    (d / "var-lib" / "istio" / "data").mkdir(parents=True, exist_ok=True)
    _bootstrap_template(d / "var" / "lib" / "istio" / "envoy" / "envoy_bootstrap_tmpl.json")
    admin, status, envoy_status, prometheus = ns.free_ports(4)
    proxy_config = {
        "discoveryAddress": f"{LOOPBACK}:{istiod.grpc_port}",
        "controlPlaneAuthPolicy": "NONE",  # plaintext xDS: no root certificate needed
        "binaryPath": str(real_envoy_binary()),  # the executable, not .venv/bin/envoy's wrapper
        "proxyAdminPort": admin,
        "statusPort": status,
        "concurrency": 1,
        "drainDuration": "1s",
        "terminationDrainDuration": "1s",
        "proxyStatsMatcher": {"inclusionRegexps": [".*"]},
    }
    (d / "mesh.yaml").write_text(yaml.safe_dump({"defaultConfig": proxy_config}))
    full_env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
    full_env.update({
        "POD_NAME": GATEWAY_POD,
        "POD_NAMESPACE": GATEWAY_NAMESPACE,
        "INSTANCE_IP": GATEWAY_IP,
        "SERVICE_ACCOUNT": "istio-ingressgateway-service-account",
        "ISTIO_META_CLUSTER_ID": "Kubernetes",
        "ISTIO_META_WORKLOAD_NAME": "istio-ingressgateway",
        "ISTIO_META_OWNER": f"kubernetes://apis/apps/v1/namespaces/{GATEWAY_NAMESPACE}/deployments/istio-ingressgateway",
        "ISTIO_METAJSON_LABELS": json.dumps(GATEWAY_LABELS),
        "ISTIO_META_MESH_ID": "cluster.local",
        "TRUST_DOMAIN": "cluster.local",
        "JWT_POLICY": "none",  # no service-account token file
        "FILE_MOUNTED_CERTS": "true",  # no CA client: no workload certificate to fetch
        "GRPC_XDS_BOOTSTRAP": "",  # no gRPC bootstrap file
        "WASM_INSECURE_REGISTRIES": "*",  # what a user sets for a plain-HTTP registry
        "ENVOY_STATUS_PORT": str(envoy_status),
        "ENVOY_PROMETHEUS_PORT": str(prometheus),
    })
    full_env.update(env or {})
    agent = [str(go_tool("pilot-agent")), "proxy", "router", f"--meshConfig={d / 'mesh.yaml'}",
             "--domain", f"{GATEWAY_NAMESPACE}.svc.cluster.local",
             "--proxyLogLevel=info", "--proxyComponentLogLevel=wasm:info"]
    # A mount namespace of its own (util-linux unshare; propagation private)
    # in which /var/lib is the test's directory: the agent caches Wasm
    # modules in the absolute /var/lib/istio/data.
    argv = [tool("unshare"), "--mount", "--", "sh", "-c", 'mount --bind "$0" /var/lib && exec "$@"',
            str(d / "var-lib"), *agent]

    def ready(proc: Process) -> bool:
        status, body = ns.get(admin, "/ready", timeout=2.0)
        return status == 200 and body.strip() == "LIVE" and ns.accepts(GATEWAY_PORT)

    proc = start_process("pilot-agent", argv, d / "pilot-agent.log", ready=ready, timeout=hang_guard(timeout),
                         cwd=d, env=full_env, poll=0.2, kill_group=True, preexec_fn=ns.preexec(d))
    return Gateway(proc, admin, d, ns)


# ---------------------------------------------------------------------------
# backends


def backend_objects(host: str, namespace: str, pods: Sequence[tuple[Mapping[str, str], Backend]],
                    selector: Mapping[str, str] | None = None, port: int = 80) -> list[dict]:
    """A ServiceEntry for `host` (service port `port`, HTTP) and one
    WorkloadEntry per pod at 127.0.0.1:<its port>: the endpoints a
    cluster's Pods would be. The ServiceEntry selects `selector` (default:
    the labels all pods share)."""
    if selector is None:
        common = set(pods[0][0].items())
        for labels, _ in pods[1:]:
            common &= set(labels.items())
        selector = dict(common)
    assert selector, "the pods share no label to select them by"
    out = [{
        "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
        "metadata": {"name": host.split(".")[0], "namespace": namespace},
        "spec": {
            "hosts": [host],
            "location": "MESH_INTERNAL",
            "resolution": "STATIC",
            "ports": [{"number": port, "name": "http", "protocol": "HTTP"}],
            "workloadSelector": {"labels": dict(selector)},
        },
    }]
    for labels, pod in pods:
        out.append(workload_entry(pod, namespace, labels))
    return out


def workload_entry(pod: Backend, namespace: str, labels: Mapping[str, str]) -> dict:
    """A WorkloadEntry named after the pod's hostname, at 127.0.0.1:<port>."""
    return {
        "apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
        "metadata": {"name": pod.hostname, "namespace": namespace, "labels": dict(labels)},
        "spec": {"address": LOOPBACK, "ports": {"http": pod.port}, "labels": dict(labels)},
    }


# ---------------------------------------------------------------------------
# reading a config_dump


def _configs(dump: dict, suffix: str) -> list[dict]:
    return [c for c in dump.get("configs", []) if c.get("@type", "").endswith(suffix)]


def http_filters(dump: dict, listener: str = "0.0.0.0_80") -> list[str]:
    """The HTTP filters of `listener`'s connection manager, in order (every
    filter chain has the same here; the first is read)."""
    for c in _configs(dump, "ListenersConfigDump"):
        for dl in c.get("dynamic_listeners", []):
            if dl.get("name") != listener:
                continue
            for chain in dl.get("active_state", {}).get("listener", {}).get("filter_chains", []):
                for f in chain.get("filters", []):
                    if f.get("name") == "envoy.filters.network.http_connection_manager":
                        return [h["name"] for h in f["typed_config"].get("http_filters", [])]
    raise AssertionError(f"no active listener {listener} with an HTTP connection manager")


def ecds_configs(dump: dict) -> dict[str, dict]:
    """ECDS filter name -> its typed_config (as Envoy holds it)."""
    out = {}
    for c in _configs(dump, "EcdsConfigDump"):
        for e in c.get("ecds_filters", []):
            f = e.get("ecds_filter", {})
            out[f.get("name")] = f.get("typed_config", {})
    return out


def _dynamic(dump: dict, suffix: str, key: str, item: str, name: str) -> dict | None:
    for c in _configs(dump, suffix):
        for entry in c.get(key, []):
            if entry[item]["name"] == name:
                return entry[item]
    return None


def cluster(dump: dict, name: str) -> dict | None:
    """The dynamic (CDS) cluster `name`."""
    return _dynamic(dump, "ClustersConfigDump", "dynamic_active_clusters", "cluster", name)


def route_config(dump: dict, name: str) -> dict | None:
    """The dynamic (RDS) route configuration `name` (``http.80``)."""
    return _dynamic(dump, "RoutesConfigDump", "dynamic_route_configs", "route_config", name)
