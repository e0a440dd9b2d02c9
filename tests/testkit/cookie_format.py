"""The reference of the documented hashing (src/hash.rs) and of the plain
session cookie (src/session.rs, format `1`), written independently of the
Rust code, for the end-to-end tests: they predict buckets and hashes, read
the cookies the filter issues, and craft cookies a client could build
without a secret. test_rollouts.py checks this reference against the
filter.

A plain cookie is `1` + base64url(payload || check), no padding; payload =
format (1), flags (1: placed by a rule, 2: an endpoint follows), expiry
(u32, Unix seconds), version id (FNV-1a 32 of the name), the 16-byte key,
then the endpoint's length and bytes; check = FNV-1a 64 over AAD_PREFIX,
the cookie name, NUL and the payload, big-endian.
"""

from __future__ import annotations

import base64
import struct
import time
from dataclasses import dataclass
from typing import Sequence

AAD_PREFIX = b"sticky-canary/cookie/1\0"
_M64 = (1 << 64) - 1


def fnv64(*parts: bytes) -> int:
    h = 0xCBF29CE484222325
    for p in parts:
        for b in p:
            h = ((h ^ b) * 0x100000001B3) & _M64
    return h


def fnv32(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def derive_key(identity: str) -> bytes:
    """The session key derived from a header, query value or client IP."""
    src = identity.encode()
    a = fnv64(b"sticky-canary/key\0", b"a\0", src)
    b = fnv64(b"sticky-canary/key\0", b"b\0", src)
    return a.to_bytes(8, "big") + b.to_bytes(8, "big")


def bucket(key: bytes, total: int = 100, seed: bytes = b"") -> int:
    """The weighted bucket of a session key."""
    h = fnv64(b"sticky-canary/bucket\0", seed, b"\0", key)
    mixed = h ^ (h >> 29) ^ (h >> 47)
    return (mixed * total) >> 64


def pod_hash(key: bytes) -> str:
    """The x-sticky-hash value for a session key."""
    return f"{fnv64(b'sticky-canary/pod' + bytes([0]), key):016x}"


def version_for_bucket(versions: Sequence[tuple[str, int]], b: int) -> str:
    """Non-default versions own consecutive ranges from bucket 0 in config
    order; the default (first) version owns the rest."""
    upper = 0
    for name, weight in versions[1:]:
        upper += weight
        if b < upper:
            return name
    return versions[0][0]


def version_id(name: str) -> int:
    return fnv32(name.encode())


@dataclass
class CookieSession:
    key: bytes
    version_id: int
    by_rule: bool
    expiry: int


def _payload(value: str) -> bytes:
    assert value[:1] == "1", f"not a plain session cookie: {value!r}"
    body = base64.urlsafe_b64decode(value[1:] + "=" * (-len(value[1:]) % 4))
    return body[:-8]


def open_cookie(value: str) -> CookieSession:
    """Decode a plain session cookie without an endpoint."""
    p = _payload(value)
    assert p[0] == 1 and len(p) == 26, f"unexpected cookie payload {p!r}"
    return CookieSession(
        key=p[10:26],
        version_id=int.from_bytes(p[6:10], "big"),
        by_rule=bool(p[1] & 1),
        expiry=int.from_bytes(p[2:6], "big"),
    )


def seal_plain(name: str, payload: bytes, check_xor: int = 0) -> str:
    """A plain cookie value for `payload` under cookie `name`; `check_xor`
    != 0 spoils the check."""
    check = fnv64(AAD_PREFIX, name.encode(), b"\0", payload) ^ check_xor
    return "1" + base64.urlsafe_b64encode(payload + struct.pack(">Q", check)).decode().rstrip("=")


def plain_cookie(name: str, version: str, key: bytes, *, expires_in: int, rule: bool = False,
                 endpoint: str | None = None, check_xor: int = 0) -> str:
    """A plain session cookie for `version` and `key`, expiring `expires_in`
    seconds from now (negative: already expired), placed by a rule or by
    weight, pinned to `endpoint` if given: what a client can build without
    a secret. Valid where no secret is configured."""
    flags = (1 if rule else 0) | (2 if endpoint else 0)
    payload = struct.pack(">BBII", 1, flags, int(time.time()) + expires_in, version_id(version)) + key
    if endpoint:
        payload += bytes([len(endpoint)]) + endpoint.encode()
    return seal_plain(name, payload, check_xor)


def with_expiry(value: str, name: str, delta: int) -> str:
    """The same plain session as `value` with its expiry moved by `delta`
    seconds: what the filter would have issued for that session `delta`
    seconds later."""
    payload = bytearray(_payload(value))
    (expiry,) = struct.unpack(">I", payload[2:6])
    payload[2:6] = struct.pack(">I", expiry + delta)
    return seal_plain(name, bytes(payload))
