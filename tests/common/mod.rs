//! Shared helpers for the integration tests: a deterministic entropy
//! source, request builders and a small browser model with a cookie jar.
//!
//! Every helper is host-free, so the tests that use it run natively and,
//! through `cargo test --target wasm32-wasip1 --tests`, inside wasm.
#![allow(dead_code)]
// Test support: these helpers fail the calling test on purpose. Clippy's
// allow-*-in-tests settings only cover #[test] functions, not this module.
#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)]

use sticky_canary::compile::Policy;
use sticky_canary::decide::Decision;
pub use sticky_canary::decide::Header;
use sticky_canary::session::NONCE_LEN;
use sticky_canary::{
    compile_json, decide, on_response, setcookie, CookieState, Entropy, Plugin, Reason, Request,
};

/// A fixed "now" for tests: 2027-01-15T08:00:00Z.
pub const NOW: u64 = 1_800_000_000;

/// Deterministic entropy: SplitMix64 from a seed. Two instances with the
/// same seed give the same bytes on every platform.
#[derive(Debug, Clone)]
pub struct TestRng(pub u64);

impl TestRng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The next 16 bytes this generator will hand out, without consuming
    /// them (what `decide` will use as a new session key).
    pub fn peek16(&self) -> [u8; 16] {
        let mut copy = self.clone();
        let mut out = [0u8; 16];
        copy.fill(&mut out);
        out
    }
}

impl Entropy for TestRng {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        true
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
pub fn headers(pairs: &[(&str, &str)]) -> Vec<Header> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

/// One header pair as bytes.
pub fn header(name: &str, value: &str) -> Header {
    (name.as_bytes().to_vec(), value.as_bytes().to_vec())
}

/// A request over `headers` at `now`, no route properties, no client address.
pub fn request(headers: &[Header], now: u64) -> Request<'_> {
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
pub fn global(p: &Plugin) -> &Policy {
    p.global.as_ref().expect("config has a global policy")
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
    policy.versions[d.version].name.clone()
}

/// What one visit of a [`Client`] produced.
#[derive(Debug, Clone)]
pub struct Visit {
    /// The chosen version's name.
    pub version: String,
    pub reason: Reason,
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
/// the same steps as the proxy-wasm adapter: decide, the response phase,
/// then encode + render the cookie when one is due.
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
        policy: &Policy,
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
        policy: &Policy,
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
        if let Some(v) = &self.jar {
            h.push(header("cookie", &format!("{}={}", policy.cookie.name, v)));
        }
        h.extend(headers(extra));
        let req = Request {
            headers: &h,
            route_name: None,
            virtual_host: None,
            client_address,
            now,
        };
        let mut d = decide(policy, &req, rng);
        let hash = String::from_utf8(d.hash.to_vec()).expect("hex");
        let endpoint = d.endpoint.clone();
        let write = on_response(policy, &mut d, upstream);
        let set_cookie = if write {
            let mut nonce = [0u8; NONCE_LEN];
            if !policy.keys.is_empty() {
                assert!(
                    rng.fill(&mut nonce),
                    "tests need entropy for sealed cookies"
                );
            }
            let value = d.session.encode(&policy.cookie.name, &policy.keys, &nonce);
            let ua = req.header("user-agent").one();
            let header = setcookie::render(&policy.cookie, &value, now, ua);
            self.jar = Some(value);
            Some(header)
        } else {
            None
        };
        Visit {
            version: vname(policy, &d),
            reason: d.reason,
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
