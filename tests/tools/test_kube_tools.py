"""kube-apiserver and etcd for the Istio tests (built by scripts/setup.sh
from the wrapper module tests/tools/kube into .tools/bin): installed, built
from that module as it is now (testkit.kube.kube_tool checks the stamp),
and the versions its go.mod pins, as `go version -m` reads them from the
binaries.
"""

from __future__ import annotations

import re
import subprocess

from testkit import hang_guard
from testkit.kube import KUBE_MODULE, kube_tool, kube_version
from testkit.tools import tool


def required(module: str) -> str:
    """The version tests/tools/kube/go.mod requires of `module`."""
    m = re.search(rf"^\s*{re.escape(module)} (v\S+)", (KUBE_MODULE / "go.mod").read_text(), re.M)
    assert m, f"{module} not required in {KUBE_MODULE / 'go.mod'}"
    return m.group(1)


def build_info(path) -> list[list[str]]:
    out = subprocess.run([tool("go"), "version", "-m", str(path)], capture_output=True, text=True,
                         timeout=hang_guard(60))
    assert out.returncode == 0, out.stderr
    return [line.split() for line in out.stdout.splitlines()]


def test_kube_apiserver_is_the_pinned_release(tmp_path):
    version = kube_version()
    path = kube_tool("kube-apiserver")
    info = build_info(path)
    assert ["path", "k8s.io/kubernetes/cmd/kube-apiserver"] in [f[:2] for f in info], info
    assert ["mod", "k8s.io/kubernetes", version] in [f[:3] for f in info], info
    out = subprocess.run([str(path), "--version"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=hang_guard(60))
    assert out.returncode == 0 and out.stdout.strip() == f"Kubernetes {version}", out.stdout + out.stderr


def test_etcd_embeds_the_etcd_kubernetes_requires():
    info = build_info(kube_tool("etcd"))
    assert ["path", "sticky-canary.test/kube/etcd"] in [f[:2] for f in info], info
    assert ["dep", "go.etcd.io/etcd/server/v3", required("go.etcd.io/etcd/server/v3")] in [f[:3] for f in info], info
