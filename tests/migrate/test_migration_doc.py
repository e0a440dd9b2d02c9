"""docs/migration.md is true: the worked example's transcript is re-run
(on free ports), its plugin config is the golden one, and the report
excerpt is in the lossy fixture's report."""

from __future__ import annotations

import json
import re
import subprocess

import testkit
import migrate_support as ms

DOC = testkit.REPO_ROOT / "docs" / "migration.md"
FIXTURES = testkit.REPO_ROOT / "cli" / "tests" / "fixtures"
DEMO = "/tmp/migrate-demo"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), re.S)


def transcript() -> list[tuple[str, list[str]]]:
    """(command, expected output lines) of the worked example."""
    text = DOC.read_text().split("<!-- transcript: worked-example -->", 1)[1]
    body = re.search(r"```console\n(.*?)```", text, re.S).group(1)
    steps: list[tuple[str, list[str]]] = []
    lines = body.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        assert line.startswith("$ "), line
        cmd = line[2:]
        while cmd.endswith("\\"):
            i += 1
            cmd = cmd[:-1] + " " + lines[i].strip()
        i += 1
        out = []
        while i < len(lines) and not lines[i].startswith("$ "):
            out.append(lines[i])
            i += 1
        steps.append((cmd, out))
    return steps


def norm(lines: list[str]) -> list[str]:
    return [re.sub(r"(SERVERID=)[A-Za-z0-9_-]+", r"\1<value>", x) for x in lines]


def test_worked_example_transcript(cli, workdir):
    steps = transcript()
    demo = workdir / "demo"
    demo.mkdir()
    ports: dict[str, str] = {}
    procs = []

    def sub(cmd: str) -> str:
        for old, new in ports.items():
            cmd = cmd.replace(old, new)
        return cmd.replace(DEMO, str(demo))

    try:
        for cmd, want in steps:
            if cmd.startswith("python3 tests/support/whoami.py"):
                m = re.search(r"--port (\d+) --name (\S+) --hostname (\S+) &$", cmd)
                b = testkit.start_backend(demo, m.group(2), m.group(3))
                procs.append(b)
                ports[f"127.0.0.1:{m.group(1)}"] = b.address
                assert want == []
            elif cmd.startswith(".venv/bin/envoy"):
                cfg = testkit.load_config(demo / "envoy.yaml")
                envoy = testkit.start_envoy(cfg, demo / "envoy")
                procs.append(envoy)
                ports["127.0.0.1:10000"] = f"127.0.0.1:{envoy.port}"
                assert want == []
            else:
                r = subprocess.run(["bash", "-c", sub(cmd)], cwd=testkit.REPO_ROOT, capture_output=True, text=True,
                                   timeout=testkit.hang_guard(300))
                got = (r.stdout + r.stderr).splitlines()
                assert norm(got) == norm(want), (cmd, r.stdout, r.stderr)
    finally:
        for p in procs:
            p.stop()


def test_worked_example_plugin_is_the_golden_one():
    (example,) = [b for b in blocks("json") if '"foo.example.com_info"' in b]
    golden = json.loads((FIXTURES / "pair-header" / "expected" / "envoy" / "plugin.json").read_text())
    assert json.loads(example) == golden


def test_report_excerpt_is_real():
    block = re.search(r"```\n(# sticky-canary migrate:.*?)```", DOC.read_text(), re.S).group(1)
    report = (FIXTURES / "lossy" / "expected" / "envoy" / "report.txt").read_text().splitlines()
    for line in block.splitlines():
        assert line in report, line
