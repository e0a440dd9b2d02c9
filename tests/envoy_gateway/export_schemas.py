#!/usr/bin/env python3
"""Regenerate tests/envoy_gateway/schemas/*.json from npm packages.

The schemas of the Envoy Gateway and Gateway API resources under
envoy-gateway/ come from the npm packages of kubernetes-models (generated
from the projects' CRD OpenAPI schemas):

    @kubernetes-models/envoy-gateway  (EnvoyExtensionPolicy, BackendTrafficPolicy, EnvoyProxy)
    @kubernetes-models/gateway-api    (GatewayClass, Gateway, HTTPRoute)
    @kubernetes-models/apimachinery   (ObjectMeta)
    kubernetes-models                 (JSON, IntOrString)

at the versions pinned in PACKAGES. The packages ship TypeScript
declarations (`.d.ts`, one per type: every property with its type and
whether it is optional, string enums as literal unions) and compiled
validators, not JSON Schema files. This script reads the declarations and
writes one self-contained JSON Schema (draft 2020-12) per kind, every
object closed (``additionalProperties: false``) the way
``kubectl apply --validate=strict`` rejects unknown fields, required
properties as declared, enums as declared.

    python3 tests/envoy_gateway/export_schemas.py        # needs npm (npm pack)

What the declarations do not carry, and so neither do these schemas:
patterns, lengths, ranges and the CRDs' CEL rules (x-kubernetes-validations);
tests/testkit/eg_validate.py re-implements the CEL rules that matter
for these manifests.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parent / "schemas"

PACKAGES = {
    "@kubernetes-models/envoy-gateway": "2.0.0",
    "@kubernetes-models/gateway-api": "2.0.0",
    "@kubernetes-models/apimachinery": "3.0.2",
    "kubernetes-models": "5.1.0",
}

# (package, declaration file without .d.ts) -> schema file name
KINDS = {
    ("@kubernetes-models/envoy-gateway", "gateway.envoyproxy.io/v1alpha1/EnvoyExtensionPolicy"): "gateway.envoyproxy.io_v1alpha1_EnvoyExtensionPolicy.json",
    ("@kubernetes-models/envoy-gateway", "gateway.envoyproxy.io/v1alpha1/BackendTrafficPolicy"): "gateway.envoyproxy.io_v1alpha1_BackendTrafficPolicy.json",
    ("@kubernetes-models/envoy-gateway", "gateway.envoyproxy.io/v1alpha1/EnvoyProxy"): "gateway.envoyproxy.io_v1alpha1_EnvoyProxy.json",
    ("@kubernetes-models/gateway-api", "gateway.networking.k8s.io/v1/GatewayClass"): "gateway.networking.k8s.io_v1_GatewayClass.json",
    ("@kubernetes-models/gateway-api", "gateway.networking.k8s.io/v1/Gateway"): "gateway.networking.k8s.io_v1_Gateway.json",
    ("@kubernetes-models/gateway-api", "gateway.networking.k8s.io/v1/HTTPRoute"): "gateway.networking.k8s.io_v1_HTTPRoute.json",
}

IMPORT = re.compile(r'^import\s*\{([^}]*)\}\s*from\s*"([^"]+)";', re.M)
TYPE_ALIAS = re.compile(r"^export type (\w+) = (.+?);\s*$", re.M)
CLASS = re.compile(r"^export declare class (\w+)\b[^{]*\{(.*?)^\}", re.M | re.S)
INTERFACE = re.compile(r"^export interface (\w+)\b[^{]*\{(.*?)^\}", re.M | re.S)
PROP = re.compile(r'^\s*"([^"]+)"(\?)?:\s*(.+?);\s*$', re.M)
COMMENT = re.compile(r"/\*.*?\*/", re.S)


def npm_pack(workdir: Path) -> dict[str, Path]:
    """`npm pack` each package (npm checks the registry's integrity hash) and
    unpack it; returns package name -> its root directory."""
    roots = {}
    for name, version in PACKAGES.items():
        out = subprocess.run(["npm", "pack", f"{name}@{version}", "--json", "--pack-destination", str(workdir)],
                             check=True, capture_output=True, text=True).stdout
        (info,) = json.loads(out)
        dest = workdir / name.replace("/", "__")
        with tarfile.open(workdir / info["filename"]) as tar:
            tar.extractall(dest, filter="data")
        roots[name] = dest / "package"
    return roots


class Converter:
    def __init__(self, roots: dict[str, Path]):
        self.roots = roots
        self.defs: dict[str, dict] = {}

    def locate(self, spec: str, base: Path) -> Path:
        if spec.startswith("."):
            return (base.parent / spec).with_suffix("").with_suffix(".d.ts")
        for name in sorted(self.roots, key=len, reverse=True):
            if spec == name or spec.startswith(name + "/"):
                rest = spec[len(name) + 1:]
                return self.roots[name] / (rest.removesuffix(".js") + ".d.ts")
        raise KeyError(f"unknown package in import {spec!r}")

    def key(self, path: Path) -> str:
        for name, root in self.roots.items():
            if path.is_relative_to(root):
                return re.sub(r"[^A-Za-z0-9]+", ".", f"{name.lstrip('@')}/{path.relative_to(root)}".removesuffix(".d.ts")).strip(".")
        raise KeyError(path)

    def ref(self, path: Path) -> dict:
        k = self.key(path)
        if k not in self.defs:
            self.defs[k] = {}  # placeholder against cycles
            self.defs[k] = self.file_schema(path)
        return {"$ref": f"#/$defs/{k}"}

    def file_schema(self, path: Path) -> dict:
        text = COMMENT.sub("", path.read_text())
        imports = {}
        for names, spec in IMPORT.findall(text):
            for n in names.split(","):
                n = n.strip()
                if n and " as " not in n:
                    imports[n] = spec
        m = CLASS.search(text) or INTERFACE.search(text)
        if m:
            props, required = {}, []
            for name, optional, typ in PROP.findall(m.group(2)):
                props[name] = self.type_schema(typ.strip(), imports, path, text)
                if not optional:
                    required.append(name)
            if not props:  # an empty declaration (apiextensions JSON, ...): any value
                return {}
            out = {"type": "object", "properties": props, "additionalProperties": False}
            if required:
                out["required"] = required
            return out
        aliases = TYPE_ALIAS.findall(text)
        if not aliases:
            raise ValueError(f"{path}: no class, interface or type alias")
        return self.type_schema(aliases[0][1].strip(), imports, path, text)

    def type_schema(self, typ: str, imports: dict[str, str], path: Path, text: str) -> dict:
        typ = typ.strip()
        parts = split_top(typ, "|")
        if len(parts) > 1:
            subs = [self.type_schema(p, imports, path, text) for p in parts]
            if all("const" in s for s in subs):
                kinds = {type(s["const"]).__name__ for s in subs}
                return {"enum": [s["const"] for s in subs], **({"type": "string"} if kinds == {"str"} else {})}
            return {"anyOf": subs}
        if typ.startswith('"') and typ.endswith('"'):
            return {"const": json.loads(typ)}
        if re.fullmatch(r"-?\d+(\.\d+)?", typ):
            return {"const": json.loads(typ)}
        if typ == "null":
            return {"type": "null"}
        if typ in ("string",):
            return {"type": "string"}
        if typ == "number":
            return {"type": "number"}
        if typ == "boolean":
            return {"type": "boolean"}
        if typ in ("{}", "any", "unknown", "object"):
            return {}
        if typ.startswith("Array<") and typ.endswith(">"):
            return {"type": "array", "items": self.type_schema(typ[6:-1], imports, path, text)}
        m = re.fullmatch(r"\{\s*\[key: string\]:\s*(.+?);?\s*\}", typ, re.S)
        if m:
            return {"type": "object", "additionalProperties": self.type_schema(m.group(1), imports, path, text)}
        m = re.fullmatch(r'(\w+)\["([^"]+)"\]', typ)
        if m:  # an indexed access: the type of that property of an interface in this file
            for name, body in INTERFACE.findall(text):
                if name == m.group(1):
                    for prop, _, ptyp in PROP.findall(body):
                        if prop == m.group(2):
                            return self.type_schema(ptyp.strip(), imports, path, text)
        if re.fullmatch(r"\w+", typ):
            if typ in imports:
                return self.ref(self.locate(imports[typ], path))
            local = dict(TYPE_ALIAS.findall(text))
            if typ in local:
                return self.type_schema(local[typ].strip(), imports, path, text)
        raise ValueError(f"{path}: cannot convert type {typ!r}")


def split_top(s: str, sep: str) -> list[str]:
    out, depth, cur, quote = [], 0, "", False
    for ch in s:
        if ch == '"':
            quote = not quote
        elif not quote and ch in "<{(":
            depth += 1
        elif not quote and ch in ">})":
            depth -= 1
        if ch == sep and depth == 0 and not quote:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    return [p for p in out if p]


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        roots = npm_pack(Path(tmp))
        for (pkg, decl), filename in KINDS.items():
            conv = Converter(roots)
            root = conv.file_schema(roots[pkg] / (decl + ".d.ts"))
            root.pop("additionalProperties", None)  # top level: checked below
            root["properties"].pop("status", None)  # written by the controller, not by users
            root["additionalProperties"] = False
            schema = {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "$comment": f"{decl.split('/')[-1]} from {pkg} {PACKAGES[pkg]} (npm), converted by {Path(__file__).name}",
                **root,
                "$defs": dict(sorted(conv.defs.items())),
            }
            path = OUT / filename
            path.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
            print(f"{path}: {path.stat().st_size} bytes, {len(conv.defs)} types")
    return 0


if __name__ == "__main__":
    sys.exit(main())
