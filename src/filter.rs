//! The proxy-wasm adapter: host calls in, [`crate::decide`] in the middle,
//! host calls out. Kept thin on purpose; all logic lives in the core.
//!
//! Host calls per request (each costs 1-2 us in Envoy): one read of the
//! request header map, one clock read, the route properties only if a route
//! entry needs them, then one `set` per route-override header (a `set`
//! replaces any copy the client sent). The response phase makes no call at
//! all unless a cookie is due or the mode is persistent (then
//! `upstream.address`, and only when another pod answered,
//! `upstream.request_attempt_count` and `:status`).

use crate::compile::{Plugin, Policy};
use crate::config::Mode;
use crate::decide::{self, Decision, Entropy, Reason, Request};
use crate::session::NONCE_LEN;
use crate::{compile_json, setcookie};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};
use std::rc::Rc;
use std::time::UNIX_EPOCH;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    std::panic::set_hook(Box::new(|info| {
        let _ = hostcalls::log(LogLevel::Critical, &format!("sticky-canary: panic: {info}"));
    }));
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

fn log(level: LogLevel, msg: &str) {
    let _ = hostcalls::log(level, msg);
}

/// Counters of one policy (global or a route entry).
struct PolicyMetrics {
    /// `[version][reason]`: rule, remembered, weight.
    decided: Vec<[u32; 3]>,
    cookie_issued: u32,
    cookie_invalid: u32,
    key_fallback: u32,
}

struct Shared {
    plugin: Plugin,
    /// Index 0: global; 1 + i: route entry i.
    metrics: Vec<Option<PolicyMetrics>>,
    passthrough: u32,
}

#[derive(Default)]
struct Root {
    shared: Option<Rc<Shared>>,
}

fn counter(name: &str) -> u32 {
    hostcalls::define_metric(MetricType::Counter, name).unwrap_or(u32::MAX)
}

fn bump(id: u32) {
    if id != u32::MAX {
        let _ = hostcalls::increment_metric(id, 1);
    }
}

fn define_policy_metrics(p: &Policy) -> PolicyMetrics {
    let base = format!("sticky_canary.{}", p.scope);
    PolicyMetrics {
        decided: p
            .versions
            .iter()
            .map(|v| {
                let m = |r: &str| counter(&format!("{base}.version.{}.{r}", v.name));
                [m("rule"), m("remembered"), m("weight")]
            })
            .collect(),
        cookie_issued: counter(&format!("{base}.cookie_issued")),
        cookie_invalid: counter(&format!("{base}.cookie_invalid")),
        key_fallback: counter(&format!("{base}.key_fallback")),
    }
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(b) => b.unwrap_or_default(),
            Err(e) => {
                log(
                    LogLevel::Error,
                    &format!("sticky-canary: cannot read the plugin config: {e:?}"),
                );
                return false;
            }
        };
        let Ok(text) = std::str::from_utf8(&bytes) else {
            log(
                LogLevel::Error,
                "sticky-canary: invalid plugin config: $: not UTF-8 text",
            );
            return false;
        };
        let plugin = match compile_json(text) {
            Ok(p) => p,
            Err(e) => {
                log(LogLevel::Error, &format!("sticky-canary: {e}"));
                return false;
            }
        };
        let mut metrics = vec![plugin.global.as_ref().map(define_policy_metrics)];
        metrics.extend(
            plugin
                .routes
                .iter()
                .map(|r| r.policy.as_ref().map(define_policy_metrics)),
        );
        log(
            LogLevel::Info,
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
        self.shared = Some(Rc::new(Shared {
            plugin,
            metrics,
            passthrough: counter("sticky_canary.passthrough"),
        }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            shared: self.shared.clone(),
            state: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct WasiEntropy;

impl Entropy for WasiEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        getrandom::getrandom(buf).is_ok()
    }
}

/// What the response phase needs from the request phase.
struct State {
    /// 0: global policy; 1 + i: route entry i.
    slot: usize,
    decision: Decision,
    now: u64,
    user_agent: Option<String>,
}

struct Http {
    shared: Option<Rc<Shared>>,
    state: Option<State>,
}

impl Context for Http {}

fn property(path: &[&str]) -> Option<String> {
    let bytes = hostcalls::get_property(path.to_vec()).ok().flatten()?;
    String::from_utf8(bytes).ok()
}

fn now_secs() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

fn set_header(name: &str, value: Option<&str>) {
    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value);
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return Action::Continue;
        };
        let Ok(headers) = hostcalls::get_map(MapType::HttpRequestHeaders) else {
            return Action::Continue;
        };
        let route_name = shared
            .plugin
            .needs_route_name
            .then(|| property(&["xds", "route_name"]))
            .flatten();
        let virtual_host = shared
            .plugin
            .needs_virtual_host
            .then(|| property(&["xds", "virtual_host_name"]))
            .flatten();
        let mut req = Request {
            headers: &headers,
            route_name: route_name.as_deref(),
            virtual_host: virtual_host.as_deref(),
            client_address: None,
            now: 0,
        };
        let Some(slot) = shared.plugin.select_slot(&req) else {
            // Untouched, except that a client's copy of our headers goes:
            // nothing a client sends may steer a route to a version.
            for name in &shared.plugin.override_headers {
                if req.header_present(name) {
                    set_header(name, None);
                }
            }
            bump(shared.passthrough);
            return Action::Continue;
        };
        let Some(policy) = shared.plugin.policy_at(slot) else {
            return Action::Continue;
        };
        let client_address = policy
            .needs_client_address()
            .then(|| property(&["source", "address"]))
            .flatten();
        req.client_address = client_address.as_deref();
        req.now = now_secs();
        let decision = decide::decide(policy, &req, &mut WasiEntropy);

        let version = policy
            .versions
            .get(decision.version)
            .map_or("", |v| v.name.as_str());
        set_header(&policy.headers.version, Some(version));
        set_header(
            &policy.headers.hash,
            std::str::from_utf8(&decision.hash).ok(),
        );
        // The endpoint header is ours alone: never let a client's copy
        // through. (`decide` only pins in persistent mode.)
        match decision.endpoint.as_deref() {
            Some(ep) => set_header(&policy.headers.endpoint, Some(ep)),
            None if req.header_present(&policy.headers.endpoint) => {
                set_header(&policy.headers.endpoint, None)
            }
            None => {}
        }

        if let Some(Some(m)) = shared.metrics.get(slot) {
            let r = match decision.reason {
                Reason::Rule(_) => 0,
                Reason::Remembered => 1,
                Reason::Weight => 2,
            };
            if let Some(ids) = m.decided.get(decision.version) {
                bump(ids[r]);
            }
            if decision.cookie_state == decide::CookieState::Invalid {
                bump(m.cookie_invalid);
            }
            if decision.key_fallback {
                bump(m.key_fallback);
            }
        }
        let user_agent = if policy.cookie.same_site_none_compat {
            req.header("user-agent").one().map(str::to_owned)
        } else {
            None
        };
        let now = req.now;
        self.state = Some(State {
            slot,
            decision,
            now,
            user_agent,
        });
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let (Some(shared), Some(state)) = (self.shared.clone(), self.state.as_mut()) else {
            return Action::Continue;
        };
        let Some(policy) = shared.plugin.policy_at(state.slot) else {
            return Action::Continue;
        };
        // Persistent mode: which endpoint answered, after how many attempts
        // (a retry means the pinned pod failed), and with what status. When
        // the pinned pod itself answered (the usual case) the other two
        // cannot change anything, so they are not read (2 host calls saved).
        let (address, attempts, status) = if policy.mode == Mode::Persistent {
            let address = property(&["upstream", "address"]);
            if address.is_some() && address == state.decision.session.endpoint {
                (address, None, None)
            } else {
                let attempts = hostcalls::get_property(vec!["upstream", "request_attempt_count"])
                    .ok()
                    .flatten()
                    .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
                    .map(u64::from_le_bytes);
                let status = hostcalls::get_map_value(MapType::HttpResponseHeaders, ":status")
                    .ok()
                    .flatten()
                    .and_then(|s| s.parse::<u16>().ok());
                (address, attempts, status)
            }
        } else {
            (None, None, None)
        };
        let upstream = decide::Upstream {
            address: address.as_deref(),
            attempts,
            status,
        };
        if !decide::on_upstream_response(policy, &mut state.decision, &upstream) {
            return Action::Continue;
        }
        // Never a duplicate: leave a response that already sets our cookie alone.
        let prefix = format!("{}=", policy.cookie.name);
        if let Ok(resp) = hostcalls::get_map(MapType::HttpResponseHeaders) {
            if resp
                .iter()
                .any(|(k, v)| k == "set-cookie" && v.trim_start().starts_with(&prefix))
            {
                return Action::Continue;
            }
        }
        let mut nonce = [0u8; NONCE_LEN];
        if !policy.keys.is_empty() && !WasiEntropy.fill(&mut nonce) {
            log(
                LogLevel::Warn,
                "sticky-canary: no randomness for the cookie nonce; cookie not renewed",
            );
            return Action::Continue;
        }
        let value = state
            .decision
            .session
            .encode(&policy.cookie.name, &policy.keys, &nonce);
        let header = setcookie::render(
            &policy.cookie,
            &value,
            state.now,
            state.user_agent.as_deref(),
        );
        let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, "set-cookie", &header);
        if let Some(Some(m)) = shared.metrics.get(state.slot) {
            bump(m.cookie_issued);
        }
        Action::Continue
    }
}
