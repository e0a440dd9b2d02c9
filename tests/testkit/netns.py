"""Private network and mount namespaces: a loopback-only world of its own
for programs that listen on fixed ports on every interface (Envoy
Gateway: 18000, 18002, 8081, 19001, and its Gateway's listener on
0.0.0.0:80) and read fixed paths (``/certs/ca.crt``, the DNS name in
``/etc/hosts``).

``Namespace(workdir, hosts=..., binds=...)`` starts a small holder process
that unshares a network and a mount namespace, brings ``lo`` up (its only
interface: nothing inside can reach anything outside, nor be reached),
gives the namespace its own root (a tmpfs with every top-level entry of
``/`` bind-mounted back, so every path of the machine is the same path
inside, except ``/dev/shm``, a tmpfs of its own, where Envoy keeps its
hot-restart memory), then bind-mounts ``hosts`` (a file written from the dict) over
``/etc/hosts`` and each ``binds`` source over its target (a directory
created on the tmpfs when it does not exist, such as ``/certs``). Nothing
outside ``workdir`` is created or changed. Several namespaces coexist: the
same fixed ports in each, no clash.

Children enter it: ``start_process(..., preexec_fn=ns.preexec(cwd))``
(``setns`` into the holder's namespaces in the forked child, then ``chdir``:
entering a mount namespace resets the working directory). The test's own
sockets are made inside by the holder and handed over a Unix socket
(``SCM_RIGHTS``): a socket keeps the namespace it was created in, so the
test process itself never changes namespace. ``ns.socket()``,
``ns.connect(port)``, ``ns.accepts(port)``, ``ns.free_ports(n)``, ``ns.client(port,
authority=...)`` (a ``testkit.Client`` whose connections are made inside),
``ns.run(argv)`` (a short command inside, output captured), ``ns.stop()``.

Who may do this: root (``CAP_SYS_ADMIN``), or any user where the kernel
allows unprivileged user namespaces (then the holder also unshares a user
namespace mapping the user to root inside it, and children join it first).
``namespace_problem()`` says in one line why neither works here, or None.
"""

from __future__ import annotations

import ctypes
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
from itertools import count
from pathlib import Path
from typing import Callable, Mapping, Sequence

from .clients import Client, get_once
from .process import Process, start_process
from .wait import REQUEST_TIMEOUT, START_TIMEOUT

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)
_serial = count()

# The holder: connects to the caller's control socket, unshares, mounts,
# brings lo up, says "ready", then makes sockets on request until the caller
# closes the control connection (or SIGTERM). Standard library only.
_HOLDER = r"""
import ctypes, fcntl, json, os, signal, socket, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
def chk(r, what):
    if r != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")
spec = json.loads(sys.argv[1])
# The control connection first, while still in the caller's namespaces (an
# abstract Unix socket belongs to the network namespace it was made in).
ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
ctl.connect("\0" + spec["control"])
flags = 0x40000000 | 0x00020000  # CLONE_NEWNET | CLONE_NEWNS
if spec["userns"]:
    flags |= 0x10000000  # CLONE_NEWUSER: the caller becomes root inside
chk(libc.unshare(flags), "unshare")
if spec["userns"]:
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"0 {spec['uid']} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"0 {spec['gid']} 1")
MS_REC, MS_PRIVATE, MS_BIND = 0x4000, 1 << 18, 0x1000
chk(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
root = spec["newroot"]
os.makedirs(root, exist_ok=True)
chk(libc.mount(b"tmpfs", root.encode(), b"tmpfs", 0, b"mode=755"), "mount a tmpfs root")
for e in sorted(os.listdir("/")):
    src, dst = "/" + e, root + "/" + e
    if os.path.islink(src):
        os.symlink(os.readlink(src), dst)
    elif os.path.isdir(src):
        os.mkdir(dst)
        chk(libc.mount(src.encode(), dst.encode(), None, MS_BIND | MS_REC, None), "bind " + src)
    else:
        open(dst, "w").close()
        chk(libc.mount(src.encode(), dst.encode(), None, MS_BIND, None), "bind " + src)
# A /dev/shm of its own: Envoy's hot-restart shared memory
# (envoy_shared_memory_<base id>) must not meet another Envoy's, nor stay
# behind on the machine.
if os.path.isdir(root + "/dev/shm"):
    chk(libc.mount(b"tmpfs", (root + "/dev/shm").encode(), b"tmpfs", 0, b"mode=1777"), "mount a tmpfs /dev/shm")
for src, target in spec["binds"]:
    dst = root + target
    if os.path.isdir(src):
        os.makedirs(dst, exist_ok=True)
    elif not os.path.exists(dst):
        open(dst, "w").close()
    chk(libc.mount(src.encode(), dst.encode(), None, MS_BIND, None), f"bind {src} on {target}")
os.mkdir(root + "/.oldroot")
os.chdir(root)
chk(libc.syscall(155, b".", b".oldroot"), "pivot_root")  # SYS_pivot_root, x86_64
os.chdir("/")
chk(libc.umount2(b"/.oldroot", 2), "umount the old root")  # MNT_DETACH
os.rmdir("/.oldroot")
s = socket.socket()
ifr = fcntl.ioctl(s, 0x8913, struct.pack("16sH14x", b"lo", 0))  # SIOCGIFFLAGS
up = struct.unpack("16sH", ifr[:18])[1] | 0x1  # IFF_UP
fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", up))  # SIOCSIFFLAGS
s.close()
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
print("ready", flush=True)
while True:
    try:
        req = ctl.recv(1)
    except InterruptedError:
        continue
    if not req:
        os._exit(0)
    family = socket.AF_INET6 if req == b"6" else socket.AF_INET
    made = socket.socket(family, socket.SOCK_STREAM)
    socket.send_fds(ctl, [b"k"], [made.fileno()])
    made.close()
"""


class NamespaceUnavailable(RuntimeError):
    """This machine or user cannot make the namespaces (the message says why)."""


def _userns_allowed() -> str | None:
    """None if an unprivileged user namespace can be made, else why not."""
    try:
        r = subprocess.run(["unshare", "--user", "--map-root-user", "--net", "--mount", "true"],
                           capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        return "unshare (util-linux) is not installed"
    except subprocess.TimeoutExpired:
        return "unshare did not return"
    if r.returncode == 0:
        return None
    return (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]


def namespace_problem(who: str = "these tests") -> str | None:
    """One line saying why private network namespaces cannot be made here
    (`who` needs them), or None when they can (as root, or through a user
    namespace)."""
    if os.geteuid() == 0:
        return None
    why = _userns_allowed()
    if why is None:
        return None
    return (f"{who} need private network namespaces: run them as root, or allow "
            f"unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, "
            f"user.max_user_namespaces > 0; AppArmor: kernel.apparmor_restrict_unprivileged_userns=0); "
            f"`unshare --user --map-root-user --net` said: {why}")


def _setns(path: str, flag: int) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, flag) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"setns {path}: {os.strerror(e)}")
    finally:
        os.close(fd)


class Namespace:
    """A private network + mount namespace, alive as long as its holder."""

    def __init__(self, workdir: Path, *, hosts: Mapping[str, str] | None = None,
                 binds: Mapping[str, Path] | None = None, timeout: float = START_TIMEOUT):
        problem = namespace_problem()
        if problem:
            raise NamespaceUnavailable(problem)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.userns = os.geteuid() != 0
        hosts_file = self.workdir / "hosts"
        lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost"]
        lines += [f"{addr} {name}" for name, addr in (hosts or {}).items()]
        hosts_file.write_text("\n".join(lines) + "\n")
        all_binds = [(str(hosts_file), "/etc/hosts")] + [(str(Path(src)), target) for target, src in (binds or {}).items()]
        control = f"sticky-canary-netns-{os.getpid()}-{next(_serial)}"
        spec = {"userns": self.userns, "uid": os.geteuid(), "gid": os.getegid(), "control": control,
                "newroot": str(self.workdir / "nsroot"), "binds": all_binds}
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind("\0" + control)
        listener.listen(1)
        listener.settimeout(timeout)
        self._lock = threading.Lock()
        try:
            self.proc: Process = start_process(
                "namespace holder", [sys.executable, "-c", _HOLDER, json.dumps(spec)],
                self.workdir / "namespace-holder.log", ready=lambda p: "ready" in p.log(), timeout=timeout)
            self._ctl, _ = listener.accept()
        except Exception as e:
            raise NamespaceUnavailable(f"cannot make a private network namespace: {e}") from None
        finally:
            listener.close()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def preexec(self, cwd: Path | str | None = None) -> Callable[[], None]:
        """For ``Popen(preexec_fn=...)`` / ``start_process``: the child joins
        the namespaces (user first when there is one), then changes to `cwd`."""
        kinds = ([("user", CLONE_NEWUSER)] if self.userns else []) + [("net", CLONE_NEWNET), ("mnt", CLONE_NEWNS)]
        paths = [(f"/proc/{self.pid}/ns/{k}", flag) for k, flag in kinds]
        where = str(cwd or "/")

        def enter() -> None:
            for path, flag in paths:
                _setns(path, flag)
            os.chdir(where)

        return enter

    def socket(self, family: int = socket.AF_INET) -> socket.socket:
        """A new TCP socket created inside the namespace."""
        with self._lock:
            self._ctl.sendall(b"6" if family == socket.AF_INET6 else b"4")
            _, fds, _, _ = socket.recv_fds(self._ctl, 1, 1)
        if not fds:
            raise OSError("the namespace holder sent no socket (is it still running?)")
        return socket.socket(fileno=fds[0])

    def connect(self, port: int, host: str = "127.0.0.1", timeout: float = REQUEST_TIMEOUT) -> socket.socket:
        s = self.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        try:
            s.settimeout(timeout)
            s.connect((host, port))
        except BaseException:
            s.close()
            raise
        return s

    def free_ports(self, n: int, host: str = "127.0.0.1") -> list[int]:
        """`n` distinct TCP ports on `host` inside that were free a moment
        ago (for programs that take their ports as arguments)."""
        socks = []
        try:
            for _ in range(n):
                s = self.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
                socks.append(s)
                s.bind((host, 0))
            return [s.getsockname()[1] for s in socks]
        finally:
            for s in socks:
                s.close()

    def accepts(self, port: int, host: str = "127.0.0.1") -> bool:
        """Whether something listens on host:port inside."""
        try:
            self.connect(port, host, timeout=1.0).close()
            return True
        except OSError:
            return False

    def http_connection(self, port: int, host: str = "127.0.0.1",
                        timeout: float = REQUEST_TIMEOUT) -> http.client.HTTPConnection:
        """An ``http.client.HTTPConnection`` whose socket is made inside."""
        ns = self

        class _Conn(http.client.HTTPConnection):
            def connect(self) -> None:
                self.sock = ns.connect(self.port, self.host, self.timeout)

        return _Conn(host, port, timeout=timeout)

    def client(self, port: int, *, authority: str | None = None, host: str = "127.0.0.1",
               timeout: float = REQUEST_TIMEOUT) -> Client:
        """A keep-alive ``testkit.Client`` for a listener inside."""
        ns = self

        class _Client(Client):
            def _connection(self) -> http.client.HTTPConnection:
                return ns.http_connection(self.port, self.host, self.timeout)

        return _Client(port, host=host, timeout=timeout, authority=authority)

    def get(self, port: int, path: str, host: str = "127.0.0.1", timeout: float = REQUEST_TIMEOUT) -> tuple[int, str]:
        """One GET on a new connection inside: (status, body)."""
        return get_once(self.http_connection(port, host, timeout), path)

    def run(self, argv: Sequence[str], *, cwd: Path | str | None = None, env: Mapping[str, str] | None = None,
            timeout: float = 120.0) -> subprocess.CompletedProcess:
        """Run a short command inside (text output captured)."""
        return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout,
                              env=dict(env) if env is not None else None, preexec_fn=self.preexec(cwd))

    def stop(self) -> None:
        """End the holder (the namespaces go with their last process)."""
        try:
            self._ctl.close()
        except OSError:
            pass
        self.proc.stop()
