//! Configuration errors: where (the field path), what value, and why.
//! Secrets are never echoed.

use serde_json::Value;
use std::fmt;

/// A configuration error: where, what value, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Field path, e.g. `routes[1].versions[0].weight`.
    pub path: String,
    /// The offending value as JSON text (secrets are never echoed).
    pub value: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    /// One line: control characters (a newline in a quoted value, say) are
    /// escaped, so an error is always one log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = if self.value.is_empty() {
            format!("invalid plugin config: {}: {}", self.path, self.reason)
        } else {
            format!(
                "invalid plugin config: {} = {}: {}",
                self.path, self.value, self.reason
            )
        };
        for c in text.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

pub(crate) fn err(
    path: impl Into<String>,
    value: impl fmt::Display,
    reason: impl Into<String>,
) -> ConfigError {
    let mut value = value.to_string();
    if value.len() > 120 {
        let cut = (0..=117)
            .rev()
            .find(|i| value.is_char_boundary(*i))
            .unwrap_or(0);
        value.truncate(cut);
        value.push_str("...");
    }
    ConfigError {
        path: path.into(),
        value,
        reason: reason.into(),
    }
}

pub(crate) fn quoted(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

pub(crate) fn short_json(v: &Value) -> String {
    v.to_string()
}

/// Every string under a key that looks like a secret (`secrets`, a
/// misspelt `secret`, ...), so error messages never echo one.
pub(crate) fn secret_strings(v: &Value, under_secret: bool, out: &mut Vec<String>) {
    match v {
        Value::String(s) if under_secret && !s.is_empty() => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| secret_strings(x, under_secret, out)),
        Value::Object(o) => o.iter().for_each(|(k, x)| {
            secret_strings(
                x,
                under_secret || k.to_ascii_lowercase().contains("secret"),
                out,
            )
        }),
        _ => {}
    }
}

pub(crate) fn redact(mut text: String, secrets: &[String]) -> String {
    for s in secrets {
        if text.contains(s.as_str()) {
            text = text.replace(s.as_str(), &format!("<{} characters, not shown>", s.len()));
        }
    }
    text
}

/// The JSON value at a serde path, to echo it in the error.
pub(crate) fn lookup<'a>(v: &'a Value, path: &serde_path_to_error::Path) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path.iter() {
        cur = match seg {
            serde_path_to_error::Segment::Map { key } => cur.get(key.as_str())?,
            serde_path_to_error::Segment::Seq { index } => cur.get(*index)?,
            _ => return None,
        };
    }
    Some(cur)
}

impl std::error::Error for ConfigError {}
