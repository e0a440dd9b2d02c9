"""The shipped Istio manifests, applied as shipped to istiod and pilot-agent
built from Istio's module, in front of the pip Envoy 1.40.

One Kubernetes API server for the module (etcd + kube-apiserver on
loopback: the pinned istiod cannot run without one, and only its
Kubernetes config store turns a WasmPlugin into Envoy config), in a
private network namespace with the OCI registry holding the image `make
oci-push` pushed. Each class is one stack: its objects, its whoami pods
(ServiceEntry + WorkloadEntry on 127.0.0.1), a fresh istiod and a gateway
(``pilot-agent proxy router``, labels ``istio: ingressgateway``) that pulls
the image from the registry itself.

- TestWalkthrough: istio/base + istio/gateway on a gateway shared with
  another team: cookie, rules, stickiness, weights, scope, the filter chain
  and the ECDS resource istiod generates.
- TestUpdatesThroughTheApiServer / TestFileConfig: a refused pluginConfig
  and a weight change delivered by ECDS under load, through the API server
  and from istiod's config files; WasmPlugin vs TrafficExtension there.
- TestPersistentMode: istio/persistent: the patched clusters, a pinned pod
  killed under 16 clients, a scale-up.
- TestMigratedIngresses: `sticky-canary migrate --target istio` of
  cli/tests/fixtures/realistic, applied as generated.
- TestWasmArtifactForms: the image pushed as a Wasm artifact with ORAS, two
  layers and one.

Only the registry and the image digest (as ``make oci-push
REGISTRY=127.0.0.1:5000`` renders them into dist/), the migration's
``--wasm-url`` and endpoint addresses are substituted; the test prints
them, the Istio version and its figures at the end of the session. What
the gateway lacks compared with istio-proxy: testkit/istio.py and
istio/README.md ("How this is tested"). Needs private namespaces: root, or
unprivileged user namespaces (testkit.netns says which is missing).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import subprocess
from collections import Counter

import pytest
import yaml

import testkit
from testkit import istio
from testkit.cookie_format import bucket, open_cookie, pod_hash, version_for_bucket, version_id
from testkit.rollouts import assert_binomial, binomial
from testkit.tools import go_tool

import istio_real_support as rs
from istio_real_support import COOKIE, HOST, MY_APP, PODS, V1, V2, note

OTHER_HOST = "billing.other-team.example.org"
LAYOUT_20 = [(V1, 80), (V2, 20)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with rs.cluster(tmp_path_factory.mktemp("istio-real")) as c:
        c.namespaces("default", "istio-system", "other-team")
        yield c


# ---------------------------------------------------------------------------
# the walkthrough on a shared gateway (istio/base + istio/gateway)


def _jwks() -> str:
    """A JWKS with a fresh RSA public key (the RequestAuthentication needs
    one; no token is ever sent)."""
    key = subprocess.run(["openssl", "genrsa", "2048"], capture_output=True, check=True).stdout
    mod = subprocess.run(["openssl", "rsa", "-noout", "-modulus"], input=key, capture_output=True, check=True).stdout
    n = bytes.fromhex(mod.decode().strip().split("=", 1)[1])
    b64 = base64.urlsafe_b64encode(n).decode().rstrip("=")
    return json.dumps({"keys": [{"kty": "RSA", "e": "AQAB", "n": b64, "alg": "RS256", "use": "sig"}]})


def other_team(s: rs.Stack) -> list[dict]:
    """Another team's app on the same gateway (test-supplied): its own
    Gateway, VirtualService and ServiceEntry, one pod."""
    objs = s.start_pods("billing.other-team.svc.cluster.local", "other-team", [("billing", "billing-0")])
    return objs + [
        {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
         "metadata": {"name": "billing-gateway", "namespace": "other-team"},
         "spec": {"selector": {"istio": "ingressgateway"},
                  "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": [OTHER_HOST]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "billing", "namespace": "other-team"},
         "spec": {"hosts": [OTHER_HOST], "gateways": ["billing-gateway"],
                  "http": [{"name": "billing", "route": [{"destination": {
                      "host": "billing.other-team.svc.cluster.local", "port": {"number": 80}}}]}]}},
    ]


def gateway_policies() -> list[dict]:
    """Authentication and authorization on the gateway (test-supplied), so
    the chain shows the plugin's place after them: a RequestAuthentication
    (requests without a token still pass) and an ALLOW-all policy."""
    sel = {"matchLabels": {"istio": "ingressgateway"}}
    return [
        {"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
         "metadata": {"name": "gateway-jwt", "namespace": "istio-system"},
         "spec": {"selector": sel, "jwtRules": [{"issuer": "https://issuer.example", "jwks": _jwks()}]}},
        {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
         "metadata": {"name": "gateway-allow", "namespace": "istio-system"},
         "spec": {"selector": sel, "action": "ALLOW", "rules": [{}]}},
    ]


GATEWAY = ("base/destinationrule.yaml", "gateway/gateway.yaml", "gateway/virtualservice.yaml",
           "gateway/wasmplugin.yaml")


@contextlib.contextmanager
def gateway_stack(cluster: rs.Cluster, name: str, extra=None):
    """istio/base + istio/gateway as shipped (plus `extra(stack)`, objects
    of the test), the four pods, istiod and the gateway, the plugin serving."""
    with rs.stack(cluster, name) as s:
        docs = cluster.docs(*GATEWAY)
        s.apply(s.start_pods(MY_APP, "default", PODS))
        s.apply(docs + (extra(s) if extra else []))
        s.start()
        rs.wait_for_plugin(s)
        s.plugin = rs.one("WasmPlugin", docs)
        yield s


@pytest.fixture(scope="class")
def walkthrough(cluster):
    with gateway_stack(cluster, "walkthrough", lambda s: other_team(s) + gateway_policies()) as s:
        yield s


class TestWalkthrough:
    def test_istiod_puts_the_plugin_after_authn_and_authz_before_the_router(self, walkthrough):
        dump = walkthrough.dump()
        chain = istio.http_filters(dump)
        note(f"gateway listener 0.0.0.0_80 HTTP filters (istiod): {' -> '.join(chain)}")
        wasm = [f for f in chain if f.startswith("extensions.istio.io/")]
        assert wasm == [rs.WASMPLUGIN_ECDS], chain
        at = chain.index(rs.WASMPLUGIN_ECDS)
        assert chain.index("envoy.filters.http.jwt_authn") < at, chain
        assert chain.index("envoy.filters.http.rbac") < at, chain
        assert chain[-1] == "envoy.filters.http.router" and at < len(chain) - 1, chain

    def test_the_ecds_resource_is_the_translated_wasmplugin(self, walkthrough, cluster):
        dump = walkthrough.dump()
        ecds = istio.ecds_configs(dump)
        assert list(ecds) == [rs.WASMPLUGIN_ECDS], list(ecds)
        tc = ecds[rs.WASMPLUGIN_ECDS]
        assert tc["@type"] == "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm", tc
        cfg = tc["config"]
        assert cfg["name"] == "istio-system.sticky-canary~istio-translated-wasmplugin", cfg
        assert cfg["root_id"] == "sticky-canary" and cfg["failure_policy"] == "FAIL_OPEN", cfg
        assert cfg["vm_config"]["runtime"] == "envoy.wasm.runtime.v8", cfg
        # pilot-agent pulled the image (sha256 checked) and rewrote the
        # remote code to its cache file before Envoy saw it.
        filename = cfg["vm_config"]["code"]["local"]["filename"]
        assert filename.startswith("/var/lib/istio/data/") and filename.endswith(f"/{cluster.digest}.wasm"), filename
        cached = walkthrough.envoy.wasm_cache / filename[len("/var/lib/istio/data/"):]
        assert cached.read_bytes() == testkit.WASM_PATH.read_bytes()
        # The pluginConfig arrives as the JSON string the filter parses.
        assert cfg["configuration"]["@type"] == "type.googleapis.com/google.protobuf.StringValue"
        assert json.loads(cfg["configuration"]["value"]) == walkthrough.plugin["spec"]["pluginConfig"]
        note(f"ECDS resource (WasmPlugin istio-system/sticky-canary): {rs.WASMPLUGIN_ECDS}, "
             f"config.name {cfg['name']}")

    def test_a_new_user_gets_the_configured_cookie(self, walkthrough):
        with walkthrough.client() as c:
            r = c.get_ok("/")
        (sc,) = r.cookies_named(COOKIE)
        assert sc.attributes == ["Path=/", "Max-Age=3600", "HttpOnly", "SameSite=Lax"], sc
        session = open_cookie(sc.value)
        assert r.name == version_for_bucket(LAYOUT_20, bucket(session.key)), r
        assert session.version_id == version_id(r.name) and not session.by_rule
        # What the route and the hash saw: the filter's headers, once each.
        assert r.whoami.header_values("x-canary-version") == [r.name], r
        assert r.whoami.header_values("x-sticky-hash") == [pod_hash(session.key)], r

    def test_the_cookie_alone_keeps_version_and_pod(self, walkthrough):
        users = rs.new_users(walkthrough, 20)
        with walkthrough.client() as c:
            for u in users:
                for _ in range(5):
                    r = c.get_ok("/", cookies=u.cookie)
                    assert (r.name, r.hostname) == (u.version, u.pod), (u, r)
                    assert r.set_cookies == [], r  # nothing to renew

    def test_the_canary_cookie_opts_in(self, walkthrough):
        with walkthrough.client() as c:
            r = c.get_ok("/", cookies={"canary": "v2"})
            assert r.name == V2, r
            (sc,) = r.cookies_named(COOKIE)
            s = open_cookie(sc.value)
            assert s.version_id == version_id(V2) and s.by_rule
            # The session cookie alone then keeps canary-v2 and its pod.
            again = c.get_ok("/", cookies=sc.pair)
            assert (again.name, again.hostname) == (V2, r.hostname), again
            assert c.get_ok("/", headers={"x-canary": "never"}).name == V1

    def test_a_clients_route_headers_never_pick(self, walkthrough):
        with walkthrough.client() as c:
            for _ in range(20):
                r = c.get_ok("/", headers={"x-canary": "never", "x-canary-version": V2,
                                          "x-sticky-hash": "0123456789abcdef"})
                assert r.name == V1, r
                assert r.whoami.header_values("x-canary-version") == [V1], r
                (sc,) = r.cookies_named(COOKIE)
                assert r.whoami.header_values("x-sticky-hash") == [pod_hash(open_cookie(sc.value).key)], r

    def test_new_users_split_by_weight(self, walkthrough):
        n = 400
        users = rs.new_users(walkthrough, n)
        for u in users:  # each user exactly where the core's bucket puts them
            assert u.version == version_for_bucket(LAYOUT_20, u.bucket), u
        canary = sum(1 for u in users if u.version == V2)
        assert_binomial(canary, n, 0.20, "new users on canary-v2")
        mean, tol = binomial(n, 0.20)
        pods = Counter(u.pod for u in users)
        walkthrough.assert_route_cache_cleared()
        note(f"walkthrough: {canary}/{n} new users on canary-v2 (20%: {mean:.0f} +- {tol:.0f}, 5 sd); "
             f"pods {dict(sorted(pods.items()))}")

    def test_another_host_on_the_shared_gateway_is_untouched(self, walkthrough):
        before = walkthrough.envoy.counter("sticky_canary_passthrough_total")
        with walkthrough.client(OTHER_HOST) as c:
            r = c.get_ok("/", headers={"x-canary-version": V2, "x-sticky-hash": "0123456789abcdef"})
        assert (r.name, r.hostname) == ("billing", "billing-0"), r
        assert r.set_cookies == [], r
        # The client's own copies are removed, none added.
        assert r.whoami.header_values("x-canary-version") == [], r
        assert r.whoami.header_values("x-sticky-hash") == [], r
        assert walkthrough.envoy.counter("sticky_canary_passthrough_total") == before + 1


# ---------------------------------------------------------------------------
# plugin config updates over ECDS: through the API server, and from files


def bad_then_good(s: rs.Stack, plugin: dict, deliver, ecds_name: str, how: str) -> None:
    """Returning users send requests throughout. A pluginConfig the filter
    refuses (canary-v2 weight 200 > weight_total 100) is delivered: Envoy
    takes the ECDS update, the filter keeps its last good config, nobody
    moves and nothing fails. Then weight 50: it takes effect, and exactly
    the users whose bucket is in [20, 50) move to canary-v2, nobody else
    moves, and those who stay keep their pod."""
    users = rs.new_users(s, 60)
    movers = {i for i, u in enumerate(users) if 20 <= u.bucket < 50}
    assert movers, "no user in the buckets the ramp moves: draw more users"
    log_lines = lambda: s.envoy.log().count("keeping the last good config")  # noqa: E731
    with rs.ReturningUsers(s, users) as load:
        load.wait_all_seen("before", 1)
        counts, logged = s.config_counts(), log_lines()
        load.phase = "bad"
        deliver(rs.set_weight(plugin, 200))
        counts = s.wait_config(counts, "refused")
        # The worker's filter refused it (the line it logs when it keeps
        # the last good config): from here on the bad config is in place.
        testkit.wait_until(lambda: log_lines() > logged, "the filter to log that it keeps the last good config")
        held = json.loads(istio.ecds_configs(s.dump())[ecds_name]["config"]["configuration"]["value"])
        assert held["routes"][0]["versions"][1]["weight"] == 200, held  # Envoy took the update
        assert s.stat(rs.INVALID) == 1  # the filter says the delivered config is not serving
        load.wait_all_seen("bad", 2)
        during = rs.new_users(s, 40)  # new users meanwhile: the last good config (20%)
        for u in during:
            assert u.version == version_for_bucket(LAYOUT_20, u.bucket), u
        load.phase = "good"
        deliver(rs.set_weight(plugin, 50))
        s.wait_config(counts, "accepted")
        # The worker serves weight 50 once a user of bucket [20, 50) gets canary-v2.
        probe = users[min(movers)]
        with s.client() as c:
            testkit.wait_until(lambda: c.get_ok("/", cookies=probe.cookie).name == V2,
                               "weight 50 to reach the worker")
        load.phase = "after"
        load.wait_all_seen("after", 2)
    assert load.failures == [], load.failures[:5]
    assert s.stat(rs.INVALID) == 0
    s.assert_route_cache_cleared()
    for phase in ("before", "bad"):
        for i, u in enumerate(users):
            wrong = [a for a in load.answers[i] if a[0] == phase and a[1:] != (u.version, u.pod)]
            assert wrong == [], (phase, u, wrong[:3])
    moved, kept = set(), 0
    for i, u in enumerate(users):
        version, pod = load.last(i)
        expect = version_for_bucket([(V1, 50), (V2, 50)], u.bucket)
        assert version == expect, (i, u, version)
        if version != u.version:
            moved.add(i)
            assert u.version == V1 and version == V2, (u, version)
        else:
            assert pod == u.pod, (u, pod)  # stayed: same pod
            kept += 1
    assert moved == movers, (sorted(moved), sorted(movers))
    after = rs.new_users(s, 200)
    for u in after:
        assert u.version == version_for_bucket([(V1, 50), (V2, 50)], u.bucket), u
    canary = sum(1 for u in after if u.version == V2)
    assert_binomial(canary, 200, 0.5, "new users on canary-v2 at weight 50")
    total = sum(load.requests.values())
    note(f"ECDS update {how}: {total} requests from {len(users)} returning users across a refused config and "
         f"20 -> 50, {len(load.failures)} failed; {kept} kept version and pod, {len(moved)} moved to canary-v2 "
         f"= exactly the users of buckets [20, 50); new users at 50: {canary}/200 on canary-v2 "
         f"({binomial(200, 0.5)[0]:.0f} +- {binomial(200, 0.5)[1]:.0f})")


@pytest.fixture(scope="class")
def through_api(cluster):
    with gateway_stack(cluster, "ecds-kube") as s:
        yield s


class TestUpdatesThroughTheApiServer:
    def test_a_refused_config_passes_traffic_then_a_good_one_moves_exactly_the_new_buckets(self, through_api):
        bad_then_good(through_api, through_api.plugin, through_api.api.apply, rs.WASMPLUGIN_ECDS,
                      "through the API server (WasmPlugin)")

    def test_a_trafficextension_replaces_the_wasmplugin(self, through_api, cluster):
        (te,) = cluster.docs("trafficextension/trafficextension.yaml")
        through_api.api.delete(through_api.plugin)
        through_api.api.apply(te)

        def served():
            return list(istio.ecds_configs(through_api.dump())) == [rs.TRAFFICEXTENSION_ECDS]

        testkit.wait_until(served, "the TrafficExtension's ECDS filter alone")
        rs.wait_for_plugin(through_api)
        cfg = istio.ecds_configs(through_api.dump())[rs.TRAFFICEXTENSION_ECDS]["config"]
        assert cfg["name"] == "istio-system.sticky-canary", cfg
        assert json.loads(cfg["configuration"]["value"]) == te["spec"]["wasm"]["pluginConfig"]
        chain = istio.http_filters(through_api.dump())
        assert [f for f in chain if f.startswith("extensions.istio.io/")] == [rs.TRAFFICEXTENSION_ECDS], chain
        note(f"ECDS resource (TrafficExtension istio-system/sticky-canary): {rs.TRAFFICEXTENSION_ECDS}, "
             f"config.name {cfg['name']}")


@pytest.fixture(scope="class")
def from_files(cluster):
    """istiod reading Istio config from a directory (--configDir), the
    shipped WasmPlugin among the files; Kubernetes is only its service
    registry (empty: the backends are files too)."""
    with rs.stack(cluster, "files") as s:
        s.write_config(s.start_pods(MY_APP, "default", PODS), "backends")
        for rel in GATEWAY:
            s.write_config(cluster.docs(rel), rel.replace("/", "-")[:-5])
        s.start(files=True)
        yield s


class TestFileConfig:
    def test_a_wasmplugin_read_from_files_is_ignored(self, from_files):
        # istiod read it ...
        configz = json.loads(from_files.istiod.debug("/debug/configz"))
        kinds = Counter(c.get("kind") for c in configz)
        assert any(c.get("kind") == "WasmPlugin" and c.get("metadata", {}).get("name") == "sticky-canary"
                   for c in configz), kinds
        # ... and the routes are served, but without the plugin: no ECDS
        # filter, no cookie, no version header (the file store has no
        # WasmPlugin -> TrafficExtension translation).
        dump = from_files.dump()
        assert istio.ecds_configs(dump) == {}
        assert not [f for f in istio.http_filters(dump) if f.startswith("extensions.istio.io/")]
        with from_files.client() as c:
            r = c.get_ok("/")
        assert r.name == V1 and r.set_cookies == [], r
        assert r.whoami.header_values("x-canary-version") == [], r
        note(f"istiod --configDir: the WasmPlugin file is read ({dict(kinds)} in /debug/configz) and ignored: "
             "no ECDS filter, no cookie")

    def test_a_trafficextension_read_from_files_is_served(self, from_files, cluster):
        (from_files.config_dir / "gateway-wasmplugin.yaml").unlink()
        from_files.write_config(cluster.docs("trafficextension/trafficextension.yaml"), "trafficextension")
        r = rs.wait_for_plugin(from_files)
        assert r.name == version_for_bucket(LAYOUT_20, bucket(open_cookie(r.cookies_named(COOKIE)[0].value).key))
        assert list(istio.ecds_configs(from_files.dump())) == [rs.TRAFFICEXTENSION_ECDS]

    def test_a_refused_config_by_file_passes_traffic_then_a_good_one_takes_effect(self, from_files, cluster):
        (te,) = cluster.docs("trafficextension/trafficextension.yaml")
        bad_then_good(from_files, te, lambda doc: from_files.write_config([doc], "trafficextension"),
                      rs.TRAFFICEXTENSION_ECDS, "from files (TrafficExtension, file rewritten)")


# ---------------------------------------------------------------------------
# persistent mode (istio/persistent + the gateway)

V1_CLUSTER = f"outbound|80|canary-v1|{MY_APP}"
V2_CLUSTER = f"outbound|80|canary-v2|{MY_APP}"


@pytest.fixture(scope="class")
def persistent(cluster):
    with rs.stack(cluster, "persistent") as s:
        docs = cluster.docs("gateway/gateway.yaml", "persistent/destinationrule.yaml",
                            "persistent/virtualservice.yaml", "persistent/envoyfilter.yaml",
                            "persistent/wasmplugin.yaml")
        s.apply(s.start_pods(MY_APP, "default", PODS))
        s.apply(docs)
        # What istio/persistent/patches/gateway-keys.yaml gives the
        # gateway's istio-proxy from a Secret: the sealing key in its
        # environment (Envoy passes it to the Wasm VM: vmConfig.env HOST).
        keys = base64.b64encode(os.urandom(32)).decode()
        note("persistent mode: STICKY_CANARY_KEYS in pilot-agent's environment, as "
             "istio/persistent/patches/gateway-keys.yaml sets it on the gateway from a Secret")
        s.start(env={"STICKY_CANARY_KEYS": keys})
        rs.wait_for_plugin(s)
        s.users = rs.new_users(s, 48)
        yield s


class TestPersistentMode:
    def test_istiod_patches_the_clusters_and_the_routes(self, persistent):
        dump = persistent.dump()
        for name in (V1_CLUSTER, V2_CLUSTER):
            c = istio.cluster(dump, name)
            assert c is not None, name
            (policy,) = c["load_balancing_policy"]["policies"]
            ext = policy["typed_extension_config"]
            assert ext["name"] == "envoy.load_balancing_policies.override_host", ext
            assert ext["typed_config"]["override_host_sources"] == [{"header": "x-sticky-endpoint"}], ext
            # localityLbSetting.enabled: false -> nothing Envoy refuses beside load_balancing_policy
            assert "locality_weighted_lb_config" not in c.get("common_lb_config", {}), c.get("common_lb_config")
            assert c["outlier_detection"]["consecutive_5xx"] == 3, c["outlier_detection"]
            (thresholds,) = c["circuit_breakers"]["thresholds"]
            assert thresholds["max_retries"] == 4294967295, thresholds
        rc = istio.route_config(dump, "http.80")
        (vh,) = [v for v in rc["virtual_hosts"] if v["name"] == f"{HOST}:80"]
        assert [r["name"] for r in vh["routes"]] == ["canary-v2", "stable"], vh
        for r in vh["routes"]:
            route = r["route"]
            assert route["hash_policy"] == [{"header": {"header_name": "x-sticky-hash"}}], route
            retry = route["retry_policy"]
            assert retry["num_retries"] == 3, retry
            assert [p["name"] for p in retry["retry_host_predicate"]] == ["envoy.retry_host_predicates.previous_hosts"]

    def test_a_session_stays_on_its_pod(self, persistent):
        addresses = {p.backend.hostname: p.backend.address for p in persistent.pods.values()}
        with persistent.client() as c:
            for u in persistent.users:
                for _ in range(5):
                    r = c.get_ok("/", cookies=u.cookie)
                    assert (r.name, r.hostname) == (u.version, u.pod), (u, r)
                    assert r.whoami.header_values("x-sticky-endpoint") == [addresses[u.pod]], r

    def test_killing_a_pinned_pod_under_16_clients_fails_no_request(self, persistent):
        users = persistent.users
        on_pod = Counter(u.pod for u in users if u.version == V1)
        victim = on_pod.most_common(1)[0][0]
        other_v1 = [h for h, p in persistent.pods.items() if p.version == V1 and h != victim]
        clients = [u for u in users if u.pod == victim][:8] + [u for u in users if u.pod != victim][:8]
        assert len(clients) == 16, Counter(u.pod for u in users)
        with rs.ReturningUsers(persistent, clients, threads=16) as load:
            load.wait_all_seen("before", 3)
            persistent.pods[victim].backend.kill()
            load.phase = "killed"
            load.wait_all_seen("killed", 20)
        assert load.failures == [], load.failures[:5]
        persistent.assert_route_cache_cleared()
        for i, u in enumerate(clients):
            version, pod = load.last(i)
            if u.pod == victim:  # re-pinned on the other canary-v1 pod
                assert version == V1 and pod in other_v1, (u, version, pod)
                u.pod, u.cookie = pod, load.jar[i]
            else:
                assert (version, pod) == (u.version, u.pod), (u, version, pod)
        total = sum(load.requests.values())
        note(f"persistent mode: killed {victim} (SIGKILL) under 16 clients: {total} requests, "
             f"{len(load.failures)} failed; its 8 users moved to {other_v1}, the other 8 stayed")
        persistent.users = [u for u in users if u.pod != victim or u in clients]

    def test_scale_up_moves_nobody(self, persistent):
        new = [persistent.add_pod(V1, "my-app-v1-2"), persistent.add_pod(V2, "my-app-v2-2")]
        for cluster_name, pod in zip((V1_CLUSTER, V2_CLUSTER), new):
            testkit.wait_until(lambda: pod.backend.address in persistent.envoy.cluster_hosts(cluster_name),
                               f"{pod.backend.hostname} in {cluster_name}")
        with persistent.client() as c:
            for u in persistent.users:
                r = c.get_ok("/", cookies=u.cookie)
                assert (r.name, r.hostname) == (u.version, u.pod), (u, r)
            fresh = Counter(c.get_ok("/", cookies={"canary": "v2"}).hostname for _ in range(60))
        assert fresh["my-app-v2-2"] > 0, fresh  # new sessions do reach the new pod
        note(f"persistent mode: scale-up 2 -> 3 pods per version: {len(persistent.users)} pinned users, 0 moved; "
             f"60 new canary-v2 sessions over the pods: {dict(sorted(fresh.items()))}")


# ---------------------------------------------------------------------------
# sticky-canary migrate --target istio, applied as generated

REALISTIC = testkit.REPO_ROOT / "cli" / "tests" / "fixtures" / "realistic" / "input.yaml"
# Service host -> (namespace, version name = whoami Name, pods, Service port)
MIGRATED = {
    "shop.shop.svc.cluster.local": ("shop", "shop-shop-80", 2, 80),
    "shop-next.shop.svc.cluster.local": ("shop", "shop-shop-next-80", 2, 80),
    "blog.blog.svc.cluster.local": ("blog", "blog-blog-80", 2, 80),
    "blog-next.blog.svc.cluster.local": ("blog", "blog-blog-next-80", 1, 80),
    "api.api.svc.cluster.local": ("api", "api-api-8080", 1, 8080),
    "api-next.api.svc.cluster.local": ("api", "api-api-next-8080", 1, 8080),
    "app.default.svc.cluster.local": ("default", "default-app-80", 2, 80),
    "static.default.svc.cluster.local": ("default", "default-static-80", 1, 80),
}
SHOP, SHOP_NEXT = "shop-shop-80", "shop-shop-next-80"
BLOG, BLOG_NEXT = "blog-blog-80", "blog-blog-next-80"
API, API_NEXT = "api-api-8080", "api-api-next-8080"


def migrate_to_istio(workdir, wasm_url: str) -> list[dict]:
    """`sticky-canary migrate --target istio` of the realistic fixture."""
    subprocess.run(["cargo", "build", "-q", "-p", "sticky-canary-cli"], cwd=testkit.REPO_ROOT, check=True,
                   timeout=testkit.hang_guard(1800))
    out = workdir / "migrated"
    r = subprocess.run([str(testkit.REPO_ROOT / "target" / "debug" / "sticky-canary"), "migrate", "--target", "istio",
                        "--wasm-url", wasm_url, "-o", str(out), str(REALISTIC)],
                       capture_output=True, text=True, timeout=testkit.hang_guard(300))
    assert r.returncode == 0, r.stdout + r.stderr + (out / "report.txt").read_text()
    return [d for d in yaml.safe_load_all((out / "istio.yaml").read_text()) if d]


@pytest.fixture(scope="class")
def migrated(cluster):
    with rs.stack(cluster, "migrated") as s:
        url = f"oci://{cluster.registry}/sticky-canary:{cluster.image['tag']}"
        docs = migrate_to_istio(s.workdir, url)
        note(f"migrate --target istio (cli/tests/fixtures/realistic): --wasm-url {url} (the registry); "
             "nothing else changed")
        cluster.namespaces("shop", "blog", "api")
        for host, (ns, version, n, port) in MIGRATED.items():
            s.apply(s.start_pods(host, ns, [(version, f"{version}-{i}") for i in range(n)], app=host.split(".")[0],
                                 port=port))
        s.apply(docs)
        keys = base64.b64encode(os.urandom(32)).decode()
        s.start(env={"STICKY_CANARY_KEYS": keys})  # the shop's sealed cookies (its report says so)
        rs.wait_for_plugin(s, "shop.example.com", "SHOPSESSION")
        yield s


def visit(s: rs.Stack, host: str, path: str = "/", headers=None, cookies=None) -> testkit.Response:
    with s.client(host) as c:
        return c.get(path, headers=headers, cookies=cookies)


class TestMigratedIngresses:
    def test_istiod_serves_every_generated_object(self, migrated):
        assert migrated.config_counts()[1] == 0  # nothing refused
        migrated.assert_route_cache_cleared()
        dump = migrated.dump()
        assert list(istio.ecds_configs(dump)) == [rs.WASMPLUGIN_ECDS]
        rc = istio.route_config(dump, "http.80")
        hosts = sorted(v["name"] for v in rc["virtual_hosts"])
        assert hosts == ["api.example.com:80", "app.example.com:80", "blog.example.com:80", "shop.example.com:80"], hosts
        for svc in ("shop", "shop-next"):  # the generated EnvoyFilter matched the pinned Services
            c = istio.cluster(dump, f"outbound|80||{svc}.shop.svc.cluster.local")
            (policy,) = c["load_balancing_policy"]["policies"]
            assert policy["typed_extension_config"]["name"] == "envoy.load_balancing_policies.override_host"

    def test_shop_persistent_cookie_and_rules(self, migrated):
        r = visit(migrated, "shop.example.com")
        (c,) = r.cookies_named("SHOPSESSION")
        assert c.attributes == ["Path=/", "Max-Age=3600", "HttpOnly", "SameSite=Strict"], c
        assert c.value.startswith("2"), c  # sealed: persistent mode records the pod
        assert visit(migrated, "shop.example.com", headers={"X-Shop-Canary": "beta"}).name == SHOP_NEXT
        assert visit(migrated, "shop.example.com", cookies={"shop_canary": "always"}).name == SHOP_NEXT
        assert visit(migrated, "shop.example.com", cookies={"shop_canary": "never"}).name == SHOP

    @pytest.mark.parametrize("host,cookie,canary,weight", [
        ("shop.example.com", "SHOPSESSION", SHOP_NEXT, 0.10),
        ("blog.example.com", "BLOGID", BLOG_NEXT, 0.30),
    ])
    def test_weight_per_new_user_and_returning_users_keep_version_and_pod(self, migrated, host, cookie, canary,
                                                                          weight):
        n = 400
        users = rs.new_users(migrated, n, host, cookie)
        k = sum(1 for u in users if u.version == canary)
        assert_binomial(k, n, weight, f"{host}: new users on {canary}")
        with migrated.client(host) as c:
            for u in users[:60]:
                r = c.get_ok("/", cookies=u.cookie)
                assert (r.name, r.hostname) == (u.version, u.pod), (u, r)
        mean, tol = binomial(n, weight)
        note(f"migrated {host}: {k}/{n} new users on {canary} ({mean:.0f} +- {tol:.0f}, 5 sd); "
             "60 returning users kept version and pod")

    def test_blog_cross_site_cookie(self, migrated):
        (c,) = visit(migrated, "blog.example.com").cookies_named("BLOGID")
        assert [a for a in c.attributes if not a.startswith("Expires=")] == [
            "Path=/", "Domain=example.com", "Max-Age=7200", "Secure", "HttpOnly", "SameSite=None"], c
        assert len([a for a in c.attributes if a.startswith("Expires=")]) == 1, c

    def test_api_rules_and_user_id_key(self, migrated):
        assert visit(migrated, "api.example.com", "/v1/orders", headers={"X-Api-Track": "beta-7"}).name == API_NEXT
        assert visit(migrated, "api.example.com", "/v1/orders", cookies={"api_canary": "never"}).name == API
        n = 300
        first = {i: visit(migrated, "api.example.com", "/v1/x", headers={"X-User-Id": f"user-{i}"}).name
                 for i in range(n)}
        assert_binomial(sum(1 for v in first.values() if v == API_NEXT), n, 0.5, "api users on api-next")
        for i in range(50):
            assert visit(migrated, "api.example.com", "/v1/y", headers={"X-User-Id": f"user-{i}"}).name == first[i]
        assert visit(migrated, "api.example.com", "/v1x").status == 404

    @pytest.mark.parametrize("path", ["/something", "/somewhereelse", "/static"])
    def test_app_cookie_path_is_the_location(self, migrated, path):
        r = visit(migrated, "app.example.com", path + "/page")
        (c,) = r.cookies_named("INGRESSCOOKIE")
        assert c.attributes == [f"Path={path}", "HttpOnly"], c
        for _ in range(5):
            again = visit(migrated, "app.example.com", path + "/page", cookies=c.pair)
            assert again.hostname == r.hostname and again.set_cookies == [], again


# ---------------------------------------------------------------------------
# the Wasm artifact image form: two layers work, one layer is refused

WASM_LAYER = "application/vnd.module.wasm.content.layer.v1+wasm"
WASM_CONFIG_LAYER = "application/vnd.module.wasm.config.v1+json"


def oras_push(cluster: rs.Cluster, workdir, tag: str, files: list[str]) -> str:
    """`oras push` of `files` (name:media type, in `workdir`) as the Wasm
    artifact form, the way a user pushes a .wasm with ORAS; the manifest
    digest (hex)."""
    r = cluster.ns.run([str(go_tool("oras")), "push", "--plain-http", "--artifact-type", WASM_LAYER,
                        f"{cluster.registry}/sticky-canary:{tag}", *files], cwd=workdir,
                       timeout=testkit.hang_guard(120))
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"Digest: sha256:([0-9a-f]{64})", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    return m.group(1)


@pytest.fixture(scope="class")
def artifacts(cluster):
    """The gateway stack with the WasmPlugin pointing at artifact images
    pushed with ORAS (test-supplied tags and digests: a failure mode, not
    the shipped path)."""
    with rs.stack(cluster, "artifacts") as s:
        d = s.workdir / "artifact"
        d.mkdir(parents=True)
        (d / "plugin.wasm").write_bytes(testkit.WASM_PATH.read_bytes())
        (d / "config.json").write_text("{}\n")
        s.two = oras_push(cluster, d, "two-layers", [f"plugin.wasm:{WASM_LAYER}", f"config.json:{WASM_CONFIG_LAYER}"])
        s.one = oras_push(cluster, d, "one-layer", [f"plugin.wasm:{WASM_LAYER}"])
        docs = cluster.docs(*GATEWAY)
        s.plugin = rs.one("WasmPlugin", docs)
        s.apply(s.start_pods(MY_APP, "default", PODS))
        s.apply([d for d in docs if d["kind"] != "WasmPlugin"] + [with_image(s.plugin, cluster, "two-layers", s.two)])
        s.start()
        yield s


def with_image(plugin: dict, cluster: rs.Cluster, tag: str, digest: str) -> dict:
    p = json.loads(json.dumps(plugin))
    p["spec"]["url"] = f"oci://{cluster.registry}/sticky-canary:{tag}"
    p["spec"]["sha256"] = digest
    return p


class TestWasmArtifactForms:
    def test_two_layers_are_pulled_and_run(self, artifacts):
        r = rs.wait_for_plugin(artifacts)
        assert r.name == version_for_bucket(LAYOUT_20, bucket(open_cookie(r.cookies_named(COOKIE)[0].value).key))

    def test_one_layer_is_refused_and_fail_open_sends_everyone_to_stable(self, artifacts, cluster):
        artifacts.api.apply(with_image(artifacts.plugin, cluster, "one-layer", artifacts.one))

        def replaced():
            tc = istio.ecds_configs(artifacts.dump()).get(rs.WASMPLUGIN_ECDS, {})
            return tc.get("@type", "").endswith(".rbac.v3.RBAC")

        testkit.wait_until(replaced, "pilot-agent to put its allow-all RBAC filter in the plugin's place")
        rbac = istio.ecds_configs(artifacts.dump())[rs.WASMPLUGIN_ECDS]
        assert rbac.get("rules_stat_prefix") == "wasm-default-allow" and "rules" not in rbac, rbac
        assert "number of layers must be 2 but got 1" in artifacts.envoy.log()
        with artifacts.client() as c:
            for _ in range(20):
                r = c.get_ok("/")
                assert r.name == V1 and r.set_cookies == [], r  # no filter: the default route, no session
                assert r.whoami.header_values("x-canary-version") == [], r
            # The cost istio/README.md states for FAIL_OPEN: nothing removes
            # a client's own route header while the filter is not running.
            assert c.get_ok("/", headers={"x-canary-version": V2}).name == V2
        note("Wasm artifact form pushed with oras: two layers (.wasm + wasm config) pulled and run; one layer "
             "refused by pilot-agent ('number of layers must be 2 but got 1'), FAIL_OPEN: allow-all RBAC in "
             "its place, everyone on stable, and a client's own x-canary-version routes")
