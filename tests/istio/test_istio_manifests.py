"""Every manifest under istio/ and examples/ is valid, and the validator is
strict enough to catch a misspelt field (see testkit/istio_validate.py for what each
kind is checked against).

Then the manifests are checked against each other the way the walkthrough
needs them: the DestinationRule subsets are the plugin's version names, the
VirtualService / HTTPRoute matches use the filter's version header and send
the rest to the default version, the consistent hash uses the filter's hash
header, the EnvoyFilter's override_host reads the filter's endpoint header,
and every reference (gateway, subset, service, targetRef) resolves.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from testkit import istio_validate as iv

REPO_ROOT = Path(__file__).resolve().parents[2]
ISTIO = REPO_ROOT / "istio"


def manifest_files() -> list[Path]:
    files = sorted(ISTIO.glob("**/*.yaml")) + sorted((REPO_ROOT / "examples").glob("**/*.yaml"))
    return [f for f in files if not f.name.startswith("docker-compose")]


def load_docs() -> list[tuple[str, dict, tuple[int, int] | None]]:
    out = []
    for f in manifest_files():
        text = f.read_text()
        for i, doc in enumerate(yaml.safe_load_all(text)):
            # Envoy configs under examples/ are checked by the Envoy tests.
            if isinstance(doc, dict) and "apiVersion" in doc:
                out.append((f"{f.relative_to(REPO_ROOT)}#{i}:{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}", doc, iv.min_istio_of(text)))
    return out


DOCS = load_docs()


def test_manifests_found():
    kinds = {d["kind"] for _, d, _ in DOCS}
    assert {"WasmPlugin", "TrafficExtension", "DestinationRule", "VirtualService", "Gateway", "EnvoyFilter", "Deployment", "Service", "HTTPRoute", "Telemetry"} <= kinds


@pytest.mark.parametrize("label,doc,min_istio", DOCS, ids=[d[0] for d in DOCS])
def test_manifest_is_valid(label, doc, min_istio):
    assert iv.validate(doc, min_istio=min_istio) == []


# ---------------------------------------------------------------------------
# The validator rejects mistakes (each tier on its own)


def _find(label_part: str) -> tuple[dict, tuple[int, int] | None]:
    for label, doc, m in DOCS:
        if label_part in label:
            return copy.deepcopy(doc), m
    raise AssertionError(f"no manifest {label_part}")


def _rename(d: dict, old: str, new: str) -> None:
    d[new] = d.pop(old)


def test_misspelt_wasmplugin_field_fails_both_istio_schemas():
    doc, _ = _find("gateway/wasmplugin.yaml")
    _rename(doc["spec"], "failStrategy", "failStrategey")
    errors = iv.validate(doc)
    assert any(e.startswith("istio-1.31:") and "failStrategey" in e for e in errors), errors
    assert any(e.startswith("istio-1.24:") and "failStrategey" in e for e in errors), errors


def test_misspelt_nested_field_fails():
    doc, _ = _find("gateway/virtualservice.yaml")
    _rename(doc["spec"]["http"][0]["match"][0], "headers", "header")
    errors = iv.validate(doc)
    assert any(e.startswith("istio-1.31: spec/http/0/match/0:") and "'header' was unexpected" in e for e in errors), errors
    assert any(e.startswith("istio-1.24:") and "spec/http/0/match/0/header: unknown field" in e for e in errors), errors


def test_misspelt_metadata_field_fails():
    doc, _ = _find("base/destinationrule.yaml")
    doc["metadata"]["lables"] = {"a": "b"}
    assert any("lables" in e for e in iv.validate(doc))


def test_wrong_enum_and_digest_fail():
    doc, _ = _find("gateway/wasmplugin.yaml")
    doc["spec"]["phase"] = "STAT"
    doc["spec"]["sha256"] = "A" * 64  # upper case: not a digest Istio accepts
    errors = iv.validate(doc)
    for tier in ("istio-1.31", "istio-1.24"):
        assert any(e.startswith(f"{tier}: spec/phase:") for e in errors), errors
        assert any(e.startswith(f"{tier}: spec/sha256:") for e in errors), errors


def test_cel_rules_fail():
    doc, _ = _find("gateway/wasmplugin.yaml")
    doc["spec"]["targetRefs"] = [{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "x", "namespace": "other"}]
    doc["spec"]["url"] = "ftp://example.com/plugin.wasm"
    errors = iv.check_cel(doc)
    assert any("only one of targetRefs or selector" in e for e in errors), errors
    assert any("cross namespace" in e for e in errors), errors
    assert any("url must have schema" in e for e in errors), errors


def test_misspelt_trafficextension_field_fails():
    doc, m = _find("trafficextension.yaml")
    _rename(doc["spec"]["wasm"], "pluginConfig", "pluginConfg")
    assert any("pluginConfg" in e for e in iv.validate(doc, min_istio=m))


def test_misspelt_envoyfilter_field_fails():
    doc, _ = _find("persistent/envoyfilter.yaml")
    _rename(doc["spec"]["configPatches"][0]["match"], "cluster", "clustr")
    assert any("clustr" in e for e in iv.validate(doc))


def test_misspelt_kubernetes_field_fails():
    doc, _ = _find("base/app.yaml#1:Deployment")
    _rename(doc["spec"]["template"]["spec"]["containers"][0], "readinessProbe", "readynessProbe")
    errors = iv.validate(doc)
    assert any("readynessProbe" in e for e in errors), errors


def test_min_istio_marker_matters():
    """persistent/virtualservice.yaml uses a field Istio 1.24 lacks: without
    its `# min-istio` marker the installed 1.24 models reject it."""
    doc, m = _find("persistent/virtualservice.yaml")
    assert m is not None and m > iv.INSTALLED_ISTIO
    assert iv.validate(doc, min_istio=m) == []
    assert any("retryIgnorePreviousHosts" in e for e in iv.validate(doc, min_istio=None))


# ---------------------------------------------------------------------------
# The manifests fit together (and fit the filter's defaults)


def _by_kind(prefix: str, kind: str) -> list[dict]:
    return [d for label, d, _ in DOCS if label.startswith(prefix) and d["kind"] == kind]


def _plugin_config(doc: dict) -> dict:
    return doc["spec"]["pluginConfig"] if doc["kind"] == "WasmPlugin" else doc["spec"]["wasm"]["pluginConfig"]


def _merge(base, over):
    """The filter's merge of a routes[] entry over the top level: objects key
    by key, lists and scalars replaced, session.key replaced whole."""
    if not (isinstance(base, dict) and isinstance(over, dict)):
        return copy.deepcopy(over)
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = copy.deepcopy(v) if k == "key" else _merge(out.get(k), v) if k in out else copy.deepcopy(v)
    return out


def _app_policy(doc: dict) -> dict:
    """The policy the app gets: its one routes[] entry merged over the top level."""
    pc = _plugin_config(doc)
    (entry,) = pc["routes"]
    top = {k: v for k, v in pc.items() if k != "routes"}
    return _merge(top, {k: v for k, v in entry.items() if k not in ("name", "match")})


def _headers(pc: dict) -> dict:
    h = {"version": "x-canary-version", "hash": "x-sticky-hash", "endpoint": "x-sticky-endpoint"}
    h.update(pc.get("headers") or {})
    return h


PLUGINS = [(label, d) for label, d, _ in DOCS if d["kind"] in ("WasmPlugin", "TrafficExtension")]
PLACEHOLDER_REGISTRY = "REGISTRY.example/REPLACE-ME"
PLACEHOLDER_DIGEST = "0" * 64
CARGO_VERSION = re.search(r'(?ms)^\[package\][^\[]*?^version\s*=\s*"([^"]+)"', (REPO_ROOT / "Cargo.toml").read_text()).group(1)


@pytest.mark.parametrize("label,plugin", PLUGINS, ids=[p[0] for p in PLUGINS])
def test_plugin_fields_are_deliberate(label, plugin):
    spec = plugin["spec"]
    wasm = spec if plugin["kind"] == "WasmPlugin" else spec["wasm"]
    assert spec["phase"] == "STATS" and spec["priority"] == 10
    assert wasm["failStrategy"] == "FAIL_OPEN"
    assert wasm["pluginName"] == "sticky-canary"
    # Committed manifests are templates: a placeholder registry and digest
    # that `make oci` replaces in dist/ (tests/istio/test_oci_image.py checks
    # the rendered ones carry the built image's digest).
    assert wasm["url"] == f"oci://{PLACEHOLDER_REGISTRY}/sticky-canary:{CARGO_VERSION}"
    assert wasm["sha256"] == PLACEHOLDER_DIGEST


def _subsets(prefix: str, host: str) -> dict[str, dict]:
    for dr in _by_kind(prefix, "DestinationRule") + _by_kind("istio/base/", "DestinationRule"):
        if dr["spec"]["host"] == host:
            return {s["name"]: s for s in dr["spec"].get("subsets", [])}
    raise AssertionError(f"no DestinationRule for {host}")


@pytest.mark.parametrize("variant", ["istio/gateway/", "istio/sidecar/", "istio/persistent/"])
def test_virtualservice_routes_versions_to_subsets(variant):
    plugins = [d for label, d in PLUGINS if label.startswith(variant)] or [d for label, d in PLUGINS if label.startswith("istio/gateway/")]
    pc = _app_policy(plugins[0])
    versions = [v["name"] for v in pc["versions"]]
    vheader = _headers(pc)["version"]
    vss = _by_kind(variant, "VirtualService")
    assert vss, variant
    for vs in vss:
        routes = vs["spec"]["http"]
        *matched, default = routes
        assert "match" not in default, "the last route must be the default route"
        for r in routes:
            for dest in r["route"]:
                host = dest["destination"]["host"]
                subsets = _subsets(variant, host)
                assert dest["destination"]["subset"] in subsets
                assert subsets[dest["destination"]["subset"]]["labels"] == {"version": dest["destination"]["subset"]}
        assert default["route"][0]["destination"]["subset"] == versions[0], "default route -> the default version"
        seen = set()
        for r in matched:
            (m,) = r["match"]
            value = m["headers"][vheader]["exact"]
            assert value in versions and r["route"][0]["destination"]["subset"] == value
            seen.add(value)
        assert seen == set(versions[1:]), "one route per non-default version"
        if variant != "istio/sidecar/":
            gws = {g["metadata"]["name"] for g in _by_kind("istio/gateway/", "Gateway")}
            assert set(vs["spec"]["gateways"]) <= gws
        else:
            assert vs["spec"]["gateways"] == ["mesh"]
    for dr in _by_kind(variant, "DestinationRule") + _by_kind("istio/base/", "DestinationRule"):
        ch = dr["spec"]["trafficPolicy"]["loadBalancer"]["consistentHash"]
        assert ch["httpHeaderName"] == _headers(pc)["hash"]
        assert set(versions) <= {s["name"] for s in dr["spec"]["subsets"]}


def test_sidecar_plugin_runs_on_the_client_side():
    (p,) = _by_kind("istio/sidecar/", "WasmPlugin")
    assert p["spec"]["match"][0]["mode"] == "CLIENT"
    (client,) = _by_kind("istio/sidecar/", "Deployment")
    assert p["spec"]["selector"]["matchLabels"].items() <= client["spec"]["template"]["metadata"]["labels"].items()


def test_persistent_envoyfilter_reads_the_endpoint_header():
    (p,) = _by_kind("istio/persistent/", "WasmPlugin")
    pc = _app_policy(p)
    assert pc["session"]["mode"] == "persistent"
    # the keys come from the proxy's environment (a Secret), never inline
    assert "secrets" not in pc["session"] and pc["session"]["secrets_env"] == "STICKY_CANARY_KEYS"
    assert {"name": "STICKY_CANARY_KEYS", "valueFrom": "HOST"} in p["spec"]["vmConfig"]["env"]
    (ef,) = _by_kind("istio/persistent/", "EnvoyFilter")
    (patch,) = ef["spec"]["configPatches"]
    assert patch["applyTo"] == "CLUSTER" and patch["patch"]["operation"] == "MERGE"
    policy = patch["patch"]["value"]["load_balancing_policy"]["policies"][0]["typed_extension_config"]
    assert policy["name"] == "envoy.load_balancing_policies.override_host"
    assert policy["typed_config"]["override_host_sources"] == [{"header": _headers(pc)["endpoint"]}]
    (vs,) = _by_kind("istio/persistent/", "VirtualService")
    (dr,) = _by_kind("istio/persistent/", "DestinationRule")
    eject_after = dr["spec"]["trafficPolicy"]["outlierDetection"]["consecutive5xxErrors"]
    for r in vs["spec"]["http"]:
        assert r["retries"]["retryIgnorePreviousHosts"] is True
        # a request that failed on the dead pinned pod that many times got it
        # ejected, so its last attempt lands on a live pod
        assert r["retries"]["attempts"] >= eject_after


def test_gateway_api_references_resolve():
    gws = {g["metadata"]["name"] for g in _by_kind("istio/gateway-api/", "Gateway")}
    services = {s["metadata"]["name"] for s in _by_kind("istio/gateway-api/", "Service")}
    (p,) = _by_kind("istio/gateway-api/", "WasmPlugin")
    pc = _app_policy(p)
    versions = [v["name"] for v in pc["versions"]]
    assert {(t["group"], t["kind"], t["name"]) for t in p["spec"]["targetRefs"]} <= {("gateway.networking.k8s.io", "Gateway", g) for g in gws}
    (route,) = _by_kind("istio/gateway-api/", "HTTPRoute")
    assert {r["name"] for r in route["spec"]["parentRefs"]} <= gws
    *matched, default = route["spec"]["rules"]
    assert "matches" not in default
    by_version = {}
    for svc in _by_kind("istio/gateway-api/", "Service"):
        by_version[svc["spec"]["selector"]["version"]] = svc["metadata"]["name"]
    assert default["backendRefs"][0]["name"] == by_version[versions[0]]
    for r in matched:
        (m,) = r["matches"]
        (h,) = m["headers"]
        assert h["name"] == _headers(pc)["version"] and h["value"] in versions
        assert r["backendRefs"][0]["name"] == by_version[h["value"]]
    for r in route["spec"]["rules"]:
        assert {b["name"] for b in r["backendRefs"]} <= services
    hosts = {d["spec"]["host"] for d in _by_kind("istio/gateway-api/", "DestinationRule")}
    assert hosts == {f"{s}.default.svc.cluster.local" for s in services}


ISTIO_PLUGINS = [(label, d) for label, d in PLUGINS if label.startswith("istio/")]


def _app_hosts(variant: str) -> set[str]:
    """The hosts the variant's routing serves (VirtualService hosts, or the
    HTTPRoute hostnames)."""
    hosts = set()
    for vs in _by_kind(variant, "VirtualService") or _by_kind("istio/gateway/", "VirtualService"):
        hosts |= set(vs["spec"]["hosts"])
    for r in _by_kind(variant, "HTTPRoute"):
        hosts |= set(r["spec"]["hostnames"])
    return hosts


@pytest.mark.parametrize("label,plugin", ISTIO_PLUGINS, ids=[p[0] for p in ISTIO_PLUGINS])
def test_plugin_is_scoped_to_its_app(label, plugin):
    """No global versions (so other hosts on a shared gateway or listener
    pass through); one routes[] entry that matches the app's hosts by
    authority; top-level keys are only defaults."""
    pc = _plugin_config(plugin)
    assert "versions" not in pc and "rules" not in pc, "app settings belong in the routes[] entry"
    (entry,) = pc["routes"]
    assert set(entry["match"]) == {"authority"}
    authorities = set(entry["match"]["authority"])
    variant = label.split("/", 2)[0] + "/" + label.split("/", 2)[1] + "/"
    hosts = _app_hosts(variant)
    if variant == "istio/sidecar/":
        # in the mesh a client may use any of the Service's names
        (host,) = hosts
        short = host.split(".")[0]
        assert authorities == {short, f"{short}.default", f"{short}.default.svc", host}
    else:
        assert authorities == hosts
    assert not any(a.startswith("*") and a == "*" for a in authorities)
    assert len(_app_policy(plugin)["versions"]) >= 2


def test_plugin_configs_are_json_serialisable_as_istiod_sends_them():
    """istiod marshals pluginConfig (a protobuf Struct) to a JSON string;
    Struct numbers are doubles, so integers must stay below 2**53 to arrive
    unchanged (they are written without a fraction, as serde expects)."""

    def walk(v):
        if isinstance(v, bool):
            return
        if isinstance(v, (int, float)):
            assert float(v).is_integer() and abs(v) < 2**53, v
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    for _, p in PLUGINS:
        pc = _plugin_config(p)
        walk(pc)
        json.dumps(pc)


def test_persistent_keys_patch_gives_the_gateway_the_wasm_env_from_a_secret():
    """patches/gateway-keys.yaml, merged into a gateway Deployment the way
    `kubectl patch` merges containers (by name), is a valid Deployment whose
    istio-proxy container gets the variable the WasmPlugin reads (HOST) from
    a Secret."""
    patch = yaml.safe_load((ISTIO / "persistent" / "patches" / "gateway-keys.yaml").read_text())
    assert "apiVersion" not in patch  # a patch, not a manifest kubectl apply would take
    (p,) = _by_kind("istio/persistent/", "WasmPlugin")
    host_env = [e["name"] for e in p["spec"]["vmConfig"]["env"] if e["valueFrom"] == "HOST"]
    (container,) = patch["spec"]["template"]["spec"]["containers"]
    assert container["name"] == "istio-proxy"
    (env,) = container["env"]
    assert [env["name"]] == host_env
    assert set(env["valueFrom"]) == {"secretKeyRef"} and env["valueFrom"]["secretKeyRef"] == {"name": "sticky-canary-keys", "key": "keys"}
    gateway = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "istio-ingressgateway", "namespace": "istio-system"},
        "spec": {"selector": {"matchLabels": {"istio": "ingressgateway"}}, "template": {
            "metadata": {"labels": {"istio": "ingressgateway"}},
            "spec": {"containers": [{"name": "istio-proxy", "image": "auto", "env": [{"name": "ISTIO_META_ROUTER_MODE", "value": "standard"}]}]}}},
    }
    merged = copy.deepcopy(gateway)
    (proxy,) = merged["spec"]["template"]["spec"]["containers"]
    proxy["env"] = proxy["env"] + container["env"]
    assert iv.check_kubernetes(merged) == []
    broken = copy.deepcopy(merged)
    broken["spec"]["template"]["spec"]["containers"][0]["env"][-1]["valueFrom"]["secretKeyRef"]["nmae"] = "x"
    assert iv.check_kubernetes(broken) != []


def test_misspelt_telemetry_field_fails_both_schemas():
    doc, _ = _find("telemetry/telemetry.yaml")
    _rename(doc["spec"]["metrics"][0]["overrides"][0], "tagOverrides", "tagOverride")
    errors = iv.validate(doc)
    assert any(e.startswith("istio-1.24: spec/metrics/0/overrides/0") and "tagOverride" in e for e in errors), errors
    assert any(e.startswith("istio-1.24: $/spec/metrics/0/overrides/0/tagOverride: unknown field") for e in errors), errors
    doc, _ = _find("telemetry/telemetry.yaml")
    doc["spec"]["metrics"][0]["overrides"][0]["match"]["metric"] = "REQUESTS_TOTAL"
    assert any("spec/metrics/0/overrides/0/match" in e for e in iv.validate(doc)), iv.validate(doc)


def test_telemetry_labels_istio_requests_total_with_the_decided_version():
    """The label reads the header the gateway's plugin writes, on the
    gateway the plugin runs on, for istio_requests_total (REQUEST_COUNT) as
    the gateway reports it (CLIENT)."""
    (tel,) = _by_kind("istio/telemetry/", "Telemetry")
    (gw_plugin,) = _by_kind("istio/gateway/", "WasmPlugin")
    assert tel["metadata"]["namespace"] == gw_plugin["metadata"]["namespace"]
    assert tel["spec"]["selector"] == gw_plugin["spec"]["selector"]
    vheader = _headers(_app_policy(gw_plugin))["version"]
    (metrics,) = tel["spec"]["metrics"]
    assert metrics["providers"] == [{"name": "prometheus"}]
    by_metric = {o["match"]["metric"]: o for o in metrics["overrides"]}
    assert "REQUEST_COUNT" in by_metric
    for o in metrics["overrides"]:
        assert o["match"]["mode"] == "CLIENT"
        ((label, tag),) = o["tagOverrides"].items()
        assert re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", label) and label == "canary_version"
        assert tag == {"value": f"request.headers['{vheader}']"}
