"""The examples under examples/ run here exactly as their READMEs say, so the
curl transcripts in the READMEs are real and cannot rot.

Every example directory holds README.md, envoy.yaml (the Docker form:
/etc/envoy/sticky_canary.wasm, traefik/whoami pods reached by compose
service name) and docker-compose.yaml. For each one this test:

1. copies the directory to a scratch directory;
2. starts a whoami stand-in (tests/support/whoami.py) for every
   traefik/whoami service of docker-compose.yaml, with its `hostname` and
   `WHOAMI_NAME`;
3. runs every ```console block of README.md in order, with bash, in the
   copy: `$ docker compose up ...` (re)starts the pip Envoy from the copy's
   envoy.yaml, rewritten to loopback (listener and admin on 127.0.0.1, the
   clusters' service names replaced by the stand-ins' addresses, the .wasm
   path made local); `cargo ...`, `cd ...` and other `docker ...` lines are
   skipped; `localhost:10000` / `localhost:9901` become the Envoy's real
   ports (scripts read them from $ENVOY / $ADMIN);
4. compares each command's output with the lines under it in the README.

Comparison. Lines must be equal except for what differs from run to run:
session cookie values, sticky hashes (16 hex digits) and pod hostnames
are variables that must map consistently through the whole README (the same
value in the README is the same value in the run; a cookie or hash is never
shared by two different values; a pod may stand for another pod of the same
version, since the hash ring depends on pod addresses). `uniq -c` lines
("   181 canary-v1") must have the same labels in the same order and counts
within 6 sqrt(count) + 3 of the README's (randomly keyed users vary from run
to run; user-id and client-IP keyed counts are exact anyway). A block after
`<!-- check: claims -->` depends on timing and is checked by the example's
claim function below instead (CLAIMS).

Also usable by hand (from the repository root; PYTHONPATH=tests makes
testkit importable, as pytest.ini does for pytest):

    PYTHONPATH=tests .venv/bin/python tests/e2e/test_examples.py run examples/weighted-ramp
        serves the example on localhost:10000 (admin 127.0.0.1:9901) with the
        pip Envoy and whoami stand-ins, restarting Envoy whenever
        envoy.yaml changes (in place of `docker compose up -d
        --force-recreate envoy`); Ctrl-C stops everything.
    PYTHONPATH=tests .venv/bin/python tests/e2e/test_examples.py write examples/NAME...
        re-runs the transcripts and writes the real outputs into README.md.
    PYTHONPATH=tests .venv/bin/python tests/e2e/test_examples.py check examples/NAME...
        runs and compares, like the test.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

import testkit

EXAMPLES_DIR = testkit.REPO_ROOT / "examples"
ENVOY_IMAGE = "envoyproxy/envoy:v1.40.0"
WASM_IN_DOCKER = "/etc/envoy/sticky_canary.wasm"
WASM_MOUNT = "../../target/wasm32-wasip1/release/sticky_canary.wasm:/etc/envoy/sticky_canary.wasm:ro"
SCENARIOS = {"canary-sticky", "weighted-ramp", "ab-n", "timed-ramp", "user-id-key", "client-ip-key"}
# A hang guard only (a slow machine takes longer, it does not fail): the
# longest command, watch.sh, takes about 20 s.
COMMAND_TIMEOUT = testkit.hang_guard(600.0)

# Envoy dies with the thread that spawned it (it sets PR_SET_PDEATHSIG):
# examples run in these long-lived threads.
RUNNERS = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="example-runner")


def example_dirs() -> list[Path]:
    if not EXAMPLES_DIR.is_dir():
        return []
    return sorted(d for d in EXAMPLES_DIR.iterdir() if (d / "envoy.yaml").is_file() and (d / "README.md").is_file())


# ---------------------------------------------------------------------------
# docker-compose.yaml -> whoami stand-ins


@dataclass
class Pod:
    service: str
    hostname: str
    name: str  # WHOAMI_NAME: the version


def compose(directory: Path) -> dict:
    return yaml.safe_load((directory / "docker-compose.yaml").read_text())


def compose_pods(directory: Path) -> list[Pod]:
    pods = []
    for service, spec in compose(directory)["services"].items():
        if str(spec.get("image", "")).startswith("traefik/whoami"):
            env = spec.get("environment") or {}
            if isinstance(env, list):
                env = dict(e.split("=", 1) for e in env)
            pods.append(Pod(service, spec.get("hostname", service), env.get("WHOAMI_NAME", service)))
    return pods


def local_config(path: Path) -> dict:
    """The example's envoy.yaml with listener and admin on 127.0.0.1 (the
    launcher rewrites ports, endpoints and the .wasm path)."""
    cfg = testkit.load_config(path)
    cfg["admin"]["address"]["socket_address"]["address"] = testkit.LOOPBACK
    for listener in cfg["static_resources"]["listeners"]:
        listener["address"]["socket_address"]["address"] = testkit.LOOPBACK
        listener["enable_reuse_port"] = False  # a port clash fails loudly
    return cfg


def cluster_hosts(cfg: dict) -> dict[str, list[str]]:
    """cluster name -> endpoint addresses as written (compose service names)."""
    out = {}
    for c in cfg["static_resources"]["clusters"]:
        hosts = []
        for group in c["load_assignment"]["endpoints"]:
            for ep in group["lb_endpoints"]:
                hosts.append(ep["endpoint"]["address"]["socket_address"]["address"])
        out[c["name"]] = hosts
    return out


class LocalExample:
    """An example's envoy.yaml on the pip Envoy, in front of whoami stand-ins
    for its compose pods, all on 127.0.0.1."""

    def __init__(self, directory: Path, workdir: Path, listener_port: int | None = None, admin_port: int | None = None):
        self.directory = Path(directory)
        self.workdir = Path(workdir)
        self.fixed = (listener_port, admin_port)
        self.backends: testkit.BackendSet | None = None
        self.envoy: testkit.Envoy | None = None

    def start_backends(self) -> None:
        spec = [(p.name, p.hostname, 0) for p in compose_pods(self.directory)]
        self.backends = testkit.start_backends(self.workdir / "pods", spec)
        self.address_of = {}
        for pod, backend in zip(compose_pods(self.directory), self.backends.all):
            self.address_of[pod.service] = backend.address
            self.address_of[pod.hostname] = backend.address

    def start_envoy(self) -> testkit.Envoy:
        """(Re)start Envoy from the directory's envoy.yaml as it is now."""
        if self.envoy is not None:
            self.envoy.stop()
            self.envoy = None
        cfg = local_config(self.directory / "envoy.yaml")
        endpoints = {c: [self.address_of[h] for h in hosts] for c, hosts in cluster_hosts(cfg).items()}
        self.envoy = testkit.start_envoy(cfg, self.workdir / "envoy", endpoints=endpoints,
                                         listener_port=self.fixed[0], admin_port=self.fixed[1])
        return self.envoy

    @property
    def port(self) -> int:
        return self.envoy.port if self.envoy else (self.fixed[0] or 10000)

    @property
    def admin_port(self) -> int:
        return self.envoy.admin_port if self.envoy else (self.fixed[1] or 9901)

    def stop(self) -> None:
        if self.envoy is not None:
            self.envoy.stop()
        if self.backends is not None:
            self.backends.stop()


# ---------------------------------------------------------------------------
# README transcripts

BLOCK = re.compile(r"(?P<marker><!--\s*check:\s*(?P<mode>[a-z]+)\s*-->\s*\n)?```console\n(?P<body>.*?)^```", re.S | re.M)


@dataclass
class Step:
    command: str  # as written after "$ ", continuation lines included
    expected: list[str]
    mode: str  # "lines" or "claims"
    block: int
    actual: list[str] = field(default_factory=list)
    stderr: str = ""
    returncode: int | None = None
    seconds: float = 0.0


def parse_transcripts(text: str) -> list[Step]:
    steps: list[Step] = []
    for b, m in enumerate(BLOCK.finditer(text)):
        mode = m.group("mode") or "lines"
        current: Step | None = None
        continuing = False
        for line in m.group("body").splitlines():
            if continuing and current is not None:
                current.command += "\n" + line
                continuing = line.endswith("\\")
            elif line.startswith("$ "):
                current = Step(line[2:], [], mode, b)
                steps.append(current)
                continuing = line.endswith("\\")
            elif current is not None:
                current.expected.append(line)
    return steps


def render_transcripts(text: str, steps: list[Step]) -> str:
    """README text with every console block's outputs replaced by the actual ones."""
    by_block: dict[int, list[Step]] = {}
    for s in steps:
        by_block.setdefault(s.block, []).append(s)
    out, last = [], 0
    for b, m in enumerate(BLOCK.finditer(text)):
        body = "".join("$ " + s.command + "\n" + "".join(a + "\n" for a in s.actual) for s in by_block.get(b, []))
        out.append(text[last:m.start("body")])
        out.append(body)
        last = m.end("body")
    out.append(text[last:])
    return "".join(out)


SKIPPED = ("cargo ", "cd ", "git ", "docker ", "make ")


def run_step(step: Step, ex: LocalExample, cwd: Path) -> None:
    cmd = step.command.strip()
    if cmd.startswith("docker compose up"):
        ex.start_envoy()
        return
    if cmd.startswith(SKIPPED):
        return
    text = cmd.replace("localhost:10000", f"localhost:{ex.port}").replace("localhost:9901", f"localhost:{ex.admin_port}")
    env = dict(os.environ, ENVOY=f"localhost:{ex.port}", ADMIN=f"localhost:{ex.admin_port}", LC_ALL="C")
    try:
        r = subprocess.run(["bash", "-c", text], cwd=cwd, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
        # What a terminal shows: whoami ends header lines with CRLF.
        step.actual, step.stderr, step.returncode = r.stdout.replace("\r", "").split("\n"), r.stderr, r.returncode
        if step.actual and step.actual[-1] == "":
            step.actual.pop()
    except subprocess.TimeoutExpired as e:
        step.actual = (e.stdout or b"").decode(errors="replace").splitlines() if isinstance(e.stdout, bytes) else (e.stdout or "").splitlines()
        step.stderr, step.returncode = f"timed out after {COMMAND_TIMEOUT:.0f} s", None


@dataclass
class Run:
    example: str
    steps: list[Step]
    pods: list[Pod]
    error: str = ""


def run_example(directory: Path, workdir: Path) -> Run:
    """Run the README's transcripts against a scratch copy of the example."""
    directory = Path(directory)
    copy = Path(workdir) / "copy"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(directory, copy)
    steps = parse_transcripts((directory / "README.md").read_text())
    ex = LocalExample(copy, Path(workdir) / "run")
    run = Run(directory.name, steps, compose_pods(directory))
    try:
        ex.start_backends()
        for step in steps:
            t0 = time.monotonic()
            run_step(step, ex, copy)
            step.seconds = time.monotonic() - t0
    except Exception as e:  # noqa: BLE001 - reported by the test
        run.error = f"{type(e).__name__}: {e}"
    finally:
        ex.stop()
    return run


# ---------------------------------------------------------------------------
# Comparison

COUNT = re.compile(r"^\s+(\d+) (.*)$")


class Unifier:
    """Run-to-run variables (cookie values, sticky hashes, pod hostnames)
    mapped consistently from the README's values to the run's."""

    def __init__(self, pods: list[Pod]):
        self.version_of = {p.hostname: p.name for p in pods}
        kinds = [("cookie", r"(?<==)[12][A-Za-z0-9_-]{30,}"), ("hash", r"\b[0-9a-f]{16}\b")]
        if pods:
            hosts = "|".join(re.escape(h) for h in sorted(self.version_of, key=len, reverse=True))
            kinds.append(("host", rf"\b(?:{hosts})\b"))
        self.kinds = kinds
        self.token = re.compile("|".join(f"(?P<{k}>{p})" for k, p in kinds))
        self.forward: dict[tuple[str, str], str] = {}
        self.backward: dict[tuple[str, str], str] = {}

    def match(self, expected: str, actual: str) -> str | None:
        """None if `actual` matches `expected`, else why not."""
        pattern, vars_, last = [], [], 0
        for m in self.token.finditer(expected):
            pattern.append(re.escape(expected[last:m.start()]))
            kind = m.lastgroup
            pattern.append(f"({dict(self.kinds)[kind]})")
            vars_.append((kind, m.group()))
            last = m.end()
        pattern.append(re.escape(expected[last:]))
        got = re.fullmatch("".join(pattern), actual)
        if not got:
            return "differs"
        for (kind, exp), act in zip(vars_, got.groups()):
            if kind == "host" and self.version_of.get(exp) != self.version_of.get(act):
                return f"pod {act} is not of the same version as {exp}"
            prev = self.forward.setdefault((kind, exp), act)
            if prev != act:
                return f"{kind} {exp} stood for {prev} earlier, now {act}"
            if kind != "host":
                back = self.backward.setdefault((kind, act), exp)
                if back != exp:
                    return f"{kind} {act} stands for both {back} and {exp}"
        return None


def compare_step(step: Step, uni: Unifier) -> list[str]:
    exp = [line for line in step.expected]
    act = list(step.actual)
    while exp and not exp[-1].strip():
        exp.pop()
    while act and not act[-1].strip():
        act.pop()
    problems = []
    if len(exp) != len(act):
        problems.append(f"{len(act)} lines instead of {len(exp)}")
    else:
        for e, a in zip(exp, act):
            ce, ca = COUNT.match(e), COUNT.match(a)
            if ce and ca:
                why = uni.match(ce.group(2), ca.group(2))
                n_exp, n_act = int(ce.group(1)), int(ca.group(1))
                if why is None and abs(n_act - n_exp) > 6 * math.sqrt(n_exp) + 3:
                    why = f"count {n_act} too far from {n_exp}"
            else:
                why = uni.match(e, a)
            if why:
                problems.append(f"{why}:\n      README: {e!r}\n      actual: {a!r}")
    if problems:
        detail = "\n    ".join(problems)
        out = "\n".join(step.actual) or "(nothing)"
        return [f"$ {step.command}\n    {detail}\n  --- actual output ---\n{out}\n  --- stderr ---\n{step.stderr.strip()}"]
    return []


def ramp_weight(elapsed: int, duration: int, steps: int) -> int:
    """canary-v2's weight in the timed-ramp example (0 -> 100) at a whole
    second `elapsed` after its start, as the filter computes it from the
    host clock in whole seconds (src/compile.rs Weight::at)."""
    if elapsed <= 0:
        return 0
    if elapsed >= duration:
        return 100
    return 100 * (elapsed * steps // duration) // steps


def claims_timed_ramp(run: Run) -> list[str]:
    """watch.sh lines, checked against what the filter must have served,
    whatever the speed of the machine.

    A line's label is read before its requests run, and the next line's
    label after they ran, so the sample of a line labelled t, followed by a
    line labelled u, was served at whole seconds t..u after the start (the
    last line: from t on). The claims use only lines whose sample lies
    within one weight step: at weight 0 nobody is on canary-v2, at 100
    everybody is, in between new users are within 5 sd of the weight and,
    over two or more such lines, some line shows a split (0 < x < all).
    watch.sh always ends with a sample taken after the end of the ramp.
    The returning users on canary-v2 never decrease."""
    line = re.compile(r"start *([+-]\d+)s: canary-v2 serves +(\d+) of (\d+) new users, +(\d+) of (\d+) returning users")
    rows = []
    for step in run.steps:
        if step.mode == "claims":
            rows += [(int(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(4)), int(m.group(5)))
                     for m in map(line.fullmatch, step.actual) if m]
    duration, steps = 8, 4  # envoy.yaml's ramp
    if not rows or rows[-1][0] < duration:
        return [f"watch.sh printed no line for a sample taken after the end of the ramp: {rows}"]
    problems = []
    between = []
    for i, (t, new, n, back, m) in enumerate(rows):
        last = rows[i + 1][0] if i + 1 < len(rows) else max(t, duration)
        levels = {ramp_weight(e, duration, steps) for e in range(t, last + 1)}
        if len(levels) != 1:
            continue  # the sample straddles a step
        [w] = levels
        when = f"start{t:+d}s..{last:+d}s"
        if w == 0 and (new or back):
            where = "before the start" if last < 0 else "while its weight was still 0"
            problems.append(f"{when}: canary-v2 served users {where} ({new}/{n} new, {back}/{m} returning)")
        elif w == 100 and (new, back) != (n, m):
            problems.append(f"{when}: not everybody on canary-v2 after the end ({new}/{n}, {back}/{m})")
        elif 0 < w < 100:
            sd = math.sqrt(n * w / 100 * (1 - w / 100))
            if abs(new - n * w / 100) > 5 * sd:
                problems.append(f"{when}: {new} of {n} new users on canary-v2 at weight {w} (5 sd: {5 * sd:.1f})")
            between.append(rows[i])
    backs = [r[3] for r in rows]
    if backs != sorted(backs):
        problems.append(f"returning users left canary-v2: {backs}")
    if len(between) >= 2 and not any(0 < new < n for _, new, n, _, _ in between):
        problems.append(f"no line during the ramp shows it between 0 and 100: {between}")
    return problems


CLAIMS = {"timed-ramp": claims_timed_ramp}


def check_run(run: Run) -> list[str]:
    problems = [run.error] if run.error else []
    uni = Unifier(run.pods)
    for step in run.steps:
        if step.mode == "lines":
            problems += compare_step(step, uni)
        elif step.mode != "claims":
            problems.append(f"unknown check mode {step.mode!r}")
    if run.example in CLAIMS:
        problems += CLAIMS[run.example](run)
    return problems


# ---------------------------------------------------------------------------
# Tests

EXAMPLES = example_dirs()
IDS = [d.name for d in EXAMPLES]


def test_every_rollout_scenario_has_an_example():
    assert SCENARIOS <= set(IDS), SCENARIOS - set(IDS)


@pytest.mark.parametrize("directory", EXAMPLES, ids=IDS)
def test_example_files(directory):
    """The Docker form: compose runs Envoy 1.40 with this envoy.yaml and the
    filter mounted where envoy.yaml loads it, and every cluster endpoint is a
    traefik/whoami service of the compose file, on port 80."""
    spec = compose(directory)
    envoy = spec["services"]["envoy"]
    assert envoy["image"] == ENVOY_IMAGE
    assert "./envoy.yaml:/etc/envoy/envoy.yaml:ro" in envoy["volumes"]
    assert WASM_MOUNT in envoy["volumes"]
    assert any(str(p).startswith("10000:10000") for p in envoy["ports"])
    assert "127.0.0.1:9901:9901" in envoy["ports"], "the admin interface stays on the host"
    cfg = testkit.load_config(directory / "envoy.yaml")
    [plugin] = testkit.wasm_plugins(cfg)
    assert plugin["vm_config"]["code"]["local"]["filename"] == WASM_IN_DOCKER
    pods = {p.service: p for p in compose_pods(directory)}
    for cluster, hosts in cluster_hosts(cfg).items():
        assert len(hosts) >= 2, f"{cluster}: two pods per version show the pod stickiness"
        for h in hosts:
            assert h in pods, f"{cluster}: endpoint {h} is not a whoami service"
            assert pods[h].name == cluster, f"{h} answers Name: {pods[h].name}, not {cluster}"
            assert h in envoy.get("depends_on", [])
    for c in cfg["static_resources"]["clusters"]:
        lb = c.get("lb_policy")
        if lb is None:
            # Persistent mode: override_host with a consistent-hash fallback.
            policy = c["load_balancing_policy"]["policies"][0]["typed_extension_config"]
            fallback = policy["typed_config"]["fallback_policy"]["policies"][0]["typed_extension_config"]
            lb = fallback["name"].rsplit(".", 1)[-1].upper()
        assert c["type"] == "STRICT_DNS" and lb in ("RING_HASH", "MAGLEV"), (c["name"], lb)
        for group in c["load_assignment"]["endpoints"]:
            for ep in group["lb_endpoints"]:
                assert ep["endpoint"]["address"]["socket_address"]["port_value"] == 80
    readme = (directory / "README.md").read_text()
    steps = parse_transcripts(readme)
    assert any(s.command.startswith("docker compose up") for s in steps), "README starts the example"
    assert any(s.command.startswith("curl") or "curl" in s.command or ".sh" in s.command for s in steps)
    assert f"test_examples.py run examples/{directory.name}" in readme, "README shows the pip-Envoy way"


@pytest.fixture(scope="module")
def runs(workdir):
    """Every example's transcripts, all examples at once."""
    futures = {d.name: RUNNERS.submit(run_example, d, workdir / "examples" / d.name) for d in EXAMPLES}
    return {name: f.result() for name, f in futures.items()}


@pytest.mark.parametrize("directory", EXAMPLES, ids=IDS)
def test_readme_transcript(runs, directory):
    run = runs[directory.name]
    assert run.steps, "no ```console transcript in README.md"
    problems = check_run(run)
    assert not problems, f"{directory.name}/README.md does not match a real run:\n" + "\n".join(problems)


# ---------------------------------------------------------------------------
# Command line


def _serve(directory: Path) -> int:
    work = Path(tempfile.mkdtemp(prefix=f"sticky-canary-{directory.name}-"))
    ex = LocalExample(directory, work, listener_port=10000, admin_port=9901)
    ex.start_backends()
    path = directory / "envoy.yaml"

    def stamp():
        st = path.stat()
        return (st.st_mtime_ns, st.st_size)

    try:
        seen = stamp()
        ex.start_envoy()
        print(f"{directory.name}: Envoy on http://localhost:10000 (admin http://127.0.0.1:9901), "
              f"pods: {', '.join(p.hostname for p in compose_pods(directory))}")
        print(f"Envoy restarts when {path} changes; its log: {ex.envoy.log_path}. Ctrl-C stops.")
        while True:
            time.sleep(0.5)
            now = stamp()
            if now != seen:
                seen = now
                try:
                    ex.start_envoy()
                    print("envoy.yaml changed: Envoy restarted")
                except Exception as e:  # noqa: BLE001 - keep serving the next change
                    print(f"envoy.yaml changed but Envoy did not start:\n{e}")
    except KeyboardInterrupt:
        return 0
    finally:
        ex.stop()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["run", "write", "check"])
    ap.add_argument("examples", nargs="+", type=Path)
    args = ap.parse_args(argv)
    dirs = [d.resolve() for d in args.examples]
    if args.action == "run":
        if len(dirs) != 1:
            ap.error("run takes one example")
        return _serve(dirs[0])
    work = Path(tempfile.mkdtemp(prefix="sticky-canary-examples-"))
    futures = {d: RUNNERS.submit(run_example, d, work / d.name) for d in dirs}
    status = 0
    for d, f in futures.items():
        run = f.result()
        problems = check_run(run)
        if args.action == "write":
            if run.error:
                print(f"{d.name}: not written: {run.error}")
                status = 1
                continue
            readme = d / "README.md"
            readme.write_text(render_transcripts(readme.read_text(), run.steps))
            print(f"{d.name}: README.md written ({len(run.steps)} commands)")
        else:
            print(f"{d.name}: " + ("OK" if not problems else "\n".join(problems)))
            status |= bool(problems)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
