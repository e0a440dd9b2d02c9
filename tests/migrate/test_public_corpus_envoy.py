"""The public ingress corpus in the real Envoy: every entry of
``../shared/reference/ingress-corpus/`` (beside the repository root, or
above it, or beside the local checkout it was cloned from;
``STICKY_CANARY_CORPUS`` overrides) that has ``envoy_checks`` is
migrated with ``--target envoy`` and run in Envoy 1.40 with one whoami pod
per Service (its ``Name`` is the Service's upstream name), and each check
is sent as ingress-nginx's expectation says: the Service that answers, the
status, the session cookie's attributes, and for weight checks the share
of new users on the canary within 5 standard deviations.

cli/tests/corpus.rs checks every entry and target location by location
through the filter's core; this runs the corpus's own requests end to end.
A missing corpus fails (it is part of the project's machines, not
optional).
"""

from __future__ import annotations

import email.utils
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

import testkit
import migrate_support as ms


def corpus_dir() -> Path:
    """As cli/tests/corpus.rs finds it: ``STICKY_CANARY_CORPUS``, else
    beside the repository root or a directory above it, or the same beside
    the local checkout this one was cloned from (a clean clone elsewhere)."""
    if os.environ.get("STICKY_CANARY_CORPUS"):
        return Path(os.environ["STICKY_CANARY_CORPUS"])
    roots = [testkit.REPO_ROOT]
    origin = subprocess.run(["git", "-C", str(testkit.REPO_ROOT), "remote", "get-url", "origin"],
                            capture_output=True, text=True, timeout=testkit.hang_guard(30))
    if origin.returncode == 0 and Path(origin.stdout.strip()).is_absolute() and Path(origin.stdout.strip()).is_dir():
        roots.append(Path(origin.stdout.strip()))
    for d in (p for r in roots for p in r.parents):
        c = d / "shared" / "reference" / "ingress-corpus"
        if (c / "expectations.json").is_file():
            return c
    pytest.fail(
        f"the public ingress corpus is missing: expected ../shared/reference/ingress-corpus/expectations.json beside "
        f"the repository root {testkit.REPO_ROOT} or the checkout it was cloned from (or above them); set "
        "STICKY_CANARY_CORPUS to its directory"
    )


def entries_with_checks() -> list[dict]:
    try:
        d = corpus_dir()
    except BaseException:  # pytest.fail at collection: report it in the test instead
        return [{"id": "corpus-missing", "envoy_checks": [], "files": []}]
    exp = json.loads((d / "expectations.json").read_text())
    return [e for e in exp["entries"] if e.get("envoy_checks")]


ENTRIES = entries_with_checks()


def check_set_cookie(r: testkit.Response, want: dict, now: float) -> list[str]:
    cs = r.cookies_named(want["name"])
    if len(cs) != 1:
        return [f"want one Set-Cookie {want['name']}, got {r.set_cookies}"]
    c = cs[0]
    attrs = {a.split("=", 1)[0].lower(): (a.split("=", 1)[1] if "=" in a else True) for a in c.attributes}
    problems = []
    for key, value in want.items():
        if key == "name":
            continue
        got = attrs.get(key.lower())
        if key == "Expires":
            if got is None:
                problems.append("no Expires")
                continue
            when = email.utils.parsedate_to_datetime(got).timestamp()
            # now + seconds, to the second; generous for a busy machine.
            if abs(when - (now + value)) > 120:
                problems.append(f"Expires {got}, want now + {value} s")
        elif value is True or value is False:
            if (got is True) != value:
                problems.append(f"{key} {'present' if got else 'absent'}, want {'present' if value else 'absent'}")
        elif value is None:
            if got is not None:
                problems.append(f"{key}={got}, want none")
        elif str(got) != str(value):
            problems.append(f"{key}={got}, want {value}")
    return [f"Set-Cookie {c.name}: {p} ({r.set_cookies})" for p in problems]


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["id"] for e in ENTRIES])
def test_entry_in_envoy(cli, workdir, entry):
    d = corpus_dir()
    files = [d / f for f in entry["files"]]
    manifests = "\n---\n".join(f.read_text() for f in files)
    m = ms.migrate(cli, manifests, "envoy", workdir, "--allow-lossy", "--listen", "127.0.0.1:10000")
    assert m.code == 0, m.stderr
    pods_dir = workdir / f"corpus-{entry['id']}"
    clusters = [c["name"] for c in m.envoy_config["static_resources"]["clusters"]]
    backends = {name: testkit.start_backend(pods_dir, name, f"{name}-0") for name in clusters}
    envoy = None
    try:
        envoy = ms.start_migrated_envoy(m, pods_dir / "envoy", {name: [b] for name, b in backends.items()})
        client = ms.client(envoy)
        problems = []
        for k, check in enumerate(entry["envoy_checks"]):
            if "weight" in check:
                w = check["weight"]
                hits = 0
                for _ in range(w["n"]):
                    # a new user each time: no cookie
                    r = client.get(w["path"], headers=[("Host", w["host"])] + list(w["headers"].items()))
                    assert r.status == 200, r
                    hits += r.name == w["backend"]
                if not ms.within_5_sd(hits, w["n"], w["p"]):
                    problems.append(f"check {k}: {hits} of {w['n']} new users on {w['backend']}, want {w['p']:.3f} within 5 sd")
                continue
            req, want = check["req"], check["expect"]
            headers = [("Host", req["host"])] + list(req["headers"].items())
            now = time.time()
            r = client.get(req["path"], headers=headers, cookies=req["cookies"] or None)
            where = f"check {k}: {req['host']}{req['path']} headers {req['headers']} cookies {req['cookies']}"
            if "status" in want and r.status != want["status"]:
                problems.append(f"{where}: status {r.status}, want {want['status']}")
            if "backend" in want:
                if r.status != 200 or r.name != want["backend"]:
                    problems.append(f"{where}: answered by {r.name} ({r.status}), want {want['backend']}")
            if want.get("no_set_cookie") and r.set_cookies:
                problems.append(f"{where}: Set-Cookie {r.set_cookies}, want none")
            if "set_cookie" in want:
                problems += [f"{where}: {p}" for p in check_set_cookie(r, want["set_cookie"], now)]
        assert not problems, "\n".join(problems) + "\n" + m.report
    finally:
        if envoy:
            envoy.stop()
        for b in backends.values():
            b.stop()
