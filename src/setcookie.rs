//! Rendering the session `Set-Cookie` header.

use crate::compile::{CookieSpec, SameSite, Secure};
use crate::time::http_date;
use std::fmt::Write;

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
    let mut c = String::with_capacity(spec.name.len() + value.len() + 96);
    let _ = write!(c, "{}={}; Path={}", spec.name, value, spec.path);
    if let Some(d) = &spec.domain {
        let _ = write!(c, "; Domain={d}");
    }
    if let Some(s) = spec.max_age {
        let _ = write!(c, "; Max-Age={s}");
    }
    if let Some(s) = spec.expires {
        let _ = write!(c, "; Expires={}", http_date(now.saturating_add(s)));
    }
    if spec.secure == Secure::Always || (spec.secure == Secure::Auto && https) {
        c.push_str("; Secure");
    }
    if spec.http_only {
        c.push_str("; HttpOnly");
    }
    match spec.same_site {
        Some(SameSite::None)
            if spec.same_site_none_compat && rejects_same_site_none(user_agent.unwrap_or("")) => {}
        Some(SameSite::None) => c.push_str("; SameSite=None"),
        Some(SameSite::Lax) => c.push_str("; SameSite=Lax"),
        Some(SameSite::Strict) => c.push_str("; SameSite=Strict"),
        None => {}
    }
    c
}

/// The cookies of a `Cookie` header, as `(name, value)` pairs, borrowed.
///
/// Pairs are split on `;` and the first `=`, trimmed of spaces, and a value
/// wrapped in double quotes is unwrapped (RFC 6265 `cookie-value`). Pieces
/// without `=` or with an empty name are skipped.
pub fn parse_cookie_header(header: &str) -> impl Iterator<Item = (&str, &str)> {
    header.split(';').filter_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        let name = name.trim();
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        (!name.is_empty()).then_some((name, value))
    })
}

/// The cookies of a `Cookie` header given as bytes: each `;`-separated
/// piece that is UTF-8 is parsed as in [`parse_cookie_header`]; a piece
/// that is not UTF-8 is skipped, and the other cookies still count.
pub fn parse_cookie_bytes(header: &[u8]) -> impl Iterator<Item = (&str, &str)> {
    header
        .split(|b| *b == b';')
        .filter_map(|piece| std::str::from_utf8(piece).ok())
        .flat_map(parse_cookie_header)
}

/// Browsers that reject or mishandle `SameSite=None` (the list Chromium
/// published for the 2020 SameSite change, as ingress-nginx uses it):
/// iOS 12 and macOS 10.14 Safari or web views, Chrome and Chromium 51-66,
/// and UC Browser before 12.13.2.
pub fn rejects_same_site_none(ua: &str) -> bool {
    is_ios12(ua)
        || (is_macos_10_14(ua) && is_safari_or_webview(ua))
        || is_chromium_51_to_66(ua)
        || is_old_uc(ua)
}

fn after<'a>(ua: &'a str, marker: &str) -> Option<&'a str> {
    ua.find(marker).map(|i| &ua[i + marker.len()..])
}

fn leading_num(s: &str) -> Option<u32> {
    let end = s.bytes().take_while(u8::is_ascii_digit).count();
    s[..end].parse().ok()
}

fn is_ios12(ua: &str) -> bool {
    // "(iPhone; CPU iPhone OS 12_4 like Mac OS X)", "(iPad; CPU OS 12_1 ...)"
    ["iPhone OS ", "CPU OS "]
        .iter()
        .any(|m| after(ua, m).is_some_and(|r| r.starts_with("12_") && ua.contains("like Mac OS X")))
}

fn is_macos_10_14(ua: &str) -> bool {
    after(ua, "Macintosh; Intel Mac OS X 10_14").is_some()
}

fn is_safari_or_webview(ua: &str) -> bool {
    let safari = ua.contains("Version/")
        && ua.contains("Safari")
        && !ua.contains("Chrome")
        && !ua.contains("Chromium");
    let webview = ua.ends_with("(KHTML, like Gecko)")
        || (ua.contains("AppleWebKit/") && !ua.contains("Safari"));
    safari || webview
}

fn is_chromium_51_to_66(ua: &str) -> bool {
    ["Chrome/", "Chromium/"].iter().any(|m| {
        after(ua, m)
            .and_then(leading_num)
            .is_some_and(|v| (51..=66).contains(&v))
    })
}

fn is_old_uc(ua: &str) -> bool {
    let Some(v) = after(ua, "UCBrowser/") else {
        return false;
    };
    let mut parts = v
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor, build) = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    (major, minor, build) < (12, 13, 2)
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

    #[test]
    fn incompatible_user_agents() {
        for ua in [
            "Mozilla/5.0 (iPhone; CPU iPhone OS 12_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/12.1.2 Mobile/15E148 Safari/604.1",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/12.1.2 Safari/605.1.15",
            "Mozilla/5.0 (Linux; U; Android 8.0.0; en-US; Pixel XL Build/OPR3.170623.007) AppleWebKit/534.30 (KHTML, like Gecko) Version/4.0 UCBrowser/12.10.8.1172 Mobile Safari/534.30",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/51.0.2704.103 Safari/537.36",
        ] {
            assert!(rejects_same_site_none(ua), "{ua}");
        }
        for ua in [
            "Mozilla/5.0 (iPhone; CPU iPhone OS 13_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.0.1 Mobile/15E148 Safari/604.1",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_6) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/80.0.3987.87 Safari/537.36",
            "Mozilla/5.0 (Linux; U; Android 8.0.0; en-US) AppleWebKit/534.30 (KHTML, like Gecko) Version/4.0 UCBrowser/12.13.2.1200 Mobile Safari/534.30",
            "curl/8.5.0",
            "",
        ] {
            assert!(!rejects_same_site_none(ua), "{ua}");
        }
    }
}
