"""Fixtures for the migration tests (see tests/e2e/harness.py for the Envoy
and backend API, and migrate_support.py for running the CLI).

- ``cli`` (session): builds ``sticky-canary`` (``cargo build -p
  sticky-canary-cli``) once and returns its path.
- ``workdir`` (session): a temporary directory for configs and logs.

Failing tests get the Envoy and backend logs attached (the hook below).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import migrate_support  # noqa: E402
from harness import pytest_runtest_makereport  # noqa: E402,F401  (hook: logs on failure)


@pytest.fixture(scope="session")
def cli():
    return migrate_support.build_cli()


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("migrate")


@pytest.fixture(scope="session", autouse=True)
def prerequisites():
    harness.require_envoy_and_wasm()
