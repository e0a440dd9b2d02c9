//! Reading Ingress manifests as users have them: one or many YAML (or JSON)
//! documents, `List`s of them (`kubectl get ingress -A -o yaml`), with only
//! `networking.k8s.io/v1` Ingresses migrated.
//!
//! Input that cannot be migrated faithfully at all is an error (the caller
//! exits 2 with the message): YAML that does not parse, an Ingress without a
//! name, a path type Kubernetes does not know, and unrendered template
//! placeholders (`${WEIGHT}`, `{{ .Values.x }}`) in the fields the migration
//! reads.

use std::collections::BTreeMap;

use serde::Deserialize as _;
use serde_json::Value;

use super::report::Report;

/// A Service port, by number or by name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Port {
    /// `port.number`.
    Number(u32),
    /// `port.name` (a named port of the Service).
    Name(String),
}

/// A Service backend of a path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Backend {
    /// The Ingress's namespace (Services are namespace-local).
    pub namespace: String,
    /// `service.name`.
    pub service: String,
    /// `service.port`.
    pub port: Port,
}

/// The Kubernetes path types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathType {
    /// Exact path.
    Exact,
    /// Path-element prefix.
    Prefix,
    /// `ImplementationSpecific` (or no `pathType`): ingress-nginx reads it as
    /// `Prefix` (`internal/k8s/main.go` `SetDefaultNGINXPathType`).
    ImplementationSpecific,
}

impl PathType {
    /// The type ingress-nginx works with: `ImplementationSpecific` is `Prefix`.
    pub fn nginx(self) -> PathType {
        match self {
            PathType::ImplementationSpecific => PathType::Prefix,
            t => t,
        }
    }
}

/// One `rules[].http.paths[]` entry.
#[derive(Clone, Debug)]
pub struct IngressPath {
    /// `path` (default `/`).
    pub path: String,
    /// `pathType`.
    pub path_type: PathType,
    /// The Service backend; `None` for a `resource` backend.
    pub backend: Option<Backend>,
}

/// One `rules[]` entry.
#[derive(Clone, Debug)]
pub struct IngressRule {
    /// `host`, lowercase; empty for a rule without host.
    pub host: String,
    /// The rule has an `http` block.
    pub has_http: bool,
    /// Its paths.
    pub paths: Vec<IngressPath>,
}

/// An Ingress, reduced to what the migration reads.
#[derive(Clone, Debug)]
pub struct Ingress {
    /// `metadata.namespace` (default `default`).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.creationTimestamp` (`2024-05-01T10:00:00Z`), when the
    /// manifest comes from the API server: ingress-nginx processes Ingresses
    /// in this order.
    pub created: Option<String>,
    /// Every annotation, values as strings.
    pub annotations: BTreeMap<String, String>,
    /// `spec.defaultBackend`, when it is a Service.
    pub default_backend: Option<Backend>,
    /// `spec.rules`.
    pub rules: Vec<IngressRule>,
    /// `spec.tls` is present and not empty.
    pub has_tls: bool,
}

impl Ingress {
    /// `Ingress ns/name`, as the report names it.
    pub fn object(&self) -> String {
        format!("Ingress {}/{}", self.namespace, self.name)
    }
}

/// Parse every document of `text` (from `source`, for messages). Objects
/// that are not v1 Ingresses are reported and skipped.
pub fn parse(text: &str, source: &str, report: &mut Report) -> Result<Vec<Ingress>, String> {
    let mut out = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(doc)
            .map_err(|e| format!("{source}: document {}: not valid YAML: {e}", i + 1))?;
        collect(&value, source, report, &mut out)?;
    }
    Ok(out)
}

/// An unrendered template placeholder: `${VAR}` (envsubst, Kustomize
/// vars), `{{ ... }}` (Helm, Go templates).
pub fn placeholder(s: &str) -> bool {
    s.contains("${") || (s.contains("{{") && s.contains("}}"))
}

fn collect(
    v: &Value,
    source: &str,
    report: &mut Report,
    out: &mut Vec<Ingress>,
) -> Result<(), String> {
    let Value::Object(obj) = v else {
        if !v.is_null() {
            report.note(
                source,
                "-",
                "a document that is not a Kubernetes object: skipped",
            );
        }
        return Ok(());
    };
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let api = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if kind == "List" || kind.ends_with("List") {
        match obj.get("items") {
            Some(Value::Array(items)) => {
                for item in items {
                    collect(item, source, report, out)?;
                }
            }
            None | Some(Value::Null) => {}
            Some(_) => return Err(format!("{source}: a {kind} whose items is not a list")),
        }
        return Ok(());
    }
    let meta = obj.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let namespace = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    if kind != "Ingress" {
        let what = if kind.is_empty() { "(no kind)" } else { kind };
        report.note(
            &format!("{what} {namespace}/{name}"),
            "-",
            "not an Ingress: ignored",
        );
        return Ok(());
    }
    let object = format!("Ingress {namespace}/{name}");
    if api != "networking.k8s.io/v1" {
        report.lossy(
            &object,
            "apiVersion",
            format!("{api}: not read (ingress-nginx 1.x and Kubernetes 1.22+ serve only networking.k8s.io/v1; `kubectl get ingress -o yaml` returns v1, or convert the file with kubectl-convert); this Ingress is not migrated"),
        );
        return Ok(());
    }
    if name.is_empty() {
        return Err(format!("{source}: an Ingress without metadata.name"));
    }
    let created = meta
        .and_then(|m| m.get("creationTimestamp"))
        .and_then(Value::as_str)
        .filter(|t| is_rfc3339_utc(t))
        .map(str::to_owned);
    let mut annotations = BTreeMap::new();
    if let Some(Value::Object(a)) = meta.and_then(|m| m.get("annotations")) {
        for (k, v) in a {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            annotations.insert(k.clone(), s);
        }
    }
    let spec = obj.get("spec");
    let mut placeholder_in: Option<String> = None;
    let mut backend = |b: Option<&Value>, what: &str| -> Option<Backend> {
        let svc = b?.get("service")?;
        let service = svc.get("name")?.as_str()?.to_owned();
        let port = svc.get("port");
        let port = match port.and_then(|p| p.get("number")).and_then(Value::as_u64) {
            Some(n) => Port::Number(u32::try_from(n).unwrap_or(0)),
            None => Port::Name(
                port.and_then(|p| p.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            ),
        };
        let port_text = match &port {
            Port::Number(_) => String::new(),
            Port::Name(n) => n.clone(),
        };
        if placeholder_in.is_none() && (placeholder(&service) || placeholder(&port_text)) {
            placeholder_in = Some(format!("{what}: service {service:?} port {port_text:?}"));
        }
        Some(Backend {
            namespace: namespace.to_owned(),
            service,
            port,
        })
    };
    let default_backend_raw = spec.and_then(|s| s.get("defaultBackend"));
    let default_backend = backend(default_backend_raw, "spec.defaultBackend");
    if default_backend_raw.is_some() && default_backend.is_none() {
        report.note(
            &object,
            "spec.defaultBackend",
            "not a Service backend: ingress-nginx skips it (the default backend answers), and so does the migration",
        );
    }
    let mut rules = Vec::new();
    if let Some(Value::Array(rs)) = spec.and_then(|s| s.get("rules")) {
        for r in rs {
            let host = r
                .get("host")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_ascii_lowercase();
            if placeholder(&host) {
                return Err(format!("{source}: {object}: host {host:?} looks like an unrendered template placeholder; render the manifests first"));
            }
            if !valid_host(&host) {
                return Err(format!("{source}: {object}: host {host:?} is not a host name (Kubernetes accepts lower-case letters, digits, '-' and '.', with an optional leading \"*.\")"));
            }
            let http = r.get("http").filter(|h| !h.is_null());
            let mut paths = Vec::new();
            if let Some(Value::Array(ps)) = http.and_then(|h| h.get("paths")) {
                for p in ps {
                    let path = p.get("path").and_then(Value::as_str).unwrap_or("/");
                    let path = if path.is_empty() { "/" } else { path };
                    if placeholder(path) {
                        return Err(format!("{source}: {object}: path {path:?} looks like an unrendered template placeholder; render the manifests first"));
                    }
                    if !path.starts_with('/') {
                        return Err(format!("{source}: {object}: path {path:?} does not start with '/' (Kubernetes refuses such an Ingress: every path is absolute)"));
                    }
                    let path_type = match p.get("pathType").and_then(Value::as_str) {
                        Some("Exact") => PathType::Exact,
                        Some("Prefix") => PathType::Prefix,
                        Some("ImplementationSpecific") | None => PathType::ImplementationSpecific,
                        Some(other) => {
                            return Err(format!("{source}: {object}: pathType {other:?} of path {path:?}: Kubernetes knows Exact, Prefix and ImplementationSpecific"));
                        }
                    };
                    if path_type == PathType::ImplementationSpecific {
                        report.note(
                            &object,
                            &format!("spec.rules[host={host}].paths[{path}]"),
                            "pathType ImplementationSpecific (or none): ingress-nginx reads it as Prefix, and so does the migration",
                        );
                    }
                    let b = backend(
                        p.get("backend"),
                        &format!("spec.rules[host={host}].paths[{path}]"),
                    );
                    if b.is_none() {
                        report.note(
                            &object,
                            &format!("spec.rules[host={host}].paths[{path}]"),
                            "not a Service backend: ingress-nginx skips this path (no location), and so does the migration",
                        );
                    }
                    paths.push(IngressPath {
                        path: path.to_owned(),
                        path_type,
                        backend: b,
                    });
                }
            }
            rules.push(IngressRule {
                host,
                has_http: http.is_some(),
                paths,
            });
        }
    }
    if let Some(p) = placeholder_in {
        return Err(format!("{source}: {object}: {p} looks like an unrendered template placeholder; render the manifests first (helm template, envsubst, kustomize build)"));
    }
    let has_tls = matches!(spec.and_then(|s| s.get("tls")), Some(Value::Array(t)) if !t.is_empty());
    out.push(Ingress {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        created,
        annotations,
        default_backend,
        rules,
        has_tls,
    });
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SSZ`, the form the API server writes
/// `creationTimestamp` in (so that text order is time order).
fn is_rfc3339_utc(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// A host as Kubernetes validates `spec.rules[].host`: a DNS-1123 subdomain
/// (lower-case letters, digits, `-` and `.`), optionally behind one leading
/// `*.` wildcard label; empty means every host.
fn valid_host(host: &str) -> bool {
    let name = host.strip_prefix("*.").unwrap_or(host);
    host.is_empty()
        || (name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_placeholders() {
        assert!(is_rfc3339_utc("2024-05-01T10:00:00Z"));
        assert!(!is_rfc3339_utc("2024-05-01 10:00:00Z"));
        assert!(!is_rfc3339_utc("2024-05-01T10:00:00.5Z"));
        assert!(placeholder("${WEIGHT}"));
        assert!(placeholder("{{ .Values.weight }}"));
        assert!(!placeholder("bar(.*){2}"));
    }
}
