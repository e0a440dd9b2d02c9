//! Pairing canary Ingresses with their main Ingresses, as ingress-nginx's
//! `mergeAlternativeBackends` does: a canary path joins the main location
//! with the same host, the same path and the same path type, when the main
//! backend is another Service. The result is one [`Location`] per main
//! host + path, with the main's affinity and at most one canary.

use super::annotations::{self, Affinity, Canary, Key, Parsed};
use super::ingress::{Backend, Ingress, PathType, Port};
use super::report::Report;

/// A canary joined to a location.
#[derive(Clone, Debug)]
pub struct CanaryAt {
    /// The canary Service.
    pub backend: Backend,
    /// Its annotations.
    pub canary: Canary,
    /// `Ingress ns/name` of the canary Ingress.
    pub object: String,
}

/// One host + path of a main Ingress.
#[derive(Clone, Debug)]
pub struct Location {
    /// The host; empty: requests for no known host (ingress-nginx's `_`).
    pub host: String,
    /// The path.
    pub path: String,
    /// Its type.
    pub path_type: PathType,
    /// The main Service.
    pub main: Backend,
    /// `Ingress ns/name` of the main Ingress.
    pub object: String,
    /// The main Ingress's cookie affinity.
    pub affinity: Option<Affinity>,
    /// The main Ingress's `upstream-hash-by`, as a key source.
    pub key: Option<Key>,
    /// The canary, if one joined.
    pub canary: Option<CanaryAt>,
}

impl Location {
    /// Does the filter act here (a canary, affinity or a key)?
    pub fn active(&self) -> bool {
        self.canary.is_some() || self.affinity.is_some() || self.key.is_some()
    }
}

/// Every location, in the order requests are matched: hosts sorted (the
/// host-less default server last); inside a host Exact paths first, then
/// longer paths before shorter ones.
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

fn path_order(a: &Location, b: &Location) -> std::cmp::Ordering {
    // Exact hosts, then wildcards (as nginx picks server names), then none.
    let host_key = |l: &Location| (l.host.is_empty(), l.host.starts_with('*'), l.host.clone());
    host_key(a)
        .cmp(&host_key(b))
        .then_with(|| (a.path_type != PathType::Exact).cmp(&(b.path_type != PathType::Exact)))
        .then_with(|| b.path.len().cmp(&a.path.len()))
        .then_with(|| a.path.cmp(&b.path))
        .then_with(|| a.path_type.cmp(&b.path_type))
}

/// Build the plan from every Ingress read.
pub fn build(ingresses: &[Ingress], prefix: &str, report: &mut Report) -> Plan {
    let parsed: Vec<Parsed> = ingresses
        .iter()
        .map(|ing| annotations::parse(ing, prefix, report))
        .collect();
    let mut plan = Plan::default();
    let paths_of = |ing: &Ingress| -> Vec<(String, String, PathType, Backend)> {
        let mut v = Vec::new();
        if let Some(b) = &ing.default_backend {
            v.push((String::new(), "/".to_owned(), PathType::Prefix, b.clone()));
        }
        for r in &ing.rules {
            for p in &r.paths {
                if let Some(b) = &p.backend {
                    v.push((r.host.clone(), p.path.clone(), p.path_type, b.clone()));
                }
            }
        }
        v
    };

    // Main Ingresses first: they define the servers and locations.
    for (ing, p) in ingresses.iter().zip(&parsed) {
        if p.canary.is_some() {
            continue;
        }
        if ing.has_tls {
            plan.tls = true;
            report.lossy(&ing.object(), "spec.tls", "TLS is not migrated: add the certificates to the listener (Envoy), the Gateway server (Istio) or the Gateway listener (Envoy Gateway)");
        }
        for (host, path, path_type, main) in paths_of(ing) {
            if let Some(existing) = plan
                .locations
                .iter()
                .find(|l| l.host == host && l.path == path && l.path_type == path_type)
            {
                report.lossy(
                    &ing.object(),
                    &format!("spec.rules[host={host}].paths[{path}]"),
                    format!("the same host and path as {}: the first one read is migrated (ingress-nginx keeps the oldest)", existing.object),
                );
                continue;
            }
            plan.locations.push(Location {
                host,
                path,
                path_type,
                main,
                object: ing.object(),
                affinity: p.affinity.clone(),
                key: p.key.clone(),
                canary: None,
            });
        }
    }

    // Then the canaries join the locations they match.
    for (ing, p) in ingresses.iter().zip(&parsed) {
        let Some(canary) = &p.canary else { continue };
        let obj = ing.object();
        if ing.has_tls {
            report.note(&obj, "spec.tls", "a canary Ingress's TLS is not used by ingress-nginx either (the main Ingress's server serves it)");
        }
        let own_affinity = if p.affinity.is_some() {
            p.affinity_present.as_slice()
        } else {
            &[]
        };
        if canary.legacy {
            for a in own_affinity {
                if a != "affinity-canary-behavior" {
                    report.lossy(&obj, a, "a legacy canary's own affinity: here one session cookie serves both versions, with the main Ingress's attributes");
                }
            }
        } else {
            for a in own_affinity {
                if a != "affinity-canary-behavior" {
                    report.note(&obj, a, "ingress-nginx gives a canary the main Ingress's affinity (affinity-canary-behavior sticky): this one has no effect, here either");
                }
            }
        }
        if p.key.is_some() {
            report.lossy(
                &obj,
                "upstream-hash-by",
                "on a canary Ingress: the main Ingress's key source is used for both versions",
            );
        }
        let mut matched_any = false;
        for (host, path, path_type, backend) in paths_of(ing) {
            let idx = plan
                .locations
                .iter()
                .position(|l| l.host == host && l.path == path && l.path_type == path_type);
            let Some(idx) = idx else {
                report.note(
                    &obj,
                    &format!("spec.rules[host={host}].paths[{path}]"),
                    "no main Ingress has this host, path and path type: ingress-nginx drops this canary backend, and so does the migration",
                );
                continue;
            };
            let loc = &mut plan.locations[idx];
            if loc.main == backend {
                report.note(&obj, &format!("spec.rules[host={host}].paths[{path}]"), format!("the same Service as the main Ingress {}: ingress-nginx does not merge it, nor does the migration", loc.object));
                continue;
            }
            if let Some(first) = &loc.canary {
                report.note(&obj, &format!("spec.rules[host={host}].paths[{path}]"), format!("{} is already the canary here: ingress-nginx only uses the first canary of a backend; ignored", first.object));
                continue;
            }
            matched_any = true;
            loc.canary = Some(CanaryAt {
                backend,
                canary: canary.clone(),
                object: obj.clone(),
            });
        }
        if matched_any {
            // ingress-nginx hangs the canary on the main *Service*, so it also
            // applies where that Service serves other paths.
            let mains: Vec<Backend> = plan
                .locations
                .iter()
                .filter(|l| l.canary.as_ref().is_some_and(|c| c.object == obj))
                .map(|l| l.main.clone())
                .collect();
            for l in &plan.locations {
                if l.canary.is_none() && mains.contains(&l.main) {
                    let at = if l.host.is_empty() { "*" } else { &l.host };
                    report.lossy(&obj, "canary", format!("ingress-nginx attaches a canary to the main Service, so it also applied at {at}{} ({}); migrated only where the canary Ingress's host and path match", l.path, l.object));
                }
            }
        }
    }
    plan.locations.sort_by(path_order);
    plan
}
