//! `sticky-canary check CONFIG`: the filter's own compile.

use crate::common::{self, describe_match, describe_rule, Embedded, Fatal, Format};
use crate::Io;
use serde_json::{json, Value};
use sticky_canary::compile::format_time;
use sticky_canary::invalid_plan;
use sticky_canary::policy::{KeySource, Weight};
use sticky_canary::{compile_json, Plugin, Policy};

/// Check a plugin config (JSON, Envoy YAML, Istio or Envoy Gateway manifest) as the filter would.
#[derive(clap::Args)]
#[command(long_about = "Check a plugin config as the filter compiles it.\n\n\
    CONFIG is the plugin JSON, an Envoy YAML (every sticky-canary Wasm plugin in it), \
    an Istio WasmPlugin or TrafficExtension, or an Envoy Gateway EnvoyExtensionPolicy \
    (several YAML documents are fine); `-` reads standard input.\n\n\
    Prints `ok` and a summary of every policy, or the line the filter logs \
    (`invalid plugin config: <path> = <value>: <reason>`). Exit status: 0 valid, \
    1 invalid, 2 the file could not be read.\n\n\
    session.secrets_env is read from this process's environment, as the filter reads \
    it from the Wasm VM's.")]
pub struct Args {
    /// Config file, or `-` for standard input.
    config: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Time at which timed ramps are shown (RFC 3339 or Unix seconds; default now).
    #[arg(long)]
    time: Option<String>,
}

/// Run it.
pub fn run(args: Args, io: &mut Io<'_>) -> Result<u8, Fatal> {
    let now = match &args.time {
        Some(t) => common::parse_time(t)?,
        None => common::now(),
    };
    let bytes = common::read_source(&args.config, io)?;
    let found = common::extract(&bytes);
    if found.is_empty() {
        return Err(Fatal(format!(
            "{}: no sticky-canary plugin config found (plugin JSON, an Envoy Wasm filter with root_id sticky-canary, a WasmPlugin, a TrafficExtension or an EnvoyExtensionPolicy)",
            args.config
        )));
    }
    let results: Vec<(
        &Embedded,
        String,
        Result<Plugin, sticky_canary::ConfigError>,
    )> = found
        .iter()
        .map(|e| {
            let text = e.text.clone().unwrap_or_default();
            let compiled = match &e.text {
                Ok(t) => compile_json(t),
                Err(err) => Err(err.clone()),
            };
            (e, text, compiled)
        })
        .collect();
    let all_ok = results.iter().all(|(_, _, r)| r.is_ok());
    let several = results.len() > 1;
    match args.format {
        Format::Text => {
            for (e, text, r) in &results {
                let prefix = match (&e.label, several) {
                    (Some(l), true) => format!("{l}: "),
                    _ => String::new(),
                };
                match r {
                    Ok(p) => {
                        writeln!(io.out, "{prefix}ok")?;
                        for line in summary_lines(p, now) {
                            writeln!(io.out, "{prefix}  {line}")?;
                        }
                    }
                    Err(err) => {
                        writeln!(io.out, "{prefix}{err}")?;
                        let effect = if invalid_plan(text).refuse {
                            "the filter refuses it: Envoy rejects the filter config (on_invalid_config: refuse)"
                        } else {
                            "the filter logs this, keeps serving the last good config of this plugin (on a fresh start: passes every request through) and counts it as refused"
                        };
                        writeln!(io.err, "{prefix}{effect}")?;
                    }
                }
            }
        }
        Format::Json => {
            let docs: Vec<Value> = results
                .iter()
                .map(|(e, text, r)| {
                    let mut v = match r {
                        Ok(p) => summary_json(p, now),
                        Err(err) => json!({
                            "ok": false,
                            "error": {"path": err.path, "value": err.value, "reason": err.reason},
                            "message": err.to_string(),
                            "on_invalid_config": if invalid_plan(text).refuse { "refuse" } else { "pass_through" },
                        }),
                    };
                    if several {
                        v["source"] = json!(e.label);
                    }
                    v
                })
                .collect();
            let out = if several {
                json!({"ok": all_ok, "configs": docs})
            } else {
                docs.into_iter().next().unwrap_or(Value::Null)
            };
            writeln!(io.out, "{out}")?;
        }
    }
    Ok(if all_ok { 0 } else { 1 })
}

fn weight_text(p: &Policy, i: usize, now: u64) -> String {
    let w = p.weights_at(now);
    let cur = w.get(i).copied().unwrap_or(0);
    match (&p.versions()[i].weight(), i) {
        (_, 0) => format!("{cur} (default: the rest)"),
        (Weight::Fixed(_), _) => format!("{cur}"),
        (
            Weight::Ramp {
                start,
                end,
                from,
                to,
                steps,
            },
            _,
        ) => {
            let steps = if *steps == 0 {
                String::new()
            } else {
                format!(" in {steps} steps")
            };
            format!(
                "{cur} (ramp {from} -> {to}{steps}, {} .. {})",
                format_time(*start),
                format_time(*end)
            )
        }
    }
}

fn key_text(k: &KeySource) -> String {
    match k {
        KeySource::Cookie => k.label().into(),
        KeySource::Header(h) | KeySource::Query(h) => format!("{} {h}", k.label()),
        KeySource::ClientIp { hops } => format!("{} (xff_trusted_hops {hops})", k.label()),
    }
}

fn policy_line(p: &Policy, now: u64) -> String {
    let versions: Vec<String> = (0..p.versions().len())
        .map(|i| format!("{} {}", p.versions()[i].name(), weight_text(p, i, now)))
        .collect();
    let sealed = match p.seal_keys().len() {
        0 => "plain".to_owned(),
        1 => "sealed, 1 secret".to_owned(),
        n => format!("sealed, {n} secrets"),
    };
    let rules = match p.rules().len() {
        1 => "1 rule".to_owned(),
        n => format!("{n} rules"),
    };
    format!(
        "versions {} of {}; {rules}; {}; {}{}; key {}; cookie {} ({sealed}, ttl {})",
        versions.join(", "),
        p.total(),
        p.stickiness(),
        p.mode().label(),
        if p.rollback() { ", rollback" } else { "" },
        key_text(p.key_source()),
        p.cookie().name(),
        common::human_duration(p.ttl()),
    )
}

/// The text summary: one line per policy, then one per rule.
pub fn summary_lines(plugin: &Plugin, now: u64) -> Vec<String> {
    let mut out = Vec::new();
    let push_policy = |out: &mut Vec<String>, head: String, p: &Policy| {
        out.push(format!("{head}: {}", policy_line(p, now)));
        for i in 0..p.rules().len() {
            out.push(format!("  rule {i}: {}", describe_rule(p, i)));
        }
    };
    for (i, r) in plugin.routes.iter().enumerate() {
        let head = format!("route {} [{i}] ({})", r.name, describe_match(&r.matcher));
        match &r.policy {
            Some(p) => push_policy(&mut out, head, p),
            None => out.push(format!("{head}: disabled (pass-through)")),
        }
    }
    match &plugin.global {
        Some(p) => push_policy(&mut out, "global".into(), p),
        None => out.push("global: none (requests no route entry matches pass through)".into()),
    }
    out
}

fn policy_json(p: &Policy, now: u64) -> Value {
    let w = p.weights_at(now);
    json!({
        "versions": p.versions().iter().enumerate().map(|(i, v)| {
            let ramp = match &v.weight() {
                Weight::Ramp { start, end, from, to, steps } if i > 0 => json!({
                    "start": format_time(*start), "end": format_time(*end),
                    "from": from, "to": to, "steps": steps,
                }),
                _ => Value::Null,
            };
            json!({"name": v.name(), "default": i == 0, "weight": w.get(i), "ramp": ramp})
        }).collect::<Vec<_>>(),
        "weight_total": p.total(),
        "rules": (0..p.rules().len()).map(|i| describe_rule(p, i)).collect::<Vec<_>>(),
        "stickiness": p.stickiness(),
        "rollback": p.rollback(),
        "mode": p.mode().label(),
        "key": key_text(p.key_source()),
        "cookie": {"name": p.cookie().name(), "sealed": !p.seal_keys().is_empty(), "secrets": p.seal_keys().len(), "ttl": p.ttl()},
        "headers": {"version": p.headers().version(), "hash": p.headers().hash(), "endpoint": p.headers().endpoint()},
    })
}

/// The JSON summary of a valid config.
pub fn summary_json(plugin: &Plugin, now: u64) -> Value {
    let routes: Vec<Value> = plugin
        .routes
        .iter()
        .map(|r| {
            let mut v = match &r.policy {
                Some(p) => policy_json(p, now),
                None => json!({}),
            };
            v["name"] = json!(r.name);
            v["match"] = json!(describe_match(&r.matcher));
            v["enabled"] = json!(r.policy.is_some());
            v
        })
        .collect();
    json!({
        "ok": true,
        "global": plugin.global.as_ref().map(|p| policy_json(p, now)),
        "routes": routes,
    })
}
