//! Route selection: which policy covers a request. The model
//! ([`crate::policy::RouteEntry`], [`RouteMatch`]) lives in
//! [`crate::policy`]; this module reads the request against it, once per
//! request, first matching entry wins.

use crate::policy::{Plugin, Policy, RouteMatch};
use crate::request::Request;
use std::fmt;
use std::rc::Rc;

impl Plugin {
    /// The policy for a request: the first route entry that matches, else
    /// the global policy. `None`: pass the request through untouched (a
    /// matching disabled entry, or no entry and no global `versions`). The
    /// `Rc` is the handle the response phase keeps.
    pub fn select(&self, req: &Request<'_>) -> Option<&Rc<Policy>> {
        if self.routes.is_empty() {
            return self.global.as_ref();
        }
        // The path and authority once, not once per entry.
        let parts = RequestParts {
            path: req.path(),
            authority: req.authority(),
        };
        match self
            .routes
            .iter()
            .find(|e| e.matcher.matches_parts(req, &parts))
        {
            Some(entry) => entry.policy.as_ref(),
            None => self.global.as_ref(),
        }
    }
}

/// What route entries match on, read from the request once.
struct RequestParts<'a> {
    path: &'a str,
    authority: Option<&'a str>,
}

impl RouteMatch {
    /// Does this entry match the request? Every non-empty list must have a
    /// hit.
    pub fn matches(&self, req: &Request<'_>) -> bool {
        let parts = RequestParts {
            path: req.path(),
            authority: req.authority(),
        };
        self.matches_parts(req, &parts)
    }

    fn matches_parts(&self, req: &Request<'_>, parts: &RequestParts<'_>) -> bool {
        let any = |list: &[String], v: Option<&str>| {
            list.is_empty() || v.is_some_and(|v| list.iter().any(|x| x == v))
        };
        let path = parts.path;
        any(&self.route_names, req.route_name)
            && any(&self.virtual_hosts, req.virtual_host)
            && (self.authorities.is_empty()
                || parts
                    .authority
                    .is_some_and(|a| self.authorities.iter().any(|p| p.is_match(a))))
            && (self.path_exact.is_empty() || self.path_exact.iter().any(|p| p == path))
            && (self.path_prefixes.is_empty()
                || self
                    .path_prefixes
                    .iter()
                    .any(|p| path.starts_with(p.as_str())))
            && (self.path_separated_prefixes.is_empty()
                || self
                    .path_separated_prefixes
                    .iter()
                    .any(|p| separated_prefix(p, path)))
            && (self.path_regexes.is_empty() || self.path_regexes.iter().any(|r| r.is_match(path)))
    }

    /// The path a cookie of this entry is scoped to by default: its only
    /// literal path (one value of `path_exact`, `path_prefix` or
    /// `path_separated_prefix`, and no `path_regex`), as ingress-nginx
    /// scopes its cookie to the location's path; `None` otherwise.
    pub fn literal_path(&self) -> Option<&str> {
        if !self.path_regexes.is_empty() {
            return None;
        }
        let mut all = self
            .path_exact
            .iter()
            .chain(&self.path_prefixes)
            .chain(&self.path_separated_prefixes);
        match (all.next(), all.next()) {
            (Some(p), None) => Some(p.as_str()),
            _ => None,
        }
    }
}

/// Does `path` start with the whole path elements of `prefix`? `/a/b`
/// matches `/a/b` and `/a/b/...`, not `/a/bc`; `/` matches every path.
/// (A prefix that ends with `/` other than `/` itself is refused by
/// [`crate::compile`].)
pub fn separated_prefix(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/'),
        None => false,
    }
}

/// The match as the config writes it, for people:
/// `authority shop.example.com, path_separated_prefix /cart|/checkout`.
impl fmt::Display for RouteMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let regexes: Vec<String> = self
            .path_regexes
            .iter()
            .map(|r| r.as_str().to_owned())
            .collect();
        let mut first = true;
        for (what, list) in [
            ("route_name", &self.route_names),
            ("virtual_host", &self.virtual_hosts),
            ("authority", &self.authority_patterns),
            ("path_exact", &self.path_exact),
            ("path_prefix", &self.path_prefixes),
            ("path_separated_prefix", &self.path_separated_prefixes),
            ("path_regex", &regexes),
        ] {
            if list.is_empty() {
                continue;
            }
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{what} {}", list.join("|"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::separated_prefix;
    use crate::request::Request;

    #[test]
    fn separated_prefixes_match_whole_path_elements() {
        for (prefix, path, want) in [
            ("/foo/bar", "/foo/bar", true),
            ("/foo/bar", "/foo/bar/", true),
            ("/foo/bar", "/foo/bar/x", true),
            ("/foo/bar", "/foo/barx", false),
            ("/foo/bar", "/foo/ba", false),
            ("/foo/bar", "/foo", false),
            ("/foo/bar", "/Foo/bar", false),
            ("/", "/", true),
            ("/", "/anything/at/all", true),
        ] {
            assert_eq!(separated_prefix(prefix, path), want, "{prefix} {path}");
        }
    }

    fn entry(m: &str) -> crate::Plugin {
        let json = format!(
            r#"{{"routes": [{{"name": "e", "match": {m}, "versions": [{{"name": "a"}}, {{"name": "b", "weight": 0}}]}}]}}"#
        );
        match crate::compile_json(&json) {
            Ok(p) => p,
            Err(e) => panic!("{json}: {e}"),
        }
    }

    fn selects(p: &crate::Plugin, path: &str) -> bool {
        let headers: [crate::Header<'_>; 1] = [(b":path", path.as_bytes())];
        let req = Request {
            headers: &headers,
            route_name: None,
            virtual_host: None,
            client_address: None,
            now: 0,
        };
        p.select(&req).is_some()
    }

    #[test]
    fn each_path_key_matches_the_path_without_its_query() {
        let exact = entry(r#"{"path_exact": "/a/b"}"#);
        let prefix = entry(r#"{"path_prefix": "/a/b"}"#);
        let separated = entry(r#"{"path_separated_prefix": "/a/b"}"#);
        let regex = entry(r#"{"path_regex": "(?i)^/a/b(/|$)"}"#);
        for (path, e, p, s, r) in [
            ("/a/b", true, true, true, true),
            ("/a/b?x=1", true, true, true, true),
            ("/a/b#f", true, true, true, true),
            ("/a/b/", false, true, true, true),
            ("/a/b/c", false, true, true, true),
            ("/a/bc", false, true, false, false),
            ("/A/B", false, false, false, true),
            ("/a", false, false, false, false),
        ] {
            assert_eq!(selects(&exact, path), e, "path_exact {path}");
            assert_eq!(selects(&prefix, path), p, "path_prefix {path}");
            assert_eq!(selects(&separated, path), s, "path_separated_prefix {path}");
            assert_eq!(selects(&regex, path), r, "path_regex {path}");
        }
    }

    #[test]
    fn path_keys_combine_with_and_and_display_as_written() {
        let p = entry(
            r#"{"authority": "*.example.com", "path_separated_prefix": ["/api", "/v2"], "path_regex": "\\.json$"}"#,
        );
        assert_eq!(
            p.routes[0].matcher.to_string(),
            r"authority *.example.com, path_separated_prefix /api|/v2, path_regex \.json$"
        );
        assert_eq!(p.routes[0].matcher.literal_path(), None);
        let e = entry(r#"{"path_exact": "/x"}"#);
        assert_eq!(e.routes[0].matcher.literal_path(), Some("/x"));
    }
}
