//! Shared by the subcommands: reading a config (plugin JSON, or the plugin
//! config embedded in an Envoy YAML or a Kubernetes manifest), times and
//! durations as people write them, randomness, rules for people.

use crate::Io;
use serde_json::Value;
use std::time::{SystemTime, UNIX_EPOCH};
use sticky_canary::rng::{Reseeding, SplitMix64};
use sticky_canary::{compile_json, ConfigError, Entropy, Plugin};

/// An error that stops a subcommand before it could do its job (a missing
/// file, a bad argument): printed as `sticky-canary: error: ...`, exit 2.
#[derive(Debug)]
pub struct Fatal(pub String);

impl<T: std::fmt::Display> From<T> for Fatal {
    fn from(e: T) -> Self {
        Fatal(e.to_string())
    }
}

/// Output format of the subcommands that have one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Lines for people.
    Text,
    /// One JSON document.
    Json,
}

/// The bytes of a file, or of standard input for `-`.
pub fn read_source(path: &str, io: &mut Io<'_>) -> Result<Vec<u8>, Fatal> {
    let mut out = Vec::new();
    if path == "-" {
        io.stdin
            .read_to_end(&mut out)
            .map_err(|e| Fatal(format!("cannot read standard input: {e}")))?;
    } else {
        out = std::fs::read(path).map_err(|e| Fatal(format!("cannot read {path}: {e}")))?;
    }
    Ok(out)
}

/// One plugin config found in the input.
#[derive(Debug, Clone)]
pub struct Embedded {
    /// Where it was found (`None`: the input is the plugin JSON itself).
    pub label: Option<String>,
    /// The plugin config text as the filter receives it, or why there is
    /// none (not UTF-8: the filter's own error).
    pub text: Result<String, ConfigError>,
}

/// The plugin configs in `bytes`:
/// - plugin JSON (what Envoy hands the filter): itself;
/// - an Envoy YAML (bootstrap, listener, ECDS resource): every Wasm plugin
///   `configuration` (StringValue) whose `root_id` is `sticky-canary` or unset;
/// - an Istio `WasmPlugin` / `TrafficExtension`: its `pluginConfig`;
/// - an Envoy Gateway `EnvoyExtensionPolicy`: each `spec.wasm[].config`;
/// - a YAML document that is none of these: the plugin config written in YAML.
///
/// Several YAML documents (`---`) are searched in order.
pub fn extract(bytes: &[u8]) -> Vec<Embedded> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return vec![Embedded {
            label: None,
            text: Err(ConfigError {
                path: "$".into(),
                value: String::new(),
                reason: "not UTF-8 text".into(),
            }),
        }];
    };
    let trimmed = text.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('{') || trimmed.starts_with('[') {
        return vec![plain(text)];
    }
    let mut docs = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        match <Value as serde::Deserialize>::deserialize(doc) {
            Ok(Value::Null) => {}
            Ok(v) => docs.push(v),
            // Not YAML either: let the filter's JSON parser say what is wrong.
            Err(_) => return vec![plain(text)],
        }
    }
    let mut found = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let before = found.len();
        let doc_label = k8s_label(doc).unwrap_or_else(|| {
            if docs.len() > 1 {
                format!("document {}", i + 1)
            } else {
                String::new()
            }
        });
        match doc.get("kind").and_then(Value::as_str) {
            Some("WasmPlugin") => {
                if let Some(pc) = doc.pointer("/spec/pluginConfig") {
                    found.push(embedded(doc_label.clone(), pc));
                } else {
                    found.push(embedded(doc_label.clone(), &Value::Null));
                }
            }
            Some("TrafficExtension") => {
                let pc = doc
                    .pointer("/spec/wasm/pluginConfig")
                    .unwrap_or(&Value::Null);
                found.push(embedded(doc_label.clone(), pc));
            }
            Some("EnvoyExtensionPolicy") => {
                let wasms = doc
                    .pointer("/spec/wasm")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for (j, w) in wasms.iter().enumerate() {
                    let name = w.get("name").and_then(Value::as_str).unwrap_or("");
                    let label = format!("{doc_label} wasm[{j}] {name}").trim().to_owned();
                    found.push(embedded(label, w.get("config").unwrap_or(&Value::Null)));
                }
            }
            _ => {
                let mut plugins = Vec::new();
                envoy_plugins(doc, &mut plugins);
                for (name, config) in plugins {
                    let label = if doc_label.is_empty() {
                        format!("plugin {name}")
                    } else {
                        format!("{doc_label} plugin {name}")
                    };
                    found.push(Embedded {
                        label: Some(label),
                        text: Ok(config),
                    });
                }
            }
        }
        // A YAML document that embeds nothing: a plugin config in YAML.
        if found.len() == before && doc.get("kind").is_none() && doc.is_object() {
            let label = (!doc_label.is_empty()).then_some(doc_label);
            found.push(Embedded {
                label,
                text: Ok(doc.to_string()),
            });
        }
    }
    found
}

fn plain(text: &str) -> Embedded {
    Embedded {
        label: None,
        text: Ok(text.to_owned()),
    }
}

fn embedded(label: String, v: &Value) -> Embedded {
    let text = match v {
        // Envoy Gateway and Istio also accept the config as a JSON string.
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    Embedded {
        label: Some(label),
        text: Ok(text),
    }
}

fn k8s_label(doc: &Value) -> Option<String> {
    let kind = doc.get("kind")?.as_str()?;
    let name = doc.pointer("/metadata/name")?.as_str()?;
    Some(
        match doc.pointer("/metadata/namespace").and_then(Value::as_str) {
            Some(ns) => format!("{kind} {ns}/{name}"),
            None => format!("{kind} {name}"),
        },
    )
}

/// Every Envoy Wasm `PluginConfig` (a mapping with `vm_config` and
/// `configuration`) for sticky-canary, as `(name, config text)`.
fn envoy_plugins(v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            if m.contains_key("vm_config") && m.contains_key("configuration") {
                let root_id = m.get("root_id").and_then(Value::as_str).unwrap_or("");
                if root_id.is_empty() || root_id == "sticky-canary" {
                    let name = m
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("(unnamed)")
                        .to_owned();
                    let config = match m.get("configuration") {
                        Some(Value::Object(c)) => match c.get("value") {
                            Some(Value::String(s)) => s.clone(),
                            Some(other) => other.to_string(),
                            None => String::new(),
                        },
                        Some(Value::String(s)) => s.clone(),
                        _ => String::new(),
                    };
                    out.push((name, config));
                }
                return;
            }
            m.values().for_each(|x| envoy_plugins(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| envoy_plugins(x, out)),
        _ => {}
    }
}

/// A compiled config for the subcommands that need one (`explain`,
/// `cookie decode`, `simulate`): the first plugin config in the file.
pub struct Loaded {
    /// The compiled plugin.
    pub plugin: Plugin,
}

/// Read and compile `path`; an invalid config is fatal, with the filter's line.
pub fn load(path: &str, io: &mut Io<'_>) -> Result<Loaded, Fatal> {
    let bytes = read_source(path, io)?;
    let all = extract(&bytes);
    let Some(first) = all.first() else {
        return Err(Fatal(format!(
            "{path}: no sticky-canary plugin config found"
        )));
    };
    if all.len() > 1 {
        writeln!(
            io.err,
            "sticky-canary: {path} holds {} plugin configs; using the first ({})",
            all.len(),
            first.label.as_deref().unwrap_or("")
        )?;
    }
    let text = first
        .text
        .clone()
        .map_err(|e| Fatal(format!("{path}: {e}")))?;
    let plugin = compile_json(&text).map_err(|e| Fatal(format!("{path}: {e}")))?;
    Ok(Loaded { plugin })
}

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `2027-01-15T08:00:00Z` or Unix seconds.
pub fn parse_time(s: &str) -> Result<u64, Fatal> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map_err(|_| Fatal(format!("time {s:?}: too large")));
    }
    sticky_canary::compile::parse_time(s).ok_or_else(|| {
        Fatal(format!(
            "time {s:?}: give RFC 3339 (2027-01-15T08:00:00Z) or Unix seconds"
        ))
    })
}

/// `90`, `90s`, `15m`, `2h`, `1d` as seconds.
pub fn parse_duration(s: &str) -> Result<u64, Fatal> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| Fatal(format!("duration {s:?}: give 90s, 15m, 2h or 1d")))?;
    let mul = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(Fatal(format!("duration {s:?}: give 90s, 15m, 2h or 1d"))),
    };
    Ok(n.saturating_mul(mul))
}

/// A short duration for people: `45s`, `30m`, `2h 5m`, `3d 4h`.
pub fn human_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => match s % 60 {
            0 => format!("{}m", s / 60),
            r => format!("{}m {r}s", s / 60),
        },
        s if s < 86_400 => match s % 3600 / 60 {
            0 => format!("{}h", s / 3600),
            r => format!("{}h {r}m", s / 3600),
        },
        s => match s % 86_400 / 3600 {
            0 => format!("{}d", s / 86_400),
            r => format!("{}d {r}h", s / 86_400),
        },
    }
}

/// The operating system's randomness through the filter's own generator
/// (a ChaCha20 keystream over `random_get` in the filter, over the OS
/// here), or the deterministic one for a seed (`--random-seed`).
pub enum AnyEntropy {
    /// The OS.
    Os(Reseeding<fn(&mut [u8]) -> bool>),
    /// Seeded.
    Seeded(SplitMix64),
}

fn os_random(buf: &mut [u8]) -> bool {
    getrandom::getrandom(buf).is_ok()
}

impl AnyEntropy {
    /// Seeded when a seed is given, else the OS.
    pub fn new(seed: Option<u64>) -> Self {
        match seed {
            Some(s) => AnyEntropy::Seeded(SplitMix64(s)),
            None => AnyEntropy::Os(Reseeding::new(os_random)),
        }
    }
}

impl Entropy for AnyEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        match self {
            AnyEntropy::Os(e) => e.fill(buf),
            AnyEntropy::Seeded(e) => e.fill(buf),
        }
    }
}

/// A rule for people: `cookie canary = "v2" -> canary-v2`.
pub fn describe_rule(policy: &sticky_canary::Policy, i: usize) -> String {
    use sticky_canary::policy::Matcher;
    let Some(rule) = policy.rules().get(i) else {
        return format!("rule {i}");
    };
    let source = format!("{} {}", rule.source().label(), rule.source().name());
    let name = |v: usize| policy.versions().get(v).map_or("?", |v| v.name());
    let target = name(rule.version());
    match rule.matcher() {
        Matcher::Exact(v) => format!("{source} = {} -> {target}", serde_json::json!(v)),
        Matcher::Regex(re) => format!("{source} ~ /{}/ -> {target}", re.as_str()),
        Matcher::Sentinel => format!(
            "{source} = \"always\" -> {target}, \"never\" -> {}",
            name(0)
        ),
    }
}

/// A route entry's match for people, as the core writes it:
/// `path_prefix /weighted/`.
pub fn describe_match(m: &sticky_canary::policy::RouteMatch) -> String {
    m.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").ok(), Some(90));
        assert_eq!(parse_duration("15m").ok(), Some(900));
        assert_eq!(parse_duration("2h").ok(), Some(7200));
        assert!(parse_duration("2w").is_err());
        assert_eq!(human_duration(3660), "1h 1m");
    }
}
