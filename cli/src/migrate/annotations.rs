//! The ingress-nginx canary and affinity annotations, parsed the way
//! ingress-nginx's annotation parsers do (`internal/ingress/annotations/
//! canary`, `sessionaffinity`, `upstreamhashby`): the same defaults, the same
//! leniency (an invalid value counts as absent), the same quirks.

use std::collections::BTreeSet;

use super::ingress::Ingress;
use super::report::Report;

/// The annotation prefix ingress-nginx reads by default.
pub const DEFAULT_PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// Every annotation ingress-nginx v1.15.1 reads (its parsers under
/// `internal/ingress/annotations/` and its annotation documentation), plus
/// `session-cookie-hash`, removed in 0.24. Anything else under the prefix is
/// unknown to it.
pub const KNOWN: &[&str] = &[
    "affinity",
    "affinity-canary-behavior",
    "affinity-mode",
    "allowlist-source-range",
    "app-root",
    "auth-always-set-cookie",
    "auth-cache-duration",
    "auth-cache-key",
    "auth-keepalive",
    "auth-keepalive-requests",
    "auth-keepalive-share-vars",
    "auth-keepalive-timeout",
    "auth-method",
    "auth-proxy-set-headers",
    "auth-realm",
    "auth-request-redirect",
    "auth-response-headers",
    "auth-secret",
    "auth-secret-type",
    "auth-signin",
    "auth-signin-redirect-param",
    "auth-snippet",
    "auth-tls-error-page",
    "auth-tls-match-cn",
    "auth-tls-pass-certificate-to-upstream",
    "auth-tls-secret",
    "auth-tls-verify-client",
    "auth-tls-verify-depth",
    "auth-type",
    "auth-url",
    "backend-protocol",
    "canary",
    "canary-by-cookie",
    "canary-by-header",
    "canary-by-header-pattern",
    "canary-by-header-value",
    "canary-weight",
    "canary-weight-total",
    "client-body-buffer-size",
    "configuration-snippet",
    "connection-proxy-header",
    "cors-allow-credentials",
    "cors-allow-headers",
    "cors-allow-methods",
    "cors-allow-origin",
    "cors-expose-headers",
    "cors-max-age",
    "custom-headers",
    "custom-http-errors",
    "default-backend",
    "denylist-source-range",
    "disable-proxy-intercept-errors",
    "enable-access-log",
    "enable-cors",
    "enable-global-auth",
    "enable-modsecurity",
    "enable-opentelemetry",
    "enable-owasp-core-rules",
    "enable-rewrite-log",
    "fastcgi-index",
    "fastcgi-params-configmap",
    "force-ssl-redirect",
    "from-to-www-redirect",
    "http2-push-preload",
    "limit-allowlist",
    "limit-burst-multiplier",
    "limit-connections",
    "limit-rate",
    "limit-rate-after",
    "limit-rpm",
    "limit-rps",
    "limit-whitelist",
    "load-balance",
    "mirror-host",
    "mirror-request-body",
    "mirror-target",
    "modsecurity-snippet",
    "modsecurity-transaction-id",
    "opentelemetry-operation-name",
    "opentelemetry-trust-incoming-span",
    "permanent-redirect",
    "permanent-redirect-code",
    "preserve-trailing-slash",
    "proxy-body-size",
    "proxy-buffer-size",
    "proxy-buffering",
    "proxy-buffers-number",
    "proxy-busy-buffers-size",
    "proxy-connect-timeout",
    "proxy-cookie-domain",
    "proxy-cookie-path",
    "proxy-http-version",
    "proxy-max-temp-file-size",
    "proxy-next-upstream",
    "proxy-next-upstream-timeout",
    "proxy-next-upstream-tries",
    "proxy-read-timeout",
    "proxy-redirect-from",
    "proxy-redirect-to",
    "proxy-request-buffering",
    "proxy-send-timeout",
    "proxy-ssl-ciphers",
    "proxy-ssl-name",
    "proxy-ssl-protocols",
    "proxy-ssl-secret",
    "proxy-ssl-server-name",
    "proxy-ssl-verify",
    "proxy-ssl-verify-depth",
    "relative-redirects",
    "rewrite-target",
    "satisfy",
    "server-alias",
    "server-snippet",
    "service-upstream",
    "session-cookie-change-on-failure",
    "session-cookie-conditional-samesite-none",
    "session-cookie-domain",
    "session-cookie-expires",
    "session-cookie-max-age",
    "session-cookie-name",
    "session-cookie-path",
    "session-cookie-samesite",
    "session-cookie-secure",
    "ssl-ciphers",
    "ssl-passthrough",
    "ssl-prefer-server-ciphers",
    "ssl-redirect",
    "stream-snippet",
    "temporal-redirect",
    "temporal-redirect-code",
    "upstream-hash-by",
    "upstream-hash-by-subset",
    "upstream-hash-by-subset-size",
    "upstream-vhost",
    "use-port-in-redirects",
    "use-regex",
    "whitelist-source-range",
    "x-forwarded-prefix",
    "session-cookie-hash",
];

/// Annotations ingress-nginx applies to a canary Ingress's own upstream
/// (`createUpstreams`): the rest of a canary Ingress's annotations are ignored.
const CANARY_UPSTREAM: &[&str] = &["load-balance", "service-upstream"];

const CANARY: &[&str] = &[
    "canary",
    "canary-weight",
    "canary-weight-total",
    "canary-by-header",
    "canary-by-header-value",
    "canary-by-header-pattern",
    "canary-by-cookie",
];

const AFFINITY: &[&str] = &[
    "affinity",
    "affinity-mode",
    "affinity-canary-behavior",
    "session-cookie-name",
    "session-cookie-secure",
    "session-cookie-path",
    "session-cookie-domain",
    "session-cookie-samesite",
    "session-cookie-conditional-samesite-none",
    "session-cookie-max-age",
    "session-cookie-expires",
    "session-cookie-change-on-failure",
];

/// How a header canary matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderMatch {
    /// `always` / `never` (no value, no pattern).
    Sentinel,
    /// `canary-by-header-value`: exact.
    Value(String),
    /// `canary-by-header-pattern`: a regex the filter compiles.
    Regex(String),
    /// A pattern that does not compile: ingress-nginx then keeps every
    /// request that carries the header on the main backend.
    Broken(String),
}

/// The canary annotations of a canary Ingress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Canary {
    /// `canary-weight`, clamped to `0..=weight_total`.
    pub weight: u32,
    /// The effective total (ingress-nginx uses 100 unless the annotation is
    /// over 100).
    pub weight_total: u32,
    /// `canary-by-header` and how it matches.
    pub header: Option<(String, HeaderMatch)>,
    /// `canary-by-cookie`.
    pub cookie: Option<String>,
    /// `affinity-canary-behavior: legacy` (read from the canary Ingress, as
    /// ingress-nginx does).
    pub legacy: bool,
}

/// `session-cookie-secure`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Secure {
    /// `"true"`: always `Secure`.
    Always,
    /// Absent or `"false"`: `Secure` when the request came over HTTPS.
    Auto,
}

/// Cookie affinity (`affinity: cookie`) and its cookie.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Affinity {
    /// `session-cookie-name` (default `INGRESSCOOKIE`).
    pub cookie_name: String,
    /// `session-cookie-path`; `None`: the location path.
    pub path: Option<String>,
    /// `session-cookie-domain`.
    pub domain: Option<String>,
    /// `session-cookie-samesite`: `None`, `Lax` or `Strict`.
    pub same_site: Option<&'static str>,
    /// `session-cookie-conditional-samesite-none`.
    pub same_site_none_compat: bool,
    /// `session-cookie-max-age`.
    pub max_age: Option<u64>,
    /// `session-cookie-expires`.
    pub expires: Option<u64>,
    /// `session-cookie-secure`.
    pub secure: Secure,
    /// `affinity-mode: persistent`.
    pub persistent: bool,
    /// `session-cookie-change-on-failure` (ingress-nginx default false).
    pub change_on_failure: bool,
}

/// Where the session key comes from (`upstream-hash-by`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    /// `$http_x_user` -> header `x-user`.
    Header(String),
    /// `$arg_user` -> query parameter `user`.
    Query(String),
    /// `$remote_addr`, `$binary_remote_addr`.
    ClientIp,
}

/// Everything the migration reads from one Ingress's annotations.
#[derive(Clone, Debug)]
pub struct Parsed {
    /// `canary: "true"` with valid canary settings.
    pub canary: Option<Canary>,
    /// Cookie affinity.
    pub affinity: Option<Affinity>,
    /// `upstream-hash-by`, when it maps to a key source.
    pub key: Option<Key>,
    /// The canary/affinity annotations present (short names), for notes
    /// about ones that have no effect where they are.
    pub affinity_present: Vec<String>,
}

/// Go's `strconv.ParseBool`.
fn go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.Atoi` (an optional sign and decimal digits).
fn go_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// ingress-nginx's `BasicCharsRegex` for header and cookie names: letters,
/// digits, `-`, `_`, `.` and a few more; we accept RFC 7230 tokens.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Does the filter compile this header pattern?
fn filter_compiles_regex(pattern: &str) -> bool {
    let probe = serde_json::json!({
        "versions": [{"name": "a"}, {"name": "b", "weight": 0}],
        "rules": [{"header": "x", "regex": pattern, "version": "b"}],
    });
    sticky_canary::compile_json(&probe.to_string()).is_ok()
}

/// `use-regex: "true"` on `ing` (ingress-nginx then matches every path of
/// the Ingress's hosts as a case-insensitive regex).
pub fn use_regex(ing: &Ingress, prefix: &str) -> bool {
    ing.annotations
        .get(&format!("{prefix}use-regex"))
        .and_then(|v| go_bool(v))
        .unwrap_or(false)
}

/// `rewrite-target` set and different from `path` (ingress-nginx's
/// `needsRewrite`, which also makes every path of the host a regex).
pub fn needs_rewrite(ing: &Ingress, prefix: &str, path: &str) -> bool {
    ing.annotations
        .get(&format!("{prefix}rewrite-target"))
        .is_some_and(|t| !t.is_empty() && t != path)
}

/// Levenshtein distance, for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Parse the annotations of `ing`. Every annotation under `prefix` is either
/// used, or reported.
pub fn parse(ing: &Ingress, prefix: &str, report: &mut Report) -> Result<Parsed, String> {
    let obj = ing.object();
    let get = |n: &str| {
        ing.annotations
            .get(&format!("{prefix}{n}"))
            .map(String::as_str)
    };
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for (k, v) in &ing.annotations {
        if k.starts_with(prefix) && super::ingress::placeholder(v) {
            return Err(format!("{obj}: annotation {k}: {v:?} looks like an unrendered template placeholder; render the manifests first (helm template, envsubst, kustomize build) or read them from the cluster (kubectl get ingress -A -o yaml)"));
        }
    }

    // ---- canary ---------------------------------------------------------
    let enabled = match get("canary") {
        None => false,
        Some(v) => match go_bool(v) {
            Some(b) => b,
            None => {
                report.note(&obj, "canary", format!("{v:?} is not a boolean: ingress-nginx treats it as false, so this is a main Ingress, here too"));
                false
            }
        },
    };
    seen.insert("canary");
    let canary_given: Vec<&str> = CANARY[1..]
        .iter()
        .copied()
        .filter(|n| get(n).is_some())
        .collect();
    let mut canary = None;
    if enabled {
        for n in CANARY {
            seen.insert(n);
        }
        let total_raw = get("canary-weight-total");
        let mut total: u32 = 100;
        if let Some(v) = total_raw {
            match go_int(v) {
                Some(t) if t > 100 && t <= 1_000_000 => total = t as u32,
                Some(t) if t > 1_000_000 => {
                    report.lossy(&obj, "canary-weight-total", format!("{t}: over the filter's limit of 1000000; used 1000000 (the weight is scaled)"));
                    total = 1_000_000;
                }
                Some(100) => {}
                Some(t) => report.note(&obj, "canary-weight-total", format!("{t}: ingress-nginx uses 100 for totals not over 100, and so does the migration")),
                None => report.note(&obj, "canary-weight-total", format!("{v:?} is not an integer: ingress-nginx uses 100, and so does the migration")),
            }
        }
        let mut weight: u32 = 0;
        if let Some(v) = get("canary-weight") {
            match go_int(v) {
                Some(w) if w < 0 => report.note(
                    &obj,
                    "canary-weight",
                    format!(
                        "{w}: ingress-nginx never picks the canary by weight then; migrated as 0"
                    ),
                ),
                Some(w) => {
                    let raw_total = total_raw.and_then(go_int).unwrap_or(100);
                    let w = if raw_total > 1_000_000 {
                        // scaled with the total
                        (w as f64 * 1_000_000.0 / raw_total as f64).round() as i64
                    } else {
                        w
                    };
                    if w > i64::from(total) {
                        report.note(&obj, "canary-weight", format!("{w} is over the total {total}: ingress-nginx then sends every request to the canary; migrated as {total}"));
                        weight = total;
                    } else {
                        weight = w as u32;
                    }
                }
                None => report.note(
                    &obj,
                    "canary-weight",
                    format!(
                        "{v:?} is not an integer: ingress-nginx uses 0, and so does the migration"
                    ),
                ),
            }
        }
        let header_name = get("canary-by-header").filter(|h| !h.is_empty());
        let value = get("canary-by-header-value").filter(|h| !h.is_empty());
        let pattern = get("canary-by-header-pattern").filter(|h| !h.is_empty());
        let header = match header_name {
            None => {
                if value.is_some() || pattern.is_some() {
                    let which = if value.is_some() {
                        "canary-by-header-value"
                    } else {
                        "canary-by-header-pattern"
                    };
                    report.note(&obj, which, "has no effect without canary-by-header (as in ingress-nginx): not migrated");
                }
                None
            }
            Some(h) if !is_token(h) => {
                report.note(
                    &obj,
                    "canary-by-header",
                    format!(
                        "{h:?} is not a header name a request can carry: ingress-nginx never finds it, and the migration writes no header rule"
                    ),
                );
                None
            }
            Some(h) => {
                let m = match (value, pattern) {
                    (Some(v), Some(_)) => {
                        report.note(&obj, "canary-by-header-pattern", "ignored because canary-by-header-value is set, as ingress-nginx does: the value is migrated");
                        HeaderMatch::Value(v.to_owned())
                    }
                    (Some(v), None) => HeaderMatch::Value(v.to_owned()),
                    (None, Some(p)) => {
                        if filter_compiles_regex(p) {
                            HeaderMatch::Regex(p.to_owned())
                        } else {
                            report.lossy(&obj, "canary-by-header-pattern", format!("{p:?} does not compile as a regex here (invalid, or PCRE-only syntax): migrated as ingress-nginx treats an invalid pattern, requests with the header stay on the main backend"));
                            HeaderMatch::Broken(p.to_owned())
                        }
                    }
                    (None, None) => HeaderMatch::Sentinel,
                };
                Some((h.to_ascii_lowercase(), m))
            }
        };
        let cookie = match get("canary-by-cookie").filter(|c| !c.is_empty()) {
            Some(c) if !is_token(c) => {
                report.note(
                    &obj,
                    "canary-by-cookie",
                    format!("{c:?} is not a cookie name a request can carry: ingress-nginx never finds it, and the migration writes no cookie rule"),
                );
                None
            }
            c => c.map(str::to_owned),
        };
        let legacy = match get("affinity-canary-behavior") {
            Some("legacy") => true,
            Some("sticky") | None => false,
            Some(v) => {
                report.note(&obj, "affinity-canary-behavior", format!("{v:?} is not sticky or legacy: ingress-nginx uses sticky, and so does the migration"));
                false
            }
        };
        seen.insert("affinity-canary-behavior");
        canary = Some(Canary {
            weight,
            weight_total: total,
            header,
            cookie,
            legacy,
        });
    } else if !canary_given.is_empty() {
        for n in &canary_given {
            seen.insert(n);
            report.note(&obj, n, "set without canary: \"true\": ingress-nginx ignores the canary annotations of this Ingress (\"configured but not enabled\") and serves it as a main Ingress, and so does the migration");
        }
    }

    // ---- affinity ---------------------------------------------------------
    let affinity_present: Vec<String> = AFFINITY
        .iter()
        .filter(|n| get(n).is_some())
        .map(|n| (*n).to_owned())
        .collect();
    if !enabled {
        if let Some(v) = get("affinity-canary-behavior") {
            seen.insert("affinity-canary-behavior");
            report.note(&obj, "affinity-canary-behavior", format!("{v:?} on a main Ingress: ingress-nginx reads it only from the canary Ingress; no effect here either"));
        }
    }
    let mut affinity = None;
    match get("affinity") {
        Some("cookie") => {
            for n in AFFINITY {
                if *n != "affinity-canary-behavior" {
                    seen.insert(n);
                }
            }
            let cookie_name = match get("session-cookie-name") {
                Some(n) if is_token(n) => n.to_owned(),
                Some(n) => {
                    report.note(&obj, "session-cookie-name", format!("{n:?} is not a valid cookie name: ingress-nginx uses INGRESSCOOKIE, and so does the migration"));
                    "INGRESSCOOKIE".to_owned()
                }
                None => "INGRESSCOOKIE".to_owned(),
            };
            let seconds = |n: &str, report: &mut Report| -> Option<u64> {
                let v = get(n)?;
                match go_int(v) {
                    Some(s) if s > 0 => Some(s as u64),
                    _ => {
                        report.note(&obj, n, format!("{v:?} is not a positive number of seconds: ingress-nginx leaves the attribute out, and so does the migration"));
                        None
                    }
                }
            };
            let max_age = seconds("session-cookie-max-age", report);
            let expires = seconds("session-cookie-expires", report);
            let path = get("session-cookie-path")
                .filter(|p| !p.is_empty())
                .map(str::to_owned);
            if let Some(p) = &path {
                if !p.starts_with('/') {
                    report.lossy(
                        &obj,
                        "session-cookie-path",
                        format!(
                            "{p:?} does not start with /: left out (the location path is used)"
                        ),
                    );
                }
            }
            let path = path.filter(|p| p.starts_with('/'));
            let domain = get("session-cookie-domain")
                .filter(|d| !d.is_empty())
                .map(str::to_owned);
            let same_site = match get("session-cookie-samesite")
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                None | Some("") => None,
                Some("none") => Some("None"),
                Some("lax") => Some("Lax"),
                Some("strict") => Some("Strict"),
                Some(other) => {
                    report.note(
                        &obj,
                        "session-cookie-samesite",
                        format!("{other:?} is not None, Lax or Strict: ingress-nginx leaves SameSite out, and so does the migration"),
                    );
                    None
                }
            };
            let flag = |n: &str, report: &mut Report| -> Option<bool> {
                let v = get(n)?;
                let b = go_bool(v);
                if b.is_none() {
                    report.note(&obj, n, format!("{v:?} is not a boolean: ingress-nginx treats it as false, and so does the migration"));
                }
                b
            };
            let compat = flag("session-cookie-conditional-samesite-none", report).unwrap_or(false);
            let secure = match get("session-cookie-secure") {
                None => Secure::Auto,
                Some(v) => match go_bool(v) {
                    Some(true) => Secure::Always,
                    Some(false) => {
                        report.note(&obj, "session-cookie-secure", "\"false\": ingress-nginx still adds Secure over HTTPS (false means unset); migrated as \"auto\", which does the same");
                        Secure::Auto
                    }
                    None => {
                        report.note(&obj, "session-cookie-secure", format!("{v:?} is not a boolean: ingress-nginx adds Secure over HTTPS only; migrated as \"auto\""));
                        Secure::Auto
                    }
                },
            };
            let persistent = match get("affinity-mode") {
                Some("persistent") => true,
                Some("balanced") | None => false,
                Some(v) => {
                    report.note(&obj, "affinity-mode", format!("{v:?} is not balanced or persistent: ingress-nginx uses balanced, and so does the migration"));
                    false
                }
            };
            let change_on_failure =
                flag("session-cookie-change-on-failure", report).unwrap_or(false);
            affinity = Some(Affinity {
                cookie_name,
                path,
                domain,
                same_site,
                same_site_none_compat: compat,
                max_age,
                expires,
                secure,
                persistent,
                change_on_failure,
            });
        }
        Some(other) => {
            seen.insert("affinity");
            report.note(
                &obj,
                "affinity",
                format!(
                    "{other:?}: ingress-nginx only knows cookie affinity, so it has none here, and neither has the migration"
                ),
            );
        }
        None => {}
    }
    if affinity.is_none() {
        for n in AFFINITY {
            if *n != "affinity" && *n != "affinity-canary-behavior" && get(n).is_some() {
                seen.insert(n);
                report.note(
                    &obj,
                    n,
                    "has no effect without affinity: cookie (as in ingress-nginx): not migrated",
                );
            }
        }
    }

    // ---- upstream-hash-by -------------------------------------------------
    let mut key = None;
    if let Some(v) = get("upstream-hash-by") {
        seen.insert("upstream-hash-by");
        let v = v.trim();
        key = if v == "$remote_addr" || v == "$binary_remote_addr" {
            Some(Key::ClientIp)
        } else if let Some(h) = v
            .strip_prefix("$http_")
            .filter(|h| is_token(h) && !h.contains('$'))
        {
            Some(Key::Header(h.replace('_', "-").to_ascii_lowercase()))
        } else if let Some(q) = v
            .strip_prefix("$arg_")
            .filter(|q| is_token(q) && !q.contains('$'))
        {
            Some(Key::Query(q.to_owned()))
        } else {
            report.lossy(&obj, "upstream-hash-by", format!("{v:?}: only $http_<name>, $arg_<name>, $remote_addr and $binary_remote_addr map to a key source; the default cookie key is used"));
            None
        };
        if key.is_some() && affinity.is_some() {
            report.note(&obj, "upstream-hash-by", "with affinity: cookie, ingress-nginx uses the cookie; here the key comes from this source and the cookie keeps it");
        }
    }
    for n in ["upstream-hash-by-subset", "upstream-hash-by-subset-size"] {
        if get(n).is_some() {
            seen.insert(n);
            report.lossy(
                &obj,
                n,
                "hashing onto a subset of pods has no equivalent: each user gets one pod",
            );
        }
    }
    if get("session-cookie-hash").is_some() {
        seen.insert("session-cookie-hash");
        report.note(
            &obj,
            "session-cookie-hash",
            "removed from ingress-nginx in 0.24 (no effect there): not migrated",
        );
    }

    // use-regex and rewrite-target change how ingress-nginx matches every
    // path of the host (plan.rs reads them); the rewrite itself is not
    // carried over (below).
    if get("use-regex").is_some() {
        seen.insert("use-regex");
    }

    // ---- everything else under the prefix ---------------------------------
    for k in ing.annotations.keys() {
        let Some(short) = k.strip_prefix(prefix) else {
            continue;
        };
        if seen.contains(short) {
            continue;
        }
        if !KNOWN.contains(&short) {
            let hint = KNOWN
                .iter()
                .filter(|n| edit_distance(n, short) <= 2)
                .min_by_key(|n| edit_distance(n, short))
                .map(|n| format!(" (did you mean {n}?)"))
                .unwrap_or_default();
            report.lossy(&obj, short, format!("not an ingress-nginx annotation{hint}: ingress-nginx ignores it, so whatever it was meant to do is not done there either; check it"));
        } else if enabled && !CANARY_UPSTREAM.contains(&short) {
            report.note(&obj, short, "ingress-nginx ignores it on a canary Ingress (the main Ingress's location serves the canary): nothing to carry over");
        } else if enabled {
            report.lossy(&obj, short, "ingress-nginx applies it to the canary's pods: not carried over (the filter picks the pod)");
        } else {
            report.lossy(
                &obj,
                short,
                "not a canary or affinity annotation: not carried over",
            );
        }
    }

    Ok(Parsed {
        canary,
        affinity,
        key,
        affinity_present,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::ingress;

    fn parsed(annotations: &[(&str, &str)]) -> (Parsed, Report) {
        let mut text = String::from(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: x\n  annotations:\n",
        );
        for (k, v) in annotations {
            text.push_str(&format!("    nginx.ingress.kubernetes.io/{k}: {v:?}\n"));
        }
        let mut report = Report::default();
        let ings = ingress::parse(&text, "test", &mut report).unwrap();
        let p = parse(&ings[0], DEFAULT_PREFIX, &mut report).unwrap();
        (p, report)
    }

    #[test]
    fn go_parsers_accept_what_go_accepts() {
        for (s, b) in [
            ("1", true),
            ("t", true),
            ("True", true),
            ("0", false),
            ("F", false),
            ("false", false),
        ] {
            assert_eq!(go_bool(s), Some(b), "{s}");
        }
        for s in ["yes", "on", "", "tRUE"] {
            assert_eq!(go_bool(s), None, "{s}");
        }
        assert_eq!(go_int("+5"), Some(5));
        assert_eq!(go_int("-5"), Some(-5));
        assert_eq!(go_int("5s"), None);
        assert_eq!(go_int(""), None);
    }

    #[test]
    fn weight_totals_under_100_count_as_100_and_weights_over_the_total_as_the_total() {
        let (p, r) = parsed(&[
            ("canary", "true"),
            ("canary-weight", "150"),
            ("canary-weight-total", "50"),
        ]);
        let c = p.canary.unwrap();
        assert_eq!((c.weight, c.weight_total), (100, 100));
        assert!(!r.is_lossy());
        let (p, _) = parsed(&[
            ("canary", "true"),
            ("canary-weight", "100"),
            ("canary-weight-total", "200"),
        ]);
        let c = p.canary.unwrap();
        assert_eq!((c.weight, c.weight_total), (100, 200));
    }

    #[test]
    fn header_value_wins_over_pattern_with_a_note() {
        let (p, r) = parsed(&[
            ("canary", "true"),
            ("canary-by-header", "X-Beta"),
            ("canary-by-header-value", "yes"),
            ("canary-by-header-pattern", "^y"),
        ]);
        assert_eq!(
            p.canary.unwrap().header,
            Some(("x-beta".into(), HeaderMatch::Value("yes".into())))
        );
        assert!(!r.is_lossy());
        assert!(r
            .findings
            .iter()
            .any(|f| f.annotation == "canary-by-header-pattern"));
    }

    #[test]
    fn a_pattern_the_filter_cannot_compile_is_lossy() {
        let (p, r) = parsed(&[
            ("canary", "true"),
            ("canary-by-header", "h"),
            ("canary-by-header-pattern", "^(?!x)"),
        ]);
        assert!(matches!(
            p.canary.unwrap().header,
            Some((_, HeaderMatch::Broken(_)))
        ));
        assert!(r.is_lossy());
    }

    #[test]
    fn upstream_hash_by_maps_to_key_sources() {
        for (v, want) in [
            ("$http_x_user_id", Some(Key::Header("x-user-id".into()))),
            ("$arg_uid", Some(Key::Query("uid".into()))),
            ("$remote_addr", Some(Key::ClientIp)),
            ("$binary_remote_addr", Some(Key::ClientIp)),
            ("$request_uri", None),
            ("$http_a$http_b", None),
        ] {
            let (p, r) = parsed(&[("upstream-hash-by", v)]);
            assert_eq!(p.key, want, "{v}");
            assert_eq!(r.is_lossy(), want.is_none(), "{v}");
        }
    }

    #[test]
    fn cookie_defaults_are_ingress_nginx_s() {
        let (p, _) = parsed(&[("affinity", "cookie")]);
        let a = p.affinity.unwrap();
        assert_eq!(a.cookie_name, "INGRESSCOOKIE");
        assert_eq!(a.secure, Secure::Auto);
        assert!(!a.persistent && !a.change_on_failure);
        let (p, _) = parsed(&[("affinity", "cookie"), ("session-cookie-secure", "false")]);
        assert_eq!(p.affinity.unwrap().secure, Secure::Auto);
        let (p, _) = parsed(&[
            ("affinity", "cookie"),
            ("session-cookie-secure", "true"),
            ("session-cookie-samesite", "none"),
        ]);
        let a = p.affinity.unwrap();
        assert_eq!((a.secure, a.same_site), (Secure::Always, Some("None")));
    }

    #[test]
    fn what_ingress_nginx_ignores_is_a_note_and_unknown_annotations_are_lossy() {
        let lossy_and_notes = |r: &Report| {
            let pick = |sev| {
                r.findings
                    .iter()
                    .filter(|f| f.severity == sev)
                    .map(|f| f.annotation.clone())
                    .collect::<Vec<String>>()
            };
            (
                pick(crate::migrate::report::Severity::Lossy),
                pick(crate::migrate::report::Severity::Note),
            )
        };
        // A main Ingress: canary annotations without canary: "true" are
        // ignored by ingress-nginx (a note); rewrite-target is not carried
        // over (lossy); a typo is unknown to ingress-nginx (lossy, with a
        // hint).
        let (p, r) = parsed(&[
            ("canary-weight", "20"),
            ("rewrite-target", "/"),
            ("canary-wieght", "20"),
        ]);
        assert!(p.canary.is_none());
        let (lossy, notes) = lossy_and_notes(&r);
        assert_eq!(lossy, ["canary-wieght", "rewrite-target"]);
        assert!(notes.contains(&"canary-weight".to_owned()), "{notes:?}");
        assert!(
            r.render().contains("did you mean canary-weight?"),
            "{}",
            r.render()
        );
        // A canary Ingress: ingress-nginx ignores its other annotations.
        let (p, r) = parsed(&[
            ("canary", "true"),
            ("canary-weight", "20"),
            ("rewrite-target", "/"),
            ("ssl-redirect", "false"),
            ("load-balance", "ewma"),
        ]);
        assert!(p.canary.is_some());
        let (lossy, notes) = lossy_and_notes(&r);
        assert_eq!(lossy, ["load-balance"]);
        assert_eq!(notes, ["rewrite-target", "ssl-redirect"]);
    }

    #[test]
    fn placeholders_are_errors() {
        let text = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: x\n  annotations:\n    nginx.ingress.kubernetes.io/canary: \"true\"\n    nginx.ingress.kubernetes.io/canary-weight: \"${WEIGHT}\"\n";
        let mut report = Report::default();
        let ings = ingress::parse(text, "test", &mut report).unwrap();
        let e = parse(&ings[0], DEFAULT_PREFIX, &mut report).unwrap_err();
        assert!(e.contains("unrendered template placeholder"), "{e}");
    }
}
