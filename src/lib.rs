//! # sticky-canary
//!
//! Canary releases with sticky sessions, as a proxy-wasm filter for Envoy and
//! Istio. For every request the filter picks a version (explicit rules
//! first, then the remembered version, then a per-user weighted bucket),
//! computes a sticky key that pins the user to one pod inside the version,
//! writes the route-override headers Envoy routes on, and keeps the session
//! in a cookie.
//!
//! The crate is two layers:
//! - a host-free core ([`compile`], [`mod@decide`], [`session`], [`setcookie`],
//!   [`hash`]) with no `proxy_wasm` import, tested natively and on wasm32;
//! - a thin adapter (`filter`, wasm32-wasip1 only) that copies request data into a
//!   [`Request`], calls [`decide()`] and applies the [`Decision`].
//!
//! ```
//! use sticky_canary::{compile_json, decide, Entropy, Request};
//!
//! let plugin = compile_json(r#"{
//!     "versions": [{"name": "v1"}, {"name": "v2", "weight": 0}],
//!     "rules": [{"cookie": "canary", "value": "v2", "version": "v2"}]
//! }"#).unwrap();
//! let headers = vec![(b":path".to_vec(), b"/".to_vec()), (b"cookie".to_vec(), b"canary=v2".to_vec())];
//! let req = Request { headers: &headers, route_name: None, virtual_host: None, client_address: None, now: 1_800_000_000 };
//! struct Zero;
//! impl Entropy for Zero { fn fill(&mut self, b: &mut [u8]) -> bool { b.fill(7); true } }
//! let policy = plugin.select(&req).unwrap();
//! let d = decide(policy, &req, &mut Zero);
//! assert_eq!(policy.versions[d.version].name, "v2");
//! assert!(d.write_cookie);
//! ```

#![warn(missing_docs)]

pub mod b64;
pub mod compile;
pub mod config;
pub mod decide;
pub mod hash;
pub mod headermap;
pub mod session;
pub mod setcookie;
pub mod time;

pub use compile::{compile_json, ConfigError, Plugin, Policy};
pub use decide::{
    decide, on_response, on_upstream_response, CookieState, Decision, Entropy, Reason, Request,
    Upstream,
};

// The adapter only exists where Envoy loads the filter: wasm32-wasip1.
// Elsewhere (native tests, wasm32-unknown-unknown for wasm-bindgen-test)
// the crate is the host-free core alone.
#[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
mod filter;
#[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
mod host;
