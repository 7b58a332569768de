from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import cowsqlpy
from cowsqlpy.front import Front, FrontStats, Limits
from cowsqlpy.node import BOOTSTRAP_ID, Node, engine_features
from cowsqlpy.rights import Rights
from cowsqlpy.testing import wait_for
from cowsqlpy.tls import TLSConfig, make_cert
from tests import rawwire

_ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GuardedNode:
    """An engine node in a child process behind a `Front` in this process.

    The engine listens on an internal loopback port: cowsql serves an abstract-socket bind
    address only to its own process, and here the front is in another one."""

    def __init__(
        self,
        base: Path,
        limits: Limits | None = None,
        tls: TLSConfig | None = None,
        busy_poll: float = 0.0,
        rights: Rights | None = None,
    ) -> None:
        self.engine_address = f"127.0.0.1:{_free_port()}"
        self.front = Front(
            "127.0.0.1:0",
            self.engine_address,
            engine_features(),
            limits=limits,
            tls=tls,
            busy_poll=busy_poll,
            rights=rights,
        )
        self.front.start()
        self.address = self.front.address
        self.log_path = base / "engine.log"
        env = dict(os.environ, PYTHONPATH=str(_ROOT), PYTHONUNBUFFERED="1")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.security.engine_child",
                    self.address,
                    self.engine_address,
                    str(base / "data"),
                ],
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                cwd=str(base),
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if b"ready" not in line:
            raise RuntimeError(f"engine child did not start: {self.log()}")
        if tls is None:
            wait_for(
                lambda: rawwire.leader(self.address)[1] == self.address, 10.0, "the engine to lead"
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def assert_serving(self, **connect: object) -> None:
        """The engine process lives and takes a write and a read through the front."""
        assert self.alive(), f"engine died (exit {self.proc.returncode}):\n{self.log()}"
        conn = cowsqlpy.connect(self.address, database="alive", autocommit=True, **connect)  # type: ignore[arg-type]
        try:
            cur = conn.cursor()
            cur.execute("CREATE TABLE IF NOT EXISTS beat (n INTEGER)")
            cur.execute("INSERT INTO beat (n) VALUES (1)")
            cur.execute("SELECT count(*) FROM beat")
            row = cur.fetchone()
            assert row is not None and row[0] >= 1
        finally:
            conn.close()

    def close(self) -> None:
        self.front.stop()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def guarded_factory(tmp_path: Path) -> Iterator[Callable[..., GuardedNode]]:
    made: list[GuardedNode] = []

    def make(**options: object) -> GuardedNode:
        base = tmp_path / f"guarded{len(made)}"
        base.mkdir()
        node = GuardedNode(base, **options)  # type: ignore[arg-type]
        made.append(node)
        return node

    yield make
    for node in made:
        node.close()


@pytest.fixture(scope="module")
def _module_guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[GuardedNode]]:
    made: list[GuardedNode] = []
    yield made
    for node in made:
        node.close()


@pytest.fixture
def guarded(
    _module_guarded: list[GuardedNode], tmp_path_factory: pytest.TempPathFactory
) -> GuardedNode:
    """A default guarded node shared by a module's tests, since each costs a child engine
    process (2-3 s): every test that attacks it ends by proving it still serves, and a
    test that left it dead gets it replaced for the next one. Its counters start at zero."""
    if not _module_guarded or not _module_guarded[-1].alive():
        _module_guarded.append(GuardedNode(tmp_path_factory.mktemp("guarded")))
    node = _module_guarded[-1]
    node.front.stats = FrontStats()
    return node


@pytest.fixture(scope="session")
def cluster_cert(tmp_path_factory: pytest.TempPathFactory) -> TLSConfig:
    return make_cert(tmp_path_factory.mktemp("cert"))


@contextlib.contextmanager
def fronted_cluster(
    base: Path, internal: Callable[[int], str], **front_options: Any
) -> Iterator[list[tuple[Node, Front]]]:
    """Three engine nodes in this process, node i's engine on `internal(i)` behind a
    `Front(**front_options)` on a loopback port; with ``tls=`` the fronts dial Raft too.
    Node 0 bootstraps; the others start as bare nodes for the test to add."""
    made: list[tuple[Node, Front]] = []
    try:
        for i in range(3):
            address = internal(i)
            front = Front("127.0.0.1:0", address, engine_features(), **front_options)
            front.start()
            node = Node(
                BOOTSTRAP_ID if i == 0 else 1000 + i,
                front.address,
                base / f"n{i}",
                bind_address=address,
                network_latency=0.02,
                dial=front.dial if front_options.get("tls") is not None else None,
            )
            made.append((node, front))
            node.start()
        yield made
    finally:
        for node, front in made:
            node.close()
            front.stop()
