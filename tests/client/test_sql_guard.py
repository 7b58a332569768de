"""The driver refuses the SQL that kills this engine or reaches outside the database, with
the guard's rules (the front applies the same to every client)."""

from __future__ import annotations

import pytest

import cowsqlpy


@pytest.mark.parametrize("sql", [
    "PRAGMA synchronous=FULL",          # aborts a cowsql 1.15 node
    "PRAGMA wal_checkpoint",            # aborts it too
    "ATTACH 'file:/tmp/x.db?vfs=unix' AS other",
    "VACUUM INTO '/tmp/copy.db'",
    "SELECT load_extension('x')",
])
def test_the_driver_refuses_what_the_guard_refuses(sql: str) -> None:
    conn = cowsqlpy.connect(["127.0.0.1:1"], database="x")  # nothing is dialled before the check
    with pytest.raises(cowsqlpy.NotSupportedError, match="refused"):
        conn.execute(sql)
    conn.close()
