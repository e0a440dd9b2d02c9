"""Prometheus' own arithmetic, to predict rule outputs from two scrapes
(histogram_quantile, round), and `promtool test rules` files against
observability/prometheus-rules.yaml. (Scrapes are read with
testkit.stats; promtool runs through testkit.tools.) Helpers only: pytest
collects no tests here."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import yaml

from testkit import REPO_ROOT
from testkit.tools import promtool

OBS = REPO_ROOT / "observability"
RULES = OBS / "prometheus-rules.yaml"
EPS = 1e-6  # the precision rule tests round to (promtool compares floats exactly)


def prom_round(x: float) -> float:
    """PromQL's round(x, EPS) (promql/functions.go)."""
    inv = 1.0 / EPS
    return math.floor(x * inv + 0.5) / inv


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile over (upper bound, cumulative value)
    pairs (promql/quantile.go: linear interpolation inside the bucket; the
    +Inf bucket answers the highest finite bound)."""
    buckets = sorted(buckets)
    if len(buckets) < 2 or buckets[-1][0] != math.inf:
        return math.nan
    # ensureMonotonic
    fixed, top = [], -math.inf
    for ub, c in buckets:
        top = max(top, c)
        fixed.append((ub, top))
    buckets = fixed
    observations = buckets[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = next(i for i, (_, c) in enumerate(buckets) if c >= rank)
    if b == len(buckets) - 1:
        return buckets[-2][0]
    if b == 0 and buckets[0][0] <= 0:
        return buckets[0][0]
    start, end, count = 0.0, buckets[b][0], buckets[b][1]
    if b > 0:
        start = buckets[b - 1][0]
        count -= buckets[b - 1][1]
        rank -= buckets[b - 1][1]
    return start + (end - start) * (rank / count)


def run_rule_tests(path: Path, tests: list[dict], **top) -> subprocess.CompletedProcess:
    """`promtool test rules` on a file (written to `path`) holding `tests`
    against RULES, with the other top-level keys `top`."""
    doc = {"rule_files": [str(RULES)], **top, "tests": tests}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return promtool("test", "rules", str(path))
