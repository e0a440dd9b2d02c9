//! The filter's steps for one request, as plans the adapter carries out.
//!
//! Request phase: [`on_request`] picks the policy ([`Plugin::select`]),
//! decides ([`crate::decide()`]) and returns a [`RequestPlan`]: the request
//! headers to set and remove, the counters to move, and the [`Exchange`]
//! the response phase continues with. A request no policy covers passes
//! through, losing only clients' copies of the override headers.
//!
//! Response phase, on the [`Exchange`]: in persistent mode the adapter
//! reads which endpoint answered ([`Exchange::wants_upstream`],
//! [`Exchange::wants_attempts`]); [`Exchange::upstream_answered`] pins or
//! re-pins and says whether a `Set-Cookie` is due; [`Exchange::set_cookie`]
//! renders it (unless the response already sets the session cookie) and
//! names the session counter to move.
//!
//! The adapter only makes the host calls; the tests, the benchmarks and the
//! command-line tool run these same steps.

use crate::cookies;
use crate::decide::{decide, CookieState, Decision, PodHash};
use crate::metrics::{Counter, SessionEvent};
use crate::policy::{PinMode, Plugin, Policy};
use crate::request::Request;
use crate::rng::Entropy;
use crate::session::{MAX_ENDPOINT, NONCE_LEN};
use smallvec::SmallVec;
use std::rc::Rc;

/// What the adapter does to the request.
#[derive(Debug)]
pub struct RequestPlan<'p> {
    /// Request headers to set, replacing any copy the client sent.
    pub set: SmallVec<[(&'p str, HeaderValue<'p>); 3]>,
    /// Request headers to remove (clients' copies of ours).
    pub remove: Vec<&'p str>,
    /// Counters to add 1 to.
    pub count: SmallVec<[Counter; 3]>,
    /// Filter state to set (`"filter_state": true`), as property paths
    /// under Envoy's `wasm.` prefix and values.
    pub properties: Vec<(&'static str, Vec<u8>)>,
    /// The response phase's state; `None` when the request passed through.
    pub exchange: Option<Exchange>,
}

impl RequestPlan<'_> {
    /// Whether the adapter must ask the host to clear the route cache after
    /// carrying out this plan: whenever it sets or removes a request header.
    /// Routes match on the headers written here (`x-canary-version`,
    /// `x-sticky-hash`), and a removed client copy must not keep the route
    /// it chose; Envoy clears the cache by itself after a header change only
    /// for modules of ABI 0.2.1 or older, so the filter asks explicitly and
    /// does not depend on the SDK's ABI. A plan that changes nothing (a
    /// pass-through request without our headers) leaves the route alone.
    pub fn clears_route_cache(&self) -> bool {
        !self.set.is_empty() || !self.remove.is_empty()
    }
}

/// A request header value the plan sets: borrowed from the policy (a
/// version name), the sticky hash inline, or owned (an endpoint). Reads as
/// bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue<'p> {
    /// Borrowed from the compiled config.
    Borrowed(&'p [u8]),
    /// The 16 hex digits of a [`PodHash`].
    Hash(PodHash),
    /// Anything else.
    Owned(Vec<u8>),
}

impl std::ops::Deref for HeaderValue<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            HeaderValue::Borrowed(v) => v,
            HeaderValue::Hash(h) => h.as_bytes(),
            HeaderValue::Owned(v) => v,
        }
    }
}

impl AsRef<[u8]> for HeaderValue<'_> {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

/// Filter state keys (Envoy stores them as `wasm.<key>`: print them with
/// `%FILTER_STATE(wasm.sticky_canary.version:PLAIN)%`).
pub mod state {
    /// The decided version.
    pub const VERSION: &str = "sticky_canary.version";
    /// Why (the `reason` label of the decision counter).
    pub const REASON: &str = "sticky_canary.reason";
    /// What the response did to the session: issued, renewed, switched,
    /// repinned, or none.
    pub const SESSION: &str = "sticky_canary.session";
    /// The endpoint the session is pinned to (persistent mode), or none.
    pub const ENDPOINT: &str = "sticky_canary.endpoint";
}

/// What the adapter adds on the response besides the cookie.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ResponseExtras {
    /// Response headers to add (the debug header).
    pub headers: Vec<(String, String)>,
    /// Filter state to set.
    pub properties: Vec<(&'static str, Vec<u8>)>,
}

/// What the response phase needs from the request phase.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The policy that decided (the handle the response phase keeps).
    pub policy: Rc<Policy>,
    /// The decision.
    pub decision: Decision,
    /// The request's time, Unix seconds.
    pub now: u64,
    /// The User-Agent, kept only for `same_site_none_compat`.
    pub user_agent: Option<String>,
    /// The request came over HTTPS (for `"secure": "auto"`).
    pub https: bool,
}

/// The request phase: select the policy, decide, and plan the header
/// changes and counters.
pub fn on_request<'p>(
    plugin: &'p Plugin,
    req: &Request<'_>,
    rng: &mut dyn Entropy,
) -> RequestPlan<'p> {
    let Some(policy) = plugin.select(req) else {
        // Untouched, except that a client's copy of our headers goes:
        // nothing a client sends may steer a route to a version.
        return RequestPlan {
            set: SmallVec::new(),
            remove: plugin
                .override_headers
                .iter()
                .map(String::as_str)
                .filter(|h| req.header_present(h))
                .collect(),
            count: smallvec::smallvec![plugin.passthrough],
            properties: Vec::new(),
            exchange: None,
        };
    };
    let p: &'p Policy = policy;
    let decision = decide(p, req, rng);
    let version = p
        .versions
        .get(decision.version)
        .map_or("", |v| v.name.as_str());
    let mut set = SmallVec::new();
    set.push((
        p.headers.version.as_str(),
        HeaderValue::Borrowed(version.as_bytes()),
    ));
    set.push((p.headers.hash.as_str(), HeaderValue::Hash(decision.hash)));
    let mut remove = Vec::new();
    // The endpoint header is ours alone: never let a client's copy
    // through. (`decide` only pins in persistent mode.)
    match decision.endpoint.as_deref() {
        Some(ep) => set.push((
            p.headers.endpoint.as_str(),
            HeaderValue::Owned(ep.as_bytes().to_vec()),
        )),
        None if req.header_present(&p.headers.endpoint) => remove.push(p.headers.endpoint.as_str()),
        None => {}
    }
    let c = &p.counters;
    let count = [
        c.decision(decision.version, decision.reason),
        decision.rejected.and_then(|r| c.rejection(r)),
        c.key_fallback.filter(|_| decision.key_fallback),
    ]
    .into_iter()
    .flatten()
    .collect();
    let properties = if p.filter_state {
        vec![
            (state::VERSION, version.as_bytes().to_vec()),
            (state::REASON, decision.reason.label().as_bytes().to_vec()),
        ]
    } else {
        Vec::new()
    };
    RequestPlan {
        set,
        remove,
        count,
        properties,
        exchange: Some(Exchange::new(Rc::clone(policy), decision, req)),
    }
}

/// What the adapter read from the host about the upstream that answered.
#[derive(Debug, Clone, Copy, Default)]
pub struct Upstream<'a> {
    /// `upstream.address`: the endpoint (`ip:port`) that served the request.
    pub address: Option<&'a str>,
    /// `upstream.request_attempt_count`: upstream attempts Envoy made (1
    /// when nothing was retried).
    pub attempts: Option<u64>,
    /// The response status.
    pub status: Option<u16>,
}

/// A `Set-Cookie` to add to the response, and the counter it moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetCookie {
    /// The header value.
    pub header: String,
    /// What it did to the session.
    pub event: SessionEvent,
    /// The `sticky_canary_sessions_total` counter to add 1 to.
    pub count: Option<Counter>,
}

impl SetCookie {
    /// The cookie's value: what a browser will send back, between the
    /// header's `name=` and its first `;` (the name is a token and the
    /// value base64url, so neither holds `=` or `;`).
    pub fn value(&self) -> &str {
        let pair = self.header.split(';').next().unwrap_or("");
        pair.split_once('=').map_or("", |(_, v)| v)
    }
}

impl Exchange {
    /// The response phase's state for `decision`, made under `policy` for
    /// `req`: keeps what rendering the cookie needs from the request.
    pub fn new(policy: Rc<Policy>, decision: Decision, req: &Request<'_>) -> Exchange {
        let user_agent = policy
            .cookie
            .same_site_none_compat
            .then(|| req.header("user-agent").one().map(str::to_owned))
            .flatten();
        let https = policy.cookie.secure == crate::cookies::Secure::Auto && req.is_https();
        Exchange {
            policy,
            decision,
            now: req.now,
            user_agent,
            https,
        }
    }

    /// Persistent mode: the response phase needs `upstream.address`.
    pub fn wants_upstream(&self) -> bool {
        self.policy.mode == PinMode::Persistent
    }

    /// Given the address that answered, are the attempt count and status
    /// needed too? Not when the pinned pod itself answered (the usual
    /// case): they could change nothing (2 host calls saved).
    pub fn wants_attempts(&self, address: Option<&str>) -> bool {
        address.is_none() || address != self.decision.session.endpoint.as_deref()
    }

    /// Record the upstream that answered (persistent mode) and say whether
    /// a `Set-Cookie` is due.
    ///
    /// - No pin yet: pin the endpoint that answered.
    /// - Answered by another endpoint in a **single** attempt: Envoy's
    ///   `override_host` did not find the pinned endpoint in the version's
    ///   cluster (the pod is gone), so its fallback picked one: re-pin,
    ///   whatever `change_on_failure` says (ingress-nginx also re-picks a
    ///   pod that left the endpoint list).
    /// - Answered by another endpoint after a retry (or the attempt count
    ///   is unknown): the pinned pod failed; re-pin only with
    ///   `change_on_failure`.
    /// - A 5xx answer never moves or sets the pin: it says nothing good
    ///   about the pod that gave it.
    /// - Conflicting session copies: no pin either (see
    ///   [`CookieState::Conflicting`]).
    pub fn upstream_answered(&mut self, up: &Upstream<'_>) -> bool {
        let policy = &self.policy;
        let d = &mut self.decision;
        let conflicting = d.cookie_state == CookieState::Conflicting;
        if policy.mode == PinMode::Persistent && !conflicting && up.status.is_none_or(|s| s < 500) {
            if let Some(addr) = up
                .address
                .filter(|a| !a.is_empty() && a.len() <= MAX_ENDPOINT)
            {
                let pinned = d.session.endpoint.as_deref();
                let pin_gone = up.attempts == Some(1);
                if pinned != Some(addr)
                    && (pinned.is_none() || pin_gone || policy.change_on_failure)
                {
                    d.session.endpoint = Some(addr.to_owned());
                    d.write_cookie = true;
                }
            }
        }
        d.write_cookie
    }

    /// What to add on the response besides the cookie, once the cookie
    /// step is done (`cookie`: what [`Exchange::set_cookie`] gave, if it
    /// ran): the session event and pin in filter state, and the debug
    /// header. Empty unless the policy asks for them.
    pub fn extras(&self, cookie: Option<&SetCookie>) -> ResponseExtras {
        let p = &self.policy;
        let d = &self.decision;
        let event = cookie.map_or("none", |c| c.event.label());
        let mut out = ResponseExtras::default();
        if p.filter_state {
            out.properties
                .push((state::SESSION, event.as_bytes().to_vec()));
            if p.mode == PinMode::Persistent {
                let pin = d.session.endpoint.as_deref().unwrap_or("none");
                out.properties
                    .push((state::ENDPOINT, pin.as_bytes().to_vec()));
            }
        }
        if let Some(name) = &p.debug_header {
            let mut v = format!(
                "route={}; version={}; reason={}",
                p.scope,
                p.versions.get(d.version).map_or("", |v| v.name.as_str()),
                d.reason.label()
            );
            if let crate::decide::Basis::Rule(i) = d.basis {
                v.push_str(&format!("; rule={i}"));
            }
            v.push_str(&format!("; cookie={}", d.cookie_state.label()));
            if let Some(r) = d.rejected {
                v.push_str(&format!("; rejected={}", r.label()));
            }
            v.push_str(&format!("; session={event}"));
            if p.mode == PinMode::Persistent {
                let pinned = if d.session.endpoint.is_some() {
                    "yes"
                } else {
                    "no"
                };
                v.push_str(&format!("; pinned={pinned}"));
            }
            if d.key_fallback {
                v.push_str("; key=fallback");
            }
            out.headers.push((name.clone(), v));
        }
        out
    }

    /// Does [`Exchange::set_cookie`] need a nonce (sealed cookies)?
    pub fn needs_nonce(&self) -> bool {
        !self.policy.seal_keys.is_empty()
    }

    /// The `Set-Cookie` to add, once [`Exchange::upstream_answered`] said
    /// one is due. `existing` are the response's own `Set-Cookie` values:
    /// a response that already sets the session cookie is left alone (never
    /// a duplicate). `nonce` must be fresh random bytes when
    /// [`Exchange::needs_nonce`].
    pub fn set_cookie<'v>(
        &self,
        existing: impl IntoIterator<Item = &'v [u8]>,
        nonce: &[u8; NONCE_LEN],
    ) -> Option<SetCookie> {
        let p = &self.policy;
        let name = p.cookie.name.as_bytes();
        let ours = |v: &[u8]| {
            let v = v.trim_ascii_start();
            v.len() > name.len() && v.starts_with(name) && v.get(name.len()) == Some(&b'=')
        };
        if existing.into_iter().any(ours) {
            return None;
        }
        let d = &self.decision;
        let header = cookies::render_with(
            &p.cookie,
            |out| {
                d.session
                    .encode_into(&p.cookie.name, &p.seal_keys, nonce, out)
            },
            self.now,
            self.user_agent.as_deref(),
            self.https,
        );
        let event = match &d.incoming {
            None => SessionEvent::Issued,
            Some(s) if s.version_id != d.session.version_id => SessionEvent::Switched,
            Some(s) if s.endpoint != d.session.endpoint => SessionEvent::Repinned,
            Some(_) => SessionEvent::Renewed,
        };
        Some(SetCookie {
            header,
            event,
            count: p.counters.session(d.version, event),
        })
    }
}
