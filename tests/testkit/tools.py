"""The programs tests run besides Envoy and Python: Debian tools (promtool,
node) and the pinned Go programs of scripts/go-tools.txt (Envoy Gateway,
Istio's pilot-discovery and pilot-agent, the OCI registry), which
scripts/setup.sh builds into .tools/bin. `make test` runs that script
first, so a missing tool here means it was skipped.

``tool(name) -> str``: a program on PATH (the test fails, naming the
command that installs it, when it is missing).
``promtool(*args, input=None, cwd=None, timeout=120) -> CompletedProcess``:
runs promtool (text output captured).

``go_tools() -> [GoTool]``: every pin, in file order. ``GoTool``:
``.name`` (the binary), ``.package`` (``module/cmd/name``), ``.version``,
``.smoke`` (arguments that make it print its version), ``.path``
(``.tools/bin/<name>``). ``go_tool(name) -> Path``: the installed binary of
that pin, after checking that scripts/setup.sh built it from exactly the
pinned version (its stamp in ``.tools/stamps``); a test that starts
envoy-gateway, pilot-discovery, pilot-agent or the registry gets its path
here, and starts it with ``testkit.process.start_process``.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .paths import GO_PINS, REPO_ROOT, TOOLS_BIN
from .wait import hang_guard

STAMPS = REPO_ROOT / ".tools" / "stamps"

# The scripts/setup.sh group that installs each Debian tool.
_INSTALLED_BY = {"promtool": "test", "node": "test", "npm": "test", "go": "test", "wrk": "bench", "valgrind": "bench"}


def tool(name: str) -> str:
    """The path of `name` on PATH; fails the test with the fix if it is not there."""
    exe = shutil.which(name)
    assert exe, f"{name} not found: run scripts/setup.sh {_INSTALLED_BY.get(name, 'test')} (make test does)"
    return exe


def promtool(*args: str, input: str | None = None, cwd: Path | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess:
    """promtool ARGS (stdin: `input`), its output captured as text."""
    return subprocess.run([tool("promtool"), *args], input=input, capture_output=True, text=True,
                          timeout=hang_guard(timeout), cwd=cwd)


@dataclass(frozen=True)
class GoTool:
    name: str
    package: str  # module/cmd/name, without the version
    version: str
    smoke: tuple[str, ...]

    @property
    def pin(self) -> str:
        return f"{self.package}@{self.version}"

    @property
    def path(self) -> Path:
        return TOOLS_BIN / self.name


def go_tools() -> list[GoTool]:
    """The pins of scripts/go-tools.txt: `NAME PACKAGE@VERSION SMOKE ARGS...`."""
    out = []
    for line in GO_PINS.read_text().splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        name, pin, *smoke = fields
        package, _, version = pin.rpartition("@")
        out.append(GoTool(name, package, version, tuple(smoke)))
    return out


def go_tool(name: str) -> Path:
    """The binary scripts/setup.sh built for the pin named `name`."""
    (t,) = [t for t in go_tools() if t.name == name]
    stamp = STAMPS / name
    built = stamp.read_text().strip() if stamp.exists() else None
    assert t.path.exists() and built == t.pin, (
        f"{t.path} is not {t.pin} (stamp: {built}): run scripts/setup.sh test (make test does)")
    return t.path
