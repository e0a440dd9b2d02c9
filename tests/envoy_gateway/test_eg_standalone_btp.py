"""The shipped backendtrafficpolicy.yaml as shipped, through standalone
Envoy Gateway: v1.9.0's File provider panics on it.

Its `consistentHash` has `tableSize` (a `*uint64`, defaulted to 65537 by
the CRD even when left out), and the File provider stores every resource
through controller-runtime's fake client, whose managed-fields tracker
(structured-merge-diff v6.4.2) cannot convert a uint64: `panic: unsupported
type: uint64` from internal/provider/file/store.go, exit status 2, before
Envoy starts (and, dropped into a running installation, Envoy Gateway
exits and takes its Envoy down). v1.9.1 and main of 2026-08-21 have the
same store.go and dependency versions (read from source). Kubernetes mode
stores resources in the API server and is not affected (read from source).

This test asserts that behaviour exactly. The day it fails, Envoy Gateway
has fixed it: put backendtrafficpolicy.yaml into test_eg_standalone.py's
stack (and assert the pod), and drop the standalone caveat from
envoy-gateway/README.md.
"""

from __future__ import annotations

from testkit.envoy_gateway import SHIPPED, EnvoyGateway, envoy_tls_secret, load, services_to_backends

FIXED = ("Envoy Gateway no longer panics on the shipped backendtrafficpolicy.yaml: include it in "
         "test_eg_standalone.py's stack, assert the pod there, and update envoy-gateway/README.md "
         "(Standalone: what does not work)")


def test_the_shipped_consistent_hash_policy_makes_the_file_provider_panic(eg_ready, tmp_path, say):
    eg = EnvoyGateway(tmp_path)
    try:
        route = load(SHIPPED / "httproute.yaml")
        backends = services_to_backends(route, {"my-app-v1": [9001], "my-app-v2": [9003]}, eg.subs)
        eg.subs.note("backendtrafficpolicy.yaml: as shipped")
        print("Substituted in the shipped manifests:\n" + str(eg.subs))
        eg.write("gateway.yaml", load(SHIPPED / "gateway.yaml"))
        eg.write("httproute.yaml", route)
        eg.write("backends.yaml", backends)
        eg.write("install.yaml", [envoy_tls_secret(tmp_path)])
        eg.write("backendtrafficpolicy.yaml", load(SHIPPED / "backendtrafficpolicy.yaml"))
        rc, log = eg.run_to_exit(timeout=120)
        envoys = eg.envoy_pids()
    finally:
        eg.stop()
    lines = log.splitlines()
    assert rc is not None, FIXED + " (it kept running)"
    assert rc == 2, f"exit status {rc}, not Go's 2 for a panic; {FIXED}?\n" + "\n".join(lines[-40:])
    assert "panic: unsupported type: uint64" in lines, "\n".join(lines[-40:])
    assert any("sigs.k8s.io/structured-merge-diff/v6@v6.4.2/value/valuereflect.go" in line for line in lines)
    assert any("internal/provider/file/store.go" in line for line in lines)
    # It dies before it starts Envoy: no Envoy ever ran.
    assert envoys == [] and not list((tmp_path / "run").glob("*/admin-address.txt"))
    say("Envoy Gateway v1.9.0 standalone on the shipped backendtrafficpolicy.yaml:",
        [f"exit status {rc}: panic: unsupported type: uint64 (internal/provider/file/store.go); no Envoy started"])
