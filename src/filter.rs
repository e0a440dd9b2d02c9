//! The proxy-wasm adapter: host calls in, [`crate::pipeline`] in the middle,
//! host calls out. Kept thin on purpose; all logic lives in the core.
//!
//! Every host call goes through [`crate::host`], which never panics and
//! reads host data as bytes: a header that is not UTF-8 counts as absent
//! in the core, and the request is served.
//!
//! Host calls per request (each costs 1-2 us in Envoy): one read of the
//! request header map, one clock read, the route properties only if a route
//! entry needs them, then one `set` per route-override header (a `set`
//! replaces any copy the client sent) and one call of Envoy's
//! `clear_route_cache` foreign function, so the router matches the route
//! again on the new headers whatever proxy-wasm ABI the module exports
//! (see [`host::clear_route_cache`]; a host without it is logged once per VM
//! and counted in `sticky_canary_route_cache_clear_failed_total`, and the
//! request goes on). The response phase makes no call at
//! all unless a cookie is due or the mode is persistent (then
//! `upstream.address`, and only when another pod answered,
//! `upstream.request_attempt_count` and `:status`).
//!
//! # An invalid config
//! A config that does not compile is logged and counted
//! (`sticky_canary_config_total` with `result=refused`, and the gauge
//! `sticky_canary_config_invalid` at 1). Unless the config asks for
//! `"on_invalid_config": "refuse"`, the filter then keeps serving: the last
//! config of the same plugin (by `plugin_name`) that this VM accepted, or,
//! when there is none (a fresh start), pass-through for every request with
//! clients' copies of the override headers still removed. Envoy keeps one
//! VM per worker and reuses it across config updates of the same code, so
//! "last good" survives an ECDS or listener update; a new VM (new code or
//! VM settings) starts without one.

use crate::host::{self, map, Level};
use crate::metrics;
use crate::pipeline::{self, Exchange, Upstream};
use crate::request::Header;
use crate::rng::Entropy;
use crate::rng::Reseeding;
use crate::session::NONCE_LEN;
use crate::{compile_json, headermap, invalid_plan, Plugin, Request};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

proxy_wasm::main! {{
    std::panic::set_hook(Box::new(|info| {
        host::log(Level::Critical, &format!("sticky-canary: panic: {info}"));
    }));
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// A compiled plugin with the host's ids of its counters, shared by the
/// root and every request of one plugin instance.
struct Active {
    plugin: Plugin,
    /// Host metric ids, by [`metrics::Counter`] index.
    counters: Vec<Option<u32>>,
    /// [`metrics::ROUTE_CACHE_CLEAR_FAILED`].
    route_cache_failed: Option<u32>,
}

impl Active {
    fn new(plugin: Plugin) -> Rc<Active> {
        let counters = plugin
            .counter_names
            .iter()
            .map(|n| host::define_counter(n))
            .collect();
        Rc::new(Active {
            plugin,
            counters,
            route_cache_failed: host::define_counter(metrics::ROUTE_CACHE_CLEAR_FAILED),
        })
    }

    fn bump(&self, c: metrics::Counter) {
        host::increment(self.counters.get(c.index()).copied().flatten());
    }
}

thread_local! {
    /// Buffers the request headers are read into, reused by every request
    /// of the VM (one request at a time: the VM is single-threaded).
    static HEADERS: RefCell<Vec<Header>> = const { RefCell::new(Vec::new()) };
    /// The last config each plugin (by name) had accepted in this VM, so an
    /// invalid update keeps it serving.
    static LAST_GOOD: RefCell<HashMap<Vec<u8>, Rc<Active>>> = RefCell::new(HashMap::new());
    /// Whether this VM has logged a failed route-cache clear (once is enough:
    /// every later failure is only counted).
    static CLEAR_FAILURE_LOGGED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[derive(Default)]
struct Root {
    active: Option<Rc<Active>>,
}

/// Count a config load and say whether the delivered config is serving.
fn count_config(accepted: bool) {
    host::increment(host::define_counter(&metrics::config_total(accepted)));
    host::record(
        host::define_gauge(metrics::CONFIG_INVALID),
        u64::from(!accepted),
    );
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let name = host::property(&["plugin_name"]).unwrap_or_default();
        let bytes = host::plugin_configuration();
        let compiled = match &bytes {
            None => Err("cannot read the plugin config".to_owned()),
            Some(b) => match std::str::from_utf8(b) {
                Err(_) => Err("invalid plugin config: $: not UTF-8 text".to_owned()),
                Ok(text) => compile_json(text).map_err(|e| e.to_string()),
            },
        };
        match compiled {
            Ok(plugin) => {
                host::log(
                    Level::Info,
                    &format!(
                        "sticky-canary: configured: global {}, {} route entries",
                        if plugin.global.is_some() {
                            "active"
                        } else {
                            "pass-through"
                        },
                        plugin.routes.len()
                    ),
                );
                let active = Active::new(plugin);
                LAST_GOOD.with(|m| m.borrow_mut().insert(name, active.clone()));
                self.active = Some(active);
                count_config(true);
                true
            }
            Err(why) => {
                count_config(false);
                let text = bytes
                    .as_deref()
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .unwrap_or("");
                let plan = invalid_plan(text);
                if plan.refuse {
                    host::log(
                        Level::Error,
                        &format!("sticky-canary: {why}; refusing it (on_invalid_config: refuse)"),
                    );
                    return false;
                }
                let last = LAST_GOOD.with(|m| m.borrow().get(&name).cloned());
                match last {
                    Some(last) => {
                        host::log(
                            Level::Error,
                            &format!("sticky-canary: {why}; keeping the last good config"),
                        );
                        self.active = Some(last);
                    }
                    None => {
                        host::log(
                            Level::Error,
                            &format!(
                                "sticky-canary: {why}; no earlier config: passing every request through"
                            ),
                        );
                        self.active =
                            Some(Active::new(Plugin::pass_through(plan.override_headers)));
                    }
                }
                true
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            active: self.active.clone(),
            exchange: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// The host could not clear the route cache: count it, log it once per VM,
/// and carry on (Envoy still clears it by itself after a header change for
/// a module of ABI 0.2.1, which this one is).
fn route_cache_not_cleared(active: &Active, status: u32) {
    host::increment(active.route_cache_failed);
    if !CLEAR_FAILURE_LOGGED.with(|l| l.replace(true)) {
        host::log(
            Level::Warn,
            &format!(
                "sticky-canary: the host did not clear the route cache (clear_route_cache \
                 status {status}; Envoy before 1.33 lacks it): routing on the version header \
                 relies on the automatic clear of proxy-wasm ABI 0.2.1; counted in {}, \
                 logged once per VM",
                metrics::ROUTE_CACHE_CLEAR_FAILED
            ),
        );
    }
}

/// Session keys and nonces: the core's keystream ([`crate::rng`]), seeded
/// by WASI `random_get` on first use in this VM.
struct WasiEntropy;

/// WASI `random_get`, the keystream's seed.
type HostRandom = fn(&mut [u8]) -> bool;

thread_local! {
    static RNG: RefCell<Reseeding<HostRandom>> =
        RefCell::new(Reseeding::new(|b: &mut [u8]| getrandom::getrandom(b).is_ok()));
}

impl Entropy for WasiEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        RNG.with(|r| match r.try_borrow_mut() {
            Ok(mut r) => r.fill(buf),
            Err(_) => getrandom::getrandom(buf).is_ok(),
        })
    }
}

struct Http {
    active: Option<Rc<Active>>,
    exchange: Option<Exchange>,
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(active) = self.active.clone() else {
            return Action::Continue;
        };
        // If the host cannot give the headers, the request is handled as
        // one with none.
        let bytes = host::header_map_bytes(map::REQUEST_HEADERS).unwrap_or_default();
        HEADERS.with(|pool| match pool.try_borrow_mut() {
            Ok(mut pool) => {
                let n = headermap::parse_into(&bytes, &mut pool);
                self.request(&active, pool.get(..n).unwrap_or_default());
                // Only a large map can have grown the pool past its limits.
                if bytes.len() > headermap::POOL_KEEP_BYTES || n > headermap::POOL_KEEP_PAIRS {
                    headermap::trim_pool(&mut pool);
                }
            }
            // Not reentrant; but never fail a request over it.
            Err(_) => match headermap::parse(&bytes) {
                Some(h) => self.request(&active, &h),
                None => self.request(&active, &[]),
            },
        });
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.response();
        Action::Continue
    }
}

impl Http {
    /// The request phase over the request's headers.
    fn request(&mut self, active: &Active, headers: &[Header]) {
        let plugin = &active.plugin;
        let text = |need: bool, path: &[u8]| need.then(|| host::property_text(path)).flatten();
        let route_name = text(plugin.needs_route_name, b"xds\0route_name");
        let virtual_host = text(plugin.needs_virtual_host, b"xds\0virtual_host_name");
        let client_address = text(plugin.needs_client_address, b"source\0address");
        let req = Request {
            headers,
            route_name: route_name.as_deref(),
            virtual_host: virtual_host.as_deref(),
            client_address: client_address.as_deref(),
            now: host::now_secs(),
        };
        let plan = pipeline::on_request(plugin, &req, &mut WasiEntropy);
        for (name, value) in &plan.set {
            host::set_header(map::REQUEST_HEADERS, name, Some(value.as_ref()));
        }
        for name in &plan.remove {
            host::set_header(map::REQUEST_HEADERS, name, None);
        }
        if plan.clears_route_cache() {
            if let Err(status) = host::clear_route_cache() {
                route_cache_not_cleared(active, status);
            }
        }
        for c in &plan.count {
            active.bump(*c);
        }
        for (path, value) in &plan.properties {
            host::set_property(path, value);
        }
        self.exchange = plan.exchange;
    }

    /// The response phase: pin, cookie, extras.
    fn response(&mut self) {
        let (Some(active), Some(ex)) = (self.active.as_ref(), self.exchange.as_mut()) else {
            return;
        };
        let mut address = None;
        let (mut attempts, mut status) = (None, None);
        if ex.wants_upstream() {
            address = host::property_text(b"upstream\0address");
            if ex.wants_attempts(address.as_deref()) {
                attempts = host::property_at(b"upstream\0request_attempt_count")
                    .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
                    .map(u64::from_le_bytes);
                status = host::header(map::RESPONSE_HEADERS, ":status")
                    .and_then(|s| std::str::from_utf8(&s).ok()?.parse::<u16>().ok());
            }
        }
        let upstream = Upstream {
            address: address.as_deref(),
            attempts,
            status,
        };
        let mut cookie = None;
        if ex.upstream_answered(&upstream) {
            let mut nonce = [0u8; NONCE_LEN];
            if ex.needs_nonce() && !WasiEntropy.fill(&mut nonce) {
                host::log(
                    Level::Warn,
                    "sticky-canary: no randomness for the cookie nonce; cookie not renewed",
                );
            } else {
                // The response's own Set-Cookie values, borrowed from the
                // map's bytes (a malformed map counts as none).
                let response = host::header_map_bytes(map::RESPONSE_HEADERS).unwrap_or_default();
                let mut existing: Vec<&[u8]> = Vec::new();
                let _ = headermap::walk(&response, |k, v| {
                    if k == b"set-cookie" {
                        existing.push(v);
                    }
                });
                cookie = ex.set_cookie(existing, &nonce);
            }
        }
        if let Some(c) = &cookie {
            host::add_header(map::RESPONSE_HEADERS, "set-cookie", c.header.as_bytes());
            if let Some(id) = c.count {
                active.bump(id);
            }
        }
        let extras = ex.extras(cookie.as_ref());
        for (name, value) in &extras.headers {
            host::add_header(map::RESPONSE_HEADERS, name, value.as_bytes());
        }
        for (path, value) in &extras.properties {
            host::set_property(path, value);
        }
    }
}
