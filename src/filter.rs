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
//! `"on_invalid_config": "refuse"`, the filter then keeps serving the last
//! good config of the same plugin (by `plugin_name`), or, when there is
//! none (a fresh start), passes every request through with clients' copies
//! of the override headers still removed.
//!
//! "Last good" is the accepted config of that plugin that served a request
//! most recently in this VM, looked up when each request starts, not when
//! the invalid config arrives: Envoy keeps one plugin instance per distinct
//! config and reuses it when that config comes back (no new
//! `on_configure`), so an instance made for an invalid config must not fix
//! its fallback at that moment, and an earlier good config that comes back
//! serves, and counts as the good one, again. A VM that Envoy starts anew
//! (Envoy Gateway's first policy update after Envoy starts does that) has
//! no such config yet: it compiles the text the last accepting VM of the
//! same `vm_id` left in Envoy's shared data, which the proxy process keeps
//! across VMs.

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
    /// Per plugin (by name): the accepted config that served a request
    /// most recently in this VM, which an invalid config falls back to.
    static LAST_GOOD: RefCell<HashMap<Vec<u8>, Slot>> = RefCell::new(HashMap::new());
    /// What the `sticky_canary_config_invalid` gauge was last set to, so a
    /// request records it only when it changes.
    static GAUGE_INVALID: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
    /// Whether this VM has logged a failed route-cache clear (once is enough:
    /// every later failure is only counted).
    static CLEAR_FAILURE_LOGGED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A plugin's last good config, shared by its instances in this VM.
type Slot = Rc<RefCell<Option<Rc<Active>>>>;

/// The slot of the plugin named `name`.
fn slot(name: &[u8]) -> Slot {
    LAST_GOOD.with(|m| m.borrow_mut().entry(name.to_vec()).or_default().clone())
}

/// The key of a plugin's last accepted config text in Envoy's shared data.
fn shared_key(name: &[u8]) -> String {
    format!("sticky-canary/last-good/{}", String::from_utf8_lossy(name))
}

/// What one plugin instance serves.
enum Serving {
    /// Its own config, which compiled.
    Good(Rc<Active>),
    /// Its config did not compile: the plugin's last good config at each
    /// request, else this pass-through.
    Fallback(Rc<Active>),
}

#[derive(Default)]
struct Root {
    serving: Option<(Serving, Slot)>,
}

/// Set the `sticky_canary_config_invalid` gauge (a host call only when it
/// changes).
fn gauge_invalid(invalid: bool) {
    if GAUGE_INVALID.with(|g| g.replace(Some(invalid))) != Some(invalid) {
        host::record(
            host::define_gauge(metrics::CONFIG_INVALID),
            u64::from(invalid),
        );
    }
}

/// Count a config load and say whether the delivered config is serving.
fn count_config(accepted: bool) {
    host::increment(host::define_counter(&metrics::config_total(accepted)));
    gauge_invalid(!accepted);
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
                if let Some(b) = &bytes {
                    host::set_shared_data(&shared_key(&name), b);
                }
                let slot = slot(&name);
                *slot.borrow_mut() = Some(active.clone());
                self.serving = Some((Serving::Good(active), slot));
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
                let slot = slot(&name);
                let had = slot.borrow().is_some();
                if !had {
                    // A new VM: the config the last accepting VM of this
                    // vm_id left in the proxy's shared data, if it compiles.
                    let earlier = host::shared_data(&shared_key(&name))
                        .and_then(|b| String::from_utf8(b).ok())
                        .and_then(|text| compile_json(&text).ok());
                    *slot.borrow_mut() = earlier.map(Active::new);
                }
                let outcome = match (had, slot.borrow().is_some()) {
                    (true, _) => "keeping the last good config",
                    (false, true) => "keeping the last good config (from an earlier VM)",
                    (false, false) => "no earlier config: passing every request through",
                };
                host::log(Level::Error, &format!("sticky-canary: {why}; {outcome}"));
                let pass = Active::new(Plugin::pass_through(plan.override_headers));
                self.serving = Some((Serving::Fallback(pass), slot));
                true
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let active = self.serving.as_ref().map(|(serving, slot)| match serving {
            Serving::Good(own) => {
                // This config serves: it is the plugin's last good one now
                // (again, when Envoy reused this instance for it).
                if !slot.borrow().as_ref().is_some_and(|a| Rc::ptr_eq(a, own)) {
                    *slot.borrow_mut() = Some(own.clone());
                }
                gauge_invalid(false);
                own.clone()
            }
            Serving::Fallback(pass) => {
                gauge_invalid(true);
                slot.borrow().clone().unwrap_or_else(|| pass.clone())
            }
        });
        Some(Box::new(Http {
            active,
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
        // If the host cannot give the headers (or gives a malformed map),
        // the request is handled as one with none. The headers are
        // borrowed from the map's bytes, not copied.
        let bytes = host::header_map_bytes(map::REQUEST_HEADERS).unwrap_or_default();
        let mut headers = headermap::Map::new();
        headermap::read_into(&bytes, &mut headers);
        self.request(&active, &headers);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.response();
        Action::Continue
    }
}

impl Http {
    /// The request phase over the request's headers.
    fn request(&mut self, active: &Active, headers: &[Header<'_>]) {
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
