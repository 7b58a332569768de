"""asyncio driver for a cowsqlpy cluster, on the caller's event loop.

    conn = await cowsqlpy.aio.connect(["127.0.0.1:9001", "127.0.0.1:9002"], database="app")
    cur = await conn.execute("SELECT id, name FROM users WHERE id = ?", (1,))
    row = await cur.fetchone()
    async with conn.transaction():
        await conn.execute("INSERT INTO users (name) VALUES (?)", ("ann",))
    await conn.close()

This module is the one implementation of connection and cursor behaviour:
`cowsqlpy.dbapi` (the PEP 249 face) runs these same objects on its background
loop. Both drive `cowsqlpy.database.Database` (pool, leader following, write
lock, group commit, lost-reply resolution); here it runs on the loop that
calls, uvloop or stock asyncio, with no threads.

Transactions follow `sqlite3` (Python 3.12): ``autocommit`` is True, False or
`LEGACY_TRANSACTION_CONTROL` (the default, where ``isolation_level`` decides:
None means no implicit transactions; "DEFERRED", "IMMEDIATE" (our default),
"EXCLUSIVE" or "" open ``BEGIN <level>`` before the first INSERT, UPDATE,
DELETE or REPLACE). Departures are listed in docs/client.md.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import functools
import logging
import threading
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from . import guard, versions
from .client import as_store
from .database import SESSION_GONE, Database, ResultStream
from .errors import (
    Error,
    NotSupportedError,
    OutcomeUnknownError,
    ProgrammingError,
    TransactionLostError,
)
from .retry import DEFAULT_POLICY, RetryPolicy
from .sqltext import Statement, analyze, bind
from .store import NodeStore
from .tls import TLSConfig
from .versions import EngineFeatures

#: ``autocommit`` value of `sqlite3`'s pre-3.12 behaviour, where ``isolation_level`` rules.
LEGACY_TRANSACTION_CONTROL = -1
ISOLATION_LEVELS = ("", "DEFERRED", "IMMEDIATE", "EXCLUSIVE")
DEFAULT_ISOLATION_LEVEL = "IMMEDIATE"  # BUSY then comes at BEGIN, where the driver retries it

Params = Sequence[Any] | Mapping[str, Any]
Row = tuple[Any, ...]
T = TypeVar("T")

log = logging.getLogger("cowsqlpy.aio")


# -- Argument checks shared by both faces ----------------------------------------------------


def check_autocommit(value: object) -> bool | int:
    """:raises ValueError: not True, False or LEGACY_TRANSACTION_CONTROL (as sqlite3)."""
    if value is True or value is False:
        return value
    if type(value) is int and value == LEGACY_TRANSACTION_CONTROL:
        return LEGACY_TRANSACTION_CONTROL
    raise ValueError("autocommit must be True, False, or cowsqlpy.dbapi.LEGACY_TRANSACTION_CONTROL")


def check_isolation_level(value: object) -> str | None:
    """The level upper-cased, as sqlite3 stores it. :raises TypeError, ValueError."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"isolation_level must be str or None, not {type(value).__name__}")
    level = value.upper()
    if level not in ISOLATION_LEVELS:
        raise ValueError(
            "isolation_level string must be '', 'DEFERRED', 'IMMEDIATE', or 'EXCLUSIVE'"
        )
    return level


LINEARIZABLE = "linearizable"
SERIALIZABLE = "serializable"


def check_read_consistency(value: object) -> bool:
    """Whether `connect(read_consistency=value)` asks for linearizable reads.
    :raises ValueError: neither "linearizable" nor "serializable"."""
    if value not in (LINEARIZABLE, SERIALIZABLE):
        raise ValueError(
            f"read_consistency must be {LINEARIZABLE!r} or {SERIALIZABLE!r}, got {value!r}"
        )
    return value == LINEARIZABLE


def engine_features(engine: str | None) -> EngineFeatures:
    """The switches for `connect(engine=...)` (None: until the engine probe has
    identified the server, see `Connection.identify_engine`). :raises ValueError: an unknown name."""
    return versions.CLIENT_TARGET if engine is None else versions.features_named(engine)


def node_store_of(
    servers: Iterable[str] | str | NodeStore | None, store: NodeStore | None, database: object
) -> NodeStore:
    """:raises ProgrammingError: neither or both of `servers` and `store`, no address, bad name."""
    if (servers is None) == (store is None):
        raise ProgrammingError(
            "pass either servers=[addresses] or store=NodeStore, not both or neither"
        )
    if not isinstance(database, str) or not database or "\0" in database:
        raise ProgrammingError(f"database must be a non-empty str without NUL, got {database!r}")
    node_store = store if store is not None else as_store(servers)  # type: ignore[arg-type]
    if not node_store.get():
        raise ProgrammingError("no server addresses given")
    return node_store


def check_single(sql: object, features: EngineFeatures) -> Statement:
    """The analysis of one statement. :raises ProgrammingError, NotSupportedError."""
    if not isinstance(sql, str):
        raise ProgrammingError(f"sql must be str, not {type(sql).__name__}")
    stmt = analyze(sql)
    if stmt.statements == 0:
        raise ProgrammingError("empty statement")
    if stmt.statements > 1:
        raise ProgrammingError(
            "you can only execute one statement at a time (use executescript for scripts)"
        )
    check_returning(stmt, features, wrapped=True)
    check_engine_safe(sql, features, wrapped=True)
    return stmt


@functools.lru_cache(maxsize=4096)
def _refusal(sql: str, returning_safe: bool) -> str | None:
    return guard.check_sql(sql, returning_safe)


def returning_allowed(features: EngineFeatures, wrapped: bool) -> bool:
    """Whether RETURNING may be sent: anywhere, or (``wrapped``: the driver sends it as a
    query inside a transaction it opened and commits with EXEC) where that is proven safe."""
    return features.returning or (wrapped and features.returning_in_transaction)


def check_engine_safe(sql: str, features: EngineFeatures, *, wrapped: bool) -> None:
    """The guard's SQL rules (`cowsqlpy.guard.check_sql`, the same the front applies to
    every client): no ATTACH, VACUUM INTO, extension loading or PRAGMA off the
    allow-list, so our own driver cannot crash a node either. Cached per SQL text.

    :raises NotSupportedError: with the reason.
    """
    reason = _refusal(sql, returning_allowed(features, wrapped))
    if reason is not None:
        raise NotSupportedError(f"refused: {reason} (docs/security.md)")


def _some_row_takes(check: Callable[[EngineFeatures], object]) -> bool:
    """Whether `check` passes under some engine's row (else no probe can lift a refusal)."""
    for row in set(versions.ENGINE_CHOICES.values()):
        try:
            check(row)
        except NotSupportedError:
            continue
        return True
    return False


def _check_script(sql: str, features: EngineFeatures) -> None:
    check_returning(analyze(sql), features, wrapped=False)  # EXEC'd, one by one
    check_engine_safe(sql, features, wrapped=False)


def check_returning(stmt: Statement, features: EngineFeatures, *, wrapped: bool) -> None:
    if stmt.returning and not returning_allowed(features, wrapped):
        how = "in a script" if features.returning_in_transaction else ""
        raise NotSupportedError(
            f"RETURNING is refused {how or 'on ' + features.name}: it aborts the node on the "
            "next write or never gives its rows (go-dqlite#192, docs/sqlalchemy.md); run a "
            "SELECT after the write instead"
        )


_EXACT_TYPES = frozenset({str, int, float, bytes, bool, type(None), _dt.datetime, _dt.date})


def plain_values(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """`values` with str subclasses (StrEnum members, SQLAlchemy's quoted_name) as
    plain str: the Cython codec takes exact str only (the pure one takes both)."""
    for v in values:
        if type(v) not in _EXACT_TYPES:
            return tuple(str.__str__(v) if isinstance(v, str) else v for v in values)
    return values


def _returns_rows(stmt: Statement) -> bool | None:
    if stmt.returning and stmt.is_write:
        return True
    return stmt.returns_rows


# -- Shared databases ---------------------------------------------------------------------------

_registry_lock = threading.Lock()
_registry: dict[tuple[Any, ...], tuple[Database, int]] = {}


def _store_key(store: NodeStore, explicit: bool) -> object:
    if explicit:
        return id(store)
    return tuple(sorted(n.address for n in store.get()))


def acquire_database(
    loop: object,
    store: NodeStore,
    explicit_store: bool,
    name: str,
    policy: RetryPolicy,
    group_commit: bool,
    tls: TLSConfig | None = None,
) -> tuple[tuple[Any, ...], Database]:
    """Connections of one event loop to the same database share one `Database`
    core, so its write lock and group commit cover all of them."""
    key = (loop, _store_key(store, explicit_store), name, policy, group_commit, tls)
    with _registry_lock:
        db, refs = _registry.get(key, (None, 0))
        if db is None:
            db = Database(store, name, policy, group_commit=group_commit, tls=tls)
        _registry[key] = (db, refs + 1)
        return key, db


def release_database(key: tuple[Any, ...]) -> Database | None:
    """Drop one reference; the `Database` to close when it was the last."""
    with _registry_lock:
        db, refs = _registry[key]
        if refs > 1:
            _registry[key] = (db, refs - 1)
            return None
        del _registry[key]
        return db


def shared_database(key: tuple[Any, ...]) -> Database:
    """The core a connection's key names (tests and metrics)."""
    return _registry[key][0]


# -- Connection ----------------------------------------------------------------------------------


def new_connection(
    loop_key: object,
    loop: asyncio.AbstractEventLoop,
    servers: Iterable[str] | str | NodeStore | None,
    store: NodeStore | None,
    database: str,
    autocommit: object,
    isolation_level: object,
    policy: RetryPolicy,
    group_commit: bool,
    engine: str | None,
    read_consistency: str,
    tls: TLSConfig | None,
) -> Connection:
    """Check `connect`'s arguments and make a connection run by `loop` (nothing is
    dialled), on the `Database` core shared under `loop_key`: both faces' `connect`."""
    mode = check_autocommit(autocommit)
    level = check_isolation_level(isolation_level)
    features = engine_features(engine)
    linearizable = check_read_consistency(read_consistency)
    node_store = node_store_of(servers, store, database)
    key, db = acquire_database(
        loop_key, node_store, store is not None, database, policy, group_commit, tls
    )
    return Connection(
        db,
        key,
        loop,
        autocommit=mode,
        isolation_level=level,
        features=features,
        linearizable=linearizable,
        identify=engine is None,
    )


async def connect(
    servers: Iterable[str] | str | NodeStore | None = None,
    *,
    store: NodeStore | None = None,
    database: str,
    autocommit: bool | int = LEGACY_TRANSACTION_CONTROL,
    isolation_level: str | None = DEFAULT_ISOLATION_LEVEL,
    policy: RetryPolicy = DEFAULT_POLICY,
    group_commit: bool = True,
    engine: str | None = None,
    read_consistency: str = LINEARIZABLE,
    tls: TLSConfig | None = None,
) -> Connection:
    """Connect to `database` through `servers` (addresses, or a node store) or `store`.

    The leader is found and the database opened before this returns.
    `tls`: mutual TLS with the cluster certificate (`cowsqlpy.tls`).
    `read_consistency`: "linearizable" (default; a query outside a transaction sees
    every write acknowledged before it started, at the cost of a shared read barrier,
    see `Database.read_barrier`) or "serializable" (what the leader has applied: a
    deposed leader that has not noticed yet can serve a stale read).

    :raises ProgrammingError: bad arguments. :raises ValueError, TypeError: bad
        `autocommit` / `isolation_level` (as sqlite3), unknown `engine` (a name of
        `cowsqlpy.versions.ENGINE_CHOICES`; None: the oldest engine supported).
    :raises OperationalError
        subclasses: no leader within `policy` (see cowsqlpy.errors).
    """
    if servers is not None and store is None and isinstance(servers, NodeStore):
        servers, store = None, servers
    loop = asyncio.get_running_loop()
    conn = new_connection(
        loop,
        loop,
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
    db = conn._db
    try:
        db.release(await db.acquire())
        await conn.identify_engine()
    except BaseException:
        await conn.close()
        raise
    return conn


class Connection:
    """An asyncio connection. One task at a time uses it (others wait their turn)."""

    __slots__ = (
        "_db",
        "_key",
        "_loop",
        "_autocommit",
        "_isolation",
        "_features",
        "_linearizable",
        "_tx",
        "_tx_writes",
        "_tx_savepoint",
        "_active",
        "_closed",
        "_op",
        "_tx_depth",
        "_identify",
        "__weakref__",
    )

    def __init__(
        self,
        db: Database,
        key: tuple[Any, ...],
        loop: asyncio.AbstractEventLoop,
        *,
        autocommit: bool | int,
        isolation_level: str | None,
        features: EngineFeatures | None = None,
        linearizable: bool = True,
        identify: bool = False,
    ) -> None:
        self._db = db
        self._identify = identify  # the engine is not declared: probe it before the first statement
        self._linearizable = linearizable
        self._key = key
        self._loop = loop  # the loop that runs it (finalizers hand their clean-up to it)
        self._autocommit = autocommit
        self._isolation = isolation_level
        self._features = versions.CLIENT_TARGET if features is None else features
        self._tx: Any = None  # the Session of the open transaction
        self._tx_writes = False  # the open transaction ran something that may have written
        self._tx_savepoint: str | None = None  # the SAVEPOINT that opened it (autocommit=True)
        self._tx_depth = 0  # transaction() blocks open
        self._active: ResultStream | None = None  # a result still streaming on the tx session
        self._closed = False
        self._op = asyncio.Lock()

    # -- properties --

    @property
    def database(self) -> str:
        return self._db.name

    @property
    def in_transaction(self) -> bool:
        return self._tx is not None

    @property
    def autocommit(self) -> bool | int:
        return self._autocommit

    @autocommit.setter
    def autocommit(self, value: object) -> None:
        raise AttributeError("use 'await conn.set_autocommit(value)': changing it may commit")

    @property
    def isolation_level(self) -> str | None:
        return self._isolation

    @isolation_level.setter
    def isolation_level(self, value: object) -> None:
        raise AttributeError("use 'await conn.set_isolation_level(value)': changing it may commit")

    @property
    def features(self) -> EngineFeatures:
        """The engine switches this connection works under (RETURNING and the like): the
        declared engine's row, or for an undeclared one the row the engine probe found
        (`versions.CLIENT_TARGET`, what every row takes, until it is sent: at `connect`,
        `identify_engine`, or a statement that row refuses)."""
        return self._features

    async def identify_engine(self) -> EngineFeatures:
        """`features`, after the engine probe for an undeclared engine (once per database
        core). :raises OperationalError subclasses: no leader within the retry policy."""
        if self._identify:
            self._features = await self._db.engine_features()
            self._identify = False
        return self._features

    async def _checked(self, check: Callable[[EngineFeatures], T]) -> T:
        """`check(features)`. What the assumed row (`CLIENT_TARGET`) refuses another row
        may take: then the engine is identified first and `check` runs under its row;
        what it takes every row takes, so most statements never wait for the probe."""
        try:
            return check(self._features)
        except NotSupportedError:
            if not self._identify or not _some_row_takes(check):
                raise
        return check(await self.identify_engine())

    @property
    def closed(self) -> bool:
        return self._closed

    def check_open(self) -> None:
        if self._closed:
            raise ProgrammingError("cannot operate on a closed connection")

    # -- transaction control (sqlite3's rules) --

    async def set_autocommit(self, value: bool | int) -> None:
        """As assigning sqlite3's ``autocommit``: True commits an open transaction."""
        mode = check_autocommit(value)
        self.check_open()
        async with self._op:
            if mode is True:
                await self._commit()
            self._autocommit = mode

    async def set_isolation_level(self, value: str | None) -> None:
        """As assigning sqlite3's ``isolation_level``: None commits an open transaction
        (in legacy mode: autocommit=True ignores it, autocommit=False ... as sqlite3)."""
        level = check_isolation_level(value)
        self.check_open()
        async with self._op:
            if level is None and self._autocommit is not True:
                await self._commit()
            self._isolation = level

    async def commit(self) -> None:
        """Commit the open transaction; nothing to do without one, or with autocommit=True
        (as sqlite3).

        :raises TransactionLostError: it did not commit. :raises OutcomeUnknownError:
            the reply was lost and no leader could tell.
        """
        self.check_open()
        if self._autocommit is True:
            return
        async with self._op:
            await self._commit()

    async def rollback(self) -> None:
        self.check_open()
        if self._autocommit is True:
            return
        async with self._op:
            await self._rollback()

    def transaction(self) -> Transaction:
        """``async with conn.transaction():`` commits on success, rolls back on error;
        nested blocks are savepoints."""
        return Transaction(self)

    async def close(self) -> None:
        """Roll back an open transaction and release everything. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            async with self._op:
                await self._rollback()
        finally:
            db = release_database(self._key)
            if db is not None:
                await db.close()

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __del__(self) -> None:
        # Never block in a finalizer: the loop rolls back and frees the write lock.
        if not getattr(self, "_closed", True):
            _call_soon(self._loop, self.close)

    # -- statements --

    def cursor(self) -> Cursor:
        self.check_open()
        return Cursor(self)

    async def execute(self, sql: str, parameters: Params = ()) -> Cursor:
        """A new cursor that executed `sql` (see `Cursor.execute`)."""
        return await self.cursor().execute(sql, parameters)

    async def executemany(self, sql: str, seq_of_parameters: Iterable[Params]) -> Cursor:
        return await self.cursor().executemany(sql, seq_of_parameters)

    async def executescript(self, sql: str) -> Cursor:
        return await self.cursor().executescript(sql)

    # -- internals (every path below runs under self._op) --

    @property
    def _implicit_commit(self) -> bool:
        """Statements outside a transaction commit on their own."""
        return self._autocommit is True or (
            self._autocommit is not False and self._isolation is None
        )

    async def _settle(self) -> None:
        """Buffer a result still streaming on the transaction's session."""
        if self._active is not None:
            active = self._active
            self._active = None
            if not active.finished:
                await active.materialize()

    async def _begin(self, sql: str) -> None:
        session = await self._db.begin(sql, linearizable=self._linearizable)
        self._tx, self._tx_writes, self._tx_savepoint = session, False, None

    def _implicit_begin_sql(self, stmt: Statement) -> str | None:
        """The BEGIN to send before `stmt`, or None."""
        if self._tx is not None or self._autocommit is True:
            return None
        if self._autocommit is False:  # PEP 249: always in a transaction
            return "BEGIN IMMEDIATE" if stmt.is_write else "BEGIN DEFERRED"
        if self._isolation is None or not stmt.is_write:
            return None
        return f"BEGIN {self._isolation}".rstrip()

    async def _commit(self) -> None:
        if self._tx is None:
            return
        await self._settle()
        if not self._tx_writes:  # nothing written: ending it is all a commit would do
            await self._rollback()
            return
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
        session = self._tx
        self._tx = None
        await self._db.rollback(session)

    def _lose_tx(self, exc: BaseException) -> TransactionLostError:
        session = self._tx
        self._tx, self._active = None, None
        self._db.lose(session, exc)
        return TransactionLostError(
            f"transaction lost, nothing of it was committed ({exc}); run it again"
        )

    async def _tx_exec(
        self, sql: str, values: Sequence[Any], *, writes: bool = True
    ) -> tuple[int, int]:
        if writes:
            self._tx_writes = True
        try:
            result: tuple[int, int] = await self._tx.exec_sql(sql, values)
            return result
        except SESSION_GONE as exc:
            raise self._lose_tx(exc) from exc

    async def _tx_control(self, stmt: Statement, sql: str) -> None:
        if stmt.verb == "BEGIN":
            if self._tx is not None:
                raise ProgrammingError("cannot start a transaction within a transaction")
            await self._begin(sql)
            return
        if stmt.verb in ("COMMIT", "END"):
            await self._commit()
            return
        if stmt.verb == "ROLLBACK" and "TO" not in stmt.head:
            await self._rollback()
            return
        if self._tx is None and stmt.verb == "SAVEPOINT":
            await self._begin("BEGIN IMMEDIATE")
            if self._autocommit is True and len(stmt.head) > 1:
                self._tx_savepoint = stmt.head[1]  # its RELEASE commits, as in SQLite
        if self._tx is None:
            raise ProgrammingError(f"{stmt.verb} outside a transaction")
        await self._tx_exec(sql, ())
        if (
            stmt.verb == "RELEASE"
            and self._tx_savepoint is not None
            and stmt.head[-1] == self._tx_savepoint
        ):
            await self._commit()

    async def _start_stream(
        self, cursor: Cursor, stmt: Statement, sql: str, values: Sequence[Any]
    ) -> None:
        """Run a statement that may return rows on the transaction's session."""
        if stmt.returns_rows is not True or stmt.is_write:
            self._tx_writes = True
        stream = ResultStream(self._tx.query_sql(sql, values), self._tx, None)
        try:
            await stream.start()
        except SESSION_GONE as exc:
            raise self._lose_tx(exc) from exc
        except Error as exc:
            if stmt.returns_rows is None and exc.code == 1:  # a PRAGMA with no result columns
                cursor._set_result(stmt, await self._tx_exec(sql, values))
                return
            raise
        self._active = stream
        try:
            await cursor._take_stream(stream)
        except SESSION_GONE as exc:
            raise self._lose_tx(exc) from exc

    async def _execute(self, cursor: Cursor, sql: str, parameters: object) -> None:
        stmt = (await self._checked(functools.partial(check_single, sql)) if self._identify
                else check_single(sql, self._features))
        values = plain_values(bind(stmt, parameters))
        await self._settle()
        if stmt.is_tx_control:
            await self._tx_control(stmt, sql)
            return
        begin = self._implicit_begin_sql(stmt)
        if begin is not None:
            await self._begin(begin)
        returns_rows = _returns_rows(stmt)
        if self._tx is None and returns_rows and stmt.is_write:
            await self._write_returning(cursor, stmt, sql, values)
            return
        if self._tx is not None:
            if returns_rows is False:
                cursor._set_result(stmt, await self._tx_exec(sql, values))
            else:
                await self._start_stream(cursor, stmt, sql, values)
            return
        if returns_rows is False:
            coalesce = stmt.is_write and not stmt.rollback_clause
            cursor._set_result(stmt, await self._db.execute(sql, values, coalesce=coalesce))
            return
        try:
            stream = await self._db.query(sql, values, linearizable=self._linearizable)
        except Error as exc:
            if returns_rows is None and exc.code == 1:
                cursor._set_result(stmt, await self._db.execute(sql, values, coalesce=False))
                return
            raise
        await cursor._take_stream(stream)

    async def _write_returning(
        self, cursor: Cursor, stmt: Statement, sql: str, values: Sequence[Any]
    ) -> None:
        """A write that returns rows, outside a transaction: in one of its own, so
        the write lock and the lost-reply check cover it as any other write."""
        await self._begin("BEGIN IMMEDIATE")
        try:
            await self._start_stream(cursor, stmt, sql, values)
            await self._settle()
        except BaseException:
            await self._rollback()
            raise
        await self._commit()

    async def _executemany(
        self, cursor: Cursor, stmt: Statement, sql: str, seq: Sequence[Sequence[Any]]
    ) -> None:
        await self._settle()
        if not seq:
            cursor._set_result(stmt, (0, 0), many=True)
            return
        own = self._tx is None
        if own:
            await self._begin("BEGIN IMMEDIATE")
        self._tx_writes = True
        try:
            total = await self._db.executemany(self._tx, sql, seq)
        except SESSION_GONE as exc:
            raise self._lose_tx(exc) from exc
        except BaseException:
            if own and self._implicit_commit:
                await self._rollback()
            raise
        if own and self._implicit_commit:
            await self._commit()
        cursor._set_result(stmt, (0, total), many=True)

    async def _executescript(self, sql: str) -> None:
        if self._autocommit is not True and self._autocommit is not False:
            await (
                self._commit()
            )  # as sqlite3's legacy mode: a pending transaction is committed first
        if self._tx is not None:
            await self._tx_exec(sql, ())
            return
        await self._db.execute_script(sql)


class Transaction:
    """`Connection.transaction()`: BEGIN (the connection's isolation level, IMMEDIATE
    by default) or, inside a transaction, a SAVEPOINT."""

    __slots__ = ("_conn", "_savepoint")

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._savepoint: str | None = None

    async def __aenter__(self) -> Transaction:
        conn = self._conn
        conn.check_open()
        async with conn._op:
            await conn._settle()
            if conn._tx is None:
                await conn._begin(f"BEGIN {conn._isolation or DEFAULT_ISOLATION_LEVEL}".rstrip())
            else:
                self._savepoint = f"cowsqlpy_tx_{conn._tx_depth}"
                await conn._tx_exec(f"SAVEPOINT {self._savepoint}", (), writes=False)
            conn._tx_depth = conn._tx_depth + 1
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        conn = self._conn
        async with conn._op:
            conn._tx_depth = conn._tx_depth - 1
            if conn._closed or conn._tx is None:
                return  # closed, or the transaction was lost (its error is on its way)
            if self._savepoint is None:
                await (conn._commit() if exc_type is None else conn._rollback())
                return
            await conn._settle()
            if exc_type is not None:
                await conn._tx_exec(f"ROLLBACK TO {self._savepoint}", (), writes=False)
            await conn._tx_exec(f"RELEASE {self._savepoint}", (), writes=False)


def _call_soon(loop: asyncio.AbstractEventLoop, coro_factory: Any) -> None:
    """Start a coroutine on `loop` from any thread, if the loop still runs."""
    if not loop.is_closed():
        loop.call_soon_threadsafe(lambda: asyncio.ensure_future(coro_factory()))


# -- Cursor ----------------------------------------------------------------------------------------


def _type_code(value: object) -> str | None:
    """The engine's type of a value, as a name the module's type objects compare equal to."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int):
        return "INTEGER"
    if isinstance(value, float):
        return "FLOAT"
    if isinstance(value, str):
        return "TEXT"
    if isinstance(value, bytes):
        return "BLOB"
    if isinstance(value, _dt.datetime):
        return "DATETIME"
    return None


Description = list[tuple[str, str | None, None, None, None, None, None]]
#: A fetch step the sans-IO fetch logic hands back: the caller loads a page and sends
#: back whether there was one.
NEED_PAGE = None


class Cursor:
    """A cursor; results are read from the server page by page."""

    __slots__ = (
        "connection",
        "arraysize",
        "description",
        "rowcount",
        "lastrowid",
        "_rows",
        "_pos",
        "_stream",
        "_has_result",
        "_closed",
        "__weakref__",
    )

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.arraysize = 1
        self.description: Description | None = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: list[Row] = []
        self._pos = 0
        self._stream: ResultStream | None = None
        self._has_result = False
        self._closed = False

    # -- results --

    async def _reset(self) -> None:
        await self._close_stream()
        self.description = None
        self.rowcount = -1
        self._rows, self._pos = [], 0
        self._has_result = False

    def _set_result(self, stmt: Statement, result: tuple[int, int], *, many: bool = False) -> None:
        """As sqlite3: rowcount for DML only (-1 otherwise), lastrowid after an INSERT
        or REPLACE run by execute()."""
        last_id, changed = result
        if stmt.is_write:
            self.rowcount = changed
            if not many and stmt.main_verb in ("INSERT", "REPLACE"):
                self.lastrowid = last_id

    async def _take_stream(self, stream: ResultStream) -> None:
        """Take a started result: its description, its first page into the buffer,
        and a look at what follows. A result of one page (a point read) then ends
        here: its session goes back to the pool at once, and fetching it needs no
        further step on the loop (for the sync face: no thread hop)."""
        self._set_description(stream)
        self._stream = stream
        self._has_result = True
        if await self._fill():
            following = await stream.next_batch()  # the end, or the next page, kept for later
            if following is None:
                self._stream = None
            else:
                stream.first = following

    def _set_description(self, stream: ResultStream) -> None:
        first = stream.first or []
        codes: list[str | None] = []
        for i in range(len(stream.columns)):
            codes.append(next((c for row in first if (c := _type_code(row[i])) is not None), None))
        self.description = [
            (name, code, None, None, None, None, None)
            for name, code in zip(stream.columns, codes, strict=True)
        ]

    async def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None and not stream.finished:
            await stream.aclose()

    async def _fill(self) -> bool:
        """Load the next page of rows; False at the end."""
        while self._stream is not None:
            batch = await self._stream.next_batch()
            if batch is None:
                self._stream = None
                return False
            if batch:
                self._rows, self._pos = batch, 0
                return True
        return False

    def _check(self) -> None:
        if self._closed:
            raise ProgrammingError("cannot operate on a closed cursor")
        self.connection.check_open()

    def _fetch(self, want: float) -> Generator[None, bool, list[Row]]:
        """Up to `want` rows: the fetch logic of both faces (sans-IO). Yields
        NEED_PAGE when the buffer is empty; the driver sends back `_fill()`'s answer.

        :raises ProgrammingError: no result set (PEP 249: nothing executed yet, or
            the last statement returned no rows).
        """
        self._check()
        if not self._has_result:
            raise ProgrammingError(
                "no result set: the last statement returned no rows (or none ran yet)"
            )
        out: list[Row] = []
        while len(out) < want:
            if self._pos >= len(self._rows):
                if self._stream is None or not (yield NEED_PAGE):
                    break
                continue
            take = self._rows[self._pos : self._pos + int(min(want - len(out), len(self._rows)))]
            self._pos += len(take)
            out.extend(take)
        if self._pos >= len(self._rows):
            self._rows, self._pos = [], 0
        return out

    async def _run_fetch(self, want: float) -> list[Row]:
        steps = self._fetch(want)
        try:
            next(steps)
            while True:
                steps.send(await self._fill())
        except StopIteration as done:
            rows: list[Row] = done.value
            return rows

    # -- API --

    async def execute(self, sql: str, parameters: Params = ()) -> Cursor:
        """Run one statement. Named (:name) and qmark (?) parameters are accepted.

        :raises ProgrammingError: bad SQL or parameters; NotSupportedError: RETURNING
            on an engine where it is unsafe; OperationalError subclasses: cluster
            trouble (see cowsqlpy.errors).
        """
        self._check()
        conn = self.connection
        async with conn._op:
            await self._reset()
            await conn._execute(self, sql, parameters)
        return self

    async def executemany(self, sql: str, seq_of_parameters: Iterable[Params]) -> Cursor:
        """Run one DML statement for every parameter set, atomically and pipelined."""
        self._check()
        conn = self.connection
        stmt = await conn._checked(functools.partial(check_single, sql))
        if _returns_rows(stmt) is not False or stmt.is_tx_control:
            raise ProgrammingError("executemany() can only run DML statements that return no rows")
        seq = [plain_values(bind(stmt, p)) for p in seq_of_parameters]
        async with conn._op:
            await self._reset()
            await conn._executemany(self, stmt, sql, seq)
        return self

    async def executescript(self, sql: str) -> Cursor:
        """Run several statements (no parameters), each committed as it runs
        (inside the open transaction when autocommit is False)."""
        self._check()
        if not isinstance(sql, str):
            raise ProgrammingError(f"sql must be str, not {type(sql).__name__}")
        conn = self.connection
        await conn._checked(functools.partial(_check_script, sql))
        async with conn._op:
            await self._reset()
            await conn._executescript(sql)
        return self

    async def fetchone(self) -> Row | None:
        if self._pos < len(self._rows) and self._has_result and not self._closed:
            row = self._rows[self._pos]  # the common case: no page to load
            self._pos += 1
            return row
        rows = await self._run_fetch(1)
        return rows[0] if rows else None

    async def fetchmany(self, size: int | None = None) -> list[Row]:
        return await self._run_fetch(self.arraysize if size is None else size)

    async def fetchall(self) -> list[Row]:
        return await self._run_fetch(float("inf"))

    def __aiter__(self) -> Cursor:
        return self

    async def __anext__(self) -> Row:
        row = await self.fetchone()
        if row is None:
            raise StopAsyncIteration
        return row

    async def close(self) -> None:
        if not self._closed:
            await self._close_stream()
            self._closed = True

    def setinputsizes(self, sizes: object) -> None:
        pass

    def setoutputsize(self, size: object, column: object = None) -> None:
        pass

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __del__(self) -> None:
        stream = getattr(self, "_stream", None)
        if stream is not None and not stream.finished:
            # Abandoned mid-result: let the loop discard the rest and pool the session.
            _call_soon(self.connection._loop, stream.aclose)


__all__ = [
    "connect",
    "Connection",
    "Cursor",
    "Transaction",
    "LEGACY_TRANSACTION_CONTROL",
    "ISOLATION_LEVELS",
    "DEFAULT_ISOLATION_LEVEL",
]
