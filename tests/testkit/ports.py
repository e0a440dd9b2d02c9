"""Loopback ports: ``free_port()``, ``free_ports(n)`` (distinct TCP ports on
127.0.0.1 that were free a moment ago) and ``accepts(port)`` (whether
something listens there). Tests only ever use loopback addresses."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


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


def accepts(port: int, timeout: float = 0.5, host: str = LOOPBACK) -> bool:
    """Whether a TCP connection to host:port succeeds now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
