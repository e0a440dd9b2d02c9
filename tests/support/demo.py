#!/usr/bin/env python3
"""`make run`: the canary-with-sticky-sessions demo on 127.0.0.1.

Starts four whoami backends (canary-v1-0/1 on 8081/8082, canary-v2-0/1 on
8083/8084) and Envoy with envoy-config/envoy-local.yaml (listener
127.0.0.1:10000, admin 127.0.0.1:9901), prints the walkthrough commands,
and stops everything on Ctrl-C. Logs go to .run/ in the repository.

Needs the filter built (`make build`) and .venv (`make venv`); run it with
`PYTHONPATH=tests .venv/bin/python tests/support/demo.py` (`make run` does:
tests/testkit, PyYAML, and .venv/bin/envoy).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time

import testkit

WALKTHROUGH = """\
sticky-canary demo is up: Envoy {url} -> canary-v1 (2 pods), canary-v2 (2 pods)
Logs: {logs}/   Admin: {admin}

# Default traffic -> canary-v1 (stable), with the sticky cookie
curl -sv {url}/ 2>&1 | grep -iE "(Name:|Set-Cookie)"

# With the canary cookie -> canary-v2, with a sticky cookie of its own
curl -sv -b "canary=v2" {url}/ 2>&1 | grep -iE "(Name:|Set-Cookie)"

# Repeated requests with the sticky cookie go to the same pod
COOKIE=$(curl -s -o /dev/null -D - -b "canary=v2" {url}/ | tr -d '\\r' | sed -n 's/^set-cookie: \\(my-sticky-cookie=[^;]*\\).*/\\1/ip')
for i in 1 2 3 4 5; do curl -s -b "$COOKIE" {url}/ | grep -E "^(Name|Hostname):" | paste -sd' '; done

# ... and the version sticks without the canary cookie (no new Set-Cookie)
curl -sv -b "$COOKIE" {url}/ 2>&1 | grep -iE "(Name:|Set-Cookie)"

# Header rule: x-canary: always -> canary-v2, never -> canary-v1
curl -s -H "x-canary: always" {url}/ | head -1

# /weighted/: 20% of new users go to canary-v2 (cookie my-weighted-cookie)
for i in $(seq 50); do curl -s {url}/weighted/x | head -1; done | sort | uniq -c

# The filter's counters
curl -s {admin}/stats/prometheus | grep '^sticky_canary' | grep -v ' 0$'

Press Ctrl-C to stop.
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(testkit.LOCAL_CONFIG), help="Envoy config (default: envoy-config/envoy-local.yaml)")
    ap.add_argument("--port", type=int, default=None, help="listener port (default: the config's, 10000)")
    ap.add_argument("--admin-port", type=int, default=None, help="admin port (default: the config's, 9901)")
    ap.add_argument("--log-level", default="info", help="Envoy log level (default: info)")
    args = ap.parse_args(argv)

    for path, what in ((testkit.WASM_PATH, "run `make build`"), (testkit.ENVOY_BIN, "run `make venv`")):
        if not path.exists():
            print(f"demo: {path} is missing: {what}", file=sys.stderr)
            return 2

    config = testkit.load_config(args.config)
    port = args.port or config["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]
    admin_port = args.admin_port or config["admin"]["address"]["socket_address"]["port_value"]
    logs = testkit.REPO_ROOT / ".run"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    try:
        backends = []
        for name, hostname, backend_port in testkit.DEFAULT_BACKENDS:
            try:
                backends.append(testkit.start_backend(logs, name, hostname, port=backend_port))
            except testkit.BackendStartError as e:
                print(f"demo: {e}\n(is port {backend_port} taken? stop the other process first)", file=sys.stderr)
                return 1
        try:
            envoy = testkit.start_envoy(config, logs, listener_port=port, admin_port=admin_port, log_level=args.log_level)
        except testkit.EnvoyStartError as e:
            print(f"demo: {e}", file=sys.stderr)
            return 1
        url = f"http://127.0.0.1:{envoy.port}"
        print(WALKTHROUGH.format(url=url, admin=f"http://127.0.0.1:{envoy.admin_port}", logs=logs), flush=True)
        while True:
            dead = [b.hostname for b in backends if not b.alive()] + ([] if envoy.alive() else ["envoy"])
            if dead:
                print(f"demo: {', '.join(dead)} exited; see the logs in {logs}", file=sys.stderr)
                if "envoy" in dead:
                    print(testkit.tail(envoy.log(), 30), file=sys.stderr)
                return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\ndemo: stopping", flush=True)
        return 0
    finally:
        testkit.stop_all()


if __name__ == "__main__":
    sys.exit(main())
