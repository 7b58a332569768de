"""PEP 249 driver for a cowsqlpy (dqlite) cluster.

    conn = cowsqlpy.connect(["127.0.0.1:9001", "127.0.0.1:9002"], database="app")

The driver follows the leader: statements go to whichever node leads now, and
requests that failed before anything was applied are retried there under a
`RetryPolicy`. Departures from PEP 249 and from `sqlite3` are listed in
docs/dbapi.md; the main ones:

* Transactions follow `sqlite3` (Python 3.12): with the default
  ``autocommit=LEGACY_TRANSACTION_CONTROL`` a transaction opens
  (``BEGIN <isolation_level>``, IMMEDIATE by default) before the first
  INSERT/UPDATE/DELETE/REPLACE and lasts until `commit()`/`rollback()`; reads
  and DDL outside one run on their own; ``isolation_level=None`` opens none.
  ``autocommit=True``: every statement commits at once, `commit()` does
  nothing. ``autocommit=False``: always in a transaction (PEP 249).
* `executemany()` is atomic: all parameter sets apply or none.
* Engine quirk: a NULL in a column declared DATETIME/DATE/TIMESTAMP comes back
  as None (the engine sends it as an empty ISO8601 string), but a NULL in a
  BOOLEAN column comes back as False (dqlite#882).
* `INSERT/UPDATE/DELETE ... RETURNING` raises NotSupportedError where the
  engine's row in `cowsqlpy.versions` says it is unsafe (`Connection.features`).

The connection and cursor logic is `cowsqlpy.aio`'s, run on the background loop.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Generator, Iterable, Iterator
from typing import Any

from . import aio
from ._loop import background_loop, run_sync, shutting_down
from .aio import DEFAULT_ISOLATION_LEVEL, LEGACY_TRANSACTION_CONTROL, Description, Params, Row
from .errors import (
    DatabaseError,
    DataError,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
    Warning,  # noqa: A004 - PEP 249 requires the name
)
from .retry import DEFAULT_POLICY, RetryPolicy
from .store import NodeStore
from .tls import TLSConfig
from .versions import EngineFeatures

apilevel = "2.0"
threadsafety = 1  # threads may share the module, not connections
paramstyle = "qmark"  # named (:name) is accepted too

# -- Types and constructors (PEP 249) ---------------------------------------------------

Date = _dt.date
Time = _dt.time
Timestamp = _dt.datetime
Binary = bytes


def DateFromTicks(ticks: float) -> _dt.date:  # PEP 249 name
    return _dt.date.fromtimestamp(ticks)


def TimeFromTicks(ticks: float) -> _dt.time:
    return _dt.datetime.fromtimestamp(ticks).time()


def TimestampFromTicks(ticks: float) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(ticks)


class _TypeObject(frozenset[str]):
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and other.upper() in self

    __hash__ = frozenset.__hash__


STRING = _TypeObject({"TEXT", "VARCHAR", "CHAR", "CLOB"})
BINARY = _TypeObject({"BLOB"})
NUMBER = _TypeObject({"INTEGER", "INT", "REAL", "FLOAT", "DOUBLE", "NUMERIC", "BOOLEAN"})
DATETIME = _TypeObject({"DATETIME", "DATE", "TIMESTAMP"})
ROWID = _TypeObject({"ROWID"})


# -- Connection ---------------------------------------------------------------------


def connect(
    servers: Iterable[str] | str | None = None,
    *,
    store: NodeStore | None = None,
    database: str,
    autocommit: bool | int = LEGACY_TRANSACTION_CONTROL,
    isolation_level: str | None = DEFAULT_ISOLATION_LEVEL,
    policy: RetryPolicy = DEFAULT_POLICY,
    group_commit: bool = True,
    engine: str | None = None,
    read_consistency: str = aio.LINEARIZABLE,
    tls: TLSConfig | None = None,
) -> Connection:
    """Open a DB-API connection to `database` on the cluster reached through `servers`
    (addresses) or `store` (a node store); `tls`: mutual TLS (`cowsqlpy.tls.TLSConfig`).

    Nothing is dialled until the first statement; errors surface there.

    :raises ProgrammingError: neither or both of `servers` and `store`, bad database name.
    :raises ValueError, TypeError: bad `autocommit` or `isolation_level` (as sqlite3),
        unknown `engine`, bad `read_consistency` (see `cowsqlpy.aio.connect`).
    """
    return Connection(
        aio.new_connection(
            None,
            background_loop(),
            servers,
            store,
            database,
            autocommit,
            isolation_level,
            policy,
            group_commit,
            engine,
            read_consistency,
            tls,
        )
    )


def _drive(cursor: aio.Cursor, steps: Generator[None, bool, list[Row]]) -> list[Row]:
    """Run the cursor's sans-IO fetch logic, loading pages on the background loop."""
    try:
        next(steps)
        while True:
            steps.send(run_sync(cursor._fill()))
    except StopIteration as done:
        rows: list[Row] = done.value
        return rows


class Connection:
    """A PEP 249 connection. Not thread-safe: one per thread."""

    __slots__ = ("_core", "_closed", "__weakref__")

    Warning = Warning
    Error = Error
    InterfaceError = InterfaceError
    DatabaseError = DatabaseError
    DataError = DataError
    OperationalError = OperationalError
    IntegrityError = IntegrityError
    InternalError = InternalError
    ProgrammingError = ProgrammingError
    NotSupportedError = NotSupportedError

    def __init__(self, core: aio.Connection) -> None:
        self._core = core
        self._closed = False

    # -- properties -----------------------------------------------------------

    @property
    def database(self) -> str:
        return self._core.database

    @property
    def in_transaction(self) -> bool:
        return self._core.in_transaction

    @property
    def features(self) -> EngineFeatures:
        """The engine switches this connection works under (RETURNING and the like); for
        an undeclared engine `versions.CLIENT_TARGET` until the engine probe identified
        it (`identify_engine`, or a statement that row refuses)."""
        return self._core.features

    def identify_engine(self) -> EngineFeatures:
        """`features`, after the engine probe for an undeclared engine (once per cluster
        and database in this process). :raises OperationalError subclasses: no leader."""
        self._check_open()
        if self._core._identify:
            run_sync(self._core.identify_engine())
        return self._core.features

    @property
    def autocommit(self) -> bool | int:
        """True, False or LEGACY_TRANSACTION_CONTROL, as sqlite3's (Python 3.12)."""
        return self._core.autocommit

    @autocommit.setter
    def autocommit(self, value: bool | int) -> None:
        self._check_open()
        run_sync(self._core.set_autocommit(value))

    @property
    def isolation_level(self) -> str | None:
        """None, "", "DEFERRED", "IMMEDIATE" or "EXCLUSIVE", as sqlite3's."""
        return self._core.isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        self._check_open()
        run_sync(self._core.set_isolation_level(value))

    def _check_open(self) -> None:
        if self._closed:
            raise ProgrammingError("cannot operate on a closed connection")

    # -- PEP 249 ----------------------------------------------------------------

    def cursor(self) -> Cursor:
        self._check_open()
        return Cursor(self)

    def commit(self) -> None:
        self._check_open()
        if self._core.in_transaction:  # nothing to do otherwise: no trip to the loop
            run_sync(self._core.commit())

    def rollback(self) -> None:
        self._check_open()
        if self._core.in_transaction:
            run_sync(self._core.rollback())

    def close(self) -> None:
        """Roll back an open transaction and release everything. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if shutting_down():  # the loop is gone; the server rolls back when our sockets close
            return
        run_sync(self._core.close())

    def execute(self, sql: str, parameters: Params = ()) -> Cursor:
        """Shortcut (as in sqlite3): a new cursor that executed `sql`."""
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, seq_of_parameters: Iterable[Params]) -> Cursor:
        return self.cursor().executemany(sql, seq_of_parameters)

    def executescript(self, sql: str) -> Cursor:
        return self.cursor().executescript(sql)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        """Commit on success, roll back on error (the connection stays open, as in sqlite3)."""
        if self._closed:
            return
        if exc_type is None:
            self.commit()
        else:
            self.rollback()


class Cursor:
    """A PEP 249 cursor; results are read from the server page by page."""

    __slots__ = ("connection", "_cur", "__weakref__")

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._cur = connection._core.cursor()

    # -- attributes -----------------------------------------------------------

    @property
    def description(self) -> Description | None:
        """(name, type_code, None x 5) per column; type_code is the engine's type of
        the column's first non-NULL value in the first page ("INTEGER", "FLOAT",
        "TEXT", "BLOB", "DATETIME", "BOOLEAN"), None when it did not say."""
        return self._cur.description

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cur.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cur.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cur.arraysize = value

    def _run(self, method: Any, *args: Any) -> Cursor:
        self.connection._check_open()
        run_sync(method(*args))
        return self

    # -- PEP 249 ----------------------------------------------------------------

    def execute(self, sql: str, parameters: Params = ()) -> Cursor:
        """Run one statement. Named (:name) and qmark (?) parameters are accepted.

        :raises ProgrammingError: bad SQL or parameters; NotSupportedError: RETURNING
            where the engine cannot take it; OperationalError subclasses: cluster
            trouble (see cowsqlpy.errors).
        """
        return self._run(self._cur.execute, sql, parameters)

    def executemany(self, sql: str, seq_of_parameters: Iterable[Params]) -> Cursor:
        """Run one DML statement for every parameter set, atomically and pipelined."""
        return self._run(self._cur.executemany, sql, seq_of_parameters)

    def executescript(self, sql: str) -> Cursor:
        """Run several statements (no parameters), each committed as it runs."""
        return self._run(self._cur.executescript, sql)

    def fetchone(self) -> Row | None:
        """The next row, None at the end. :raises ProgrammingError: no result set."""
        cur = self._cur
        if cur._pos < len(cur._rows) and cur._has_result and not cur._closed:
            row = cur._rows[cur._pos]  # the common case: no page to load
            cur._pos += 1
            return row
        rows = _drive(cur, cur._fetch(1))
        return rows[0] if rows else None

    def fetchmany(self, size: int | None = None) -> list[Row]:
        cur = self._cur
        return _drive(cur, cur._fetch(cur.arraysize if size is None else size))

    def fetchall(self) -> list[Row]:
        return _drive(self._cur, self._cur._fetch(float("inf")))

    def __iter__(self) -> Iterator[Row]:
        return self

    def __next__(self) -> Row:
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row

    def close(self) -> None:
        if not self._cur._closed:
            if shutting_down() or self._cur._stream is None:  # nothing left on the loop
                self._cur._closed = True
                return
            run_sync(self._cur.close())

    def setinputsizes(self, sizes: object) -> None:
        pass

    def setoutputsize(self, size: object, column: object = None) -> None:
        pass

    def __enter__(self) -> Cursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "apilevel",
    "threadsafety",
    "paramstyle",
    "connect",
    "Connection",
    "Cursor",
    "LEGACY_TRANSACTION_CONTROL",
    "Date",
    "Time",
    "Timestamp",
    "DateFromTicks",
    "TimeFromTicks",
    "TimestampFromTicks",
    "Binary",
    "STRING",
    "BINARY",
    "NUMBER",
    "DATETIME",
    "ROWID",
    "Warning",
    "Error",
    "InterfaceError",
    "DatabaseError",
    "DataError",
    "OperationalError",
    "IntegrityError",
    "InternalError",
    "ProgrammingError",
    "NotSupportedError",
]
