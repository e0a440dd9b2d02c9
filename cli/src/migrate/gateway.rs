//! `--target envoy-gateway`: a Gateway, an HTTPRoute per host with a
//! header match per version, an EnvoyExtensionPolicy with the filter on
//! exactly those HTTPRoutes, and a BackendTrafficPolicy per HTTPRoute with a
//! consistent hash on `x-sticky-hash` (Envoy Gateway's consistent hash is
//! Maglev) or, for persistent mode, what `envoy-gateway/persistent/` ships
//! and `tests/envoy_gateway/test_eg_persistent.py` runs through Envoy
//! Gateway: `endpointOverride` on `x-sticky-endpoint` (Envoy's
//! `override_host`) with LeastRequest as its fallback, and retries on
//! another pod. Needs Envoy Gateway 1.6 or newer (`endpointOverride` since
//! 1.5, consistent hash `type: Headers` since 1.6).

use serde_json::{json, Value};

use super::ingress::Port;
use super::istio::host_label;
use super::plan::{regex_escape, Location, PathMatch, Plan};
use super::plugin::{canary_version, KEYS_ENV};
use super::report::Report;
use super::Options;

/// The generated Gateway's name.
pub const GATEWAY: &str = "sticky-canary";

/// The `sha256` written when none is given: `make oci` (istio/oci.py
/// `--pin`) replaces it with the image's manifest digest.
pub const PLACEHOLDER_SHA256: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

/// The HTTPRoute path match of a location. Gateway API's `PathPrefix`
/// ignores a trailing slash (`/foo/` matches `/foo`), which ingress-nginx's
/// `Prefix /foo/` does not, so such a prefix is a regular expression; and
/// because Envoy Gateway ranks every regular expression above every
/// `PathPrefix`, a host with one such prefix gets all its prefixes as
/// regular expressions, written so that a longer prefix is a longer regex
/// (Envoy Gateway then orders them longest first, as nginx does): `<p>(/.*)?`
/// for whole path elements and `<p>(?:.*)` for a prefix ending with `/`,
/// the same 6 characters after the escaped path.
fn path(l: &Location, regex_prefixes: bool) -> Value {
    match &l.matcher {
        PathMatch::Exact(p) => json!({"type": "Exact", "value": p}),
        PathMatch::SeparatedPrefix(p) if !regex_prefixes => {
            json!({"type": "PathPrefix", "value": p})
        }
        PathMatch::SeparatedPrefix(p) if p == "/" => {
            json!({"type": "RegularExpression", "value": "/(?:.*)"})
        }
        PathMatch::SeparatedPrefix(p) => {
            json!({"type": "RegularExpression", "value": format!("{}(/.*)?", regex_escape(p))})
        }
        PathMatch::Prefix(p) => {
            json!({"type": "RegularExpression", "value": format!("{}(?:.*)", regex_escape(p))})
        }
        PathMatch::Regex(p) => {
            json!({"type": "RegularExpression", "value": PathMatch::full_regex(p)})
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

fn persistent(l: &Location) -> bool {
    l.active() && l.affinity.as_ref().is_some_and(|a| a.persistent)
}

/// The BackendTrafficPolicy of one HTTPRoute.
fn traffic_policy(ns: &str, name: &str, pinned: bool) -> Value {
    let mut lb = json!({
        "type": "ConsistentHash",
        "consistentHash": {"type": "Headers", "headers": [{"name": "x-sticky-hash"}], "tableSize": 65537}
    });
    let mut spec = json!({
        "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": name}]
    });
    if pinned {
        // What envoy-gateway/persistent/backendtrafficpolicy.yaml ships (its
        // comments say why): Envoy's override_host on the pod the filter
        // names in x-sticky-endpoint when it is an endpoint of the route's
        // cluster, else LeastRequest, which draws independently on each
        // retry (a consistent hash also crashes standalone Envoy Gateway
        // 1.9's File provider). override_host ignores health, so a dead
        // pinned pod is retried on another pod (Envoy Gateway adds the
        // previous_hosts predicate to every retry policy), and one
        // local-origin failure ejects it from the fallback. `reset` retries
        // a request cut off by a dying pod: the report says what that means
        // for requests that must not repeat.
        lb = json!({"type": "LeastRequest", "endpointOverride": {"extractFrom": [{"header": "x-sticky-endpoint"}]}});
        spec["retry"] = json!({
            "numRetries": 2,
            "retryOn": {"triggers": ["connect-failure", "refused-stream", "reset-before-request", "reset", "retriable-status-codes"], "httpStatusCodes": [503]},
            "perRetry": {"backOff": {"baseInterval": "5ms", "maxInterval": "50ms"}}
        });
        spec["healthCheck"] = json!({"passive": {"splitExternalLocalOriginErrors": true, "consecutiveLocalOriginFailures": 1}});
        // When a pod dies, every session pinned to it retries at once;
        // Envoy's default allows 3 concurrent retries per cluster.
        spec["circuitBreaker"] = json!({"maxParallelRetries": 1024});
    }
    spec["loadBalancer"] = lb;
    json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "BackendTrafficPolicy",
        "metadata": {"name": format!("{name}-sticky"), "namespace": ns},
        "spec": spec
    })
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
    // (namespace, HTTPRoute name, any persistent location)
    let mut routes: Vec<(String, String, bool)> = Vec::new();
    for ((ns, host), locs) in &groups {
        let regex_prefixes = locs
            .iter()
            .any(|l| matches!(&l.matcher, PathMatch::Prefix(p) if p != "/"));
        let mut rules = Vec::new();
        for l in locs {
            let p = path(l, regex_prefixes);
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
        routes.push((ns.clone(), name, locs.iter().any(|l| persistent(l))));
    }
    let sha256 = opts
        .wasm_sha256
        .clone()
        .unwrap_or_else(|| PLACEHOLDER_SHA256.to_owned());
    if opts.wasm_sha256.is_none() {
        report.note("-", "sha256", "the EnvoyExtensionPolicy's image sha256 is a placeholder (64 zeros): give --wasm-sha256, or write the digest with `python3 istio/oci.py --registry REGISTRY --pin envoy-gateway.yaml` (what `make oci` builds); with the placeholder the image check fails and, failing open, the routes run without the filter");
    }
    // One policy per namespace (policies attach to routes of their own
    // namespace), on exactly the generated HTTPRoutes.
    let mut namespaces: Vec<&String> = routes.iter().map(|(ns, ..)| ns).collect();
    namespaces.sort();
    namespaces.dedup();
    let any_pinned = routes.iter().any(|(.., p)| *p);
    for ns in namespaces {
        let targets: Vec<Value> = routes
            .iter()
            .filter(|(n, ..)| n == ns)
            .map(|(_, name, _)| json!({"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": name}))
            .collect();
        let mut wasm = json!({
            "name": "sticky-canary",
            "rootID": "sticky-canary",
            "code": {"type": "Image", "image": {"url": opts.wasm_image, "sha256": sha256}},
            "config": plugin,
            "failOpen": !opts.fail_closed
        });
        if any_pinned {
            wasm["env"] = json!({"hostKeys": [KEYS_ENV]});
        }
        docs.push(json!({
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "EnvoyExtensionPolicy",
            "metadata": {"name": "sticky-canary", "namespace": ns},
            "spec": {"targetRefs": targets, "wasm": [wasm]}
        }));
    }
    if any_pinned {
        report.note("-", "affinity-mode", format!("persistent on Envoy Gateway (1.6 or newer): the BackendTrafficPolicy's endpointOverride on x-sticky-endpoint is Envoy's override_host with LeastRequest as fallback, retried on another pod, as envoy-gateway/persistent/ ships; its retry trigger `reset` repeats a request cut off by a dying pod, as ingress-nginx repeats idempotent ones, but Envoy Gateway cannot exempt POSTs: remove `reset` if a route takes requests that must not run twice; put the keys in the environment variable {KEYS_ENV} of the Envoy Gateway proxy (EnvoyProxy spec.provider.kubernetes.envoyDeployment.container.env)"));
    }
    for (ns, name, pinned) in routes {
        docs.push(traffic_policy(&ns, &name, pinned));
    }
    docs
}
