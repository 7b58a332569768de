"""The async core behind the DB-API driver: one replicated database, seen from this process.

`Database` keeps a pool of sessions to the current leader, follows the leader
when it changes, and serialises this process's write transactions with one
lock, so writers wait their turn instead of spinning on the engine's immediate
SQLITE_BUSY. Single-statement autocommit writes that arrive while another
write is in flight are coalesced into one engine transaction (group commit):
each statement stays atomic and is acknowledged on its own, only after the
transaction that carries it committed.

Error rules (see errors.py for the classes):

* not-leader, lost connection or no leader *before* a write was sent: retried
  on the new leader under the retry policy;
* SQLITE_BUSY (another process writing): retried for `policy.busy_timeout`;
* leadership lost or connection lost while a commit was in flight:
  `OutcomeUnknownError` (the write may have committed), never retried;
* a failure inside an open transaction: `TransactionLostError`, the
  application retries the whole transaction;
* a write whose node stops answering while another node says it leads
  (`cowsqlpy.watchdog`): its connection is closed and it is handled as a lost
  reply (resolved on the new leader), not after the whole attempt timeout;
* a query that fails with leadership lost (the engine's barrier before it): it
  wrote nothing, retried on the new leader;
* no poison-pill retries: a query or a group-committed write during which its
  node died (the connection dropped and the node answers no fresh one; a reply
  timeout does not count) is sent to the next leader once more; when a second
  node dies serving it, `QueryOfDeathError`: a statement that crashes the engine
  costs at most two nodes, never every node in turn.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import protocol, versions
from .barrier import ReadBarrier
from .batching import GroupCommitter
from .client import STATEMENT_CACHE_SIZE, LeaderTracker, PreparedStatement, Session, node_gone
from .errors import (
    AccessDeniedError,
    BusyError,
    ConnectionLostError,
    Error,
    LeadershipLostError,
    NoDatabaseError,
    NotLeaderError,
    OutcomeUnknownError,
    QueryOfDeathError,
    ReplyTimeoutError,
    TransactionLostError,
)
from .retry import RetryPolicy, retrying
from .shared_reads import SharedReads
from .store import NodeStore
from .tls import ClientTLS, TLSConfig
from .versions import EngineFeatures
from .watchdog import StallWatchdog

log = logging.getLogger("cowsqlpy.database")

MAX_IDLE_SESSIONS = 32
# A pooled session idle longer than this is asked who leads before it is reused:
# its node may have been frozen (SIGSTOP, a stalled VM) or deposed meanwhile, and a
# request to a frozen node would wait the whole attempt timeout. It gets the policy's
# stall_grace to answer (a node silent that long is suspect: cowsqlpy.watchdog), at
# most IDLE_CHECK_TIMEOUT; dropping a pooled session costs only a reconnect.
IDLE_CHECK_AFTER = 1.0
IDLE_CHECK_TIMEOUT = 1.0
MAX_BATCH = 512  # statements per group commit
# distinct statement texts of a batch run as prepared statements (well under the
# session's STATEMENT_CACHE_SIZE: see Database._prepared_texts); 0 turns it off
MAX_PREPARED_TEXTS = STATEMENT_CACHE_SIZE // 4
PIPELINE_WINDOW = 256  # EXEC requests in flight during executemany
# Node deaths one statement may see before it is given up (see QueryOfDeathError): the
# first may be an ordinary crash that happened to hit it, the second is its own doing.
MAX_NODE_DEATHS = 2

# Errors that mean "this session no longer talks to a leader's open database".
SESSION_GONE = (NotLeaderError, ConnectionLostError, NoDatabaseError, LeadershipLostError)

BEGIN = "BEGIN IMMEDIATE"  # takes the engine's write lock up front: BUSY comes at BEGIN, where a retry is safe

# Every transaction the driver commits also writes this client's marker row (its
# commit counter) in the same transaction, so a commit whose reply was lost with
# the leader can be resolved (see _resolve). One small row per client: no scan,
# one page per commit.
MARKERS = "cowsqlpy_commit_markers"
MARKERS_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {MARKERS} "
    "(client INTEGER PRIMARY KEY, seq INTEGER NOT NULL, probe INTEGER NOT NULL DEFAULT 0, at INTEGER NOT NULL); "
    f"DELETE FROM {MARKERS} WHERE at < strftime('%s', 'now') - 86400"  # clients gone for a day
)
MARKER_WRITE = f"INSERT OR REPLACE INTO {MARKERS} (client, seq, at) VALUES (?, ?, strftime('%s', 'now'))"
COMMIT_WITH_MARKER = f"{MARKER_WRITE}; COMMIT"
#: Tells, on a session to the current leader, whether a transaction committed
#: (True/False), or None when it cannot; see `Database.commit`.
CommitCheck = Callable[[Session], Awaitable[bool | None]]

# Resolution: a write that always changes a page (so it is a raft entry of the
# current term), whether or not the client's row exists yet.
MARKER_PROBE = (
    f"INSERT INTO {MARKERS} (client, seq, at) VALUES (?, 0, strftime('%s', 'now')) "
    "ON CONFLICT (client) DO UPDATE SET probe = probe + 1"
)


@dataclass(eq=False)
class _Write:
    sql: str
    params: Sequence[Any]
    future: asyncio.Future[tuple[int, int]] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    deaths: int = 0  # nodes that died while a batch carried it


class _Rerun(Exception):
    """Some writes of a batch are still pending: run them again (after a back-off if `busy`)."""

    def __init__(self, busy: bool = False) -> None:
        super().__init__()
        self.busy = busy


def _statement_error(outcome: object) -> bool:
    return isinstance(outcome, Error) and not isinstance(outcome, SESSION_GONE)


def _deliver(w: _Write, outcome: object) -> None:
    """Settle a write from its reply in a transaction that committed."""
    if isinstance(outcome, SESSION_GONE):
        w.future.set_exception(OutcomeUnknownError("the reply to this statement was lost; its transaction committed"))
    elif isinstance(outcome, BaseException):
        w.future.set_exception(outcome)
    else:
        w.future.set_result(outcome)  # type: ignore[arg-type]  # a RESULT: (last_insert_id, rows_affected)


class Database:
    """One database of a cluster: leader-following session pool, write lock, group commit."""

    def __init__(
        self, store: NodeStore, name: str, policy: RetryPolicy, *, group_commit: bool = True,
        tls: TLSConfig | ClientTLS | None = None,
    ) -> None:
        self.store = store
        self.name = name
        self.policy = policy
        self.group_commit = group_commit
        self.tracker = LeaderTracker(store, policy, tls)  # tls: mutual TLS to every node
        # sessions carrying writes: abandoned when their node froze and another leads
        self.watchdog = StallWatchdog(self.tracker, policy, on_abandon=self._drop_node)
        self.barrier = ReadBarrier(self.tracker, policy, self.watchdog)
        self.write_lock = asyncio.Lock()
        self._idle: list[Session] = []
        # autocommit queries, several pipelined on a session (cowsqlpy.shared_reads)
        self.reads = SharedReads(
            self._acquire, self.release, lambda exc: isinstance(exc, SESSION_GONE), self._take_idle
        )
        self._committer: GroupCommitter[_Write] = GroupCommitter(self._commit_locked, max_items=MAX_BATCH)
        self._markers_ready = False
        self._engine_probe: asyncio.Future[EngineFeatures] | None = None  # see engine_features
        self._client_id = secrets.randbits(63)  # our marker row (secrets: `random` may be seeded)
        self._commits = 0  # the marker's sequence number
        self.resolutions = 0  # lost commit replies resolved through the marker (tests, metrics)
        self.batches = 0  # group commits run (for tests and benchmarks)
        self.batched_statements = 0

    # -- sessions ---------------------------------------------------------------

    async def acquire(self, *, write: bool = False) -> Session:
        """A session to the leader with this database open (retried across leader changes).

        `write`: it will carry writes (or a transaction): the stall watchdog abandons it
        if its node stops answering while another node leads (`cowsqlpy.watchdog`).
        """
        session = await self._acquire()
        if write:
            self.watchdog.watch(session)
        return session

    def _take_idle(self) -> Session | None:
        """A pooled session used within IDLE_CHECK_AFTER (no check needed), or None."""
        while self._idle:
            session = self._idle[-1]
            if session.closed:
                self._idle.pop()
                continue
            return self._idle.pop() if time.monotonic() - session.idle_since <= IDLE_CHECK_AFTER else None
        return None

    async def _acquire(self) -> Session:
        while self._idle:
            session = self._idle.pop()
            if session.closed:
                continue
            if time.monotonic() - session.idle_since > IDLE_CHECK_AFTER and not await self._still_leader(session):
                session.close()
                self._drop_idle()  # its siblings point at the same node
                break
            return session

        async def attempt() -> Session:
            session = Session(await self.tracker.connect(), self.policy)
            try:
                await session.open(self.name)
            except BaseException:
                session.close()
                raise
            return session

        return await retrying(attempt, self.policy, on_reconnect=self._forget_leader, what="connect")

    def release(self, session: Session, error: BaseException | None = None) -> None:
        """Give a session back; one that failed with a leader/connection error is dropped."""
        self.watchdog.unwatch(session)
        if session.closed or isinstance(error, SESSION_GONE):
            session.close()
            if error is not None:
                self._drop_idle()
            return
        if len(self._idle) < MAX_IDLE_SESSIONS:
            session.idle_since = time.monotonic()
            self._idle.append(session)
        else:
            session.close()

    async def _still_leader(self, session: Session) -> bool:
        """Does the session's node answer, quickly, that it leads?"""
        try:
            async with asyncio.timeout(min(IDLE_CHECK_TIMEOUT, self.policy.stall_grace or IDLE_CHECK_TIMEOUT)):
                _, leader = await session.call(protocol.LEADER)
        except (Error, TimeoutError):
            return False
        return bool(leader == session.address)

    async def _forget_leader(self) -> None:
        self._drop_idle()

    def _drop_node(self, address: str) -> None:
        """The watchdog abandoned `address` (another node leads): pool nothing of it."""
        for session in [s for s in self._idle if s.address == address]:
            session.close()
            self._idle.remove(session)
        self.reads.retire_all(address)
        self.barrier.drop_node(address)

    def _drop_idle(self) -> None:
        self.tracker.forget()
        self.reads.retire_all()
        for session in self._idle:
            session.close()
        self._idle.clear()

    async def close(self) -> None:
        if self._engine_probe is not None and not self._engine_probe.done():
            self._engine_probe.cancel()
        self._drop_idle()
        self.barrier.close()
        self.watchdog.close()

    # -- the engine ---------------------------------------------------------------

    async def engine_features(self) -> EngineFeatures:
        """The version-table row of the engine the leader runs, from the engine probe
        (`WireConnection.engine_probe`: cowsql answers FAILURE, libdqlite 1.11 a node
        list, and both keep serving). Sent once per `Database`: concurrent callers
        share it, a failed one is sent again by the next caller.

        :raises OperationalError subclasses: no leader within the retry policy.
        """
        probe = self._engine_probe
        if probe is None or (probe.done() and (probe.cancelled() or probe.exception() is not None)):
            probe = self._engine_probe = asyncio.ensure_future(self._probe_engine())
        return await asyncio.shield(probe)

    async def _probe_engine(self) -> EngineFeatures:
        async def attempt() -> bool:
            session = await self.acquire()
            try:
                failed = await session.conn.engine_probe(timeout=self.policy.attempt_timeout)
            except BaseException as exc:
                self.release(session, exc)
                raise
            self.release(session)
            return failed

        features = versions.features_from_probe(await retrying(attempt, self.policy, what="engine probe"))
        log.info("%s: the engine probe says %s", self.name, features.name)
        return features

    # -- reads ------------------------------------------------------------------

    async def read_barrier(self) -> str:
        """Commit a Raft entry that starts after this call; the address of the node it
        committed on. Every write acknowledged before the call is applied there once
        this returns, so a read that node then serves is linearizable
        (`cowsqlpy.barrier`: concurrent calls share one barrier, which never waits
        for this database's write lock).
        """
        return await self.barrier.wait()

    async def query(self, sql: str, params: Sequence[Any], *, prepared: bool = False,
                    linearizable: bool = False) -> ResultStream:
        """Start a query outside any transaction; retried until its first batch arrives.

        `linearizable`: run it after a read barrier (`read_barrier`), on the node the
        barrier committed on (another barrier if the leader moved in between), so it
        sees every write acknowledged before the call. Without it, the query sees
        what the node that believes it leads has applied: a deposed leader that has
        not noticed yet can serve a stale read (docs/consistency.md).
        """

        async def attempt() -> ResultStream:
            if not linearizable:
                return await start(None)
            barrier_node = await self.read_barrier()
            with self.barrier.reading():
                return await start(barrier_node)

        async def start(barrier_node: str | None) -> ResultStream:
            session = await self.reads.lease()
            if barrier_node is not None and session.address != barrier_node:
                self.reads.release(session)
                raise NotLeaderError(f"the leader moved from {barrier_node} after the read barrier")
            stream: ResultStream | None = None
            try:
                stmt = await session.cached_statement(sql) if prepared else None
                rows = session.query_sql(sql, params) if stmt is None else session.query(stmt, params)
                stream = ResultStream(rows, session, self.reads.release)
                await stream.start()
            except BaseException as exc:
                if stream is None or not stream.finished:  # a stream that ended has given its session back
                    self.reads.release(session, exc)
                deaths[0] = await self._count_death(session.address, exc, deaths[0], sql)
                if isinstance(exc, LeadershipLostError):
                    # the engine's barrier before a query (a new leader applying its log)
                    # lost leadership: a query wrote nothing, so nothing is in doubt
                    raise NotLeaderError(f"leadership lost before the query ran: {exc.message}") from exc
                raise
            return stream

        deaths = [0]
        return await retrying(attempt, self.policy, on_reconnect=self._forget_leader, what="query")

    # -- autocommit writes --------------------------------------------------------

    async def execute(self, sql: str, params: Sequence[Any], *, coalesce: bool) -> tuple[int, int]:
        """Run one statement that returns no rows in its own transaction.

        With `coalesce`, concurrent calls share engine transactions (group commit).
        """
        if coalesce and self.group_commit:
            write = _Write(sql, params)
            self._committer.submit(write)
            return await write.future
        async with self.write_lock:
            return await retrying(lambda: self._exec_once(sql, params), self.policy, on_reconnect=self._forget_leader, what="exec")

    async def _exec_once(self, sql: str, params: Sequence[Any]) -> tuple[int, int]:
        session = await self.acquire(write=True)
        try:
            result = await session.exec_sql(sql, params)
        except ConnectionLostError as exc:
            self.release(session, exc)
            raise OutcomeUnknownError(f"connection lost while a write was in flight: {exc.message}") from exc
        except BaseException as exc:
            self.release(session, exc)
            raise
        self.release(session)
        return result

    async def _commit_locked(self, batch: list[_Write]) -> None:
        async with self.write_lock:
            await retrying(functools.partial(self._commit_batch, batch), self.policy, on_reconnect=self._forget_leader, what="group commit")

    async def _commit_batch(self, batch: list[_Write]) -> None:
        todo = [w for w in batch if not w.future.done()]
        busy_since = time.monotonic()
        attempt = 0
        while todo:
            try:
                await self._run_batch(todo)
                return
            except _Rerun as rerun:
                todo = [w for w in todo if not w.future.done()]
                if rerun.busy:  # another process holds the write lock: back off, up to busy_timeout
                    attempt += 1
                    if time.monotonic() - busy_since > self.policy.busy_timeout:
                        raise BusyError("database is locked (busy timeout reached)", 5) from None
                    await asyncio.sleep(self.policy.delay(attempt, busy=True))

    async def _run_batch(self, todo: list[_Write]) -> None:
        """Run `todo` as one transaction, pipelined: BEGIN, every statement, then the
        commit with this client's marker, all sent at once, then the replies read.

        A deferred BEGIN cannot fail on a lock, so every statement runs inside the
        transaction unless the node cannot serve the session at all. Each reply is
        that statement's truth. A statement error normally undoes only that
        statement; a few (ON CONFLICT ROLLBACK, RAISE(ROLLBACK), SQLITE_FULL) end the
        whole transaction, after which the next statements run and commit on their
        own; a ROLLBACK probe tells the cases apart. When replies are lost with the
        session or the leader, the marker says whether the commit happened
        (`_resolve`). Where nothing can say what happened, the caller gets
        `OutcomeUnknownError`, never a false acknowledgement.
        """
        session = await self.acquire(write=True)
        try:
            await self._ensure_markers(session)
        except BaseException as exc:
            self.release(session, exc)
            raise
        prepared = await self._prepared_texts(session, todo)
        marker = self._next_marker()
        replies = [session.submit_exec_sql("BEGIN")]
        replies += [
            session.submit_exec_sql(w.sql, w.params) if (stmt := prepared.get(w.sql)) is None
            else session.send_exec(stmt, w.params)
            for w in todo
        ]
        replies.append(session.submit_exec_sql(COMMIT_WITH_MARKER, (self._client_id, marker)))
        begin, *outcomes, tail = await _gather_outcomes(replies)

        if isinstance(begin, Error) and not isinstance(begin, ConnectionLostError):
            # The node refused the session (not leader); whatever ran after BEGIN ran on its own.
            self.release(session, begin)
            for w, outcome in zip(todo, outcomes, strict=True):
                if not isinstance(outcome, Error):
                    w.future.set_result(outcome)
                elif outcome.retry == "never":
                    w.future.set_exception(outcome)
            raise begin if begin.retry != "never" else ConnectionLostError(begin.message)

        failures = [i for i, o in enumerate(outcomes) if _statement_error(o)]
        gone = next((o for o in (begin, *outcomes, tail) if isinstance(o, SESSION_GONE)), None)
        if gone is not None:
            self.release(session, gone)
            # A second death raises here, unresolved: with two nodes gone a quorum may be too.
            deaths = await self._count_death(session.address, gone, max(w.deaths for w in todo),
                                             "; ".join(w.sql for w in todo[:3]))
            for w in todo:
                w.deaths = deaths
            if await self._resolve(self._marker_check(marker)):  # the commit ran: every statement ran inside it
                for w, outcome in zip(todo, outcomes, strict=True):
                    _deliver(w, outcome)
                self._count(todo)
                return
            if not failures:  # the transaction died with the session: nothing applied
                raise ConnectionLostError(f"batch lost before its commit: {gone.message}") from gone
            self._settle_after_rollback(todo, outcomes, failures, unknown_tail=True)
            raise _Rerun()

        if isinstance(tail, Error):
            # A statement ended the transaction (COMMIT then finds none), or the commit
            # itself failed (BUSY: no statement wrote; a deferred constraint). ROLLBACK tells which.
            try:
                await session.exec_sql("ROLLBACK")
            except SESSION_GONE as exc:
                self.release(session, exc)
                raise ConnectionLostError(f"session lost after a failed commit: {exc.message}") from exc
            except Error:  # no transaction left: a statement ended it
                self.release(session)
                if not failures:
                    raise OutcomeUnknownError(f"the batch transaction ended unexpectedly: {tail.message}") from tail
                self._settle_after_rollback(todo, outcomes, failures)
                raise _Rerun() from None
            self.release(session)
            for i in failures:  # their errors stand: nothing of theirs was applied
                if not isinstance(outcomes[i], BusyError):
                    todo[i].future.set_exception(outcomes[i])
            if isinstance(tail, BusyError):
                raise _Rerun(busy=True)
            if len(todo) == 1:
                if not todo[0].future.done():
                    todo[0].future.set_exception(tail)
                return
            for w in todo:  # find the culprit by running each on its own
                if not w.future.done():
                    await self._run_batch([w])
            return

        self.release(session)
        self._count(todo)
        busy = False
        for w, outcome in zip(todo, outcomes, strict=True):
            if isinstance(outcome, BusyError):
                busy = True  # it wrote nothing; the others committed without it
            else:
                _deliver(w, outcome)
        if busy:
            raise _Rerun(busy=True)

    @staticmethod
    async def _prepared_texts(session: Session, todo: list[_Write]) -> dict[str, PreparedStatement]:
        """The batch's statement texts this session has prepared (`Session.cached_statement`:
        from a text's second use), so the leader runs them without compiling each.

        A text whose PREPARE fails is left to EXEC_SQL, which gives its write that error.
        Few texts only: preparing one evicts the least recently used statement, which
        must never be one this batch is about to run (the engine reuses freed ids)."""
        texts = dict.fromkeys(w.sql for w in todo)
        if len(texts) > MAX_PREPARED_TEXTS:
            return {}
        prepared: dict[str, PreparedStatement] = {}
        for sql in texts:
            try:
                stmt = await session.cached_statement(sql)
            except Error:
                continue
            if stmt is not None:
                prepared[sql] = stmt
        return prepared

    async def _node_died(self, address: str, exc: BaseException) -> bool:
        """Whether `exc`, which ended a try of a statement on `address`, means that node
        died: its connection dropped (a reply timeout is no such evidence: a long
        query blocks the engine's thread) and it answers no fresh one."""
        if not isinstance(exc, ConnectionLostError) or isinstance(exc, ReplyTimeoutError):
            return False
        return await node_gone(address, self.policy, tls=self.tracker.tls)

    async def _count_death(self, address: str, exc: BaseException, deaths: int, sql: str) -> int:
        """The node deaths one statement has seen, counting the try `exc` ended on
        `address`. :raises QueryOfDeathError: that was the MAX_NODE_DEATHS-th."""
        if not await self._node_died(address, exc):
            return deaths
        deaths += 1
        if deaths >= MAX_NODE_DEATHS:
            raise self._query_of_death(address, deaths, sql, exc)
        log.warning("node %s died while serving a statement; sending it once more: %.200s", address, sql)
        return deaths

    @staticmethod
    def _query_of_death(address: str, deaths: int, sql: str, exc: BaseException) -> QueryOfDeathError:
        log.error("%d nodes died while serving one statement (the last %s); not sent again: %.200s",
                  deaths, address, sql)
        error = QueryOfDeathError(
            f"{deaths} nodes died while serving this statement (the last {address}); it is not sent "
            f"again: it may be what kills them. SQL: {sql[:200]}"
        )
        error.__cause__ = exc
        return error

    def _count(self, todo: list[_Write]) -> None:
        self.batches += 1
        self.batched_statements += len(todo)

    async def _ensure_markers(self, session: Session) -> None:
        if not self._markers_ready:
            try:
                await session.exec_sql(MARKERS_SCHEMA)
            except AccessDeniedError as exc:
                # the driver's own first write: name what the caller did, not our DDL
                raise AccessDeniedError(
                    f"{session.address}: this connection may not write (its certificate's rights): {exc.message}",
                    exc.code,
                ) from exc
            self._markers_ready = True

    def _next_marker(self) -> int:
        self._commits += 1
        return self._commits

    def _marker_check(self, marker: int) -> CommitCheck:
        """Whether our marker row's sequence number reached `marker`."""

        async def check(session: Session) -> bool:
            rows = await session.query_all(f"SELECT seq FROM {MARKERS} WHERE client = ?", (self._client_id,))
            return bool(rows) and rows[0][0] >= marker

        return check

    async def _resolve(self, check: CommitCheck) -> bool:
        """Did a transaction commit? Asked after its COMMIT reply was lost.

        A probe write to our marker row is committed on the current leader
        (idempotent, so retried until acknowledged). Committing it commits, or
        rules out for good, whatever the old leader left in flight: no later
        leader can lack an entry of a newer term. Then `check` says whether our
        transaction made it (its marker row, see `_marker_check`, or its own
        writes; None: it cannot tell).

        :raises OutcomeUnknownError: no leader answered within the retry policy,
            or the check could not tell.
        """

        async def attempt() -> bool | None:
            session = await self.acquire(write=True)
            try:
                try:
                    await session.exec_sql(MARKER_PROBE, (self._client_id,))
                except OutcomeUnknownError as exc:  # the probe itself is in doubt: write it again
                    raise ConnectionLostError(exc.message) from exc
                found = await check(session)
            except BaseException as exc:
                self.release(session, exc)
                raise
            self.release(session)
            return found

        self.resolutions += 1
        try:
            found = await retrying(attempt, self.policy, on_reconnect=self._forget_leader, what="commit resolution")
        except Error as exc:
            raise OutcomeUnknownError(f"commit outcome unknown, no leader to ask: {exc.message}") from exc
        if found is None:
            raise OutcomeUnknownError("commit outcome unknown: its check could not tell")
        return found

    @staticmethod
    def _settle_after_rollback(
        todo: list[_Write], outcomes: list[Any], failures: list[int], *, unknown_tail: bool = False
    ) -> None:
        """Settle what the replies prove after the batch transaction was rolled back.

        Statements before the first failure were inside it: undone, left to run
        again. Failed statements get their errors. Between the first and the last
        failure nobody knows where the rollback struck: outcome unknown. After the
        last failure the transaction was surely gone, so a success there committed
        on its own (unless the session died too: `unknown_tail`).
        """
        first, last = failures[0], failures[-1]
        for i in range(first, len(todo)):
            w, outcome = todo[i], outcomes[i]
            if isinstance(outcome, Error) and not isinstance(outcome, SESSION_GONE):
                w.future.set_exception(outcome)
            elif i < last or unknown_tail or isinstance(outcome, BaseException):
                w.future.set_exception(
                    OutcomeUnknownError("a statement batched with this one rolled the transaction back")
                )
            else:
                w.future.set_result(outcome)

    async def _abandon(self, session: Session, exc: BaseException) -> None:
        if not isinstance(exc, SESSION_GONE) and not session.closed:
            try:
                await session.exec_sql("ROLLBACK")
            except Error as rollback_error:
                exc = rollback_error
        self.release(session, exc if isinstance(exc, SESSION_GONE) else None)

    async def execute_script(self, sql: str) -> tuple[int, int]:
        """Run every statement of `sql` (EXEC_SQL). Never retried once sent: the engine
        commits statement by statement, so a failure part-way leaves the outcome unknown."""
        async with self.write_lock:
            session = await self.acquire(write=True)
            try:
                result = await session.exec_sql(sql)
            except SESSION_GONE as exc:
                self.release(session, exc)
                raise OutcomeUnknownError(f"script interrupted, some statements may have run: {exc.message}") from exc
            except BaseException as exc:
                await self._end_stray_transaction(session)
                raise exc
            await self._end_stray_transaction(session)
            return result

    async def _end_stray_transaction(self, session: Session) -> None:
        """A script may leave BEGIN without COMMIT: roll it back before pooling the session."""
        try:
            await session.exec_sql("ROLLBACK")
        except SESSION_GONE as exc:
            self.release(session, exc)
            return
        except Error:
            pass  # "no transaction is active": the normal case
        self.release(session)

    # -- transactions -------------------------------------------------------------

    async def begin(self, sql: str = BEGIN, *, linearizable: bool = False) -> Session:
        """Take the write lock and open a transaction on a leader session.

        `linearizable`: open it after a read barrier, on the node that committed it, so
        its reads see every write acknowledged before the call; without it a
        transaction that only reads sees what a deposed leader had applied (its commit
        then writes nothing and goes through no quorum).
        """
        session, _ = await self._begin(sql, None, linearizable=linearizable)
        return session

    async def begin_reading(
        self, query: str, params: Sequence[Any] = (), *, prepared: bool = False
    ) -> tuple[Session, list[tuple[Any, ...]]]:
        """`begin` with `query` sent right behind BEGIN IMMEDIATE (one round trip):
        its rows are read inside the new transaction. `prepared`: see `Session.query_all`."""
        return await self._begin(BEGIN, (query, params), prepared)

    async def _begin(
        self, sql: str, read: tuple[str, Sequence[Any]] | None, prepared: bool = False, *,
        linearizable: bool = False,
    ) -> tuple[Session, list[tuple[Any, ...]]]:
        await self.write_lock.acquire()
        try:

            async def attempt() -> tuple[Session, list[tuple[Any, ...]]]:
                barrier_node = await self.read_barrier() if linearizable else None
                session = await self.acquire(write=True)
                if barrier_node is not None and session.address != barrier_node:
                    self.release(session)
                    raise NotLeaderError(f"the leader moved from {barrier_node} after the read barrier")
                try:
                    await self._ensure_markers(session)  # DDL must not join the transaction
                    if read is None:
                        await session.exec_sql(sql)
                        return session, []
                    begun = session.submit_exec_sql(sql)
                    reading = asyncio.ensure_future(session.query_all(*read, prepared=prepared))  # sent before BEGIN's reply
                    try:
                        await begun
                    except BaseException:
                        await asyncio.wait([reading])  # the BEGIN error is the one that counts
                        if not reading.cancelled():
                            reading.exception()
                        raise
                except BaseException as exc:
                    self.release(session, exc)
                    if read is not None:
                        deaths[0] = await self._count_death(session.address, exc, deaths[0], read[0])
                    raise
                try:
                    return session, await reading
                except BaseException as exc:  # the transaction is open: roll it back first
                    await self._abandon(session, exc)
                    deaths[0] = await self._count_death(session.address, exc, deaths[0], read[0])
                    raise

            deaths = [0]
            return await retrying(attempt, self.policy, on_reconnect=self._forget_leader, what="begin")
        except BaseException:
            self.write_lock.release()
            raise

    async def commit(self, session: Session, before: Sequence[str] = (), *,
                     check: CommitCheck | None = None) -> None:
        """COMMIT and release; the lock is released whatever happens, except when the
        COMMIT itself fails and leaves the transaction open (a deferred constraint).

        `before`: statements (SQL with literal values: see `sqltext.literal`) sent
        in the same request, just before COMMIT. The engine runs them in order
        and stops at the first error, so a failed one never lets the rest, or the
        COMMIT, run: the transaction cannot commit part of them.

        `check`: for a transaction whose own writes can tell whether it committed
        (with `before` non-empty): no marker row is written (one page less to
        replicate) and a lost reply is resolved by `check` instead.

        :raises TransactionLostError: the transaction did not commit (now certain).
        :raises OutcomeUnknownError: the reply was lost and no leader could tell.
        """
        params: tuple[int, ...] = ()
        if check is not None and before:
            sql = "; ".join([*before, "COMMIT"])
        else:
            marker = self._next_marker()
            sql = "; ".join([MARKER_WRITE, *before, "COMMIT"]) if before else COMMIT_WITH_MARKER
            params = (self._client_id, marker)
            check = self._marker_check(marker)
        try:
            await session.exec_sql(sql, params)
        except SESSION_GONE as exc:
            try:
                await self._settle_lost_reply(session, exc, check)
            finally:
                self.write_lock.release()
            return
        except BaseException:
            raise  # e.g. a deferred constraint: the transaction stays open for rollback
        self.release(session)
        self.write_lock.release()

    async def write(self, sql: str, params: Sequence[Any], check: CommitCheck) -> bool:
        """One write statement in a transaction of its own (autocommit), run as a
        prepared statement from its second use on: one round trip, no BEGIN or
        COMMIT to compile and run. Whether it changed any row (a statement whose
        WHERE guards it may change none). A lost reply is resolved by `check` (as
        in `commit`), which must look for the statement's effect.

        :raises Error: the statement failed (BUSY included); nothing was written.
        :raises TransactionLostError: the reply was lost and it did not commit.
        :raises OutcomeUnknownError: the reply was lost and no leader could tell.
        """
        async with self.write_lock:
            session = await self.acquire(write=True)
            try:
                await self._ensure_markers(session)  # for the probe of a lost reply
                stmt = await session.cached_statement(sql)
                _, changed = await (session.exec_sql(sql, params) if stmt is None
                                    else session.send_exec(stmt, params))
            except SESSION_GONE as exc:
                await self._settle_lost_reply(session, exc, check)
                return True   # `check` found the statement's effect
            except BaseException as exc:
                self.release(session, exc)
                raise
            self.release(session)
            return changed > 0

    async def _settle_lost_reply(self, session: Session, exc: Error, check: CommitCheck) -> None:
        """Drop the session whose COMMIT reply was lost; return if the transaction
        committed after all. :raises TransactionLostError: it did not."""
        self.release(session, exc)
        if not await self._resolve(check):
            raise TransactionLostError(f"the leader changed before the commit applied: {exc.message}") from exc

    async def rollback(self, session: Session) -> None:
        try:
            if not session.closed:
                await session.exec_sql("ROLLBACK")
        except Error as exc:
            self.release(session, exc if isinstance(exc, SESSION_GONE) else ConnectionLostError("rollback failed"))
        else:
            self.release(session)
        finally:
            self.write_lock.release()

    def lose(self, session: Session, exc: BaseException) -> None:
        """A transaction's session failed: drop it and free the lock."""
        self.release(session, exc)
        self.write_lock.release()

    async def executemany(self, session: Session, sql: str, seq: Sequence[Sequence[Any]]) -> int:
        """Run `sql` for each parameter set, pipelined, atomically inside the open transaction.

        :returns: total rows affected.
        """
        stmt = await session.prepare(sql)
        await session.exec_sql("SAVEPOINT cowsqlpy_many")
        # A sliding window of requests in flight: the engine never waits for us.
        in_flight: collections.deque[Coroutine[Any, Any, tuple[int, int]]] = collections.deque()
        total = 0
        error: BaseException | None = None
        for params in seq:
            if len(in_flight) >= PIPELINE_WINDOW:
                try:
                    total += (await in_flight.popleft())[1]
                except BaseException as exc:
                    error = exc
                    break
            in_flight.append(session.send_exec(stmt, params))
        while in_flight:  # every reply already owed is read, even after an error
            try:
                total += (await in_flight.popleft())[1]
            except BaseException as exc:
                error = error or exc
        if error is not None:
            if isinstance(error, SESSION_GONE) or session.closed:
                raise error
            await session.exec_sql("ROLLBACK TO cowsqlpy_many")
            await session.exec_sql("RELEASE cowsqlpy_many")
            await session.finalize(stmt)
            raise error
        await session.exec_sql("RELEASE cowsqlpy_many")
        await session.finalize(stmt)
        return total


async def _gather_outcomes(replies: list[Coroutine[Any, Any, Any]]) -> list[Any]:
    """Await pipelined replies in order; an Error becomes the outcome instead of raising."""
    outcomes: list[Any] = []
    try:
        for reply in replies:
            try:
                outcomes.append(await reply)
            except Error as exc:
                outcomes.append(exc)
    finally:
        for reply in replies[len(outcomes) + 1 :]:
            reply.close()  # cancelled part-way: never leave a coroutine un-awaited
    return outcomes


class ResultStream:
    """Batches of one result set, read on demand (memory stays bounded)."""

    def __init__(
        self,
        batches: AsyncIterator[tuple[list[str], list[tuple[Any, ...]]]],
        session: Session,
        release: Callable[[Session, BaseException | None], None] | None,
    ) -> None:
        self._batches = batches
        self.session = session
        self._release = release  # set: gives the session back when the stream ends
        self.columns: list[str] = []
        self.first: list[tuple[Any, ...]] | None = None
        self.finished = False

    async def start(self) -> None:
        """Wait for the first batch (so errors surface at execute time)."""
        self.first = await self._next()

    async def _next(self) -> list[tuple[Any, ...]] | None:
        if self.finished:
            return None
        try:
            columns, rows = await self._batches.__anext__()
        except StopAsyncIteration:
            self._finish()
            return None
        except BaseException as exc:
            self._finish(exc)
            raise
        self.columns = columns
        return rows

    async def next_batch(self) -> list[tuple[Any, ...]] | None:
        """The next batch of rows, or None at the end."""
        if self.first is not None:
            rows, self.first = self.first, None
            return rows
        return await self._next()

    def _finish(self, exc: BaseException | None = None) -> None:
        if not self.finished:
            self.finished = True
            if self._release is not None:
                self._release(self.session, exc)

    async def materialize(self) -> None:
        """Read the rest into memory now, so the session can take the next request."""
        rows = list(self.first or [])
        self.first = None
        while (batch := await self._next()) is not None:
            rows.extend(batch)
        self.first = rows

    async def aclose(self) -> None:
        """Abandon the rest (the wire layer discards it as it arrives)."""
        if not self.finished:
            await self._batches.aclose()  # type: ignore[attr-defined]
            self._finish()

