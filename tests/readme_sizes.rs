//! The cookie sizes README.md states ("The session cookie", **Size**), and
//! its payload table, checked against cookies the filter renders: through
//! `pipeline::on_request`, the response phase (which records the pin) and
//! `Exchange::set_cookie`, as the adapter runs them. So the figures cannot
//! drift from what ships.

// Helpers outside #[test] fns: clippy.toml's in-tests allowances do not reach them.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use regex_lite::Regex;
use sticky_canary::pipeline::{on_request, Upstream};
use sticky_canary::rng::SplitMix64;
use sticky_canary::session::{MAX_COOKIE_VALUE, MAX_ENDPOINT, NONCE_LEN};
use sticky_canary::{compile_json, Request};

const KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

fn readme() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The README's text between `start` and `end`, on one line.
fn section(text: &str, start: &str, end: &str) -> String {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("README: no {start:?}"));
    let rest = &text[from..];
    let to = rest.find(end).unwrap_or(rest.len());
    rest[..to].split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The numbers a pattern captures, or a failure naming the pattern.
fn numbers(text: &str, pattern: &str) -> Vec<usize> {
    let re = Regex::new(pattern).unwrap();
    let caps = re
        .captures(text)
        .unwrap_or_else(|| panic!("README no longer says /{pattern}/:\n{text}"));
    (1..caps.len())
        .map(|i| caps[i].parse().unwrap_or_else(|_| panic!("{}", &caps[i])))
        .collect()
}

fn text_of(text: &str, pattern: &str) -> String {
    let re = Regex::new(pattern).unwrap();
    let caps = re
        .captures(text)
        .unwrap_or_else(|| panic!("README no longer says /{pattern}/:\n{text}"));
    caps[1].to_owned()
}

/// The session cookie value the filter sets for a new user, `sealed` or
/// plain, pinned to `pin` (persistent mode) or not.
fn rendered(sealed: bool, pin: Option<&str>) -> String {
    let session = match (sealed, pin) {
        (false, _) => String::new(),
        (true, None) => format!(r#","session":{{"secrets":["{KEY}"]}}"#),
        (true, Some(_)) => {
            format!(r#","session":{{"mode":"persistent","secrets":["{KEY}"]}}"#)
        }
    };
    let config =
        format!(r#"{{"versions":[{{"name":"v1"}},{{"name":"v2","weight":50}}]{session}}}"#);
    let plugin = compile_json(&config).unwrap();
    let headers: [sticky_canary::Header<'_>; 1] = [(b":path", b"/")];
    let req = Request {
        headers: &headers,
        route_name: None,
        virtual_host: None,
        client_address: None,
        now: 1_800_000_000,
    };
    let mut rng = SplitMix64(1);
    let plan = on_request(&plugin, &req, &mut rng);
    let mut ex = plan.exchange.unwrap();
    assert!(ex.upstream_answered(&Upstream {
        address: pin,
        attempts: Some(1),
        status: Some(200),
    }));
    assert_eq!(ex.decision.session.endpoint.as_deref(), pin, "pinned");
    let cookie = ex.set_cookie([], &[3; NONCE_LEN]).unwrap();
    cookie.value().to_owned()
}

/// The value's bytes (after the marker).
fn body(value: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(&value[1..]).unwrap()
}

#[test]
fn the_cookie_sizes_in_the_readme_are_what_the_filter_renders() {
    let text = readme();
    let size = section(&text, "- **Size.**", "\n\n");

    // The payload table: the fixed fields add up to the stated payload.
    let table = section(&text, "| payload bytes | field |", "\n\n");
    let rows = Regex::new(r"\| (\d+) \| ").unwrap();
    let fixed: usize = rows
        .captures_iter(&table)
        .map(|c| c[1].parse::<usize>().unwrap())
        .sum();
    assert!(table.contains("| 1 + n | pinned endpoint"), "{table}");

    let [limit] = numbers(&size, r"At most (\d+) bytes of a cookie value are read")[..] else {
        unreachable!()
    };
    assert_eq!(limit, MAX_COOKIE_VALUE);

    let plain = numbers(
        &size,
        r"plain, (\d+) characters \(the marker and (\d+) bytes: (\d+) of payload, (\d+) of check\)",
    );
    let value = rendered(false, None);
    assert!(value.starts_with('1'));
    assert_eq!(value.len(), plain[0], "plain: {value}");
    assert_eq!(body(&value).len(), plain[1], "plain bytes");
    assert_eq!(plain[2], fixed, "the payload table adds up to the payload");
    assert_eq!(plain[2] + plain[3], plain[1]);

    let sealed = numbers(
        &size,
        r"sealed, (\d+) \(the marker and (\d+) bytes: (\d+) of nonce, (\d+) of payload, (\d+) of tag\)",
    );
    let value = rendered(true, None);
    assert!(value.starts_with('2'));
    assert_eq!(value.len(), sealed[0], "sealed: {value}");
    assert_eq!(body(&value).len(), sealed[1], "sealed bytes");
    assert_eq!(sealed[2], NONCE_LEN);
    assert_eq!(sealed[3], fixed);
    assert_eq!(sealed[2] + sealed[3] + sealed[4], sealed[1]);

    // The pins: the longest address of each family, pinned for real.
    for (family, longest) in [("IPv4", 21), ("IPv6", 47)] {
        let pin = text_of(
            &size,
            &format!(r"sealed with the longest {family} pin \(`([^`]+)`\)"),
        );
        assert!(pin.parse::<std::net::SocketAddr>().is_ok(), "{pin}");
        assert_eq!(pin.len(), longest, "{pin} is the longest {family} ip:port");
        let stated = numbers(
            &size,
            &format!(r"sealed with the longest {family} pin \(`[^`]+`\),\s*(\d+)"),
        );
        let value = rendered(true, Some(&pin));
        assert_eq!(value.len(), stated[0], "{family} pin: {value}");
        assert_eq!(body(&value).len(), sealed[1] + 1 + pin.len());
    }

    // The longest pin the filter records, and that it fits the limit.
    let stated = numbers(
        &size,
        r"The longest pin the filter records \((\d+) characters\) makes (\d+)",
    );
    assert_eq!(stated[0], MAX_ENDPOINT);
    let value = rendered(true, Some(&"9".repeat(MAX_ENDPOINT)));
    assert_eq!(value.len(), stated[1]);
    assert!(value.len() <= MAX_COOKIE_VALUE);
}

#[test]
fn security_md_states_the_same_limit() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/SECURITY.md");
    let text = std::fs::read_to_string(path).unwrap();
    let limit = numbers(
        &text.split_whitespace().collect::<Vec<_>>().join(" "),
        r"At most (\d+) bytes of cookie value are read",
    );
    assert_eq!(limit, [MAX_COOKIE_VALUE]);
}
