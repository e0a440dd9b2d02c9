"""`sticky-canary migrate --target envoy-gateway` for a realistic app (the
four apps of cli/tests/fixtures/realistic/input.yaml: shop, blog, api, app)
through Envoy Gateway v1.9.0 standalone, the same path as the shipped
manifests (test_eg_standalone.py).

Applied as the CLI wrote them: the Gateway, the HTTPRoutes, the
EnvoyExtensionPolicy. Substituted (printed): the image reference and
digest (the image `make oci-push` pushed to the local registry), and
every Service backendRef -> a `Backend` on 127.0.0.1 (one whoami per pod,
named like the version: `<namespace>-<service>-<port>`). Left out: the
BackendTrafficPolicies with a consistent hash, which make the File
provider of v1.9.0 panic (test_eg_standalone_btp.py), so the pod inside a
version is not kept here. The cookie keys of the persistent app (shop) are
in envoy-gateway's environment, which its Envoy inherits.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import subprocess
from dataclasses import dataclass

import pytest

import testkit
from testkit.cookie_format import bucket, derive_key, open_cookie, version_for_bucket
from testkit.envoy_gateway import SHIPPED, EnvoyGateway, Substitutions, envoy_tls_secret, load, services_to_backends
from testkit.registry import oci_build_and_push
from testkit.rollouts import binomial

import yaml

FIXTURE = testkit.REPO_ROOT / "cli" / "tests" / "fixtures" / "realistic" / "input.yaml"
CLI = testkit.REPO_ROOT / "target" / "debug" / "sticky-canary"
KEYS = base64.b64encode(hashlib.sha256(b"sticky-canary test_eg_migrate").digest()).decode()
# Pods per version (the version is <namespace>-<service>-<port>).
PODS = {("shop", "shop", 80): 2, ("shop", "shop-next", 80): 2, ("blog", "blog", 80): 2,
        ("blog", "blog-next", 80): 1, ("api", "api", 8080): 1, ("api", "api-next", 8080): 1,
        ("default", "app", 80): 2, ("default", "static", 80): 1}
SHOP, SHOP_NEXT = "shop-shop-80", "shop-shop-next-80"
BLOG, BLOG_NEXT = "blog-blog-80", "blog-blog-next-80"
API, API_NEXT = "api-api-8080", "api-api-next-8080"


@dataclass
class Stack:
    eg: EnvoyGateway
    report: str

    @property
    def all(self):
        return self.eg.all

    def show(self) -> None:
        print("Substituted in the migrated manifests:\n" + str(self.eg.subs))

    def get(self, host, path="/", headers=None, cookies=None):
        with self.eg.client(host) as c:
            return c.get(path, headers=headers, cookies=cookies)


def migrate(workdir) -> tuple[list[dict], str]:
    subprocess.run(["cargo", "build", "-q", "-p", "sticky-canary-cli"], cwd=testkit.REPO_ROOT, check=True,
                   timeout=testkit.hang_guard(1800))
    out = workdir / "migrated"
    r = subprocess.run([str(CLI), "migrate", "--target", "envoy-gateway", "--allow-lossy", "-o", str(out), str(FIXTURE)],
                       capture_output=True, text=True, timeout=testkit.hang_guard(120))
    assert r.returncode == 0, r.stdout + r.stderr
    docs = [d for d in yaml.safe_load_all((out / "envoy-gateway.yaml").read_text()) if d]
    return docs, (out / "report.txt").read_text()


def substitute(docs: list[dict], image: dict, subs: Substitutions) -> tuple[dict[str, list[dict]], list]:
    """The files of the watched directory from the CLI's documents, and the
    pods `(version, hostname, port)` behind their Backends."""
    digest = image["manifest_digest"].removeprefix("sha256:")
    ports = iter(range(9101, 9200))
    endpoints: dict[str, list[int]] = {}
    pods = []
    for (ns, svc, port), n in PODS.items():
        version = f"{ns}-{svc}-{port}"
        endpoints[svc] = []
        for i in range(n):
            p = next(ports)
            endpoints[svc].append(p)
            pods.append((version, f"{version}-{i}", p))
    kept, left_out = [], []
    for d in docs:
        kind = d["kind"]
        if kind == "BackendTrafficPolicy" and "consistentHash" in d["spec"].get("loadBalancer", {}):
            left_out.append(f"{d['metadata']['namespace']}/{d['metadata']['name']}")
            continue
        if kind == "EnvoyExtensionPolicy":
            for w in d["spec"]["wasm"]:
                img = w["code"]["image"]
                subs.note(f"EnvoyExtensionPolicy {d['metadata']['namespace']}/{d['metadata']['name']}: image "
                          f"{img.get('url')} sha256 {img.get('sha256')} -> {image['image']} sha256 {digest}")
                img.update(url=image["image"], sha256=digest)
        kept.append(d)
    if left_out:
        subs.note("left out: BackendTrafficPolicy " + ", ".join(left_out) + " (consistentHash: the File provider "
                  "of v1.9.0 panics; the pod inside a version is not kept here)")
    backends = services_to_backends(kept, endpoints, subs)
    return {"migrated.yaml": kept, "backends.yaml": backends}, pods


@pytest.fixture(scope="module")
def stack(eg_ready, tmp_path_factory, say):
    work = tmp_path_factory.mktemp("eg-migrate")
    docs, report = migrate(work)
    eg = EnvoyGateway(work / "eg")
    try:
        registry = eg.start_registry()
        image = oci_build_and_push(f"{registry.address}/sticky", work / "oci", ns=eg.ns)
        files, pods = substitute(docs, image, eg.subs)
        eg.start_pods(pods)
        # The CLI's Gateway names the installation's GatewayClass `eg`, as the
        # Envoy Gateway quick start creates it.
        gatewayclass = [d for d in load(SHIPPED / "gateway.yaml") if d["kind"] == "GatewayClass"]
        eg.subs.note("added: install.yaml (the GatewayClass eg of envoy-gateway/gateway.yaml, which the migrated "
                     "Gateway names, and the Secret envoy-gateway-system/envoy from certgen: the standalone "
                     "installation); STICKY_CANARY_KEYS in envoy-gateway's environment")
        for name, content in files.items():
            eg.write(name, content)
        eg.write("install.yaml", gatewayclass + [envoy_tls_secret(eg.work)])
        eg.start(env={"STICKY_CANARY_KEYS": KEYS})
        say(f"Envoy Gateway stack ({__name__}) substituted:", eg.subs.lines)
        yield Stack(eg, report)
    finally:
        eg.stop()


def one_cookie(r, name):
    (c,) = r.cookies_named(name)
    return c


def test_the_filter_runs_the_migrated_config(stack):
    stack.show()
    print(stack.report)
    configs = "\n".join(stack.eg.plugin_configs())
    for host in ("shop.example.com", "blog.example.com", "api.example.com", "app.example.com"):
        assert host in configs, host
    counters = stack.eg.counters("sticky_canary_config")
    assert counters["sticky_canary_config_total.result=.=accepted;.;"] > 0
    assert counters.get("sticky_canary_config_total.result=.=refused;.;", 0) == 0, counters


def test_shop_cookie_rules_and_returning_users(stack):
    stack.show()
    r = stack.get("shop.example.com")
    assert r.status == 200 and r.name in (SHOP, SHOP_NEXT), r
    c = one_cookie(r, "SHOPSESSION")
    assert c.attributes == ["Path=/", "Max-Age=3600", "HttpOnly", "SameSite=Strict"], r.set_cookies
    for _ in range(5):
        assert stack.get("shop.example.com", cookies=c.pair).name == r.name
    assert stack.get("shop.example.com", headers={"X-Shop-Canary": "beta"}).name == SHOP_NEXT
    assert stack.get("shop.example.com", cookies={"shop_canary": "always"}).name == SHOP_NEXT
    assert stack.get("shop.example.com", cookies={"shop_canary": "never"}).name == SHOP


def test_blog_splits_30_percent_of_new_users_within_5_sd(stack):
    stack.show()
    n, canary = 300, 0
    with stack.eg.client("blog.example.com") as client:
        for _ in range(n):
            r = client.get("/")
            assert r.status == 200, r
            c = one_cookie(r, "BLOGID")
            assert {"Path=/", "Domain=example.com", "Max-Age=7200", "Secure", "HttpOnly", "SameSite=None"} <= c.attribute_set
            want = version_for_bucket([(BLOG, 70), (BLOG_NEXT, 30)], bucket(open_cookie(c.value).key))
            assert r.name == want
            canary += r.name == BLOG_NEXT
    mean, tol = binomial(n, 0.30)
    print(f"blog: {canary} of {n} new users on {BLOG_NEXT}; expected {mean:.0f} +- {tol:.0f} (5 sd)")
    assert abs(canary - mean) <= tol


def test_api_keys_users_by_their_header(stack):
    stack.show()
    got = collections.Counter()
    with stack.eg.client("api.example.com") as client:
        for i in range(100):
            user = f"user-{i}"
            want = version_for_bucket([(API, 50), (API_NEXT, 50)], bucket(derive_key(user)))
            answers = {client.get("/v1/orders", headers={"x-user-id": user}).name for _ in range(3)}
            assert answers == {want}, user
            got[want] += 1
        assert client.get("/v1/", headers={"x-user-id": "user-1", "X-Api-Track": "beta-7"}).name == API_NEXT
    mean, tol = binomial(100, 0.5)
    assert abs(got[API_NEXT] - mean) <= tol, got


def test_app_paths_keep_their_services(stack):
    stack.show()
    r = stack.get("app.example.com", "/something/x")
    assert r.name == "default-app-80" and one_cookie(r, "INGRESSCOOKIE").pair
    assert stack.get("app.example.com", "/static/logo.png").name == "default-static-80"


def test_the_route_cache_clear_never_failed(stack):
    stack.show()
    assert stack.eg.counters("sticky_canary_route_cache").get("sticky_canary_route_cache_clear_failed_total") == 0
