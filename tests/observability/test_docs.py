"""docs/metrics.md says what the code and observability/ do: every metric
the filter defines is listed with its labels and label values, every
recorded series of the rules file is listed, and every PromQL block is
valid (promtool). The example scrape in it is checked against a real one
by tests/e2e/test_metrics.py."""

from __future__ import annotations

import re

import yaml

from promtext import REPO_ROOT, RULES
from testkit.tools import promtool

DOC = REPO_ROOT / "docs" / "metrics.md"


def doc() -> str:
    return DOC.read_text()


def table_rows(text: str, header: str) -> list[list[str]]:
    """The rows of the markdown table whose header row starts with `header`."""
    lines = text.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith(header))
    rows = []
    for l in lines[start + 2:]:
        if not l.startswith("|"):
            break
        rows.append([c.strip() for c in l.strip("|").split("|")])
    return rows


def test_every_metric_and_label_value_is_documented():
    src = (REPO_ROOT / "src" / "metrics.rs").read_text()
    names = set(re.findall(r'"(sticky_canary_[a-z_]+)"', src))
    rows = table_rows(doc(), "| metric | labels | counts |")
    documented = {re.sub(r"`", "", r[0]).split()[0]: r[1] for r in rows}
    assert set(documented) == names, (set(documented) ^ names)
    labels = {
        "sticky_canary_decisions_total": "`route`, `version`, `reason`",
        "sticky_canary_sessions_total": "`route`, `version`, `event`",
        "sticky_canary_cookie_rejected_total": "`route`, `cause`",
        "sticky_canary_key_fallback_total": "`route`",
        "sticky_canary_passthrough_total": "—",
        "sticky_canary_config_total": "`result`",
        "sticky_canary_config_invalid": "—",
        "sticky_canary_route_cache_clear_failed_total": "—",
    }
    assert documented == labels
    # The label values: the fixed words of the enums that make them, each in its table.
    for header, enum, rs in (("| value | the request |", "Reason", "decide.rs"),
                             ("| value | the `Set-Cookie` |", "SessionEvent", "metrics.rs"),
                             ("| value | the cookie |", "Rejection", "session.rs")):
        code = (REPO_ROOT / "src" / rs).read_text()
        impl = code.split(f"impl {enum} {{", 1)[1].split("\n}\n", 1)[0]
        words = re.findall(r'=> "([a-z_]+)"', impl)
        assert words and [r[0].strip("`") for r in table_rows(doc(), header)] == words, (enum, words)


def test_every_recorded_series_is_documented():
    rules = yaml.safe_load(RULES.read_text())
    records = [r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r]
    alerts = [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]
    rows = table_rows(doc(), "| recorded series | labels | value |")
    assert [r[0].strip("`") for r in rows] == records
    assert alerts == ["StickyCanaryConfigInvalid"] and "`StickyCanaryConfigInvalid`" in doc()


def promql_blocks() -> list[str]:
    """Every expression in the ``` blocks of the PromQL section (comment
    lines and blank lines separate expressions)."""
    section = doc().split("### PromQL", 1)[1].split("### Alert", 1)[0]
    exprs = []
    for block in re.findall(r"```\n(.*?)```", section, re.S):
        for part in re.split(r"\n(?:#[^\n]*\n|\s*\n)+", "\n" + block):
            if part.strip():
                exprs.append(part.strip())
    return exprs


def test_every_promql_in_the_docs_is_valid(tmp_path):
    exprs = promql_blocks()
    assert len(exprs) == 3, exprs
    rules = [{"record": f"docs:expr{i}", "expr": e} for i, e in enumerate(exprs)]
    path = tmp_path / "docs-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "docs", "rules": rules}]}))
    p = promtool("check", "rules", str(path))
    assert p.returncode == 0, p.stdout + p.stderr
    # The 5xx and p99 examples are the Flagger templates' queries (evaluated
    # on a real scrape in test_templates.py) for canary-v2.
    flagger = (REPO_ROOT / "observability" / "flagger-metrictemplate.yaml").read_text()
    templates = {d["metadata"]["name"]: d["spec"]["query"] for d in yaml.safe_load_all(flagger)}
    squash = lambda q: re.sub(r"\s+", "", q)
    for name, e in (("sticky-canary-5xx-ratio", exprs[1]), ("sticky-canary-p99-latency", exprs[2])):
        q = templates[name].replace("{{ variables.version }}", "canary-v2").replace("{{ interval }}", "5m")
        assert squash(q) == squash(e), (name, q, e)
