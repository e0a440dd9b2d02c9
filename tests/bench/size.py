#!/usr/bin/env python3
"""`make size`: what the .wasm is made of, per crate and per function.

Builds the filter exactly as `make build` does (same profile, same code)
but keeps the function names (`CARGO_PROFILE_RELEASE_STRIP=debuginfo`, in
target/size/ so that the shipped build is untouched), then asks twiggy
(pinned in scripts/setup.sh) for the size of every item:

  - code bytes per crate: each function is given to the crate its
    demangled name starts with (for `<T as Trait>::f`, the crate of `T`,
    else of the trait). After LTO and inlining this is the crate whose
    function the code was emitted as: generic code of serde instantiated
    for our types counts as serde's, a std function inlined into ours as
    ours;
  - the largest functions, and the generic functions with the most
    monomorphised copies (`twiggy monos`);
  - data (`.rodata`), and the module's tables, types, imports and exports.

Name sections and debug info are not counted: the shipped module has
neither. The shipped size is the module `make build` wrote (after
`wasm-opt -O1`), which is smaller than the sum here by what wasm-opt
removes.

Output: a markdown report on stdout and in target/bench/size.md (make bench
puts it into BENCHMARKS.md), raw figures in target/bench/size.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from benchlib import FILTER_WASM, OUT_DIR, ROOT, log

TARGET = "wasm32-wasip1"
SIZE_TARGET_DIR = ROOT / "target" / "size"
NAMED_WASM = SIZE_TARGET_DIR / TARGET / "release" / "sticky_canary.wasm"
CARGO_BIN = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo")) / "bin"

# Crates that are one thing to a reader.
CRATE_GROUPS = {
    "core": "core, alloc, std",
    "alloc": "core, alloc, std",
    "std": "core, alloc, std",
    "hashbrown": "core, alloc, std",  # std's HashMap
    "__rustc": "core, alloc, std",  # the allocator and panic shims
    "serde_core": "serde",
    "serde": "serde",
}
# Functions without a Rust path are the ABI exports of proxy-wasm
# (`proxy_on_*`) or C: wasi-libc (the allocator, memcpy, ...) that std links
# on wasm32-wasip1, and compiler-rt's 128-bit arithmetic (`__multi3`).
C_FUNCTIONS = "wasi-libc and compiler-rt (C)"


def twiggy() -> str:
    for p in (shutil.which("twiggy"), CARGO_BIN / "twiggy"):
        if p and Path(p).exists():
            return str(p)
    sys.exit("size: twiggy is missing (scripts/setup.sh size installs the pinned version)")


def build(env_extra: dict[str, str] | None = None) -> Path:
    env = dict(os.environ, CARGO_PROFILE_RELEASE_STRIP="debuginfo", CARGO_TARGET_DIR=str(SIZE_TARGET_DIR))
    env.update(env_extra or {})
    cmd = ["cargo", "build", "--release", "--target", TARGET]
    log("size: " + " ".join(cmd) + " (strip = debuginfo, target/size)")
    r = subprocess.run(cmd, cwd=ROOT, env=env, timeout=3600)
    if r.returncode != 0:
        sys.exit(f"size: the build failed ({r.returncode})")
    return NAMED_WASM


def strip_name(name: str) -> str:
    """A function's name without the hash suffix and crate disambiguators."""
    name = re.sub(r"::h[0-9a-f]{16}$", "", name)
    return re.sub(r"\[[0-9a-f]+\]", "", name)


def crate_of(name: str) -> str:
    n = strip_name(name)
    if "::" not in n:
        if n.startswith("proxy_on_") or n.startswith("proxy_abi_"):
            return "proxy_wasm"
        return C_FUNCTIONS
    if n.startswith("<"):
        inner = n[1:]
        self_ty, _, rest = inner.partition(" as ")
        self_ty = re.sub(r"^(impl |dyn |&|\*const |\*mut |mut |\[|\()+", "", self_ty)
        m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)::", self_ty)
        if m:
            crate = m.group(1)
        elif not rest:
            crate = "core"  # `<u64>::_fmt`: an inherent method of a primitive type
        else:  # a generic or primitive self type: the trait's crate
            m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)::", re.sub(r"^(dyn |&|<)+", "", rest))
            crate = m.group(1) if m else "other"
    else:
        crate = n.split("::", 1)[0]
    return CRATE_GROUPS.get(crate, crate)


def kind_of(name: str) -> str:
    if name.startswith("custom section") or name.endswith("subsection"):
        return "names and debug info (not shipped)"
    if name.startswith("data segment") or name.startswith("data["):
        return "data"
    if re.match(r"^(type|import|export|elem|table|memory|global)\b", name) or name.startswith("wasm magic") \
            or name.startswith("\"") or name.startswith("start"):
        return "tables, types, imports, exports"
    return "code"


def top_items(wasm: Path) -> list[dict]:
    out = subprocess.run([twiggy(), "top", "-n", "1000000", "--format", "json", str(wasm)],
                         capture_output=True, text=True, timeout=600, check=True).stdout
    return json.loads(out)


def monos(wasm: Path, n: int) -> list[dict]:
    out = subprocess.run([twiggy(), "monos", "-m", str(n), "-n", "100000", "--format", "json", str(wasm)],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        return []
    try:
        rows = json.loads(out.stdout)
    except ValueError:
        return []
    return [r for r in rows if r.get("generic") and not r["generic"].startswith("... and")][:n]


def analyse(wasm: Path, top: int = 25) -> dict:
    items = top_items(wasm)
    kinds: dict[str, int] = defaultdict(int)
    crates: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    funcs = []
    data = []
    for it in items:
        name, size = it["name"], int(it["shallow_size"])
        k = kind_of(name)
        kinds[k] += size
        if k == "code":
            c = crate_of(name)
            crates[c][0] += size
            crates[c][1] += 1
            funcs.append({"name": strip_name(name), "crate": c, "bytes": size})
        elif k == "data":
            data.append({"name": name, "bytes": size})
    funcs.sort(key=lambda f: -f["bytes"])
    return {
        "wasm": str(wasm),
        "file_bytes": wasm.stat().st_size,
        "kinds": dict(kinds),
        "crates": sorted(({"crate": c, "bytes": b, "functions": n} for c, (b, n) in crates.items()),
                         key=lambda r: -r["bytes"]),
        "top": funcs[:top],
        "data": data,
        "monos": [{"name": strip_name(m["generic"]), "copies": len(m.get("monomorphizations", [])),
                   "bytes": m["total_size"], "bloat": m["approximate_monomorphization_bloat_bytes"]}
                  for m in monos(wasm, 8)],
        "functions": len(funcs),
    }


def report(a: dict, shipped: Path | None) -> str:
    k = a["kinds"]
    code, data = k.get("code", 0), k.get("data", 0)
    other = k.get("tables, types, imports, exports", 0)
    total = code + data + other
    lines = []
    if shipped and shipped.exists():
        lines.append(f"Shipped `{shipped.relative_to(ROOT)}`: **{shipped.stat().st_size:,} bytes** "
                     f"(after `wasm-opt -O1`). Before wasm-opt: {total:,} bytes, of which code {code:,} "
                     f"({a['functions']:,} functions), data {data:,}, tables, types, imports and exports "
                     f"{other:,}.")
    else:
        lines.append(f"Before wasm-opt: {total:,} bytes: code {code:,} ({a['functions']:,} functions), "
                     f"data {data:,}, tables, types, imports and exports {other:,}.")
    lines += ["", "| crate | code bytes | share of code | functions |", "|---|---:|---:|---:|"]
    for r in a["crates"]:
        lines.append(f"| {r['crate']} | {r['bytes']:,} | {r['bytes'] / code * 100:.1f}% | {r['functions']} |")
    lines += ["", "Largest functions (code bytes before wasm-opt):", "",
              "| function | crate | bytes |", "|---|---|---:|"]
    for f in a["top"]:
        name = f["name"].replace("|", "\\|")
        if len(name) > 110:
            name = name[:107] + "..."
        lines.append(f"| `{name}` | {f['crate']} | {f['bytes']:,} |")
    if a["monos"]:
        lines += ["", "Generic functions with the most code in copies (`twiggy monos`):", "",
                  "| generic function | copies | bytes, all copies | beyond the largest copy |",
                  "|---|---:|---:|---:|"]
        for m in a["monos"]:
            name = m["name"].replace("|", "\\|")
            lines.append(f"| `{name}` | {m['copies']} | {m['bytes']:,} | {m['bloat']:,} |")
    if a["data"]:
        lines += ["", "Data: " + ", ".join(f"{d['name']} {d['bytes']:,} bytes" for d in a["data"]) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-build", action="store_true", help="analyse the named build already in target/size")
    ap.add_argument("--wasm", type=Path, default=None, help="analyse this module (it needs its name section)")
    ap.add_argument("--top", type=int, default=25, help="largest functions listed (default 25)")
    ap.add_argument("--out", type=Path, default=OUT_DIR / "size.json",
                    help="raw figures (JSON); the report goes beside it as .md")
    args = ap.parse_args(argv)
    wasm = args.wasm or (NAMED_WASM if args.no_build else build())
    if not wasm.exists():
        sys.exit(f"size: {wasm} missing")
    a = analyse(wasm, args.top)
    a["shipped_bytes"] = FILTER_WASM.stat().st_size if FILTER_WASM.exists() else None
    md = report(a, FILTER_WASM if args.wasm is None else None)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(a, indent=1))
    args.out.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
