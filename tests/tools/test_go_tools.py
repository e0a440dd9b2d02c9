"""The pinned Go programs (scripts/go-tools.txt) are installed, run, and
are the versions pinned: a broken pin or a stale .tools/bin fails here, not
inside the first test that starts Envoy Gateway, istiod or the registry.

For each pin: the binary scripts/setup.sh built is there with its stamp
(testkit.tools.go_tool), `go version -m` says it was built from exactly that
package and module version, and the smoke command (`version` or
`--version`) exits 0 and prints something.
"""

from __future__ import annotations

import subprocess

import pytest

from testkit import hang_guard
from testkit.tools import go_tool, go_tools, tool


@pytest.mark.parametrize("pin", go_tools(), ids=lambda t: t.name)
def test_pinned_go_program_runs(pin, tmp_path):
    path = go_tool(pin.name)
    info = subprocess.run([tool("go"), "version", "-m", str(path)], capture_output=True, text=True,
                          timeout=hang_guard(60))
    assert info.returncode == 0, info.stderr
    fields = [line.split() for line in info.stdout.splitlines()]
    assert ["path", pin.package] in [f[:2] for f in fields], info.stdout
    (mod,) = [f for f in fields if f[:1] == ["mod"]]
    assert mod[2] == pin.version, (mod, pin.pin)
    # Run from a scratch directory: some of them write files where they start.
    out = subprocess.run([str(path), *pin.smoke], cwd=tmp_path, capture_output=True, text=True,
                         timeout=hang_guard(60))
    assert out.returncode == 0, out.stdout + out.stderr
    assert (out.stdout + out.stderr).strip(), f"{pin.name} {' '.join(pin.smoke)} printed nothing"
