//! The public corpus of real ingress-nginx Ingresses
//! (`../shared/reference/ingress-corpus/` beside the repository, see its
//! SOURCES.md): every entry is migrated to every target, and the output is
//! checked location by location against `expectations.json`, what
//! ingress-nginx controller v1.15.1 does with the entry:
//!
//! - the report: every LOSSY line is allowed by the entry (`allowed_lossy`
//!   or `required_lossy`), every required one is there, and the exit status
//!   is 1 exactly when there is a LOSSY line;
//! - the plugin config, through the filter's own core (`compile_json`,
//!   `Plugin::select`, `pipeline::on_request`): the entry that covers the
//!   location is selected by the paths ingress-nginx sends there (the path,
//!   below it, with a query string) and not by the ones it does not (below
//!   an Exact path, `/foo/barx` for a Prefix `/foo/bar`); its versions are
//!   the main and canary upstreams; the canary condition behaves as
//!   ingress-nginx's (header and cookie sentinels, exact values, patterns
//!   on the probe values, precedence, weight and total); the cookie has the
//!   expected attributes and mode;
//! - the routing each target writes (Envoy routes, Istio VirtualServices,
//!   Gateway API HTTPRoutes as Envoy Gateway orders them): the same paths
//!   reach the main Service, and the canary Service with the filter's
//!   version header;
//! - locations ingress-nginx does not have are not there.
//!
//! The corpus is not copied into the repository; a missing corpus fails the
//! test (set STICKY_CANARY_CORPUS to its directory when it is elsewhere).
//! The per-target counts are printed (`cargo test -p sticky-canary-cli
//! --test corpus -- --nocapture`).

// Test code: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use regex_lite::Regex;
use serde_json::{json, Value};

const TARGETS: &[(&str, &str)] = &[
    ("envoy", "envoy.yaml"),
    ("istio", "istio.yaml"),
    ("envoy-gateway", "envoy-gateway.yaml"),
];
const KEYS: &str = "Q1lG7l18ymBfHj+aouEhmFQVKqbdmDCszs+N7gTOhAo=";

/// Expectations this project believes wrong, with the ingress-nginx source
/// that says so (controller v1.15.1). Like a strict xfail: such an entry
/// must fail with exactly these problems (each problem contains one of the
/// strings), so the test notices when the corpus or the migration changes.
const DISPUTED: &[(&str, &[&str], &str)] = &[(
    "nginx-docs-samesite",
    &["LOSSY line not allowed: default/cookie-samesite-none affinity", "LOSSY line not allowed: default/cookie-samesite-strict affinity"],
    "both Ingresses route to the same Service (default/http-svc:80), and ingress-nginx keeps one cookie per upstream: \
     internal/ingress/controller/controller.go:889-897 overwrite the upstream's CookieSessionAffinity with each Ingress \
     in creation order (the last one wins) and :903 adds both hosts to its locations, and balancer/sticky.lua:19,75-99 \
     read the cookie name and attributes from the upstream; so both hosts set the same cookie, which one depends on \
     the creation order the files do not give. The expectation gives each host its own cookie and allows no LOSSY line; \
     the migration gives each host its own cookie (the Ingresses' intent) and reports the order dependence.",
)];

/// The corpus directory: `$STICKY_CANARY_CORPUS`, else
/// `shared/reference/ingress-corpus` beside the repository root or beside
/// any directory above it (a git worktree lives below the main checkout's
/// parent), or the same beside the checkout this one was cloned from when
/// that is a local directory (a clean clone in a temporary directory).
fn corpus_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("STICKY_CANARY_CORPUS") {
        return PathBuf::from(d);
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let origin = std::process::Command::new("git")
        .args(["-C", &repo.to_string_lossy(), "remote", "get-url", "origin"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|p| p.is_absolute() && p.is_dir());
    let roots: Vec<PathBuf> = std::iter::once(repo.to_path_buf()).chain(origin).collect();
    for dir in roots.iter().flat_map(|r| r.ancestors().skip(1)) {
        let c = dir.join("shared/reference/ingress-corpus");
        if c.join("expectations.json").is_file() {
            return c;
        }
    }
    panic!(
        "the public ingress corpus is missing: expected ../shared/reference/ingress-corpus/expectations.json beside the repository root {} or the checkout it was cloned from (or above them); set STICKY_CANARY_CORPUS to its directory",
        repo.display()
    );
}

struct Output {
    code: i32,
    plugin: Value,
    docs: Vec<Value>,
    report: String,
}

fn migrate(files: &[PathBuf], target: &str, out: &Path) -> Output {
    let _ = std::fs::remove_dir_all(out);
    let status = Command::new(env!("CARGO_BIN_EXE_sticky-canary"))
        .args(["migrate", "--target", target, "-o"])
        .arg(out)
        .args(files)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    let read = |n: &str| std::fs::read_to_string(out.join(n)).unwrap_or_default();
    let manifests = read(TARGETS.iter().find(|(t, _)| *t == target).unwrap().1);
    let docs = serde_norway::Deserializer::from_str(&manifests)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|d: &Value| !d.is_null())
        .collect();
    Output {
        code: status.code().unwrap_or(-1),
        plugin: serde_json::from_str(&read("plugin.json")).unwrap_or(Value::Null),
        docs,
        report: read("report.txt"),
    }
}

/// fnmatch: `*`, `?` and `[...]` classes.
fn glob(pat: &str, s: &str) -> bool {
    fn go(p: &[char], s: &[char]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some('*') => (0..=s.len()).any(|k| go(&p[1..], &s[k..])),
            Some('?') => !s.is_empty() && go(&p[1..], &s[1..]),
            Some('[') => {
                let Some(end) = p.iter().position(|c| *c == ']') else {
                    return false;
                };
                !s.is_empty() && p[1..end].contains(&s[0]) && go(&p[end + 1..], &s[1..])
            }
            Some(c) => s.first() == Some(c) && go(&p[1..], &s[1..]),
        }
    }
    let p: Vec<char> = pat.chars().collect();
    let s: Vec<char> = s.chars().collect();
    go(&p, &s)
}

/// The LOSSY lines as (object without "Ingress ", annotation).
fn lossy_lines(report: &str) -> Vec<(String, String)> {
    report
        .lines()
        .filter_map(|l| l.strip_prefix("LOSSY  "))
        .map(|l| {
            let mut parts = l.split("  ");
            let obj = parts.next().unwrap_or("");
            let key = parts.next().unwrap_or("");
            (
                obj.strip_prefix("Ingress ").unwrap_or(obj).to_owned(),
                key.to_owned(),
            )
        })
        .collect()
}

fn lossy_matches(rule: &Value, target: &str, line: &(String, String)) -> bool {
    let ing = rule["ingress"].as_str().unwrap_or("*");
    let key = rule["key"].as_str().unwrap_or("*");
    if let Some(ts) = rule.get("targets").and_then(Value::as_array) {
        if !ts.iter().any(|t| t == target) {
            return false;
        }
    }
    (ing == "*" || glob(ing, &line.0)) && (key == "*" || line.1.contains(key))
}

// ---------------------------------------------------------------------------
// The plugin config, through the core

struct Fixed;
impl sticky_canary::Entropy for Fixed {
    fn fill(&mut self, b: &mut [u8]) -> bool {
        b.fill(7);
        true
    }
}

fn request_headers(
    host: &str,
    path: &str,
    headers: &[(String, String)],
    cookies: &[(String, String)],
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut h = vec![
        (b":authority".to_vec(), host.as_bytes().to_vec()),
        (b":path".to_vec(), path.as_bytes().to_vec()),
        (b":method".to_vec(), b"GET".to_vec()),
        (b":scheme".to_vec(), b"http".to_vec()),
    ];
    for (k, v) in headers {
        h.push((k.to_ascii_lowercase().into_bytes(), v.clone().into_bytes()));
    }
    if !cookies.is_empty() {
        let c: Vec<String> = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
        h.push((b"cookie".to_vec(), c.join("; ").into_bytes()));
    }
    h
}

/// A request with these headers, at a fixed time.
fn request<'a>(headers: &'a [sticky_canary::Header<'a>]) -> sticky_canary::Request<'a> {
    sticky_canary::Request {
        headers,
        route_name: None,
        virtual_host: None,
        client_address: None,
        now: 1_800_000_000,
    }
}

/// The route entry (its name) that covers the request, if any.
fn selected(plugin: &sticky_canary::Plugin, host: &str, path: &str) -> Option<String> {
    let h = request_headers(host, path, &[], &[]);
    let h = sticky_canary::request::borrow_headers(&h);
    plugin.select(&request(&h)).map(|p| p.scope().to_owned())
}

/// The version the filter decides for a new user.
fn version(
    plugin: &sticky_canary::Plugin,
    host: &str,
    path: &str,
    headers: &[(String, String)],
    cookies: &[(String, String)],
) -> Option<String> {
    let h = request_headers(host, path, headers, cookies);
    let h = sticky_canary::request::borrow_headers(&h);
    let plan = sticky_canary::pipeline::on_request(plugin, &request(&h), &mut Fixed);
    plan.set
        .iter()
        .find(|(n, _)| *n == "x-canary-version")
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

/// Paths ingress-nginx sends to the location, and paths it does not: the
/// location's own `probes` (`{"yes": [...], "no": [...]}`) when it gives
/// them (regex locations), else derived from the path type.
fn probes_of(loc: &Value) -> (Vec<String>, Vec<String>) {
    let list = |k: &str| -> Vec<String> {
        loc["probes"][k]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    if loc.get("probes").is_some() {
        return (list("yes"), list("no"));
    }
    probes(
        loc["path"].as_str().unwrap_or("/"),
        loc["path_type"].as_str().unwrap_or("Prefix"),
    )
}

fn probes(path: &str, path_type: &str) -> (Vec<String>, Vec<String>) {
    let mut yes = vec![path.to_owned(), format!("{path}?x=1")];
    let mut no = Vec::new();
    match path_type {
        "Exact" => {
            if path != "/" {
                no.push(format!("{}/x", path.trim_end_matches('/')));
            } else {
                no.push("/x".to_owned());
            }
        }
        _ => {
            if path.ends_with('/') {
                yes.push(format!("{path}x"));
                if path != "/" {
                    no.push(path.trim_end_matches('/').to_owned());
                }
            } else {
                yes.push(format!("{path}/"));
                yes.push(format!("{path}/x/y"));
                no.push(format!("{path}x"));
            }
        }
    }
    (yes, no)
}

fn pcre_like_match(pattern: &str, value: &str) -> bool {
    Regex::new(pattern).unwrap().is_match(value)
}

/// Check one expected location against the plugin config; the problems.
fn check_plugin_location(plugin: &sticky_canary::Plugin, loc: &Value, problems: &mut Vec<String>) {
    let host = loc["host"].as_str().unwrap();
    let path = loc["path"].as_str().unwrap();
    let ptype = loc["path_type"].as_str().unwrap_or("Prefix");
    let main = loc["main"].as_str().unwrap();
    let canary = loc["canary"].as_str();
    let at = format!("{host}{path} ({ptype})");
    let active = canary.is_some() || !loc["affinity"].is_null();
    let (yes, no) = probes_of(loc);
    let entry = selected(plugin, host, path);
    if !active {
        for p in yes.iter().chain(&no) {
            if let Some(e) = selected(plugin, host, p) {
                if Some(&e) == entry.as_ref() && entry.is_some() {
                    problems.push(format!(
                        "{at}: no canary and no cookie in ingress-nginx, but entry {e} acts on {p}"
                    ));
                }
            }
        }
        if let Some(e) = entry {
            problems.push(format!(
                "{at}: no canary and no cookie in ingress-nginx, but entry {e} acts on it"
            ));
        }
        return;
    }
    let Some(entry) = entry else {
        problems.push(format!("{at}: no route entry covers it"));
        return;
    };
    for p in &yes {
        let got = selected(plugin, host, p);
        if got.as_ref() != Some(&entry) {
            problems.push(format!(
                "{at}: {p} goes to {got:?}, not to the location's entry {entry}"
            ));
        }
    }
    for p in &no {
        if selected(plugin, host, p).as_ref() == Some(&entry) {
            problems.push(format!(
                "{at}: {p} is not this location in ingress-nginx, but entry {entry} covers it"
            ));
        }
    }
    let policy = plugin
        .routes
        .iter()
        .find(|r| r.name == entry)
        .and_then(|r| r.policy.clone())
        .unwrap();
    let names: Vec<&str> = policy.versions().iter().map(|v| v.name()).collect();
    if names.first() != Some(&main) {
        problems.push(format!(
            "{at}: main version {:?}, want {main}",
            names.first()
        ));
    }
    // The canary and its condition.
    let t = &loc["traffic"];
    match canary {
        None => {
            let w = policy.weights_at(0);
            if names.len() != 2 || w.get(1) != Some(&0) || !policy.rules().is_empty() {
                problems.push(format!("{at}: no canary in ingress-nginx, but versions {names:?} weights {w:?} rules {}", policy.rules().len()));
            }
        }
        Some(c) => {
            if names.get(1) != Some(&c) {
                problems.push(format!("{at}: canary version {:?}, want {c}", names.get(1)));
            }
            let weight = t["weight"].as_u64().unwrap_or(0) as u32;
            let total = t["weight_total"].as_u64().unwrap_or(100) as u32;
            let w = policy.weights_at(0);
            if (w.get(1).copied(), policy.total()) != (Some(weight), total) {
                problems.push(format!(
                    "{at}: weight {:?} of {}, want {weight} of {total}",
                    w.get(1),
                    policy.total()
                ));
            }
            check_condition(plugin, host, path, main, c, t, &at, problems);
        }
    }
    // Stickiness of the version.
    let want_sticky = loc["stickiness"].as_str() != Some("legacy");
    if policy.sticky() != want_sticky {
        problems.push(format!(
            "{at}: sticky {}, want {want_sticky}",
            policy.sticky()
        ));
    }
    // The cookie.
    let a = &loc["affinity"];
    if !a.is_null() {
        let ck = &policy.cookie();
        let mut want = vec![
            ("name", json!(ck.name()), a["cookie_name"].clone()),
            ("path", json!(ck.path()), a["cookie_path"].clone()),
            ("domain", json!(ck.domain()), a["domain"].clone()),
            ("max_age", json!(ck.max_age()), a["max_age"].clone()),
            ("expires", json!(ck.expires()), a["expires"].clone()),
            (
                "samesite",
                json!(ck.same_site().map(|s| format!("{s:?}"))),
                a["samesite"].clone(),
            ),
            (
                "conditional_samesite_none",
                json!(ck.same_site_none_compat()),
                a["conditional_samesite_none"].clone(),
            ),
            ("http_only", json!(ck.http_only()), json!(true)),
        ];
        let secure = match format!("{:?}", ck.secure()).as_str() {
            "Always" => json!(true),
            "Auto" => json!("auto"),
            _ => json!(false),
        };
        want.push(("secure", secure, a["secure"].clone()));
        let mode = format!("{:?}", policy.mode()).to_ascii_lowercase();
        want.push(("mode", json!(mode), a["mode"].clone()));
        if mode == "persistent" {
            want.push((
                "change_on_failure",
                json!(policy.change_on_failure()),
                a["change_on_failure"].clone(),
            ));
        }
        for (what, got, want) in want {
            if got != want {
                problems.push(format!("{at}: cookie {what} {got}, want {want}"));
            }
        }
    }
}

/// Header or cookie name-value pairs.
type Pairs = Vec<(String, String)>;

/// The canary condition, request by request: what ingress-nginx's
/// `route_to_alternative_balancer` picks for a new user.
#[allow(clippy::too_many_arguments)]
fn check_condition(
    plugin: &sticky_canary::Plugin,
    host: &str,
    path: &str,
    main: &str,
    canary: &str,
    t: &Value,
    at: &str,
    problems: &mut Vec<String>,
) {
    let s = |v: &str| v.to_owned();
    // Without header or cookie: the weight decides (same user each time).
    let base = version(plugin, host, path, &[], &[]);
    let weight = t["weight"].as_u64().unwrap_or(0);
    let total = t["weight_total"].as_u64().unwrap_or(100);
    if weight == 0 && base.as_deref() != Some(main) {
        problems.push(format!("{at}: weight 0 but a new user gets {base:?}"));
    }
    if weight >= total && base.as_deref() != Some(canary) {
        problems.push(format!(
            "{at}: weight {weight} of {total} but a new user gets {base:?}"
        ));
    }
    let mut cases: Vec<(Pairs, Pairs, Option<&str>)> = Vec::new();
    let cookie = t["cookie"].as_str();
    if let Some(h) = t["header"].as_str() {
        let value = t["header_value"].as_str();
        let pattern = t["header_pattern"].as_str();
        let mut values: Vec<String> = t["probe_values"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        values.extend(["always", "never", "other"].map(s));
        for v in values {
            let want = match (value, pattern) {
                (Some(x), _) => (v == x).then_some(canary),
                (None, Some(p)) => pcre_like_match(p, &v).then_some(canary),
                (None, None) => match v.as_str() {
                    "always" => Some(canary),
                    "never" => Some(main),
                    _ => None,
                },
            };
            cases.push((vec![(s(h), v.clone())], vec![], want));
            if let Some(c) = cookie {
                // The header decides before the cookie.
                for cv in ["always", "never"] {
                    let w = want.or(Some(if cv == "always" { canary } else { main }));
                    cases.push((vec![(s(h), v.clone())], vec![(s(c), s(cv))], w));
                }
            }
        }
    } else {
        // A header named in value/pattern annotations without
        // canary-by-header never decides anything.
        for v in t["probe_values"].as_array().into_iter().flatten() {
            let v = v.as_str().unwrap_or("");
            for h in ["foo", "x-canary"] {
                cases.push((vec![(s(h), s(v))], vec![], None));
            }
        }
    }
    if let Some(c) = cookie {
        cases.push((vec![], vec![(s(c), s("always"))], Some(canary)));
        cases.push((vec![], vec![(s(c), s("never"))], Some(main)));
        cases.push((vec![], vec![(s(c), s("yes"))], None));
    }
    for (headers, cookies, want) in cases {
        let got = version(plugin, host, path, &headers, &cookies);
        let want = want.map(str::to_owned).or_else(|| base.clone());
        if got != want {
            problems.push(format!(
                "{at}: headers {headers:?} cookies {cookies:?}: {got:?}, want {want:?}"
            ));
        }
    }
}

// ---------------------------------------------------------------------------
// The routing each target writes

/// A route: its path match, its version-header condition and its upstream.
#[derive(Debug, Clone)]
struct Route {
    path: PathCond,
    version: Option<String>,
    upstream: String,
}

#[derive(Debug, Clone)]
enum PathCond {
    Exact(String),
    Prefix(String),
    Separated(String),
    Regex(String),
}

impl PathCond {
    fn matches(&self, path: &str) -> bool {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        match self {
            PathCond::Exact(p) => path == p,
            PathCond::Prefix(p) => path.starts_with(p.as_str()),
            PathCond::Separated(p) => {
                p == "/"
                    || path == p
                    || (path.starts_with(p.as_str()) && path.as_bytes().get(p.len()) == Some(&b'/'))
            }
            PathCond::Regex(r) => Regex::new(&format!("^(?:{r})$")).unwrap().is_match(path),
        }
    }

    fn literal(&self) -> &str {
        match self {
            PathCond::Exact(p)
            | PathCond::Prefix(p)
            | PathCond::Separated(p)
            | PathCond::Regex(p) => p,
        }
    }
}

fn host_matches(pattern: &str, host: &str) -> bool {
    pattern == "*"
        || pattern == host
        || pattern.strip_suffix(":*") == Some(host)
        || pattern
            .strip_prefix('*')
            .is_some_and(|suffix| host.ends_with(suffix) && host.len() > suffix.len())
}

fn upstream(ns: &str, svc: &str, port: &Value) -> String {
    format!(
        "{ns}-{svc}-{}",
        port.as_u64().map(|p| p.to_string()).unwrap_or_default()
    )
}

/// The routes that apply to `host`, in the order the proxy tries them.
fn routes_for(target: &str, docs: &[Value], host: &str) -> Vec<Route> {
    match target {
        "envoy" => {
            let vhosts = &docs[0]["static_resources"]["listeners"][0]["filter_chains"][0]
                ["filters"][0]["typed_config"]["route_config"]["virtual_hosts"];
            let vhs = vhosts.as_array().unwrap();
            // Envoy: exact domains, then suffix wildcards, then "*".
            let vh = vhs
                .iter()
                .find(|v| {
                    v["domains"].as_array().unwrap().iter().any(|d| {
                        d.as_str()
                            .is_some_and(|d| d == host || d.strip_suffix(":*") == Some(host))
                    })
                })
                .or_else(|| {
                    vhs.iter().find(|v| {
                        v["domains"].as_array().unwrap().iter().any(|d| {
                            d.as_str()
                                .is_some_and(|d| d != "*" && host_matches(d, host))
                        })
                    })
                })
                .or_else(|| vhs.iter().find(|v| v["domains"][0] == "*"));
            let Some(vh) = vh else { return Vec::new() };
            vh["routes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    let m = &r["match"];
                    let path = if let Some(p) = m["path"].as_str() {
                        PathCond::Exact(p.into())
                    } else if let Some(p) = m["path_separated_prefix"].as_str() {
                        PathCond::Separated(p.into())
                    } else if let Some(p) = m["prefix"].as_str() {
                        PathCond::Prefix(p.into())
                    } else {
                        PathCond::Regex(m["safe_regex"]["regex"].as_str().unwrap().into())
                    };
                    let version = m["headers"][0]["string_match"]["exact"]
                        .as_str()
                        .map(str::to_owned);
                    Route {
                        path,
                        version,
                        upstream: r["route"]["cluster"].as_str().unwrap().into(),
                    }
                })
                .collect()
        }
        "istio" => {
            let vss: Vec<&Value> = docs
                .iter()
                .filter(|d| d["kind"] == "VirtualService")
                .collect();
            let vs = vss
                .iter()
                .find(|v| {
                    v["spec"]["hosts"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|h| h == host)
                })
                .or_else(|| {
                    vss.iter().find(|v| {
                        v["spec"]["hosts"].as_array().unwrap().iter().any(|h| {
                            h.as_str()
                                .is_some_and(|h| h != "*" && host_matches(h, host))
                        })
                    })
                })
                .or_else(|| vss.iter().find(|v| v["spec"]["hosts"][0] == "*"));
            let Some(vs) = vs else { return Vec::new() };
            let mut out = Vec::new();
            for r in vs["spec"]["http"].as_array().unwrap() {
                let d = &r["route"][0]["destination"];
                let h = d["host"].as_str().unwrap();
                let mut parts = h.split('.');
                let (svc, ns) = (parts.next().unwrap(), parts.next().unwrap());
                let up = upstream(ns, svc, &d["port"]["number"]);
                for m in r["match"].as_array().unwrap() {
                    let u = &m["uri"];
                    let path = if let Some(p) = u["exact"].as_str() {
                        PathCond::Exact(p.into())
                    } else if let Some(p) = u["prefix"].as_str() {
                        PathCond::Prefix(p.into())
                    } else {
                        PathCond::Regex(u["regex"].as_str().unwrap().into())
                    };
                    let version = m["headers"]["x-canary-version"]["exact"]
                        .as_str()
                        .map(str::to_owned);
                    out.push(Route {
                        path,
                        version,
                        upstream: up.clone(),
                    });
                }
            }
            out
        }
        _ => {
            // Every HTTPRoute rule for the host, sorted as Envoy Gateway
            // sorts them (internal/gatewayapi/sort.go): Exact, then
            // RegularExpression, then PathPrefix; longer first; more header
            // matches first.
            let mut all: Vec<(u8, usize, usize, Route)> = Vec::new();
            let exact_host: Vec<&Value> = docs
                .iter()
                .filter(|d| d["kind"] == "HTTPRoute")
                .filter(|d| {
                    d["spec"]["hostnames"].as_array().is_some_and(|hs| {
                        hs.iter()
                            .any(|h| h.as_str().is_some_and(|h| host_matches(h, host)))
                    })
                })
                .collect();
            let chosen: Vec<&Value> = if exact_host.is_empty() {
                docs.iter()
                    .filter(|d| d["kind"] == "HTTPRoute" && d["spec"]["hostnames"].is_null())
                    .collect()
            } else {
                exact_host
            };
            for d in chosen {
                let ns = d["metadata"]["namespace"].as_str().unwrap();
                for r in d["spec"]["rules"].as_array().unwrap() {
                    let b = &r["backendRefs"][0];
                    let up = upstream(ns, b["name"].as_str().unwrap(), &b["port"]);
                    for m in r["matches"].as_array().unwrap() {
                        let v = m["path"]["value"].as_str().unwrap().to_owned();
                        let (rank, path) = match m["path"]["type"].as_str().unwrap() {
                            "Exact" => (0, PathCond::Exact(v.clone())),
                            "RegularExpression" => (1, PathCond::Regex(v.clone())),
                            _ => (
                                2,
                                PathCond::Separated(v.trim_end_matches('/').to_owned()).fix_root(),
                            ),
                        };
                        let len = if v == "/" && rank == 2 { 0 } else { v.len() };
                        let headers = m["headers"].as_array().map_or(0, Vec::len);
                        let version = m["headers"][0]["value"].as_str().map(str::to_owned);
                        all.push((
                            rank,
                            len,
                            headers,
                            Route {
                                path,
                                version,
                                upstream: up.clone(),
                            },
                        ));
                    }
                }
            }
            all.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(b.2.cmp(&a.2)));
            all.into_iter().map(|x| x.3).collect()
        }
    }
}

trait FixRoot {
    fn fix_root(self) -> Self;
}
impl FixRoot for PathCond {
    fn fix_root(self) -> Self {
        match self {
            PathCond::Separated(p) if p.is_empty() => PathCond::Separated("/".into()),
            other => other,
        }
    }
}

fn route_of(routes: &[Route], path: &str, version: Option<&str>) -> Option<String> {
    routes
        .iter()
        .find(|r| r.path.matches(path) && r.version.as_deref().is_none_or(|v| Some(v) == version))
        .map(|r| r.upstream.clone())
}

/// Which of the entry's expected locations nginx picks for `path` on
/// `host` (exact first, then the longest prefix; a Prefix `/x` is nginx's
/// `location /x/` and `location = /x`). `None` when no listed location
/// matches (the entry may not list them all) or the host uses regexes.
fn nginx_pick<'a>(locs: &'a [Value], host: &str, path: &str) -> Option<&'a Value> {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let here: Vec<&Value> = locs.iter().filter(|l| l["host"] == host).collect();
    if here.iter().any(|l| l.get("probes").is_some()) {
        return None;
    }
    let p = |l: &Value| l["path"].as_str().unwrap_or("/").to_owned();
    if let Some(l) = here
        .iter()
        .find(|l| l["path_type"] == "Exact" && p(l) == path)
    {
        return Some(l);
    }
    here.iter()
        .filter(|l| l["path_type"] != "Exact")
        .filter_map(|l| {
            let lp = p(l);
            let norm = if lp.ends_with('/') {
                lp.clone()
            } else {
                format!("{lp}/")
            };
            (path.starts_with(&norm) || (!lp.ends_with('/') && path == lp) || lp == "/")
                .then_some((norm.len(), *l))
        })
        .max_by_key(|(n, _)| *n)
        .map(|(_, l)| l)
}

fn check_routing(
    target: &str,
    docs: &[Value],
    loc: &Value,
    all: &[Value],
    problems: &mut Vec<String>,
) {
    let host = loc["host"].as_str().unwrap();
    let path = loc["path"].as_str().unwrap();
    let ptype = loc["path_type"].as_str().unwrap_or("Prefix");
    let main = loc["main"].as_str().unwrap();
    let at = format!("{target} {host}{path} ({ptype})");
    let routes = routes_for(target, docs, host);
    let (yes, no) = probes_of(loc);
    for p in &yes {
        let got = route_of(&routes, p, None);
        if got.as_deref() != Some(main) {
            problems.push(format!("{at}: {p} routes to {got:?}, want {main}"));
        }
        if let Some(c) = loc["canary"].as_str() {
            let got = route_of(&routes, p, Some(c));
            if got.as_deref() != Some(c) {
                problems.push(format!(
                    "{at}: {p} with x-canary-version {c} routes to {got:?}, want {c}"
                ));
            }
        }
    }
    for p in &no {
        // Where a listed location takes it in ingress-nginx, the same
        // Service answers.
        if let Some(other) = nginx_pick(all, host, p) {
            let want = other["main"].as_str();
            let got = route_of(&routes, p, None);
            if got.as_deref() != want {
                problems.push(format!(
                    "{at}: {p} routes to {got:?}; ingress-nginx sends it to {}{} ({want:?})",
                    other["host"].as_str().unwrap_or(""),
                    other["path"].as_str().unwrap_or("")
                ));
            }
        }
        // Another location (or none) answers there, never this one's own
        // route (the one written for this path and type).
        let first = routes.iter().find(|r| r.path.matches(p));
        if let Some(r) = first {
            let own = r.path.literal() == path
                && matches!(
                    (&r.path, ptype),
                    (PathCond::Exact(_), "Exact")
                        | (PathCond::Prefix(_) | PathCond::Separated(_), "Prefix")
                );
            if own {
                problems.push(format!(
                    "{at}: {p} is not this location in ingress-nginx, but its route {:?} matches",
                    r.path
                ));
            }
        }
    }
}

fn check_absent(
    target: &str,
    plugin: &Value,
    docs: &[Value],
    a: &Value,
    problems: &mut Vec<String>,
) {
    let host = a["host"].as_str().unwrap();
    let path = a["path"].as_str().unwrap();
    for e in plugin["routes"].as_array().into_iter().flatten() {
        let m = &e["match"];
        let same_host = m["authority"].as_str() == Some(host);
        let same_path = ["path_exact", "path_prefix", "path_separated_prefix"]
            .iter()
            .any(|k| m[*k].as_str() == Some(path));
        if same_host && same_path {
            problems.push(format!("{target}: ingress-nginx has no location {host}{path}, but the plugin config has entry {}", e["name"]));
        }
    }
    let routes = routes_for(target, docs, host);
    if routes.iter().any(|r| r.path.literal() == path) {
        problems.push(format!(
            "{target}: ingress-nginx has no location {host}{path}, but a route for it exists"
        ));
    }
}

/// Run every entry of a corpus for every target: the per-target counts
/// (passed, disputed) and the failures.
fn run_corpus(dir: &Path, label: &str) -> (String, Vec<String>) {
    let exp: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expectations.json")).unwrap())
            .unwrap();
    let entries = exp["entries"].as_array().unwrap();
    std::env::set_var("STICKY_CANARY_KEYS", KEYS);
    let tmp = std::env::temp_dir().join(format!("sticky-canary-{label}-{}", std::process::id()));
    let mut failures: Vec<String> = Vec::new();
    let mut passed: Vec<(&str, usize)> = TARGETS.iter().map(|(t, _)| (*t, 0)).collect();
    let mut disputed: Vec<Vec<&str>> = TARGETS.iter().map(|_| Vec::new()).collect();
    for e in entries {
        let id = e["id"].as_str().unwrap();
        let files: Vec<PathBuf> = e["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| dir.join(f.as_str().unwrap()))
            .collect();
        for (k, (target, _)) in TARGETS.iter().enumerate() {
            let mut problems = Vec::new();
            let out = migrate(&files, target, &tmp.join(format!("{id}-{target}")));
            // The report.
            let lossy = lossy_lines(&out.report);
            let allowed: Vec<&Value> = e["allowed_lossy"]
                .as_array()
                .unwrap()
                .iter()
                .chain(e["required_lossy"].as_array().unwrap())
                .collect();
            for l in &lossy {
                if !allowed.iter().any(|r| lossy_matches(r, target, l)) {
                    problems.push(format!("LOSSY line not allowed: {} {}", l.0, l.1));
                }
            }
            for r in e["required_lossy"].as_array().unwrap() {
                if !lossy.iter().any(|l| lossy_matches(r, target, l)) {
                    problems.push(format!("required LOSSY line missing: {r}"));
                }
            }
            for n in e["required_notes"].as_array().into_iter().flatten() {
                let n = n.as_str().unwrap_or("");
                if !out
                    .report
                    .lines()
                    .any(|l| l.starts_with("note ") && l.contains(n))
                {
                    problems.push(format!("required note missing: {n}"));
                }
            }
            let want_code = if lossy.is_empty() { 0 } else { 1 };
            if out.code != want_code {
                problems.push(format!(
                    "exit {} with {} LOSSY lines",
                    out.code,
                    lossy.len()
                ));
            }
            // The plugin config, through the core.
            let plugin = match sticky_canary::compile_json(&out.plugin.to_string()) {
                Ok(p) => Some(p),
                Err(err) => {
                    problems.push(format!("plugin config refused: {err}"));
                    None
                }
            };
            let locs = e["locations"].as_array().unwrap();
            for loc in locs {
                if let Some(p) = &plugin {
                    check_plugin_location(p, loc, &mut problems);
                }
                check_routing(target, &out.docs, loc, locs, &mut problems);
            }
            for a in e["absent_locations"].as_array().unwrap() {
                check_absent(target, &out.plugin, &out.docs, a, &mut problems);
            }
            if let Some((_, allowed_problems, why)) = DISPUTED.iter().find(|d| d.0 == id) {
                let unexplained: Vec<&String> = problems
                    .iter()
                    .filter(|p| !allowed_problems.iter().any(|a| p.contains(a)))
                    .collect();
                if problems.is_empty() || !unexplained.is_empty() {
                    failures.push(format!("{id} --target {target}: disputed ({why}), but the problems changed: {problems:?}"));
                } else {
                    disputed[k].push(id);
                }
                continue;
            }
            if problems.is_empty() {
                passed[k].1 += 1;
            } else {
                failures.push(format!(
                    "{id} --target {target}:\n  {}\n  report:\n{}",
                    problems.join("\n  "),
                    out.report
                ));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let counts: Vec<String> = passed
        .iter()
        .zip(&disputed)
        .map(|((t, n), d)| {
            let d = if d.is_empty() {
                String::new()
            } else {
                format!(" (disputed expectation: {})", d.join(", "))
            };
            format!("{t} {n}/{}{d}", entries.len())
        })
        .collect();
    (counts.join(", "), failures)
}

/// Run a corpus and fail with every difference, printing the counts.
fn assert_corpus(dir: &Path, label: &str) {
    let (counts, failures) = run_corpus(dir, label);
    println!("{label}: {counts}");
    assert!(
        failures.is_empty(),
        "{} entry x target runs differ from ingress-nginx ({counts}):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_public_entry_migrates_with_ingress_nginx_s_semantics() {
    let dir = corpus_dir();
    let n = std::fs::read_to_string(dir.join("expectations.json")).unwrap();
    let n = serde_json::from_str::<Value>(&n).unwrap()["entries"]
        .as_array()
        .map_or(0, Vec::len);
    assert!(n >= 20, "{n} entries in {}", dir.display());
    assert_corpus(&dir, "public ingress corpus");
}

/// The project's own entries (tests/fixtures/semantics/, in the corpus's
/// format, from the same ingress-nginx source): path types below and beside
/// each other, regex hosts, creation order from timestamps, a canary path
/// that matches nothing.
#[test]
fn path_types_order_and_regex_hosts_follow_ingress_nginx() {
    assert_corpus(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/semantics"),
        "semantics fixtures",
    );
}

#[test]
fn glob_matches_like_fnmatch() {
    assert!(glob(
        "ns/ingress-echo-canary-weight-*",
        "ns/ingress-echo-canary-weight-100"
    ));
    assert!(glob("a-0[13]", "a-03"));
    assert!(!glob("a-0[13]", "a-02"));
    assert!(glob("*", "anything"));
}
