"""Validate Envoy Gateway and Gateway API manifests without a cluster
(used by tests/envoy_gateway, tests/istio and tests/migrate).

``validate(doc) -> list[str]`` returns the problems of one YAML document
(empty: valid):

- Envoy Gateway kinds (EnvoyExtensionPolicy, BackendTrafficPolicy) and
  Gateway API kinds (GatewayClass, Gateway, HTTPRoute): the JSON Schemas in
  ``tests/envoy_gateway/schemas/`` (converted from the kubernetes-models npm
  packages by ``tests/envoy_gateway/export_schemas.py``), every object
  closed, then the CRDs' CEL rules
  that matter here (re-implemented below; the schemas do not carry them);
- Kubernetes built-in kinds: ``kubernetes-validate`` in strict mode, as in
  ``testkit.istio_validate``.
"""

from __future__ import annotations

import copy
import functools
import json

import jsonschema

from . import istio_validate  # Kubernetes kinds, error formatting
from .paths import REPO_ROOT

SCHEMA_DIR = REPO_ROOT / "tests" / "envoy_gateway" / "schemas"


@functools.cache
def validators() -> dict[tuple[str, str], jsonschema.Draft202012Validator]:
    out = {}
    for path in sorted(SCHEMA_DIR.glob("*.json")):
        schema = json.loads(path.read_text())
        key = (schema["properties"]["apiVersion"]["const"], schema["properties"]["kind"]["const"])
        out[key] = jsonschema.Draft202012Validator(schema)
    return out


def check_schema(doc: dict) -> list[str]:
    v = validators().get((doc.get("apiVersion"), doc.get("kind")))
    if v is None:
        return [f"no schema for {doc.get('apiVersion')} {doc.get('kind')} (add it to export_schemas.py)"]
    errors = [istio_validate._leaf(e) for e in v.iter_errors(doc)]
    return [f"schema: {istio_validate._path(e)}: {e.message}" for e in sorted(errors, key=lambda e: [str(p) for p in e.absolute_path])]


POLICY_TARGET_KINDS = {"Gateway", "ListenerSet", "HTTPRoute", "GRPCRoute", "UDPRoute", "TCPRoute", "TLSRoute"}


def _policy_targets(spec: dict) -> list[str]:
    """api/v1alpha1 (envoyextensionypolicy_types.go, backendtrafficpolicy_types.go)."""
    errors = []
    has_ref, has_refs = "targetRef" in spec, "targetRefs" in spec
    if not ((has_ref != has_refs) or spec.get("targetSelectors")):
        errors.append("spec: either targetRef or targetRefs must be used")
    refs = list(spec.get("targetRefs") or []) + ([spec["targetRef"]] if has_ref else [])
    for i, ref in enumerate(refs):
        if ref.get("group") != "gateway.networking.k8s.io":
            errors.append(f"spec/targetRefs/{i}: this policy can only have a targetRefs[*].group of gateway.networking.k8s.io")
        if ref.get("kind") not in POLICY_TARGET_KINDS:
            errors.append(f"spec/targetRefs/{i}: this policy can only have a targetRefs[*].kind of {'/'.join(sorted(POLICY_TARGET_KINDS))}")
    return errors


def _one_of_by_type(obj: dict, path: str, cases: dict[str, str]) -> list[str]:
    """`self.type == 'X' ? has(self.x) : !has(self.x)` for each case."""
    errors = []
    for type_value, field in cases.items():
        if (obj.get("type") == type_value) != (field in obj):
            errors.append(f"{path}: if type is {type_value}, {field} must be set (and only then)")
    return errors


def check_cel(doc: dict) -> list[str]:
    kind, spec = doc.get("kind"), doc.get("spec") or {}
    errors: list[str] = []
    if kind == "EnvoyExtensionPolicy":
        errors += _policy_targets(spec)
        for i, w in enumerate(spec.get("wasm") or []):
            errors += _one_of_by_type(w.get("code") or {}, f"spec/wasm/{i}/code", {"HTTP": "http", "Image": "image"})
    elif kind == "BackendTrafficPolicy":
        errors += _policy_targets(spec)
        lb = spec.get("loadBalancer")
        if lb:
            errors += _one_of_by_type(lb, "spec/loadBalancer", {"ConsistentHash": "consistentHash"})
            ch = lb.get("consistentHash")
            if ch:
                errors += _one_of_by_type(ch, "spec/loadBalancer/consistentHash",
                                          {"Header": "header", "Headers": "headers", "Cookie": "cookie", "QueryParams": "queryParams"})
    return errors


def is_gateway_kind(doc: dict) -> bool:
    return str(doc.get("apiVersion", "")).split("/")[0] in ("gateway.envoyproxy.io", "gateway.networking.k8s.io")


def validate(doc) -> list[str]:
    if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
        return ["not a Kubernetes object (apiVersion and kind required)"]
    if not isinstance(doc.get("metadata"), dict) or not doc["metadata"].get("name"):
        return ["metadata.name is required"]
    if is_gateway_kind(doc):
        return check_schema(doc) + check_cel(doc)
    if "." in doc["apiVersion"].split("/")[0]:
        return [f"no validator for {doc['apiVersion']} {doc['kind']}"]
    return istio_validate.check_kubernetes(doc)


def validate_misspelt(doc: dict, path, field: str) -> list[str]:
    """The errors of a copy of `doc` with `field` added (a misspelling)
    to the object at `path` (keys and list indexes from the top)."""
    doc = copy.deepcopy(doc)
    node = doc
    for p in path:
        node = node[p]
    node[field] = "x"
    return validate(doc)
