"""Routing on the filter's headers must not depend on the module's
proxy-wasm ABI.

The filter writes the route-override headers and Envoy must match the
route again afterwards. Envoy clears the route cache by itself after a
wasm filter changes request headers only for modules that export ABI
0.2.1 or older (envoyproxy/envoy#36671, Envoy 1.33); for later ABIs the
module must call the `clear_route_cache` foreign function. The filter
calls it after every request-header change (`RequestPlan::clears_route_cache`),
so an SDK that exports a later ABI cannot silently send everyone to the
route Envoy chose before the filter ran. Envoy 1.40 itself accepts only
ABIs 0.1.0, 0.2.0 and 0.2.1 (a module exporting another is refused:
"Missing or unknown Proxy-Wasm ABI version"), all of which it clears for,
so no loadable module can show the difference; what these tests assert
instead: the module exports 0.2.1 and imports the foreign-function call,
the call succeeds in the real Envoy (the failure counter is defined and
stays 0) and the route follows the header. tests/envoy_gateway asserts the
same in Envoy Gateway's Envoy.
"""

from __future__ import annotations

import testkit
from testkit.stats import parse_stats


def _uleb(data: bytes, i: int) -> tuple[int, int]:
    out, shift = 0, 0
    while True:
        b = data[i]
        i += 1
        out |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return out, i


def _section(path, wanted: int) -> tuple[bytes, int]:
    """The bytes of a wasm binary and where the payload of its section
    `wanted` (by id) starts, or -1 when it has none."""
    data = path.read_bytes()
    assert data[:4] == b"\0asm", "not a wasm module"
    i = 8
    while i < len(data):
        section, i = data[i], i + 1
        size, i = _uleb(data, i)
        if section == wanted:
            return data, i
        i += size
    return data, -1


def _name(data: bytes, j: int) -> tuple[str, int]:
    n, j = _uleb(data, j)
    return data[j : j + n].decode(), j + n


def _limits(data: bytes, j: int) -> int:
    """Past a table's or memory's limits (flags, min, max if flag 1)."""
    flags, j = _uleb(data, j)
    _, j = _uleb(data, j)
    if flags & 1:
        _, j = _uleb(data, j)
    return j


def exports(path) -> list[str]:
    """Names in the export section of a wasm binary."""
    data, j = _section(path, 7)
    names = []
    if j >= 0:
        count, j = _uleb(data, j)
        for _ in range(count):
            name, j = _name(data, j)
            names.append(name)
            _, j = _uleb(data, j + 1)  # the kind byte, then the index
    return names


def imports(path) -> list[tuple[str, str]]:
    """(module, name) of every function import of a wasm binary."""
    data, j = _section(path, 2)
    out = []
    if j >= 0:
        count, j = _uleb(data, j)
        for _ in range(count):
            module, j = _name(data, j)
            name, j = _name(data, j)
            kind, j = data[j], j + 1
            if kind == 0:  # function: a type index
                _, j = _uleb(data, j)
                out.append((module, name))
            elif kind == 1:  # table: reftype, limits
                j = _limits(data, j + 1)
            elif kind == 2:  # memory: limits
                j = _limits(data, j)
            else:  # global: valtype, mutability
                j += 2
    return out


def test_the_module_exports_abi_0_2_1_only():
    names = exports(testkit.WASM_PATH)
    abis = sorted(n for n in names if n.startswith("proxy_abi_version_"))
    assert abis == ["proxy_abi_version_0_2_1"], (
        f"the module exports {abis}: Envoy 1.40 loads only ABIs 0.1.0, 0.2.0 and 0.2.1; check that "
        "the Envoy versions you support accept it, then update this test"
    )
    # The callbacks the filter relies on are exported.
    for name in ["proxy_on_request_headers", "proxy_on_response_headers", "proxy_on_configure"]:
        assert name in names


def test_the_module_calls_a_foreign_function():
    assert ("env", "proxy_call_foreign_function") in imports(testkit.WASM_PATH)


CLEAR_FAILED = "sticky_canary_route_cache_clear_failed_total"


def test_the_route_cache_clear_succeeds_and_the_route_follows_the_header(stack):
    """envoy-local.yaml routes x-canary-version: canary-v2 to canary-v2 and
    everything else to canary-v1; the filter writes the header (a client's
    copy is replaced) and clears the route cache."""
    defined = parse_stats(stack.envoy.admin("/stats")[1], CLEAR_FAILED)  # used or not
    assert defined == {CLEAR_FAILED: 0}, "the module defines the failure counter at 0"
    with stack.client() as c:
        for _ in range(10):
            r = c.get_ok("/", cookies={"canary": "v2"})
            assert r.name == "canary-v2" and r.whoami.header_values("X-Canary-Version") == ["canary-v2"]
            r = c.get_ok("/", headers={"x-canary-version": "canary-v2"})
            assert r.whoami.header_values("X-Canary-Version") == [r.name]
    assert parse_stats(stack.envoy.admin("/stats")[1], CLEAR_FAILED) == {CLEAR_FAILED: 0}
    assert stack.envoy.metric("sticky_canary_decisions_total") >= 20
