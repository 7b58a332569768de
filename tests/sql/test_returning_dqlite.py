"""The libdqlite 1.11.1 fact behind docs/sqlalchemy.md's RETURNING table, against a real
Canonical dqlite-demo node (Debian go-dqlite): RETURNING sent as a query inside a
transaction that EXEC_SQL commits returns its rows, writes them, and leaves the node
serving writes (bench/probe_returning.py stresses it across leader changes; a RETURNING
in autocommit, which aborts the node on the next write, is not sent here)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from cowsqlpy.client import Session
from tests.app.conftest import Demo


@pytest.fixture
def dqlite_demo(tmp_path: Path) -> Iterator[Demo]:
    if shutil.which("dqlite-demo") is None:
        pytest.skip("dqlite-demo (Debian go-dqlite) not installed")
    demo = Demo(tmp_path / "demo", binary="dqlite-demo")
    try:
        demo.wait_up()
        yield demo
    finally:
        demo.stop()


async def _scenario(address: str) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    session = await Session.connect(address)
    try:
        await session.open("returning")
        await session.exec_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        await session.exec_sql("BEGIN")
        returned = await session.query_all(
            "INSERT INTO t (v) SELECT 'v' || x FROM (WITH RECURSIVE c(x) AS "
            "(SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 500) SELECT x FROM c) RETURNING id, v"
        )
        await session.exec_sql("COMMIT")
        await session.exec_sql(
            "INSERT INTO t (v) VALUES ('after')"
        )  # the write that 1.11.1 would abort on
        stored = await session.query_all("SELECT id, v FROM t ORDER BY id")
    finally:
        session.close()
    return returned, stored


def test_returning_inside_a_transaction_on_dqlite_1_11(dqlite_demo: Demo) -> None:
    returned, stored = asyncio.run(_scenario(dqlite_demo.db))
    assert returned == [(i, f"v{i}") for i in range(1, 501)]  # several ROWS batches
    assert stored == [*returned, (501, "after")]
    assert dqlite_demo.proc.poll() is None
    dqlite_demo.put("still", "serving")
    assert dqlite_demo.get("still") == "serving"
