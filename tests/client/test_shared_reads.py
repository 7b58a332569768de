"""Concurrent autocommit queries pipelined over shared sessions (`cowsqlpy.shared_reads`)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

import cowsqlpy
from cowsqlpy.database import Database, ResultStream
from cowsqlpy.errors import OperationalError
from cowsqlpy.runtime import run_sync
from cowsqlpy.shared_reads import READ_DEPTH
from tests.client.conftest import InProcessCluster

KEYS = 64
BIG = 20_000  # rows: many pages


@pytest.fixture(scope="module")
def db(cluster: InProcessCluster) -> Iterator[Database]:
    conn = cowsqlpy.connect(cluster.addresses, database="shared_reads", autocommit=True)
    conn.execute("CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO kv VALUES (?, ?)", [(k, f"v{k}") for k in range(KEYS)])
    conn.execute(
        "CREATE TABLE big AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
        f"WHERE i < {BIG}) SELECT i, printf('%040d', i) AS pad FROM n"
    )
    conn.close()
    database = cluster.database("shared_reads")
    yield database
    run_sync(database.close())


async def _started(
    db: Database, sql: str, params: tuple[object, ...] = (), **kw: bool
) -> ResultStream:
    return await db.query(sql, params, **kw)


async def _all(stream: ResultStream) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    while (batch := await stream.next_batch()) is not None:
        out.extend(batch)
    return out


@pytest.mark.parametrize("linearizable", [False, True])
def test_concurrent_reads_share_a_few_sessions(db: Database, linearizable: bool) -> None:
    async def go() -> tuple[int, list[list[tuple[object, ...]]]]:
        await _all(await _started(db, "SELECT 1", linearizable=linearizable))  # a pooled session
        keys = range(4 * READ_DEPTH)
        streams = await asyncio.gather(
            *(
                _started(db, "SELECT k, v FROM kv WHERE k = ?", (k,), linearizable=linearizable)
                for k in keys
            )
        )
        sessions = {id(s.session) for s in streams}
        return len(sessions), [await _all(s) for s in streams]

    sessions, results = run_sync(go())
    assert results == [[(k, f"v{k}")] for k in range(4 * READ_DEPTH)]  # each caller its own row
    assert sessions <= 4  # 32 queries, READ_DEPTH a session (not one session each)
    assert db.reads.sessions == 0


def test_a_failing_query_fails_only_its_caller(db: Database) -> None:
    async def go() -> list[object]:
        await _all(await _started(db, "SELECT 1"))
        calls = [
            _started(
                db,
                "SELECT nope FROM kv" if k == 3 else "SELECT v FROM kv WHERE k = ?",
                () if k == 3 else (k,),
            )
            for k in range(READ_DEPTH)
        ]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        return [o if isinstance(o, BaseException) else await _all(o) for o in outcomes]

    outcomes = run_sync(go())
    error = outcomes.pop(3)
    assert isinstance(error, OperationalError) and "no such column" in str(error)
    assert outcomes == [[(f"v{k}",)] for k in range(READ_DEPTH) if k != 3]


def test_a_large_result_left_half_read_takes_no_queries_behind_it(db: Database) -> None:
    async def go() -> tuple[bool, list[tuple[object, ...]], int]:
        big = await _started(db, "SELECT i, pad FROM big ORDER BY i")
        first = await big.next_batch()
        assert first is not None and big.session.conn.mid_stream
        # the same task reads again before finishing the large result: never behind it
        point = await asyncio.wait_for(_started(db, "SELECT v FROM kv WHERE k = ?", (5,)), 10)
        other_session = point.session is not big.session
        rows = await _all(point)
        rest = await _all(big)
        return other_session, rows, len(first) + len(rest)

    other_session, rows, count = run_sync(go())
    assert other_session
    assert rows == [("v5",)]
    assert count == BIG


def test_queries_sent_behind_a_large_result_are_answered_while_it_is_not_read(db: Database) -> None:
    async def go() -> tuple[list[list[tuple[object, ...]]], int]:
        await _all(await _started(db, "SELECT 1"))
        # sent in the same loop iteration: they ride one session, behind the large result
        big_call = asyncio.ensure_future(_started(db, "SELECT i, pad FROM big ORDER BY i"))
        points = [
            asyncio.ensure_future(_started(db, "SELECT v FROM kv WHERE k = ?", (k,)))
            for k in range(4)
        ]
        streams = await asyncio.wait_for(asyncio.gather(*points), 10)  # the big one is not consumed
        big = await big_call
        assert all(s.session is big.session for s in streams)
        rows = [await _all(s) for s in streams]
        return rows, len(await _all(big))

    rows, count = run_sync(go())
    assert rows == [[(f"v{k}",)] for k in range(4)]
    assert count == BIG


def test_a_cancelled_reader_leaves_the_session_in_step(db: Database) -> None:
    async def go() -> tuple[list[list[tuple[object, ...]]], list[tuple[object, ...]], bool]:
        await _all(await _started(db, "SELECT 1"))
        tasks = [
            asyncio.ensure_future(_started(db, "SELECT ? + 0", (k,))) for k in range(READ_DEPTH)
        ]
        await asyncio.sleep(0)  # every query is queued; the send follows
        await asyncio.sleep(0)
        tasks[2].cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(done[2], asyncio.CancelledError)
        rows = [await _all(s) for i, s in enumerate(done) if i != 2 and isinstance(s, ResultStream)]
        session = done[0].session if isinstance(done[0], ResultStream) else None
        after = await _started(db, "SELECT ? + 0", (99,))
        return rows, await _all(after), after.session is session

    rows, after, same_session = run_sync(go())
    assert rows == [[(k,)] for k in range(READ_DEPTH) if k != 2]
    assert after == [(99,)]  # the next query on that session gets its own reply
    assert same_session


def test_a_lost_shared_session_retries_each_query_and_is_dropped(db: Database) -> None:
    async def go() -> tuple[list[list[tuple[object, ...]]], bool, int]:
        await _all(await _started(db, "SELECT 1"))
        tasks = [
            asyncio.ensure_future(_started(db, "SELECT ? + 0", (k,))) for k in range(READ_DEPTH)
        ]
        await asyncio.sleep(0)  # every query is queued on one session
        shared = next(iter(db.reads._loads))  # white-box: the session carrying them
        await asyncio.sleep(0)  # and sent
        shared.conn.close()  # the connection drops with every reply owed
        streams = await asyncio.gather(*tasks)
        rows = [await _all(s) for s in streams]
        return rows, any(s is shared for s in db._idle), db.reads.sessions

    rows, pooled, carrying = run_sync(go())
    assert rows == [[(k,)] for k in range(READ_DEPTH)]  # each retried on its own
    assert not pooled and carrying == 0
