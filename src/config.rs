//! The plugin configuration as users write it (JSON), before validation.
//!
//! These types mirror the JSON one to one and reject unknown keys. They are
//! turned into a [`crate::Policy`] by [`crate::compile`], which checks every
//! value and cross-reference; nothing here is used on the request path.

use serde::Deserialize;

/// The whole plugin configuration: global settings plus per-route overrides.
///
/// A route entry is the global object with the entry's keys merged in
/// (objects key by key, arrays and scalars replaced); see
/// [`crate::compile::compile_json`].
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// The versions traffic is split between; the first is the default.
    pub versions: Option<Vec<RawVersion>>,
    /// Sum that weights are shares of (default 100).
    pub weight_total: Option<u32>,
    /// Explicit targeting, evaluated first, first match wins.
    pub rules: Option<Vec<RawRule>>,
    /// `sticky` (default): remember the version a user was given.
    /// `legacy`: decide every request afresh.
    pub stickiness: Option<Stickiness>,
    /// When a remembered version has weight 0: `true` moves its users back
    /// by weight at once, `false` (default) lets them stay until the cookie
    /// expires (drain).
    pub rollback: Option<bool>,
    /// Mixed into the bucket hash; change it to reshuffle who goes first.
    pub seed: Option<String>,
    /// The session: cookie, key source, signing, pinning mode.
    pub session: Option<RawSession>,
    /// Names of the request headers the filter writes for Envoy.
    pub headers: Option<RawHeaders>,
    /// Per-route overrides, first match wins.
    pub routes: Option<Vec<serde_json::Value>>,
    /// Record the decision in Envoy's filter state (`wasm.sticky_canary.*`)
    /// for access logs and Istio's Telemetry CEL (default false).
    pub filter_state: Option<bool>,
    /// Name of a response header that explains the decision (default:
    /// none). For debugging; it never carries secrets or endpoints.
    pub debug_header: Option<String>,
    /// What the filter does when this config is invalid: `pass_through`
    /// (default: keep the last good config of this plugin, else pass every
    /// request through) or `refuse` (Envoy rejects the filter config).
    pub on_invalid_config: Option<OnInvalidConfig>,
}

/// What the filter does with an invalid config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnInvalidConfig {
    /// Keep serving: the last good config of this plugin in this VM, or
    /// pass-through when there is none. Logged and counted.
    PassThrough,
    /// Refuse the config: `on_configure` returns false and Envoy rejects the
    /// filter (with Istio's ECDS delivery and no earlier config, the
    /// listener then answers 500 to every request).
    Refuse,
}

/// Whether the version a user was given is remembered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stickiness {
    /// Remember the version in the session cookie (ingress-nginx `sticky`).
    Sticky,
    /// Decide every request from rules and the weighted bucket only.
    Legacy,
}

/// One version (a subset of pods) and its share of weighted traffic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVersion {
    /// The value written to the version header; routes match on it.
    pub name: String,
    /// Share of `weight_total`. The default (first) version may omit it and
    /// takes what the others leave.
    pub weight: Option<u32>,
    /// A timed ramp that moves the weight from `from` to `to`.
    pub ramp: Option<RawRamp>,
}

/// A timed weight ramp, computed from the host's clock.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRamp {
    /// Start: RFC 3339 UTC (`2026-11-21T10:00:00Z`) or Unix seconds.
    pub start: serde_json::Value,
    /// End, same forms as `start`; or give `duration`.
    pub end: Option<serde_json::Value>,
    /// Length of the ramp in seconds (instead of `end`).
    pub duration: Option<u64>,
    /// Weight before `start` (default 0).
    pub from: Option<u32>,
    /// Weight from `end` on.
    pub to: u32,
    /// Number of equal steps (default: move smoothly, one weight unit at a time).
    pub steps: Option<u32>,
}

/// An explicit targeting rule: exactly one of `header`, `cookie`, `query`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Request header name to inspect.
    pub header: Option<String>,
    /// Cookie name to inspect.
    pub cookie: Option<String>,
    /// Query parameter name to inspect.
    pub query: Option<String>,
    /// Exact value that selects the version; other values fall through.
    pub value: Option<String>,
    /// Regex (regex-lite) on the header value; header rules only.
    pub regex: Option<String>,
    /// The version the rule sends to.
    pub version: String,
}

/// Session settings.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSession {
    /// The session cookie's name and attributes.
    pub cookie: Option<RawCookie>,
    /// Where the session key comes from (default: a generated cookie).
    pub key: Option<RawKey>,
    /// Server-side lifetime of a session in seconds (default: the cookie's
    /// `max_age`, else `expires`, else 86400).
    pub ttl: Option<u64>,
    /// `balanced` (consistent hash) or `persistent` (exact endpoint).
    pub mode: Option<Mode>,
    /// Keys (base64 of 32 bytes) that seal the cookie; the first seals,
    /// all open.
    pub secrets: Option<Vec<String>>,
    /// Name of an environment variable of the Wasm VM holding the keys,
    /// comma-separated (instead of `secrets`, so they stay out of the
    /// plugin config).
    pub secrets_env: Option<String>,
    /// Persistent mode: re-pin to the pod that answered when the pinned
    /// one failed (default true).
    pub change_on_failure: Option<bool>,
}

/// How the user is pinned to a pod inside the version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Consistent hash on the sticky-hash header (RING_HASH or MAGLEV).
    Balanced,
    /// The exact endpoint, recorded in the cookie, through `override_host`.
    Persistent,
}

/// Cookie name and attributes.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawCookie {
    /// Cookie name (default `sticky-canary`).
    pub name: Option<String>,
    /// `Path` (default `/`).
    pub path: Option<String>,
    /// `Domain` (default: none, host-only cookie).
    pub domain: Option<String>,
    /// `Max-Age` in seconds (default: none).
    pub max_age: Option<u64>,
    /// Seconds from now for a legacy `Expires` attribute (default: none).
    pub expires: Option<u64>,
    /// `Secure`: `true`, `false` (default) or `"auto"` (only when the
    /// request came over HTTPS, as ingress-nginx does).
    pub secure: Option<SecureSetting>,
    /// `HttpOnly` (default true).
    pub http_only: Option<bool>,
    /// `SameSite`: `None`, `Lax` or `Strict` (default: not sent).
    pub same_site: Option<String>,
    /// Omit `SameSite=None` for browsers known to reject it (default false).
    pub same_site_none_compat: Option<bool>,
}

/// The `secure` setting of the cookie: a boolean or `"auto"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecureSetting {
    /// Always (`true`) or never (`false`).
    Fixed(bool),
    /// When the request came over HTTPS (`:scheme` or `x-forwarded-proto`).
    Auto,
}

impl<'de> Deserialize<'de> for SecureSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = SecureSetting;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false or \"auto\"")
            }
            fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<SecureSetting, E> {
                Ok(SecureSetting::Fixed(b))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<SecureSetting, E> {
                match s {
                    "auto" => Ok(SecureSetting::Auto),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(s), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Where the session key comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    /// `cookie` (generated), `header`, `query` or `client_ip`.
    pub from: String,
    /// Header or query parameter name.
    pub name: Option<String>,
    /// `client_ip`: how many trusted proxies append to X-Forwarded-For
    /// (0: Envoy's own client address).
    pub xff_trusted_hops: Option<u32>,
}

/// Names of the route-override headers the filter writes.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawHeaders {
    /// Version header (default `x-canary-version`).
    pub version: Option<String>,
    /// Sticky-hash header (default `x-sticky-hash`).
    pub hash: Option<String>,
    /// Pinned-endpoint header for `override_host` (default `x-sticky-endpoint`).
    pub endpoint: Option<String>,
}

/// What a per-route entry matches on; every field given must match.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    /// `xds.route_name`, any of.
    pub route_name: Option<OneOrMany>,
    /// `xds.virtual_host_name`, any of.
    pub virtual_host: Option<OneOrMany>,
    /// `:authority` without port, `*` wildcards, any of.
    pub authority: Option<OneOrMany>,
    /// The path equals one of these (the `:path` without its query).
    pub path_exact: Option<OneOrMany>,
    /// `:path` string prefix, any of.
    pub path_prefix: Option<OneOrMany>,
    /// `:path` prefix of whole path elements, any of (`/a` matches `/a` and
    /// `/a/b`, not `/ab`).
    pub path_separated_prefix: Option<OneOrMany>,
    /// A regex-lite pattern searched in the path, any of.
    pub path_regex: Option<OneOrMany>,
}

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single string.
    One(String),
    /// A list of strings.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The strings, as a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}
