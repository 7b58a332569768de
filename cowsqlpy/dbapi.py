"""PEP 249 driver for a cowsqlpy (dqlite) cluster.

    conn = cowsqlpy.connect(["127.0.0.1:9001", "127.0.0.1:9002"], database="app")

The driver follows the leader: statements go to whichever node leads now, and
requests that failed before anything was applied are retried there under a
`RetryPolicy`. Departures from PEP 249 and from `sqlite3` are listed in
docs/dbapi.md; the main ones:

* Transactions follow `sqlite3`'s classic rule: with ``autocommit=False`` (the
  default) a transaction opens before the first INSERT/UPDATE/DELETE/REPLACE
  and lasts until `commit()`/`rollback()`; reads and DDL outside one run on
  their own. With ``autocommit=True`` every statement commits at once.
* `executemany()` is atomic: all parameter sets apply or none.
* Engine quirk: a NULL in a column declared DATETIME/DATE/TIMESTAMP comes back
  as None (the engine sends it as an empty ISO8601 string), but a NULL in a
  BOOLEAN column comes back as False (dqlite#882).
* `INSERT/UPDATE/DELETE ... RETURNING` raises NotSupportedError: it crashes
  libdqlite 1.11.1.
"""

from __future__ import annotations

import datetime as _dt
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from ._loop import call_soon, run_sync, shutting_down
from .client import as_store
from .database import SESSION_GONE, Database, ResultStream
from .errors import (
    DatabaseError,
    DataError,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    OutcomeUnknownError,
    ProgrammingError,
    TransactionLostError,
    Warning,
)
from .retry import DEFAULT_POLICY, RetryPolicy
from .sqltext import Statement, analyze, bind
from .store import NodeStore
from .versions import CLIENT_TARGET

apilevel = "2.0"
threadsafety = 1  # threads may share the module, not connections
paramstyle = "qmark"  # named (:name) is accepted too

# -- Types and constructors (PEP 249) ---------------------------------------------------

Date = _dt.date
Time = _dt.time
Timestamp = _dt.datetime
Binary = bytes


def DateFromTicks(ticks: float) -> _dt.date:  # noqa: N802 - PEP 249 name
    return _dt.date.fromtimestamp(ticks)


def TimeFromTicks(ticks: float) -> _dt.time:  # noqa: N802
    return _dt.datetime.fromtimestamp(ticks).time()


def TimestampFromTicks(ticks: float) -> _dt.datetime:  # noqa: N802
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


# -- Shared databases -----------------------------------------------------------------

_registry_lock = threading.Lock()
_registry: dict[tuple[Any, ...], tuple[Database, int]] = {}


def _store_key(store: NodeStore, explicit: bool) -> object:
    if explicit:
        return id(store)
    return tuple(sorted(n.address for n in store.get()))


def _acquire_database(store: NodeStore, explicit_store: bool, name: str, policy: RetryPolicy, group_commit: bool) -> tuple[tuple[Any, ...], Database]:
    """Connections of this process to the same database share one `Database` core,
    so its write lock and group commit cover all of them."""
    key = (_store_key(store, explicit_store), name, policy, group_commit)
    with _registry_lock:
        db, refs = _registry.get(key, (None, 0))
        if db is None:

            async def make() -> Database:
                return Database(store, name, policy, group_commit=group_commit)

            db = run_sync(make())
        _registry[key] = (db, refs + 1)
        return key, db


def _release_database(key: tuple[Any, ...], *, wait: bool = True) -> None:
    with _registry_lock:
        db, refs = _registry[key]
        if refs > 1:
            _registry[key] = (db, refs - 1)
            return
        del _registry[key]
    if wait:
        run_sync(db.close())
    else:
        call_soon(db.close)


def connect(
    servers: Iterable[str] | str | None = None,
    *,
    store: NodeStore | None = None,
    database: str,
    autocommit: bool = False,
    policy: RetryPolicy = DEFAULT_POLICY,
    group_commit: bool = True,
) -> Connection:
    """Open a DB-API connection to `database` on the cluster reached through `servers`
    (addresses) or `store` (a node store).

    Nothing is dialled until the first statement; errors surface there.

    :raises ProgrammingError: neither or both of `servers` and `store`, bad database name.
    """
    if (servers is None) == (store is None):
        raise ProgrammingError("pass either servers=[addresses] or store=NodeStore, not both or neither")
    if not isinstance(database, str) or not database or "\0" in database:
        raise ProgrammingError(f"database must be a non-empty str without NUL, got {database!r}")
    node_store = store if store is not None else as_store(servers)  # type: ignore[arg-type]
    if not node_store.get():
        raise ProgrammingError("no server addresses given")
    key, db = _acquire_database(node_store, store is not None, database, policy, group_commit)
    return Connection(db, key, autocommit=autocommit)


class Connection:
    """A PEP 249 connection. Not thread-safe: one per thread."""

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

    def __init__(self, db: Database, key: tuple[Any, ...], *, autocommit: bool) -> None:
        self._db = db
        self._key = key
        self._autocommit = autocommit
        self._tx: Any = None  # the Session of the open transaction
        self._active: ResultStream | None = None  # a result still streaming on the tx session
        self._closed = False

    # -- properties -----------------------------------------------------------

    @property
    def database(self) -> str:
        return self._db.name

    @property
    def in_transaction(self) -> bool:
        return self._tx is not None

    @property
    def autocommit(self) -> bool:
        return self._autocommit

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        self._check_open()
        if value and self._tx is not None:
            self.commit()  # as sqlite3 does when autocommit is switched on
        self._autocommit = bool(value)

    def _check_open(self) -> None:
        if self._closed:
            raise ProgrammingError("cannot operate on a closed connection")

    # -- PEP 249 ----------------------------------------------------------------

    def cursor(self) -> Cursor:
        self._check_open()
        return Cursor(self)

    def commit(self) -> None:
        self._check_open()
        run_sync(self._commit())

    def rollback(self) -> None:
        self._check_open()
        run_sync(self._rollback())

    def close(self) -> None:
        """Roll back an open transaction and release everything. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if shutting_down():  # the loop is gone; the server rolls back when our sockets close
            return
        try:
            run_sync(self._rollback())
        finally:
            _release_database(self._key)

    def execute(self, sql: str, parameters: Sequence[Any] | Mapping[str, Any] = ()) -> Cursor:
        """Shortcut (as in sqlite3): a new cursor that executed `sql`."""
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, seq_of_parameters: Iterable[Sequence[Any] | Mapping[str, Any]]) -> Cursor:
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

    def __del__(self) -> None:
        # Never block in a finalizer: hand the clean-up to the loop.
        if not getattr(self, "_closed", True):
            self._closed = True
            call_soon(self._rollback)
            _release_database(self._key, wait=False)

    # -- async internals (run on the background loop) -------------------------------

    async def _settle(self) -> None:
        """Buffer a result still streaming on the transaction's session."""
        if self._active is not None:
            active, self._active = self._active, None
            if not active.finished:
                await active.materialize()

    async def _begin(self, sql: str | None = None) -> None:
        self._tx = await self._db.begin(sql) if sql else await self._db.begin()

    async def _commit(self) -> None:
        if self._tx is None:
            return
        await self._settle()
        try:
            await self._db.commit(self._tx)
        except (OutcomeUnknownError, TransactionLostError):
            self._tx = None
            raise
        # Any other error (a deferred constraint) leaves the transaction open for rollback.
        self._tx = None

    async def _rollback(self) -> None:
        if self._tx is None:
            return
        await self._settle()
        session, self._tx = self._tx, None
        await self._db.rollback(session)

    def _lose_tx(self, exc: BaseException) -> TransactionLostError:
        session, self._tx = self._tx, None
        self._active = None
        self._db.lose(session, exc)
        return TransactionLostError(f"transaction lost, nothing of it was committed ({exc}); run it again")

    async def _tx_control(self, stmt: Statement, sql: str) -> tuple[int, int]:
        if stmt.verb == "BEGIN":
            if self._tx is not None:
                raise ProgrammingError("cannot start a transaction within a transaction")
            await self._begin(sql)
            return 0, 0
        if stmt.verb in ("COMMIT", "END"):
            await self._commit()
            return 0, 0
        if stmt.verb == "ROLLBACK" and "TO" not in stmt.head:
            await self._rollback()
            return 0, 0
        if self._tx is None and stmt.verb == "SAVEPOINT":
            await self._begin()
        if self._tx is None:
            raise ProgrammingError(f"{stmt.verb} outside a transaction")
        return await self._tx_exec(sql, ())

    async def _tx_exec(self, sql: str, values: Sequence[Any]) -> tuple[int, int]:
        try:
            result: tuple[int, int] = await self._tx.exec_sql(sql, values)
            return result
        except SESSION_GONE as exc:
            raise self._lose_tx(exc) from exc

    async def _execute(self, cursor: Cursor, sql: str, parameters: object) -> None:
        stmt = _check_single(sql)
        values = bind(stmt, parameters)
        await self._settle()
        if stmt.is_tx_control:
            cursor._set_result(await self._tx_control(stmt, sql))
            return
        if self._tx is None and not self._autocommit and stmt.is_write:
            await self._begin()
        if self._tx is not None:
            if stmt.returns_rows is False:
                cursor._set_result(await self._tx_exec(sql, values))
                return
            stream = ResultStream(self._tx.query_sql(sql, values), self._tx, None)
            try:
                await stream.start()
            except SESSION_GONE as exc:
                raise self._lose_tx(exc) from exc
            except OperationalError as exc:
                if stmt.returns_rows is None and exc.code == 1:  # a PRAGMA with no result columns
                    cursor._set_result(await self._tx_exec(sql, values))
                    return
                raise
            self._active = stream
            cursor._set_stream(stream)
            return
        if stmt.returns_rows is False:
            coalesce = stmt.is_write and not stmt.rollback_clause
            cursor._set_result(await self._db.execute(sql, values, coalesce=coalesce))
            return
        try:
            cursor._set_stream(await self._db.query(sql, values))
        except OperationalError as exc:
            if stmt.returns_rows is None and exc.code == 1:
                cursor._set_result(await self._db.execute(sql, values, coalesce=False))
                return
            raise

    async def _executemany(self, cursor: Cursor, sql: str, seq: Sequence[Sequence[Any]]) -> None:
        await self._settle()
        if not seq:
            cursor._set_result((0, 0))
            return
        own = self._tx is None
        if own:
            await self._begin()
        try:
            total = await self._db.executemany(self._tx, sql, seq)
        except SESSION_GONE as exc:
            raise self._lose_tx(exc) from exc
        except BaseException:
            if own and self._autocommit:
                await self._rollback()
            raise
        if own and self._autocommit:
            await self._commit()
        cursor._set_result((0, total))

    async def _executescript(self, cursor: Cursor, sql: str) -> None:
        await self._commit()  # as sqlite3: a pending transaction is committed first
        cursor._set_result(await self._db.execute_script(sql))


def _check_single(sql: str) -> Statement:
    if not isinstance(sql, str):
        raise ProgrammingError(f"sql must be str, not {type(sql).__name__}")
    stmt = analyze(sql)
    if stmt.statements == 0:
        raise ProgrammingError("empty statement")
    if stmt.statements > 1:
        raise ProgrammingError("you can only execute one statement at a time (use executescript for scripts)")
    _check_returning(stmt)
    return stmt


def _check_returning(stmt: Statement) -> None:
    if stmt.returning and not CLIENT_TARGET.returning:
        raise NotSupportedError(
            "RETURNING is refused: libdqlite 1.11.1 aborts the node on the next write after a "
            "RETURNING statement (go-dqlite#192); run a SELECT after the write instead"
        )


class Cursor:
    """A PEP 249 cursor; results are read from the server page by page."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.arraysize = 1
        self.description: list[tuple[str, None, None, None, None, None, None]] | None = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: list[tuple[Any, ...]] = []
        self._pos = 0
        self._stream: ResultStream | None = None
        self._closed = False

    # -- results ----------------------------------------------------------------

    def _reset(self) -> None:
        self._close_stream()
        self.description = None
        self.rowcount = -1
        self._rows, self._pos = [], 0

    def _set_result(self, result: tuple[int, int]) -> None:
        self.lastrowid, self.rowcount = result

    def _set_stream(self, stream: ResultStream) -> None:
        self._stream = stream
        self.description = [(c, None, None, None, None, None, None) for c in stream.columns]

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None and not stream.finished:
            run_sync(stream.aclose())

    def _fill(self) -> bool:
        """Load the next page of rows; False at the end."""
        while self._stream is not None:
            batch = run_sync(self._stream.next_batch())
            if batch is None:
                self._stream = None
                return False
            if batch:
                self._rows, self._pos = batch, 0
                return True
        return False

    # -- PEP 249 ----------------------------------------------------------------

    def _check(self) -> None:
        if self._closed:
            raise ProgrammingError("cannot operate on a closed cursor")
        self.connection._check_open()

    def execute(self, sql: str, parameters: Sequence[Any] | Mapping[str, Any] = ()) -> Cursor:
        """Run one statement. Named (:name) and qmark (?) parameters are accepted.

        :raises ProgrammingError: bad SQL or parameters; NotSupportedError: RETURNING;
            OperationalError subclasses: cluster trouble (see cowsqlpy.errors).
        """
        self._check()
        self._reset()
        run_sync(self.connection._execute(self, sql, parameters))
        return self

    def executemany(self, sql: str, seq_of_parameters: Iterable[Sequence[Any] | Mapping[str, Any]]) -> Cursor:
        """Run one DML statement for every parameter set, atomically and pipelined."""
        self._check()
        self._reset()
        stmt = _check_single(sql)
        if stmt.returns_rows is not False or stmt.is_tx_control:
            raise ProgrammingError("executemany() can only run DML statements")
        seq = [bind(stmt, p) for p in seq_of_parameters]
        run_sync(self.connection._executemany(self, sql, seq))
        return self

    def executescript(self, sql: str) -> Cursor:
        """Run several statements (no parameters), each committed as it runs."""
        self._check()
        self._reset()
        if not isinstance(sql, str):
            raise ProgrammingError(f"sql must be str, not {type(sql).__name__}")
        _check_returning(analyze(sql))
        run_sync(self.connection._executescript(self, sql))
        return self

    def fetchone(self) -> tuple[Any, ...] | None:
        self._check()
        if self._pos >= len(self._rows) and not self._fill():
            return None
        row = self._rows[self._pos]
        self._pos += 1
        return row

    def fetchmany(self, size: int | None = None) -> list[tuple[Any, ...]]:
        self._check()
        want = self.arraysize if size is None else size
        out: list[tuple[Any, ...]] = []
        while len(out) < want:
            if self._pos >= len(self._rows) and not self._fill():
                break
            take = self._rows[self._pos : self._pos + want - len(out)]
            self._pos += len(take)
            out.extend(take)
        return out

    def fetchall(self) -> list[tuple[Any, ...]]:
        self._check()
        out = self._rows[self._pos :]
        self._rows, self._pos = [], 0
        while self._fill():
            out.extend(self._rows)
            self._rows, self._pos = [], 0
        return out

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return self

    def __next__(self) -> tuple[Any, ...]:
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row

    def close(self) -> None:
        if not self._closed:
            self._close_stream()
            self._closed = True

    def setinputsizes(self, sizes: object) -> None:
        pass

    def setoutputsize(self, size: object, column: object = None) -> None:
        pass

    def __enter__(self) -> Cursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        stream = getattr(self, "_stream", None)
        if stream is not None and not stream.finished:
            # Abandoned mid-result: let the loop discard the rest and pool the session.
            call_soon(stream.aclose)


__all__ = [
    "apilevel", "threadsafety", "paramstyle", "connect", "Connection", "Cursor",
    "Date", "Time", "Timestamp", "DateFromTicks", "TimeFromTicks", "TimestampFromTicks", "Binary",
    "STRING", "BINARY", "NUMBER", "DATETIME", "ROWID",
    "Warning", "Error", "InterfaceError", "DatabaseError", "DataError", "OperationalError",
    "IntegrityError", "InternalError", "ProgrammingError", "NotSupportedError",
]
