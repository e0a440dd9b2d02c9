//! Cookies on the wire: parsing the request's `Cookie` header (the `cookie`
//! crate) and rendering the session's `Set-Cookie`.

use crate::browsers::rejects_same_site_none;
use std::fmt::Write;
use std::time::{Duration, UNIX_EPOCH};

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

/// The session cookie's name and attributes, as [`crate::compile`]
/// validated them (a token name, a path and domain with no `;`): read
/// through accessors, so nothing unchecked reaches a `Set-Cookie`.
#[derive(Debug, Clone)]
pub struct CookieSpec {
    /// Name.
    pub(crate) name: String,
    /// `Path`.
    pub(crate) path: String,
    /// `Domain`.
    pub(crate) domain: Option<String>,
    /// `Max-Age` seconds.
    pub(crate) max_age: Option<u64>,
    /// Seconds from now for `Expires`.
    pub(crate) expires: Option<u64>,
    /// `Secure`.
    pub(crate) secure: Secure,
    /// `HttpOnly`.
    pub(crate) http_only: bool,
    /// `SameSite`.
    pub(crate) same_site: Option<SameSite>,
    /// Omit `SameSite=None` for browsers that reject it.
    pub(crate) same_site_none_compat: bool,
}

impl CookieSpec {
    /// The cookie name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `Path`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `Domain`, if set.
    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }

    /// `Max-Age` seconds, if set.
    pub fn max_age(&self) -> Option<u64> {
        self.max_age
    }

    /// Seconds from now for `Expires`, if set.
    pub fn expires(&self) -> Option<u64> {
        self.expires
    }

    /// When `Secure` is sent.
    pub fn secure(&self) -> Secure {
        self.secure
    }

    /// `HttpOnly`.
    pub fn http_only(&self) -> bool {
        self.http_only
    }

    /// `SameSite`, if set.
    pub fn same_site(&self) -> Option<SameSite> {
        self.same_site
    }

    /// Omit `SameSite=None` for browsers that reject it.
    pub fn same_site_none_compat(&self) -> bool {
        self.same_site_none_compat
    }
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

/// The `Set-Cookie` value for `value` under `spec` at Unix time `now`, for
/// a request that did not come over HTTPS (see [`render_for`]).
pub fn render(spec: &CookieSpec, value: &str, now: u64, user_agent: Option<&str>) -> String {
    render_for(spec, value, now, user_agent, false)
}

/// The `Set-Cookie` value for `value` under `spec` at Unix time `now`.
/// `user_agent` is consulted only when `same_site_none_compat` is on, and
/// `https` (the request came over HTTPS) only with `"secure": "auto"`.
///
/// Attributes come in a fixed order: `Path`, `Domain`, `Max-Age`,
/// `Expires`, `Secure`, `HttpOnly`, `SameSite`. Every piece was validated
/// when the config was compiled, and the value is base64url, so nothing
/// needs quoting.
pub fn render_for(
    spec: &CookieSpec,
    value: &str,
    now: u64,
    user_agent: Option<&str>,
    https: bool,
) -> String {
    render_with(spec, |c| c.push_str(value), now, user_agent, https)
}

/// [`render_for`] with the value written by `value` into the header being
/// built (the filter encodes the session straight into it).
pub fn render_with(
    spec: &CookieSpec,
    value: impl FnOnce(&mut String),
    now: u64,
    user_agent: Option<&str>,
    https: bool,
) -> String {
    let mut c = String::with_capacity(spec.name.len() + spec.path.len() + 200);
    // push_str, not write!: this runs for every Set-Cookie, and the
    // formatting machinery costs more than the copies.
    c.push_str(&spec.name);
    c.push('=');
    value(&mut c);
    c.push_str("; Path=");
    c.push_str(&spec.path);
    if let Some(d) = &spec.domain {
        c.push_str("; Domain=");
        c.push_str(d);
    }
    if let Some(s) = spec.max_age {
        let _ = write!(c, "; Max-Age={s}");
    }
    if let Some(s) = spec.expires {
        c.push_str("; Expires=");
        c.push_str(&http_date(now.saturating_add(s)));
    }
    let secure = spec.secure == Secure::Always || (spec.secure == Secure::Auto && https);
    if secure {
        c.push_str("; Secure");
    }
    if spec.http_only {
        c.push_str("; HttpOnly");
    }
    match spec.same_site {
        // Browsers reject SameSite=None without Secure (a plain-HTTP request
        // with "secure": "auto"): leave SameSite out, so the cookie works
        // as the browser's default (Lax) instead of not at all.
        Some(SameSite::None) if !secure => {}
        Some(SameSite::None)
            if spec.same_site_none_compat && rejects_same_site_none(user_agent.unwrap_or("")) => {}
        Some(SameSite::None) => c.push_str("; SameSite=None"),
        Some(SameSite::Lax) => c.push_str("; SameSite=Lax"),
        Some(SameSite::Strict) => c.push_str("; SameSite=Strict"),
        None => {}
    }
    c
}

/// The cookies of a `Cookie` header, as `(name, value)` pairs borrowed
/// from it, in order (`cookie::Cookie::split_parse`).
///
/// Pieces are split on `;` and the first `=` and trimmed; a value wrapped
/// in double quotes is unwrapped (RFC 6265 `cookie-value`). Pieces without
/// `=` or with an empty name are skipped.
pub fn parse_cookie_header(header: &str) -> impl Iterator<Item = (&str, &str)> {
    cookie::Cookie::split_parse(header).filter_map(|c| {
        let c = c.ok()?;
        Some((c.name_raw()?, unquote(c.value_raw()?)))
    })
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

/// A cookie value as the filter reads it from a `Cookie` header piece:
/// trimmed of whitespace, and unwrapped of double quotes.
///
/// ```
/// assert_eq!(sticky_canary::cookies::cookie_value(" \"1AQB\" "), "1AQB");
/// ```
// Inlined: on every request's path (and 80 bytes less of .wasm than a call).
#[inline(always)]
pub fn cookie_value(raw: &str) -> &str {
    unquote(raw.trim())
}

/// The cookies named in `names` from a `Cookie` header given as bytes, in
/// order, exactly as [`parse_cookie_header`] reads every piece that is
/// UTF-8 (a unit test and the decide fuzz target hold the two together):
/// pieces are split on `;`, then on their first `=`; name and value are
/// trimmed of whitespace (Unicode's, as the `cookie` crate trims) and the
/// value is unquoted. A piece that is not UTF-8 is skipped, and the other
/// cookies still count.
///
/// `names` must be tokens (the config allows nothing else). A browser sends
/// every cookie of the site and the filter reads one or two, so a piece is
/// compared as bytes first and only a wanted one is decoded; this is the
/// hot path of every request (measured: the `cookie` crate's parser cost
/// 1.9k more Envoy instructions per request for a 106-byte header).
pub fn find_cookies<'h, 'n, N: AsRef<str>>(
    header: &'h [u8],
    names: &'n [N],
) -> impl Iterator<Item = (&'h str, &'h str)> + 'n
where
    'h: 'n,
{
    // The `;` found by memchr (a vector at a time in the module, built
    // with wasm SIMD), not byte by byte. Searching the header for the names
    // instead (memchr's memmem) cost more: 1.1k Envoy instructions per
    // request for a 106-byte header, and 11 KB of .wasm.
    let mut start = 0;
    memchr::memchr_iter(b';', header)
        .chain(std::iter::once(header.len()))
        .filter_map(move |end| {
            let piece = header.get(start..end).unwrap_or_default();
            start = end.saturating_add(1);
            find_in_piece(piece, names)
        })
}

/// ASCII whitespace as Unicode (and so the `cookie` crate) counts it: with
/// vertical tab, which `u8::is_ascii_whitespace` leaves out.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

fn skip_space(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| is_space(**c)).count();
    b.get(n..).unwrap_or_default()
}

/// One `;`-separated piece, if it is a wanted cookie.
fn find_in_piece<'h, N: AsRef<str>>(piece: &'h [u8], names: &[N]) -> Option<(&'h str, &'h str)> {
    let p = skip_space(piece);
    // Fast path, all bytes: ASCII space, a wanted name, ASCII space, `=`.
    // Any other byte where Unicode space could be (a byte >= 0x80) takes
    // the slow path, which trims exactly as the crate does.
    if p.first().is_some_and(u8::is_ascii) {
        let mut slow = false;
        for n in names {
            let n = n.as_ref();
            let Some(rest) = p.strip_prefix(n.as_bytes()) else {
                continue;
            };
            let rest = skip_space(rest);
            match rest.first() {
                Some(b'=') => {
                    let name = std::str::from_utf8(p.get(..n.len())?).ok()?;
                    let value = std::str::from_utf8(rest.get(1..)?).ok()?;
                    return Some((name, cookie_value(value)));
                }
                Some(c) if !c.is_ascii() => slow = true,
                _ => {}
            }
        }
        if !slow {
            return None;
        }
    }
    // Slow path: only pieces that might hold a wanted name are decoded.
    if !names.iter().any(|n| contains(piece, n.as_ref().as_bytes())) {
        return None;
    }
    let (name, value) = std::str::from_utf8(piece).ok()?.split_once('=')?;
    let name = name.trim();
    if !names.iter().any(|n| n.as_ref() == name) {
        return None;
    }
    Some((name, cookie_value(value)))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// IMF-fixdate (RFC 9110), as in `Expires=Sat, 21 Nov 2026 10:01:00 GMT`;
/// capped at the end of year 9999.
pub fn http_date(unix: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(unix.min(253_402_300_799)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> CookieSpec {
        CookieSpec {
            name: "my-sticky-cookie".into(),
            path: "/".into(),
            domain: None,
            max_age: Some(3600),
            expires: None,
            secure: Secure::Always,
            http_only: true,
            same_site: Some(SameSite::None),
            same_site_none_compat: false,
        }
    }

    fn attrs(s: &str) -> Vec<String> {
        let mut v: Vec<String> = s.split("; ").skip(1).map(str::to_owned).collect();
        v.sort();
        v
    }

    #[test]
    fn all_attributes() {
        let mut s = spec();
        s.domain = Some("example.com".into());
        s.expires = Some(60);
        s.path = "/app".into();
        let out = render(&s, "1abc", 1_795_255_200, None);
        assert!(out.starts_with("my-sticky-cookie=1abc; "), "{out}");
        assert_eq!(
            attrs(&out),
            [
                "Domain=example.com",
                "Expires=Sat, 21 Nov 2026 10:01:00 GMT",
                "HttpOnly",
                "Max-Age=3600",
                "Path=/app",
                "SameSite=None",
                "Secure",
            ]
        );
    }

    #[test]
    fn exact_order() {
        assert_eq!(
            render(&spec(), "1abc", 0, None),
            "my-sticky-cookie=1abc; Path=/; Max-Age=3600; Secure; HttpOnly; SameSite=None"
        );
    }

    #[test]
    fn http_dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(1_795_255_260), "Sat, 21 Nov 2026 10:01:00 GMT");
        assert_eq!(http_date(1_709_164_800), "Thu, 29 Feb 2024 00:00:00 GMT");
        assert_eq!(http_date(u64::MAX), "Fri, 31 Dec 9999 23:59:59 GMT");
    }

    /// What `find_cookies` must give: every piece that is UTF-8 parsed by
    /// the `cookie` crate, kept when its name is wanted.
    fn reference<'h>(header: &'h [u8], names: &[&str]) -> Vec<(&'h str, &'h str)> {
        header
            .split(|b| *b == b';')
            .filter_map(|piece| std::str::from_utf8(piece).ok())
            .flat_map(parse_cookie_header)
            .filter(|(n, _)| names.contains(n))
            .collect()
    }

    #[test]
    fn the_scan_reads_cookies_as_the_cookie_crate_does() {
        // Names that overlap ("s" is in both others), each alone, and in
        // another order.
        for names in [
            &["s", "sticky-canary", "canary"][..],
            &["sticky-canary"],
            &["s"],
            &["canary", "sticky-canary"],
        ] {
            scan_matches_reference(names);
        }
    }

    fn scan_matches_reference(names: &[&str]) {
        let fixed: &[&[u8]] = &[
            b"a=1; s=2; sticky-canary=abc; canary=always",
            b"s = 2 ;s=\"q\"; s=\"; s=a\"b\"; s=; s",
            b"sticky-canary=\xe9\xff; s=ok; canary=\xc3\xa9",
            b"\ts=1;\x0bs=2; s\t= 3\t; ss=4; s2=5; =s; s==x",
            b"s=\xc2\xa0v\xc2\xa0; \xc2\xa0s=x; s\xc2\xa0=y",
            b" \x0b\x0bs=1; s\x0b=2; \xe3\x80\x80sticky-canary\xe2\x80\x83=3; x\xc2\x85s=4",
            b"\xc2\x85canary=always; canary \xe2\x80\xa8 = v\xc2\xa0",
            b";;; s=1;; ;",
            b"",
        ];
        for h in fixed {
            assert_eq!(
                find_cookies(h, names).collect::<Vec<_>>(),
                reference(h, names),
                "{h:?} {names:?}"
            );
        }
        // Pseudo-random headers over the bytes that matter.
        let alphabet: &[&[u8]] = &[
            b"s",
            b"sticky-canary",
            b"canary",
            b"=",
            b";",
            b" ",
            b"\t",
            b"\"",
            b"x",
            b"\xc2\xa0",
            b"\xe2\x80\x83",
            b"\xff",
            b"\xc3",
            b"\xa9",
            b"\x0b",
            b"\r",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut h = Vec::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut r = seed;
            for _ in 0..(r % 12) {
                r = r.rotate_left(5) ^ 0x9e37_79b9_7f4a_7c15;
                h.extend_from_slice(alphabet[(r % alphabet.len() as u64) as usize]);
            }
            assert_eq!(
                find_cookies(&h, names).collect::<Vec<_>>(),
                reference(&h, names),
                "{h:?} {names:?}"
            );
        }
    }

    #[test]
    fn parses_cookie_headers() {
        let got: Vec<_> = parse_cookie_header("a=1; b = 2 ;c=\"3\";bad; =x; d=e=f;").collect();
        assert_eq!(got, [("a", "1"), ("b", "2"), ("c", "3"), ("d", "e=f")]);
        assert_eq!(parse_cookie_header("").count(), 0);
    }

    #[test]
    fn minimal_attributes() {
        let s = CookieSpec {
            max_age: None,
            secure: Secure::Never,
            http_only: false,
            same_site: None,
            ..spec()
        };
        assert_eq!(render(&s, "v", 0, None), "my-sticky-cookie=v; Path=/");
    }

    #[test]
    fn secure_auto_follows_the_request_scheme() {
        let s = CookieSpec {
            secure: Secure::Auto,
            same_site: Some(SameSite::Lax),
            ..spec()
        };
        assert_eq!(
            render_for(&s, "v", 0, None, true),
            "my-sticky-cookie=v; Path=/; Max-Age=3600; Secure; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            render_for(&s, "v", 0, None, false),
            "my-sticky-cookie=v; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax"
        );
    }

    #[test]
    fn compat_drops_none_for_old_browsers_only() {
        let s = CookieSpec {
            same_site_none_compat: true,
            ..spec()
        };
        let old_chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/62.0.3202.94 Safari/537.36";
        let new_chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
        assert!(!render(&s, "v", 0, Some(old_chrome)).contains("SameSite"));
        assert!(render(&s, "v", 0, Some(new_chrome)).contains("SameSite=None"));
        assert!(render(&s, "v", 0, None).contains("SameSite=None"));
    }
}
