"""`make report` in small: a population through the real Envoy while the
canary weight ramps on the proxy's clock (tests/report/report.py).

What holds whatever the machine's speed: every request is answered; a
rising weight only ever moves users from canary-v1 to canary-v2; nobody
changes pod without changing version (the sticky hash pins the pod); and
the report renders as well-formed SVG with the three panels.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import report  # report.py beside this file


def test_rollout_report_through_envoy(tmp_path):
    res = report.run_rollout(tmp_path / "report", users=60, steps=2, step_seconds=3, to=50,
                             visit_rate=0.7, seed=3, log=lambda *_: None)
    s = report.summarize(res)
    assert res.rounds == 4
    assert s.requests > 0 and s.errors == 0
    assert set(s.changed_version) <= {("canary-v1", "canary-v2")}, s.changed_version
    assert s.changed_pod_same_version == 0
    # Every pod the users were sent to is one of the four.
    assert {r.pod for r in res.rows} <= set(res.pods)
    # Returning users came back with their cookie (some rounds after the first).
    assert any(not r.new for r in res.rows)
    svg = report.render_svg(res, s, "test")
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    texts = [t.text for t in root.iter() if t.tag.endswith("text")]
    for title in ("Share of requests per version", "Requests per pod", "Users who ever changed version"):
        assert any(t and t.startswith(title) for t in texts), title
