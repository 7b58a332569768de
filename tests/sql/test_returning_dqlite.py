"""The libdqlite 1.11.1 fact behind docs/sqlalchemy.md's RETURNING table, against a real
Canonical dqlite-demo node (Debian go-dqlite): RETURNING sent as a query inside a
transaction that EXEC_SQL commits returns its rows, writes them, and leaves the node
serving writes (bench/probe_returning.py stresses it across leader changes; a RETURNING
in autocommit, which aborts the node on the next write, is not sent here)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from cowsqlpy.client import Session
from tests.app.conftest import Demo


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(20))


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


def test_the_drivers_send_returning_where_1_11_takes_it(dqlite_demo: Demo) -> None:
    """With engine="dqlite-1.11" the DB-API sends RETURNING as a query inside a
    transaction (its own one in autocommit) and gives the rows; scripts, which EXEC
    each statement, still refuse it; the node keeps serving writes."""
    import cowsqlpy

    conn = cowsqlpy.connect([dqlite_demo.db], database="ret", engine="dqlite-1.11", autocommit=True)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    assert conn.execute("INSERT INTO t (v) VALUES ('a'), ('b') RETURNING id, v").fetchall() == [
        (1, "a"), (2, "b")]
    conn.execute("INSERT INTO t (v) VALUES ('after autocommit')")   # 1.11.1 aborted here once
    with pytest.raises(cowsqlpy.NotSupportedError, match="in a script"):
        conn.executescript("INSERT INTO t (v) VALUES ('s') RETURNING id;")
    with pytest.raises(cowsqlpy.ProgrammingError):
        conn.executemany("INSERT INTO t (v) VALUES (?) RETURNING id", [("m",)])
    conn.close()

    tx = cowsqlpy.connect([dqlite_demo.db], database="ret", engine="dqlite-1.11", autocommit=False)
    assert tx.execute("UPDATE t SET v = v || '!' WHERE id <= 2 RETURNING v").fetchall() == [
        ("a!",), ("b!",)]
    tx.commit()
    assert tx.execute("SELECT v FROM t ORDER BY id").fetchall() == [
        ("a!",), ("b!",), ("after autocommit",)]
    tx.close()
    assert dqlite_demo.proc.poll() is None
    dqlite_demo.put("still", "serving")
    assert dqlite_demo.get("still") == "serving"


def test_sqlalchemy_returning_on_dqlite_1_11(dqlite_demo: Demo) -> None:
    """The dialect turns RETURNING on for 1.11 servers: Core .returning() and the
    ORM's insertmanyvalues get the server-made keys."""
    from sqlalchemy import insert, select
    from sqlalchemy.orm import Session as OrmSession

    from cowsqlpy.sqlalchemy import create_engine

    engine = create_engine(f"cowsql://{dqlite_demo.db}/orm?engine=dqlite-1.11")
    try:
        Base.metadata.create_all(engine)   # the first connection tells the dialect the engine
        assert engine.dialect.insert_returning and engine.dialect.use_insertmanyvalues
        with engine.begin() as c:
            got = c.execute(insert(Item).returning(Item.id, Item.name),
                            [{"name": f"n{i}"} for i in range(5)]).all()
        assert sorted(got) == [(i + 1, f"n{i}") for i in range(5)]
        with OrmSession(engine) as s:
            items = [Item(name=f"orm{i}") for i in range(3)]
            s.add_all(items)
            s.commit()
            assert [i.id for i in items] == [6, 7, 8]   # keys came back through RETURNING
            assert s.scalars(select(Item.name).where(Item.id == 8)).one() == "orm2"
    finally:
        engine.dispose()
    assert dqlite_demo.proc.poll() is None


def test_the_async_driver_serves_returning_on_1_11(dqlite_demo: Demo) -> None:
    import cowsqlpy.aio

    async def main() -> list[tuple[object, ...]]:
        conn = await cowsqlpy.aio.connect([dqlite_demo.db], database="aret", autocommit=True,
                                          engine="dqlite-1.11")
        try:
            await conn.execute("CREATE TABLE r (id INTEGER PRIMARY KEY, v TEXT)")
            cur = await conn.execute("INSERT INTO r (v) VALUES ('a'), ('b') RETURNING id, v")
            assert await cur.fetchall() == [(1, "a"), (2, "b")]
            async with conn.transaction():
                cur = await conn.execute("UPDATE r SET v = v || '!' RETURNING v")
                assert sorted(await cur.fetchall()) == [("a!",), ("b!",)]
            await conn.execute("INSERT INTO r (v) VALUES ('c')")
            cur = await conn.execute("SELECT id, v FROM r ORDER BY id")
            return list(await cur.fetchall())
        finally:
            await conn.close()

    assert asyncio.run(main()) == [(1, "a!"), (2, "b!"), (3, "c")]
    assert dqlite_demo.proc.poll() is None
