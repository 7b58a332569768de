"""The first write of an implicit transaction travels with its BEGIN IMMEDIATE in one
request (its values as literals, `sqltext.inline`): what it stores is exactly what a
bound parameter stores, a failed first write leaves the transaction open as in
sqlite3, and values without an exact literal take the two-request path."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cowsqlpy
from cowsqlpy.sqltext import analyze, inline

VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.binary(max_size=40),
    st.text(max_size=24),
)
_keys = itertools.count()


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(a=VALUES, b=VALUES)
def test_first_write_stores_what_binding_stores(
    connect: Callable[..., cowsqlpy.Connection], a: object, b: object
) -> None:
    conn = connect()  # sqlite3's default: BEGIN IMMEDIATE before the first write
    conn.execute("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, a, b)")
    key = next(_keys)
    try:
        conn.execute("INSERT INTO t (k, a, b) VALUES (?, ?, ?)", (2 * key, a, b))
    except cowsqlpy.Error as exc:  # e.g. a NUL in text: the same error on both paths
        conn.rollback()  # frees the process's write lock for the next connection
        with pytest.raises(type(exc)):
            connect(isolation_level=None).execute(
                "INSERT INTO t VALUES (?, ?, ?)", (2 * key + 1, a, b)
            )
        return
    assert conn.in_transaction
    conn.commit()
    auto = connect(isolation_level=None)
    auto.execute("INSERT INTO t (k, a, b) VALUES (?, ?, ?)", (2 * key + 1, a, b))  # bound
    rows = conn.execute(
        "SELECT typeof(a), a, typeof(b), b FROM t WHERE k IN (?, ?) ORDER BY k",
        (2 * key, 2 * key + 1),
    ).fetchall()
    assert rows[0] == rows[1]


def test_named_parameters_and_a_failed_first_write(
    connect: Callable[..., cowsqlpy.Connection],
) -> None:
    conn = connect()
    conn.execute("CREATE TABLE u (k INTEGER PRIMARY KEY, v TEXT, w TEXT)")
    conn.execute("INSERT INTO u VALUES (:k, :v, :v)", {"k": 1, "v": "it's"})
    conn.commit()
    with pytest.raises(cowsqlpy.IntegrityError):
        conn.execute("INSERT INTO u VALUES (?, ?, ?)", (1, "dup", "dup"))
    assert conn.in_transaction  # as in sqlite3: BEGIN ran, the statement failed
    conn.execute("INSERT INTO u VALUES (?, ?, ?)", (2, "b", "b"))
    conn.commit()
    assert conn.execute("SELECT k, v, w FROM u ORDER BY k").fetchall() == [
        (1, "it's", "it's"),
        (2, "b", "b"),
    ]


def test_inline() -> None:
    sql = "INSERT INTO t VALUES (?, '?', ?) /* ? */"
    assert (
        inline(sql, analyze(sql), (-5, "x'y")) == "INSERT INTO t VALUES (-5, '?', 'x''y') /* ? */"
    )
    sql = "UPDATE t SET a = :v, b = :v WHERE k = :k"
    assert inline(sql, analyze(sql), (True, 7)) == "UPDATE t SET a = 1, b = 1 WHERE k = 7"
    for value in (1.5, 2**63, -(2**63), "a\x00b", "x" * 5000):
        assert (
            inline("INSERT INTO t VALUES (?)", analyze("INSERT INTO t VALUES (?)"), (value,))
            is None
        )
    assert inline("INSERT INTO t VALUES (?1)", analyze("INSERT INTO t VALUES (?1)"), (1,)) is None
