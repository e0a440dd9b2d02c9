//! Structured configs (an `arbitrary` mirror of the config shape) as JSON,
//! compiled; accepted ones are checked against the input and served.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sticky_canary::compile_json;
use sticky_canary_fuzz::checks;
use sticky_canary_fuzz::gen::{self, ConfigM, ReqGen};

fuzz_target!(|input: (ConfigM, Vec<ReqGen>)| {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(gen::set_env_keys);
    let (config, requests) = input;
    let text = config.json().to_string();
    let Ok(plugin) = compile_json(&text) else {
        let _ = checks::check_compile_text(&text, &config.secret_texts(), &[]);
        return;
    };
    let cases: Vec<_> = requests
        .iter()
        .take(4)
        .map(|r| r.resolve(&plugin))
        .collect();
    let _ = checks::check_compile_text(&text, &config.secret_texts(), &cases);
});
