"""``cowsql+aio://``: the dialect over `cowsqlpy.aio`, for `create_async_engine`.

SQLAlchemy runs its sync core in a greenlet and awaits the driver's coroutines
on the caller's loop; everything else is the ``cowsql://`` dialect.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import pool
from sqlalchemy.connectors.asyncio import (
    AsyncAdapt_dbapi_connection,
    AsyncAdapt_dbapi_cursor,
    AsyncAdapt_dbapi_module,
    AsyncAdapt_dbapi_ss_cursor,
)
from sqlalchemy.dialects.sqlite.base import SQLiteExecutionContext
from sqlalchemy.engine import URL
from sqlalchemy.util.concurrency import await_

from .. import aio as cowsql_aio
from .. import dbapi as cowsql_dbapi
from ..versions import EngineFeatures
from .dialect import CowsqlDialect, _dbapi_module


class AsyncAdapt_cowsql_cursor(AsyncAdapt_dbapi_cursor):  # SQLAlchemy's naming
    __slots__ = ()


class AsyncAdapt_cowsql_ss_cursor(AsyncAdapt_dbapi_ss_cursor):
    """A server-side cursor: rows stream page by page (``stream_results``)."""

    __slots__ = ()


class AsyncAdapt_cowsql_connection(AsyncAdapt_dbapi_connection):
    __slots__ = ()

    _cursor_cls = AsyncAdapt_cowsql_cursor
    _ss_cursor_cls = AsyncAdapt_cowsql_ss_cursor
    _connection: cowsql_aio.Connection  # type: ignore[assignment]

    @property
    def features(self) -> EngineFeatures:
        return self._connection.features

    def identify_engine(self) -> EngineFeatures:
        return await_(self._connection.identify_engine())

    @property
    def isolation_level(self) -> str | None:
        return self._connection.isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        try:
            await_(self._connection.set_isolation_level(value))
        except Exception as error:
            self._handle_exception(error)


class CowsqlAioDBAPI(AsyncAdapt_dbapi_module):
    """`cowsqlpy.aio` as the DB-API module SQLAlchemy's adapters expect."""

    def __init__(self) -> None:
        sync = _dbapi_module()
        super().__init__(cowsql_aio, dbapi_module=sync)
        for name in (*cowsql_dbapi.__all__, "sqlite_version_info", "sqlite_version"):
            if name != "connect":  # ours, below: the asyncio driver's
                setattr(self, name, getattr(sync, name))

    def connect(self, *args: Any, **kw: Any) -> AsyncAdapt_cowsql_connection:
        return AsyncAdapt_cowsql_connection(self, await_(cowsql_aio.connect(*args, **kw)))  # type: ignore[arg-type]


class SQLiteExecutionContext_cowsql_aio(SQLiteExecutionContext):
    def create_server_side_cursor(self) -> Any:
        return self._dbapi_connection.cursor(server_side=True)


class CowsqlAioDialect(CowsqlDialect):
    """``cowsql+aio://``."""

    driver = "cowsql_aio"
    is_async = True
    supports_statement_cache = True
    supports_server_side_cursors = True
    execution_ctx_cls = SQLiteExecutionContext_cowsql_aio

    @classmethod
    def import_dbapi(cls) -> Any:
        return CowsqlAioDBAPI()

    @classmethod
    def get_pool_class(cls, url: URL) -> type[pool.Pool]:
        return pool.AsyncAdaptedQueuePool

    def get_driver_connection(self, connection: Any) -> Any:
        return connection._connection


dialect = CowsqlAioDialect
