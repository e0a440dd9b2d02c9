"""whoami backends: the "pods" behind Envoy (tests/support/whoami.py, a
stdlib stand-in for traefik/whoami, one process each on 127.0.0.1).

``start_backend(workdir, name, hostname, port=0, ns=None) -> Backend``
starts one and waits until it accepts connections (a free port unless
`port` is given; ``BackendStartError`` if it does not come up); with
``ns`` (a ``testkit.netns.Namespace``) on the loopback inside it. ``Backend``:
``.name`` (whoami's ``Name:``, the version/cluster), ``.hostname`` (the
pod), ``.port``, ``.address`` (``"127.0.0.1:port"``), ``.proc``,
``.log()``, ``.alive()``, ``.set_health(code)`` (whoami's ``/health``:
every answer carries `code` until set back to 200), ``.stop()``,
``.kill()`` (SIGKILL: a crashed pod).

``start_backends(workdir, spec=DEFAULT_BACKENDS) -> BackendSet`` starts one
per ``(name, hostname, port in the config)``, one after the other;
``start_pods(workdir, [(version, hostname), ...], ns=None) -> {hostname:
Backend}`` starts several at once. ``BackendSet``: ``.all``, ``.by_cluster[cluster]
-> [Backend]``, ``.by_hostname[hostname] -> Backend``, ``.port_map``
(config port -> real port, for ``rewrite_config``),
``.hostname_of(address)``, ``.stop()``.

``DEFAULT_BACKENDS``: the four pods of envoy-config/envoy-local.yaml,
``(cluster, hostname, port in the config)``.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from .paths import WHOAMI
from .ports import LOOPBACK, accepts, free_port
from .process import Process, ProcessStartError, start_process
from .wait import REQUEST_TIMEOUT, START_TIMEOUT

# (cluster, hostname, port in envoy-local.yaml); the whoami Name is the cluster.
DEFAULT_BACKENDS: tuple[tuple[str, str, int], ...] = (
    ("canary-v1", "canary-v1-0", 8081),
    ("canary-v1", "canary-v1-1", 8082),
    ("canary-v2", "canary-v2-0", 8083),
    ("canary-v2", "canary-v2-1", 8084),
)


class BackendStartError(ProcessStartError):
    pass


@dataclass
class Backend:
    name: str
    hostname: str
    port: int
    proc: Process
    ns: object | None = None  # the testkit.netns.Namespace it runs in, if any

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def log(self) -> str:
        return self.proc.log()

    def alive(self) -> bool:
        return self.proc.alive()

    def set_health(self, code: int) -> None:
        """Make every answer of this pod carry `code` (200: healthy again)."""
        if self.ns is not None:
            conn = self.ns.http_connection(self.port, LOOPBACK, REQUEST_TIMEOUT)
        else:
            conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=REQUEST_TIMEOUT)
        try:
            conn.request("POST", "/health", body=str(code).encode())
            conn.getresponse().read()
        finally:
            conn.close()

    def stop(self) -> None:
        self.proc.stop()

    def kill(self) -> None:
        """SIGKILL, as a crashed pod or a node loss: no goodbye on open sockets."""
        self.proc.kill()


def start_backend(workdir: Path, name: str, hostname: str, port: int = 0, timeout: float = START_TIMEOUT,
                  ns=None) -> Backend:
    """Start a whoami on 127.0.0.1 (inside `ns` if given) and wait until it
    accepts connections (on a free port unless `port` is given; a port
    taken meanwhile means another try elsewhere)."""
    workdir = Path(workdir)
    listens = ns.accepts if ns is not None else accepts
    for attempt in range(3):
        p = port or (ns.free_ports(1)[0] if ns is not None else free_port())
        try:
            proc = start_process(
                f"whoami {hostname}",
                [sys.executable, str(WHOAMI), "--port", str(p), "--name", name, "--hostname", hostname, "--verbose"],
                workdir / f"whoami-{hostname}-{p}.log",
                ready=lambda proc: "whoami listening" in proc.log() and listens(p),
                timeout=timeout, error=BackendStartError,
                preexec_fn=ns.preexec(workdir) if ns is not None else None,
            )
            return Backend(name, hostname, p, proc, ns)
        except BackendStartError:
            if port or attempt == 2:  # a fixed port: no point retrying elsewhere
                raise
    raise AssertionError("unreachable")


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


def start_pods(workdir: Path, spec: Sequence[tuple[str, str]], ns=None) -> dict[str, Backend]:
    """Start whoami pods `(version, hostname)` on free ports (inside `ns` if
    given), in parallel (a whoami does not die with the thread that started
    it; Envoy does)."""
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futs = {h: pool.submit(start_backend, workdir, v, h, ns=ns) for v, h in spec}
        return {h: f.result() for h, f in futs.items()}
