"""`sticky-canary migrate --target envoy-gateway` writes the image as the
shipped templates do: the placeholder registry and a placeholder sha256
marked REPLACE-ME, which `istio/oci.py --registry R --pin FILE` (`make oci
REGISTRY=R PIN=FILE`) replaces with the registry and the manifest digest of
the image it builds. The pinned file still validates against Envoy
Gateway's schemas; `--wasm-sha256` writes a digest directly; the
EnvoyExtensionPolicy fails open unless `--fail-closed`."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

import migrate_support as ms
import testkit
from testkit import eg_validate

WASM = testkit.REPO_ROOT / "target" / "wasm32-wasip1" / "release" / "sticky_canary.wasm"
INGRESSES = [
    ms.ingress("web", "shop", "shop.example.com", [("/", "web")], {"affinity": "cookie"}),
    ms.ingress("web-canary", "shop", "shop.example.com", [("/", "web-next")], {"canary": "true", "canary-weight": "10"}),
]


def eep(m: ms.Migration) -> dict:
    (p,) = [d for d in m.docs if d["kind"] == "EnvoyExtensionPolicy"]
    return p


def test_placeholders_then_pinned_by_oci_py(cli, workdir):
    m = ms.migrate(cli, INGRESSES, "envoy-gateway", workdir)
    assert m.code == 0, m.stderr
    (w,) = eep(m)["spec"]["wasm"]
    assert w["code"]["image"]["url"].startswith("REGISTRY.example/REPLACE-ME/sticky-canary:")
    assert w["code"]["image"]["sha256"] == "0" * 64
    assert w["failOpen"] is True
    assert "sha256: '" + "0" * 64 + "'   # REPLACE-ME" in m.manifests
    assert "placeholder" in m.report and "istio/oci.py" in m.report

    out = workdir / "pin"
    out.mkdir()
    target = out / "envoy-gateway.yaml"
    target.write_text(m.manifests)
    r = subprocess.run(
        [sys.executable, str(testkit.REPO_ROOT / "istio" / "oci.py"), "--wasm", str(WASM), "--out", str(out / "oci"),
         "--dist", str(out / "dist"), "--registry", "registry.test/team", "--pin", str(target), "--json"],
        capture_output=True, text=True, timeout=testkit.hang_guard(300),
    )
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    text = target.read_text()
    assert "REPLACE-ME" not in text, text
    docs = [d for d in yaml.safe_load_all(text) if d]
    (p,) = [d for d in docs if d["kind"] == "EnvoyExtensionPolicy"]
    (w,) = p["spec"]["wasm"]
    assert w["code"]["image"]["url"] == f"registry.test/team/sticky-canary:{info['tag']}"
    assert "sha256:" + w["code"]["image"]["sha256"] == info["manifest_digest"]
    assert info["pinned"], info
    for d in docs:
        assert eg_validate.validate(d) == [], d["kind"]


def test_sha256_and_fail_closed_flags(cli, workdir):
    digest = "ab" * 32
    m = ms.migrate(cli, INGRESSES, "envoy-gateway", workdir, "--wasm-sha256", digest, "--fail-closed",
                   "--wasm-image", "registry.test/team/sticky-canary:1.2.3")
    assert m.code == 0, m.stderr
    (w,) = eep(m)["spec"]["wasm"]
    assert w["code"]["image"] == {"url": "registry.test/team/sticky-canary:1.2.3", "sha256": digest}
    assert w["failOpen"] is False
    assert "REPLACE-ME" not in m.manifests and "placeholder" not in m.report
    # The policy covers the generated HTTPRoute only, not the Gateway.
    routes = [d["metadata"]["name"] for d in m.docs if d["kind"] == "HTTPRoute"]
    assert eep(m)["spec"]["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": r} for r in routes]
