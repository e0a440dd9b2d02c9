#!/usr/bin/env bash
# Runs the golden vectors (tests/golden.rs) on wasm32-unknown-unknown under
# wasm-bindgen-test, in Node, so the host-free core is proven to give the
# same buckets, pod hashes and cookies on wasm32 as natively:
#
#     tests/support/wasm-bindgen-test.sh [extra cargo test args...]
#
# Needs the wasm32-unknown-unknown target and wasm-bindgen-test-runner (the
# runner .cargo/config.toml names for that target) at exactly the
# wasm-bindgen version in Cargo.lock: the runner and the wasm-bindgen library
# must match, or the runner refuses the test binary. `scripts/setup.sh test`
# (which `make test` runs first) installs both; this script only checks that
# the runner is the right one, then runs
# `cargo test --target wasm32-unknown-unknown --test golden` and exits with
# its status.
#
# Extra arguments go to `cargo test`, e.g. `-- derived_keys` to filter.
set -euo pipefail

cd "$(dirname "$0")/../.."

cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$cargo_bin:$PATH"

# The version of the `wasm-bindgen` package in Cargo.lock.
version="$(awk '
    /^\[\[package\]\]/ { name = "" }
    /^name = /         { name = $3 }
    /^version = / && name == "\"wasm-bindgen\"" { gsub(/"/, "", $3); print $3; exit }
' Cargo.lock)"
have="$(wasm-bindgen-test-runner --version 2>/dev/null || true)"
if [ -z "$version" ] || [ "$have" != "wasm-bindgen-test-runner $version" ]; then
    echo "wasm-bindgen-test.sh: need wasm-bindgen-test-runner ${version:-?}, found: ${have:-none}:" \
        "run scripts/setup.sh test" >&2
    exit 2
fi

exec cargo test --target wasm32-unknown-unknown --test golden "$@"
