"""Attach the Envoy and backend logs to failing tests (see tests/e2e/harness.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import pytest_runtest_makereport  # noqa: E402,F401  (hook: logs on failure)
