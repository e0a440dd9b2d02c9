//! `sticky-canary simulate`: a weight plan, or the config's own ramps, over
//! a population of users, through the filter's own decision and cookies:
//! each visit is `decide`, `Exchange::upstream_answered` and
//! `Exchange::set_cookie`, as in the filter; draining is the decision's own
//! (`Decision::draining`, `policy::drains`).

use crate::common::{self, Fatal, Format};
use crate::Io;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use sticky_canary::compile::format_time;
use sticky_canary::policy::{drains, KeySource, PinMode, Weight};
use sticky_canary::request::{borrow_headers, OwnedHeader};
use sticky_canary::rng::SplitMix64;
use sticky_canary::session::NONCE_LEN;
use sticky_canary::{decide, Entropy, Exchange, Policy, Request, Upstream};

/// Simulate a rollout (a weight plan or the config's ramps) over a population of users.
#[derive(clap::Args)]
#[command(
    long_about = "Simulate a rollout: a weight plan (--steps) or the config's own timed \
    ramps applied over time to a population of users, each a browser with a cookie jar, \
    decided by the filter's own code.\n\n\
    At every step each user visits with probability --visit-rate (a user's first visit is a \
    new user, later ones are returning users; a cookie with Max-Age or Expires leaves the jar \
    when it expires). Per step it prints the weights, the visits, the share per version, the \
    users who moved (from -> to), and the users draining on a weight-0 version or drained off \
    it. Deterministic for a given --seed. --svg writes a chart of the share per version over \
    time (dashed: the configured weights).\n\n\
    --steps: comma-separated steps; each step is the weight of the only canary (`5,25,50,100`), \
    or `name=weight` pairs joined by `;` for several (`b=10;c=5,b=20;c=10`). Without --steps \
    the config's ramps are stepped from the first start to the last end."
)]
pub struct Args {
    /// Config file (plugin JSON, Envoy YAML or manifest).
    #[arg(long)]
    config: String,
    /// Size of the population.
    #[arg(long, default_value_t = 1000)]
    users: u32,
    /// The weight plan (see above); default: the config's own ramps.
    #[arg(long)]
    steps: Option<String>,
    /// Time between steps: 90s, 15m, 2h, 1d (default: 1h for a plan, a tenth of the ramps).
    #[arg(long)]
    every: Option<String>,
    /// Time of the first step: RFC 3339 or Unix seconds (default: now for a plan,
    /// the first ramp start for ramps).
    #[arg(long)]
    start: Option<String>,
    /// Probability that a user visits in a step.
    #[arg(long, default_value_t = 0.5)]
    visit_rate: f64,
    /// The route entry whose policy to simulate (default: the global policy).
    #[arg(long)]
    route: Option<String>,
    /// Seed of the population (visits, session keys, nonces).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write a chart of the share per version over time (SVG).
    #[arg(long, value_name = "FILE")]
    svg: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// One user: a browser with a jar for the session cookie.
struct User {
    jar: Option<(String, Option<u64>)>,
    /// The version of the last visit.
    last: Option<usize>,
    /// Ever changed version.
    changed: bool,
}

/// What one step produced.
struct Step {
    time: u64,
    weights: Vec<u32>,
    visits: u32,
    new: u32,
    counts: Vec<u32>,
    /// (from, to) -> users.
    moved: BTreeMap<(usize, usize), u32>,
    draining: u32,
    drained: u32,
}

/// The steps of `--steps`: each step's text and `(version index, weight)`
/// pairs; [`Policy::with_weights`] checks them.
/// One step of a plan: its text, and `(version index, weight)` pairs.
type PlanStep<'s> = (&'s str, Vec<(usize, u32)>);

fn parse_plan<'s>(plan: &'s str, p: &Policy) -> Result<Vec<PlanStep<'s>>, Fatal> {
    let canaries: Vec<usize> = (1..p.versions().len()).collect();
    let mut out = Vec::new();
    for step in plan.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let mut set = Vec::new();
        for part in step.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let (idx, w) = match (part.split_once('='), canaries.as_slice()) {
                (None, [only]) => (*only, part),
                (None, _) => {
                    return Err(Fatal(format!(
                    "--steps {step:?}: the policy has {} non-default versions; write name=weight",
                    canaries.len()
                )))
                }
                (Some((name, w)), _) => {
                    let name = name.trim();
                    let Some(i) = p.versions().iter().position(|v| v.name() == name) else {
                        return Err(Fatal(format!("--steps: no version {name:?} in the policy")));
                    };
                    (i, w.trim())
                }
            };
            let w: u32 = w
                .parse()
                .map_err(|_| Fatal(format!("--steps {step:?}: {w:?} is not a weight")))?;
            set.push((idx, w));
        }
        out.push((step, set));
    }
    if out.is_empty() {
        return Err(Fatal("--steps: no steps".into()));
    }
    Ok(out)
}

/// Run it.
pub fn run(a: Args, io: &mut Io<'_>) -> Result<u8, Fatal> {
    if !(0.0..=1.0).contains(&a.visit_rate) {
        return Err(Fatal("--visit-rate: give a probability, 0..1".into()));
    }
    let loaded = common::load(&a.config, io)?;
    let plugin = loaded.plugin;
    let base: Policy =
        match &a.route {
            None => plugin.global.as_deref().cloned().ok_or_else(|| {
                Fatal("the config has no global policy: give --route NAME".into())
            })?,
            Some(name) => plugin
                .routes
                .iter()
                .find(|r| &r.name == name)
                .ok_or_else(|| Fatal(format!("no route entry {name:?}")))?
                .policy
                .as_deref()
                .cloned()
                .ok_or_else(|| Fatal(format!("route entry {name:?} is disabled")))?,
        };
    if let (Some(name), Format::Text) = (&a.route, &a.format) {
        // Which requests the simulated policy covers (path types included).
        if let Some(e) = plugin.routes.iter().find(|r| &r.name == name) {
            println!("route entry {name} ({})", e.matcher);
        }
    }
    // The policies of every step and their times.
    let mut plan: Vec<(u64, std::rc::Rc<Policy>)> = Vec::new();
    match &a.steps {
        Some(s) => {
            let sets = parse_plan(s, &base)?;
            let every = a
                .every
                .as_deref()
                .map_or(Ok(3600), common::parse_duration)?;
            let start = a
                .start
                .as_deref()
                .map_or(Ok(common::now()), common::parse_time)?;
            let mut current = base.clone();
            for (k, (step, set)) in sets.iter().enumerate() {
                current = current
                    .with_weights(set)
                    .map_err(|e| Fatal(format!("--steps {step:?}: {e}")))?;
                let at = start.saturating_add(every.saturating_mul(k as u64));
                plan.push((at, std::rc::Rc::new(current.clone())));
            }
        }
        None => {
            let ramps: Vec<(u64, u64)> = base
                .versions()
                .iter()
                .filter_map(|v| match v.weight() {
                    Weight::Ramp { start, end, .. } => Some((start, end)),
                    Weight::Fixed(_) => None,
                })
                .collect();
            if ramps.is_empty() {
                return Err(Fatal(
                    "the policy has no timed ramps: give a weight plan with --steps".into(),
                ));
            }
            let first = ramps.iter().map(|r| r.0).min().unwrap_or(0);
            let last = ramps.iter().map(|r| r.1).max().unwrap_or(0);
            let start = a.start.as_deref().map_or(Ok(first), common::parse_time)?;
            let every = match &a.every {
                Some(e) => common::parse_duration(e)?,
                None => (last.saturating_sub(start) / 10).max(1),
            };
            if every == 0 {
                return Err(Fatal("--every: must be more than 0".into()));
            }
            let mut t = start;
            // Every step through the ramps, and one after the last end.
            while plan.len() < 1000 {
                plan.push((t, std::rc::Rc::new(base.clone())));
                if t > last {
                    break;
                }
                t += every;
            }
        }
    }

    // The interval each step covers (visits are spread over it).
    let every = match plan.as_slice() {
        [a, b, ..] => b.0 - a.0,
        _ => 1,
    };
    let p0 = &plan[0].1;
    let names: Vec<String> = p0.versions().iter().map(|v| v.name().to_owned()).collect();
    let mut users: Vec<User> = (0..a.users)
        .map(|_| User {
            jar: None,
            last: None,
            changed: false,
        })
        .collect();
    let mut rng = SplitMix64(a.seed);
    let mut steps = Vec::new();
    for (time, policy) in &plan {
        let now = *time;
        let weights = policy.weights_at(now);
        let mut st = Step {
            time: now,
            weights: weights.clone(),
            visits: 0,
            new: 0,
            counts: vec![0; names.len()],
            moved: BTreeMap::new(),
            draining: 0,
            drained: 0,
        };
        for (uid, u) in users.iter_mut().enumerate() {
            if rng.unit() >= a.visit_rate {
                continue;
            }
            // Users arrive at any time within the step, not all on its first second.
            let at = now + (rng.unit() * every as f64) as u64;
            if let Some((_, Some(exp))) = &u.jar {
                if at >= *exp {
                    u.jar = None;
                }
            }
            let version = visit(policy, u, uid, at, &mut rng);
            st.visits += 1;
            if u.last.is_none() {
                st.new += 1;
            }
            st.counts[version.0] += 1;
            if version.1 {
                st.draining += 1;
            }
            if let Some(prev) = u.last {
                if prev != version.0 {
                    *st.moved.entry((prev, version.0)).or_insert(0) += 1;
                    u.changed = true;
                    if drains(&weights, prev) {
                        st.drained += 1;
                    }
                }
            }
            u.last = Some(version.0);
        }
        steps.push(st);
    }
    let ever_changed = users.iter().filter(|u| u.changed).count();
    let ever_visited = users.iter().filter(|u| u.last.is_some()).count();

    match a.format {
        Format::Text => print_text(io, &steps, &names, plan[0].0, ever_changed, ever_visited)?,
        Format::Json => writeln!(
            io.out,
            "{}",
            steps_json(&steps, &names, ever_changed, ever_visited)
        )?,
    }
    if let Some(path) = &a.svg {
        let title = format!(
            "sticky-canary simulate: {} users, {} steps",
            a.users,
            steps.len()
        );
        std::fs::write(path, svg(&steps, &names, p0.total(), &title))
            .map_err(|e| Fatal(format!("cannot write {path}: {e}")))?;
    }
    Ok(0)
}

/// One visit through the adapter's steps; returns (version, draining).
fn visit(
    policy: &std::rc::Rc<Policy>,
    u: &mut User,
    uid: usize,
    now: u64,
    rng: &mut SplitMix64,
) -> (usize, bool) {
    let identity = format!("user-{uid}");
    let mut headers: Vec<OwnedHeader> = Vec::new();
    let mut path = "/".to_owned();
    let mut client_address = None;
    match &policy.key_source() {
        KeySource::Cookie => {}
        KeySource::Header(h) => {
            headers.push((h.as_bytes().to_vec(), identity.clone().into_bytes()))
        }
        KeySource::Query(q) => path = format!("/?{q}={identity}"),
        KeySource::ClientIp { hops } => {
            let ip = format!(
                "10.{}.{}.{}",
                (uid >> 16) & 255,
                (uid >> 8) & 255,
                uid & 255
            );
            if *hops == 0 {
                client_address = Some(format!("{ip}:40000"));
            } else {
                let mut xff = vec![ip];
                for _ in 1..*hops {
                    xff.push("192.0.2.1".into());
                }
                headers.push((b"x-forwarded-for".to_vec(), xff.join(", ").into_bytes()));
            }
        }
    }
    headers.insert(0, (b":path".to_vec(), path.into_bytes()));
    if let Some((v, _)) = &u.jar {
        headers.push((
            b"cookie".to_vec(),
            format!("{}={v}", policy.cookie().name()).into_bytes(),
        ));
    }
    let view = borrow_headers(&headers);
    let req = Request {
        headers: &view,
        route_name: None,
        virtual_host: None,
        client_address: client_address.as_deref(),
        now,
    };
    let d = decide(policy, &req, rng);
    let draining = d.draining();
    // Balanced mode: no upstream is read; persistent mode: a pod answers.
    let pod = format!("10.99.{}.{}:8080", d.version, d.hash.as_bytes()[0] % 2);
    let mut ex = Exchange::new(std::rc::Rc::clone(policy), d, &req);
    let up = Upstream {
        address: (policy.mode() == PinMode::Persistent).then_some(pod.as_str()),
        attempts: Some(1),
        status: Some(200),
    };
    if ex.upstream_answered(&up) {
        let mut nonce = [0u8; NONCE_LEN];
        if ex.needs_nonce() {
            rng.fill(&mut nonce);
        }
        if let Some(cookie) = ex.set_cookie([], &nonce) {
            // The browser keeps it for Max-Age, else until Expires.
            let life = policy.cookie().max_age().or(policy.cookie().expires());
            u.jar = Some((cookie.value().to_owned(), life.map(|s| now + s)));
        }
    }
    (ex.decision.version, draining)
}

fn pct(n: u32, total: u32) -> f64 {
    if total == 0 {
        0.0
    } else {
        100.0 * f64::from(n) / f64::from(total)
    }
}

fn print_text(
    io: &mut Io<'_>,
    steps: &[Step],
    names: &[String],
    t0: u64,
    changed: usize,
    visited: usize,
) -> Result<(), Fatal> {
    for (k, s) in steps.iter().enumerate() {
        let weights: Vec<String> = names
            .iter()
            .zip(&s.weights)
            .map(|(n, w)| format!("{n} {w}"))
            .collect();
        writeln!(
            io.out,
            "step {k} at {} (+{}): weights {}",
            format_time(s.time),
            common::human_duration(s.time - t0),
            weights.join(", ")
        )?;
        writeln!(
            io.out,
            "  visits {} (new {}, returning {})",
            s.visits,
            s.new,
            s.visits - s.new
        )?;
        let share: Vec<String> = names
            .iter()
            .zip(&s.counts)
            .map(|(n, c)| format!("{n} {:.1}% ({c})", pct(*c, s.visits)))
            .collect();
        writeln!(io.out, "  share: {}", share.join(", "))?;
        let total_moved: u32 = s.moved.values().sum();
        if total_moved == 0 {
            writeln!(io.out, "  moved: 0")?;
        } else {
            let m: Vec<String> = s
                .moved
                .iter()
                .map(|((f, t), n)| format!("{} -> {} {n}", names[*f], names[*t]))
                .collect();
            writeln!(io.out, "  moved: {total_moved} ({})", m.join(", "))?;
        }
        writeln!(
            io.out,
            "  draining: {} (on a weight-0 version until their cookie expires), drained: {}",
            s.draining, s.drained
        )?;
    }
    writeln!(
        io.out,
        "users who visited: {visited}; ever changed version: {changed}"
    )?;
    Ok(())
}

fn steps_json(steps: &[Step], names: &[String], changed: usize, visited: usize) -> Value {
    let list: Vec<Value> = steps
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let by = |v: &[u32]| -> serde_json::Map<String, Value> {
                names
                    .iter()
                    .zip(v)
                    .map(|(n, x)| (n.clone(), json!(x)))
                    .collect()
            };
            json!({
                "step": k,
                "time": format_time(s.time),
                "weights": by(&s.weights),
                "visits": s.visits,
                "new": s.new,
                "returning": s.visits - s.new,
                "counts": by(&s.counts),
                "share": names.iter().zip(&s.counts)
                    .map(|(n, c)| (n.clone(), json!((pct(*c, s.visits) * 10.0).round() / 1000.0)))
                    .collect::<serde_json::Map<_, _>>(),
                "moved": s.moved.iter()
                    .map(|((f, t), n)| json!({"from": names[*f], "to": names[*t], "users": n}))
                    .collect::<Vec<_>>(),
                "draining": s.draining,
                "drained": s.drained,
            })
        })
        .collect();
    json!({"steps": list, "users_visited": visited, "users_changed_version": changed})
}

/// Distinct colours for up to 8 versions (then they repeat).
pub const COLORS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The chart: share of visits per version per step (solid, with points)
/// and the configured weight (dashed), 0-100 %.
fn svg(steps: &[Step], names: &[String], total: u32, title: &str) -> String {
    let (w, h) = (760.0f64, 400.0f64);
    let (left, right, top, bottom) = (60.0, 170.0, 40.0, 50.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let n = steps.len().max(2) - 1;
    let x = |k: usize| left + pw * k as f64 / n as f64;
    let y = |share: f64| top + ph * (1.0 - share / 100.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="22" font-size="14" font-weight="bold">{}</text>"#,
        esc(title)
    );
    for pctv in [0.0, 25.0, 50.0, 75.0, 100.0] {
        let yy = y(pctv);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{pctv}%</text>"##,
            left + pw,
            left - 6.0,
            yy + 4.0
        );
    }
    let label_every = steps.len().div_ceil(12).max(1);
    for k in (0..steps.len()).step_by(label_every) {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{k}</text>"#,
            x(k),
            top + ph + 18.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">step</text>"#,
        left + pw / 2.0,
        h - 10.0
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">share of visits</text>"#,
        top + ph / 2.0,
        top + ph / 2.0
    );
    for (i, name) in names.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let share: Vec<(f64, f64)> = steps
            .iter()
            .enumerate()
            .map(|(k, st)| (x(k), y(pct(st.counts[i], st.visits))))
            .collect();
        let weight: Vec<(f64, f64)> = steps
            .iter()
            .enumerate()
            .map(|(k, st)| (x(k), y(pct(st.weights[i], total))))
            .collect();
        let pts = |v: &[(f64, f64)]| {
            v.iter()
                .map(|(a, b)| format!("{a:.1},{b:.1}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.5" stroke-dasharray="5,4" opacity="0.7"/>"#,
            pts(&weight)
        );
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2.5"/>"#,
            pts(&share)
        );
        for (a, b) in &share {
            let _ = writeln!(
                s,
                r#"<circle cx="{a:.1}" cy="{b:.1}" r="3" fill="{color}"/>"#
            );
        }
        let ly = top + 10.0 + 20.0 * i as f64;
        let lx = left + pw + 16.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2.5"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 20.0,
            lx + 26.0,
            ly + 4.0,
            esc(name)
        );
    }
    let ly = top + 10.0 + 20.0 * names.len() as f64;
    let lx = left + pw + 16.0;
    let _ = writeln!(
        s,
        r##"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="#555" stroke-dasharray="5,4"/><text x="{:.1}" y="{:.1}">weight</text>"##,
        lx + 20.0,
        lx + 26.0,
        ly + 4.0
    );
    s.push_str("</svg>\n");
    s
}
