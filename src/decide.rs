//! The decision: for one request under one policy, which version, which
//! pod, and what session to carry. Plain Rust, no host calls: rules first,
//! then the remembered version, then the per-user weighted bucket.

use crate::hash;
use crate::policy::{drains, version_for_bucket, KeySource, Matcher, PinMode, Policy, RuleSource};
use crate::request::{client_ip, Lookup, Request, MAX_VALUE};
use crate::rng::Entropy;
use crate::session::{Defect, Origin, Rejection, Session};

/// Most copies of the session cookie the filter will look at; a request
/// with more counts as having no valid session (bounds the work an
/// attacker can ask for: each sealed copy is one AEAD open).
pub const MAX_SESSION_COPIES: usize = 8;

/// Which step of the decision gave the version: a rule, the session's
/// memory, or the weighted bucket. (What the user experienced, for the
/// metrics, is the [`Reason`].)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// Rule number `n` matched.
    Rule(usize),
    /// The version remembered in the session cookie.
    Remembered,
    /// The user's weighted bucket.
    Weight,
}

impl Basis {
    /// `rule`, `remembered` or `weight`.
    pub fn label(self) -> &'static str {
        match self {
            Basis::Rule(_) => "rule",
            Basis::Remembered => "remembered",
            Basis::Weight => "weight",
        }
    }
}

/// Why the request got its version, as operators see it: the `reason`
/// label of `sticky_canary_decisions_total`, the `reason` of the debug
/// header and of filter state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// An explicit rule matched.
    Rule,
    /// A returning user kept the version of their session (remembered
    /// from a rule, or their bucket still gives the same version).
    Returning,
    /// No valid session: placed by the weighted bucket.
    New,
    /// A returning user whose bucket now gives another version (the
    /// weights changed, or the remembered version is gone).
    Reassigned,
    /// A returning user kept on a canary at weight 0, whether a rule or
    /// the weights placed them, until the session expires (it is not
    /// renewed meanwhile): see [`drains`].
    Drain,
    /// A returning user of a canary at weight 0 with `rollback`, placed by
    /// weight again.
    Rollback,
}

impl Reason {
    /// Every reason, in label order.
    pub const ALL: [Reason; 6] = [
        Reason::Rule,
        Reason::Returning,
        Reason::New,
        Reason::Reassigned,
        Reason::Drain,
        Reason::Rollback,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Rule => "rule",
            Reason::Returning => "returning",
            Reason::New => "new",
            Reason::Reassigned => "reassigned",
            Reason::Drain => "drain",
            Reason::Rollback => "rollback",
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

impl CookieState {
    /// `absent`, `valid`, `invalid` or `conflicting` (the debug header's
    /// `cookie=`).
    pub fn label(self) -> &'static str {
        match self {
            CookieState::Absent => "absent",
            CookieState::Valid => "valid",
            CookieState::Invalid => "invalid",
            CookieState::Conflicting => "conflicting",
        }
    }
}

/// The decision for one request.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Index of the chosen version.
    pub version: usize,
    /// Which step gave the version.
    pub basis: Basis,
    /// Why, as the metrics count it.
    pub reason: Reason,
    /// The sticky-hash header value: 16 lowercase hex digits.
    pub hash: PodHash,
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
    /// Why the session cookie was not used, when one came and was not.
    pub rejected: Option<Rejection>,
    /// The valid session that came in (of copies that agree, the one with
    /// the latest expiry): it tells a renewal from a switch or a re-pin
    /// when a cookie goes out.
    pub incoming: Option<Session>,
}

impl Decision {
    /// Is the user draining off a canary at weight 0 (they keep it until
    /// the session expires, and the session is not renewed)? The one
    /// definition: [`Reason::Drain`], given where [`drains`] says so.
    pub fn draining(&self) -> bool {
        self.reason == Reason::Drain
    }
}

/// The sticky-hash header value: 16 lowercase hex digits (ASCII).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodHash([u8; 16]);

impl PodHash {
    /// The sticky hash of a session key ([`hash::pod_hash`]).
    pub fn of(key: &[u8]) -> PodHash {
        PodHash(hash::pod_hash(key))
    }

    /// The hex digits as bytes (the header value).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The hex digits as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

/// The values of cookie `name` among the cookies a request was read for.
fn cookie_lookup<'a>(cookies: &[(&'a str, &'a str)], name: &str) -> Lookup<'a> {
    Lookup::of(cookies.iter().filter(|(n, _)| *n == name).map(|(_, v)| *v))
}

fn rule_hits(
    policy: &Policy,
    req: &Request<'_>,
    cookies: &[(&str, &str)],
) -> Option<(usize, usize)> {
    for (i, rule) in policy.rules.iter().enumerate() {
        let value: Option<std::borrow::Cow<'_, str>> = match &rule.source {
            RuleSource::Header(h) => req.header(h).one().map(Into::into),
            RuleSource::Cookie(c) => cookie_lookup(cookies, c)
                .one()
                .filter(|v| v.len() <= MAX_VALUE)
                .map(Into::into),
            RuleSource::Query(q) => req.query(q).map(Into::into),
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

/// The session key the configured key source gives for `req`: `None` with
/// `from: cookie`, or when the source is missing from the request.
// Inlined into decide, its one caller in the filter (measured: 180 bytes
// less of .wasm than a separate function).
#[inline(always)]
pub fn external_key(policy: &Policy, req: &Request<'_>) -> Option<[u8; 16]> {
    match &policy.key_source {
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
    }
}

/// Decide version, pod and session for a request under `policy`.
pub fn decide(policy: &Policy, req: &Request<'_>, rng: &mut dyn Entropy) -> Decision {
    let now = req.now;
    // The session key from the configured source, if any.
    let external = external_key(policy, req);
    let key_fallback = policy.key_source != KeySource::Cookie && external.is_none();
    // Every cookie the decision reads, from one pass over the headers.
    let cookies = req.cookies_named(&policy.read_cookies);
    let read = read_session(policy, req, &cookies, external);
    let rejected = read.rejected;
    let (incoming, cookie_state, stale_key) = (read.session, read.state, read.stale_key);
    let key = match (external, &incoming, read.conflict_key) {
        (Some(k), _, _) => k,
        (None, Some(s), _) => s.key,
        (None, None, Some(k)) => k,
        (None, None, None) => new_key(rng, req),
    };

    let weights = policy.weights(now);
    let remembered_drains = incoming.as_ref().and_then(|s| {
        let v = policy.version_by_id(s.version_id)?;
        Some((v, drains(&weights, v)))
    });
    // A remembered canary now at weight 0 with rollback: reassigned by weight.
    let rolled_back =
        policy.sticky && policy.rollback && remembered_drains.is_some_and(|(_, drains)| drains);
    let remembered = match (&incoming, remembered_drains) {
        (Some(s), Some((v, drains))) if policy.sticky => match (drains, s.origin) {
            // A canary at weight 0: drain (its users, placed by a rule or
            // by weight, stay until their cookie expires) or roll back
            // (they are reassigned now). The default version never drains.
            (true, _) if policy.rollback => None,
            (true, origin) => Some((v, origin)),
            (false, Origin::Rule) => Some((v, Origin::Rule)),
            // Weight-assigned users follow their bucket as weights change.
            (false, Origin::Weight) => None,
        },
        _ => None,
    };

    let (version, basis, origin) = if let Some((i, v)) = rule_hits(policy, req, &cookies) {
        (v, Basis::Rule(i), Origin::Rule)
    } else if let Some((v, origin)) = remembered {
        (v, Basis::Remembered, origin)
    } else {
        (
            version_for_bucket(&weights, policy.bucket(&key)),
            Basis::Weight,
            Origin::Weight,
        )
    };
    // Draining: kept on a canary at weight 0 by the session's memory. The
    // session is never renewed meanwhile, so the user leaves when it
    // expires.
    let draining = basis == Basis::Remembered && drains(&weights, version);

    let version_id = policy.versions.get(version).map_or(0, |v| v.id);
    // The pinned endpoint only counts for the version it was recorded for.
    let endpoint = match (&incoming, policy.mode) {
        (Some(s), PinMode::Persistent) if s.version_id == version_id => s.endpoint.clone(),
        _ => None,
    };
    let renew_at =
        u64::from(incoming.as_ref().map_or(0, |s| s.expiry)).saturating_sub(policy.ttl / 2);
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
    let reason = match (basis, &incoming) {
        (Basis::Rule(_), _) => Reason::Rule,
        (Basis::Remembered, _) if draining => Reason::Drain,
        (Basis::Remembered, _) => Reason::Returning,
        (Basis::Weight, None) => Reason::New,
        (Basis::Weight, Some(_)) if rolled_back => Reason::Rollback,
        (Basis::Weight, Some(s)) if s.version_id == version_id => Reason::Returning,
        (Basis::Weight, Some(_)) => Reason::Reassigned,
    };
    Decision {
        version,
        basis,
        reason,
        hash: PodHash::of(&key),
        endpoint,
        session,
        write_cookie,
        cookie_state,
        key_fallback,
        rejected,
        incoming,
    }
}

/// What the filter makes of one copy of the session cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionCopy {
    /// It opens and is current; `stale_key`: a key other than the first
    /// opened it.
    Valid {
        /// What it holds.
        session: Session,
        /// Opened with a rotated-out key.
        stale_key: bool,
    },
    /// It opens, but was made for another identity than the configured
    /// key source gives (counted as `other_key`).
    OtherKey(Session),
    /// It does not open.
    Rejected(Defect),
}

impl SessionCopy {
    /// The `cause` the filter counts, if this copy is not used.
    pub fn rejection(&self) -> Option<Rejection> {
        match self {
            SessionCopy::Valid { .. } => None,
            SessionCopy::OtherKey(_) => Some(Rejection::OtherKey),
            SessionCopy::Rejected(d) => Some(d.rejection()),
        }
    }
}

/// One copy of the session cookie as the filter judges it, `external`
/// being the key the key source gives ([`external_key`]).
fn judge_copy(policy: &Policy, value: &str, now: u64, external: Option<[u8; 16]>) -> SessionCopy {
    match policy
        .opened
        .open(value, &policy.cookie.name, &policy.seal_keys, now)
    {
        Ok((session, stale_key)) if external.is_none_or(|k| k == session.key) => {
            SessionCopy::Valid { session, stale_key }
        }
        Ok((session, _)) => SessionCopy::OtherKey(session),
        Err(defect) => SessionCopy::Rejected(defect),
    }
}

/// Every copy of the session cookie in `req`, in order, with the verdict
/// [`decide`] gives it (the command-line tool's `explain` prints them).
/// Beyond [`MAX_SESSION_COPIES`] copies `decide` opens none, and the
/// request has no valid session; this still judges each.
pub fn session_copies<'a>(policy: &Policy, req: &Request<'a>) -> Vec<(&'a str, SessionCopy)> {
    let external = external_key(policy, req);
    req.cookie_values(&policy.cookie.name)
        .map(|value| (value, judge_copy(policy, value, req.now, external)))
        .collect()
}

/// What the session cookie copies of a request amount to.
struct SessionRead {
    session: Option<Session>,
    state: CookieState,
    stale_key: bool,
    /// With conflicting copies: the key they share, or one derived from all
    /// of their keys.
    conflict_key: Option<[u8; 16]>,
    /// The first reason a copy was not used (or `Duplicated`).
    rejected: Option<Rejection>,
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
fn read_session(
    policy: &Policy,
    req: &Request<'_>,
    cookies: &[(&str, &str)],
    external: Option<[u8; 16]>,
) -> SessionRead {
    let name = policy.cookie.name.as_str();
    let mut seen = 0usize;
    // The copies that opened: the first apart, so the usual single copy
    // allocates nothing.
    let mut first: Option<(Session, bool)> = None;
    let mut more: Vec<(Session, bool)> = Vec::new();
    let mut rejected = None;
    for value in cookies.iter().filter(|(n, _)| *n == name).map(|(_, v)| *v) {
        seen += 1;
        if seen > MAX_SESSION_COPIES {
            return SessionRead {
                session: None,
                state: CookieState::Invalid,
                stale_key: false,
                conflict_key: None,
                rejected: Some(Rejection::Duplicated),
            };
        }
        match judge_copy(policy, value, req.now, external) {
            SessionCopy::Valid { session, stale_key } => {
                if first.is_none() {
                    first = Some((session, stale_key));
                } else {
                    more.push((session, stale_key));
                }
            }
            other => {
                if rejected.is_none() {
                    rejected = other.rejection();
                }
            }
        }
    }
    let state = match (seen, &first) {
        (0, _) => CookieState::Absent,
        (_, None) => CookieState::Invalid,
        _ => CookieState::Valid,
    };
    let same = |a: &Session, b: &Session| {
        a.key == b.key
            && a.version_id == b.version_id
            && a.origin == b.origin
            && a.endpoint == b.endpoint
    };
    let Some(first_copy) = first else {
        return SessionRead {
            session: None,
            state,
            stale_key: false,
            conflict_key: None,
            rejected,
        };
    };
    if more.iter().all(|(s, _)| same(s, &first_copy.0)) {
        // The copy with the latest expiry (the last of equals).
        let mut best = first_copy;
        for copy in more {
            if copy.0.expiry >= best.0.expiry {
                best = copy;
            }
        }
        // A valid session beside copies that do not open: the session is
        // kept, and the rejected copy still counts.
        return SessionRead {
            session: Some(best.0),
            state,
            stale_key: best.1,
            conflict_key: None,
            rejected,
        };
    }
    // The distinct keys in order, whatever the order of the copies: each
    // goes where a binary search puts it. A handful of copies at most, and
    // no general sort linked in for this rare case (it was 25 KB of code).
    let mut keys: Vec<[u8; 16]> = Vec::with_capacity(1 + more.len());
    for (s, _) in std::iter::once(&first_copy).chain(&more) {
        if let Err(at) = keys.binary_search(&s.key) {
            keys.insert(at, s.key);
        }
    }
    let conflict_key = match keys.as_slice() {
        [one] => *one,
        many => hash::derive_key(&many.concat()),
    };
    SessionRead {
        session: None,
        state: CookieState::Conflicting,
        stale_key: false,
        conflict_key: Some(conflict_key),
        rejected: Some(Rejection::Duplicated),
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
