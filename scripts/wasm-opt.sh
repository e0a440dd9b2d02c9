#!/usr/bin/env bash
# Shrink the release .wasm with binaryen's wasm-opt -O1, in place, when
# wasm-opt is installed (Debian: `apt-get install binaryen`; .ci/run installs
# it). Without it the cargo output is used as is, and this says so.
#
#     scripts/wasm-opt.sh target/wasm32-wasip1/release/sticky_canary.wasm
#
# Cargo's own output is kept beside it as <name>.raw.wasm; wasm-opt always
# starts from that copy, so the result is the same on every run (the OCI
# image and its digest depend on it). A stamp with the optimised file's
# sha256 tells a fresh cargo build (a new file) from one already optimised.
#
# -O1, not -Oz or -Os: measured with the pip Envoy 1.40 (V8), a module that
# went through -Oz or -Os makes Envoy use 11 to 20 MB more memory (VmRSS at
# idle, the same config: 109.6 MB for cargo's build, 109.8 MB after -O1,
# 126.4 MB after -Os, about 130 MB after -Oz), for 3-4% less size than -O1
# and no fewer instructions per request.
set -euo pipefail
wasm="$1"
raw="${wasm%.wasm}.raw.wasm"
stamp="$wasm.opt.sha256"
if ! command -v wasm-opt >/dev/null 2>&1; then
    echo "wasm-opt not found (apt-get install binaryen): $wasm is not optimised ($(stat -c %s "$wasm") bytes)"
    exit 0
fi
flags=(-O1 --strip-debug --strip-producers
    --enable-bulk-memory --enable-sign-ext --enable-nontrapping-float-to-int
    --enable-mutable-globals --enable-multivalue --enable-reference-types --enable-simd)
# The stamp: the optimised file's sha256, then the flags that made it.
if [ -f "$stamp" ] && [ "$(head -c 64 "$stamp")" = "$(sha256sum "$wasm" | head -c 64)" ]; then
    if [ "$(sed -n 2p "$stamp")" = "${flags[*]}" ]; then
        exit 0  # already the optimised form of the current build
    fi
    # Optimised with other flags: start again from cargo's copy.
else
    cp "$wasm" "$raw"  # a fresh cargo build
fi
# The features are the ones rustc's wasm32-wasip1 output uses.
wasm-opt "${flags[@]}" "$raw" -o "$wasm"
{ sha256sum "$wasm" | head -c 64; echo; echo "${flags[*]}"; } > "$stamp"
echo "wasm-opt -O1: $(stat -c %s "$raw") -> $(stat -c %s "$wasm") bytes ($wasm)"
