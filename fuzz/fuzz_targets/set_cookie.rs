//! Set-Cookie rendering: cookie sections from arbitrary data that pass the
//! config compiler, arbitrary sessions; the header parses back (as a
//! browser reads it) to exactly the configured attributes.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use sticky_canary::compile_json;
use sticky_canary::cookies::Secure;
use sticky_canary::session::{Origin, Session};
use sticky_canary_fuzz::checks::{self, MAX_NOW};
use sticky_canary_fuzz::gen::{b64_std, pool, CookieM, Opt, Text};

#[derive(Arbitrary, Debug)]
struct Input {
    cookie: CookieM,
    secret: Option<[u8; 32]>,
    ttl: Option<u32>,
    key: [u8; 16],
    version_id: u32,
    rule: bool,
    expiry: u32,
    endpoint: Option<Text>,
    nonce: [u8; 24],
    now: u64,
    user_agent: Option<Text>,
}

fuzz_target!(|input: Input| {
    let mut session = json!({"cookie": input.cookie.json()});
    if let Some(s) = input.secret {
        session["secrets"] = json!([b64_std(&s)]);
    }
    if let Some(t) = input.ttl {
        session["ttl"] = json!(t);
    }
    let config = json!({
        "versions": [{"name": "a"}, {"name": "b", "weight": 1}],
        "session": session,
    });
    let text = config.to_string();
    let s = Session {
        key: input.key,
        version_id: input.version_id,
        origin: if input.rule {
            Origin::Rule
        } else {
            Origin::Weight
        },
        expiry: input.expiry,
        endpoint: input.endpoint.as_ref().map(|t| t.pick(pool::ADDR)),
    };
    let now = input.now % (MAX_NOW + 1);
    let ua = input.user_agent.as_ref().map(|t| t.pick(pool::UA));
    if checks::check_cookie_config(&text, &s, &input.nonce, now, ua.as_deref()).is_none() {
        return;
    }
    // The compiled spec is what was configured.
    let plugin = compile_json(&text).expect("it compiled above");
    let spec = plugin.global.as_ref().expect("versions given").cookie();
    let c = &input.cookie;
    if let Opt::Some(t) = &c.name {
        assert_eq!(spec.name(), t.pick(pool::COOKIE));
    }
    if let Opt::Some(t) = &c.path {
        assert_eq!(spec.path(), t.pick(pool::PATH));
    }
    if let Opt::Some(t) = &c.domain {
        assert_eq!(
            spec.domain(),
            Some(t.pick(pool::DOMAIN).as_str())
        );
    }
    if let Opt::Some(b) = &c.secure {
        let want = [
            Some(Secure::Never),
            Some(Secure::Always),
            Some(Secure::Auto),
            None,
        ][usize::from(*b % 4)];
        assert_eq!(Some(spec.secure()), want);
    }
    if let Opt::Some(b) = &c.http_only {
        assert_eq!(spec.http_only(), *b);
    }
});
