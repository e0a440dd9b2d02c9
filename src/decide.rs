//! The per-request decision: which policy, which version, which pod, which
//! cookie. Plain Rust, no host calls: the adapter copies request data into a
//! [`Request`] and applies the [`Decision`].

use crate::compile::{KeySource, Matcher, Plugin, Policy, RouteMatch, Source};
use crate::config::Mode;
use crate::hash;
use crate::session::{Opened, Origin, Session, MAX_ENDPOINT};
use std::net::IpAddr;

/// Longest header, cookie or query value a rule or key source will look at;
/// longer values are treated as absent.
pub const MAX_VALUE: usize = 1024;

/// One request header as the host gives it: lowercase name and value, both
/// as bytes (Envoy passes bytes that are not UTF-8 through).
pub type Header = (Vec<u8>, Vec<u8>);

/// What the adapter read from the host for one request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// All request headers, lowercase names, as Envoy lists them (pseudo
    /// headers such as `:path` and `:authority` included). A name or value
    /// that is not UTF-8 counts as absent everywhere.
    pub headers: &'a [Header],
    /// `xds.route_name`, when some route entry needs it.
    pub route_name: Option<&'a str>,
    /// `xds.virtual_host_name`, when some route entry needs it.
    pub virtual_host: Option<&'a str>,
    /// `source.address` (`ip:port`), when the key comes from the client IP.
    pub client_address: Option<&'a str>,
    /// Current time, Unix seconds.
    pub now: u64,
}

/// A lookup that distinguishes absent from ambiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// Not there (or too long to be genuine, or not UTF-8).
    Absent,
    /// Exactly one value.
    One(&'a str),
    /// Sent more than once: treated like absent by callers.
    Many,
}

impl<'a> Lookup<'a> {
    /// The single value, if there is exactly one.
    pub fn one(self) -> Option<&'a str> {
        match self {
            Lookup::One(v) => Some(v),
            _ => None,
        }
    }

    fn push(self, v: &'a str) -> Self {
        match self {
            Lookup::Absent => Lookup::One(v),
            _ => Lookup::Many,
        }
    }
}

/// Most copies of the session cookie the filter will look at; a request
/// with more counts as having no valid session (bounds the work an
/// attacker can ask for: each sealed copy is one AEAD open).
pub const MAX_SESSION_COPIES: usize = 8;

fn name_is(k: &[u8], name: &str) -> bool {
    k.eq_ignore_ascii_case(name.as_bytes())
}

impl<'a> Request<'a> {
    /// A header by lowercase name; values over [`MAX_VALUE`] or not UTF-8
    /// count as absent.
    pub fn header(&self, name: &str) -> Lookup<'a> {
        match self.header_any_length(name) {
            Lookup::One(v) if v.len() > MAX_VALUE => Lookup::Absent,
            other => other,
        }
    }

    /// Was this header sent at all (any number of times, any length or
    /// encoding)?
    pub fn header_present(&self, name: &str) -> bool {
        self.headers.iter().any(|(k, _)| name_is(k, name))
    }

    /// A header by lowercase name, whatever its length (`:path` may be
    /// long). Copies that are not UTF-8 are skipped.
    fn header_any_length(&self, name: &str) -> Lookup<'a> {
        let mut out = Lookup::Absent;
        for (k, v) in self.headers {
            if name_is(k, name) {
                if let Ok(v) = std::str::from_utf8(v) {
                    out = out.push(v);
                }
            }
        }
        out
    }

    /// Every value of a cookie, across every `cookie` header (HTTP/1 sends
    /// one, HTTP/2 may send crumbs), in order. A `name=value` piece that is
    /// not UTF-8 is skipped; the other cookies of the header still count.
    pub fn cookie_values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a str> + 's {
        self.headers
            .iter()
            .filter(|(k, _)| name_is(k, "cookie"))
            .flat_map(|(_, v)| crate::setcookie::parse_cookie_bytes(v))
            .filter(move |(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    /// A cookie by name, across every `cookie` header (any length).
    pub fn cookie(&self, name: &str) -> Lookup<'a> {
        // No length limit here: a rule compares with a short value, and an
        // oversized session cookie must count as invalid, not absent.
        self.cookie_values(name)
            .fold(Lookup::Absent, |out, v| out.push(v))
    }

    /// A query parameter by name, percent-decoded.
    pub fn query(&self, name: &str) -> Option<String> {
        let path = self.header_any_length(":path").one()?;
        let path = path.split_once('#').map_or(path, |(a, _)| a);
        let q = path.split_once('?')?.1;
        let mut found: Option<String> = None;
        for pair in q.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if percent_decode(k).as_deref() == Some(name) {
                if found.is_some() {
                    return None; // duplicated: ambiguous, treated as absent
                }
                found = Some(percent_decode(v)?);
            }
        }
        found.filter(|v| v.len() <= MAX_VALUE)
    }

    /// Did the request come over HTTPS? `:scheme` (Envoy sets it from the
    /// downstream connection) or `x-forwarded-proto` (set by Envoy at the
    /// edge, or by a trusted proxy in front) is `https`.
    pub fn is_https(&self) -> bool {
        [":scheme", "x-forwarded-proto"].iter().any(|h| {
            self.header(h)
                .one()
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
        })
    }

    fn path(&self) -> &'a str {
        let p = self.header_any_length(":path").one().unwrap_or("/");
        p.split(['?', '#']).next().unwrap_or(p)
    }

    fn authority(&self) -> Option<&'a str> {
        let a = self
            .header(":authority")
            .one()
            .or_else(|| self.header("host").one())?;
        // Strip the port (IPv6 literals keep their brackets).
        Some(match a.rfind(':') {
            Some(i) if !a[i..].contains(']') => &a[..i],
            _ => a,
        })
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                // from_str_radix alone would accept a sign: "%+a".
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// `*` wildcard match (ASCII, pattern already lowercase).
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti].to_ascii_lowercase() {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

impl RouteMatch {
    /// Does this entry match the request?
    pub fn matches(&self, req: &Request<'_>) -> bool {
        let any = |list: &[String], v: Option<&str>| {
            list.is_empty() || v.is_some_and(|v| list.iter().any(|x| x == v))
        };
        any(&self.route_names, req.route_name)
            && any(&self.virtual_hosts, req.virtual_host)
            && (self.authorities.is_empty()
                || req
                    .authority()
                    .is_some_and(|a| self.authorities.iter().any(|p| glob(p, a))))
            && (self.path_prefixes.is_empty() || {
                let path = req.path();
                self.path_prefixes
                    .iter()
                    .any(|p| path.starts_with(p.as_str()))
            })
    }
}

impl Plugin {
    /// The policy for a request: the first route entry that matches, else
    /// the global policy. `None`: pass the request through untouched.
    pub fn select(&self, req: &Request<'_>) -> Option<&Policy> {
        self.select_slot(req).and_then(|slot| self.policy_at(slot))
    }

    /// Like [`Plugin::select`], as a slot the response phase can keep:
    /// 0 is the global policy, `1 + i` route entry `i`.
    pub fn select_slot(&self, req: &Request<'_>) -> Option<usize> {
        let slot = match self.routes.iter().position(|e| e.matcher.matches(req)) {
            Some(i) => i + 1,
            None => 0,
        };
        self.policy_at(slot).map(|_| slot)
    }

    /// The policy in `slot` (see [`Plugin::select_slot`]).
    pub fn policy_at(&self, slot: usize) -> Option<&Policy> {
        match slot {
            0 => self.global.as_ref(),
            n => self.routes.get(n - 1)?.policy.as_ref(),
        }
    }
}

/// Why a version was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Rule number `n` matched.
    Rule(usize),
    /// The version remembered in the session cookie.
    Remembered,
    /// The user's weighted bucket.
    Weight,
}

impl Reason {
    /// Short label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Rule(_) => "rule",
            Reason::Remembered => "remembered",
            Reason::Weight => "weight",
        }
    }
}

/// What the incoming session cookie was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieState {
    /// No session cookie.
    Absent,
    /// Valid.
    Valid,
    /// Present but garbled, forged, expired, for another key, or sent in
    /// more than [`MAX_SESSION_COPIES`] copies.
    Invalid,
    /// Several copies that open but disagree (a second cookie planted
    /// beside the user's own, or copies left by a Path or Domain change):
    /// none is trusted. No remembered version, no pin, no `Set-Cookie`;
    /// the user is placed by weight with a key derived from every copy, so
    /// the placement is stable while the copies last and no copy picks it.
    Conflicting,
}

/// The decision for one request.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Index of the chosen version.
    pub version: usize,
    /// Why.
    pub reason: Reason,
    /// Sticky-hash header value.
    pub hash: [u8; 16],
    /// Endpoint to request through the endpoint header (persistent mode).
    pub endpoint: Option<String>,
    /// The session to carry on the response.
    pub session: Session,
    /// Whether a `Set-Cookie` is due (the response phase may add reasons).
    pub write_cookie: bool,
    /// The incoming cookie.
    pub cookie_state: CookieState,
    /// The configured key source was missing; a generated key was used.
    pub key_fallback: bool,
}

/// Randomness for new session keys and cookie nonces.
pub trait Entropy {
    /// Fill `buf` with random bytes; `false` if no randomness is available.
    fn fill(&mut self, buf: &mut [u8]) -> bool;
}

/// An IP address as a client-IP key: `1.2.3.4`, `1.2.3.4:port`, `::1`,
/// `[::1]` or `[::1]:port`; an IPv4-mapped IPv6 address is its IPv4
/// address. Anything else (`unknown`, `_hidden` obfuscated identifiers,
/// host names) is not an address.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if s.len() > 64 {
        return None;
    }
    let bare = if let Some(rest) = s.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        if !(after.is_empty() || is_port(after.strip_prefix(':')?)) {
            return None;
        }
        ip
    } else {
        match s.rsplit_once(':') {
            // One colon: IPv4 with a port. More: a bare IPv6 address.
            Some((ip, port)) if !ip.contains(':') && is_port(port) => ip,
            _ => s,
        }
    };
    bare.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// The client address a `client_ip` key is made from: Envoy's
/// `source.address` (hops 0) or the `hops`-th X-Forwarded-For entry from
/// the right. `None` when there is no such entry or it is not an address.
fn client_ip(req: &Request<'_>, hops: u32) -> Option<IpAddr> {
    if hops == 0 {
        return parse_ip(req.client_address?);
    }
    // X-Forwarded-For, possibly over several headers: entries in order.
    let entries: Vec<&str> = req
        .headers
        .iter()
        .filter(|(k, _)| name_is(k, "x-forwarded-for"))
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let n = hops as usize;
    let entry = entries.len().checked_sub(n).and_then(|i| entries.get(i))?;
    parse_ip(entry)
}

fn rule_hits(policy: &Policy, req: &Request<'_>) -> Option<(usize, usize)> {
    for (i, rule) in policy.rules.iter().enumerate() {
        let value: Option<std::borrow::Cow<'_, str>> = match &rule.source {
            Source::Header(h) => req.header(h).one().map(Into::into),
            Source::Cookie(c) => req
                .cookie(c)
                .one()
                .filter(|v| v.len() <= MAX_VALUE)
                .map(Into::into),
            Source::Query(q) => req.query(q).map(Into::into),
        };
        let Some(value) = value else { continue };
        let target = match &rule.matcher {
            Matcher::Exact(want) => (value == want.as_str()).then_some(rule.version),
            Matcher::Regex(re) => re.is_match(&value).then_some(rule.version),
            Matcher::Sentinel => match value.as_ref() {
                "always" => Some(rule.version),
                "never" => Some(0),
                _ => None,
            },
        };
        if let Some(v) = target {
            return Some((i, v));
        }
    }
    None
}

/// The version that owns `bucket` given the weights. Non-default versions
/// take consecutive ranges from bucket 0 in config order; the default
/// version takes the rest. Raising the last-listed version's weight thus
/// moves exactly the new buckets to it, and nobody back.
pub fn version_for_bucket(weights: &[u32], bucket: u32) -> usize {
    let mut upper = 0u32;
    for (i, w) in weights.iter().enumerate().skip(1) {
        upper = upper.saturating_add(*w);
        if bucket < upper {
            return i;
        }
    }
    0
}

/// Decide version, pod and session for a request under `policy`.
pub fn decide(policy: &Policy, req: &Request<'_>, rng: &mut dyn Entropy) -> Decision {
    let now = req.now;
    // The session key from the configured source, if any.
    let external: Option<[u8; 16]> = match &policy.key {
        KeySource::Cookie => None,
        KeySource::Header(h) => req
            .header(h)
            .one()
            .filter(|v| !v.is_empty())
            .map(|v| hash::derive_key(v.as_bytes())),
        KeySource::Query(q) => req
            .query(q)
            .filter(|v| !v.is_empty())
            .map(|v| hash::derive_key(v.as_bytes())),
        KeySource::ClientIp { hops } => {
            client_ip(req, *hops).map(|ip| hash::derive_key(ip.to_string().as_bytes()))
        }
    };
    let key_fallback = policy.key != KeySource::Cookie && external.is_none();
    let read = read_session(policy, req, external);
    let (incoming, cookie_state, stale_key) = (read.session, read.state, read.stale_key);
    let key = match (external, &incoming, read.conflict_key) {
        (Some(k), _, _) => k,
        (None, Some(s), _) => s.key,
        (None, None, Some(k)) => k,
        (None, None, None) => new_key(rng, req),
    };

    let weights = policy.weights_at(now);
    let remembered = incoming.as_ref().filter(|_| policy.sticky).and_then(|s| {
        let v = policy.version_by_id(s.version_id)?;
        let w = weights.get(v).copied().unwrap_or(0);
        match (s.origin, w) {
            // A canary at weight 0: drain (its users stay until their cookie
            // expires) or roll back (they are reassigned now). The default
            // version never drains: at weight 0 every canary together holds
            // the whole total, and weight = total receives every user.
            (_, 0) if v != 0 && policy.rollback => None,
            (_, 0) if v != 0 => Some((v, s.origin)),
            (Origin::Rule, _) => Some((v, Origin::Rule)),
            // Weight-assigned users follow their bucket as weights change.
            (Origin::Weight, _) => None,
        }
    });

    let (version, reason, origin) = if let Some((i, v)) = rule_hits(policy, req) {
        (v, Reason::Rule(i), Origin::Rule)
    } else if let Some((v, origin)) = remembered {
        (v, Reason::Remembered, origin)
    } else {
        let b = hash::bucket(&policy.seed, &key, policy.total);
        (
            version_for_bucket(&weights, b),
            Reason::Weight,
            Origin::Weight,
        )
    };

    let version_id = policy.versions.get(version).map_or(0, |v| v.id);
    // The pinned endpoint only counts for the version it was recorded for.
    let endpoint = match (&incoming, policy.mode) {
        (Some(s), Mode::Persistent) if s.version_id == version_id => s.endpoint.clone(),
        _ => None,
    };
    let renew_at =
        u64::from(incoming.as_ref().map_or(0, |s| s.expiry)).saturating_sub(policy.ttl / 2);
    // A user draining off a weight-0 canary stays until the cookie expires:
    // the session is never renewed while draining.
    let draining = reason == Reason::Remembered && weights.get(version).copied() == Some(0);
    let session = Session {
        key,
        version_id,
        origin,
        expiry: u32::try_from(now.saturating_add(policy.ttl)).unwrap_or(u32::MAX),
        endpoint: endpoint.clone(),
    };
    let write_cookie = match &incoming {
        // Conflicting copies: writing ours would change the set of copies
        // and so the derived key; the placement stays stable without it.
        None => cookie_state != CookieState::Conflicting,
        // (The key cannot differ: a cookie for another key was dropped above.)
        Some(s) => {
            stale_key
                || s.version_id != session.version_id
                || s.origin != session.origin
                || s.endpoint != session.endpoint
                || (now > renew_at && !draining)
                // The ttl was shortened since the cookie was issued.
                || u64::from(s.expiry) > now.saturating_add(policy.ttl)
        }
    };
    // Keep the old expiry when nothing else changes (so the value is
    // stable) and while draining (capped by a shortened ttl).
    let session = match &incoming {
        Some(s) if !write_cookie || draining => Session {
            expiry: s.expiry.min(session.expiry),
            ..session
        },
        _ => session,
    };
    Decision {
        version,
        reason,
        hash: hash::pod_hash(&key),
        endpoint,
        session,
        write_cookie,
        cookie_state,
        key_fallback,
    }
}

/// What the session cookie copies of a request amount to.
struct SessionRead {
    session: Option<Session>,
    state: CookieState,
    stale_key: bool,
    /// With conflicting copies: the key they share, or one derived from all
    /// of their keys.
    conflict_key: Option<[u8; 16]>,
}

/// Open every copy of the session cookie and decide what to trust.
///
/// - No copy: absent. No copy that opens: invalid (garbage beside nothing).
/// - Copies that open and agree on key, version, origin and pin (the same
///   cookie twice, or copies of one session issued at different times):
///   that session, with the latest expiry. Copies that do not open beside
///   them are ignored.
/// - Copies that open but disagree: conflicting (see
///   [`CookieState::Conflicting`]).
/// - With a key source, a copy made for another identity does not count.
/// - More than [`MAX_SESSION_COPIES`] copies: invalid, none is opened.
fn read_session(policy: &Policy, req: &Request<'_>, external: Option<[u8; 16]>) -> SessionRead {
    let name = policy.cookie.name.as_str();
    let mut seen = 0usize;
    let mut valid: Vec<(Session, bool)> = Vec::new();
    for value in req.cookie_values(name) {
        seen += 1;
        if seen > MAX_SESSION_COPIES {
            return SessionRead {
                session: None,
                state: CookieState::Invalid,
                stale_key: false,
                conflict_key: None,
            };
        }
        if let Opened::Valid { session, stale_key } =
            Session::open(value, name, &policy.keys, req.now)
        {
            if external.is_none_or(|k| k == session.key) {
                valid.push((session, stale_key));
            }
        }
    }
    let state = match (seen, valid.len()) {
        (0, _) => CookieState::Absent,
        (_, 0) => CookieState::Invalid,
        _ => CookieState::Valid,
    };
    let same = |a: &Session, b: &Session| {
        a.key == b.key
            && a.version_id == b.version_id
            && a.origin == b.origin
            && a.endpoint == b.endpoint
    };
    let Some(first_copy) = valid.first() else {
        return SessionRead {
            session: None,
            state,
            stale_key: false,
            conflict_key: None,
        };
    };
    if valid.iter().all(|(s, _)| same(s, &first_copy.0)) {
        let best = valid
            .iter()
            .max_by_key(|(s, _)| s.expiry)
            .unwrap_or(first_copy);
        return SessionRead {
            session: Some(best.0.clone()),
            state,
            stale_key: best.1,
            conflict_key: None,
        };
    }
    let mut keys: Vec<[u8; 16]> = valid.iter().map(|(s, _)| s.key).collect();
    keys.sort_unstable();
    keys.dedup();
    let conflict_key = match keys.as_slice() {
        [one] => *one,
        many => hash::derive_key(&many.concat()),
    };
    SessionRead {
        session: None,
        state: CookieState::Conflicting,
        stale_key: false,
        conflict_key: Some(conflict_key),
    }
}

fn new_key(rng: &mut dyn Entropy, req: &Request<'_>) -> [u8; 16] {
    let mut k = [0u8; 16];
    if !rng.fill(&mut k) {
        // No randomness: derive from what is unique to this request.
        let id = req.header("x-request-id").one().unwrap_or("");
        k = hash::derive_key(format!("{id}/{}", req.now).as_bytes());
    }
    k
}

/// Response phase: learn the endpoint that served the request (persistent
/// mode) and report whether a `Set-Cookie` is due.
///
/// Same as [`on_upstream_response`] with only the address known: a served
/// endpoint other than the pin counts as a failover.
pub fn on_response(policy: &Policy, d: &mut Decision, upstream: Option<&str>) -> bool {
    on_upstream_response(
        policy,
        d,
        &Upstream {
            address: upstream,
            ..Upstream::default()
        },
    )
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

/// Response phase (persistent mode): record the endpoint that served the
/// request in the session and report whether a `Set-Cookie` is due.
///
/// - No pin yet: pin the endpoint that answered.
/// - Answered by another endpoint in a **single** attempt: Envoy's
///   `override_host` did not find the pinned endpoint in the version's
///   cluster (the pod is gone), so its fallback picked one: re-pin, whatever
///   `change_on_failure` says (ingress-nginx also re-picks a pod that left
///   the endpoint list).
/// - Answered by another endpoint after a retry (or the attempt count is
///   unknown): the pinned pod failed; re-pin only with `change_on_failure`.
/// - A 5xx answer never moves or sets the pin: it says nothing good about
///   the pod that gave it.
pub fn on_upstream_response(policy: &Policy, d: &mut Decision, up: &Upstream<'_>) -> bool {
    // Conflicting session copies: no pin either (see `CookieState`).
    let conflicting = d.cookie_state == CookieState::Conflicting;
    if policy.mode == Mode::Persistent && !conflicting && up.status.is_none_or(|s| s < 500) {
        if let Some(addr) = up
            .address
            .filter(|a| !a.is_empty() && a.len() <= MAX_ENDPOINT)
        {
            let pinned = d.session.endpoint.as_deref();
            let pin_gone = up.attempts == Some(1);
            if pinned != Some(addr) && (pinned.is_none() || pin_gone || policy.change_on_failure) {
                d.session.endpoint = Some(addr.to_owned());
                d.write_cookie = true;
            }
        }
    }
    d.write_cookie
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches() {
        assert!(glob("*.example.com", "a.example.com"));
        assert!(glob("*.example.com", "A.B.Example.COM"));
        assert!(!glob("*.example.com", "example.com"));
        assert!(glob("api.*", "api.test"));
        assert!(glob("*", "anything"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("v%32+x").as_deref(), Some("v2 x"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%+a"), None);
        assert_eq!(percent_decode("%-1"), None);
        assert_eq!(percent_decode("%2b").as_deref(), Some("+"));
    }

    #[test]
    fn client_ip_keys_are_addresses_only() {
        let ip = |s: &str| parse_ip(s).map(|a| a.to_string());
        assert_eq!(ip("203.0.113.9").as_deref(), Some("203.0.113.9"));
        assert_eq!(ip("203.0.113.9:4711").as_deref(), Some("203.0.113.9"));
        assert_eq!(ip(" 203.0.113.9 ").as_deref(), Some("203.0.113.9"));
        assert_eq!(ip("2001:db8::1").as_deref(), Some("2001:db8::1"));
        assert_eq!(ip("2001:DB8:0::1").as_deref(), Some("2001:db8::1"));
        assert_eq!(ip("[2001:db8::1]").as_deref(), Some("2001:db8::1"));
        assert_eq!(ip("[2001:db8::1]:443").as_deref(), Some("2001:db8::1"));
        assert_eq!(ip("::ffff:203.0.113.9").as_deref(), Some("203.0.113.9"));
        for bad in [
            "unknown",
            "_hidden",
            "",
            "203.0.113.9:",
            "203.0.113.9:port",
            "203.0.113.9:123456",
            "[2001:db8::1]443",
            "[2001:db8::1",
            "example.com",
            "example.com:80",
            "1.2.3.4.5",
        ] {
            assert_eq!(ip(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn bucket_layout() {
        // default takes the rest; others from bucket 0 upward.
        let w = [70, 20, 10];
        assert_eq!(version_for_bucket(&w, 0), 1);
        assert_eq!(version_for_bucket(&w, 19), 1);
        assert_eq!(version_for_bucket(&w, 20), 2);
        assert_eq!(version_for_bucket(&w, 29), 2);
        assert_eq!(version_for_bucket(&w, 30), 0);
        assert_eq!(version_for_bucket(&w, 99), 0);
    }
    /// Persistent mode, response phase: which answers move the pin.
    #[test]
    fn upstream_response_pins_and_repins() {
        let compile = |change: bool| {
            crate::compile_json(&format!(
                r#"{{"versions":[{{"name":"a"}},{{"name":"b","weight":0}}],"session":{{"mode":"persistent",
                    "secrets":["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="],
                    "change_on_failure":{change}}}}}"#
            ))
            .unwrap()
        };
        let decision = |pin: Option<&str>| Decision {
            version: 0,
            reason: Reason::Weight,
            hash: [b'0'; 16],
            endpoint: pin.map(str::to_owned),
            session: Session {
                key: [0; 16],
                version_id: 0,
                origin: Origin::Weight,
                expiry: 2_000_000_000,
                endpoint: pin.map(str::to_owned),
            },
            write_cookie: false,
            cookie_state: CookieState::Valid,
            key_fallback: false,
        };
        let up = |addr: &'static str, attempts: Option<u64>, status: u16| Upstream {
            address: Some(addr),
            attempts,
            status: Some(status),
        };
        const A: &str = "10.0.0.1:80";
        const B: &str = "10.0.0.2:80";
        // (change_on_failure, pin, answer, expected pin, cookie due)
        type Case<'a> = (bool, Option<&'a str>, Upstream<'a>, Option<&'a str>, bool);
        let cases: [Case<'_>; 10] = [
            (false, None, up(A, Some(1), 200), Some(A), true),
            (false, Some(A), up(A, Some(1), 200), Some(A), false),
            // One attempt elsewhere: the pinned pod left the cluster.
            (false, Some(A), up(B, Some(1), 200), Some(B), true),
            // A retry elsewhere: the pinned pod failed.
            (false, Some(A), up(B, Some(2), 200), Some(A), false),
            (true, Some(A), up(B, Some(2), 200), Some(B), true),
            (false, Some(A), up(B, None, 200), Some(A), false),
            (true, Some(A), up(B, None, 200), Some(B), true),
            // 5xx answers never pin.
            (true, None, up(A, Some(1), 503), None, false),
            (true, Some(A), up(B, Some(2), 502), Some(A), false),
            (true, Some(A), up(B, Some(1), 404), Some(B), true),
        ];
        for (i, (change, pin, answer, want, due)) in cases.into_iter().enumerate() {
            let plugin = compile(change);
            let policy = plugin.global.as_ref().unwrap();
            let mut d = decision(pin);
            assert_eq!(
                on_upstream_response(policy, &mut d, &answer),
                due,
                "case {i}"
            );
            assert_eq!(d.session.endpoint.as_deref(), want, "case {i}");
        }
        // The address-only entry point keeps its meaning (unknown attempts).
        let plugin = compile(false);
        let mut d = decision(Some(A));
        assert!(!on_response(
            plugin.global.as_ref().unwrap(),
            &mut d,
            Some(B)
        ));
    }
}
