"""Child processes: the base every launcher here builds on (whoami
backends, Envoy, and any other program a test starts).

``start_process(label, argv, log_path, ready=..., timeout=START_TIMEOUT)``
starts a program with its stdout and stderr in a log file, waits until
``ready(process)`` is true, and returns the ``Process``; if the program
exits first, or the (scaled) timeout passes, it is stopped and
``ProcessStartError`` is raised with the tail of its log. A launcher for a
new program is a function that builds the argv, calls ``start_process``
with a readiness check, and wraps the result::

    proc = start_process("registry", [str(go_tool("registry")), "serve", cfg],
                         workdir / "registry.log",
                         ready=lambda p: accepts(port))

Every ``Process`` is registered: ``stop_all()`` kills those still running
(it also runs at interpreter exit), and the pytest hook
(``testkit.pytest_plugin``) attaches to the report of a failed test the log
tails of the processes it started or used (``logs_for_report``), plus
whatever ``Process.add_diagnostic(title, fetch)`` registered (Envoy adds its
``/config_dump``). ``tail(text, lines)`` is the last lines of a log, without
Envoy's start-up inventory.

``Process``: ``.label``, ``.argv``, ``.pid``, ``.log_path``, ``.log()``,
``.alive()``, ``.wait(timeout) -> returncode | None``, ``.stop(grace=5)``
(SIGTERM, then SIGKILL after `grace` seconds), ``.kill()`` (SIGKILL at
once, as a crash), ``.add_diagnostic(title, fetch)``. With
``kill_group=True`` (``Process`` and ``start_process``) stopping also
SIGKILLs what is left of the child's process group: for a program whose
own children outlive it (pilot-agent's Envoy).
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from .paths import REPO_ROOT
from .wait import START_TIMEOUT

_procs: list["Process"] = []
_lock = threading.Lock()


class Process:
    """A child process with a log file; registered for cleanup and reports."""

    def __init__(self, label: str, argv: Sequence[str], log_path: Path, *, cwd: Path = REPO_ROOT,
                 env: Mapping[str, str] | None = None, preexec_fn: Callable[[], None] | None = None,
                 kill_group: bool = False):
        self.label = label
        self.kill_group = kill_group
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "wb")
        self.started = time.time()  # wall clock, comparable with pytest's call.start
        self.stopped: float | None = None
        self.diagnostics: list[tuple[str, Callable[[], str]]] = []
        self.popen = subprocess.Popen(
            self.argv,
            cwd=str(cwd),
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal is ours to handle
            preexec_fn=preexec_fn,
        )
        with _lock:
            _procs.append(self)

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
        """The exit status, or None if still running after `timeout` s."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def add_diagnostic(self, title: str, fetch: Callable[[], str]) -> None:
        """Something to show beside the log when a test using this process
        fails: `fetch()` is called then (while the process still runs)."""
        self.diagnostics.append((title, fetch))

    def kill(self) -> None:
        """SIGKILL at once, as a crash or a lost node: no goodbye on open
        sockets. Then waits for the exit and closes the log."""
        if self.alive():
            try:
                self.popen.kill()
            except ProcessLookupError:
                pass
            self.wait(5.0)
        self.stop()

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
        if self.kill_group:
            try:  # its group: the child is the leader (start_new_session)
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.stopped is None:
            self.stopped = time.time()
        try:
            self._log_file.close()
        except OSError:
            pass
        return self.popen.returncode


class ProcessStartError(RuntimeError):
    """A child that exited before it was ready, or was not ready in time.
    ``.log``: its whole log; ``.returncode``: its exit status, None if it
    was still running (and was stopped)."""

    def __init__(self, message: str, log: str, returncode: int | None = None, label: str = "process"):
        super().__init__(f"{message}\n--- {label} log (tail) ---\n{tail(log, 80)}")
        self.log = log
        self.returncode = returncode


def start_process(label: str, argv: Sequence[str], log_path: Path, *, ready: Callable[[Process], bool],
                  timeout: float = START_TIMEOUT, cwd: Path = REPO_ROOT, env: Mapping[str, str] | None = None,
                  preexec_fn: Callable[[], None] | None = None, poll: float = 0.05,
                  error: type[ProcessStartError] = ProcessStartError, kill_group: bool = False) -> Process:
    """Start `argv` (output to `log_path`) and wait until `ready(process)`
    is true. If it exits first or `timeout` seconds pass (a hang guard),
    stop it and raise `error` (a ProcessStartError) with its log."""
    proc = Process(label, argv, log_path, cwd=cwd, env=env, preexec_fn=preexec_fn, kill_group=kill_group)
    deadline = time.monotonic() + timeout
    while proc.alive() and time.monotonic() < deadline:
        try:
            if ready(proc):
                return proc
        except OSError:
            pass  # not listening yet
        time.sleep(poll)
    alive = proc.alive()
    rc = proc.stop()
    if alive:
        raise error(f"{label} was not ready within {timeout:.0f} s", proc.log(), None, label)
    raise error(f"{label} exited during startup (status {rc})", proc.log(), rc, label)


def stop_all() -> None:
    """Stop every process started here that is still running."""
    with _lock:
        procs = list(_procs)
    for p in procs:
        if p.alive():
            p.stop(grace=3.0)


atexit.register(stop_all)


# Envoy's startup inventory (extension lists, header map sizes): noise in a report.
_NOISE = ("source/server/server.cc:467]", "source/server/server.cc:547]")


def tail(text: str, lines: int) -> str:
    """The last `lines` lines of a log (Envoy's start-up inventory left out)."""
    parts = [p for p in text.splitlines() if not any(n in p for n in _NOISE)]
    if len(parts) <= lines:
        return "\n".join(parts)
    return f"[... {len(parts) - lines} earlier lines omitted ...]\n" + "\n".join(parts[-lines:])


def procs_in(obj, depth: int = 3) -> list[Process]:
    """The processes reachable from a fixture value: a Process, anything
    with a `.proc` (Envoy, Backend), anything with `.all` (BackendSet), or
    containers and objects holding them under the attributes
    envoy/envoys/backend/backends/stack/pods."""
    if depth < 0 or obj is None or isinstance(obj, (str, bytes, int, float, Path)):
        return []
    if isinstance(obj, Process):
        return [obj]
    proc = getattr(obj, "proc", None)
    if isinstance(proc, Process):
        return [proc]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [p for o in obj for p in procs_in(o, depth - 1)]
    if isinstance(obj, dict):
        return [p for o in obj.values() for p in procs_in(o, depth - 1)]
    out = []
    for attr in ("all", "envoy", "envoys", "backend", "backends", "stack", "pods"):
        try:
            value = getattr(obj, attr, None)
        except Exception:  # a property that fails: not ours
            continue
        if value is not None and not callable(value):
            out.extend(procs_in(value, depth - 1))
    return out


def logs_for_report(since: float, used: Iterable = (), lines: int = 150) -> list[tuple[str, str]]:
    """(title, text) for a failed test: the log tails of the processes
    started at or after `since` (wall clock) and of those reachable from
    the fixture values `used`, each followed by its diagnostics."""
    with _lock:
        procs = list(_procs)
    wanted = {id(p) for v in used for p in procs_in(v)}
    out = []
    for p in procs:
        if p.started >= since or id(p) in wanted:
            out.append((f"{p.label} log ({p.log_path})", tail(p.log(), lines)))
            if p.alive():
                for title, fetch in p.diagnostics:
                    try:
                        text = fetch()
                    except Exception as e:  # noqa: BLE001 - a report must not fail
                        text = f"({type(e).__name__}: {e})"
                    out.append((f"{p.label} {title}", text))
    return out
