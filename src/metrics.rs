//! The filter's counters: their names, and which ones a request moves.
//!
//! proxy-wasm metrics have no labels, so each label set is its own counter
//! whose name carries the labels in Istio's tag format,
//! `<name>.<label>=.=<value>;.;...`. Envoy's `stats_tags` (one regex per
//! label, `(<label>=\.=(.*?);\.;)`) turn them into Prometheus labels:
//!
//! ```text
//! wasmcustom.sticky_canary_decisions_total.route=.=shop;.;version=.=v1.2;.;reason=.=new;.;
//! -> sticky_canary_decisions_total{route="shop",version="v1.2",reason="new"}
//! ```
//!
//! `route` is the policy's scope: `global`, or the route **entry**'s name
//! (a `routes[]` entry of the plugin config), never Envoy's route name. The
//! values cannot collide or break the format: version and route entry
//! names are limited to `A-Z a-z 0-9 - _ .` (no `;` or `=`), the name
//! `global` is reserved for the top-level policy, and reasons
//! ([`Reason`]), events ([`SessionEvent`]) and causes ([`Rejection`]) are
//! fixed words.
//!
//! Every counter is defined once at configure time; a [`Counter`] is an
//! index into [`crate::Plugin::counter_names`], which the adapter maps to
//! the host's metric ids.

use crate::decide::Reason;
use crate::session::Rejection;

/// An index into the plugin's counter names (made only while a plugin is
/// compiled, so it always names one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter(u32);

impl Counter {
    /// The index into [`crate::Plugin::counter_names`].
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// What a `Set-Cookie` did to the session (`event` label of
/// `sticky_canary_sessions_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEvent {
    /// A new session (no valid session came in).
    Issued,
    /// The same version and pod, a later expiry or a fresh seal.
    Renewed,
    /// Another version.
    Switched,
    /// The same version, another pod (persistent mode).
    Repinned,
}

impl SessionEvent {
    /// Every event, in label order.
    pub const ALL: [SessionEvent; 4] = [
        SessionEvent::Issued,
        SessionEvent::Renewed,
        SessionEvent::Switched,
        SessionEvent::Repinned,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            SessionEvent::Issued => "issued",
            SessionEvent::Renewed => "renewed",
            SessionEvent::Switched => "switched",
            SessionEvent::Repinned => "repinned",
        }
    }
}

/// The counters one policy moves.
#[derive(Debug, Clone, Default)]
pub struct PolicyCounters {
    /// `[version][reason]`.
    pub decisions: Vec<[Counter; 6]>,
    /// `[version][event]`.
    pub sessions: Vec<[Counter; 4]>,
    /// `[cause]`.
    pub rejected: Vec<Counter>,
    /// The configured key source was missing.
    pub key_fallback: Option<Counter>,
}

impl PolicyCounters {
    /// The decision counter for a version and reason.
    pub fn decision(&self, version: usize, reason: Reason) -> Option<Counter> {
        let i = Reason::ALL.iter().position(|r| *r == reason)?;
        self.decisions
            .get(version)
            .and_then(|row| row.get(i))
            .copied()
    }

    /// The session counter for a version and event.
    pub fn session(&self, version: usize, event: SessionEvent) -> Option<Counter> {
        let i = SessionEvent::ALL.iter().position(|e| *e == event)?;
        self.sessions
            .get(version)
            .and_then(|row| row.get(i))
            .copied()
    }

    /// The rejection counter for a cause.
    pub fn rejection(&self, cause: Rejection) -> Option<Counter> {
        let i = Rejection::ALL.iter().position(|c| *c == cause)?;
        self.rejected.get(i).copied()
    }
}

/// The counter name for a metric and its labels.
pub fn name(metric: &str, labels: &[(&str, &str)]) -> String {
    let mut out = String::from(metric);
    for (i, (k, v)) in labels.iter().enumerate() {
        out.push(if i == 0 { '.' } else { ';' });
        if i > 0 {
            out.push_str(".;");
        }
        out.push_str(k);
        out.push_str("=.=");
        out.push_str(v);
    }
    if !labels.is_empty() {
        out.push_str(";.;");
    }
    out
}

/// Counters of config loads: `sticky_canary_config_total{result}` with
/// `accepted` or `refused`.
pub fn config_total(accepted: bool) -> String {
    name(
        "sticky_canary_config_total",
        &[("result", if accepted { "accepted" } else { "refused" })],
    )
}

/// The gauge that is 1 while the delivered config is not the one serving.
pub const CONFIG_INVALID: &str = "sticky_canary_config_invalid";

/// The counter of failed route-cache clears: the host has no
/// `clear_route_cache` foreign function (Envoy before 1.33) or refused the
/// call. It exists (at 0) from the first config; anything above 0 means
/// routing relies on Envoy's automatic clear after header changes, which
/// Envoy makes only for modules of proxy-wasm ABI 0.2.1 or older.
pub const ROUTE_CACHE_CLEAR_FAILED: &str = "sticky_canary_route_cache_clear_failed_total";

/// Collects counter names while a plugin is compiled.
#[derive(Debug, Default)]
pub struct Names(Vec<String>);

impl Names {
    fn add(&mut self, name: String) -> Counter {
        let id = Counter(u32::try_from(self.0.len()).unwrap_or(u32::MAX));
        self.0.push(name);
        id
    }

    /// `sticky_canary_passthrough_total`: requests no policy covered.
    pub fn passthrough(&mut self) -> Counter {
        self.add(name("sticky_canary_passthrough_total", &[]))
    }

    /// Every counter of one policy (`route` is `global` or the entry name).
    pub fn policy(&mut self, route: &str, versions: &[&str], keyed: bool) -> PolicyCounters {
        let decisions = versions
            .iter()
            .map(|v| {
                Reason::ALL.map(|r| {
                    self.add(name(
                        "sticky_canary_decisions_total",
                        &[("route", route), ("version", v), ("reason", r.label())],
                    ))
                })
            })
            .collect();
        let sessions = versions
            .iter()
            .map(|v| {
                SessionEvent::ALL.map(|e| {
                    self.add(name(
                        "sticky_canary_sessions_total",
                        &[("route", route), ("version", v), ("event", e.label())],
                    ))
                })
            })
            .collect();
        let rejected = Rejection::ALL
            .iter()
            .map(|c| {
                self.add(name(
                    "sticky_canary_cookie_rejected_total",
                    &[("route", route), ("cause", c.label())],
                ))
            })
            .collect();
        let key_fallback = keyed.then(|| {
            self.add(name(
                "sticky_canary_key_fallback_total",
                &[("route", route)],
            ))
        });
        PolicyCounters {
            decisions,
            sessions,
            rejected,
            key_fallback,
        }
    }

    /// The names, in [`Counter`] order.
    pub fn into_vec(self) -> Vec<String> {
        self.0
    }
}

/// The `stats_tags` an Envoy bootstrap needs to turn the labels into
/// Prometheus labels, as `(tag_name, regex)`.
pub const STATS_TAGS: [(&str, &str); 6] = [
    ("route", r"(route=\.=(.*?);\.;)"),
    ("version", r"(version=\.=(.*?);\.;)"),
    ("reason", r"(reason=\.=(.*?);\.;)"),
    ("event", r"(event=\.=(.*?);\.;)"),
    ("cause", r"(cause=\.=(.*?);\.;)"),
    ("result", r"(result=\.=(.*?);\.;)"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_labels_in_istio_tag_format() {
        assert_eq!(
            name(
                "sticky_canary_decisions_total",
                &[("route", "shop"), ("version", "v1.2"), ("reason", "new")]
            ),
            "sticky_canary_decisions_total.route=.=shop;.;version=.=v1.2;.;reason=.=new;.;"
        );
        assert_eq!(
            name("sticky_canary_passthrough_total", &[]),
            "sticky_canary_passthrough_total"
        );
        assert_eq!(
            config_total(false),
            "sticky_canary_config_total.result=.=refused;.;"
        );
    }

    #[test]
    fn every_counter_has_a_distinct_name() {
        let mut n = Names::default();
        n.passthrough();
        let c = n.policy("global", &["a", "b"], true);
        assert_eq!(c.decisions.len(), 2);
        assert_eq!(c.decision(1, Reason::Drain), Some(Counter(1 + 6 + 4)));
        let names = n.into_vec();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        assert_eq!(names.len(), 1 + 2 * 6 + 2 * 4 + 5 + 1);
    }
}
