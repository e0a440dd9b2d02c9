"""The Flagger MetricTemplates and the Argo Rollouts AnalysisTemplate in
observability/.

- Shape. Argo: validated against the AnalysisTemplate schema of npm's
  @kubernetes-models/argo-rollouts (generated from Argo Rollouts' API
  types; `npm ci --prefix tests/observability`, which .ci/run does).
  Flagger: no schema package exists in the registries we can reach, so the
  fields Flagger's CRD (flagger.app/v1beta1 MetricTemplate) requires are
  checked here by hand: spec.provider.type (one of its enum) and
  spec.query, and only template variables Flagger fills in.
- Meaning. Every query, its variables filled in as Flagger and Argo would,
  is evaluated by promtool on the two real scrapes of the known mix
  (traffic.py) and must give what the clients saw: canary-v2's 5xx ratio,
  canary-v1's 0 (no 5xx counter at all), the share of decisions, and the
  p99 from the scraped histogram.
"""

from __future__ import annotations

import copy
import json
import re

import yaml

from npm_schemas import npm_validate
from promtext import EPS, OBS, prom_round, run_rule_tests
from traffic import V1, V2, on_scrapes, p99, share

FLAGGER = OBS / "flagger-metrictemplate.yaml"
ARGO = OBS / "argo-analysistemplate.yaml"

# From Flagger's CRD (artifacts/flagger/crd.yaml, MetricTemplate v1beta1).
FLAGGER_PROVIDERS = {"prometheus", "influxdb", "datadog", "externalmetrics", "stackdriver", "cloudwatch",
                     "newrelic", "graphite", "dynatrace", "keptn", "splunk"}
# What Flagger's RenderQuery fills in (MetricTemplateModel).
FLAGGER_VARS = re.compile(r"\{\{\s*(name|namespace|target|service|ingress|interval|variables\.[A-Za-z0-9_]+)\s*\}\}")


def flagger_templates() -> list[dict]:
    return list(yaml.safe_load_all(FLAGGER.read_text()))


def argo_template() -> dict:
    docs = list(yaml.safe_load_all(ARGO.read_text()))
    assert len(docs) == 1
    return docs[0]


def test_flagger_templates_have_what_flaggers_crd_requires():
    docs = flagger_templates()
    assert [d["metadata"]["name"] for d in docs] == [
        "sticky-canary-5xx-ratio", "sticky-canary-p99-latency", "sticky-canary-decision-share"]
    for d in docs:
        assert d["apiVersion"] == "flagger.app/v1beta1" and d["kind"] == "MetricTemplate", d
        assert set(d) == {"apiVersion", "kind", "metadata", "spec"}, d
        assert set(d["spec"]) == {"provider", "query"}, d
        provider = d["spec"]["provider"]
        assert provider["type"] in FLAGGER_PROVIDERS and provider["type"] == "prometheus", provider
        assert set(provider) <= {"type", "address", "headers", "secretRef", "region", "insecureSkipVerify"}
        assert isinstance(provider["address"], str) and provider["address"].startswith("http")
        query = d["spec"]["query"]
        assert isinstance(query, str) and query.strip()
        # Every {{ ... }} is one Flagger fills in.
        for m in re.finditer(r"\{\{[^}]*\}\}", query):
            assert FLAGGER_VARS.fullmatch(m.group(0)), m.group(0)
        assert "{{ interval }}" in query and "{{ variables.version }}" in query


def test_argo_template_is_valid_against_the_argo_rollouts_schema():
    t = argo_template()
    p = npm_validate([t])
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.strip() == "ok AnalysisTemplate/sticky-canary"
    # The validation is live: broken copies are refused.
    no_name = copy.deepcopy(t)
    del no_name["spec"]["metrics"][0]["name"]
    bad_query = copy.deepcopy(t)
    bad_query["spec"]["metrics"][1]["provider"]["prometheus"]["query"] = ["not", "a", "string"]
    p = npm_validate([no_name, bad_query])
    assert p.returncode == 1, p.stdout + p.stderr
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 2 and all(l.startswith("invalid AnalysisTemplate/sticky-canary:") for l in lines), lines
    assert "must have required property name" in lines[0], lines
    assert "must be string" in lines[1], lines


def test_argo_args_are_declared_and_used():
    t = argo_template()
    declared = {a["name"] for a in t["spec"]["args"]}
    text = json.dumps(t["spec"]["metrics"])
    used = set(re.findall(r"\{\{\s*args\.([A-Za-z0-9_-]+)\s*\}\}", text))
    assert used == declared == {"version", "route", "prometheus-address"}, (used, declared)
    for m in t["spec"]["metrics"]:
        assert m["provider"]["prometheus"]["address"] == "{{args.prometheus-address}}"
        assert m["successCondition"].count("result[0]") >= 1


def flagger_query(name: str, **variables: str) -> str:
    (d,) = [d for d in flagger_templates() if d["metadata"]["name"] == name]
    q = d["spec"]["query"].replace("{{ interval }}", "5m")
    for k, v in variables.items():
        q = q.replace("{{ variables.%s }}" % k, v)
    assert "{{" not in q, q
    return q


def argo_query(name: str, **args: str) -> str:
    (m,) = [m for m in argo_template()["spec"]["metrics"] if m["name"] == name]
    q = m["provider"]["prometheus"]["query"]
    for k, v in args.items():
        q = q.replace("{{args.%s}}" % k, v)
    assert "{{" not in q, q
    return q


def test_template_queries_on_a_real_scrape(real_scrapes, tmp_path):
    first, second, seen = real_scrapes.first, real_scrapes.second, real_scrapes.seen
    expected = {
        "error-ratio": {v: seen.errors[v] / seen.answers[v] for v in (V1, V2)},
        "p99": {v: p99(first, second, v) for v in (V1, V2)},
        "share": {v: share(seen.decisions, "global", v) for v in (V1, V2)},
    }
    assert expected["error-ratio"][V1] == 0 and expected["error-ratio"][V2] > 0, expected
    cases = []
    for v in (V1, V2):
        cases += [
            (flagger_query("sticky-canary-5xx-ratio", version=v), expected["error-ratio"][v]),
            (flagger_query("sticky-canary-p99-latency", version=v), expected["p99"][v]),
            (flagger_query("sticky-canary-decision-share", version=v, route="global"), expected["share"][v]),
            (argo_query("error-ratio", version=v), expected["error-ratio"][v]),
            (argo_query("p99-latency-ms", version=v), expected["p99"][v]),
            (argo_query("decision-share", version=v, route="global"), expected["share"][v]),
        ]
    p = run_rule_tests(tmp_path / "templates-test.yaml", [on_scrapes(first, second, [
        {"expr": f"round({q.strip()}, {EPS})", "eval_time": "5m",
         "exp_samples": [{"labels": "{}", "value": prom_round(value)}]}
        for q, value in cases])])
    assert p.returncode == 0, p.stdout + p.stderr
    print("MEASURED: template queries on two real scrapes:", p.stdout.strip().splitlines()[-1],
          {k: {v: round(x, 4) for v, x in d.items()} for k, d in expected.items()})
