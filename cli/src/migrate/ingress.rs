//! Reading Ingress manifests as users have them: one or many YAML (or JSON)
//! documents, `List`s of them (`kubectl get ingress -A -o yaml`), with only
//! `networking.k8s.io/v1` Ingresses migrated.

use std::collections::BTreeMap;

use serde::Deserialize as _;
use serde_json::Value;

use super::report::Report;

/// A Service port, by number or by name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Port {
    /// `port.number`.
    Number(u32),
    /// `port.name` (a named port of the Service).
    Name(String),
}

/// A Service backend of a path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Backend {
    /// The Ingress's namespace (Services are namespace-local).
    pub namespace: String,
    /// `service.name`.
    pub service: String,
    /// `service.port`.
    pub port: Port,
}

/// The Kubernetes path types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathType {
    /// Exact path.
    Exact,
    /// Path-element prefix.
    Prefix,
    /// ingress-nginx: a plain string prefix (or a regex with `use-regex`).
    ImplementationSpecific,
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
    /// Every annotation, values as strings.
    pub annotations: BTreeMap<String, String>,
    /// `spec.defaultBackend`.
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

fn collect(
    v: &Value,
    source: &str,
    report: &mut Report,
    out: &mut Vec<Ingress>,
) -> Result<(), String> {
    let Value::Object(obj) = v else {
        if !v.is_null() {
            report.lossy(
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
        if let Some(Value::Array(items)) = obj.get("items") {
            for item in items {
                collect(item, source, report, out)?;
            }
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
            format!("{api}: only networking.k8s.io/v1 is read (`kubectl get ingress -o yaml` returns v1); skipped"),
        );
        return Ok(());
    }
    if name.is_empty() {
        return Err(format!("{source}: an Ingress without metadata.name"));
    }
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
    let backend = |b: Option<&Value>| -> Option<Backend> {
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
        Some(Backend {
            namespace: namespace.to_owned(),
            service,
            port,
        })
    };
    let default_backend = spec.and_then(|s| s.get("defaultBackend"));
    if default_backend.is_some() && backend(default_backend).is_none() {
        report.lossy(
            &object,
            "spec.defaultBackend",
            "not a Service backend: not migrated",
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
            let mut paths = Vec::new();
            if let Some(Value::Array(ps)) = r.get("http").and_then(|h| h.get("paths")) {
                for p in ps {
                    let path = p.get("path").and_then(Value::as_str).unwrap_or("/");
                    let path = if path.is_empty() { "/" } else { path };
                    let path_type = match p.get("pathType").and_then(Value::as_str) {
                        Some("Exact") => PathType::Exact,
                        Some("Prefix") => PathType::Prefix,
                        _ => PathType::ImplementationSpecific,
                    };
                    let b = backend(p.get("backend"));
                    if b.is_none() {
                        report.lossy(
                            &object,
                            &format!("spec.rules[host={host}].paths[{path}]"),
                            "not a Service backend: not migrated",
                        );
                    }
                    paths.push(IngressPath {
                        path: path.to_owned(),
                        path_type,
                        backend: b,
                    });
                }
            }
            rules.push(IngressRule { host, paths });
        }
    }
    let has_tls = matches!(spec.and_then(|s| s.get("tls")), Some(Value::Array(t)) if !t.is_empty());
    out.push(Ingress {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        annotations,
        default_backend: backend(default_backend),
        rules,
        has_tls,
    });
    Ok(())
}
