"""``cowsql://`` backend: a durable, replicated etcd-style store in the SQL engine.

URL: ``cowsql://HOST:PORT[,HOST:PORT...]/DATABASE[?session_ttl=S&timeout=S&private=1&auto_compact=N&read=R]``

The state is a kine-style revision log in SQL tables (see
:mod:`kvstore.backends.cowsql_schema`) with etcd's full semantics: create/mod
revision, version and lease per key, reads at past revisions until compacted,
general txn, leases, compaction, watches from a revision.

How it works (one :class:`CowsqlCore` per process and database, shared by every
handle that names them, asyncio on cowsqlpy's background loop):

* **Group commit.** Every write (put, delete, txn, lease grant/revoke/keepalive,
  expiry, compaction) is an *op* queued to one committer. The committer takes all
  queued ops as a batch, opens one engine write transaction (``BEGIN
  IMMEDIATE``) and reads the meta row and every key/lease the batch names in the
  same round trip, evaluates the ops *in order in Python* against that state
  plus the batch's own earlier changes (each op is all-or-nothing: every check
  happens before it changes anything), then sends the resulting log rows, lease
  rows, the new meta row and COMMIT as one request (the engine stops it at the
  first failing statement, so a batch never commits in part). Each op that
  changes keys gets the next revision, in queue order, so revisions stay
  strictly increasing and gap-free; an op whose compare fails or that deletes
  nothing takes none (as etcd). Each op is acknowledged on its own, only after
  COMMIT returned. The committer waits up to GATHER_WAIT for a wave of returning
  clients (see ``_gather``); reads the backend repeats run as prepared statements.
* **Failures.** Not-leader, lost connection or BUSY before COMMIT: nothing was
  applied; the batch is re-read and re-evaluated on the (new) leader. Leadership
  or connection lost *during* COMMIT: the driver's commit marker resolves it on
  the new leader (`cowsqlpy.database.Database.commit`): committed, and the saved
  results are delivered; or certainly not committed (TransactionLostError), and
  the batch is evaluated again. If no leader can say within the retry deadline,
  every op of the batch fails with :class:`~kvstore.errors.OutcomeUnknownError`: never a false ack,
  never a blind retry.
* **Reads** are single SQL statements on the leader (one snapshot: the meta row
  and the rows together), so a range is consistent with the revision it
  reports. They are linearizable (``read=linearizable``, the default, as etcd's
  Range): each runs after a read barrier, a Raft entry committed after the read
  began, on the node that committed it; concurrent reads share barriers
  (`cowsqlpy.database.Database.read_barrier`). ``read=serializable`` skips the
  barrier: faster, but a deposed leader that does not know it yet can serve a
  stale read (docs/kvstore.md, docs/consistency.md).
* **Watches** poll the log: one poller per core reads new revisions in windows
  (every ``POLL_INTERVAL`` s when idle, ``POLL_BUSY`` s while events flow, at once after a
  local commit), in ``(rev, sub)``
  order, whole revisions at a time; a watch from an old revision is backfilled
  from the log first. A start revision below the compact revision fails with
  :class:`CompactedError`.
* **Leases** live in ``kv_lease`` with their expiry on the *leader's* clock
  (``julianday('now')`` runs on the leader). Every live core runs a reaper op
  every ``REAP_INTERVAL`` s when a plain read shows it work (a lease due, or the
  pass record ``reaped_at`` a second old); the expiry decision happens inside the serialised
  write transaction, so reapers in several processes cannot double-expire. When
  the leader changed since the last reaper pass, or no reaper ran for
  ``LEASE_GAP_MS`` (cluster down, clock jump), every lease is first extended to
  at least its full TTL (etcd's promotion rule), so a new leader's clock or an
  outage never expires a lease early.
* **Compaction** sets ``compact_revision`` at once (reads/watches below it then
  fail) and removes superseded rows afterwards in windows of
  ``COMPACT_WINDOW`` revisions, each its own small op between other writers'
  batches.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import secrets
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cowsqlpy.client import Session, as_store
from cowsqlpy.database import SESSION_GONE, Database
from cowsqlpy.errors import BusyError, ConnectionLostError, TransactionLostError
from cowsqlpy.errors import Error as EngineError
from cowsqlpy.errors import OutcomeUnknownError as EngineOutcomeUnknown
from cowsqlpy.retry import RetryPolicy, retrying
from cowsqlpy.runtime import background_loop, run_sync, wait_event
from cowsqlpy.sqltext import literal
from cowsqlpy.store import NodeStore

from ..errors import (
    BackendError,
    ClosedError,
    CompactedError,
    FutureRevisionError,
    InvalidArgument,
    KVError,
    LeaseNotFound,
    OperationTimeout,
    OutcomeUnknownError,
)
from ..types import (
    RANGE_ALL,
    Compare,
    CompareTarget,
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
    in_range,
)
from ..watch import WatchStream
from . import cowsql_schema as S
from .core_kv import CoreBackedKV

log = logging.getLogger("kvstore.cowsql")
T = TypeVar("T")

DEFAULT_TIMEOUT = 30.0
MAX_BATCH = 256                 # ops per group commit
MAX_BATCH_BYTES = 8 << 20       # payload bytes per group commit
GATHER_WAIT = 0.001             # longest wait for a batch to fill up to the recent batch size
GATHER_MEMORY = 4               # ... the largest of this many recent batches
MAX_PARAMS = 250                # the engine takes at most 255 per statement
MAX_STMT_BYTES = 1 << 20        # payload per multi-row INSERT
ROWS_PER_INSERT = 256       # rows per multi-row INSERT
POLL_INTERVAL = 0.025           # watch poll period when idle (other processes' writes)
POLL_BUSY = 0.005               # ... and while events keep arriving
POLL_BUSY_FOR = 1.0             # seconds after the last event
EVENT_WINDOW = 512              # revisions per watch poll query
REAP_INTERVAL = 0.5             # lease reaper period
REAP_LIMIT = 64                 # leases expired per reaper op
LEASE_GAP_MS = 5000             # no reaper pass for this long: extend every lease
REAPED_AT_EVERY_MS = 1000       # how often a reaper pass records itself
COMPACT_WINDOW = 1000           # revisions per physical compaction op
AUTO_COMPACT_INTERVAL = 10.0    # seconds between auto-compaction checks (auto_compact=N)
KNOWN_KEYS = 10_000             # key states kept for one-round-trip puts (see _put_known)
KNOWN_BYTES = 8 << 20           # ... and their values' bytes


def _unknown(exc: EngineOutcomeUnknown) -> OutcomeUnknownError:
    return OutcomeUnknownError("cowsql: leadership was lost during COMMIT and no leader could say "
                          f"within the deadline whether it committed ({exc})")


def _kv_error(exc: EngineError) -> KVError:
    """The kvstore error for an engine error that survived the retry policy."""
    if isinstance(exc, EngineOutcomeUnknown):
        return OutcomeUnknownError(f"cowsql: {exc}")
    if exc.retry in ("reconnect", "same_leader"):
        return OperationTimeout(f"cowsql: no usable leader within the retry deadline: {exc}")
    return BackendError(f"cowsql: {exc}", exc.code)


def _range_sql(start: bytes, end: bytes, col: str = "key") -> tuple[str, list[Any]]:
    if not end:
        return f"{col} = ?", [start]
    if end == RANGE_ALL:
        return f"{col} >= ?", [start]
    return f"{col} >= ? AND {col} < ?", [start, end]


def _live_kv(r: Sequence[Any], off: int = 0) -> KeyValue:
    """(key, value, create_rev, mod_rev, version, lease) at ``off``."""
    return KeyValue(bytes(r[off]), bytes(r[off + 1]), r[off + 2], r[off + 3], r[off + 4],
                    r[off + 5])


# =============================================================== ops and batches
class OpKind(enum.Enum):
    """The writes the committer batches; each is `_Batch.op_<value>`."""

    TXN = "txn"
    GRANT = "grant"
    REVOKE = "revoke"
    KEEPALIVE = "keepalive"
    EXPIRE = "expire"
    COMPACT = "compact"
    CHUNK = "chunk"  # one window of a physical compaction


@dataclass(eq=False)
class _Op:
    kind: OpKind
    args: tuple[Any, ...]
    size: int = 0
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())


class _Failed:
    """An op's own (deterministic) error: it changed nothing."""

    def __init__(self, exc: KVError) -> None:
        self.exc = exc


Query = tuple[str, list[Any]]


class _Batch:
    """One attempt at one group commit: the state read inside the engine
    transaction plus the batch's own changes, and the SQL they turn into."""

    s: Session   # the transaction's session (set once BEGIN went out)

    def __init__(self) -> None:
        self.kvs: dict[bytes, KeyValue | None] = {}      # known state (pre-batch or overlay)
        self.changed: set[bytes] = set()                 # keys changed by this batch
        self.bare: set[bytes] = set()                    # loaded without their value
        self.leases: dict[int, list[int] | None] = {}    # id -> [ttl, expiry] or None
        self.lease_ins: dict[int, tuple[int, int]] = {}
        self.lease_upd: dict[int, int] = {}
        self.lease_del: set[int] = set()
        self.log: list[tuple[Any, ...]] = []
        self.token = secrets.randbits(63)   # on the first log row: see committed()
        self.raw: list[str] = []
        self.meta_dirty = False
        self.promoted = False
        self.compacted_to = 0
        self._sub_rev = 0
        self._sub = 0
        # The meta row, read inside the transaction (see _fetch).
        self.rev = self.compact_rev = self.next_lease = self.now = self.reaped_at = 0
        self.epoch: str | None = None
        self.read_rev = 0   # the revision the state was read at

    # ---------------------------------------------------------------- loading
    def plan(self, ops: list[_Op]) -> list[Query]:
        """The reads of the state the batch names: the meta row and every key and
        lease its ops name (the first query goes out together with BEGIN)."""
        keys: set[bytes] = set()
        valued: set[bytes] = set()    # keys whose value an op reads
        leases: set[int] = set()
        for op in ops:
            if op.kind is OpKind.TXN:
                compares, success, failure = op.args
                for c in compares:
                    if not c.range_end:
                        (valued if c.target == CompareTarget.VALUE else keys).add(c.key)
                for o in (*success, *failure):
                    if isinstance(o, Put):
                        (valued if o.prev_kv else keys).add(o.key)
                        if o.lease:
                            leases.add(o.lease)
                    elif not o.end:
                        (keys if isinstance(o, DeleteRange) and not o.prev_kv else valued).add(o.key)
            elif op.kind in (OpKind.REVOKE, OpKind.KEEPALIVE):
                leases.add(op.args[0])
            elif op.kind is OpKind.EXPIRE and op.args[0] is not None:
                leases.update(op.args[0])
        return self._fetch_sql(sorted(valued), sorted(leases), meta=True,
                               bare=sorted(keys - valued))

    async def load(self, first: list[tuple[Any, ...]], rest: list[Query]) -> None:
        """Take in the planned reads: the first one's rows, then the rest."""
        self._absorb(first)
        for sql, params in rest:
            self._absorb(await self.s.query_all(sql, params, prepared=True))
        now = self.now
        if (self.epoch != self.s.address or now - self.reaped_at > LEASE_GAP_MS
                or now < self.reaped_at - REAPED_AT_EVERY_MS):
            # leader changed, no reaper for a while, or the clock went back: never
            # expire a lease early on this clock (etcd's lease promotion)
            self.raw.append(f"UPDATE kv_lease SET expiry = MAX(expiry, {int(now)} + ttl * 1000)")
            for st in self.leases.values():
                if st is not None:
                    st[1] = max(st[1], now + st[0] * 1000)
            self.epoch, self.reaped_at = self.s.address, now
            self.meta_dirty = self.promoted = True

    async def _fetch(self, keys: list[bytes], leases: list[int]) -> None:
        for sql, params in self._fetch_sql(keys, leases):
            self._absorb(await self.s.query_all(sql, params, prepared=True))

    def _fetch_sql(self, keys: list[bytes], leases: list[int], meta: bool = False,
                   bare: Sequence[bytes] = ()) -> list[Query]:
        """Queries that load keys (with values), ``bare`` keys (metadata only: their
        values are fetched later if an op needs them; keeps the reply small) and
        leases; each names at most MAX_PARAMS. Marks them all as loaded: a key or
        lease the rows do not mention is absent."""
        out: list[Query] = []
        first = meta
        bare = list(bare)
        while first or keys or leases or bare:
            parts: list[str] = [S.META_SELECT] if first else []
            params: list[Any] = []
            kchunk, keys = keys[:MAX_PARAMS], keys[MAX_PARAMS:]
            room = MAX_PARAMS - len(kchunk)
            bchunk, bare = bare[:room], bare[room:]
            room -= len(bchunk)
            lchunk, leases = leases[:room], leases[room:]
            if kchunk:
                parts.append(f"SELECT 1, {S.LIVE_COLUMNS}, 0 FROM kv_current WHERE key IN "
                             f"({','.join('?' * len(kchunk))})")
                params += kchunk
            if bchunk:
                parts.append("SELECT 3, key, NULL, create_rev, mod_rev, version, lease, 0 "
                             f"FROM kv_live WHERE key IN ({','.join('?' * len(bchunk))})")
                params += bchunk
                for k in bchunk:
                    self.kvs.setdefault(k, None)
            if lchunk:
                parts.append("SELECT 2, id, ttl, expiry, 0, 0, 0, 0 FROM kv_lease WHERE id IN "
                             f"({','.join('?' * len(lchunk))})")
                params += lchunk
            first = False
            for k in kchunk:
                self.kvs.setdefault(k, None)
            for lid in lchunk:
                self.leases.setdefault(lid, None)
            out.append((" UNION ALL ".join(parts), params))
        return out

    def _absorb(self, rows: list[tuple[Any, ...]]) -> None:
        for r in rows:
            if r[0] == 0:
                (self.rev, self.compact_rev, self.next_lease, self.now, self.epoch,
                 self.reaped_at) = r[2:8]
                self.read_rev = self.rev
            elif r[0] == 1:
                kv = _live_kv(r, 1)
                self.kvs[kv.key] = kv
                self.bare.discard(kv.key)
            elif r[0] == 3:
                key = bytes(r[1])
                self.kvs[key] = KeyValue(key, b"", r[3], r[4], r[5], r[6])
                self.bare.add(key)
            else:
                self.leases[r[1]] = [r[2], r[3]]

    async def get(self, key: bytes, value: bool = True) -> KeyValue | None:
        """The key's current state in this batch; ``value=False``: its value may
        be left empty (loaded without it)."""
        if key not in self.kvs or (value and key in self.bare):
            await self._fetch([key], [])
        return self.kvs[key]

    async def lease(self, lid: int) -> list[int] | None:
        if lid not in self.leases:
            await self._fetch([], [lid])
        return self.leases[lid]

    def _merge(self, rows: list[tuple[Any, ...]], pred: Any) -> list[KeyValue]:
        out: dict[bytes, KeyValue] = {}
        for r in rows:
            kv = _live_kv(r)
            if kv.key not in self.changed:
                self.kvs[kv.key] = kv
                self.bare.discard(kv.key)
                out[kv.key] = kv
        for k in self.changed:
            cur = self.kvs[k]
            if cur is not None and pred(cur):
                out[k] = cur
        return [out[k] for k in sorted(out)]

    async def live_range(self, start: bytes, end: bytes, value: bool = True) -> list[KeyValue]:
        if not end:
            kv = await self.get(start, value)
            return [] if kv is None else [kv]
        cond, params = _range_sql(start, end)
        rows = await self.s.query_all(f"SELECT {S.LIVE_COLUMNS} FROM kv_current WHERE {cond}", params,
                                      prepared=True)
        return self._merge(rows, lambda kv: in_range(kv.key, start, end))

    async def lease_keys(self, lid: int) -> list[KeyValue]:
        # "lease != 0" lets the partial index kv_live_lease serve the query
        rows = await self.s.query_all(f"SELECT {S.LIVE_COLUMNS} FROM kv_current WHERE lease = ? "
                                      "AND lease != 0", [lid],
                                      prepared=True)
        return self._merge(rows, lambda kv: kv.lease == lid)

    # ---------------------------------------------------------------- changes
    def _row(self, rev: int, key: bytes, kv: KeyValue | None, prev: KeyValue | None) -> None:
        if rev != self._sub_rev:
            self._sub_rev, self._sub = rev, 0
        prev_rev = prev.mod_revision if prev is not None else 0
        token = None if self.log else self.token
        if kv is None:
            self.log.append((rev, self._sub, key, b"", 0, 0, 0, 1, prev_rev, token))
        else:
            self.log.append((rev, self._sub, key, kv.value, kv.create_revision, kv.version,
                             kv.lease, 0, prev_rev, token))
        self._sub += 1
        self.kvs[key] = kv
        self.changed.add(key)
        self.bare.discard(key)

    def _put(self, key: bytes, value: bytes, lease: int, rev: int, prev: KeyValue | None) -> None:
        if prev is None:
            kv = KeyValue(key, value, rev, rev, 1, lease)
        else:
            kv = KeyValue(key, value, prev.create_revision, rev, prev.version + 1, lease)
        self._row(rev, key, kv, prev)

    def _delete(self, prev: KeyValue, rev: int) -> None:
        self._row(rev, prev.key, None, prev)

    # ---------------------------------------------------------------- ops
    async def apply(self, op: _Op) -> Any:
        try:
            return await _HANDLERS[op.kind](self, *op.args)
        except KVError as e:
            return _Failed(e)

    async def _compare(self, c: Compare) -> bool:
        if c.range_end:
            kvs = await self.live_range(c.key, c.range_end)
        else:
            kv = await self.get(c.key, c.target == CompareTarget.VALUE)
            kvs = [] if kv is None else [kv]
        if not kvs:
            if c.target == CompareTarget.VALUE:
                return False
            kvs = [KeyValue(c.key, b"", 0, 0, 0, 0)]
        for kv in kvs:
            a: Any
            if c.target == CompareTarget.VALUE:
                a = kv.value
            else:
                a = (kv.version, kv.create_revision, kv.mod_revision, 0, kv.lease)[c.target]
            b = c.value
            if not (a == b if c.op == "=" else a != b if c.op == "!=" else
                    a < b if c.op == "<" else a > b):
                return False
        return True

    async def op_txn(self, compares: Sequence[Compare], success: Sequence[Op],
                     failure: Sequence[Op]) -> TxnResult:
        ok = True
        for c in compares:
            if not await self._compare(c):
                ok = False
                break
        ops = success if ok else failure
        for o in ops:
            if isinstance(o, Put) and o.lease and await self.lease(o.lease) is None:
                raise LeaseNotFound(f"lease {o.lease:#x} not found")
        rev = self.rev + 1
        responses: list[Any] = []
        changed = False
        for o in ops:
            if isinstance(o, Put):
                prev = await self.get(o.key, o.prev_kv)
                self._put(o.key, o.value, o.lease, rev, prev)
                changed = True
                responses.append(PutResult(rev, prev if o.prev_kv else None))
            elif isinstance(o, DeleteRange):
                gone = await self.live_range(o.key, o.end, o.prev_kv)
                for kv in gone:
                    self._delete(kv, rev)
                changed = changed or bool(gone)
                responses.append(("del", len(gone), tuple(gone) if o.prev_kv else ()))
            else:
                kvs = await self.live_range(o.key, o.end)
                responses.append(("range", o, kvs))
        if changed:
            self.rev = rev
        out: list[Any] = []
        for r in responses:
            if isinstance(r, PutResult):
                out.append(r)
            elif r[0] == "del":
                out.append(DeleteResult(r[1], self.rev, r[2]))
            else:
                o, kvs = r[1], r[2]
                count = len(kvs)
                if o.count_only:
                    out.append(RangeResult((), count, False, self.rev))
                    continue
                more = bool(o.limit) and count > o.limit
                if more:
                    kvs = kvs[:o.limit]
                if o.keys_only:
                    kvs = [KeyValue(kv.key, b"", kv.create_revision, kv.mod_revision,
                                    kv.version, kv.lease) for kv in kvs]
                out.append(RangeResult(tuple(kvs), count, more, self.rev))
        return TxnResult(ok, tuple(out), self.rev)

    async def op_grant(self, ttl: int) -> tuple[int, int]:
        lid = self.next_lease
        self.next_lease += 1
        self.meta_dirty = True
        exp = self.now + ttl * 1000
        self.leases[lid] = [ttl, exp]
        self.lease_ins[lid] = (ttl, exp)
        return lid, ttl

    async def _end_lease(self, lid: int) -> None:
        kvs = await self.lease_keys(lid)
        if kvs:
            rev = self.rev + 1
            for kv in kvs:
                self._delete(kv, rev)
            self.rev = rev
        self.leases[lid] = None
        self.lease_ins.pop(lid, None)
        self.lease_upd.pop(lid, None)
        self.lease_del.add(lid)

    async def op_revoke(self, lid: int) -> None:
        if await self.lease(lid) is None:
            raise LeaseNotFound(f"lease {lid:#x} not found")
        await self._end_lease(lid)

    async def op_keepalive(self, lid: int) -> int:
        st = await self.lease(lid)
        if st is None:
            raise LeaseNotFound(f"lease {lid:#x} not found")
        st[1] = self.now + st[0] * 1000
        if lid in self.lease_ins:
            self.lease_ins[lid] = (st[0], st[1])
        else:
            self.lease_upd[lid] = st[1]
        return st[0]

    async def op_expire(self, ids: list[int] | None) -> None:
        if ids is None:   # the reaper: expire by the leader's clock
            if self.promoted:
                return
            if self.now - self.reaped_at >= REAPED_AT_EVERY_MS:
                self.reaped_at = self.now
                self.meta_dirty = True
            rows = await self.s.query_all("SELECT id, ttl, expiry FROM kv_lease WHERE expiry <= ? "
                                          f"ORDER BY expiry LIMIT {REAP_LIMIT}", [self.now],
                                          prepared=True)
            for lid, ttl, exp in rows:
                self.leases.setdefault(lid, [ttl, exp])
            ids = [r[0] for r in rows]
            ids = [i for i in ids if (st := self.leases[i]) is not None and st[1] <= self.now]
        for lid in ids:
            if await self.lease(lid) is not None:
                await self._end_lease(lid)

    async def op_compact(self, revision: int) -> None:
        if revision <= self.compact_rev:
            raise CompactedError(f"revision {revision} has already been compacted "
                                 f"(compacted at {self.compact_rev})", self.compact_rev)
        if revision > self.rev:
            raise FutureRevisionError(f"cannot compact future revision {revision} "
                                      f"(current {self.rev})")
        self.compact_rev = revision
        self.compacted_to = revision
        self.meta_dirty = True

    async def op_chunk(self, lo: int, hi: int, target: int) -> None:
        self.raw += [sql.format(lo=int(lo), hi=int(hi), c=int(target)) for sql in S.COMPACT_CHUNK]

    # ---------------------------------------------------------------- SQL
    async def committed(self, session: Session) -> bool | None:
        """Whether this batch committed (its first log row is there with its
        token), asked on the current leader after the COMMIT reply was lost;
        None when a compaction may have removed the row since."""
        rev, sub = self.log[0][:2]
        (found, compacted), = await session.query_all(S.TOKEN_SELECT, (rev, sub, self.token))
        if not found and compacted >= rev:
            return None
        return bool(found)

    def statements(self) -> list[str]:
        """The writes of this batch, as SQL with literal values (they go out in
        one request with the COMMIT, which takes no parameters past its first
        statement); empty when the batch changed nothing."""
        out = list(self.raw)
        i = 0
        while i < len(self.log):
            rows: list[str] = []
            size = 0
            while i < len(self.log) and len(rows) < ROWS_PER_INSERT and size < MAX_STMT_BYTES:
                row = self.log[i]
                rows.append("(" + ",".join(map(literal, row)) + ")")
                size += len(row[2]) + len(row[3])
                i += 1
            out.append(f"INSERT INTO kv_log ({S.LOG_COLUMNS}) VALUES " + ",".join(rows))
        ins = [f"({lid},{ttl},{exp})" for lid, (ttl, exp) in self.lease_ins.items()
               if lid not in self.lease_del]
        for j in range(0, len(ins), ROWS_PER_INSERT):
            out.append("INSERT INTO kv_lease (id, ttl, expiry) VALUES "
                       + ",".join(ins[j:j + ROWS_PER_INSERT]))
        for lid, exp in self.lease_upd.items():
            out.append(f"UPDATE kv_lease SET expiry = {int(exp)} WHERE id = {int(lid)}")
        if self.lease_del:
            ids = ",".join(str(int(lid)) for lid in sorted(self.lease_del))
            out.append(f"DELETE FROM kv_lease WHERE id IN ({ids})")
        if not out and not self.meta_dirty:
            return []
        if not self.meta_dirty:
            return out   # the revision follows from the log (S.CURRENT_REVISION)
        out.append(f"UPDATE kv_meta SET revision = {int(self.rev)}, "
                   f"compact_revision = {int(self.compact_rev)}, next_lease = {int(self.next_lease)}, "
                   f"lease_epoch = {literal(self.epoch)}, reaped_at = {int(self.reaped_at)} WHERE id = 1")
        return out


# =============================================================== the core
_HANDLERS: dict[OpKind, Callable[..., Awaitable[Any]]] = {
    OpKind.TXN: _Batch.op_txn,
    OpKind.GRANT: _Batch.op_grant,
    OpKind.REVOKE: _Batch.op_revoke,
    OpKind.KEEPALIVE: _Batch.op_keepalive,
    OpKind.EXPIRE: _Batch.op_expire,
    OpKind.COMPACT: _Batch.op_compact,
    OpKind.CHUNK: _Batch.op_chunk,
}
assert set(_HANDLERS) == set(OpKind)


class CowsqlCore:
    """The async store: committer, reads, watch poller, lease reaper, compactor.
    All coroutines run on cowsqlpy's background loop (``self.loop``)."""

    def __init__(self, servers: list[str] | NodeStore, database: str, timeout: float,
                 auto_compact: int = 0, linearizable: bool = True) -> None:
        self.servers = servers
        self.linearizable = linearizable  # user-facing reads after a read barrier
        self.database = database
        self.auto_compact = auto_compact   # revisions of history to keep (0: never compact)
        self.policy = RetryPolicy(max_tries=1000, backoff=0.01, backoff_cap=0.25,
                                  deadline=timeout, busy_timeout=timeout,
                                  attempt_timeout=min(10.0, timeout))
        self.db = Database(as_store(servers), database, self.policy, group_commit=False)
        self.loop = background_loop()
        self._pending: collections.deque[_Op] = collections.deque()
        self._committer: asyncio.Task[None] | None = None
        self._recent: collections.deque[int] = collections.deque(maxlen=GATHER_MEMORY)
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
            raise _kv_error(exc) from exc

    @staticmethod
    def _map(exc: BaseException) -> BaseException:
        return _kv_error(exc) if isinstance(exc, EngineError) else exc

    async def _begin(self, read: Query | None = None) -> tuple[Session, list[tuple[Any, ...]]]:
        """BEGIN IMMEDIATE on the leader, with ``read``'s rows read inside it."""
        try:
            if read is None:
                return await self.db.begin(), []
            return await self.db.begin_reading(*read, prepared=True)
        except EngineError as exc:
            raise _kv_error(exc) from exc

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
        self._pending.append(op)
        if len(self._pending) >= self._expect and self._filled is not None:
            self._filled.set()
        if self._committer is None or self._committer.done():
            self._committer = asyncio.ensure_future(self._commit_loop())
        return op.future

    async def _gather(self) -> None:
        """Clients whose ops a batch acknowledged send their next ones a moment
        later (an HTTP round trip): starting the next batch with the first of
        them would split every wave of ops in two, halving the batch size.
        Wait, at most GATHER_WAIT, until as many ops are queued as the recent
        batches held. A lone client never waits (its batches hold one op)."""
        if len(self._pending) >= self._expect or self._filled is None:
            return
        self._filled.clear()
        await wait_event(self._filled, GATHER_WAIT)

    async def _commit_loop(self) -> None:
        while self._pending:
            await self._gather()
            batch: list[_Op] = []
            size = 0
            while self._pending and len(batch) < MAX_BATCH and (not batch or size < MAX_BATCH_BYTES):
                op = self._pending.popleft()
                batch.append(op)
                size += op.size
            self._recent.append(len(batch))
            self._expect = max(self._recent)
            try:
                await self._run_batch(batch)
            except BaseException as exc:
                err = self._map(exc)
                for op in batch:
                    if not op.future.done():
                        op.future.set_exception(err)
                if not isinstance(exc, Exception):
                    raise

    async def _run_batch(self, batch: list[_Op]) -> None:
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
            raise _unknown(exc) from exc
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
        while len(self._known) > KNOWN_KEYS or self._known_bytes > KNOWN_BYTES:
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
            raise _unknown(exc) from exc
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
            raise _kv_error(exc) from exc

    async def range(self, start: bytes, end: bytes, limit: int = 0, revision: int = 0,
                    keys_only: bool = False, count_only: bool = False) -> RangeResult:
        cond, params = _range_sql(start, end)
        val, live = ("x''", "kv_live") if keys_only else ("value", "kv_current")
        if revision > 0:
            ncond, _ = _range_sql(start, end, "n.key")
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
                    kvs.append(_live_kv(r, 1))
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
            cond, extra = _range_sql(start, end, "l.key")
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

    async def _poll_loop(self) -> None:
        assert self._wake is not None and self._wlock is not None
        failures = 0
        last_event = 0.0
        while self._streams and not self._closed:
            busy = time.monotonic() - last_event < POLL_BUSY_FOR
            await wait_event(self._wake, POLL_BUSY if busy else POLL_INTERVAL)
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
            lo, hi = self._pos + 1, self._pos + EVENT_WINDOW
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
            await asyncio.sleep(REAP_INTERVAL)
            try:
                # A pass is a write transaction, and every process runs a reaper:
                # ask first (a plain read) whether it has anything to do, so idle
                # reapers do not take the engine's write lock from the writers.
                (due,), = await self._query(S.REAP_DUE_SELECT, (REAPED_AT_EVERY_MS,))
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
            await asyncio.sleep(AUTO_COMPACT_INTERVAL)
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
                    hi = min(target + 1, lo + COMPACT_WINDOW)
                    await self.submit(OpKind.CHUNK, lo, hi, target)
                    lo = hi
                done = target
        except KVError as exc:
            log.warning("physical compaction stopped (%r); the next compact() resumes it", exc)

    # ---------------------------------------------------------------- lifecycle
    async def close(self) -> None:
        self._closed = True
        for t in (self._reaper, self._poller, self._compactor, self._auto_compactor):
            if t is not None:
                t.cancel()
        if self._committer is not None and not self._committer.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._committer), self.policy.deadline)
            except (TimeoutError, Exception):  # noqa: BLE001 - best effort on close
                pass
        err = ClosedError("cowsql: the KV handle was closed")
        for s in list(self._streams):
            s._fail(err)
            s._finish()
        self._streams.clear()
        await self.db.close()


# =============================================================== the sync handle
_cores: dict[tuple[Any, ...], tuple[CowsqlCore, list[int]]] = {}
_cores_lock = threading.Lock()


class CowsqlKV(CoreBackedKV):
    """A ``cowsql://`` handle. Handles of one process that name the same servers
    and database share one :class:`CowsqlCore` (one connection pool, one group
    committer, one watch poller) unless opened with ``private=1``. The async API
    is ``kv.core`` (coroutines to run on ``kv.loop``)."""

    scheme = "cowsql"

    def __init__(self, servers: list[str], database: str, *, timeout: float = DEFAULT_TIMEOUT,
                 session_ttl: int | None = None, private: bool = False,
                 auto_compact: int = 0, linearizable: bool = True) -> None:
        if isinstance(auto_compact, bool) or not isinstance(auto_compact, int) or auto_compact < 0:
            raise InvalidArgument(f"cowsql: auto_compact must be revisions >= 0, got {auto_compact!r}")
        super().__init__(**({} if session_ttl is None else {"session_ttl": session_ttl}))
        self.servers, self.database, self.timeout = servers, database, timeout
        key: tuple[Any, ...] = (tuple(sorted(servers)), database, timeout, auto_compact, linearizable)
        if private:
            key += (object(),)
        self._key = key
        with _cores_lock:
            entry = _cores.get(key)
            if entry is None:
                core = CowsqlCore(servers, database, timeout, auto_compact, linearizable)
                try:
                    run_sync(core.start(), timeout + 30)
                except BaseException:
                    run_sync(core.close())
                    raise
                entry = _cores[key] = (core, [0])
            entry[1][0] += 1
        self.core: CowsqlCore = entry[0]
        self.loop = self.core.loop
        self._local_closed = False

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._local_closed:
            coro.close()
            raise ClosedError("cowsql: KV handle is closed")
        try:
            return run_sync(coro, self.timeout + 30)
        except EngineError as exc:
            raise _kv_error(exc) from exc

    def expire_leases(self, ids: list[int] | None = None) -> None:
        """Run the lease expiry now (tests): revoke ``ids`` if they exist, or with
        None expire every lease past its deadline on the leader's clock."""
        self._check()
        self._run(self.core.expire(None if ids is None else [int(i) for i in ids]))

    def _watch(self, start: bytes, end: bytes, start_revision: int) -> WatchStream:
        core = self.core

        def cancel(s: WatchStream) -> None:
            core.loop.call_soon_threadsafe(core.remove_watch, s)

        stream = WatchStream(start, end, cancel)
        self._run(core.add_watch(stream, start_revision))
        return stream

    def _close(self) -> None:
        self._local_closed = True
        with _cores_lock:
            entry = _cores.get(self._key)
            if entry is None:
                return
            entry[1][0] -= 1
            if entry[1][0] > 0:
                return
            del _cores[self._key]
        try:
            run_sync(entry[0].close(), self.timeout + 30)
        except Exception:  # noqa: BLE001 - closing; the engine cleans up on its side
            log.debug("closing the cowsql core failed", exc_info=True)


def open_url(url: str) -> CowsqlKV:
    u = urllib.parse.urlsplit(url)
    q = dict(urllib.parse.parse_qsl(u.query))
    unknown = set(q) - {"session_ttl", "timeout", "private", "auto_compact", "read"}
    if unknown:
        raise InvalidArgument(f"cowsql: unknown options {sorted(unknown)}")
    servers = [e.strip() for e in u.netloc.split(",") if e.strip()]
    if not servers:
        raise InvalidArgument(f"cowsql: no server in {url!r}")
    for e in servers:
        host, sep, port = e.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise InvalidArgument(f"cowsql: server {e!r} must be HOST:PORT")
    database = urllib.parse.unquote(u.path.lstrip("/"))
    if not database or "/" in database:
        raise InvalidArgument(f"cowsql: the URL must name one database: cowsql://HOST:PORT/DB, "
                              f"got {url!r}")
    auto_compact = q.get("auto_compact", "0")
    if not auto_compact.isdigit():
        raise InvalidArgument(f"cowsql: auto_compact must be a number of revisions, "
                              f"got {auto_compact!r}")
    read = q.get("read", "linearizable")
    if read not in ("linearizable", "serializable"):
        raise InvalidArgument(f"cowsql: read must be linearizable or serializable, got {read!r}")
    return CowsqlKV(servers, database, timeout=float(q.get("timeout", DEFAULT_TIMEOUT)),
                    linearizable=read == "linearizable",
                    session_ttl=int(q["session_ttl"]) if "session_ttl" in q else None,
                    private=q.get("private", "0").lower() in ("1", "true", "yes"),
                    auto_compact=int(auto_compact))
