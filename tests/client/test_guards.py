"""Engine guardrails: inputs that crash or wedge libdqlite 1.11.1 are refused by the client.

Each test sends the dangerous input through the public API to a node running in a
child process (if a guard failed, the child would die, not the test run), then shows
that node still serving.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Awaitable, Callable

import pytest

import cowsqlpy
from cowsqlpy import protocol
from cowsqlpy.client import STATEMENT_CACHE_SIZE, Session
from cowsqlpy.runtime import run_sync

ChildNode = tuple[str, "subprocess.Popen[str]"]


def assert_still_serving(address: str, proc: subprocess.Popen[str]) -> None:
    assert proc.poll() is None, "the node process died"
    conn = cowsqlpy.connect([address], database="guard-check", autocommit=True)
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS alive (n INTEGER)")
        conn.execute("INSERT INTO alive VALUES (1)")  # a write: the RETURNING crash hits here
        assert conn.execute("SELECT count(*) FROM alive").fetchone()[0] >= 1
    finally:
        conn.close()
    assert proc.poll() is None


def run_then_check(child_node: ChildNode, body: Callable[[Session], Awaitable[None]],
                   database: str | None = "guard") -> None:
    """Run ``body`` on a new session to the child node (``database`` opened), then
    show the node still serving."""
    address, proc = child_node

    async def scenario() -> None:
        session = await Session.connect(address)
        try:
            if database is not None:
                await session.open(database)
            await body(session)
        finally:
            session.close()

    run_sync(scenario())
    assert_still_serving(address, proc)


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO t VALUES (1) RETURNING n",
        "UPDATE t SET n = 2 RETURNING *",
        "DELETE FROM t RETURNING n",
        "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x RETURNING n",
        "insert into t values (1)\n  returning  n -- lower case",
    ],
)
def test_returning_is_refused(child_node: ChildNode, sql: str) -> None:
    address, proc = child_node
    conn = cowsqlpy.connect([address], database="guard", autocommit=True)
    conn.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER)")
    with pytest.raises(cowsqlpy.NotSupportedError, match="RETURNING"):
        conn.execute(sql)
    with pytest.raises(cowsqlpy.NotSupportedError):
        conn.executescript(f"SELECT 1; {sql};")
    # The word inside a literal or a comment is not a RETURNING clause.
    conn.execute("INSERT INTO t VALUES (length('returning')) -- returning")
    conn.close()
    assert_still_serving(address, proc)


def test_parameter_count_is_capped_at_255(child_node: ChildNode) -> None:
    address, proc = child_node
    conn = cowsqlpy.connect([address], database="guard", autocommit=True)
    ok = conn.execute("SELECT " + ", ".join("?" * 255), tuple(range(255))).fetchone()
    assert ok == tuple(range(255))
    with pytest.raises(cowsqlpy.ProgrammingError, match="255"):
        conn.execute("SELECT " + ", ".join("?" * 256), tuple(range(256)))
    conn.close()
    assert_still_serving(address, proc)


def test_statement_is_never_finalized_twice(child_node: ChildNode) -> None:
    async def body(session: Session) -> None:
        first = await session.prepare("SELECT 1")
        second = await session.prepare("SELECT 2")  # keeps a higher id live (the segfault case)
        await session.finalize(first)
        with pytest.raises(cowsqlpy.ProgrammingError, match="not live"):
            await session.finalize(first)
        with pytest.raises(cowsqlpy.ProgrammingError):
            async for _ in session.query(first):
                pass
        await session.finalize(second)

    run_then_check(child_node, body)


def test_statement_cache_finalizes_what_it_evicts_once(child_node: ChildNode) -> None:
    """Repeated query texts are prepared and kept per session; beyond the cache size
    the least recently used are finalized (once each: ids are then reused by the
    engine), interleaved with statements the caller prepared and finalized itself."""

    async def body(session: Session) -> None:
        mine = await session.prepare("SELECT 'mine'")
        for i in range(3 * STATEMENT_CACHE_SIZE):
            for _ in range(3):
                assert await session.query_all(f"SELECT {i}") == [(i,)]
            if i % 50 == 0:
                await session.finalize(mine)
                mine = await session.prepare("SELECT 'mine'")
        assert len(session._statements) <= STATEMENT_CACHE_SIZE + 1
        assert await session.query_all("SELECT 1 + 1") == [(2,)]

    run_then_check(child_node, body)


@pytest.mark.parametrize(
    "rtype,args,match",
    [
        (protocol.DESCRIBE, (1,), "aborts the engine"),
        (protocol.HEARTBEAT, (0,), "HEARTBEAT"),
        (protocol.CONNECT, (1, "x"), "CONNECT"),
        (42, (), "unknown request type"),
    ],
)
def test_dangerous_requests_are_never_sent(child_node: ChildNode, rtype: int, args: tuple[object, ...], match: str) -> None:
    async def body(session: Session) -> None:
        with pytest.raises(cowsqlpy.ProgrammingError, match=match):
            await session.call(rtype, *args)
        # Nothing reached the socket: the same connection still gets answers.
        assert await asyncio.wait_for(session.call(protocol.DESCRIBE, 0), 5) == (0, 0)

    run_then_check(child_node, body, database=None)


def test_multi_statement_text_is_not_silently_truncated(child_node: ChildNode) -> None:
    """QUERY_SQL runs only the first statement and ignores the rest: refuse instead."""
    address, proc = child_node
    conn = cowsqlpy.connect([address], database="guard", autocommit=True)
    with pytest.raises(cowsqlpy.ProgrammingError, match="one statement"):
        conn.execute("SELECT 1; DROP TABLE alive")
    conn.close()
    assert_still_serving(address, proc)
