"""Mutual TLS through the front: the cluster certificate gets in, nothing else does;
Raft between nodes runs through TLS fronts (`Front.dial`); go-cowsql's shell interoperates."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cowsqlpy import protocol as P
from cowsqlpy.client import SyncClient
from cowsqlpy.front import Front
from cowsqlpy.node import Node
from cowsqlpy.testing import transfer_leadership, wait_for
from cowsqlpy.tls import TLSConfig, make_cert, make_client_context

from .conftest import GuardedNode, _free_port, fronted_cluster
from .raw import Raw, frame, text, u64


@pytest.fixture
def tls_node(guarded_factory: Callable[..., GuardedNode], cluster_cert: TLSConfig) -> GuardedNode:
    node = guarded_factory(tls=cluster_cert)
    wait_for(
        lambda: SyncClient(node.address, tls=cluster_cert).leader() is not None,
        10.0,
        "the TLS node to lead",
    )
    return node


def _raw(node: GuardedNode, config: TLSConfig) -> Raw:
    return Raw(node.address, context=make_client_context(config), server_name=config.check_name())


def test_cluster_certificate_gets_in(tls_node: GuardedNode, cluster_cert: TLSConfig) -> None:
    with SyncClient(tls_node.address, tls=cluster_cert) as client:
        assert [n.address for n in client.cluster()] == [tls_node.address]
    with _raw(tls_node, cluster_cert) as raw:
        assert raw.call(frame(P.OPEN, text("tls") + u64(0) + text("volatile")))[0] == P.DB  # type: ignore[index]
        assert raw.call(frame(P.EXEC_SQL, u64(0) + text("CREATE TABLE t (x)")))[0] == P.RESULT  # type: ignore[index]
        assert raw.call(frame(P.QUERY_SQL, u64(0) + text("SELECT count(*) FROM t")))[1][1] == [(0,)]  # type: ignore[index]
        assert raw.call(frame(P.EXEC_SQL, u64(0) + text("PRAGMA page_size=512")))[1].code == 23  # type: ignore[index]


def test_plain_tcp_to_a_tls_front_gets_nothing(tls_node: GuardedNode) -> None:
    with Raw(tls_node.address) as raw:
        assert raw.call(frame(P.LEADER, u64(0))) is None


def test_client_without_a_certificate_is_refused(
    tls_node: GuardedNode, cluster_cert: TLSConfig
) -> None:
    ctx = ssl.create_default_context(
        cafile=cluster_cert.ca_path
    )  # trusts the server, shows no cert
    with Raw(tls_node.address, context=ctx, server_name=cluster_cert.check_name()) as raw:
        assert raw.call(frame(P.LEADER, u64(0))) is None


def test_another_clusters_certificate_is_refused(
    tls_node: GuardedNode, cluster_cert: TLSConfig, tmp_path: Path
) -> None:
    other = make_cert(tmp_path / "other")
    # Trust the node, but present a certificate the node does not trust.
    mixed = TLSConfig(other.cert, other.key, ca=cluster_cert.ca_path)
    with _raw(tls_node, mixed) as raw:
        assert raw.call(frame(P.LEADER, u64(0))) is None
    with pytest.raises(ssl.SSLCertVerificationError):  # and a client does not trust another cluster
        _raw(tls_node, other)


@pytest.mark.skipif(
    shutil.which("cowsql") is None, reason="go-cowsql's cowsql shell is not installed"
)
def test_go_cowsql_shell_with_cert_and_key(tls_node: GuardedNode, cluster_cert: TLSConfig) -> None:
    def shell(sql: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "cowsql",
                "-s",
                tls_node.address,
                "--cert",
                str(cluster_cert.cert),
                "--key",
                str(cluster_cert.key),
                "gocli",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert shell("CREATE TABLE g (x TEXT)").returncode == 0
    assert shell("INSERT INTO g VALUES ('from go')").returncode == 0
    done = shell("SELECT x FROM g")
    assert done.returncode == 0 and "from go" in done.stdout, done
    refused = shell("PRAGMA journal_mode=DELETE")
    assert "guard" in refused.stdout + refused.stderr
    assert tls_node.alive()


# -- Raft through TLS fronts ---------------------------------------------------------


@pytest.fixture
def tls_cluster(tmp_path: Path, cluster_cert: TLSConfig) -> Iterator[list[tuple[Node, Front]]]:
    with fronted_cluster(tmp_path, lambda i: f"127.0.0.1:{_free_port()}", tls=cluster_cert) as made:
        yield made


def test_raft_runs_through_tls_fronts(
    tls_cluster: list[tuple[Node, Front]], cluster_cert: TLSConfig
) -> None:
    addresses = [front.address for _, front in tls_cluster]
    with SyncClient(addresses, tls=cluster_cert) as client:
        wait_for(lambda: client.leader() is not None, 10.0, "a leader")
        for node, front in tls_cluster[1:]:
            client.add(node.id, front.address, P.VOTER)
        assert sorted(n.role for n in client.cluster()) == [P.VOTER] * 3
        first = tls_cluster[0][0]
        transfer_leadership(client, tls_cluster[2][0].id)
        wait_for(
            lambda: (leader := client.leader()) is not None and leader.id != first.id,
            10.0,
            "a new leader",
        )
    assert all(front.stats.pipes >= 1 for _, front in tls_cluster[1:])
    assert all(node.dial_calls >= 1 for node, _ in tls_cluster)


def test_dbapi_over_tls(tls_node: GuardedNode, cluster_cert: TLSConfig) -> None:
    import cowsqlpy

    tls_node.assert_serving(tls=cluster_cert)
    conn = cowsqlpy.connect(tls_node.address, database="dbapi", autocommit=True, tls=cluster_cert)
    try:
        cur = conn.cursor()
        cur.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
        cur.executemany("INSERT INTO t (v) VALUES (?)", [(f"row {i}" * 10,) for i in range(2000)])
        cur.execute("SELECT count(*), max(v) FROM t")
        assert cur.fetchone() == (2000, "row 9" * 10)  # the largest text
    finally:
        conn.close()
    plain = cowsqlpy.connect(
        tls_node.address,
        database="dbapi",
        autocommit=True,
        policy=cowsqlpy.RetryPolicy(deadline=1.0),
    )
    try:
        with pytest.raises(cowsqlpy.OperationalError):
            plain.cursor().execute("SELECT 1")
    finally:
        plain.close()


def test_cowsqlpy_shell_with_cert_and_key(tls_node: GuardedNode, cluster_cert: TLSConfig) -> None:
    import sys

    def shell(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "cowsqlpy",
                "shell",
                "-s",
                tls_node.address,
                *args,
                "sh",
                "-c",
                "CREATE TABLE IF NOT EXISTS s (x); INSERT INTO s VALUES (5); SELECT count(*) FROM s;",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )

    done = shell("--cert", str(cluster_cert.cert), "--key", str(cluster_cert.key), "--timeout", "5")
    assert done.returncode == 0 and "1" in done.stdout, done
    without = shell("--timeout", "1")
    assert without.returncode != 0
