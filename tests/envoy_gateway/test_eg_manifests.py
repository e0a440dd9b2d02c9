"""Every manifest under envoy-gateway/ is valid against Envoy Gateway's and
the Gateway API's schemas (testkit/eg_validate.py), the validator catches a
misspelt field and the CEL rules that matter, and the manifests fit
together the way envoy-gateway/README.md needs them: the HTTPRoute routes
the filter's version header to one Service per version and the rest to the
default version, the BackendTrafficPolicy hashes on the filter's hash
header, both policies and the plugin config cover only my-app, and every
reference resolves.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from testkit import eg_validate as ev

REPO_ROOT = Path(__file__).resolve().parents[2]
EG = REPO_ROOT / "envoy-gateway"
PLACEHOLDER = "REGISTRY.example/REPLACE-ME/sticky-canary"
CARGO_VERSION = re.search(r'(?ms)^\[package\][^\[]*?^version\s*=\s*"([^"]+)"', (REPO_ROOT / "Cargo.toml").read_text()).group(1)


def load_docs() -> list[tuple[str, dict]]:
    out = []
    for f in sorted(EG.glob("*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(f.read_text())):
            if doc:
                out.append((f"{f.relative_to(REPO_ROOT)}#{i}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return out


DOCS = load_docs()


def by_kind(kind: str) -> list[dict]:
    return [d for _, d in DOCS if d["kind"] == kind]


def one(kind: str) -> dict:
    (d,) = by_kind(kind)
    return d


def test_manifests_found():
    assert {d["kind"] for _, d in DOCS} == {"GatewayClass", "Gateway", "HTTPRoute", "EnvoyExtensionPolicy", "BackendTrafficPolicy", "Service", "Deployment"}


@pytest.mark.parametrize("label,doc", DOCS, ids=[d[0] for d in DOCS])
def test_manifest_is_valid(label, doc):
    assert ev.validate(doc) == []


# ---------------------------------------------------------------------------
# The validator rejects mistakes


@pytest.mark.parametrize("kind,path,bad", [
    ("EnvoyExtensionPolicy", ["spec", "wasm", 0], "failOpn"),
    ("EnvoyExtensionPolicy", ["spec", "wasm", 0, "code", "image"], "sha265"),
    ("BackendTrafficPolicy", ["spec", "loadBalancer", "consistentHash"], "tablesize"),
    ("HTTPRoute", ["spec", "rules", 0, "matches", 0], "header"),
    ("Gateway", ["spec", "listeners", 0], "hostName"),
    ("GatewayClass", ["spec"], "controller"),
])
def test_misspelt_field_fails(kind, path, bad):
    errors = ev.validate_misspelt(one(kind), path, bad)
    assert any(bad in e for e in errors), errors


def test_wrong_enum_and_type_fail():
    doc = copy.deepcopy(one("EnvoyExtensionPolicy"))
    doc["spec"]["wasm"][0]["code"]["type"] = "OCI"
    doc["spec"]["wasm"][0]["failOpen"] = "true"
    errors = ev.check_schema(doc)
    assert any("spec/wasm/0/code/type" in e and "OCI" in e for e in errors), errors
    assert any("spec/wasm/0/failOpen" in e for e in errors), errors


def test_cel_rules_fail():
    eep = copy.deepcopy(one("EnvoyExtensionPolicy"))
    eep["spec"]["wasm"][0]["code"]["type"] = "HTTP"
    eep["spec"]["targetRef"] = eep["spec"]["targetRefs"][0]
    errors = ev.check_cel(eep)
    assert any("if type is HTTP, http must be set" in e for e in errors), errors
    assert any("if type is Image, image must be set" in e for e in errors), errors
    assert any("either targetRef or targetRefs" in e for e in errors), errors
    btp = copy.deepcopy(one("BackendTrafficPolicy"))
    btp["spec"]["loadBalancer"]["consistentHash"]["type"] = "Header"
    btp["spec"]["targetRefs"][0]["group"] = ""
    errors = ev.check_cel(btp)
    assert any("if type is Header, header must be set" in e for e in errors), errors
    assert any("if type is Headers, headers must be set" in e for e in errors), errors
    assert any("group of gateway.networking.k8s.io" in e for e in errors), errors


# ---------------------------------------------------------------------------
# The manifests fit together


def plugin_config() -> dict:
    (w,) = one("EnvoyExtensionPolicy")["spec"]["wasm"]
    return w["config"]


def app_policy() -> dict:
    pc = plugin_config()
    (entry,) = pc["routes"]
    merged = {k: copy.deepcopy(v) for k, v in pc.items() if k != "routes"}
    for k, v in entry.items():
        if k in ("name", "match"):
            continue
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            for kk, vv in v.items():
                merged[k][kk] = {**merged[k][kk], **vv} if isinstance(vv, dict) and isinstance(merged[k].get(kk), dict) else vv
        else:
            merged[k] = v
    return merged


def headers() -> dict:
    h = {"version": "x-canary-version", "hash": "x-sticky-hash"}
    h.update(app_policy().get("headers") or {})
    return h


def test_wasm_fields_are_deliberate():
    (w,) = one("EnvoyExtensionPolicy")["spec"]["wasm"]
    assert w["rootID"] == "sticky-canary" and w["name"] == "sticky-canary"
    assert w["failOpen"] is True
    assert w["code"]["type"] == "Image"
    # the same template placeholders as the Istio manifests (make oci renders
    # dist/envoy-gateway/ with the registry and the digest); no oci:// here
    assert w["code"]["image"]["url"] == f"{PLACEHOLDER}:{CARGO_VERSION}"
    assert w["code"]["image"]["sha256"] == "0" * 64


def test_plugin_is_scoped_to_the_route_hosts():
    pc = plugin_config()
    assert "versions" not in pc and "rules" not in pc
    (entry,) = pc["routes"]
    assert entry["match"] == {"authority": one("HTTPRoute")["spec"]["hostnames"]}
    assert len(app_policy()["versions"]) >= 2
    route = one("HTTPRoute")["metadata"]["name"]
    for kind in ("EnvoyExtensionPolicy", "BackendTrafficPolicy"):
        assert one(kind)["spec"]["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": route}]


def test_httproute_routes_versions_to_their_services():
    versions = [v["name"] for v in app_policy()["versions"]]
    route = one("HTTPRoute")
    services = {s["metadata"]["name"]: s for s in by_kind("Service")}
    by_version = {s["spec"]["selector"]["version"]: name for name, s in services.items()}
    *matched, default = route["spec"]["rules"]
    assert "matches" not in default
    assert [b["name"] for b in default["backendRefs"]] == [by_version[versions[0]]]
    seen = set()
    for r in matched:
        (m,) = r["matches"]
        (h,) = m["headers"]
        assert h == {"name": headers()["version"], "type": "Exact", "value": h["value"]}
        assert [b["name"] for b in r["backendRefs"]] == [by_version[h["value"]]]
        seen.add(h["value"])
    assert seen == set(versions[1:])
    for r in route["spec"]["rules"]:
        for b in r["backendRefs"]:
            assert b["port"] in [p["port"] for p in services[b["name"]]["spec"]["ports"]]
    # every Service selects the pods of one Deployment
    for s in by_kind("Service"):
        (dep,) = [d for d in by_kind("Deployment") if s["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert dep["metadata"]["labels"]["version"] == s["spec"]["selector"]["version"]


def test_references_resolve():
    gw, gc, route = one("Gateway"), one("GatewayClass"), one("HTTPRoute")
    assert gw["spec"]["gatewayClassName"] == gc["metadata"]["name"]
    assert [p["name"] for p in route["spec"]["parentRefs"]] == [gw["metadata"]["name"]]
    ns = {d["metadata"].get("namespace") for _, d in DOCS if d["kind"] != "GatewayClass"}
    assert ns == {"default"}


def test_consistent_hash_on_the_filters_hash_header():
    lb = one("BackendTrafficPolicy")["spec"]["loadBalancer"]
    assert lb["type"] == "ConsistentHash"
    assert lb["consistentHash"]["type"] == "Headers"
    assert lb["consistentHash"]["headers"] == [{"name": headers()["hash"]}]


def test_plugin_config_passes_the_config_schema():
    """The plugin config (wasm[].config) against config.schema.json, as the
    Istio plugin configs are in tests/schema (the Envoy test loads it)."""
    import json

    import jsonschema

    schema = json.loads((REPO_ROOT / "config.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    assert [e.message for e in validator.iter_errors(plugin_config())] == []
    bad = copy.deepcopy(plugin_config())
    bad["routes"][0]["versions"][1]["wieght"] = 20
    assert list(validator.iter_errors(bad))
