"""Envoy configuration delivered from watched files, the way a control
plane delivers it: the plugin config by ECDS (as Istio delivers a
WasmPlugin) and endpoints by EDS (pods coming and going).

Both write the new file beside the old one and rename it over it: Envoy
watches the directory for moves, so it never reads half a file.

ECDS
    ``use_ecds(config, directory, *, plugin=None, name="sticky-canary")
    -> (config, ecds_path)``: a copy of the config whose first Wasm HTTP
    filter is fetched by ECDS from a watched file (``config_discovery``
    with a ``path_config_source``, no ``default_config``, like Istio);
    writes the first version of that file. ``write_ecds(ecds_path,
    plugin)``: deliver a new plugin JSON (dict, or str verbatim); returns
    the new ``version_info``. Envoy counts applied updates in
    ``extension_config_discovery.http_filter.<name>.config_reload`` and
    rejected ones in ``...config_fail``.

EDS
    ``Eds(directory)``: one EDS file per cluster; ``.write(cluster,
    ["127.0.0.1:port", ...])`` replaces its endpoints, ``.path(cluster)``
    is the file a cluster's ``path_config_source`` names, ``.current``
    the endpoints last written. ``eds_document(cluster, addresses,
    version)`` is the resource itself.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Iterable

import yaml

from .envoy_config import STRING_VALUE_TYPE, WASM_FILTER_TYPE, absolute_wasm_paths, lb_endpoints, walk

ECDS_RESOURCE_TYPE = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
EDS_RESOURCE_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"


def use_ecds(config: dict, directory: Path | str, *, plugin: dict | str | None = None,
             name: str = "sticky-canary") -> tuple[dict, Path]:
    """A copy of `config` whose first Wasm HTTP filter comes from ECDS, as
    Istio delivers a WasmPlugin: the filter entry becomes `name` with
    `config_discovery` (a `path_config_source` on `directory/<name>.yaml`,
    `watched_directory` `directory`, type URL of the Wasm filter) and **no
    default_config**, so the listener does not serve until the resource is
    there. Writes that file (``write_ecds``) with the original filter and
    its plugin JSON (or `plugin`), .wasm paths made absolute. Returns
    `(config, ecds_path)`. Adds a `node` (id and cluster) if the config
    has none: file subscriptions need one."""
    cfg = copy.deepcopy(config)
    # A file-based xDS subscription needs a node id and cluster (any will do).
    cfg.setdefault("node", {"id": "sticky-canary-e2e", "cluster": "sticky-canary"})
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    found = []

    def visit(node):
        if isinstance(node, dict) and isinstance(node.get("http_filters"), list):
            for i, f in enumerate(node["http_filters"]):
                tc = f.get("typed_config", {}) if isinstance(f, dict) else {}
                if tc.get("@type") == WASM_FILTER_TYPE:
                    found.append((node["http_filters"], i))

    walk(cfg, visit)
    if not found:
        raise ValueError("no Wasm HTTP filter in the config")
    filters, i = found[0]
    wasm = copy.deepcopy(filters[i]["typed_config"])
    filters[i] = {
        "name": name,
        "config_discovery": {
            "config_source": {
                "resource_api_version": "V3",
                "path_config_source": {"path": str(path), "watched_directory": {"path": str(directory)}},
            },
            "type_urls": [WASM_FILTER_TYPE],
        },
    }
    write_ecds(path, plugin if plugin is not None else wasm["config"]["configuration"]["value"], wasm_filter=wasm, name=name)
    return cfg, path


def write_ecds(path: Path | str, plugin: dict | str, *, wasm_filter: dict | None = None,
               name: str | None = None) -> int:
    """Atomically replace the ECDS file `path` (see ``use_ecds``) with the
    same Wasm filter carrying `plugin` (a dict is dumped as JSON; a str is
    used verbatim, so invalid configs can be delivered). The filter and the
    resource name come from the file already there, or from `wasm_filter`
    (a Wasm filter `typed_config`) and `name` for a new file. The resource
    is an `envoy.config.core.v3.TypedExtensionConfig`; `version_info` goes
    up by one on every write. Returns the new version."""
    path = Path(path)
    version = 1
    if wasm_filter is None or name is None:
        with open(path) as f:
            old = yaml.safe_load(f)
        res = old["resources"][0]
        wasm_filter = wasm_filter or res["typed_config"]
        name = name or res["name"]
        version = int(old.get("version_info", "0")) + 1
    elif path.exists():
        with open(path) as f:
            version = int((yaml.safe_load(f) or {}).get("version_info", "0")) + 1
    wasm = copy.deepcopy(wasm_filter)
    wasm["@type"] = WASM_FILTER_TYPE
    absolute_wasm_paths(wasm)
    wasm["config"]["configuration"] = {
        "@type": STRING_VALUE_TYPE,
        "value": plugin if isinstance(plugin, str) else json.dumps(plugin),
    }
    doc = {"version_info": str(version),
           "resources": [{"@type": ECDS_RESOURCE_TYPE, "name": name, "typed_config": wasm}]}
    _replace(path, yaml.safe_dump(doc, sort_keys=False), version)
    return version


def _replace(path: Path, text: str, version: int) -> None:
    """Write `text` beside `path`, then rename it over `path`."""
    tmp = path.with_name(f".{path.name}.{version}.tmp")
    tmp.write_text(text)
    os.rename(tmp, path)


def eds_document(cluster: str, addresses: Iterable[str], version: int) -> dict:
    return {
        "version_info": str(version),
        "resources": [{
            "@type": EDS_RESOURCE_TYPE,
            "cluster_name": cluster,
            "endpoints": [{"lb_endpoints": lb_endpoints(list(addresses))}],
        }],
    }


class Eds:
    """One EDS file per cluster in a directory Envoy watches."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.version = 0
        self.current: dict[str, list[str]] = {}

    def path(self, cluster: str) -> Path:
        return self.dir / f"{cluster}.yaml"

    def write(self, cluster: str, addresses: Iterable[str]) -> None:
        """Replace the cluster's endpoints atomically (write, then rename)."""
        addresses = list(addresses)
        self.version += 1
        _replace(self.path(cluster), yaml.safe_dump(eds_document(cluster, addresses, self.version)), self.version)
        self.current[cluster] = addresses
