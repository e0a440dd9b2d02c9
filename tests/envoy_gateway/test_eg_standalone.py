"""The shipped envoy-gateway/ manifests through Envoy Gateway's own control
plane (v1.9.0, standalone: File provider + Host infrastructure) and the pip
Envoy 1.40 it runs, with the module pulled by Envoy Gateway's wasm cache
from a real OCI registry (`code.type: Image`, `sha256` = the image's
manifest digest, checked), pushed there by what `make oci-push` runs.

Applied as shipped: gateway.yaml, httproute.yaml, and envoyextensionpolicy.yaml
as `make oci-push` renders it into dist/. Substituted (printed by the
fixture and by every test): the registry and digest (the template's
placeholders, rendered by istio/oci.py), and the backend addresses: the
File provider has no EndpointSlices, so each Service backendRef becomes a
`Backend` of the same name on 127.0.0.1. Left out: backendtrafficpolicy.yaml,
whose consistent hash makes Envoy Gateway v1.9.0's File provider panic
(test_eg_standalone_btp.py), so balanced mode keeps the version here but
not the pod (persistent mode keeps the pod: test_eg_persistent.py). Added
beside them: Envoy's client certificate Secret (standalone installation,
see testkit.envoy_gateway.envoy_tls_secret) and another team's HTTPRoute
on the same Gateway.

Tests share one stack (about 10 s to start) and run in file order; each
test that changes the watched directory puts it back and waits until Envoy
runs the shipped config again.
"""

from __future__ import annotations

import collections
import json
import re
from dataclasses import dataclass

import pytest

from testkit.cookie_format import bucket, open_cookie, pod_hash, version_for_bucket
from testkit.envoy_gateway import SHIPPED, WASM_SERVER, EnvoyGateway, envoy_tls_secret, load, services_to_backends
from testkit.registry import Registry, oci_build_and_push
from testkit.rollouts import binomial
from testkit.traffic import Session, Traffic
from testkit.wait import wait_until

HOST = "my-app.example.com"
OTHER = "billing.other-team.example.org"
COOKIE = "my-sticky-cookie"
ATTRIBUTES = ["Path=/", "Max-Age=3600", "HttpOnly", "SameSite=Lax"]  # envoyextensionpolicy.yaml's cookie
PODS = [("canary-v1", "my-app-v1-0", 9001), ("canary-v1", "my-app-v1-1", 9002),
        ("canary-v2", "my-app-v2-0", 9003), ("canary-v2", "my-app-v2-1", 9004),
        ("billing", "billing-0", 9005)]
ENDPOINTS = {"my-app-v1": [9001, 9002], "my-app-v2": [9003, 9004], "billing": [9005]}
FILTER = "envoy.filters.http.wasm//default/sticky-canary/wasm/0"
EEP = "envoyextensionpolicy.yaml"
CLEAR_FAILED = "sticky_canary_route_cache_clear_failed_total"

# Another team's HTTPRoute on the shared Gateway (the test's own object).
BILLING_ROUTE = {
    "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
    "metadata": {"name": "billing", "namespace": "default"},
    "spec": {"parentRefs": [{"name": "my-app-gateway"}], "hostnames": [OTHER],
             "rules": [{"backendRefs": [{"name": "billing", "port": 80}]}]},
}


@dataclass
class Stack:
    eg: EnvoyGateway
    registry: Registry
    image: dict  # istio/oci.py --json
    shipped_eep: list  # the rendered EnvoyExtensionPolicy, as applied

    @property
    def all(self):  # the processes, for the failure report
        return self.eg.all

    def show(self) -> None:
        print("Substituted in the shipped manifests:\n" + str(self.eg.subs))


@pytest.fixture(scope="module")
def stack(eg_ready, tmp_path_factory, say):
    work = tmp_path_factory.mktemp("eg-image")
    eg = EnvoyGateway(work)
    try:
        eg.start_pods(PODS)
        registry = eg.start_registry()
        repo = f"{registry.address}/sticky"
        image = oci_build_and_push(repo, work / "oci", ns=eg.ns)
        digest = image["manifest_digest"].removeprefix("sha256:")
        eep = load(work / "oci" / "dist" / "envoy-gateway" / EEP)
        shipped = load(SHIPPED / EEP)
        # What `make oci-push` rendered differs from the shipped file in the
        # image reference and the digest only.
        code = eep[0]["spec"]["wasm"][0]["code"]["image"]
        assert (code["url"], code["sha256"]) == (image["image"], digest)
        shipped[0]["spec"]["wasm"][0]["code"]["image"].update(url=image["image"], sha256=digest)
        assert eep == shipped
        eg.subs.note(f"{EEP}: as `make oci-push REGISTRY={repo}` rendered it into dist/: code.image.url "
                     f"REGISTRY.example/REPLACE-ME/sticky-canary:0.1.0 -> {image['image']}, sha256 64 zeros -> "
                     f"{digest} (the manifest digest of the image it pushed)")
        route = load(SHIPPED / "httproute.yaml")
        billing = [json.loads(json.dumps(BILLING_ROUTE))]
        backends = services_to_backends(route + billing, ENDPOINTS, eg.subs)
        eg.subs.note("backendtrafficpolicy.yaml: left out: its consistentHash makes Envoy Gateway v1.9.0's File "
                     "provider panic (test_eg_standalone_btp.py): the version is kept, the pod is not")
        eg.subs.note("added: install.yaml (Secret envoy-gateway-system/envoy from certgen: the standalone "
                     f"installation), team-billing.yaml (another team's HTTPRoute for {OTHER})")
        eg.write("gateway.yaml", load(SHIPPED / "gateway.yaml"))
        eg.write("httproute.yaml", route)
        eg.write("backends.yaml", backends)
        eg.write("team-billing.yaml", billing)
        eg.write("install.yaml", [envoy_tls_secret(work)])
        eg.write(EEP, eep)
        eg.start()
        say(f"Envoy Gateway stack ({__name__}) substituted:", eg.subs.lines)
        yield Stack(eg, registry, image, eep)
    finally:
        eg.stop()


# ---- helpers ------------------------------------------------------------


def cookie_of(r):
    (c,) = r.cookies_named(COOKIE)
    return c


def seen(r, header: str) -> list[str]:
    """What the backend received for `header`."""
    return r.whoami.header_values(header) if r.whoami else []


def predicted(value: str, weight: int) -> str:
    """The version the filter gives the session key in a cookie value at
    canary-v2's `weight` (cookie_format: the documented bucket)."""
    return version_for_bucket([("canary-v1", 100 - weight), ("canary-v2", weight)], bucket(open_cookie(value).key))


def weights(stack: Stack) -> list:
    """canary-v2's weight in the plugin config Envoy runs now (None: no filter)."""
    out = []
    for text in stack.eg.plugin_configs():
        try:
            out.append(json.loads(text)["routes"][0]["versions"][1]["weight"])
        except (ValueError, KeyError, IndexError):
            out.append("unparsable")
    return out


def set_weight(w):
    def change(docs):
        docs[0]["spec"]["wasm"][0]["config"]["routes"][0]["versions"][1]["weight"] = w
    return change


def restore(stack: Stack) -> None:
    """The shipped (rendered) policy back, and Envoy running it."""
    stack.eg.write(EEP, stack.shipped_eep)
    wait_until(lambda: weights(stack) == [20], lambda: f"the shipped config back in Envoy (now {weights(stack)})")


def new_users(stack: Stack, n: int, headers=None) -> list:
    with stack.eg.client(HOST) as c:
        return [c.get_ok("/", headers=headers) for _ in range(n)]


def during_change(stack: Stack, sessions: list[Session], change, until, what: str):
    """Traffic from `sessions` while `change()` is written and until
    `until()` holds in Envoy; then 200 more requests. The counted result."""
    traffic = Traffic(lambda: stack.eg.client(HOST), sessions).start()
    try:
        traffic.wait_sent(50)
        change()
        wait_until(until, what)
        traffic.wait_sent(200)
    finally:
        result = traffic.stop()
    print(f"during the change: {result}")
    return result


def sessions(stack: Stack, n: int) -> list[Session]:
    out = []
    for r in new_users(stack, n):
        out.append(Session(cookie_of(r).pair, r.name, COOKIE))
    return out


# ---- what Envoy Gateway makes of the manifests -----------------------------


def test_envoy_gateway_inlines_the_filter_disabled_and_enables_it_on_my_apps_routes(stack):
    stack.show()
    (hf,) = stack.eg.wasm_filters()
    # v1.9.0 standalone renders an empty kind (the File provider's objects
    # have no TypeMeta): envoy.filters.http.wasm/<kind>/<ns>/<name>/wasm/<i>.
    assert hf["name"] == FILTER, f"the wasm filter is now named {hf['name']!r}: update README and envoy-gateway/README"
    assert hf.get("disabled") is True
    cfg = hf["typed_config"]["config"]
    assert (cfg["name"], cfg["root_id"], cfg["fail_open"]) == ("sticky-canary", "sticky-canary", True)
    remote = cfg["vm_config"]["code"]["remote"]
    # Envoy fetches the module from Envoy Gateway, never from the registry,
    # and checks the sha256 of the .wasm itself.
    assert remote["http_uri"]["uri"].startswith(f"https://{WASM_SERVER}:18002/"), remote
    assert remote["sha256"] == stack.image["plugin_wasm_sha256"]
    assert json.loads(cfg["configuration"]["value"]) == stack.shipped_eep[0]["spec"]["wasm"][0]["config"]
    # Inlined in the listener: no ECDS.
    dump = json.dumps(stack.eg.config_dump())
    assert "config_discovery" not in dump and "EcdsConfigDump" not in dump
    per_route = {}
    for c in stack.eg.config_dump("dynamic_route_configs")["configs"]:
        for vh in c["route_config"]["virtual_hosts"]:
            for r in vh["routes"]:
                per_route[r["name"]] = sorted(r.get("typed_per_filter_config", {}))
    assert per_route == {
        "httproute/default/my-app/rule/0/match/0/my-app_example_com": [FILTER],
        "httproute/default/my-app/rule/1/match/0/my-app_example_com": [FILTER],
        "httproute/default/billing/rule/0/match/0/billing_other-team_example_org": [],
    }
    # Envoy Gateway's wasm cache pulled the manifest and the layer.
    layer = json.loads((stack.eg.work / "oci" / "oci" / "blobs" / "sha256" /
                        stack.image["manifest_digest"].removeprefix("sha256:")).read_bytes())["layers"][0]["digest"]
    pulls = [r for r in stack.registry.requests() if r.startswith('"GET') and "go-containerregistry" in r]
    assert any("/v2/sticky/sticky-canary/manifests/" in r and '" 200 ' in r for r in pulls), pulls
    assert any(f"/v2/sticky/sticky-canary/blobs/{layer}" in r and '" 200 ' in r for r in pulls), pulls


# ---- the walkthrough ----------------------------------------------------------


def test_a_new_user_gets_the_cookie_with_exactly_the_configured_attributes(stack):
    stack.show()
    for r in new_users(stack, 20):
        c = cookie_of(r)
        assert c.attributes == ATTRIBUTES, r.set_cookies
        assert r.name == predicted(c.value, 20)
        # The backend saw the filter's decision: the version that answered,
        # and the session's pod hash (what the shipped BackendTrafficPolicy
        # hashes on).
        assert seen(r, "x-canary-version") == [r.name]
        assert seen(r, "x-sticky-hash") == [pod_hash(open_cookie(c.value).key)]


def test_canary_cookie_and_header_rules_select_the_version(stack):
    stack.show()
    with stack.eg.client(HOST) as c:
        for _ in range(10):
            assert c.get_ok("/", cookies={"canary": "v2"}).name == "canary-v2"
            assert c.get_ok("/", headers={"x-canary": "always"}).name == "canary-v2"
            assert c.get_ok("/", headers={"x-canary": "never"}).name == "canary-v1"


def test_the_cookie_alone_keeps_the_version(stack):
    stack.show()
    users = sessions(stack, 30)
    assert {s.version for s in users} == {"canary-v1", "canary-v2"}
    with stack.eg.client(HOST) as c:
        for s in users:
            answers = [c.get_ok("/", cookies=s.cookie) for _ in range(5)]
            assert {r.name for r in answers} == {s.version}
            # The same pod hash every time (the pod, where the hash can be used).
            hashes = {tuple(seen(r, "x-sticky-hash")) for r in answers}
            assert hashes == {(pod_hash(open_cookie(s.cookie.split("=", 1)[1]).key),)}
            assert all(r.set_cookies == [] for r in answers), "a returning user within Max-Age gets no new cookie"


def test_new_users_split_by_weight_within_5_sd(stack):
    stack.show()
    n = 400
    answers = new_users(stack, n)
    canary = sum(r.name == "canary-v2" for r in answers)
    mean, tol = binomial(n, 0.20)
    print(f"{canary} of {n} new users on canary-v2; expected {mean:.0f} +- {tol:.0f} (5 sd)")
    assert abs(canary - mean) <= tol
    # And each one exactly where its bucket says.
    assert all(r.name == predicted(cookie_of(r).value, 20) for r in answers)


# ---- scope --------------------------------------------------------------------


def test_another_teams_route_gets_no_cookie_and_no_version_header(stack):
    stack.show()
    with stack.eg.client(OTHER) as c:
        for headers in ({}, {"Cookie": "canary=v2"}):
            r = c.get_ok("/", headers=headers)
            assert r.name == "billing" and r.set_cookies == []
            assert seen(r, "x-canary-version") == [] and seen(r, "x-sticky-hash") == []
        # The filter does not run there at all: a client's header reaches
        # billing as sent, and picks nothing (billing has one version).
        r = c.get_ok("/", headers={"x-canary-version": "canary-v2"})
        assert r.name == "billing" and r.set_cookies == [] and seen(r, "x-canary-version") == ["canary-v2"]


def test_a_clients_x_canary_version_never_picks_the_version(stack):
    stack.show()
    answers = new_users(stack, 100, headers={"x-canary-version": "canary-v2"})
    for r in answers:
        assert r.name == predicted(cookie_of(r).value, 20)
        assert seen(r, "x-canary-version") == [r.name]  # the filter's value, never the client's
    assert collections.Counter(r.name for r in answers)["canary-v1"] > 0
    with stack.eg.client(HOST) as c:
        r = c.get_ok("/", headers={"x-canary": "never", "x-canary-version": "canary-v2"})
        assert r.name == "canary-v1" and seen(r, "x-canary-version") == ["canary-v1"]


def test_the_route_cache_clear_succeeded_and_routing_follows_the_header(stack):
    """Every request above changed request headers and asked Envoy to clear
    the route cache; the routing assertions above show the route followed
    the header. The failure counter exists (the module defines it at 0)
    and never moved."""
    stack.show()
    counters = stack.eg.counters("sticky_canary")
    decided = sum(v for k, v in counters.items() if k.startswith("sticky_canary_decisions_total"))
    assert decided > 500, counters
    assert counters.get(CLEAR_FAILED) == 0, {k: v for k, v in counters.items() if "route_cache" in k}


# ---- safety -------------------------------------------------------------------


def test_a_live_weight_change_moves_exactly_the_users_of_the_new_buckets(stack):
    stack.show()
    users = sessions(stack, 60)
    eg_pid, envoy_pids = stack.eg.proc.pid, stack.eg.envoy_pids()
    # The traffic's users do not take the cookies they are given, so that
    # each user's first request after the change shows whether it moved.
    result = during_change(stack, [Session(s.cookie, s.version) for s in users] + [Session(None)] * 10,
                           lambda: stack.eg.edit(EEP, set_weight(50)), lambda: weights(stack) == [50],
                           "weight 50 in Envoy")
    try:
        assert result.failed == 0, result.errors
        assert stack.eg.proc.pid == eg_pid and stack.eg.proc.alive() and stack.eg.envoy_pids() == envoy_pids
        moved = 0
        with stack.eg.client(HOST) as c:
            for s in users:
                value = s.cookie.split("=", 1)[1]
                was, now = predicted(value, 20), predicted(value, 50)
                assert s.version == was
                r = c.get_ok("/", cookies=s.cookie)
                assert r.name == now, (was, now, r)
                moved += was != now
                # Exactly the users of buckets 20..49 move, all to the canary;
                # only they get a new cookie.
                assert (r.cookies_named(COOKIE) != []) == (was != now)
        b = [bucket(open_cookie(s.cookie.split("=", 1)[1]).key) for s in users]
        assert moved == sum(20 <= x < 50 for x in b)
        print(f"{moved} of {len(users)} returning users moved to canary-v2 (their buckets are in 20..49); none back")
    finally:
        restore(stack)


def test_an_invalid_plugin_config_keeps_the_last_good_one_and_traffic_flows(stack):
    """The filter's rule for an invalid update: the last good config of the
    plugin keeps serving. Envoy runs the first policy update after it
    starts on new Wasm VMs, which take it from Envoy's shared data
    (test_eg_persistent.py's last test); here a good update comes first
    (the shipped config with the route entry's default `enabled: true`
    written out), as any running installation has had, so the invalid one
    meets VMs that ran a good config themselves."""
    stack.show()

    def noop(docs):
        docs[0]["spec"]["wasm"][0]["config"]["routes"][0]["enabled"] = True

    stack.eg.edit(EEP, noop)
    wait_until(lambda: all('"enabled":true' in c for c in stack.eg.plugin_configs() or [""]),
               "the no-op update in Envoy")
    users = sessions(stack, 30)
    refused = "sticky_canary_config_total.result=.=refused;.;"
    refused_before = stack.eg.counters("sticky_canary_config_total").get(refused, 0)
    mark = len(stack.eg.log())
    result = during_change(stack, users + [Session(None)] * 5, lambda: stack.eg.edit(EEP, set_weight("eighty")),
                           lambda: weights(stack) == ["eighty"], "the invalid config in Envoy")
    try:
        assert result.failed == 0 and result.moved == 0, result
        counters = stack.eg.counters("sticky_canary_config")
        assert counters[refused] > refused_before and counters["sticky_canary_config_invalid"] == 1, counters
        log = stack.eg.log()[mark:]
        assert ('sticky-canary: invalid plugin config: routes[0].versions[1].weight = "eighty": invalid type: '
                'string "eighty", expected u32; keeping the last good config') in log
        # The last good config (weight 20) serves: returning users where they
        # were, new users by their bucket at 20.
        with stack.eg.client(HOST) as c:
            for s in users:
                assert c.get_ok("/", cookies=s.cookie).name == s.version
        assert all(r.name == predicted(cookie_of(r).value, 20) for r in new_users(stack, 30))
    finally:
        restore(stack)
    with stack.eg.client(HOST) as c:
        assert c.get_ok("/", cookies={"canary": "v2"}).name == "canary-v2"


def test_an_image_that_cannot_be_fetched_fails_open_and_traffic_flows(stack):
    stack.show()
    users = [s for s in sessions(stack, 40) if s.version == "canary-v2"][:5] or sessions(stack, 1)
    missing = f"{stack.registry.address}/sticky/not-pushed:0.1.0"
    mark = len(stack.eg.log())
    # Another repository: Envoy Gateway's cache is keyed by image name and
    # digest, so only a new name or digest makes it fetch again.
    result = during_change(stack, [Session(s.cookie) for s in users] + [Session(None)],
                           lambda: stack.eg.edit(EEP, lambda d: d[0]["spec"]["wasm"][0]["code"]["image"].update(url=missing)),
                           lambda: stack.eg.wasm_filters() == [], "the filter gone from Envoy's listener")
    try:
        assert result.failed == 0, result.errors
        log = stack.eg.log()[mark:]
        assert "could not fetch Wasm OCI image" in log and "not-pushed" in log
        # Served without the filter: stable, no cookie, nothing written.
        with stack.eg.client(HOST) as c:
            for s in users:
                r = c.get_ok("/", cookies=s.cookie + "; canary=v2")
                assert r.name == "canary-v1" and r.set_cookies == [] and seen(r, "x-canary-version") == []
    finally:
        restore(stack)


def test_an_image_whose_digest_differs_fails_open(stack):
    stack.show()
    wrong = stack.image["plugin_wasm_sha256"]  # the .wasm's sha256, not the manifest digest
    mark = len(stack.eg.log())
    stack.eg.edit(EEP, lambda d: d[0]["spec"]["wasm"][0]["code"]["image"].update(sha256=wrong))
    try:
        wait_until(lambda: stack.eg.wasm_filters() == [], "the filter gone from Envoy's listener")
        assert re.search(r"has checksum [0-9a-f]{64}, which does not match: " + wrong, stack.eg.log()[mark:])
        with stack.eg.client(HOST) as c:
            r = c.get_ok("/", cookies={"canary": "v2"})
            assert r.name == "canary-v1" and r.set_cookies == []
    finally:
        restore(stack)


def test_with_fail_open_false_an_unfetchable_image_answers_500_on_that_route_only(stack):
    stack.show()
    missing = f"{stack.registry.address}/sticky/not-pushed-either:0.1.0"

    def change(docs):
        docs[0]["spec"]["wasm"][0]["failOpen"] = False
        docs[0]["spec"]["wasm"][0]["code"]["image"]["url"] = missing

    stack.eg.edit(EEP, change)
    try:
        with stack.eg.client(HOST) as c:
            wait_until(lambda: c.get("/").status == 500, "my-app answering 500")
        with stack.eg.client(OTHER) as c:
            assert c.get_ok("/").name == "billing"
    finally:
        restore(stack)
    with stack.eg.client(HOST) as c:
        assert c.get_ok("/", cookies={"canary": "v2"}).name == "canary-v2"
