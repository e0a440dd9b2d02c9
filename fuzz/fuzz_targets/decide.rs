//! The per-request decision over fixed configs (checks::DECIDE_CONFIGS) and
//! arbitrary request data: header names and values as bytes, cookies (some
//! made for the config, some garbled), client address, time, and what the
//! response phase reads.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use sticky_canary::Plugin;
use sticky_canary_fuzz::checks;
use sticky_canary_fuzz::gen::ReqGen;

thread_local! {
    // Plugin holds Rc<Policy>: one copy per fuzzing thread.
    static PLUGINS: Vec<Plugin> = checks::decide_plugins();
}

fuzz_target!(|data: &[u8]| {
    PLUGINS.with(|all| run(all, data));
});

fn run(all: &[Plugin], data: &[u8]) {
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
}
