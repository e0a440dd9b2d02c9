//! `sticky-canary cookie decode VALUE`: what a session cookie holds.

use crate::common::{self, Fatal, Format};
use serde_json::json;
use std::process::ExitCode;
use sticky_canary::session::{Opened, Origin, SealKey, Session, MAX_COOKIE_VALUE};
use sticky_canary::{compile, hash, Policy};

/// Session-cookie subcommands.
#[derive(clap::Subcommand)]
pub enum Command {
    Decode(DecodeArgs),
}

/// Decode a session cookie: version, origin, expiry, session key, pinned pod.
#[derive(clap::Args)]
#[command(
    long_about = "Decode a session cookie: its format, the version it remembers \
    (the id and the version name it maps to in the config), whether a rule or the weights \
    placed the user, the expiry, the session key, the sticky hash and the pinned endpoint.\n\n\
    VALUE is the cookie value, or `name=value` as copied from a Cookie header. Sealed cookies \
    open with the config's secrets (every policy's cookie is tried) or with keys from an \
    environment variable (--keys-env, comma-separated base64, like session.secrets_env), so a \
    support ticket can be answered without the config. When it does not open, says the likely \
    why. Exit status: 0 the filter accepts the cookie now, 1 it does not."
)]
pub struct DecodeArgs {
    /// The cookie value, or `name=value`.
    value: String,
    /// Config file: its cookie names, secrets and version names.
    #[arg(long)]
    config: Option<String>,
    /// The cookie's name (default: the one in `name=value`, else every name in the config, else `sticky-canary`).
    #[arg(long)]
    cookie_name: Option<String>,
    /// Environment variable with the secrets, comma-separated base64 (like session.secrets_env).
    #[arg(long, value_name = "NAME")]
    keys_env: Option<String>,
    /// The time to judge the expiry at: RFC 3339 or Unix seconds (default now).
    #[arg(long)]
    time: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Run a cookie subcommand.
pub fn run(c: Command) -> Result<ExitCode, Fatal> {
    match c {
        Command::Decode(a) => decode(a),
    }
}

/// One copy of a session cookie in a request, as `explain` reports it.
pub struct Copy {
    /// Counts for the filter (opens, not expired, the right identity).
    pub usable: bool,
    /// `valid`, `invalid`, `other-identity`.
    pub state: &'static str,
    /// Why, for people.
    pub why: String,
    /// What it holds, when it opens.
    pub session: Option<Session>,
    /// Opened with a secret other than the first.
    pub stale_key: bool,
}

/// Why `value` does not open as cookie `name` with `keys` at `now`:
/// garbled, expired, plain vs sealed, another key, another cookie name
/// (`other_names` are tried).
pub fn why_invalid(
    value: &str,
    name: &str,
    keys: &[SealKey],
    now: u64,
    other_names: &[&str],
) -> String {
    if value.len() > MAX_COOKIE_VALUE {
        return format!("garbled: longer than the {MAX_COOKIE_VALUE} characters the filter reads");
    }
    if value.len() < 2 {
        return "garbled: too short".into();
    }
    let (marker, body) = value.split_at(1);
    if marker != "1" && marker != "2" {
        return format!(
            "garbled: format marker {marker:?} is not 1 (plain) or 2 (sealed); not a sticky-canary cookie, or a newer format"
        );
    }
    if !body
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return "garbled: not base64url".into();
    }
    if let Opened::Valid { session, .. } = Session::open(value, name, keys, 0) {
        if u64::from(session.expiry) <= now {
            return format!(
                "expired at {} ({} ago)",
                common::rfc3339(u64::from(session.expiry)),
                common::human_duration(now - u64::from(session.expiry))
            );
        }
    }
    match (marker, keys.is_empty()) {
        ("1", false) => {
            if matches!(Session::open(value, name, &[], 0), Opened::Valid { .. }) {
                "a plain cookie, but this config seals cookies (issued before secrets were set)".into()
            } else {
                "a plain cookie, but this config seals cookies; and its check fails".into()
            }
        }
        ("2", true) => {
            "a sealed cookie, but this config has no secrets (give the config that seals, or --keys-env)".into()
        }
        _ => {
            for other in other_names.iter().filter(|o| **o != name) {
                if matches!(Session::open(value, other, keys, 0), Opened::Valid { .. }) {
                    return format!("another cookie: it opens as cookie {other}");
                }
            }
            if marker == "2" {
                format!(
                    "does not open with the {} secret(s): sealed with another key (rotated out?), under another cookie name (the name is sealed in), or altered",
                    keys.len()
                )
            } else {
                "the check does not match: altered, or issued under another cookie name (the name is part of the check)".into()
            }
        }
    }
}

struct Candidate<'a> {
    label: String,
    name: String,
    keys: Vec<SealKey>,
    /// How many of `keys` come from the config (the rest from --keys-env).
    config_keys: usize,
    policy: Option<&'a Policy>,
}

fn env_keys(var: &str) -> Result<Vec<SealKey>, Fatal> {
    let list = std::env::var(var).map_err(|_| {
        Fatal(format!(
            "--keys-env {var}: the environment variable is not set"
        ))
    })?;
    let mut out = Vec::new();
    for (i, k) in list
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .enumerate()
    {
        match compile::decode_secret(k) {
            Some(k) => out.push(k),
            None => {
                return Err(Fatal(format!(
                    "--keys-env {var}: key {i} is not base64 of exactly 32 bytes"
                )))
            }
        }
    }
    Ok(out)
}

fn decode(a: DecodeArgs) -> Result<ExitCode, Fatal> {
    let now = match &a.time {
        Some(t) => common::parse_time(t)?,
        None => common::now(),
    };
    let (given_name, value) = match a.value.split_once('=') {
        // A cookie value is base64url: it never holds `=`.
        Some((n, v)) => (Some(n.trim().to_owned()), v.trim().to_owned()),
        None => (None, a.value.trim().to_owned()),
    };
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .map_or(value.clone(), str::to_owned);
    let name_filter = a.cookie_name.clone().or(given_name);
    let extra = match &a.keys_env {
        Some(var) => env_keys(var)?,
        None => Vec::new(),
    };
    let loaded = match &a.config {
        Some(c) => Some(common::load(c)?),
        None => None,
    };
    let mut cands: Vec<Candidate<'_>> = Vec::new();
    if let Some(l) = &loaded {
        let policies = l
            .plugin
            .global
            .iter()
            .map(|p| ("global".to_owned(), p))
            .chain(l.plugin.routes.iter().filter_map(|r| {
                r.policy
                    .as_ref()
                    .map(|p| (format!("route entry {}", r.name), p))
            }));
        for (label, p) in policies {
            if name_filter
                .as_deref()
                .is_some_and(|n| n != p.cookie().name())
            {
                continue;
            }
            let mut keys = p.seal_keys().to_vec();
            keys.extend(extra.iter().cloned());
            cands.push(Candidate {
                label,
                name: p.cookie().name().to_owned(),
                keys,
                config_keys: p.seal_keys().len(),
                policy: Some(p),
            });
        }
        if cands.is_empty() {
            return Err(Fatal(format!(
                "no policy in the config uses cookie {}",
                name_filter.unwrap_or_default()
            )));
        }
    } else {
        cands.push(Candidate {
            label: "no config".into(),
            name: name_filter
                .clone()
                .unwrap_or_else(|| sticky_canary::policy::defaults::COOKIE_NAME.to_owned()),
            keys: extra.clone(),
            config_keys: 0,
            policy: None,
        });
    }
    let mut all_names: Vec<&str> = cands.iter().map(|c| c.name.as_str()).collect();
    if let Some(l) = &loaded {
        let every = l
            .plugin
            .global
            .iter()
            .chain(l.plugin.routes.iter().filter_map(|r| r.policy.as_ref()));
        for p in every {
            if !all_names.contains(&p.cookie().name()) {
                all_names.push(p.cookie().name());
            }
        }
    }

    // The first candidate it opens under (ignoring expiry), with the key index.
    let mut opened: Option<(&Candidate<'_>, Session, Option<usize>)> = None;
    'outer: for c in &cands {
        if c.keys.is_empty() {
            if let Opened::Valid { session, .. } = Session::open(&value, &c.name, &[], 0) {
                opened = Some((c, session, None));
                break;
            }
        }
        for (i, k) in c.keys.iter().enumerate() {
            if let Opened::Valid { session, .. } =
                Session::open(&value, &c.name, std::slice::from_ref(k), 0)
            {
                opened = Some((c, session, Some(i)));
                break 'outer;
            }
        }
    }
    let marker = value.chars().next().unwrap_or(' ');
    let format_text = match marker {
        '1' => "1 (plain: readable, an integrity check but no secret)",
        '2' => "2 (sealed: XChaCha20-Poly1305)",
        _ => "unknown",
    };
    let Some((cand, session, key_index)) = opened else {
        let first = &cands[0];
        let why = why_invalid(&value, &first.name, &first.keys, now, &all_names);
        // A plain cookie under a sealing config still shows what it holds.
        match a.format {
            Format::Text => {
                println!("format: {format_text}");
                println!("does not open: {why}");
                if cands.len() > 1 {
                    println!(
                        "tried: {}",
                        cands
                            .iter()
                            .map(|c| format!("cookie {} ({})", c.name, c.label))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                println!("accepted by the filter: no");
            }
            Format::Json => println!(
                "{}",
                json!({"opens": false, "accepted": false, "why": why,
                       "tried": cands.iter().map(|c| &c.name).collect::<Vec<_>>()})
            ),
        }
        return Ok(ExitCode::from(1));
    };

    let version = cand.policy.and_then(|p| {
        p.version_by_id(session.version_id)
            .map(|i| p.versions()[i].name().to_owned())
    });
    let version_text = match (&version, cand.policy) {
        (Some(n), _) => format!("{n} (id {:08x})", session.version_id),
        (None, Some(_)) => format!(
            "id {:08x}: no version of this config (a removed version: the filter places the user by weight)",
            session.version_id
        ),
        (None, None) => format!("id {:08x} (give --config to name it)", session.version_id),
    };
    let origin = match session.origin {
        Origin::Rule => "rule (remembered even when the weights change)",
        Origin::Weight => "weight (follows the bucket as the weights change)",
    };
    let expiry = u64::from(session.expiry);
    let expired = expiry <= now;
    let expiry_text = if expired {
        format!(
            "{} (expired {} ago)",
            common::rfc3339(expiry),
            common::human_duration(now - expiry)
        )
    } else {
        format!(
            "{} (valid for {} more)",
            common::rfc3339(expiry),
            common::human_duration(expiry - now)
        )
    };
    let key_text = match key_index {
        None => "none needed (plain)".to_owned(),
        Some(i) if i < cand.config_keys => {
            if i == 0 {
                format!("config secret 1 of {} (the current one)", cand.config_keys)
            } else {
                format!(
                    "config secret {} of {} (an older one: the filter re-seals it with the first)",
                    i + 1,
                    cand.config_keys
                )
            }
        }
        Some(i) => format!(
            "key {} of --keys-env {}",
            i - cand.config_keys + 1,
            a.keys_env.as_deref().unwrap_or("")
        ),
    };
    // Would the filter accept it? Signing mode must match the policy.
    let mode_ok = match cand.policy {
        Some(p) => (marker == '2') != p.seal_keys().is_empty(),
        None => true,
    };
    let key_ok = match (cand.policy, key_index) {
        (Some(_), Some(i)) => i < cand.config_keys,
        _ => true,
    };
    let accepted = !expired && mode_ok && key_ok;
    let verdict = if accepted {
        "yes".to_owned()
    } else if expired {
        "no: expired (the filter starts a new session)".to_owned()
    } else if !mode_ok {
        "no: a plain cookie, but this config seals cookies".to_owned()
    } else {
        "no: it opens only with a --keys-env key, not with the config's secrets".to_owned()
    };
    let pod_hash = String::from_utf8_lossy(&hash::pod_hash(&session.key)).into_owned();
    let bucket = cand
        .policy
        .map(|p| (hash::bucket(p.seed(), &session.key, p.total()), p.total()));
    match a.format {
        Format::Text => {
            println!("cookie: {} ({})", cand.name, cand.label);
            println!("format: {format_text}");
            println!("opened with: {key_text}");
            println!("version: {version_text}");
            println!("placed by: {origin}");
            println!("expires: {expiry_text}");
            println!("session key: {}", common::hex(&session.key));
            println!("sticky hash: {pod_hash}");
            if let Some((b, total)) = bucket {
                println!("bucket: {b} of 0..{}", total - 1);
            }
            println!(
                "pinned endpoint: {}",
                session.endpoint.as_deref().unwrap_or("none")
            );
            println!("accepted by the filter: {verdict}");
        }
        Format::Json => println!(
            "{}",
            json!({
                "opens": true,
                "cookie": cand.name,
                "policy": cand.label,
                "format": marker.to_string(),
                "sealed": marker == '2',
                "key_index": key_index,
                "version_id": format!("{:08x}", session.version_id),
                "version": version,
                "origin": match session.origin { Origin::Rule => "rule", Origin::Weight => "weight" },
                "expires": common::rfc3339(expiry),
                "expires_unix": expiry,
                "expired": expired,
                "session_key": common::hex(&session.key),
                "hash": pod_hash,
                "bucket": bucket.map(|b| b.0),
                "endpoint": session.endpoint,
                "accepted": accepted,
                "verdict": verdict,
            })
        ),
    }
    Ok(if accepted {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
