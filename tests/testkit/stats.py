"""Reading Envoy's admin interface: the one stats reader.

From ``/stats`` (text, ``name: value``):
    ``parse_stats(text, prefix="") -> {name: int}``: the counters and
    gauges, the filter's ``wasmcustom.`` prefix stripped
    (``sticky_canary_config_total.result=.=accepted;.;``), only names
    starting with `prefix`. ``Envoy.counters(prefix)`` and
    ``Envoy.counter(name)`` read a live Envoy through it.
    ``parse_metric(full) -> (name, labels)``: a labelled counter name (the
    tag format the filter uses, as Istio does) split:
    ``sticky_canary_decisions_total.route=.=global;.;reason=.=new;.;`` ->
    ``("sticky_canary_decisions_total", {"route": "global", "reason":
    "new"})``. ``Envoy.metric(name, **labels)`` and ``Envoy.metrics(name)``
    add those up.

From ``/stats/prometheus`` (``Envoy.prometheus()``):
    ``parse_prometheus(text, prefix="") -> {series: float}``: every sample
    whose name starts with `prefix`, keyed by the series as written
    (``name{a="b",...}``); a line that is not a sample, or a series that
    appears twice, fails the test. ``split_series(series) -> (name,
    {label: value})``; ``select(samples, name, **labels)`` and
    ``total(samples, name, **labels)``.

From ``/clusters``:
    ``parse_clusters(text) -> {(cluster, address): {stat: value}}`` (every
    per-host line: ``cx_active``, ``health_flags``, ...);
    ``Envoy.cluster_hosts(cluster) -> {address: health flags}`` and
    ``Envoy.host_stat(cluster, address, stat)`` read a live Envoy through it.
"""

from __future__ import annotations

import re

# A Prometheus sample line, and one label pair inside its braces.
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_stats(text: str, prefix: str = "") -> dict[str, int]:
    """Integer stats from admin /stats (text format), `wasmcustom.`
    stripped, only names starting with `prefix`."""
    out = {}
    for line in text.splitlines():
        name, sep, value = line.partition(": ")
        if not sep:
            continue
        name = name.removeprefix("wasmcustom.")
        if name.startswith(prefix):
            try:
                out[name] = int(value)
            except ValueError:
                pass  # histograms
    return out


def parse_metric(full: str) -> tuple[str, dict[str, str]]:
    """Split a labelled counter name (Istio's tag format, as the filter
    defines them) into its metric name and labels:
    ``sticky_canary_decisions_total.route=.=global;.;reason=.=new;.;`` ->
    ``("sticky_canary_decisions_total", {"route": "global", "reason": "new"})``."""
    name, _, rest = full.partition(".")
    if "=.=" not in rest:
        return full, {}
    labels = {}
    for part in rest.split(";.;"):
        if part:
            k, _, v = part.partition("=.=")
            labels[k] = v
    return name, labels


def parse_prometheus(text: str, prefix: str = "") -> dict[str, float]:
    """{series as written (`name{labels}`): value} of every sample line
    whose name starts with `prefix` (comments and blank lines skipped)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or not line.startswith(prefix):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, labels, value = m.groups()
        series = name + (labels or "")
        assert series not in out, f"duplicate series {series}"
        out[series] = float(value)
    return out


def split_series(series: str) -> tuple[str, dict[str, str]]:
    """`name{a="b"}` -> ("name", {"a": "b"}) (labels in their order)."""
    name, _, rest = series.partition("{")
    return name, dict(LABEL.findall(rest))


def select(samples: dict[str, float], name: str, **labels: str) -> dict[str, float]:
    """The samples of metric `name` whose labels include `labels`."""
    out = {}
    for k, v in samples.items():
        n, got = split_series(k)
        if n == name and all(got.get(a) == b for a, b in labels.items()):
            out[k] = v
    return out


def total(samples: dict[str, float], name: str, **labels: str) -> float:
    return sum(select(samples, name, **labels).values())


def parse_clusters(text: str) -> dict[tuple[str, str], dict[str, str]]:
    """Admin /clusters' per-host lines (`cluster::address::stat::value`) as
    {(cluster, address): {stat: value}}."""
    out: dict[tuple[str, str], dict[str, str]] = {}
    for line in text.splitlines():
        parts = line.split("::")
        if len(parts) == 4 and ":" in parts[1]:
            out.setdefault((parts[0], parts[1]), {})[parts[2]] = parts[3]
    return out
