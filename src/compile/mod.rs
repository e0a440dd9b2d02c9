//! Parse, then compile: JSON text -> [`crate::config::RawConfig`] ->
//! validated [`Plugin`].
//!
//! Every check happens here, once, in `on_configure`: regexes compiled,
//! weights summed, names checked, versions cross-referenced. An error names
//! the field path and the offending value. One file per config section:
//! [`versions`](self) (`versions.rs`), rules (`rules.rs`), session and
//! headers (`session.rs`), route matches (`routes.rs`), and the name checks
//! they share (`names.rs`).

mod error;
mod names;
mod routes;
mod rules;
mod session;
mod versions;

pub use error::ConfigError;
pub use session::{decode_secret, encode_secret, secrets_list};
pub use versions::{format_time, parse_time};

use crate::config::{RawConfig, Stickiness};
use crate::metrics::Names;
use crate::policy::{defaults, KeySource, Plugin, Policy, RouteEntry, RouteMatch, RuleSource};
use error::{err, lookup, quoted, redact, secret_strings, short_json};
use names::{is_token, valid_route_name};
use serde_json::{Map, Value};
use std::rc::Rc;

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
    let mut counters = Names::default();
    let passthrough = counters.passthrough();
    let (global_policy, global_headers) = match global_raw.versions {
        Some(_) => {
            let policy = compile_policy(&global_raw, "", "global", &mut counters)?;
            let headers = policy.headers.clone();
            (Some(Rc::new(policy)), headers)
        }
        // Without versions the global object only holds defaults for the
        // route entries (rules included, checked against each entry's
        // versions). Validate the shared settings now so errors name the
        // global path.
        None => (None, session::compile_session(&global_raw, "")?.headers),
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
            Some(Value::String(s)) if valid_route_name(&s) => s,
            Some(v) => {
                return Err(err(
                    format!("{path}.name"),
                    short_json(&v),
                    "1 to 64 characters of A-Z a-z 0-9 - _ . (it labels the metrics), not \"global\" (the top-level policy's label)",
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
            Some(m) => routes::compile_match(m, &format!("{path}.match"))?,
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
            Some(Rc::new(compile_policy(
                &raw,
                &format!("{path}."),
                &name,
                &mut counters,
            )?))
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
    let needs_client_address = global_policy
        .iter()
        .chain(entries.iter().filter_map(|e| e.policy.as_ref()))
        .any(|p| p.needs_client_address());
    Ok(Plugin {
        counter_names: counters.into_vec(),
        passthrough,
        needs_client_address,
        override_headers,
        needs_route_name: entries.iter().any(|e| !e.matcher.route_names.is_empty()),
        needs_virtual_host: entries.iter().any(|e| !e.matcher.virtual_hosts.is_empty()),
        global: global_policy,
        routes: entries,
    })
}

/// A route entry matched by exactly one literal path (one value of
/// `path_exact`, `path_prefix` or `path_separated_prefix`, no `path_regex`)
/// scopes its cookie to that path when neither the entry nor the global
/// object sets `session.cookie.path`: ingress-nginx defaults the cookie Path
/// to the location's path as the Ingress writes it, whatever its type. A
/// path that is not a usable cookie path keeps `/`.
fn default_cookie_path(merged: &mut Map<String, Value>, m: &RouteMatch) {
    let Some(prefix) = m.literal_path() else {
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
            .or_insert_with(|| Value::String(prefix.to_owned()));
    }
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

fn compile_policy(
    raw: &RawConfig,
    p: &str,
    scope: &str,
    counters: &mut Names,
) -> Result<Policy, ConfigError> {
    let shared = session::compile_session(raw, p)?;
    let total = raw.weight_total.unwrap_or(defaults::WEIGHT_TOTAL);
    if total == 0 || total > defaults::MAX_TOTAL {
        return Err(err(
            format!("{p}weight_total"),
            total,
            format!("must be 1..={}", defaults::MAX_TOTAL),
        ));
    }
    let versions =
        versions::compile_versions(raw.versions.as_deref().unwrap_or_default(), total, p)?;
    let mut rules = Vec::new();
    for (i, r) in raw.rules.iter().flatten().enumerate() {
        rules.push(rules::compile_rule(
            r,
            &versions,
            &format!("{p}rules[{i}]"),
        )?);
    }
    for (i, r) in rules.iter().enumerate() {
        if let RuleSource::Header(h) = &r.source {
            if shared.headers.writes(h) {
                return Err(err(
                    format!("{p}rules[{i}].header"),
                    quoted(h),
                    "rules cannot read a header the filter itself writes",
                ));
            }
        }
    }
    if let KeySource::Header(h) = &shared.key_source {
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
    let debug_header = match &raw.debug_header {
        None => None,
        Some(h) => {
            let name = h.to_ascii_lowercase();
            if !is_token(&name)
                || matches!(
                    name.as_str(),
                    "set-cookie" | "content-length" | "transfer-encoding" | "connection"
                )
            {
                return Err(err(
                    format!("{p}debug_header"),
                    quoted(h),
                    "not a usable response header name",
                ));
            }
            Some(name)
        }
    };
    let names: Vec<&str> = versions.iter().map(|v| v.name.as_str()).collect();
    let counters = counters.policy(scope, &names, shared.key_source != KeySource::Cookie);
    let mut read_cookies = vec![shared.cookie.name.clone()];
    for r in &rules {
        if let RuleSource::Cookie(c) = &r.source {
            if !read_cookies.contains(c) {
                read_cookies.push(c.clone());
            }
        }
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
        key_source: shared.key_source,
        ttl: shared.ttl,
        mode: shared.mode,
        seal_keys: shared.seal_keys,
        change_on_failure: shared.change_on_failure,
        headers: shared.headers,
        filter_state: raw.filter_state.unwrap_or(false),
        debug_header,
        counters,
        opened: Default::default(),
        read_cookies,
    })
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
