//! The command-line tool's input paths with arbitrary bytes, through its
//! library as the binary runs them: `cookie decode` values, `check`
//! configs (plugin JSON, Envoy YAML, WasmPlugin, EnvoyExtensionPolicy),
//! `explain` headers and cookies, `simulate` plans and `migrate` YAML. No
//! input panics; `cookie decode` exits 0 or 1. See src/cli_checks.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sticky_canary_fuzz::cli_checks::check_cli(data);
});
