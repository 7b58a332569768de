"""Real engine nodes in this process: leadership, restart, recovery."""

from __future__ import annotations

from collections.abc import Callable

from cowsqlpy import protocol
from cowsqlpy.node import BOOTSTRAP_ID, Node, NodeInfo, reconfigure_membership
from cowsqlpy.testing import wait_for
from tests import rawwire


def write_and_count(address: str, rows: int, db: str = "test") -> int:
    with rawwire.Session(address) as s:
        db_id = s.must(protocol.OPEN, db)
        s.must(protocol.EXEC_SQL, db_id, "CREATE TABLE IF NOT EXISTS t (n INTEGER)", [])
        for i in range(rows):
            s.must(protocol.EXEC_SQL, db_id, "INSERT INTO t VALUES (?)", [i])
        return count(address, db, s)


def count(address: str, db: str = "test", session: rawwire.Session | None = None) -> int:
    s = session or rawwire.Session(address)
    try:
        db_id = 0 if session else s.must(protocol.OPEN, db)
        columns, rows, done = s.must(protocol.QUERY_SQL, db_id, "SELECT count(*) FROM t", [])  # type: ignore[misc]
        assert done
        return int(rows[0][0])
    finally:
        if session is None:
            s.close()


def test_single_node_leads_itself(make_node: Callable[..., Node]) -> None:
    node = make_node(1)
    node.start()
    assert wait_for(lambda: rawwire.leader(node.address) == (1, node.address), what="leader")
    assert write_and_count(node.address, 3) == 3


def test_bootstrap_id_bootstraps(make_node: Callable[..., Node]) -> None:
    node = make_node(BOOTSTRAP_ID)
    node.start()
    assert wait_for(lambda: rawwire.leader(node.address)[0] == BOOTSTRAP_ID, what="leader")


def test_three_nodes_agree_and_reelect(cluster3: list[Node]) -> None:
    first = cluster3[0]
    for n in cluster3:
        assert wait_for(lambda n=n: rawwire.leader(n.address) == (first.id, first.address), what="agreement")
    servers = rawwire.must(first.address, protocol.CLUSTER, 1)
    assert sorted((s.id, s.role) for s in servers) == [(1, 0), (2, 0), (3, 0)]  # type: ignore[attr-defined]
    write_and_count(first.address, 5)

    first.stop()
    new = wait_for(
        lambda: (lid := rawwire.leader(cluster3[1].address)[0]) in (2, 3) and lid, what="new leader"
    )
    leader_node = cluster3[int(new) - 1]
    # The survivors serve the replicated data under the new leader.
    assert count(leader_node.address) == 5
    other = cluster3[2] if leader_node is cluster3[1] else cluster3[1]
    assert wait_for(lambda: rawwire.leader(other.address)[0] == new, what="follower sees new leader")


def test_restart_keeps_data_and_membership(cluster3: list[Node]) -> None:
    first = cluster3[0]
    write_and_count(first.address, 10)
    for n in cluster3:
        n.stop()
    for n in cluster3:
        n.start()
    leader_id = wait_for(lambda: rawwire.leader(first.address)[0], what="leader after restart")
    leader_node = cluster3[int(leader_id) - 1]
    assert count(leader_node.address) == 10
    servers = rawwire.must(leader_node.address, protocol.CLUSTER, 1)
    assert sorted((s.id, s.address) for s in servers) == sorted((n.id, n.address) for n in cluster3)  # type: ignore[attr-defined]


def test_reconfigure_membership_recovers_lost_quorum(cluster3: list[Node]) -> None:
    first, second, third = cluster3
    write_and_count(first.address, 7)
    # The leader holds every acknowledged write; stop all, then lose the other two.
    for n in cluster3:
        n.stop()
    second.close()
    third.close()
    reconfigure_membership(first.data_dir, [NodeInfo(first.id, first.address, 0)])
    first.start()
    assert wait_for(lambda: rawwire.leader(first.address)[0] == first.id, what="recovered leader")
    assert count(first.address) == 7
    servers = rawwire.must(first.address, protocol.CLUSTER, 1)
    assert [(s.id, s.role) for s in servers] == [(first.id, 0)]  # type: ignore[attr-defined]
    # And it takes writes again.
    assert write_and_count(first.address, 1) == 8


def test_reconfigure_two_survivors_from_one_dir(cluster3: list[Node]) -> None:
    """Recover into a 2-voter cluster: the recovered dir is copied to the second node."""
    import shutil

    first, second, third = cluster3
    write_and_count(first.address, 4)
    for n in cluster3:
        n.stop()
    third.close()
    reconfigure_membership(first.data_dir, [(first.id, first.address, 0), (second.id, second.address, 0)])
    shutil.rmtree(second.data_dir)
    shutil.copytree(first.data_dir, second.data_dir)
    first.start()
    second.start()
    lid = wait_for(lambda: rawwire.leader(first.address)[0], what="leader")
    assert lid in (first.id, second.id)
    assert count(cluster3[int(lid) - 1].address) == 4
