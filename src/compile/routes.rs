//! The `match` of a route entry.

use super::error::{err, lookup, quoted, short_json, ConfigError};
use crate::config::RawMatch;
use crate::policy::RouteMatch;
use regex_lite::Regex;
use serde_json::Value;

pub(crate) fn compile_match(v: Value, path: &str) -> Result<RouteMatch, ConfigError> {
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
    let mut authorities = Vec::new();
    let authority_patterns = list(raw.authority, "authority")?;
    for a in &authority_patterns {
        authorities.push(authority_pattern(a, &format!("{path}.authority"))?);
    }
    let m = RouteMatch {
        route_names: list(raw.route_name, "route_name")?,
        virtual_hosts: list(raw.virtual_host, "virtual_host")?,
        authorities,
        authority_patterns,
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

/// An authority pattern (`*.shop.example.com`, `api.*`, `[2001:db8::1]`)
/// as an anchored, case-insensitive regex over the host without its port
/// (`*` matches any run of characters). A pattern with a port could never
/// match, so it is an error.
fn authority_pattern(a: &str, path: &str) -> Result<Regex, ConfigError> {
    let host_chars = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '*');
    let literal = a
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .is_some_and(|ip| {
            !ip.is_empty()
                && ip
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        });
    if !literal && a.contains(':') {
        return Err(err(
            path,
            quoted(a),
            "authority patterns match the host without its port: drop the port",
        ));
    }
    if !literal && !a.chars().all(host_chars) {
        return Err(err(
            path,
            quoted(a),
            "a host name pattern: letters, digits, - _ . and * wildcards",
        ));
    }
    let mut re = String::from("(?i)^");
    for c in a.chars() {
        if c == '*' {
            re.push_str(".*");
        } else {
            re.push_str(&regex_lite::escape(&c.to_string()));
        }
    }
    re.push('$');
    Regex::new(&re).map_err(|e| err(path, quoted(a), format!("bad pattern: {e}")))
}

#[cfg(test)]
mod tests {
    use super::authority_pattern;

    #[test]
    fn authority_patterns() {
        let m = |p: &str, host: &str| authority_pattern(p, "a").unwrap().is_match(host);
        assert!(m("*.example.com", "a.example.com"));
        assert!(m("*.example.com", "A.B.Example.COM"));
        assert!(!m("*.example.com", "example.com"));
        assert!(m("api.*", "api.test"));
        assert!(m("*", "anything"));
        assert!(m("a*b*c", "axxbyyc"));
        assert!(!m("a*b*c", "axxbyy"));
        assert!(!m("a.b", "axb"), "a dot is a dot");
        assert!(m("[2001:db8::1]", "[2001:DB8::1]"));
        for bad in ["example.com:8080", "*:80", "exa mple.com", "ex(a)mple"] {
            assert!(authority_pattern(bad, "a").is_err(), "{bad}");
        }
    }
}
