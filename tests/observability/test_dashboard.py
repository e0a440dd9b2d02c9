"""observability/grafana-dashboard.json: a dashboard Grafana can import
(the fields its JSON model needs, no overlapping panels, a Prometheus data
source variable), every panel the metrics reference promises, every query
valid PromQL (promtool), and the share, 5xx and p99 panels giving, on the
real scrapes of the known mix (traffic.py), what the clients saw."""

from __future__ import annotations

import json

import yaml

from promtext import EPS, OBS, prom_round, run_rule_tests
from testkit.tools import promtool
from traffic import V1, V2, on_scrapes, p99

DASHBOARD = OBS / "grafana-dashboard.json"
VARS = {"$__rate_interval": "5m", "$route": ".*", "$version": ".*"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels() -> dict[str, dict]:
    return {p["title"]: p for p in dashboard()["panels"]}


def grafana_to_promql(expr: str) -> str:
    for k, v in VARS.items():
        expr = expr.replace(k, v)
    assert "$" not in expr.replace("$1", ""), expr
    return expr


def test_dashboard_model():
    d = dashboard()
    assert d["uid"] == "sticky-canary" and d["title"] == "sticky-canary"
    assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("route", "version"):
        assert variables[name]["type"] == "query"
        assert variables[name]["definition"] == f"label_values(sticky_canary_decisions_total, {name})"
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), ids
    cells = set()
    for p in d["panels"]:
        assert p["type"] in ("timeseries", "stat"), p["type"]
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not (mine & cells), f"{p['title']} overlaps another panel"
        cells |= mine
        assert p["targets"] and all(t["expr"].strip() and t["refId"] for t in p["targets"]), p["title"]
        assert p.get("description"), p["title"]


def test_dashboard_shows_what_the_docs_promise():
    want = {
        "Share of decisions per version": ["sticky_canary_decisions_total"],
        "Share of new sessions per version": ['sticky_canary_sessions_total{route=~"$route",event="issued"}'],
        "Decisions by reason": ["sum by (version, reason)", "sticky_canary_decisions_total"],
        "Sessions by event": ["sum by (version, event)", "sticky_canary_sessions_total"],
        "Rejected session cookies by cause": ["sum by (cause)", "sticky_canary_cookie_rejected_total"],
        "Key fallbacks and pass-through": ["sticky_canary_key_fallback_total", "sticky_canary_passthrough_total"],
        "Upstream 5xx ratio per version": ['envoy_response_code_class="5"', "envoy_cluster_upstream_rq_xx"],
        "Upstream p99 latency per version": ["histogram_quantile(0.99", "envoy_cluster_upstream_rq_time_bucket"],
        "Config invalid": ["sticky_canary_config_invalid"],
        "Config loads": ["sticky_canary_config_total"],
    }
    got = panels()
    assert set(got) == set(want), set(got) ^ set(want)
    for title, needles in want.items():
        exprs = "\n".join(t["expr"] for t in got[title]["targets"])
        for n in needles:
            assert n in exprs, (title, n)
    assert got["Upstream p99 latency per version"]["fieldConfig"]["defaults"]["unit"] == "ms"
    assert got["Share of decisions per version"]["fieldConfig"]["defaults"]["unit"] == "percentunit"


def test_every_query_is_valid_promql(tmp_path):
    rules = [{"record": f"dashboard:panel{p['id']}_{t['refId']}", "expr": grafana_to_promql(t["expr"])}
             for p in dashboard()["panels"] for t in p["targets"]]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    p = promtool("check", "rules", str(path))
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"SUCCESS: {len(rules)} rules found" in p.stdout


def test_share_5xx_and_p99_panels_on_a_real_scrape(real_scrapes, tmp_path):
    first, second, seen = real_scrapes.first, real_scrapes.second, real_scrapes.seen
    got = panels()

    def expr(title: str) -> str:
        (t,) = got[title]["targets"]
        return grafana_to_promql(t["expr"])

    # All route entries ($route = .*): a version's decisions over all of them.
    per_version = {v: sum(n for (_, ver), n in seen.decisions.items() if ver == v) / 300 for v in (V1, V2)}
    share = {v: per_version[v] / sum(per_version.values()) for v in (V1, V2)}
    ratio = {v: (seen.errors[v] / 300) / (seen.answers[v] / 300) for v in (V1, V2)}
    latency = {v: p99(first, second, v) for v in (V1, V2)}

    def case(title, values, label):
        return {"expr": f"round({expr(title)}, {EPS})", "eval_time": "5m",
                "exp_samples": [{"labels": "{%s=\"%s\"}" % (label, v), "value": prom_round(x)}
                                for v, x in values.items()]}

    p = run_rule_tests(tmp_path / "dashboard-test.yaml", [on_scrapes(first, second, [
        case("Share of decisions per version", share, "version"),
        case("Upstream 5xx ratio per version", ratio, "envoy_cluster_name"),
        case("Upstream p99 latency per version", latency, "envoy_cluster_name"),
    ])])
    assert p.returncode == 0, p.stdout + p.stderr
