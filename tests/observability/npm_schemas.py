"""The npm schemas of Argo Rollouts and Envoy Gateway kinds
(@kubernetes-models/*, pinned in package-lock.json; `make test` runs
`npm ci --prefix tests/observability`), applied by validate.mjs. Used by
test_templates.py and test_integrations.py. Helpers only: pytest collects
no tests here."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from testkit import hang_guard
from testkit.tools import tool

HERE = Path(__file__).resolve().parent


def npm_validate(objs: list[dict]) -> subprocess.CompletedProcess:
    """tests/observability/validate.mjs on `objs` (JSON on stdin): its exit
    status and output."""
    node = tool("node")
    for package in ("argo-rollouts", "envoy-gateway"):
        assert (HERE / "node_modules" / "@kubernetes-models" / package).is_dir(), (
            "the npm schemas are missing: npm ci --prefix tests/observability (make test does it)")
    return subprocess.run([node, str(HERE / "validate.mjs")], input=json.dumps(objs),
                          capture_output=True, text=True, timeout=hang_guard(120))
