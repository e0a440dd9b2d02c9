//! `--target istio`: a Gateway per namespace, a VirtualService per host
//! routing on `x-canary-version` to each version's Service, a
//! DestinationRule per Service with a Maglev consistent hash on
//! `x-sticky-hash`, and the WasmPlugin with the plugin config.

use serde_json::{json, Value};

use super::ingress::Port;
use super::plan::{regex_escape, Location, PathMatch, Plan};
use super::plugin::{any_persistent, canary_version, main_version, KEYS_ENV};
use super::report::Report;
use super::Options;

/// The gateway name every generated VirtualService binds to.
pub const GATEWAY: &str = "sticky-canary";

/// A DNS-label-ish name for a host: `shop.example.com` -> `shop-example-com`.
pub fn host_label(host: &str) -> String {
    if host.is_empty() {
        return "default".to_owned();
    }
    let s: String = host
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => c,
            '*' => 'x',
            _ => '-',
        })
        .collect();
    super::plan::shorten(s.trim_matches('-'), 63)
}

/// The VirtualService `uri` match of a location (Istio matches the path
/// without its query string; a regex matches the whole path).
pub fn uri_match(l: &Location) -> Value {
    match &l.matcher {
        PathMatch::Exact(p) => json!({"exact": p}),
        PathMatch::SeparatedPrefix(p) if p == "/" => json!({"prefix": "/"}),
        // Path elements, as ingress-nginx's Prefix: /foo, /foo/..., not /foobar.
        PathMatch::SeparatedPrefix(p) => json!({"regex": format!("{}(/.*)?", regex_escape(p))}),
        PathMatch::Prefix(p) => json!({"prefix": p}),
        PathMatch::Regex(p) => json!({"regex": PathMatch::full_regex(p)}),
    }
}

fn destination(b: &super::ingress::Backend, report: &mut Report, obj: &str) -> Value {
    let host = format!("{}.{}.svc.cluster.local", b.service, b.namespace);
    match &b.port {
        Port::Number(n) => json!({"host": host, "port": {"number": n}}),
        Port::Name(n) => {
            report.lossy(obj, &format!("service {} port {n:?}", b.service), "a named Service port: the VirtualService names no port (fine when the Service has one port)");
            json!({"host": host})
        }
    }
}

/// Persistent mode: a failed pinned pod's request is retried on another pod.
fn with_retries(mut route: Value, persistent: bool) -> Value {
    if persistent {
        route["retries"] = json!({
            "attempts": 2,
            "perTryTimeout": "2s",
            "retryOn": "connect-failure,refused-stream,unavailable,cancelled,reset,503",
            "retryIgnorePreviousHosts": true
        });
    }
    route
}

/// The EnvoyFilter patch giving one Service's gateway cluster the
/// override_host load balancer (Maglev on `x-sticky-hash` behind it).
fn override_host_patch(b: &super::ingress::Backend) -> Value {
    let mut cluster =
        json!({"service": format!("{}.{}.svc.cluster.local", b.service, b.namespace)});
    if let Port::Number(n) = b.port {
        cluster["portNumber"] = json!(n);
    }
    json!({
        "applyTo": "CLUSTER",
        "match": {"context": "GATEWAY", "cluster": cluster},
        "patch": {"operation": "MERGE", "value": {"load_balancing_policy": {"policies": [{"typed_extension_config": {
            "name": "envoy.load_balancing_policies.override_host",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.override_host.v3.OverrideHost",
                "override_host_sources": [{"header": "x-sticky-endpoint"}],
                "fallback_policy": {"policies": [{"typed_extension_config": {
                    "name": "envoy.load_balancing_policies.maglev",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.maglev.v3.Maglev"}
                }}]}
            }
        }}]}}}
    })
}

/// Every Istio document, in apply order.
pub fn build(plan: &Plan, plugin: &Value, opts: &Options, report: &mut Report) -> Vec<Value> {
    let mut docs = Vec::new();
    // Gateways: one per namespace, with that namespace's hosts.
    let mut namespaces: Vec<String> = plan
        .locations
        .iter()
        .map(|l| l.main.namespace.clone())
        .collect();
    namespaces.sort();
    namespaces.dedup();
    for ns in &namespaces {
        let mut hosts: Vec<String> = plan
            .locations
            .iter()
            .filter(|l| &l.main.namespace == ns)
            .map(|l| {
                if l.host.is_empty() {
                    "*".to_owned()
                } else {
                    l.host.clone()
                }
            })
            .collect();
        hosts.dedup();
        docs.push(json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "Gateway",
            "metadata": {"name": GATEWAY, "namespace": ns},
            "spec": {
                "selector": {"istio": "ingressgateway"},
                "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": hosts}]
            }
        }));
    }
    // VirtualServices: one per (namespace, host), routes in match order.
    let mut groups: Vec<((String, String), Vec<&Location>)> = Vec::new();
    for l in &plan.locations {
        let key = (l.main.namespace.clone(), l.host.clone());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(l),
            None => groups.push((key, vec![l])),
        }
    }
    let mut services: Vec<super::ingress::Backend> = Vec::new();
    let mut pinned: Vec<super::ingress::Backend> = Vec::new();
    for ((ns, host), locs) in &groups {
        let mut http = Vec::new();
        for l in locs {
            let uri = uri_match(l);
            let pers = l.affinity.as_ref().is_some_and(|a| a.persistent);
            let tag = format!("{}{}", host_label(host), l.path.replace('/', "-"));
            if let (Some(cv), Some(c)) = (canary_version(l), &l.canary) {
                http.push(with_retries(
                    json!({
                        "name": super::plan::shorten(&format!("{tag}-canary"), 63),
                        "match": [{"uri": uri, "headers": {"x-canary-version": {"exact": cv}}}],
                        "route": [{"destination": destination(&c.backend, report, &c.object)}]
                    }),
                    pers,
                ));
                if !services.contains(&c.backend) {
                    services.push(c.backend.clone());
                }
                if pers && !pinned.contains(&c.backend) {
                    pinned.push(c.backend.clone());
                }
            }
            http.push(with_retries(
                json!({
                    "name": super::plan::shorten(&format!("{tag}-main"), 63),
                    "match": [{"uri": uri}],
                    "route": [{"destination": destination(&l.main, report, &l.object)}]
                }),
                pers,
            ));
            if !services.contains(&l.main) {
                services.push(l.main.clone());
            }
            if pers && !pinned.contains(&l.main) {
                pinned.push(l.main.clone());
            }
            let _ = main_version(l);
        }
        docs.push(json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": host_label(host), "namespace": ns},
            "spec": {
                "hosts": [if host.is_empty() { "*".to_owned() } else { host.clone() }],
                "gateways": [GATEWAY],
                "http": http
            }
        }));
    }
    for b in &services {
        let mut policy = json!({"loadBalancer": {"consistentHash": {
            "httpHeaderName": "x-sticky-hash",
            "maglev": {"tableSize": 65537}
        }}});
        if pinned.contains(b) {
            // A dead pinned pod is ejected at its first local failure, so
            // the fallback hash stops choosing it (envoy-config/persistent/).
            policy["outlierDetection"] = json!({"splitExternalLocalOriginErrors": true, "consecutiveLocalOriginFailures": 1});
            // Required: with locality failover, failoverPriority,
            // distribute or trafficDistribution in the mesh, istiod adds
            // locality_weighted_lb_config to the cluster, and Envoy rejects
            // it beside the override_host policy the EnvoyFilter merges in
            // (istio/persistent/destinationrule.yaml).
            policy["loadBalancer"]["localityLbSetting"] = json!({"enabled": false});
        }
        docs.push(json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": super::plan::shorten(&format!("{}-sticky", b.service), 63), "namespace": b.namespace},
            "spec": {
                "host": format!("{}.{}.svc.cluster.local", b.service, b.namespace),
                "trafficPolicy": policy
            }
        }));
    }
    let mut spec = json!({
        "selector": {"matchLabels": {"istio": "ingressgateway"}},
        "url": opts.wasm_url,
        "imagePullPolicy": "IfNotPresent",
        "phase": "STATS",
        "priority": 10,
        "failStrategy": "FAIL_OPEN",
        "pluginName": "sticky-canary",
        "type": "HTTP",
        "pluginConfig": plugin
    });
    if let Some(h) = &opts.wasm_sha256 {
        spec["sha256"] = json!(h);
    } else {
        report.note("-", "sha256", "the WasmPlugin has no sha256, so Istio takes whatever image the tag names: give --wasm-sha256 with the image's manifest digest (what `make oci` prints and writes into dist/)");
    }
    if any_persistent(plan) {
        spec["vmConfig"] = json!({"env": [{"name": KEYS_ENV, "valueFrom": "HOST"}]});
        let patches: Vec<Value> = pinned.iter().map(override_host_patch).collect();
        docs.push(json!({
            "apiVersion": "networking.istio.io/v1alpha3",
            "kind": "EnvoyFilter",
            "metadata": {"name": "sticky-canary-override-host", "namespace": "istio-system"},
            "spec": {"workloadSelector": {"labels": {"istio": "ingressgateway"}}, "configPatches": patches}
        }));
        report.note("-", "affinity-mode", "persistent on Istio: the EnvoyFilter sticky-canary-override-host puts override_host on the pinned Services' gateway clusters (istiod 1.27 or newer), the VirtualService retries on another pod (retryIgnorePreviousHosts, 1.26 or newer), and the DestinationRule turns locality load balancing off for them");
    }
    docs.push(json!({
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPlugin",
        "metadata": {"name": "sticky-canary", "namespace": "istio-system"},
        "spec": spec
    }));
    docs
}
