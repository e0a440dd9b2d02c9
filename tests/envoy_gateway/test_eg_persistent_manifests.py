"""envoy-gateway/persistent/: persistent mode on Envoy Gateway through
BackendTrafficPolicy endpointOverride. Every manifest validates against
Envoy Gateway's and the Gateway API's schemas (eg_validate.py, as
test_eg_manifests.py does for envoy-gateway/), the manifests fit together
with the base example they replace parts of, the plugin config compiles in
the filter's own parser (`sticky-canary check`), and `sticky-canary migrate
--target envoy-gateway` writes the same load balancing, retry, health check
and circuit breaker for an Ingress with `affinity-mode: persistent`.

What Envoy Gateway renders from them, and how it behaves when a pod dies
or pods are added, is test_eg_persistent.py's job (the real Envoy Gateway).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from testkit import eg_validate as ev

REPO_ROOT = Path(__file__).resolve().parents[2]
EG = REPO_ROOT / "envoy-gateway"
PERSISTENT = EG / "persistent"
KEYS = "Q1lG7l18ymBfHj+aouEhmFQVKqbdmDCszs+N7gTOhAo="
CLI = REPO_ROOT / "target" / "debug" / "sticky-canary"


def load(directory: Path) -> list[tuple[str, dict]]:
    out = []
    for f in sorted(directory.glob("*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(f.read_text())):
            if doc:
                out.append((f"{f.relative_to(REPO_ROOT)}#{i}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return out


DOCS = load(PERSISTENT)
BASE = load(EG)


def one(kind: str, docs=DOCS) -> dict:
    (d,) = [d for _, d in docs if d["kind"] == kind]
    return d


def test_manifests_found():
    assert sorted(d["kind"] for _, d in DOCS) == ["BackendTrafficPolicy", "EnvoyExtensionPolicy", "EnvoyProxy", "Gateway"]
    assert (PERSISTENT / "README.md").is_file()


@pytest.mark.parametrize("label,doc", DOCS, ids=[d[0] for d in DOCS])
def test_manifest_is_valid(label, doc):
    assert ev.validate(doc) == []


@pytest.mark.parametrize("kind,path,bad", [
    ("BackendTrafficPolicy", ["spec", "loadBalancer", "endpointOverride"], "extractfrom"),
    ("BackendTrafficPolicy", ["spec", "loadBalancer", "endpointOverride", "extractFrom", 0], "headers"),
    ("BackendTrafficPolicy", ["spec", "healthCheck", "passive"], "consecutiveLocalOriginFailure"),
    ("EnvoyProxy", ["spec", "provider", "kubernetes", "envoyDeployment", "container"], "envs"),
    ("EnvoyExtensionPolicy", ["spec", "wasm", 0, "env"], "hostkeys"),
])
def test_misspelt_field_fails(kind, path, bad):
    errors = ev.validate_misspelt(one(kind), path, bad)
    assert any(bad in e for e in errors), errors


def test_the_files_replace_their_base_namesakes():
    """gateway.yaml, backendtrafficpolicy.yaml and envoyextensionpolicy.yaml
    replace the base example's objects of the same name; app.yaml,
    httproute.yaml and the GatewayClass stay."""
    for kind in ("Gateway", "BackendTrafficPolicy", "EnvoyExtensionPolicy"):
        mine, base = one(kind), one(kind, BASE)
        assert (mine["metadata"]["name"], mine["metadata"]["namespace"]) == (base["metadata"]["name"], base["metadata"]["namespace"])
    gw = one("Gateway")
    assert gw["spec"]["listeners"] == one("Gateway", BASE)["spec"]["listeners"]
    assert gw["spec"]["gatewayClassName"] == one("GatewayClass", BASE)["metadata"]["name"]
    route = one("HTTPRoute", BASE)["metadata"]["name"]
    for kind in ("BackendTrafficPolicy", "EnvoyExtensionPolicy"):
        assert one(kind)["spec"]["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": route}]


def test_the_keys_reach_the_wasm_vm_from_a_secret():
    gw, proxy = one("Gateway"), one("EnvoyProxy")
    ref = gw["spec"]["infrastructure"]["parametersRef"]
    assert ref == {"group": "gateway.envoyproxy.io", "kind": "EnvoyProxy", "name": proxy["metadata"]["name"]}
    assert proxy["metadata"]["namespace"] == gw["metadata"]["namespace"]
    (env,) = proxy["spec"]["provider"]["kubernetes"]["envoyDeployment"]["container"]["env"]
    assert env == {"name": "STICKY_CANARY_KEYS", "valueFrom": {"secretKeyRef": {"name": "sticky-canary-keys", "key": "keys"}}}
    (w,) = one("EnvoyExtensionPolicy")["spec"]["wasm"]
    assert w["env"] == {"hostKeys": ["STICKY_CANARY_KEYS"]}
    session = w["config"]["routes"][0]["session"]
    assert session["mode"] == "persistent" and session["secrets_env"] == "STICKY_CANARY_KEYS"
    assert "secrets" not in json.dumps(w["config"]).replace("secrets_env", "")
    # the same image placeholders as every template (make oci renders them)
    assert w["code"]["image"]["sha256"] == "0" * 64 and w["failOpen"] is True
    assert w["code"]["image"]["url"].startswith("REGISTRY.example/REPLACE-ME/sticky-canary:")


def test_override_host_on_the_filters_endpoint_header_with_least_request_as_fallback():
    spec = one("BackendTrafficPolicy")["spec"]
    lb = spec["loadBalancer"]
    assert lb == {"type": "LeastRequest", "endpointOverride": {"extractFrom": [{"header": "x-sticky-endpoint"}]}}
    r = spec["retry"]
    assert r["numRetries"] >= 1
    assert {"connect-failure", "refused-stream", "reset-before-request", "reset", "retriable-status-codes"} <= set(r["retryOn"]["triggers"])
    assert r["retryOn"]["httpStatusCodes"] == [503]
    assert spec["healthCheck"]["passive"] == {"splitExternalLocalOriginErrors": True, "consecutiveLocalOriginFailures": 1}
    assert spec["circuitBreaker"]["maxParallelRetries"] >= 128


def cli() -> Path:
    if not CLI.exists():
        subprocess.run(["cargo", "build", "-q", "-p", "sticky-canary-cli"], cwd=REPO_ROOT, check=True, timeout=1800)
    return CLI


def test_plugin_config_compiles_in_the_filter(tmp_path):
    (w,) = one("EnvoyExtensionPolicy")["spec"]["wasm"]
    config = tmp_path / "plugin.json"
    config.write_text(json.dumps(w["config"]))
    env = {**os.environ, "STICKY_CANARY_KEYS": KEYS}
    r = subprocess.run([str(cli()), "check", str(config)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "persistent" in r.stdout, r.stdout
    # Without the keys the filter refuses it, naming the variable.
    env.pop("STICKY_CANARY_KEYS")
    r = subprocess.run([str(cli()), "check", str(config)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode != 0 and "STICKY_CANARY_KEYS" in r.stdout + r.stderr, r.stdout + r.stderr


def test_migrate_writes_what_the_example_ships(tmp_path):
    ingresses = [
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
         "metadata": {"name": "my-app", "namespace": "default", "annotations": {
             "nginx.ingress.kubernetes.io/affinity": "cookie",
             "nginx.ingress.kubernetes.io/affinity-mode": "persistent",
             "nginx.ingress.kubernetes.io/session-cookie-change-on-failure": "true",
             "nginx.ingress.kubernetes.io/session-cookie-name": "my-sticky-cookie"}},
         "spec": {"rules": [{"host": "my-app.example.com", "http": {"paths": [
             {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "my-app-v1", "port": {"number": 80}}}}]}}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
         "metadata": {"name": "my-app-canary", "namespace": "default", "annotations": {
             "nginx.ingress.kubernetes.io/canary": "true", "nginx.ingress.kubernetes.io/canary-weight": "20"}},
         "spec": {"rules": [{"host": "my-app.example.com", "http": {"paths": [
             {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "my-app-v2", "port": {"number": 80}}}}]}}]}},
    ]
    src = tmp_path / "ingress.yaml"
    src.write_text(yaml.safe_dump_all(ingresses))
    r = subprocess.run([str(cli()), "migrate", "--target", "envoy-gateway", str(src)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    (btp,) = [d for d in docs if d["kind"] == "BackendTrafficPolicy"]
    shipped = one("BackendTrafficPolicy")["spec"]
    for key in ("loadBalancer", "retry", "healthCheck", "circuitBreaker"):
        assert btp["spec"][key] == shipped[key], key
    (eep,) = [d for d in docs if d["kind"] == "EnvoyExtensionPolicy"]
    (w,) = eep["spec"]["wasm"]
    assert w["env"] == one("EnvoyExtensionPolicy")["spec"]["wasm"][0]["env"] and w["failOpen"] is True
    assert eep["spec"]["targetRefs"] == btp["spec"]["targetRefs"]
    for d in docs:
        assert ev.validate(d) == [], d["kind"]
    assert "Envoy Gateway 1.6 or newer" in r.stdout
