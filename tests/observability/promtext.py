"""Reading Envoy's /stats/prometheus, and Prometheus' own arithmetic
(rate over two samples, histogram_quantile) to predict rule outputs.
Helpers only: pytest collects no tests here."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path

from harness import hang_guard

REPO_ROOT = Path(__file__).resolve().parents[2]
OBS = REPO_ROOT / "observability"
RULES = OBS / "prometheus-rules.yaml"

LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def samples(text: str) -> dict[str, float]:
    """{series as written (`name{labels}`): value} of every sample line."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = LINE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, labels, value = m.groups()
        out[name + (labels or "")] = float(value)
    return out


def split(series: str) -> tuple[str, dict[str, str]]:
    """`name{a="b"}` -> ("name", {"a": "b"})."""
    name, _, rest = series.partition("{")
    return name, dict(LABEL.findall(rest))


def select(s: dict[str, float], name: str, **labels: str) -> dict[str, float]:
    """The samples of metric `name` whose labels include `labels`."""
    out = {}
    for k, v in s.items():
        n, l = split(k)
        if n == name and all(l.get(a) == b for a, b in labels.items()):
            out[k] = v
    return out


def total(s: dict[str, float], name: str, **labels: str) -> float:
    return sum(select(s, name, **labels).values())


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


def promtool(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool")
    assert exe, "promtool not found: apt-get install -y prometheus (.ci/run installs it)"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=hang_guard(timeout), cwd=cwd)
