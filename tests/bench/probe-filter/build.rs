//! Padding for the memory-against-size curve of `make bench`
//! (tests/bench/memcurve.py): `BENCH_PROBE_PAD=N` adds N exported functions
//! that nothing calls, each about 1.2 KB of wasm code with loops and
//! branches (`BENCH_PROBE_PAD_LOOPS=L`: L/4 times that), so that Envoy's V8
//! has that much more code to compile. Without the variable (every other
//! use of the probe) nothing is added.

use std::fmt::Write as _;
use std::{env, fs, path::Path};

fn main() {
    println!("cargo:rerun-if-env-changed=BENCH_PROBE_PAD");
    println!("cargo:rerun-if-env-changed=BENCH_PROBE_PAD_LOOPS");
    let var = |name: &str, default: u32| -> u32 {
        env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let n = var("BENCH_PROBE_PAD", 0);
    // Loops per function: 4 make about 1.2 KB of code; 48 about 14 KB,
    // the size of the filter's largest functions.
    let loops = var("BENCH_PROBE_PAD_LOOPS", 4).max(1);
    let mut src = String::new();
    // A fixed generator, so that a padded build is the same every time.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for f in 0..n {
        let _ = writeln!(
            src,
            "#[no_mangle]\npub extern \"C\" fn bench_pad_{f}(mut x: u64, n: u32) -> u64 {{"
        );
        for _ in 0..loops {
            let _ = writeln!(
                src,
                "    for i in 0..n {{\n        x = match (x ^ u64::from(i)) % 7 {{"
            );
            for arm in 0..7 {
                let (a, b, r) = (next() | 1, next(), next() % 63 + 1);
                let pat = if arm == 6 {
                    "_".to_string()
                } else {
                    arm.to_string()
                };
                let _ = writeln!(
                    src,
                    "            {pat} => x.wrapping_mul({a:#x}).rotate_left({r}) ^ {b:#x},"
                );
            }
            let _ = writeln!(src, "        }};\n    }}");
        }
        let _ = writeln!(src, "    x\n}}");
    }
    let out = Path::new(&env::var("OUT_DIR").unwrap_or_default()).join("pad.rs");
    let _ = fs::write(out, src);
}
