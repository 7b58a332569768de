"""Mixed clusters with go-cowsql's cowsql-demo (Debian go-cowsql 1.22, libcowsql 1.15), both
directions, and Canonical's dqlite-demo (go-dqlite 1.11.5 on libdqlite 1.11.1) as a client peer.

Both demos keep key/value pairs in table `model` of database "demo" and serve them over
HTTP (PUT/GET /key). Their nodes run the Go app package: random ids, join through ADD as
spare, roles loop every 30 s (not configurable in the demo).
"""

from __future__ import annotations

import shutil

import pytest

import cowsqlpy
from cowsqlpy.protocol import VOTER
from cowsqlpy.testing import wait_for

COWSQL_DEMO = shutil.which("cowsql-demo")
DQLITE_DEMO = shutil.which("dqlite-demo")
needs_cowsql_demo = pytest.mark.skipif(COWSQL_DEMO is None, reason="cowsql-demo (Debian go-cowsql, bookworm-backports) not installed")


def _kv(conn) -> dict[str, str]:
    return dict(conn.execute("SELECT key, value FROM model").fetchall())


def _leader_address(app) -> str | None:
    ldr = app.leader()
    return None if ldr is None else ldr.address


@needs_cowsql_demo
def test_apps_join_a_cluster_started_by_cowsql_demo(demo_factory, app_factory) -> None:
    demo = demo_factory()
    demo.wait_up()
    demo.put("from-demo", "1")
    a = app_factory("a", cluster=[demo.db])
    a.ready(20)
    b = app_factory("b", cluster=[demo.db])
    b.ready(20)
    # The third node's start-up promotion makes the cluster 3 voters without waiting
    # for the demo's 30 s roles loop.
    with a.client() as c:
        wait_for(lambda: sorted(n.role for n in c.cluster()) == [VOTER] * 3, 20, "3 voters")
        nodes = {n.address for n in c.cluster()}
    assert nodes == {demo.db, a.address, b.address}

    conn = a.open("demo", autocommit=True)
    assert _kv(conn)["from-demo"] == "1"
    conn.execute("INSERT OR REPLACE INTO model (key, value) VALUES ('from-cowsqlpy', '2')")
    assert demo.get("from-cowsqlpy") == "2"

    # Leadership to the demo's engine, then SIGKILL it: our two nodes elect a leader
    # and keep every row, the demo's and ours.
    demo_id = next(n.id for n in a.client().cluster() if n.address == demo.db)
    if _leader_address(a) != demo.db:  # it started the cluster, so it usually leads already
        with a.client() as c:
            c.transfer(demo_id)
    wait_for(lambda: _leader_address(a) == demo.db, 20, "the demo node leads")
    demo.put("before-kill", "3")
    demo.kill()
    wait_for(lambda: _leader_address(a) in (a.address, b.address), 20, "one of ours leads")
    assert _kv(conn) == {"from-demo": "1", "from-cowsqlpy": "2", "before-kill": "3"}
    conn.close()


@needs_cowsql_demo
def test_cowsql_demo_joins_a_cowsqlpy_cluster(demo_factory, app_factory) -> None:
    a = app_factory("a")
    a.ready(20)
    b = app_factory("b", cluster=[a.address])
    b.ready(20)
    demo = demo_factory(join=[a.address, b.address])
    demo.wait_up()
    # Our leader's roles loop promotes the demo node (online, answers DESCRIBE).
    with a.client() as c:
        wait_for(lambda: {n.address: n.role for n in c.cluster()}.get(demo.db) == VOTER, 20, "cowsql-demo node promoted to voter")

    demo.put("from-demo", "x")
    conn = a.open("demo", autocommit=True)
    assert _kv(conn)["from-demo"] == "x"
    conn.execute("INSERT OR REPLACE INTO model (key, value) VALUES ('from-cowsqlpy', 'y')")
    assert demo.get("from-cowsqlpy") == "y"

    # SIGKILL our leader: the demo's engine and our other node carry on with the data.
    leader = a if _leader_address(a) == a.address else b
    other = b if leader is a else a
    leader.close(handover=False)
    wait_for(lambda: _leader_address(other) in (other.address, demo.db), 20, "a new leader")
    conn.close()
    conn = other.open("demo", autocommit=True)
    assert _kv(conn) == {"from-demo": "x", "from-cowsqlpy": "y"}
    demo.put("after-kill", "z")
    assert _kv(conn)["after-kill"] == "z"
    conn.close()

    # SIGTERM: the demo hands over (go-cowsql Handover) and leaves as it should.
    demo.stop()
    assert demo.proc.returncode == 0


@pytest.mark.skipif(DQLITE_DEMO is None, reason="dqlite-demo (Debian go-dqlite) not installed")
def test_the_client_talks_to_a_dqlite_demo_cluster(demo_factory) -> None:
    """libdqlite 1.11.1 and cowsql 1.15 cannot share a Raft cluster (raft 0.15 and 0.22
    differ), but our client still serves dqlite-demo's nodes, with the 1.11 rules: the
    engine probe identifies it (no engine= given), so RETURNING goes the one way 1.11
    takes it (a query inside a transaction) and the node lives on."""
    demo = demo_factory(binary="dqlite-demo")
    demo.wait_up()
    demo.put("from-demo", "1")
    conn = cowsqlpy.connect([demo.db], database="demo", autocommit=True)
    try:
        assert _kv(conn)["from-demo"] == "1"
        conn.execute("INSERT OR REPLACE INTO model (key, value) VALUES ('from-cowsqlpy', '2')")
        assert demo.get("from-cowsqlpy") == "2"
        returned = conn.execute("INSERT INTO model (key, value) VALUES ('r', 'r') RETURNING key")
        assert returned.fetchall() == [("r",)]
        assert conn.features.name == "dqlite 1.11"  # what the probe, sent for RETURNING, found
        conn.execute("INSERT OR REPLACE INTO model (key, value) VALUES ('after', '3')")  # 1.11 aborts here if RETURNING was unsafe
        assert demo.get("r") == "r" and demo.get("after") == "3"
        assert demo.get("from-demo") == "1"  # the node is alive
    finally:
        conn.close()
