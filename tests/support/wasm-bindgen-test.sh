#!/usr/bin/env bash
# Runs the golden vectors (tests/golden.rs) on wasm32-unknown-unknown under
# wasm-bindgen-test, in Node, so the host-free core is proven to give the
# same buckets, pod hashes and cookies on wasm32 as natively:
#
#     tests/support/wasm-bindgen-test.sh [extra cargo test args...]
#
# 1. adds the wasm32-unknown-unknown target (rustup);
# 2. installs wasm-bindgen-cli, which ships wasm-bindgen-test-runner (the
#    runner .cargo/config.toml names for that target), at exactly the
#    wasm-bindgen version in Cargo.lock, unless `wasm-bindgen-test-runner
#    --version` already reports it. The runner and the wasm-bindgen library
#    must match exactly, or the runner refuses the test binary. The install
#    compiles from source (several minutes on 2 cores) and is done once per
#    machine;
# 3. runs `cargo test --target wasm32-unknown-unknown --test golden` and
#    exits with its status.
#
# Extra arguments go to `cargo test`, e.g. `-- derived_keys` to filter.
set -euo pipefail

cd "$(dirname "$0")/../.."

cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$cargo_bin:$PATH"

target=wasm32-unknown-unknown

if command -v rustup >/dev/null 2>&1; then
    if ! out="$(rustup target add "$target" 2>&1)"; then
        printf '%s\n' "$out" >&2
        exit 2
    fi
fi

# The version of the `wasm-bindgen` package in Cargo.lock.
version="$(awk '
    /^\[\[package\]\]/ { name = "" }
    /^name = /         { name = $3 }
    /^version = / && name == "\"wasm-bindgen\"" { gsub(/"/, "", $3); print $3; exit }
' Cargo.lock)"
if [ -z "$version" ]; then
    echo "wasm-bindgen-test.sh: no wasm-bindgen package in Cargo.lock" >&2
    exit 2
fi

have="$(wasm-bindgen-test-runner --version 2>/dev/null || true)"
if [ "$have" != "wasm-bindgen-test-runner $version" ]; then
    echo "wasm-bindgen-test.sh: installing wasm-bindgen-cli $version" \
        "(found: ${have:-none}); this builds from source and takes a few minutes" >&2
    start=$SECONDS
    # --locked builds with the lock file wasm-bindgen-cli was published with.
    # If the registry cannot serve one of those exact versions, fall back to
    # the newest compatible ones: the runner's version is what must match.
    if ! cargo install --locked --force --version "=$version" wasm-bindgen-cli; then
        echo "wasm-bindgen-test.sh: --locked install failed; retrying without --locked" >&2
        cargo install --force --version "=$version" wasm-bindgen-cli
    fi
    echo "wasm-bindgen-test.sh: installed wasm-bindgen-cli $version in $((SECONDS - start)) s" >&2
    have="$(wasm-bindgen-test-runner --version)"
    if [ "$have" != "wasm-bindgen-test-runner $version" ]; then
        echo "wasm-bindgen-test.sh: expected wasm-bindgen-test-runner $version, got: $have" \
            "(is another one earlier on PATH?)" >&2
        exit 2
    fi
fi

status=0
cargo test --target "$target" --test golden "$@" || status=$?
exit "$status"
