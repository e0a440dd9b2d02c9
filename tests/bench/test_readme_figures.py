"""The README's performance figures are the ones `make bench` wrote.

BENCHMARKS.md is written by `make bench` (tests/bench/bench.py); the
README's "Performance and size" section quotes its size, memory and
instruction figures. These tests read both files and fail when a figure
the README states is not the one in BENCHMARKS.md, so that a new bench
run and the README cannot drift apart unnoticed. No Envoy runs here.
"""

from __future__ import annotations

import re

import pytest

import testkit

ROOT = testkit.REPO_ROOT


def section(text: str, title: str) -> str:
    start = text.index(title)
    end = text.find("\n## ", start + len(title))
    return text[start:end if end > 0 else len(text)]


@pytest.fixture(scope="module")
def bench() -> str:
    return (ROOT / "BENCHMARKS.md").read_text()


@pytest.fixture(scope="module")
def perf() -> str:
    return section((ROOT / "README.md").read_text(), "## Performance and size")


def target_row(bench: str, starts: str) -> str:
    """The "measured" cell of the targets table row that starts with `starts`."""
    for line in section(bench, "## Targets of issue 21").splitlines():
        if line.startswith("| " + starts):
            return line.split(" | ")[1]
    raise AssertionError(f"no targets row starting {starts!r} in BENCHMARKS.md")


def test_shipped_size(bench, perf):
    m = re.search(r"Shipped `[^`]+`: \*\*([\d,]+) bytes\*\*", bench)
    assert m, "BENCHMARKS.md has no size report (make size)"
    assert f"{m.group(1)} bytes" in perf, f"the README does not state the shipped size {m.group(1)} bytes"


def test_floor_ratios(bench, perf):
    for what in ("returning user, plain cookie", "new user, plain", "persistent mode, pinned pod answering"):
        measured = target_row(bench, f"instructions per request at most 1.10x the ABI floor: {what}")
        ratio = measured.split()[0]
        assert re.fullmatch(r"\d\.\d\dx", ratio), measured
        assert ratio in perf, f"the README does not state the {what} ratio {ratio}"


def test_rss_over_the_empty_filter(bench, perf):
    for starts in ("the same, median of the memory curve", "the same, both with the shipped configs"):
        mb = target_row(bench, starts).split()[0]
        assert f"{mb} MB" in perf, f"the README does not state {mb} MB ({starts})"


def test_memory_per_100_kb(bench, perf):
    curve = section(bench, "## Memory against module size")
    figures = re.findall(r"costs \*\*(\d+\.\d) MB of VmRSS\*\*", curve)
    assert len(figures) == 2, "BENCHMARKS.md has no memory-against-size slopes"
    m = re.search(r"costs [+-]\d+\.\d MB: (\d+\.\d) MB per 100 KB", curve)
    assert m, "BENCHMARKS.md has no figure for sticky-canary's own code"
    for mb in [*figures, m.group(1)]:
        assert f"{mb} MB" in perf, f"the README does not state {mb} MB per 100 KB"
