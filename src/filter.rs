//! The proxy-wasm adapter: host calls in, [`crate::decide`] in the middle,
//! host calls out. Kept thin on purpose; all logic lives in the core.
//!
//! Every host call goes through [`crate::host`], which never panics and
//! reads host data as bytes: a header that is not UTF-8 counts as absent
//! in the core, and the request is served.
//!
//! Host calls per request (each costs 1-2 us in Envoy): one read of the
//! request header map, one clock read, the route properties only if a route
//! entry needs them, then one `set` per route-override header (a `set`
//! replaces any copy the client sent). The response phase makes no call at
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

use crate::compile::{invalid_plan, Plugin, Policy};
use crate::config::Mode;
use crate::decide::{self, Decision, Entropy, Reason, Request};
use crate::host::{self, map, Level};
use crate::session::NONCE_LEN;
use crate::{compile_json, setcookie};
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

/// Counters of one policy (global or a route entry).
struct PolicyMetrics {
    /// `[version][reason]`: rule, remembered, weight.
    decided: Vec<[Option<u32>; 3]>,
    cookie_issued: Option<u32>,
    cookie_invalid: Option<u32>,
    key_fallback: Option<u32>,
}

/// A compiled plugin with its metric ids, shared by the root and every
/// request of one plugin instance.
struct Active {
    plugin: Plugin,
    /// Index 0: global; 1 + i: route entry i.
    metrics: Vec<Option<PolicyMetrics>>,
    passthrough: Option<u32>,
}

thread_local! {
    /// The last config each plugin (by name) had accepted in this VM, so an
    /// invalid update keeps it serving.
    static LAST_GOOD: RefCell<HashMap<Vec<u8>, Rc<Active>>> = RefCell::new(HashMap::new());
}

#[derive(Default)]
struct Root {
    active: Option<Rc<Active>>,
}

fn define_policy_metrics(p: &Policy) -> PolicyMetrics {
    let base = format!("sticky_canary.{}", p.scope);
    PolicyMetrics {
        decided: p
            .versions
            .iter()
            .map(|v| {
                let m = |r: &str| host::define_counter(&format!("{base}.version.{}.{r}", v.name));
                [m("rule"), m("remembered"), m("weight")]
            })
            .collect(),
        cookie_issued: host::define_counter(&format!("{base}.cookie_issued")),
        cookie_invalid: host::define_counter(&format!("{base}.cookie_invalid")),
        key_fallback: host::define_counter(&format!("{base}.key_fallback")),
    }
}

fn activate(plugin: Plugin) -> Rc<Active> {
    let mut metrics = vec![plugin.global.as_ref().map(define_policy_metrics)];
    metrics.extend(
        plugin
            .routes
            .iter()
            .map(|r| r.policy.as_ref().map(define_policy_metrics)),
    );
    Rc::new(Active {
        plugin,
        metrics,
        passthrough: host::define_counter("sticky_canary.passthrough"),
    })
}

/// Count a config load and say whether the delivered config is serving.
fn count_config(accepted: bool) {
    let result = if accepted { "accepted" } else { "refused" };
    host::increment(host::define_counter(&format!(
        "sticky_canary_config_total.result=.={result};.;"
    )));
    host::record(
        host::define_gauge("sticky_canary_config_invalid"),
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
                let active = activate(plugin);
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
                        self.active = Some(activate(Plugin::pass_through(plan.override_headers)));
                    }
                }
                true
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            active: self.active.clone(),
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
    /// The request came over HTTPS (read only for `"secure": "auto"`).
    https: bool,
}

struct Http {
    active: Option<Rc<Active>>,
    state: Option<State>,
}

impl Context for Http {}

fn set_header(name: &str, value: Option<&[u8]>) {
    host::set_header(map::REQUEST_HEADERS, name, value);
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(active) = self.active.clone() else {
            return Action::Continue;
        };
        // If the host cannot give the headers, the request is handled as
        // one with none: pass-through policies still strip, and a policy
        // decides for a new user.
        let headers = host::header_pairs(map::REQUEST_HEADERS).unwrap_or_default();
        let plugin = &active.plugin;
        let route_name = plugin
            .needs_route_name
            .then(|| host::property_text(&["xds", "route_name"]))
            .flatten();
        let virtual_host = plugin
            .needs_virtual_host
            .then(|| host::property_text(&["xds", "virtual_host_name"]))
            .flatten();
        let mut req = Request {
            headers: &headers,
            route_name: route_name.as_deref(),
            virtual_host: virtual_host.as_deref(),
            client_address: None,
            now: 0,
        };
        let Some(slot) = plugin.select_slot(&req) else {
            // Untouched, except that a client's copy of our headers goes:
            // nothing a client sends may steer a route to a version.
            for name in &plugin.override_headers {
                if req.header_present(name) {
                    set_header(name, None);
                }
            }
            host::increment(active.passthrough);
            return Action::Continue;
        };
        let Some(policy) = plugin.policy_at(slot) else {
            return Action::Continue;
        };
        let client_address = policy
            .needs_client_address()
            .then(|| host::property_text(&["source", "address"]))
            .flatten();
        req.client_address = client_address.as_deref();
        req.now = host::now_secs();
        let decision = decide::decide(policy, &req, &mut WasiEntropy);

        let version = policy
            .versions
            .get(decision.version)
            .map_or("", |v| v.name.as_str());
        set_header(&policy.headers.version, Some(version.as_bytes()));
        set_header(&policy.headers.hash, Some(&decision.hash));
        // The endpoint header is ours alone: never let a client's copy
        // through. (`decide` only pins in persistent mode.)
        match decision.endpoint.as_deref() {
            Some(ep) => set_header(&policy.headers.endpoint, Some(ep.as_bytes())),
            None if req.header_present(&policy.headers.endpoint) => {
                set_header(&policy.headers.endpoint, None)
            }
            None => {}
        }

        if let Some(Some(m)) = active.metrics.get(slot) {
            let r = match decision.reason {
                Reason::Rule(_) => 0,
                Reason::Remembered => 1,
                Reason::Weight => 2,
            };
            if let Some(ids) = m.decided.get(decision.version) {
                host::increment(ids[r]);
            }
            if matches!(
                decision.cookie_state,
                decide::CookieState::Invalid | decide::CookieState::Conflicting
            ) {
                host::increment(m.cookie_invalid);
            }
            if decision.key_fallback {
                host::increment(m.key_fallback);
            }
        }
        let user_agent = if policy.cookie.same_site_none_compat {
            req.header("user-agent").one().map(str::to_owned)
        } else {
            None
        };
        let https = policy.cookie.secure == crate::compile::Secure::Auto && req.is_https();
        let now = req.now;
        self.state = Some(State {
            slot,
            decision,
            now,
            user_agent,
            https,
        });
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let (Some(active), Some(state)) = (self.active.clone(), self.state.as_mut()) else {
            return Action::Continue;
        };
        let Some(policy) = active.plugin.policy_at(state.slot) else {
            return Action::Continue;
        };
        // Persistent mode: which endpoint answered, after how many attempts
        // (a retry means the pinned pod failed), and with what status. When
        // the pinned pod itself answered (the usual case) the other two
        // cannot change anything, so they are not read (2 host calls saved).
        let (address, attempts, status) = if policy.mode == Mode::Persistent {
            let address = host::property_text(&["upstream", "address"]);
            if address.is_some() && address == state.decision.session.endpoint {
                (address, None, None)
            } else {
                let attempts = host::property(&["upstream", "request_attempt_count"])
                    .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
                    .map(u64::from_le_bytes);
                let status = host::header(map::RESPONSE_HEADERS, ":status")
                    .and_then(|s| std::str::from_utf8(&s).ok()?.parse::<u16>().ok());
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
        if let Some(resp) = host::header_pairs(map::RESPONSE_HEADERS) {
            if resp.iter().any(|(k, v)| {
                k.as_slice() == b"set-cookie" && v.trim_ascii_start().starts_with(prefix.as_bytes())
            }) {
                return Action::Continue;
            }
        }
        let mut nonce = [0u8; NONCE_LEN];
        if !policy.keys.is_empty() && !WasiEntropy.fill(&mut nonce) {
            host::log(
                Level::Warn,
                "sticky-canary: no randomness for the cookie nonce; cookie not renewed",
            );
            return Action::Continue;
        }
        let value = state
            .decision
            .session
            .encode(&policy.cookie.name, &policy.keys, &nonce);
        let header = setcookie::render_for(
            &policy.cookie,
            &value,
            state.now,
            state.user_agent.as_deref(),
            state.https,
        );
        host::add_header(map::RESPONSE_HEADERS, "set-cookie", header.as_bytes());
        if let Some(Some(m)) = active.metrics.get(state.slot) {
            host::increment(m.cookie_issued);
        }
        Action::Continue
    }
}
