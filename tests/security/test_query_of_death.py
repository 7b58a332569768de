"""No poison-pill retries (issue 16, item 4): a statement during which its node died is
sent to the next leader once more; when a second node dies serving it the driver gives
up with `QueryOfDeathError`, and the third node never sees it.

Three engine nodes run in child processes; each one's public address (the one clients
and peers dial) is a `KillingProxy` in this process. When armed, a proxy SIGKILLs its
node's process the moment the statement's marker text arrives from a client, before a
byte of it reaches the engine: a real, abrupt node death "caused" by the statement, the
way a query that crashes the engine behaves, without needing such a bug."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import cowsqlpy
import cowsqlpy.aio
from cowsqlpy import VOTER, RetryPolicy
from cowsqlpy.database import MAX_NODE_DEATHS
from cowsqlpy.testing import wait_for
from tests.security.conftest import _free_port

_ROOT = Path(__file__).resolve().parents[2]
MARKER = "query-of-death-5b1e"
POLICY = RetryPolicy(deadline=30.0, attempt_timeout=5.0, connect_timeout=2.0)


class Poison:
    """What every proxy of the cluster shares: how many more nodes the marker may kill."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kills_left = 0
        self.killed: list[int] = []  # node indexes, in order
        self.seen = [0, 0, 0]  # marker sightings per node (a dead node's proxy sees none)


class KillingProxy:
    """Relays one node's public address to its engine; kills the node on the marker."""

    def __init__(self, index: int, poison: Poison) -> None:
        self.index = index
        self.poison = poison
        self.pid = 0
        self.engine = ""
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.links: list[socket.socket] = []
        self.closed = False

    def start(self, engine: str, pid: int) -> None:
        self.engine, self.pid = engine, pid
        threading.Thread(target=self._accept, daemon=True, name=f"killproxy{self.index}").start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                near, _ = self.listener.accept()
            except OSError:
                return
            host, port = self.engine.rsplit(":", 1)
            try:
                far = socket.create_connection((host, int(port)), timeout=2.0)
            except OSError:  # the node is dead: refuse, as its own port would
                near.close()
                continue
            far.settimeout(None)
            self.links += [near, far]
            threading.Thread(target=self._pump, args=(near, far, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(far, near, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        marker = MARKER.encode()
        tail = b""
        try:
            while data := src.recv(65536):
                if from_client and marker in tail + data and self._strike():
                    break
                tail = data[-len(marker) :]
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _strike(self) -> bool:
        """SIGKILL the node if the marker may still kill; whether it did."""
        with self.poison.lock:
            self.poison.seen[self.index] += 1
            if self.poison.kills_left <= 0:
                return False
            self.poison.kills_left -= 1
            self.poison.killed.append(self.index)
            os.kill(self.pid, signal.SIGKILL)
            return True

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        for s in self.links:
            s.close()


class ProcessCluster:
    """Three engine processes (ids 1..3, all voters) behind killing proxies."""

    def __init__(self, base: Path) -> None:
        self.poison = Poison()
        self.proxies = [KillingProxy(i, self.poison) for i in range(3)]
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs = [base / f"node{i}.log" for i in range(3)]
        env = dict(os.environ, PYTHONPATH=str(_ROOT), PYTHONUNBUFFERED="1")
        for i, proxy in enumerate(self.proxies):
            engine = f"127.0.0.1:{_free_port()}"
            cmd = [
                sys.executable,
                "-m",
                "tests.security.engine_child",
                proxy.address,
                engine,
                str(base / f"data{i}"),
            ]
            if i:
                cmd += ["--id", str(i + 1)]  # the first one bootstraps (BOOTSTRAP_ID)
            with open(self.logs[i], "wb") as log:
                proc = subprocess.Popen(
                    cmd, stdout=subprocess.PIPE, stderr=log, env=env, cwd=str(base)
                )
            self.procs.append(proc)
            assert proc.stdout is not None
            if b"ready" not in proc.stdout.readline():
                raise RuntimeError(f"node{i} did not start:\n{self.log(i)}")
            proxy.start(engine, proc.pid)
        with cowsqlpy.SyncClient([self.proxies[0].address]) as admin:
            wait_for(lambda: admin.leader() is not None, 15.0, "node 0 to lead")
            for i in (1, 2):
                admin.add(i + 1, self.proxies[i].address, VOTER)
        self.addresses = [p.address for p in self.proxies]

    def log(self, i: int) -> str:
        return self.logs[i].read_text(errors="replace")[-3000:]

    def alive(self, i: int) -> bool:
        return self.procs[i].poll() is None

    def connect(self, **options: object) -> cowsqlpy.Connection:
        options.setdefault("policy", POLICY)
        return cowsqlpy.connect(self.addresses, database="qod", autocommit=True, **options)  # type: ignore[arg-type]

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        for proxy in self.proxies:
            proxy.close()


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[ProcessCluster]:
    c = ProcessCluster(tmp_path)
    yield c
    c.close()


def _table(nodes: ProcessCluster) -> None:
    conn = nodes.connect()
    try:
        conn.execute("CREATE TABLE t (v TEXT)")
        conn.execute("INSERT INTO t VALUES ('warm-up')")  # the driver's marker table exists
    finally:
        conn.close()


def _assert_stopped_after_two(nodes: ProcessCluster) -> None:
    assert len(nodes.poison.killed) == MAX_NODE_DEATHS == 2, nodes.poison.killed
    (untouched,) = set(range(3)) - set(nodes.poison.killed)
    assert nodes.alive(untouched), nodes.log(untouched)
    assert nodes.poison.seen[untouched] == 0  # the third node never got the statement


@pytest.mark.parametrize(
    "sql",
    [f"SELECT '{MARKER}'", f"INSERT INTO t VALUES ('{MARKER}')"],
    ids=["query", "group-commit-write"],
)
def test_second_death_stops_the_statement(nodes: ProcessCluster, sql: str) -> None:
    _table(nodes)
    conn = nodes.connect()
    try:
        nodes.poison.kills_left = 3  # as many as there are nodes: the driver must stop first
        with pytest.raises(cowsqlpy.QueryOfDeathError, match="2 nodes died") as info:
            conn.execute(sql)
        assert isinstance(info.value, cowsqlpy.OutcomeUnknownError)  # a write's outcome is unknown
    finally:
        conn.close()
    _assert_stopped_after_two(nodes)


def test_second_death_stops_an_async_query(nodes: ProcessCluster) -> None:
    async def scenario() -> None:
        conn = await cowsqlpy.aio.connect(nodes.addresses, database="qod", policy=POLICY)
        try:
            nodes.poison.kills_left = 3
            with pytest.raises(cowsqlpy.QueryOfDeathError):
                await conn.execute("SELECT ?", (MARKER,))
        finally:
            await conn.close()

    asyncio.run(scenario())
    _assert_stopped_after_two(nodes)


@pytest.mark.parametrize(
    "sql",
    [f"SELECT '{MARKER}'", f"INSERT INTO t VALUES ('{MARKER}')"],
    ids=["query", "group-commit-write"],
)
def test_one_death_is_an_ordinary_failover(nodes: ProcessCluster, sql: str) -> None:
    _table(nodes)
    conn = nodes.connect()
    try:
        nodes.poison.kills_left = 1
        cur = conn.execute(sql)
        if sql.startswith("SELECT"):
            assert cur.fetchall() == [(MARKER,)]
        else:
            assert cur.rowcount == 1
            assert conn.execute("SELECT count(*) FROM t WHERE v = ?", (MARKER,)).fetchone() == (1,)
    finally:
        conn.close()
    (killed,) = nodes.poison.killed
    assert nodes.poison.seen[killed] == 1
    assert sum(nodes.alive(i) for i in range(3)) == 2


# Runs for a second or more in the engine's thread (it cannot be interrupted), well
# beyond the attempt timeout below: each try ends in a reply timeout, with every node alive.
LONG_QUERY = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) "
    "SELECT count(*) FROM c"
)


def test_reply_timeouts_are_not_deaths(
    nodes: ProcessCluster, caplog: pytest.LogCaptureFixture
) -> None:
    conn = nodes.connect(
        policy=RetryPolicy(max_tries=5, deadline=60.0, attempt_timeout=0.1, connect_timeout=2.0)
    )
    caplog.set_level(logging.DEBUG, logger="cowsqlpy.retry")
    try:
        with pytest.raises(cowsqlpy.OperationalError) as info:
            conn.execute(LONG_QUERY)
    finally:
        conn.close()
    assert not isinstance(info.value, cowsqlpy.QueryOfDeathError)
    timeouts = sum("query: ReplyTimeoutError" in r.getMessage() for r in caplog.records)
    timeouts += isinstance(info.value, cowsqlpy.ReplyTimeoutError)
    # Counted as deaths, the second timeout would have ended it with QueryOfDeathError.
    assert timeouts >= MAX_NODE_DEATHS, [r.getMessage() for r in caplog.records]
    assert all(nodes.alive(i) for i in range(3))
    assert nodes.poison.killed == []
