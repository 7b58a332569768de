"""Linearizable reads: `Database.read_barrier` and `query(linearizable=True)`."""

from __future__ import annotations

import asyncio

import pytest

import cowsqlpy
from cowsqlpy.barrier import BARRIER_DATABASE
from cowsqlpy.database import Database
from cowsqlpy.retry import RetryPolicy
from cowsqlpy.runtime import run_sync
from cowsqlpy.store import MemoryNodeStore
from cowsqlpy.testing import Cluster
from tests.client.conftest import InProcessCluster


async def _rows(db: Database, sql: str, *, linearizable: bool) -> list[tuple[object, ...]]:
    stream = await db.query(sql, (), linearizable=linearizable)
    await stream.materialize()
    out: list[tuple[object, ...]] = []
    while (batch := await stream.next_batch()) is not None:
        out.extend(batch)
    return out


def test_a_barrier_commits_on_the_leader_and_reads_follow_it(cluster: InProcessCluster) -> None:
    db = cluster.database("barrier")
    conn = cowsqlpy.connect(cluster.addresses, database="barrier", autocommit=True)
    conn.execute("CREATE TABLE t (v INTEGER)")
    conn.execute("INSERT INTO t VALUES (1)")

    async def go() -> tuple[str, int, list[tuple[object, ...]]]:
        before = db.barrier.rounds
        address = await db.read_barrier()
        rows = await _rows(db, "SELECT v FROM t", linearizable=True)
        return address, db.barrier.rounds - before, rows

    address, rounds, rows = run_sync(go())
    assert address == cluster.leader().address
    assert rounds == 2  # one barrier for the call, one for the linearizable query
    assert rows == [(1,)]
    conn.close()
    run_sync(db.close())


def test_concurrent_reads_share_barriers(cluster: InProcessCluster) -> None:
    db = cluster.database("shared")
    conn = cowsqlpy.connect(cluster.addresses, database="shared", autocommit=True)
    conn.execute("CREATE TABLE t (v INTEGER)")
    conn.execute("INSERT INTO t VALUES (7)")

    async def go() -> tuple[int, list[list[tuple[object, ...]]]]:
        await db.read_barrier()  # the marker table and a pooled session exist
        before = db.barrier.rounds
        results = await asyncio.gather(*(_rows(db, "SELECT v FROM t", linearizable=True) for _ in range(32)))
        return db.barrier.rounds - before, results

    rounds, results = run_sync(go())
    assert results == [[(7,)]] * 32
    # all 32 asked before the first round started: they share it
    assert rounds == 1
    conn.close()
    run_sync(db.close())


@pytest.mark.slow
def test_an_isolated_leader_never_serves_a_stale_linearizable_read() -> None:
    """The old leader, cut off from its peers, still believes it leads for a while; a
    linearizable read sent to it either fails or sees the write the new leader took."""
    with Cluster(3, fault_proxies=True, network_latency=0.05) as cluster:
        conn = cluster.connect("stale", autocommit=True)
        conn.execute("CREATE TABLE t (v INTEGER)")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.close()
        old = cluster.leader_index()
        assert old is not None
        old_address = cluster.addresses[old]

        async def make() -> Database:
            policy = RetryPolicy(deadline=3.0, attempt_timeout=1.0, connect_timeout=0.5)
            return Database(MemoryNodeStore([old_address]), "stale", policy)

        db = run_sync(make())
        run_sync(_rows(db, "SELECT v FROM t", linearizable=False))  # a pooled session to the old leader
        cluster.isolate(old)
        others = [a for i, a in enumerate(cluster.addresses) if i != old]
        writer = cowsqlpy.connect(others, database="stale", autocommit=True)
        writer.execute("UPDATE t SET v = 2")
        writer.close()
        try:
            rows = run_sync(_rows(db, "SELECT v FROM t", linearizable=True))
        except cowsqlpy.Error:
            rows = None  # no quorum behind the old leader: the barrier cannot commit
        assert rows in (None, [(2,)])
        cluster.heal()
        run_sync(db.close())


def _barriers(cluster: InProcessCluster) -> int:
    probe = cowsqlpy.connect(cluster.addresses, database=BARRIER_DATABASE, autocommit=True,
                             read_consistency="serializable")
    try:
        tables = probe.execute("SELECT name FROM sqlite_master WHERE name = 'barrier'").fetchall()
        return probe.execute("SELECT n FROM barrier").fetchone()[0] if tables else 0
    finally:
        probe.close()


@pytest.mark.parametrize("consistency", ["linearizable", "serializable"])
def test_dbapi_reads_follow_read_consistency(cluster: InProcessCluster, consistency: str) -> None:
    """Linearizable (the default) reads commit barriers (the barrier database's counter
    moves); serializable reads write nothing."""
    database = f"consistency-{consistency}"
    setup = cowsqlpy.connect(cluster.addresses, database=database, autocommit=True, read_consistency="serializable")
    setup.execute("CREATE TABLE t (v INTEGER)")
    setup.execute("INSERT INTO t VALUES (3)")
    setup.close()
    before = _barriers(cluster)
    options = {} if consistency == "linearizable" else {"read_consistency": consistency}
    conn = cowsqlpy.connect(cluster.addresses, database=database, autocommit=True, **options)
    assert conn.execute("SELECT v FROM t").fetchall() == [(3,)]
    conn.close()
    assert _barriers(cluster) - before == (1 if consistency == "linearizable" else 0)


def test_a_linearizable_read_does_not_wait_for_an_open_write_transaction(cluster: InProcessCluster) -> None:
    """The barrier writes to its own database: a reader on another connection of this
    process neither blocks on the writer's open transaction nor sees its rows."""
    writer = cowsqlpy.connect(cluster.addresses, database="open-tx")
    writer.execute("CREATE TABLE t (v INTEGER)")
    writer.commit()
    writer.execute("INSERT INTO t VALUES (1)")  # a write transaction stays open
    reader = cowsqlpy.connect(cluster.addresses, database="open-tx", autocommit=True)
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (0,)
    writer.commit()
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (1,)
    reader.close()
    writer.close()


def test_read_consistency_is_checked() -> None:
    with pytest.raises(ValueError, match="read_consistency"):
        cowsqlpy.connect(["127.0.0.1:1"], database="x", read_consistency="eventual")


@pytest.mark.parametrize("consistency", ["linearizable", "serializable"])
def test_transactions_open_after_a_barrier_when_linearizable(cluster: InProcessCluster, consistency: str) -> None:
    """A transaction that only reads commits nothing through a quorum, so a linearizable
    connection opens every transaction after a barrier; a serializable one does not."""
    database = f"tx-consistency-{consistency}"
    setup = cowsqlpy.connect(cluster.addresses, database=database, autocommit=True, read_consistency="serializable")
    setup.execute("CREATE TABLE t (v INTEGER)")
    setup.execute("INSERT INTO t VALUES (5)")
    setup.close()
    conn = cowsqlpy.connect(cluster.addresses, database=database, autocommit=False, read_consistency=consistency)
    before = _barriers(cluster)
    assert conn.execute("SELECT v FROM t").fetchall() == [(5,)]  # PEP 249 mode: BEGIN DEFERRED first
    conn.commit()
    conn.close()
    assert _barriers(cluster) - before == (1 if consistency == "linearizable" else 0)
