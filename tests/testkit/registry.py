"""A real OCI registry for the tests, and pushes to it the way users push.

``start_registry(workdir, *, port=0, ns=None) -> Registry`` starts the
CNCF Distribution registry pinned in scripts/go-tools.txt
(``tools.go_tool("registry")``) on 127.0.0.1 with filesystem storage under
``workdir`` and plain HTTP, inside the namespace ``ns`` (a
``testkit.netns.Namespace``; then ``port`` may be a fixed one, default
5000) or on the machine's loopback (a free port unless given), and waits
until ``GET /v2/`` answers 200. ``Registry``: ``.port``, ``.address``
(``127.0.0.1:PORT``, the registry part of an image reference), ``.proc``,
``.log()``, ``.requests()`` (the access-log lines: ``"GET /v2/... HTTP/1.1"
200``, for asserting what was pulled), ``.stop()``.

``oci_build_and_push(repository, workdir, *, wasm=WASM_PATH, ns=None) ->
dict``: what ``make oci-push REGISTRY=<repository>`` runs, with its output
under ``workdir``: ``istio/oci.py --registry REPOSITORY --push --json``
(build the image layout, render the manifests into ``workdir/dist`` with
the registry and the manifest digest, push with ORAS, check the digest the
registry answers). Returns oci.py's JSON (``image``, ``manifest_digest``,
``plugin_wasm_sha256``, ``pushed``...). Inside ``ns`` when given, so that
a registry on the namespace's loopback is reachable.

``oras(*args, ns=None) -> CompletedProcess``: the pinned ORAS
(``tools.go_tool("oras")``), for anything else (``oras manifest fetch``...).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from .envoy import http_get
from .paths import REPO_ROOT, WASM_PATH
from .ports import LOOPBACK, free_port
from .process import Process, ProcessStartError, start_process
from .tools import go_tool
from .wait import START_TIMEOUT, hang_guard

OCI_SCRIPT = REPO_ROOT / "istio" / "oci.py"


class RegistryStartError(ProcessStartError):
    pass


@dataclass
class Registry:
    port: int
    proc: Process
    ns: object | None = None

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def log(self) -> str:
        return self.proc.log()

    def requests(self) -> list[str]:
        """The access-log lines (request line and status) in order."""
        out = []
        for line in self.log().splitlines():
            i = line.find('"GET ') if '"GET ' in line else line.find('"HEAD ')
            if i < 0:
                i = max(line.find('"PUT '), line.find('"POST '), line.find('"PATCH '))
            if i >= 0:
                out.append(line[i:i + 200])
        return out

    def stop(self) -> None:
        self.proc.stop()


def start_registry(workdir: Path, *, port: int = 0, ns=None, timeout: float = START_TIMEOUT) -> Registry:
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or (5000 if ns is not None else free_port())
    config = workdir / "registry.yml"
    config.write_text(yaml.safe_dump({
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": False}},
        "storage": {"filesystem": {"rootdirectory": str(workdir / "data")}, "delete": {"enabled": True}},
        "http": {"addr": f"{LOOPBACK}:{port}"},
    }))

    def ready(_: Process) -> bool:
        status = ns.get(port, "/v2/", timeout=2.0)[0] if ns is not None else http_get(port, "/v2/")[0]
        return status == 200

    # No tracing exporter: the registry would try to reach a collector.
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "none"}
    proc = start_process("registry", [str(go_tool("registry")), "serve", str(config)], workdir / "registry.log",
                         ready=ready, timeout=timeout, env=env, cwd=workdir,
                         preexec_fn=ns.preexec(workdir) if ns is not None else None, error=RegistryStartError)
    return Registry(port, proc, ns)


def oras(*args: str, ns=None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The pinned ORAS with `args` (inside `ns` when given), output captured."""
    argv = [str(go_tool("oras")), *args]
    if ns is not None:
        return ns.run(argv, timeout=hang_guard(timeout))
    return subprocess.run(argv, capture_output=True, text=True, timeout=hang_guard(timeout))


def oci_build_and_push(repository: str, workdir: Path, *, wasm: Path = WASM_PATH, ns=None,
                       timeout: float = 180) -> dict:
    """`make oci-push REGISTRY=repository`, writing under `workdir`."""
    workdir = Path(workdir)
    argv = [sys.executable, str(OCI_SCRIPT), "--wasm", str(wasm), "--out", str(workdir / "oci"),
            "--dist", str(workdir / "dist"), "--registry", repository, "--push", "--oras", str(go_tool("oras")),
            "--json"]
    if ns is not None:
        r = ns.run(argv, cwd=REPO_ROOT, timeout=hang_guard(timeout))
    else:
        r = subprocess.run(argv, capture_output=True, text=True, cwd=REPO_ROOT, timeout=hang_guard(timeout))
    assert r.returncode == 0, f"istio/oci.py --push failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return json.loads(r.stdout)
