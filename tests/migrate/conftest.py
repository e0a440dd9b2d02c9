"""Fixtures for the migration tests (testkit for Envoy and the backends,
migrate_support.py beside this file for running the CLI).

- ``cli`` (session): builds ``sticky-canary`` (``cargo build -p
  sticky-canary-cli``) once and returns its path.
- ``workdir`` (session): a temporary directory for configs and logs.
"""

from __future__ import annotations

import pytest

import migrate_support
import testkit


@pytest.fixture(scope="session")
def cli():
    return migrate_support.build_cli()


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("migrate")


@pytest.fixture(scope="session", autouse=True)
def prerequisites():
    testkit.require_envoy_and_wasm()
