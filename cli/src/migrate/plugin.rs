//! The filter's plugin config for a plan: one `routes[]` entry per location,
//! in match order, scoped by `match.authority` (the host) and the path as
//! ingress-nginx matches it (`path_exact`, `path_separated_prefix`,
//! `path_prefix` or `path_regex`), with no global versions, so anything
//! else passes through.

use serde_json::{json, Map, Value};

use super::annotations::{HeaderMatch, Key, Secure};
use super::plan::{shorten, upstream_name, Location, PathMatch, Plan};
use super::report::Report;

/// The environment variable persistent mode reads its cookie keys from.
pub const KEYS_ENV: &str = "STICKY_CANARY_KEYS";

/// The version name of a location's main Service.
pub fn main_version(l: &Location) -> String {
    upstream_name(&l.main)
}

/// The version name of a location's canary Service.
pub fn canary_version(l: &Location) -> Option<String> {
    l.canary.as_ref().map(|c| upstream_name(&c.backend))
}

/// Does any active location use persistent mode?
pub fn any_persistent(plan: &Plan) -> bool {
    plan.locations
        .iter()
        .any(|l| l.active() && l.affinity.as_ref().is_some_and(|a| a.persistent))
}

/// A route entry name (it labels the metrics): the host and the path, `/`
/// as `_`, other characters outside `[A-Za-z0-9._-]` as `-`
/// (`shop.example.com_cart`, `default` for no host), unique, ≤ 64 chars.
fn entry_name(l: &Location, taken: &mut Vec<String>) -> String {
    let host = if l.host.is_empty() {
        "default"
    } else {
        &l.host
    };
    let raw = format!("{host}{}", l.path.trim_end_matches('/'));
    let clean: String = raw
        .chars()
        .map(|c| match c {
            '/' => '_',
            c if c.is_ascii_alphanumeric() || "._-".contains(c) => c,
            _ => '-',
        })
        .collect();
    let base = shorten(&clean, 60);
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name) || name == "global" {
        name = format!("{base}-{n}");
        n += 1;
    }
    taken.push(name.clone());
    name
}

/// The entry's `match`: the host and the path in the filter's terms.
/// A regex the filter cannot compile (PCRE-only syntax) falls back to the
/// literal path as a prefix, reported.
fn entry_match(l: &Location, report: &mut Report) -> Value {
    let mut m = Map::new();
    if !l.host.is_empty() {
        m.insert("authority".into(), json!(l.host));
    }
    match &l.matcher {
        PathMatch::Exact(p) => {
            m.insert("path_exact".into(), json!(p));
        }
        PathMatch::SeparatedPrefix(p) => {
            m.insert("path_separated_prefix".into(), json!(p));
        }
        PathMatch::Prefix(p) => {
            m.insert("path_prefix".into(), json!(p));
        }
        PathMatch::Regex(p) => {
            let re = PathMatch::filter_regex(p);
            if filter_compiles_path_regex(&re) {
                m.insert("path_regex".into(), json!(re));
            } else {
                report.lossy(&l.object, "use-regex", format!("path {p:?}: not a regex the filter (regex-lite) compiles (PCRE-only syntax?): matched as the literal prefix {p:?}"));
                m.insert("path_prefix".into(), json!(p));
            }
        }
    }
    Value::Object(m)
}

fn filter_compiles_path_regex(re: &str) -> bool {
    let probe = json!({"routes": [{"match": {"path_regex": re}, "enabled": false}]});
    sticky_canary::compile_json(&probe.to_string()).is_ok()
}

/// Characters that make a path a regex rather than a literal cookie path.
fn has_regex_chars(p: &str) -> bool {
    p.contains(|c: char| "^$[](){}*+?|\\".contains(c))
}

/// The plugin config (a JSON object).
pub fn build(plan: &Plan, report: &mut Report) -> Value {
    let mut routes = Vec::new();
    let mut taken = Vec::new();
    let hosts: Vec<&str> = {
        let mut h: Vec<&str> = plan
            .locations
            .iter()
            .map(|l| l.host.as_str())
            .filter(|h| !h.is_empty())
            .collect();
        h.dedup();
        h
    };
    let mut fenced = false;
    for l in &plan.locations {
        if l.host.is_empty() && !fenced && !hosts.is_empty() {
            // Requests for a known host never fall into the entries of the
            // host-less rules (ingress-nginx's default server `_`).
            fenced = true;
            taken.push("known-hosts".to_owned());
            routes.push(
                json!({"name": "known-hosts", "match": {"authority": hosts}, "enabled": false}),
            );
        }
        let name = entry_name(l, &mut taken);
        if !l.active() {
            routes.push(json!({"name": name, "match": entry_match(l, report), "enabled": false}));
            continue;
        }
        let main = main_version(l);
        let mut e = Map::new();
        e.insert("name".into(), json!(name));
        e.insert("match".into(), entry_match(l, report));
        let mut rules = Vec::new();
        match &l.canary {
            Some(c) => {
                let cv = upstream_name(&c.backend);
                e.insert(
                    "versions".into(),
                    json!([{"name": main}, {"name": cv, "weight": c.canary.weight}]),
                );
                if c.canary.weight_total != 100 {
                    e.insert("weight_total".into(), json!(c.canary.weight_total));
                }
                if let Some((h, m)) = &c.canary.header {
                    rules.push(match m {
                        HeaderMatch::Sentinel => json!({"header": h, "version": cv}),
                        HeaderMatch::Value(v) => json!({"header": h, "value": v, "version": cv}),
                        HeaderMatch::Regex(r) => json!({"header": h, "regex": r, "version": cv}),
                        // Any value of the header keeps the request on the main.
                        HeaderMatch::Broken(_) => {
                            json!({"header": h, "regex": "^", "version": main})
                        }
                    });
                }
                if let Some(ck) = &c.canary.cookie {
                    rules.push(json!({"cookie": ck, "version": cv}));
                }
                if c.canary.legacy {
                    e.insert("stickiness".into(), json!("legacy"));
                }
            }
            None => {
                // Affinity or a key source without a canary: the filter needs
                // two versions; the second never gets anyone.
                let idle = shorten(&format!("{main}.unused"), 64);
                e.insert(
                    "versions".into(),
                    json!([{"name": main}, {"name": idle, "weight": 0}]),
                );
                report.note(&l.object, "affinity", format!("no canary here: the filter keeps the session and the pod; its second version {idle:?} has weight 0 and never gets a user"));
            }
        }
        if !rules.is_empty() {
            e.insert("rules".into(), Value::Array(rules));
        }
        let mut session = Map::new();
        let mut cookie = Map::new();
        match &l.affinity {
            Some(a) => {
                cookie.insert("name".into(), json!(a.cookie_name));
                match (&a.path, &l.matcher) {
                    (Some(p), _) => {
                        cookie.insert("path".into(), json!(p));
                    }
                    // The filter defaults the cookie Path to an entry's
                    // literal path; ingress-nginx uses the path as written.
                    (None, PathMatch::Regex(p)) if has_regex_chars(p) => {
                        report.lossy(&l.object, "session-cookie-path", format!("not set with a regex path ({p:?}): ingress-nginx sets the regex itself as the cookie Path, which browsers never send back, so its affinity does not hold there; the migrated cookie gets Path=/ and holds"));
                    }
                    (None, PathMatch::Regex(p)) => {
                        cookie.insert("path".into(), json!(p));
                    }
                    (None, PathMatch::Prefix(p)) if *p != l.path => {
                        cookie.insert("path".into(), json!(l.path));
                    }
                    _ => {}
                }
                if let Some(d) = &a.domain {
                    cookie.insert("domain".into(), json!(d));
                }
                if let Some(m) = a.max_age {
                    cookie.insert("max_age".into(), json!(m));
                }
                if let Some(x) = a.expires {
                    cookie.insert("expires".into(), json!(x));
                }
                cookie.insert(
                    "secure".into(),
                    match a.secure {
                        Secure::Always => json!(true),
                        Secure::Auto => json!("auto"),
                    },
                );
                if let Some(s) = a.same_site {
                    cookie.insert("same_site".into(), json!(s));
                }
                if a.same_site_none_compat {
                    cookie.insert("same_site_none_compat".into(), json!(true));
                }
                if a.max_age.is_none() && a.expires.is_none() {
                    // ingress-nginx's cookie then lives as long as the browser
                    // session; the filter's server-side limit defaults to a day.
                    report.note(&l.object, "session-cookie-max-age", "not set: a browser-session cookie, as in ingress-nginx; the filter also ends the session after session.ttl (default 86400 s)");
                }
                if a.persistent {
                    session.insert("mode".into(), json!("persistent"));
                    session.insert("secrets_env".into(), json!(KEYS_ENV));
                    session.insert("change_on_failure".into(), json!(a.change_on_failure));
                    report.note(&l.object, "affinity-mode", format!("persistent: the cookie is sealed; put the keys (comma-separated, each `openssl rand -base64 32`) in the environment variable {KEYS_ENV} of the Wasm VM"));
                } else if a.change_on_failure {
                    report.lossy(&l.object, "session-cookie-change-on-failure", "balanced mode: the pod comes from the consistent hash, so a failed pod's users are retried elsewhere but not re-pinned; use affinity-mode: persistent to keep this");
                }
            }
            None => {
                // ingress-nginx without affinity sets no cookie and draws the
                // canary per request; the filter keeps a per-user session.
                let cname = shorten(
                    &format!(
                        "sticky-{}",
                        canary_version(l).unwrap_or_else(|| main.clone())
                    ),
                    128,
                );
                cookie.insert("name".into(), json!(cname));
                cookie.insert("secure".into(), json!("auto"));
                report.note(&l.object, "affinity", format!("not set: ingress-nginx drew the canary per request and set no cookie; the filter keeps each user on one version with the session cookie {cname:?}"));
            }
        }
        session.insert("cookie".into(), Value::Object(cookie));
        match &l.key {
            Some(Key::Header(h)) => {
                session.insert("key".into(), json!({"from": "header", "name": h}));
            }
            Some(Key::Query(q)) => {
                session.insert("key".into(), json!({"from": "query", "name": q}));
            }
            Some(Key::ClientIp) => {
                session.insert("key".into(), json!({"from": "client_ip"}));
                report.note(&l.object, "upstream-hash-by", "$remote_addr: the key is the client address Envoy computed; behind other proxies set the HCM's xff_num_trusted_hops (or session.key.xff_trusted_hops)");
            }
            None => {}
        }
        e.insert("session".into(), Value::Object(session));
        routes.push(Value::Object(e));
    }
    json!({"routes": routes})
}
