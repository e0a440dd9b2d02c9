//! What ingress-nginx makes of a set of Ingresses, location by location: a
//! model of its controller (kubernetes/ingress-nginx controller v1.15.1,
//! `internal/ingress/controller/controller.go`: `createUpstreams`,
//! `createServers`, `getBackendServers`, `mergeAlternativeBackends`;
//! `location.go`: `updateServerLocations`; `template.go`: `buildLocation`)
//! and of its Lua balancer (`balancer.lua`: `route_to_alternative_balancer`,
//! `balancer/sticky.lua`: `should_set_cookie`, `set_cookie`).
//!
//! The result is one [`Location`] per location a request can reach, in the
//! order requests are matched (first match wins): per host, exact paths
//! first, then prefixes longest first (nginx's longest-prefix rule), or the
//! regex locations in nginx's order when a host uses `use-regex` or
//! `rewrite-target`; hosts exact first, then wildcards, the catch-all server
//! last.
//!
//! Things ingress-nginx decides per *Service* (upstream) rather than per
//! location are reproduced as it does them: a canary joins the main
//! Service, so it applies at every location of that Service; only the first
//! canary merged into a Service is used; a canary Service's traffic policy
//! and a Service's cookie come from one Ingress. Where the outcome depends
//! on the order ingress-nginx processes the Ingresses (their
//! `creationTimestamp`, then name), and the input does not say it, the
//! migration is computed under every order that matters; where the
//! outcomes differ the location is migrated conservatively and the report
//! says so.

use std::collections::BTreeMap;

use super::annotations::{self, Affinity, Canary, Key, Parsed};
use super::ingress::{Backend, Ingress, PathType, Port};
use super::report::Report;

/// A canary joined to a location.
#[derive(Clone, Debug, PartialEq)]
pub struct CanaryAt {
    /// The canary Service.
    pub backend: Backend,
    /// Its traffic policy.
    pub canary: Canary,
    /// `Ingress ns/name` of the canary Ingress the policy comes from.
    pub object: String,
}

/// How a location matches the request path, in the filter's terms.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathMatch {
    /// `Exact`: the path exactly (`path_exact`).
    Exact(String),
    /// `Prefix` without a trailing slash: whole path elements
    /// (`path_separated_prefix`; `/` matches every path).
    SeparatedPrefix(String),
    /// `Prefix` with a trailing slash (`/foo/`): nginx's `location /foo/`,
    /// which does not match `/foo` (`path_prefix`).
    Prefix(String),
    /// A host that uses `use-regex` or `rewrite-target`: nginx's
    /// `location ~* "^<path>"`, case-insensitive, searched from the start
    /// of the path. The string is `<path>`.
    Regex(String),
}

impl PathMatch {
    /// The regex the filter searches with (`path_regex`) for
    /// [`PathMatch::Regex`].
    pub fn filter_regex(p: &str) -> String {
        format!("(?i)^{p}")
    }

    /// The same as a full-match RE2 regex (Envoy `safe_regex`, Istio
    /// `uri.regex`, Gateway API `RegularExpression`): nginx searches
    /// `^<path>` case-insensitively.
    pub fn full_regex(p: &str) -> String {
        format!("(?i).*(?:^{p}).*")
    }
}

/// One location of ingress-nginx.
#[derive(Clone, Debug)]
pub struct Location {
    /// The host; empty: the catch-all server (`_`, requests for no known
    /// host).
    pub host: String,
    /// The path as the Ingress writes it (nginx's `$location_path`, the
    /// default cookie Path).
    pub path: String,
    /// How requests match it.
    pub matcher: PathMatch,
    /// The main Service.
    pub main: Backend,
    /// `Ingress ns/name` of the Ingress the location comes from.
    pub object: String,
    /// The cookie ingress-nginx sets here (affinity), if any.
    pub affinity: Option<Affinity>,
    /// The main Service's `upstream-hash-by`, as a key source.
    pub key: Option<Key>,
    /// The canary, if one applies here.
    pub canary: Option<CanaryAt>,
}

impl Location {
    /// Does the filter act here (a canary, affinity or a key)?
    pub fn active(&self) -> bool {
        self.canary.is_some() || self.affinity.is_some() || self.key.is_some()
    }
}

/// Every location, in the order requests are matched.
#[derive(Debug, Default)]
pub struct Plan {
    /// The locations.
    pub locations: Vec<Location>,
    /// Any Ingress had `spec.tls`.
    pub tls: bool,
}

/// `ns-svc-port`, ingress-nginx's upstream name, used as the version name
/// and the cluster name (at most 64 characters of `[A-Za-z0-9._-]`).
pub fn upstream_name(b: &Backend) -> String {
    let port = match &b.port {
        Port::Number(n) => n.to_string(),
        Port::Name(n) => n.clone(),
    };
    let raw = format!("{}-{}-{}", b.namespace, b.service, port);
    let clean: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    shorten(&clean, 64)
}

/// `s` with the RE2 / regex-lite metacharacters escaped.
pub fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Cut `s` to `max` characters, keeping it unique with an FNV-1a suffix.
pub fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let keep: String = s.chars().take(max - 9).collect();
    format!("{keep}-{h:08x}")
}

// ---------------------------------------------------------------------------
// The controller model

const DEFAULT_UPSTREAM: &str = "upstream-default-backend";
const CATCH_ALL: &str = "_";

/// An upstream (one per Service and port).
#[derive(Clone, Debug)]
struct Ups {
    /// Marked by a canary Ingress: it serves no location of its own.
    no_server: bool,
    /// The canary Ingress whose traffic policy it carries.
    policy: Option<usize>,
    /// The Ingress whose `upstream-hash-by` it carries (the one that
    /// created it).
    key_from: usize,
    /// `affinity: cookie` from some Ingress.
    cookie_affinity: bool,
    /// The Ingress whose `affinity-mode` it carries (the first).
    mode_from: Option<usize>,
    /// The Ingress whose cookie attributes it carries (the last).
    cookie_from: Option<usize>,
    /// Host -> the paths whose answers set the cookie.
    cookie_locations: BTreeMap<String, Vec<String>>,
    /// Canary upstreams, in merge order; ingress-nginx uses the first.
    alternatives: Vec<String>,
}

#[derive(Clone, Debug)]
struct Loc {
    path: String,
    /// `location.IngressPath`: the path as written (`None`: the root).
    ingress_path: Option<String>,
    path_type: PathType,
    backend: String,
    is_def_backend: bool,
    ingress: Option<usize>,
    /// The exact location `updateServerLocations` adds beside a Prefix one.
    exact_copy: bool,
}

#[derive(Clone, Debug)]
struct Server {
    host: String,
    locations: Vec<Loc>,
}

/// What one run of the model gives for one location.
#[derive(Clone, Debug, PartialEq)]
struct Outcome {
    main: String,
    /// The canary upstream and the Ingress whose policy it carries.
    canary: Option<(String, Option<usize>)>,
    /// The Ingress whose cookie is set here, and the one giving the mode.
    cookie: Option<(usize, Option<usize>)>,
    /// Sticky (the upstream has cookie affinity) but no cookie set here.
    sticky_without_cookie: bool,
    key_from: Option<usize>,
    ingress: Option<usize>,
    default_backend: bool,
}

/// A rendered location: its place and how it matches.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Slot {
    host: String,
    matcher: PathMatch,
}

struct Model<'a> {
    ings: &'a [Ingress],
    parsed: &'a [Parsed],
    prefix: &'a str,
}

/// One run: the locations of every server, in match order, each with its
/// location path (`$location_path`) and its outcome.
type Run = Vec<(Slot, String, Outcome)>;

impl Model<'_> {
    fn is_canary(&self, i: usize) -> bool {
        self.parsed.get(i).is_some_and(|p| p.canary.is_some())
    }

    fn simulate(&self, order: &[usize]) -> (Run, Vec<Dropped>) {
        let mut ups: BTreeMap<String, Ups> = BTreeMap::new();
        ups.insert(
            DEFAULT_UPSTREAM.to_owned(),
            Ups {
                no_server: false,
                policy: None,
                key_from: usize::MAX,
                cookie_affinity: false,
                mode_from: None,
                cookie_from: None,
                cookie_locations: BTreeMap::new(),
                alternatives: Vec::new(),
            },
        );
        let new_ups = |i: usize, canary: bool| Ups {
            no_server: canary,
            policy: canary.then_some(i),
            key_from: i,
            cookie_affinity: false,
            mode_from: None,
            cookie_from: None,
            cookie_locations: BTreeMap::new(),
            alternatives: Vec::new(),
        };
        // createUpstreams
        for &i in order {
            let ing = &self.ings[i];
            let canary = self.is_canary(i);
            if let Some(b) = &ing.default_backend {
                // Recreated every time, as ingress-nginx does.
                ups.insert(upstream_name(b), new_ups(i, canary));
            }
            for r in ing.rules.iter().filter(|r| r.has_http) {
                for p in &r.paths {
                    let Some(b) = &p.backend else { continue };
                    ups.entry(upstream_name(b))
                        .or_insert_with(|| new_ups(i, canary));
                }
            }
        }
        // createServers
        let mut servers: Vec<Server> = vec![Server {
            host: CATCH_ALL.to_owned(),
            locations: vec![Loc {
                path: "/".to_owned(),
                ingress_path: None,
                path_type: PathType::Prefix,
                backend: DEFAULT_UPSTREAM.to_owned(),
                is_def_backend: true,
                ingress: None,
                exact_copy: false,
            }],
        }];
        for &i in order {
            if self.is_canary(i) {
                continue;
            }
            let ing = &self.ings[i];
            let mut un = DEFAULT_UPSTREAM.to_owned();
            if let Some(b) = &ing.default_backend {
                un = upstream_name(b);
                if let Some(root) = servers[0].locations.first_mut() {
                    if root.is_def_backend && ing.rules.is_empty() {
                        root.is_def_backend = false;
                        root.backend = un.clone();
                        root.ingress = Some(i);
                    }
                }
            }
            for r in &ing.rules {
                let host = if r.host.is_empty() {
                    CATCH_ALL
                } else {
                    &r.host
                };
                if servers.iter().any(|s| s.host == host) {
                    continue;
                }
                servers.push(Server {
                    host: host.to_owned(),
                    locations: vec![Loc {
                        path: "/".to_owned(),
                        ingress_path: None,
                        path_type: PathType::Prefix,
                        backend: un.clone(),
                        is_def_backend: true,
                        ingress: Some(i),
                        exact_copy: false,
                    }],
                });
            }
        }
        // getBackendServers: the locations
        for &i in order {
            let ing = &self.ings[i];
            let anns = &self.parsed[i];
            for r in &ing.rules {
                let host = if r.host.is_empty() {
                    CATCH_ALL
                } else {
                    &r.host
                };
                let si = servers.iter().position(|s| s.host == host).unwrap_or(0);
                if !r.has_http {
                    continue;
                }
                for p in &r.paths {
                    let Some(b) = &p.backend else { continue };
                    let name = upstream_name(b);
                    let Some(u) = ups.get(&name) else { continue };
                    if u.no_server {
                        continue;
                    }
                    let ptype = p.path_type.nginx();
                    let mut add = true;
                    for loc in servers[si].locations.iter_mut() {
                        if loc.path != p.path {
                            continue;
                        }
                        if loc.path_type != ptype {
                            break;
                        }
                        add = false;
                        if loc.is_def_backend {
                            loc.backend = name.clone();
                            loc.is_def_backend = false;
                            loc.ingress = Some(i);
                            loc.ingress_path = Some(p.path.clone());
                        }
                        break;
                    }
                    if add {
                        servers[si].locations.push(Loc {
                            path: p.path.clone(),
                            ingress_path: Some(p.path.clone()),
                            path_type: ptype,
                            backend: name.clone(),
                            is_def_backend: false,
                            ingress: Some(i),
                            exact_copy: false,
                        });
                    }
                    if let Some(u) = ups.get_mut(&name) {
                        if anns.affinity.is_some() {
                            u.cookie_affinity = true;
                            if u.mode_from.is_none() {
                                u.mode_from = Some(i);
                            }
                            u.cookie_from = Some(i);
                            u.cookie_locations
                                .entry(host.to_owned())
                                .or_default()
                                .push(p.path.clone());
                        }
                    }
                }
            }
        }
        // mergeAlternativeBackends, canaries in order, if any main exists
        let mut dropped = Vec::new();
        if order.iter().any(|&i| !self.is_canary(i)) {
            for &i in order.iter().filter(|&&i| self.is_canary(i)) {
                self.merge_alternatives(i, &mut ups, &servers, &mut dropped);
            }
        }
        // Sort the locations (longest path first), then add the exact
        // locations beside Prefix ones (updateServerLocations).
        let mut run = Run::new();
        servers.sort_by(|a, b| host_order(&a.host, &b.host));
        for server in &mut servers {
            server.locations.sort_by(|a, b| b.path.cmp(&a.path));
            server
                .locations
                .sort_by_key(|l| std::cmp::Reverse(l.path.len()));
            let regex_mode = server.locations.iter().any(|l| self.regexy(l));
            let exact_paths: Vec<String> = server
                .locations
                .iter()
                .filter(|l| l.path_type == PathType::Exact)
                .map(|l| l.path.clone())
                .collect();
            let mut rendered: Vec<Loc> = Vec::new();
            for l in &server.locations {
                if l.path == "/" || l.path_type != PathType::Prefix || self.regexy(l) {
                    rendered.push(l.clone());
                    continue;
                }
                let mut n = l.clone();
                if !n.path.ends_with('/') {
                    n.path.push('/');
                }
                rendered.push(n);
                if !exact_paths.contains(&l.path) {
                    let mut e = l.clone();
                    e.path_type = PathType::Exact;
                    e.exact_copy = true;
                    rendered.push(e);
                }
            }
            let host = server.host.clone();
            let mut slots: Vec<(Slot, String, Outcome)> = Vec::new();
            for l in &rendered {
                let location_path = l.ingress_path.clone().unwrap_or_else(|| "/".to_owned());
                let has_copy = rendered
                    .iter()
                    .any(|e| e.exact_copy && e.ingress_path == l.ingress_path);
                let matcher = if regex_mode && !l.exact_copy && has_copy {
                    // `~* ^/foo/` is followed by its copy `~* ^/foo`, which
                    // matches all it does: the copy stands for both.
                    continue;
                } else if regex_mode {
                    PathMatch::Regex(l.path.clone())
                } else if l.exact_copy {
                    continue; // covered by its Prefix sibling's separated prefix
                } else if l.path_type == PathType::Exact {
                    PathMatch::Exact(l.path.clone())
                } else if l.path == "/" {
                    PathMatch::SeparatedPrefix("/".to_owned())
                } else {
                    match &l.ingress_path {
                        Some(ip) if has_copy && !ip.ends_with('/') => {
                            PathMatch::SeparatedPrefix(ip.clone())
                        }
                        _ => PathMatch::Prefix(l.path.clone()),
                    }
                };
                let outcome = self.outcome(l, &host, &location_path, &ups);
                let slot = Slot {
                    host: if host == CATCH_ALL {
                        String::new()
                    } else {
                        host.clone()
                    },
                    matcher,
                };
                if slots.iter().any(|(s, ..)| *s == slot) {
                    continue;
                }
                slots.push((slot, location_path, outcome));
            }
            if !regex_mode {
                // Exact first, then prefixes by nginx path length (longest
                // prefix wins); the order above already is length-first.
                slots.sort_by_key(|(s, ..)| !matches!(s.matcher, PathMatch::Exact(_)));
            }
            run.extend(slots);
        }
        (run, dropped)
    }

    /// Does this location make its server use regex locations?
    fn regexy(&self, l: &Loc) -> bool {
        l.ingress.is_some_and(|i| {
            let ing = &self.ings[i];
            !l.is_def_backend
                && (annotations::use_regex(ing, self.prefix)
                    || annotations::needs_rewrite(
                        ing,
                        self.prefix,
                        l.ingress_path.as_deref().unwrap_or(&l.path),
                    ))
        })
    }

    fn merge_alternatives(
        &self,
        i: usize,
        ups: &mut BTreeMap<String, Ups>,
        servers: &[Server],
        dropped: &mut Vec<Dropped>,
    ) {
        let ing = &self.ings[i];
        if let Some(b) = &ing.default_backend {
            let alt = upstream_name(b);
            let locs: Vec<&Loc> = servers[0].locations.iter().collect();
            if try_merge(&alt, &locs, ups) {
                dropped.push(Dropped {
                    ingress: i,
                    at: "spec.defaultBackend".to_owned(),
                    alt,
                });
            }
        }
        for r in &ing.rules {
            let host = if r.host.is_empty() {
                CATCH_ALL
            } else {
                &r.host
            };
            for p in &r.paths {
                let Some(b) = &p.backend else { continue };
                let alt = upstream_name(b);
                let Some(server) = servers.iter().find(|s| s.host == host) else {
                    dropped.push(Dropped {
                        ingress: i,
                        at: format!("spec.rules[host={}].paths[{}]", r.host, p.path),
                        alt: String::new(),
                    });
                    continue;
                };
                let ptype = p.path_type.nginx();
                // Every location is visited for altEqualsPri; only the same
                // path and type merge.
                let locs: Vec<&Loc> = server
                    .locations
                    .iter()
                    .filter(|l| l.backend == alt || (l.path == p.path && l.path_type == ptype))
                    .collect();
                if try_merge(&alt, &locs, ups) {
                    dropped.push(Dropped {
                        ingress: i,
                        at: format!("spec.rules[host={}].paths[{}]", r.host, p.path),
                        alt,
                    });
                }
            }
        }
    }

    fn outcome(
        &self,
        l: &Loc,
        host: &str,
        location_path: &str,
        ups: &BTreeMap<String, Ups>,
    ) -> Outcome {
        let pri = ups.get(&l.backend);
        let canary = pri
            .and_then(|p| p.alternatives.first())
            .filter(|a| ups.contains_key(a.as_str()))
            .map(|a| (a.clone(), ups.get(a).and_then(|u| u.policy)));
        let (cookie, sticky_without_cookie) = match pri {
            Some(p) if p.cookie_affinity => {
                let wildcard = host
                    .split_once('.')
                    .map(|(_, rest)| format!("*.{rest}"))
                    .unwrap_or_default();
                let set = p
                    .cookie_locations
                    .get(host)
                    .or_else(|| p.cookie_locations.get(&wildcard))
                    .is_some_and(|paths| paths.iter().any(|x| x == location_path));
                if set {
                    (p.cookie_from.map(|c| (c, p.mode_from)), false)
                } else {
                    (None, true)
                }
            }
            _ => (None, false),
        };
        Outcome {
            main: l.backend.clone(),
            canary,
            cookie,
            sticky_without_cookie,
            key_from: pri.map(|p| p.key_from).filter(|k| *k != usize::MAX),
            ingress: l.ingress,
            default_backend: l.ingress_path.is_none() && l.backend != DEFAULT_UPSTREAM,
        }
    }
}

/// A canary path ingress-nginx drops (`mergeAlternativeBackends`): for a
/// host no main Ingress serves (`alt` empty), or joining no location, which
/// deletes the canary Service's upstream, even where it already joined one.
#[derive(Clone, Debug)]
struct Dropped {
    ingress: usize,
    at: String,
    alt: String,
}

/// `mergeAlternativeBackends` for one canary upstream over `locs`; true
/// when it removes the upstream.
fn try_merge(alt_name: &str, locs: &[&Loc], ups: &mut BTreeMap<String, Ups>) -> bool {
    if !ups.contains_key(alt_name) {
        return false; // already removed
    }
    let mut merged = false;
    let mut alt_equals_pri = false;
    for loc in locs {
        let Some(pri) = ups.get_mut(&loc.backend) else {
            continue;
        };
        alt_equals_pri = loc.backend == alt_name;
        if alt_equals_pri {
            break;
        }
        if loc.backend != DEFAULT_UPSTREAM && !pri.no_server {
            if !pri.alternatives.iter().any(|a| a == alt_name) {
                pri.alternatives.push(alt_name.to_owned());
            }
            merged = true;
        }
    }
    if !alt_equals_pri && !merged {
        ups.remove(alt_name);
        return true;
    }
    false
}

/// nginx's server choice: exact names, then wildcards (longest first), then
/// the catch-all server.
fn host_order(a: &str, b: &str) -> std::cmp::Ordering {
    let key = |h: &str| {
        (
            h == CATCH_ALL,
            h.starts_with('*'),
            std::cmp::Reverse(if h.starts_with('*') { h.len() } else { 0 }),
            h.to_owned(),
        )
    };
    key(a).cmp(&key(b))
}

/// The orders to try. With every `creationTimestamp` known, the one order
/// ingress-nginx uses (time, then name descending). Otherwise main
/// Ingresses before canaries (a canary is created after its main), each
/// group in input order, and then each Ingress moved to the front of its
/// group, so every pair is tried both ways.
fn orders(ings: &[Ingress], parsed: &[Parsed]) -> (Vec<Vec<usize>>, bool) {
    let n = ings.len();
    if ings.iter().all(|i| i.created.is_some()) {
        let mut o: Vec<usize> = (0..n).collect();
        o.sort_by(|&a, &b| {
            ings[a].created.cmp(&ings[b].created).then_with(|| {
                let na = format!("{}/{}", ings[b].namespace, ings[b].name);
                let nb = format!("{}/{}", ings[a].namespace, ings[a].name);
                na.cmp(&nb)
            })
        });
        return (vec![o], true);
    }
    let mains: Vec<usize> = (0..n).filter(|&i| parsed[i].canary.is_none()).collect();
    let canaries: Vec<usize> = (0..n).filter(|&i| parsed[i].canary.is_some()).collect();
    let join = |m: &[usize], c: &[usize]| -> Vec<usize> { m.iter().chain(c).copied().collect() };
    let mut out = vec![join(&mains, &canaries)];
    let front = |group: &[usize], k: usize| -> Vec<usize> {
        let mut g = vec![group[k]];
        g.extend(
            group
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != k)
                .map(|(_, x)| *x),
        );
        g
    };
    // Bounded: with very many Ingresses, the reversed orders only.
    if mains.len() + canaries.len() <= 200 {
        for k in 0..mains.len() {
            out.push(join(&front(&mains, k), &canaries));
        }
        for k in 0..canaries.len() {
            out.push(join(&mains, &front(&canaries, k)));
        }
    } else {
        let rm: Vec<usize> = mains.iter().rev().copied().collect();
        let rc: Vec<usize> = canaries.iter().rev().copied().collect();
        out.push(join(&rm, &rc));
    }
    (out, false)
}

/// Build the plan from every Ingress read.
pub fn build(ingresses: &[Ingress], prefix: &str, report: &mut Report) -> Result<Plan, String> {
    let mut parsed: Vec<Parsed> = Vec::new();
    for ing in ingresses {
        parsed.push(annotations::parse(ing, prefix, report)?);
    }
    if !parsed.iter().any(|p| p.canary.is_none()) {
        let canaries: Vec<String> = ingresses.iter().map(Ingress::object).collect();
        return Err(format!(
            "only canary Ingresses in the input ({}): ingress-nginx serves a canary only beside its main Ingress; give the main Ingresses' files too",
            canaries.join(", ")
        ));
    }
    let mut plan = Plan::default();
    notes_per_ingress(ingresses, &parsed, report, &mut plan);
    let model = Model {
        ings: ingresses,
        parsed: &parsed,
        prefix,
    };
    let (orders, known) = orders(ingresses, &parsed);
    let mut runs: Vec<Run> = Vec::new();
    let mut dropped = Vec::new();
    for (k, o) in orders.iter().enumerate() {
        let (run, d) = model.simulate(o);
        if k == 0 {
            dropped = d;
        }
        runs.push(run);
    }
    let Some(first) = runs.first() else {
        return Ok(plan);
    };
    for d in &dropped {
        if d.alt.is_empty() {
            report.note(&ingresses[d.ingress].object(), &d.at, "no main Ingress serves this host: ingress-nginx ignores this canary path, and so does the migration");
            continue;
        }
        report.note(&ingresses[d.ingress].object(), &d.at, format!("no main location has this host, path and path type: ingress-nginx drops this canary path and removes the canary Service {} altogether (mergeAlternativeBackends deletes its upstream, also where another path of it already joined a main location), so the canary never applies; the migration does the same", d.alt));
    }
    let obj = |i: usize| ingresses[i].object();
    // Canary Ingress -> (locations, candidate canary Ingresses) where the
    // canary depends on the creation order.
    let mut ambiguous_canaries: BTreeMap<usize, (Vec<String>, Vec<usize>)> = BTreeMap::new();
    for (slot, location_path, out) in first {
        let others: Vec<Option<&Outcome>> = runs
            .iter()
            .skip(1)
            .map(|r| r.iter().find(|(s, ..)| s == slot).map(|(.., o)| o))
            .collect();
        let at = format!(
            "{}{}",
            if slot.host.is_empty() {
                "*"
            } else {
                &slot.host
            },
            location_path
        );
        if out.main == DEFAULT_UPSTREAM {
            // The default backend (404) answers: nothing to migrate, unless
            // another order gives this location a Service.
            if let Some(o) = others.iter().flatten().find(|o| o.main != DEFAULT_UPSTREAM) {
                if let Some(i) = o.ingress {
                    report.lossy(&obj(i), "spec.defaultBackend", format!("at {at}: ingress-nginx's answer depends on the order the Ingresses were created (their creationTimestamp is not in the input): the default backend or {}; migrated as the default backend (404)", o.main));
                }
            }
            continue;
        }
        let Some(main) = backend_of(ingresses, &out.main) else {
            continue;
        };
        let object = out.ingress.map(obj).unwrap_or_else(|| "-".to_owned());
        // Order-dependent parts.
        let differ = |f: &dyn Fn(&Outcome) -> String| {
            others.iter().any(|o| o.is_none_or(|o| f(o) != f(out)))
        };
        if differ(&|o| o.main.clone()) {
            let mut cands: Vec<String> = others
                .iter()
                .map(|o| o.map_or("none".to_owned(), |o| o.main.clone()))
                .collect();
            cands.push(out.main.clone());
            cands.sort();
            cands.dedup();
            report.lossy(&object, "spec.rules", format!("at {at}: the Service ingress-nginx serves depends on the order the Ingresses were created (their creationTimestamp is not in the input): {}; migrated with {} (the first one read)", cands.join(" or "), out.main));
        }
        let canary_text = |o: &Outcome| -> String {
            match &o.canary {
                None => "no canary".to_owned(),
                Some((alt, pol)) => {
                    let pol = pol
                        .and_then(|p| parsed[p].canary.as_ref().map(|c| format!("{c:?}")))
                        .unwrap_or_default();
                    format!("{alt} {pol}")
                }
            }
        };
        let mut canary = None;
        if differ(&canary_text) {
            let mut who: Vec<usize> = runs
                .iter()
                .filter_map(|r| r.iter().find(|(s, ..)| s == slot))
                .filter_map(|(.., o)| o.canary.as_ref().and_then(|(_, p)| *p))
                .collect();
            who.sort_unstable();
            who.dedup();
            for &i in &who {
                let e = ambiguous_canaries.entry(i).or_default();
                e.0.push(at.clone());
                e.1.extend(who.iter().copied());
            }
        } else if let Some((alt, pol)) = &out.canary {
            match pol.and_then(|p| parsed[p].canary.clone().map(|c| (p, c))) {
                Some((p, c)) => {
                    if let Some(backend) = backend_of(ingresses, alt) {
                        canary = Some(CanaryAt {
                            backend,
                            canary: c,
                            object: obj(p),
                        });
                    }
                }
                None => {
                    report.note(&object, "canary", format!("at {at}: the canary Service {alt} was first used by a main Ingress, so ingress-nginx gives it no traffic policy and never picks it: migrated without a canary"));
                }
            }
        }
        // The cookie.
        let aff_of = |o: &Outcome| -> Option<Affinity> {
            let (cookie_from, mode_from) = o.cookie?;
            let mut a = parsed[cookie_from].affinity.clone()?;
            if let Some(m) = mode_from.and_then(|m| parsed[m].affinity.as_ref()) {
                a.persistent = m.persistent;
            }
            Some(a)
        };
        let mut affinity = aff_of(out);
        if differ(&|o| format!("{:?}", aff_of(o))) {
            let own = out.ingress.and_then(|i| parsed[i].affinity.clone());
            let mut who: Vec<usize> = runs
                .iter()
                .filter_map(|r| r.iter().find(|(s, ..)| s == slot))
                .filter_map(|(.., o)| o.cookie.map(|(c, _)| c))
                .collect();
            who.sort_unstable();
            who.dedup();
            let names: Vec<String> = who.iter().map(|&i| obj(i)).collect();
            report.lossy(&object, "affinity", format!("at {at}: ingress-nginx keeps one cookie per Service ({}), taken from the last of {} created; the input has no creationTimestamp, so it cannot be told which: migrated with this Ingress's own cookie", main.service, names.join(", ")));
            affinity = own;
        } else if !known && out.cookie.is_some_and(|(c, _)| Some(c) != out.ingress) {
            if let (Some(c), Some(i)) = (out.cookie.map(|(c, _)| c), out.ingress) {
                report.note(&obj(i), "affinity", format!("at {at}: the Service's cookie comes from {} (ingress-nginx keeps one cookie per Service)", obj(c)));
            }
        }
        if out.sticky_without_cookie && affinity.is_none() {
            report.note(&object, "affinity", format!("at {at}: the Service has cookie affinity from another Ingress; ingress-nginx sets no cookie here (only at the paths of the Ingress that asked for it), and neither does the migration"));
        }
        let key = out.key_from.and_then(|k| parsed[k].key.clone());
        let matcher = slot.matcher.clone();
        if out.default_backend {
            report.note(
                &object,
                "spec.defaultBackend",
                format!(
                    "{} serves {at} and every path of {} no rule matches, as ingress-nginx does",
                    main.service,
                    if slot.host.is_empty() {
                        "unknown hosts"
                    } else {
                        &slot.host
                    }
                ),
            );
        }
        plan.locations.push(Location {
            host: slot.host.clone(),
            path: location_path.clone(),
            matcher,
            main,
            object,
            affinity,
            key,
            canary,
        });
    }
    // A canary Ingress ingress-nginx never uses anywhere: what the
    // migration could not carry over from it changes nothing.
    for (i, (ing, p)) in ingresses.iter().zip(&parsed).enumerate() {
        let o = ing.object();
        if p.canary.is_some()
            && !ambiguous_canaries.contains_key(&i)
            && !plan
                .locations
                .iter()
                .any(|l| l.canary.as_ref().is_some_and(|c| c.object == o))
        {
            report.downgrade(
                &o,
                "ingress-nginx never uses this canary, so nothing is lost",
            );
        }
    }
    for (i, (mut at, mut who)) in ambiguous_canaries {
        at.dedup();
        who.sort_unstable();
        who.dedup();
        let names: Vec<String> = who.iter().map(|&c| obj(c)).collect();
        report.lossy(&obj(i), "canary", format!("at {}: which canary ingress-nginx uses, and with which traffic policy, depends on the order the Ingresses were created (it keeps one canary per main Service and one traffic policy per canary Service; candidates: {}), and the input has no creationTimestamp: migrated without a canary there; keep one canary per main Service, or migrate from `kubectl get ingress -A -o yaml`", at.join(", "), names.join(", ")));
    }
    if known {
        report.note("-", "order", "every Ingress has a creationTimestamp: migrated in the order ingress-nginx processes them");
    }
    Ok(plan)
}

/// The Service of an upstream name, from the Ingresses read.
fn backend_of(ingresses: &[Ingress], name: &str) -> Option<Backend> {
    ingresses
        .iter()
        .flat_map(|i| {
            i.default_backend.iter().chain(
                i.rules
                    .iter()
                    .flat_map(|r| r.paths.iter().filter_map(|p| p.backend.as_ref())),
            )
        })
        .find(|b| upstream_name(b) == name)
        .cloned()
}

/// The per-Ingress notes: TLS, a canary's own settings that ingress-nginx
/// ignores, Services used both as main and as canary.
fn notes_per_ingress(
    ingresses: &[Ingress],
    parsed: &[Parsed],
    report: &mut Report,
    plan: &mut Plan,
) {
    let mains: Vec<&Backend> = ingresses
        .iter()
        .zip(parsed)
        .filter(|(_, p)| p.canary.is_none())
        .flat_map(|(i, _)| {
            i.default_backend.iter().chain(
                i.rules
                    .iter()
                    .flat_map(|r| r.paths.iter().filter_map(|p| p.backend.as_ref())),
            )
        })
        .collect();
    for (ing, p) in ingresses.iter().zip(parsed) {
        let obj = ing.object();
        let Some(canary) = &p.canary else {
            let rule_services = ing
                .rules
                .iter()
                .any(|r| r.has_http && r.paths.iter().any(|x| x.backend.is_some()));
            if p.affinity.is_some() && !rule_services {
                report.note(&obj, "affinity", "ingress-nginx gives cookie affinity only to the Services of an Ingress's rule paths: this Ingress has none, so it sets no cookie, and neither does the migration");
            }
            if ing.has_tls {
                plan.tls = true;
                report.lossy(&obj, "spec.tls", "TLS is not migrated: add the certificates to the listener (Envoy), the Gateway server (Istio) or the Gateway listener (Envoy Gateway)");
            }
            continue;
        };
        if ing.has_tls {
            report.note(&obj, "spec.tls", "a canary Ingress's TLS is not used by ingress-nginx (the main Ingress's server serves it): nothing to carry over");
        }
        if p.affinity.is_some() {
            for a in &p.affinity_present {
                if a != "affinity-canary-behavior" {
                    let why = if canary.legacy {
                        "ingress-nginx ignores a canary Ingress's own affinity (a legacy canary has none): nothing to carry over"
                    } else {
                        "ingress-nginx gives a canary the main Ingress's affinity (affinity-canary-behavior sticky), so this one has no effect, here either"
                    };
                    report.note(&obj, a, why);
                }
            }
        }
        if p.key.is_some() {
            report.lossy(
                &obj,
                "upstream-hash-by",
                "on a canary Ingress: ingress-nginx hashes the canary's own pods by it (without affinity); here the main Ingress's key source serves both versions",
            );
        }
        let shared: Vec<String> = ing
            .rules
            .iter()
            .flat_map(|r| r.paths.iter().filter_map(|p| p.backend.as_ref()))
            .chain(ing.default_backend.iter())
            .filter(|b| mains.contains(b))
            .map(|b| b.service.clone())
            .collect();
        if let Some(s) = shared.first() {
            report.note(&obj, "canary", format!("Service {s} is also a main Ingress's Service: ingress-nginx does not merge a canary into its own Service, and if this canary Ingress were created before that main Ingress, the main location would not exist at all (createUpstreams marks the Service as a canary's)"));
        }
    }
}
