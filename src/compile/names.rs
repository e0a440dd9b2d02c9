//! Name checks shared by the config sections: header, cookie, query
//! parameter, version and route entry names.

/// A request header a rule or key source may read (lowercase name): any
/// token but `cookie`, which cookie rules and the session read.
pub(crate) fn is_readable_header(name: &str) -> bool {
    is_token(name) && name != "cookie"
}

/// A query parameter name that can match: 1 to 128 bytes without the
/// separators `&`, `=`, `#`.
pub(crate) fn is_query_name(q: &str) -> bool {
    !q.is_empty() && q.len() <= 128 && !q.contains(['&', '=', '#'])
}

/// RFC 7230 token (header names, cookie names).
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

pub(crate) fn valid_version_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A route entry name: 1 to 64 characters of `A-Z a-z 0-9 - _ .` (it is a
/// metric label value), and not `global`, which labels the top-level
/// policy.
pub(crate) fn valid_route_name(s: &str) -> bool {
    s != "global" && valid_version_name(s)
}
