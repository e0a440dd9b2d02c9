//! `--target envoy-gateway`: a Gateway, an HTTPRoute per host with a
//! header match per version, an EnvoyExtensionPolicy with the filter, and a
//! BackendTrafficPolicy per HTTPRoute with a consistent hash on
//! `x-sticky-hash` (Envoy Gateway's consistent hash is Maglev).

use serde_json::{json, Value};

use super::ingress::{PathType, Port};
use super::istio::host_label;
use super::plan::{Location, Plan};
use super::plugin::{any_persistent, canary_version, KEYS_ENV};
use super::report::Report;
use super::Options;

/// The generated Gateway's name.
pub const GATEWAY: &str = "sticky-canary";

fn path(l: &Location, report: &mut Report) -> Value {
    match l.path_type {
        PathType::Exact => json!({"type": "Exact", "value": l.path}),
        PathType::Prefix => json!({"type": "PathPrefix", "value": l.path}),
        PathType::ImplementationSpecific => {
            report.note(&l.object, &format!("pathType ImplementationSpecific ({})", l.path), "migrated as PathPrefix, which matches whole path elements (ingress-nginx matched any string prefix)");
            json!({"type": "PathPrefix", "value": l.path})
        }
    }
}

fn backend_ref(b: &super::ingress::Backend, report: &mut Report, obj: &str) -> Value {
    match &b.port {
        Port::Number(n) => json!({"name": b.service, "port": n}),
        Port::Name(n) => {
            report.lossy(obj, &format!("service {} port {n:?}", b.service), "a named Service port: HTTPRoute needs the port number; port 80 was written, correct it");
            json!({"name": b.service, "port": 80})
        }
    }
}

/// Every Envoy Gateway document, in apply order.
pub fn build(plan: &Plan, plugin: &Value, opts: &Options, report: &mut Report) -> Vec<Value> {
    let gw_ns = opts.gateway_namespace.clone();
    let mut docs = vec![json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": GATEWAY, "namespace": gw_ns},
        "spec": {
            "gatewayClassName": opts.gateway_class,
            "listeners": [{"name": "http", "protocol": "HTTP", "port": 80, "allowedRoutes": {"namespaces": {"from": "All"}}}]
        }
    })];
    let mut groups: Vec<((String, String), Vec<&Location>)> = Vec::new();
    for l in &plan.locations {
        let key = (l.main.namespace.clone(), l.host.clone());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(l),
            None => groups.push((key, vec![l])),
        }
    }
    let mut routes = Vec::new();
    for ((ns, host), locs) in &groups {
        let mut rules = Vec::new();
        for l in locs {
            let p = path(l, report);
            if let (Some(cv), Some(c)) = (canary_version(l), &l.canary) {
                rules.push(json!({
                    "matches": [{"path": p, "headers": [{"type": "Exact", "name": "x-canary-version", "value": cv}]}],
                    "backendRefs": [backend_ref(&c.backend, report, &c.object)]
                }));
            }
            rules.push(json!({
                "matches": [{"path": p}],
                "backendRefs": [backend_ref(&l.main, report, &l.object)]
            }));
        }
        let name = host_label(host);
        let mut spec = json!({
            "parentRefs": [{"name": GATEWAY, "namespace": gw_ns}],
            "rules": rules
        });
        if !host.is_empty() {
            spec["hostnames"] = json!([host]);
        }
        docs.push(json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": ns},
            "spec": spec
        }));
        routes.push((ns.clone(), name));
    }
    let mut wasm = json!({
        "name": "sticky-canary",
        "rootID": "sticky-canary",
        "code": {"type": "Image", "image": {"url": opts.wasm_image}},
        "config": plugin,
        "failOpen": false
    });
    if any_persistent(plan) {
        wasm["env"] = json!({"hostKeys": [KEYS_ENV]});
        report.lossy("-", "affinity-mode", "persistent on Envoy Gateway: it has no override_host load balancer, so the pod comes from the hash (balanced) and the recorded pod is not used");
    }
    docs.push(json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "EnvoyExtensionPolicy",
        "metadata": {"name": "sticky-canary", "namespace": gw_ns},
        "spec": {
            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": GATEWAY}],
            "wasm": [wasm]
        }
    }));
    for (ns, name) in routes {
        docs.push(json!({
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "BackendTrafficPolicy",
            "metadata": {"name": format!("{name}-sticky"), "namespace": ns},
            "spec": {
                "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": name}],
                "loadBalancer": {"type": "ConsistentHash", "consistentHash": {"type": "Header", "header": {"name": "x-sticky-hash"}, "tableSize": 65537}}
            }
        }));
    }
    docs
}
