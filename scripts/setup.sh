#!/usr/bin/env bash
# Installs what a make target needs beyond the README's prerequisites
# (Rust via rustup, Python 3.11, make, git, Go 1.26, on Debian or Ubuntu):
#
#   scripts/setup.sh [--check] [GROUP...]       GROUP: build run lint test fuzz bench soak oci size
#                                                (default: test)
#
#   every  a C compiler (gcc, libc6-dev: cargo links build scripts with cc)
#   build  the wasm32-wasip1 target
#   run    the wasm32-wasip1 target, python3-venv
#   lint   the wasm32-wasip1 target, rustfmt and clippy
#   test   the wasm32-wasip1 and wasm32-unknown-unknown targets,
#          wasm-bindgen-test-runner (the version in Cargo.lock, cargo install),
#          Node and npm, python3-venv, binaryen (wasm-opt), prometheus
#          (promtool), openssl, the Go programs of scripts/go-tools.txt,
#          built into .tools/bin (go install, pinned), and kube-apiserver
#          and etcd for the Istio tests, built into .tools/bin from the
#          wrapper module tests/tools/kube (go build; its go.sum pins them)
#   fuzz   the nightly toolchain and cargo-fuzz 0.13.2 (CARGO_FUZZ below)
#   bench  valgrind, wrk, binaryen, the wasm32-wasip1 target, python3-venv,
#          and what size needs
#   size   the wasm32-wasip1 target and twiggy 0.8.0 (TWIGGY below; cargo
#          install), the code size profiler of `make size`
#   soak   wrk, the wasm32-wasip1 target, python3-venv
#   oci    ORAS (the oras pin of scripts/go-tools.txt, into .tools/bin), for make oci-push
#
# make build, run, test, lint, fuzz, bench, soak, oci-push and size call it first,
# and .ci/run calls it; it is the only place that installs anything (the
# .venv and tests/observability/node_modules are the Makefile's, from their
# lock files). Safe to re-run: it only checks when everything is there (well
# under a second). Debian packages come from apt-get when root, or through
# `sudo -n`; otherwise it stops before any build or test with one line
# naming the exact command to run. No service a package brings is started.
#
# --check installs nothing: it prints one line per missing piece with the
# command that would install it, and exits 1 if anything is missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
CARGO_FUZZ=0.13.2
TWIGGY=0.8.0
TOOLS="$ROOT/.tools"
GO_PINS="$ROOT/scripts/go-tools.txt"
KUBE_MOD="tests/tools/kube"   # kube-apiserver and etcd: see its go.mod

check=0
groups=()
for arg in "$@"; do
    case "$arg" in
        --check) check=1 ;;
        build | run | lint | test | fuzz | bench | soak | oci | size) groups+=("$arg") ;;
        -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "setup: unknown group '$arg' (build run lint test fuzz bench soak oci size, or --check)" >&2; exit 2 ;;
    esac
done
[ ${#groups[@]} -gt 0 ] || groups=(test)
# make bench writes the size report too.
if [[ " ${groups[*]} " == *" bench "* ]]; then groups+=(size); fi
wants() { [[ " ${groups[*]} " == *" $1 "* ]]; }

cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
if [ -d "$cargo_bin" ]; then export PATH="$cargo_bin:$PATH"; fi
have() { command -v "$1" >/dev/null 2>&1; }

# Everything missing is collected first, then installed: Debian packages,
# then Rust pieces, then Go programs (the long builds last).
apt_pkgs=()   # Debian packages
apt_why=()    # what each is for
rust_cmds=()  # rustup / cargo install commands, one string each
go_tools=()   # "name package@version"
kube_build=0  # 1: build kube-apiserver and etcd from $KUBE_MOD
problems=()   # one line each; nothing can fix these here

need_pkg() {
    apt_pkgs+=("$1")
    [[ " ${apt_why[*]-} " == *" $2 "* ]] || apt_why+=("$2")
}

# A C toolchain: cargo links build scripts and the native tests with cc.
have cc || need_pkg "gcc libc6-dev" "cc"

if ! have cargo; then
    problems+=("cargo not found: install Rust with rustup (https://rustup.rs), a README prerequisite")
fi

# --- Rust targets, components, toolchains and cargo programs -----------------
# Checked by file, which is quicker than asking rustup or cargo.
sysroot=""
if have rustc; then sysroot="$(rustc --print sysroot 2>/dev/null || true)"; fi
need_target() {
    if [ ! -d "$sysroot/lib/rustlib/$1" ]; then
        if have rustup; then
            rust_cmds+=("rustup target add $1")
        else
            problems+=("the $1 Rust target is missing and rustup is not there to add it")
        fi
    fi
}
# Every group builds the filter or lints it, except fuzz.
if ! { [ ${#groups[@]} -eq 1 ] && wants fuzz; }; then need_target wasm32-wasip1; fi
if wants test; then need_target wasm32-unknown-unknown; fi

if wants lint; then
    for comp in rustfmt:rustfmt clippy:cargo-clippy; do
        if [ ! -x "$sysroot/bin/${comp#*:}" ]; then
            if have rustup; then rust_cmds+=("rustup component add ${comp%%:*}")
            else problems+=("${comp%%:*} is missing and rustup is not there to add it"); fi
        fi
    done
fi

if wants test; then
    # wasm-bindgen-test-runner must be exactly the wasm-bindgen version in
    # Cargo.lock, or it refuses the test binary (tests/support/wasm-bindgen-test.sh).
    wbg="$(awk '
        /^\[\[package\]\]/ { name = "" }
        /^name = /         { name = $3 }
        /^version = / && name == "\"wasm-bindgen\"" { gsub(/"/, "", $3); print $3; exit }
    ' Cargo.lock)"
    if [ -z "$wbg" ]; then
        problems+=("no wasm-bindgen package in Cargo.lock")
    elif [ "$(wasm-bindgen-test-runner --version 2>/dev/null || true)" != "wasm-bindgen-test-runner $wbg" ]; then
        rust_cmds+=("cargo install --locked --force --version =$wbg wasm-bindgen-cli")
    fi
fi

if wants fuzz; then
    if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
        if have rustup; then rust_cmds+=("rustup toolchain install nightly --profile minimal")
        else problems+=("the nightly toolchain is missing and rustup is not there to install it"); fi
    fi
    # How cargo runs it: `cargo fuzz ARGS` is `cargo-fuzz fuzz ARGS`.
    if [ "$(cargo-fuzz fuzz --version 2>/dev/null || true)" != "cargo-fuzz $CARGO_FUZZ" ]; then
        rust_cmds+=("cargo install --locked --force --version =$CARGO_FUZZ cargo-fuzz")
    fi
fi

if wants size; then
    # `twiggy --version` prints "twiggy-opt VERSION".
    if [ "$(twiggy --version 2>/dev/null || true)" != "twiggy-opt $TWIGGY" ]; then
        rust_cmds+=("cargo install --locked --force --version =$TWIGGY twiggy")
    fi
fi

# --- Debian packages ----------------------------------------------------------
if wants run || wants test || wants bench || wants soak; then
    # python3 -m venv needs ensurepip, which Debian ships in python3-venv.
    if [ ! -x .venv/bin/python ] && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        pyver="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo 3)"
        need_pkg "python3-venv python${pyver}-venv" "venv"
    fi
fi
if wants test; then
    have node || need_pkg nodejs "node"
    have npm || need_pkg npm "npm"
    have wasm-opt || need_pkg binaryen "wasm-opt"
    have promtool || need_pkg prometheus "promtool"
    # openssl: the Istio tests make the API server's service-account keys.
    have openssl || need_pkg openssl "openssl"
fi
if wants bench; then
    have wasm-opt || need_pkg binaryen "wasm-opt"
    { have valgrind && have callgrind_control; } || need_pkg valgrind "valgrind"
fi
if wants bench || wants soak; then have wrk || need_pkg wrk "wrk"; fi

# --- Go programs (tests start them; scripts/go-tools.txt pins them) ----------
if wants test || wants oci; then
    if ! have go; then
        problems+=("go not found: install Go 1.26 (https://go.dev/dl/), a README prerequisite")
    else
        gover="$(go env GOVERSION 2>/dev/null || true)"
        if ! [[ "$gover" =~ ^go1\.([0-9]+) ]] || [ "${BASH_REMATCH[1]}" -lt 26 ]; then
            problems+=("go is ${gover:-unknown}; the pinned Go programs need Go 1.26 or newer (a README prerequisite)")
        fi
    fi
    while read -r name pkg _; do
        [ -n "$name" ] && [ "${name:0:1}" != "#" ] || continue
        # oci alone needs only the pusher.
        wants test || [ "$name" = oras ] || continue
        if [ ! -x "$TOOLS/bin/$name" ] || [ "$(cat "$TOOLS/stamps/$name" 2>/dev/null || true)" != "$pkg" ]; then
            go_tools+=("$name $pkg")
        fi
    done <"$GO_PINS"
    # kube-apiserver and etcd come from a module of ours (go install cannot
    # build kube-apiserver: tests/tools/kube/go.mod says why). Their stamp is
    # the hash of that module's go.mod, go.sum and etcd/main.go
    # (testkit/kube.py checks the same), so any change there rebuilds them.
    kube_stamp="$KUBE_MOD $(cat "$KUBE_MOD/go.mod" "$KUBE_MOD/go.sum" "$KUBE_MOD/etcd/main.go" | sha256sum | cut -c1-16)"
    for name in kube-apiserver etcd; do
        if [ ! -x "$TOOLS/bin/$name" ] || [ "$(cat "$TOOLS/stamps/$name" 2>/dev/null || true)" != "$kube_stamp" ]; then
            kube_build=1
        fi
    done
fi

# --- Nothing missing: done -----------------------------------------------------
uniq_pkgs=()
for p in "${apt_pkgs[@]+"${apt_pkgs[@]}"}"; do
    for w in $p; do [[ " ${uniq_pkgs[*]-} " == *" $w "* ]] || uniq_pkgs+=("$w"); done
done
if [ ${#problems[@]} -eq 0 ] && [ ${#uniq_pkgs[@]} -eq 0 ] && [ ${#rust_cmds[@]} -eq 0 ] && [ ${#go_tools[@]} -eq 0 ] && [ "$kube_build" -eq 0 ]; then
    [ "$check" -eq 1 ] && echo "setup: nothing missing for: ${groups[*]}"
    exit 0
fi

SUDO=()
can_apt=1
apt_cmd="apt-get install -y --no-install-recommends ${uniq_pkgs[*]-}"
why="$(IFS=,; echo "${apt_why[*]-}" | sed 's/,/, /g')"
if [ ${#uniq_pkgs[@]} -gt 0 ]; then
    if ! have apt-get; then
        can_apt=0
        problems+=("missing ${uniq_pkgs[*]} and apt-get is not available: install them with your package manager")
    elif [ "$(id -u)" -ne 0 ]; then
        if have sudo && sudo -n true >/dev/null 2>&1; then
            SUDO=(sudo -n)
        else
            can_apt=0
            problems+=("missing Debian packages (for $why): run: sudo apt-get update && sudo $apt_cmd")
        fi
    fi
fi

if [ "$check" -eq 1 ]; then
    for p in "${problems[@]+"${problems[@]}"}"; do echo "setup: $p"; done
    if [ ${#uniq_pkgs[@]} -gt 0 ] && [ "$can_apt" -eq 1 ]; then
        s="${SUDO[*]-}${SUDO[*]:+ }"
        echo "setup: missing Debian packages (for $why): would run: ${s}apt-get update && ${s}$apt_cmd"
    fi
    for c in "${rust_cmds[@]+"${rust_cmds[@]}"}"; do echo "setup: would run: $c"; done
    for t in "${go_tools[@]+"${go_tools[@]}"}"; do
        echo "setup: would run: GOBIN=.tools/bin go install ${t#* }"
    done
    if [ "$kube_build" -eq 1 ]; then
        echo "setup: would run: go build kube-apiserver and etcd in $KUBE_MOD into .tools/bin"
    fi
    exit 1
fi

# What this script cannot do: one line, before anything is built or tested.
if [ ${#problems[@]} -gt 0 ]; then
    (IFS=';'; echo "setup: ${problems[*]}" | sed 's/;/; /g') >&2
    exit 1
fi

log() { printf 'setup: %s\n' "$*" >&2; }

if [ ${#uniq_pkgs[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    log "installing ${uniq_pkgs[*]} (apt-get)"
    "${SUDO[@]}" apt-get update -qq
    # No service a package brings (prometheus has one) is started: the tests
    # need the tools, not servers. policy-rc.d tells invoke-rc.d and
    # deb-systemd-invoke so for the length of the install.
    policy=/usr/sbin/policy-rc.d added=0 rc=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
        "${SUDO[@]}" chmod 755 "$policy"
        added=1
    fi
    # shellcheck disable=SC2086  # word splitting of the package list is wanted
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends ${uniq_pkgs[*]} || rc=$?
    if [ "$added" -eq 1 ]; then "${SUDO[@]}" rm -f "$policy"; fi
    [ "$rc" -eq 0 ] || { log "apt-get install failed ($rc)"; exit "$rc"; }
fi

for c in "${rust_cmds[@]+"${rust_cmds[@]}"}"; do
    read -ra argv <<<"$c"
    case "$c" in
        cargo\ install*wasm-bindgen-cli*)
            log "$c: builds from source, about 5 minutes on 2 cores, once per machine"
            # --locked builds with the lock file wasm-bindgen-cli was published
            # with; if the registry cannot serve one of those versions, the
            # newest compatible ones will do: the runner's version must match.
            if ! "${argv[@]}"; then
                log "the --locked install failed; retrying without --locked"
                "${argv[@]/--locked/}"
            fi ;;
        cargo\ install*)
            log "$c: builds from source, a few minutes, once per machine"
            "${argv[@]}" ;;
        *)
            log "$c"
            "${argv[@]}" ;;
    esac
done
if wants test && [ -n "${wbg:-}" ] && [ "$(wasm-bindgen-test-runner --version 2>/dev/null || true)" != "wasm-bindgen-test-runner $wbg" ]; then
    log "expected wasm-bindgen-test-runner $wbg, found: $(wasm-bindgen-test-runner --version 2>&1 || true) (is another one earlier on PATH?)"
    exit 1
fi

if [ ${#go_tools[@]} -gt 0 ]; then
    mkdir -p "$TOOLS/bin" "$TOOLS/stamps"
    for t in "${go_tools[@]}"; do
        name="${t%% *}" pkg="${t#* }"
        log "building $name ($pkg) into .tools/bin: go install compiles the whole module, minutes" \
            "on 2 cores the first time on a machine (Envoy Gateway 7, Istio 6, the registry 3.5);" \
            "with Go's caches warm it only re-links"
        start=$SECONDS
        rm -f "$TOOLS/stamps/$name"
        GOBIN="$TOOLS/bin" go install "$pkg"
        printf '%s\n' "$pkg" >"$TOOLS/stamps/$name"
        log "$name ready in $((SECONDS - start)) s"
    done
fi

if [ "$kube_build" -eq 1 ]; then
    mkdir -p "$TOOLS/bin" "$TOOLS/stamps"
    kver="$(cd "$KUBE_MOD" && go list -m -f '{{.Version}}' k8s.io/kubernetes)"
    log "building kube-apiserver (k8s.io/kubernetes $kver) and etcd into .tools/bin from $KUBE_MOD:" \
        "about 13 minutes on 2 cores the first time on a machine, 30 s with Go's caches warm"
    start=$SECONDS
    rm -f "$TOOLS/stamps/kube-apiserver" "$TOOLS/stamps/etcd"
    # The version a release build stamps (kube-apiserver --version, /version).
    minor="${kver#v*.}" minor="${minor%%.*}" major="${kver#v}" major="${major%%.*}"
    ldflags="-X k8s.io/component-base/version.gitVersion=$kver -X k8s.io/component-base/version.gitMajor=$major"
    ldflags+=" -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
    (
        cd "$KUBE_MOD"
        go build -buildvcs=false -ldflags "$ldflags" -o "$TOOLS/bin/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
        go build -buildvcs=false -o "$TOOLS/bin/etcd" ./etcd
    )
    for name in kube-apiserver etcd; do printf '%s\n' "$kube_stamp" >"$TOOLS/stamps/$name"; done
    log "kube-apiserver and etcd ready in $((SECONDS - start)) s"
fi
