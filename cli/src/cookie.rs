//! `sticky-canary cookie decode VALUE`: what a session cookie holds.
//!
//! The filter's own reading does the work: [`Session::read`] opens the value
//! (or gives the [`Defect`] that stops it) and [`Session::open_why`] is the
//! verdict the filter would give at `--time`. This module picks the
//! policies and keys to try and words the answer.

use crate::common::{self, Fatal, Format};
use crate::Io;
use serde_json::json;
use std::ffi::OsString;
use sticky_canary::compile::{decode_secret, format_time, secrets_list};
use sticky_canary::cookies::{cookie_value, parse_cookie_header};
use sticky_canary::decide::PodHash;
use sticky_canary::hash::hex;
use sticky_canary::session::{self, Defect, Read, SealKey, Session, MAX_COOKIE_VALUE};
use sticky_canary::Policy;

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
    /// The cookie value, or `name=value` (any bytes; one that is not UTF-8
    /// does not open). Put `--` before a value that starts with `--`.
    #[arg(allow_hyphen_values = true)]
    value: OsString,
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
pub fn run(c: Command, io: &mut Io<'_>) -> Result<u8, Fatal> {
    match c {
        Command::Decode(a) => decode(a, io),
    }
}

/// Why `value` did not open as cookie `name` with `keys` at `now`, for
/// people: the core's [`Defect`], and for a check or seal that fails, the
/// other cookie name it opens under if any of `other_names` (the
/// config's).
pub fn why(
    defect: Defect,
    value: &str,
    name: &str,
    keys: &[SealKey],
    now: u64,
    other_names: &[&str],
) -> String {
    let elsewhere = || {
        other_names
            .iter()
            .filter(|o| **o != name)
            .find(|o| Session::read(value, o, keys).is_ok())
            .map(|o| format!("another cookie: it opens as cookie {o}"))
    };
    match defect {
        Defect::TooLong => {
            format!("garbled: longer than the {MAX_COOKIE_VALUE} characters the filter reads")
        }
        Defect::TooShort => "garbled: too short".into(),
        Defect::UnknownFormat => format!(
            "garbled: format marker {:?} is not 1 (plain) or 2 (sealed); not a sticky-canary cookie, or a newer format",
            value.chars().next().map(String::from).unwrap_or_default()
        ),
        Defect::NotBase64 => "garbled: not base64url".into(),
        Defect::Malformed => {
            "garbled: it decodes, but not to a session (a bad length or content)".into()
        }
        Defect::PlainWhereSealed => {
            if Session::read(value, name, &[]).is_ok() {
                "a plain cookie, but this config seals cookies (issued before secrets were set)"
                    .into()
            } else {
                "a plain cookie, but this config seals cookies; and its check fails".into()
            }
        }
        Defect::SealedWherePlain => {
            "a sealed cookie, but this config has no secrets (give the config that seals, or --keys-env)".into()
        }
        Defect::CheckFails => elsewhere().unwrap_or_else(|| {
            "the check does not match: altered, or issued under another cookie name (the name is part of the check)".into()
        }),
        Defect::NoKeyOpens => elsewhere().unwrap_or_else(|| {
            format!(
                "does not open with the {} secret(s): sealed with another key (rotated out?), under another cookie name (the name is sealed in), or altered",
                keys.len()
            )
        }),
        Defect::Expired(at) => format!(
            "expired at {} ({} ago)",
            format_time(u64::from(at)),
            common::human_duration(now.saturating_sub(u64::from(at)))
        ),
    }
}

/// The format line for people.
fn format_text(format: Option<session::Format>) -> &'static str {
    match format {
        Some(session::Format::Plain) => "1 (plain: readable, an integrity check but no secret)",
        Some(session::Format::Sealed) => "2 (sealed: XChaCha20-Poly1305)",
        None => "unknown",
    }
}

/// A cookie name the value may be under, and the keys to try.
struct Candidate<'a> {
    label: String,
    name: String,
    /// The config's keys, then those of --keys-env.
    keys: Vec<SealKey>,
    /// How many of `keys` come from the config.
    config_keys: usize,
    policy: Option<&'a Policy>,
}

impl Candidate<'_> {
    /// Open the value as the filter would (the config's keys), else with
    /// the --keys-env keys too; the defect is the last reading's.
    fn read(&self, value: &str) -> Result<Read, Defect> {
        let config = self.keys.get(..self.config_keys).unwrap_or_default();
        match Session::read(value, &self.name, config) {
            Err(_) if self.keys.len() > self.config_keys => {
                Session::read(value, &self.name, &self.keys)
            }
            other => other,
        }
    }
}

fn env_keys(var: &str) -> Result<Vec<SealKey>, Fatal> {
    let list = std::env::var(var).map_err(|_| {
        Fatal(format!(
            "--keys-env {var}: the environment variable is not set"
        ))
    })?;
    secrets_list(&list)
        .iter()
        .enumerate()
        .map(|(i, k)| {
            decode_secret(k).ok_or_else(|| {
                Fatal(format!(
                    "--keys-env {var}: key {i} is not base64 of exactly 32 bytes"
                ))
            })
        })
        .collect()
}

/// The cookie name (when given as `name=value`) and the value, read as the
/// filter reads a `Cookie` header piece.
fn split_value(text: &str) -> (Option<String>, &str) {
    if text.contains('=') {
        if let Some((name, value)) = parse_cookie_header(text).next() {
            return (Some(name.to_owned()), value);
        }
    }
    (None, cookie_value(text))
}

fn decode(a: DecodeArgs, io: &mut Io<'_>) -> Result<u8, Fatal> {
    let now = match &a.time {
        Some(t) => common::parse_time(t)?,
        None => common::now(),
    };
    let extra = match &a.keys_env {
        Some(var) => env_keys(var)?,
        None => Vec::new(),
    };
    let loaded = match &a.config {
        Some(c) => Some(common::load(c, io)?),
        None => None,
    };
    // A value that is not UTF-8: the filter skips such a cookie.
    let Some(text) = a.value.to_str() else {
        return refuse(
            io,
            a.format,
            None,
            "not UTF-8 text: the filter skips such a cookie".into(),
            &[],
        );
    };
    let (given_name, value) = split_value(text);
    let name_filter = a.cookie_name.clone().or(given_name);
    let mut cands: Vec<Candidate<'_>> = Vec::new();
    let mut all_names: Vec<&str> = Vec::new();
    match &loaded {
        Some(l) => {
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
                let name = p.cookie().name();
                if !all_names.contains(&name) {
                    all_names.push(name);
                }
                if name_filter.as_deref().is_some_and(|n| n != name) {
                    continue;
                }
                let mut keys = p.seal_keys().to_vec();
                keys.extend(extra.iter().cloned());
                cands.push(Candidate {
                    label,
                    name: name.to_owned(),
                    keys,
                    config_keys: p.seal_keys().len(),
                    policy: Some(p),
                });
            }
            if cands.is_empty() {
                let why = format!(
                    "no policy of the config reads cookie {} (it reads: {})",
                    name_filter.as_deref().unwrap_or_default(),
                    all_names.join(", ")
                );
                return refuse(io, a.format, session::Format::of(value), why, &[]);
            }
        }
        None => cands.push(Candidate {
            label: "no config".into(),
            name: name_filter
                .clone()
                .unwrap_or_else(|| sticky_canary::policy::defaults::COOKIE_NAME.to_owned()),
            keys: extra.clone(),
            config_keys: 0,
            policy: None,
        }),
    }

    // The first candidate it opens under (ignoring expiry).
    let opened = cands
        .iter()
        .find_map(|c| c.read(value).ok().map(|r| (c, r)));
    let Some((cand, read)) = opened else {
        let first = &cands[0];
        let defect = first.read(value).err().unwrap_or(Defect::Malformed);
        let why = why(defect, value, &first.name, &first.keys, now, &all_names);
        let tried: Vec<String> = if cands.len() > 1 {
            cands
                .iter()
                .map(|c| format!("cookie {} ({})", c.name, c.label))
                .collect()
        } else {
            Vec::new()
        };
        let names: Vec<&str> = cands.iter().map(|c| c.name.as_str()).collect();
        let marker = session::Format::of(value);
        return match a.format {
            Format::Text => {
                writeln!(io.out, "format: {}", format_text(marker))?;
                writeln!(io.out, "does not open: {why}")?;
                if !tried.is_empty() {
                    writeln!(io.out, "tried: {}", tried.join(", "))?;
                }
                writeln!(io.out, "accepted by the filter: no")?;
                Ok(1)
            }
            Format::Json => refuse(io, a.format, marker, why, &names),
        };
    };

    let session = &read.session;
    let version = cand.policy.and_then(|p| {
        p.version_by_id(session.version_id)
            .and_then(|i| p.versions().get(i))
            .map(|v| v.name().to_owned())
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
        session::Origin::Rule => "rule (remembered even when the weights change)",
        session::Origin::Weight => "weight (follows the bucket as the weights change)",
    };
    let expiry = u64::from(session.expiry);
    let expiry_text = if expiry <= now {
        format!(
            "{} (expired {} ago)",
            format_time(expiry),
            common::human_duration(now - expiry)
        )
    } else {
        format!(
            "{} (valid for {} more)",
            format_time(expiry),
            common::human_duration(expiry - now)
        )
    };
    let key_text = match read.key {
        None => "none needed (plain)".to_owned(),
        Some(0) if cand.config_keys > 0 => {
            format!("config secret 1 of {} (the current one)", cand.config_keys)
        }
        Some(i) if i < cand.config_keys => format!(
            "config secret {} of {} (an older one: the filter re-seals it with the first)",
            i + 1,
            cand.config_keys
        ),
        Some(i) => format!(
            "key {} of --keys-env {}",
            i - cand.config_keys + 1,
            a.keys_env.as_deref().unwrap_or("")
        ),
    };
    // The filter's verdict at `now`: opened with the policy's own keys only.
    // Without a config, only the expiry can be judged.
    let verdict = match cand.policy {
        Some(p) => Session::open_why(value, &cand.name, p.seal_keys(), now).map(|_| ()),
        None if expiry <= now => Err(Defect::Expired(session.expiry)),
        None => Ok(()),
    };
    let verdict_text = match verdict {
        Ok(()) => "yes".to_owned(),
        Err(Defect::Expired(_)) => "no: expired (the filter starts a new session)".to_owned(),
        Err(Defect::SealedWherePlain) => {
            "no: a sealed cookie, but this config has no secrets".to_owned()
        }
        Err(Defect::PlainWhereSealed) => {
            "no: a plain cookie, but this config seals cookies".to_owned()
        }
        Err(_) => {
            "no: it opens only with a --keys-env key, not with the config's secrets".to_owned()
        }
    };
    let pod_hash = PodHash::of(&session.key);
    let bucket = cand.policy.map(|p| (p.bucket(&session.key), p.total()));
    match a.format {
        Format::Text => {
            writeln!(io.out, "cookie: {} ({})", cand.name, cand.label)?;
            writeln!(io.out, "format: {}", format_text(Some(read.format)))?;
            writeln!(io.out, "opened with: {key_text}")?;
            writeln!(io.out, "version: {version_text}")?;
            writeln!(io.out, "placed by: {origin}")?;
            writeln!(io.out, "expires: {expiry_text}")?;
            writeln!(io.out, "session key: {}", hex(&session.key))?;
            writeln!(io.out, "sticky hash: {}", pod_hash.as_str())?;
            if let Some((b, total)) = bucket {
                writeln!(io.out, "bucket: {b} of 0..{}", total.saturating_sub(1))?;
            }
            writeln!(
                io.out,
                "pinned endpoint: {}",
                session.endpoint.as_deref().unwrap_or("none")
            )?;
            writeln!(io.out, "accepted by the filter: {verdict_text}")?;
        }
        Format::Json => writeln!(
            io.out,
            "{}",
            json!({
                "opens": true,
                "cookie": cand.name,
                "policy": cand.label,
                "format": read.format.marker().to_string(),
                "sealed": read.format == session::Format::Sealed,
                "key_index": read.key,
                "version_id": format!("{:08x}", session.version_id),
                "version": version,
                "origin": session.origin.label(),
                "expires": format_time(expiry),
                "expires_unix": expiry,
                "expired": expiry <= now,
                "session_key": hex(&session.key),
                "hash": pod_hash.as_str(),
                "bucket": bucket.map(|b| b.0),
                "endpoint": session.endpoint,
                "accepted": verdict.is_ok(),
                "verdict": verdict_text,
            })
        )?,
    }
    Ok(if verdict.is_ok() { 0 } else { 1 })
}

/// A cookie that does not open (or cannot be one): what the filter makes of
/// it, exit 1.
fn refuse(
    io: &mut Io<'_>,
    format: Format,
    marker: Option<session::Format>,
    why: String,
    tried: &[&str],
) -> Result<u8, Fatal> {
    match format {
        Format::Text => {
            writeln!(io.out, "format: {}", format_text(marker))?;
            writeln!(io.out, "does not open: {why}")?;
            writeln!(io.out, "accepted by the filter: no")?;
        }
        Format::Json => writeln!(
            io.out,
            "{}",
            json!({"opens": false, "accepted": false, "why": why, "tried": tried})
        )?,
    }
    Ok(1)
}
