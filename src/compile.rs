//! Parse, then compile: JSON text -> [`RawConfig`] -> validated [`Plugin`].
//!
//! Every check happens here, once, in `on_configure`: regexes compiled,
//! weights summed, names checked, versions cross-referenced. An error names
//! the field path and the offending value.

use crate::config::{
    Mode, RawConfig, RawCookie, RawKey, RawMatch, RawRamp, RawRule, RawVersion, SecureSetting,
    Stickiness,
};
use crate::hash::fnv32;
use crate::session::SealKey;
use crate::{b64, time};
use regex_lite::Regex;
use serde_json::{Map, Value};
use std::fmt;

/// A configuration error: where, what value, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Field path, e.g. `routes[1].versions[0].weight`.
    pub path: String,
    /// The offending value as JSON text (secrets are never echoed).
    pub value: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "invalid plugin config: {}: {}", self.path, self.reason)
        } else {
            write!(
                f,
                "invalid plugin config: {} = {}: {}",
                self.path, self.value, self.reason
            )
        }
    }
}

impl std::error::Error for ConfigError {}

fn err(
    path: impl Into<String>,
    value: impl fmt::Display,
    reason: impl Into<String>,
) -> ConfigError {
    let mut value = value.to_string();
    if value.len() > 120 {
        let cut = (0..=117)
            .rev()
            .find(|i| value.is_char_boundary(*i))
            .unwrap_or(0);
        value.truncate(cut);
        value.push_str("...");
    }
    ConfigError {
        path: path.into(),
        value,
        reason: reason.into(),
    }
}

fn quoted(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// The compiled plugin: an optional global policy and per-route entries.
#[derive(Debug)]
pub struct Plugin {
    /// Applies to requests that no route entry matches; `None`: pass through.
    pub global: Option<Policy>,
    /// Per-route entries, first match wins.
    pub routes: Vec<RouteEntry>,
    /// Some entry matches on `xds.route_name`.
    pub needs_route_name: bool,
    /// Some entry matches on `xds.virtual_host_name`.
    pub needs_virtual_host: bool,
    /// Every route-override header name any policy writes. Requests that
    /// pass through lose a client's copy of these, so no route can be
    /// steered by them.
    pub override_headers: Vec<String>,
}

/// One per-route entry.
#[derive(Debug)]
pub struct RouteEntry {
    /// Its name (for logs and metrics).
    pub name: String,
    /// What it matches.
    pub matcher: RouteMatch,
    /// Its policy; `None` when the entry disables the filter.
    pub policy: Option<Policy>,
}

/// Compiled route match: every non-empty list must have a hit.
#[derive(Debug, Default)]
pub struct RouteMatch {
    /// Exact `xds.route_name` values.
    pub route_names: Vec<String>,
    /// Exact `xds.virtual_host_name` values.
    pub virtual_hosts: Vec<String>,
    /// Lowercase authority patterns with `*` wildcards.
    pub authorities: Vec<String>,
    /// Path prefixes.
    pub path_prefixes: Vec<String>,
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

    fn max(&self) -> u32 {
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
pub enum Source {
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
    pub source: Source,
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

/// Pod pinning mode.
pub use crate::config::Mode as PinMode;

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
    /// Session key source.
    pub key: KeySource,
    /// Session lifetime, seconds.
    pub ttl: u64,
    /// Pinning mode.
    pub mode: Mode,
    /// Seal keys; empty: plain cookies.
    pub keys: Vec<SealKey>,
    /// Persistent mode: re-pin after a failure.
    pub change_on_failure: bool,
    /// Header names.
    pub headers: HeaderNames,
    /// The request needs `:path` parsed for query parameters.
    pub needs_query: bool,
}

impl Policy {
    /// Effective weight of every version at `now`; the default version gets
    /// what the others leave.
    pub fn weights_at(&self, now: u64) -> Vec<u32> {
        let mut w: Vec<u32> = self.versions.iter().map(|v| v.weight.at(now)).collect();
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
        matches!(self.key, KeySource::ClientIp { .. })
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
        Plugin {
            global: None,
            routes: Vec::new(),
            needs_route_name: false,
            needs_virtual_host: false,
            override_headers,
        }
    }
}

/// What to do with config text that did not compile, read leniently from
/// the text itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPlan {
    /// The config asks for strict refusal (`"on_invalid_config": "refuse"`).
    pub refuse: bool,
    /// The route-override header names to strip from requests meanwhile:
    /// the defaults plus every `headers.*` name the text sets (globally or
    /// in a route entry), so a renamed header cannot steer a route either.
    pub override_headers: Vec<String>,
}

/// Read what can be read from config text that failed to compile.
pub fn invalid_plan(text: &str) -> InvalidPlan {
    let mut names: Vec<String> = [
        defaults::VERSION_HEADER,
        defaults::HASH_HEADER,
        defaults::ENDPOINT_HEADER,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let root: Option<Value> = serde_json::from_str(text.trim()).ok();
    let refuse = root
        .as_ref()
        .and_then(|r| r.get("on_invalid_config"))
        .and_then(Value::as_str)
        == Some("refuse");
    let mut objects: Vec<&Value> = root.iter().collect();
    if let Some(Value::Array(routes)) = root.as_ref().and_then(|r| r.get("routes")) {
        objects.extend(routes.iter());
    }
    for o in objects {
        if let Some(Value::Object(h)) = o.get("headers") {
            for v in h.values() {
                if let Some(name) = v.as_str() {
                    let name = name.to_ascii_lowercase();
                    if is_token(&name) && !names.contains(&name) {
                        names.push(name);
                    }
                }
            }
        }
    }
    InvalidPlan {
        refuse,
        override_headers: names,
    }
}

/// Parse and compile plugin configuration text.
pub fn compile_json(text: &str) -> Result<Plugin, ConfigError> {
    let text = text.trim();
    let root: Value = if text.is_empty() {
        Value::Object(Map::new())
    } else {
        serde_json::from_str(text).map_err(|e| err("$", "", format!("not valid JSON: {e}")))?
    };
    let Value::Object(mut global) = root else {
        return Err(err(
            "$",
            short_json(&root),
            "the plugin config must be a JSON object",
        ));
    };
    let routes = match global.remove("routes") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(r)) => r,
        Some(other) => {
            return Err(err(
                "routes",
                short_json(&other),
                "must be a list of route entries",
            ))
        }
    };
    let global_raw: RawConfig = parse_raw(&Value::Object(global.clone()), "")?;
    let (global_policy, global_headers) = match global_raw.versions {
        Some(_) => {
            let policy = compile_policy(&global_raw, "", "global")?;
            let headers = policy.headers.clone();
            (Some(policy), headers)
        }
        // Without versions the global object only holds defaults for the
        // route entries (rules included, checked against each entry's
        // versions). Validate the shared settings now so errors name the
        // global path.
        None => (None, compile_shared(&global_raw, "")?.headers),
    };

    let mut entries = Vec::with_capacity(routes.len());
    let mut names = Vec::new();
    for (i, entry) in routes.into_iter().enumerate() {
        let path = format!("routes[{i}]");
        let Value::Object(mut entry) = entry else {
            return Err(err(
                path,
                short_json(&entry),
                "a route entry must be a JSON object",
            ));
        };
        let name = match entry.remove("name") {
            None => path.clone(),
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 64 => s,
            Some(v) => {
                return Err(err(
                    format!("{path}.name"),
                    short_json(&v),
                    "must be a non-empty string of at most 64 characters",
                ))
            }
        };
        if names.contains(&name) {
            return Err(err(
                format!("{path}.name"),
                quoted(&name),
                "duplicate route entry name",
            ));
        }
        names.push(name.clone());
        let enabled = match entry.remove("enabled") {
            None => true,
            Some(Value::Bool(b)) => b,
            Some(v) => {
                return Err(err(
                    format!("{path}.enabled"),
                    short_json(&v),
                    "must be true or false",
                ))
            }
        };
        let matcher = match entry.remove("match") {
            None => {
                return Err(err(
                    format!("{path}.match"),
                    "",
                    "every route entry needs a `match`",
                ))
            }
            Some(m) => compile_match(m, &format!("{path}.match"))?,
        };
        if entry.contains_key("on_invalid_config") {
            return Err(err(
                format!("{path}.on_invalid_config"),
                "",
                "only at the top level: it applies to the whole plugin config",
            ));
        }
        if entry.contains_key("routes") {
            return Err(err(
                format!("{path}.routes"),
                "[...]",
                "route entries cannot nest",
            ));
        }
        let policy = if enabled {
            let mut merged = global.clone();
            merge(&mut merged, entry);
            default_cookie_path(&mut merged, &matcher);
            let raw = parse_raw(&Value::Object(merged), &format!("{path}."))?;
            if raw.versions.is_none() {
                return Err(err(format!("{path}.versions"), "", "no versions here nor globally (use \"enabled\": false to pass a route through)"));
            }
            Some(compile_policy(&raw, &format!("{path}."), &name)?)
        } else {
            if !entry.is_empty() {
                let key = entry.keys().next().cloned().unwrap_or_default();
                return Err(err(
                    format!("{path}.{key}"),
                    "",
                    "a disabled route entry takes only name, match and enabled",
                ));
            }
            None
        };
        entries.push(RouteEntry {
            name,
            matcher,
            policy,
        });
    }
    if global_policy.is_none()
        && global_raw.rules.is_some()
        && !entries.iter().any(|e| e.policy.is_some())
    {
        return Err(err(
            "rules",
            "[...]",
            "rules need versions: set `versions` here or in a route entry",
        ));
    }
    let mut override_headers = Vec::new();
    let all = std::iter::once(&global_headers).chain(
        entries
            .iter()
            .filter_map(|e| e.policy.as_ref().map(|p| &p.headers)),
    );
    for h in all {
        for name in h.all() {
            if !override_headers.contains(name) {
                override_headers.push(name.clone());
            }
        }
    }
    Ok(Plugin {
        override_headers,
        needs_route_name: entries.iter().any(|e| !e.matcher.route_names.is_empty()),
        needs_virtual_host: entries.iter().any(|e| !e.matcher.virtual_hosts.is_empty()),
        global: global_policy,
        routes: entries,
    })
}

/// A route entry matched by exactly one path prefix scopes its cookie to
/// that path when neither the entry nor the global object sets
/// `session.cookie.path` (ingress-nginx defaults the cookie Path to the
/// location path). A prefix that is not a usable cookie path keeps `/`.
fn default_cookie_path(merged: &mut Map<String, Value>, m: &RouteMatch) {
    let [prefix] = m.path_prefixes.as_slice() else {
        return;
    };
    if prefix.len() > 256
        || prefix
            .bytes()
            .any(|b| b == b';' || !(0x21..0x7f).contains(&b))
    {
        return;
    }
    let session = merged
        .entry("session")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(session) = session else {
        return;
    };
    let cookie = session
        .entry("cookie")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(cookie) = cookie {
        cookie
            .entry("path")
            .or_insert_with(|| Value::String(prefix.clone()));
    }
}

fn short_json(v: &Value) -> String {
    v.to_string()
}

/// Deep merge: objects key by key, everything else replaced.
///
/// `session.key` is one choice among several (`from` decides which other
/// keys apply), so an entry's `session.key` replaces the global one whole.
fn merge(base: &mut Map<String, Value>, over: Map<String, Value>) {
    merge_at(base, over, "");
}

fn merge_at(base: &mut Map<String, Value>, over: Map<String, Value>, at: &str) {
    for (k, v) in over {
        let path = if at.is_empty() {
            k.clone()
        } else {
            format!("{at}.{k}")
        };
        match (base.get_mut(&k), v) {
            (Some(Value::Object(b)), Value::Object(o)) if path != "session.key" => {
                merge_at(b, o, &path)
            }
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Every string under a key that looks like a secret (`secrets`, a
/// misspelt `secret`, ...), so error messages never echo one.
fn secret_strings(v: &Value, under_secret: bool, out: &mut Vec<String>) {
    match v {
        Value::String(s) if under_secret && !s.is_empty() => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| secret_strings(x, under_secret, out)),
        Value::Object(o) => o.iter().for_each(|(k, x)| {
            secret_strings(
                x,
                under_secret || k.to_ascii_lowercase().contains("secret"),
                out,
            )
        }),
        _ => {}
    }
}

fn redact(mut text: String, secrets: &[String]) -> String {
    for s in secrets {
        if text.contains(s.as_str()) {
            text = text.replace(s.as_str(), &format!("<{} characters, not shown>", s.len()));
        }
    }
    text
}

fn parse_raw(v: &Value, prefix: &str) -> Result<RawConfig, ConfigError> {
    serde_path_to_error::deserialize::<_, RawConfig>(v).map_err(|e| {
        let mut secrets = Vec::new();
        secret_strings(v, false, &mut secrets);
        let inner = e.path().to_string();
        let path = if inner == "." {
            prefix.trim_end_matches('.').to_owned()
        } else {
            format!("{prefix}{inner}")
        };
        let path = if path.is_empty() {
            "$".to_owned()
        } else {
            path
        };
        let value = lookup(v, e.path()).map(short_json).unwrap_or_default();
        err(
            path,
            redact(value, &secrets),
            redact(e.inner().to_string(), &secrets),
        )
    })
}

/// The JSON value at a serde path, to echo it in the error.
fn lookup<'a>(v: &'a Value, path: &serde_path_to_error::Path) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path.iter() {
        cur = match seg {
            serde_path_to_error::Segment::Map { key } => cur.get(key.as_str())?,
            serde_path_to_error::Segment::Seq { index } => cur.get(*index)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn compile_match(v: Value, path: &str) -> Result<RouteMatch, ConfigError> {
    let raw: RawMatch = serde_path_to_error::deserialize(&v).map_err(|e| {
        let value = lookup(&v, e.path()).map(short_json).unwrap_or_default();
        err(
            format!("{path}.{}", e.path()).replace("..", "."),
            value,
            e.inner().to_string(),
        )
    })?;
    let list =
        |o: Option<crate::config::OneOrMany>, field: &str| -> Result<Vec<String>, ConfigError> {
            let v = o
                .map(crate::config::OneOrMany::into_vec)
                .unwrap_or_default();
            if let Some(bad) = v.iter().find(|s| s.is_empty()) {
                return Err(err(
                    format!("{path}.{field}"),
                    quoted(bad),
                    "empty strings match nothing",
                ));
            }
            Ok(v)
        };
    let m = RouteMatch {
        route_names: list(raw.route_name, "route_name")?,
        virtual_hosts: list(raw.virtual_host, "virtual_host")?,
        authorities: list(raw.authority, "authority")?
            .into_iter()
            .map(|a| a.to_ascii_lowercase())
            .collect(),
        path_prefixes: list(raw.path_prefix, "path_prefix")?,
    };
    if let Some(p) = m.path_prefixes.iter().find(|p| !p.starts_with('/')) {
        return Err(err(
            format!("{path}.path_prefix"),
            quoted(p),
            "a path prefix starts with /",
        ));
    }
    if m.route_names.is_empty()
        && m.virtual_hosts.is_empty()
        && m.authorities.is_empty()
        && m.path_prefixes.is_empty()
    {
        return Err(err(
            path,
            short_json(&v),
            "give at least one of route_name, virtual_host, authority, path_prefix",
        ));
    }
    Ok(m)
}

/// Settings that exist without versions (validated for the global object
/// even when it has no versions of its own).
struct Shared {
    cookie: CookieSpec,
    key: KeySource,
    ttl: u64,
    mode: Mode,
    keys: Vec<SealKey>,
    change_on_failure: bool,
    headers: HeaderNames,
}

fn compile_shared(raw: &RawConfig, p: &str) -> Result<Shared, ConfigError> {
    let session = raw.session.clone().unwrap_or_default();
    let cookie = compile_cookie(
        &session.cookie.clone().unwrap_or_default(),
        &format!("{p}session.cookie"),
    )?;
    let key = compile_key(session.key.as_ref(), &format!("{p}session.key"))?;
    let ttl = session
        .ttl
        .or(cookie.max_age)
        .or(cookie.expires)
        .unwrap_or(defaults::TTL);
    if ttl == 0 || ttl > defaults::MAX_TTL {
        return Err(err(
            format!("{p}session.ttl"),
            ttl,
            format!("must be 1..={} seconds", defaults::MAX_TTL),
        ));
    }
    let mode = session.mode.unwrap_or(Mode::Balanced);
    let mut keys = Vec::new();
    let from_env: Option<Vec<String>> = match &session.secrets_env {
        None => None,
        Some(name) => {
            let path = format!("{p}session.secrets_env");
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(err(path, quoted(name), "not an environment variable name"));
            }
            if session.secrets.is_some() {
                return Err(err(
                    path,
                    quoted(name),
                    "give secrets or secrets_env, not both",
                ));
            }
            let Ok(list) = std::env::var(name) else {
                return Err(err(path, quoted(name), "the environment variable is not set in the Wasm VM (Envoy: vm_config.environment_variables; Istio: WasmPlugin vmConfig.env)"));
            };
            Some(
                list.split(',')
                    .map(|k| k.trim().to_owned())
                    .filter(|k| !k.is_empty())
                    .collect(),
            )
        }
    };
    let secrets_path = if from_env.is_some() {
        "session.secrets_env"
    } else {
        "session.secrets"
    };
    for (i, s) in session
        .secrets
        .iter()
        .flatten()
        .chain(from_env.iter().flatten())
        .enumerate()
    {
        let bytes = b64::decode_std(s.trim()).or_else(|| b64::decode_url(s.trim()));
        match bytes.and_then(|b| <[u8; 32]>::try_from(b).ok()) {
            Some(k) => keys.push(SealKey(k)),
            None => {
                return Err(err(
                    format!("{p}{secrets_path}[{i}]"),
                    format!("<{} characters, not shown>", s.len()),
                    "must be base64 of exactly 32 random bytes (openssl rand -base64 32)",
                ))
            }
        }
    }
    if keys.len() > 8 {
        return Err(err(
            format!("{p}session.secrets"),
            format!("<{} keys>", keys.len()),
            "at most 8 keys (the first seals, all open)",
        ));
    }
    if mode == Mode::Persistent && keys.is_empty() {
        return Err(err(
            format!("{p}session.mode"),
            "\"persistent\"",
    "persistent mode records the pod in the cookie and needs session.secrets (or secrets_env) to seal it",
        ));
    }
    if session.change_on_failure.is_some() && mode != Mode::Persistent {
        return Err(err(
            format!("{p}session.change_on_failure"),
            session.change_on_failure.unwrap_or(true),
            "only applies to session.mode \"persistent\"",
        ));
    }
    let h = raw.headers.clone().unwrap_or_default();
    let headers = HeaderNames {
        version: header_name(
            h.version,
            defaults::VERSION_HEADER,
            &format!("{p}headers.version"),
        )?,
        hash: header_name(h.hash, defaults::HASH_HEADER, &format!("{p}headers.hash"))?,
        endpoint: header_name(
            h.endpoint,
            defaults::ENDPOINT_HEADER,
            &format!("{p}headers.endpoint"),
        )?,
    };
    if headers.version == headers.hash
        || headers.version == headers.endpoint
        || headers.hash == headers.endpoint
    {
        return Err(err(
            format!("{p}headers"),
            format!("{:?}", headers.all()),
            "the three header names must differ",
        ));
    }
    Ok(Shared {
        cookie,
        key,
        ttl,
        mode,
        keys,
        change_on_failure: session.change_on_failure.unwrap_or(true),
        headers,
    })
}

fn compile_policy(raw: &RawConfig, p: &str, scope: &str) -> Result<Policy, ConfigError> {
    let shared = compile_shared(raw, p)?;
    let total = raw.weight_total.unwrap_or(defaults::WEIGHT_TOTAL);
    if total == 0 || total > defaults::MAX_TOTAL {
        return Err(err(
            format!("{p}weight_total"),
            total,
            format!("must be 1..={}", defaults::MAX_TOTAL),
        ));
    }
    let versions = compile_versions(raw.versions.as_deref().unwrap_or_default(), total, p)?;
    let mut rules = Vec::new();
    for (i, r) in raw.rules.iter().flatten().enumerate() {
        rules.push(compile_rule(r, &versions, &format!("{p}rules[{i}]"))?);
    }
    let needs_query = rules.iter().any(|r| matches!(r.source, Source::Query(_)))
        || matches!(shared.key, KeySource::Query(_));
    for (i, r) in rules.iter().enumerate() {
        if let Source::Header(h) = &r.source {
            if shared.headers.writes(h) {
                return Err(err(
                    format!("{p}rules[{i}].header"),
                    quoted(h),
                    "rules cannot read a header the filter itself writes",
                ));
            }
        }
    }
    if let KeySource::Header(h) = &shared.key {
        if shared.headers.writes(h) {
            return Err(err(
                format!("{p}session.key.name"),
                quoted(h),
                "the key cannot come from a header the filter itself writes",
            ));
        }
    }
    let seed = raw.seed.clone().unwrap_or_default();
    if seed.len() > 256 {
        return Err(err(
            format!("{p}seed"),
            quoted(&seed),
            "at most 256 characters",
        ));
    }
    Ok(Policy {
        scope: scope.to_owned(),
        versions,
        total,
        rules,
        sticky: raw.stickiness.unwrap_or(Stickiness::Sticky) == Stickiness::Sticky,
        rollback: raw.rollback.unwrap_or(false),
        seed: seed.into_bytes(),
        cookie: shared.cookie,
        key: shared.key,
        ttl: shared.ttl,
        mode: shared.mode,
        keys: shared.keys,
        change_on_failure: shared.change_on_failure,
        headers: shared.headers,
        needs_query,
    })
}

fn valid_version_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn compile_versions(raw: &[RawVersion], total: u32, p: &str) -> Result<Vec<Version>, ConfigError> {
    if raw.len() < 2 {
        return Err(err(
            format!("{p}versions"),
            format!("<{} version(s)>", raw.len()),
            "name at least two versions; the first is the default",
        ));
    }
    if raw.len() > 32 {
        return Err(err(
            format!("{p}versions"),
            format!("<{} versions>", raw.len()),
            "at most 32 versions",
        ));
    }
    let mut out: Vec<Version> = Vec::with_capacity(raw.len());
    for (i, v) in raw.iter().enumerate() {
        let vp = format!("{p}versions[{i}]");
        if !valid_version_name(&v.name) {
            return Err(err(
                format!("{vp}.name"),
                quoted(&v.name),
                "1 to 64 characters of A-Z a-z 0-9 - _ .",
            ));
        }
        let id = fnv32(v.name.as_bytes());
        if let Some(prev) = out.iter().find(|o| o.name == v.name || o.id == id) {
            return Err(err(
                format!("{vp}.name"),
                quoted(&v.name),
                format!("clashes with version {}", quoted(&prev.name)),
            ));
        }
        let weight = match (&v.ramp, v.weight) {
            (Some(_), Some(w)) => {
                return Err(err(
                    format!("{vp}.weight"),
                    w,
                    "a ramping version takes its weights from ramp.from and ramp.to",
                ))
            }
            (Some(r), None) => {
                if i == 0 {
                    return Err(err(
                        format!("{vp}.ramp"),
                        "{...}",
                        "the default (first) version takes what the others leave and cannot ramp",
                    ));
                }
                compile_ramp(r, total, &format!("{vp}.ramp"))?
            }
            (None, Some(w)) => {
                if w > total {
                    return Err(err(
                        format!("{vp}.weight"),
                        w,
                        format!("over weight_total {total}"),
                    ));
                }
                Weight::Fixed(w)
            }
            (None, None) if i == 0 => Weight::Fixed(0),
            (None, None) => {
                return Err(err(
                    format!("{vp}.weight"),
                    "",
                    "missing (only the default, first, version may omit its weight)",
                ))
            }
        };
        out.push(Version {
            name: v.name.clone(),
            id,
            weight,
        });
    }
    let others: u64 = out.iter().skip(1).map(|v| u64::from(v.weight.max())).sum();
    if others > u64::from(total) {
        return Err(err(
            format!("{p}versions"),
            format!("<weights add up to {others}>"),
            format!("weights are over weight_total {total}"),
        ));
    }
    if let Some(w) = raw.first().and_then(|v| v.weight) {
        let rest = u64::from(total) - others;
        if u64::from(w) != rest {
            return Err(err(
                format!("{p}versions[0].weight"),
                w,
                format!("the default version takes what the others leave ({rest} of {total}); give {rest} or omit it"),
            ));
        }
    }
    if let Some(first) = out.first_mut() {
        first.weight = Weight::Fixed(0);
    }
    Ok(out)
}

fn ramp_time(v: &Value, path: String) -> Result<u64, ConfigError> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| err(path, n, "Unix seconds must be a whole number >= 0")),
        Value::String(s) => time::parse_rfc3339(s).ok_or_else(|| {
            err(
                path,
                quoted(s),
                "not an RFC 3339 time such as 2026-11-21T10:00:00Z",
            )
        }),
        other => Err(err(
            path,
            short_json(other),
            "an RFC 3339 string or Unix seconds",
        )),
    }
}

fn compile_ramp(r: &RawRamp, total: u32, p: &str) -> Result<Weight, ConfigError> {
    let start = ramp_time(&r.start, format!("{p}.start"))?;
    let end = match (&r.end, r.duration) {
        (Some(e), None) => ramp_time(e, format!("{p}.end"))?,
        (None, Some(0)) => {
            return Err(err(format!("{p}.duration"), 0, "must be at least 1 second"))
        }
        (None, Some(d)) => start.saturating_add(d),
        (Some(_), Some(_)) => {
            return Err(err(
                format!("{p}.duration"),
                r.duration.unwrap_or(0),
                "give end or duration, not both",
            ))
        }
        (None, None) => return Err(err(format!("{p}.end"), "", "give end or duration")),
    };
    if end <= start {
        return Err(err(
            format!("{p}.end"),
            end,
            format!("must be after start ({start})"),
        ));
    }
    let from = r.from.unwrap_or(0);
    for (name, w) in [("from", from), ("to", r.to)] {
        if w > total {
            return Err(err(
                format!("{p}.{name}"),
                w,
                format!("over weight_total {total}"),
            ));
        }
    }
    let steps = r.steps.unwrap_or(0);
    if r.steps == Some(0) || steps > 10_000 {
        return Err(err(
            format!("{p}.steps"),
            steps,
            "must be 1..=10000 (omit it for a smooth ramp)",
        ));
    }
    Ok(Weight::Ramp {
        start,
        end,
        from,
        to: r.to,
        steps,
    })
}

fn compile_rule(r: &RawRule, versions: &[Version], p: &str) -> Result<Rule, ConfigError> {
    let version = versions
        .iter()
        .position(|v| v.name == r.version)
        .ok_or_else(|| {
            err(
                format!("{p}.version"),
                quoted(&r.version),
                format!(
                    "unknown version; known: {}",
                    versions
                        .iter()
                        .map(|v| quoted(&v.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
    let source = match (&r.header, &r.cookie, &r.query) {
        (Some(h), None, None) => {
            let name = h.to_ascii_lowercase();
            if !is_readable_header(&name) {
                return Err(err(
                    format!("{p}.header"),
                    quoted(h),
                    "not a valid request header name (use a cookie rule for cookies)",
                ));
            }
            Source::Header(name)
        }
        (None, Some(c), None) => {
            if !is_token(c) {
                return Err(err(
                    format!("{p}.cookie"),
                    quoted(c),
                    "not a valid cookie name",
                ));
            }
            Source::Cookie(c.clone())
        }
        (None, None, Some(q)) => {
            if !is_query_name(q) {
                return Err(err(
                    format!("{p}.query"),
                    quoted(q),
                    "not a valid query parameter name",
                ));
            }
            Source::Query(q.clone())
        }
        _ => return Err(err(p, "{...}", "give exactly one of header, cookie, query")),
    };
    let matcher = match (&r.value, &r.regex) {
        (Some(_), Some(_)) => {
            return Err(err(
                format!("{p}.regex"),
                "",
                "give value or regex, not both",
            ))
        }
        (Some(v), None) => {
            if v.is_empty() || v.len() > 256 {
                return Err(err(
                    format!("{p}.value"),
                    quoted(v),
                    "must be 1 to 256 characters",
                ));
            }
            Matcher::Exact(v.clone())
        }
        (None, Some(re)) => {
            if !matches!(source, Source::Header(_)) {
                return Err(err(
                    format!("{p}.regex"),
                    quoted(re),
                    "regex applies to header rules only",
                ));
            }
            if re.len() > 1024 {
                return Err(err(
                    format!("{p}.regex"),
                    quoted(re),
                    "at most 1024 characters",
                ));
            }
            let compiled = Regex::new(re)
                .map_err(|e| err(format!("{p}.regex"), quoted(re), format!("bad regex: {e}")))?;
            Matcher::Regex(compiled)
        }
        (None, None) => {
            if let Source::Query(_) = source {
                return Err(err(format!("{p}.value"), "", "query rules need a value"));
            }
            Matcher::Sentinel
        }
    };
    Ok(Rule {
        source,
        matcher,
        version,
    })
}

/// A request header a rule or key source may read (lowercase name): any
/// token but `cookie`, which cookie rules and the session read.
fn is_readable_header(name: &str) -> bool {
    is_token(name) && name != "cookie"
}

/// A query parameter name that can match: 1 to 128 bytes without the
/// separators `&`, `=`, `#`.
fn is_query_name(q: &str) -> bool {
    !q.is_empty() && q.len() <= 128 && !q.contains(['&', '=', '#'])
}

/// RFC 7230 token (header names, cookie names).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn header_name(v: Option<String>, default: &str, path: &str) -> Result<String, ConfigError> {
    let Some(v) = v else {
        return Ok(default.to_owned());
    };
    let name = v.to_ascii_lowercase();
    const RESERVED: &[&str] = &[
        "cookie",
        "set-cookie",
        "host",
        "connection",
        "content-length",
        "transfer-encoding",
        "te",
        "upgrade",
        "keep-alive",
        "proxy-connection",
        "x-forwarded-for",
        "x-request-id",
    ];
    if !is_token(&name) || RESERVED.contains(&name.as_str()) {
        return Err(err(path, quoted(&v), "not a usable request header name"));
    }
    Ok(name)
}

fn compile_cookie(c: &RawCookie, p: &str) -> Result<CookieSpec, ConfigError> {
    let name = c
        .name
        .clone()
        .unwrap_or_else(|| defaults::COOKIE_NAME.to_owned());
    if !is_token(&name) {
        return Err(err(
            format!("{p}.name"),
            quoted(&name),
            "not a valid cookie name (RFC 6265 token)",
        ));
    }
    let path = c.path.clone().unwrap_or_else(|| "/".to_owned());
    if !path.starts_with('/')
        || path.len() > 256
        || path
            .bytes()
            .any(|b| b == b';' || !(0x20..0x7f).contains(&b))
    {
        return Err(err(
            format!("{p}.path"),
            quoted(&path),
            "must start with / and hold no ; or control characters",
        ));
    }
    if let Some(d) = &c.domain {
        let ok = !d.is_empty()
            && d.len() <= 253
            && d.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'));
        if !ok {
            return Err(err(
                format!("{p}.domain"),
                quoted(d),
                "not a valid cookie domain",
            ));
        }
    }
    for (field, v) in [("max_age", c.max_age), ("expires", c.expires)] {
        if let Some(s) = v {
            if s == 0 || s > defaults::MAX_TTL {
                return Err(err(
                    format!("{p}.{field}"),
                    s,
                    format!("must be 1..={} seconds", defaults::MAX_TTL),
                ));
            }
        }
    }
    let same_site = match c.same_site.as_deref() {
        None => None,
        Some(s) => Some(match s.to_ascii_lowercase().as_str() {
            "none" => SameSite::None,
            "lax" => SameSite::Lax,
            "strict" => SameSite::Strict,
            _ => {
                return Err(err(
                    format!("{p}.same_site"),
                    quoted(s),
                    "must be None, Lax or Strict",
                ))
            }
        }),
    };
    let secure = match c.secure {
        None | Some(SecureSetting::Fixed(false)) => Secure::Never,
        Some(SecureSetting::Fixed(true)) => Secure::Always,
        Some(SecureSetting::Auto) => Secure::Auto,
    };
    if same_site == Some(SameSite::None) && secure == Secure::Never {
        return Err(err(
            format!("{p}.same_site"),
            "\"None\"",
            "SameSite=None requires \"secure\": true or \"auto\" (browsers drop it otherwise)",
        ));
    }
    // Like ingress-nginx, the compatibility switch is accepted with any
    // SameSite value; it only ever drops `SameSite=None`.
    let compat = c.same_site_none_compat.unwrap_or(false);
    Ok(CookieSpec {
        name,
        path,
        domain: c.domain.clone(),
        max_age: c.max_age,
        expires: c.expires,
        secure,
        http_only: c.http_only.unwrap_or(true),
        same_site,
        same_site_none_compat: compat,
    })
}

fn compile_key(k: Option<&RawKey>, p: &str) -> Result<KeySource, ConfigError> {
    let Some(k) = k else {
        return Ok(KeySource::Cookie);
    };
    let need_name = |what: &str| -> Result<String, ConfigError> {
        match &k.name {
            Some(n) if !n.is_empty() && n.len() <= 128 => Ok(n.clone()),
            Some(n) => Err(err(
                format!("{p}.name"),
                quoted(n),
                format!("not a valid {what} name"),
            )),
            None => Err(err(
                format!("{p}.name"),
                "",
                format!("key from {what} needs a name"),
            )),
        }
    };
    let src = match k.from.as_str() {
        "cookie" => KeySource::Cookie,
        "header" => {
            let n = need_name("header")?.to_ascii_lowercase();
            if !is_readable_header(&n) {
                return Err(err(
                    format!("{p}.name"),
                    quoted(&n),
                    "not a valid request header name",
                ));
            }
            KeySource::Header(n)
        }
        "query" => {
            let n = need_name("query")?;
            if !is_query_name(&n) {
                return Err(err(
                    format!("{p}.name"),
                    quoted(&n),
                    "not a valid query parameter name",
                ));
            }
            KeySource::Query(n)
        }
        "client_ip" => {
            let hops = k.xff_trusted_hops.unwrap_or(0);
            if hops > 16 {
                return Err(err(format!("{p}.xff_trusted_hops"), hops, "must be 0..=16"));
            }
            KeySource::ClientIp { hops }
        }
        other => {
            return Err(err(
                format!("{p}.from"),
                quoted(other),
                "must be cookie, header, query or client_ip",
            ))
        }
    };
    if k.name.is_some() && matches!(src, KeySource::Cookie | KeySource::ClientIp { .. }) {
        return Err(err(
            format!("{p}.name"),
            quoted(k.name.as_deref().unwrap_or("")),
            format!("not used with from {}", quoted(&k.from)),
        ));
    }
    if k.xff_trusted_hops.is_some() && !matches!(src, KeySource::ClientIp { .. }) {
        return Err(err(
            format!("{p}.xff_trusted_hops"),
            k.xff_trusted_hops.unwrap_or(0),
            "only applies with from \"client_ip\"",
        ));
    }
    Ok(src)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_plan_reads_what_it_can() {
        let plan = invalid_plan(
            r#"{"on_invalid_config": "refuse", "headers": {"version": "X-Ver"},
                "routes": [{"headers": {"hash": "x-h", "endpoint": "bad name"}}],
                "versions": [{"name": "v1", "weight": 200}]}"#,
        );
        assert!(plan.refuse);
        assert_eq!(
            plan.override_headers,
            [
                "x-canary-version",
                "x-sticky-hash",
                "x-sticky-endpoint",
                "x-ver",
                "x-h"
            ]
        );
        let plan = invalid_plan("{not json");
        assert!(!plan.refuse);
        assert_eq!(plan.override_headers.len(), 3);
        assert!(!invalid_plan(r#"{"on_invalid_config": "pass_through"}"#).refuse);
    }
}
