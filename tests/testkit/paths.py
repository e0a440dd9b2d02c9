"""Where things are: the repository, the pip Envoy, the built filter, the
whoami backend, the shipped Envoy config, and the project-local tools.

``ENVOY_BIN`` can be overridden with the environment variable
``ENVOY_BIN``. The Go programs of ``scripts/go-tools.txt`` are in
``TOOLS_BIN`` (see ``testkit.tools``).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
ENVOY_BIN = Path(os.environ.get("ENVOY_BIN", REPO_ROOT / ".venv" / "bin" / "envoy"))
WASM_PATH = REPO_ROOT / "target" / "wasm32-wasip1" / "release" / "sticky_canary.wasm"
WHOAMI = REPO_ROOT / "tests" / "support" / "whoami.py"
LOCAL_CONFIG = REPO_ROOT / "envoy-config" / "envoy-local.yaml"
PERSISTENT_CONFIG = REPO_ROOT / "envoy-config" / "persistent" / "envoy-local-persistent.yaml"
TOOLS_BIN = REPO_ROOT / ".tools" / "bin"
GO_PINS = REPO_ROOT / "scripts" / "go-tools.txt"
