"""The DB-API driver keeps sqlite3's promises (Python 3.12): isolation_level, autocommit,
rowcount, description type codes, fetch without a result set; and the shell reads a
go-dqlite node store. Against a real 3-node cluster."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import apsw
import pytest

import cowsqlpy
from cowsqlpy import Connection
from cowsqlpy.dbapi import LEGACY_TRANSACTION_CONTROL
from cowsqlpy.store import NotANodeStoreError, SqliteNodeStore
from cowsqlpy.testing import Cluster
from tests.sql import conftest as sql_fixtures

PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])
cluster = sql_fixtures.cluster  # the module's 3-node cluster
Connect = Callable[..., Connection]


@pytest.fixture
def connect(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Connect]:
    opened: list[Connection] = []
    name = request.node.name[:60]

    def make(**options: object) -> Connection:
        conn = cowsqlpy.connect(cluster.addresses, database=name, **options)  # type: ignore[arg-type]
        opened.append(conn)
        return conn

    yield make
    for conn in opened:
        conn.close()


def count(conn: Connection, table: str = "t") -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


# -- isolation_level ------------------------------------------------------------------------


def test_isolation_level_none_commits_each_write_and_survives_close(connect: Connect) -> None:
    """The data-loss defect: isolation_level = None was ignored, so the write sat in a
    transaction that close() (a pool's return) rolled back."""
    conn, other = connect(), connect()
    conn.execute("CREATE TABLE t (n INTEGER)")
    conn.isolation_level = None
    assert conn.isolation_level is None
    conn.execute("INSERT INTO t VALUES (1)")
    assert not conn.in_transaction
    assert count(other) == 1
    conn.close()
    assert count(other) == 1


def test_setting_isolation_level_none_commits_the_open_transaction(connect: Connect) -> None:
    conn, other = connect(), connect()
    conn.execute("CREATE TABLE t (n INTEGER)")
    conn.execute("INSERT INTO t VALUES (1)")
    assert conn.in_transaction and count(other) == 0
    conn.isolation_level = None
    assert not conn.in_transaction and count(other) == 1


@pytest.mark.parametrize("level", ["", "DEFERRED", "immediate", "Exclusive"])
def test_isolation_levels_open_a_transaction_before_a_write(connect: Connect, level: str) -> None:
    conn, other = connect(isolation_level=level), connect()
    assert conn.isolation_level == level.upper()  # stored upper-cased, as sqlite3 does
    conn.execute("CREATE TABLE t (n INTEGER)")
    assert not conn.in_transaction  # DDL and reads outside a transaction run on their own
    conn.execute("INSERT INTO t VALUES (1)")
    assert conn.in_transaction and count(other) == 0
    conn.rollback()
    assert count(other) == 0
    conn.execute("INSERT INTO t VALUES (2)")
    conn.commit()
    assert count(other) == 1


def test_bad_isolation_level_and_autocommit_values(connect: Connect) -> None:
    conn = connect()
    with pytest.raises(ValueError, match="isolation_level"):
        conn.isolation_level = "SERIALIZABLE"
    with pytest.raises(TypeError):
        conn.isolation_level = 1  # type: ignore[assignment]
    with pytest.raises(ValueError, match="autocommit"):
        conn.autocommit = 1  # only True, False or LEGACY_TRANSACTION_CONTROL, as sqlite3
    with pytest.raises(ValueError):
        connect(isolation_level="READ COMMITTED")
    assert conn.isolation_level == "IMMEDIATE" and conn.autocommit == LEGACY_TRANSACTION_CONTROL


def test_unknown_attributes_are_refused(connect: Connect) -> None:
    conn = connect()
    with pytest.raises(AttributeError):
        conn.isolation = None  # type: ignore[attr-defined]  # a typo must not pass silently
    with pytest.raises(AttributeError):
        conn.auto_commit = True  # type: ignore[attr-defined]
    cur = conn.cursor()
    with pytest.raises(AttributeError):
        cur.row_count = 5  # type: ignore[attr-defined]
    cur.arraysize = 7
    assert cur.arraysize == 7


# -- autocommit (Python 3.12) -----------------------------------------------------------------


def test_autocommit_true_commits_at_once_and_commit_does_nothing(connect: Connect) -> None:
    conn, other = connect(autocommit=True), connect()
    conn.execute("CREATE TABLE t (n INTEGER)")
    conn.execute("INSERT INTO t VALUES (1)")
    assert not conn.in_transaction and count(other) == 1
    conn.execute("BEGIN")
    conn.execute("INSERT INTO t VALUES (2)")
    conn.commit()  # sqlite3: a no-op with autocommit=True; the explicit transaction stays open
    assert conn.in_transaction and count(other) == 1
    conn.execute("COMMIT")
    assert count(other) == 2


def test_autocommit_false_is_always_in_a_transaction(connect: Connect) -> None:
    setup, other = connect(autocommit=True), connect()
    setup.execute("CREATE TABLE t (n INTEGER)")
    conn = connect(autocommit=False)
    assert count(conn) == 0
    assert conn.in_transaction  # a read opened it (PEP 249)
    conn.execute("INSERT INTO t VALUES (1)")
    conn.rollback()
    assert count(other) == 0
    conn.execute("INSERT INTO t VALUES (2)")
    conn.commit()
    assert count(other) == 1
    conn.execute("INSERT INTO t VALUES (3)")
    conn.autocommit = True  # commits the pending transaction, as sqlite3
    assert not conn.in_transaction and count(other) == 2


def test_switching_legacy_to_autocommit_commits(connect: Connect) -> None:
    conn, other = connect(), connect()
    conn.execute("CREATE TABLE t (n INTEGER)")
    conn.execute("INSERT INTO t VALUES (1)")
    assert conn.in_transaction
    conn.autocommit = True
    assert conn.autocommit is True and not conn.in_transaction and count(other) == 1


# -- rowcount, lastrowid ------------------------------------------------------------------------


def test_rowcount_is_minus_one_after_statements_that_are_not_dml(connect: Connect) -> None:
    conn = connect(autocommit=True)
    cur = conn.cursor()
    cur.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER)")
    assert cur.rowcount == -1
    cur.executemany("INSERT INTO t (n) VALUES (?)", [(1,), (2,), (3,)])
    assert cur.rowcount == 3
    cur.execute("CREATE TABLE u (n INTEGER)")  # reported 1 (the last write's count) before the fix
    assert cur.rowcount == -1
    cur.execute("INSERT INTO t (n) VALUES (4)")
    assert cur.rowcount == 1 and cur.lastrowid == 4
    cur.execute("UPDATE t SET n = n + 1 WHERE n > 1")
    assert cur.rowcount == 3 and cur.lastrowid == 4  # lastrowid changes after INSERT only
    for sql in ("SELECT * FROM t", "BEGIN", "COMMIT", "DROP TABLE u", "PRAGMA cache_size = 10"):
        cur.execute(sql)
        assert cur.rowcount == -1, sql
    cur.execute("DELETE FROM t")
    assert cur.rowcount == 4


# -- description ------------------------------------------------------------------------------


def test_description_type_codes_follow_the_engine_types(connect: Connect) -> None:
    conn = connect(autocommit=True)
    conn.execute(
        "CREATE TABLE t (i INTEGER, f REAL, s TEXT, b BLOB, at DATETIME, flag BOOLEAN, late TEXT)"
    )
    when = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
    conn.execute("INSERT INTO t VALUES (1, 1.5, 'x', x'00', ?, 1, NULL)", (when,))
    conn.execute("INSERT INTO t VALUES (2, 2.5, 'y', x'01', ?, 0, 'later')", (when,))
    cur = conn.execute("SELECT i, f, s, b, at, flag, late, NULL AS empty FROM t ORDER BY i")
    assert cur.description is not None
    codes = [d[1] for d in cur.description]
    assert codes == ["INTEGER", "FLOAT", "TEXT", "BLOB", "DATETIME", "BOOLEAN", "TEXT", None]
    i, f, s, b, at, flag, late, empty = codes
    assert i == cowsqlpy.NUMBER and f == cowsqlpy.NUMBER and flag == cowsqlpy.NUMBER
    assert s == cowsqlpy.STRING and b == cowsqlpy.BINARY and at == cowsqlpy.DATETIME
    assert (
        s != cowsqlpy.NUMBER and b != cowsqlpy.STRING and empty is None and late == cowsqlpy.STRING
    )
    assert len(cur.fetchall()) == 2


# -- fetch without a result set -----------------------------------------------------------------


def test_fetch_before_execute_or_after_a_statement_without_rows_raises(connect: Connect) -> None:
    conn = connect(autocommit=True)
    cur = conn.cursor()
    for fetch in (cur.fetchone, cur.fetchall, lambda: cur.fetchmany(2)):
        with pytest.raises(cowsqlpy.Error):
            fetch()
    cur.execute("CREATE TABLE t (n INTEGER)")
    with pytest.raises(cowsqlpy.ProgrammingError, match="no result set"):
        cur.fetchone()
    cur.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(cowsqlpy.Error):
        cur.fetchall()
    cur.execute("SELECT n FROM t")
    assert cur.fetchall() == [(1,)]
    assert (
        cur.fetchone() is None and cur.fetchall() == [] and cur.fetchmany(3) == []
    )  # exhausted: no error


# -- node stores ----------------------------------------------------------------------------------


def run_shell(store_arg: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "cowsqlpy", "shell", "-s", store_arg, *args]
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)


def go_dqlite_store(path: Path, addresses: list[str]) -> None:
    """The schema go-dqlite's DatabaseNodeStore keeps (Canonical's `dqlite -s file://`)."""
    db = apsw.Connection(str(path))
    db.execute("CREATE TABLE servers (address TEXT, UNIQUE(address))")
    for a in addresses:
        db.execute("INSERT INTO servers (address) VALUES (?)", (a,))
    db.close()


def test_shell_reads_a_go_dqlite_node_store(cluster: Cluster, tmp_path: Path) -> None:
    path = tmp_path / "servers.sql"
    go_dqlite_store(path, cluster.addresses)
    r = run_shell(
        f"file://{path}", "storedb", "-c", "CREATE TABLE IF NOT EXISTS k (n); SELECT 40 + 2;"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "42"


def test_go_dqlite_store_reads_and_writes_addresses(tmp_path: Path) -> None:
    path = tmp_path / "servers.sql"
    go_dqlite_store(path, ["127.0.0.1:2", "127.0.0.1:1"])
    store = SqliteNodeStore(path, create=False)
    assert [(n.address, n.role) for n in store.get()] == [
        ("127.0.0.1:1", cowsqlpy.VOTER),
        ("127.0.0.1:2", cowsqlpy.VOTER),
    ]
    store.set([cowsqlpy.NodeInfo(7, "127.0.0.1:3", cowsqlpy.STANDBY)])
    store.close()
    db = apsw.Connection(str(path))
    assert db.execute("SELECT * FROM servers").fetchall() == [("127.0.0.1:3",)]  # schema kept


@pytest.mark.parametrize("content", [b"not a database at all\n" * 10, None])
def test_shell_refuses_a_file_that_is_not_a_node_store_in_one_line(
    tmp_path: Path, content: bytes | None
) -> None:
    path = tmp_path / "other.db"
    if content is None:  # a SQLite file of something else
        db = apsw.Connection(str(path))
        db.execute("CREATE TABLE users (name TEXT)")
        db.close()
    else:
        path.write_bytes(content)
    before = path.read_bytes()
    r = run_shell(f"file://{path}", "db", "-c", "SELECT 1")
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1 and "is not a node store" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert path.read_bytes() == before  # nothing written into someone else's file
    with pytest.raises(NotANodeStoreError):
        SqliteNodeStore(path, create=False)


def test_str_subclass_parameters_are_sent_as_text(connect: Connect) -> None:
    """StrEnum members (and SQLAlchemy's quoted_name) are str: sqlite3 takes them."""
    import enum

    class Color(enum.StrEnum):
        RED = "red"

    class Name(str):
        pass

    conn = connect(autocommit=True)
    conn.execute("CREATE TABLE t (c TEXT, n TEXT)")
    conn.execute("INSERT INTO t VALUES (?, ?)", (Color.RED, Name("x")))
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(Color.RED, Name("y"))])
    rows = conn.execute("SELECT c, n FROM t WHERE c = ? ORDER BY n", (Color.RED,)).fetchall()
    assert rows == [("red", "x"), ("red", "y")] and all(type(v) is str for row in rows for v in row)
