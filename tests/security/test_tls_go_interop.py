"""Mutual TLS with go-cowsql's own TLS scheme: a cowsqlpy node behind a TLS front joins a
``cowsql-demo --cert --key`` cluster (Raft both ways through TLS: the Go node dials our
front, our engine dials the Go node through `Front.dial`), takes the leadership and serves
what the Go node wrote; the Go demo serves what we wrote."""

from __future__ import annotations

import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import cowsqlpy
from cowsqlpy import protocol as P
from cowsqlpy.client import SyncClient
from cowsqlpy.front import Front
from cowsqlpy.node import BOOTSTRAP_ID, Node, engine_features
from cowsqlpy.testing import transfer_leadership, wait_for
from cowsqlpy.tls import TLSConfig

from .conftest import _free_port

pytestmark = pytest.mark.skipif(
    shutil.which("cowsql-demo") is None, reason="cowsql-demo (go-cowsql) not installed"
)


class GoDemo:
    def __init__(self, base: Path, tls: TLSConfig, join: list[str] | None = None) -> None:
        self.api = f"127.0.0.1:{_free_port()}"
        self.db = f"127.0.0.1:{_free_port()}"
        self.log_path = base / "cowsql-demo.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [
                "cowsql-demo",
                "--api",
                self.api,
                "--db",
                self.db,
                "--dir",
                str(base / "go"),
                "--cert",
                str(tls.cert),
                "--key",
                str(tls.key),
                *(["--join", ",".join(join)] if join else []),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def http(self, method: str, key: str, value: str | None = None) -> str:
        req = urllib.request.Request(
            f"http://{self.api}/{key}",
            data=None if value is None else value.encode(),
            method=method,
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.read().decode().strip()

    def up(self) -> bool:
        assert self.proc.poll() is None, self.log_path.read_text()[-2000:]
        try:
            self.http("GET", "probe")
            return True
        except (urllib.error.URLError, OSError):
            return False

    def close(self) -> None:
        self.proc.kill()  # its hand-over would wait for our node, already closed
        self.proc.wait()
        self.log.close()


@pytest.fixture
def go_demo(tmp_path: Path, cluster_cert: TLSConfig) -> Iterator[GoDemo]:
    demo = GoDemo(tmp_path, cluster_cert)
    try:
        wait_for(demo.up, 30.0, "cowsql-demo's API")
        yield demo
    finally:
        demo.close()


@pytest.fixture
def our_node(tmp_path: Path, cluster_cert: TLSConfig) -> Iterator[tuple[Node, Front]]:
    internal = f"127.0.0.1:{_free_port()}"
    front = Front("127.0.0.1:0", internal, engine_features(), tls=cluster_cert)
    front.start()
    node = Node(
        0x5EC0_0001,
        front.address,
        tmp_path / "ours",
        bind_address=internal,
        network_latency=0.05,
        dial=front.dial,
    )
    try:
        node.start()
        yield node, front
    finally:
        node.close()
        front.stop()


def test_our_tls_node_joins_a_go_tls_cluster(
    go_demo: GoDemo, our_node: tuple[Node, Front], cluster_cert: TLSConfig
) -> None:
    node, front = our_node
    assert go_demo.http("PUT", "from-go", "1") == "done"
    with SyncClient([go_demo.db], tls=cluster_cert) as admin:
        admin.add(node.id, front.address, P.VOTER)
        wait_for(
            lambda: {n.address: n.role for n in admin.cluster()}.get(front.address) == P.VOTER,
            30.0,
            "our node a voter",
        )
        transfer_leadership(admin, node.id)
        wait_for(
            lambda: (leader := admin.leader()) is not None and leader.id == node.id,
            30.0,
            "our node to lead",
        )
    conn = cowsqlpy.connect([front.address], database="demo", autocommit=True, tls=cluster_cert)
    try:
        cur = conn.cursor()
        cur.execute("SELECT value FROM model WHERE key = 'from-go'")
        assert cur.fetchall() == [("1",)]  # replicated to us through TLS
        cur.execute("INSERT OR REPLACE INTO model (key, value) VALUES ('from-cowsqlpy', '2')")
    finally:
        conn.close()
    assert (
        go_demo.http("GET", "from-cowsqlpy") == "2"
    )  # the Go node forwards to us, its leader, through TLS
    assert front.stats.pipes >= 1 and node.dial_calls >= 1


def test_a_go_tls_node_joins_our_tls_cluster(tmp_path: Path, cluster_cert: TLSConfig) -> None:
    internal = f"127.0.0.1:{_free_port()}"
    front = Front("127.0.0.1:0", internal, engine_features(), tls=cluster_cert)
    front.start()
    node = Node(
        BOOTSTRAP_ID,
        front.address,
        tmp_path / "ours",
        bind_address=internal,
        network_latency=0.05,
        dial=front.dial,
    )
    demo: GoDemo | None = None
    try:
        node.start()
        with SyncClient([front.address], tls=cluster_cert) as admin:
            wait_for(lambda: admin.leader() is not None, 10.0, "our node to lead")
            demo = GoDemo(tmp_path, cluster_cert, join=[front.address])
            wait_for(demo.up, 30.0, "cowsql-demo's API")
            wait_for(
                lambda: demo is not None and demo.db in {n.address for n in admin.cluster()},
                30.0,
                "the Go node to join",
            )
        assert demo.http("PUT", "go-joined", "yes") == "done"  # through us, the leader, over TLS
        conn = cowsqlpy.connect([front.address], database="demo", autocommit=True, tls=cluster_cert)
        try:
            assert conn.cursor().execute(
                "SELECT value FROM model WHERE key = 'go-joined'"
            ).fetchall() == [("yes",)]
        finally:
            conn.close()
    finally:
        if demo is not None:
            demo.close()
        node.close()
        front.stop()
