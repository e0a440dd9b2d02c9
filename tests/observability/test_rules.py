"""observability/prometheus-rules.yaml against a real scrape.

Envoy runs envoy-config/envoy-local.yaml as shipped (one cluster per
version, the clusters named like the versions) in front of four whoami
pods. The test scrapes /stats/prometheus, drives a known mix (new and
returning users, `x-canary: always` rule hits, /weighted/ users) while one
canary-v2 pod answers 503, and scrapes again. The two scrapes become the
input series of a `promtool test rules` file, 5 minutes apart, evaluated at
the second one, so `rate(x[5m])` is exactly (second - first) / 300 (both
samples sit on the window's edges: nothing is extrapolated).

The expected rule outputs come from what the test saw: each version's share
of decisions and of new sessions from the answers' versions and Set-Cookies,
the 5xx ratio from the answers' statuses. Only p99 latency is computed from
the scrape itself (the histogram buckets, with Prometheus' interpolation),
since no client can see it otherwise.
"""

from __future__ import annotations

from promtext import EPS, RULES, prom_round, run_rule_tests
from testkit.tools import promtool

from traffic import V1, V2, on_scrapes, p99, share


def test_rules_file_is_valid():
    p = promtool("check", "rules", str(RULES))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS: 10 rules found" in p.stdout, p.stdout


def test_rules_on_a_real_scrape(real_scrapes, workdir):
    first, second, seen = real_scrapes.first, real_scrapes.second, real_scrapes.seen

    def rounded(record: str, values: dict, labels) -> dict:
        """An expression test of `record` rounded to 1e-6 (promtool compares
        floats exactly; Go and Python may differ in the last bit). round()
        drops the metric name."""
        return {"expr": f"round({record}, {EPS})", "eval_time": "5m",
                "exp_samples": [{"labels": "{" + ",".join(f'{k}="{v}"' for k, v in labels(key)) + "}",
                                 "value": prom_round(value)} for key, value in values.items()]}

    routes = ("global", "weighted")
    decision_share = {(r, v): share(seen.decisions, r, v) for r in routes for v in (V1, V2)}
    session_share = {(r, v): share(seen.issued, r, v) for r in routes for v in (V1, V2)}
    error_ratio = {v: (seen.errors[v] / 300) / (seen.answers[v] / 300) for v in (V1, V2)}
    latency = {v: p99(first, second, v) for v in (V1, V2)}
    assert all(x > 0 for x in latency.values()), latency
    by_route = lambda k: (("route", k[0]), ("version", k[1]))
    by_cluster = lambda k: (("envoy_cluster_name", k), ("version", k))

    path = workdir / "rules-test.yaml"
    p = run_rule_tests(path, [
        on_scrapes(first, second, name="two real scrapes of envoy-local.yaml, 5 minutes apart", exprs=[
            rounded("version:sticky_canary_decisions:share5m", decision_share, by_route),
            rounded("version:sticky_canary_new_sessions:share5m", session_share, by_route),
            rounded("version:envoy_cluster_upstream_rq_5xx:ratio5m", error_ratio, by_cluster),
            rounded("version:envoy_cluster_upstream_rq_5xx:rate5m", {v: seen.errors[v] / 300 for v in (V1, V2)},
                    by_cluster),
            rounded("version:envoy_cluster_upstream_rq_time:p99_5m", latency, by_cluster),
            # Decisions by reason: the 10 returning users, the 24 rule hits.
            {"expr": 'round(reason:sticky_canary_decisions:rate5m{route="global",reason=~"returning|rule"} * 300)',
             "eval_time": "5m",
             "exp_samples": [
                 {"labels": '{route="global",version="canary-v1",'
                            'reason="returning"}', "value": 10},
                 {"labels": '{route="global",version="canary-v2",'
                            'reason="rule"}', "value": 24},
                 {"labels": '{route="global",version="canary-v1",'
                            'reason="rule"}', "value": 0},
                 {"labels": '{route="global",version="canary-v2",'
                            'reason="returning"}', "value": 0},
             ]},
        ],
        # The delivered config serves: no alert.
        alert_rule_test=[{"alertname": "StickyCanaryConfigInvalid", "eval_time": "5m", "exp_alerts": []}]), {
            "name": "a refused config fires the alert after 1m",
            "interval": "1m",
            "input_series": [{"series": 'sticky_canary_config_invalid{instance="10.0.0.7:15090"}',
                              "values": "0 1 1 1 0"}],
            "alert_rule_test": [
                {"alertname": "StickyCanaryConfigInvalid", "eval_time": "1m", "exp_alerts": []},
                {"alertname": "StickyCanaryConfigInvalid", "eval_time": "3m", "exp_alerts": [{
                    "exp_labels": {"severity": "critical", "instance": "10.0.0.7:15090"},
                    "exp_annotations": {
                        "summary": "sticky-canary on 10.0.0.7:15090 refused its plugin config",
                        "description": ALERT_DESCRIPTION,
                    }}]},
                {"alertname": "StickyCanaryConfigInvalid", "eval_time": "4m", "exp_alerts": []},
            ],
        }], evaluation_interval="1m")
    assert p.returncode == 0, p.stdout + p.stderr + "\n" + path.read_text()[:20000]
    print("MEASURED: promtool test rules on two real scrapes:", p.stdout.strip().splitlines()[-1],
          "| decision share", {f"{r}/{v}": round(x, 4) for (r, v), x in decision_share.items()},
          "| new-session share", {f"{r}/{v}": round(x, 4) for (r, v), x in session_share.items()},
          "| 5xx ratio", {v: round(x, 4) for v, x in error_ratio.items()},
          "| p99 ms", {v: round(x, 2) for v, x in latency.items()})


ALERT_DESCRIPTION = (
    'The delivered sticky-canary config is not the one serving: the last good config (or pass-through) is '
    'used. Look for "sticky-canary: invalid plugin config" in the proxy\'s log, fix the config and deliver it '
    'again (`sticky_canary_config_total{result="refused"}` counts the refusals).')


def test_rule_test_catches_a_wrong_expectation(tmp_path):
    """promtool test rules is live: a wrong expected share fails."""
    p = run_rule_tests(tmp_path / "wrong.yaml", [{
        "interval": "5m",
        "input_series": [
            {"series": 'sticky_canary_decisions_total{route="global",version="a",reason="new"}', "values": "0 30"},
            {"series": 'sticky_canary_decisions_total{route="global",version="b",reason="rule"}', "values": "0 10"},
        ],
        "promql_expr_test": [{"expr": "version:sticky_canary_decisions:share5m", "eval_time": "5m",
                              "exp_samples": [
                                  {"labels": 'version:sticky_canary_decisions:share5m{route="global",version="a"}',
                                   "value": 0.5},
                                  {"labels": 'version:sticky_canary_decisions:share5m{route="global",version="b"}',
                                   "value": 0.25}]}],
    }])
    assert p.returncode != 0, p.stdout
    assert "got: {__name__=\"version:sticky_canary_decisions:share5m\", route=\"global\", version=\"a\"} 7.5E-01" in p.stdout + p.stderr, p.stdout + p.stderr
