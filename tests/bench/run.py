#!/usr/bin/env python3
"""Envoy CPU time and memory with sticky-canary (the CPU-time half of `make bench`).

`make bench` (tests/bench/bench.py) runs this with 3 short rounds beside the
deterministic instruction counts of tests/bench/instr.py, which are the
figures to steer by: CPU time on a shared machine moves by several us
between runs. Run it alone for more rounds, the host-call probe table, or
`--compare OTHER.wasm`.

What is measured
  Envoy's own CPU time per request, not throughput: the CPU time of every
  Envoy thread (/proc/<pid>/task/*/schedstat, nanoseconds) is read before
  and after a load run and divided by the number of requests Envoy counted
  (admin stat http.bench.downstream_rq_total). The load generator's CPU is
  not counted, so a slow client only makes runs longer, not figures worse.
  Envoy runs with --concurrency 1 pinned to CPU 0, the load generator
  (wrk, else a Python keep-alive client) on CPU 1.

  Every route answers with Envoy's direct_response, so there is no backend
  and no upstream cost: the figures are the HTTP path (codec, routing, the
  filter chain) and the wasm filter. The HTTP filters, the wasm filter
  included, run before a direct_response route answers, and a version
  header the filter sets makes Envoy match the routes again (the bench
  checks both before measuring: a rule sends requests to the `v2` route).

  Each case is its own Envoy (one config per case, all started up front,
  idle when not measured); rounds visit the cases in a shuffled order so
  that drift on a shared machine spreads over all of them. Reported: the
  median over rounds and the range, and the cost the filter adds as the
  median of per-round differences with a baseline case. Before measuring,
  each case is checked (route taken, Set-Cookie or not, x-sticky-hash as
  the route saw it), and during every run the filter's decision and
  cookie counters must move once per request as the case claims.

  Also: Envoy RSS (VmRSS) with and without the filter, with 1 and 4
  workers; the .wasm size; per-host-call costs from a probe filter
  (tests/bench/probe-filter) that makes one kind of proxy-wasm host call
  and nothing else; `--compare OTHER.wasm` runs every sticky-canary case
  on a second build too (an A/B of an adapter change); and the native
  core micro-benchmark (`cargo bench --bench decide`, benches/decide.rs).

  The absolute figures depend on the load level (a busier Envoy batches
  more work per wake-up); the added cost of the filter does not much.
  On a shared or virtual machine expect a few us of noise per run: use
  more --rounds, and read the "added" column rather than the absolute one.

Output: a markdown report on stdout and in target/bench/results.md, raw
figures in target/bench/results.json.

Everything listens on 127.0.0.1 only; every process started here is a child
that is killed on exit; every loop and wait is bounded.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import http.client
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import (BROWSER_COOKIES, BROWSER_HEADERS_BASE, COOKIE, FILTER_WASM, LUA_SCRIPT, OUT_DIR,
                      PROBE_CRATE, PROBE_TARGET, PROBE_WASM, ROOT, SECRET, VERSIONS, die_with_parent, envoy_binary, log, select_cases)
from testkit import Process, free_port, tail, wait_until
from testkit.envoy import admin_ready

BROWSER_HEADERS = BROWSER_HEADERS_BASE + [("Upgrade-Insecure-Requests", "1")]


# --------------------------------------------------------------------------
# Cases


@dataclass
class Case:
    key: str
    label: str
    group: str  # "filter" (main table) or "probe" (host-call table)
    wasm: str | None  # None, "filter" or "probe"
    plugin_config: str = ""
    path: str = "/"
    headers: list[tuple[str, str]] = field(default_factory=list)
    # Prime a session cookie first (with these extra headers) and send it.
    cookie: bool = False
    prime_headers: list[tuple[str, str]] = field(default_factory=list)
    browser: bool = False
    # Expectations checked before measuring.
    expect_version: str | None = None  # route that must answer: v1, v2, or None = either
    expect_set_cookie: bool = False
    expect_decisions: bool = False  # sticky-canary decision counters move once per request
    baseline: str | None = None  # key of the case the delta is taken against
    # Filled in at run time.
    cookie_value: str = ""
    samples: list[float] = field(default_factory=list)
    rps: list[float] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    rss_idle_kb: int = 0
    rss_loaded_kb: int = 0
    # Memory phase: VmRSS after a short load, by --concurrency.
    rss_by_workers: dict[int, int] = field(default_factory=dict)
    # tcmalloc's view (admin /memory) with 1 worker: bytes the program holds,
    # and the heap tcmalloc keeps from the OS (held + freed but kept).
    heap: dict[str, int] = field(default_factory=dict)
    hwm_kb: int = 0

    def request_headers(self) -> list[tuple[str, str]]:
        hs = list(self.headers)
        if self.browser:
            hs = list(BROWSER_HEADERS) + hs
        cookies = []
        if self.browser:
            cookies.append(BROWSER_COOKIES)
        if self.cookie_value:
            cookies.append(self.cookie_value)
        if cookies:
            hs.append(("Cookie", "; ".join(cookies)))
        return hs


def sticky(extra: dict | None = None) -> str:
    cfg: dict = {"versions": VERSIONS}
    cfg.update(extra or {})
    return json.dumps(cfg)


def all_cases() -> list[Case]:
    rule = {"rules": [{"header": "x-canary", "value": "v2", "version": "v2"}]}
    sealed = {"session": {"secrets": [SECRET]}}
    routes = {
        "routes": [
            {"name": "shop", "match": {"path_prefix": "/shop"}, "versions": [{"name": "v1"}, {"name": "v2", "weight": 20}]},
            {"name": "api", "match": {"path_prefix": "/api"}, "versions": [{"name": "v1"}, {"name": "v2", "weight": 50}]},
        ]
    }
    set_cookie_value = f"set-cookie={COOKIE}=1AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA; Path=/; Max-Age=86400; HttpOnly"
    cases = [
        Case("none", "no wasm filter", "filter", None),
        Case("empty", "empty Rust wasm filter (does nothing)", "filter", "probe", "", baseline="none"),
        Case("pass", "sticky-canary, pass-through (no versions)", "filter", "filter", "{}", baseline="none"),
        Case("new", "sticky-canary, new session (Set-Cookie)", "filter", "filter", sticky(),
             expect_set_cookie=True, expect_decisions=True, baseline="none"),
        Case("cookie", "sticky-canary, valid cookie (steady state)", "filter", "filter", sticky(),
             cookie=True, expect_decisions=True, baseline="none"),
        Case("rule", "sticky-canary, header rule hit + cookie", "filter", "filter", sticky(rule),
             headers=[("x-canary", "v2")], cookie=True, prime_headers=[("x-canary", "v2")],
             expect_version="v2", expect_decisions=True, baseline="none"),
        Case("sealed-new", "sticky-canary, sealed, new session (Set-Cookie)", "filter", "filter", sticky(sealed),
             expect_set_cookie=True, expect_decisions=True, baseline="none"),
        Case("sealed", "sticky-canary, sealed, valid cookie", "filter", "filter", sticky(sealed),
             cookie=True, expect_decisions=True, baseline="none"),
        Case("route", "sticky-canary, route entry by path prefix + cookie", "filter", "filter", sticky(routes),
             path="/api/items?page=2", cookie=True, expect_decisions=True, baseline="none"),
        Case("lua-new", "Lua equivalent (tests/bench/lua), new session (Set-Cookie)", "filter", "lua",
             baseline="none"),
        Case("lua", "Lua equivalent (tests/bench/lua), returning user", "filter", "lua", cookie=True,
             baseline="none"),
        Case("none-browser", "no wasm filter, browser headers", "filter", None, browser=True),
        Case("browser", "sticky-canary, valid cookie, browser headers", "filter", "filter", sticky(),
             browser=True, cookie=True, expect_decisions=True, baseline="none-browser"),
        # Host-call probes, all with browser-like requests (18 headers, ~1 KB).
        Case("p-empty", "empty filter (against no filter)", "probe", "probe", "", browser=True, baseline="none-browser"),
        Case("p-map", "read the whole request header map", "probe", "probe", "map", browser=True, baseline="p-empty"),
        Case("p-get1", "read 1 header (cookie)", "probe", "probe", "get:cookie", browser=True, baseline="p-empty"),
        Case("p-get3", "read 3 headers (cookie, :path, :authority)", "probe", "probe",
             "get:cookie|get::path|get::authority", browser=True, baseline="p-empty"),
        Case("p-set2", "set 2 request headers (route re-match)", "probe", "probe",
             "set:x-canary-version=v1|set:x-sticky-hash=0123456789abcdef", browser=True, baseline="p-empty"),
        Case("p-time", "read the clock", "probe", "probe", "time", browser=True, baseline="p-empty"),
        Case("p-metric", "increment a counter", "probe", "probe", "metric:bench_probe", browser=True, baseline="p-empty"),
        Case("p-prop", "read property xds.route_name", "probe", "probe", "property:xds.route_name", browser=True, baseline="p-empty"),
        Case("p-resp", "add a Set-Cookie response header", "probe", "probe", f"resp_add:{set_cookie_value}",
             browser=True, baseline="p-empty"),
    ]
    return cases


# --------------------------------------------------------------------------
# Envoy


def direct(version: str, verify: bool) -> dict:
    route: dict = {"direct_response": {"status": 200, "body": {"inline_string": f"{version}\n"}}}
    if verify:
        route["response_headers_to_add"] = [
            {"header": {"key": "x-bench-version", "value": version}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
            {"header": {"key": "x-bench-hash", "value": "%REQ(x-sticky-hash)%"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
        ]
    return route


def envoy_config(case: Case, port: int, admin_port: int, wasm_paths: dict[str, Path]) -> dict:
    v2 = {"name": "x-canary-version", "string_match": {"exact": "v2"}}
    verify = {"name": "x-bench-verify", "present_match": True}
    routes = [
        # Checks only (x-bench-verify): echo the route and the hash header.
        {"name": "verify-v2", "match": {"prefix": "/", "headers": [verify, v2]}, **direct("v2", True)},
        {"name": "verify-v1", "match": {"prefix": "/", "headers": [verify]}, **direct("v1", True)},
        # Measured.
        {"name": "v2", "match": {"prefix": "/", "headers": [v2]}, **direct("v2", False)},
        {"name": "v1", "match": {"prefix": "/"}, **direct("v1", False)},
    ]
    filters = []
    if case.wasm == "lua":
        filters.append({
            "name": "envoy.filters.http.lua",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                "default_source_code": {"filename": str(LUA_SCRIPT)},
            },
        })
    elif case.wasm:
        filters.append({
            "name": "envoy.filters.http.wasm",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": f"bench-{case.key}",
                    "root_id": "",
                    "vm_config": {
                        "vm_id": f"bench-{case.key}",
                        "runtime": "envoy.wasm.runtime.v8",
                        "code": {"local": {"filename": str(wasm_paths[case.wasm])}},
                    },
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": case.plugin_config,
                    },
                },
            },
        })
    filters.append({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    })
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "bench",
        "route_config": {"name": "bench", "virtual_hosts": [{"name": "bench", "domains": ["*"], "routes": routes}]},
        "http_filters": filters,
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "bench",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
            }]
        },
    }


NICE = -10  # Envoy and the load generator before other work on a shared machine (root only)


def pin(cpu: int | None):
    """preexec_fn: pin the child to one CPU and raise its priority if allowed."""

    def fn() -> None:
        die_with_parent()
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        try:
            os.setpriority(os.PRIO_PROCESS, 0, NICE)
        except OSError:
            pass

    return fn


class Envoy:
    def __init__(self, binary: str, case: Case, tmp: Path, wasm_paths: dict[str, Path], cpu: int | None,
                 concurrency: int = 1):
        self.case = case
        self.port = free_port()
        self.admin = free_port()
        name = f"{case.key}-c{concurrency}"
        self.cfg_path = tmp / f"envoy-{name}.json"
        self.log_path = tmp / f"envoy-{name}.log"
        self.cfg_path.write_text(json.dumps(envoy_config(case, self.port, self.admin, wasm_paths), indent=1))
        cmd = [binary, "-c", str(self.cfg_path), "--concurrency", str(concurrency), "--disable-hot-restart",
               "--log-level", "warning", "--drain-time-s", "1"]
        # Started here, waited for in wait_ready: every case's Envoy starts at once.
        self.proc = Process(f"envoy {name}", cmd, self.log_path, preexec_fn=pin(cpu))

    def wait_ready(self, timeout: float = 60.0) -> None:
        def ready() -> bool:
            if not self.proc.alive():
                raise RuntimeError(f"Envoy for case {self.case.key} exited ({self.proc.popen.returncode}):\n{self.tail()}")
            return admin_ready(self.admin)

        wait_until(ready, lambda: f"Envoy for case {self.case.key} to be ready:\n{self.tail()}", timeout, interval=0.2)

    def tail(self, n: int = 30) -> str:
        return tail(self.proc.log(), n)

    def counters(self) -> dict[str, int]:
        status, _, body = fetch(self.admin, "/stats?format=json", timeout=10)
        if status != 200:
            raise RuntimeError(f"admin /stats answered {status}")
        out = {}
        for s in json.loads(body).get("stats", []):
            if "value" in s and isinstance(s["value"], int):
                out[s["name"]] = s["value"]
        return out

    def stop(self) -> None:
        self.proc.stop(grace=10.0)


# --------------------------------------------------------------------------
# /proc readings


def _schedstat_ok(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[0]
        return True
    except (OSError, IndexError):
        return False


def cpu_ns(pid: int, use_schedstat: bool) -> int:
    """CPU time of all threads of pid, in nanoseconds."""
    if use_schedstat:
        total = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pass  # a thread that ended between listdir and read
        return total
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


# --------------------------------------------------------------------------
# HTTP


def fetch(port: int, path: str, headers: list[tuple[str, str]] | None = None, timeout: float = 5):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        for k, v in headers or []:
            conn.putheader(k, v)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, r.getheaders(), r.read()
    finally:
        conn.close()


def header_values(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in headers if k.lower() == name]


class Load:
    """wrk if present, else a bounded Python keep-alive client."""

    def __init__(self, cpu: int | None, connections: int, python_requests: int):
        self.cpu = cpu
        self.connections = connections
        self.python_requests = python_requests
        self.wrk = shutil.which("wrk")
        self.name = "wrk 1 thread, %d keep-alive connections" % connections if self.wrk else (
            "Python http.client, %d keep-alive connections (wrk not found)" % connections)

    def run(self, port: int, path: str, headers: list[tuple[str, str]], seconds: float) -> tuple[int, float]:
        """Returns (non-2xx-or-error count as the client saw it, elapsed seconds)."""
        if self.wrk:
            cmd = [self.wrk, "-t1", f"-c{self.connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s"]
            for k, v in headers:
                cmd += ["-H", f"{k}: {v}"]
            cmd.append(f"http://127.0.0.1:{port}{path}")
            t0 = time.monotonic()
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, preexec_fn=pin(self.cpu))
            elapsed = time.monotonic() - t0
            if out.returncode != 0:
                raise RuntimeError(f"wrk failed: {out.stderr or out.stdout}")
            bad = 0
            m = re.search(r"Non-2xx or 3xx responses: (\d+)", out.stdout)
            if m:
                bad += int(m.group(1))
            m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out.stdout)
            if m:
                bad += sum(int(x) for x in m.groups())
            return bad, elapsed
        return self._python(port, path, headers, seconds)

    def _python(self, port: int, path: str, headers: list[tuple[str, str]], seconds: float) -> tuple[int, float]:
        # Bounded by both a request count and a deadline.
        per_conn = max(1, self.python_requests // self.connections)
        deadline = time.monotonic() + seconds
        bad = [0]
        lock = threading.Lock()

        def worker() -> None:
            if self.cpu is not None:
                try:
                    os.sched_setaffinity(0, {self.cpu})  # only this thread (Linux: per-thread affinity)
                except OSError:
                    pass
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            errors = 0
            try:
                for _ in range(per_conn):
                    if time.monotonic() > deadline:
                        break
                    conn.putrequest("GET", path, skip_accept_encoding=True)
                    for k, v in headers:
                        conn.putheader(k, v)
                    conn.endheaders()
                    r = conn.getresponse()
                    r.read()
                    if r.status != 200:
                        errors += 1
            except (OSError, http.client.HTTPException):
                errors += 1
            finally:
                conn.close()
            with lock:
                bad[0] += errors

        t0 = time.monotonic()
        threads = [threading.Thread(target=worker, daemon=True) for _ in range(self.connections)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=seconds + 60)
        return bad[0], time.monotonic() - t0


# --------------------------------------------------------------------------
# Checks before measuring


def decisions(counters: dict[str, int]) -> int:
    return sum(v for k, v in counters.items()
               if k.startswith("wasmcustom.sticky_canary_decisions_total."))


def issued(counters: dict[str, int]) -> int:
    return sum(v for k, v in counters.items()
               if k.startswith("wasmcustom.sticky_canary_sessions_total."))


def prime_and_check(env: Envoy) -> None:
    """Get the session cookie the case needs, then check that one request
    with the case's headers does what the case claims."""
    c = env.case
    verify = [("x-bench-verify", "1")]
    if c.cookie:
        # Sessions are assigned at random; keep one on v1 (unless a rule picks
        # the version) so that every steady-state case takes the same route.
        for _ in range(100):
            status, hs, body = fetch(env.port, c.path, verify + c.prime_headers)
            sc = header_values(hs, "set-cookie")
            if status != 200 or len(sc) != 1 or not sc[0].startswith(COOKIE + "="):
                raise RuntimeError(f"{c.key}: priming request got {status}, Set-Cookie {sc!r}")
            c.cookie_value = sc[0].split(";", 1)[0]
            if body.decode().strip() == (c.expect_version or "v1"):
                break
    want = c.expect_version or ("v1" if c.cookie else None)
    before = env.counters() if c.wasm in ("filter", "alt") else {}
    status, hs, body = fetch(env.port, c.path, verify + c.request_headers())
    version = body.decode().strip()
    sc = header_values(hs, "set-cookie")
    bench_hash = "".join(header_values(hs, "x-bench-hash"))
    problems = []
    if status != 200:
        problems.append(f"status {status}")
    if want and version != want:
        problems.append(f"answered by route {version!r}, want {want!r}")
    if c.wasm in ("filter", "alt"):
        has_cookie = any(v.startswith(COOKIE + "=") for v in sc)
        if has_cookie != c.expect_set_cookie:
            problems.append(f"Set-Cookie {sc!r}, want {'one' if c.expect_set_cookie else 'none'}")
        if c.expect_decisions and not re.fullmatch(r"[0-9a-f]{16}", bench_hash):
            problems.append(f"x-sticky-hash as the route saw it: {bench_hash!r}")
        after = env.counters()
        if decisions(after) - decisions(before) != (1 if c.expect_decisions else 0):
            problems.append("decision counters did not move as expected")
    if problems:
        raise RuntimeError(f"case {c.key} does not do what it claims: {'; '.join(problems)}\n{env.tail()}")
    c.checks.append(f"route {version}" + (f", Set-Cookie {'yes' if sc else 'no'}" if c.wasm in ("filter", "alt") else ""))


# --------------------------------------------------------------------------
# Measuring


def measure(env: Envoy, load: Load, seconds: float, use_schedstat: bool) -> tuple[float, float, dict]:
    c = env.case
    hs = c.request_headers()
    before = env.counters()
    cpu0 = cpu_ns(env.proc.pid, use_schedstat)
    bad, elapsed = load.run(env.port, c.path, hs, seconds)
    time.sleep(0.05)  # let Envoy finish what the client left in flight
    cpu1 = cpu_ns(env.proc.pid, use_schedstat)
    after = env.counters()
    n = after.get("http.bench.downstream_rq_total", 0) - before.get("http.bench.downstream_rq_total", 0)
    ok = after.get("http.bench.downstream_rq_2xx", 0) - before.get("http.bench.downstream_rq_2xx", 0)
    if n <= 0:
        raise RuntimeError(f"{c.key}: Envoy counted no requests")
    # A request still in flight when the client stops may be cut short.
    if bad or abs(n - ok) > load.connections:
        raise RuntimeError(f"{c.key}: {n} requests, {ok} answered 2xx, client saw {bad} failures")
    info = {"requests": n}
    if c.wasm in ("filter", "alt") and c.expect_decisions:
        d = decisions(after) - decisions(before)
        i = issued(after) - issued(before)
        # The last requests of a run may still be in Envoy when a counter is read.
        if abs(n - d) > load.connections:
            raise RuntimeError(f"{c.key}: the filter decided {d} times for {n} requests")
        want_issued = d if c.expect_set_cookie else 0
        if abs(i - want_issued) > load.connections:
            raise RuntimeError(f"{c.key}: {i} cookies issued for {n} requests, want {want_issued}")
        info["decisions"] = d
        info["cookies_issued"] = i
    return (cpu1 - cpu0) / 1000 / n, n / elapsed, info


# --------------------------------------------------------------------------
# Building


def build_filter(skip: bool) -> None:
    if not skip:
        log("bench: cargo build --release --target wasm32-wasip1")
        subprocess.run(["cargo", "build", "--release", "--target", "wasm32-wasip1"], cwd=ROOT, check=True, timeout=1800)
    if not FILTER_WASM.exists():
        sys.exit(f"bench: {FILTER_WASM} missing (build it with cargo build --release --target wasm32-wasip1)")


def build_probe() -> bool:
    log("bench: building the probe filter (tests/bench/probe-filter)")
    for extra in (["--offline"], []):
        r = subprocess.run(["cargo", "build", "--release", "--target", "wasm32-wasip1", "--target-dir", str(PROBE_TARGET), *extra],
                           cwd=PROBE_CRATE, capture_output=True, text=True, timeout=1800)
        if r.returncode == 0 and PROBE_WASM.exists():
            return True
    log("bench: the probe filter did not build; skipping the empty-filter and host-call cases:\n" + r.stderr[-2000:])
    return False


def ensure_wrk() -> None:
    """wrk comes from scripts/setup.sh bench (make bench runs it first)."""
    if not shutil.which("wrk"):
        log("bench: wrk is not available (scripts/setup.sh bench installs it); using a Python keep-alive client "
            "instead. Envoy CPU per request is still measured, but at a lower request rate Envoy batches less per "
            "wake-up, so the absolute figures come out higher; the cost the filter adds stays comparable.")


def envoy_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
        m = re.search(r"version: [0-9a-f]+/([^/\s]+)/", out)
        return m.group(1) if m else out.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


# --------------------------------------------------------------------------
# Report


def stats(xs: list[float]) -> tuple[float, float, float]:
    return statistics.median(xs), min(xs), max(xs)


def added(c: Case, by: dict[str, Case]) -> str:
    """Median over rounds of (case - baseline) measured in the same round,
    which cancels slow drift of the machine between rounds."""
    base = by.get(c.baseline or "")
    if not base or len(base.samples) != len(c.samples) or not c.samples:
        return ""
    d = [a - b for a, b in zip(c.samples, base.samples)]
    m, lo, hi = stats(d)
    return f"{m:+.1f} [{lo:+.1f} to {hi:+.1f}]"


def report(cases: list[Case], meta: dict, native: str | None) -> str:
    by = {c.key: c for c in cases}
    lines = []
    lines.append("### Speed: Envoy CPU per request")
    lines.append("")
    lines.append(f"Envoy {meta['envoy']} (`--concurrency 1`, V8), {meta['cpu']}; load: {meta['load']}; "
                 f"{meta['rounds']} runs of {meta['seconds']:g} s per case; all routes are `direct_response` "
                 f"(no upstream). CPU time of all Envoy threads divided by the requests Envoy counted; "
                 f"median over runs, range in brackets; \"added\" is the median of the per-run differences "
                 f"with the baseline case measured in the same round. Load average during the runs: "
                 f"{meta['loadavg']}. Measured {meta['date']}.")
    lines.append("")
    lines.append("| Case | Envoy CPU, us/request | Added by the filter, us |")
    lines.append("|---|---:|---:|")
    for c in cases:
        if c.group != "filter" or not c.samples:
            continue
        m, lo, hi = stats(c.samples)
        lines.append(f"| {c.label} | {m:.1f} [{lo:.1f}-{hi:.1f}] | {added(c, by)} |")
    lines.append("")
    if any(c.wasm == "alt" for c in cases):
        lines.append("Rows marked with a .wasm name ran the `--compare` build; their \"added\" column is "
                     "against the same case on the main build.")
        lines.append("")
    if any(c.browser for c in cases):
        lines.append("Browser headers: 12 typical browser headers and 4 other cookies, about 1 KB, 18 headers as the "
                     "filter sees them. \"Added\" is against the no-filter case with the same headers.")
    probes = [c for c in cases if c.group == "probe" and c.samples]
    if probes:
        lines.append("")
        lines.append("### Host-call costs (probe filter, browser-header requests)")
        lines.append("")
        lines.append("One kind of proxy-wasm host call per request and nothing else "
                     "(tests/bench/probe-filter), against the empty filter.")
        lines.append("")
        lines.append("| Per request | Envoy CPU, us/request | Cost of the call(s), us |")
        lines.append("|---|---:|---:|")
        for c in probes:
            m, lo, hi = stats(c.samples)
            lines.append(f"| {c.label} | {m:.1f} [{lo:.1f}-{hi:.1f}] | {added(c, by)} |")
    lines.append("")
    lines.append("### Memory and size")
    lines.append("")
    lines.append("| Envoy (`--concurrency 1`) | VmRSS idle, MB | VmRSS after load, MB |")
    lines.append("|---|---:|---:|")
    for key in ("none", "empty", "cookie", "sealed", "route"):
        c = by.get(key)
        if c and c.rss_idle_kb:
            lines.append(f"| {c.label} | {c.rss_idle_kb / 1024:.1f} | {c.rss_loaded_kb / 1024:.1f} |")
    mem = [c for c in cases if len(c.rss_by_workers) == 2]
    if mem:
        lo, hi = sorted(mem[0].rss_by_workers)
        lines.append("")
        lines.append(f"| Envoy, fresh, after 1 s of load | VmRSS `--concurrency {lo}`, MB | "
                     f"VmRSS `--concurrency {hi}`, MB | per extra worker, MB |")
        lines.append("|---|---:|---:|---:|")
        for c in mem:
            a, b = c.rss_by_workers[lo], c.rss_by_workers[hi]
            lines.append(f"| {c.label} | {a / 1024:.1f} | {b / 1024:.1f} | {(b - a) / 1024 / (hi - lo):.1f} |")
        lines.append("")
        lines.append("Each worker thread runs its own copy of the wasm VM.")
    heap = [c for c in cases if c.heap.get("heap_size")]
    if heap:
        lines.append("")
        lines.append("| Envoy, fresh, after 1 s of load (`--concurrency 1`) | tcmalloc: allocated, MB | "
                     "tcmalloc: heap size, MB | freed but kept, MB |")
        lines.append("|---|---:|---:|---:|")
        for c in heap:
            a, h = c.heap.get("allocated", 0), c.heap["heap_size"]
            lines.append(f"| {c.label} | {a / 1e6:.1f} | {h / 1e6:.1f} | {(h - a) / 1e6:.1f} |")
        lines.append("")
        lines.append("Envoy's admin `/memory`: *allocated* is what Envoy, V8 and the filter hold; the heap "
                     "size also counts memory freed but kept by tcmalloc, most of it V8's compilation of "
                     "the module (proxy-wasm's V8 compiles every function with TurboFan at load).")
    lines.append("")
    lines.append(f"`sticky_canary.wasm`: {meta['wasm_size'] / 1024:.0f} KiB ({meta['wasm_size']:,} bytes)"
                 + (f"; the empty probe filter: {meta['probe_size'] / 1024:.0f} KiB." if meta.get("probe_size") else "."))
    if native:
        lines.append("")
        lines.append("### The core alone (native, no Envoy)")
        lines.append("")
        lines.append(native.strip())
    return "\n".join(lines) + "\n"


def memory_phase(cases: list[Case], binary: str, tmp: Path, wasm_paths: dict[str, Path], cpu: int | None,
                 load: Load, workers: int) -> None:
    """VmRSS of fresh Envoys with 1 and `workers` worker threads, after one
    second of load (so that every worker has run the filter)."""
    log(f"bench: memory with --concurrency 1 and {workers}")
    for c in cases:
        for n in (1, workers):
            e = Envoy(binary, c, tmp, wasm_paths, cpu, concurrency=n)
            try:
                e.wait_ready()
                prime_and_check(e)
                load.run(e.port, c.path, c.request_headers(), 1.0)
                time.sleep(1)
                c.rss_by_workers[n] = status_kb(e.proc.pid, "VmRSS")
                if n == 1:
                    status, _, body = fetch(e.admin, "/memory", timeout=10)
                    if status == 200:
                        m = json.loads(body)
                        c.heap = {k: int(m[k]) for k in ("allocated", "heap_size") if k in m}
            finally:
                e.stop()


def run_native(timeout: int) -> str | None:
    log("bench: cargo bench --bench decide")
    try:
        r = subprocess.run(["cargo", "bench", "--bench", "decide", "--", "--iters", "300000", "--repeats", "5"],
                           cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        log(f"bench: native bench skipped: {e}")
        return None
    if r.returncode != 0 or "| Core case" not in r.stdout:
        log("bench: native bench skipped (Cargo.toml needs [[bench]] name = \"decide\", harness = false):\n"
            + r.stderr[-1500:])
        return None
    return r.stdout


# --------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10, help="measured runs per case (default 10)")
    ap.add_argument("--seconds", type=float, default=1.0, help="length of one run (default 1)")
    ap.add_argument("--connections", type=int, default=16, help="keep-alive connections (default 16)")
    ap.add_argument("--python-requests", type=int, default=20000,
                    help="requests per run with the Python client (default 20000)")
    ap.add_argument("--quick", action="store_true", help="3 runs of 1 s per case")
    ap.add_argument("--cases", default="", help="comma-separated case keys (default: all)")
    ap.add_argument("--no-probe", action="store_true", help="skip the host-call probe cases")
    ap.add_argument("--no-native", action="store_true", help="skip `cargo bench --bench decide`")
    ap.add_argument("--no-memory", action="store_true", help="skip the RSS-per-worker phase")
    ap.add_argument("--workers", type=int, default=4, help="worker threads for the RSS-per-worker phase (default 4)")
    ap.add_argument("--no-build", action="store_true", help="use the .wasm already built")
    ap.add_argument("--wasm", type=Path, default=FILTER_WASM, help="the sticky-canary .wasm to measure")
    ap.add_argument("--compare", type=Path, default=None,
                    help="another build of the filter: each sticky-canary case also runs on it, "
                         "reported against the same case on --wasm")
    ap.add_argument("--out", type=Path, default=OUT_DIR, help="where results.md and results.json go")
    args = ap.parse_args()
    # SIGTERM/SIGHUP (e.g. make interrupted) unwind through the finally blocks
    # that stop every Envoy.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    if args.quick:
        args.rounds, args.seconds = 3, 1.0
    args.rounds = max(1, min(args.rounds, 50))
    args.workers = max(2, min(args.workers, 16))
    args.seconds = max(0.5, min(args.seconds, 60.0))

    if args.wasm == FILTER_WASM:
        build_filter(args.no_build)
    elif not args.wasm.exists():
        sys.exit(f"bench: {args.wasm} missing")
    cases = select_cases(all_cases(), args.cases, "bench")
    if args.no_probe:
        cases = [c for c in cases if c.group != "probe"]
    wasm_paths = {"filter": args.wasm.resolve()}
    if args.compare:
        if not args.compare.exists():
            sys.exit(f"bench: {args.compare} missing")
        wasm_paths["alt"] = args.compare.resolve()
        alts = [dataclasses.replace(c, key=c.key + "@alt", label=c.label + f" [{args.compare.name}]", wasm="alt",
                                    baseline=c.key, samples=[], rps=[], checks=[])
                for c in cases if c.wasm == "filter"]
        cases = cases + alts
    if any(c.wasm == "probe" for c in cases):
        if build_probe():
            wasm_paths["probe"] = PROBE_WASM
        else:
            cases = [c for c in cases if c.wasm != "probe"]
    ensure_wrk()

    ncpu = len(os.sched_getaffinity(0))
    cpus = sorted(os.sched_getaffinity(0))
    envoy_cpu, load_cpu = (cpus[0], cpus[1]) if ncpu >= 2 else (None, None)
    load = Load(load_cpu, args.connections, args.python_requests)
    binary = envoy_binary()
    meta = {
        "envoy": envoy_version(binary),
        "cpu": cpu_model() + (f", Envoy pinned to CPU {envoy_cpu}, load on CPU {load_cpu}" if envoy_cpu is not None else ""),
        "load": load.name,
        "rounds": args.rounds,
        "seconds": max(1, round(args.seconds)) if load.wrk else args.seconds,
        "date": dt.date.today().isoformat(),
        "wasm_size": args.wasm.stat().st_size,
        "probe_size": PROBE_WASM.stat().st_size if "probe" in wasm_paths else 0,
    }

    tmp = Path(tempfile.mkdtemp(prefix="sticky-canary-bench-"))
    try:
        envoys: list[Envoy] = []
        try:
            log(f"bench: starting {len(cases)} Envoys ({tmp})")
            for c in cases:
                envoys.append(Envoy(binary, c, tmp, wasm_paths, envoy_cpu))
            for e in envoys:
                e.wait_ready()
            use_schedstat = _schedstat_ok(envoys[0].proc.pid)
            if not use_schedstat:
                log("bench: /proc/<pid>/task/*/schedstat unavailable; falling back to utime+stime (10 ms ticks)")
            time.sleep(2)
            for e in envoys:
                e.case.rss_idle_kb = status_kb(e.proc.pid, "VmRSS")
                prime_and_check(e)
            log("bench: warming up (V8 tiers up the wasm code in the background)")
            for e in envoys:
                measure(e, load, 1.0, use_schedstat)
            loads = [os.getloadavg()[0]]
            for r in range(args.rounds):
                order = list(envoys)
                random.Random(r).shuffle(order)
                for e in order:
                    us, rps, _ = measure(e, load, args.seconds, use_schedstat)
                    e.case.samples.append(us)
                    e.case.rps.append(rps)
                loads.append(os.getloadavg()[0])
                log(f"bench: round {r + 1}/{args.rounds} (load {loads[-1]:.1f}): "
                    + ", ".join(f"{e.case.key} {e.case.samples[-1]:.1f}" for e in envoys))
            meta["loadavg"] = (f"median {statistics.median(loads):.1f}, range {min(loads):.1f}-{max(loads):.1f} "
                               f"(1-minute, sampled every round; {ncpu} CPUs, the bench itself adds about 2)")
            for e in envoys:
                e.case.rss_loaded_kb = status_kb(e.proc.pid, "VmRSS")
                e.case.hwm_kb = status_kb(e.proc.pid, "VmHWM")
        finally:
            for e in envoys:
                e.stop()
        if not args.no_memory:
            memory_phase([c for c in cases if c.key in ("none", "empty", "cookie")], binary, tmp, wasm_paths,
                         envoy_cpu, load, args.workers)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    native = None if args.no_native else run_native(timeout=1800)
    md = report(cases, meta, native)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(md)
    raw = {"meta": meta, "cases": [{
        "key": c.key, "label": c.label, "plugin_config": c.plugin_config, "path": c.path,
        "headers": c.request_headers(), "us_per_request": c.samples, "rps": c.rps, "checks": c.checks,
        "rss_idle_kb": c.rss_idle_kb, "rss_loaded_kb": c.rss_loaded_kb, "hwm_kb": c.hwm_kb,
        "rss_by_workers_kb": c.rss_by_workers, "heap_bytes": c.heap,
    } for c in cases], "native": native}
    (args.out / "results.json").write_text(json.dumps(raw, indent=1))
    print(md)
    log(f"bench: written {args.out / 'results.md'} and results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
