"""A Kubernetes API server without a cluster: etcd and kube-apiserver on
127.0.0.1 inside a private network namespace (``testkit.netns``), for
istiod (``testkit.istio``). No kubelet, no controllers, no nodes: only the
API, which is all istiod reads.

Why: the pinned istiod cannot start without a kube client (its ServiceEntry
registry asks the multicluster controller, which only exists with one), and
only its Kubernetes config store turns a ``WasmPlugin`` into the
``TrafficExtension`` it sends to Envoy (a WasmPlugin in ``--configDir``
files is read and ignored). Both programs are built by scripts/setup.sh
from the wrapper module tests/tools/kube (its go.mod says why go install
cannot build kube-apiserver) into .tools/bin.

``kube_version()``: the k8s.io/kubernetes release the module pins.
``kube_tool(name) -> Path``: ``kube-apiserver`` or ``etcd`` in .tools/bin,
after checking that scripts/setup.sh built it from the module as it is now
(the stamp: a hash of go.mod, go.sum and etcd/main.go).

``start_kube(workdir, ns, timeout=180) -> Kube``: etcd (embedded, data
under `workdir`), then kube-apiserver on free loopback ports of the
namespace ``ns`` (a ``testkit.netns.Namespace``), with a static admin token
(group ``system:masters``), RBAC, a self-signed serving certificate and
service-account keys made with ``openssl``; waits until ``/readyz`` is
200. ``Kube``: ``.api`` (a ``KubeAPI``), ``.kubeconfig`` (a file for
istiod: the server, ``insecure-skip-tls-verify``, the token), ``.etcd`` and
``.apiserver`` (``Process``), ``.all`` (both, for failure reports),
``.stop()``.

``KubeAPI`` speaks REST with the bearer token (no kubectl), its
connections made inside the namespace: ``.request(method,
path, body=None) -> (status, json)``, ``.apply(obj)`` (create, or replace
with the current ``resourceVersion``; what ``kubectl apply`` amounts to
here), ``.apply_all(docs)``, ``.delete(obj)``, ``.get(obj) -> dict | None``,
``.list(api_version, kind) -> [dict]`` (every namespace),
``.delete_all(kinds)`` (every object of those ``(api_version, kind)``
pairs, in every namespace), ``.install_crds(docs, timeout=120)`` (creates
the CRDs, waits until each is ``Established``, and learns their kinds, so
that ``apply`` finds the path of a custom resource).

Istio's CRDs come from ``testkit.istio.istio_crds()`` (the pinned Istio
module in Go's module cache; never copied into this repository).
"""

from __future__ import annotations

import copy
import hashlib
import http.client
import json
import re
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import yaml

from .paths import REPO_ROOT, TOOLS_BIN
from .ports import LOOPBACK
from .process import Process, start_process
from .wait import REQUEST_TIMEOUT, hang_guard, wait_until

KUBE_MODULE = REPO_ROOT / "tests" / "tools" / "kube"
STAMPS = REPO_ROOT / ".tools" / "stamps"
TOKEN = "sticky-canary-test-admin"  # a test-only token for a loopback API server

# The core kinds the tests apply: kind -> (API path prefix, plural, namespaced).
CORE_KINDS = {
    "Namespace": ("/api/v1", "namespaces", False),
    "Service": ("/api/v1", "services", True),
    "Secret": ("/api/v1", "secrets", True),
    "ConfigMap": ("/api/v1", "configmaps", True),
    "CustomResourceDefinition": ("/apis/apiextensions.k8s.io/v1", "customresourcedefinitions", False),
}


def kube_version() -> str:
    """The k8s.io/kubernetes release tests/tools/kube/go.mod pins (v1.36.1)."""
    m = re.search(r"^\s*k8s\.io/kubernetes (v\S+)", (KUBE_MODULE / "go.mod").read_text(), re.M)
    assert m, "k8s.io/kubernetes is not required in tests/tools/kube/go.mod"
    return m.group(1)


def module_stamp() -> str:
    """What scripts/setup.sh writes into .tools/stamps/{kube-apiserver,etcd}."""
    h = hashlib.sha256()
    for name in ("go.mod", "go.sum", "etcd/main.go"):
        h.update((KUBE_MODULE / name).read_bytes())
    return f"tests/tools/kube {h.hexdigest()[:16]}"


def kube_tool(name: str) -> Path:
    """kube-apiserver or etcd, as scripts/setup.sh built them from tests/tools/kube."""
    assert name in ("kube-apiserver", "etcd"), name
    path = TOOLS_BIN / name
    stamp = STAMPS / name
    built = stamp.read_text().strip() if stamp.exists() else None
    assert path.exists() and built == module_stamp(), (
        f"{path} is not built from tests/tools/kube as it is now (stamp: {built}): "
        "run scripts/setup.sh test (make test does)")
    return path


class KubeAPI:
    """REST calls to the API server with the admin bearer token."""

    def __init__(self, port: int, ns, token: str = TOKEN):
        self.port = port
        self.ns = ns
        self.token = token
        # The serving certificate is the API server's own self-signed one.
        self._tls = ssl.create_default_context()
        self._tls.check_hostname = False
        self._tls.verify_mode = ssl.CERT_NONE
        self._kinds: dict[tuple[str, str], tuple[str, str, bool]] = {}

    def _connection(self, timeout: float) -> http.client.HTTPSConnection:
        """An HTTPS connection whose socket is made inside the namespace."""
        api = self

        class _Conn(http.client.HTTPSConnection):
            def connect(self) -> None:
                self.sock = api._tls.wrap_socket(api.ns.connect(api.port, LOOPBACK, timeout))

        return _Conn(LOOPBACK, self.port, timeout=timeout)

    def request(self, method: str, path: str, body: dict | None = None,
                timeout: float = REQUEST_TIMEOUT) -> tuple[int, dict | str | None]:
        """One call; a 429 (a resource whose storage is still initialising,
        right after its CRD is Established) is retried after the delay the
        server asks for, within a hang guard."""
        deadline = time.monotonic() + hang_guard(60)
        while True:
            status, body_out = self._request_once(method, path, body, timeout)
            if status != 429 or time.monotonic() > deadline:
                return status, body_out
            delay = (body_out.get("details") or {}).get("retryAfterSeconds", 1) if isinstance(body_out, dict) else 1
            time.sleep(min(max(float(delay), 0.1), 1.0))

    def _request_once(self, method: str, path: str, body: dict | None,
                      timeout: float) -> tuple[int, dict | str | None]:
        conn = self._connection(timeout)
        try:
            headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            try:
                return resp.status, json.loads(raw) if raw else None
            except ValueError:
                return resp.status, raw.decode(errors="replace")
        finally:
            conn.close()

    def ready(self) -> bool:
        try:
            return self.request("GET", "/readyz", timeout=5)[0] == 200
        except (OSError, http.client.HTTPException):
            return False

    # -- paths -------------------------------------------------------------

    def _collection(self, api_version: str, kind: str, namespace: str | None) -> str:
        if kind in CORE_KINDS:
            prefix, plural, namespaced = CORE_KINDS[kind]
        else:
            group = api_version.split("/")[0]
            assert (group, kind) in self._kinds, f"unknown kind {api_version} {kind}: install its CRD first"
            _, plural, namespaced = self._kinds[(group, kind)]
            prefix = f"/apis/{api_version}"
        if namespaced and namespace is not None:
            return f"{prefix}/namespaces/{namespace}/{plural}"
        return f"{prefix}/{plural}"

    def _path(self, obj: dict) -> tuple[str, str]:
        meta = obj.get("metadata", {})
        coll = self._collection(obj["apiVersion"], obj["kind"], meta.get("namespace", "default"))
        return coll, f"{coll}/{meta['name']}"

    # -- objects -----------------------------------------------------------

    def get(self, obj: dict) -> dict | None:
        status, body = self.request("GET", self._path(obj)[1])
        return body if status == 200 and isinstance(body, dict) else None

    def apply(self, obj: dict) -> dict:
        """Create `obj`, or replace the object of that name (with its
        current resourceVersion)."""
        coll, path = self._path(obj)
        status, body = self.request("POST", coll, obj)
        if status == 409:
            current = self.get(obj)
            assert current is not None, f"{path}: 409 on create, then not found"
            obj = copy.deepcopy(obj)
            obj.setdefault("metadata", {})["resourceVersion"] = current["metadata"]["resourceVersion"]
            status, body = self.request("PUT", path, obj)
        assert status in (200, 201) and isinstance(body, dict), f"apply {obj['kind']} {path}: {status} {body}"
        return body

    def apply_all(self, docs: Iterable[dict]) -> list[dict]:
        return [self.apply(d) for d in docs]

    def delete(self, obj: dict) -> None:
        status, body = self.request("DELETE", self._path(obj)[1])
        assert status in (200, 202, 404), f"delete {obj['kind']} {obj['metadata']['name']}: {status} {body}"

    def list(self, api_version: str, kind: str) -> list[dict]:
        status, body = self.request("GET", self._collection(api_version, kind, None))
        assert status == 200 and isinstance(body, dict), f"list {kind}: {status} {body}"
        return [dict(item, apiVersion=api_version, kind=kind) for item in body.get("items", [])]

    def delete_all(self, kinds: Iterable[tuple[str, str]]) -> int:
        """Delete every object of these (apiVersion, kind) pairs; returns
        how many there were."""
        n = 0
        for api_version, kind in kinds:
            for obj in self.list(api_version, kind):
                self.delete(obj)
                n += 1
        return n

    # -- CRDs --------------------------------------------------------------

    def learn_crd(self, crd: dict) -> None:
        spec = crd["spec"]
        self._kinds[(spec["group"], spec["names"]["kind"])] = (
            spec["group"], spec["names"]["plural"], spec["scope"] == "Namespaced")

    def install_crds(self, crds: list[dict], timeout: float = 120.0) -> None:
        """Create the CRDs and wait until every one is Established."""
        for crd in crds:
            self.apply(crd)
            self.learn_crd(crd)

        def pending() -> list[str]:
            out = []
            for crd in crds:
                got = self.get(crd) or {}
                conds = {c["type"]: c["status"] for c in got.get("status", {}).get("conditions") or []}
                if conds.get("Established") != "True":
                    out.append(crd["metadata"]["name"])
            return out

        wait_until(lambda: not pending(), lambda: f"CRDs Established: {pending()}", timeout=timeout, interval=0.2)


@dataclass
class Kube:
    api: KubeAPI
    kubeconfig: Path
    etcd: Process
    apiserver: Process

    @property
    def all(self) -> list[Process]:
        return [self.apiserver, self.etcd]

    def stop(self) -> None:
        self.apiserver.stop(grace=10.0)
        self.etcd.stop(grace=10.0)


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=hang_guard(60))


def start_kube(workdir: Path, ns, timeout: float = 180.0) -> Kube:
    """etcd, then kube-apiserver, on free loopback ports inside `ns`; ready
    when /readyz answers 200."""
    d = Path(workdir)
    d.mkdir(parents=True, exist_ok=True)
    etcd_client, etcd_peer, api_port = ns.free_ports(3)
    etcd = start_process("etcd", [str(kube_tool("etcd")), str(d / "etcd-data"), str(etcd_client), str(etcd_peer)],
                         d / "etcd.log", ready=lambda p: "etcd ready" in p.log(), timeout=hang_guard(60), cwd=d,
                         preexec_fn=ns.preexec(d))
    try:
        # The service-account keys kube-apiserver requires (nothing here
        # issues service-account tokens: the test authenticates with TOKEN).
        if not (d / "sa.key").exists():
            _openssl("genrsa", "-out", str(d / "sa.key"), "2048")
            _openssl("rsa", "-in", str(d / "sa.key"), "-pubout", "-out", str(d / "sa.pub"))
        (d / "tokens.csv").write_text(f'{TOKEN},admin,admin,"system:masters"\n')
        api = KubeAPI(api_port, ns)
        argv = [
            str(kube_tool("kube-apiserver")),
            f"--etcd-servers=http://{LOOPBACK}:{etcd_client}",
            f"--bind-address={LOOPBACK}", f"--secure-port={api_port}", f"--advertise-address={LOOPBACK}",
            f"--cert-dir={d / 'certs'}",  # a self-signed serving certificate, made at start
            f"--token-auth-file={d / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            f"--service-account-key-file={d / 'sa.pub'}",
            f"--service-account-signing-key-file={d / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--api-audiences=https://kubernetes.default.svc.cluster.local,istio-ca",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--endpoint-reconciler-type=none",  # no Endpoints for the API server's own Service
            "--enable-priority-and-fairness=false",
            "--disable-admission-plugins=ServiceAccount",  # no controller creates service accounts
            "--profiling=false",
            "--v=1",
        ]
        apiserver = start_process("kube-apiserver", argv, d / "kube-apiserver.log", ready=lambda p: api.ready(),
                                  timeout=hang_guard(timeout), cwd=d, poll=0.3, preexec_fn=ns.preexec(d))
    except BaseException:
        etcd.stop()
        raise
    kubeconfig = d / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": f"https://{LOOPBACK}:{api_port}",
                                                  "insecure-skip-tls-verify": True}}],
        "users": [{"name": "admin", "user": {"token": TOKEN}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
        "current-context": "test",
    }))
    return Kube(api, kubeconfig, etcd, apiserver)
