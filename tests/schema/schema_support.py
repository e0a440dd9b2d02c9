"""Where the plugin configs of the repository live, for the schema tests.

``example_configs()`` finds every plugin JSON a user could copy:

- ``tests/schema/good/*.json`` (written for these tests);
- the Wasm filter ``configuration`` of every Envoy config in
  ``envoy-config/*.yaml`` and ``examples/**/*.yaml`` (a ``StringValue``
  holds the JSON text, a ``Struct`` the JSON object);
- the ``pluginConfig`` of every Istio ``WasmPlugin`` and the
  ``wasm.pluginConfig`` of every ``TrafficExtension`` under ``istio/`` and
  ``examples/`` (Istio hands it to the filter as a JSON string).

Each comes back as ``(label, text)`` where ``text`` is the JSON text the
filter would read.
"""

from __future__ import annotations

import json
from pathlib import Path

from testkit import REPO_ROOT
from testkit.envoy_config import STRING_VALUE_TYPE as STRING_VALUE
from testkit.envoy_config import WASM_FILTER_TYPE, walk
from testkit.manifests import yaml_docs

SCHEMA_PATH = REPO_ROOT / "config.schema.json"
HERE = Path(__file__).resolve().parent

STRUCT = "type.googleapis.com/google.protobuf.Struct"


def load_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def json_files(subdir: str) -> list[Path]:
    return sorted((HERE / subdir).glob("*.json"))


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def envoy_plugin_texts(doc) -> list[str]:
    """The plugin JSON of every Wasm HTTP filter in an Envoy config."""
    out: list[str] = []

    def visit(node):
        if isinstance(node, dict) and node.get("@type") == WASM_FILTER_TYPE:
            conf = (node.get("config") or {}).get("configuration")
            if not isinstance(conf, dict):
                out.append("")  # no configuration: the filter sees an empty config
            elif conf.get("@type") == STRING_VALUE:
                out.append(conf.get("value", ""))
            elif conf.get("@type") == STRUCT:
                out.append(json.dumps(conf.get("value", {})))
            else:
                raise AssertionError(f"unexpected Wasm configuration type {conf.get('@type')!r}")

    walk(doc, visit)
    return out


def istio_plugin_texts(doc) -> list[str]:
    """The pluginConfig of a WasmPlugin / TrafficExtension, as istiod sends it."""
    if not isinstance(doc, dict) or not str(doc.get("apiVersion", "")).startswith("extensions.istio.io/"):
        return []
    spec = doc.get("spec") or {}
    if doc.get("kind") == "WasmPlugin" and "pluginConfig" in spec:
        return [json.dumps(spec["pluginConfig"])]
    if doc.get("kind") == "TrafficExtension" and "pluginConfig" in (spec.get("wasm") or {}):
        return [json.dumps(spec["wasm"]["pluginConfig"])]
    return []


def yaml_files() -> tuple[list[Path], list[Path]]:
    envoy = sorted((REPO_ROOT / "envoy-config").glob("*.yaml")) + sorted((REPO_ROOT / "examples").glob("**/*.yaml"))
    istio = sorted((REPO_ROOT / "istio").glob("**/*.yaml")) + sorted((REPO_ROOT / "examples").glob("**/*.yaml"))
    return envoy, istio


def example_configs() -> list[tuple[str, str]]:
    out = [(rel(p), p.read_text()) for p in json_files("good")]
    envoy, istio = yaml_files()
    for path in envoy:
        if path.name.startswith("docker-compose"):
            continue
        for d, doc in enumerate(yaml_docs(path)):
            for i, text in enumerate(envoy_plugin_texts(doc)):
                out.append((f"{rel(path)}#{d}.wasm[{i}]", text))
    for path in istio:
        if path.name.startswith("docker-compose"):
            continue
        for d, doc in enumerate(yaml_docs(path)):
            for text in istio_plugin_texts(doc):
                out.append((f"{rel(path)}#{d}.{doc['kind']}/{doc['metadata']['name']}", text))
    return out
