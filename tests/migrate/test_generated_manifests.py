"""The generated manifests are valid where they will be applied.

For every golden fixture (cli/tests/fixtures/<case>/expected/<target>/):
- envoy.yaml passes ``envoy --mode validate`` (Envoy 1.40);
- istio.yaml: every document against the Istio 1.31 CRD schemas and
  Kubernetes' own (testkit/istio_validate.py);
- envoy-gateway.yaml against the Envoy Gateway and Gateway API CRD schemas
  and CEL rules (testkit/eg_validate.py).

The golden test (cli/tests/migrate_golden.rs) proves the CLI writes exactly
these files, so validating them validates the CLI's output.
"""

from __future__ import annotations

import json

import pytest
import yaml

import testkit
from testkit import eg_validate, istio_validate

FIXTURES = testkit.REPO_ROOT / "cli" / "tests" / "fixtures"
CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "input.yaml").is_file())


def test_every_fixture_has_goldens():
    assert len(CASES) >= 4
    for case in CASES:
        for target, name in (("envoy", "envoy.yaml"), ("istio", "istio.yaml"), ("envoy-gateway", "envoy-gateway.yaml")):
            assert (FIXTURES / case / "expected" / target / name).is_file(), (case, target)


@pytest.mark.parametrize("case", CASES)
def test_envoy_yaml_passes_envoy_validate(case, tmp_path):
    config = testkit.load_config(FIXTURES / case / "expected" / "envoy" / "envoy.yaml")
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(testkit.rewrite_config(config)))
    code, out = testkit.validate_config(path)
    assert code == 0, out


@pytest.mark.parametrize("case", CASES)
def test_istio_yaml_against_the_crd_schemas(case):
    text = (FIXTURES / case / "expected" / "istio" / "istio.yaml").read_text()
    docs = [d for d in yaml.safe_load_all(text) if d]
    kinds = sorted({d["kind"] for d in docs} - {"EnvoyFilter"})
    assert kinds == ["DestinationRule", "Gateway", "VirtualService", "WasmPlugin"], kinds
    if "persistent" in (FIXTURES / case / "input.yaml").read_text():
        assert any(d["kind"] == "EnvoyFilter" for d in docs), "persistent mode needs the override_host EnvoyFilter"
    need = istio_validate.min_istio_of(text)  # "# min-istio: 1.31" for persistent mode
    problems = {f"{d['kind']} {d['metadata']['name']}": istio_validate.validate(d, min_istio=need) for d in docs}
    assert not any(problems.values()), json.dumps(problems, indent=1)


@pytest.mark.parametrize("case", CASES)
def test_envoy_gateway_yaml_against_the_crd_schemas(case):
    text = (FIXTURES / case / "expected" / "envoy-gateway" / "envoy-gateway.yaml").read_text()
    docs = [d for d in yaml.safe_load_all(text) if d]
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == ["BackendTrafficPolicy", "EnvoyExtensionPolicy", "Gateway", "HTTPRoute"], kinds
    problems = {f"{d['kind']} {d['metadata']['name']}": eg_validate.validate(d) for d in docs}
    assert not any(problems.values()), json.dumps(problems, indent=1)
