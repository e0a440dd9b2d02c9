"""Running `sticky-canary migrate` from the tests, and starting the Envoy it
writes in front of whoami backends.

``build_cli()`` builds the CLI once (``cargo build -p sticky-canary-cli``)
and returns the binary. ``migrate(cli, manifests, target, workdir, *args)``
writes the manifests (a str or a list of dicts) to a file, runs the CLI
with ``-o`` and returns a ``Migration``: ``.code``, ``.plugin`` (dict),
``.manifests`` (text), ``.docs`` (the YAML documents), ``.report`` (text),
``.lossy`` (the LOSSY lines as ``(object, annotation)`` pairs),
``.envoy_config`` (the envoy.yaml as a dict, target envoy only).

``start_migrated_envoy(migration, workdir, pods)`` starts the generated
envoy.yaml with every cluster's endpoints replaced: ``pods`` maps a
cluster-name predicate (a function of the cluster name) or a cluster name
to a list of ``testkit.Backend``. It checks that the filter accepted the
plugin config (the counter), so a refused config cannot pass as
pass-through.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

import testkit
from testkit.rollouts import binomial

REPO_ROOT = testkit.REPO_ROOT
CLI = REPO_ROOT / "target" / "debug" / "sticky-canary"
# Persistent mode reads its cookie keys from the Wasm VM's environment;
# Envoy passes this variable of its own environment through.
KEYS = "Q1lG7l18ymBfHj+aouEhmFQVKqbdmDCszs+N7gTOhAo="
os.environ["STICKY_CANARY_KEYS"] = KEYS
ACCEPTED = "sticky_canary_config_total.result=.=accepted;.;"
REFUSED = "sticky_canary_config_total.result=.=refused;.;"

_built = False
_seq = itertools.count()


def build_cli() -> Path:
    global _built
    if not _built:
        subprocess.run(
            ["cargo", "build", "-q", "-p", "sticky-canary-cli"],
            cwd=REPO_ROOT,
            check=True,
            timeout=testkit.hang_guard(1800),
        )
        _built = True
    return CLI


@dataclass
class Migration:
    code: int
    plugin: dict
    manifests: str
    report: str
    stderr: str
    target: str

    @property
    def docs(self) -> list[dict]:
        return [d for d in yaml.safe_load_all(self.manifests) if d is not None]

    @property
    def envoy_config(self) -> dict:
        assert self.target == "envoy"
        return self.docs[0]

    @property
    def lossy(self) -> list[tuple[str, str]]:
        out = []
        for line in self.report.splitlines():
            if line.startswith("LOSSY  "):
                parts = line[len("LOSSY  "):].split("  ")
                out.append((parts[0], parts[1]))
        return out


FILES = {"envoy": "envoy.yaml", "istio": "istio.yaml", "envoy-gateway": "envoy-gateway.yaml"}


def migrate(cli: Path, manifests, target: str, workdir: Path, *args: str) -> Migration:
    n = next(_seq)
    src = Path(workdir) / f"ingress-{n}.yaml"
    if not isinstance(manifests, str):
        manifests = yaml.safe_dump_all(manifests, sort_keys=False)
    src.write_text(manifests)
    out = Path(workdir) / f"out-{n}"
    r = subprocess.run(
        [str(cli), "migrate", "--target", target, "-o", str(out), *args, str(src)],
        capture_output=True,
        text=True,
        timeout=testkit.hang_guard(300),
    )
    read = lambda name: (out / name).read_text() if (out / name).exists() else ""  # noqa: E731
    plugin = read("plugin.json")
    return Migration(
        code=r.returncode,
        plugin=yaml.safe_load(plugin) if plugin else {},
        manifests=read(FILES[target]),
        report=read("report.txt"),
        stderr=r.stderr,
        target=target,
    )


def start_migrated_envoy(m: Migration, workdir: Path, pods) -> testkit.Envoy:
    """Start m's envoy.yaml with each cluster pointing at the given pods."""
    config = m.envoy_config
    endpoints = {}
    for c in config["static_resources"]["clusters"]:
        name = c["name"]
        chosen = None
        for key, backends in pods.items():
            if (callable(key) and key(name)) or key == name:
                chosen = backends
                break
        assert chosen is not None, f"no pods given for cluster {name}"
        endpoints[name] = [b.address for b in chosen]
        c["type"] = "STATIC"  # loopback addresses, no DNS
        c.pop("dns_lookup_family", None)
    envoy = testkit.start_envoy(config, Path(workdir) / f"envoy-{next(_seq)}", endpoints=endpoints)
    counters = envoy.counters("sticky_canary_config")
    assert counters.get(ACCEPTED, 0) >= 1 and counters.get(REFUSED, 0) == 0, (counters, testkit.tail(envoy.log(), 40))
    return envoy


def ingress(name: str, namespace: str, host: str | None, paths, annotations=None, *, default_backend=None) -> dict:
    """A networking.k8s.io/v1 Ingress; ``paths``: [(path, service)] or
    [(path, service, pathType)], port 80."""
    anns = {}
    for k, v in (annotations or {}).items():
        anns[k if "/" in k else f"nginx.ingress.kubernetes.io/{k}"] = v
    spec: dict = {"ingressClassName": "nginx"}
    if default_backend:
        spec["defaultBackend"] = {"service": {"name": default_backend, "port": {"number": 80}}}
    if paths:
        rule: dict = {
            "http": {
                "paths": [
                    {
                        "path": p[0],
                        "pathType": p[2] if len(p) > 2 else "Prefix",
                        "backend": {"service": {"name": p[1], "port": {"number": 80}}},
                    }
                    for p in paths
                ]
            }
        }
        if host:
            rule = {"host": host, **rule}
        spec["rules"] = [rule]
    meta: dict = {"name": name, "namespace": namespace}
    if anns:
        meta["annotations"] = anns
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec}


def client(envoy: testkit.Envoy) -> testkit.Client:
    """A keep-alive client; a `Host` among a request's headers replaces the
    one http.client would add (the Ingress host to route on)."""
    return testkit.Client(envoy.port)


def within_5_sd(count: int, n: int, p: float) -> bool:
    """Whether a Binomial(n, p) count lies within 5 standard deviations of
    n p (testkit.rollouts.binomial)."""
    mean, tol = binomial(n, p)
    return abs(count - mean) <= tol
