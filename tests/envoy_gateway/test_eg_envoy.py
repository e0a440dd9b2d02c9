"""The envoy-gateway/ walkthrough in the real Envoy, configured the way Envoy
Gateway's xDS translator configures its proxy from those manifests (no
cluster here). Names and shapes as read in github.com/envoyproxy/gateway:

- internal/gatewayapi/helpers.go: listener and route config
  `<gateway ns>/<gateway name>/<listener name>`, routes
  `httproute/<ns>/<name>/rule/<i>/match/<j>/<hostname, dots as _>`
  (route.go), clusters `httproute/<ns>/<name>/rule/<i>`;
- internal/xds/translator/translator.go: one virtual host per hostname,
  `<listener>/<hostname, dots as _>`, route config with
  ignore_port_in_host_matching;
- internal/xds/translator/wasm.go: the Wasm filter
  `envoy.filters.http.wasm/envoyextensionpolicy/<ns>/<name>/wasm/<i>` (as
  in Envoy Gateway's translator tests; the real v1.9.0 standalone renders
  an empty kind, `envoy.filters.http.wasm//<ns>/...`: test_eg_standalone.py),
  added to the HCM **disabled**, with vm_id = that config name, root_id,
  plugin name = `wasm[].name`, the config as a JSON StringValue and
  fail_open = failOpen; enabled per route by typed_per_filter_config
  (envoy.config.route.v3.FilterConfig) on the routes of the targeted
  HTTPRoute only. (Envoy Gateway serves the .wasm from its controller over
  HTTPS; here the local file stands in for it.)
- internal/xds/translator/route.go, cluster.go: the BackendTrafficPolicy's
  consistent hash as a route hash_policy on the header and a Maglev
  load_balancing_policy on the clusters (max_retries 1024 by default).
- internal/gatewayapi/envoyextensionpolicy.go: when the Wasm code cannot be
  fetched or verified, failOpen: true serves the routes without the
  extension; false answers them with a direct 500.

Then: the version header routes to the right backend (the canary rule's
cluster counts exactly the canary requests), the hash pins a pod, another
team's host on the same gateway is untouched (with the policy on the
HTTPRoute the filter does not even run there; with a policy on the whole
Gateway the scoped plugin config passes it through), and with the image not
loadable under failOpen everyone lands on stable.
"""

from __future__ import annotations

import copy
import json
import types

import pytest
import yaml

import testkit
from testkit.manifests import one, yaml_docs

EG = testkit.REPO_ROOT / "envoy-gateway"
HOST = "my-app.example.com"
OTHER_HOST = "billing.other-team.example.org"
COOKIE = "my-sticky-cookie"
PODS = {"my-app-v1": ("canary-v1", ["my-app-v1-0", "my-app-v1-1"]), "my-app-v2": ("canary-v2", ["my-app-v2-0", "my-app-v2-1"])}
OTHER = ("billing", "billing-0")
FILTER_CONFIG = {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "config": {}}


def docs() -> list[dict]:
    return yaml_docs(*sorted(EG.glob("*.yaml")))


def underscored(host: str) -> str:
    return host.replace(".", "_")


def eg_config(backends: dict[str, list], *, policy_target: str = "HTTPRoute", image_loaded: bool = True) -> dict:
    """The proxy's config for envoy-gateway/ (see the module docstring).
    policy_target "Gateway" attaches the EnvoyExtensionPolicy to the whole
    Gateway instead (every route gets the filter); image_loaded False is
    Envoy Gateway's failOpen handling of a Wasm image it could not fetch or
    verify."""
    ds = docs()
    gw, route, btp, eep = one("Gateway", ds), one("HTTPRoute", ds), one("BackendTrafficPolicy", ds), one("EnvoyExtensionPolicy", ds)
    (listener,) = gw["spec"]["listeners"]
    listener_name = f"{gw['metadata']['namespace']}/{gw['metadata']['name']}/{listener['name']}"
    (wasm,) = eep["spec"]["wasm"]
    config_name = f"envoyextensionpolicy/{eep['metadata']['namespace']}/{eep['metadata']['name']}/wasm/0"
    filter_name = f"envoy.filters.http.wasm/{config_name}"
    assert [t["kind"] for t in eep["spec"]["targetRefs"]] == ["HTTPRoute"]
    ch = btp["spec"]["loadBalancer"]["consistentHash"]
    hash_policy = [{"header": {"header_name": h["name"]}} for h in ch["headers"]]

    def cluster(name: str, pods: list, lb: dict | None) -> dict:
        c = {
            "name": name, "type": "STATIC", "connect_timeout": "10s", "dns_lookup_family": "V4_PREFERRED",
            "circuit_breakers": {"thresholds": [{"max_retries": 1024}]}, "common_lb_config": {},
            "ignore_health_on_host_removal": True, "per_connection_buffer_limit_bytes": 32768,
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": b.port}}}} for b in pods]}]},
        }
        if lb:
            c["load_balancing_policy"] = lb
        return c

    maglev = {"policies": [{"typed_extension_config": {"name": "envoy.load_balancing_policies.maglev", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.maglev.v3.Maglev",
        **({"table_size": ch["tableSize"]} if "tableSize" in ch else {})}}}]}

    clusters, my_routes = [], []
    ns, rname = route["metadata"]["namespace"], route["metadata"]["name"]
    (hostname,) = route["spec"]["hostnames"]
    for i, rule in enumerate(route["spec"]["rules"]):
        match = {"prefix": "/"}
        for m in rule.get("matches", []):
            match["headers"] = [{"name": h["name"], "string_match": {"exact": h["value"]}} for h in m["headers"]]
        cname = f"httproute/{ns}/{rname}/rule/{i}"
        (backend,) = rule["backendRefs"]
        clusters.append(cluster(cname, backends[backend["name"]], maglev))
        r = {"name": f"{cname}/match/0/{underscored(hostname)}", "match": match,
             "route": {"cluster": cname, "hash_policy": hash_policy, "upgrade_configs": [{"upgrade_type": "websocket"}]}}
        my_routes.append(r)
    # another team's HTTPRoute on the same Gateway: no policy of ours targets it
    other_cluster = "httproute/other-team/billing/rule/0"
    clusters.append(cluster(other_cluster, backends[OTHER[0]], None))
    other_routes = [{"name": f"{other_cluster}/match/0/{underscored(OTHER_HOST)}", "match": {"prefix": "/"},
                     "route": {"cluster": other_cluster, "upgrade_configs": [{"upgrade_type": "websocket"}]}}]

    filters = []
    if image_loaded:
        for r in my_routes + (other_routes if policy_target == "Gateway" else []):
            r["typed_per_filter_config"] = {filter_name: copy.deepcopy(FILTER_CONFIG)}
        filters.append({"name": filter_name, "disabled": True, "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": wasm["name"],
                "root_id": wasm["rootID"],
                "vm_config": {"vm_id": config_name, "runtime": "envoy.wasm.runtime.v8",
                              "code": {"local": {"filename": str(testkit.WASM_PATH)}}},
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": json.dumps(wasm["config"])},
                "fail_open": wasm["failOpen"],
            },
        }})
    filters.append({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router", "suppress_envoy_headers": True}})

    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [{
                "name": listener_name,
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "per_connection_buffer_limit_bytes": 32768,
                "default_filter_chain": {"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": f"http-{10000 + listener['port']}",
                        "common_http_protocol_options": {"headers_with_underscores_action": "REJECT_REQUEST"},
                        "merge_slashes": True, "normalize_path": True,
                        "path_with_escaped_slashes_action": "UNESCAPE_AND_REDIRECT",
                        "server_header_transformation": "PASS_THROUGH", "use_remote_address": True,
                        "route_config": {"name": listener_name, "ignore_port_in_host_matching": True, "virtual_hosts": [
                            {"name": f"{listener_name}/{underscored(hostname)}", "domains": [hostname], "routes": my_routes},
                            {"name": f"{listener_name}/{underscored(OTHER_HOST)}", "domains": [OTHER_HOST], "routes": other_routes},
                        ]},
                        "http_filters": filters,
                    },
                }]},
            }],
            "clusters": clusters,
        },
    }


@pytest.fixture(scope="module", autouse=True)
def prerequisites():
    testkit.require_envoy_and_wasm()


@pytest.fixture(scope="module")
def pods(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pods")
    out = {svc: [testkit.start_backend(workdir, version, pod) for pod in names] for svc, (version, names) in PODS.items()}
    out[OTHER[0]] = [testkit.start_backend(workdir, *OTHER)]
    yield out
    for bs in out.values():
        for b in bs:
            b.stop()


@pytest.fixture(scope="module")
def proxy(pods, tmp_path_factory):
    envoy = testkit.start_envoy(eg_config(pods), tmp_path_factory.mktemp("eg"))
    yield envoy
    envoy.stop()


def client(envoy: testkit.Envoy, host: str = HOST) -> testkit.Client:
    """A keep-alive client that sends Host: `host` (the HTTPRoute's
    hostname) instead of 127.0.0.1:port."""
    return testkit.Client(envoy.port, authority=host)


def rq_total(envoy: testkit.Envoy, cluster: str) -> int:
    return envoy.counter(f"cluster.{cluster}.upstream_rq_total")


def sticky_counters(envoy: testkit.Envoy) -> dict[str, int]:
    """The filter's request counters (config loads left out)."""
    return {k: v for k, v in envoy.counters("sticky_canary").items() if not k.startswith("sticky_canary_config")}


def test_version_header_routes_to_the_right_backend(proxy):
    c = client(proxy)
    canary, stable = "httproute/default/my-app/rule/0", "httproute/default/my-app/rule/1"
    before = rq_total(proxy, canary), rq_total(proxy, stable)
    n = 6
    for _ in range(n):
        r = c.get_ok(cookies="canary=v2")
        assert r.name == "canary-v2" and r.hostname in PODS["my-app-v2"][1]
        assert r.whoami.header_values("X-Canary-Version") == ["canary-v2"]
    for _ in range(n):
        r = c.get_ok(headers={"x-canary": "never", "x-canary-version": "canary-v2"})  # a client's copy does not count
        assert r.name == "canary-v1" and r.whoami.header_values("X-Canary-Version") == ["canary-v1"]
    # the filter's header re-matched the route: the canary rule's cluster got
    # exactly the canary requests, the default rule's exactly the others
    assert (rq_total(proxy, canary), rq_total(proxy, stable)) == (before[0] + n, before[1] + n)


def test_session_cookie_and_hash_pin_a_pod(proxy):
    c = client(proxy)
    r = c.get_ok()
    (cookie,) = r.cookies_named(COOKIE)
    assert {"Path=/", "Max-Age=3600", "HttpOnly", "SameSite=Lax"} <= cookie.attribute_set
    (h,) = r.whoami.header_values("X-Sticky-Hash")
    assert len(h) == 16 and int(h, 16) >= 0
    for _ in range(8):
        again = c.get_ok(cookies=cookie.pair)
        assert (again.name, again.hostname) == (r.name, r.hostname)
        assert again.whoami.header_values("X-Sticky-Hash") == [h]
    # different sessions spread over both pods of the stable version
    seen = set()
    for _ in range(40):
        seen.add(c.get_ok(headers={"x-canary": "never"}).hostname)
    # P(all 40 new sessions on one of 2 pods) = 2 * 0.5**40
    assert seen == set(PODS["my-app-v1"][1])


def test_another_host_is_untouched_and_the_filter_does_not_run_there(proxy):
    before = sticky_counters(proxy)
    c = client(proxy, OTHER_HOST)
    for _ in range(5):
        r = c.get_ok(cookies="canary=v2", headers={"x-canary": "always"})
        assert r.hostname == OTHER[1] and r.set_cookies == []
        assert r.whoami.header_values("X-Canary-Version") == [] and r.whoami.header_values("X-Sticky-Hash") == []
    # the policy targets my-app's HTTPRoute: not even a pass-through is counted
    assert sticky_counters(proxy) == before


def test_policy_on_the_whole_gateway_still_passes_another_host_through(pods, tmp_path):
    envoy = testkit.start_envoy(eg_config(pods, policy_target="Gateway"), tmp_path)
    try:
        c = client(envoy, OTHER_HOST)
        n = 6
        for i in range(n):
            headers = {"x-canary-version": "canary-v2", "x-sticky-hash": "0123456789abcdef"} if i % 2 else {"x-canary": "always"}
            r = c.get_ok(cookies="canary=v2", headers=headers)
            assert r.hostname == OTHER[1] and r.set_cookies == []
            # the client's copies of the filter's headers are removed
            assert r.whoami.header_values("X-Canary-Version") == [] and r.whoami.header_values("X-Sticky-Hash") == []
        counters = sticky_counters(envoy)
        assert counters.get("sticky_canary_passthrough_total") == n
        assert not any(k.startswith("sticky_canary_decisions_total") for k in counters)
        assert client(envoy).get_ok(cookies="canary=v2").name == "canary-v2"
    finally:
        envoy.stop()


def test_image_not_loadable_with_fail_open_sends_everyone_to_stable(pods, tmp_path):
    envoy = testkit.start_envoy(eg_config(pods, image_loaded=False), tmp_path)
    try:
        c = client(envoy)
        for _ in range(6):
            r = c.get_ok(cookies="canary=v2")
            assert r.name == "canary-v1" and r.set_cookies == []
    finally:
        envoy.stop()


def test_rendered_configs_pass_envoy_validate(tmp_path):
    fake = {svc: [types.SimpleNamespace(port=1) for _ in names] for svc, (_, names) in PODS.items()}
    fake[OTHER[0]] = [types.SimpleNamespace(port=1)]
    for variant, kw in {"route": {}, "gateway": {"policy_target": "Gateway"}, "fail-open": {"image_loaded": False}}.items():
        cfg = testkit.rewrite_config(eg_config(fake, **kw), listener_ports=[testkit.free_port()], admin_port=testkit.free_port())
        path = tmp_path / f"{variant}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        rc, out = testkit.validate_config(path)
        assert rc == 0, out
