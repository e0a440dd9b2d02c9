//! `sticky-canary explain`: what the filter decides for one request, and why.
//!
//! The request goes through the filter's own steps: `Plugin::select_slot`,
//! `decide`, `on_upstream_response`, `Session::encode`, `cookies::render`
//! (the same chain as the proxy-wasm adapter).

use crate::common::{self, describe_rule, AnyEntropy, Fatal, Format};
use crate::cookie::{why_invalid, Copy as CookieCopy};
use serde_json::{json, Value};
use std::process::ExitCode;
use sticky_canary::decide::MAX_SESSION_COPIES;
use sticky_canary::policy::version_for_bucket;
use sticky_canary::policy::KeySource;
use sticky_canary::policy::PinMode;
use sticky_canary::request::Header;
use sticky_canary::session::{Opened, Origin, Session, NONCE_LEN};
use sticky_canary::{
    cookies, decide, hash, Basis, CookieState, Entropy, Exchange, Policy, Request, Upstream,
};

/// Explain what the filter decides for one request, and why.
#[derive(clap::Args)]
#[command(
    long_about = "Explain what the filter decides for one request, and why: the policy \
    (global or a route entry), the version, the reason (the rule that matched, the remembered \
    version, or the weighted bucket and the version ranges), the sticky hash, the pinned \
    endpoint, the session cookie's state and the Set-Cookie the filter would send.\n\n\
    A request without a valid session cookie gets a new random session key, as in the filter \
    (give --random-seed for a repeatable one). Sealed cookies open with the config's \
    secrets (session.secrets_env is read from this process's environment)."
)]
pub struct Args {
    /// Config file (plugin JSON, Envoy YAML or manifest), or `-` for standard input.
    #[arg(long)]
    config: String,
    /// A request header, `name: value` (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// A cookie, `name=value` (repeatable; sent in one Cookie header).
    #[arg(long = "cookie", short = 'b', value_name = "NAME=VALUE")]
    cookies: Vec<String>,
    /// The request path with its query (`:path`).
    #[arg(long, default_value = "/")]
    path: String,
    /// The host (`:authority`).
    #[arg(long)]
    authority: Option<String>,
    /// Envoy's route name (`xds.route_name`), for route entries that match on it.
    #[arg(long)]
    route_name: Option<String>,
    /// Envoy's virtual host name (`xds.virtual_host_name`).
    #[arg(long)]
    virtual_host: Option<String>,
    /// The client's address, `ip:port` (`source.address`), for the client_ip key.
    #[arg(long)]
    client_address: Option<String>,
    /// When the request arrives: RFC 3339 or Unix seconds (default now).
    #[arg(long)]
    time: Option<String>,
    /// Persistent mode: the pod (`ip:port`) that answers, to see the pin it records.
    #[arg(long)]
    upstream: Option<String>,
    /// Seed the randomness for new session keys and cookie nonces (repeatable output).
    #[arg(long)]
    random_seed: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

fn build_headers(a: &Args) -> Result<Vec<Header>, Fatal> {
    let mut h: Vec<Header> = vec![(b":path".to_vec(), a.path.as_bytes().to_vec())];
    if let Some(auth) = &a.authority {
        h.push((b":authority".to_vec(), auth.as_bytes().to_vec()));
    }
    for raw in &a.headers {
        let Some((name, value)) = raw.split_once(':').filter(|(n, _)| !n.trim().is_empty()) else {
            return Err(Fatal(format!("--header {raw:?}: give `name: value`")));
        };
        h.push((
            name.trim().to_ascii_lowercase().into_bytes(),
            value.trim().as_bytes().to_vec(),
        ));
    }
    if !a.cookies.is_empty() {
        for c in &a.cookies {
            if !c.contains('=') {
                return Err(Fatal(format!("--cookie {c:?}: give `name=value`")));
            }
        }
        h.push((b"cookie".to_vec(), a.cookies.join("; ").into_bytes()));
    }
    Ok(h)
}

/// Run it.
pub fn run(a: Args) -> Result<ExitCode, Fatal> {
    let loaded = common::load(&a.config)?;
    let plugin = loaded.plugin;
    let now = match &a.time {
        Some(t) => common::parse_time(t)?,
        None => common::now(),
    };
    let headers = build_headers(&a)?;
    let req = Request {
        headers: &headers,
        route_name: a.route_name.as_deref(),
        virtual_host: a.virtual_host.as_deref(),
        client_address: a.client_address.as_deref(),
        now,
    };
    let Some(policy) = plugin.select(&req) else {
        // Pass-through: which entry (if any) matched, and what is stripped.
        let entry = plugin.routes.iter().find(|e| e.matcher.matches(&req));
        let why = match entry {
            Some(e) => format!("route entry {} matches and is disabled", e.name),
            None => "no route entry matches and there is no global policy".to_owned(),
        };
        let stripped: Vec<&String> = plugin
            .override_headers
            .iter()
            .filter(|n| req.header_present(n))
            .collect();
        match a.format {
            Format::Text => {
                println!("policy: none (pass-through: {why})");
                println!("version: none (the request is not touched)");
                if stripped.is_empty() {
                    println!("removed headers: none");
                } else {
                    let names: Vec<&str> = stripped.iter().map(|s| s.as_str()).collect();
                    println!(
                        "removed headers: {} (a client's copy never steers a route)",
                        names.join(", ")
                    );
                }
            }
            Format::Json => println!(
                "{}",
                json!({"policy": null, "pass_through": true, "why": why, "removed_headers": stripped})
            ),
        }
        return Ok(ExitCode::SUCCESS);
    };
    let mut rng = AnyEntropy::new(a.random_seed);
    let d = decide(policy, &req, &mut rng);
    let incoming_copies = analyse_copies(policy, &req, &d);
    // The filter's own response steps (sticky_canary::pipeline).
    let mut ex = Exchange::new(std::rc::Rc::clone(policy), d, &req);
    let upstream = Upstream {
        address: a.upstream.as_deref(),
        attempts: a.upstream.as_ref().map(|_| 1),
        status: a.upstream.as_ref().map(|_| 200),
    };
    let write = ex.upstream_answered(&upstream);
    let set_cookie = if write {
        let mut nonce = [0u8; NONCE_LEN];
        if ex.needs_nonce() && !rng.fill(&mut nonce) {
            return Err(Fatal("no randomness for the cookie nonce".into()));
        }
        ex.set_cookie([], &nonce).map(|c| c.header)
    } else {
        None
    };
    let _ = cookies::http_date;
    let d = ex.decision;

    let vname = |i: usize| policy.versions().get(i).map_or("?", |v| v.name());
    let version = vname(d.version).to_owned();
    let weights = policy.weights_at(now);
    let bucket = hash::bucket(policy.seed(), &d.session.key, policy.total());
    let ranges = common::bucket_ranges(&weights, policy.total());
    let range_text: Vec<String> = (1..policy.versions().len())
        .chain(std::iter::once(0))
        .map(|i| {
            let (lo, hi) = ranges[i];
            let def = if i == 0 { " (default)" } else { "" };
            if lo == hi {
                format!("{} none{def}", vname(i))
            } else {
                format!("{} {lo}..{}{def}", vname(i), hi - 1)
            }
        })
        .collect();
    // The valid session the filter used (copies that agree).
    let incoming: Option<&Session> = match d.cookie_state {
        CookieState::Valid => incoming_copies
            .iter()
            .filter_map(|c| c.session.as_ref().filter(|_| c.usable))
            .max_by_key(|s| s.expiry),
        _ => None,
    };
    let origin_text = |o: Origin| match o {
        Origin::Rule => "rule",
        Origin::Weight => "weight",
    };
    let id_name = |id: u32| {
        policy.version_by_id(id).map_or_else(
            || format!("unknown version id {id:08x}"),
            |i| vname(i).to_owned(),
        )
    };
    let (reason_kind, reason_text) = match d.basis {
        Basis::Rule(i) => {
            let t = match policy.rules().get(i) {
                Some(r) if matches!(r.matcher(), sticky_canary::policy::Matcher::Sentinel) => {
                    let src = describe_rule(policy, i);
                    let src = src.split(" = ").next().unwrap_or("");
                    if d.version == r.version() {
                        format!("rule {i}: {src} = \"always\" -> {version}")
                    } else {
                        format!("rule {i}: {src} = \"never\" -> {version} (the default version)")
                    }
                }
                _ => format!("rule {i}: {}", describe_rule(policy, i)),
            };
            ("rule", t)
        }
        Basis::Remembered => {
            let s = incoming;
            let mut t = format!(
                "remembered: the session cookie holds {version} (placed by {})",
                s.map_or("?", |s| origin_text(s.origin))
            );
            if d.draining() {
                t.push_str(&format!(
                    "; {version} has weight 0: the user stays until the cookie expires at {} (drain)",
                    s.map_or_else(|| "?".to_owned(), |s| common::rfc3339(u64::from(s.expiry)))
                ));
            }
            ("remembered", t)
        }
        Basis::Weight => {
            let mut t = format!(
                "weight: bucket {bucket} of 0..{}; {}",
                policy.total() - 1,
                range_text.join(", ")
            );
            if let Some(s) = incoming {
                if s.origin == Origin::Weight {
                    t.push_str("; a returning user placed by weight follows their bucket");
                } else {
                    t.push_str(&format!(
                        "; the remembered {} was rolled back or is gone",
                        id_name(s.version_id)
                    ));
                }
            }
            ("weight", t)
        }
    };
    if version_for_bucket(&weights, bucket) != d.version && d.basis == Basis::Weight {
        eprintln!("sticky-canary: warning: bucket layout disagrees with the decision");
    }
    let hash = d.hash.as_str().to_owned();
    let key_note = match (&policy.key_source(), d.key_fallback, d.cookie_state) {
        (KeySource::Cookie, _, CookieState::Conflicting) => {
            "key derived from every conflicting session copy".to_owned()
        }
        (KeySource::Cookie, _, _) if incoming.is_some() => "key from the session cookie".to_owned(),
        (KeySource::Cookie, _, _) => "new random session key".to_owned(),
        (k, true, _) => format!("{} is missing: new random key", key_source(k)),
        (k, false, _) => format!("key from {}", key_source(k)),
    };

    // Cookie state and action.
    let state = match d.cookie_state {
        CookieState::Absent => "absent".to_owned(),
        CookieState::Valid => match incoming {
            Some(s) => format!(
                "valid ({}, placed by {}, expires {}{})",
                id_name(s.version_id),
                origin_text(s.origin),
                common::rfc3339(u64::from(s.expiry)),
                s.endpoint
                    .as_deref()
                    .map_or(String::new(), |e| format!(", pinned to {e}"))
            ),
            None => "valid".to_owned(),
        },
        CookieState::Invalid if incoming_copies.len() > MAX_SESSION_COPIES => format!(
            "invalid: {} copies, more than the {MAX_SESSION_COPIES} the filter opens",
            incoming_copies.len()
        ),
        CookieState::Invalid => {
            let whys: Vec<String> = incoming_copies.iter().map(|c| c.why.clone()).collect();
            format!("invalid: {}", whys.join("; "))
        }
        CookieState::Conflicting => {
            let each: Vec<String> = incoming_copies
                .iter()
                .filter(|c| c.usable)
                .filter_map(|c| c.session.as_ref())
                .map(|s| {
                    format!(
                        "{} by {}, key {}..",
                        id_name(s.version_id),
                        origin_text(s.origin),
                        &common::hex(&s.key)[..8]
                    )
                })
                .collect();
            format!(
                "conflicting: {} copies open but disagree ({}); none is trusted",
                each.len(),
                each.join("; ")
            )
        }
    };
    let action = match (&set_cookie, incoming) {
        (None, _) => match d.cookie_state {
            CookieState::Conflicting => "none (conflicting copies: writing one would change the placement)".to_owned(),
            _ if d.draining() => {
                "none (draining: never renewed)".to_owned()
            }
            _ if policy.mode() == PinMode::Persistent && a.upstream.is_none() && d.endpoint.is_none() => {
                "none yet (persistent mode: the pin is learnt from the pod that answers; give --upstream)".to_owned()
            }
            _ => "none (the session is current)".to_owned(),
        },
        (Some(_), None) => "new".to_owned(),
        (Some(_), Some(s)) if s.version_id != d.session.version_id => {
            format!("switched from {} to {version}", id_name(s.version_id))
        }
        (Some(_), Some(s)) if s.endpoint != d.session.endpoint => format!(
            "re-pinned from {} to {}",
            s.endpoint.as_deref().unwrap_or("none"),
            d.session.endpoint.as_deref().unwrap_or("none")
        ),
        (Some(_), Some(s)) if s.origin != d.session.origin => format!(
            "renewed (now placed by {})",
            origin_text(d.session.origin)
        ),
        (Some(_), Some(_)) => {
            let stale = incoming_copies.iter().any(|c| c.usable && c.stale_key);
            if stale {
                "renewed (re-sealed with the first secret)".to_owned()
            } else {
                "renewed".to_owned()
            }
        }
    };
    let mut req_headers: Vec<(String, String)> = vec![
        (policy.headers().version().to_owned(), version.clone()),
        (policy.headers().hash().to_owned(), hash.clone()),
    ];
    if let Some(ep) = &d.endpoint {
        req_headers.push((policy.headers().endpoint().to_owned(), ep.clone()));
    }
    let scope = if plugin
        .global
        .as_ref()
        .is_some_and(|g| std::rc::Rc::ptr_eq(g, policy))
    {
        "global".to_owned()
    } else {
        format!("route entry {}", policy.scope())
    };
    match a.format {
        Format::Text => {
            println!("policy: {scope}");
            println!("version: {version}");
            println!("reason: {reason_text}");
            println!("sticky hash: {hash} ({key_note})");
            println!(
                "endpoint: {}",
                d.endpoint.as_deref().unwrap_or(match policy.mode() {
                    PinMode::Persistent => "none pinned yet",
                    PinMode::Balanced => "none (balanced mode: the consistent hash picks the pod)",
                })
            );
            println!("session cookie: {state}");
            println!("cookie action: {action}");
            if let Some(sc) = &set_cookie {
                println!("set-cookie: {sc}");
            }
            for (k, v) in &req_headers {
                println!("request header: {k}: {v}");
            }
        }
        Format::Json => {
            let copies: Vec<Value> = incoming_copies
                .iter()
                .map(|c| json!({"usable": c.usable, "state": c.state, "why": c.why}))
                .collect();
            let rule = match d.basis {
                Basis::Rule(i) => json!(i),
                _ => Value::Null,
            };
            let out = json!({
                "policy": scope,
                "pass_through": false,
                "version": version,
                "reason": {"kind": reason_kind, "rule": rule, "text": reason_text},
                "bucket": bucket,
                "weights": policy.versions().iter().zip(&weights).map(|(v, w)| {
                    let (lo, hi) = ranges[policy.version_by_id(v.id()).unwrap_or(0)];
                    let buckets = if lo < hi { json!({"first": lo, "last": hi - 1}) } else { Value::Null };
                    json!({"name": v.name(), "weight": w, "buckets": buckets})
                }).collect::<Vec<_>>(),
                "hash": hash,
                "key": key_note,
                "endpoint": d.endpoint,
                "session_cookie": {"state": match d.cookie_state {
                    CookieState::Absent => "absent", CookieState::Valid => "valid",
                    CookieState::Invalid => "invalid", CookieState::Conflicting => "conflicting" },
                    "text": state, "copies": copies},
                "cookie_action": {"action": action.split(' ').next().unwrap_or(""), "text": action, "set_cookie": set_cookie},
                "request_headers": req_headers.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            });
            println!("{out}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn key_source(k: &KeySource) -> String {
    match k {
        KeySource::Cookie => "the session cookie".into(),
        KeySource::Header(h) => format!("header {h}"),
        KeySource::Query(q) => format!("query parameter {q}"),
        KeySource::ClientIp { hops: 0 } => "the client address".into(),
        KeySource::ClientIp { hops } => format!("X-Forwarded-For entry {hops} from the right"),
    }
}

/// Every copy of the session cookie in the request, as the filter reads it.
fn analyse_copies(
    policy: &Policy,
    req: &Request<'_>,
    d: &sticky_canary::Decision,
) -> Vec<CookieCopy> {
    let name = policy.cookie().name();
    let external =
        (*policy.key_source() != KeySource::Cookie && !d.key_fallback).then_some(d.session.key);
    req.cookie_values(name)
        .map(
            |value| match Session::open(value, name, policy.seal_keys(), req.now) {
                Opened::Valid { session, stale_key } => {
                    if external.is_some_and(|k| k != session.key) {
                        CookieCopy {
                            usable: false,
                            state: "other-identity",
                            why: "made for another identity (the key source gives another key)"
                                .into(),
                            session: Some(session),
                            stale_key,
                        }
                    } else {
                        CookieCopy {
                            usable: true,
                            state: "valid",
                            why: "opens".into(),
                            session: Some(session),
                            stale_key,
                        }
                    }
                }
                Opened::Invalid => CookieCopy {
                    usable: false,
                    state: "invalid",
                    why: why_invalid(value, name, policy.seal_keys(), req.now, &[]),
                    session: None,
                    stale_key: false,
                },
            },
        )
        .collect()
}
