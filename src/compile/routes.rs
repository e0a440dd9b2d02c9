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
    let mut path_regexes = Vec::new();
    for r in list(raw.path_regex, "path_regex")? {
        path_regexes.push(path_regex(&r, &format!("{path}.path_regex"))?);
    }
    let m = RouteMatch {
        route_names: list(raw.route_name, "route_name")?,
        virtual_hosts: list(raw.virtual_host, "virtual_host")?,
        authorities,
        authority_patterns,
        path_exact: list(raw.path_exact, "path_exact")?,
        path_prefixes: list(raw.path_prefix, "path_prefix")?,
        path_separated_prefixes: list(raw.path_separated_prefix, "path_separated_prefix")?,
        path_regexes,
    };
    for (field, values, what) in [
        ("path_exact", &m.path_exact, "a path"),
        ("path_prefix", &m.path_prefixes, "a path prefix"),
        (
            "path_separated_prefix",
            &m.path_separated_prefixes,
            "a path prefix",
        ),
    ] {
        if let Some(p) = values.iter().find(|p| !p.starts_with('/')) {
            return Err(err(
                format!("{path}.{field}"),
                quoted(p),
                format!("{what} starts with /"),
            ));
        }
    }
    // The new keys say what they cannot match (path_prefix stays as it
    // always was).
    for (field, values) in [
        ("path_exact", &m.path_exact),
        ("path_separated_prefix", &m.path_separated_prefixes),
    ] {
        if let Some(p) = values.iter().find(|p| p.contains(['?', '#'])) {
            return Err(err(
                format!("{path}.{field}"),
                quoted(p),
                "the path is matched without its query string and fragment: drop the ? or # part",
            ));
        }
    }
    if let Some(p) = m
        .path_separated_prefixes
        .iter()
        .find(|p| p.len() > 1 && p.ends_with('/'))
    {
        return Err(err(
            format!("{path}.path_separated_prefix"),
            quoted(p),
            "ends with /: a separated prefix matches whole path elements (\"/a\" matches /a, /a/ and /a/b, not /ab); for paths that must go on after the slash use path_prefix",
        ));
    }
    if m.route_names.is_empty()
        && m.virtual_hosts.is_empty()
        && m.authorities.is_empty()
        && m.path_exact.is_empty()
        && m.path_prefixes.is_empty()
        && m.path_separated_prefixes.is_empty()
        && m.path_regexes.is_empty()
    {
        return Err(err(
            path,
            short_json(&v),
            "give at least one of route_name, virtual_host, authority, path_exact, path_prefix, path_separated_prefix, path_regex",
        ));
    }
    Ok(m)
}

/// A `path_regex`: regex-lite, at most 1024 characters (as rule regexes).
fn path_regex(r: &str, path: &str) -> Result<Regex, ConfigError> {
    if r.len() > 1024 {
        return Err(err(path, quoted(r), "at most 1024 characters"));
    }
    Regex::new(r).map_err(|e| err(path, quoted(r), format!("bad regex: {e}")))
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
