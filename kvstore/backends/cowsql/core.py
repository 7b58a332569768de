"""The async store of one database: committer, reads, watch poller, lease reaper, compactor.
All its coroutines run on the loop it was created on."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from cowsqlpy.batching import GroupCommitter
from cowsqlpy.client import Session, as_store
from cowsqlpy.database import SESSION_GONE, Database
from cowsqlpy.errors import BusyError, ConnectionLostError, TransactionLostError
from cowsqlpy.errors import Error as EngineError
from cowsqlpy.errors import OutcomeUnknownError as EngineOutcomeUnknown
from cowsqlpy.retry import RetryPolicy, retrying
from cowsqlpy.runtime import wait_event
from cowsqlpy.store import NodeStore
from cowsqlpy.tls import TLSConfig

from ...backend import Backend
from ...errors import (
    BackendError,
    ClosedError,
    CompactedError,
    FutureRevisionError,
    KVError,
    LeaseNotFound,
    OperationTimeout,
)
from ...types import (
    Compare,
    DeleteRange,
    DeleteResult,
    Event,
    EventType,
    KeyValue,
    LeaseInfo,
    Op,
    Put,
    PutResult,
    RangeResult,
    TxnResult,
)
from ...watch import WatchStream
from . import schema as S
from . import tuning as C
from .batch import OpKind, Query, _Batch, _Failed, _Op, live_kv, range_sql
from .errors import kv_error, unknown_outcome

log = logging.getLogger("kvstore.cowsql")


class CowsqlCore(Backend):
    """The async store: committer, reads, watch poller, lease reaper, compactor.
    All coroutines run on the loop it was created on (``self.loop``). Handles that
    share it (see `url.open_backend`) each hold a reference; the last close stops it."""

    scheme = "cowsql"

    def __init__(self, servers: list[str] | NodeStore, database: str, timeout: float,
                 auto_compact: int = 0, linearizable: bool = True,
                 tls: TLSConfig | None = None) -> None:
        self.servers = servers
        self.refs = 1
        self.on_last_close: Callable[[], None] | None = None
        self.linearizable = linearizable  # user-facing reads after a read barrier
        self.database = database
        self.auto_compact = auto_compact   # revisions of history to keep (0: never compact)
        self.policy = RetryPolicy(max_tries=1000, backoff=0.01, backoff_cap=0.25,
                                  deadline=timeout, busy_timeout=timeout,
                                  attempt_timeout=min(10.0, timeout))
        self.db = Database(as_store(servers), database, self.policy, group_commit=False, tls=tls)
        self.loop: asyncio.AbstractEventLoop = asyncio.get_running_loop()
        self._committer: GroupCommitter[_Op] = GroupCommitter(
            self._run_batch, max_items=C.MAX_BATCH, max_bytes=C.MAX_BATCH_BYTES,
            size=lambda op: op.size, gather=self._gather, map_error=self._map)
        self._recent: collections.deque[int] = collections.deque(maxlen=C.GATHER_MEMORY)
        # The state of recently written keys as of revision _known_rev (0: none), kept
        # while no other writer moved the revision: see _put_known.
        self._known: dict[bytes, KeyValue | None] = {}
        self._known_rev = 0
        self._known_bytes = 0
        self.known_puts = 0       # puts committed in one round trip (tests, metrics)
        self._expect = 1          # ops a batch should gather (the recent batch size)
        self._filled: asyncio.Event | None = None
        self._streams: dict[WatchStream, int] = {}
        self._pos: int | None = None
        self._wlock: asyncio.Lock | None = None
        self._wake: asyncio.Event | None = None
        self._poller: asyncio.Task[None] | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._compactor: asyncio.Task[None] | None = None
        self._auto_compactor: asyncio.Task[None] | None = None
        self._compact_target = 0
        self._closed = False
        self.batches = 0           # group commits run (tests, benchmark)
        self.batched_ops = 0

    async def start(self) -> None:
        self._wlock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._filled = asyncio.Event()
        await self._ensure_schema()
        self._reaper = asyncio.ensure_future(self._reap_loop())
        if self.auto_compact:
            self._auto_compactor = asyncio.ensure_future(self._auto_compact_loop())

    # ---------------------------------------------------------------- schema
    async def _ensure_schema(self) -> None:
        async def attempt() -> None:
            session, _ = await self._begin()
            try:
                for stmt in S.SCHEMA:
                    await session.exec_sql(stmt)
                (version,), = await session.query_all("SELECT schema_version FROM kv_meta")
                while version in S.MIGRATIONS:
                    log.info("cowsql: database %r: kvstore schema %d -> %d", self.database,
                             version, version + 1)
                    for stmt in S.MIGRATIONS[version]:
                        await session.exec_sql(stmt)
                    version += 1
                if version == S.SCHEMA_VERSION:
                    for stmt in S.VIEWS:
                        await session.exec_sql(stmt)
            except BaseException as exc:
                await self._abandon(session, exc)
                raise
            if version != S.SCHEMA_VERSION:   # newer (or unknown): never touch it
                await self.db.rollback(session)
                raise BackendError(f"cowsql: database {self.database!r} has kvstore schema "
                                   f"{version}, this code knows {S.SCHEMA_VERSION}")
            try:
                await self.db.commit(session)
            except EngineError as exc:   # idempotent DDL: an unknown outcome may be retried too
                raise ConnectionLostError(f"kvstore schema commit: {exc.message}") from exc

        try:
            await retrying(attempt, self.policy, what="kvstore schema")
        except EngineError as exc:
            raise kv_error(exc) from exc

    @staticmethod
    def _map(exc: BaseException) -> BaseException:
        return kv_error(exc) if isinstance(exc, EngineError) else exc

    async def _begin(self, read: Query | None = None) -> tuple[Session, list[tuple[Any, ...]]]:
        """BEGIN IMMEDIATE on the leader, with ``read``'s rows read inside it."""
        try:
            if read is None:
                return await self.db.begin(), []
            return await self.db.begin_reading(*read, prepared=True)
        except EngineError as exc:
            raise kv_error(exc) from exc

    async def _abandon(self, session: Session, exc: BaseException) -> None:
        """End a transaction that did not reach COMMIT (nothing applied)."""
        if isinstance(exc, SESSION_GONE) or session.closed or not isinstance(exc, EngineError):
            session.close()   # never pool a session whose transaction state is unknown
            self.db.lose(session, exc)
        else:
            await self.db.rollback(session)

    # ---------------------------------------------------------------- writes
    def submit(self, kind: OpKind, *args: Any, size: int = 0) -> asyncio.Future[Any]:
        if self._closed:
            raise ClosedError("cowsql: the store is closed")
        op = _Op(kind, args, size)
        self._committer.submit(op)
        if len(self._committer.pending) >= self._expect and self._filled is not None:
            self._filled.set()
        return op.future

    async def _gather(self) -> None:
        """Clients whose ops a batch acknowledged send their next ones a moment
        later (an HTTP round trip): starting the next batch with the first of
        them would split every wave of ops in two, halving the batch size.
        Wait, at most C.GATHER_WAIT, until as many ops are queued as the recent
        batches held. A lone client never waits (its batches hold one op)."""
        if len(self._committer.pending) >= self._expect or self._filled is None:
            return
        self._filled.clear()
        await wait_event(self._filled, C.GATHER_WAIT)

    async def _run_batch(self, batch: list[_Op]) -> None:
        self._recent.append(len(batch))
        self._expect = max(self._recent)
        if len(batch) == 1 and await self._put_known(batch[0]):
            return
        try:
            await retrying(lambda: self._try_batch(batch), self.policy, what="kvstore batch")
        except (*SESSION_GONE, BusyError, ConnectionLostError) as exc:
            raise OperationTimeout("cowsql: no leader accepted the write within the retry "
                                   f"deadline ({exc})") from exc

    async def _try_batch(self, batch: list[_Op]) -> None:
        """Evaluate and commit `batch` once. Raises a retryable engine error when nothing
        was applied (the batch is evaluated again on the leader), `OutcomeUnknownError`
        when the commit's outcome cannot be told."""
        b = _Batch()
        first, *rest = b.plan(batch)
        session, rows = await self._begin(first)   # BEGIN and the state read: one round trip
        try:
            b.s = session
            await b.load(rows, rest)
            results = [await b.apply(op) for op in batch]
            stmts = b.statements()
            if not stmts:
                await self.db.rollback(session)   # read-only: nothing to commit
                self._remember(b)
                self._deliver(batch, results, b)
                return
        except BaseException as exc:
            await self._abandon(session, exc)
            if isinstance(exc, SESSION_GONE) and exc.retry == "never":
                raise ConnectionLostError(f"kvstore batch before COMMIT: {exc.message}") from exc
            raise   # before COMMIT nothing was applied: a retryable error re-evaluates
        try:
            # the writes and COMMIT in one request: a failing write stops it, so
            # no part of the batch can commit alone; a lost reply is resolved
            # through the batch's log token (or the driver's commit marker)
            await self.db.commit(session, stmts, check=b.committed if b.log else None)
        except EngineOutcomeUnknown as exc:
            raise unknown_outcome(exc) from exc
        except TransactionLostError as exc:   # lost before COMMIT was applied: nothing committed
            raise ConnectionLostError(f"kvstore batch transaction lost: {exc.message}") from exc
        except BaseException as exc:
            await self._abandon(session, exc)
            raise
        self._remember(b)
        self._deliver(batch, results, b)

    def _remember(self, b: _Batch) -> None:
        """Keep the committed batch's key states (all of them as of ``b.rev``); those
        known from before are still true only if no one else wrote in between."""
        if b.read_rev != self._known_rev:
            self._forget()
        for key, kv in b.kvs.items():
            self._unknow(key)
            if key not in b.bare:   # loaded without its value: not enough for a put
                self._known[key] = kv
                self._known_bytes += len(kv.value) if kv else 0
        while len(self._known) > C.KNOWN_KEYS or self._known_bytes > C.KNOWN_BYTES:
            self._unknow(next(iter(self._known)))   # the least recently written
        self._known_rev = b.rev

    def _unknow(self, key: bytes) -> None:
        if key in self._known:
            old = self._known.pop(key)
            self._known_bytes -= len(old.value) if old else 0

    def _forget(self) -> None:
        self._known.clear()
        self._known_rev = self._known_bytes = 0

    async def _put_known(self, op: _Op) -> bool:
        """A lone put (no compare, no lease) of a key whose state is known: its log
        row, computed from that state, is one guarded INSERT in autocommit (one
        round trip instead of two, and a prepared statement). The guard inserts
        nothing if the revision moved since (another process wrote); the put then
        takes the general path. Whether it was committed."""
        if op.kind is not OpKind.TXN or op.args[0] or len(op.args[1]) != 1 or not self._known_rev:
            return False
        put = op.args[1][0]
        if not isinstance(put, Put) or put.lease or put.key not in self._known:
            return False
        b = _Batch()
        b.rev = b.read_rev = self._known_rev
        b.kvs[put.key] = self._known[put.key]
        result = await b.op_txn((), (put,), ())   # in memory: the key and no lease are known
        try:
            if not await self.db.write(S.PUT_KNOWN, (*b.log[0], self._known_rev), b.committed):
                return False   # the guard: the general path re-reads and forgets stale states
        except EngineOutcomeUnknown as exc:
            raise unknown_outcome(exc) from exc
        except EngineError as exc:   # nothing written (BUSY, leader change): the general path
            log.debug("one-round-trip put not taken: %r", exc)
            return False
        self.known_puts += 1
        self._remember(b)
        self._deliver([op], [result], b)
        return True

    def _deliver(self, batch: list[_Op], results: list[Any], b: _Batch) -> None:
        self.batches += 1
        self.batched_ops += len(batch)
        for op, res in zip(batch, results, strict=True):
            if op.future.done():
                continue
            if isinstance(res, _Failed):
                op.future.set_exception(res.exc)
            else:
                op.future.set_result(res)
        if b.log and self._wake is not None:
            self._wake.set()
        if b.compacted_to:
            self._schedule_compaction(b.compacted_to)

    # ---------------------------------------------------------------- public async API
    async def txn(self, compare: Sequence[Compare], success: Sequence[Op],
                  failure: Sequence[Op]) -> TxnResult:
        size = sum(len(o.key) + len(o.value) for o in (*success, *failure) if isinstance(o, Put))
        res: TxnResult = await self.submit(OpKind.TXN, compare, success, failure, size=size)
        return res

    async def put(self, key: bytes, value: bytes, lease: int = 0, prev_kv: bool = False
                  ) -> PutResult:
        r = await self.txn((), (Put(key, value, lease, prev_kv),), ())
        return r.responses[0]  # type: ignore[return-value]

    async def delete(self, start: bytes, end: bytes = b"", prev_kv: bool = False) -> DeleteResult:
        r = await self.txn((), (DeleteRange(start, end, prev_kv),), ())
        return r.responses[0]  # type: ignore[return-value]

    async def get(self, key: bytes) -> KeyValue | None:
        r = await self.range(key, b"")
        return r.kvs[0] if r.kvs else None

    async def compact(self, revision: int) -> None:
        await self.submit(OpKind.COMPACT, revision)

    async def grant(self, ttl: int) -> tuple[int, int]:
        res: tuple[int, int] = await self.submit(OpKind.GRANT, ttl)
        return res

    async def revoke(self, lease: int) -> None:
        await self.submit(OpKind.REVOKE, lease)

    async def keepalive(self, lease: int) -> int:
        res: int = await self.submit(OpKind.KEEPALIVE, lease)
        return res

    async def expire(self, ids: list[int] | None = None) -> None:
        """Expire leases now: ``ids`` (revoked if they exist) or, with None, every
        lease whose deadline passed on the leader's clock (the reaper's pass)."""
        await self.submit(OpKind.EXPIRE, ids)

    # ---------------------------------------------------------------- reads
    async def _query(self, sql: str, params: Sequence[Any], *, linearizable: bool = False
                     ) -> list[tuple[Any, ...]]:
        """One read statement on the leader; re-run from scratch (reads are
        idempotent) when the leader changes part-way through the result.
        `linearizable`: after a read barrier (for reads users see)."""
        async def attempt() -> list[tuple[Any, ...]]:
            stream = await self.db.query(sql, params, prepared=True, linearizable=linearizable)
            out: list[tuple[Any, ...]] = []
            while (batch := await stream.next_batch()) is not None:
                out.extend(batch)
            return out

        try:
            return await retrying(attempt, self.policy, what="kvstore read")
        except EngineError as exc:
            raise kv_error(exc) from exc

    async def range(self, start: bytes, end: bytes, limit: int = 0, revision: int = 0,
                    keys_only: bool = False, count_only: bool = False) -> RangeResult:
        cond, params = range_sql(start, end)
        val, live = ("x''", "kv_live") if keys_only else ("value", "kv_current")
        if revision > 0:
            ncond, _ = range_sql(start, end, "n.key")
            sql = f"{S.META_SELECT} UNION ALL " + S.AT_REVISION_SELECT.format(
                val=val, pval="x''" if keys_only else "p.value", cond=cond, ncond=ncond, live=live)
            params = [*params, revision, revision, revision, *params]
        elif count_only:
            sql = (f"{S.META_SELECT} UNION ALL SELECT 2, NULL, count(*), 0, 0, 0, 0, 0 "
                   f"FROM kv_live WHERE {cond}")
        else:
            lim = " LIMIT ?" if limit else ""   # a parameter: one statement text to prepare
            sql = (f"{S.META_SELECT} UNION ALL SELECT * FROM (SELECT 1, key, {val}, create_rev, "
                   f"mod_rev, version, lease, 0 FROM {live} WHERE {cond} ORDER BY key{lim})")
            if limit:
                sql += f" UNION ALL SELECT 2, NULL, count(*), 0, 0, 0, 0, 0 FROM kv_live WHERE {cond}"
                params = [*params, int(limit), *params]
        rows = await self._query(sql, params, linearizable=self.linearizable)
        kvs: list[KeyValue] = []
        count = -1
        cur = compact = 0
        for r in rows:
            if r[0] == 0:
                cur, compact = r[2], r[3]
            elif r[0] == 1:
                if not r[7]:
                    kvs.append(live_kv(r, 1))
            else:
                count = r[2]
        if revision > 0:
            if revision > cur:
                raise FutureRevisionError(f"required revision {revision} is a future revision "
                                          f"(current {cur})")
            if revision < compact:
                raise CompactedError(f"required revision {revision} has been compacted "
                                     f"(compacted at {compact})", compact)
            kvs.sort(key=lambda kv: kv.key)
            count = len(kvs)
            if count_only:
                kvs = []
            elif limit:
                kvs = kvs[:limit]
        if count < 0:
            count = len(kvs)
        return RangeResult(tuple(kvs), count, bool(limit) and count > len(kvs) and not count_only,
                           cur)

    async def lease_info(self, lease: int) -> LeaseInfo:
        rows = await self._query(
            f"SELECT 0, ttl, expiry - {S.NOW_MS} FROM kv_lease WHERE id = ? "
            "UNION ALL SELECT 1, key, 0 FROM kv_live WHERE lease = ? AND lease != 0", [lease, lease],
            linearizable=self.linearizable)
        head = [r for r in rows if r[0] == 0]
        if not head:
            raise LeaseNotFound(f"lease {lease:#x} not found")
        ttl, left_ms = head[0][1], head[0][2]
        keys = sorted(bytes(r[1]) for r in rows if r[0] == 1)
        return LeaseInfo(lease, max(0, min(ttl, -(-left_ms // 1000))), ttl, tuple(keys))

    # ---------------------------------------------------------------- watches
    async def _events(self, lo: int, hi: int, start: bytes = b"", end: bytes = b""
                      ) -> tuple[list[Event], int, int]:
        """Events with lo <= revision <= hi (in range if ``start``), the compact
        revision and the current revision, from one snapshot."""
        rng, params = "", [lo, hi]
        if start:
            cond, extra = range_sql(start, end, "l.key")
            rng, params = " AND " + cond, params + extra
        rows = await self._query(S.EVENTS_SELECT.format(range=rng), params)
        compact = cur = 0
        events: list[Event] = []
        for r in rows:
            if r[0] == -1:
                compact, cur = r[4], r[5]
                continue
            rev, key = r[0], bytes(r[2])
            prev = None if r[8] is None else KeyValue(key, bytes(r[8]), r[9], r[12], r[10], r[11])
            if r[7]:
                events.append(Event(EventType.DELETE, KeyValue(key, b"", 0, rev, 0, 0), prev))
            else:
                events.append(Event(EventType.PUT,
                                    KeyValue(key, bytes(r[3]), r[4], rev, r[5], r[6]), prev))
        return events, compact, cur

    async def add_watch(self, stream: WatchStream, start_revision: int) -> None:
        assert self._wlock is not None
        async with self._wlock:
            meta = await self._query(S.META_SELECT, ())
            cur, compact = meta[0][2], meta[0][3]
            if self._pos is None or self._poller is None or self._poller.done():
                self._pos = cur
            first = start_revision or cur + 1
            if first < compact:
                stream._fail(CompactedError(f"watch revision {first} has been compacted "
                                            f"(compacted at {compact})", compact))
                return
            if first <= self._pos:
                events, compact, _ = await self._events(first, self._pos, stream.start, stream.end)
                if first < compact:   # compacted while we read: the backlog may have gaps
                    stream._fail(CompactedError(f"watch revision {first} has been compacted "
                                                f"(compacted at {compact})", compact))
                    return
                stream._push(events)
            self._streams[stream] = first
            if self._poller is None or self._poller.done():
                self._poller = asyncio.ensure_future(self._poll_loop())

    def remove_watch(self, stream: WatchStream) -> None:
        self._streams.pop(stream, None)

    async def watch(self, start: bytes, end: bytes, start_revision: int) -> WatchStream:
        loop = self.loop

        def cancel(s: WatchStream) -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(self.remove_watch, s)

        stream = WatchStream(start, end, cancel)
        await self.add_watch(stream, start_revision)
        return stream

    async def _poll_loop(self) -> None:
        assert self._wake is not None and self._wlock is not None
        failures = 0
        last_event = 0.0
        while self._streams and not self._closed:
            busy = time.monotonic() - last_event < C.POLL_BUSY_FOR
            await wait_event(self._wake, C.POLL_BUSY if busy else C.POLL_INTERVAL)
            self._wake.clear()
            try:
                async with self._wlock:
                    if await self._poll_once():
                        last_event = time.monotonic()
                failures = 0
            except KVError as exc:
                failures += 1
                log.warning("watch poll failed (%r); retrying", exc)
                await asyncio.sleep(min(1.0, 0.05 * failures))

    async def _poll_once(self) -> bool:
        """Deliver every new revision; whether there were events."""
        seen = False
        while self._streams and self._pos is not None:
            lo, hi = self._pos + 1, self._pos + C.EVENT_WINDOW
            events, compact, cur = await self._events(lo, hi)
            if compact > lo:
                err = CompactedError(f"watch revision {lo} has been compacted (compacted at "
                                     f"{compact}) before the watchers read it", compact)
                for s in list(self._streams):
                    s._fail(err)
                self._streams.clear()
                self._pos = cur
                return seen
            if events:
                seen = True
                for s, first in list(self._streams.items()):
                    if s.cancelled:
                        self._streams.pop(s, None)
                        continue
                    s._push(events if events[0].revision >= first else
                            [e for e in events if e.revision >= first])
            self._pos = max(self._pos, min(cur, hi))
            if cur <= hi:
                return seen
        return seen

    # ---------------------------------------------------------------- background jobs
    async def _reap_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(C.REAP_INTERVAL)
            try:
                # A pass is a write transaction, and every process runs a reaper:
                # ask first (a plain read) whether it has anything to do, so idle
                # reapers do not take the engine's write lock from the writers.
                (due,), = await self._query(S.REAP_DUE_SELECT, (C.REAPED_AT_EVERY_MS,))
                if due:
                    await self.expire(None)
            except (KVError, ClosedError) as exc:
                log.debug("lease reaper pass failed: %r", exc)

    async def _auto_compact_loop(self) -> None:
        """Keep the last ``auto_compact`` revisions of history (etcd's revision-mode
        auto-compaction): compact once the history is a tenth longer than that.
        Every process may run it; all but the first find it done (CompactedError)."""
        keep = self.auto_compact
        while not self._closed:
            await asyncio.sleep(C.AUTO_COMPACT_INTERVAL)
            try:
                (rev, compacted), = await self._query(
                    f"SELECT {S.CURRENT_REVISION}, compact_revision FROM kv_meta", ())
                if rev - keep - compacted >= max(1, keep // 10):
                    await self.compact(rev - keep)
            except CompactedError:
                pass
            except (KVError, ClosedError) as exc:
                log.debug("auto-compaction failed: %r", exc)

    def _schedule_compaction(self, target: int) -> None:
        self._compact_target = max(self._compact_target, target)
        if self._compactor is None or self._compactor.done():
            self._compactor = asyncio.ensure_future(self._compact_loop())

    async def _compact_loop(self) -> None:
        done = 0
        try:
            while done < self._compact_target and not self._closed:
                target = self._compact_target
                rows = await self._query("SELECT MIN(rev) FROM kv_log", ())
                lo = max(done, rows[0][0] or target)
                while lo <= target and not self._closed:   # windows of successors, up to C
                    hi = min(target + 1, lo + C.COMPACT_WINDOW)
                    await self.submit(OpKind.CHUNK, lo, hi, target)
                    lo = hi
                done = target
        except KVError as exc:
            log.warning("physical compaction stopped (%r); the next compact() resumes it", exc)

    # ---------------------------------------------------------------- lifecycle
    @property
    def closing(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Drop one handle's reference; the last one stops the store."""
        self.refs -= 1
        if self.refs > 0:
            return
        if self.on_last_close is not None:
            self.on_last_close()
        self._closed = True
        for t in (self._reaper, self._poller, self._compactor, self._auto_compactor):
            if t is not None:
                t.cancel()
        committer = self._committer.task
        if committer is not None and not committer.done():
            try:
                await asyncio.wait_for(asyncio.shield(committer), self.policy.deadline)
            except (TimeoutError, Exception):  # best effort on close
                pass
        err = ClosedError("cowsql: the KV handle was closed")
        for s in list(self._streams):
            s._fail(err)
            s._finish()
        self._streams.clear()
        await self.db.close()
