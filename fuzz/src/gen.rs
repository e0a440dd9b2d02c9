//! Structured fuzz inputs: `arbitrary` mirrors of the plugin config and of a
//! request, turned into JSON text and into [`ReqCase`]s. Values are drawn
//! mostly from small pools of meaningful strings (so configs compile and
//! rules match often) and sometimes from arbitrary text.

use crate::checks::{ReqCase, MAX_NOW};
use arbitrary::Arbitrary;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{json, Map, Value};
use sticky_canary::session::{Origin, SealKey, Session};
use sticky_canary::{hash, Plugin, Policy};

/// A string: from the pool the caller names, or anything.
#[derive(Arbitrary, Debug, Clone)]
pub enum Text {
    /// `pool[i % len]`.
    Pool(u8),
    /// Another pool entry with a suffix.
    PoolPlus(u8, String),
    /// Any text.
    Any(String),
}

impl Text {
    /// Resolve against `pool`.
    pub fn pick(&self, pool: &[&str]) -> String {
        let at = |i: &u8| pool[usize::from(*i) % pool.len()].to_owned();
        match self {
            Text::Pool(i) => at(i),
            Text::PoolPlus(i, s) => at(i) + s,
            Text::Any(s) => s.clone(),
        }
    }
}

/// A JSON number (or something that is not one).
#[derive(Arbitrary, Debug, Clone)]
pub enum Num {
    /// 0..=255.
    Small(u8),
    /// 0..=65535.
    Mid(u16),
    /// Any u32.
    Big(u32),
    /// Any u64.
    Huge(u64),
    /// Negative.
    Neg(i32),
    /// A float.
    Float(f32),
    /// A string instead of a number.
    Str(String),
}

impl Num {
    fn json(&self) -> Value {
        match self {
            Num::Small(n) => json!(n),
            Num::Mid(n) => json!(n),
            Num::Big(n) => json!(n),
            Num::Huge(n) => json!(n),
            Num::Neg(n) => json!(n),
            Num::Float(f) => {
                serde_json::Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number)
            }
            Num::Str(s) => json!(s),
        }
    }
}

/// An optional JSON value: absent, null, or present.
#[derive(Arbitrary, Debug, Clone)]
pub enum Opt<T> {
    /// Key absent.
    Absent,
    /// `null`.
    Null,
    /// The value.
    Some(T),
}

fn put<T>(m: &mut Map<String, Value>, key: &str, v: &Opt<T>, f: impl FnOnce(&T) -> Value) {
    match v {
        Opt::Absent => {}
        Opt::Null => {
            m.insert(key.to_owned(), Value::Null);
        }
        Opt::Some(t) => {
            m.insert(key.to_owned(), f(t));
        }
    }
}

/// Pools of meaningful strings.
pub mod pool {
    /// Version names (valid and not).
    pub const VERSION: &[&str] = &[
        "v1", "v2", "v3", "canary", "stable", "a.b_c-d", "V1", "", "bad name", "v/1", "é",
    ];
    /// Header names rules and keys read.
    pub const HEADER: &[&str] = &[
        "x-canary",
        "x-user",
        "X-Beta",
        "user-agent",
        "cookie",
        "x-canary-version",
        "x-sticky-hash",
        "bad header",
        "",
        ":path",
        "x-forwarded-for",
    ];
    /// Cookie names (in checks.rs, which the regression replay includes).
    pub const COOKIE: &[&str] = crate::checks::COOKIE_NAMES;
    /// Query names.
    pub const QUERY: &[&str] = &["canary", "uid", "v", "a&b", "x=y", "", "ünï", "a#b"];
    /// Values rules compare with.
    pub const VALUE: &[&str] = &["v2", "always", "never", "yes", "v 3", "", "3", "%41"];
    /// Regexes.
    pub const REGEX: &[&str] = &[
        "^(team|qa)-",
        "^a$",
        "(",
        "[z-a]",
        ".*",
        "\\d+",
        "(?i)beta",
        "a{1000}{1000}",
        "\\p{L}+",
    ];
    /// Cookie paths.
    pub const PATH: &[&str] = &[
        "/", "/app", "/a b", "/x ", "/x;y", "app", "/\u{7f}", "/%2F", "",
    ];
    /// Cookie domains.
    pub const DOMAIN: &[&str] = &[
        "example.com",
        ".example.com",
        "a-b.example",
        "",
        "exa mple.com",
        "例え.jp",
        "x;y",
    ];
    /// SameSite values.
    pub const SAME_SITE: &[&str] = &[
        "None", "Lax", "Strict", "lax", "STRICT", "none", "", "Bogus",
    ];
    /// Modes.
    pub const MODE: &[&str] = &["balanced", "persistent", "Persistent", ""];
    /// Key sources.
    pub const KEY_FROM: &[&str] = &["cookie", "header", "query", "client_ip", "ip", ""];
    /// Stickiness values.
    pub const STICKINESS: &[&str] = &["sticky", "legacy", "Sticky", "a\nb"];
    /// Override header names.
    pub const OVERRIDE: &[&str] = &[
        "x-canary-version",
        "x-sticky-hash",
        "x-sticky-endpoint",
        "x-app-version",
        "x-app-hash",
        "host",
        "cookie",
        "X-Upper",
        "bad name",
        "",
    ];
    /// RFC 3339 times.
    pub const TIME: &[&str] = &[
        "2026-11-21T10:00:00Z",
        "2027-01-15T08:00:00Z",
        "2027-01-15T09:00:00.5+01:00",
        "2026-02-29T00:00:00Z",
        "2028-02-29T23:59:60Z",
        "1969-12-31T23:59:59Z",
        "9999-12-31T23:59:59-23:59",
        "2026-13-01T00:00:00Z",
        "not a time",
    ];
    /// Route match values.
    pub const MATCH: &[&str] = &[
        "/",
        "/api",
        "/checkout",
        "r1",
        "vh",
        "*.example.com",
        "shop.example.com",
        "*",
        "",
        "api",
        "/api/",
        "/api?x=1",
        "(?i)^/API",
        "^/(a",
    ];
    /// Env variable names for secrets_env.
    pub const ENV: &[&str] = &[
        "STICKY_CANARY_FUZZ_KEYS",
        "STICKY_CANARY_FUZZ_UNSET",
        "",
        "A=B",
    ];
    /// Route entry names.
    pub const ROUTE: &[&str] = &["api", "web", "health", "", "routes[0]"];
    /// Header names in requests.
    pub const REQ_HEADER: &[&str] = &[
        ":path",
        ":authority",
        ":scheme",
        "x-forwarded-proto",
        "host",
        "cookie",
        "user-agent",
        "x-forwarded-for",
        "x-user",
        "x-canary",
        "x-beta",
        "x-exact",
        "x-c",
        "x-v3",
        "x-request-id",
        "x-canary-version",
        "x-sticky-hash",
        "x-sticky-endpoint",
        "x-app-endpoint",
        "X-Canary",
        "COOKIE",
    ];
    /// Header values in requests.
    pub const REQ_VALUE: &[&str] = &[
        "https",
        " HTTPS ",
        "http",
        "always",
        "never",
        "yes",
        "team-red",
        "qa-x",
        "alice",
        "bob",
        "",
        "203.0.113.9",
        "unknown, 10.0.0.1, 10.0.0.2",
        "shop.example.com",
        "a.shop.example.com:443",
        "www.example.com",
        "x.web.example.com",
        "vh",
        "[::1]:80",
    ];
    /// Request paths.
    pub const REQ_PATH: &[&str] = &[
        "/",
        "/api/x",
        "/checkout/1",
        "/cart",
        "/healthz",
        "/weighted/x",
        "",
        "*",
        "/%zz",
    ];
    /// Query names in requests.
    pub const REQ_QUERY: &[&str] = &["canary", "ver", "uid", "v", "c%61nary", "canary+", ""];
    /// Query values in requests.
    pub const REQ_QVALUE: &[&str] = &[
        "v2", "v+3", "v%203", "3", "alice", "%+a", "%zz", "%E9", "%C3%A9", "",
    ];
    /// Addresses.
    pub const ADDR: &[&str] = &[
        "203.0.113.9:4711",
        "203.0.113.9",
        "[2001:db8::1]:443",
        "2001:db8::1",
        "10.0.0.7:8080",
        "10.0.0.8:8080",
        "unknown",
        "_hidden",
        "",
        "[::1]",
        "1.2.3.4:x",
    ];
    /// User agents.
    pub const UA: &[&str] = &[
        "Mozilla/5.0 (iPhone; CPU iPhone OS 12_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/12.1.2 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/51.0.2704.103 Safari/537.36",
        "Mozilla/5.0 (Linux; U; Android 8.0.0; en-US) AppleWebKit/534.30 (KHTML, like Gecko) Version/4.0 UCBrowser/12.10.8.1172 Mobile Safari/534.30",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_6) AppleWebKit/605.1.15 (KHTML, like Gecko)",
        "curl/8.5.0",
        "UCBrowser/",
        "Chrome/",
        "",
    ];
}

/// Standard base64 with padding (secrets as `openssl rand -base64 32` prints them).
pub fn b64_std(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// The environment variable `secrets_env` configs may name.
pub fn set_env_keys() {
    std::env::set_var(
        "STICKY_CANARY_FUZZ_KEYS",
        format!("{}, {}", b64_std(&[3; 32]), b64_std(&[4; 32])),
    );
}

// ---------------------------------------------------------------------------
// The config mirror.

/// A `secrets[]` entry.
#[derive(Arbitrary, Debug, Clone)]
pub enum Secret {
    /// 32 bytes, standard base64.
    Std([u8; 32]),
    /// 32 bytes, base64url without padding.
    Url([u8; 32]),
    /// Some other number of bytes.
    Bytes(Vec<u8>),
    /// Any text.
    Any(String),
}

impl Secret {
    /// The string in the config.
    pub fn text(&self) -> String {
        match self {
            Secret::Std(b) => b64_std(b),
            Secret::Url(b) => URL_SAFE_NO_PAD.encode(b),
            Secret::Bytes(b) => b64_std(b),
            Secret::Any(s) => s.clone(),
        }
    }
}

/// `session.cookie`.
#[derive(Arbitrary, Debug, Clone)]
pub struct CookieM {
    pub name: Opt<Text>,
    pub path: Opt<Text>,
    pub domain: Opt<Text>,
    pub max_age: Opt<Num>,
    pub expires: Opt<Num>,
    /// 0 false, 1 true, 2 "auto", 3 a bad value.
    pub secure: Opt<u8>,
    pub http_only: Opt<bool>,
    pub same_site: Opt<Text>,
    pub same_site_none_compat: Opt<bool>,
    pub unknown: Option<u8>,
}

impl CookieM {
    /// As JSON.
    pub fn json(&self) -> Value {
        let mut m = Map::new();
        put(&mut m, "name", &self.name, |t| json!(t.pick(pool::COOKIE)));
        put(&mut m, "path", &self.path, |t| json!(t.pick(pool::PATH)));
        put(&mut m, "domain", &self.domain, |t| {
            json!(t.pick(pool::DOMAIN))
        });
        put(&mut m, "max_age", &self.max_age, Num::json);
        put(&mut m, "expires", &self.expires, Num::json);
        put(&mut m, "secure", &self.secure, |b| match b {
            0 => json!(false),
            1 => json!(true),
            2 => json!("auto"),
            _ => json!("Auto"),
        });
        put(&mut m, "http_only", &self.http_only, |b| json!(b));
        put(&mut m, "same_site", &self.same_site, |t| {
            json!(t.pick(pool::SAME_SITE))
        });
        put(
            &mut m,
            "same_site_none_compat",
            &self.same_site_none_compat,
            |b| json!(b),
        );
        if let Some(u) = self.unknown {
            m.insert(
                ["maxAge", "samesite", "Name"][usize::from(u) % 3].to_owned(),
                json!(1),
            );
        }
        Value::Object(m)
    }
}

/// `session.key`.
#[derive(Arbitrary, Debug, Clone)]
pub struct KeyM {
    pub from: Opt<Text>,
    pub name: Opt<Text>,
    pub xff_trusted_hops: Opt<Num>,
}

impl KeyM {
    fn json(&self) -> Value {
        let mut m = Map::new();
        put(
            &mut m,
            "from",
            &self.from,
            |t| json!(t.pick(pool::KEY_FROM)),
        );
        put(&mut m, "name", &self.name, |t| json!(t.pick(pool::HEADER)));
        put(
            &mut m,
            "xff_trusted_hops",
            &self.xff_trusted_hops,
            Num::json,
        );
        Value::Object(m)
    }
}

/// `session`.
#[derive(Arbitrary, Debug, Clone)]
pub struct SessionM {
    pub cookie: Opt<CookieM>,
    pub key: Opt<KeyM>,
    pub ttl: Opt<Num>,
    pub mode: Opt<Text>,
    pub secrets: Opt<Vec<Secret>>,
    pub secrets_env: Opt<Text>,
    pub change_on_failure: Opt<bool>,
}

impl SessionM {
    fn json(&self) -> Value {
        let mut m = Map::new();
        put(&mut m, "cookie", &self.cookie, CookieM::json);
        put(&mut m, "key", &self.key, KeyM::json);
        put(&mut m, "ttl", &self.ttl, Num::json);
        put(&mut m, "mode", &self.mode, |t| json!(t.pick(pool::MODE)));
        put(&mut m, "secrets", &self.secrets, |v| {
            Value::Array(v.iter().map(|s| json!(s.text())).collect())
        });
        put(&mut m, "secrets_env", &self.secrets_env, |t| {
            json!(t.pick(pool::ENV))
        });
        put(&mut m, "change_on_failure", &self.change_on_failure, |b| {
            json!(b)
        });
        Value::Object(m)
    }

    /// The secret strings (so errors can be checked not to echo them).
    pub fn secret_texts(&self) -> Vec<String> {
        // Only secrets made from random bytes: arbitrary text may be a word
        // the error message uses anyway ("expected").
        match &self.secrets {
            Opt::Some(v) => v
                .iter()
                .filter(|s| !matches!(s, Secret::Any(_)))
                .map(Secret::text)
                .filter(|t| t.len() >= 12)
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// A ramp time.
#[derive(Arbitrary, Debug, Clone)]
pub enum TimeM {
    /// Unix seconds near 2027.
    Near(u16),
    /// Any Unix seconds.
    Unix(u64),
    /// RFC 3339 from the pool.
    Rfc(Text),
    /// Built from parts.
    Parts(u16, u8, u8, u8, u8, u8, i8),
    /// A negative or fractional number.
    Num(Num),
}

impl TimeM {
    fn json(&self) -> Value {
        match self {
            TimeM::Near(d) => json!(1_800_000_000u64 + u64::from(*d) * 60),
            TimeM::Unix(u) => json!(u),
            TimeM::Rfc(t) => json!(t.pick(pool::TIME)),
            TimeM::Parts(y, mo, d, h, mi, s, off) => {
                let zone = if *off == 0 {
                    "Z".to_owned()
                } else {
                    format!(
                        "{}{:02}:{:02}",
                        if *off < 0 { '-' } else { '+' },
                        off.unsigned_abs() % 30,
                        off.unsigned_abs() % 60
                    )
                };
                json!(format!(
                    "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{zone}",
                    y % 10000,
                    mo % 14,
                    d % 33,
                    h % 25,
                    mi % 61,
                    s % 62
                ))
            }
            TimeM::Num(n) => n.json(),
        }
    }
}

/// `versions[].ramp`.
#[derive(Arbitrary, Debug, Clone)]
pub struct RampM {
    pub start: Opt<TimeM>,
    pub end: Opt<TimeM>,
    pub duration: Opt<Num>,
    pub from: Opt<Num>,
    pub to: Opt<Num>,
    pub steps: Opt<Num>,
}

impl RampM {
    fn json(&self) -> Value {
        let mut m = Map::new();
        put(&mut m, "start", &self.start, TimeM::json);
        put(&mut m, "end", &self.end, TimeM::json);
        put(&mut m, "duration", &self.duration, Num::json);
        put(&mut m, "from", &self.from, Num::json);
        put(&mut m, "to", &self.to, Num::json);
        put(&mut m, "steps", &self.steps, Num::json);
        Value::Object(m)
    }
}

/// `versions[]`.
#[derive(Arbitrary, Debug, Clone)]
pub struct VersionM {
    pub name: Opt<Text>,
    pub weight: Opt<Num>,
    pub ramp: Opt<RampM>,
}

impl VersionM {
    fn json(&self, i: usize) -> Value {
        let mut m = Map::new();
        // Names are mostly distinct and valid: v<i> unless the input says otherwise.
        match &self.name {
            Opt::Absent => {
                m.insert("name".into(), json!(format!("v{}", i + 1)));
            }
            other => put(&mut m, "name", other, |t| json!(t.pick(pool::VERSION))),
        }
        put(&mut m, "weight", &self.weight, Num::json);
        put(&mut m, "ramp", &self.ramp, RampM::json);
        Value::Object(m)
    }
}

/// `rules[]`.
#[derive(Arbitrary, Debug, Clone)]
pub struct RuleM {
    pub header: Opt<Text>,
    pub cookie: Opt<Text>,
    pub query: Opt<Text>,
    pub value: Opt<Text>,
    pub regex: Opt<Text>,
    pub version: Opt<Text>,
}

impl RuleM {
    fn json(&self) -> Value {
        let mut m = Map::new();
        put(&mut m, "header", &self.header, |t| {
            json!(t.pick(pool::HEADER))
        });
        put(&mut m, "cookie", &self.cookie, |t| {
            json!(t.pick(pool::COOKIE))
        });
        put(&mut m, "query", &self.query, |t| json!(t.pick(pool::QUERY)));
        put(&mut m, "value", &self.value, |t| json!(t.pick(pool::VALUE)));
        put(&mut m, "regex", &self.regex, |t| json!(t.pick(pool::REGEX)));
        put(&mut m, "version", &self.version, |t| {
            json!(t.pick(pool::VERSION))
        });
        Value::Object(m)
    }
}

/// `headers`.
#[derive(Arbitrary, Debug, Clone)]
pub struct HeadersM {
    pub version: Opt<Text>,
    pub hash: Opt<Text>,
    pub endpoint: Opt<Text>,
}

impl HeadersM {
    fn json(&self) -> Value {
        let mut m = Map::new();
        put(&mut m, "version", &self.version, |t| {
            json!(t.pick(pool::OVERRIDE))
        });
        put(
            &mut m,
            "hash",
            &self.hash,
            |t| json!(t.pick(pool::OVERRIDE)),
        );
        put(&mut m, "endpoint", &self.endpoint, |t| {
            json!(t.pick(pool::OVERRIDE))
        });
        Value::Object(m)
    }
}

/// A string or a list of strings.
#[derive(Arbitrary, Debug, Clone)]
pub enum OneOrMany {
    /// One.
    One(Text),
    /// Many.
    Many(Vec<Text>),
}

impl OneOrMany {
    fn json(&self) -> Value {
        match self {
            OneOrMany::One(t) => json!(t.pick(pool::MATCH)),
            OneOrMany::Many(v) => {
                Value::Array(v.iter().map(|t| json!(t.pick(pool::MATCH))).collect())
            }
        }
    }
}

/// `routes[].match`.
#[derive(Arbitrary, Debug, Clone)]
pub struct MatchM {
    pub route_name: Opt<OneOrMany>,
    pub virtual_host: Opt<OneOrMany>,
    pub authority: Opt<OneOrMany>,
    pub path_prefix: Opt<OneOrMany>,
    pub path_exact: Opt<OneOrMany>,
    pub path_separated_prefix: Opt<OneOrMany>,
    pub path_regex: Opt<OneOrMany>,
}

impl MatchM {
    fn json(&self) -> Value {
        let mut m = Map::new();
        put(&mut m, "route_name", &self.route_name, OneOrMany::json);
        put(&mut m, "virtual_host", &self.virtual_host, OneOrMany::json);
        put(&mut m, "authority", &self.authority, OneOrMany::json);
        put(&mut m, "path_prefix", &self.path_prefix, OneOrMany::json);
        put(&mut m, "path_exact", &self.path_exact, OneOrMany::json);
        put(
            &mut m,
            "path_separated_prefix",
            &self.path_separated_prefix,
            OneOrMany::json,
        );
        put(&mut m, "path_regex", &self.path_regex, OneOrMany::json);
        Value::Object(m)
    }
}

/// The top-level keys a route entry shares with the global object.
#[derive(Arbitrary, Debug, Clone)]
pub struct BodyM {
    pub versions: Opt<Vec<VersionM>>,
    pub weight_total: Opt<Num>,
    pub rules: Opt<Vec<RuleM>>,
    pub stickiness: Opt<Text>,
    pub rollback: Opt<bool>,
    pub seed: Opt<Text>,
    pub session: Opt<SessionM>,
    pub headers: Opt<HeadersM>,
    pub filter_state: Opt<bool>,
    pub debug_header: Opt<Text>,
    /// An unknown key.
    pub unknown: Option<u8>,
}

impl BodyM {
    fn fill(&self, m: &mut Map<String, Value>) {
        put(m, "versions", &self.versions, |v| {
            Value::Array(
                v.iter()
                    .take(40)
                    .enumerate()
                    .map(|(i, x)| x.json(i))
                    .collect(),
            )
        });
        put(m, "weight_total", &self.weight_total, Num::json);
        put(m, "rules", &self.rules, |v| {
            Value::Array(v.iter().map(RuleM::json).collect())
        });
        put(m, "stickiness", &self.stickiness, |t| {
            json!(t.pick(pool::STICKINESS))
        });
        put(m, "rollback", &self.rollback, |b| json!(b));
        put(m, "seed", &self.seed, |t| {
            json!(t.pick(&["", "s", "rollout-7"]))
        });
        put(m, "session", &self.session, SessionM::json);
        put(m, "headers", &self.headers, HeadersM::json);
        put(m, "filter_state", &self.filter_state, |b| json!(b));
        put(m, "debug_header", &self.debug_header, |t| {
            json!(t.pick(pool::OVERRIDE))
        });
        if let Some(u) = self.unknown {
            match u % 8 {
                4 => m.insert("on_invalid_config".into(), json!("refuse")),
                5 => m.insert("on_invalid_config".into(), json!("pass_through")),
                6 => m.insert("on_invalid_config".into(), json!("Refuse")),
                i => m.insert(
                    ["version", "weights", "$schema", "Rules"][usize::from(i % 4)].to_owned(),
                    json!([]),
                ),
            };
        }
    }

    fn secret_texts(&self) -> Vec<String> {
        match &self.session {
            Opt::Some(s) => s.secret_texts(),
            _ => Vec::new(),
        }
    }
}

/// `routes[]`.
#[derive(Arbitrary, Debug, Clone)]
pub struct RouteM {
    pub name: Opt<Text>,
    pub enabled: Opt<bool>,
    pub matcher: Opt<MatchM>,
    pub body: BodyM,
    /// A nested `routes` key (refused).
    pub nested: bool,
}

/// The whole plugin config.
#[derive(Arbitrary, Debug, Clone)]
pub struct ConfigM {
    pub body: BodyM,
    pub routes: Opt<Vec<RouteM>>,
}

impl ConfigM {
    /// As JSON.
    pub fn json(&self) -> Value {
        let mut m = Map::new();
        self.body.fill(&mut m);
        put(&mut m, "routes", &self.routes, |v| {
            Value::Array(
                v.iter()
                    .map(|r| {
                        let mut e = Map::new();
                        put(&mut e, "name", &r.name, |t| json!(t.pick(pool::ROUTE)));
                        put(&mut e, "enabled", &r.enabled, |b| json!(b));
                        put(&mut e, "match", &r.matcher, MatchM::json);
                        r.body.fill(&mut e);
                        if r.nested {
                            e.insert("routes".into(), json!([]));
                        }
                        Value::Object(e)
                    })
                    .collect(),
            )
        });
        Value::Object(m)
    }

    /// Every secret string the config holds.
    pub fn secret_texts(&self) -> Vec<String> {
        let mut out = self.body.secret_texts();
        if let Opt::Some(routes) = &self.routes {
            for r in routes {
                out.extend(r.body.secret_texts());
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Requests.

/// A header or cookie value.
#[derive(Arbitrary, Debug, Clone)]
pub enum ValueM {
    /// From the pool of request values.
    Text(Text),
    /// Any bytes.
    Bytes(Vec<u8>),
    /// A long value around the 1024-byte limit.
    Long(u8, u16),
}

impl ValueM {
    fn bytes(&self) -> Vec<u8> {
        match self {
            ValueM::Text(t) => t.pick(pool::REQ_VALUE).into_bytes(),
            ValueM::Bytes(b) => b.clone(),
            ValueM::Long(c, n) => vec![b'a' + c % 26; 1000 + usize::from(*n % 64)],
        }
    }
}

/// Where a session key in a generated cookie comes from.
#[derive(Arbitrary, Debug, Clone)]
pub enum KeyGen {
    /// Random bytes.
    Random([u8; 16]),
    /// Derived from a pool value (as a header or query key would be).
    Derived(Text),
    /// Derived from an address.
    Addr(Text),
}

/// A session cookie made for the policy the request lands on.
#[derive(Arbitrary, Debug, Clone)]
pub struct SessionGen {
    /// Cookie name; `None`: the policy's.
    pub name: Option<Text>,
    pub key: KeyGen,
    /// Version index (mod the version count, or an unknown id when large).
    pub version: u8,
    pub rule: bool,
    /// Expiry relative to now (seconds).
    pub expiry: i32,
    pub endpoint: Option<Text>,
    /// 0: the first key, 1: the second, 2: a wrong key, 3: plain.
    pub seal: u8,
    pub nonce: [u8; 24],
    /// Flip one byte of the value.
    pub flip: Option<(u8, u8)>,
    /// Wrap the value in double quotes.
    pub quoted: bool,
}

impl SessionGen {
    fn text(&self, p: &Policy, now: u64) -> String {
        let name = self
            .name
            .as_ref()
            .map_or_else(|| p.cookie().name().to_owned(), |t| t.pick(pool::COOKIE));
        let key = match &self.key {
            KeyGen::Random(k) => *k,
            KeyGen::Derived(t) => hash::derive_key(t.pick(pool::REQ_VALUE).as_bytes()),
            KeyGen::Addr(t) => {
                let a = t.pick(pool::ADDR);
                let ip = a
                    .rsplit_once(':')
                    .filter(|(ip, _)| !ip.contains(':'))
                    .map_or(a.as_str(), |(ip, _)| ip);
                hash::derive_key(ip.trim_start_matches('[').trim_end_matches(']').as_bytes())
            }
        };
        let n = p.versions().len();
        let version_id = if usize::from(self.version) < 4 * n {
            p.versions()[usize::from(self.version) % n].id()
        } else {
            hash::fnv32(&[self.version])
        };
        let expiry = now
            .saturating_add_signed(i64::from(self.expiry))
            .min(u64::from(u32::MAX)) as u32;
        let s = Session {
            key,
            version_id,
            origin: if self.rule {
                Origin::Rule
            } else {
                Origin::Weight
            },
            expiry,
            endpoint: self.endpoint.as_ref().map(|t| addr(&t.pick(pool::ADDR))),
        };
        let keys: Vec<SealKey> = match self.seal % 4 {
            0 => p.seal_keys().iter().take(1).cloned().collect(),
            1 => p.seal_keys().iter().skip(1).take(1).cloned().collect(),
            2 => vec![SealKey([0x55; 32])],
            _ => Vec::new(),
        };
        let mut v = s.encode(&name, &keys, &self.nonce).into_bytes();
        if let Some((i, x)) = self.flip {
            let i = usize::from(i) % v.len();
            v[i] ^= x | 1;
        }
        let v = String::from_utf8_lossy(&v).into_owned();
        let v = if self.quoted { format!("\"{v}\"") } else { v };
        format!("{name}={v}")
    }
}

/// One piece of a `cookie` header.
#[derive(Arbitrary, Debug, Clone)]
pub enum CookieGen {
    /// A session cookie.
    Session(SessionGen),
    /// `name=value`.
    Pair(Text, ValueM),
    /// Anything.
    Raw(Vec<u8>),
}

/// A request header.
#[derive(Arbitrary, Debug, Clone)]
pub enum HeaderGen {
    /// `:path` with a query.
    Path {
        prefix: Text,
        query: Vec<(Text, Text)>,
        fragment: bool,
    },
    /// A `cookie` header.
    Cookie { pieces: Vec<CookieGen>, sep: u8 },
    /// A named header with a value.
    Named(Text, ValueM),
    /// Raw name and value bytes.
    Raw(Vec<u8>, Vec<u8>),
}

/// An address.
#[derive(Arbitrary, Debug, Clone)]
pub struct AddrGen(pub Text);

/// An upstream address as Envoy reports it: text without control
/// characters (the only source of a pinned endpoint; sealed cookies carry
/// nothing else).
fn addr(s: &str) -> String {
    crate::checks::envoy_addr(s)
}

/// A request and its response.
#[derive(Arbitrary, Debug, Clone)]
pub struct ReqGen {
    pub headers: Vec<HeaderGen>,
    pub route_name: Option<Text>,
    pub virtual_host: Option<Text>,
    pub client: Option<AddrGen>,
    /// Minutes after 2027-01-15T08:00:00Z, or any time.
    pub now: Result<i16, u64>,
    pub entropy: Option<u64>,
    pub upstream: Option<AddrGen>,
    pub attempts: Option<u8>,
    pub status: Option<u16>,
}

impl ReqGen {
    /// The request, with session cookies made for the policy it lands on.
    pub fn resolve(&self, plugin: &Plugin) -> ReqCase {
        let now = match self.now {
            Ok(m) => 1_800_000_000u64.saturating_add_signed(i64::from(m) * 60),
            Err(t) => t % (MAX_NOW + 1),
        };
        let mut case = ReqCase {
            headers: Vec::new(),
            route_name: self.route_name.as_ref().map(|t| t.pick(pool::MATCH)),
            virtual_host: self.virtual_host.as_ref().map(|t| t.pick(pool::MATCH)),
            client_address: self.client.as_ref().map(|a| a.0.pick(pool::ADDR)),
            now,
            entropy: self.entropy,
            upstream_address: self.upstream.as_ref().map(|a| addr(&a.0.pick(pool::ADDR))),
            upstream_attempts: self.attempts.map(u64::from),
            upstream_status: self.status,
        };
        // First the headers that choose the policy, then the cookies for it.
        for h in &self.headers {
            match h {
                HeaderGen::Path {
                    prefix,
                    query,
                    fragment,
                } => {
                    let mut p = prefix.pick(pool::REQ_PATH);
                    for (i, (k, v)) in query.iter().enumerate() {
                        p.push(if i == 0 { '?' } else { '&' });
                        p.push_str(&k.pick(pool::REQ_QUERY));
                        p.push('=');
                        p.push_str(&v.pick(pool::REQ_QVALUE));
                    }
                    if *fragment {
                        p.push_str("#frag?canary=v2");
                    }
                    case.headers.push((b":path".to_vec(), p.into_bytes()));
                }
                HeaderGen::Named(n, v) => case
                    .headers
                    .push((n.pick(pool::REQ_HEADER).into_bytes(), v.bytes())),
                HeaderGen::Raw(n, v) => case.headers.push((n.clone(), v.clone())),
                HeaderGen::Cookie { .. } => {}
            }
        }
        let policy = {
            let headers = crate::checks::api_headers(&case);
            let req = sticky_canary::Request {
                headers: &headers,
                route_name: case.route_name.as_deref(),
                virtual_host: case.virtual_host.as_deref(),
                client_address: case.client_address.as_deref(),
                now,
            };
            plugin.select(&req).cloned()
        };
        for (at, h) in self.headers.iter().enumerate() {
            if let HeaderGen::Cookie { pieces, sep } = h {
                let sep = ["; ", ";", " ; ", ",", ";;"][usize::from(*sep) % 5];
                let mut out: Vec<u8> = Vec::new();
                for (i, c) in pieces.iter().enumerate() {
                    if i > 0 {
                        out.extend_from_slice(sep.as_bytes());
                    }
                    match c {
                        CookieGen::Session(s) => match &policy {
                            Some(p) => out.extend_from_slice(s.text(p, now).as_bytes()),
                            None => out.extend_from_slice(b"sticky-canary=1AAAA"),
                        },
                        CookieGen::Pair(n, v) => {
                            out.extend_from_slice(n.pick(pool::COOKIE).as_bytes());
                            out.push(b'=');
                            out.extend_from_slice(&v.bytes());
                        }
                        CookieGen::Raw(b) => out.extend_from_slice(b),
                    }
                }
                // Cookies go where the input put them among the headers.
                let pos = at.min(case.headers.len());
                case.headers.insert(pos, (b"cookie".to_vec(), out));
            }
        }
        case
    }
}
