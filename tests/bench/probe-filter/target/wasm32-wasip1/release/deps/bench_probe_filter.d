/work/main/tests/bench/probe-filter/target/wasm32-wasip1/release/deps/bench_probe_filter.d: src/lib.rs

/work/main/tests/bench/probe-filter/target/wasm32-wasip1/release/deps/bench_probe_filter.wasm: src/lib.rs

src/lib.rs:
