"""The real Envoy agrees with config.schema.json.

Every example plugin config (tests/schema/good/, the Envoy configs, the Istio
pluginConfig blocks) is loaded by the filter in the pip Envoy, delivered the
way istiod delivers a WasmPlugin (a StringValue holding the JSON text,
root_id = pluginName, filter named <namespace>.<name>): Envoy must start,
get ready, and log the filter's "configured" line. A few configs from bad/
and filter-only/ must make Envoy exit non-zero with the filter's error.
"""

from __future__ import annotations

import concurrent.futures
import json
from pathlib import Path

import pytest

import testkit
from schema_support import example_configs, json_files
from testkit.envoy_config import ROUTER, http_bootstrap

PLUGIN_NAME = "sticky-canary"
# istio/persistent/wasmplugin.yaml takes its keys from secrets_env
# (vmConfig.env STICKY_CANARY_KEYS, valueFrom HOST: the gateway's environment,
# filled from a Secret); the VM gets a test key under that name.
VM_ENV = {"STICKY_CANARY_KEYS": "c3RpY2t5LWNhbmFyeSBpc3RpbyB0ZXN0IGtleSAzMiE="}


def istio_shaped_config(plugin_text: str) -> dict:
    """A listener as istiod renders a gateway with one WasmPlugin."""
    return http_bootstrap("0.0.0.0_8080", {
        "stat_prefix": "outbound_0.0.0.0_8080",
        "route_config": {"name": "http.8080", "virtual_hosts": [{
            "name": "my-app.example.com:80", "domains": ["*"],
            "routes": [{"name": "default", "match": {"prefix": "/"}, "direct_response": {"status": 200}}],
        }]},
        "http_filters": [
            {"name": "istio-system.sticky-canary", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": "istio-system.sticky-canary",
                    "root_id": PLUGIN_NAME,
                    "vm_config": {
                        "runtime": "envoy.wasm.runtime.v8",
                        "code": {"local": {"filename": str(testkit.WASM_PATH)}},
                        "environment_variables": {"key_values": VM_ENV},
                    },
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": plugin_text,
                    },
                },
            }},
            ROUTER,
        ],
    })


@pytest.fixture(scope="module", autouse=True)
def prerequisites():
    testkit.require_envoy_and_wasm()


def _start(label_text, workdir):
    label, text = label_text
    safe = "".join(c if c.isalnum() else "_" for c in label)[-60:]
    envoy = testkit.start_envoy(istio_shaped_config(text), workdir / safe)
    try:
        status, _ = envoy.admin("/ready")
        log = envoy.log()
        return label, status, log
    finally:
        envoy.stop()


def test_every_example_config_starts_envoy(tmp_path):
    examples = example_configs()
    failures = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futs = {pool.submit(_start, lt, tmp_path): lt[0] for lt in examples}
        for fut in concurrent.futures.as_completed(futs):
            label = futs[fut]
            try:
                _, status, log = fut.result()
            except testkit.EnvoyStartError as e:
                failures.append(f"{label}: {e}")
                continue
            if status != 200:
                failures.append(f"{label}: /ready answered {status}")
            elif "sticky-canary: configured" not in log:
                failures.append(f"{label}: no 'configured' line in the log:\n{log[-3000:]}")
    assert not failures, "\n\n".join(failures)


# One of each kind of mistake; tests/schema_configs.rs runs all of them
# through the filter's compile step natively.
BAD_SAMPLES = [
    ("bad", "01-unknown-top-level-key.json", "unknown field `version`"),
    ("bad", "08-samesite-none-without-secure.json", "session.cookie.same_site"),
    ("bad", "11-persistent-without-secrets.json", "session.mode"),
    ("filter-only", "01-rule-unknown-version.json", "rules[0].version"),
    ("filter-only", "02-weights-over-total.json", "weights are over weight_total 100"),
    ("filter-only", "16-entry-merge-samesite-none.json", "routes[0].session.cookie.same_site"),
]


def test_bad_configs_make_envoy_exit_when_strict(tmp_path):
    """With "on_invalid_config": "refuse" each mistake stops Envoy with the
    error in its log. (Without it the filter serves pass-through instead:
    tests/e2e/test_bad_config.py.)"""
    jobs, expected = [], []
    for subdir, name, needle in BAD_SAMPLES:
        path = Path(__file__).resolve().parent / subdir / name
        assert path in json_files(subdir), path
        doc = json.loads(path.read_text())
        doc["on_invalid_config"] = "refuse"
        jobs.append((istio_shaped_config(json.dumps(doc)), tmp_path / name, None))
        expected.append((f"{subdir}/{name}", needle))
    results = testkit.run_many_expect_failure(jobs)
    problems = []
    for (label, needle), res in zip(expected, results):
        if res.returncode in (None, 0):
            problems.append(f"{label}: Envoy did not exit non-zero (returncode {res.returncode})\n{res.log[-2000:]}")
        elif "sticky-canary: invalid plugin config" not in res.log or needle not in res.log:
            problems.append(f"{label}: the log does not name the error ({needle!r}):\n{res.log[-2000:]}")
    assert not problems, "\n\n".join(problems)
