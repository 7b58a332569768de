"""The implicit transaction sqlite3's rules open before a first write (BEGIN IMMEDIATE,
then the write), under BUSY and leader loss, on a real cluster.

What it must keep: a failed first write leaves the transaction open, as in sqlite3; a
BEGIN refused with BUSY never lets the write commit on its own, however the other
writer's commit falls against the retries; a leader change before the commit loses
the whole transaction; and the engine fact any pipelined form of BEGIN and its first
write would rest on (docs/benchmarks.md, session 10: sent in one EXEC_SQL text, a
statement after a refused BEGIN never runs)."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

import pytest

import cowsqlpy
from cowsqlpy.client import Session
from cowsqlpy.retry import RetryPolicy
from cowsqlpy.runtime import run_sync
from cowsqlpy.testing import transfer_leadership
from tests.client.conftest import InProcessCluster


def test_a_failed_first_write_leaves_the_transaction_open(connect: Callable[..., cowsqlpy.Connection]) -> None:
    conn = connect()
    conn.execute("CREATE TABLE u (k INTEGER PRIMARY KEY, v TEXT, w TEXT)")
    cur = conn.execute("INSERT INTO u VALUES (:k, :v, :v)", {"k": 1, "v": "it's"})
    assert (cur.rowcount, cur.lastrowid) == (1, 1)
    conn.commit()
    with pytest.raises(cowsqlpy.IntegrityError):
        conn.execute("INSERT INTO u VALUES (?, ?, ?)", (1, "dup", "dup"))
    assert conn.in_transaction  # as in sqlite3: BEGIN ran, the statement failed
    conn.execute("INSERT INTO u VALUES (?, ?, ?)", (2, "b", "b"))
    conn.commit()
    assert conn.execute("SELECT k, v, w FROM u ORDER BY k").fetchall() == [(1, "it's", "it's"), (2, "b", "b")]


def test_the_engine_runs_nothing_after_a_refused_begin(cluster: InProcessCluster, dbname: str) -> None:
    """What `begin_writing` relies on, on the wire: a request whose BEGIN IMMEDIATE is
    refused (BUSY: another connection holds the write lock; not leader) runs none of
    the statements after it, even one that could run on its own."""
    setup = cowsqlpy.connect(cluster.addresses, database=dbname, isolation_level=None)
    setup.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
    setup.close()
    leader = cluster.leader()
    follower = next(n for n in cluster.nodes if n is not None and n is not leader)

    async def scenario() -> None:
        holder = await Session.connect(leader.address)
        other = await Session.connect(leader.address)
        on_follower = await Session.connect(follower.address)
        try:
            for s in (holder, other, on_follower):
                await s.open(dbname)
            await holder.exec_sql("BEGIN IMMEDIATE")
            with pytest.raises(cowsqlpy.BusyError):
                await other.exec_sql("BEGIN IMMEDIATE; INSERT INTO t VALUES (1)")
            with pytest.raises(cowsqlpy.NotLeaderError):
                await on_follower.exec_sql("BEGIN IMMEDIATE; INSERT INTO t VALUES (2)")
            await holder.exec_sql("ROLLBACK")
            # with the lock free, a statement after a failed one does not run either
            with pytest.raises(cowsqlpy.IntegrityError):
                await other.exec_sql("INSERT INTO t VALUES (5); INSERT INTO t VALUES (5); INSERT INTO t VALUES (6)")
            assert await other.query_all("SELECT k FROM t", ()) == [(5,)]
        finally:
            for s in (holder, other, on_follower):
                s.close()

    run_sync(scenario())


def test_busy_begin_never_commits_the_write(cluster: InProcessCluster, dbname: str) -> None:
    """Another client's transaction holds the write lock: the first write waits behind
    BEGIN's BUSY, retried for busy_timeout, and is written only in the transaction the
    caller commits, however the holder's commit falls against the retries."""
    setup = cowsqlpy.connect(cluster.addresses, database=dbname, isolation_level=None)
    setup.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, who TEXT)")
    setup.close()
    holder = cluster.database(dbname)  # a core of its own: the engine's lock, not ours
    conn = cowsqlpy.connect(cluster.addresses, database=dbname, read_consistency="serializable",
                            policy=RetryPolicy(busy_timeout=0.3, busy_backoff=0.0005))
    watcher = cowsqlpy.connect(cluster.addresses, database=dbname, isolation_level=None,
                               read_consistency="serializable")
    rng = random.Random(17)
    try:
        # 1. held for longer than busy_timeout: BUSY, and nothing of ours anywhere
        session = run_sync(holder.begin())
        run_sync(session.exec_sql("INSERT INTO t VALUES (0, 'holder')"))
        with pytest.raises(cowsqlpy.OperationalError) as info:
            conn.execute("INSERT INTO t VALUES (?, ?)", (1, "ours"))
        assert isinstance(info.value, cowsqlpy.BusyError)
        assert not conn.in_transaction
        run_sync(holder.commit(session))
        assert watcher.execute("SELECT k FROM t ORDER BY k").fetchall() == [(0,)]

        # 2. the holder commits at varied moments of our retries
        for k in range(2, 162):
            session = run_sync(holder.begin())
            run_sync(session.exec_sql(f"INSERT INTO t VALUES ({-k}, 'holder')"))
            delay = rng.uniform(0, 0.005)
            timer = threading.Timer(delay, lambda s=session: run_sync(holder.commit(s)))
            timer.start()
            try:
                conn.execute("INSERT INTO t VALUES (?, ?)", (k, "ours"))
            finally:
                timer.join()
            assert conn.in_transaction
            # not visible, let alone committed, before our commit
            assert watcher.execute("SELECT count(*) FROM t WHERE k = ?", (k,)).fetchone() == (0,)
            if k % 2:
                conn.rollback()
            else:
                conn.commit()
        ours = [k for (k,) in watcher.execute("SELECT k FROM t WHERE who = 'ours' ORDER BY k")]
        assert ours == list(range(2, 162, 2))
    finally:
        conn.close()
        watcher.close()
        run_sync(holder.close())


def _transfer_leadership(cluster: InProcessCluster) -> None:
    admin = cowsqlpy.SyncClient(cluster.addresses)
    leader = cluster.leader()
    target = next(n.id for n in cluster.nodes if n is not None and n is not leader)
    try:
        transfer_leadership(admin, target)
    finally:
        admin.close()


def test_leader_change_after_the_first_write_loses_the_transaction(fresh_cluster: InProcessCluster) -> None:
    conn = cowsqlpy.connect(fresh_cluster.addresses, database="fw", read_consistency="serializable")
    conn.execute("CREATE TABLE t (n INTEGER PRIMARY KEY)")
    conn.commit()
    # the first write opens the transaction, then the leader moves before the commit
    conn.execute("INSERT INTO t VALUES (1)")
    assert conn.in_transaction
    _transfer_leadership(fresh_cluster)
    with pytest.raises(cowsqlpy.TransactionLostError):
        conn.commit()
    assert not conn.in_transaction
    # the pooled sessions point at the old leader: the next BEGIN is refused there
    # (not leader) and sent again to the new one
    conn.execute("INSERT INTO t VALUES (2)")
    conn.commit()
    _transfer_leadership(fresh_cluster)
    conn.execute("INSERT INTO t VALUES (3)")
    conn.commit()
    assert fresh_cluster.rows("fw", "SELECT n FROM t ORDER BY n") == [(2,), (3,)]
    conn.close()
