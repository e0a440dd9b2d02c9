#!/usr/bin/env bash
# Shrink the release .wasm with binaryen's wasm-opt -Oz, in place, when
# wasm-opt is installed (Debian: `apt-get install binaryen`; .ci/run installs
# it). Without it the cargo output is used as is, and this says so.
#
#     scripts/wasm-opt.sh target/wasm32-wasip1/release/sticky_canary.wasm
#
# Cargo's own output is kept beside it as <name>.raw.wasm; wasm-opt always
# starts from that copy, so the result is the same on every run (the OCI
# image and its digest depend on it). A stamp with the optimised file's
# sha256 tells a fresh cargo build (a new file) from one already optimised.
set -euo pipefail
wasm="$1"
raw="${wasm%.wasm}.raw.wasm"
stamp="$wasm.opt.sha256"
if ! command -v wasm-opt >/dev/null 2>&1; then
    echo "wasm-opt not found (apt-get install binaryen): $wasm is not optimised ($(stat -c %s "$wasm") bytes)"
    exit 0
fi
if [ -f "$stamp" ] && sha256sum --quiet -c "$stamp" >/dev/null 2>&1; then
    exit 0  # already the optimised form of the current build
fi
cp "$wasm" "$raw"
# The features rustc's wasm32-wasip1 output uses; wasm-opt keeps to them.
wasm-opt -Oz --strip-debug --strip-producers \
    --enable-bulk-memory --enable-sign-ext --enable-nontrapping-float-to-int \
    --enable-mutable-globals --enable-multivalue --enable-reference-types \
    "$raw" -o "$wasm"
sha256sum "$wasm" > "$stamp"
echo "wasm-opt -Oz: $(stat -c %s "$raw") -> $(stat -c %s "$wasm") bytes ($wasm)"
