from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import cowsqlpy
from cowsqlpy.database import Database
from cowsqlpy.node import Node
from cowsqlpy.retry import DEFAULT_POLICY
from cowsqlpy.runtime import run_sync
from cowsqlpy.store import MemoryNodeStore
from cowsqlpy.testing import Cluster, wait_for
from tests import rawwire
from tests.node.conftest import LATENCY


class InProcessCluster(Cluster):
    """The harness's cluster of three bare engine nodes in this process (ids 1..3, all
    voters), with two shortcuts these tests use."""

    def __init__(self, base: Path, size: int = 3) -> None:
        super().__init__(size, app=False, base_dir=base, network_latency=LATENCY)

    def leader(self) -> Node:
        node = self.nodes[self.wait_leader()]
        assert node is not None
        return node

    def database(self, name: str, *, group_commit: bool = True) -> Database:
        """The async core of database `name` (made on the background loop)."""

        async def make() -> Database:
            return Database(MemoryNodeStore(self.addresses), name, DEFAULT_POLICY, group_commit=group_commit)

        return run_sync(make())

    def rows(self, name: str, sql: str) -> list[tuple[object, ...]]:
        """`sql`'s rows through a DB-API connection of its own."""
        conn = cowsqlpy.connect(self.addresses, database=name)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessCluster]:
    c = InProcessCluster(tmp_path_factory.mktemp("cluster"))
    yield c
    c.close()


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[InProcessCluster]:
    """A cluster of its own, for tests that stop nodes."""
    c = InProcessCluster(tmp_path)
    yield c
    c.close()


_db_counter = iter(range(1_000_000))


@pytest.fixture
def dbname(request: pytest.FixtureRequest) -> str:
    """A database name of this test's own on the shared cluster."""
    return f"{request.node.name[:40]}-{next(_db_counter)}"


@pytest.fixture
def connect(cluster: InProcessCluster, dbname: str) -> Iterator[Callable[..., cowsqlpy.Connection]]:
    opened: list[cowsqlpy.Connection] = []

    def make(**kwargs: object) -> cowsqlpy.Connection:
        kwargs.setdefault("database", dbname)
        conn = cowsqlpy.connect(kwargs.pop("servers", cluster.addresses), **kwargs)  # type: ignore[arg-type]
        opened.append(conn)
        return conn

    yield make
    for c in opened:
        c.close()


CHILD_NODE = """
import sys, time
from cowsqlpy.node import Node
node = Node(1, "127.0.0.1:0", sys.argv[1], network_latency=0.02)
node.start()
print(node.address, flush=True)
sys.stdin.read()  # until the parent closes our stdin
node.close()
"""


@pytest.fixture
def child_node(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A single-node cluster in a child process: guard tests probe dangerous inputs there,
    so a guard that failed would kill the child, never the test run."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD_NODE, str(tmp_path / "child")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=os.getcwd(),
    )
    assert proc.stdout is not None
    address = proc.stdout.readline().strip()
    wait_for(lambda: rawwire.leader(address)[0] == 1, what="child node leader")
    yield address, proc
    if proc.poll() is None:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
