"""The SQLAlchemy dialects (cowsql://, cowsql+aio://) against a real 3-node cluster."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event, exc, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import cowsqlpy
from cowsqlpy import versions
from cowsqlpy.aio import returning_allowed
from cowsqlpy.database import MARKERS
from cowsqlpy.retry import RetryPolicy
from cowsqlpy.sqlalchemy import INTERNAL_TABLES, connect_args, create_engine, make_url
from cowsqlpy.sqlalchemy.aio import CowsqlAioDialect
from cowsqlpy.sqlalchemy.dialect import INTERNAL_DATABASE, CowsqlDialect
from cowsqlpy.testing import Cluster, transfer_leadership, wait_for

Run = Callable[[Coroutine[Any, Any, Any]], Any]


class Base(DeclarativeBase):
    pass


class Event(Base):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(40), unique=True)
    at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime)
    stamp: Mapped[dt.datetime | None] = mapped_column(sa.TIMESTAMP)
    day: Mapped[dt.date | None] = mapped_column(sa.Date)
    clock: Mapped[dt.time | None] = mapped_column(sa.Time)
    done: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    price: Mapped[float | None] = mapped_column(sa.Numeric(10, 2))


def url(cluster: Cluster, dbname: str, scheme: str = "cowsql", query: str = "") -> str:
    return f"{scheme}://{','.join(cluster.addresses)}/{dbname}" + (f"?{query}" if query else "")


@pytest.fixture
def engine(cluster: Cluster, dbname: str) -> Iterator[sa.Engine]:
    e = create_engine(url(cluster, dbname))
    yield e
    e.dispose()


# -- URLs -----------------------------------------------------------------------------------------


def test_urls_name_servers_database_and_retry_options() -> None:
    u = make_url(
        "cowsql://127.0.0.1:9001,127.0.0.1:9002/app?deadline=7.5&max_tries=3&server=127.0.0.1:9003&group_commit=off"
        "&read_consistency=serializable"
    )
    args = connect_args(u)
    assert args["servers"] == ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]
    assert (
        args["database"] == "app"
        and args["group_commit"] is False
        and args["read_consistency"] == "serializable"
    )
    assert args["policy"] == RetryPolicy(deadline=7.5, max_tries=3)
    # SQLAlchemy's own parser: one host:port, or several in brackets (alembic.ini can hold either).
    assert connect_args(sa.make_url("cowsql://127.0.0.1:9001/app"))["servers"] == ["127.0.0.1:9001"]
    assert connect_args(sa.make_url("cowsql://[h1:1,h2:2]/app"))["servers"] == ["h1:1", "h2:2"]
    assert sa.make_url(str(u)).render_as_string() == u.render_as_string()  # round-trips
    assert type(sa.create_engine("cowsql://127.0.0.1:1/x").dialect) is CowsqlDialect  # entry points
    assert type(create_async_engine("cowsql+aio://127.0.0.1:1/x").dialect) is CowsqlAioDialect


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("cowsql://127.0.0.1:9001/", "database"),
        ("cowsql:///app", "server"),
        ("cowsql://localhost/app", "port"),
        ("cowsql://127.0.0.1:9001/app?deadlin=3", "unknown option"),
        ("cowsql://127.0.0.1:9001/app?deadline=soon", "not a number"),
        ("cowsql://127.0.0.1:9001/app?group_commit=maybe", "true or false"),
        ("cowsql://u:p@127.0.0.1:9001/app", "users"),
        (f"cowsql://127.0.0.1:9001/{INTERNAL_DATABASE}", "internal"),
    ],
)
def test_bad_urls_are_refused_clearly(bad: str, message: str) -> None:
    with pytest.raises(exc.ArgumentError, match=message):
        connect_args(make_url(bad))


def test_internal_database_name_matches_the_apps() -> None:
    pytest.importorskip("cowsqlpy.node")  # cowsqlpy.app loads the engine
    from cowsqlpy.app import INTERNAL_DATABASE as APP_INTERNAL

    assert APP_INTERNAL == INTERNAL_DATABASE


# -- ORM, types, errors ------------------------------------------------------------------------


def test_orm_round_trips_datetime_date_time_bool(engine: sa.Engine) -> None:
    Base.metadata.create_all(engine)
    when = dt.datetime(2024, 2, 29, 23, 59, 58, 123456)
    with Session(engine) as s:
        s.add_all(
            [
                Event(
                    name="full",
                    at=when,
                    stamp=when,
                    day=dt.date(1999, 12, 31),
                    clock=dt.time(1, 2, 3, 4),
                    done=True,
                    price=9.99,
                ),
                Event(name="empty"),
            ]
        )
        s.commit()
    with Session(engine) as s:
        full = s.scalars(select(Event).where(Event.name == "full")).one()
        assert (full.at, full.stamp, full.day, full.clock, full.done) == (
            when,
            when,
            dt.date(1999, 12, 31),
            dt.time(1, 2, 3, 4),
            True,
        )
        assert type(full.day) is dt.date and float(full.price or 0) == 9.99
        empty = s.scalars(select(Event).where(Event.name == "empty")).one()
        assert (empty.at, empty.stamp, empty.day, empty.clock, empty.done) == (
            None,
            None,
            None,
            None,
            False,
        )
        # Comparisons in SQL see SQLite's text form, as with stock SQLite.
        assert s.scalars(select(Event.name).where(Event.at > dt.datetime(2024, 1, 1))).all() == [
            "full"
        ]
        assert s.get(Event, full.id) is full


def test_errors_are_wrapped_as_sqlalchemy_exceptions(engine: sa.Engine) -> None:
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        s.add(Event(name="dup"))
        s.commit()
        s.add(Event(name="dup"))
        with pytest.raises(exc.IntegrityError) as info:
            s.commit()
        assert isinstance(info.value.orig, cowsqlpy.IntegrityError)
        s.rollback()
    with engine.connect() as conn:
        with pytest.raises(exc.OperationalError, match="no such table"):
            conn.execute(text("SELECT * FROM missing"))
        conn.rollback()
        with pytest.raises(exc.ProgrammingError):
            conn.exec_driver_sql("SELECT 1; SELECT 2")


def test_isolation_levels_autocommit_and_serializable(cluster: Cluster, dbname: str) -> None:
    engine = create_engine(url(cluster, dbname), pool_size=2)
    other = create_engine(url(cluster, dbname), isolation_level="AUTOCOMMIT")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (n INTEGER)"))

        def count() -> int:
            with other.connect() as c:
                return int(c.execute(text("SELECT count(*) FROM t")).scalar_one())

        with engine.connect() as conn:
            conn.execute(text("INSERT INTO t VALUES (1)"))
            assert count() == 0  # SERIALIZABLE: inside a transaction until commit
            conn.rollback()
        auto = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        auto.execute(text("INSERT INTO t VALUES (2)"))
        assert count() == 1
        auto.close()  # back to the pool: the pool's rollback must not undo it (the data loss)
        assert count() == 1
        with engine.connect() as conn:
            assert conn.get_isolation_level() == "SERIALIZABLE"
            conn.execute(text("INSERT INTO t VALUES (3)"))
            conn.commit()
        assert count() == 2
        with other.connect() as c:
            c.execute(text("INSERT INTO t VALUES (4)"))
        assert count() == 3
        with pytest.raises(exc.ArgumentError, match="isolation_level"):
            with engine.connect() as conn:
                conn.execution_options(isolation_level="READ UNCOMMITTED")
    finally:
        engine.dispose()
        other.dispose()


def test_reflection_hides_the_drivers_tables(engine: sa.Engine) -> None:
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        s.add(Event(name="x"))
        s.commit()  # the driver's commit marker table exists from the first write
    assert MARKERS in INTERNAL_TABLES
    inspector = sa.inspect(engine)
    assert inspector.get_table_names() == ["events"]
    assert MARKERS in inspector.get_table_names(sqlite_include_internal=True)
    reflected = sa.MetaData()
    reflected.reflect(engine)
    assert list(reflected.tables) == ["events"]
    columns = {c["name"]: c for c in inspector.get_columns("events")}
    assert isinstance(columns["at"]["type"], sa.DateTime) and columns["name"]["nullable"] is False
    assert [i["column_names"] for i in inspector.get_unique_constraints("events")] == [["name"]]


def test_savepoints_nest_in_the_orm(engine: sa.Engine) -> None:
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        s.add(Event(name="outer"))
        try:
            with s.begin_nested():
                s.add(Event(name="inner"))
                s.flush()
                raise RuntimeError("undo the savepoint")
        except RuntimeError:
            pass
        with s.begin_nested():
            s.add(Event(name="kept"))
        s.commit()
    with Session(engine) as s:
        assert sorted(s.scalars(select(Event.name))) == ["kept", "outer"]


# every name for this cluster's engine (cowsql 1.15), and none; dqlite-1.11 against a real
# 1.11 node: tests/sql/test_returning_dqlite.py
@pytest.mark.parametrize("engine_name", [None, *sorted(n for n, row in versions.ENGINE_CHOICES.items()
                                                       if row is versions.COWSQL_1_15)])
def test_returning_follows_the_engine_row(
    cluster: Cluster, dbname: str, engine_name: str | None
) -> None:
    query = f"engine={engine_name}" if engine_name else ""
    engine = create_engine(url(cluster, dbname, query=query))
    statements: list[str] = []
    event.listen(
        engine, "before_cursor_execute", lambda conn, cur, sql, *rest: statements.append(sql)
    )
    try:
        Base.metadata.create_all(engine)
        with Session(engine) as s:
            rows = [Event(name=f"e{i}") for i in range(5)]
            s.add_all(rows)
            s.commit()
            assert sorted(e.id for e in rows) == [
                1,
                2,
                3,
                4,
                5,
            ]  # primary keys came back either way
            allowed = engine.dialect.insert_returning
            features = s.connection().connection.dbapi_connection.features  # type: ignore[union-attr]
            assert allowed == returning_allowed(features, wrapped=True)
            used = any("RETURNING" in sql for sql in statements)
            assert used == allowed
            if allowed:
                ids = s.scalars(
                    insert(Event).returning(Event.id), [{"name": "r1"}, {"name": "r2"}]
                ).all()
                assert len(ids) == 2
                return
            # An explicit .returning() (SQLAlchemy renders it anyway) or text: refused before sending.
            for stmt in (
                insert(Event).values(name="r").returning(Event.id),
                text("DELETE FROM events RETURNING id"),
            ):
                with pytest.raises(exc.NotSupportedError, match="RETURNING") as info:
                    s.execute(stmt)
                assert isinstance(info.value.orig, cowsqlpy.NotSupportedError)
                s.rollback()
            assert s.scalar(select(sa.func.count()).select_from(Event)) == 5
    finally:
        engine.dispose()


def test_bulk_insert_update_and_rowcounts(engine: sa.Engine) -> None:
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        s.execute(insert(Event), [{"name": f"b{i}", "done": i % 2 == 0} for i in range(500)])
        s.commit()
        result = s.execute(sa.update(Event).where(Event.done.is_(True)).values(price=1))
        assert result.rowcount == 250  # type: ignore[attr-defined]
        s.commit()
        assert s.scalar(select(sa.func.count()).where(Event.price == 1)) == 250


# -- asyncio ---------------------------------------------------------------------------------------


def test_async_engine_orm_streaming_and_autocommit(run: Run, cluster: Cluster, dbname: str) -> None:
    async def main() -> None:
        engine = create_async_engine(
            make_url(url(cluster, dbname, scheme="cowsql+aio", query="deadline=10"))
        )
        try:
            async with engine.begin() as conn:
                await conn.run_sync(Base.metadata.create_all)
            when = dt.datetime(2025, 1, 2, 3, 4, 5, 6)
            async with AsyncSession(engine) as s:
                s.add_all(
                    [Event(name=f"a{i}", at=when, day=when.date(), done=True) for i in range(300)]
                )
                await s.commit()
                got = await s.scalar(select(Event).where(Event.name == "a7"))
                assert got is not None and (got.at, got.day, got.done) == (when, when.date(), True)
                s.add(Event(name="a7"))
                with pytest.raises(exc.IntegrityError):
                    await s.commit()
                await s.rollback()
            async with engine.connect() as conn:
                result = await conn.stream(
                    select(Event.id).order_by(Event.id)
                )  # a server-side cursor
                ids = [row[0] async for row in result]
                assert ids == list(range(1, 301))
            auto = await engine.connect()
            auto = await auto.execution_options(isolation_level="AUTOCOMMIT")
            await auto.execute(sa.delete(Event).where(Event.id > 100))
            await auto.close()
            async with AsyncSession(engine) as s:
                assert await s.scalar(select(sa.func.count()).select_from(Event)) == 100
                conn = await s.connection()
                assert await conn.run_sync(lambda c: sa.inspect(c).get_table_names()) == ["events"]
        finally:
            await engine.dispose()

    run(main())


def test_engine_follows_a_leader_change(cluster: Cluster, dbname: str) -> None:
    """Pooled DB-API connections point at the old leader after a transfer: the driver's
    retry policy (from the URL) takes the next statement to the new one, no error."""
    engine = create_engine(url(cluster, dbname, query="deadline=20"))
    try:
        Base.metadata.create_all(engine)
        with Session(engine) as s:
            s.add(Event(id=1, name="before"))
            s.commit()
        with cowsqlpy.SyncClient(cluster.addresses) as admin:
            leader = admin.leader()
            assert leader is not None
            transfer_leadership(
                admin, next(i + 1 for i, a in enumerate(cluster.addresses) if a != leader.address)
            )

            def moved() -> bool:
                now = admin.leader()
                return now is not None and now.address != leader.address

            wait_for(moved, 15, "the new leader")
        with Session(engine) as s:
            s.add(Event(id=2, name="after"))
            s.commit()
            assert sorted(s.scalars(select(Event.name))) == ["after", "before"]
    finally:
        engine.dispose()
