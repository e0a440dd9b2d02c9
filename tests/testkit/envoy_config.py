"""Envoy configuration as plain dicts (as PyYAML loads them), and the
filter's plugin JSON inside it.

``load_config(path=LOCAL_CONFIG) -> dict``.
``wasm_plugins(config) -> [dict]``: every Wasm ``PluginConfig`` in the
config (the dicts with ``vm_config`` and ``configuration``).
``plugin_config(config, index=0) -> dict``: that plugin's JSON, parsed.
``set_plugin_config(config, plugin, index=0)``: replace it (a dict is
dumped as JSON; a str is used verbatim, so invalid JSON can be tested).

``rewrite_config(config, *, listener_port=None, admin_port=None,
port_map=None, endpoints=None, plugin=None, wasm_path=WASM_PATH,
listener_ports=None) -> dict``: a rewritten deep copy: the first listener's
port (or every listener's, in order, from ``listener_ports``), the admin
port, cluster endpoint ports through ``port_map`` (``{old: new}``) or whole
endpoint lists through ``endpoints`` (``{cluster_name: ["127.0.0.1:port",
...]}``), the plugin JSON, listeners without SO_REUSEPORT (so that a port
clash fails loudly), and every local ``.wasm`` filename made absolute
(``absolute_wasm_paths``: relative ones resolve against ``REPO_ROOT``;
absolute ones that do not exist here, e.g. ``/etc/envoy/sticky_canary.wasm``,
become ``wasm_path``).

``http_bootstrap(listener_name, hcm, clusters=None) -> dict``: a config
with the admin interface and one listener on 127.0.0.1 (ports 0, for
``start_envoy`` to choose) whose only filter is an HttpConnectionManager with
the fields `hcm`; ``ROUTER`` is the router HTTP filter that ends a chain.

``walk(node, fn)`` calls ``fn`` on every dict, list and value of a config.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Callable, Mapping, Sequence

import yaml

from .paths import LOCAL_CONFIG, REPO_ROOT, WASM_PATH

WASM_FILTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
STRING_VALUE_TYPE = "type.googleapis.com/google.protobuf.StringValue"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


def load_config(path: Path | str = LOCAL_CONFIG) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def http_bootstrap(listener_name: str, hcm: dict, clusters: list[dict] | None = None) -> dict:
    """Admin and one HTTP listener on 127.0.0.1 (see the module docstring)."""
    cfg: dict = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [{
                "name": listener_name,
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {"@type": HCM_TYPE, **hcm},
                }]}],
            }],
        },
    }
    if clusters is not None:
        cfg["static_resources"]["clusters"] = clusters
    return cfg


def walk(node, fn: Callable) -> None:
    """`fn(x)` for `node` and everything below it (dict values, list items)."""
    fn(node)
    if isinstance(node, dict):
        for v in node.values():
            walk(v, fn)
    elif isinstance(node, list):
        for v in node:
            walk(v, fn)


def wasm_plugins(config: dict) -> list[dict]:
    """Every Wasm PluginConfig (a dict with `vm_config`) in the config."""
    found: list[dict] = []

    def visit(node):
        if isinstance(node, dict) and isinstance(node.get("vm_config"), dict) and "runtime" in node["vm_config"]:
            found.append(node)

    walk(config, visit)
    return found


def plugin_config(config: dict, index: int = 0) -> dict:
    value = wasm_plugins(config)[index]["configuration"]["value"]
    return json.loads(value)


def set_plugin_config(config: dict, plugin: dict | str, index: int = 0) -> None:
    text = plugin if isinstance(plugin, str) else json.dumps(plugin)
    wasm_plugins(config)[index]["configuration"] = {"@type": STRING_VALUE_TYPE, "value": text}


def rewrite_config(
    config: dict,
    *,
    listener_port: int | None = None,
    admin_port: int | None = None,
    port_map: Mapping[int, int] | None = None,
    endpoints: Mapping[str, Sequence[str]] | None = None,
    plugin: dict | str | None = None,
    wasm_path: Path | str = WASM_PATH,
    listener_ports: Sequence[int] | None = None,
) -> dict:
    """A deep copy of `config` with ports, endpoints, plugin JSON and .wasm
    paths rewritten (see the module docstring)."""
    cfg = copy.deepcopy(config)
    if admin_port is not None:
        cfg["admin"]["address"]["socket_address"]["port_value"] = admin_port
    statics = cfg.get("static_resources", {})
    if listener_port is not None:
        statics["listeners"][0]["address"]["socket_address"]["port_value"] = listener_port
    for listener, port in zip(statics.get("listeners", []), listener_ports or ()):
        listener["address"]["socket_address"]["port_value"] = port
    # Envoy listeners use SO_REUSEPORT by default, so two test Envoys could
    # bind the same port silently; without it a clash fails loudly.
    for listener in statics.get("listeners", []):
        listener.setdefault("enable_reuse_port", False)
    for cluster in statics.get("clusters", []):
        la = cluster.get("load_assignment")
        if not la:
            continue
        if endpoints and cluster["name"] in endpoints:
            la["endpoints"] = [{"lb_endpoints": lb_endpoints(endpoints[cluster["name"]])}]
        elif port_map:
            def remap(node):
                if isinstance(node, dict) and isinstance(node.get("socket_address"), dict):
                    sa = node["socket_address"]
                    if sa.get("port_value") in port_map:
                        sa["port_value"] = port_map[sa["port_value"]]

            walk(la, remap)
    if plugin is not None:
        set_plugin_config(cfg, plugin)
    absolute_wasm_paths(cfg, wasm_path)
    return cfg


def lb_endpoints(addresses: Sequence[str]) -> list[dict]:
    """`["127.0.0.1:8081", ...]` as a ClusterLoadAssignment's lb_endpoints."""
    out = []
    for addr in addresses:
        host, port = addr.rsplit(":", 1)
        out.append({"endpoint": {"address": {"socket_address": {"address": host, "port_value": int(port)}}}})
    return out


def absolute_wasm_paths(node, wasm_path: Path | str = WASM_PATH) -> None:
    """Every local .wasm filename under `node` made absolute (relative ones
    against REPO_ROOT; absolute ones that do not exist here: `wasm_path`)."""
    for p in wasm_plugins(node):
        local = p["vm_config"].get("code", {}).get("local")
        if isinstance(local, dict) and "filename" in local:
            f = Path(local["filename"])
            if not f.is_absolute():
                f = REPO_ROOT / f
            elif not f.exists():
                f = Path(wasm_path)
            local["filename"] = str(f)
