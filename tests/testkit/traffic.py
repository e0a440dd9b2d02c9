"""Background traffic that counts failures while a test changes something
(a config, an image, a pod).

``Traffic(make_client, sessions, threads=1)``: each thread has its own
client (``make_client()``, e.g. ``lambda: envoy_gateway.client(host)``) and
cycles through its share of ``sessions`` (``Session``: the ``Cookie``
header it sends, the version it expects, and whether to take a renewed
session cookie from ``Set-Cookie``), one request at a time, until
``stop()``. An answer fails when it is not a 200 from a whoami pod (or the
request raised); an answer from another version than expected is counted
as ``moved``, not failed (a weight change moves users by design).
``.start()``, ``.wait_sent(n)`` (until at least `n` more requests were
answered, a hang guard only), ``.stop() -> TrafficResult`` (``sent``,
``failed``, ``moved``, ``errors`` and ``moves``: the first few failures
and moves with their ``time.monotonic()``, ``by_pod``:
answers per pod hostname, ``sessions``: the sessions with their last
cookie).
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from .clients import Client
from .wait import hang_guard, wait_until


@dataclass
class Session:
    cookie: str  # the Cookie header, e.g. "my-sticky-cookie=1..."
    version: str | None = None  # the version expected to answer (None: any)
    cookie_name: str | None = None  # follow Set-Cookie of this name (renewals, re-pins)
    pod: str | None = None  # the last pod that answered


@dataclass
class TrafficResult:
    sent: int = 0
    failed: int = 0
    moved: int = 0
    errors: list = field(default_factory=list)
    moves: list = field(default_factory=list)  # the first few (time, expected, answered by)
    by_pod: collections.Counter = field(default_factory=collections.Counter)
    sessions: list = field(default_factory=list)

    def __str__(self) -> str:
        return (f"{self.sent} requests, {self.failed} failed, {self.moved} answered by another version; "
                f"first failures: {self.errors[:3]}; first moves: {self.moves[:3]}")


class Traffic:
    def __init__(self, make_client: Callable[[], Client], sessions: Sequence[Session], threads: int = 1):
        assert sessions and threads >= 1
        self.make_client = make_client
        self.sessions = list(sessions)
        self.n_threads = threads
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.result = TrafficResult(sessions=self.sessions)
        self._threads: list[threading.Thread] = []

    def _run(self, mine: list[Session]) -> None:
        client = self.make_client()
        i = 0
        try:
            while not self._stop.is_set():
                s = mine[i % len(mine)]
                i += 1
                try:
                    r = client.get("/", cookies=s.cookie)
                    ok, name, pod = r.status == 200 and r.name is not None, r.name, r.hostname
                    err = None if ok else (r.status, r.text[:160])
                except Exception as e:  # noqa: BLE001 - a failure to count
                    client.close()
                    ok, name, pod, err = False, None, None, repr(e)
                    r = None
                with self._lock:
                    self.result.sent += 1
                    if not ok:
                        self.result.failed += 1
                        if len(self.result.errors) < 20:
                            self.result.errors.append((time.monotonic(), err))
                        continue
                    self.result.by_pod[pod] += 1
                    if s.version is not None and name != s.version:
                        self.result.moved += 1
                        if len(self.result.moves) < 20:
                            self.result.moves.append((time.monotonic(), s.version, pod))
                    s.pod = pod
                if r is not None and s.cookie_name:
                    for c in r.cookies_named(s.cookie_name):
                        s.cookie = c.pair
        finally:
            client.close()

    def start(self) -> "Traffic":
        shares = [self.sessions[k::self.n_threads] for k in range(self.n_threads)]
        for share in shares:
            if share:
                t = threading.Thread(target=self._run, args=(share,), daemon=True)
                t.start()
                self._threads.append(t)
        return self

    def sent(self) -> int:
        with self._lock:
            return self.result.sent

    def wait_sent(self, n: int, timeout: float = 120) -> None:
        """Until at least `n` more requests than now were answered."""
        target = self.sent() + n
        wait_until(lambda: self.sent() >= target, lambda: f"{n} more requests (at {self.sent()} of {target})",
                   timeout=timeout)

    def stop(self) -> TrafficResult:
        self._stop.set()
        for t in self._threads:
            t.join(hang_guard(60))
        return self.result
