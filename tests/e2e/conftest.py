"""Fixtures for the end-to-end tests (tests/testkit has the API).

- ``workdir`` (session): a temporary directory for configs and logs.
- ``backends`` (session): the four whoami pods of envoy-local.yaml
  (canary-v1-0/1, canary-v2-0/1) on free ports.
- ``stack`` (session): Envoy running envoy-config/envoy-local.yaml as is
  (plugin JSON included) in front of ``backends``; ``stack.envoy``,
  ``stack.backends``, ``stack.client()``. Set ``STICKY_CANARY_E2E_CONFIG``
  to run the suite against another config of the same shape (clusters
  with endpoints on 127.0.0.1:8081-8084, the same plugin JSON).
- ``client``: a fresh keep-alive client for ``stack`` (closed after the test).

Failing tests get the Envoy and backend logs attached (tests/conftest.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

import testkit


@pytest.fixture(scope="session", autouse=True)
def prerequisites():
    """Fail (not skip) with a clear message when Envoy or the .wasm is missing."""
    testkit.require_envoy_and_wasm()


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def backends(workdir):
    bs = testkit.start_backends(workdir / "backends")
    yield bs
    bs.stop()


@dataclass
class Stack:
    envoy: testkit.Envoy
    backends: testkit.BackendSet

    def client(self) -> testkit.Client:
        return self.envoy.client()


@pytest.fixture(scope="session")
def stack(workdir, backends):
    path = os.environ.get("STICKY_CANARY_E2E_CONFIG") or testkit.LOCAL_CONFIG
    envoy = testkit.start_envoy(testkit.load_config(path), workdir / "local", backends=backends)
    yield Stack(envoy, backends)
    envoy.stop()


@pytest.fixture
def client(stack):
    c = stack.client()
    yield c
    c.close()
