"""The client's assumption for an engine it has not identified is the strictest row:
nothing any supported engine cannot take passes (the rows themselves are proven
against real nodes in tests/node/test_engine_guards.py and tests/sql/test_returning_dqlite.py)."""

from __future__ import annotations

import dataclasses

import pytest

import cowsqlpy
from cowsqlpy import versions
from cowsqlpy.aio import check_engine_safe, returning_allowed

ROWS = (versions.DQLITE_1_11, versions.COWSQL_1_15)


def test_every_switch_of_the_undeclared_row_is_on_only_where_every_row_has_it() -> None:
    target = versions.CLIENT_TARGET
    for f in dataclasses.fields(versions.EngineFeatures):
        value = getattr(target, f.name)
        if isinstance(value, bool):
            assert value == all(getattr(r, f.name) for r in ROWS), f.name
    assert target.max_params == min(r.max_params for r in ROWS)
    assert set(target.describe_formats) == set.intersection(*(set(r.describe_formats) for r in ROWS))


@pytest.mark.parametrize("sql", ["PRAGMA synchronous=FULL", "PRAGMA wal_checkpoint",
                                 "PRAGMA journal_mode=DELETE", "PRAGMA page_size=512",
                                 "INSERT INTO t VALUES (1) RETURNING *"])
def test_what_one_engine_cannot_take_is_refused_when_the_engine_is_not_declared(sql: str) -> None:
    crashes_somewhere = [r.name for r in ROWS
                         if _refused(sql, r, wrapped=True)]
    assert crashes_somewhere                     # each statement hurts at least one engine
    assert _refused(sql, versions.CLIENT_TARGET, wrapped=True)


def test_returning_is_allowed_only_in_the_form_a_row_proves() -> None:
    assert returning_allowed(versions.DQLITE_1_11, wrapped=True)
    assert not returning_allowed(versions.DQLITE_1_11, wrapped=False)
    assert not returning_allowed(versions.COWSQL_1_15, wrapped=True)


def _refused(sql: str, row: versions.EngineFeatures, *, wrapped: bool) -> bool:
    try:
        check_engine_safe(sql, row, wrapped=wrapped)
    except cowsqlpy.NotSupportedError:
        return True
    return False
