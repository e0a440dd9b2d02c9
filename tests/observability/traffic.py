"""The known mix of test_rules.py and test_templates.py: Envoy with
envoy-config/envoy-local.yaml as shipped, four whoami pods, two scrapes of
/stats/prometheus around a known mix of requests while canary-v2-1 answers
503, and what the clients saw. Helpers only: pytest collects no tests here.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass

import promtext
import testkit
from testkit.stats import parse_prometheus, select, split_series, total

V1, V2 = "canary-v1", "canary-v2"
COOKIE, WEIGHTED_COOKIE = "my-sticky-cookie", "my-weighted-cookie"
INPUTS = ("sticky_canary_", "envoy_cluster_upstream_rq_xx", "envoy_cluster_upstream_rq_time_bucket")


def flushed_scrape(envoy: testkit.Envoy, clusters=(V1, V2), timeout: float = 60.0) -> str:
    """A scrape in which the latency histograms (updated on Envoy's stats
    flush, every 5 s by default) hold every upstream request the counters
    hold. A hang guard only: it returns as soon as they agree."""
    text = ""

    def caught_up() -> str | None:
        nonlocal text
        text = envoy.prometheus()
        s = parse_prometheus(text)
        ok = all(
            total(s, "envoy_cluster_upstream_rq_time_count", envoy_cluster_name=c)
            == total(s, "envoy_cluster_upstream_rq_xx", envoy_cluster_name=c) > 0
            for c in clusters)
        return text if ok else None

    return testkit.wait_until(caught_up, lambda: "the histograms to catch up with the counters:\n" + "\n".join(
        l for l in text.splitlines() if "upstream_rq_time_count" in l or "upstream_rq_xx" in l), timeout, interval=0.2)


class Seen:
    """What the clients saw, per route entry and per cluster."""

    def __init__(self):
        self.decisions = collections.Counter()  # (route, version)
        self.issued = collections.Counter()  # (route, version)
        self.answers = collections.Counter()  # version (= cluster)
        self.errors = collections.Counter()  # version, 5xx answers

    def add(self, route: str, r: testkit.Response, cookie: str) -> None:
        assert r.name in (V1, V2), r
        self.decisions[(route, r.name)] += 1
        self.issued[(route, r.name)] += bool(r.cookies_named(cookie))
        self.answers[r.name] += 1
        self.errors[r.name] += r.status >= 500


def share(counter: collections.Counter, route: str, version: str) -> float:
    # As Prometheus computes it: rate / sum of rates, rate = delta / 300.
    rates = {v: counter[(route, v)] / 300 for v in (V1, V2)}
    return rates[version] / sum(rates.values())


def input_series(first: str, second: str) -> list[dict]:
    a, b = parse_prometheus(first), parse_prometheus(second)
    out = []
    for k in sorted(set(a) | set(b)):
        if not k.startswith(INPUTS):
            continue
        fmt = lambda s: "_" if k not in s else repr(int(s[k])) if s[k] == int(s[k]) else repr(s[k])
        out.append({"series": k, "values": f"{fmt(a)} {fmt(b)}"})
    return out


def on_scrapes(first: str, second: str, exprs: list[dict], **extra) -> dict:
    """A `promtool test rules` test of `exprs` over the two scrapes, 5
    minutes apart (promtext.run_rule_tests runs it)."""
    return {**extra, "interval": "5m", "input_series": input_series(first, second), "promql_expr_test": exprs}


def p99(first: str, second: str, cluster: str) -> float:
    a, b = parse_prometheus(first), parse_prometheus(second)
    buckets = []
    for k, v in select(b, "envoy_cluster_upstream_rq_time_bucket", envoy_cluster_name=cluster).items():
        le = split_series(k)[1]["le"]
        buckets.append((math.inf if le == "+Inf" else float(le), (v - a.get(k, 0.0)) / 300))
    return promtext.histogram_quantile(0.99, buckets)


@dataclass
class Scrapes:
    first: str
    second: str
    seen: Seen


def drive(envoy: testkit.Envoy, backends: testkit.BackendSet) -> Scrapes:
    """Warm up, scrape, send the known mix with canary-v2-1 answering 503,
    scrape again."""
    c = envoy.client()
    # Warm-up, before the first scrape: every series exists on both sides.
    for path, headers in (("/", None), ("/", {"x-canary": "always"}), ("/weighted/", None)) * 3:
        assert c.get(path, headers=headers).status == 200
    # canary-v2-1 answers 503 from now on. Envoy creates a cluster's 5xx
    # counter at its first 5xx: one before the first scrape, so that the
    # canary-v2 series is there on both sides (canary-v1 has none at all:
    # the rule must read 0 for it).
    sick = backends.by_hostname["canary-v2-1"]
    sick.set_health(503)
    try:
        for _ in range(200):
            if c.get("/", headers={"x-canary": "always"}).status == 503:
                break
        else:
            raise AssertionError("no request reached canary-v2-1")
        first = flushed_scrape(envoy)
        assert "envoy_cluster_upstream_rq_xx{envoy_response_code_class=\"5\",envoy_cluster_name=\"canary-v1\"}" \
            not in first
        seen = Seen()
        returning = []
        for _ in range(30):
            r = c.get("/")
            seen.add("global", r, COOKIE)
            returning.append(r.cookies_named(COOKIE)[0].value)
        for v in returning[:10]:
            seen.add("global", c.get("/", cookies={COOKIE: v}), COOKIE)
        for _ in range(24):
            seen.add("global", c.get("/", headers={"x-canary": "always"}), COOKIE)
        for i in range(40):
            seen.add("weighted", c.get(f"/weighted/{i}"), WEIGHTED_COOKIE)
        second = flushed_scrape(envoy)
    finally:
        sick.set_health(200)

    return Scrapes(first, second, seen)


def check(sc: Scrapes) -> None:
    first, second, seen = sc.first, sc.second, sc.seen
    # The mix did what it should: v1 never failed, v2 failed on one pod only.
    assert seen.errors[V1] == 0 and 0 < seen.errors[V2] < seen.answers[V2], seen.__dict__
    assert seen.issued[("global", V1)] == 30 and seen.issued[("global", V2)] == 24, seen.issued
    # And Envoy's counters agree with the clients (a cross-check of the inputs).
    a, b = parse_prometheus(first), parse_prometheus(second)
    for v in (V1, V2):
        delta = lambda name, **l: total(b, name, **l) - total(a, name, **l)
        assert delta("envoy_cluster_upstream_rq_xx", envoy_cluster_name=v) == seen.answers[v]
        assert delta("envoy_cluster_upstream_rq_xx", envoy_cluster_name=v, envoy_response_code_class="5") \
            == seen.errors[v]

