"""Plugin config changes while 16 clients send, in the real Envoy.

Two ways of delivering a new plugin config to a running Envoy:

- **LDS**: the whole listener (HCM, routes, the Wasm filter and its JSON)
  comes from a watched file (`dynamic_resources.lds_config` with a
  `path_config_source` and `watched_directory`); a change is a new file
  renamed over the old one. Envoy updates the listener in place: new
  connections get the new filter chain, the old one is drained. Envoy runs
  with `--drain-strategy immediate`, so an old connection answers the
  request it has with the old config, adds `Connection: close`, and the
  client's next request (on a new connection) sees the new config. With
  Envoy's default drain (gradual over `--drain-time-s`, 600 s) an open
  keep-alive connection kept the old config (5 of 5 requests right after
  the update, also with `--drain-time-s 2`) until Envoy closes it, at the
  latest at the end of the drain time.
  Every response carries `x-config-gen` (a route `response_headers_to_add`
  in each listener version), so each answer is checked against the exact
  config that served it.
- **ECDS**, as Istio delivers a WasmPlugin: the HTTP filter has
  `config_discovery` (no default config) and its
  `envoy.config.core.v3.TypedExtensionConfig` comes from a watched file
  (`testkit.use_ecds` / `testkit.write_ecds`). The new config applies to
  new requests on existing connections too (the probe's keep-alive
  connection sees every generation); requests in flight at the update are
  answered by the old or the new config. A request sent after the main
  thread saw the new generation answer (a probe route entry whose cookie
  name carries the generation) must be served by it; one sent earlier may
  be served by the old or the new one, and is checked against both.

Five generations, each applied when the clients' request counter passes a
threshold (counts, not durations):

0. canary-v2 weight 10, one key, a cookie rule.
1. weight 10 -> 30: exactly the users whose bucket is in 10..30 move to
   canary-v2 (a separate Envoy with generation 1's config, asked with the
   users' generation-0 cookies, says who), nobody moves back.
2. key rotation: `[new, old]`: nobody moves; every cookie is re-sealed.
3. a new header rule (`x-beta: team`): only the users sending it move.
4. a new route entry for `/shop/` (its own cookie, canary-v2 at 100):
   `/shop/` requests go to canary-v2, nothing else changes.

Every request must be a 200; every answer must be the version its config
gives that user; every user keeps one pod per version. A second test
holds one request open across an update (headers before, body after):
the old config decides and answers it, as described above. Envoy is
started from the test thread; threads are used for clients only.
"""

from __future__ import annotations

import copy
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

import testkit

V1, V2 = "canary-v1", "canary-v2"
KEY_OLD = "Q1lG7l18ymBfHj+aouEhmFQVKqbdmDCszs+N7gTOhAo="
KEY_NEW = "kZFj/X5ItAqmuAew8uWTKYwsEYSpk0WBHtI7OfFwAAI="
COOKIE = "sc-live"
SHOP_COOKIE = "sc-shop"
N_CLIENTS = 16
USERS_PER_CLIENT = 12
REQUESTS_PER_CLIENT = 400
THRESHOLDS = (1000, 2000, 3000, 4000)  # total requests before generation 1, 2, 3, 4
# Each client's last TAIL requests wait until the last change serves, so
# every client sends under the last generation however slow the main
# thread is (the thresholds stay below N_CLIENTS * (REQUESTS - TAIL)).
TAIL = 100
assert THRESHOLDS[-1] < N_CLIENTS * (REQUESTS_PER_CLIENT - TAIL)
HANG_GUARD = testkit.hang_guard(120.0)
LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"


def plugin(gen: int) -> dict:
    """The plugin JSON of generation `gen` (each includes the previous changes)."""
    p = {
        "versions": [{"name": V1}, {"name": V2, "weight": 30 if gen >= 1 else 10}],
        "rules": [{"cookie": "canary", "value": "v2", "version": V2}],
        "session": {"cookie": {"name": COOKIE, "path": "/", "max_age": 3600},
                    "secrets": [KEY_NEW, KEY_OLD] if gen >= 2 else [KEY_OLD]},
        # The main thread's probe: a new session here is issued a cookie
        # named after the generation that served it.
        "routes": [{"name": "probe", "match": {"path_prefix": "/probe/"},
                    "session": {"cookie": {"name": f"probe-gen-{gen}"}}}],
    }
    if gen >= 3:
        p["rules"].insert(0, {"header": "x-beta", "value": "team", "version": V2})
    if gen >= 4:
        p["routes"].append({"name": "shop", "match": {"path_prefix": "/shop/"},
                            "versions": [{"name": V1}, {"name": V2, "weight": 100}],
                            "session": {"cookie": {"name": SHOP_COOKIE, "path": "/shop/"}}})
    return p


LAST_GEN = 4


def base_config() -> dict:
    """envoy-config/envoy-local.yaml with a generous connect timeout: on a
    busy machine a whoami pod (a Python server with a listen backlog of 5)
    can leave a new connection's SYN unanswered for a second, which the
    shipped 1 s turns into a 503 that has nothing to do with the update."""
    cfg = testkit.load_config()
    for c in cfg["static_resources"]["clusters"]:
        c["connect_timeout"] = "15s"
    return cfg


@dataclass
class LiveUser:
    beta: bool
    jar: dict = field(default_factory=dict)
    v0: str | None = None  # version at generation 0
    v1: str | None = None  # what generation 1's config gives (the oracle)
    log: list = field(default_factory=list)  # (path, candidate gens, status, version, pod, set-cookie names)

    def get(self, client: testkit.Client, path: str) -> testkit.Response:
        headers = [("x-beta", "team")] if self.beta else []
        r = client.get(path, headers=headers, cookies=dict(self.jar) or None)
        for c in map(testkit.parse_set_cookie, r.set_cookies):
            self.jar[c.name] = c.value
        return r

    def expected(self, gen: int, path: str) -> str:
        if path.startswith("/shop/") and gen >= 4:
            return V2
        if self.beta and gen >= 3:
            return V2
        return self.v0 if gen == 0 else self.v1


class Gens:
    """Which generation is written (in the file) and confirmed (seen serving)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.written = 0
        self.confirmed = 0
        self.done = 0
        self.all_applied = threading.Event()


# Generations are polled every 10 ms so that traffic between two changes
# is as short as the machine allows.
POLL = 0.01


def probe_gen(client: testkit.Client) -> int | None:
    r = client.get("/probe/")
    assert r.status == 200, r
    for c in map(testkit.parse_set_cookie, r.set_cookies):
        if c.name.startswith("probe-gen-"):
            return int(c.name.removeprefix("probe-gen-"))
    return None


# ---------------------------------------------------------------------------
# The two delivery mechanisms


class Lds:
    """The listener from a watched file; each generation tags its answers."""

    name = "LDS"

    def __init__(self, workdir: Path, backends: testkit.BackendSet):
        base = base_config()
        self.listener = copy.deepcopy(base["static_resources"]["listeners"][0])
        self.dir = workdir / "lds"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "listener.yaml"
        self.version = 0
        cfg = copy.deepcopy(base)
        del cfg["static_resources"]["listeners"]
        cfg["node"] = {"id": "sticky-canary-e2e", "cluster": "sticky-canary"}
        cfg["dynamic_resources"] = {"lds_config": {
            "resource_api_version": "V3",
            "path_config_source": {"path": str(self.path), "watched_directory": {"path": str(self.dir)}}}}
        last = None
        for _ in range(3):  # the port is chosen here, so a clash means another try
            self.port = testkit.free_port()
            self.write(0)
            try:
                self.envoy = testkit.start_envoy(cfg, workdir, backends=backends, listener_port=self.port,
                                                 extra_args=["--drain-strategy", "immediate"])
                break
            except testkit.EnvoyStartError as e:
                last = e
        else:
            raise last

    def write(self, gen: int) -> None:
        lst = copy.deepcopy(self.listener)
        lst["address"]["socket_address"]["port_value"] = self.port
        lst["enable_reuse_port"] = False
        testkit.set_plugin_config(lst, plugin(gen))
        testkit.absolute_wasm_paths(lst)
        hcm = lst["filter_chains"][0]["filters"][0]["typed_config"]
        for vh in hcm["route_config"]["virtual_hosts"]:
            vh["response_headers_to_add"] = [{"header": {"key": "x-config-gen", "value": str(gen)}}]
        self.version += 1
        doc = {"version_info": str(self.version), "resources": [{"@type": LISTENER_TYPE, **lst}]}
        tmp = self.dir / f".listener.{self.version}.tmp"
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
        os.rename(tmp, self.path)

    def apply(self, gen: int) -> None:
        self.write(gen)
        testkit.wait_until(lambda: self.envoy.counter("listener_manager.lds.update_success") >= gen + 1,
                           f"LDS generation {gen}", interval=POLL)
        # New connections get the new listener config.
        def serving():
            with testkit.Client(self.envoy.port) as c:
                return probe_gen(c) == gen

        testkit.wait_until(serving, f"listener generation {gen} serving", interval=POLL)

    @staticmethod
    def candidates(r: testkit.Response, sent_confirmed: int, recv_written: int) -> list[int]:
        return [int(r.header("x-config-gen"))]


class Ecds:
    """The Wasm filter config from a watched ECDS file, as Istio sends it."""

    name = "ECDS"

    def __init__(self, workdir: Path, backends: testkit.BackendSet):
        cfg, self.path = testkit.use_ecds(base_config(), workdir / "ecds", plugin=plugin(0))
        self.envoy = testkit.start_envoy(cfg, workdir, backends=backends)
        # One keep-alive connection for every probe: the new config is
        # seen on a connection opened before the update.
        self.probe = self.envoy.client()
        assert probe_gen(self.probe) == 0

    def apply(self, gen: int) -> None:
        testkit.write_ecds(self.path, plugin(gen))
        name = "extension_config_discovery.http_filter.sticky-canary.config_reload"
        testkit.wait_until(lambda: self.envoy.counter(name) >= gen + 1, f"ECDS generation {gen}", interval=POLL)
        testkit.wait_until(lambda: probe_gen(self.probe) == gen, f"filter generation {gen} serving", interval=POLL)

    @staticmethod
    def candidates(r: testkit.Response, sent_confirmed: int, recv_written: int) -> list[int]:
        return list(range(sent_confirmed, recv_written + 1))


# ---------------------------------------------------------------------------


def oracle_v1(workdir: Path, backends: testkit.BackendSet, users: list[LiveUser]) -> None:
    """Ask a separate Envoy running generation 1's config where each user's
    generation-0 cookie goes: that is where generation 1 must send them."""
    envoy = testkit.start_envoy(base_config(), workdir / "oracle", backends=backends, plugin=plugin(1))
    try:
        c = envoy.client()
        for u in users:
            r = c.get("/", cookies={COOKIE: u.jar[COOKIE]})
            assert r.status == 200, r
            u.v1 = r.name
    finally:
        envoy.stop()


def run_live(workdir: Path, backends: testkit.BackendSet, delivery) -> dict:
    mech = delivery(workdir, backends)
    envoy = mech.envoy
    try:
        # Generation 0: every user gets a session (a quarter of them send x-beta).
        c = envoy.client()
        users = [LiveUser(beta=i % 4 == 0) for i in range(N_CLIENTS * USERS_PER_CLIENT)]
        for u in users:
            r = u.get(c, "/")
            assert r.status == 200 and COOKIE in u.jar, r
            u.v0 = r.name
        c.close()
        oracle_v1(workdir, backends, users)

        gens = Gens()
        failures: list = []
        closes = [0]
        old_after_confirm = [0]

        def client(group: list[LiveUser]) -> None:
            cl = testkit.Client(envoy.port)
            try:
                for i in range(REQUESTS_PER_CLIENT):
                    if i == REQUESTS_PER_CLIENT - TAIL:
                        gens.all_applied.wait(HANG_GUARD)
                    u = group[i % len(group)]
                    path = "/shop/item" if i % 5 == 4 else "/"
                    with gens.lock:
                        sent_confirmed = gens.confirmed
                    try:
                        r = u.get(cl, path)
                    except Exception as e:  # noqa: BLE001 - any failure counts
                        with gens.lock:
                            failures.append(repr(e))
                            gens.done += 1
                        cl.close()
                        continue
                    with gens.lock:
                        recv_written = gens.written
                        gens.done += 1
                        if r.status != 200 or r.name not in (V1, V2):
                            failures.append((r.status, r.text[:120]))
                            continue
                        cands = mech.candidates(r, sent_confirmed, recv_written)
                        if cands == [sent_confirmed - 1]:
                            old_after_confirm[0] += 1
                        closes[0] += (r.header("connection") or "").lower() == "close"
                    u.log.append((path, cands, r.name, r.hostname, [x.name for x in r.cookies_named(COOKIE)]))
            finally:
                cl.close()

        groups = [users[i::N_CLIENTS] for i in range(N_CLIENTS)]
        threads = [threading.Thread(target=client, args=(g,), daemon=True) for g in groups]
        for t in threads:
            t.start()
        applied_at = []
        try:
            for gen, threshold in enumerate(THRESHOLDS, start=1):
                testkit.wait_until(lambda: gens.done >= threshold or not any(t.is_alive() for t in threads),
                                   f"{threshold} requests", 120.0, interval=POLL)
                with gens.lock:
                    gens.written = gen
                    at = gens.done
                mech.apply(gen)
                with gens.lock:
                    gens.confirmed = gen
                    applied_at.append((at, gens.done))
        finally:
            gens.all_applied.set()
        for t in threads:
            t.join(HANG_GUARD)
        assert not any(t.is_alive() for t in threads), "a client hung"
        total = N_CLIENTS * REQUESTS_PER_CLIENT
        assert gens.done == total
        assert all(done < total for _, done in applied_at), f"a change came after the load: {applied_at}"

        # After the load, once more per user and path: the last generation exactly.
        c = envoy.client()
        for u in users:
            for path in ("/", "/shop/item"):
                r = u.get(c, path)
                assert r.status == 200, r
                u.log.append((path, [LAST_GEN], r.name, r.hostname, [x.name for x in r.cookies_named(COOKIE)]))
        c.close()
        return {"users": users, "failures": failures, "total": total, "applied_at": applied_at,
                "closes": closes[0], "old_after_confirm": old_after_confirm[0]}
    finally:
        envoy.stop()


@pytest.mark.parametrize("delivery", [Lds, Ecds], ids=["lds", "ecds"])
def test_config_changes_under_load(workdir, backends, delivery):
    out = run_live(workdir / f"live-{delivery.name.lower()}", backends, delivery)
    users, failures = out["users"], out["failures"]
    assert failures == [], f"{len(failures)} of {out['total']} failed: {failures[:5]}"

    wrong = []
    pods: dict[tuple[int, str], set] = {}
    resealed = 0
    for n, u in enumerate(users):
        # The rotation re-seals the cookie on the first answer generation 2
        # serves: somewhere from the first answer it may have served to the
        # first one it surely served (the same answer with LDS).
        window = False
        for path, cands, version, pod, issued in u.log:
            allowed = {u.expected(g, path) for g in cands}
            if version not in allowed:
                wrong.append((n, u.beta, u.v0, u.v1, path, cands, version))
            # One pod per version and session (/shop/'s own session from generation 4 on).
            if not (path.startswith("/shop/") and max(cands) >= 4):
                pods.setdefault((n, version), set()).add(pod)
            if max(cands) >= 2 and window is not None:
                window = window or bool(issued)
                if min(cands) >= 2:
                    resealed += window
                    window = None
    assert wrong == [], f"{len(wrong)} answers not what their config gives: {wrong[:5]}"
    split = {k: v for k, v in pods.items() if len(v) != 1}
    assert split == {}, f"users on more than one pod of a version: {list(split.items())[:5]}"

    v1_users = [u for u in users if u.v0 == V1]
    moved_by_weight = [u for u in v1_users if u.v1 == V2]
    assert not any(u.v0 == V2 and u.v1 == V1 for u in users), "raising a weight moved someone back"
    # The weight change does move people (the test would not notice otherwise):
    # about 20/90 of canary-v1's users; 5 sd around that.
    n1 = len(v1_users)
    share, sd = 20 / 90, (20 / 90 * 70 / 90 / n1) ** 0.5
    assert abs(len(moved_by_weight) / n1 - share) <= 5 * sd, (len(moved_by_weight), n1)
    beta_moved = sum(1 for u in users if u.beta and u.v1 == V1)
    assert beta_moved > 0
    assert resealed == len(users), f"the rotation re-sealed {resealed} of {len(users)} cookies"
    print(
        f"MEASURED: live changes by {delivery.name}: {N_CLIENTS} clients, {out['total']} requests, "
        f"{len(failures)} failed; {len(users)} users; weight 10->30 moved {len(moved_by_weight)} of {n1} "
        f"canary-v1 users (nobody back); rotation re-sealed {resealed} cookies, nobody moved; "
        f"the x-beta rule moved {beta_moved} users; the /shop/ entry sent /shop/ to canary-v2; "
        f"changes applied at requests {out['applied_at']}; answers from the old config after the new one "
        f"served a probe: {out['old_after_confirm']}; Connection: close answers {out['closes']}"
    )


def _read_head(sock) -> list[str]:
    """Read one whole response (head, then exactly its Content-Length of
    body, which may arrive in later packets) and return the head's lines.
    Reading only up to the head would leave a late body in the socket, to
    be taken for the next response."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    length = next((int(v.strip()) for k, _, v in (l.partition(":") for l in lines[1:])
                   if k.strip().lower() == "content-length"), 0)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return lines


def _probe_cookie(head: list[str]) -> str | None:
    for line in head:
        name, _, value = line.partition(":")
        if name.lower() == "set-cookie":
            cookie = value.strip().split("=", 1)[0]
            if cookie.startswith("probe-gen-"):
                return cookie
    return None


@pytest.mark.parametrize("delivery", [Lds, Ecds], ids=["lds", "ecds"])
def test_a_request_in_flight_keeps_the_config_it_started_with(workdir, backends, delivery):
    """A request whose headers arrived before the update and whose body
    after it is decided and answered by the old config (its Set-Cookie is
    the old generation's). The next request: with ECDS on the same
    connection, the new config; with LDS the old connection is closed
    after that answer (Connection: close) and a new one gets the new
    config."""
    mech = delivery(workdir / f"inflight-{delivery.name.lower()}", backends)
    try:
        with socket.create_connection(("127.0.0.1", mech.envoy.port), timeout=testkit.REQUEST_TIMEOUT) as s:
            s.sendall(b"POST /probe/ HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 5\r\n\r\n")
            # The stream exists once Envoy counts it; then the update.
            testkit.wait_until(lambda: mech.envoy.counter("http.ingress_http.downstream_rq_total") >= (2 if delivery is Ecds else 1),
                               "the request to reach Envoy", interval=POLL)
            mech.apply(1)
            s.sendall(b"hello")
            head = _read_head(s)
            assert head[0] == "HTTP/1.1 200 OK", head
            assert _probe_cookie(head) == "probe-gen-0", head
            lower = [h.lower() for h in head]
            if delivery is Lds:
                assert "x-config-gen: 0" in lower and "connection: close" in lower, head
            else:
                assert "connection: close" not in lower, head
                s.sendall(b"GET /probe/ HTTP/1.1\r\nHost: shop.example\r\n\r\n")
                nxt = _read_head(s)
                assert nxt[0] == "HTTP/1.1 200 OK" and _probe_cookie(nxt) == "probe-gen-1", nxt
        with testkit.Client(mech.envoy.port) as c:
            assert probe_gen(c) == 1
    finally:
        mech.envoy.stop()
