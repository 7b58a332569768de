"""The engine probe: a connection that declares no engine identifies the server by how
it answers CLUSTER format 2 (cowsql: FAILURE; libdqlite 1.11: a node list) and takes
that engine's row of the version table. Against this build's engine (an in-process
cluster) and a real libdqlite 1.11.1 node (Canonical's dqlite-demo in a child
process), which must survive the probe however often it comes."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from sqlalchemy import Integer, String, insert
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import cowsqlpy
import cowsqlpy.aio
from cowsqlpy import versions
from cowsqlpy.client import Session
from cowsqlpy.node import engine_features
from cowsqlpy.sqlalchemy import create_engine
from cowsqlpy.testing import Cluster
from tests.app.conftest import Demo

Run = Callable[[Coroutine[Any, Any, Any]], Any]


@pytest.mark.parametrize("fails", [True, False])
def test_a_probe_answer_takes_what_every_row_answering_so_takes(fails: bool) -> None:
    rows = [
        r
        for r in (versions.DQLITE_1_11, versions.COWSQL_1_15)
        if r.unknown_cluster_format_fails == fails
    ]
    got = versions.features_from_probe(fails)
    assert got.unknown_cluster_format_fails == fails
    for field in dataclasses.fields(versions.EngineFeatures):
        value = getattr(got, field.name)
        if isinstance(value, bool):
            assert value == all(getattr(r, field.name) for r in rows), field.name


def test_the_async_driver_identifies_this_build_s_engine(
    cluster: Cluster, dbname: str, run: Run
) -> None:
    async def main() -> versions.EngineFeatures:
        conn = await cowsqlpy.aio.connect(cluster.addresses, database=dbname, autocommit=True)
        try:
            await conn.execute("CREATE TABLE t (x)")
            return conn.features
        finally:
            await conn.close()

    assert run(main()) == engine_features()


def test_the_dbapi_probes_only_when_the_answer_matters(cluster: Cluster, dbname: str) -> None:
    conn = cowsqlpy.connect(cluster.addresses, database=dbname, autocommit=True)
    try:
        conn.execute("CREATE TABLE t (x)")  # every row takes it: no probe needed
        assert conn.features == versions.CLIENT_TARGET
        with pytest.raises(cowsqlpy.NotSupportedError, match="RETURNING"):
            conn.execute("INSERT INTO t VALUES (1) RETURNING x")  # 1.11 takes it: probed
        assert conn.features == engine_features()
        assert conn.identify_engine() == engine_features()
        declared = cowsqlpy.connect(cluster.addresses, database=dbname, engine="dqlite-1.11")
        try:
            assert declared.identify_engine() == versions.DQLITE_1_11  # declared: not probed
        finally:
            declared.close()
    finally:
        conn.close()


@pytest.mark.parametrize(
    "sql",
    [
        "ATTACH 'file:/tmp/x.db' AS other",
        "VACUUM INTO '/tmp/copy.db'",
        "SELECT load_extension('x')",
    ],
)
def test_what_no_row_takes_is_refused_without_dialling(sql: str) -> None:
    conn = cowsqlpy.connect(["127.0.0.1:1"], database="x")  # no node listens there
    try:
        with pytest.raises(cowsqlpy.NotSupportedError, match="refused"):
            conn.execute(sql)
    finally:
        conn.close()


def test_a_1_11_server_is_identified_and_gets_its_row(dqlite_demo: Demo) -> None:
    """No engine= given: RETURNING, which only 1.11's row takes, sends the probe; the
    driver finds 1.11 and sends RETURNING the way 1.11 takes it."""
    conn = cowsqlpy.connect([dqlite_demo.db], database="probe", autocommit=True)
    try:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        rows = conn.execute("INSERT INTO t (v) VALUES ('a'), ('b') RETURNING id, v").fetchall()
        assert rows == [(1, "a"), (2, "b")]
        assert conn.features == versions.DQLITE_1_11
        conn.execute("INSERT INTO t (v) VALUES ('after')")
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (3,)
    finally:
        conn.close()
    assert dqlite_demo.proc.poll() is None


PROBES = 300


async def _probe_storm(address: str) -> tuple[list[bool], list[tuple[Any, ...]]]:
    """PROBES probes: each on a fresh connection, and as many again on one session
    between its statements and pipelined with them."""
    answers: list[bool] = []
    for _ in range(PROBES):
        fresh = await Session.connect(address)
        try:
            answers.append(await fresh.conn.engine_probe(timeout=5))
        finally:
            fresh.close()
    session = await Session.connect(address)
    try:
        await session.open("storm")
        await session.exec_sql("CREATE TABLE IF NOT EXISTS t (n INTEGER)")
        for n in range(PROBES):
            write = session.submit_exec_sql("INSERT INTO t (n) VALUES (?)", (n,))
            answers.append(await session.conn.engine_probe(timeout=5))
            await write
        rows = await session.query_all("SELECT count(*), sum(n) FROM t")
    finally:
        session.close()
    return answers, rows


def test_a_1_11_node_survives_any_number_of_probes(dqlite_demo: Demo) -> None:
    answers, rows = asyncio.run(_probe_storm(dqlite_demo.db))
    assert answers == [False] * (2 * PROBES)  # a node list every time
    assert rows == [(PROBES, sum(range(PROBES)))]
    assert dqlite_demo.proc.poll() is None
    dqlite_demo.put("after-probes", "serving")  # its own client (go-dqlite) still works
    assert dqlite_demo.get("after-probes") == "serving"


def test_this_build_s_engine_answers_every_probe_with_failure(cluster: Cluster) -> None:
    leader = cluster.leader_index()
    assert leader is not None
    answers, rows = asyncio.run(_probe_storm(cluster.addresses[leader]))
    assert answers == [True] * (2 * PROBES)
    assert rows == [(PROBES, sum(range(PROBES)))]


class Base(DeclarativeBase):
    pass


class Thing(Base):
    __tablename__ = "things"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(20))


def test_the_dialect_turns_returning_on_for_a_probed_1_11_server(dqlite_demo: Demo) -> None:
    engine = create_engine(f"cowsql://{dqlite_demo.db}/dialect")  # no ?engine=
    try:
        Base.metadata.create_all(engine)
        assert engine.dialect.insert_returning
        with engine.begin() as c:
            got = c.execute(
                insert(Thing).returning(Thing.id, Thing.name), [{"name": "a"}, {"name": "b"}]
            )
            assert sorted(got.all()) == [(1, "a"), (2, "b")]
    finally:
        engine.dispose()
    assert dqlite_demo.proc.poll() is None
