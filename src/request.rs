//! The request view: what the adapter read from the host for one request,
//! and how the filter reads it. Headers are bytes as Envoy gives them; a
//! value that is not UTF-8 counts as absent, a header or query parameter
//! sent twice counts as absent, and values over [`MAX_VALUE`] count as
//! absent, so nothing malformed steers a decision.

use std::net::IpAddr;

/// Longest header, cookie or query value a rule or key source will look at;
/// longer values are treated as absent.
pub const MAX_VALUE: usize = 1024;

/// One request header as the host gives it: lowercase name and value, both
/// as bytes (Envoy passes bytes that are not UTF-8 through), borrowed from
/// the host's serialised header map ([`crate::headermap::read_into`]): the
/// filter reads a request without copying a header.
pub type Header<'a> = (&'a [u8], &'a [u8]);

/// A header that owns its name and value, for callers that build a request
/// themselves (the command-line tool, tests).
pub type OwnedHeader = (Vec<u8>, Vec<u8>);

/// Borrowed [`Header`]s of [`OwnedHeader`]s.
pub fn borrow_headers(owned: &[OwnedHeader]) -> Vec<Header<'_>> {
    owned
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect()
}

/// Cookies found in a request, as `(name, value)`: inline up to 4 (a
/// decision reads one or two), on the heap beyond.
pub type Cookies<'a> = smallvec::SmallVec<[(&'a str, &'a str); 4]>;

/// What the adapter read from the host for one request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// All request headers, lowercase names, as Envoy lists them (pseudo
    /// headers such as `:path` and `:authority` included). A name or value
    /// that is not UTF-8 counts as absent everywhere.
    pub headers: &'a [Header<'a>],
    /// `xds.route_name`, when some route entry needs it.
    pub route_name: Option<&'a str>,
    /// `xds.virtual_host_name`, when some route entry needs it.
    pub virtual_host: Option<&'a str>,
    /// `source.address` (`ip:port`), when the key comes from the client IP.
    pub client_address: Option<&'a str>,
    /// Current time, Unix seconds.
    pub now: u64,
}

/// A lookup that distinguishes absent from ambiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// Not there (or too long to be genuine, or not UTF-8).
    Absent,
    /// Exactly one value.
    One(&'a str),
    /// Sent more than once: treated like absent by callers.
    Many,
}

impl<'a> Lookup<'a> {
    /// The single value, if there is exactly one.
    pub fn one(self) -> Option<&'a str> {
        match self {
            Lookup::One(v) => Some(v),
            _ => None,
        }
    }

    /// What a list of values amounts to: none, exactly one, or more.
    pub fn of(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut it = values.into_iter();
        match (it.next(), it.next()) {
            (None, _) => Lookup::Absent,
            (Some(v), None) => Lookup::One(v),
            _ => Lookup::Many,
        }
    }
}

fn name_is(k: &[u8], name: &str) -> bool {
    k.eq_ignore_ascii_case(name.as_bytes())
}

impl<'a> Request<'a> {
    /// A header by lowercase name; values over [`MAX_VALUE`] or not UTF-8
    /// count as absent.
    pub fn header(&self, name: &str) -> Lookup<'a> {
        match self.header_any_length(name) {
            Lookup::One(v) if v.len() > MAX_VALUE => Lookup::Absent,
            other => other,
        }
    }

    /// Was this header sent at all (any number of times, any length or
    /// encoding)?
    pub fn header_present(&self, name: &str) -> bool {
        self.headers.iter().any(|(k, _)| name_is(k, name))
    }

    /// A header by lowercase name, whatever its length (`:path` may be
    /// long). Copies that are not UTF-8 are skipped.
    fn header_any_length(&self, name: &str) -> Lookup<'a> {
        Lookup::of(
            self.headers
                .iter()
                .filter(|(k, _)| name_is(k, name))
                .filter_map(|(_, v)| std::str::from_utf8(v).ok()),
        )
    }

    /// Every value of a cookie, across every `cookie` header (HTTP/1 sends
    /// one, HTTP/2 may send crumbs), in order. A `name=value` piece that is
    /// not UTF-8 is skipped; the other cookies of the header still count.
    pub fn cookie_values(&self, name: &str) -> impl Iterator<Item = &'a str> {
        self.cookies_named(&[name]).into_iter().map(|(_, v)| v)
    }

    /// The cookies named in `names`, across every `cookie` header, in
    /// order (as [`Request::cookie_values`] reads them): one pass over the
    /// headers for everything a decision reads.
    pub fn cookies_named<N: AsRef<str>>(&self, names: &[N]) -> Cookies<'a> {
        let mut out = Cookies::new();
        for (k, v) in self.headers {
            if name_is(k, "cookie") {
                out.extend(crate::cookies::find_cookies(v, names));
            }
        }
        out
    }

    /// A cookie by name, across every `cookie` header (any length).
    pub fn cookie(&self, name: &str) -> Lookup<'a> {
        // No length limit here: a rule compares with a short value, and an
        // oversized session cookie must count as invalid, not absent.
        Lookup::of(self.cookie_values(name))
    }

    /// A query parameter by name, percent-decoded.
    pub fn query(&self, name: &str) -> Option<String> {
        let path = self.header_any_length(":path").one()?;
        let path = path.split_once('#').map_or(path, |(a, _)| a);
        let q = path.split_once('?')?.1;
        let mut found: Option<String> = None;
        for pair in q.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if percent_decode(k).as_deref() == Some(name) {
                if found.is_some() {
                    return None; // duplicated: ambiguous, treated as absent
                }
                found = Some(percent_decode(v)?);
            }
        }
        found.filter(|v| v.len() <= MAX_VALUE)
    }

    /// Did the request come over HTTPS? `:scheme` (Envoy sets it from the
    /// downstream connection) or `x-forwarded-proto` (set by Envoy at the
    /// edge, or by a trusted proxy in front) is `https`.
    pub fn is_https(&self) -> bool {
        [":scheme", "x-forwarded-proto"].iter().any(|h| {
            self.header(h)
                .one()
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
        })
    }

    /// The path without query or fragment (`/` when absent).
    pub fn path(&self) -> &'a str {
        let p = self.header_any_length(":path").one().unwrap_or("/");
        p.split(['?', '#']).next().unwrap_or(p)
    }

    /// The `:authority` (or `Host`) without its port.
    pub fn authority(&self) -> Option<&'a str> {
        let a = self
            .header(":authority")
            .one()
            .or_else(|| self.header("host").one())?;
        // Strip the port (IPv6 literals keep their brackets).
        Some(match a.rfind(':') {
            Some(i) if !a[i..].contains(']') => &a[..i],
            _ => a,
        })
    }
}

/// Percent-decode a query component (`+` is a space); `None` for a bad
/// escape (`%zz`, `%4`, `%+a`) or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    // The crate leaves bad escapes as they are; here they make the value
    // unusable, so it counts as absent.
    let b = s.as_bytes();
    let bad_escape = b.iter().enumerate().any(|(i, c)| {
        *c == b'%'
            && !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    if bad_escape {
        return None;
    }
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// An IP address as a client-IP key: `1.2.3.4`, `1.2.3.4:port`, `::1`,
/// `[::1]` or `[::1]:port`; an IPv4-mapped IPv6 address is its IPv4
/// address. Anything else (`unknown`, `_hidden` obfuscated identifiers,
/// host names) is not an address.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if s.len() > 64 {
        return None;
    }
    let bare = if let Some(rest) = s.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        if !(after.is_empty() || is_port(after.strip_prefix(':')?)) {
            return None;
        }
        ip
    } else {
        match s.rsplit_once(':') {
            // One colon: IPv4 with a port. More: a bare IPv6 address.
            Some((ip, port)) if !ip.contains(':') && is_port(port) => ip,
            _ => s,
        }
    };
    bare.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// The client address a `client_ip` key is made from: Envoy's
/// `source.address` (hops 0) or the `hops`-th X-Forwarded-For entry from
/// the right. `None` when there is no such entry or it is not an address.
pub fn client_ip(req: &Request<'_>, hops: u32) -> Option<IpAddr> {
    if hops == 0 {
        return parse_ip(req.client_address?);
    }
    // X-Forwarded-For, possibly over several headers: entries in order.
    let entries: Vec<&str> = req
        .headers
        .iter()
        .filter(|(k, _)| name_is(k, "x-forwarded-for"))
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let n = hops as usize;
    let entry = entries.len().checked_sub(n).and_then(|i| entries.get(i))?;
    parse_ip(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("v%32+x").as_deref(), Some("v2 x"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%+a"), None);
        assert_eq!(percent_decode("%-1"), None);
        assert_eq!(percent_decode("%2b").as_deref(), Some("+"));
        assert_eq!(percent_decode("%ff"), None, "not UTF-8");
        assert_eq!(percent_decode("caf%C3%A9").as_deref(), Some("café"));
    }
    #[test]
    fn client_ip_keys_are_addresses_only() {
        let ip = |s: &str| parse_ip(s).map(|a| a.to_string());
        assert_eq!(ip("203.0.113.9").as_deref(), Some("203.0.113.9"));
        assert_eq!(ip("203.0.113.9:4711").as_deref(), Some("203.0.113.9"));
        assert_eq!(ip(" 203.0.113.9 ").as_deref(), Some("203.0.113.9"));
        assert_eq!(ip("2001:db8::1").as_deref(), Some("2001:db8::1"));
        assert_eq!(ip("2001:DB8:0::1").as_deref(), Some("2001:db8::1"));
        assert_eq!(ip("[2001:db8::1]").as_deref(), Some("2001:db8::1"));
        assert_eq!(ip("[2001:db8::1]:443").as_deref(), Some("2001:db8::1"));
        assert_eq!(ip("::ffff:203.0.113.9").as_deref(), Some("203.0.113.9"));
        for bad in [
            "unknown",
            "_hidden",
            "",
            "203.0.113.9:",
            "203.0.113.9:port",
            "203.0.113.9:123456",
            "[2001:db8::1]443",
            "[2001:db8::1",
            "example.com",
            "example.com:80",
            "1.2.3.4.5",
        ] {
            assert_eq!(ip(bad), None, "{bad:?}");
        }
    }
}
