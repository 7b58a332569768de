"""pytest plugin for SQLAlchemy's compliance suite against cowsql (loaded with
``-p tests.sql.suite.plugin`` by tests/sql/test_compliance.py, never by the main run)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.dialects import registry

# The suite names drivers as backend+driver ("cowsql+cowsql" for cowsql://).
for name in ("cowsql", "cowsql.cowsql"):
    registry.register(name, "cowsqlpy.sqlalchemy.dialect", "CowsqlDialect")
for name in ("cowsql.aio", "cowsql.cowsql_aio"):
    registry.register(name, "cowsqlpy.sqlalchemy.aio", "CowsqlAioDialect")
pytest.register_assert_rewrite("sqlalchemy.testing.assertions")

from sqlalchemy.testing.plugin.pytestplugin import *  # noqa: E402,F403 - SQLAlchemy's hooks
from sqlalchemy.testing.provision import temp_table_keyword_args  # noqa: E402


@temp_table_keyword_args.for_db("cowsql")
def _temp_table_keyword_args(cfg: Any, eng: Any) -> dict[str, Any]:
    return {"prefixes": ["TEMPORARY"]}
