#!/usr/bin/env python3
"""What each kilobyte of .wasm costs Envoy in memory (part of `make bench`).

Modules, from the empty filter up to sticky-canary:
  - the probe filter (tests/bench/probe-filter) with an empty config, built
    with BENCH_PROBE_PAD=N for N in --pads: N exported functions that
    nothing calls, about 1.2 KB of code each with loops and branches (its
    build.rs), so that V8 has that much more code to compile and nothing
    else changes; `NxL` gives N functions of L loops (48: about 14 KB each,
    the size of the filter's largest functions);
  - sticky-canary as shipped (opt-level 3, wasm-opt -O1), and built with
    other opt-levels (--opt-levels; the same wasm-opt -O1 after), with the
    config of a returning user's bench case.

Each module is loaded by a fresh Envoy 1.40 (`--concurrency 1`, one
direct_response route), which answers --requests requests on one
keep-alive connection, then idles --idle seconds; then its VmRSS
(/proc/PID/status) and tcmalloc's figures (admin /memory) are read. Each
point is the median of --runs such Envoys. The same is done with the
bootstrap's `memory_allocator_manager` (--release, see the README's
Performance section) for the empty filter and the shipped module.

Output: a markdown report (stdout and target/bench/memcurve.md, which make
bench puts into BENCHMARKS.md) with the points, the least-squares slope of
each figure against module size over the probe points (MB per 100 KB), and
raw figures in target/bench/memcurve.json.

Everything listens on 127.0.0.1; every Envoy is a child killed on exit;
every wait is bounded.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from instr import admin_get
from run import status_kb
from benchlib import FILTER_WASM, OUT_DIR, PROBE_CRATE, ROOT, VERSIONS, die_with_parent, envoy_binary, log
from testkit import free_port, start_process
from testkit.envoy import admin_ready

CURVE_DIR = OUT_DIR / "curve"
PAD_TARGET = OUT_DIR / "probe-pad"
TARGET = "wasm32-wasip1"
PLUGIN = json.dumps({"versions": VERSIONS})
# tcmalloc's figures of admin /memory, in the order reported.
HEAP = ("allocated", "heap_size", "pageheap_free", "pageheap_unmapped", "total_thread_cache")


@dataclass
class Module:
    key: str
    label: str
    wasm: Path | None  # None: no wasm filter
    plugin: str = ""
    probe: str = ""  # a probe build: a point of the "small" or "large" functions line
    release: bool = False  # with memory_allocator_manager
    runs: list[dict] = field(default_factory=list)

    @property
    def size(self) -> int:
        return self.wasm.stat().st_size if self.wasm else 0

    def median(self, key: str) -> float:
        xs = [r[key] for r in self.runs if key in r]
        return statistics.median(xs) if xs else 0.0


SMALL_LOOPS = 4  # the probe's build.rs default: about 1.2 KB per function


def build_probe_pads(pads: list[str]) -> dict[str, Path]:
    """One probe build per padding (`N` or `NxLOOPS`), copied out of the
    shared target dir."""
    CURVE_DIR.mkdir(parents=True, exist_ok=True)
    out = {}
    for pad in pads:
        n, _, loops = pad.partition("x")
        loops = loops or str(SMALL_LOOPS)
        key = n if loops == str(SMALL_LOOPS) else f"{n}x{loops}"
        env = dict(os.environ, BENCH_PROBE_PAD=n, BENCH_PROBE_PAD_LOOPS=loops, CARGO_TARGET_DIR=str(PAD_TARGET))
        cmd = ["cargo", "build", "--release", "--target", TARGET, "-q"]
        log(f"memcurve: BENCH_PROBE_PAD={n} BENCH_PROBE_PAD_LOOPS={loops} " + " ".join(cmd)
            + f" (in {PROBE_CRATE.relative_to(ROOT)})")
        r = subprocess.run(cmd, cwd=PROBE_CRATE, env=env, timeout=1800)
        if r.returncode != 0:
            sys.exit(f"memcurve: the padded probe ({pad}) did not build")
        dst = CURVE_DIR / f"probe-pad{key}.wasm"
        shutil.copyfile(PAD_TARGET / TARGET / "release" / "bench_probe_filter.wasm", dst)
        out[key] = dst
    return out


def build_opt_level(level: str) -> Path | None:
    """sticky-canary at another opt-level, then wasm-opt -O1 as make build."""
    tdir = OUT_DIR / f"opt-{level}"
    env = dict(os.environ, CARGO_PROFILE_RELEASE_OPT_LEVEL=level, CARGO_TARGET_DIR=str(tdir))
    cmd = ["cargo", "build", "--release", "--target", TARGET, "-q"]
    log(f"memcurve: CARGO_PROFILE_RELEASE_OPT_LEVEL={level} " + " ".join(cmd))
    r = subprocess.run(cmd, cwd=ROOT, env=env, timeout=3600)
    built = tdir / TARGET / "release" / "sticky_canary.wasm"
    if r.returncode != 0 or not built.exists():
        log(f"memcurve: the opt-level {level} build failed; left out")
        return None
    subprocess.run([str(ROOT / "scripts" / "wasm-opt.sh"), str(built)], cwd=ROOT, timeout=600,
                   stdout=subprocess.DEVNULL)
    dst = CURVE_DIR / f"sticky_canary.opt-{level}.wasm"
    shutil.copyfile(built, dst)
    return dst


def envoy_config(m: Module, port: int, admin: int, release: dict | None) -> dict:
    filters = []
    if m.wasm:
        filters.append({"name": "envoy.filters.http.wasm", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "memcurve", "root_id": "",
                "vm_config": {"vm_id": "memcurve", "runtime": "envoy.wasm.runtime.v8",
                              "code": {"local": {"filename": str(m.wasm)}}},
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": m.plugin},
            },
        }})
    filters.append({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "bench",
        "route_config": {"name": "bench", "virtual_hosts": [{"name": "bench", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}]}]},
        "http_filters": filters,
    }
    cfg: dict = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {"listeners": [{
            "name": "bench", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": hcm}]}],
        }]},
    }
    if release:
        cfg["memory_allocator_manager"] = release
    return cfg


def measure(binary: str, m: Module, tmp: Path, requests: int, idle: float, release: dict | None,
            cpu: int | None) -> dict:
    port, admin = free_port(), free_port()
    d = tmp / f"{m.key}-{len(m.runs)}"
    d.mkdir(parents=True, exist_ok=True)
    cfg = d / "envoy.json"
    cfg.write_text(json.dumps(envoy_config(m, port, admin, release), indent=1))
    cmd = [binary, "-c", str(cfg), "--concurrency", "1", "--disable-hot-restart", "--log-level", "warning",
           "--drain-time-s", "1"]

    def pre() -> None:
        die_with_parent()
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    proc = start_process(f"envoy {m.key}", cmd, d / "envoy.log", ready=lambda _: admin_ready(admin, timeout=5),
                         timeout=120, preexec_fn=pre, poll=0.2)
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            for i in range(requests):
                c.request("GET", "/")
                r = c.getresponse()
                body = r.read()
                if r.status != 200 or body != b"ok\n":
                    raise RuntimeError(f"request {i}: status {r.status} {body[:200]!r}")
        finally:
            c.close()
        time.sleep(idle)
        out: dict = {"rss_kb": status_kb(proc.popen.pid, "VmRSS")}
        status, body = admin_get(admin, "/memory")
        if status == 200:
            mem = json.loads(body)
            out.update({k: int(mem[k]) for k in HEAP if k in mem})
        return out
    finally:
        proc.stop(grace=10.0)


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys against xs."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0


def report(mods: list[Module], meta: dict) -> str:
    base = next((m for m in mods if m.wasm is None and not m.release), None)
    empty = next((m for m in mods if m.key == "pad0"), None)
    lines = [f"Envoy {meta['envoy']}, `--concurrency 1`, one `direct_response` route; each Envoy answered "
             f"{meta['requests']} requests on one keep-alive connection, then idled {meta['idle']:g} s; median "
             f"of {meta['runs']} fresh Envoys per row. tcmalloc's figures are Envoy's admin `/memory`: "
             "*allocated* is held by Envoy, V8 and the filter; *free* (pageheap_free) and the thread caches "
             "are freed but kept by tcmalloc; *unmapped* is returned to the system and not in RSS.", "",
             "| module | .wasm bytes | VmRSS, MB | over the empty filter, MB | allocated, MB | heap size, MB | "
             "free, MB | unmapped, MB | thread caches, MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    empty_release = next((m for m in mods if m.key == "pad0-release"), None)
    for m in mods:
        over = ""
        e = empty_release if m.release else empty
        if e and m.wasm is not None and m is not e:
            over = f"{(m.median('rss_kb') - e.median('rss_kb')) / 1024:+.1f}"
        lines.append(f"| {m.label} | {m.size:,} | {m.median('rss_kb') / 1024:.1f} | {over} | "
                     + " | ".join(f"{m.median(k) / 1e6:.1f}" for k in HEAP) + " |")
    meta["slope_mb_per_100kb"] = {}
    for kind, what in (("small", "functions of about 1.2 KB"), ("large", "large functions")):
        probes = [m for m in mods if m.probe in (kind, "both") and not m.release]
        if len(probes) < 2:
            continue
        xs = [m.size / 100_000 for m in probes]
        fit = {k: slope(xs, [m.median(k) / 1e6 for m in probes]) for k in HEAP}
        rss = slope(xs, [m.median("rss_kb") / 1024 for m in probes])
        meta["slope_mb_per_100kb"][kind] = {"rss": rss, **fit}
        lines += ["", f"Padding with {what} ({len(probes)} sizes from the empty filter, least squares): each "
                  f"100 KB of wasm code costs **{rss:.1f} MB of VmRSS** per Envoy worker "
                  f"({fit['allocated']:.1f} MB allocated, {fit['heap_size']:.1f} MB of tcmalloc heap)."]
    sticky, empty_m = next((m for m in mods if m.key == "sticky"), None), empty
    if sticky and empty_m and meta["slope_mb_per_100kb"]:
        extra = (sticky.size - empty_m.size) / 100_000
        have = (sticky.median("rss_kb") - empty_m.median("rss_kb")) / 1024
        lines += ["", f"sticky-canary is {extra * 100:,.0f} KB more than the empty filter and costs {have:+.1f} MB: "
                  + ", ".join(f"{have / extra:.1f} MB per 100 KB against {v['rss']:.1f} for the {k} padding"
                              for k, v in meta["slope_mb_per_100kb"].items() if k == "small")
                  + ". V8 compiles every function of the module with TurboFan when it loads, whether it ever "
                  "runs or not, and frees most of that memory afterwards; tcmalloc keeps it. Real code (calls, "
                  "memory accesses, branches) costs more to compile per KB than the padding."]
    if base:
        lines += ["", f"Without any wasm filter Envoy holds {base.median('rss_kb') / 1024:.1f} MB."]
    rel = meta.get("release")
    if rel:
        lines += ["", f"Rows with `memory_allocator_manager` ran with `{{bytes_to_release: {rel['bytes_to_release']}, "
                  f"memory_release_interval: {rel['memory_release_interval']}}}` in the bootstrap (their \"over the "
                  "empty filter\" is against the empty filter with the same setting): Envoy 1.38+ hands it to "
                  "tcmalloc's own background thread as a release rate, which returns free pages of the page heap "
                  "to the system (*unmapped*); the thread caches stay."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pads", default="0,150,300,450,12x48,24x48",
                    help="probe paddings: N functions of 1.2 KB, or NxL functions of L loops "
                         "(default 0,150,300,450,12x48,24x48)")
    ap.add_argument("--opt-levels", default="s,z", help="sticky-canary also built at these opt-levels "
                                                       "(default s,z; '' for none)")
    ap.add_argument("--runs", type=int, default=3, help="fresh Envoys per module (default 3)")
    ap.add_argument("--requests", type=int, default=200, help="requests per Envoy (default 200)")
    ap.add_argument("--idle", type=float, default=3.0, help="seconds idle before reading (default 3)")
    ap.add_argument("--release", default="10485760:1s",
                    help="memory_allocator_manager bytes_to_release:memory_release_interval for the rows "
                         "with it (default 10485760:1s; '' for none)")
    ap.add_argument("--extra", action="append", default=[], type=Path,
                    help="another sticky-canary build to measure (repeatable)")
    ap.add_argument("--out", type=Path, default=OUT_DIR / "memcurve.json")
    args = ap.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    args.runs = max(1, min(args.runs, 20))
    if not FILTER_WASM.exists():
        sys.exit(f"memcurve: {FILTER_WASM} missing (`make build`)")
    pads = build_probe_pads([x.strip() for x in args.pads.split(",") if x.strip()])
    mods = [Module("none", "no wasm filter", None)]
    for key, p in pads.items():
        n, _, loops = key.partition("x")
        if key == "0":
            label, kind = "empty filter (probe)", "both"
        elif loops:
            label, kind = f"probe + {n} unused functions of about {0.3 * int(loops):.0f} KB", "large"
        else:
            label, kind = f"probe + {n} unused functions (about 1.2 KB each)", "small"
        mods.append(Module(f"pad{key}", label, p, probe=kind))
    mods.append(Module("sticky", "sticky-canary as shipped (opt-level 3)", FILTER_WASM, PLUGIN))
    for level in [x for x in args.opt_levels.split(",") if x.strip()]:
        p = build_opt_level(level)
        if p:
            mods.append(Module(f"sticky-{level}", f"sticky-canary, opt-level \"{level}\"", p, PLUGIN))
    for i, p in enumerate(args.extra):
        mods.append(Module(f"extra{i}", f"sticky-canary, {p.name}", p.resolve(), PLUGIN))
    release = None
    if args.release:
        b, _, interval = args.release.partition(":")
        release = {"bytes_to_release": int(b), "memory_release_interval": interval or "1s"}
        for key in ("none", "pad0", "sticky"):
            m = next(x for x in mods if x.key == key)
            mods.append(Module(key + "-release", m.label + ", `memory_allocator_manager`", m.wasm, m.plugin,
                               release=True))
    binary = envoy_binary()
    cpus = sorted(os.sched_getaffinity(0))
    tmp = Path(tempfile.mkdtemp(prefix="sticky-canary-memcurve-"))
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=60).stdout
    version = re.search(r"version: [0-9a-f]+/([^/\s]+)/", out)
    meta = {"envoy": version.group(1) if version else "?",
            "requests": args.requests, "idle": args.idle, "runs": args.runs, "release": release}
    try:
        # Runs interleaved: drift on a shared machine spreads over every row.
        for r in range(args.runs):
            for m in mods:
                m.runs.append(measure(binary, m, tmp, args.requests, args.idle, release if m.release else None,
                                      cpus[0] if cpus else None))
                log(f"memcurve: run {r + 1}: {m.key} ({m.size:,} bytes): VmRSS {m.runs[-1]['rss_kb'] / 1024:.1f} MB, "
                    f"heap {m.runs[-1].get('heap_size', 0) / 1e6:.1f} MB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    md = report(mods, meta)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(md)
    args.out.write_text(json.dumps({"meta": meta, "modules": [
        {"key": m.key, "label": m.label, "wasm": str(m.wasm) if m.wasm else None, "bytes": m.size,
         "release": m.release, "runs": m.runs} for m in mods]}, indent=1))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
