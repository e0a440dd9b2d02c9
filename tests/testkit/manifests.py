"""Kubernetes manifests (Istio, Envoy Gateway, Gateway API) as dicts.

``yaml_docs(*paths) -> [dict]``: every non-empty YAML document of the files,
in order. ``one(kind, docs) -> dict``: the only document of that kind (the
test fails if there are none or several). The validators against the CRD
schemas are ``testkit.istio_validate`` and ``testkit.eg_validate``.
"""

from __future__ import annotations

from pathlib import Path

import yaml


def yaml_docs(*paths: Path) -> list[dict]:
    out = []
    for p in paths:
        out += [d for d in yaml.safe_load_all(Path(p).read_text()) if d]
    return out


def one(kind: str, docs: list[dict]) -> dict:
    (d,) = [d for d in docs if d["kind"] == kind]
    return d
