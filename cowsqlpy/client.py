"""Client core (asyncio): sessions with one node, leader discovery, cluster admin.

`Session` is a wire connection plus the database it opened and the statements
it prepared; it is what the DB-API driver leases. `find_leader` probes the
nodes of a store in parallel (voters first) and returns a connection to the
node that reports itself as leader. `Client` is the cluster admin API
(`cluster`, `leader`, `add`, `assign`, `remove`, `transfer`, `describe`,
`weight`, `dump`); `SyncClient` is its blocking twin, a thin wrapper that runs
the same coroutines on the background loop.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator, Coroutine, Iterable, Sequence
from typing import Any, NamedTuple

from . import protocol
from ._loop import run_sync
from .errors import (
    ConnectionLostError,
    Error,
    NoLeaderError,
    NotLeaderError,
    ProgrammingError,
)
from .protocol import SPARE, NodeInfo
from .retry import DEFAULT_POLICY, RetryPolicy, retrying
from .store import MemoryNodeStore, NodeStore, dial_order
from .tls import ClientTLS, TLSConfig, client_tls
from .wire import WireConnection

log = logging.getLogger("cowsqlpy.client")

#: statements a session keeps prepared for `cached_statement` (and texts it remembers)
STATEMENT_CACHE_SIZE = 64


class NodeMetadata(NamedTuple):
    failure_domain: int
    weight: int


class PreparedStatement(NamedTuple):
    id: int
    nparams: int


class Session:
    """A connection to one node with (at most) one open database.

    Statement ids are tracked here: an id is finalized at most once and
    forgotten at once, because the engine reuses freed slots and finalizing a
    stale id crashes 1.11.1.

    `cached_statement` keeps the queries a session runs again and again
    prepared: running one by id skips the engine's SQL compile, about 40 % of a
    point read's round trip. Only for SQL with fixed result columns: after a
    schema change (even by another connection) 1.11.1 answers a prepared
    statement's next run with the columns it had before (``SELECT *`` then
    silently drops a new column), and only re-prepares it while running it.
    """

    def __init__(self, conn: WireConnection, policy: RetryPolicy = DEFAULT_POLICY) -> None:
        self.conn = conn
        self.policy = policy
        self.database: str | None = None
        self.db_id = 0
        self._statements: set[int] = set()
        self.idle_since = 0.0  # when a pool last took it back (time.monotonic)
        self._cache: collections.OrderedDict[str, PreparedStatement] = collections.OrderedDict()
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()

    @classmethod
    async def connect(cls, address: str, policy: RetryPolicy = DEFAULT_POLICY, tls: ClientTLS | None = None) -> Session:
        return cls(await WireConnection.connect(address, timeout=policy.connect_timeout, tls=tls), policy)

    @property
    def address(self) -> str:
        return self.conn.address

    @property
    def closed(self) -> bool:
        return self.conn.closed

    async def call(self, rtype: int, *args: Any) -> Any:
        return await self.conn.request(rtype, *args, timeout=self.policy.attempt_timeout)

    async def open(self, database: str) -> None:
        if self.database is not None:
            if self.database == database:
                return
            raise ProgrammingError(f"this session already opened {self.database!r}; the engine allows one per connection")
        self.db_id = await self.call(protocol.OPEN, database)
        self.database = database

    async def exec_sql(self, sql: str, params: Sequence[Any] = ()) -> tuple[int, int]:
        """Run SQL that returns no rows; (last_insert_id, rows_affected)."""
        result: tuple[int, int] = await self.call(protocol.EXEC_SQL, self.db_id, sql, params)
        return result

    def submit_exec_sql(self, sql: str, params: Sequence[Any] = ()) -> Coroutine[Any, Any, tuple[int, int]]:
        """Write an EXEC_SQL now and return the awaitable of its RESULT (pipelining).

        A request that cannot be sent (closed connection) fails when awaited.
        """
        try:
            return self.conn.submit(protocol.EXEC_SQL, self.db_id, sql, params, timeout=self.policy.attempt_timeout)
        except Error as exc:
            return _raise(exc)

    def query_sql(self, sql: str, params: Sequence[Any] = ()) -> AsyncIterator[tuple[list[str], list[tuple[Any, ...]]]]:
        """Stream (columns, rows) batches of the first statement's result."""
        return self.conn.query(protocol.QUERY_SQL, self.db_id, sql, params, timeout=self.policy.attempt_timeout)

    async def query_all(self, sql: str, params: Sequence[Any] = (), *, prepared: bool = False) -> list[tuple[Any, ...]]:
        """Every row of the first statement's result; `prepared`: through
        `cached_statement` (only for SQL whose columns a schema change cannot alter)."""
        stmt = await self.cached_statement(sql) if prepared else None
        out: list[tuple[Any, ...]] = []
        async for _, rows in self.query_sql(sql, params) if stmt is None else self.query(stmt, params):
            out.extend(rows)
        return out

    async def prepare(self, sql: str) -> PreparedStatement:
        _, stmt_id, nparams = await self.call(protocol.PREPARE, self.db_id, sql)
        self._statements.add(stmt_id)
        return PreparedStatement(stmt_id, nparams)

    def send_exec(self, stmt: PreparedStatement, params: Sequence[Any]) -> Coroutine[Any, Any, tuple[int, int]]:
        """Write an EXEC now and return the awaitable of its RESULT (pipelining)."""
        self._check_statement(stmt)
        return self.conn.submit(protocol.EXEC, self.db_id, stmt.id, params, timeout=self.policy.attempt_timeout)

    def query(self, stmt: PreparedStatement, params: Sequence[Any] = ()) -> AsyncIterator[tuple[list[str], list[tuple[Any, ...]]]]:
        self._check_statement(stmt)
        return self.conn.query(protocol.QUERY, self.db_id, stmt.id, params, timeout=self.policy.attempt_timeout)

    async def cached_statement(self, sql: str) -> PreparedStatement | None:
        """The prepared statement for a query text this session ran before; None
        the first time a text is seen (run it with `query_sql`), so text used
        once costs no PREPARE. Least recently used statements beyond
        STATEMENT_CACHE_SIZE are finalized."""
        stmt = self._cache.get(sql)
        if stmt is not None:
            self._cache.move_to_end(sql)
            return stmt
        if sql not in self._seen:
            self._seen[sql] = None
            if len(self._seen) > STATEMENT_CACHE_SIZE:
                self._seen.popitem(last=False)
            return None
        if len(self._cache) >= STATEMENT_CACHE_SIZE:
            _, old = self._cache.popitem(last=False)
            await self.finalize(old)
        stmt = await self.prepare(sql)
        if (sibling := self._cache.get(sql)) is not None:
            # another query sharing this session prepared it meanwhile (cowsqlpy.shared_reads)
            await self.finalize(stmt)
            return sibling
        self._cache[sql] = stmt
        return stmt

    async def finalize(self, stmt: PreparedStatement) -> None:
        self._check_statement(stmt)
        self._statements.discard(stmt.id)  # forget first: never sent twice, even on error
        await self.call(protocol.FINALIZE, self.db_id, stmt.id)

    def _check_statement(self, stmt: PreparedStatement) -> None:
        if stmt.id not in self._statements:
            raise ProgrammingError(f"statement {stmt.id} is not live on this session (finalized already?)")

    def close(self) -> None:
        self._statements.clear()
        self._cache.clear()
        self.conn.close()


async def _raise(exc: BaseException) -> Any:
    raise exc


# -- Leader discovery --------------------------------------------------------------


async def _probe(address: str, policy: RetryPolicy, tls: ClientTLS | None) -> tuple[WireConnection | None, str]:
    """Connect to `address` and ask it for the leader: (connection if it leads, leader address)."""
    conn = await WireConnection.connect(address, timeout=policy.connect_timeout, tls=tls)
    try:
        _, leader_address = await conn.request(protocol.LEADER, timeout=policy.attempt_timeout)
    except BaseException:
        conn.close()
        raise
    if leader_address == address:
        return conn, leader_address
    conn.close()
    return None, leader_address


#: How long the last known leader gets to answer before every node is asked too. A live
#: node answers LEADER in well under a millisecond on a LAN; a frozen one (SIGSTOP, a
#: stalled VM) accepts the connection and never answers, and must not hold discovery
#: for a whole attempt timeout.
HINT_GRACE = 0.05


async def find_leader(
    store: NodeStore, policy: RetryPolicy = DEFAULT_POLICY, *, hint: str | None = None, tls: ClientTLS | None = None
) -> WireConnection:
    """A connection to the node that reports itself as leader (one sweep, no retry).

    `hint` (the last known leader) is asked first; if it has not answered within
    `HINT_GRACE`, every other node of the store is asked at once too, and the first
    node that leads wins; a node that names another leader sends us there at once
    (listed in the store or not). While a
    node stays silent, the nodes that answered are asked again every `HINT_GRACE`
    (during an election they name no leader, or the frozen one, until it ends).
    `tls`: dial every node over mutual TLS.

    :raises NoLeaderError: no node led or pointed at a leader.
    """
    nodes = dial_order(store.get())
    if not nodes and not hint:
        raise NoLeaderError("the node store is empty")
    errors: list[str] = []
    pointed: set[str] = set()
    tasks: list[asyncio.Future[tuple[WireConnection | None, str]]] = []
    winner: WireConnection | None = None

    def first_leader(done: Iterable[asyncio.Future[tuple[WireConnection | None, str]]]) -> WireConnection | None:
        for task in done:
            try:
                conn, leader_address = task.result()
            except Error as exc:
                errors.append(str(exc))
                continue
            if conn is not None:
                return conn
            if leader_address:
                pointed.add(leader_address)
        return None

    try:
        if hint:
            tasks.append(asyncio.ensure_future(_probe(hint, policy, tls)))
            done, _ = await asyncio.wait(tasks, timeout=HINT_GRACE)
            if (winner := first_leader(done)) is not None:
                return winner
        probes = {n.address: asyncio.ensure_future(_probe(n.address, policy, tls)) for n in nodes if n.address != hint}
        tasks += probes.values()
        pending = {t for t in tasks if not t.done()}

        def ask_pointed() -> None:
            # A leader named by a node is asked at once, even when the store does not
            # list it (a new node, a store not refreshed yet), not after the silent ones:
            # a frozen node would hold it back for the whole attempt timeout.
            for address in pointed - probes.keys() - {hint}:
                probes[address] = asyncio.ensure_future(_probe(address, policy, tls))
                tasks.append(probes[address])
                pending.add(probes[address])

        ask_pointed()
        while pending:
            done, pending = await asyncio.wait(pending, timeout=HINT_GRACE, return_when=asyncio.FIRST_COMPLETED)
            if (winner := first_leader(done)) is not None:
                return winner
            ask_pointed()
            if not done:
                # Only silent nodes are left (a frozen ex-leader): the nodes that answered
                # may have elected a leader since, so ask them again rather than wait.
                again = {a: asyncio.ensure_future(_probe(a, policy, tls)) for a, t in probes.items() if t.done()}
                probes.update(again)
                tasks += again.values()
                pending |= set(again.values())
    finally:
        # Only the winner keeps its connection: a probe cancelled here closes its own, and
        # another node that also claimed to lead (a deposed leader) is let go.
        for t in tasks:
            if not t.done():
                t.cancel()
            elif not t.cancelled() and t.exception() is None:
                conn, _ = t.result()
                if conn is not None and conn is not winner:
                    conn.close()
    detail = "; ".join(errors[:3])
    raise NoLeaderError(f"no available leader among {[n.address for n in nodes]}" + (f" ({detail})" if detail else ""))


async def claimed_leader(
    addresses: Iterable[str], policy: RetryPolicy = DEFAULT_POLICY, *, exclude: str, timeout: float,
    tls: ClientTLS | None = None,
) -> str | None:
    """The address of a node that answers, itself, that it leads: every node of
    `addresses` is asked at once, and a node named as leader by another is asked too
    (a follower's word is no evidence: its reply carries no term). `exclude` is never
    asked (the node whose leadership is in question). None when no node claims it
    within `timeout`."""
    asked = {exclude}
    probes: list[asyncio.Future[tuple[WireConnection | None, str]]] = []

    def ask(address: str) -> None:
        if address and address not in asked:
            asked.add(address)
            probes.append(asyncio.ensure_future(_probe(address, policy, tls)))

    for address in addresses:
        ask(address)
    try:
        async with asyncio.timeout(timeout):
            while pending := [p for p in probes if not p.done()]:
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for probe in [p for p in probes if p.done()]:
                    if probe.exception() is not None:
                        continue
                    conn, leader_address = probe.result()
                    if conn is not None:
                        return conn.address
                    ask(leader_address)
    except TimeoutError:
        pass
    finally:
        for probe in probes:
            if not probe.done():
                probe.cancel()  # a cancelled probe closes its own connection
            elif not probe.cancelled() and probe.exception() is None and (conn := probe.result()[0]) is not None:
                conn.close()
    return None


#: How long a node whose connection just dropped gets to answer a fresh one before it
#: counts as gone (`node_gone`).
GONE_CHECK_TIMEOUT = 1.0


async def node_gone(
    address: str, policy: RetryPolicy = DEFAULT_POLICY, *, tls: ClientTLS | None = None,
    timeout: float = GONE_CHECK_TIMEOUT,
) -> bool:
    """Whether the node at `address`, whose connection just dropped, is gone: a fresh
    connection is refused or its LEADER request gets no answer within `timeout`. A node
    that answers (leading or not) is alive: the drop was the network's or a proxy's."""
    try:
        async with asyncio.timeout(timeout):
            conn, _ = await _probe(address, policy, tls)
    except (Error, TimeoutError):
        return True
    if conn is not None:
        conn.close()
    return False


class LeaderTracker:
    """Remembers the last leader and reconnects to the current one under a retry policy.

    `tls`: dial over mutual TLS with the cluster certificate (`cowsqlpy.tls.TLSConfig`).
    """

    def __init__(self, store: NodeStore, policy: RetryPolicy = DEFAULT_POLICY, tls: TLSConfig | ClientTLS | None = None) -> None:
        self.store = store
        self.policy = policy
        self.tls = client_tls(tls)
        self.last_leader: str | None = None

    async def connect(self) -> WireConnection:
        async def attempt() -> WireConnection:
            return await find_leader(self.store, self.policy, hint=self.last_leader, tls=self.tls)

        conn = await retrying(attempt, self.policy, what="leader discovery")
        self.last_leader = conn.address
        return conn

    def forget(self) -> None:
        self.last_leader = None


def as_store(servers: NodeStore | Iterable[str] | str) -> NodeStore:
    if isinstance(servers, str):
        return MemoryNodeStore([s.strip() for s in servers.split(",") if s.strip()])
    if isinstance(servers, NodeStore):
        return servers
    return MemoryNodeStore(list(servers))


# -- Cluster admin ---------------------------------------------------------------


class Client:
    """Cluster administration over a node store (asyncio).

    Leader-only requests find the leader first and are retried on the new
    leader when it changes (not-leader, lost connection) under `policy`.
    `tls`: talk to the nodes over mutual TLS (`cowsqlpy.tls.TLSConfig`).
    """

    def __init__(
        self, servers: NodeStore | Iterable[str] | str, *, policy: RetryPolicy = DEFAULT_POLICY,
        tls: TLSConfig | ClientTLS | None = None,
    ) -> None:
        self.store = as_store(servers)
        self.policy = policy
        self._tracker = LeaderTracker(self.store, policy, tls)
        self._session: Session | None = None

    async def _leader_session(self) -> Session:
        if self._session is None or self._session.closed:
            self._session = Session(await self._tracker.connect(), self.policy)
        return self._session

    async def _on_leader(self, rtype: int, *args: Any) -> Any:
        async def attempt() -> Any:
            session = await self._leader_session()
            try:
                return await session.call(rtype, *args)
            except (NotLeaderError, ConnectionLostError):
                session.close()
                self._tracker.forget()
                raise

        return await retrying(attempt, self.policy, what=protocol.REQUEST_NAMES[rtype])

    async def _at(self, address: str, rtype: int, *args: Any) -> Any:
        session = await Session.connect(address, self.policy, self._tracker.tls)
        try:
            return await session.call(rtype, *args)
        finally:
            session.close()

    async def leader(self) -> NodeInfo | None:
        """The current leader, or None when no node knows one."""
        try:
            session = await self._leader_session()
        except NoLeaderError:
            return None
        leader_id, address = await session.call(protocol.LEADER)
        return NodeInfo(leader_id, address, protocol.VOTER) if address else None

    async def cluster(self) -> list[NodeInfo]:
        """Every node of the cluster with its role, as the leader knows them."""
        nodes: list[NodeInfo] = await self._on_leader(protocol.CLUSTER, 1)
        return nodes

    async def add(self, node_id: int, address: str, role: int = SPARE) -> None:
        """Add a node (it joins as spare), then assign `role` if it is not spare."""
        await self._on_leader(protocol.ADD, node_id, address)
        if role != SPARE:
            await self.assign(node_id, role)

    async def assign(self, node_id: int, role: int) -> None:
        await self._on_leader(protocol.ASSIGN, node_id, role)

    async def remove(self, node_id: int) -> None:
        await self._on_leader(protocol.REMOVE, node_id)

    async def transfer(self, node_id: int = 0) -> None:
        """Hand leadership to `node_id` (0: the engine picks a voter)."""
        await self._on_leader(protocol.TRANSFER, node_id)
        if self._session is not None:
            self._session.close()
        self._tracker.forget()

    async def describe(self, address: str) -> NodeMetadata:
        """Failure domain and weight of the node at `address`."""
        return NodeMetadata(*await self._at(address, protocol.DESCRIBE, 0))

    async def weight(self, address: str, weight: int) -> None:
        """Set the weight of the node at `address` (in memory on that node only)."""
        await self._at(address, protocol.WEIGHT, weight)

    async def dump(self, database: str, address: str | None = None) -> dict[str, bytes]:
        """The database file and its WAL, as `{name: bytes}`, from `address` or the leader."""
        if address is None:
            files = await self._on_leader(protocol.DUMP, database)
        else:
            files = await self._at(address, protocol.DUMP, database)
        return dict(files)

    async def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class SyncClient:
    """Blocking cluster admin: the same coroutines as `Client`, run on the background loop."""

    def __init__(
        self, servers: NodeStore | Iterable[str] | str, *, policy: RetryPolicy = DEFAULT_POLICY,
        tls: TLSConfig | ClientTLS | None = None,
    ) -> None:
        self._client = Client(servers, policy=policy, tls=tls)
        self.store = self._client.store

    def leader(self) -> NodeInfo | None:
        return run_sync(self._client.leader())

    def cluster(self) -> list[NodeInfo]:
        return run_sync(self._client.cluster())

    def add(self, node_id: int, address: str, role: int = SPARE) -> None:
        run_sync(self._client.add(node_id, address, role))

    def assign(self, node_id: int, role: int) -> None:
        run_sync(self._client.assign(node_id, role))

    def remove(self, node_id: int) -> None:
        run_sync(self._client.remove(node_id))

    def transfer(self, node_id: int = 0) -> None:
        run_sync(self._client.transfer(node_id))

    def describe(self, address: str) -> NodeMetadata:
        return run_sync(self._client.describe(address))

    def weight(self, address: str, weight: int) -> None:
        run_sync(self._client.weight(address, weight))

    def dump(self, database: str, address: str | None = None) -> dict[str, bytes]:
        return run_sync(self._client.dump(database, address))

    def close(self) -> None:
        run_sync(self._client.close())

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
