"""PEP 249 driver against a real 3-node cluster."""

from __future__ import annotations

import datetime as dt
import sqlite3
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

import cowsqlpy
from cowsqlpy import Connection, codec
from cowsqlpy.testing import wait_for
from tests.client.conftest import InProcessCluster

Connect = Callable[..., Connection]


def follower_rows(cluster: InProcessCluster, dbname: str, sql: str, tmp_path: Path) -> list[tuple[object, ...]]:
    """Read a follower's own replica (DUMP from that node), not the leader's answer."""
    leader = cluster.leader()
    follower = next(n for n in cluster.nodes if n is not leader and n.running)
    admin = cowsqlpy.SyncClient(cluster.addresses)
    files = admin.dump(dbname, follower.address)
    admin.close()
    path = tmp_path / f"replica-{follower.id}"
    for name, data in files.items():
        (tmp_path / name.replace(dbname, path.name)).write_bytes(data)
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    except sqlite3.OperationalError:  # no such table yet on the replica
        return []
    finally:
        db.close()


def test_module_globals() -> None:
    assert cowsqlpy.apilevel == "2.0"
    assert cowsqlpy.threadsafety == 1
    assert cowsqlpy.paramstyle == "qmark"
    assert issubclass(cowsqlpy.IntegrityError, cowsqlpy.DatabaseError)
    assert issubclass(cowsqlpy.DatabaseError, cowsqlpy.Error)
    assert cowsqlpy.STRING == "TEXT" and cowsqlpy.DATETIME == "timestamp" and cowsqlpy.NUMBER != "BLOB"


def test_crud_replicates_to_followers(connect: Connect, cluster: InProcessCluster, dbname: str, tmp_path: Path) -> None:
    conn = connect()
    cur = conn.cursor()
    cur.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER)")
    cur.execute("INSERT INTO items (name, qty) VALUES (?, ?)", ("apple", 3))
    assert cur.rowcount == 1 and cur.lastrowid == 1
    cur.execute("INSERT INTO items (name, qty) VALUES (:name, :qty)", {"name": "pear", "qty": 5})
    cur.execute("UPDATE items SET qty = qty + 1 WHERE name = ?", ("apple",))
    assert cur.rowcount == 1
    cur.execute("DELETE FROM items WHERE name = 'pear'")
    conn.commit()
    other = connect(servers=[cluster.nodes[2].address])
    assert other.execute("SELECT name, qty FROM items").fetchall() == [("apple", 4)]
    # Followers apply committed entries when the next heartbeat tells them the commit index.
    wait_for(
        lambda: follower_rows(cluster, dbname, "SELECT name, qty FROM items", tmp_path) == [("apple", 4)],
        what="the follower's replica to hold the row",
    )


def test_transactions_commit_and_rollback(connect: Connect) -> None:
    a, b = connect(), connect()
    a.execute("CREATE TABLE t (n INTEGER)")
    a.execute("INSERT INTO t VALUES (1)")
    assert a.in_transaction
    assert b.execute("SELECT count(*) FROM t").fetchone() == (0,)  # not visible before commit
    a.rollback()
    assert not a.in_transaction
    assert b.execute("SELECT count(*) FROM t").fetchone() == (0,)
    with a:  # commits on success
        a.execute("INSERT INTO t VALUES (2)")
    assert b.execute("SELECT n FROM t").fetchall() == [(2,)]
    with pytest.raises(ZeroDivisionError), a:  # rolls back on error
        a.execute("INSERT INTO t VALUES (3)")
        1 / 0  # noqa: B018
    assert b.execute("SELECT n FROM t").fetchall() == [(2,)]
    # Explicit BEGIN/COMMIT statements work too.
    c = a.cursor()
    c.execute("BEGIN")
    c.execute("INSERT INTO t VALUES (4)")
    c.execute("COMMIT")
    assert b.execute("SELECT count(*) FROM t").fetchone() == (2,)


def test_autocommit_mode(connect: Connect) -> None:
    conn = connect(autocommit=True)
    conn.execute("CREATE TABLE t (n INTEGER)")
    conn.execute("INSERT INTO t VALUES (1)")
    assert not conn.in_transaction
    assert connect().execute("SELECT n FROM t").fetchall() == [(1,)]


def test_named_parameters_not_fooled_by_literals_and_comments(connect: Connect) -> None:
    conn = connect(autocommit=True)
    conn.execute("CREATE TABLE t (a TEXT, b TEXT)")
    conn.execute(
        "INSERT INTO t VALUES (:first, /* :ignored */ ':literal' || :second) -- :comment",
        {"first": "x", "second": "y"},
    )
    conn.execute("INSERT INTO t VALUES (:v, :v)", {"v": "same"})  # one name, one index
    rows = conn.execute("SELECT a, b FROM t ORDER BY rowid").fetchall()
    assert rows == [("x", ":literaly"), ("same", "same")]
    with pytest.raises(cowsqlpy.ProgrammingError, match="second"):
        conn.execute("INSERT INTO t VALUES (:first, :second)", {"first": 1})
    with pytest.raises(cowsqlpy.ProgrammingError):
        conn.execute("INSERT INTO t VALUES (?, ?)", (1,))


def test_type_mapping_and_typed_null_quirk(connect: Connect) -> None:
    conn = connect(autocommit=True)
    conn.execute("CREATE TABLE t (i INTEGER, f REAL, s TEXT, b BLOB, n TEXT, flag BOOLEAN, at DATETIME, day DATE)")
    when = dt.datetime(2024, 2, 29, 13, 45, 6, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    values = (-(2**63), 2.5, "héllo ✓", b"\x00\xff" * 4, None, True, when, dt.date(2024, 1, 2))
    conn.execute("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?)", values)
    row = conn.execute("SELECT * FROM t").fetchone()
    assert row[:6] == values[:6]
    assert row[6] == when and row[6].utcoffset() == dt.timedelta(hours=2)
    assert row[7] == dt.datetime(2024, 1, 2)  # a DATE column comes back as a datetime
    # Documented engine quirk: NULL survives in DATETIME columns, becomes False in BOOLEAN ones.
    conn.execute("INSERT INTO t (i) VALUES (1)")
    nulls = conn.execute("SELECT flag, at FROM t WHERE i = 1").fetchone()
    assert nulls == (False, None)


def test_cursor_description_fetch_and_iteration(connect: Connect) -> None:
    conn = connect(autocommit=True)
    cur = conn.cursor()
    cur.execute("CREATE TABLE t (n INTEGER, label TEXT)")
    cur.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"l{i}") for i in range(10)])
    assert cur.rowcount == 10
    cur.execute("SELECT n, label FROM t ORDER BY n")
    assert [d[0] for d in cur.description] == ["n", "label"]
    assert cur.fetchone() == (0, "l0")
    cur.arraysize = 3
    assert cur.fetchmany() == [(1, "l1"), (2, "l2"), (3, "l3")]
    assert cur.fetchmany(2) == [(4, "l4"), (5, "l5")]
    assert list(cur) == [(i, f"l{i}") for i in range(6, 10)]
    assert cur.fetchone() is None and cur.fetchall() == []
    cur.execute("SELECT n FROM t WHERE n < 0")
    assert cur.fetchall() == [] and cur.description == [("n",) + (None,) * 6]
    # WITH, VALUES and PRAGMA return rows; a PRAGMA that sets something does not.
    assert cur.execute("WITH x(v) AS (VALUES (7)) SELECT v * 2 FROM x").fetchall() == [(14,)]
    assert cur.execute("VALUES (1, 'a')").fetchall() == [(1, "a")]
    assert [r[1] for r in cur.execute("PRAGMA table_info(t)")] == ["n", "label"]
    cur.execute("PRAGMA cache_size = 100")
    cur.close()
    with pytest.raises(cowsqlpy.ProgrammingError):
        cur.execute("SELECT 1")


def test_executemany_100k_rows(connect: Connect) -> None:
    conn = connect()
    cur = conn.cursor()
    cur.execute("CREATE TABLE big (id INTEGER PRIMARY KEY, v TEXT)")
    for _ in range(3):
        try:
            cur.executemany("INSERT INTO big (id, v) VALUES (?, ?)", ((i, f"value-{i}") for i in range(100_000)))
            assert cur.rowcount == 100_000
            conn.commit()
            break
        except cowsqlpy.TransactionLostError:
            # The transaction stays open for seconds (5-14 s on a loaded machine), and this
            # cluster elects a new leader after 0.3 s without heartbeats (network_latency
            # 0.02): a starved leader process loses it, and the transaction with it. That is
            # the driver's contract, not a flaw: nothing of it committed, so run it again.
            assert cur.execute("SELECT count(*) FROM big").fetchone() == (0,)
    else:
        pytest.fail("the leader changed during each of three tries")
    assert cur.execute("SELECT count(*), sum(id) FROM big").fetchone() == (100_000, sum(range(100_000)))


def test_executemany_is_atomic(connect: Connect) -> None:
    conn = connect(autocommit=True)
    conn.execute("CREATE TABLE u (k INTEGER PRIMARY KEY)")
    with pytest.raises(cowsqlpy.IntegrityError):
        conn.executemany("INSERT INTO u VALUES (?)", [(1,), (2,), (2,), (3,)])
    assert conn.execute("SELECT count(*) FROM u").fetchone() == (0,)


def test_blob_10mib_round_trip(connect: Connect) -> None:
    conn = connect(autocommit=True)
    conn.execute("CREATE TABLE blobs (b BLOB)")
    blob = bytes(range(256)) * (10 * 1024 * 4)
    assert len(blob) == 10 * 1024 * 1024
    conn.execute("INSERT INTO blobs VALUES (?)", (blob,))
    assert conn.execute("SELECT b FROM blobs").fetchone()[0] == blob


def test_million_row_select_streams_with_bounded_memory(connect: Connect) -> None:
    # The pure-Python codec (test.sh's pass 2) decodes ~5x slower under tracemalloc (a
    # million rows: 80-89 s): 300,000 rows, still ~50 MB if held at once, take ~20 s.
    rows = 1_000_000 if codec.IMPLEMENTATION == "cython" else 300_000
    conn = connect()
    sql = (
        f"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {rows}) "
        "SELECT x, 'row payload padding padding' FROM c"
    )
    cur = conn.cursor()
    tracemalloc.start()
    try:
        cur.execute(sql)
        count = total = 0
        for x, _ in cur:
            count += 1
            total += x
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == rows and total == rows * (rows + 1) // 2
    # Held all at once, a million rows would take well over 100 MB of Python objects.
    assert peak < 16 * 1024 * 1024, f"peak traced memory {peak} bytes"


def test_executescript(connect: Connect) -> None:
    conn = connect()
    conn.executescript("CREATE TABLE s (n INTEGER); INSERT INTO s VALUES (1); INSERT INTO s VALUES (2);")
    assert conn.execute("SELECT sum(n) FROM s").fetchone() == (3,)


def test_errors_map_to_pep249_classes(connect: Connect) -> None:
    conn = connect(autocommit=True)
    conn.execute("CREATE TABLE e (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    conn.execute("INSERT INTO e VALUES (1, 'a')")
    with pytest.raises(cowsqlpy.IntegrityError) as info:
        conn.execute("INSERT INTO e VALUES (1, 'b')")
    assert info.value.code == 1555 and "UNIQUE" in info.value.message
    with pytest.raises(cowsqlpy.IntegrityError):
        conn.execute("INSERT INTO e VALUES (2, NULL)")
    with pytest.raises(cowsqlpy.OperationalError) as info:
        conn.execute("SELEC nonsense")
    assert info.value.code == 1
    with pytest.raises(cowsqlpy.OperationalError, match="no such table"):
        conn.execute("SELECT * FROM missing")
    with pytest.raises(cowsqlpy.ProgrammingError, match="one statement"):
        conn.execute("SELECT 1; SELECT 2")
    with pytest.raises(cowsqlpy.ProgrammingError, match="empty"):
        conn.execute("  -- nothing\n")
    with pytest.raises(cowsqlpy.ProgrammingError, match="unsupported parameter type"):
        conn.execute("SELECT ?", (object(),))
    with pytest.raises(cowsqlpy.DataError, match="NUL"):
        conn.execute("SELECT ?", ("a\0b",))
    with pytest.raises(cowsqlpy.DataError):
        conn.execute("SELECT ?", (2**63,))
    conn.close()
    with pytest.raises(cowsqlpy.ProgrammingError, match="closed"):
        conn.execute("SELECT 1")
    conn.close()  # idempotent


def test_connect_argument_errors() -> None:
    with pytest.raises(cowsqlpy.ProgrammingError):
        cowsqlpy.connect(database="x")
    with pytest.raises(cowsqlpy.ProgrammingError):
        cowsqlpy.connect(["127.0.0.1:1"], database="")


def test_no_leader_error_when_nothing_answers(unused_tcp_address: str) -> None:
    policy = cowsqlpy.RetryPolicy(max_tries=2, deadline=1.0, connect_timeout=0.5, backoff=0.01)
    conn = cowsqlpy.connect([unused_tcp_address], database="x", policy=policy)
    with pytest.raises(cowsqlpy.NoLeaderError):
        conn.execute("SELECT 1")
    conn.close()


@pytest.fixture
def unused_tcp_address() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_busy_from_another_writer_waits_then_raises(connect: Connect) -> None:
    # Connections sharing a policy share one process-wide write lock; a different
    # policy gives an independent core, so its writer meets the engine's BUSY.
    conn = connect()
    conn.execute("CREATE TABLE w (n INTEGER)")
    conn.commit()
    conn.execute("INSERT INTO w VALUES (1)")  # holds the engine's write lock
    other = connect(policy=cowsqlpy.RetryPolicy(busy_timeout=0.3))
    with pytest.raises(cowsqlpy.BusyError) as info:
        other.execute("INSERT INTO w VALUES (2)")
    assert info.value.code & 0xFF == 5
    conn.commit()
    other.rollback()
    other.execute("INSERT INTO w VALUES (3)")  # once the lock is free it goes through
    other.commit()
    assert conn.execute("SELECT n FROM w ORDER BY n").fetchall() == [(1,), (3,)]


def test_failed_queries_return_their_session_once(connect: Connect) -> None:
    """A session handed back twice would be shared by two callers (replies crossed)."""
    from cowsqlpy import aio

    conn = connect(autocommit=True)
    for _ in range(3):
        with pytest.raises(cowsqlpy.OperationalError):
            conn.execute("SELECT * FROM no_such_table")
    db = aio.shared_database(conn._core._key)
    assert len(db._idle) == len({id(s) for s in db._idle}) >= 1
    assert conn.execute("SELECT 7").fetchone() == (7,)
