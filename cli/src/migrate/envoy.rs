//! `--target envoy`: one complete, static envoy.yaml (Envoy 1.40), laid out
//! like envoy-config/envoy-local.yaml: one virtual host per Ingress host,
//! per-version routes on `x-canary-version`, `hash_policy` on
//! `x-sticky-hash`, one MAGLEV cluster per Service (override_host in front
//! of it for persistent mode).

use serde_json::{json, Value};

use super::ingress::Port;
use super::plan::{upstream_name, Location, PathMatch, Plan};
use super::plugin::{any_persistent, canary_version, main_version, KEYS_ENV};
use super::report::Report;
use super::Options;

/// The Envoy route match of a location's path (Envoy matches the path
/// without its query string).
pub fn path_match(l: &Location) -> Value {
    match &l.matcher {
        PathMatch::Exact(p) => json!({"path": p}),
        PathMatch::SeparatedPrefix(p) if p == "/" => json!({"prefix": "/"}),
        PathMatch::SeparatedPrefix(p) => json!({"path_separated_prefix": p}),
        PathMatch::Prefix(p) => json!({"prefix": p}),
        PathMatch::Regex(p) => json!({"safe_regex": {"regex": PathMatch::full_regex(p)}}),
    }
}

/// A failed pod's request goes to another pod of the same version, as
/// ingress-nginx's `proxy_next_upstream error timeout` (3 tries) does.
/// Persistent mode also retries a 503 (a pinned pod that is not ready), as
/// envoy-config/persistent/ does.
fn retry_policy(persistent: bool) -> Value {
    let retry_on = if persistent {
        "connect-failure,refused-stream,reset-before-request,retriable-status-codes"
    } else {
        "connect-failure,refused-stream,reset-before-request"
    };
    let mut r = json!({
        "retry_on": retry_on,
        "num_retries": 2,
        "retry_host_predicate": [{
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}
        }],
        "host_selection_retry_max_attempts": 20,
        "retry_back_off": {"base_interval": "0.005s", "max_interval": "0.05s"}
    });
    if persistent {
        r["retriable_status_codes"] = json!([503]);
    }
    r
}

fn persistent(l: &Location) -> bool {
    l.affinity.as_ref().is_some_and(|a| a.persistent)
}

fn route(name: String, l: &Location, version: Option<&str>, cluster: &str) -> Value {
    let mut m = path_match(l);
    if let Some(v) = version {
        m["headers"] = json!([{"name": "x-canary-version", "string_match": {"exact": v}}]);
    }
    let r = json!({
        "cluster": cluster,
        "hash_policy": [{"header": {"header_name": "x-sticky-hash"}}],
        "retry_policy": retry_policy(persistent(l))
    });
    json!({"name": name, "match": m, "route": r})
}

/// The envoy.yaml, as a value.
pub fn build(plan: &Plan, plugin: &Value, opts: &Options, report: &mut Report) -> Value {
    // Virtual hosts in plan order (hosts sorted, host-less last).
    let mut vhosts: Vec<(String, Vec<Value>)> = Vec::new();
    let mut clusters: Vec<(String, Value)> = Vec::new();
    let mut add_cluster =
        |b: &super::ingress::Backend, pers: bool, report: &mut Report, obj: &str| {
            let name = upstream_name(b);
            let given = opts.endpoints_of(&b.namespace, &b.service);
            if let Some((_, c)) = clusters.iter_mut().find(|(n, _)| *n == name) {
                if pers && c.get("load_balancing_policy").is_none() {
                    *c = cluster(&name, b, &given, true, report, obj);
                }
                return;
            }
            clusters.push((name.clone(), cluster(&name, b, &given, pers, report, obj)));
        };
    for l in &plan.locations {
        let vh = if l.host.is_empty() {
            "*".to_owned()
        } else {
            l.host.clone()
        };
        if vhosts.last().map(|(h, _)| h != &vh).unwrap_or(true) {
            vhosts.push((vh.clone(), Vec::new()));
        }
        let routes = &mut vhosts.last_mut().map(|(_, r)| r);
        let Some(routes) = routes else { continue };
        let main = main_version(l);
        let tag = format!(
            "{}{}",
            if l.host.is_empty() { "_" } else { &l.host },
            l.path
        );
        if let (Some(cv), Some(c)) = (canary_version(l), &l.canary) {
            routes.push(route(format!("{tag} {cv}"), l, Some(&cv), &cv));
            add_cluster(&c.backend, persistent(l), report, &c.object);
        }
        routes.push(route(format!("{tag} {main}"), l, None, &main));
        add_cluster(&l.main, persistent(l), report, &l.object);
    }
    let virtual_hosts: Vec<Value> = vhosts
        .into_iter()
        .map(|(h, routes)| {
            let (name, domains) = if h == "*" {
                ("default".to_owned(), json!(["*"]))
            } else {
                (h.clone(), json!([h, format!("{h}:*")]))
            };
            json!({"name": name, "domains": domains, "routes": routes})
        })
        .collect();
    let mut vm_config = json!({
        "vm_id": "sticky-canary",
        "runtime": "envoy.wasm.runtime.v8",
        "code": {"local": {"filename": opts.wasm_path}}
    });
    if any_persistent(plan) {
        vm_config["environment_variables"] = json!({"host_env_keys": [KEYS_ENV]});
    }
    let plugin_text = serde_json::to_string_pretty(plugin).unwrap_or_default() + "\n";
    let (addr, port) = opts.listen_parts();
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9901}}},
        "static_resources": {
            "listeners": [{
                "name": "ingress",
                "address": {"socket_address": {"address": addr, "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "ingress_http",
                        "codec_type": "AUTO",
                        "access_log": [{
                            "name": "envoy.access_loggers.stdout",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                                "log_format": {"text_format_source": {"inline_string": "[%START_TIME%] \"%REQ(:METHOD)% %REQ(:AUTHORITY)%%REQ(:PATH)%\" %RESPONSE_CODE% route=%ROUTE_NAME% version=%REQ(X-CANARY-VERSION)% upstream=%UPSTREAM_HOST%\n"}}
                            }
                        }],
                        "route_config": {"name": "ingress", "virtual_hosts": virtual_hosts},
                        "http_filters": [
                            {
                                "name": "envoy.filters.http.wasm",
                                "typed_config": {
                                    "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                                    "config": {
                                        "name": "sticky-canary",
                                        "root_id": "sticky-canary",
                                        "failure_policy": "FAIL_RELOAD",
                                        "vm_config": vm_config,
                                        "configuration": {
                                            "@type": "type.googleapis.com/google.protobuf.StringValue",
                                            "value": plugin_text
                                        }
                                    }
                                }
                            },
                            {
                                "name": "envoy.filters.http.router",
                                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
                            }
                        ]
                    }
                }]}]
            }],
            "clusters": clusters.into_iter().map(|(_, c)| c).collect::<Vec<_>>()
        }
    })
}

fn cluster(
    name: &str,
    b: &super::ingress::Backend,
    given: &[(String, u32)],
    persistent: bool,
    report: &mut Report,
    obj: &str,
) -> Value {
    let endpoints: Vec<(String, u32)> = if given.is_empty() {
        let port = match &b.port {
            Port::Number(n) => *n,
            Port::Name(n) => {
                report.lossy(obj, &format!("service {} port {n:?}", b.service), "a named Service port: plain Envoy needs a number; port 80 was written, correct the cluster (or give --endpoint)");
                80
            }
        };
        vec![(
            format!("{}.{}.svc.cluster.local", b.service, b.namespace),
            port,
        )]
    } else {
        given.to_vec()
    };
    let lb_endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(address, port)| json!({"endpoint": {"address": {"socket_address": {"address": address, "port_value": port}}}}))
        .collect();
    let mut c = json!({
        "name": name,
        "type": "STRICT_DNS",
        "dns_lookup_family": "V4_ONLY",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": lb_endpoints}]
        }
    });
    if persistent {
        c["load_balancing_policy"] = json!({"policies": [{"typed_extension_config": {
            "name": "envoy.load_balancing_policies.override_host",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.override_host.v3.OverrideHost",
                "override_host_sources": [{"header": "x-sticky-endpoint"}],
                "fallback_policy": {"policies": [{"typed_extension_config": {
                    "name": "envoy.load_balancing_policies.maglev",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.maglev.v3.Maglev"}
                }}]}
            }
        }}]});
        c["outlier_detection"] = json!({"split_external_local_origin_errors": true, "consecutive_local_origin_failure": 1});
    } else {
        c["lb_policy"] = json!("MAGLEV");
    }
    c
}
