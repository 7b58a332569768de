"""SQLAlchemy 2 dialect for cowsqlpy, on SQLAlchemy's SQLite dialect (see docs/sqlalchemy.md).

    engine = create_engine("cowsql://127.0.0.1:9001/app?server=127.0.0.1:9002&deadline=10")

The SQL is SQLite's, so the dialect's name is "sqlite" (``sqlite_*`` table and
index options, Alembic's SQLite support and ``with_variant(..., "sqlite")``
apply); the driver is cowsqlpy's DB-API driver, and what differs is here:
servers and retry options from the URL, isolation levels without PRAGMAs (a
DB-API connection runs on pooled engine sessions, where a PRAGMA would not
stick), the engine's DATETIME/DATE values (already `datetime` objects), the
driver's internal tables kept out of reflection, RETURNING as the engine's row
in `cowsqlpy.versions` allows it.
"""

from __future__ import annotations

import datetime as dt
import types
from collections.abc import Callable
from typing import Any

from sqlalchemy import exc, pool
from sqlalchemy import types as sqltypes
from sqlalchemy.dialects.sqlite import DATE, DATETIME
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import URL, Connection
from sqlalchemy.engine.interfaces import IsolationLevel

from .. import dbapi as cowsql_dbapi
from ..aio import returning_allowed
from ..database import MARKERS
from ..retry import RetryPolicy

#: The App's own replicated database (cowsqlpy.app.INTERNAL_DATABASE): not for applications.
INTERNAL_DATABASE = "__cowsqlpy__"
#: Tables the driver keeps in every database it writes (hidden from reflection).
INTERNAL_TABLES = frozenset({MARKERS})

# URL query options -> how to read them. RetryPolicy's fields, then the driver's own.
_POLICY_FIELDS: dict[str, Callable[[str], Any]] = {
    "max_tries": int,
    "backoff": float,
    "backoff_cap": float,
    "deadline": float,
    "attempt_timeout": float,
    "connect_timeout": float,
    "busy_timeout": float,
    "busy_backoff": float,
}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _flag(name: str, text: str) -> bool:
    low = text.lower()
    if low in _TRUE | _FALSE:
        return low in _TRUE
    raise exc.ArgumentError(f"cowsql URL option {name}={text!r}: expected true or false")


def _single(name: str, value: str | tuple[str, ...]) -> str:
    if isinstance(value, tuple):
        raise exc.ArgumentError(f"cowsql URL option {name} given more than once")
    return value


def servers_of(url: URL) -> list[str]:
    """Node addresses from the URL's host part and its ``server`` options.

    The host part holds one ``host:port``, or several in brackets
    (``cowsql://[h1:9001,h2:9001]/db``, which SQLAlchemy's URL parser accepts);
    `make_url` also takes them bare (``cowsql://h1:9001,h2:9001/db``).
    """
    servers: list[str] = []
    if url.host:
        if url.port is None and ":" not in url.host:
            raise exc.ArgumentError(f"cowsql URL: {url.host!r} needs a port (host:port)")
        servers += (
            [a.strip() for a in url.host.split(",") if a.strip()]
            if url.port is None
            else [f"{url.host}:{url.port}"]
        )
    extra = url.query.get("server", ())
    servers += [extra] if isinstance(extra, str) else list(extra)
    return servers


def connect_args(url: URL) -> dict[str, Any]:
    """Keyword arguments of `cowsqlpy.connect` / `cowsqlpy.aio.connect` for `url`.

    :raises sqlalchemy.exc.ArgumentError: no server, no database, the internal
        database, an unknown or malformed option.
    """
    if url.username or url.password:
        raise exc.ArgumentError("cowsql URL: the engine has no users; leave user:password out")
    servers = servers_of(url)
    if not servers:
        raise exc.ArgumentError("cowsql URL needs at least one server: cowsql://host:port/database")
    if not url.database:
        raise exc.ArgumentError("cowsql URL needs a database name: cowsql://host:port/database")
    if url.database == INTERNAL_DATABASE:
        raise exc.ArgumentError(f"{INTERNAL_DATABASE!r} is cowsqlpy's internal database")
    policy: dict[str, Any] = {}
    kwargs: dict[str, Any] = {"servers": servers, "database": url.database}
    for name, raw in url.query.items():
        if name == "server":
            continue
        value = _single(name, raw)
        if name in _POLICY_FIELDS:
            try:
                policy[name] = _POLICY_FIELDS[name](value)
            except ValueError:
                raise exc.ArgumentError(
                    f"cowsql URL option {name}={value!r}: not a number"
                ) from None
        elif name == "group_commit":
            kwargs["group_commit"] = _flag(name, value)
        elif name in ("engine", "read_consistency"):
            kwargs[name] = value  # checked by the driver (ValueError, which SQLAlchemy passes on)
        else:
            known = ", ".join(["server", *_POLICY_FIELDS, "group_commit", "engine", "read_consistency"])
            raise exc.ArgumentError(f"cowsql URL: unknown option {name!r} (known: {known})")
    if policy:
        kwargs["policy"] = RetryPolicy(**policy)
    return kwargs


def make_url(name: str | URL) -> URL:
    """`sqlalchemy.engine.make_url` that also takes several bare ``host:port``
    (``cowsql://h1:9001,h2:9001/db``), which SQLAlchemy's own parser refuses."""
    from sqlalchemy.engine import make_url as sa_make_url

    if isinstance(name, str):
        scheme, sep, rest = name.partition("://")
        hosts, slash, tail = rest.partition("/")
        if sep and "," in hosts and "@" not in hosts and not hosts.startswith("["):
            name = f"{scheme}://[{hosts}]{slash}{tail}"
    return sa_make_url(name)


# -- Types: the engine returns DATETIME/DATE/TIMESTAMP columns as datetime --------------------


class CowsqlDateTime(DATETIME):
    """SQLite's DATETIME (stored as its text form); read back from the engine's datetime."""

    def result_processor(self, dialect: Any, coltype: object) -> Any:
        parse = super().result_processor(dialect, coltype)

        def process(value: object) -> object:
            if isinstance(value, dt.datetime) or value is None or parse is None:
                return value
            return parse(value)  # text the engine did not parse, or an untyped expression

        return process


class CowsqlDate(DATE):
    def result_processor(self, dialect: Any, coltype: object) -> Any:
        parse = super().result_processor(dialect, coltype)

        def process(value: object) -> object:
            if isinstance(value, dt.datetime):
                return value.date()
            if value is None or parse is None or isinstance(value, dt.date):
                return value
            return parse(value)

        return process


def _dbapi_module() -> types.ModuleType:
    """cowsqlpy.dbapi with the attributes SQLAlchemy's SQLite dialect reads of sqlite3."""
    module = types.ModuleType("cowsqlpy.sqlalchemy.dbapi")
    module.__dict__.update({k: getattr(cowsql_dbapi, k) for k in cowsql_dbapi.__all__})
    # A floor, read before any connection: `initialize` asks the engine for its own.
    module.sqlite_version_info = (3, 35, 0)  # type: ignore[attr-defined]
    module.sqlite_version = "3.35.0"  # type: ignore[attr-defined]
    return module


class CowsqlDialect(SQLiteDialect_pysqlite):
    """``cowsql://``: SQLite's SQL through cowsqlpy's DB-API driver."""

    driver = "cowsql"
    supports_statement_cache = True
    supports_sane_rowcount = True
    supports_sane_multi_rowcount = True  # executemany reports the total
    # Set by `initialize` from the connection's engine row.
    insert_returning = update_returning = delete_returning = False
    update_returning_multifrom = delete_returning_multifrom = False

    colspecs = {
        **SQLiteDialect_pysqlite.colspecs,
        sqltypes.DateTime: CowsqlDateTime,
        sqltypes.TIMESTAMP: CowsqlDateTime,
        sqltypes.Date: CowsqlDate,
    }

    # The engine runs SERIALIZABLE only; AUTOCOMMIT is the driver's isolation_level=None.
    _isolation_lookup = frozenset({"SERIALIZABLE", "AUTOCOMMIT"})

    @classmethod
    def import_dbapi(cls) -> Any:
        return _dbapi_module()

    @classmethod
    def get_pool_class(cls, url: URL) -> type[pool.Pool]:
        return pool.QueuePool

    def create_connect_args(self, url: URL) -> Any:
        return [], connect_args(url)

    def on_connect(self) -> None:  # type: ignore[override]
        # SQLite's registers REGEXP and floor() as Python functions: the engine runs the SQL.
        return None

    def _get_server_version_info(self, connection: Any) -> tuple[int, ...]:
        version = connection.exec_driver_sql("SELECT sqlite_version()").scalar()
        return tuple(int(p) for p in str(version).split(".") if p.isdigit())

    def initialize(self, connection: Connection) -> None:
        super().initialize(connection)
        features = connection.connection.dbapi_connection.identify_engine()  # type: ignore[union-attr]
        returning = returning_allowed(features, wrapped=True) and self.server_version_info >= (3, 35)  # type: ignore[operator]
        self.insert_returning = self.update_returning = self.delete_returning = returning

    def set_isolation_level(self, dbapi_connection: Any, level: IsolationLevel) -> None:
        # IMMEDIATE: the implicit BEGIN before a write takes the engine's lock at once,
        # so BUSY comes where the driver can retry it.
        dbapi_connection.isolation_level = None if level == "AUTOCOMMIT" else "IMMEDIATE"

    def get_isolation_level(self, dbapi_connection: Any) -> IsolationLevel:
        return "SERIALIZABLE"

    def get_isolation_level_values(self, dbapi_connection: Any) -> list[IsolationLevel]:
        return ["SERIALIZABLE", "AUTOCOMMIT"]

    def get_table_names(
        self,
        connection: Connection,
        schema: str | None = None,
        sqlite_include_internal: bool = False,
        **kw: Any,
    ) -> list[str]:
        names = super().get_table_names(
            connection, schema, sqlite_include_internal=sqlite_include_internal, **kw
        )
        if sqlite_include_internal:
            return list(names)
        return [n for n in names if n not in INTERNAL_TABLES]

    def is_disconnect(self, e: Any, connection: Any, cursor: Any) -> bool:
        # The driver reconnects by itself; a closed DB-API connection is the only dead one.
        return False


dialect = CowsqlDialect
