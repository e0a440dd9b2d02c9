//! # sticky-canary
//!
//! Canary releases with sticky sessions, as a proxy-wasm filter for Envoy,
//! Istio and Envoy Gateway. For every request the filter picks a version
//! (explicit rules first, then the remembered version, then a per-user
//! weighted bucket), computes a sticky key that pins the user to one pod
//! inside the version, writes the route-override headers Envoy routes on,
//! and keeps the session in a cookie.
//!
//! The crate is two layers. The host-free core, tested natively and on
//! wasm32, with no `proxy_wasm` import (the SDK is a dependency of the
//! wasm32-wasip1 build only):
//!
//! | module | responsibility |
//! |---|---|
//! | [`config`] | the plugin config as users write it (serde types) |
//! | [`compile`] | parse, validate and compile it, one file per section |
//! | [`policy`] | the compiled model |
//! | [`routing`] | which policy covers a request (route entry matching) |
//! | [`request`] | the request view: headers as bytes, cookies, query, client IP |
//! | [`mod@decide`] | the decision: version, pod, session; why ([`Basis`], [`Reason`]) |
//! | [`pipeline`] | the per-request steps: headers to set, counters, the response phase |
//! | [`session`] | the session cookie's value: wire format, sealing, why one does not open |
//! | [`cookies`] | the cookie's attributes, the `Cookie` header parsed, the `Set-Cookie` rendered |
//! | [`browsers`] | user agents that mishandle `SameSite=None` |
//! | [`hash`] | FNV-1a: buckets, sticky hashes, version ids |
//! | [`metrics`] | counter names and labels |
//! | [`headermap`] | the proxy-wasm serialised header map |
//! | [`rng`] | session keys and nonces ([`Entropy`]): a keystream seeded by the host |
//!
//! and the adapter (`filter` and `host`, wasm32-wasip1 only), which makes
//! the host calls: it reads the request into a [`Request`], calls
//! [`pipeline::on_request`] and applies the plan. The command-line tool
//! (`cli/`) prints what these modules decide.
//!
//! ```
//! use sticky_canary::{compile_json, pipeline, Entropy, Request};
//!
//! let plugin = compile_json(r#"{
//!     "versions": [{"name": "v1"}, {"name": "v2", "weight": 0}],
//!     "rules": [{"cookie": "canary", "value": "v2", "version": "v2"}]
//! }"#).unwrap();
//! let headers: [sticky_canary::Header; 2] = [(b":path", b"/"), (b"cookie", b"canary=v2")];
//! let req = Request { headers: &headers, route_name: None, virtual_host: None, client_address: None, now: 1_800_000_000 };
//! struct Seven;
//! impl Entropy for Seven { fn fill(&mut self, b: &mut [u8]) -> bool { b.fill(7); true } }
//! let plan = pipeline::on_request(&plugin, &req, &mut Seven);
//! assert_eq!(plan.set[0].0, "x-canary-version");
//! assert_eq!(&*plan.set[0].1, b"v2");
//! let mut exchange = plan.exchange.unwrap();
//! assert!(exchange.upstream_answered(&pipeline::Upstream::default()));
//! let cookie = exchange.set_cookie([], &[0; 24]).unwrap();
//! assert!(cookie.header.starts_with("sticky-canary=1"));
//! ```

#![warn(missing_docs)]

pub mod browsers;
pub mod compile;
pub mod config;
pub mod cookies;
pub mod decide;
pub mod hash;
pub mod headermap;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod request;
pub mod rng;
pub mod routing;
pub mod session;

pub use compile::{compile_json, invalid_plan, ConfigError, InvalidPlan};
pub use decide::{decide, Basis, CookieState, Decision, Reason};
pub use pipeline::{on_request, Exchange, RequestPlan, Upstream};
pub use policy::{Plugin, Policy};
pub use request::{Header, Request};
pub use rng::Entropy;

// The adapter only exists where Envoy loads the filter: wasm32-wasip1.
// Elsewhere (native tests, wasm32-unknown-unknown for wasm-bindgen-test)
// the crate is the host-free core alone.
#[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
mod filter;
#[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
mod host;
