"""Database transactions as the kvstore's committer uses them: BEGIN with a read in
the same round trip, and writes sent in one request with COMMIT (never committed in
part), with SQL literals where the engine binds no parameters; repeated queries
run as prepared statements."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cowsqlpy
from cowsqlpy.database import MARKERS, Database
from cowsqlpy.errors import ProgrammingError
from cowsqlpy.runtime import run_sync
from cowsqlpy.sqltext import literal
from tests.client.conftest import InProcessCluster


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.binary(max_size=64),
                       st.text(max_size=32).filter(lambda s: "\x00" not in s)))
def test_literal_reads_back_as_the_value(cluster: InProcessCluster, value: object) -> None:
    conn = cowsqlpy.connect(cluster.addresses, database="literals")
    try:
        assert conn.execute(f"SELECT {literal(value)}").fetchall() == [(value,)]  # type: ignore[arg-type]
    finally:
        conn.close()


def test_literal_refuses_what_it_cannot_write() -> None:
    with pytest.raises(ProgrammingError, match="NUL"):
        literal("a\x00b")
    with pytest.raises(ProgrammingError, match="float"):
        literal(1.5)  # type: ignore[arg-type]
    assert literal(True) == "1" and literal("it's") == "'it''s'" and literal(b"\x00\xff") == "X'00ff'"


def test_begin_reading_reads_inside_the_transaction(cluster: InProcessCluster, dbname: str) -> None:
    db = cluster.database(dbname, group_commit=False)

    async def scenario() -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
        session = await db.begin()
        await session.exec_sql("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
        await session.exec_sql("INSERT INTO t VALUES (1, 'a')")
        await db.commit(session)
        session, rows = await db.begin_reading("SELECT k, v FROM t WHERE k = ?", (1,))
        await session.exec_sql("UPDATE t SET v = 'b' WHERE k = 1")
        await db.commit(session)
        session, after = await db.begin_reading("SELECT k, v FROM t")
        await db.rollback(session)
        await db.close()
        return rows, after

    rows, after = run_sync(scenario())
    assert rows == [(1, "a")] and after == [(1, "b")]


@pytest.mark.parametrize("failing", [
    "INSERT INTO t VALUES (1)",              # a constraint error: the transaction stays open
    "INSERT OR ROLLBACK INTO t VALUES (1)",  # ends the transaction: the rest must not run alone
])
def test_commit_with_writes_never_commits_part_of_them(cluster: InProcessCluster, dbname: str, failing: str) -> None:
    """A write that fails inside the commit request stops it: neither the writes
    before it, nor those after it, nor the commit marker are committed."""
    db = cluster.database(dbname, group_commit=False)

    async def failed_commit() -> None:
        session = await db.begin()
        await session.exec_sql("CREATE TABLE t (k INTEGER PRIMARY KEY)")
        await session.exec_sql("CREATE TABLE u (k INTEGER PRIMARY KEY)")
        await session.exec_sql("INSERT INTO t VALUES (1)")
        await db.commit(session)  # marker 1
        session = await db.begin()
        with pytest.raises(cowsqlpy.IntegrityError):  # marker 2
            await db.commit(session, ["INSERT INTO u VALUES (10)", failing, "INSERT INTO u VALUES (11)"])
        await db.rollback(session)

    async def next_commit() -> None:
        session = await db.begin()
        await db.commit(session, ["INSERT INTO u VALUES (12)", "INSERT INTO u VALUES (13)"])  # marker 3
        await db.close()

    run_sync(failed_commit())
    assert cluster.rows(dbname, "SELECT count(*) FROM u") == [(0,)]
    assert cluster.rows(dbname, f"SELECT seq FROM {MARKERS}") == [(1,)]
    run_sync(next_commit())
    assert cluster.rows(dbname, "SELECT k FROM u ORDER BY k") == [(12,), (13,)]
    assert cluster.rows(dbname, "SELECT k FROM t") == [(1,)]
    assert cluster.rows(dbname, f"SELECT seq FROM {MARKERS}") == [(3,)]


async def _never_asked(session: object) -> bool:
    raise AssertionError("no reply was lost: the check must not run")


def test_write_runs_one_statement_and_says_whether_it_changed_rows(
        cluster: InProcessCluster, dbname: str) -> None:
    """A guarded statement in autocommit: it commits on its own, reports whether
    its WHERE let it change anything, and a failed one writes nothing."""
    db = cluster.database(dbname, group_commit=False)
    guarded = "INSERT INTO t (k) SELECT ? WHERE (SELECT count(*) FROM t) = ?"

    async def scenario() -> list[bool]:
        session = await db.begin()
        await db.commit(session, ["CREATE TABLE t (k INTEGER PRIMARY KEY)"])
        out = [await db.write(guarded, (1, 0), _never_asked),    # first use: SQL text
               await db.write(guarded, (2, 1), _never_asked),    # then prepared
               await db.write(guarded, (3, 1), _never_asked)]    # the guard: nothing
        with pytest.raises(cowsqlpy.IntegrityError):
            await db.write(guarded, (2, 2), _never_asked)         # duplicate key
        assert not db.write_lock.locked()
        await db.close()
        return out

    assert run_sync(scenario()) == [True, True, False]
    assert cluster.rows(dbname, "SELECT k FROM t ORDER BY k") == [(1,), (2,)]


def test_write_while_another_connection_writes_is_busy(cluster: InProcessCluster, dbname: str) -> None:
    holder = cowsqlpy.connect(cluster.addresses, database=dbname, autocommit=True)
    holder.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
    holder.execute("BEGIN IMMEDIATE")
    db = cluster.database(dbname, group_commit=False)
    try:
        with pytest.raises(cowsqlpy.BusyError):
            run_sync(db.write("INSERT INTO t VALUES (?)", (1,), _never_asked))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        run_sync(db.close())
    assert cluster.rows(dbname, "SELECT count(*) FROM t") == [(0,)]


async def _all(db: Database, sql: str) -> list[tuple[object, ...]]:
    stream = await db.query(sql, ())
    await stream.materialize()
    return list(stream.first or [])


def test_prepared_statements_lag_a_schema_change_so_user_queries_are_not_cached(
    cluster: InProcessCluster, dbname: str
) -> None:
    """1.11.1 answers a prepared statement's first run after a schema change with
    its old columns (it re-prepares while running): a cached ``SELECT *`` would
    silently drop a new column. So `Database.query` prepares only when asked
    (the kvstore's fixed-column queries), and user SQL sees the new column."""
    db = cluster.database(dbname, group_commit=False)

    async def scenario() -> tuple[list[list[tuple[object, ...]]], list[tuple[object, ...]]]:
        session = await db.begin()
        await session.exec_sql("CREATE TABLE t (a INTEGER)")
        await session.exec_sql("INSERT INTO t VALUES (1)")
        await db.commit(session)
        seen = [await _all(db, "SELECT * FROM t") for _ in range(3)]
        raw = await db.acquire()
        stmt = await raw.prepare("SELECT * FROM t")
        session = await db.begin()
        await session.exec_sql("ALTER TABLE t ADD COLUMN b TEXT DEFAULT 'x'")
        await db.commit(session)
        seen.append(await _all(db, "SELECT * FROM t"))
        stale = [row async for _, rows in raw.query(stmt) for row in rows]
        await raw.finalize(stmt)
        db.release(raw)
        await db.close()
        return seen, stale

    seen, stale = run_sync(scenario())
    assert seen == [[(1,)]] * 3 + [[(1, "x")]]
    assert stale == [(1,)]  # the engine's lag (if this fails, 1.x fixed it: see Session)


def test_begin_reading_whose_query_fails_leaves_no_transaction_behind(cluster: InProcessCluster, dbname: str) -> None:
    """BEGIN went through but the query failed: the transaction is rolled back
    and the write lock freed before the session goes back to the pool."""
    db = cluster.database(dbname, group_commit=False)

    async def scenario() -> list[tuple[object, ...]]:
        with pytest.raises(cowsqlpy.OperationalError, match="no such table"):
            await db.begin_reading("SELECT * FROM missing")
        session = await asyncio.wait_for(db.begin(), 30)  # the lock is free, the session clean
        await session.exec_sql("CREATE TABLE t (n INTEGER)")
        await session.exec_sql("INSERT INTO t VALUES (7)")
        await db.commit(session)
        rows = await _all(db, "SELECT n FROM t")
        await db.close()
        return rows

    assert run_sync(scenario()) == [(7,)]
