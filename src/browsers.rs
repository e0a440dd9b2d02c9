//! Browsers that reject or mishandle `SameSite=None`, for the
//! `same_site_none_compat` switch (ingress-nginx's conditional SameSite).

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
