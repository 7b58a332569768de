"""Cluster admin through the client: membership, roles, leadership, metadata, dump; node stores."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import cowsqlpy
from cowsqlpy.node import Node
from cowsqlpy.store import SqliteNodeStore
from cowsqlpy.testing import transfer_leadership, wait_for
from tests.client.conftest import InProcessCluster
from tests.node.conftest import LATENCY


def test_membership_roles_and_transfer(fresh_cluster: InProcessCluster, tmp_path: Path) -> None:
    admin = cowsqlpy.SyncClient(fresh_cluster.addresses)
    try:
        nodes = admin.cluster()
        assert sorted((n.id, n.role) for n in nodes) == [(1, 0), (2, 0), (3, 0)]
        leader = admin.leader()
        assert leader is not None and leader.id == fresh_cluster.leader().id

        extra = Node(4, "127.0.0.1:0", tmp_path / "n4", network_latency=LATENCY)
        extra.start()
        try:
            admin.add(extra.id, extra.address)  # joins as spare
            assert {n.id: n.role for n in admin.cluster()}[4] == cowsqlpy.SPARE
            admin.assign(4, cowsqlpy.STANDBY)
            assert {n.id: n.role for n in admin.cluster()}[4] == cowsqlpy.STANDBY
            admin.assign(4, cowsqlpy.VOTER)
            assert {n.id: n.role for n in admin.cluster()}[4] == cowsqlpy.VOTER

            transfer_leadership(admin, 4)
            wait_for(lambda: (admin.leader() or (0,))[0] == 4, what="leadership on node 4")
            transfer_leadership(admin, 0)  # the engine picks
            wait_for(lambda: (admin.leader() or (4,))[0] != 4, what="leadership moved off node 4")

            admin.assign(4, cowsqlpy.SPARE)
            admin.remove(4)
            assert sorted(n.id for n in admin.cluster()) == [1, 2, 3]
        finally:
            extra.close()

        # Raft errors come back as OperationalError with the engine's message.
        try:
            admin.remove(99)
        except cowsqlpy.OperationalError as exc:
            assert exc.code == 1
        else:
            raise AssertionError("removing an unknown id must fail")
    finally:
        admin.close()


def test_describe_weight_and_dump(cluster: InProcessCluster, tmp_path: Path) -> None:
    admin = cowsqlpy.SyncClient(cluster.addresses)
    try:
        node = cluster.nodes[1]
        assert admin.describe(node.address) == (0, 0)
        admin.weight(node.address, 7)
        assert admin.describe(node.address).weight == 7

        conn = cowsqlpy.connect(cluster.addresses, database="dumped", autocommit=True)
        conn.execute("CREATE TABLE d (v TEXT)")
        conn.execute("INSERT INTO d VALUES ('x')")
        conn.close()
        files = admin.dump("dumped")
        assert set(files) == {"dumped", "dumped-wal"}
        for name, data in files.items():
            (tmp_path / name).write_bytes(data)
        with sqlite3.connect(tmp_path / "dumped") as db:
            assert db.execute("SELECT v FROM d").fetchall() == [("x",)]
    finally:
        admin.close()


def test_sqlite_node_store_survives_reopen(cluster: InProcessCluster, tmp_path: Path) -> None:
    path = tmp_path / "servers.db"
    store = SqliteNodeStore(path)
    store.set(cowsqlpy.SyncClient(cluster.addresses).cluster())
    store.close()
    reopened = SqliteNodeStore(path)
    assert sorted(n.address for n in reopened.get()) == sorted(cluster.addresses)
    conn = cowsqlpy.connect(store=reopened, database="via-store", autocommit=True)
    assert conn.execute("SELECT 1 + 1").fetchone() == (2,)
    conn.close()
    reopened.close()


def test_large_node_ids_round_trip_through_sqlite_store(tmp_path: Path) -> None:
    store = SqliteNodeStore(tmp_path / "s.db")
    big = cowsqlpy.NodeInfo((1 << 64) - 5, "127.0.0.1:1", cowsqlpy.STANDBY)
    store.set([big])
    assert store.get() == [big]
    store.close()
