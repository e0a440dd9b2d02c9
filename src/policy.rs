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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// A version (subset of pods). Its id is the FNV-1a of its name, so
/// both are read, never written, outside the compiler.
#[derive(Debug, Clone)]
pub struct Version {
    /// Name, written to the version header.
    pub(crate) name: String,
    /// `fnv32(name)`, stored in the cookie.
    pub(crate) id: u32,
    /// Weight; ignored for the default version, which takes the remainder.
    pub(crate) weight: Weight,
}

impl Version {
    /// Name, written to the version header.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its id in the cookie: `fnv32(name)`.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Its weight (the default version's is ignored: it takes the rest).
    pub fn weight(&self) -> Weight {
        self.weight
    }
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

impl RuleSource {
    /// `header`, `cookie` or `query`: the rule's key in the config.
    pub fn label(&self) -> &'static str {
        match self {
            RuleSource::Header(_) => "header",
            RuleSource::Cookie(_) => "cookie",
            RuleSource::Query(_) => "query",
        }
    }

    /// The header, cookie or query parameter name.
    pub fn name(&self) -> &str {
        match self {
            RuleSource::Header(n) | RuleSource::Cookie(n) | RuleSource::Query(n) => n,
        }
    }
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

/// A compiled explicit rule (its version an index into the policy's).
#[derive(Debug, Clone)]
pub struct Rule {
    /// Where to look.
    pub(crate) source: RuleSource,
    /// How to compare.
    pub(crate) matcher: Matcher,
    /// Index into [`Policy::versions`].
    pub(crate) version: usize,
}

impl Rule {
    /// Where it looks.
    pub fn source(&self) -> &RuleSource {
        &self.source
    }

    /// How it compares.
    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }

    /// The version it sends to, an index into [`Policy::versions`].
    pub fn version(&self) -> usize {
        self.version
    }
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

impl KeySource {
    /// `cookie`, `header`, `query` or `client_ip`: the config's `from`.
    pub fn label(&self) -> &'static str {
        match self {
            KeySource::Cookie => "cookie",
            KeySource::Header(_) => "header",
            KeySource::Query(_) => "query",
            KeySource::ClientIp { .. } => "client_ip",
        }
    }
}

/// Names of the headers the filter writes.
#[derive(Debug, Clone)]
pub struct HeaderNames {
    /// Version header.
    pub(crate) version: String,
    /// Sticky-hash header.
    pub(crate) hash: String,
    /// Pinned-endpoint header.
    pub(crate) endpoint: String,
}

impl HeaderNames {
    /// The version header.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The sticky-hash header.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The pinned-endpoint header.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

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

impl PinMode {
    /// `balanced` or `persistent`, as the config says it.
    pub fn label(self) -> &'static str {
        match self {
            PinMode::Balanced => "balanced",
            PinMode::Persistent => "persistent",
        }
    }
}

/// A fully validated policy for one scope (global or a route entry).
///
/// Only [`crate::compile`] builds one, and its parts hold together (the
/// weights fit the total, rules name versions by index, the cookies a
/// decision reads include the session cookie's name, the opened-cookie
/// cache belongs to these keys and that name, a counter exists for every
/// version): so they are read through accessors, never written, and
/// [`Policy::with_weights`] is the one checked way to change weights.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `global` or the route entry's name.
    pub(crate) scope: String,
    /// Versions; index 0 is the default.
    pub(crate) versions: Vec<Version>,
    /// Weight total.
    pub(crate) total: u32,
    /// Rules, in order.
    pub(crate) rules: Vec<Rule>,
    /// Remember versions (`sticky`).
    pub(crate) sticky: bool,
    /// Move users of weight-0 versions back at once.
    pub(crate) rollback: bool,
    /// Bucket seed.
    pub(crate) seed: Vec<u8>,
    /// Session cookie.
    pub(crate) cookie: crate::cookies::CookieSpec,
    /// Where the session key comes from.
    pub(crate) key_source: KeySource,
    /// Session lifetime, seconds.
    pub(crate) ttl: u64,
    /// Pinning mode.
    pub(crate) mode: PinMode,
    /// Keys that seal the session cookie (the first seals, all open);
    /// empty: plain cookies.
    pub(crate) seal_keys: Vec<SealKey>,
    /// Persistent mode: re-pin after a failure.
    pub(crate) change_on_failure: bool,
    /// Header names.
    pub(crate) headers: HeaderNames,
    /// Record the decision in filter state (`wasm.sticky_canary.*`).
    pub(crate) filter_state: bool,
    /// The response header that explains the decision, if configured.
    pub(crate) debug_header: Option<String>,
    /// The counters this policy's requests move.
    pub(crate) counters: PolicyCounters,
    /// Sealed session cookies that opened recently (saves the AEAD for
    /// returning users).
    pub(crate) opened: OpenedCache,
    /// The cookies a decision under this policy reads: the session cookie
    /// and every cookie rule's, once each (compiled once, read per request).
    pub(crate) read_cookies: Vec<String>,
}

impl Policy {
    /// `global` or the route entry's name (the `route` label).
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// Versions; index 0 is the default.
    pub fn versions(&self) -> &[Version] {
        &self.versions
    }

    /// The weight total.
    pub fn total(&self) -> u32 {
        self.total
    }

    /// Rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Remember versions (`stickiness: sticky`).
    pub fn sticky(&self) -> bool {
        self.sticky
    }

    /// `sticky` or `legacy`, as the config says it.
    pub fn stickiness(&self) -> &'static str {
        if self.sticky {
            "sticky"
        } else {
            "legacy"
        }
    }

    /// Move the users of weight-0 canaries back at once.
    pub fn rollback(&self) -> bool {
        self.rollback
    }

    /// The bucket seed.
    pub fn seed(&self) -> &[u8] {
        &self.seed
    }

    /// The session cookie's name and attributes.
    pub fn cookie(&self) -> &crate::cookies::CookieSpec {
        &self.cookie
    }

    /// Where the session key comes from.
    pub fn key_source(&self) -> &KeySource {
        &self.key_source
    }

    /// Session lifetime, seconds.
    pub fn ttl(&self) -> u64 {
        self.ttl
    }

    /// How a user is pinned to a pod.
    pub fn mode(&self) -> PinMode {
        self.mode
    }

    /// Keys that seal the session cookie (the first seals, all open);
    /// empty: plain cookies.
    pub fn seal_keys(&self) -> &[SealKey] {
        &self.seal_keys
    }

    /// Persistent mode: re-pin after a failure.
    pub fn change_on_failure(&self) -> bool {
        self.change_on_failure
    }

    /// The names of the headers the filter writes.
    pub fn headers(&self) -> &HeaderNames {
        &self.headers
    }

    /// Record the decision in filter state.
    pub fn filter_state(&self) -> bool {
        self.filter_state
    }

    /// The response header that explains the decision, if configured.
    pub fn debug_header(&self) -> Option<&str> {
        self.debug_header.as_deref()
    }

    /// The counters this policy's requests move.
    pub fn counters(&self) -> &PolicyCounters {
        &self.counters
    }

    /// Sealed session cookies that opened recently.
    pub fn opened(&self) -> &OpenedCache {
        &self.opened
    }

    /// The cookies a decision under this policy reads.
    pub fn read_cookies(&self) -> &[String] {
        &self.read_cookies
    }

    /// This policy with some versions at fixed weights (`(version index,
    /// weight)`), as if the config said so: what `simulate` steps
    /// through. Refused, with the reason, when an index is not a
    /// non-default version or the weights of the others exceed the total.
    ///
    /// ```
    /// let plugin = sticky_canary::compile_json(
    ///     r#"{"versions": [{"name": "a"}, {"name": "b", "weight": 10}]}"#).unwrap();
    /// let p = plugin.global.unwrap();
    /// assert_eq!(p.with_weights(&[(1, 30)]).unwrap().weights_at(0), [70, 30]);
    /// assert!(p.with_weights(&[(1, 101)]).is_err());
    /// assert!(p.with_weights(&[(0, 50)]).is_err());
    /// ```
    pub fn with_weights(&self, set: &[(usize, u32)]) -> Result<Policy, String> {
        let mut p = self.clone();
        for &(i, w) in set {
            match p.versions.get_mut(i) {
                Some(v) if i > 0 => v.weight = Weight::Fixed(w),
                Some(v) => {
                    return Err(format!(
                        "{} is the default version: it takes what the others leave",
                        v.name
                    ))
                }
                None => return Err(format!("no version {i}")),
            }
        }
        let most: u64 = p
            .versions
            .iter()
            .skip(1)
            .map(|v| u64::from(v.weight.max()))
            .sum();
        if most > u64::from(p.total) {
            return Err(format!(
                "weights add up to {most}, over weight_total {}",
                p.total
            ));
        }
        Ok(p)
    }

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

    /// The bucket of a session key under this policy: FNV-1a of the seed
    /// and the key, in `0..total` ([`crate::hash::bucket`]).
    pub fn bucket(&self, key: &[u8]) -> u32 {
        crate::hash::bucket(&self.seed, key, self.total)
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
    canary_ranges(weights)
        .find(|&(_, _, end)| bucket < end)
        .map_or(0, |(i, _, _)| i)
}

/// The non-default versions' bucket ranges in config order, as `(index,
/// start, end)`: each starts where the one before it ends, from bucket 0.
fn canary_ranges(weights: &[u32]) -> impl Iterator<Item = (usize, u32, u32)> + '_ {
    weights
        .iter()
        .enumerate()
        .skip(1)
        .scan(0u32, |upper, (i, w)| {
            let start = *upper;
            *upper = upper.saturating_add(*w);
            Some((i, start, *upper))
        })
}

/// The buckets each version owns at these weights, out of `0..total`, by
/// version index: the layout [`version_for_bucket`] reads. A version at
/// weight 0 owns an empty range; the default version (index 0) owns what
/// the others leave, at the end.
///
/// ```
/// use sticky_canary::policy::{bucket_ranges, version_for_bucket};
///
/// let weights = [70, 20, 10, 0];
/// assert_eq!(bucket_ranges(&weights, 100), [30..100, 0..20, 20..30, 30..30]);
/// assert_eq!(version_for_bucket(&weights, 25), 2);
/// ```
pub fn bucket_ranges(weights: &[u32], total: u32) -> Vec<std::ops::Range<u32>> {
    let mut out = vec![0..0; weights.len()];
    let mut upper = 0u32;
    for (i, start, end) in canary_ranges(weights) {
        if let Some(r) = out.get_mut(i) {
            *r = start.min(total)..end.min(total);
        }
        upper = end;
    }
    if let Some(default) = out.first_mut() {
        *default = upper.min(total)..total;
    }
    out
}

/// Does `version` drain at these weights? A canary (any version but the
/// default) at weight 0 gets no new user; the users its sessions remember,
/// whether a rule or the weights placed them, stay until their session
/// expires, which is not renewed meanwhile (drain), or, with `rollback`,
/// are placed by weight again at once. The default version never drains:
/// at weight 0 the canaries hold the whole total and take every user the
/// weights place.
///
/// The one definition the filter's counters (`reason="drain"`), `explain`
/// and `simulate` share.
pub fn drains(weights: &[u32], version: usize) -> bool {
    version != 0 && weights.get(version) == Some(&0)
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
    fn bucket_ranges_are_the_layout_version_for_bucket_reads() {
        let cases: &[&[u32]] = &[
            &[70, 20, 10],
            &[0, 60, 40],
            &[100, 0],
            &[50, 0, 25, 0, 25],
            &[1, 0, 0],
            &[3],
        ];
        for w in cases {
            let total: u32 = w.iter().sum();
            let ranges = bucket_ranges(w, total);
            assert_eq!(ranges.len(), w.len());
            for (i, r) in ranges.iter().enumerate() {
                assert_eq!(r.len() as u32, w[i], "{w:?} version {i}");
            }
            for b in 0..total {
                let v = version_for_bucket(w, b);
                assert!(ranges[v].contains(&b), "{w:?} bucket {b}");
            }
        }
    }

    #[test]
    fn only_canaries_at_weight_0_drain() {
        let w = [0, 100, 0];
        assert!(!drains(&w, 0), "the default version never drains");
        assert!(!drains(&w, 1));
        assert!(drains(&w, 2));
        assert!(!drains(&w, 3), "no such version");
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
