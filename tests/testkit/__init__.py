"""testkit: the support package of the Python suites under tests/ (and of
`make run`, `make bench`, `make soak`, `make report`).

Real components on 127.0.0.1, started by the tests themselves: Envoy 1.40
from PyPI with the sticky-canary .wasm, whoami backends, and any other
program through the same process base; every one is a child that is killed
at the end, and a failing test gets its log (and Envoy's config_dump).

pytest finds the package through pytest.ini (``pythonpath = tests``);
scripts run outside pytest through ``PYTHONPATH=tests`` (the Makefile sets
it). Tests write ``import testkit`` and use the names below, or import a
module for the rest (``from testkit.rollouts import User, visit``).

Modules
    paths         where the repository, Envoy, the .wasm, whoami and tools are
    wait          hang guards (``hang_guard``, ``START_TIMEOUT``,
                  ``REQUEST_TIMEOUT``) and the one polling loop ``wait_until``
    ports         ``free_port``, ``free_ports``, ``accepts``; loopback only
    process       the base of every launcher: ``start_process`` (start, wait
                  until ready, log on failure), ``Process``, ``stop_all``,
                  ``tail``, ``logs_for_report``
    pytest_plugin the report hook: logs of the processes a failed test used
                  (tests/conftest.py loads it for every suite)
    backends      whoami pods: ``start_backend``, ``start_backends``,
                  ``start_pods``, ``Backend``, ``BackendSet``
    envoy_config  Envoy configs as dicts: ``load_config``, ``plugin_config``,
                  ``set_plugin_config``, ``wasm_plugins``, ``rewrite_config``,
                  ``http_bootstrap``
    xds           config from watched files: ECDS (``use_ecds``,
                  ``write_ecds``), EDS (``Eds``)
    envoy         Envoy processes: ``start_envoy``, ``start_envoys``,
                  ``Envoy`` (admin, counters, metrics, scrape, clusters),
                  ``run_envoy_expect_failure``, ``validate_config``
    stats         the one reader of Envoy's /stats, /stats/prometheus and
                  /clusters
    clients       ``Client`` (keep-alive HTTP/1.1), ``Response``, ``Whoami``,
                  ``SetCookie``; raw HTTP/1.1 and HTTP/2 for hostile input
    cookie_format the documented hashing and the plain cookie format,
                  written independently of the Rust code
    rollouts      simulated users across replicas, binomial tolerances
    persistent    persistent mode: the shipped config over EDS, users, pods
    tools         promtool, node and the pinned Go programs (``go_tool``)
    manifests     Kubernetes manifests as dicts (``yaml_docs``, ``one``)
    istio_validate, eg_validate
                  Istio, Envoy Gateway, Gateway API and Kubernetes manifests
                  against their CRD schemas and CEL rules, without a cluster
    kube          a Kubernetes API server without a cluster (etcd and
                  kube-apiserver from tests/tools/kube): ``start_kube``,
                  ``KubeAPI`` (apply, delete, CRDs)
    istio         istiod and a pilot-agent ingress gateway built from
                  Istio's module: ``start_istiod``, ``start_gateway``,
                  ServiceEntry/WorkloadEntry for whoami pods, config_dump
                  readers
    netns         private network + mount namespaces (``Namespace``): fixed
                  ports and paths for a control plane, loopback only; root
                  or unprivileged user namespaces (``namespace_problem``)
    registry      the OCI registry (``start_registry``) and what ``make
                  oci-push`` runs (``oci_build_and_push``), ``oras``
    envoy_gateway Envoy Gateway standalone with the pip Envoy
                  (``EnvoyGateway``), the allowed substitutions
                  (``Substitutions``, ``services_to_backends``)
    traffic       background requests counting failures during a change
                  (``Traffic``, ``Session``)

A launcher for another program belongs in a module of its own here (as
istio, kube, registry and envoy_gateway are): it finds the binary with
``tools.go_tool(name)``, starts it with ``process.start_process`` and a
readiness check, and returns an object with ``.proc`` (so a failing test
gets its log) and ``.stop()``; see ``backends`` for the smallest example.

Each module's docstring has its API.
"""

from .backends import DEFAULT_BACKENDS, Backend, BackendSet, BackendStartError, start_backend, start_backends, start_pods
from .clients import Client, Response, SetCookie, Whoami, h2_request, parse_set_cookie, raw_http1, raw_http1_bytes
from .envoy import (
    Envoy,
    EnvoyExit,
    EnvoyStartError,
    require_envoy_and_wasm,
    run_envoy_expect_failure,
    run_many_expect_failure,
    start_envoy,
    start_envoys,
    validate_config,
)
from .envoy_config import (
    WASM_FILTER_TYPE,
    absolute_wasm_paths,
    load_config,
    plugin_config,
    rewrite_config,
    set_plugin_config,
    wasm_plugins,
)
from .paths import ENVOY_BIN, LOCAL_CONFIG, PERSISTENT_CONFIG, REPO_ROOT, WASM_PATH, WHOAMI
from .ports import LOOPBACK, accepts, free_port, free_ports
from .process import Process, ProcessStartError, start_process, stop_all, tail
from .stats import parse_metric, parse_prometheus, split_series
from .wait import REQUEST_TIMEOUT, START_TIMEOUT, TIMEOUT_SCALE, hang_guard, wait_until
from .xds import Eds, use_ecds, write_ecds

__all__ = [
    "DEFAULT_BACKENDS", "Backend", "BackendSet", "BackendStartError", "start_backend", "start_backends", "start_pods",
    "Client", "Response", "SetCookie", "Whoami", "h2_request", "parse_set_cookie", "raw_http1", "raw_http1_bytes",
    "Envoy", "EnvoyExit", "EnvoyStartError", "require_envoy_and_wasm", "run_envoy_expect_failure",
    "run_many_expect_failure", "start_envoy", "start_envoys", "validate_config",
    "WASM_FILTER_TYPE", "absolute_wasm_paths", "load_config", "plugin_config", "rewrite_config",
    "set_plugin_config", "wasm_plugins",
    "ENVOY_BIN", "LOCAL_CONFIG", "PERSISTENT_CONFIG", "REPO_ROOT", "WASM_PATH", "WHOAMI",
    "LOOPBACK", "accepts", "free_port", "free_ports",
    "Process", "ProcessStartError", "start_process", "stop_all", "tail",
    "parse_metric", "parse_prometheus", "split_series",
    "REQUEST_TIMEOUT", "START_TIMEOUT", "TIMEOUT_SCALE", "hang_guard", "wait_until",
    "Eds", "use_ecds", "write_ecds",
]
