"""The routing contract with Envoy depends on the module's proxy-wasm ABI.

The filter writes the route-override headers and relies on Envoy
re-matching the route afterwards. Envoy clears the route cache after a
wasm filter changes request headers only for modules that export ABI
0.2.1 or older; since Envoy 1.33, later ABIs must clear it explicitly
(the `clear_route_cache` foreign function). proxy-wasm 0.2.5 exports
`proxy_abi_version_0_2_1`. If an SDK upgrade changes that, every request
would silently take the route Envoy chose before the filter ran (the
default version): this test fails the build first, so whoever upgrades
adds the explicit clear. The end-to-end tests prove the routing itself.
"""

from __future__ import annotations

import testkit


def _uleb(data: bytes, i: int) -> tuple[int, int]:
    out, shift = 0, 0
    while True:
        b = data[i]
        i += 1
        out |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return out, i


def exports(path) -> list[str]:
    """Names in the export section of a wasm binary."""
    data = path.read_bytes()
    assert data[:4] == b"\0asm", "not a wasm module"
    i, names = 8, []
    while i < len(data):
        section, i = data[i], i + 1
        size, i = _uleb(data, i)
        end = i + size
        if section == 7:
            count, j = _uleb(data, i)
            for _ in range(count):
                n, j = _uleb(data, j)
                names.append(data[j : j + n].decode())
                j += n + 1  # kind byte
                _, j = _uleb(data, j)  # index
        i = end
    return names


def test_the_module_exports_abi_0_2_1_only():
    names = exports(testkit.WASM_PATH)
    abis = sorted(n for n in names if n.startswith("proxy_abi_version_"))
    assert abis == ["proxy_abi_version_0_2_1"], (
        f"the module exports {abis}: Envoy >= 1.33 does not clear the route cache after header "
        "changes for ABIs above 0.2.1; call the clear_route_cache foreign function after setting "
        "the override headers, then update this test"
    )
    # The callbacks the filter relies on are exported.
    for name in ["proxy_on_request_headers", "proxy_on_response_headers", "proxy_on_configure"]:
        assert name in names
