#!/usr/bin/env python3
"""Soak: at least 1,000,000 requests through the real Envoy (`make soak`).

A benchmark, not a test: it reports figures and exits non-zero if a
request failed or a returning user moved, but nothing in it is timed.

Setup (everything on 127.0.0.1, started here, stopped at the end):
- the Envoy under test runs a shipped config, its access log removed (a
  million log lines would measure the disk), the shipped plugin JSON with
  canary-v2 at weight 20 so both versions have users. `--mode balanced`:
  envoy-config/envoy-local.yaml (Maglev on x-sticky-hash); `--mode
  persistent`: envoy-config/persistent/envoy-local-persistent.yaml (sealed
  cookies, override_host, EDS files, health checks); `both` (the default)
  runs one after the other;
- the four "pods" are a second Envoy with one listener per pod answering
  with `direct_response` (Python whoami would be the bottleneck). Each pod
  answers `x-pod: <its name>` and echoes the request's `x-user` and
  `x-canary-version` (the filter's decision) as response headers;
- `wrk` (scripts/setup.sh soak installs it) with tests/bench/soak.lua sends the load:
  one request in NEW_EVERY is a new user (no cookie), the rest come from
  a pool of returning users, each with the cookie it was issued before the
  soak. For every answer to a returning user the script checks the
  version and the pod against what that user had before the soak, and
  that no new cookie was issued.

Before and after the soak every user of the pool is asked once more,
one by one, from Python: version and pod must be unchanged.

Envoy's RSS (VmRSS of the process) is sampled every few seconds; the
first chunk of requests is the warm-up. Reported: requests (wrk's and
Envoy's count), errors (non-200, socket errors, timeouts), mismatches,
RSS at the start, after warm-up, at the end and its maximum, and the
duration.

    PYTHONPATH=tests .venv/bin/python tests/bench/soak.py [--mode both] [--requests 1000000] [--users 2000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import testkit  # tests/testkit: PYTHONPATH=tests (make soak sets it)
from testkit.persistent import config as persistent_config

LUA = Path(__file__).resolve().parent / "soak.lua"
PODS = [("canary-v1", "canary-v1-0", 8081), ("canary-v1", "canary-v1-1", 8082),
        ("canary-v2", "canary-v2-0", 8083), ("canary-v2", "canary-v2-1", 8084)]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def pods_config() -> dict:
    """One Envoy, one listener per pod, each answering directly."""
    listeners = []
    for _version, pod, _port in PODS:
        listeners.append({
            "name": pod,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": pod,
                    "route_config": {"virtual_hosts": [{
                        "name": pod, "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": f"Hostname: {pod}\n"}}}],
                        "response_headers_to_add": [
                            {"header": {"key": "x-pod", "value": pod}},
                            {"header": {"key": "x-user", "value": "%REQ(x-user)%"}},
                            {"header": {"key": "x-version", "value": "%REQ(x-canary-version)%"}},
                        ],
                    }]},
                    "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                },
            }]}],
        })
    return {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
            "static_resources": {"listeners": listeners}}


def start_front(mode: str, work: Path, pods: testkit.Envoy) -> tuple[testkit.Envoy, str]:
    """The Envoy under test, its access log removed, canary-v2 at weight 20.
    Returns it and the session cookie's name."""
    if mode == "balanced":
        cfg = testkit.load_config()
        port_map = {port: pods.ports[pod] for _v, pod, port in PODS}
    else:
        # The shipped persistent config with its EDS files in `work`.
        eds = testkit.Eds(work / "eds")
        for version in ("canary-v1", "canary-v2"):
            eds.write(version, [f"127.0.0.1:{pods.ports[pod]}" for v, pod, _ in PODS if v == version])
        cfg = persistent_config(eds, fast_health_checks=False)
        port_map = None
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm.pop("access_log", None)
    plugin = testkit.plugin_config(cfg)
    for v in plugin["versions"]:
        if v["name"] == "canary-v2":
            v["weight"] = 20
    envoy = testkit.start_envoy(cfg, work / "front", plugin=plugin, port_map=port_map, log_level="warning")
    return envoy, plugin["session"]["cookie"]["name"]


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def envoy_requests(envoy: testkit.Envoy) -> int:
    """Envoy's own count of downstream requests (admin /stats)."""
    return envoy.counter("http.ingress_http.downstream_rq_total")


class Sampler(threading.Thread):
    def __init__(self, envoy: testkit.Envoy, every: float):
        super().__init__(daemon=True)
        self.envoy, self.every = envoy, every
        self.samples: list[tuple[float, int, int]] = []  # (seconds, Envoy's requests so far, VmRSS kB)
        self.halt = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                n = envoy_requests(self.envoy)
            except OSError:
                n = -1
            self.samples.append((time.monotonic() - self.t0, n, rss_kb(self.envoy.proc.pid)))
            self.halt.wait(self.every)


def ask(client: testkit.Client, name: str, value: str | None) -> tuple[int, str | None, str | None, list[str]]:
    headers = {"x-user": "check"}
    r = client.get("/", headers=headers, cookies={name: value} if value else None)
    return r.status, r.header("x-version"), r.header("x-pod"), [c.value for c in r.cookies_named(name)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("balanced", "persistent", "both"), default="both",
                    help="the shipped config to soak (default both, one after the other)")
    ap.add_argument("--requests", type=int, default=1_000_000, help="at least this many requests per mode (default 1,000,000)")
    ap.add_argument("--users", type=int, default=2000, help="returning users in the pool (default 2000)")
    ap.add_argument("--new-every", type=int, default=5, help="one request in N is a new user (default 5)")
    ap.add_argument("--connections", type=int, default=16, help="wrk keep-alive connections (default 16)")
    ap.add_argument("--chunk", type=int, default=30, help="seconds per wrk run (default 30)")
    ap.add_argument("--warmup", type=int, default=100_000, help="requests counted as warm-up (default 100,000)")
    args = ap.parse_args()

    wrk = shutil.which("wrk")
    if not wrk:
        log("soak: wrk not found (scripts/setup.sh soak installs it)")
        return 2
    for p in (testkit.ENVOY_BIN, testkit.WASM_PATH):
        if not p.exists():
            log(f"soak: missing {p}: run `make build venv`")
            return 2
    modes = ("balanced", "persistent") if args.mode == "both" else (args.mode,)
    results = [run_mode(mode, args, wrk) for mode in modes]
    print("RESULT:", "ok" if all(results) else "FAILED")
    return 0 if all(results) else 1


def run_mode(mode: str, args, wrk: str) -> bool:
    work = testkit.REPO_ROOT / "target" / "soak" / mode
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    pods = testkit.start_envoy(pods_config(), work / "pods", log_level="warning")
    try:
        envoy, cookie = start_front(mode, work, pods)
    except Exception:
        pods.stop()
        raise
    try:
        pid = envoy.proc.pid
        # The pool of returning users: one request each, then one more to
        # see that the cookie keeps them where they are.
        c = envoy.client()
        users = []
        for _ in range(args.users):
            status, version, pod, issued = ask(c, cookie, None)
            assert status == 200 and len(issued) == 1, (status, issued)
            users.append({"cookie": issued[0], "version": version, "pod": pod})
        for u in users:
            status, version, pod, issued = ask(c, cookie, u["cookie"])
            assert (status, version, pod, issued) == (200, u["version"], u["pod"], []), (u, status, version, pod, issued)
        by_version = {}
        for u in users:
            by_version[u["version"]] = by_version.get(u["version"], 0) + 1
        pool = work / "users.txt"
        pool.write_text("".join(f"{u['cookie']} {u['version']} {u['pod']}\n" for u in users))
        log(f"soak ({mode}): {len(users)} returning users: {by_version}")

        sampler = Sampler(envoy, every=5.0)
        rss_start = rss_kb(pid)
        sampler.start()
        totals = {"requests": 0, "non200": 0, "socket_errors": 0, "mismatch": 0, "returning": 0, "new": 0,
                  "new_without_cookie": 0, "reissued": 0, "unknown": 0}
        chunks = []
        t_load = time.monotonic()
        while totals["requests"] < args.requests:
            cmd = [wrk, "-t1", f"-c{args.connections}", f"-d{args.chunk}s", "--timeout", "10s",
                   "-s", str(LUA), envoy.base_url + "/", "--", str(pool), str(args.new_every), cookie]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.chunk + 120)
            line = next((x for x in out.stdout.splitlines() if x.startswith("SOAK ")), None)
            if out.returncode != 0 or line is None:
                log(f"soak: wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
                return False
            figures = json.loads(line[5:])
            for k in totals:
                totals[k] += figures.get(k, 0)
            chunks.append(figures)
            log(f"soak ({mode}): {totals['requests']:>9,} requests, errors so far {totals['non200'] + totals['socket_errors']}, "
                f"mismatches {totals['mismatch']}, VmRSS {rss_kb(pid) / 1024:.1f} MB")
        load_secs = time.monotonic() - t_load
        sampler.halt.set()
        sampler.join(10)
        rss_end = rss_kb(pid)

        # Every returning user once more, one by one.
        moved = []
        for u in users:
            status, version, pod, issued = ask(c, cookie, u["cookie"])
            if (status, version, pod, issued) != (200, u["version"], u["pod"], []):
                moved.append((u, status, version, pod, issued))
        c.close()
        counters = envoy.counters()
        envoy_rq = counters.get("http.ingress_http.downstream_rq_total", 0)
        envoy_5xx = counters.get("http.ingress_http.downstream_rq_5xx", 0)

        base_rq = sampler.samples[0][1]
        after_warmup = [s for s in sampler.samples if s[1] - base_rq >= args.warmup] or sampler.samples
        rss_warm = after_warmup[0][2]
        sampler.samples.append((time.monotonic() - sampler.t0, envoy_requests(envoy), rss_end))
        rss_max = max(s[2] for s in sampler.samples)
        rss_min_warm = min(s[2] for s in after_warmup)
        rss_max_warm = max(s[2] for s in after_warmup)
        errors = totals["non200"] + totals["socket_errors"]
        print(f"## Soak: {mode} mode")
        print()
        print(f"- requests: {totals['requests']:,} by wrk ({len(chunks)} wrk runs of {args.chunk} s, "
              f"{args.connections} connections), {envoy_rq:,} counted by Envoy (with the {3 * len(users):,} one-by-one checks)")
        print(f"- mix: {totals['new']:,} new users, {totals['returning']:,} returning ({len(users)} users, "
              f"{by_version})")
        print(f"- errors: {errors} (non-200 {totals['non200']}, socket errors and timeouts {totals['socket_errors']}; "
              f"Envoy 5xx {envoy_5xx})")
        print(f"- returning users answered by another version or pod during the soak: {totals['mismatch']}; "
              f"new cookies issued to them: {totals['reissued']}; new users without a cookie: "
              f"{totals['new_without_cookie']}; answers without x-user: {totals['unknown']}")
        print(f"- returning users moved, checked one by one after the soak: {len(moved)} of {len(users)}")
        print(f"- Envoy VmRSS: start {rss_start / 1024:.1f} MB, after warm-up ({args.warmup:,} requests) "
              f"{rss_warm / 1024:.1f} MB, end {rss_end / 1024:.1f} MB, max {rss_max / 1024:.1f} MB; "
              f"after warm-up between {rss_min_warm / 1024:.1f} and {rss_max_warm / 1024:.1f} MB")
        print(f"- duration: load {load_secs:.0f} s ({totals['requests'] / load_secs:,.0f} requests/s), "
              f"total {time.monotonic() - t_start:.0f} s")
        print()
        print("VmRSS samples (seconds, requests so far, MB):")
        step = max(1, len(sampler.samples) // 20)
        for s in sampler.samples[:-1:step] + sampler.samples[-1:]:
            print(f"  {s[0]:6.0f} s  {s[1] - base_rq:>9,}  {s[2] / 1024:6.1f}")
        if moved:
            print("moved:", moved[:5])
        ok = (errors == 0 and totals["mismatch"] == 0 and totals["reissued"] == 0 and not moved
              and totals["unknown"] == 0 and totals["new_without_cookie"] == 0 and totals["requests"] >= args.requests)
        print(f"{mode}:", "ok" if ok else "FAILED")
        print()
        return ok
    finally:
        envoy.stop()
        pods.stop()


if __name__ == "__main__":
    sys.exit(main())
