/work/main/tests/bench/probe-filter/target/wasm32-wasip1/release/bench_probe_filter.wasm: /work/main/tests/bench/probe-filter/src/lib.rs
