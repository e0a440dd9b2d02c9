"""Validate Kubernetes / Istio manifests without a cluster (used by
tests/istio, tests/envoy_gateway and tests/migrate).

``validate(doc, *, min_istio=None) -> list[str]`` returns the problems of one
YAML document (empty: valid). What each kind is checked against:

- Istio resources (``*.istio.io``):
  1. the Istio 1.31 JSON Schemas in ``tests/istio/schemas/istio-1.31/``
     (exported from ``cloudcoil-models-istio==1.31.0.1``, itself generated
     from Istio's CRD OpenAPI; see ``tests/istio/export_istio_schemas.py``),
     every object closed; a kind exported only from an older release
     (``Telemetry``: ``schemas/istio-1.24/``)
     is checked against that one, and the error says which;
  2. the pydantic models of the installed ``cloudcoil-models-istio``
     (1.24.2.1, from tests/requirements.txt), with unknown keys rejected at
     every level, unless the file says it needs a newer Istio
     (``# min-istio: 1.30``) or the kind is not in that package;
  3. the CRD CEL rules (x-kubernetes-validations) that matter here,
     re-implemented below, since neither 1 nor 2 carries them.
- Kubernetes built-in kinds: ``kubernetes-validate`` in strict mode (unknown
  keys rejected), against Kubernetes ``K8S_VERSION``.
- Gateway API kinds (``GATEWAY_API``): the JSON Schemas of
  tests/envoy_gateway/schemas/ (from the @kubernetes-models/gateway-api npm
  package, see tests/envoy_gateway/export_schemas.py), every object closed
  (``testkit.eg_validate.check_schema``).

Strictness matches ``kubectl apply`` since kubectl 1.25 (server-side field
validation ``Strict``): a misspelt field is an error, not silently pruned.
"""

from __future__ import annotations

import functools
import json
import re
import types
import typing

import jsonschema
import kubernetes_validate
import pydantic

from .paths import REPO_ROOT

SCHEMA_DIR = REPO_ROOT / "tests" / "istio" / "schemas" / "istio-1.31"
K8S_VERSION = "1.33"
INSTALLED_ISTIO = (1, 24)  # cloudcoil-models-istio 1.24.2.1
GATEWAY_API = {("gateway.networking.k8s.io/v1", "Gateway"), ("gateway.networking.k8s.io/v1", "HTTPRoute"), ("gateway.networking.k8s.io/v1", "GatewayClass")}
MIN_ISTIO = re.compile(r"^#\s*min-istio:\s*(\d+)\.(\d+)\s*$", re.M)


def min_istio_of(text: str) -> tuple[int, int] | None:
    m = MIN_ISTIO.search(text)
    return (int(m.group(1)), int(m.group(2))) if m else None


# ---------------------------------------------------------------------------
# 1. Istio 1.31 JSON Schemas


@functools.cache
def istio131_validators() -> dict[tuple[str, str], tuple[str, jsonschema.Draft202012Validator]]:
    """(apiVersion, kind) -> (tier label, validator): istio-1.31 first, then
    the newest other exported release that has the kind."""
    out = {}
    dirs = sorted(SCHEMA_DIR.parent.glob("istio-*"), key=lambda d: [int(x) for x in d.name[6:].split(".")], reverse=True)
    for d in [SCHEMA_DIR] + [d for d in dirs if d != SCHEMA_DIR]:
        for path in sorted(d.glob("*.json")):
            schema = json.loads(path.read_text())
            key = (schema["properties"]["apiVersion"]["const"], schema["properties"]["kind"]["const"])
            out.setdefault(key, (d.name, jsonschema.Draft202012Validator(schema)))
    return out


def _path(err) -> str:
    return "/".join(str(p) for p in err.absolute_path) or "$"


def _leaf(err):
    """The most specific error under anyOf/oneOf (pydantic's Optional[X] is
    anyOf [X, null], which would otherwise report at the parent)."""
    while err.context:
        cands = [c for c in err.context if not (c.validator == "type" and c.validator_value == "null")]
        err = max(cands or list(err.context), key=lambda c: len(list(c.absolute_path)))
    return err


def check_istio131(doc: dict) -> list[str]:
    found = istio131_validators().get((doc.get("apiVersion"), doc.get("kind")))
    if found is None:
        return [f"no Istio 1.31 schema for {doc.get('apiVersion')} {doc.get('kind')} (add it to export_istio_schemas.py)"]
    tier, v = found
    errors = [_leaf(e) for e in v.iter_errors(doc)]
    return [f"{tier}: {_path(e)}: {e.message}" for e in sorted(errors, key=lambda e: [str(p) for p in e.absolute_path])]


# ---------------------------------------------------------------------------
# 2. The installed cloudcoil-models-istio (pydantic), strict


@functools.cache
def installed_models() -> dict[tuple[str, str], type]:
    import cloudcoil.models.istio.extensions.v1alpha1 as ext
    import cloudcoil.models.istio.networking.v1 as net_v1
    import cloudcoil.models.istio.networking.v1alpha3 as net_v1alpha3
    import cloudcoil.models.istio.telemetry.v1 as tel_v1
    from cloudcoil.resources import Resource

    out = {}
    for api_version, module in (
        ("extensions.istio.io/v1alpha1", ext),
        ("networking.istio.io/v1", net_v1),
        ("networking.istio.io/v1alpha3", net_v1alpha3),
        ("telemetry.istio.io/v1", tel_v1),
    ):
        for name in dir(module):
            cls = getattr(module, name)
            if isinstance(cls, type) and issubclass(cls, Resource) and cls.__module__ == module.__name__:
                out[(api_version, name)] = cls
    return out


def _unwrap(ann):
    """Yield the concrete types inside Optional/Union/Annotated/Literal."""
    origin = typing.get_origin(ann)
    if origin is typing.Annotated:
        yield from _unwrap(typing.get_args(ann)[0])
    elif origin in (typing.Union, types.UnionType):
        for a in typing.get_args(ann):
            yield from _unwrap(a)
    else:
        yield ann


def _unknown_keys(ann, value, path: str) -> list[str]:
    errors = []
    for t in _unwrap(ann):
        origin = typing.get_origin(t)
        if isinstance(t, type) and issubclass(t, pydantic.BaseModel) and isinstance(value, dict):
            allowed = {}
            for name, field in t.model_fields.items():
                allowed[field.alias or name] = field.annotation
            for k, v in value.items():
                if k not in allowed:
                    errors.append(f"istio-{INSTALLED_ISTIO[0]}.{INSTALLED_ISTIO[1]}: {path}/{k}: unknown field")
                else:
                    errors += _unknown_keys(allowed[k], v, f"{path}/{k}")
            return errors
        if origin in (list, typing.List) and isinstance(value, list):
            (item,) = typing.get_args(t) or (typing.Any,)
            for i, v in enumerate(value):
                errors += _unknown_keys(item, v, f"{path}/{i}")
            return errors
        if origin in (dict, typing.Dict) and isinstance(value, dict):
            args = typing.get_args(t)
            if len(args) == 2:
                for k, v in value.items():
                    errors += _unknown_keys(args[1], v, f"{path}/{k}")
            return errors
    return errors


def check_installed(doc: dict) -> list[str]:
    cls = installed_models().get((doc.get("apiVersion"), doc.get("kind")))
    if cls is None:
        return [f"{doc.get('apiVersion')} {doc.get('kind')} is not in the installed cloudcoil-models-istio"]
    errors = _unknown_keys(cls, doc, "$")
    try:
        cls.model_validate(doc)
    except pydantic.ValidationError as e:
        for err in e.errors():
            loc = "/".join(str(x) for x in err["loc"])
            errors.append(f"istio-{INSTALLED_ISTIO[0]}.{INSTALLED_ISTIO[1]}: {loc}: {err['msg']}")
    return errors


# ---------------------------------------------------------------------------
# 3. CEL rules of the CRDs (x-kubernetes-validations) that pydantic and the
#    exported JSON Schemas do not carry.

TARGET_KINDS = {("", "Service"), ("core", "Service"), ("gateway.networking.k8s.io", "Gateway")}


def _selector_and_targets(spec: dict, path: str) -> list[str]:
    errors = []
    given = [k for k in ("selector", "targetRef", "targetRefs") if k in spec]
    if len(given) > 1:
        errors.append(f"{path}: only one of targetRefs or selector can be set (got {', '.join(given)})")
    refs = list(spec.get("targetRefs") or []) + ([spec["targetRef"]] if "targetRef" in spec else [])
    for i, ref in enumerate(refs):
        if (ref.get("group", ""), ref.get("kind")) not in TARGET_KINDS:
            errors.append(f"{path}/targetRefs/{i}: Support kinds are core/Service and gateway.networking.k8s.io/Gateway")
        if ref.get("namespace"):
            errors.append(f"{path}/targetRefs/{i}/namespace: cross namespace referencing is not currently supported")
    labels = (spec.get("selector") or {}).get("matchLabels") or {}
    for k, v in labels.items():
        if not k or "*" in k or "*" in str(v):
            errors.append(f"{path}/selector/matchLabels: wildcard not allowed / key must not be empty ({k!r}: {v!r})")
    return errors


def _wasm_settings(w: dict, path: str) -> list[str]:
    errors = []
    url = str(w.get("url", ""))
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in ("", "http", "https", "oci", "file"):
        errors.append(f"{path}/url: url must have schema one of [http, https, file, oci]")
    for i, env in enumerate((w.get("vmConfig") or {}).get("env") or []):
        if env.get("valueFrom") == "HOST" and "value" in env:
            errors.append(f"{path}/vmConfig/env/{i}: value may only be set when valueFrom is INLINE")
    return errors


def check_cel(doc: dict) -> list[str]:
    kind, spec = doc.get("kind"), doc.get("spec") or {}
    errors: list[str] = []
    if kind == "WasmPlugin":
        errors += _selector_and_targets(spec, "spec")
        errors += _wasm_settings(spec, "spec")
    elif kind == "TrafficExtension":
        errors += _selector_and_targets(spec, "spec")
        if ("wasm" in spec) == ("lua" in spec):
            errors.append("spec: exactly one of wasm or lua must be set")
        if "wasm" in spec:
            errors += _wasm_settings(spec["wasm"], "spec/wasm")
    return errors


# ---------------------------------------------------------------------------


def check_kubernetes(doc: dict) -> list[str]:
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"kubernetes-{K8S_VERSION}: {e.path if hasattr(e, 'path') else ''}: {str(e).splitlines()[0]}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [f"kubernetes-{K8S_VERSION}: no schema: {e}"]
    return []


def _gateway_api(doc: dict) -> list[str]:
    from . import eg_validate  # it uses this module too

    return eg_validate.check_schema(doc)


def is_istio(doc: dict) -> bool:
    return str(doc.get("apiVersion", "")).split("/")[0].endswith(".istio.io")


def validate(doc, *, min_istio: tuple[int, int] | None = None) -> list[str]:
    if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
        return ["not a Kubernetes object (apiVersion and kind required)"]
    if not isinstance(doc.get("metadata"), dict) or not doc["metadata"].get("name"):
        return ["metadata.name is required"]
    key = (doc["apiVersion"], doc["kind"])
    if is_istio(doc):
        errors = check_istio131(doc) + check_cel(doc)
        needs_newer = min_istio is not None and min_istio > INSTALLED_ISTIO
        if not needs_newer and key in installed_models():
            errors += check_installed(doc)
        elif not needs_newer:
            errors.append(f"{key[0]} {key[1]} is not in Istio {INSTALLED_ISTIO[0]}.{INSTALLED_ISTIO[1]}: mark the file '# min-istio: X.Y'")
        return errors
    if key in GATEWAY_API:
        return _gateway_api(doc)
    if "." in key[0].split("/")[0]:
        return [f"no validator for {key[0]} {key[1]}"]
    return check_kubernetes(doc)
