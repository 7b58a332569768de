"""Every PRAGMA the guard lets through, sent straight to an unguarded engine in a child
process: the engine must survive each one and then take a write and a read. This is what
the allow-list (`cowsqlpy.guard.PRAGMA_*`) rests on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cowsqlpy import protocol as P
from cowsqlpy.guard import PRAGMA_INFO, PRAGMA_READ, PRAGMA_SET, check_sql

from .conftest import GuardedNode
from .raw import Raw, frame, text, u64

SET_VALUES = {"optimize": ["", "(0x10002)"], "user_version": [" = 7"], "application_id": [" = 42"]}
STATEMENTS = (
    [f"PRAGMA {name}" for name in sorted(PRAGMA_READ | PRAGMA_INFO)]
    + [
        "PRAGMA table_info(p)",
        "PRAGMA index_list(p)",
        "SELECT * FROM pragma_table_info('p')",
        "PRAGMA foreign_key_check",
        "PRAGMA integrity_check",
    ]
    + [
        f"PRAGMA {name}{value}"
        for name in sorted(PRAGMA_SET)
        for value in SET_VALUES.get(name, [" = 1", " = 0"])
    ]
)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuardedNode]:
    node = GuardedNode(Path(tmp_path_factory.mktemp("pragmas")))
    try:
        yield node
    finally:
        node.close()


@pytest.mark.parametrize("sql", STATEMENTS)
def test_allowed_pragma_does_not_hurt_the_engine(engine: GuardedNode, sql: str) -> None:
    assert check_sql(sql, False) is None  # the guard lets it through
    open_db = frame(P.OPEN, text("pragmas") + u64(0) + text("volatile"))
    with Raw(engine.engine_address) as raw:  # straight to the engine, no front
        assert raw.call(open_db)[0] == P.DB  # type: ignore[index]
        raw.result(
            frame(
                P.EXEC_SQL, u64(0) + text("CREATE TABLE IF NOT EXISTS p (k INTEGER PRIMARY KEY, v)")
            )
        )
        for rtype in (P.QUERY_SQL, P.EXEC_SQL):  # rows or not, either way
            reply = raw.result(frame(rtype, u64(0) + text(sql)))
            assert reply is not None, f"engine closed the connection on {sql!r}"
    # A new connection (per-connection settings such as query_only stay behind) writes and reads.
    with Raw(engine.engine_address) as raw:
        assert raw.call(open_db)[0] == P.DB  # type: ignore[index]
        assert (
            raw.result(frame(P.EXEC_SQL, u64(0) + text("INSERT INTO p (v) VALUES (1)")))[0]
            == P.RESULT
        )  # type: ignore[index]
        assert raw.result(frame(P.QUERY_SQL, u64(0) + text("SELECT count(*) FROM p")))[0] == P.ROWS  # type: ignore[index]
    assert engine.alive(), f"{sql!r} killed the engine:\n{engine.log()}"
