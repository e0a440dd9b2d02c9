//! The `session` and `headers` sections: the cookie and its attributes,
//! the key source, the lifetime, the pinning mode, the sealing keys and
//! the names of the headers the filter writes.

use super::error::{err, quoted, ConfigError};
use super::names::{is_query_name, is_readable_header, is_token};
use crate::config::{Mode, RawConfig, RawCookie, RawKey, SecureSetting};
use crate::cookies::{CookieSpec, SameSite, Secure};
use crate::policy::{defaults, HeaderNames, KeySource, PinMode};
use crate::session::SealKey;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine;

/// Standard base64 with or without `=` padding (how secrets are written).
const STANDARD_ANY_PAD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Settings that exist without versions (validated for the global object
/// even when it has no versions of its own).
pub(crate) struct SessionSettings {
    pub cookie: CookieSpec,
    pub key_source: KeySource,
    pub ttl: u64,
    pub mode: PinMode,
    pub seal_keys: Vec<SealKey>,
    pub change_on_failure: bool,
    pub headers: HeaderNames,
}

/// A cookie secret as the config gives it: base64 (standard, padding
/// optional, or URL-safe) of exactly 32 bytes, surrounding spaces ignored.
///
/// ```
/// use sticky_canary::compile::{decode_secret, encode_secret};
/// use sticky_canary::session::SealKey;
///
/// let text = encode_secret(&SealKey([7; 32]));
/// assert_eq!(text, "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=");
/// assert_eq!(decode_secret(&text).map(|k| k.0), Some([7; 32]));
/// ```
pub fn decode_secret(s: &str) -> Option<SealKey> {
    let bytes = STANDARD_ANY_PAD
        .decode(s.trim())
        .or_else(|_| URL_SAFE_NO_PAD.decode(s.trim()))
        .ok()?;
    <[u8; 32]>::try_from(bytes).ok().map(SealKey)
}

/// The secrets of a `session.secrets_env` value: comma-separated, spaces
/// around each ignored, empty entries skipped (each is then read with
/// [`decode_secret`]).
///
/// ```
/// assert_eq!(sticky_canary::compile::secrets_list(" a=, ,b "), ["a=", "b"]);
/// ```
pub fn secrets_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty())
        .collect()
}

/// A cookie secret as `session.secrets` takes it: standard base64 with
/// padding (what `openssl rand -base64 32` prints); [`decode_secret`]
/// reads it back.
pub fn encode_secret(key: &SealKey) -> String {
    base64::engine::general_purpose::STANDARD.encode(key.0)
}

pub(crate) fn compile_session(raw: &RawConfig, p: &str) -> Result<SessionSettings, ConfigError> {
    let session = raw.session.clone().unwrap_or_default();
    let cookie = compile_cookie(
        &session.cookie.clone().unwrap_or_default(),
        &format!("{p}session.cookie"),
    )?;
    let key = compile_key(session.key.as_ref(), &format!("{p}session.key"))?;
    let ttl = session
        .ttl
        .or(cookie.max_age)
        .or(cookie.expires)
        .unwrap_or(defaults::TTL);
    if ttl == 0 || ttl > defaults::MAX_TTL {
        return Err(err(
            format!("{p}session.ttl"),
            ttl,
            format!("must be 1..={} seconds", defaults::MAX_TTL),
        ));
    }
    let mode = match session.mode.unwrap_or(Mode::Balanced) {
        Mode::Balanced => PinMode::Balanced,
        Mode::Persistent => PinMode::Persistent,
    };
    let mut keys = Vec::new();
    let from_env: Option<Vec<String>> = match &session.secrets_env {
        None => None,
        Some(name) => {
            let path = format!("{p}session.secrets_env");
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(err(path, quoted(name), "not an environment variable name"));
            }
            if session.secrets.is_some() {
                return Err(err(
                    path,
                    quoted(name),
                    "give secrets or secrets_env, not both",
                ));
            }
            let Ok(list) = std::env::var(name) else {
                return Err(err(path, quoted(name), "the environment variable is not set in the Wasm VM (Envoy: vm_config.environment_variables; Istio: WasmPlugin vmConfig.env)"));
            };
            Some(secrets_list(&list))
        }
    };
    let secrets_path = if from_env.is_some() {
        "session.secrets_env"
    } else {
        "session.secrets"
    };
    for (i, s) in session
        .secrets
        .iter()
        .flatten()
        .chain(from_env.iter().flatten())
        .enumerate()
    {
        match decode_secret(s) {
            Some(k) => keys.push(k),
            None => {
                return Err(err(
                    format!("{p}{secrets_path}[{i}]"),
                    format!("<{} characters, not shown>", s.len()),
                    "must be base64 of exactly 32 random bytes (openssl rand -base64 32)",
                ))
            }
        }
    }
    if keys.len() > 8 {
        return Err(err(
            format!("{p}session.secrets"),
            format!("<{} keys>", keys.len()),
            "at most 8 keys (the first seals, all open)",
        ));
    }
    if mode == PinMode::Persistent && keys.is_empty() {
        return Err(err(
            format!("{p}session.mode"),
            "\"persistent\"",
    "persistent mode records the pod in the cookie and needs session.secrets (or secrets_env) to seal it",
        ));
    }
    if session.change_on_failure.is_some() && mode != PinMode::Persistent {
        return Err(err(
            format!("{p}session.change_on_failure"),
            session.change_on_failure.unwrap_or(true),
            "only applies to session.mode \"persistent\"",
        ));
    }
    let h = raw.headers.clone().unwrap_or_default();
    let headers = HeaderNames {
        version: header_name(
            h.version,
            defaults::VERSION_HEADER,
            &format!("{p}headers.version"),
        )?,
        hash: header_name(h.hash, defaults::HASH_HEADER, &format!("{p}headers.hash"))?,
        endpoint: header_name(
            h.endpoint,
            defaults::ENDPOINT_HEADER,
            &format!("{p}headers.endpoint"),
        )?,
    };
    if headers.version == headers.hash
        || headers.version == headers.endpoint
        || headers.hash == headers.endpoint
    {
        return Err(err(
            format!("{p}headers"),
            format!("{:?}", headers.all()),
            "the three header names must differ",
        ));
    }
    Ok(SessionSettings {
        cookie,
        key_source: key,
        ttl,
        mode,
        seal_keys: keys,
        change_on_failure: session.change_on_failure.unwrap_or(true),
        headers,
    })
}

fn header_name(v: Option<String>, default: &str, path: &str) -> Result<String, ConfigError> {
    let Some(v) = v else {
        return Ok(default.to_owned());
    };
    let name = v.to_ascii_lowercase();
    const RESERVED: &[&str] = &[
        "cookie",
        "set-cookie",
        "host",
        "connection",
        "content-length",
        "transfer-encoding",
        "te",
        "upgrade",
        "keep-alive",
        "proxy-connection",
        "x-forwarded-for",
        "x-request-id",
    ];
    if !is_token(&name) || RESERVED.contains(&name.as_str()) {
        return Err(err(path, quoted(&v), "not a usable request header name"));
    }
    Ok(name)
}

fn compile_cookie(c: &RawCookie, p: &str) -> Result<CookieSpec, ConfigError> {
    let name = c
        .name
        .clone()
        .unwrap_or_else(|| defaults::COOKIE_NAME.to_owned());
    if !is_token(&name) {
        return Err(err(
            format!("{p}.name"),
            quoted(&name),
            "not a valid cookie name (RFC 6265 token)",
        ));
    }
    let path = c.path.clone().unwrap_or_else(|| "/".to_owned());
    if !path.starts_with('/')
        || path.len() > 256
        || path.ends_with(' ')
        || path
            .bytes()
            .any(|b| b == b';' || !(0x20..0x7f).contains(&b))
    {
        return Err(err(
            format!("{p}.path"),
            quoted(&path),
            "must start with / and hold no ; or control characters, nor end in a space (browsers trim it)",
        ));
    }
    if let Some(d) = &c.domain {
        let ok = !d.is_empty()
            && d.len() <= 253
            && d.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'));
        if !ok {
            return Err(err(
                format!("{p}.domain"),
                quoted(d),
                "not a valid cookie domain",
            ));
        }
    }
    for (field, v) in [("max_age", c.max_age), ("expires", c.expires)] {
        if let Some(s) = v {
            if s == 0 || s > defaults::MAX_TTL {
                return Err(err(
                    format!("{p}.{field}"),
                    s,
                    format!("must be 1..={} seconds", defaults::MAX_TTL),
                ));
            }
        }
    }
    let same_site = match c.same_site.as_deref() {
        None => None,
        Some(s) => Some(match s.to_ascii_lowercase().as_str() {
            "none" => SameSite::None,
            "lax" => SameSite::Lax,
            "strict" => SameSite::Strict,
            _ => {
                return Err(err(
                    format!("{p}.same_site"),
                    quoted(s),
                    "must be None, Lax or Strict",
                ))
            }
        }),
    };
    let secure = match c.secure {
        None | Some(SecureSetting::Fixed(false)) => Secure::Never,
        Some(SecureSetting::Fixed(true)) => Secure::Always,
        Some(SecureSetting::Auto) => Secure::Auto,
    };
    if same_site == Some(SameSite::None) && secure == Secure::Never {
        return Err(err(
            format!("{p}.same_site"),
            "\"None\"",
            "SameSite=None requires \"secure\": true or \"auto\" (browsers drop it otherwise)",
        ));
    }
    // Cookie name prefixes (RFC 6265bis): browsers drop a `__Secure-`
    // cookie without Secure, and a `__Host-` cookie unless it is Secure,
    // has Path=/ and no Domain.
    let lower = name.to_ascii_lowercase();
    if (lower.starts_with("__secure-") || lower.starts_with("__host-")) && secure != Secure::Always
    {
        return Err(err(
            format!("{p}.name"),
            quoted(&name),
            "a __Secure- or __Host- cookie needs \"secure\": true (browsers drop it otherwise)",
        ));
    }
    if lower.starts_with("__host-") && (path != "/" || c.domain.is_some()) {
        return Err(err(
            format!("{p}.name"),
            quoted(&name),
            "a __Host- cookie needs path \"/\" and no domain (browsers drop it otherwise)",
        ));
    }
    // Like ingress-nginx, the compatibility switch is accepted with any
    // SameSite value; it only ever drops `SameSite=None`.
    let compat = c.same_site_none_compat.unwrap_or(false);
    Ok(CookieSpec {
        name,
        path,
        domain: c.domain.clone(),
        max_age: c.max_age,
        expires: c.expires,
        secure,
        http_only: c.http_only.unwrap_or(true),
        same_site,
        same_site_none_compat: compat,
    })
}

fn compile_key(k: Option<&RawKey>, p: &str) -> Result<KeySource, ConfigError> {
    let Some(k) = k else {
        return Ok(KeySource::Cookie);
    };
    let need_name = |what: &str| -> Result<String, ConfigError> {
        match &k.name {
            Some(n) if !n.is_empty() && n.len() <= 128 => Ok(n.clone()),
            Some(n) => Err(err(
                format!("{p}.name"),
                quoted(n),
                format!("not a valid {what} name"),
            )),
            None => Err(err(
                format!("{p}.name"),
                "",
                format!("key from {what} needs a name"),
            )),
        }
    };
    let src = match k.from.as_str() {
        "cookie" => KeySource::Cookie,
        "header" => {
            let n = need_name("header")?.to_ascii_lowercase();
            if !is_readable_header(&n) {
                return Err(err(
                    format!("{p}.name"),
                    quoted(&n),
                    "not a valid request header name",
                ));
            }
            KeySource::Header(n)
        }
        "query" => {
            let n = need_name("query")?;
            if !is_query_name(&n) {
                return Err(err(
                    format!("{p}.name"),
                    quoted(&n),
                    "not a valid query parameter name",
                ));
            }
            KeySource::Query(n)
        }
        "client_ip" => {
            let hops = k.xff_trusted_hops.unwrap_or(0);
            if hops > 16 {
                return Err(err(format!("{p}.xff_trusted_hops"), hops, "must be 0..=16"));
            }
            KeySource::ClientIp { hops }
        }
        other => {
            return Err(err(
                format!("{p}.from"),
                quoted(other),
                "must be cookie, header, query or client_ip",
            ))
        }
    };
    if k.name.is_some() && matches!(src, KeySource::Cookie | KeySource::ClientIp { .. }) {
        return Err(err(
            format!("{p}.name"),
            quoted(k.name.as_deref().unwrap_or("")),
            format!("not used with from {}", quoted(&k.from)),
        ));
    }
    if k.xff_trusted_hops.is_some() && !matches!(src, KeySource::ClientIp { .. }) {
        return Err(err(
            format!("{p}.xff_trusted_hops"),
            k.xff_trusted_hops.unwrap_or(0),
            "only applies with from \"client_ip\"",
        ));
    }
    Ok(src)
}
