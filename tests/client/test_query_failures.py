"""libdqlite 1.11.1 and cowsql 1.15 answer a query that fails while it runs with a
FAILURE that has the result's column header in front (query__batch encodes the header
before the first step): the client still raises the engine's error, not a
ProtocolError (which it raised before). Run against Canonical's dqlite-demo (Debian
go-dqlite on libdqlite 1.11.1) and against our own engine."""

from __future__ import annotations

import pytest

import cowsqlpy
from tests.app.conftest import Demo
from tests.client.conftest import InProcessCluster

# Each fails at its first step, after the engine has its result columns.
FAILING = [
    ("SELECT abs(-9223372036854775807 - 1) AS a", "integer overflow"),
    ("SELECT json('not json') AS j, 1 AS one", "malformed JSON"),
]


def _check(addresses: list[str], **options: object) -> None:
    conn = cowsqlpy.connect(addresses, database="fails", **options)  # type: ignore[arg-type]
    try:
        for sql, message in FAILING:
            with pytest.raises(cowsqlpy.OperationalError, match=message):
                conn.execute(sql)
        # the session is still good
        assert conn.execute("SELECT 41 + 1").fetchone() == (42,)
    finally:
        conn.close()


def test_failed_query_on_dqlite_1_11(dqlite_demo: Demo) -> None:
    _check([dqlite_demo.db], engine="dqlite-1.11")


def test_failed_query_on_cowsql(cluster: InProcessCluster) -> None:
    _check(cluster.addresses)
