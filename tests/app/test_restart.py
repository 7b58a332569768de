"""Restarting the nodes of a 3-node App cluster: data and roles come back."""

from __future__ import annotations

import pytest

from cowsqlpy.protocol import VOTER
from cowsqlpy.testing import Cluster


def _roles(c: Cluster) -> dict[int, int | None]:
    return {n.id: n.role for n in c.cluster_nodes()}


def _count(c: Cluster) -> int:
    conn = c.connect("r", autocommit=True)
    return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])


@pytest.mark.parametrize("graceful", [True, False], ids=["sigterm", "sigkill"])
def test_restart_one_by_one_then_all_at_once(cluster_factory, graceful: bool) -> None:
    c = cluster_factory(3, processes=True)
    conn = c.connect("r", autocommit=True)
    conn.execute("CREATE TABLE t (x)")
    conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
    roles = _roles(c)
    assert sorted(roles.values()) == [VOTER] * 3
    ids = [c.members[i].node_id for i in range(3)]

    for i in range(3):
        c.restart(i, graceful=graceful)
        assert c.members[i].node_id == ids[i]  # same identity from the data dir
        conn.execute("INSERT INTO t VALUES (?)", (1000 + i,))
        assert c.wait_roles(voters=3, standbys=0)
        assert _roles(c) == roles
    assert _count(c) == 103

    c.restart_all(graceful=graceful)
    c.wait_leader()
    assert [c.members[i].node_id for i in range(3)] == ids
    assert _roles(c) == roles
    assert _count(c) == 103
    conn.execute("INSERT INTO t VALUES (2000)")
    assert _count(c) == 104


def test_in_process_restart_all(cluster3: Cluster) -> None:
    conn = cluster3.connect("r", autocommit=True)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    roles = _roles(cluster3)
    cluster3.restart_all()
    assert _roles(cluster3) == roles
    assert _count(cluster3) == 1
