"""Tests of observability/ (Prometheus rules, alert, dashboard, Flagger
and Argo Rollouts templates). Failing tests get the Envoy and backend logs
attached (see tests/e2e/harness.py)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import pytest_runtest_makereport  # noqa: E402,F401  (hook: logs on failure)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("observability")


@pytest.fixture(scope="session")
def real_scrapes(workdir):
    """Two scrapes of Envoy (envoy-local.yaml as shipped) around a known
    mix, and what the clients saw (see traffic.py)."""
    import traffic

    harness.require_envoy_and_wasm()
    backends = harness.start_backends(workdir / "backends")
    envoy = harness.start_envoy(harness.load_config(), workdir / "envoy", backends=backends)
    try:
        sc = traffic.drive(envoy, backends)
        traffic.check(sc)
    finally:
        envoy.stop()
        backends.stop()
    return sc
