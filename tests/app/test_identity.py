"""App identity: the data dir remembers id, address and cluster; mismatches are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from cowsqlpy import VOTER
from cowsqlpy.app import NodeState, RolesPlanner
from cowsqlpy.errors import ClusterMismatchError, NodeIdentityError
from cowsqlpy.node import BOOTSTRAP_ID, Node
from cowsqlpy.protocol import SPARE, STANDBY, NodeInfo


def test_bootstrap_then_restart_keeps_identity(app_factory, tmp_path: Path) -> None:
    a = app_factory("a")
    a.ready(10)
    assert a.id == BOOTSTRAP_ID
    address, cluster_id = a.address, a.cluster_id
    assert cluster_id
    conn = a.open("db", autocommit=True)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (42)")
    conn.close()
    a.close()
    again = app_factory("a", address=None)  # no address, no cluster: all from the data dir
    again.ready(10)
    assert (again.id, again.address, again.cluster_id) == (BOOTSTRAP_ID, address, cluster_id)
    conn = again.open("db")
    assert conn.execute("SELECT x FROM t").fetchall() == [(42,)]
    conn.close()


def test_joined_node_restarts_without_cluster_argument(app_factory) -> None:
    a = app_factory("a")
    a.ready(10)
    b = app_factory("b", cluster=[a.address])
    b.ready(10)
    b_id, b_address = b.id, b.address
    assert b_id != BOOTSTRAP_ID
    b.close()
    b2 = app_factory("b", address=b_address)
    b2.ready(10)
    assert b2.id == b_id
    assert b_id in {n.id for n in a.client().cluster()}


def test_restart_with_another_address_is_refused(app_factory) -> None:
    a = app_factory("a")
    a.ready(10)
    a.close()
    with pytest.raises(NodeIdentityError, match="cannot change its address"):
        app_factory("a", address="127.0.0.1:1")


def test_first_start_needs_an_address(app_factory) -> None:
    with pytest.raises(ValueError, match="address is required"):
        app_factory("fresh", address=None)


def test_foreign_engine_dir_is_refused(tmp_path: Path, app_factory) -> None:
    with Node(1, "127.0.0.1:0", tmp_path / "plain", network_latency=0.02) as node:
        assert node.running
    with pytest.raises(NodeIdentityError, match="not created by cowsqlpy.App"):
        app_factory("plain")


def test_go_dqlite_dir_is_refused(tmp_path: Path, app_factory) -> None:
    (tmp_path / "go").mkdir()
    (tmp_path / "go" / "info.yaml").write_text("Address: 127.0.0.1:9001\nID: 1\nRole: 0\n")
    with pytest.raises(NodeIdentityError, match="go-dqlite"):
        app_factory("go")


def test_data_dir_of_another_cluster_is_refused(app_factory) -> None:
    a1 = app_factory("a1")
    a1.ready(10)
    a2 = app_factory("a2", cluster=[a1.address])
    a2.ready(10)
    a2_address = a2.address
    a2.close()
    b1 = app_factory("b1")  # a second, unrelated cluster
    b1.ready(10)
    assert b1.cluster_id != a1.cluster_id
    with pytest.raises(ClusterMismatchError, match=str(b1.cluster_id)):
        app_factory("a2", address=a2_address, cluster=[b1.address])


def test_bad_options_are_refused(app_factory) -> None:
    with pytest.raises(ValueError, match="odd"):
        app_factory("x", voters=2)
    with pytest.raises(ValueError, match="standbys"):
        app_factory("x", standbys=-1)


# -- the role planner (pure) ------------------------------------------------------


def _state(*nodes: tuple[int, int, bool, int, int]) -> list[NodeState]:
    return [NodeState(NodeInfo(i, f"n{i}", role), domain, weight, online) for i, role, online, domain, weight in nodes]


def test_planner_promotes_a_standby_in_a_new_failure_domain_first() -> None:
    state = _state((1, VOTER, True, 1, 0), (2, VOTER, True, 2, 0), (3, VOTER, False, 3, 0),
                   (4, STANDBY, True, 1, 0), (5, STANDBY, True, 3, 0))
    role, candidates = RolesPlanner(3, 2, state).adjust(1)
    assert role == VOTER and [c.id for c in candidates] == [5, 4]


def test_planner_prefers_lower_weight_then_demotes_offline_voter() -> None:
    state = _state((1, VOTER, True, 0, 0), (2, VOTER, True, 0, 0), (3, VOTER, False, 0, 0),
                   (4, SPARE, True, 0, 9), (5, SPARE, True, 0, 1))
    role, candidates = RolesPlanner(3, 0, state).adjust(1)
    assert role == VOTER and [c.id for c in candidates] == [5, 4]
    state = _state((1, VOTER, True, 0, 0), (2, VOTER, True, 0, 0), (3, VOTER, False, 0, 0),
                   (5, VOTER, True, 0, 1))
    assert RolesPlanner(3, 0, state).adjust(1) == (SPARE, [NodeInfo(3, "n3", VOTER)])


def test_planner_never_demotes_the_leader_and_keeps_one_voter_when_small() -> None:
    state = _state((1, VOTER, True, 0, 0), (2, VOTER, True, 0, 0))
    assert RolesPlanner(3, 3, state).adjust(1) == (SPARE, [NodeInfo(2, "n2", VOTER)])
    state = _state(*[(i, VOTER, True, 0, 0) for i in range(1, 6)])
    role, candidates = RolesPlanner(3, 0, state).adjust(3)
    assert role == SPARE and 3 not in [c.id for c in candidates]


def test_planner_handover_gives_role_to_standby_before_spare() -> None:
    state = _state((1, VOTER, True, 0, 0), (2, VOTER, True, 0, 0), (3, VOTER, True, 0, 0),
                   (4, SPARE, True, 0, 0), (5, STANDBY, True, 0, 0))
    role, candidates = RolesPlanner(3, 1, state).handover(1)
    assert role == VOTER and [c.id for c in candidates] == [5, 4]


def test_open_takes_the_engine_row_of_this_process(app_factory) -> None:
    """An App's cluster runs this process's engine: its connections do not fall back to
    the oldest engine's guards, and remote-style connections do."""
    import cowsqlpy
    from cowsqlpy.node import engine_features
    from cowsqlpy.versions import CLIENT_TARGET

    app = app_factory("a")
    app.ready(20)
    conn = app.open("engine-row", autocommit=True)
    try:
        assert conn.features == engine_features()
        conn.execute("CREATE TABLE t (x)")
    finally:
        conn.close()
    remote = cowsqlpy.connect([app.address], database="engine-row")
    try:
        assert remote.features == CLIENT_TARGET
    finally:
        remote.close()
