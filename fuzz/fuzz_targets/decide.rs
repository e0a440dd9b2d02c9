//! The per-request decision over fixed configs (checks::DECIDE_CONFIGS) and
//! arbitrary request data: header names and values as bytes, cookies (some
//! made for the config, some garbled), client address, time, and what the
//! response phase reads.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use sticky_canary::Plugin;
use sticky_canary_fuzz::checks;
use sticky_canary_fuzz::gen::ReqGen;

fn plugins() -> &'static [Plugin] {
    static P: OnceLock<Vec<Plugin>> = OnceLock::new();
    P.get_or_init(checks::decide_plugins)
}

fuzz_target!(|data: &[u8]| {
    let all = plugins();
    // Seeds and regressions are text (checks::parse_text_case); everything
    // else is a structured request.
    if let Some((i, case)) = checks::parse_text_case(data, all) {
        let _ = checks::check_request(&all[i], &case);
        return;
    }
    let Ok((i, gen)) = <(u8, ReqGen)>::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let plugin = &all[usize::from(i) % all.len()];
    let case = gen.resolve(plugin);
    let _ = checks::check_request(plugin, &case);
});
