//! The compiled policy model: what [`crate::compile`] builds from the JSON
//! once, in `on_configure`, and what every request reads. Lookups that need
//! only the model live beside the types: [`Policy::weights_at`] and
//! [`version_for_bucket`] (weights over time, buckets to versions). Which
//! policy covers a request ([`Plugin::select`]) reads the request too, so it
//! lives in [`crate::routing`].

use crate::metrics::{Counter, PolicyCounters};
use crate::session::{OpenedCache, SealKey};
use regex_lite::Regex;
use std::rc::Rc;

/// The compiled plugin: an optional global policy and per-route entries.
#[derive(Debug)]
pub struct Plugin {
    /// Applies to requests that no route entry matches; `None`: pass through.
    pub global: Option<Rc<Policy>>,
    /// Per-route entries, first match wins.
    pub routes: Vec<RouteEntry>,
    /// Some entry matches on `xds.route_name`.
    pub needs_route_name: bool,
    /// Some entry matches on `xds.virtual_host_name`.
    pub needs_virtual_host: bool,
    /// Some policy keys sessions on the client address (`source.address`).
    pub needs_client_address: bool,
    /// Every route-override header name any policy writes. Requests that
    /// pass through lose a client's copy of these, so no route can be
    /// steered by them.
    pub override_headers: Vec<String>,
    /// Names of every counter the plugin's requests can move; a
    /// [`Counter`] is an index into this list. The adapter defines them
    /// once, in `on_configure`.
    pub counter_names: Vec<String>,
    /// Requests no policy covered.
    pub passthrough: Counter,
}

/// Effective weights, one per version (see [`Policy::weights`]): inline up
/// to 8 versions.
pub type Weights = smallvec::SmallVec<[u32; 8]>;

/// One per-route entry.
#[derive(Debug)]
pub struct RouteEntry {
    /// Its name (for logs and metrics).
    pub name: String,
    /// What it matches.
    pub matcher: RouteMatch,
    /// Its policy; `None` when the entry disables the filter.
    pub policy: Option<Rc<Policy>>,
}

/// Compiled route match: every non-empty list must have a hit (any of its
/// values). The path lists read the `:path` without its query string and
/// fragment; see [`crate::routing`] for how each compares.
#[derive(Debug, Default)]
pub struct RouteMatch {
    /// Exact `xds.route_name` values.
    pub route_names: Vec<String>,
    /// Exact `xds.virtual_host_name` values.
    pub virtual_hosts: Vec<String>,
    /// Authority patterns (`*` wildcards), compiled to anchored,
    /// case-insensitive regexes over the host without its port.
    pub authorities: Vec<Regex>,
    /// The same patterns as the config gives them (for people).
    pub authority_patterns: Vec<String>,
    /// `path_exact`: the path equals one of these.
    pub path_exact: Vec<String>,
    /// `path_prefix`: the path starts with one of these strings (`/api`
    /// also matches `/apis`).
    pub path_prefixes: Vec<String>,
    /// `path_separated_prefix`: whole path elements, as Envoy's
    /// `path_separated_prefix` and Kubernetes' `Prefix` (`/api` matches
    /// `/api` and `/api/x`, not `/apis`). `/` matches every path; no other
    /// value ends with `/`.
    pub path_separated_prefixes: Vec<String>,
    /// `path_regex`: regex-lite patterns searched in the path (unanchored).
    pub path_regexes: Vec<Regex>,
}

/// A version's weight over time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Weight {
    /// A fixed weight.
    Fixed(u32),
    /// A timed ramp from `from` to `to` between `start` and `end` (Unix
    /// seconds), in `steps` equal steps (0: one weight unit at a time).
    Ramp {
        /// Start time.
        start: u64,
        /// End time (> start).
        end: u64,
        /// Weight before `start`.
        from: u32,
        /// Weight from `end` on.
        to: u32,
        /// Number of steps (0 = smooth).
        steps: u32,
    },
}

impl Weight {
    /// The weight at Unix time `now`; monotonic in `now`.
    pub fn at(&self, now: u64) -> u32 {
        match *self {
            Weight::Fixed(w) => w,
            Weight::Ramp {
                start,
                end,
                from,
                to,
                steps,
            } => {
                if now <= start {
                    return from;
                }
                if now >= end {
                    return to;
                }
                let span = u128::from(end - start);
                let done = u128::from(now - start);
                let range = u128::from(from.abs_diff(to));
                let delta = if steps > 0 {
                    // Whole steps elapsed, each an equal share of the range.
                    let step = done * u128::from(steps) / span;
                    range * step / u128::from(steps)
                } else {
                    range * done / span
                };
                let delta = u32::try_from(delta).unwrap_or(u32::MAX);
                if to >= from {
                    from.saturating_add(delta)
                } else {
                    from.saturating_sub(delta)
                }
            }
        }
    }

    pub(crate) fn max(&self) -> u32 {
        match *self {
            Weight::Fixed(w) => w,
            Weight::Ramp { from, to, .. } => from.max(to),
        }
    }
}

/// A version (subset of pods).
#[derive(Debug, Clone)]
pub struct Version {
    /// Name, written to the version header.
    pub name: String,
    /// `fnv32(name)`, stored in the cookie.
    pub id: u32,
    /// Weight; ignored for the default version, which takes the remainder.
    pub weight: Weight,
}

/// Where a rule looks.
#[derive(Debug, Clone)]
pub enum RuleSource {
    /// A request header (lowercase name).
    Header(String),
    /// A cookie.
    Cookie(String),
    /// A query parameter.
    Query(String),
}

/// How a rule compares.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// Equal to this value; other values fall through.
    Exact(String),
    /// Matches this regex; other values fall through.
    Regex(Regex),
    /// `always` -> the rule's version; `never` -> the default version;
    /// other values fall through.
    Sentinel,
}

/// A compiled explicit rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Where to look.
    pub source: RuleSource,
    /// How to compare.
    pub matcher: Matcher,
    /// Index into [`Policy::versions`].
    pub version: usize,
}

/// Where the session key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A random key in the session cookie.
    Cookie,
    /// A request header (e.g. a user id set by an auth layer).
    Header(String),
    /// A query parameter.
    Query(String),
    /// The client address, `hops` trusted X-Forwarded-For entries deep.
    ClientIp {
        /// Trusted proxies that append to X-Forwarded-For (0: Envoy's own
        /// client address).
        hops: u32,
    },
}

/// `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// `SameSite=None` (requires `Secure`).
    None,
    /// `SameSite=Lax`.
    Lax,
    /// `SameSite=Strict`.
    Strict,
}

/// The session cookie's name and attributes.
#[derive(Debug, Clone)]
pub struct CookieSpec {
    /// Name.
    pub name: String,
    /// `Path`.
    pub path: String,
    /// `Domain`.
    pub domain: Option<String>,
    /// `Max-Age` seconds.
    pub max_age: Option<u64>,
    /// Seconds from now for `Expires`.
    pub expires: Option<u64>,
    /// `Secure`.
    pub secure: Secure,
    /// `HttpOnly`.
    pub http_only: bool,
    /// `SameSite`.
    pub same_site: Option<SameSite>,
    /// Omit `SameSite=None` for browsers that reject it.
    pub same_site_none_compat: bool,
}

/// When the cookie carries `Secure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secure {
    /// Always.
    Always,
    /// Never.
    Never,
    /// When the request came over HTTPS (`:scheme` or `x-forwarded-proto`
    /// is `https`), as ingress-nginx does by default.
    Auto,
}

/// Names of the headers the filter writes.
#[derive(Debug, Clone)]
pub struct HeaderNames {
    /// Version header.
    pub version: String,
    /// Sticky-hash header.
    pub hash: String,
    /// Pinned-endpoint header.
    pub endpoint: String,
}

impl HeaderNames {
    /// The three names: version, hash, endpoint.
    pub fn all(&self) -> [&String; 3] {
        [&self.version, &self.hash, &self.endpoint]
    }

    /// Is `name` one of the headers the filter writes?
    pub fn writes(&self, name: &str) -> bool {
        self.all().iter().any(|h| h.as_str() == name)
    }
}

/// How a user is pinned to a pod inside the version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinMode {
    /// A consistent hash of the session key (the sticky-hash header).
    Balanced,
    /// The exact endpoint, recorded in the cookie (`override_host`).
    Persistent,
}

/// A fully validated policy for one scope (global or a route entry).
#[derive(Debug, Clone)]
pub struct Policy {
    /// `global` or the route entry's name.
    pub scope: String,
    /// Versions; index 0 is the default.
    pub versions: Vec<Version>,
    /// Weight total.
    pub total: u32,
    /// Rules, in order.
    pub rules: Vec<Rule>,
    /// Remember versions (`sticky`).
    pub sticky: bool,
    /// Move users of weight-0 versions back at once.
    pub rollback: bool,
    /// Bucket seed.
    pub seed: Vec<u8>,
    /// Session cookie.
    pub cookie: CookieSpec,
    /// Where the session key comes from.
    pub key_source: KeySource,
    /// Session lifetime, seconds.
    pub ttl: u64,
    /// Pinning mode.
    pub mode: PinMode,
    /// Keys that seal the session cookie (the first seals, all open);
    /// empty: plain cookies.
    pub seal_keys: Vec<SealKey>,
    /// Persistent mode: re-pin after a failure.
    pub change_on_failure: bool,
    /// Header names.
    pub headers: HeaderNames,
    /// Record the decision in filter state (`wasm.sticky_canary.*`).
    pub filter_state: bool,
    /// The response header that explains the decision, if configured.
    pub debug_header: Option<String>,
    /// The counters this policy's requests move.
    pub counters: PolicyCounters,
    /// Sealed session cookies that opened recently (saves the AEAD for
    /// returning users).
    pub opened: OpenedCache,
    /// The cookies a decision under this policy reads: the session cookie
    /// and every cookie rule's, once each (compiled once, read per request).
    pub read_cookies: Vec<String>,
}

impl Policy {
    /// Effective weight of every version at `now`; the default version gets
    /// what the others leave.
    pub fn weights_at(&self, now: u64) -> Vec<u32> {
        self.weights(now).into_vec()
    }

    /// [`Policy::weights_at`] without a heap allocation for up to 8
    /// versions (the per-request path).
    pub fn weights(&self, now: u64) -> Weights {
        let mut w: Weights = self.versions.iter().map(|v| v.weight.at(now)).collect();
        let others: u32 = w.iter().skip(1).fold(0u32, |a, b| a.saturating_add(*b));
        if let Some(first) = w.first_mut() {
            *first = self.total.saturating_sub(others);
        }
        w
    }

    /// Index of the version with this cookie id.
    pub fn version_by_id(&self, id: u32) -> Option<usize> {
        self.versions.iter().position(|v| v.id == id)
    }

    /// Does this policy need the client address property?
    pub fn needs_client_address(&self) -> bool {
        matches!(self.key_source, KeySource::ClientIp { .. })
    }
}

/// Defaults, public for the docs and tests.
pub mod defaults {
    /// Default weight total.
    pub const WEIGHT_TOTAL: u32 = 100;
    /// Default cookie name.
    pub const COOKIE_NAME: &str = "sticky-canary";
    /// Default session lifetime without Max-Age/Expires.
    pub const TTL: u64 = 86_400;
    /// Default version header.
    pub const VERSION_HEADER: &str = "x-canary-version";
    /// Default sticky-hash header.
    pub const HASH_HEADER: &str = "x-sticky-hash";
    /// Default endpoint header.
    pub const ENDPOINT_HEADER: &str = "x-sticky-endpoint";
    /// Largest weight total.
    pub const MAX_TOTAL: u32 = 1_000_000;
    /// Longest session lifetime (10 years).
    pub const MAX_TTL: u64 = 10 * 365 * 86_400;
}

impl Plugin {
    /// A plugin that passes every request through, removing only clients'
    /// copies of `override_headers`: what serves while a config is invalid
    /// and no earlier good config exists.
    pub fn pass_through(override_headers: Vec<String>) -> Plugin {
        let mut names = crate::metrics::Names::default();
        let passthrough = names.passthrough();
        Plugin {
            global: None,
            routes: Vec::new(),
            needs_route_name: false,
            needs_virtual_host: false,
            needs_client_address: false,
            override_headers,
            counter_names: names.into_vec(),
            passthrough,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_before_and_after_a_ramp_inline_up_to_8_versions() {
        for n in [2usize, 3, 8, 9, 12] {
            let json = format!(
                r#"{{"versions": [{}]}}"#,
                (0..n)
                    .map(|i| match i {
                        0 => r#"{"name": "v0"}"#.to_owned(),
                        _ => format!(r#"{{"name": "v{i}", "weight": {i}}}"#),
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let Ok(plugin) = crate::compile_json(&json) else {
                panic!("{json}");
            };
            let Some(global) = plugin.global else {
                panic!("{json}");
            };
            let mut p = (*global).clone();
            p.versions[1].weight = Weight::Ramp {
                start: 100,
                end: 200,
                from: 0,
                to: 7,
                steps: 0,
            };
            for (now, ramped) in [(0u64, 0u32), (300, 7)] {
                let mut want: Vec<u32> = (0..n as u32).collect();
                want[1] = ramped;
                want[0] = 100 - want.iter().sum::<u32>();
                assert_eq!(
                    p.weights(now).as_slice(),
                    want.as_slice(),
                    "{n} versions at {now}"
                );
                assert_eq!(p.weights_at(now), want, "{n} versions at {now}");
            }
            assert_eq!(p.weights(0).spilled(), n > 8, "{n} versions");
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
}
