"""The asyncio driver against a real 3-node cluster, each test on uvloop and on stock asyncio."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

import cowsqlpy
import cowsqlpy.aio
from cowsqlpy import versions
from cowsqlpy.aio import returning_allowed, shared_database
from cowsqlpy.testing import Cluster, transfer_leadership

Run = Callable[[Coroutine[Any, Any, Any]], Any]
PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])


async def one(conn: cowsqlpy.aio.Connection, sql: str, params: tuple[object, ...] = ()) -> object:
    row = await (await conn.execute(sql, params)).fetchone()
    assert row is not None
    return row[0]


def test_execute_fetch_and_cursor_attributes(run: Run, cluster: Cluster, dbname: str) -> None:
    async def main() -> None:
        async with await cowsqlpy.aio.connect(
            cluster.addresses, database=dbname, autocommit=True
        ) as conn:
            cur = await conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
            assert cur.rowcount == -1 and cur.description is None
            await cur.execute("INSERT INTO t (name) VALUES (?)", ("a",))
            assert cur.rowcount == 1 and cur.lastrowid == 1
            await cur.executemany(
                "INSERT INTO t (name) VALUES (:n)", [{"n": f"n{i}"} for i in range(9)]
            )
            assert cur.rowcount == 9
            await cur.execute("SELECT id, name FROM t ORDER BY id")
            assert cur.description is not None and [d[:2] for d in cur.description] == [
                ("id", "INTEGER"),
                ("name", "TEXT"),
            ]
            assert await cur.fetchone() == (1, "a")
            assert await cur.fetchmany(2) == [(2, "n0"), (3, "n1")]
            cur.arraysize = 3
            assert len(await cur.fetchmany()) == 3
            assert [r[0] for r in await cur.fetchall()] == [7, 8, 9, 10]
            assert await cur.fetchone() is None
            await cur.close()
            with pytest.raises(cowsqlpy.ProgrammingError, match="closed"):
                await cur.execute("SELECT 1")
        with pytest.raises(cowsqlpy.ProgrammingError, match="closed"):
            await conn.execute("SELECT 1")

    run(main())


def test_async_for_streams_a_result_of_many_pages(run: Run, cluster: Cluster, dbname: str) -> None:
    rows = 20_000

    async def main() -> None:
        conn = await cowsqlpy.aio.connect(cluster.addresses, database=dbname)
        try:
            await conn.execute("CREATE TABLE big (n INTEGER, pad TEXT)")
            async with conn.transaction():
                await conn.executemany(
                    "INSERT INTO big VALUES (?, ?)", [(i, "x" * 100) for i in range(rows)]
                )
            seen = total = 0
            async for n, pad in await conn.execute("SELECT n, pad FROM big ORDER BY n"):
                assert n == seen and len(pad) == 100
                seen += 1
                total += n
            assert seen == rows and total == rows * (rows - 1) // 2
            # Left half read, the rest is discarded and the session serves the next query.
            cur = await conn.execute("SELECT n FROM big")
            assert len(await cur.fetchmany(10)) == 10
            await cur.close()
            assert await one(conn, "SELECT count(*) FROM big") == rows
        finally:
            await conn.close()

    run(main())


def test_transaction_blocks_commit_roll_back_and_nest(
    run: Run, cluster: Cluster, dbname: str
) -> None:
    async def main() -> None:
        conn = await cowsqlpy.aio.connect(cluster.addresses, database=dbname, autocommit=True)
        other = await cowsqlpy.aio.connect(cluster.addresses, database=dbname)
        try:
            await conn.execute("CREATE TABLE t (n INTEGER)")
            async with conn.transaction():
                await conn.execute("INSERT INTO t VALUES (1)")
                assert conn.in_transaction
                with pytest.raises(ZeroDivisionError):
                    async with conn.transaction():  # a savepoint: only its own work is undone
                        await conn.execute("INSERT INTO t VALUES (2)")
                        1 / 0  # noqa: B018
                async with conn.transaction():
                    await conn.execute("INSERT INTO t VALUES (3)")
            assert not conn.in_transaction
            with pytest.raises(RuntimeError):
                async with conn.transaction():
                    await conn.execute("INSERT INTO t VALUES (4)")
                    raise RuntimeError("undo")
            rows = await (await other.execute("SELECT n FROM t ORDER BY n")).fetchall()
            assert rows == [(1,), (3,)]
        finally:
            await conn.close()
            await other.close()

    run(main())


def test_sqlite3_transaction_rules(run: Run, cluster: Cluster, dbname: str) -> None:
    async def main() -> None:
        conn = await cowsqlpy.aio.connect(cluster.addresses, database=dbname)
        other = await cowsqlpy.aio.connect(cluster.addresses, database=dbname, autocommit=True)
        try:
            await conn.execute("CREATE TABLE t (n INTEGER)")
            await conn.execute("INSERT INTO t VALUES (1)")
            assert conn.in_transaction and await one(other, "SELECT count(*) FROM t") == 0
            await conn.set_isolation_level(None)  # commits, then every write commits at once
            assert not conn.in_transaction and await one(other, "SELECT count(*) FROM t") == 1
            await conn.execute("INSERT INTO t VALUES (2)")
            assert await one(other, "SELECT count(*) FROM t") == 2
            await conn.set_autocommit(False)
            await conn.execute("SELECT 1")
            assert conn.in_transaction
            await conn.rollback()
            with pytest.raises(AttributeError, match="set_autocommit"):
                conn.autocommit = True  # assignment cannot await a commit
            with pytest.raises(AttributeError):
                conn.isolation = None
            with pytest.raises(ValueError):
                await conn.set_isolation_level("SNAPSHOT")
            with pytest.raises(cowsqlpy.Error):
                await conn.cursor().fetchone()  # nothing executed
        finally:
            await conn.close()
            await other.close()

    run(main())


def test_errors_are_the_sync_drivers(run: Run, cluster: Cluster, dbname: str) -> None:
    async def main() -> None:
        conn = await cowsqlpy.aio.connect(cluster.addresses, database=dbname, autocommit=True)
        try:
            await conn.execute("CREATE TABLE e (k INTEGER PRIMARY KEY)")
            await conn.execute("INSERT INTO e VALUES (1)")
            with pytest.raises(cowsqlpy.IntegrityError):
                await conn.execute("INSERT INTO e VALUES (1)")
            with pytest.raises(cowsqlpy.OperationalError, match="no such table"):
                await conn.execute("SELECT * FROM missing")
            with pytest.raises(cowsqlpy.ProgrammingError, match="one statement"):
                await conn.execute("SELECT 1; SELECT 2")
            with pytest.raises(cowsqlpy.ProgrammingError):
                await conn.executemany("SELECT ?", [(1,)])
        finally:
            await conn.close()
        with pytest.raises(cowsqlpy.ProgrammingError):
            await cowsqlpy.aio.connect(database="x")
        with pytest.raises(ValueError, match="engine"):
            await cowsqlpy.aio.connect(cluster.addresses, database="x", engine="sqlite")

    run(main())


# this cluster's engine (cowsql 1.15) under each of its names, and undeclared; RETURNING
# on a real 1.11 node: tests/sql/test_returning_dqlite.py
@pytest.mark.parametrize("engine", [None, *sorted(n for n, row in versions.ENGINE_CHOICES.items()
                                                  if row is versions.COWSQL_1_15)])
def test_returning_follows_the_engine_row(
    run: Run, cluster: Cluster, dbname: str, engine: str | None
) -> None:
    """Refused with NotSupportedError, before anything is sent: cowsql 1.15's row (and the
    strictest row, for an engine not declared) says RETURNING is unsafe."""

    async def main() -> None:
        conn = await cowsqlpy.aio.connect(
            cluster.addresses, database=dbname, autocommit=True, engine=engine
        )
        try:
            await conn.execute("CREATE TABLE r (id INTEGER PRIMARY KEY, v TEXT)")
            assert not returning_allowed(conn.features, wrapped=True)
            for sql in (
                "INSERT INTO r (v) VALUES ('a') RETURNING id",
                "DELETE FROM r RETURNING *",
            ):
                with pytest.raises(cowsqlpy.NotSupportedError, match="RETURNING"):
                    await conn.execute(sql)
            assert await one(conn, "SELECT count(*) FROM r") == 0
        finally:
            await conn.close()

    run(main())


def test_concurrent_writers_share_group_commit_and_the_write_lock(
    run: Run, cluster: Cluster, dbname: str
) -> None:
    writers, each = 32, 20

    async def main() -> None:
        setup = await cowsqlpy.aio.connect(cluster.addresses, database=dbname, autocommit=True)
        conns = [
            await cowsqlpy.aio.connect(cluster.addresses, database=dbname, isolation_level=None)
            for _ in range(writers)
        ]
        try:
            await setup.execute("CREATE TABLE w (who INTEGER, i INTEGER)")
            await setup.execute("CREATE TABLE counter (n INTEGER)")
            await setup.execute("INSERT INTO counter VALUES (0)")
            db = shared_database(conns[0]._key)
            assert all(shared_database(c._key) is db for c in conns)
            batches = db.batches

            async def autocommit_writer(w: int) -> None:
                for i in range(each):
                    await conns[w].execute("INSERT INTO w VALUES (?, ?)", (w, i))

            await asyncio.gather(*(autocommit_writer(w) for w in range(writers)))
            assert await one(setup, "SELECT count(*) FROM w") == writers * each
            assert db.batches - batches < writers * each  # statements shared transactions

            async def read_modify_write(w: int) -> None:
                for _ in range(3):  # a lost update would show in the final count
                    async with conns[w].transaction():
                        n = await one(conns[w], "SELECT n FROM counter")
                        await asyncio.sleep(0)
                        await conns[w].execute("UPDATE counter SET n = ?", (int(n) + 1,))  # type: ignore[call-overload]

            await asyncio.gather(*(read_modify_write(w) for w in range(8)))
            assert await one(setup, "SELECT n FROM counter") == 24
        finally:
            for c in [setup, *conns]:
                await c.close()

    run(main())


def _transfer(addresses: list[str], node_id: int) -> None:
    with cowsqlpy.SyncClient(addresses) as admin:
        transfer_leadership(admin, node_id)


def test_follows_the_leader_when_it_changes(run: Run, cluster: Cluster, dbname: str) -> None:
    async def main() -> None:
        conn = await cowsqlpy.aio.connect(cluster.addresses, database=dbname, autocommit=True)
        admin = cowsqlpy.Client(cluster.addresses)
        try:
            await conn.execute("CREATE TABLE f (n INTEGER)")
            leader = await admin.leader()
            assert leader is not None
            other = next(i + 1 for i, a in enumerate(cluster.addresses) if a != leader.address)
            await asyncio.to_thread(_transfer, cluster.addresses, other)
            for n in range(
                5
            ):  # the pooled sessions point at the old leader: retried on the new one
                await conn.execute("INSERT INTO f VALUES (?)", (n,))
            assert await one(conn, "SELECT count(*) FROM f") == 5
            now = await admin.leader()
            assert now is not None and now.address != leader.address
        finally:
            await admin.close()
            await conn.close()

    run(main())


NO_THREADS = """
import asyncio, sys, threading
import cowsqlpy.aio

async def main(addresses):
    conn = await cowsqlpy.aio.connect(addresses, database="threads", autocommit=True)
    await conn.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER)")
    await asyncio.gather(*(conn.execute("INSERT INTO t VALUES (?)", (i,)) for i in range(50)))
    async with conn.transaction():
        await conn.execute("INSERT INTO t VALUES (-1)")
    rows = await (await conn.execute("SELECT count(*) FROM t")).fetchall()
    await conn.close()
    return rows[0][0], [t.name for t in threading.enumerate()]

if sys.argv[1] == "uvloop":
    import uvloop
    count, threads = uvloop.run(main(sys.argv[2].split(",")))
else:
    count, threads = asyncio.run(main(sys.argv[2].split(",")))
print(count, threads)
"""


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_runs_on_the_callers_loop_without_threads(cluster: Cluster, loop: str) -> None:
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(NO_THREADS), loop, ",".join(cluster.addresses)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    count, threads = proc.stdout.split(" ", 1)
    assert int(count) >= 51
    assert threads.strip() == "['MainThread']"
