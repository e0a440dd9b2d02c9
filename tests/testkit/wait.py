"""Timeouts and waiting.

Every timeout here is a hang guard, never a speed requirement: a slow or
busy machine makes a test take longer, not fail. ``TIMEOUT_SCALE`` (the
environment variable ``STICKY_CANARY_TIMEOUT_SCALE``, default 1, never
below 1) multiplies all of them; ``hang_guard(seconds)`` applies it to a
test's own bounds.

``wait_until(predicate, what, timeout=60)`` is the one polling loop: it
calls ``predicate`` until it returns something truthy (and returns that),
or fails the test with ``AssertionError("timed out after N s waiting for
<what>")`` once the scaled timeout has passed.
"""

from __future__ import annotations

import os
import time
from typing import Callable, TypeVar

T = TypeVar("T")


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


START_TIMEOUT = hang_guard(60.0)  # a child process until it is ready
REQUEST_TIMEOUT = hang_guard(30.0)  # one HTTP exchange, admin or listener


def wait_until(predicate: Callable[[], T], what: str | Callable[[], str], timeout: float = 60.0,
               interval: float = 0.05) -> T:
    """Poll `predicate` every `interval` seconds until it returns something
    truthy, and return that. After ``hang_guard(timeout)`` seconds raise
    AssertionError naming `what` (a str, or a function called then, so the
    message can show the last state seen)."""
    limit = hang_guard(timeout)
    deadline = time.monotonic() + limit
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = what() if callable(what) else what
            raise AssertionError(f"timed out after {limit:.0f} s waiting for {text}")
        time.sleep(interval)
