"""Mixed clusters with Canonical's dqlite-demo (Debian go-dqlite 1.11.5), both directions.

dqlite-demo keeps key/value pairs in table `model` of database "demo" and serves
them over HTTP (PUT/GET /key). Its nodes run go-dqlite's app package: random ids,
join through ADD as spare, roles loop every 30 s (not configurable in the demo).
"""

from __future__ import annotations

import shutil

import pytest

from cowsqlpy.protocol import VOTER
from cowsqlpy.testing import wait_for

pytestmark = pytest.mark.skipif(shutil.which("dqlite-demo") is None, reason="dqlite-demo (Debian go-dqlite) not installed")


def _kv(conn) -> dict[str, str]:
    return dict(conn.execute("SELECT key, value FROM model").fetchall())


def test_apps_join_a_cluster_started_by_dqlite_demo(demo_factory, app_factory) -> None:
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

    # Leadership to one of ours: the demo's writes now go through our engine, and
    # ours read what was replicated from the demo's.
    with a.client() as c:
        c.transfer(b.id)
        wait_for(lambda: (lambda ldr: ldr is not None and ldr.address == b.address)(c.leader()), 20, "b leads")
    demo.put("after-transfer", "3")
    assert _kv(conn)["after-transfer"] == "3"
    conn.close()


def test_dqlite_demo_joins_a_cowsqlpy_cluster(demo_factory, app_factory) -> None:
    a = app_factory("a")
    a.ready(20)
    b = app_factory("b", cluster=[a.address])
    b.ready(20)
    demo = demo_factory(join=[a.address, b.address])
    demo.wait_up()
    # Our leader's roles loop promotes the demo node (online, answers DESCRIBE).
    with a.client() as c:
        wait_for(lambda: {n.address: n.role for n in c.cluster()}.get(demo.db) == VOTER, 20, "dqlite-demo node promoted to voter")

    demo.put("from-demo", "x")
    conn = a.open("demo", autocommit=True)
    assert _kv(conn)["from-demo"] == "x"
    conn.execute("INSERT OR REPLACE INTO model (key, value) VALUES ('from-cowsqlpy', 'y')")
    assert demo.get("from-cowsqlpy") == "y"

    # The demo node's engine holds the data: make it the leader and read through it.
    demo_id = next(n.id for n in a.client().cluster() if n.address == demo.db)
    with a.client() as c:
        c.transfer(demo_id)
        wait_for(lambda: (lambda ldr: ldr is not None and ldr.address == demo.db)(c.leader()), 20, "the demo node leads")
    assert _kv(conn) == {"from-demo": "x", "from-cowsqlpy": "y"}
    conn.execute("INSERT OR REPLACE INTO model (key, value) VALUES ('via-demo-leader', 'z')")
    assert demo.get("via-demo-leader") == "z"
    conn.close()

    # SIGTERM: the demo hands over (go-dqlite Handover) and leaves as it should.
    demo.stop()
    assert demo.proc.returncode == 0
    wait_for(lambda: a.leader() is not None and a.leader().address != demo.db, 20, "a leader other than the demo")
