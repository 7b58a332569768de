"""Real clusters in temp dirs: in-process App nodes or one process per node."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..app import App
    from ..dbapi import Connection
    from ..node import Node

from ..client import SyncClient
from ..protocol import STANDBY, VOTER, NodeInfo
from ..retry import RetryPolicy
from .faults import FaultProxy
from .wait import wait_for

__all__ = ["Cluster", "HarnessError", "cluster", "form_cluster", "live_clusters", "transfer_leadership"]

READY_PREFIX = "cowsqlpy-node ready"
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Clusters that are running now (the pytest plugin dumps their logs on failure).
_LIVE: weakref.WeakSet[Cluster] = weakref.WeakSet()


def live_clusters() -> list[Cluster]:
    return list(_LIVE)


def _all_threads_stopped(pid: int) -> bool:
    """No thread of process `pid` can run its own code: each is stopped, or in an
    uninterruptible wait that ends in the stop (Linux /proc)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                state = f.read().rpartition(")")[2].split()[0]
        except FileNotFoundError:  # the thread ended
            continue
        if state not in ("T", "t", "D"):
            return False
    return True


class HarnessError(RuntimeError):
    """A harness call that cannot work as asked (e.g. pause() of an in-process node),
    or a cluster that did not come up; the message carries the nodes' log tails."""


# -- Cluster ---------------------------------------------------------------------------------


@dataclass
class _Member:
    index: int
    dir: str
    log_path: str
    address: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    app: App | None = None  # in-process
    node: Node | None = None  # in-process, app=False
    node_id: int | None = None
    handler: logging.Handler | None = None
    proxy: FaultProxy | None = None
    paused: bool = False
    log_offset: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def form_cluster(nodes: list[Node], timeout: float = 15.0) -> None:
    """Make running bare `Node`s one cluster of voters: wait until ``nodes[0]`` (id 1 or
    `BOOTSTRAP_ID`, on an empty dir) leads, then add every other node as a voter.

    :raises TimeoutError: the first node did not lead within `timeout`.
    """
    first = nodes[0]
    with SyncClient([first.address]) as admin:
        wait_for(lambda: (lambda ldr: ldr is not None and ldr.id == first.id)(admin.leader()), timeout,
                 f"node {first.id} to lead")
        for node in nodes[1:]:
            admin.add(node.id, node.address, VOTER)


def transfer_leadership(admin: SyncClient, node_id: int, timeout: float = 30.0) -> None:
    """``admin.transfer(node_id)`` (0: the engine picks a voter), asked again while the
    engine answers "leadership transfer failed": the target was behind, or lost the
    election it was handed, as happens on a busy machine.

    :raises TimeoutError: no transfer succeeded within `timeout`.
    """
    from ..errors import OperationalError

    def transferred() -> bool:
        try:
            admin.transfer(node_id)
        except OperationalError:
            return False
        return True

    wait_for(transferred, timeout, f"a leadership transfer to node {node_id}")


class Cluster:
    """N real nodes in temp dirs on OS-chosen ports, formed into one cluster.

    :param n: number of nodes.
    :param processes: run each node as ``python -m cowsqlpy node`` (SIGKILL,
        SIGSTOP work for real) instead of in this process.
    :param app: in-process only: False gives bare `Node`s formed by hand
        (node 0 bootstraps, the others are added as voters; no roles loop).
    :param network_latency: seconds; elections take ~15x this. The default
        suits loopback on a loaded 2-core machine.
    :param roles_adjustment_frequency, voters, standbys: passed to every App.
    :param fault_proxies: each node dials its peers through its own `FaultProxy`
        (``cluster.proxies[i]``, `block()`, `partition()`, `isolate()`, `heal()`):
        in-process as the engine's dial hook; with ``processes=True`` a relay the
        node process dials through (``--dial-via``), with the same faults.
    :param snapshot_params: (threshold, trailing) Raft entries, e.g.
        (64, 128) for a snapshot every 64 entries (trailing must not be below threshold) (snapshot-heavy load for crash tests).
    :param base_dir: where node dirs go (default: a fresh temp dir, removed on close).
    :param ready_timeout: seconds to wait for the cluster to form.
    :raises HarnessError: the cluster did not form (the message has the logs).
    """

    def __init__(
        self,
        n: int = 3,
        *,
        processes: bool = False,
        app: bool = True,
        network_latency: float = 0.025,
        roles_adjustment_frequency: float = 1.0,
        voters: int = 3,
        standbys: int = 3,
        fault_proxies: bool = False,
        base_dir: str | os.PathLike[str] | None = None,
        ready_timeout: float = 30.0,
        extra_args: list[str] | None = None,
        snapshot_params: tuple[int, int] | None = None,
    ) -> None:
        if n < 1:
            raise ValueError("a cluster needs at least one node")
        if processes and not app:
            raise HarnessError("processes=True runs Apps: app=False needs in-process nodes")
        self.n = n
        self.processes = processes
        self.use_app = app
        self.network_latency = network_latency
        self.roles_adjustment_frequency = roles_adjustment_frequency
        self.voters = voters
        self.standbys = standbys
        self.ready_timeout = ready_timeout
        self.snapshot_params = snapshot_params
        self.extra_args = list(extra_args or [])
        self._own_dir = base_dir is None
        self.base_dir = tempfile.mkdtemp(prefix="cowsqlpy-cluster-") if base_dir is None else os.fspath(base_dir)
        os.makedirs(self.base_dir, exist_ok=True)
        self.members = [
            _Member(i, os.path.join(self.base_dir, f"node{i}"), os.path.join(self.base_dir, f"node{i}.log"))
            for i in range(n)
        ]
        if fault_proxies:
            for m in self.members:
                m.proxy = FaultProxy(relay=processes)
        self._closed = False
        self._connections: list[Connection] = []
        _LIVE.add(self)
        try:
            self._form()
        except BaseException as exc:
            logs = self.format_logs()
            self.close()
            if isinstance(exc, Exception):
                raise HarnessError(f"cluster of {n} did not form: {exc}\n{logs}") from exc
            raise

    # -- forming --

    def _form(self) -> None:
        first = self.members[0]
        self._start(first, join=None)
        self._wait_ready(first)
        for m in self.members[1:]:
            self._start(m, join=[first.address] if first.address else None)
        for m in self.members[1:]:
            self._wait_ready(m)
        if not self.use_app:
            self._add_bare_voters()
        self.wait_roles()

    def expected_roles(self, online: int | None = None) -> tuple[int, int]:
        """(voters, stand-bys) the roles loop converges to with `online` nodes."""
        k = self.n if online is None else online
        if not self.use_app:
            return k, 0
        if k < 3:
            return 1, 0
        voters = min(self.voters, k)
        return voters, min(self.standbys, k - voters)

    def wait_roles(self, voters: int | None = None, standbys: int | None = None, timeout: float | None = None) -> list[NodeInfo]:
        """Wait until the cluster reports exactly `voters` voters and `standbys` stand-bys
        (default: what `expected_roles()` says for all nodes)."""
        want = self.expected_roles()
        voters = want[0] if voters is None else voters
        standbys = want[1] if standbys is None else standbys

        def check() -> list[NodeInfo] | None:
            nodes = self.cluster_nodes()
            got_v = sum(1 for x in nodes if x.role == VOTER)
            got_s = sum(1 for x in nodes if x.role == STANDBY)
            return nodes if (got_v, got_s) == (voters, standbys) else None

        result: list[NodeInfo] = wait_for(check, timeout or self.ready_timeout, f"{voters} voters and {standbys} stand-bys")
        return result

    def _add_bare_voters(self) -> None:
        form_cluster([m.node for m in self.members if m.node is not None])

    def _app_options(self) -> dict[str, Any]:
        return dict(
            voters=self.voters,
            standbys=self.standbys,
            roles_adjustment_frequency=self.roles_adjustment_frequency,
            network_latency=self.network_latency,
            snapshot_params=self.snapshot_params,
        )

    def _start(self, m: _Member, join: list[str] | None) -> None:
        os.makedirs(m.dir, exist_ok=True)
        address = m.address or "127.0.0.1:0"
        if self.processes:
            cmd = [sys.executable, "-m", "cowsqlpy", "node", "--address", address, "--dir", m.dir,
                   "--network-latency", str(self.network_latency),
                   "--voters", str(self.voters), "--standbys", str(self.standbys),
                   "--roles-adjustment-frequency", str(self.roles_adjustment_frequency),
                   *self.extra_args]
            if m.proxy is not None:
                cmd += ["--dial-via", m.proxy.address]  # type: ignore[list-item]
            if self.snapshot_params:
                cmd += ["--snapshot-params", ",".join(str(x) for x in self.snapshot_params)]
            if join:
                cmd += ["--join", ",".join(join)]
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_PARENT, env.get("PYTHONPATH", "")) if p)
            env.setdefault("PYTHONUNBUFFERED", "1")
            with open(m.log_path, "ab") as log:
                log.write(f"--- harness: starting node{m.index}: {' '.join(cmd)}\n".encode())
                log.flush()
                m.log_offset = log.tell()
                m.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env=env, start_new_session=True)
            m.paused = False
            return
        logger = logging.getLogger(f"cowsqlpy.testing.{os.path.basename(self.base_dir)}.node{m.index}")
        if m.handler is None:
            m.handler = logging.FileHandler(m.log_path)
            m.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            logger.addHandler(m.handler)
            logger.setLevel(logging.DEBUG)
        if self.use_app:
            from ..app import App

            m.app = App(m.dir, address, cluster=join, logger=logger, dial=m.proxy, **self._app_options())
            m.address = m.app.address
            m.node_id = m.app.id
        else:
            from ..node import Node

            m.node_id = m.index + 1  # id 1 bootstraps
            m.node = Node(m.node_id, address, m.dir, network_latency=self.network_latency, dial=m.proxy,
                          snapshot_params=self.snapshot_params)
            m.node.start()
            m.address = m.node.address
            logger.info("node%d (id %d) started at %s", m.index, m.node_id, m.address)

    def _wait_ready(self, m: _Member, timeout: float | None = None) -> None:
        timeout = timeout or self.ready_timeout
        if not self.processes:
            if m.app is not None:
                m.app.ready(timeout)
            return
        assert m.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            with open(m.log_path, "rb") as f:
                f.seek(m.log_offset)
                for raw in f.read().decode(errors="replace").splitlines():
                    if raw.startswith(READY_PREFIX):
                        fields = dict(kv.split("=", 1) for kv in raw[len(READY_PREFIX):].split())
                        m.address = fields["address"]
                        m.node_id = int(fields["id"], 16)
                        return
            if m.proc.poll() is not None:
                raise HarnessError(f"node{m.index} exited with {m.proc.returncode} before it was ready\n{self.format_logs([m.index])}")
            if time.monotonic() > deadline:
                raise HarnessError(f"node{m.index} not ready after {timeout}s\n{self.format_logs([m.index])}")
            time.sleep(0.02)

    # -- queries --

    @property
    def addresses(self) -> list[str]:
        return [m.address for m in self.members if m.address]

    @property
    def apps(self) -> list[App | None]:
        """The in-process Apps by index (None for a process member or a bare node)."""
        return [m.app for m in self.members]

    @property
    def nodes(self) -> list[Node | None]:
        """The bare in-process Nodes by index (``app=False``; None otherwise)."""
        return [m.node for m in self.members]

    @property
    def proxies(self) -> list[FaultProxy | None]:
        return [m.proxy for m in self.members]

    def pid(self, i: int) -> int | None:
        proc = self.members[i].proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def running(self, i: int) -> bool:
        m = self.members[i]
        if m.proc is not None:
            return m.proc.poll() is None
        if m.app is not None:
            return bool(m.app.node.running)
        return m.node is not None and m.node.running

    def index_of(self, address: str) -> int | None:
        return next((m.index for m in self.members if m.address == address), None)

    def client(self, *, deadline: float = 5.0) -> SyncClient:
        """A blocking admin client over every node's address (close it after use)."""
        return SyncClient(list(self.addresses), policy=RetryPolicy(deadline=deadline, attempt_timeout=2.0, connect_timeout=1.0))

    def connect(self, database: str, **options: Any) -> Connection:
        """A DB-API connection to `database` over all nodes (with this engine's row of the
        version table); closed with the cluster."""
        from ..dbapi import connect
        from ..node import ENGINE_NAME

        options.setdefault("engine", ENGINE_NAME)
        conn = connect(list(self.addresses), database=database, **options)
        self._connections.append(conn)
        return conn

    def cluster_nodes(self) -> list[NodeInfo]:
        with self.client() as c:
            return c.cluster()

    def leader_index(self, timeout: float = 5.0) -> int | None:
        """Index of the node that leads now, or None if none does within `timeout`."""
        with self.client(deadline=timeout) as c:
            leader = c.leader()
        return None if leader is None else self.index_of(leader.address)

    def wait_leader(self, timeout: float = 15.0, exclude: int | None = None) -> int:
        """Wait for a leader (other than `exclude`) and return its index."""
        def check() -> int | None:
            i = self.leader_index(timeout=1.0)
            return None if i is None or i == exclude else i + 1  # +1: index 0 must be truthy

        result: int = wait_for(check, timeout, "a leader") - 1
        return result

    # -- faults --

    def kill(self, i: int) -> None:
        """SIGKILL node i's process; in-process: stop its engine with no hand-over."""
        m = self.members[i]
        if m.proc is not None:
            if m.proc.poll() is None:
                if m.paused:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(m.proc.pid, signal.SIGCONT)
                m.proc.kill()
                m.proc.wait(10)
            m.paused = False
        elif m.app is not None:
            m.app.close(handover=False)
        elif m.node is not None:
            m.node.close()

    def stop(self, i: int, timeout: float = 60.0) -> int | None:
        """Graceful stop: SIGTERM (the runner hands over, then exits); in-process: App.close().
        Returns the process's exit code (None in-process)."""
        m = self.members[i]
        if m.proc is not None:
            if m.proc.poll() is None:
                m.proc.terminate()
                try:
                    return m.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    m.proc.kill()
                    m.proc.wait(10)
                    raise HarnessError(f"node{i} did not stop within {timeout}s of SIGTERM\n{self.format_logs([i])}") from None
            return m.proc.returncode
        if m.app is not None:
            m.app.close()
        elif m.node is not None:
            m.node.close()
        return None

    def start(self, i: int, *, wait: bool = True) -> None:
        """Start a stopped or killed node again on its data dir and address."""
        m = self.members[i]
        if self.running(i):
            raise HarnessError(f"node{i} is running")
        self._start(m, join=None)
        if wait:
            self._wait_ready(m)

    def wait_ready(self, i: int, timeout: float | None = None) -> None:
        """Wait until node i (started with ``wait=False``) is ready."""
        self._wait_ready(self.members[i], timeout)

    def restart(self, i: int, *, graceful: bool = True, wait: bool = True) -> None:
        """Stop (or kill, if not `graceful`) node i if it runs, then start it again."""
        if self.running(i):
            self.stop(i) if graceful else self.kill(i)
        self.start(i, wait=wait)

    def restart_all(self, *, graceful: bool = True) -> None:
        """Stop every node, then start them all at once and wait until all are ready."""
        for i in range(self.n):
            if self.running(i):
                self.stop(i) if graceful else self.kill(i)
        for i in range(self.n):
            self.start(i, wait=False)
        for m in self.members:
            self._wait_ready(m)

    def pause(self, i: int) -> None:
        """SIGSTOP node i's process (processes=True only)."""
        m = self._process(i, "pause")
        pid = m.proc.pid  # type: ignore[union-attr]
        os.kill(pid, signal.SIGSTOP)
        m.paused = True
        # kill() only queues the stop: on a busy machine a thread of the node can still
        # answer a request for a while. Return once every thread is stopped.
        wait_for(lambda: _all_threads_stopped(pid), 10.0, f"node{i} to stop", interval=0.001)

    def resume(self, i: int) -> None:
        """SIGCONT node i's process (processes=True only)."""
        m = self._process(i, "resume")
        os.kill(m.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
        m.paused = False

    def _process(self, i: int, what: str) -> _Member:
        m = self.members[i]
        if m.proc is None:
            raise HarnessError(
                f"{what}() needs Cluster(processes=True): an in-process node shares this "
                "interpreter, and SIGSTOP would stop the test itself"
            )
        if m.proc.poll() is not None:
            raise HarnessError(f"node{i} is not running")
        return m

    def isolate(self, i: int) -> None:
        """Cut node i off from its Raft peers (fault_proxies=True): its links and theirs
        to it drop every byte; clients still reach it."""
        target = self.members[i]
        if target.proxy is None:
            raise HarnessError("isolate() needs Cluster(fault_proxies=True)")
        target.proxy.drop()
        for m in self.members:
            if m is not target and m.proxy is not None:
                m.proxy.drop(address=target.address)

    def _proxy(self, i: int, what: str) -> FaultProxy:
        proxy = self.members[i].proxy
        if proxy is None:
            raise HarnessError(f"{what}() needs Cluster(fault_proxies=True)")
        return proxy

    def block(self, src: int, dst: int, on: bool = True) -> None:
        """Drop every byte node `src` sends to node `dst` over Raft (a one-way cut:
        `dst` still reaches `src`); fault_proxies=True."""
        self._proxy(src, "block").drop(on, address=self.members[dst].address)

    def partition(self, *groups: Iterable[int]) -> None:
        """Cut Raft links both ways between nodes of different `groups`; a node in no
        group keeps all its links (so ``partition([0], [2])`` makes node 1 a bridge)."""
        sets = [set(g) for g in groups]
        for a, ga in enumerate(sets):
            for gb in sets[a + 1:]:
                for i in ga:
                    for j in gb:
                        self.block(i, j)
                        self.block(j, i)

    def delay_link(self, src: int, dst: int, seconds: float) -> None:
        """Add `seconds` of latency to every chunk node `src` sends to `dst`."""
        self._proxy(src, "delay_link").delay(seconds, address=self.members[dst].address)

    def reset_links(self, i: int) -> int:
        """Abort node i's live Raft connections to its peers with a TCP reset; returns how many."""
        return self._proxy(i, "reset_links").reset()

    def heal(self) -> None:
        """Clear every network fault (links that lost bytes are reset, so they redial)."""
        for m in self.members:
            if m.proxy is not None:
                m.proxy.heal()

    # -- logs --

    def logs(self) -> dict[int, str]:
        out = {}
        for m in self.members:
            if m.handler is not None:
                m.handler.flush()
            try:
                with open(m.log_path, "rb") as f:
                    out[m.index] = f.read().decode(errors="replace")
            except FileNotFoundError:
                out[m.index] = ""
        return out

    def format_logs(self, indexes: list[int] | None = None, tail: int = 80) -> str:
        """The last `tail` lines of each node's log, headed by the node's name and address."""
        parts = []
        for i, text in self.logs().items():
            if indexes is not None and i not in indexes:
                continue
            lines = text.splitlines()[-tail:]
            m = self.members[i]
            parts.append(f"===== node{i} {m.address or '?'} ({m.log_path}) =====\n" + "\n".join(lines))
        return "\n".join(parts)

    # -- lifecycle --

    def close(self) -> None:
        """Stop every node (no hand-over: fast), close proxies, remove the temp dir. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for conn in self._connections:
            with contextlib.suppress(Exception):
                conn.close()
        for m in self.members:
            if m.proc is not None and m.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    if m.paused:
                        os.kill(m.proc.pid, signal.SIGCONT)
                    m.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    m.proc.wait(10)
            if m.app is not None:
                with contextlib.suppress(Exception):
                    m.app.close(handover=False)
            if m.node is not None:
                with contextlib.suppress(Exception):
                    m.node.close()
            if m.proxy is not None:
                m.proxy.close()
            if m.handler is not None:
                logging.getLogger(f"cowsqlpy.testing.{os.path.basename(self.base_dir)}.node{m.index}").removeHandler(m.handler)
                m.handler.close()
        _LIVE.discard(self)
        if self._own_dir and not os.environ.get("COWSQLPY_KEEP_CLUSTER_DIRS"):
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "processes" if self.processes else "in-process"
        return f"<Cluster {self.n} {kind} {self.addresses}>"


@contextlib.contextmanager
def cluster(n: int = 3, **options: Any) -> Iterator[Cluster]:
    """``with cluster(3) as c:`` (the same as ``with Cluster(3) as c:``)."""
    c = Cluster(n, **options)
    try:
        yield c
    finally:
        c.close()
