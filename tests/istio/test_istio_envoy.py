"""The istio/ walkthrough in the real Envoy, configured the way istiod would
configure the ingress gateway from those manifests (no cluster here).

`istio_gateway_config()` renders, from the YAML under istio/:
- the WasmPlugin as istiod's ECDS filter (as test_istio_real.py sees
  istiod 1.31 name it: extensions.istio.io/trafficextension/<namespace>.
  <name>~istio-translated-wasmplugin, config.name <namespace>.<name>~istio-
  translated-wasmplugin), root_id = pluginName, pluginConfig marshalled to
  a compact JSON string with sorted keys inside a
  google.protobuf.StringValue, fail_open from failStrategy FAIL_OPEN;
- the VirtualService http routes in order (name, exact header matches) to
  clusters named outbound|80|<subset>|<host>, with the DestinationRule's
  consistentHash as the route hash_policy and the retry policy istiod
  derives (its default for consistent-hash routes has no previous_hosts
  predicate; retryIgnorePreviousHosts: true adds it);
- the DestinationRule subsets as MAGLEV / RING_HASH clusters, one whoami
  "pod" pair per version, with the circuit breakers istiod puts on every
  outbound cluster (max_retries 2^32-1, pilot/pkg/networking/core/
  cluster_traffic_policy.go getDefaultCircuitBreakerThresholds) and, for
  persistent mode, the EnvoyFilter's CLUSTER MERGE patch applied to them;
- the vmConfig.env entries as vm_config.environment_variables (INLINE ->
  key_values, HOST -> host_env_keys, pilot/pkg/model/extensions.go);
- the DestinationRule's outlierDetection as the cluster's outlier_detection
  (without it a retry off a dead pinned pod can land on it again: the
  consistent-hash fallback re-picks by hash, measured 12 failed of 384);
- a second team's host on the same gateway (billing.other-team.example.org,
  its own virtual host and cluster), which the scoped plugin must leave alone.

Then the README's curl transcript is replayed: version and cookie on the
first answer, opt-in cookie and header, the same pod on every request with
the session cookie, a client's own x-canary-version ignored; a request for the
other team's host passes through untouched and uncounted; with the plugin
missing (FAIL_OPEN) everybody lands on stable; in persistent mode the pinned
pod serves every request, and when it dies the retry moves the session to
the other pod of the same version, which the next cookie records.
"""

from __future__ import annotations

import copy
import json
import types
from pathlib import Path

import pytest
import yaml

import testkit
from istiod_model import ISTIO_CIRCUIT_BREAKERS, proto_merge
from testkit.envoy_config import ROUTER, http_bootstrap
from testkit.manifests import one, yaml_docs

ISTIO = testkit.REPO_ROOT / "istio"
HOST = "my-app.example.com"
OTHER_HOST = "billing.other-team.example.org"
OTHER_CLUSTER = "outbound|80||billing.other-team.svc.cluster.local"
COOKIE = "my-sticky-cookie"
PODS = {"canary-v1": ["my-app-v1-0", "my-app-v1-1"], "canary-v2": ["my-app-v2-0", "my-app-v2-1"]}
OTHER_POD = ("billing", "billing-0")


def docs(*rel: str) -> list[dict]:
    return yaml_docs(*(ISTIO / r for r in rel))


def cluster_name(dest: dict) -> str:
    return f"outbound|{dest.get('port', {}).get('number', 80)}|{dest.get('subset', '')}|{dest['host']}"


PREVIOUS_HOSTS = {
    "name": "envoy.retry_host_predicates.previous_hosts",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"},
}


def retry_policy(retries: dict | None, consistent_hash: bool) -> dict | None:
    """istiod's pilot/pkg/networking/core/route/retry ConvertPolicy."""
    policy = {
        "num_retries": 2,
        "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        "host_selection_retry_max_attempts": 5,
    }
    if not consistent_hash:
        policy["retry_host_predicate"] = [PREVIOUS_HOSTS]
    if retries is None:
        return policy
    if retries.get("attempts", 0) <= 0:
        return None
    policy["num_retries"] = retries["attempts"]
    if "retryOn" in retries:
        parts = [p.strip() for p in retries["retryOn"].split(",") if p.strip()]
        codes = [int(p) for p in parts if p.isdigit()]
        on = [p for p in parts if not p.isdigit()]
        if codes and "retriable-status-codes" not in on:
            on.append("retriable-status-codes")
        policy["retry_on"] = ",".join(on)
        if codes:
            policy["retriable_status_codes"] = codes
    if "perTryTimeout" in retries:
        policy["per_try_timeout"] = retries["perTryTimeout"]
    if "retryIgnorePreviousHosts" in retries:
        policy.pop("retry_host_predicate", None)
        if retries["retryIgnorePreviousHosts"]:
            policy["retry_host_predicate"] = [PREVIOUS_HOSTS]
    return policy


def vm_env(spec: dict) -> dict:
    """pilot/pkg/model/extensions.go: vmConfig.env INLINE -> key_values,
    HOST -> host_env_keys (Envoy reads those from its own environment)."""
    env = {"key_values": {}, "host_env_keys": []}
    for e in (spec.get("vmConfig") or {}).get("env") or []:
        if e.get("valueFrom", "INLINE") == "HOST":
            env["host_env_keys"].append(e["name"])
        else:
            env["key_values"][e["name"]] = e.get("value", "")
    return {k: v for k, v in env.items() if v}


def istio_gateway_config(variant: str, backends: dict[str, list[testkit.Backend]], with_plugin: bool = True) -> dict:
    """The gateway's Envoy config for `gateway` or `persistent` (see above)."""
    base = docs("base/destinationrule.yaml")
    if variant == "gateway":
        vs_docs, plugin_docs, dr_docs, ef_docs = docs("gateway/virtualservice.yaml"), docs("gateway/wasmplugin.yaml"), base, []
    else:
        vs_docs, plugin_docs = docs("persistent/virtualservice.yaml"), docs("persistent/wasmplugin.yaml")
        dr_docs, ef_docs = docs("persistent/destinationrule.yaml"), docs("persistent/envoyfilter.yaml")
    vs, plugin, dr = one("VirtualService", vs_docs), one("WasmPlugin", plugin_docs), one("DestinationRule", dr_docs)
    ch = dr["spec"]["trafficPolicy"]["loadBalancer"]["consistentHash"]
    hash_policy = [{"header": {"header_name": ch["httpHeaderName"]}}]

    routes = []
    for r in vs["spec"]["http"]:
        match = {"prefix": "/"}
        for m in r.get("match", []):
            match["headers"] = [{"name": h, "string_match": {"exact": v["exact"]}} for h, v in m["headers"].items()]
        action = {"cluster": cluster_name(r["route"][0]["destination"]), "hash_policy": hash_policy, "timeout": "0s"}
        rp = retry_policy(r.get("retries"), consistent_hash=True)
        if rp:
            action["retry_policy"] = rp
        routes.append({"name": r["name"], "match": match, "route": action})

    def lb_for(ch):
        # istiod: consistentHash.maglev -> MAGLEV, else (ringHash) RING_HASH.
        if "maglev" in ch:
            return {"lb_policy": "MAGLEV", "maglev_lb_config": {"table_size": ch["maglev"].get("tableSize", 65537)}}
        return {"lb_policy": "RING_HASH",
                "ring_hash_lb_config": {"minimum_ring_size": ch.get("ringHash", {}).get("minimumRingSize", 1024)}}

    clusters = []
    host = dr["spec"]["host"]
    for subset in dr["spec"]["subsets"]:
        name = f"outbound|80|{subset['name']}|{host}"
        c = {
            "name": name,
            "type": "STATIC",
            "connect_timeout": "1s",
            **lb_for(ch),
            "circuit_breakers": copy.deepcopy(ISTIO_CIRCUIT_BREAKERS),
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": b.port}}}}
                for b in backends[subset["labels"]["version"]]
            ]}]},
        }
        od = dr["spec"]["trafficPolicy"].get("outlierDetection")
        if od:
            # istiod's applyOutlierDetection (cluster_traffic_policy.go)
            c["outlier_detection"] = {
                "consecutive_5xx": od["consecutive5xxErrors"], "enforcing_consecutive_5xx": 100,
                "enforcing_success_rate": 0, "interval": od["interval"],
                "base_ejection_time": od["baseEjectionTime"], "max_ejection_percent": od["maxEjectionPercent"],
            }
        for ef in ef_docs:
            for p in ef["spec"]["configPatches"]:
                m = p["match"]["cluster"]
                if p["applyTo"] == "CLUSTER" and m["service"] == host and m.get("subset") in (None, subset["name"]):
                    assert p["patch"]["operation"] == "MERGE"
                    proto_merge(c, p["patch"]["value"])
        clusters.append(c)
    other = backends.get(OTHER_POD[0], [])
    clusters.append({
        "name": OTHER_CLUSTER, "type": "STATIC", "connect_timeout": "1s", "lb_policy": "LEAST_REQUEST",
        "circuit_breakers": copy.deepcopy(ISTIO_CIRCUIT_BREAKERS),
        "load_assignment": {"cluster_name": OTHER_CLUSTER, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": b.port}}}} for b in other]}]},
    })

    filters = []
    # istiod (1.30+) translates a WasmPlugin into a TrafficExtension of this name.
    translated = f"{plugin['metadata']['namespace']}.{plugin['metadata']['name']}~istio-translated-wasmplugin"
    ecds_name = f"extensions.istio.io/trafficextension/{translated}"
    if with_plugin:
        spec = plugin["spec"]
        filters.append({
            "name": ecds_name,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": translated,
                    "root_id": spec["pluginName"],
                    # istiod: failStrategy FAIL_OPEN -> failure_policy FAIL_OPEN
                    "failure_policy": {"FAIL_OPEN": "FAIL_OPEN", "FAIL_CLOSE": "FAIL_CLOSED", "FAIL_RELOAD": "FAIL_RELOAD"}[spec["failStrategy"]],
                    "vm_config": {"runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": str(testkit.WASM_PATH)}},
                                  "environment_variables": vm_env(spec)},
                    "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": json.dumps(spec["pluginConfig"], sort_keys=True, separators=(",", ":"))},
                },
            },
        })
    else:
        # What istio-agent installs instead when the module cannot be fetched
        # and failStrategy is FAIL_OPEN: an RBAC filter with no rules (allow all).
        filters.append({"name": ecds_name, "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC", "rules_stat_prefix": "wasm-default-allow"}})
    filters.append(ROUTER)

    return http_bootstrap("0.0.0.0_8080", {
        "stat_prefix": "outbound_0.0.0.0_8080",
        "access_log": [{"name": "envoy.access_loggers.stdout", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
            "log_format": {"text_format_source": {"inline_string":
                "%RESPONSE_CODE% route=%ROUTE_NAME% cluster=%UPSTREAM_CLUSTER% host=%UPSTREAM_HOST% attempts=%UPSTREAM_REQUEST_ATTEMPT_COUNT% version=%REQ(X-CANARY-VERSION)% endpoint=%REQ(X-STICKY-ENDPOINT)%\n"}}}}],
        "route_config": {"name": "http.8080", "virtual_hosts": [
            {"name": f"{HOST}:80", "domains": [HOST, f"{HOST}:*"], "routes": routes},
            # another team's VirtualService on the same gateway
            {"name": f"{OTHER_HOST}:80", "domains": [OTHER_HOST, f"{OTHER_HOST}:*"], "routes": [
                {"name": "billing", "match": {"prefix": "/"}, "route": {"cluster": OTHER_CLUSTER, "timeout": "0s"}}]},
        ]},
        "http_filters": filters,
    }, clusters)


@pytest.fixture(scope="module", autouse=True)
def prerequisites():
    testkit.require_envoy_and_wasm()


def start_pods(workdir: Path) -> dict[str, list[testkit.Backend]]:
    pods = {v: [testkit.start_backend(workdir, v, pod) for pod in pods] for v, pods in PODS.items()}
    pods[OTHER_POD[0]] = [testkit.start_backend(workdir, *OTHER_POD)]
    return pods


def stop_pods(pods: dict[str, list[testkit.Backend]]) -> None:
    for bs in pods.values():
        for b in bs:
            b.stop()


@pytest.fixture(scope="module")
def pods(tmp_path_factory):
    p = start_pods(tmp_path_factory.mktemp("pods"))
    yield p
    stop_pods(p)


@pytest.fixture(scope="module")
def gateway(pods, tmp_path_factory):
    envoy = testkit.start_envoy(istio_gateway_config("gateway", pods), tmp_path_factory.mktemp("gw"))
    yield envoy
    envoy.stop()


def client(envoy: testkit.Envoy, host: str = HOST) -> testkit.Client:
    """A keep-alive client that sends Host: my-app.example.com (the
    VirtualService host) instead of 127.0.0.1:port."""
    return testkit.Client(envoy.port, authority=host)


def test_walkthrough_version_cookie_and_pinned_pod(gateway):
    c = client(gateway)
    # 1. a new user: a version (20% canary-v2), and a session cookie
    r = c.get_ok()
    (cookie,) = r.cookies_named(COOKIE)
    assert {"Path=/", "Max-Age=3600", "HttpOnly", "SameSite=Lax"} <= cookie.attribute_set
    assert r.name in PODS and r.hostname in PODS[r.name]
    # the request the pod got carries the filter's decision
    assert r.whoami.header_values("X-Canary-Version") == [r.name]
    (h,) = r.whoami.header_values("X-Sticky-Hash")
    assert len(h) == 16 and int(h, 16) >= 0
    # 2. the same session: the same version and pod, every time
    for _ in range(8):
        again = c.get_ok(cookies=cookie.pair)
        assert (again.name, again.hostname) == (r.name, r.hostname)
    # 3. opt in / out
    assert c.get_ok(cookies="canary=v2").name == "canary-v2"
    assert c.get_ok(headers={"x-canary": "always"}).name == "canary-v2"
    assert c.get_ok(headers={"x-canary": "never"}).name == "canary-v1"
    # 4. a client's own x-canary-version does not pick the route
    spoof = c.get_ok(headers={"x-canary": "never", "x-canary-version": "canary-v2"})
    assert spoof.name == "canary-v1" and spoof.whoami.header_values("X-Canary-Version") == ["canary-v1"]


def test_new_users_are_spread_over_versions_and_pods(gateway):
    c = client(gateway)
    seen = {c.get_ok().hostname for _ in range(80)}
    # 20% canary: P(no canary-v2 in 80 users) = 0.8**80 < 1e-7
    assert set(PODS["canary-v1"]) <= seen and seen & set(PODS["canary-v2"])
    assert gateway.metric("sticky_canary_decisions_total", route="my-app", version="canary-v2", reason="new") > 0


def decision_counters(envoy: testkit.Envoy) -> dict[str, int]:
    return envoy.counters("sticky_canary_decisions_total")


def passthrough_count(envoy: testkit.Envoy) -> int:
    return envoy.metric("sticky_canary_passthrough_total")


def test_another_host_on_the_shared_gateway_passes_through_untouched(gateway):
    """The plugin is scoped to my-app.example.com: another team's host gets
    no cookie, no version or hash header (a client's copies are removed), and
    is counted only as pass-through, never as a decision."""
    before, passthrough = decision_counters(gateway), passthrough_count(gateway)
    c = client(gateway, OTHER_HOST)
    n = 12
    for i in range(n):
        headers = [{"x-canary": "always"}, {"x-canary-version": "canary-v2", "x-sticky-hash": "0123456789abcdef"}, {}][i % 3]
        r = c.get_ok(cookies="canary=v2" if i % 2 else None, headers=headers)
        assert r.hostname == OTHER_POD[1]
        assert r.set_cookies == []
        assert r.whoami.header_values("X-Canary-Version") == []
        assert r.whoami.header_values("X-Sticky-Hash") == []
        assert r.whoami.header_values("X-Sticky-Endpoint") == []
    assert decision_counters(gateway) == before
    assert passthrough_count(gateway) == passthrough + n
    # the same gateway still decides for my-app, and counts that
    assert client(gateway).get_ok(cookies="canary=v2").name == "canary-v2"
    assert decision_counters(gateway) != before
    assert passthrough_count(gateway) == passthrough + n


def test_plugin_missing_fail_open_sends_everyone_to_stable(pods, tmp_path):
    envoy = testkit.start_envoy(istio_gateway_config("gateway", pods, with_plugin=False), tmp_path)
    try:
        c = client(envoy)
        for _ in range(10):
            r = c.get_ok(cookies="canary=v2")
            assert r.name == "canary-v1" and not r.set_cookies
        # Without the filter nothing overwrites a client's header: this is why
        # the README says a canary is not a security boundary under FAIL_OPEN.
        assert c.get_ok(headers={"x-canary-version": "canary-v2"}).name == "canary-v2"
    finally:
        envoy.stop()


PERSISTENT_KEYS = "c3RpY2t5LWNhbmFyeSBpc3RpbyB0ZXN0IGtleSAzMiE="  # 32 bytes, test only


def test_persistent_mode_pins_the_pod_and_moves_off_a_dead_one(tmp_path, monkeypatch):
    # vmConfig.env valueFrom: HOST -> Envoy reads the keys from its own
    # environment, as the gateway's istio-proxy gets them from the Secret.
    monkeypatch.setenv("STICKY_CANARY_KEYS", PERSISTENT_KEYS)
    pods = start_pods(tmp_path / "pods")
    envoy = testkit.start_envoy(istio_gateway_config("persistent", pods), tmp_path / "envoy")
    try:
        c = client(envoy)
        r = c.get_ok(cookies="canary=v2")
        assert r.name == "canary-v2"
        (cookie,) = r.cookies_named(COOKIE)
        pinned = r.hostname
        address = {b.hostname: b.address for b in pods["canary-v2"]}
        for _ in range(8):
            again = c.get_ok(cookies=[("canary", "v2"), (COOKIE, cookie.value)])
            assert again.hostname == pinned
            # the pod to pin travels to Envoy's override_host in the header
            assert again.whoami.header_values("X-Sticky-Endpoint") == [address[pinned]]
        # the pinned pod dies: the retry (previous_hosts) lands on the other
        # canary-v2 pod, and the filter re-pins the session there
        (dead,) = [b for b in pods["canary-v2"] if b.hostname == pinned]
        dead.stop()
        moved = c.get_ok(cookies=[("canary", "v2"), (COOKIE, cookie.value)])
        assert moved.name == "canary-v2" and moved.hostname != pinned, envoy.log()[-3000:]
        (new_cookie,) = moved.cookies_named(COOKIE)
        for _ in range(5):
            after = c.get_ok(cookies=[("canary", "v2"), (COOKIE, new_cookie.value)])
            assert after.hostname == moved.hostname
            assert after.whoami.header_values("X-Sticky-Endpoint") == [address[moved.hostname]]
    finally:
        envoy.stop()
        stop_pods(pods)


def test_persistent_mode_concurrent_sessions_on_a_killed_pod_all_succeed(tmp_path, monkeypatch):
    """8 clients whose sessions are all pinned to one pod keep sending (with
    their old cookie, so every request is pinned to it) after the pod dies:
    every request is answered by the other pod of the version. With plain
    Envoy's default circuit breaker (3 concurrent retries) such a burst
    fails with upstream_rq_retry_overflow; istiod's max_retries (2^32-1,
    rendered here as istiod renders it) lets every retry through."""
    import concurrent.futures

    monkeypatch.setenv("STICKY_CANARY_KEYS", PERSISTENT_KEYS)
    pods = start_pods(tmp_path / "pods")
    envoy = testkit.start_envoy(istio_gateway_config("persistent", pods), tmp_path / "envoy")
    try:
        c = client(envoy)
        victim, survivor = (b.hostname for b in pods["canary-v2"])
        sessions = []
        for _ in range(400):  # new sessions land on either pod; keep 8 on the victim
            r = c.get_ok(cookies="canary=v2")
            if r.hostname == victim:
                (ck,) = r.cookies_named(COOKIE)
                sessions.append(ck.value)
                if len(sessions) == 8:
                    break
        assert len(sessions) == 8, "P(fewer than 8 of 400 sessions on one of 2 pods) is negligible"
        (dead,) = [b for b in pods["canary-v2"] if b.hostname == victim]
        dead.stop()
        cluster = "outbound|80|canary-v2|my-app.default.svc.cluster.local"

        def burst(cookie_value: str) -> list[tuple[int, str | None]]:
            cl = client(envoy)
            out = []
            for _ in range(6):
                r = cl.get("/", {}, [("canary", "v2"), (COOKIE, cookie_value)])
                out.append((r.status, r.hostname))
            return out

        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            results = [x for xs in pool.map(burst, sessions) for x in xs]
        assert results == [(200, survivor)] * 48, (results, envoy.log()[-6000:])
        assert envoy.counter(f"cluster.{cluster}.upstream_rq_retry_overflow") == 0
    finally:
        envoy.stop()
        stop_pods(pods)


def test_rendered_configs_pass_envoy_validate(tmp_path, monkeypatch):
    """Both renderings also pass `envoy --mode validate` (what start_envoy
    could not start would fail above anyway; this names the file)."""
    monkeypatch.setenv("STICKY_CANARY_KEYS", PERSISTENT_KEYS)
    fake = {v: [types.SimpleNamespace(port=1) for _ in ps] for v, ps in PODS.items()}
    for variant in ("gateway", "persistent"):
        cfg = testkit.rewrite_config(istio_gateway_config(variant, fake), listener_ports=[testkit.free_port()], admin_port=testkit.free_port())
        path = tmp_path / f"{variant}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        rc, out = testkit.validate_config(path)
        assert rc == 0, out
