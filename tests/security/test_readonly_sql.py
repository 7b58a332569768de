"""The read-only classifier (`guard.read_only_reason`) never lets a writing statement
through: statements from a small SQL grammar (reads and writes, keywords hidden in
literals, comments and quoted names, EXPLAIN, several statements in one text) run on a
local sqlite3 database, and whatever the classifier passes must leave it unchanged."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cowsqlpy.guard import read_only_reason

SCHEMA = """
CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT);
CREATE TABLE u (a, b);
CREATE INDEX tv ON t (v);
CREATE VIEW w AS SELECT k FROM t;
INSERT INTO t VALUES (1, 'one'), (2, 'two');
INSERT INTO u VALUES ('x', 1);
"""

# Fragments that may hide a keyword from a naive scanner but not from SQLite.
NOISE = st.sampled_from(
    [
        " ",
        "\n",
        "\t",
        " /* insert into t values (9, 'c') */ ",
        " -- delete from t\n",
        " /* ; DELETE FROM t; */ ",
    ]
)
VALUE = st.sampled_from(
    [
        "1",
        "'a'",
        "'insert into t values (7, ''s'')'",
        "'; DELETE FROM t; --'",
        "x'00ff'",
        "NULL",
        "k",
        '"v"',
        "[v]",
        "`k`",
        "replace(v, 'o', '0')",
        "upper('update')",
        "(SELECT count(*) FROM u)",
        "CASE WHEN k > 1 THEN 'end' ELSE v END",
        "abs(-3)",
        "randomblob(2)",
        "changes()",
        "last_insert_rowid()",
    ]
)


@st.composite
def select(draw: st.DrawFn) -> str:
    cols = ", ".join(draw(st.lists(VALUE, min_size=1, max_size=3)))
    source = draw(st.sampled_from(["t", "w", "u", "(SELECT * FROM t)", "pragma_table_info('t')"]))
    where = draw(st.sampled_from(["", " WHERE k = 1", " WHERE v LIKE '%o%'", " LIMIT 1"]))
    core = f"SELECT {cols} FROM {source}{where}"  # a name the source lacks: an error, no write
    form = draw(st.sampled_from(["plain", "values", "cte", "union"]))
    if form == "values":
        return f"VALUES ({draw(VALUE)})"
    if form == "cte":
        return f"WITH c(x) AS (SELECT k FROM t) {core}"
    if form == "union":
        return f"{core} UNION ALL {core}"
    return core


# Writes whose effect the oracle (`_writes`) sees ...
WRITE_SQL = [
    "INSERT INTO t (v) VALUES ('n')",
    "INSERT OR REPLACE INTO t VALUES (1, 'r')",
    "REPLACE INTO t VALUES (2, 'r')",
    "UPDATE t SET v = 'u'",
    "DELETE FROM t WHERE k = 1",
    "INSERT INTO t (v) VALUES ('r') RETURNING k",
    "INSERT INTO t VALUES (1, 'c') ON CONFLICT (k) DO UPDATE SET v = 'up'",
    "WITH c(x) AS (SELECT 5) INSERT INTO t SELECT x, 'cte' FROM c",
    "WITH c AS (SELECT 1) DELETE FROM t",
    "CREATE TABLE z (a)",
    "CREATE TEMP TABLE z (a)",
    "CREATE VIEW z AS SELECT 1",
    "CREATE INDEX z ON u (a)",
    "CREATE TRIGGER z AFTER INSERT ON t BEGIN DELETE FROM u; END",
    "DROP TABLE u",
    "DROP VIEW w",
    "DROP INDEX tv",
    "ALTER TABLE u ADD COLUMN c",
    "ALTER TABLE u RENAME TO uu",
    "PRAGMA user_version = 3",
    "PRAGMA user_version(4)",
    "PRAGMA application_id = 5",
    "PRAGMA main.user_version = 6",
    "ANALYZE",
    "BEGIN",
    "BEGIN IMMEDIATE",
    "SAVEPOINT s",
]
# ... and statements that rewrite storage or write nothing on an in-memory copy, refused
# all the same.
REFUSED_SQL = [
    "PRAGMA optimize",
    "VACUUM",
    "REINDEX",
    "EXPLAIN INSERT INTO t VALUES (8, 'e')",
    "COMMIT",
    "RELEASE s",
    "ROLLBACK TO s",
]
WRITES = st.sampled_from(WRITE_SQL + REFUSED_SQL)
READ_PRAGMAS = st.sampled_from(
    [
        "PRAGMA user_version",
        "PRAGMA table_info(t)",
        "PRAGMA main.table_info('u')",
        "PRAGMA index_list(t)",
        "PRAGMA integrity_check",
        "PRAGMA journal_mode",
        "PRAGMA page_size",
        "PRAGMA foreign_keys",
        "ROLLBACK",
    ]
)


@st.composite
def statement(draw: st.DrawFn) -> str:
    sql = draw(st.one_of(select(), WRITES, READ_PRAGMAS))
    if draw(st.booleans()):
        sql = draw(st.sampled_from(["", "EXPLAIN ", "EXPLAIN QUERY PLAN "])) + sql
    if draw(st.booleans()):
        sql = "".join(c.upper() if draw(st.booleans()) else c.lower() for c in sql[:40]) + sql[40:]
    return draw(NOISE) + sql + draw(NOISE)


def script() -> st.SearchStrategy[str]:
    return st.lists(statement(), min_size=1, max_size=3).map(";".join)


def _snapshot(conn: sqlite3.Connection) -> tuple[object, ...]:
    return (
        list(conn.iterdump()),
        conn.execute("PRAGMA user_version").fetchone(),
        conn.execute("PRAGMA application_id").fetchone(),
        conn.execute("SELECT count(*) FROM sqlite_temp_master").fetchone(),
        conn.execute("SELECT count(*) FROM sqlite_stat1").fetchone()
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone()
        else None,
    )


def _writes(sql: str) -> bool:
    """Whether running `sql` on a fresh copy of the schema changes it (or leaves a
    transaction open)."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        conn.executescript(SCHEMA)
        before = _snapshot(conn)
        changes = conn.total_changes
        try:
            conn.executescript(sql)
        except sqlite3.Error:
            pass  # statements before the failing one did run: compare all the same
        return conn.in_transaction or conn.total_changes != changes or _snapshot(conn) != before
    finally:
        conn.close()


@settings(max_examples=400, deadline=None)
@given(sql=script())
def test_what_the_classifier_passes_never_writes(sql: str) -> None:
    if read_only_reason(sql) is None:
        assert not _writes(sql), sql


@pytest.mark.parametrize("sql", WRITE_SQL)
def test_the_grammars_writes_write_and_are_refused(sql: str) -> None:
    """The grammar's writes really write (so the property above can fail), and are refused."""
    assert _writes(sql), sql
    assert read_only_reason(sql) is not None


@pytest.mark.parametrize("sql", REFUSED_SQL)
def test_statements_that_are_no_reads_are_refused(sql: str) -> None:
    assert read_only_reason(sql) is not None


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT k, v FROM t",
        "select replace(v, 'o', '0') from t",
        "WITH c(x) AS (SELECT k FROM t) SELECT x FROM c",
        "VALUES (1), (2)",
        "SELECT 'insert into t' /* delete */ -- update",
        'SELECT "update", [delete] FROM (SELECT 1 AS "update", 2 AS [delete])',
        "EXPLAIN QUERY PLAN SELECT * FROM t",
        "PRAGMA table_info(t)",
        "PRAGMA user_version",
        "SELECT * FROM pragma_index_list('t')",
        "ROLLBACK",
        "SELECT 1; SELECT 2",
    ],
)
def test_reads_pass(sql: str) -> None:
    assert read_only_reason(sql) is None
    assert not _writes(sql)
