//! Shared helpers for the integration tests: a deterministic entropy
//! source, request builders and a small browser model with a cookie jar.
//!
//! Every helper is host-free, so the tests that use it run natively and,
//! through `cargo test --target wasm32-wasip1 --tests`, inside wasm.
#![allow(dead_code)]
// Test support: these helpers fail the calling test on purpose. Clippy's
// allow-*-in-tests settings only cover #[test] functions, not this module.
#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)]

pub use std::rc::Rc;
use sticky_canary::decide::Decision;
use sticky_canary::pipeline::{Exchange, Upstream};
pub use sticky_canary::request::Header;
use sticky_canary::session::NONCE_LEN;
use sticky_canary::{compile_json, decide, Basis, CookieState, Entropy, Plugin, Policy, Request};

/// A fixed "now" for tests: 2027-01-15T08:00:00Z.
pub const NOW: u64 = 1_800_000_000;

/// Deterministic entropy: the core's SplitMix64 from a seed. Two
/// instances with the same seed give the same bytes on every platform.
pub use sticky_canary::rng::SplitMix64 as TestRng;

/// The next 16 bytes a generator will hand out, without consuming them
/// (what `decide` will use as a new session key).
pub trait Peek {
    fn peek16(&self) -> [u8; 16];
}

impl Peek for TestRng {
    fn peek16(&self) -> [u8; 16] {
        let mut copy = self.clone();
        let mut out = [0u8; 16];
        copy.fill(&mut out);
        out
    }
}

/// Entropy that is never available.
pub struct NoEntropy;

impl Entropy for NoEntropy {
    fn fill(&mut self, _buf: &mut [u8]) -> bool {
        false
    }
}

/// Owned header list from `(name, value)` pairs (names kept as given), as
/// bytes like the adapter reads them.
pub fn headers<'a>(pairs: &[(&'a str, &'a str)]) -> Vec<Header<'a>> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
        .collect()
}

/// One header pair as bytes.
pub fn header<'a>(name: &'a str, value: &'a str) -> Header<'a> {
    (name.as_bytes(), value.as_bytes())
}

/// A request over `headers` at `now`, no route properties, no client address.
pub fn request<'a>(headers: &'a [Header<'a>], now: u64) -> Request<'a> {
    Request {
        headers,
        route_name: None,
        virtual_host: None,
        client_address: None,
        now,
    }
}

/// Compile or fail the test with the error text.
pub fn plugin(json: &str) -> Plugin {
    match compile_json(json) {
        Ok(p) => p,
        Err(e) => panic!("config should compile: {e}\n{json}"),
    }
}

/// The global policy of a config that must have one.
pub fn global(p: &Plugin) -> &Rc<Policy> {
    p.global.as_ref().expect("config has a global policy")
}

/// The policy of route entry `i` (which must be enabled).
pub fn entry(p: &Plugin, i: usize) -> &Rc<Policy> {
    p.routes[i].policy.as_ref().expect("an enabled route entry")
}

/// The compile error text of a config that must fail.
pub fn error(json: &str) -> String {
    match compile_json(json) {
        Ok(_) => panic!("config should be rejected:\n{json}"),
        Err(e) => e.to_string(),
    }
}

/// Name of the version a decision chose.
pub fn vname(policy: &Policy, d: &Decision) -> String {
    policy.versions()[d.version].name().to_owned()
}

/// What one visit of a [`Client`] produced.
#[derive(Debug, Clone)]
pub struct Visit {
    /// The chosen version's name.
    pub version: String,
    pub basis: Basis,
    /// Whether a Set-Cookie went out.
    pub write: bool,
    pub state: CookieState,
    pub fallback: bool,
    /// The sticky-hash header value.
    pub hash: String,
    /// The pinned endpoint sent to Envoy (persistent mode).
    pub endpoint: Option<String>,
    /// The full Set-Cookie header, when one went out.
    pub set_cookie: Option<String>,
    pub decision: Decision,
}

/// A browser with a jar for the session cookie. Every visit goes through
/// the adapter's own steps (`sticky_canary::pipeline`): decide, the
/// response phase, then the Set-Cookie when one is due.
#[derive(Debug, Clone, Default)]
pub struct Client {
    /// The session cookie value the browser holds.
    pub jar: Option<String>,
}

impl Client {
    pub fn new() -> Self {
        Client { jar: None }
    }

    /// A visit with extra request headers at `now`.
    pub fn visit(
        &mut self,
        policy: &Rc<Policy>,
        extra: &[(&str, &str)],
        now: u64,
        rng: &mut dyn Entropy,
    ) -> Visit {
        self.visit_full(policy, extra, None, None, now, rng)
    }

    /// A visit with every knob: extra headers, the client address and the
    /// upstream address the response came from (persistent mode).
    pub fn visit_full(
        &mut self,
        policy: &Rc<Policy>,
        extra: &[(&str, &str)],
        client_address: Option<&str>,
        upstream: Option<&str>,
        now: u64,
        rng: &mut dyn Entropy,
    ) -> Visit {
        let mut h = Vec::new();
        if !extra.iter().any(|(k, _)| *k == ":path") {
            h.push(header(":path", "/"));
        }
        let jar = self
            .jar
            .as_ref()
            .map(|v| format!("{}={}", policy.cookie().name(), v));
        if let Some(cookie) = &jar {
            h.push(header("cookie", cookie));
        }
        h.extend(headers(extra));
        let req = Request {
            headers: &h,
            route_name: None,
            virtual_host: None,
            client_address,
            now,
        };
        let d = decide(policy, &req, rng);
        let hash = d.hash.as_str().to_owned();
        let endpoint = d.endpoint.clone();
        let mut ex = Exchange::new(Rc::clone(policy), d, &req);
        let write = ex.upstream_answered(&Upstream {
            address: upstream,
            ..Upstream::default()
        });
        let set_cookie = if write {
            let mut nonce = [0u8; NONCE_LEN];
            if ex.needs_nonce() {
                assert!(
                    rng.fill(&mut nonce),
                    "tests need entropy for sealed cookies"
                );
            }
            let cookie = ex.set_cookie([], &nonce).expect("a Set-Cookie");
            let value = cookie.header.split_once('=').expect("name=value").1;
            self.jar = Some(value.split(';').next().unwrap_or(value).to_owned());
            Some(cookie.header)
        } else {
            None
        };
        let d = ex.decision;
        Visit {
            version: vname(policy, &d),
            basis: d.basis,
            write,
            state: d.cookie_state,
            fallback: d.key_fallback,
            hash,
            endpoint,
            set_cookie,
            decision: d,
        }
    }
}

/// Two-version config `stable` (default) / `canary` with the canary at
/// `weight` of `total`, plus extra top-level JSON members (`extra` starts
/// with a comma or is empty).
pub fn two_versions(weight: u32, total: u32, extra: &str) -> String {
    format!(
        r#"{{"weight_total": {total}, "versions": [{{"name": "stable"}}, {{"name": "canary", "weight": {weight}}}]{extra}}}"#
    )
}
