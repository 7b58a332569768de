"""A harness for tests and benchmarks (ours and users'): real etcd servers and
real raft clusters on loopback with OS-chosen free ports and temporary dirs.

    with EtcdCluster(tmp_path, members=3) as etcd:
        kv = kvstore.open(etcd.url)
    with RaftCluster(tmp_path, nodes=3) as cluster:
        kv0, kv1, kv2 = cluster.handles

Every wait is a bounded polling loop; every process is killed in ``stop()``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import KV
    from .backends.raft import RaftBackend

ETCD_BIN = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL_BIN = shutil.which("etcdctl") or "/usr/bin/etcdctl"
#: etcd request limit used by the harness: large enough for a 1.5 MiB value and
#: a transaction of MAX_TXN_BYTES.
ETCD_MAX_REQUEST_BYTES = 8 * 1024 * 1024


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback TCP ports chosen by the OS."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def wait_until(pred: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05,
               what: str = "condition") -> Any:
    """Poll ``pred`` until truthy; return its value. Raises AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def etcd_available() -> bool:
    return os.path.exists(ETCD_BIN)


class EtcdCluster:
    """``members`` etcd processes on loopback, each with its own data dir.

    ``tls`` (a cowsqlpy ``TLSConfig``, e.g. from ``cowsqlpy.tls.make_cert``): clients must
    speak TLS and show a certificate signed by its CA (``--client-cert-auth``); ``auth``
    ``(user, password)``: etcd's authentication is enabled with that root user. ``url``
    and ``member_url(i)`` carry what a client then needs."""

    def __init__(self, base: Path | str, members: int = 1, *, tls: Any = None,
                 auth: tuple[str, str] | None = None, flags: Sequence[str] = ()) -> None:
        self.base = Path(base)
        self.flags = list(flags)   # more etcd flags (e.g. --auth-token-ttl=1)
        self.members = members
        self.tls = tls
        self.auth = auth
        self.procs: list[subprocess.Popen[bytes]] = []
        self.client_urls: list[str] = []
        self._auth_on = False

    @property
    def endpoints(self) -> list[str]:
        return [u.split("://", 1)[1] for u in self.client_urls]

    def _url(self, endpoints: list[str], *, auth: bool = True) -> str:
        who = "" if self.auth is None or not auth else f"{self.auth[0]}:{self.auth[1]}@"
        q = "" if self.tls is None else \
            f"?ca={self.tls.ca_path}&cert={self.tls.cert}&key={self.tls.key}"
        return f"etcd://{who}{','.join(endpoints)}{q}"

    @property
    def url(self) -> str:
        return self._url(self.endpoints)

    def member_url(self, i: int) -> str:
        return self._url([self.endpoints[i]])


    def etcdctl(self, *args: str) -> str:
        """Run etcdctl against member 0 as the root user (if any); its stdout."""
        cmd = [ETCDCTL_BIN, f"--endpoints={self.client_urls[0]}"]
        if self.tls is not None:
            cmd += [f"--cacert={self.tls.ca_path}", f"--cert={self.tls.cert}",
                    f"--key={self.tls.key}"]
        if self.auth is not None and self._auth_on:
            cmd.append(f"--user={self.auth[0]}:{self.auth[1]}")
        return subprocess.run(cmd + list(args), capture_output=True, text=True, check=True,
                              timeout=30, env=dict(os.environ, ETCDCTL_API="3")).stdout

    def start(self, timeout: float = 30.0) -> EtcdCluster:
        ports = free_ports(2 * self.members)
        names = [f"m{i}" for i in range(self.members)]
        peer_urls = [f"http://127.0.0.1:{ports[2 * i + 1]}" for i in range(self.members)]
        scheme = "http" if self.tls is None else "https"
        self.client_urls = [f"{scheme}://127.0.0.1:{ports[2 * i]}" for i in range(self.members)]
        tls_flags = [] if self.tls is None else [
            "--cert-file", str(self.tls.cert), "--key-file", str(self.tls.key),
            "--trusted-ca-file", self.tls.ca_path, "--client-cert-auth"]
        initial = ",".join(f"{n}={p}" for n, p in zip(names, peer_urls, strict=False))
        for i, name in enumerate(names):
            d = self.base / f"etcd-{name}"
            d.mkdir(parents=True, exist_ok=True)
            log = open(d / "etcd.log", "wb")  # owned by the process lifetime
            self.procs.append(subprocess.Popen([
                ETCD_BIN, "--name", name, "--data-dir", str(d / "data"),
                "--listen-client-urls", self.client_urls[i],
                "--advertise-client-urls", self.client_urls[i],
                "--listen-peer-urls", peer_urls[i],
                "--initial-advertise-peer-urls", peer_urls[i],
                "--initial-cluster", initial, "--initial-cluster-state", "new",
                "--initial-cluster-token", f"kvstore-test-{os.getpid()}-{ports[0]}",
                "--max-request-bytes", str(ETCD_MAX_REQUEST_BYTES),
                "--max-txn-ops", "256",
                "--logger", "zap", "--log-level", "warn", *tls_flags, *self.flags,
            ], stdout=log, stderr=subprocess.STDOUT))
            log.close()
        import kvstore
        deadline = time.monotonic() + timeout
        for i in range(self.members):
            while True:
                if self.procs[i].poll() is not None:
                    raise RuntimeError(f"etcd member {i} exited: see {self.base}/etcd-m{i}/etcd.log")
                try:
                    u = self._url([self.endpoints[i]], auth=False)
                    with kvstore.open(u + ("&" if "?" in u else "?") + "timeout=2") as kv:
                        kv.revision()
                    break
                except kvstore.KVError:
                    if time.monotonic() >= deadline:
                        self.stop()
                        raise RuntimeError("etcd did not become ready") from None
                    time.sleep(0.1)
        if self.auth is not None:
            user, password = self.auth
            self.etcdctl("user", "add", user, f"--new-user-password={password}",
                         "--interactive=false")
            if user == "root":
                self.etcdctl("role", "add", "root")
                self.etcdctl("user", "grant-role", "root", "root")
            self.etcdctl("auth", "enable")
            self._auth_on = True
        return self

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.procs = []

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class RaftCluster:
    """``nodes`` raft members in this process (one ``kvstore.KV`` handle each, on a ``RaftBackend``)."""

    def __init__(self, base: Path | str | None = None, nodes: int = 3, *, durable: bool = False,
                 options: str = "", spares: int = 0) -> None:
        self.base = None if base is None else Path(base)
        self.n = nodes
        self.spares = spares
        self.durable = durable
        self.options = options
        self.ports = free_ports(nodes + spares)
        self.handles: list[KV] = []
        self._spare_handles: dict[int, KV] = {}

    @property
    def addrs(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.ports]

    def url(self, i: int) -> str:
        peers = ",".join(a for j, a in enumerate(self.addrs) if j != i)
        q = f"peers={peers}"
        if self.durable:
            assert self.base is not None
            q += f"&dir={self.base / f'raft-{i}'}"
        elif i >= self.n and self.base is not None:
            q += f"&dir={self.base / f'raft-spare-{i}'}"
        if self.options:
            q += "&" + self.options
        return f"raft://{self.addrs[i]}?{q}"

    def open_spare(self, timeout: float = 30.0) -> KV:
        """Start a member in a free spare slot (listed as a peer by everyone
        but not started by ``start``); closing the handle frees the slot. The
        slot keeps its journal, so reuse is a restart, not a new empty node."""
        import kvstore
        for i in range(self.n, self.n + self.spares):
            h = self._spare_handles.get(i)
            if h is None or h.closed:
                h = self._spare_handles[i] = kvstore.open(self.url(i))
                _raft_backend(h).wait_ready(timeout)
                return h
        raise RuntimeError("no free spare raft slot")

    def start(self, timeout: float = 30.0) -> RaftCluster:
        import kvstore
        self.handles = [kvstore.open(self.url(i)) for i in range(self.n)]
        for h in self.handles:
            _raft_backend(h).wait_ready(timeout)
        return self

    def stop(self) -> None:
        """Close every member at once (closing one by one would lose quorum
        half-way and make the remaining closes wait for their timeouts)."""
        import threading

        handles = [h for h in list(self._spare_handles.values()) + self.handles if not h.closed]

        def run_all(fn: Callable[[Any], Any]) -> None:
            def safe(h: Any) -> None:
                try:
                    fn(h)
                except Exception:  # teardown must reach every node
                    pass
            ts = [threading.Thread(target=safe, args=(h,)) for h in handles]
            for t in ts:
                t.start()
            for t in ts:
                t.join(60)
        # revoke sessions while the quorum is still up, then stop the members
        run_all(lambda h: h.close_session())
        run_all(lambda h: h.close())
        self.handles = []
        self._spare_handles = {}

    def __enter__(self) -> RaftCluster:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _raft_backend(kv: KV) -> RaftBackend:
    from .backends.raft import RaftBackend
    assert isinstance(kv.backend, RaftBackend)
    return kv.backend
