"""The stats tags for Istio and Envoy Gateway (observability/README.md and
its two manifests) say the same as the shipped Envoy configs and the
filter's own list (src/metrics.rs STATS_TAGS), and Envoy accepts the
Envoy Gateway merge.

The EnvoyProxy is validated against the schema of npm's
@kubernetes-models/envoy-gateway (which does not reject unknown keys, so
the keys are also checked by hand). No schema of IstioOperator installs
from the registries we can reach: its fields are checked by hand, against
what Istio's source says (see observability/README.md)."""

from __future__ import annotations

import copy
import json
import re

import yaml

import testkit
from promtext import OBS, REPO_ROOT
from npm_schemas import npm_validate

TAGS = ["route", "version", "reason", "event", "cause", "result"]


def shipped_tags() -> list[dict]:
    return testkit.load_config()["stats_config"]["stats_tags"]


def istio_rendered(tag: str) -> str:
    """The regex Istio's bootstrap template writes for an extraStatTags entry
    (tools/packaging/common/envoy_bootstrap.json: `({{ $tag }}=\\.=(.*?);\\.;)`)."""
    return "(" + tag + r"=\.=(.*?);\.;)"


def test_the_filter_the_shipped_configs_and_istio_agree_on_the_tags():
    src = (REPO_ROOT / "src" / "metrics.rs").read_text()
    block = src.split("pub const STATS_TAGS", 1)[1].split("];", 1)[0]
    rust = re.findall(r'\("([a-z_]+)", r"([^"]+)"\)', block)
    assert [t for t, _ in rust] == TAGS, rust
    assert [{"tag_name": t, "regex": r} for t, r in rust] == shipped_tags()
    assert [{"tag_name": t, "regex": istio_rendered(t)} for t in TAGS] == shipped_tags()
    # Every shipped Envoy config has the same tags.
    for path in sorted((REPO_ROOT / "envoy-config").rglob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        if isinstance(cfg, dict) and "static_resources" in cfg:
            assert cfg.get("stats_config", {}).get("stats_tags") == shipped_tags(), path


def test_istio_manifest_and_annotation():
    doc = yaml.safe_load((OBS / "istio-extrastattags.yaml").read_text())
    assert doc["apiVersion"] == "install.istio.io/v1alpha1" and doc["kind"] == "IstioOperator"
    assert doc["spec"] == {"meshConfig": {"defaultConfig": {"extraStatTags": TAGS}}}
    readme = (OBS / "README.md").read_text()
    # The per-workload annotation in the README is JSON with the same list.
    (ann,) = re.findall(r"proxy\.istio\.io/config: '(.*)'", readme)
    assert json.loads(ann) == {"extraStatTags": TAGS}
    assert "extraStatTags: [" + ", ".join(TAGS) + "]" in readme


def envoy_gateway_bootstrap() -> dict:
    doc = yaml.safe_load((OBS / "envoy-gateway-envoyproxy.yaml").read_text())
    assert doc["apiVersion"] == "gateway.envoyproxy.io/v1alpha1" and doc["kind"] == "EnvoyProxy"
    assert set(doc["spec"]) == {"bootstrap"}
    b = doc["spec"]["bootstrap"]
    # ProxyBootstrap: type Merge (Replace is the default), value a YAML string.
    assert set(b) == {"type", "value"} and b["type"] == "Merge" and isinstance(b["value"], str)
    return yaml.safe_load(b["value"])


def test_envoy_gateway_manifest_is_valid_against_the_envoy_gateway_schema():
    doc = yaml.safe_load((OBS / "envoy-gateway-envoyproxy.yaml").read_text())
    p = npm_validate([doc])
    assert (p.returncode, p.stdout.strip()) == (0, "ok EnvoyProxy/sticky-canary"), p.stdout + p.stderr
    # Live: a misspelt bootstrap type is refused.
    bad = copy.deepcopy(doc)
    bad["spec"]["bootstrap"]["type"] = "merge"
    p = npm_validate([bad])
    assert p.returncode == 1 and "data/spec/bootstrap/type must be equal to one of the allowed values" in p.stdout, \
        p.stdout + p.stderr


def test_envoy_gateway_merge_adds_the_shipped_tags():
    value = envoy_gateway_bootstrap()
    assert value == {"stats_config": {"stats_tags": shipped_tags()}}
    # The README shows the same manifest.
    readme = (OBS / "README.md").read_text()
    manifest = (OBS / "envoy-gateway-envoyproxy.yaml").read_text()
    body = manifest[manifest.index("apiVersion:"):]
    assert body in readme


def test_envoy_accepts_the_merged_bootstrap(tmp_path):
    """Envoy Gateway merges with proto.Merge (lists appended). Merged into a
    bootstrap that has tags of its own, ours must pass `envoy --mode
    validate`."""
    cfg = testkit.rewrite_config(testkit.load_config())
    own = [{"tag_name": "from_zone", "regex": r"\.zone(\.(([^\.]+)\.))"}]
    cfg["stats_config"] = {"use_all_default_tags": True, "stats_tags": copy.deepcopy(own)}
    cfg["stats_config"]["stats_tags"] += envoy_gateway_bootstrap()["stats_config"]["stats_tags"]
    path = tmp_path / "merged.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    rc, out = testkit.validate_config(path)
    assert rc == 0, out
    # A broken regex is refused, so the check is live.
    cfg["stats_config"]["stats_tags"][-1]["regex"] = "(result=\\.=(.*?;\\.;"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    rc, out = testkit.validate_config(path)
    assert rc != 0, out
