#!/usr/bin/env python3
"""`make report`: a rollout through the real Envoy, as a picture.

Starts the four whoami pods and Envoy (envoy-config/envoy-local.yaml) with a
plugin config whose canary-v2 weight ramps from 0 to 50 % on the proxy's own
clock (a timed ramp: no controller, no config update). A population of
users (each a cookie jar; seeded, so the same users visit in the same
order) visits round after round while the weight ramps: in each round
every user visits with probability --visit-rate, so there are new users
(first visit) and returning ones (with the cookie Envoy gave them).

Writes an SVG (default .run/report/report.svg) with:
- the share of requests per version per round, and the configured weight;
- the requests per pod per round;
- the users who ever changed version (and from which to which) or pod, and
  the ones who changed pod without changing version (sticky: none);
and the raw rows as JSON beside it (report.json). Prints a summary.

Needs the filter built (`make build`) and .venv (`make venv`); `make report`
runs it with PYTHONPATH=tests, which makes tests/testkit importable.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import testkit  # tests/testkit: PYTHONPATH=tests (make report sets it)

COOKIE = "my-sticky-cookie"
VERSIONS = ["canary-v1", "canary-v2"]
COLORS = {"canary-v1": "#1f77b4", "canary-v2": "#ff7f0e"}
POD_COLORS = ["#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896"]


def plugin_config(start: int, step_seconds: int, steps: int, to: int) -> dict:
    return {
        "versions": [
            {"name": "canary-v1"},
            {"name": "canary-v2", "ramp": {"start": start, "duration": step_seconds * steps, "from": 0, "to": to, "steps": steps}},
        ],
        "session": {"cookie": {"name": COOKIE, "max_age": 3600, "http_only": True}},
    }


def ramp_weight(now: float, start: int, step_seconds: int, steps: int, to: int) -> int:
    """The filter's Weight::at for this ramp (whole seconds, as the host clock)."""
    t = int(now)
    if t <= start:
        return 0
    end = start + step_seconds * steps
    if t >= end:
        return to
    step = (t - start) * steps // (end - start)
    return to * step // steps


@dataclass
class Row:
    round: int
    user: int
    new: bool
    version: str
    pod: str
    weight: int
    status: int


@dataclass
class Result:
    rows: list[Row] = field(default_factory=list)
    rounds: int = 0
    users: int = 0
    weights: list[int] = field(default_factory=list)  # configured weight at each round's start
    pods: list[str] = field(default_factory=list)


def run_rollout(workdir: Path, *, users: int = 300, steps: int = 5, step_seconds: int = 4,
                to: int = 50, visit_rate: float = 0.6, seed: int = 1, log=print) -> Result:
    """Drive the population through Envoy while the ramp runs; returns every request."""
    workdir.mkdir(parents=True, exist_ok=True)
    backends = testkit.start_backends(workdir / "backends")
    envoy = None
    try:
        # The ramp starts a few seconds from now, after Envoy is up. If a
        # busy machine takes longer to start it, the first rounds simply
        # come later in the ramp (each row records the weight it met).
        start = int(time.time()) + 5
        envoy = testkit.start_envoy(testkit.load_config(), workdir / "envoy", backends=backends,
                                    plugin=plugin_config(start, step_seconds, steps, to))
        rng = random.Random(seed)
        jars: dict[int, str] = {}
        res = Result(users=users, pods=[b.hostname for b in backends.all])
        client = envoy.client()
        rounds = steps + 2  # one round per step, one at the end weight, one after
        for k in range(rounds):
            target = start + k * step_seconds + 0.3
            delay = target - time.time()
            if delay > 0:
                time.sleep(delay)
            res.weights.append(ramp_weight(max(time.time(), target), start, step_seconds, steps, to))
            for u in range(users):
                if rng.random() >= visit_rate:
                    continue
                cookies = {COOKIE: jars[u]} if u in jars else None
                now = time.time()
                r = client.get("/", cookies=cookies)
                for c in r.cookies_named(COOKIE):
                    jars[u] = c.value
                res.rows.append(Row(k, u, cookies is None, r.name or "?", r.hostname or "?",
                                    ramp_weight(now, start, step_seconds, steps, to), r.status))
            log(f"round {k}: weight {res.weights[-1]:3d}%  requests {sum(1 for x in res.rows if x.round == k)}")
        res.rounds = rounds
        client.close()
        return res
    finally:
        if envoy is not None:
            envoy.stop()
        backends.stop()


@dataclass
class Summary:
    requests: int
    errors: int
    users_seen: int
    changed_version: Counter  # (from, to) -> users
    changed_pod: int
    changed_pod_same_version: int
    per_round_share: list[dict[str, float]]
    per_round_pods: list[Counter]
    cumulative_changed_version: list[int]
    cumulative_changed_pod: list[int]


def summarize(res: Result) -> Summary:
    by_user: dict[int, list[Row]] = defaultdict(list)
    for r in res.rows:
        by_user[r.user].append(r)
    changed_version: Counter = Counter()
    first_change_v: dict[int, int] = {}
    first_change_p: dict[int, int] = {}
    pod_same_version = 0
    for u, rows in by_user.items():
        for a, b in zip(rows, rows[1:]):
            if a.version != b.version:
                changed_version[(a.version, b.version)] += 1
                first_change_v.setdefault(u, b.round)
            if a.pod != b.pod:
                first_change_p.setdefault(u, b.round)
        pods_per_version = defaultdict(set)
        for r in rows:
            pods_per_version[r.version].add(r.pod)
        if any(len(p) > 1 for p in pods_per_version.values()):
            pod_same_version += 1
    shares, pods = [], []
    for k in range(res.rounds):
        rows = [r for r in res.rows if r.round == k]
        n = max(len(rows), 1)
        c = Counter(r.version for r in rows)
        shares.append({v: 100.0 * c[v] / n for v in VERSIONS})
        pods.append(Counter(r.pod for r in rows))
    cum_v = [sum(1 for r in first_change_v.values() if r <= k) for k in range(res.rounds)]
    cum_p = [sum(1 for r in first_change_p.values() if r <= k) for k in range(res.rounds)]
    return Summary(
        requests=len(res.rows),
        errors=sum(1 for r in res.rows if r.status != 200),
        users_seen=len(by_user),
        changed_version=changed_version,
        changed_pod=len(first_change_p),
        changed_pod_same_version=pod_same_version,
        per_round_share=shares,
        per_round_pods=pods,
        cumulative_changed_version=cum_v,
        cumulative_changed_pod=cum_p,
    )


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_svg(res: Result, s: Summary, title: str) -> str:
    W, H = 900, 880
    left, right = 70, 190
    pw = W - left - right
    panels = [(60, 200), (330, 200), (600, 200)]  # (top, height)
    slots = max(res.rounds, 1)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{left}" y="26" font-size="15" font-weight="bold">{_esc(title)}</text>']

    def x(k: float) -> float:
        # The centre of round k's slot, so bars never reach the legend.
        return left + pw * (k + 0.5) / slots

    def nice(v: float) -> float:
        """The smallest 4 x (1, 2, 2.5 or 5 x 10^k) at or above v."""
        step = 1.0
        while True:
            for m in (1, 2, 2.5, 5):
                if 4 * step * m >= v:
                    return 4 * step * m
            step *= 10

    def axes(top: int, h: int, ymax: float, label: str, fmt) -> None:
        for i in range(5):
            v = ymax * i / 4
            yy = top + h - h * i / 4
            out.append(f'<line x1="{left}" y1="{yy:.1f}" x2="{left + pw}" y2="{yy:.1f}" stroke="#ddd"/>'
                       f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end">{fmt(v)}</text>')
        for k in range(res.rounds):
            out.append(f'<text x="{x(k):.1f}" y="{top + h + 16}" text-anchor="middle">{k}</text>')
        out.append(f'<text x="{left - 50}" y="{top + h / 2:.1f}" transform="rotate(-90 {left - 50} {top + h / 2:.1f})" text-anchor="middle">{_esc(label)}</text>')

    def legend(top: int, items: list[tuple[str, str, bool]]) -> None:
        for i, (name, color, dashed) in enumerate(items):
            ly = top + 10 + 18 * i
            lx = left + pw + 18
            dash = ' stroke-dasharray="5,4"' if dashed else ""
            out.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 20}" y2="{ly}" stroke="{color}" stroke-width="2.5"{dash}/>'
                       f'<text x="{lx + 26}" y="{ly + 4}">{_esc(name)}</text>')

    # 1. share per version, and the configured weight (dashed)
    top, h = panels[0]
    out.append(f'<text x="{left}" y="{top - 12}" font-weight="bold">Share of requests per version, per round (dashed: configured weight)</text>')
    axes(top, h, 100, "share", lambda v: f"{v:.0f}%")
    for v in VERSIONS:
        pts = " ".join(f"{x(k):.1f},{top + h - h * s.per_round_share[k][v] / 100:.1f}" for k in range(res.rounds))
        out.append(f'<polyline points="{pts}" fill="none" stroke="{COLORS[v]}" stroke-width="2.5"/>')
        for k in range(res.rounds):
            out.append(f'<circle cx="{x(k):.1f}" cy="{top + h - h * s.per_round_share[k][v] / 100:.1f}" r="3" fill="{COLORS[v]}"/>')
        w = [res.weights[k] if v == "canary-v2" else 100 - res.weights[k] for k in range(res.rounds)]
        wpts = " ".join(f"{x(k):.1f},{top + h - h * w[k] / 100:.1f}" for k in range(res.rounds))
        out.append(f'<polyline points="{wpts}" fill="none" stroke="{COLORS[v]}" stroke-width="1.5" stroke-dasharray="5,4" opacity="0.7"/>')
    legend(top, [(v, COLORS[v], False) for v in VERSIONS] + [("weight", "#555", True)])

    # 2. requests per pod, stacked bars
    top, h = panels[1]
    out.append(f'<text x="{left}" y="{top - 12}" font-weight="bold">Requests per pod, per round</text>')
    ymax = nice(max((sum(c.values()) for c in s.per_round_pods), default=1))
    axes(top, h, ymax, "requests", lambda v: f"{v:.0f}")
    bw = min(40, pw / slots * 0.6)
    for k, c in enumerate(s.per_round_pods):
        y0 = top + h
        for i, pod in enumerate(res.pods):
            hh = h * c.get(pod, 0) / ymax
            out.append(f'<rect x="{x(k) - bw / 2:.1f}" y="{y0 - hh:.1f}" width="{bw:.1f}" height="{hh:.1f}" fill="{POD_COLORS[i % len(POD_COLORS)]}"/>')
            y0 -= hh
    totals = Counter(r.pod for r in res.rows)
    legend(top, [(f"{p} ({totals.get(p, 0)})", POD_COLORS[i % len(POD_COLORS)], False) for i, p in enumerate(res.pods)])

    # 3. users who ever changed version / pod (cumulative)
    top, h = panels[2]
    out.append(f'<text x="{left}" y="{top - 12}" font-weight="bold">Users who ever changed version or pod (cumulative)</text>')
    ymax = nice(max(s.cumulative_changed_version + s.cumulative_changed_pod + [1]))
    axes(top, h, ymax, "users", lambda v: f"{v:.0f}")
    for series, color, dashed in ((s.cumulative_changed_version, "#d62728", False), (s.cumulative_changed_pod, "#555", True)):
        pts = " ".join(f"{x(k):.1f},{top + h - h * series[k] / ymax:.1f}" for k in range(res.rounds))
        dash = ' stroke-dasharray="5,4"' if dashed else ""
        out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2.5"{dash}/>')
    legend(top, [("changed version", "#d62728", False), ("changed pod", "#555", True)])
    moves = ", ".join(f"{a} -> {b}: {n}" for (a, b), n in sorted(s.changed_version.items())) or "none"
    foot1 = (f"{res.users} users, {s.users_seen} visited, {s.requests} requests ({s.errors} not 200). "
             f"Changed version: {moves}.")
    foot2 = f"Changed pod without changing version: {s.changed_pod_same_version}."
    out.append(f'<text x="{left}" y="{top + h + 40}">{_esc(foot1)}</text>')
    out.append(f'<text x="{left}" y="{top + h + 58}">{_esc(foot2)}</text>')
    out.append(f'<text x="{left}" y="{top + h + 76}" fill="#555">x axis: round (one per step of the timed ramp, on the proxy\'s clock)</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=300)
    ap.add_argument("--steps", type=int, default=5, help="ramp steps (0 -> --to)")
    ap.add_argument("--to", type=int, default=50, help="final canary-v2 weight (%%)")
    ap.add_argument("--step-seconds", type=int, default=4)
    ap.add_argument("--visit-rate", type=float, default=0.6)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--svg", default=str(testkit.REPO_ROOT / ".run" / "report" / "report.svg"))
    ap.add_argument("--workdir", default=str(testkit.REPO_ROOT / ".run" / "report"))
    a = ap.parse_args(argv)
    testkit.require_envoy_and_wasm()
    res = run_rollout(Path(a.workdir), users=a.users, steps=a.steps, step_seconds=a.step_seconds,
                      to=a.to, visit_rate=a.visit_rate, seed=a.seed)
    s = summarize(res)
    title = f"sticky-canary rollout through Envoy: canary-v2 ramps 0 -> {a.to}% in {a.steps} steps, {a.users} users"
    svg_path = Path(a.svg)
    svg_path.parent.mkdir(parents=True, exist_ok=True)
    svg_path.write_text(render_svg(res, s, title))
    json_path = svg_path.with_suffix(".json")
    json_path.write_text(json.dumps({"weights": res.weights, "pods": res.pods,
                                     "rows": [r.__dict__ for r in res.rows]}, indent=0))
    print(f"requests {s.requests} ({s.errors} not 200), users who visited {s.users_seen}")
    for (a_, b), n in sorted(s.changed_version.items()):
        print(f"changed version {a_} -> {b}: {n} users")
    print(f"changed pod: {s.changed_pod} users; changed pod without changing version: {s.changed_pod_same_version}")
    print(f"wrote {svg_path} and {json_path}")
    return 0 if s.errors == 0 and s.changed_pod_same_version == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
