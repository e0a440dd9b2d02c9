"""Tests of observability/ (Prometheus rules, alert, dashboard, Flagger
and Argo Rollouts templates). Envoy and the backends come from testkit;
promtext.py and traffic.py beside this file are this suite's helpers."""

import pytest

import testkit


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("observability")


@pytest.fixture(scope="session")
def real_scrapes(workdir):
    """Two scrapes of Envoy (envoy-local.yaml as shipped) around a known
    mix, and what the clients saw (see traffic.py)."""
    import traffic

    testkit.require_envoy_and_wasm()
    backends = testkit.start_backends(workdir / "backends")
    envoy = testkit.start_envoy(testkit.load_config(), workdir / "envoy", backends=backends)
    try:
        sc = traffic.drive(envoy, backends)
        traffic.check(sc)
    finally:
        envoy.stop()
        backends.stop()
    return sc
