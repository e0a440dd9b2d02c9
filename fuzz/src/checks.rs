//! The invariants the fuzz targets check, as plain functions over plain
//! data. No `arbitrary` and no libFuzzer here: `tests/fuzz_regressions.rs`
//! includes this file with `#[path]` so every input a target ever failed on
//! replays natively in `cargo test`.
//!
//! Every check fails by panicking (that is how libFuzzer sees a bug), with a
//! message that says which invariant broke.
#![allow(
    dead_code,
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines
)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::rc::Rc;
use sticky_canary::cookies::{CookieSpec, SameSite, Secure};
use sticky_canary::metrics::SessionEvent;
use sticky_canary::pipeline::{on_request, Upstream};
use sticky_canary::policy::{
    drains, version_for_bucket, KeySource, Matcher, PinMode, RuleSource, Weight,
};
use sticky_canary::session::{Opened, SealKey, Session, MAX_COOKIE_VALUE, NONCE_LEN};
use sticky_canary::{
    browsers, compile_json, cookies, decide, hash, invalid_plan, Basis, CookieState, Entropy,
    Plugin, Policy, Reason, Request,
};

/// Cookie names the targets pick from (`gen::pool::COOKIE`): the usual,
/// prefixed ones, and names no config accepts.
pub const COOKIE_NAMES: &[&str] = &[
    "sticky-canary",
    "sc",
    "canary",
    "__Host-sc",
    "__Secure-sc",
    "a;b",
    "",
    "my cookie",
    "c=1",
    "Ω",
];

// ---------------------------------------------------------------------------
// Known bugs: while a bug found here is open in src/, the fuzz targets step
// around it (so fuzzing goes on finding others); the regression tests turn
// strict mode on and replay its inputs (`#[ignore]`d until it is fixed).
// STICKY_CANARY_FUZZ_STRICT=1 makes the fuzz targets strict too.

thread_local! {
    static STRICT: std::cell::Cell<bool> =
        std::cell::Cell::new(std::env::var_os("STICKY_CANARY_FUZZ_STRICT").is_some());
}

/// Check known bugs too (regression tests).
pub fn set_strict(on: bool) {
    STRICT.with(|s| s.set(on));
}

/// Step around a known bug: true while fuzzing (not strict).
fn tolerate() -> bool {
    !STRICT.with(std::cell::Cell::get)
}

/// Known bug `open-non-ascii`: `Session::open` slices the value at byte 1
/// (`split_at(1)`) and panics when the first character is not ASCII.
pub fn hits_open_non_ascii(value: &str) -> bool {
    (2..=MAX_COOKIE_VALUE).contains(&value.len()) && !value.is_char_boundary(1)
}

/// Latest `now` the checks use: sessions store their expiry as u32 Unix
/// seconds (year 2106), so later clocks are out of the format's range.
pub const MAX_NOW: u64 = u32::MAX as u64 - 10 * 365 * 86_400 - 1;

/// One request, as the adapter would read it from Envoy, plus what the
/// response phase reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReqCase {
    /// Header names and values as bytes (Envoy gives lowercase names).
    pub headers: Vec<sticky_canary::request::OwnedHeader>,
    /// `xds.route_name`.
    pub route_name: Option<String>,
    /// `xds.virtual_host_name`.
    pub virtual_host: Option<String>,
    /// `source.address`.
    pub client_address: Option<String>,
    /// Unix seconds.
    pub now: u64,
    /// Seed of the entropy source; `None`: no randomness available.
    pub entropy: Option<u64>,
    /// `upstream.address`.
    pub upstream_address: Option<String>,
    /// `upstream.request_attempt_count`.
    pub upstream_attempts: Option<u64>,
    /// `:status` of the response.
    pub upstream_status: Option<u16>,
}

/// Deterministic entropy (SplitMix64), or none at all.
pub struct CaseRng(pub Option<u64>);

impl Entropy for CaseRng {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        let Some(state) = self.0.as_mut() else {
            return false;
        };
        for chunk in buf.chunks_mut(8) {
            *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = *state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
        true
    }
}

// ---------------------------------------------------------------------------
// The one place that knows the shape of `Request::headers`.

/// Header list in the form `Request::headers` takes: bytes, as Envoy
/// hands them over.
pub type Headers<'a> = Vec<sticky_canary::Header<'a>>;

/// The headers as `Request` takes them (borrowed from the case).
pub fn api_headers(case: &ReqCase) -> Headers<'_> {
    sticky_canary::request::borrow_headers(&case.headers)
}

/// The session cookie values of the request, as `decide` reads them.
fn cookie_values(case: &ReqCase, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in &case.headers {
        if k.eq_ignore_ascii_case(b"cookie") {
            // Every piece parsed, then filtered: an independent reading of
            // what cookies::find_cookies skips before parsing.
            let pieces = v
                .split(|b| *b == b';')
                .filter_map(|p| std::str::from_utf8(p).ok());
            for (n, value) in pieces.flat_map(cookies::parse_cookie_header) {
                if n == name {
                    out.push(value.to_owned());
                }
            }
        }
    }
    out
}

fn request<'a>(case: &'a ReqCase, headers: &'a Headers<'a>) -> Request<'a> {
    Request {
        headers,
        route_name: case.route_name.as_deref(),
        virtual_host: case.virtual_host.as_deref(),
        client_address: case.client_address.as_deref(),
        now: case.now,
    }
}

// ---------------------------------------------------------------------------
// Config compilation.

/// The adapter's `on_configure`: bytes that are not UTF-8 are refused,
/// anything else goes to `compile_json`. An accepted plugin must serve
/// requests (see [`exercise_plugin`]); a refusal must be one log line.
pub fn check_compile_raw(data: &[u8]) -> Option<Plugin> {
    let text = std::str::from_utf8(data).ok()?;
    check_compile_text(text, &[], &[])
}

/// Compile config text: a refusal is a good log line (never echoing one of
/// `secrets`); an accepted plugin is sound, is the config that was written
/// (versions, total, rules, route entries) and serves requests.
pub fn check_compile_text(text: &str, secrets: &[String], extra: &[ReqCase]) -> Option<Plugin> {
    let plugin = match compile_json(text) {
        Ok(p) => p,
        Err(e) => {
            // A secret that also stands elsewhere in the config (as a name,
            // say) may be echoed as that.
            let secrets: Vec<String> = secrets
                .iter()
                .filter(|s| text.matches(s.as_str()).count() == 1)
                .cloned()
                .collect();
            check_config_error(&e, &secrets);
            check_invalid_plan(text);
            return None;
        }
    };
    check_plugin(&plugin);
    // compile_json trims Unicode whitespace (a vertical tab too) first.
    let json: serde_json::Value = if text.trim().is_empty() {
        serde_json::json!({})
    } else {
        serde_json::from_str(text.trim()).expect("compile_json accepted it")
    };
    check_fidelity(&plugin, &json);
    exercise_plugin(&plugin, extra);
    Some(plugin)
}

/// The version names a JSON object lists.
fn version_names(v: &serde_json::Value) -> Option<Vec<String>> {
    let list = v.get("versions")?.as_array()?;
    Some(
        list.iter()
            .map(|x| {
                x.get("name")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            })
            .collect(),
    )
}

/// `over` merged into `base`: objects key by key, anything else replaced.
fn deep_merge(base: &mut serde_json::Value, over: &serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) if slot.is_object() && v.is_object() => deep_merge(slot, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// The compiled plugin is the config that was written.
fn check_fidelity(plugin: &Plugin, json: &serde_json::Value) {
    use serde_json::Value;
    let global_names = version_names(json);
    match (&plugin.global, &global_names) {
        (Some(p), Some(n)) => {
            let got: Vec<&str> = p.versions().iter().map(|v| v.name()).collect();
            assert_eq!(&got, n, "global versions");
            let total = json.get("weight_total").and_then(Value::as_u64);
            assert_eq!(u64::from(p.total()), total.unwrap_or(100), "weight_total");
            let rules = json
                .get("rules")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            assert_eq!(p.rules().len(), rules, "every rule compiled");
        }
        (None, None) => {}
        (g, n) => panic!("global policy {} but versions {n:?}", g.is_some()),
    }
    let entries = json
        .get("routes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        plugin.routes.len(),
        entries.len(),
        "every route entry compiled"
    );
    for (i, (r, e)) in plugin.routes.iter().zip(&entries).enumerate() {
        let enabled = e.get("enabled").and_then(Value::as_bool).unwrap_or(true);
        assert_eq!(r.policy.is_some(), enabled, "routes[{i}] enabled");
        if let Some(p) = &r.policy {
            let want = version_names(e)
                .or_else(|| global_names.clone())
                .unwrap_or_default();
            let got: Vec<&str> = p.versions().iter().map(|v| v.name()).collect();
            assert_eq!(got, want, "routes[{i}] versions");
            assert_eq!(p.scope(), r.name);
            // The cookie Path: as the entry merged over the global object
            // sets it, else the entry's one literal path when usable as a
            // path, else "/".
            let mut merged = json.clone();
            if let Some(m) = merged.as_object_mut() {
                m.remove("routes");
            }
            deep_merge(&mut merged, e);
            // The entry's literal paths (path_exact, path_prefix,
            // path_separated_prefix); none when it has a path_regex.
            let mut prefixes: Vec<&str> = Vec::new();
            for key in ["path_exact", "path_prefix", "path_separated_prefix"] {
                match e.get("match").and_then(|m| m.get(key)) {
                    Some(Value::String(p)) => prefixes.push(p.as_str()),
                    Some(Value::Array(a)) => prefixes.extend(a.iter().filter_map(Value::as_str)),
                    _ => {}
                }
            }
            let regex = e.get("match").and_then(|m| m.get("path_regex")).is_some();
            let usable = |p: &str| {
                p.len() <= 256 && p.bytes().all(|b| b != b';' && (0x21..0x7f).contains(&b))
            };
            let default = match prefixes.as_slice() {
                [one] if usable(one) && !regex => (*one).to_owned(),
                _ => "/".to_owned(),
            };
            let want_path = match merged.get("session") {
                None => default,
                Some(Value::Object(session)) => match session.get("cookie") {
                    None => default,
                    Some(Value::Object(c)) => match c.get("path") {
                        None => default,
                        Some(Value::String(p)) => p.clone(),
                        Some(_) => "/".to_owned(),
                    },
                    Some(_) => "/".to_owned(),
                },
                Some(_) => "/".to_owned(),
            };
            assert_eq!(p.cookie().path(), want_path, "routes[{i}] cookie path");
        }
        let want_name = e
            .get("name")
            .and_then(Value::as_str)
            .map_or(format!("routes[{i}]"), str::to_owned);
        assert_eq!(r.name, want_name, "routes[{i}] name");
    }
}

/// A refusal is logged as one line, with a bounded value, and never echoes
/// a secret (`secrets` lists the secret strings the config held).
pub fn check_config_error(e: &sticky_canary::ConfigError, secrets: &[String]) {
    let line = e.to_string();
    assert!(
        line.starts_with("invalid plugin config: "),
        "error text: {line}"
    );
    // Known bug `error-newline`: serde's messages quote the offending text
    // raw (`unknown variant `a\nb``), so one refusal can span log lines.
    if !(tolerate() && e.reason.contains(['\n', '\r', '\0'])) {
        assert!(
            !line.contains(['\n', '\r', '\0']),
            "a config error must be one log line: {line:?}"
        );
    }
    assert!(
        e.value.len() <= 120,
        "the echoed value is at most 120 bytes: {} bytes",
        e.value.len()
    );
    for s in secrets.iter().filter(|s| s.len() >= 8) {
        assert!(
            !line.contains(s.as_str()),
            "a config error echoes a secret: {line}"
        );
    }
}

/// What the filter reads from a config that did not compile: the default
/// override headers and every usable `headers.*` name, once each.
fn check_invalid_plan(text: &str) {
    let plan = invalid_plan(text);
    for d in ["x-canary-version", "x-sticky-hash", "x-sticky-endpoint"] {
        assert!(
            plan.override_headers.iter().any(|h| h == d),
            "plan misses {d}"
        );
    }
    for (i, h) in plan.override_headers.iter().enumerate() {
        assert!(
            is_token(h) && *h == h.to_ascii_lowercase(),
            "plan header {h:?}"
        );
        assert!(
            !plan.override_headers[..i].contains(h),
            "plan header {h} twice"
        );
    }
    let root: Option<serde_json::Value> = serde_json::from_str(text.trim()).ok();
    let refuse = root
        .as_ref()
        .and_then(|r| r.get("on_invalid_config"))
        .and_then(serde_json::Value::as_str)
        == Some("refuse");
    assert_eq!(plan.refuse, refuse, "refuse only when the text asks for it");
}

/// Structural invariants of a compiled plugin.
pub fn check_plugin(plugin: &Plugin) {
    let policies = plugin
        .global
        .iter()
        .chain(plugin.routes.iter().filter_map(|r| r.policy.as_ref()));
    for p in policies {
        check_policy(p);
        for h in p.headers().all() {
            assert!(
                plugin.override_headers.contains(h),
                "override_headers misses {h}"
            );
        }
    }
    let mut names: Vec<&str> = plugin.routes.iter().map(|r| r.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), plugin.routes.len(), "route names are unique");
    assert_eq!(
        plugin.needs_route_name,
        plugin
            .routes
            .iter()
            .any(|r| !r.matcher.route_names.is_empty())
    );
    assert_eq!(
        plugin.needs_virtual_host,
        plugin
            .routes
            .iter()
            .any(|r| !r.matcher.virtual_hosts.is_empty())
    );
    let any_client_ip = plugin
        .global
        .iter()
        .chain(plugin.routes.iter().filter_map(|r| r.policy.as_ref()))
        .any(|p| p.needs_client_address());
    assert_eq!(plugin.needs_client_address, any_client_ip);
    assert!(plugin.passthrough.index() < plugin.counter_names.len());
    for r in &plugin.routes {
        let m = &r.matcher;
        assert!(
            !(m.route_names.is_empty()
                && m.virtual_hosts.is_empty()
                && m.authorities.is_empty()
                && m.path_exact.is_empty()
                && m.path_prefixes.is_empty()
                && m.path_separated_prefixes.is_empty()
                && m.path_regexes.is_empty()),
            "route entry {} matches everything",
            r.name
        );
        assert!(m
            .path_exact
            .iter()
            .chain(&m.path_prefixes)
            .chain(&m.path_separated_prefixes)
            .all(|p| p.starts_with('/')));
        assert!(m
            .path_separated_prefixes
            .iter()
            .all(|p| p == "/" || !p.ends_with('/')));
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Times at which weights are worth looking at for this policy.
pub fn sample_times(p: &Policy) -> Vec<u64> {
    let mut t = vec![0, 1, 1_800_000_000, MAX_NOW, u64::MAX];
    for v in p.versions() {
        if let Weight::Ramp { start, end, .. } = v.weight() {
            let mid = start + (end - start) / 2;
            t.extend([
                start.saturating_sub(1),
                start,
                start.saturating_add(1),
                mid,
                end.saturating_sub(1),
                end,
                end.saturating_add(1),
            ]);
        }
    }
    t.sort_unstable();
    t.dedup();
    t
}

/// A policy: versions, weights at any time, rules, cookie and headers.
pub fn check_policy(p: &Policy) {
    let n = p.versions().len();
    assert!((2..=32).contains(&n), "{n} versions");
    assert!((1..=1_000_000).contains(&p.total()), "total {}", p.total());
    for (i, v) in p.versions().iter().enumerate() {
        assert_eq!(v.id(), hash::fnv32(v.name().as_bytes()), "version id");
        assert!(
            !v.name().is_empty()
                && v.name().len() <= 64
                && v.name()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "version name {:?} is not a header-safe value",
            v.name()
        );
        assert!(
            p.versions()[..i].iter().all(|o| o.id() != v.id()),
            "version ids are unique"
        );
        assert_eq!(p.version_by_id(v.id()), Some(i));
    }
    let times = sample_times(p);
    let mut last: Option<Vec<u32>> = None;
    for &t in &times {
        let w = p.weights_at(t);
        assert_eq!(w.len(), n);
        let others: u64 = w.iter().skip(1).map(|x| u64::from(*x)).sum();
        assert!(
            others <= u64::from(p.total()),
            "weights {w:?} at {t} are over the total {}",
            p.total()
        );
        let sum: u64 = w.iter().map(|x| u64::from(*x)).sum();
        assert_eq!(sum, u64::from(p.total()), "weights {w:?} at {t}");
        // Every bucket has an owner with weight > 0.
        for b in [0, p.total() / 2, p.total() - 1] {
            let v = version_for_bucket(&w, b);
            assert!(v < n && w[v] > 0, "bucket {b} -> {v} under {w:?}");
        }
        // Ramps move monotonically from `from` to `to`.
        if let Some(prev) = &last {
            for (i, v) in p.versions().iter().enumerate().skip(1) {
                if let Weight::Ramp { from, to, .. } = v.weight() {
                    let (a, b) = (prev[i], w[i]);
                    if to >= from {
                        assert!(a <= b, "ramp {} goes back: {a} -> {b}", v.name());
                    } else {
                        assert!(a >= b, "ramp {} goes back: {a} -> {b}", v.name());
                    }
                }
            }
        }
        last = Some(w);
    }
    for v in p.versions().iter().skip(1) {
        if let Weight::Ramp {
            start,
            end,
            from,
            to,
            steps,
        } = v.weight()
        {
            assert!(end > start && steps <= 10_000);
            assert_eq!(v.weight().at(start), from);
            assert_eq!(v.weight().at(end), to);
            assert_eq!(v.weight().at(0), from);
            assert_eq!(v.weight().at(u64::MAX), to);
        }
    }
    for r in p.rules() {
        assert!(r.version() < n, "rule version {} of {n}", r.version());
        if let Matcher::Exact(v) = r.matcher() {
            assert!(!v.is_empty() && v.len() <= 256);
        }
    }
    let c = &p.cookie();
    assert!(is_token(c.name()), "cookie name {:?}", c.name());
    assert!(c.path().starts_with('/'));
    assert!(
        p.ttl() >= 1 && p.ttl() <= 10 * 365 * 86_400,
        "ttl {}",
        p.ttl()
    );
    let h = &p.headers();
    assert!(h.version() != h.hash() && h.version() != h.endpoint() && h.hash() != h.endpoint());
    for name in h.all() {
        assert!(is_token(name) && *name == name.to_ascii_lowercase());
    }
    assert!(p.seal_keys().len() <= 8);
    if p.mode() == PinMode::Persistent {
        assert!(!p.seal_keys().is_empty(), "persistent mode without keys");
    }
    for r in p.rules() {
        if let RuleSource::Header(h) = r.source() {
            assert!(
                !p.headers().writes(h),
                "a rule reads a header the filter writes"
            );
        }
    }
}

/// Requests that reach every part of a plugin: one per route entry match
/// value, plus `extra`.
pub fn exercise_plugin(plugin: &Plugin, extra: &[ReqCase]) {
    let mut cases: Vec<ReqCase> = Vec::new();
    let base = |path: &str| ReqCase {
        headers: vec![
            (b":path".to_vec(), path.as_bytes().to_vec()),
            (b":authority".to_vec(), b"shop.example.com:8443".to_vec()),
            (b"user-agent".to_vec(), b"curl/8.5.0".to_vec()),
        ],
        client_address: Some("203.0.113.9:4711".into()),
        now: 1_800_000_000,
        entropy: Some(7),
        upstream_address: Some("10.0.0.7:8080".into()),
        upstream_attempts: Some(1),
        upstream_status: Some(200),
        ..ReqCase::default()
    };
    cases.push(base("/"));
    let mut no_rng = base("/?canary=v2");
    no_rng.entropy = None;
    cases.push(no_rng);
    for r in &plugin.routes {
        let m = &r.matcher;
        let path = m
            .path_exact
            .iter()
            .chain(&m.path_prefixes)
            .chain(&m.path_separated_prefixes)
            .next();
        let mut c = base(path.map_or("/", String::as_str));
        c.route_name = m.route_names.first().cloned();
        c.virtual_host = m.virtual_hosts.first().cloned();
        cases.push(c);
    }
    cases.extend(extra.iter().cloned());
    for c in &cases {
        check_request(plugin, c);
    }
}

// ---------------------------------------------------------------------------
// The per-request decision and the response phase.

/// Every session the request's session cookies open to.
fn incoming_sessions(p: &Policy, case: &ReqCase) -> Vec<Session> {
    let name = &p.cookie().name();
    cookie_values(case, name)
        .iter()
        .filter_map(|v| match Session::open(v, name, p.seal_keys(), case.now) {
            Opened::Valid { session, .. } => Some(session),
            Opened::Invalid => None,
        })
        .collect()
}

/// What one checked request produced.
#[derive(Debug, Clone)]
pub struct Checked {
    /// Index of the chosen version.
    pub version: usize,
    /// The session cookie value issued, if any.
    pub cookie: Option<String>,
}

fn no_ctl(v: &[u8]) -> bool {
    !v.iter().any(|b| *b < 0x20 || *b == 0x7f)
}

/// The adapter's steps for one request (`pipeline::on_request`, the
/// response phase, the Set-Cookie), checking every step.
pub fn check_request(plugin: &Plugin, case: &ReqCase) -> Option<Checked> {
    let headers = api_headers(case);
    let req = request(case, &headers);
    let selected = plugin.select(&req).cloned();
    if tolerate() {
        if let Some(p) = &selected {
            if cookie_values(case, p.cookie().name())
                .iter()
                .any(|v| hits_open_non_ascii(v))
            {
                return None;
            }
        }
    }
    let mut rng = CaseRng(case.entropy);
    let plan = on_request(plugin, &req, &mut rng);
    for c in &plan.count {
        assert!(c.index() < plugin.counter_names.len(), "counter {c:?}");
    }
    for (h, v) in &plan.set {
        assert!(is_token(h), "set header {h:?}");
        assert!(no_ctl(v), "set header {h}: control bytes in {v:?}");
    }
    for (k, v) in &plan.properties {
        assert!(!k.is_empty() && no_ctl(v), "filter state {k}: {v:?}");
    }
    let Some(mut ex) = plan.exchange else {
        // Pass-through: nothing set, every client copy of ours removed.
        assert!(selected.is_none(), "a selected policy passed through");
        assert!(plan.set.is_empty());
        for h in &plugin.override_headers {
            assert_eq!(
                plan.remove.contains(&h.as_str()),
                req.header_present(h),
                "pass-through removes exactly the client's copies of {h}"
            );
        }
        return None;
    };
    let p: Rc<Policy> = Rc::clone(&ex.policy);
    assert!(
        selected.as_ref().is_some_and(|s| Rc::ptr_eq(s, &p)),
        "on_request used the selected policy"
    );
    let d = ex.decision.clone();

    // The request headers the filter writes: its values replace the
    // client's; the endpoint header is set or removed.
    let set = |name: &str| {
        plan.set
            .iter()
            .find(|(h, _)| *h == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        set(p.headers().version()).as_deref(),
        Some(p.versions()[d.version].name().as_bytes()),
        "version header"
    );
    assert_eq!(
        set(p.headers().hash()).as_deref(),
        Some(d.hash.as_bytes()),
        "hash header"
    );
    match &d.endpoint {
        Some(ep) => assert_eq!(set(p.headers().endpoint()).as_deref(), Some(ep.as_bytes())),
        None => {
            assert!(set(p.headers().endpoint()).is_none());
            assert_eq!(
                plan.remove.contains(&p.headers().endpoint()),
                req.header_present(p.headers().endpoint()),
                "a client's endpoint header is removed"
            );
        }
    }

    // The version: in range, and one the config allows for this request.
    let n = p.versions().len();
    assert!(d.version < n, "version {} of {n}", d.version);
    assert_eq!(d.session.version_id, p.versions()[d.version].id());
    let weights = p.weights_at(case.now);
    let incoming = incoming_sessions(&p, case);
    match d.basis {
        Basis::Rule(i) => {
            let rule = p.rules().get(i).expect("the rule exists");
            let ok = d.version == rule.version()
                || (matches!(rule.matcher(), Matcher::Sentinel) && d.version == 0);
            assert!(
                ok,
                "rule {i} sends to {}, got {}",
                rule.version(),
                d.version
            );
        }
        Basis::Remembered => {
            assert!(p.sticky(), "legacy mode remembers nothing");
            assert!(
                incoming
                    .iter()
                    .any(|s| s.version_id == d.session.version_id),
                "remembered version {} is in no valid cookie of the request",
                p.versions()[d.version].name()
            );
            assert_ne!(d.cookie_state, CookieState::Conflicting);
        }
        Basis::Weight => {
            let b = hash::bucket(p.seed(), &d.session.key, p.total());
            assert!(b < p.total());
            assert_eq!(
                d.version,
                version_for_bucket(&weights, b),
                "weighted choice is the bucket's owner"
            );
            assert!(
                weights[d.version] > 0,
                "weight-0 version got weighted traffic"
            );
        }
    }
    assert_eq!(
        matches!(d.basis, Basis::Rule(_)),
        d.reason == Reason::Rule,
        "reason {:?} for basis {:?}",
        d.reason,
        d.basis
    );
    // One definition of draining: kept by memory on a version that drains.
    assert_eq!(
        d.reason == Reason::Drain,
        d.basis == Basis::Remembered && drains(&weights, d.version),
        "reason {:?} for basis {:?} at weights {weights:?}",
        d.reason,
        d.basis
    );
    assert_eq!(d.draining(), d.reason == Reason::Drain);
    match d.reason {
        Reason::New => assert!(d.incoming.is_none(), "new, yet a session came"),
        Reason::Returning => assert_eq!(
            d.incoming.as_ref().map(|s| s.version_id),
            Some(d.session.version_id),
            "returning keeps the version"
        ),
        Reason::Reassigned => {
            let prev = d.incoming.as_ref().expect("reassigned from a session");
            assert_ne!(
                prev.version_id, d.session.version_id,
                "reassigned to the same version"
            );
        }
        Reason::Drain => {
            assert_ne!(d.version, 0, "the default version never drains");
            assert_eq!(weights[d.version], 0, "drain from a weighted version");
        }
        Reason::Rollback => assert!(d.incoming.is_some() && p.rollback()),
        Reason::Rule => {}
    }
    if let Some(s) = &d.incoming {
        assert!(
            incoming.contains(s),
            "the incoming session is in no valid cookie"
        );
    }
    // The sticky hash: 16 lowercase hex digits of the session key.
    assert!(
        d.hash
            .as_bytes()
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)),
        "sticky hash {:?}",
        d.hash.as_str()
    );
    assert_eq!(d.hash.as_bytes(), hash::pod_hash(&d.session.key));
    // The pinned endpoint: persistent mode, from a cookie for this version.
    if let Some(ep) = &d.endpoint {
        assert_eq!(
            p.mode(),
            PinMode::Persistent,
            "endpoint outside persistent mode"
        );
        assert!(!ep.is_empty() && ep.len() <= 64);
        assert!(
            incoming
                .iter()
                .any(|s| s.endpoint.as_ref() == Some(ep) && s.version_id == d.session.version_id),
            "endpoint {ep:?} comes from no valid cookie for this version"
        );
        assert_ne!(
            d.cookie_state,
            CookieState::Conflicting,
            "pinned by conflicting copies"
        );
    }
    match d.cookie_state {
        CookieState::Absent => {
            assert!(
                cookie_values(case, p.cookie().name()).is_empty(),
                "cookie counted as absent"
            );
            assert!(d.rejected.is_none());
        }
        CookieState::Valid => assert!(!incoming.is_empty(), "no valid cookie, counted as valid"),
        CookieState::Conflicting => {
            assert!(incoming.len() >= 2, "conflict needs two valid copies");
            assert!(!d.write_cookie, "conflicting copies get no Set-Cookie");
        }
        CookieState::Invalid => {}
    }
    if *p.key_source() == KeySource::Cookie {
        assert!(!d.key_fallback);
    }

    // Response phase.
    let up = Upstream {
        address: case.upstream_address.as_deref(),
        attempts: case.upstream_attempts,
        status: case.upstream_status,
    };
    let write = ex.upstream_answered(&up);
    let d = ex.decision.clone();
    assert_eq!(write, d.write_cookie);
    if d.cookie_state == CookieState::Conflicting {
        assert!(!write, "conflicting copies: no Set-Cookie, no pin");
    }
    if !write {
        if d.cookie_state != CookieState::Conflicting {
            assert!(
                incoming.contains(&d.session),
                "no Set-Cookie, yet no cookie of the request holds the session {:?}",
                d.session
            );
        }
        return Some(Checked {
            version: d.version,
            cookie: None,
        });
    }
    let mut nonce = [0u8; NONCE_LEN];
    assert_eq!(ex.needs_nonce(), !p.seal_keys().is_empty());
    if ex.needs_nonce() && !rng.fill(&mut nonce) {
        // The adapter sends no cookie without a nonce.
        return Some(Checked {
            version: d.version,
            cookie: None,
        });
    }
    // A response that sets our cookie itself is left alone.
    let own = format!("{}=x; Path=/", p.cookie().name());
    assert!(
        ex.set_cookie([own.as_bytes()], &nonce).is_none(),
        "a duplicate Set-Cookie"
    );
    let other = format!("{}x=1", p.cookie().name());
    let sc = ex
        .set_cookie([other.as_bytes()], &nonce)
        .expect("a Set-Cookie is due");
    check_extras(&ex.extras(Some(&sc)));
    check_extras(&ex.extras(None));
    assert_eq!(
        sc.event == SessionEvent::Issued,
        d.incoming.is_none(),
        "event {:?}",
        sc.event
    );
    let value = d.session.encode(p.cookie().name(), p.seal_keys(), &nonce);
    let ua = ex.user_agent.clone();
    if p.cookie().same_site_none_compat() {
        assert_eq!(ua.as_deref(), req.header("user-agent").one());
    }
    let https = req.is_https();
    assert_eq!(ex.https, https && p.cookie().secure() == Secure::Auto);
    check_set_cookie(
        p.cookie(),
        &value,
        case.now,
        ua.as_deref(),
        https,
        &sc.header,
    );
    check_value_shape(&value, !p.seal_keys().is_empty());
    if case.now.saturating_add(p.ttl()) < u64::from(u32::MAX) {
        assert_eq!(
            Session::open(&value, p.cookie().name(), p.seal_keys(), case.now),
            Opened::Valid {
                session: d.session.clone(),
                stale_key: false
            },
            "the issued cookie re-opens to the same session"
        );
        // The return visit: the same request with only the issued cookie.
        let mut again = case.clone();
        again
            .headers
            .retain(|(k, _)| !k.eq_ignore_ascii_case(b"cookie"));
        again.headers.push((
            b"cookie".to_vec(),
            format!("{}={}", p.cookie().name(), value).into_bytes(),
        ));
        let headers2 = api_headers(&again);
        let req2 = request(&again, &headers2);
        assert!(
            plugin.select(&req2).is_some_and(|s| Rc::ptr_eq(s, &p)),
            "same policy on the return visit"
        );
        let d2 = decide(&p, &req2, &mut CaseRng(again.entropy));
        assert_eq!(
            d2.cookie_state,
            CookieState::Valid,
            "the issued cookie is valid on the next request"
        );
        assert_eq!(d2.session.key, d.session.key, "the session key sticks");
        if p.mode() == PinMode::Persistent && d2.session.version_id == d.session.version_id {
            assert_eq!(d2.endpoint, d.session.endpoint, "the pin sticks");
        }
    }
    Some(Checked {
        version: d.version,
        cookie: Some(value),
    })
}

/// The response extras (debug header, filter state) are well-formed.
fn check_extras(x: &sticky_canary::pipeline::ResponseExtras) {
    for (h, v) in &x.headers {
        assert!(is_token(h), "debug header name {h:?}");
        assert!(no_ctl(v.as_bytes()), "debug header {h}: {v:?}");
    }
    for (k, v) in &x.properties {
        assert!(!k.is_empty() && no_ctl(v), "filter state {k}: {v:?}");
    }
}

/// A cookie value: marker, then base64url, short enough to be read back.
pub fn check_value_shape(value: &str, sealed: bool) {
    assert!(
        value.len() <= MAX_COOKIE_VALUE,
        "cookie value of {} bytes cannot be read back",
        value.len()
    );
    let (marker, body) = value.split_at(1);
    assert_eq!(marker, if sealed { "2" } else { "1" });
    assert!(body
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
}

// ---------------------------------------------------------------------------
// Set-Cookie.

/// Parse a `Set-Cookie` header as a browser does (RFC 6265 section 5.2:
/// split on `;`, trim spaces) and compare it with the spec it was
/// rendered from.
pub fn check_set_cookie(
    spec: &CookieSpec,
    value: &str,
    now: u64,
    user_agent: Option<&str>,
    https: bool,
    header: &str,
) {
    assert!(
        !header.bytes().any(|b| b < 0x20 || b == 0x7f),
        "control character in Set-Cookie: {header:?}"
    );
    let mut parts = header.split(';');
    let pair = parts.next().unwrap_or_default();
    let (name, val) = pair
        .split_once('=')
        .unwrap_or_else(|| panic!("no name=value in {header:?}"));
    assert_eq!(name.trim(), spec.name());
    assert_eq!(name, spec.name(), "the name is not padded");
    assert_eq!(val, value, "the value comes through unchanged");
    assert!(is_token(name), "cookie name {name:?}");
    assert!(
        !val.bytes().any(|b| b"\";, \t\\".contains(&b)),
        "cookie value needs quoting: {val:?}"
    );
    let mut seen: Vec<String> = Vec::new();
    let (mut path, mut domain, mut max_age, mut expires) = (None, None, None, None);
    let (mut secure, mut http_only, mut same_site) = (false, false, None);
    for attr in parts {
        assert!(attr.starts_with(' '), "attributes are separated by \"; \"");
        let attr = attr.trim();
        let (k, v) = attr.split_once('=').unwrap_or((attr, ""));
        let (k, v) = (k.trim(), v.trim());
        assert!(
            !seen.iter().any(|s| s.eq_ignore_ascii_case(k)),
            "attribute {k} twice in {header:?}"
        );
        seen.push(k.to_owned());
        match k {
            "Path" => path = Some(v.to_owned()),
            "Domain" => domain = Some(v.to_owned()),
            "Max-Age" => max_age = Some(v.parse::<u64>().expect("Max-Age is a number")),
            "Expires" => expires = Some(v.to_owned()),
            "Secure" => {
                assert!(!attr.contains('='));
                secure = true;
            }
            "HttpOnly" => {
                assert!(!attr.contains('='));
                http_only = true;
            }
            "SameSite" => same_site = Some(v.to_owned()),
            other => panic!("unknown attribute {other:?} (a second cookie?) in {header:?}"),
        }
    }
    // Known bug `path-trailing-space`: the compiler accepts a path ending
    // in spaces; browsers trim attribute values, so the Path differs.
    let want_path = if tolerate() {
        spec.path().trim_end()
    } else {
        spec.path()
    };
    assert_eq!(
        path.as_deref(),
        Some(want_path),
        "Path as the browser reads it, in {header:?}"
    );
    assert_eq!(domain.as_deref(), spec.domain(), "Domain in {header:?}");
    assert_eq!(max_age, spec.max_age(), "Max-Age in {header:?}");
    let want_expires = spec
        .expires()
        .map(|s| cookies::http_date(now.saturating_add(s)));
    assert_eq!(expires, want_expires, "Expires in {header:?}");
    if let Some(e) = &expires {
        check_http_date(e);
    }
    let want_secure = match spec.secure() {
        Secure::Always => true,
        Secure::Never => false,
        Secure::Auto => https,
    };
    assert_eq!(secure, want_secure, "Secure in {header:?}");
    assert_eq!(http_only, spec.http_only());
    let want_same_site = match spec.same_site() {
        None => None,
        // Without Secure (plain HTTP with "secure": "auto"), SameSite=None is
        // left out: browsers reject the cookie otherwise.
        Some(SameSite::None) if !want_secure => None,
        Some(SameSite::None)
            if spec.same_site_none_compat()
                && browsers::rejects_same_site_none(user_agent.unwrap_or("")) =>
        {
            None
        }
        Some(SameSite::None) => Some("None"),
        Some(SameSite::Lax) => Some("Lax"),
        Some(SameSite::Strict) => Some("Strict"),
    };
    assert_eq!(
        same_site.as_deref(),
        want_same_site,
        "SameSite in {header:?}"
    );
    // Known bug `same-site-none-http`: with "secure": "auto" a plain HTTP
    // request gets SameSite=None without Secure, which browsers drop.
    if same_site.as_deref() == Some("None") && !(tolerate() && spec.secure() == Secure::Auto) {
        assert!(
            secure,
            "SameSite=None without Secure is dropped by browsers"
        );
    }
    // Cookie-name prefixes (RFC 6265bis 4.1.3): browsers drop a cookie
    // whose prefix promises attributes it lacks.
    // Known bug `cookie-prefix`: the compiler accepts names with these
    // prefixes without the attributes they require.
    if tolerate() {
        return;
    }
    if name.starts_with("__Secure-") || name.starts_with("__Host-") {
        assert!(secure, "{name} without Secure is rejected by browsers");
    }
    if name.starts_with("__Host-") {
        assert!(
            domain.is_none() && path.as_deref() == Some("/"),
            "{name} needs Path=/ and no Domain, or browsers reject it"
        );
    }
}

/// IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
fn check_http_date(s: &str) {
    let b = s.as_bytes();
    assert_eq!(b.len(), 29, "HTTP date {s:?}");
    assert!(
        s.ends_with(" GMT") && b[3] == b',' && b[4] == b' ',
        "HTTP date {s:?}"
    );
    let day = &s[..3];
    assert!(["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].contains(&day));
}

// ---------------------------------------------------------------------------
// Cookie opening.

/// Open `value`; anything that opens is current, re-encodes to the same
/// text (one session, one cookie text) and re-opens identically.
pub fn check_cookie_open(value: &str, name: &str, keys: &[SealKey], now: u64) -> Option<Session> {
    if tolerate() && hits_open_non_ascii(value) {
        return None;
    }
    let Opened::Valid { session, stale_key } = Session::open(value, name, keys, now) else {
        return None;
    };
    assert!(u64::from(session.expiry) > now, "expired session opened");
    assert!(value.len() <= MAX_COOKIE_VALUE);
    let sealed = !keys.is_empty();
    check_value_shape(value, sealed);
    if stale_key {
        assert!(keys.len() >= 2, "stale key with {} keys", keys.len());
    }
    if let Some(ep) = &session.endpoint {
        assert!(!ep.is_empty() && ep.len() <= 64);
    }
    let body = URL_SAFE_NO_PAD
        .decode(&value[1..])
        .expect("it opened, so it decodes");
    let mut nonce = [0u8; NONCE_LEN];
    if sealed {
        nonce.copy_from_slice(&body[..NONCE_LEN]);
    }
    let again = session.encode(name, keys, &nonce);
    if !stale_key {
        assert_eq!(again, value, "re-encoding gives the same text");
    }
    assert_eq!(
        Session::open(&again, name, keys, now),
        Opened::Valid {
            session: session.clone(),
            stale_key: false
        },
        "the re-encoded cookie opens identically"
    );
    // Sealed cookies are bound to their name; plain ones carry it in the check.
    if !name.is_empty() {
        let other = format!("{name}x");
        assert_eq!(
            Session::open(value, &other, keys, now),
            Opened::Invalid,
            "a cookie opens under another name"
        );
    }
    Some(session)
}

// ---------------------------------------------------------------------------
// The fixed configs of the `decide` target.

/// Configs that together use every feature a request can reach.
pub const DECIDE_CONFIGS: &[&str] = &[
    // 0: balanced, plain cookies, rules of every kind, route entries.
    r#"{
      "versions": [{"name": "v1"}, {"name": "v2", "weight": 30}, {"name": "v3", "weight": 10}],
      "rules": [
        {"header": "x-canary", "version": "v2"},
        {"header": "x-beta", "regex": "^(team|qa)-[a-z]+$", "version": "v3"},
        {"header": "x-exact", "value": "yes", "version": "v3"},
        {"cookie": "canary", "value": "v2", "version": "v2"},
        {"cookie": "canary3", "version": "v3"},
        {"query": "canary", "value": "v2", "version": "v2"},
        {"query": "ver", "value": "v 3", "version": "v3"}
      ],
      "session": {"cookie": {"name": "sc", "path": "/", "domain": "example.com", "max_age": 3600,
                             "expires": 600, "secure": true, "http_only": true,
                             "same_site": "None", "same_site_none_compat": true}},
      "routes": [
        {"name": "checkout", "match": {"authority": "*.shop.example.com", "path_prefix": ["/checkout", "/cart"]},
         "versions": [{"name": "v1"}, {"name": "v2", "weight": 5}],
         "rules": [{"header": "x-canary", "version": "v2"}, {"cookie": "canary", "value": "v2", "version": "v2"}]},
        {"name": "by-route", "match": {"route_name": ["r1", "r2"]}, "stickiness": "legacy", "seed": "s2"},
        {"name": "by-vhost", "match": {"virtual_host": "vh"}, "weight_total": 1000,
         "versions": [{"name": "v1"}, {"name": "v2", "weight": 999}], "rules": [],
         "session": {"cookie": {"name": "sc-vh", "same_site": "Lax", "same_site_none_compat": false}}},
        {"name": "health", "match": {"path_prefix": "/healthz"}, "enabled": false}
      ]
    }"#,
    // 1: persistent, two secrets, key from a header, no re-pin on failure.
    r#"{
      "versions": [{"name": "stable"}, {"name": "canary", "weight": 50}],
      "filter_state": true, "debug_header": "x-canary-debug",
      "rules": [{"cookie": "canary", "version": "canary"}, {"header": "x-canary", "value": "always", "version": "canary"}],
      "session": {"mode": "persistent", "change_on_failure": false, "ttl": 7200,
                  "secrets": ["AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
                              "yMnKy8zNzs_Q0dLT1NXW19jZ2tvc3d7f4OHi4-Tl5uc"],
                  "key": {"from": "header", "name": "x-user"},
                  "cookie": {"name": "sp", "same_site": "strict"}},
      "headers": {"version": "x-app-version", "hash": "x-app-hash", "endpoint": "x-app-endpoint"}
    }"#,
    // 2: persistent, re-pin on failure, key from the client address.
    r#"{
      "versions": [{"name": "a"}, {"name": "b", "weight": 1}, {"name": "c", "weight": 0}],
      "weight_total": 3,
      "rules": [{"header": "x-c", "version": "c"}],
      "session": {"mode": "persistent", "secrets": ["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="],
                  "key": {"from": "client_ip"}}
    }"#,
    // 3: key from X-Forwarded-For, two trusted hops, rollback, a ramp.
    r#"{
      "versions": [{"name": "v1"}, {"name": "v2", "ramp": {"start": 1800000000, "duration": 3600, "to": 60, "steps": 6}},
                   {"name": "v3", "weight": 0}],
      "rollback": true,
      "rules": [{"query": "v", "value": "3", "version": "v3"}, {"header": "x-v3", "version": "v3"}],
      "session": {"key": {"from": "client_ip", "xff_trusted_hops": 2}, "ttl": 60}
    }"#,
    // 4: key from a query parameter, legacy stickiness, sealed balanced, seed.
    r#"{
      "versions": [{"name": "v1"}, {"name": "v2", "weight": 50}],
      "stickiness": "legacy",
      "seed": "rollout-7",
      "session": {"key": {"from": "query", "name": "uid"},
                  "secrets": ["yMnKy8zNzs_Q0dLT1NXW19jZ2tvc3d7f4OHi4-Tl5uc"],
                  "cookie": {"name": "__Secure-sq", "secure": true, "http_only": false}}
    }"#,
    // 5: drain: a remembered canary at weight 0, RFC 3339 ramp down.
    r#"{
      "versions": [{"name": "v1"}, {"name": "v2", "weight": 0},
                   {"name": "v3", "ramp": {"start": "2027-01-15T08:00:00Z", "end": "2027-01-15T10:00:00+01:00", "from": 40, "to": 0}}],
      "rules": [{"cookie": "pick", "value": "v2", "version": "v2"}, {"cookie": "pick", "value": "v3", "version": "v3"}],
      "session": {"ttl": 100000, "cookie": {"max_age": 100000}}
    }"#,
    // 6: only route entries; the global object holds defaults.
    r#"{
      "rules": [{"header": "x-canary", "version": "v2"}],
      "session": {"cookie": {"name": "g"}},
      "routes": [
        {"name": "api", "match": {"path_prefix": "/api"}, "versions": [{"name": "v1"}, {"name": "v2", "weight": 100}]},
        {"name": "web", "match": {"authority": ["www.example.com", "*.web.example.com"]},
         "versions": [{"name": "v1", "weight": 90}, {"name": "v2", "weight": 10}],
         "session": {"key": {"from": "header", "name": "x-user"}}}
      ]
    }"#,
    // 7: Secure only over HTTPS, a route entry whose cookie Path defaults
    // to its one path prefix.
    r#"{
      "versions": [{"name": "v1"}, {"name": "v2", "weight": 50}],
      "filter_state": true, "debug_header": "x-debug",
      "session": {"cookie": {"name": "sa", "secure": "auto", "same_site": "Lax",
                             "same_site_none_compat": true, "max_age": 600}},
      "routes": [
        {"name": "shop", "match": {"path_prefix": "/shop"},
         "versions": [{"name": "v1"}, {"name": "v2", "weight": 100}], "session": {"cookie": {"name": "ss"}}}
      ]
    }"#,
];

/// The compiled [`DECIDE_CONFIGS`].
pub fn decide_plugins() -> Vec<Plugin> {
    DECIDE_CONFIGS
        .iter()
        .map(|c| compile_json(c).unwrap_or_else(|e| panic!("decide config: {e}")))
        .collect()
}

// ---------------------------------------------------------------------------
// The text form of a `decide` input (seeds and regressions).

/// Parse the text form of a `decide` input:
///
/// ```text
/// H<config index>
/// :path: /checkout?canary=v2
/// cookie: sc={S1r0f#alice@10.0.0.7:8080}; other=1
/// @client 203.0.113.9:4711
/// @now 1800000000
/// @up 10.0.0.8:8080 2 200
/// @route r1
/// @vhost vh
/// @norng
/// ```
///
/// Every other line is a header, `name: value` (bytes as they are). In a
/// value, `{S<v><o><k><e>[#key][@endpoint]}` is a session cookie made for
/// the policy the request lands on: version index `v`, origin `r`ule or
/// `w`eight, sealed with key `k` (0 first, 1 second, 2 a wrong key, 3
/// plain), expiry `f`ine, `x` expired or `n` near renewal; the key derived
/// from `key` (default: 16 bytes of 1), the pinned endpoint.
pub fn parse_text_case(data: &[u8], plugins: &[Plugin]) -> Option<(usize, ReqCase)> {
    let rest = data.strip_prefix(b"H")?;
    let mut lines = rest.split(|b| *b == b'\n');
    let first = lines.next()?;
    let idx = std::str::from_utf8(first)
        .ok()?
        .trim()
        .parse::<usize>()
        .ok()?
        % plugins.len();
    let mut case = ReqCase {
        now: 1_800_000_000,
        entropy: Some(1),
        ..ReqCase::default()
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    for line in lines {
        if let Some(arg) = line.strip_prefix(b"@") {
            let s = text(arg);
            let (cmd, val) = s.split_once(' ').unwrap_or((s.as_str(), ""));
            match cmd {
                "now" => case.now = val.trim().parse::<u64>().unwrap_or(0) % (MAX_NOW + 1),
                "client" => case.client_address = Some(val.to_owned()),
                "route" => case.route_name = Some(val.to_owned()),
                "vhost" => case.virtual_host = Some(val.to_owned()),
                "norng" => case.entropy = None,
                "rng" => case.entropy = val.trim().parse().ok(),
                "up" => {
                    let mut it = val.split(' ');
                    case.upstream_address = it.next().filter(|a| *a != "-").map(envoy_addr);
                    case.upstream_attempts = it.next().and_then(|a| a.parse().ok());
                    case.upstream_status = it.next().and_then(|a| a.parse().ok());
                }
                _ => {}
            }
            continue;
        }
        let (name, value) = match line.windows(2).position(|w| w == b": ") {
            Some(i) if i > 0 => (&line[..i], &line[i + 2..]),
            _ => (line, &b""[..]),
        };
        case.headers.push((name.to_vec(), value.to_vec()));
    }
    let plugin = &plugins[idx];
    let policy = {
        let headers = api_headers(&case);
        plugin.select(&request(&case, &headers)).cloned()
    };
    if let Some(p) = policy {
        for (_, v) in &mut case.headers {
            *v = expand_sessions(v, &p, case.now);
        }
    }
    Some((idx, case))
}

fn expand_sessions(v: &[u8], p: &Policy, now: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i..].starts_with(b"{S") {
            if let Some(end) = v[i..].iter().position(|b| *b == b'}') {
                let spec = String::from_utf8_lossy(&v[i + 2..i + end]).into_owned();
                out.extend_from_slice(session_text(&spec, p, now).as_bytes());
                i += end + 1;
                continue;
            }
        }
        out.push(v[i]);
        i += 1;
    }
    out
}

/// An upstream address as Envoy reports it (`upstream.address`): text
/// without control characters. It is the only source of a pinned endpoint
/// (a sealed cookie carries nothing else), so inputs are held to it.
pub fn envoy_addr(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

fn session_text(spec: &str, p: &Policy, now: u64) -> String {
    let (head, endpoint) = match spec.split_once('@') {
        Some((h, e)) => (h, Some(envoy_addr(e))),
        None => (spec, None),
    };
    let (head, key) = match head.split_once('#') {
        Some((h, k)) => (h, hash::derive_key(k.as_bytes())),
        None => (head, [1u8; 16]),
    };
    let b = head.as_bytes();
    let at = |i: usize| b.get(i).copied().unwrap_or(b'0');
    let v = usize::from(at(0).wrapping_sub(b'0')) % p.versions().len();
    let expiry = match at(3) {
        b'x' => now.saturating_sub(1),
        b'n' => now + 1,
        _ => now + p.ttl(),
    };
    let s = Session {
        key,
        version_id: p.versions()[v].id(),
        origin: if at(1) == b'r' {
            sticky_canary::session::Origin::Rule
        } else {
            sticky_canary::session::Origin::Weight
        },
        expiry: u32::try_from(expiry).unwrap_or(u32::MAX),
        endpoint,
    };
    let keys: Vec<SealKey> = match at(2) {
        b'0' => p.seal_keys().iter().take(1).cloned().collect(),
        b'1' => p.seal_keys().iter().skip(1).take(1).cloned().collect(),
        b'2' => vec![SealKey([0x55; 32])],
        _ => Vec::new(),
    };
    s.encode(p.cookie().name(), &keys, &[9; NONCE_LEN])
}

// ---------------------------------------------------------------------------
// The byte forms of the `cookie_open` and `set_cookie` inputs.

/// Split a `cookie_open` input: the value (up to the first NUL, bytes made
/// text as `from_utf8_lossy` does), the keys picked by the first control
/// byte (0 none, 1 `[7; 32]`, 2 `[8; 32], [7; 32]`, 3: the fuzz target
/// takes them from the rest), the cookie name picked by the second from
/// `names`, and the rest.
pub fn cookie_open_input<'a>(
    data: &'a [u8],
    names: &[&str],
) -> (String, u8, Vec<SealKey>, String, &'a [u8]) {
    let (raw, control) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let ks = control.first().copied().unwrap_or(0) % 4;
    let keys = match ks {
        1 => vec![SealKey([7; 32])],
        2 => vec![SealKey([8; 32]), SealKey([7; 32])],
        _ => Vec::new(),
    };
    let nm = usize::from(control.get(1).copied().unwrap_or(0));
    let name = names[nm % names.len()].to_owned();
    let value = String::from_utf8_lossy(raw).into_owned();
    (value, ks, keys, name, control.get(2..).unwrap_or_default())
}

/// A config whose session cookie compiles renders a Set-Cookie that parses
/// back to the configured attributes, for `session` at `now`.
pub fn check_cookie_config(
    text: &str,
    session: &Session,
    nonce: &[u8; NONCE_LEN],
    now: u64,
    user_agent: Option<&str>,
) -> Option<String> {
    let plugin = match compile_json(text) {
        Ok(p) => p,
        Err(e) => {
            check_config_error(&e, &[]);
            return None;
        }
    };
    let p = plugin.global.as_ref()?;
    let value = session.encode(p.cookie().name(), p.seal_keys(), nonce);
    check_value_shape(&value, !p.seal_keys().is_empty());
    let mut last = None;
    for https in [false, true] {
        let header = cookies::render_for(p.cookie(), &value, now, user_agent, https);
        check_set_cookie(p.cookie(), &value, now, user_agent, https, &header);
        last = Some(header);
    }
    last
}

/// The session the `set_cookie` regressions render.
pub fn sample_session() -> Session {
    Session {
        key: *b"0123456789abcdef",
        version_id: hash::fnv32(b"b"),
        origin: sticky_canary::session::Origin::Rule,
        expiry: 1_800_086_400,
        endpoint: Some("10.0.0.7:8080".into()),
    }
}
