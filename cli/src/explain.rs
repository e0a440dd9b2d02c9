//! `sticky-canary explain`: what the filter decides for one request, and why.
//!
//! The request goes through the filter's own steps, as the proxy-wasm
//! adapter runs them: `pipeline::on_request` (which selects the policy with
//! `Plugin::select` and decides with `decide`), then
//! `Exchange::upstream_answered` and `Exchange::set_cookie`. Each copy of the
//! session cookie is judged by `decide::session_copies`, the bucket layout
//! is `policy::bucket_ranges`; this module words them.

use crate::common::{self, describe_rule, AnyEntropy, Fatal, Format};
use crate::Io;
use serde_json::{json, Value};
use sticky_canary::compile::format_time;
use sticky_canary::decide::{session_copies, SessionCopy, MAX_SESSION_COPIES};
use sticky_canary::hash::hex;
use sticky_canary::metrics::SessionEvent;
use sticky_canary::policy::{bucket_ranges, KeySource, Matcher, PinMode};
use sticky_canary::request::{borrow_headers, OwnedHeader};
use sticky_canary::session::NONCE_LEN;
use sticky_canary::{on_request, Basis, CookieState, Entropy, Request, Upstream};

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

fn build_headers(a: &Args) -> Result<Vec<OwnedHeader>, Fatal> {
    let mut h: Vec<OwnedHeader> = vec![(b":path".to_vec(), a.path.as_bytes().to_vec())];
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
pub fn run(a: Args, io: &mut Io<'_>) -> Result<u8, Fatal> {
    let loaded = common::load(&a.config, io)?;
    let plugin = loaded.plugin;
    let now = match &a.time {
        Some(t) => common::parse_time(t)?,
        None => common::now(),
    };
    let headers = build_headers(&a)?;
    let view = borrow_headers(&headers);
    let req = Request {
        headers: &view,
        route_name: a.route_name.as_deref(),
        virtual_host: a.virtual_host.as_deref(),
        client_address: a.client_address.as_deref(),
        now,
    };
    let mut rng = AnyEntropy::new(a.random_seed);
    let plan = on_request(&plugin, &req, &mut rng);
    let request_headers: Vec<(String, String)> = plan
        .set
        .iter()
        .map(|(k, v)| ((*k).to_owned(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    let Some(mut ex) = plan.exchange else {
        // Pass-through: which entry (if any) matched, and what is stripped.
        let entry = plugin.routes.iter().find(|e| e.matcher.matches(&req));
        let why = match entry {
            Some(e) => format!(
                "route entry {} ({}) matches and is disabled",
                e.name, e.matcher
            ),
            None => "no route entry matches and there is no global policy".to_owned(),
        };
        let stripped = &plan.remove;
        match a.format {
            Format::Text => {
                writeln!(io.out, "policy: none (pass-through: {why})")?;
                writeln!(io.out, "version: none (the request is not touched)")?;
                if stripped.is_empty() {
                    writeln!(io.out, "removed headers: none")?;
                } else {
                    writeln!(
                        io.out,
                        "removed headers: {} (a client's copy never steers a route)",
                        stripped.join(", ")
                    )?;
                }
            }
            Format::Json => writeln!(
                io.out,
                "{}",
                json!({"policy": null, "pass_through": true, "why": why, "removed_headers": stripped})
            )?,
        }
        return Ok(0);
    };
    // The filter's own response steps (sticky_canary::pipeline).
    let upstream = Upstream {
        address: a.upstream.as_deref(),
        attempts: a.upstream.as_ref().map(|_| 1),
        status: a.upstream.as_ref().map(|_| 200),
    };
    let set_cookie = if ex.upstream_answered(&upstream) {
        let mut nonce = [0u8; NONCE_LEN];
        if ex.needs_nonce() && !rng.fill(&mut nonce) {
            return Err(Fatal("no randomness for the cookie nonce".into()));
        }
        ex.set_cookie([], &nonce)
    } else {
        None
    };
    let policy = &ex.policy;
    let d = &ex.decision;
    let copies = session_copies(policy, &req);

    let vname = |i: usize| policy.versions().get(i).map_or("?", |v| v.name());
    let version = vname(d.version).to_owned();
    let total = policy.total();
    let last_bucket = total.saturating_sub(1);
    let weights = policy.weights_at(now);
    let bucket = policy.bucket(&d.session.key);
    let ranges = bucket_ranges(&weights, total);
    let range_text: Vec<String> = (1..ranges.len())
        .chain(std::iter::once(0))
        .filter_map(|i| {
            let r = ranges.get(i)?;
            let def = if i == 0 { " (default)" } else { "" };
            Some(if r.is_empty() {
                format!("{} none{def}", vname(i))
            } else {
                format!("{} {}..{}{def}", vname(i), r.start, r.end - 1)
            })
        })
        .collect();
    // The valid session the filter used (of copies that agree, the latest).
    let incoming = d.incoming.as_ref();
    let id_name = |id: u32| {
        policy.version_by_id(id).map_or_else(
            || format!("unknown version id {id:08x}"),
            |i| vname(i).to_owned(),
        )
    };
    let reason_text = match d.basis {
        Basis::Rule(i) => match policy.rules().get(i) {
            Some(r) if matches!(r.matcher(), Matcher::Sentinel) => {
                let src = format!("{} {}", r.source().label(), r.source().name());
                if d.version == r.version() {
                    format!("rule {i}: {src} = \"always\" -> {version}")
                } else {
                    format!("rule {i}: {src} = \"never\" -> {version} (the default version)")
                }
            }
            _ => format!("rule {i}: {}", describe_rule(policy, i)),
        },
        Basis::Remembered => {
            let mut t = format!(
                "remembered: the session cookie holds {version} (placed by {})",
                incoming.map_or("?", |s| s.origin.label())
            );
            if d.draining() {
                t.push_str(&format!(
                    "; {version} has weight 0: the user stays until the cookie expires at {} (drain)",
                    incoming.map_or_else(|| "?".to_owned(), |s| format_time(u64::from(s.expiry)))
                ));
            }
            t
        }
        Basis::Weight => {
            let mut t = format!(
                "weight: bucket {bucket} of 0..{last_bucket}; {}",
                range_text.join(", ")
            );
            if let Some(s) = incoming {
                if s.origin == sticky_canary::session::Origin::Weight {
                    t.push_str("; a returning user placed by weight follows their bucket");
                } else {
                    t.push_str(&format!(
                        "; the remembered {} was rolled back or is gone",
                        id_name(s.version_id)
                    ));
                }
            }
            t
        }
    };
    let hash = d.hash.as_str();
    let key_note = match (policy.key_source(), d.key_fallback, d.cookie_state) {
        (KeySource::Cookie, _, CookieState::Conflicting) => {
            "key derived from every conflicting session copy".to_owned()
        }
        (KeySource::Cookie, _, _) if incoming.is_some() => "key from the session cookie".to_owned(),
        (KeySource::Cookie, _, _) => "new random session key".to_owned(),
        (k, true, _) => format!("{} is missing: new random key", key_source(k)),
        (k, false, _) => format!("key from {}", key_source(k)),
    };

    // Each copy of the session cookie, as the filter judges it.
    let copy_text = |value: &str, copy: &SessionCopy| match copy {
        SessionCopy::Valid { .. } => ("valid", "opens".to_owned()),
        SessionCopy::OtherKey(_) => (
            "other-identity",
            "made for another identity (the key source gives another key)".to_owned(),
        ),
        SessionCopy::Rejected(defect) => (
            "invalid",
            crate::cookie::why(
                *defect,
                value,
                policy.cookie().name(),
                policy.seal_keys(),
                now,
                &[],
            ),
        ),
    };
    let state = match d.cookie_state {
        CookieState::Absent => "absent".to_owned(),
        CookieState::Valid => match incoming {
            Some(s) => format!(
                "valid ({}, placed by {}, expires {}{})",
                id_name(s.version_id),
                s.origin.label(),
                format_time(u64::from(s.expiry)),
                s.endpoint
                    .as_deref()
                    .map_or(String::new(), |e| format!(", pinned to {e}"))
            ),
            None => "valid".to_owned(),
        },
        CookieState::Invalid if copies.len() > MAX_SESSION_COPIES => format!(
            "invalid: {} copies, more than the {MAX_SESSION_COPIES} the filter opens",
            copies.len()
        ),
        CookieState::Invalid => {
            let whys: Vec<String> = copies.iter().map(|(v, c)| copy_text(v, c).1).collect();
            format!("invalid: {}", whys.join("; "))
        }
        CookieState::Conflicting => {
            let each: Vec<String> = copies
                .iter()
                .filter_map(|(_, c)| match c {
                    SessionCopy::Valid { session: s, .. } => Some(format!(
                        "{} by {}, key {}..",
                        id_name(s.version_id),
                        s.origin.label(),
                        hex(s.key.get(..4).unwrap_or_default())
                    )),
                    _ => None,
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
            _ if d.draining() => "none (draining: never renewed)".to_owned(),
            _ if policy.mode() == PinMode::Persistent && a.upstream.is_none() && d.endpoint.is_none() => {
                "none yet (persistent mode: the pin is learnt from the pod that answers; give --upstream)".to_owned()
            }
            _ => "none (the session is current)".to_owned(),
        },
        (Some(sc), s) => match (sc.event, s) {
            (SessionEvent::Switched, Some(s)) => {
                format!("switched from {} to {version}", id_name(s.version_id))
            }
            (SessionEvent::Repinned, Some(s)) => format!(
                "re-pinned from {} to {}",
                s.endpoint.as_deref().unwrap_or("none"),
                d.session.endpoint.as_deref().unwrap_or("none")
            ),
            (SessionEvent::Renewed, Some(s)) if s.origin != d.session.origin => {
                format!("renewed (now placed by {})", d.session.origin.label())
            }
            (SessionEvent::Renewed, Some(_)) => {
                let stale = copies
                    .iter()
                    .any(|(_, c)| matches!(c, SessionCopy::Valid { stale_key: true, .. }));
                if stale {
                    "renewed (re-sealed with the first secret)".to_owned()
                } else {
                    "renewed".to_owned()
                }
            }
            _ => "new".to_owned(),
        },
    };
    let set_cookie = set_cookie.map(|c| c.header);
    let scope = if plugin
        .global
        .as_ref()
        .is_some_and(|g| std::rc::Rc::ptr_eq(g, policy))
    {
        "global".to_owned()
    } else {
        format!("route entry {}", policy.scope())
    };
    // The selected entry's match, as the config writes it (path types too).
    let entry_match = plugin
        .routes
        .iter()
        .find(|e| {
            e.policy
                .as_ref()
                .is_some_and(|p| std::rc::Rc::ptr_eq(p, policy))
        })
        .map(|e| e.matcher.to_string());
    match a.format {
        Format::Text => {
            match &entry_match {
                Some(m) => writeln!(io.out, "policy: {scope} ({m})")?,
                None => writeln!(io.out, "policy: {scope}")?,
            }
            writeln!(io.out, "version: {version}")?;
            writeln!(io.out, "reason: {reason_text}")?;
            writeln!(io.out, "sticky hash: {hash} ({key_note})")?;
            writeln!(
                io.out,
                "endpoint: {}",
                d.endpoint.as_deref().unwrap_or(match policy.mode() {
                    PinMode::Persistent => "none pinned yet",
                    PinMode::Balanced => "none (balanced mode: the consistent hash picks the pod)",
                })
            )?;
            writeln!(io.out, "session cookie: {state}")?;
            writeln!(io.out, "cookie action: {action}")?;
            if let Some(sc) = &set_cookie {
                writeln!(io.out, "set-cookie: {sc}")?;
            }
            for (k, v) in &request_headers {
                writeln!(io.out, "request header: {k}: {v}")?;
            }
        }
        Format::Json => {
            let copies: Vec<Value> = copies
                .iter()
                .map(|(v, c)| {
                    let (state, why) = copy_text(v, c);
                    json!({"usable": matches!(c, SessionCopy::Valid { .. }), "state": state, "why": why})
                })
                .collect();
            let rule = match d.basis {
                Basis::Rule(i) => json!(i),
                _ => Value::Null,
            };
            let out = json!({
                "policy": scope,
                "match": entry_match,
                "pass_through": false,
                "version": version,
                "reason": {"kind": d.basis.label(), "rule": rule, "text": reason_text,
                           "counted_as": d.reason.label()},
                "bucket": bucket,
                "weights": policy.versions().iter().zip(&weights).zip(&ranges).map(|((v, w), r)| {
                    let buckets = if r.is_empty() { Value::Null } else { json!({"first": r.start, "last": r.end - 1}) };
                    json!({"name": v.name(), "weight": w, "buckets": buckets})
                }).collect::<Vec<_>>(),
                "hash": hash,
                "key": key_note,
                "endpoint": d.endpoint,
                "session_cookie": {"state": d.cookie_state.label(), "text": state, "copies": copies},
                "cookie_action": {"action": action.split(' ').next().unwrap_or(""), "text": action, "set_cookie": set_cookie},
                "request_headers": request_headers.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            });
            writeln!(io.out, "{out}")?;
        }
    }
    Ok(0)
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
