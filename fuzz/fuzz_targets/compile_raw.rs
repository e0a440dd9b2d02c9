//! Raw bytes as the plugin config, as the adapter's `on_configure` gets
//! them: not UTF-8 is refused, anything else goes to `compile_json`. Never
//! panics; an accepted plugin serves requests (checks::exercise_plugin).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sticky_canary_fuzz::{checks, gen};

fuzz_target!(|data: &[u8]| {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(gen::set_env_keys);
    let _ = checks::check_compile_raw(data);
});
