"""One batch of queued writes: its state read, its ops evaluated in order in Python, its SQL."""

from __future__ import annotations

import asyncio
import enum
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cowsqlpy.client import Session
from cowsqlpy.sqltext import literal

from ...errors import CompactedError, FutureRevisionError, KVError, LeaseNotFound
from ...types import (
    RANGE_ALL,
    Compare,
    CompareTarget,
    DeleteRange,
    DeleteResult,
    KeyValue,
    Op,
    Put,
    PutResult,
    RangeResult,
    TxnResult,
    in_range,
)
from . import schema as S
from . import tuning as C


def range_sql(start: bytes, end: bytes, col: str = "key") -> tuple[str, list[Any]]:
    if not end:
        return f"{col} = ?", [start]
    if end == RANGE_ALL:
        return f"{col} >= ?", [start]
    return f"{col} >= ? AND {col} < ?", [start, end]


def live_kv(r: Sequence[Any], off: int = 0) -> KeyValue:
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
        if (self.epoch != self.s.address or now - self.reaped_at > C.LEASE_GAP_MS
                or now < self.reaped_at - C.REAPED_AT_EVERY_MS):
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
        leases; each names at most C.MAX_PARAMS. Marks them all as loaded: a key or
        lease the rows do not mention is absent."""
        out: list[Query] = []
        first = meta
        bare = list(bare)
        while first or keys or leases or bare:
            parts: list[str] = [S.META_SELECT] if first else []
            params: list[Any] = []
            kchunk, keys = keys[:C.MAX_PARAMS], keys[C.MAX_PARAMS:]
            room = C.MAX_PARAMS - len(kchunk)
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
                kv = live_kv(r, 1)
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
            kv = live_kv(r)
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
        cond, params = range_sql(start, end)
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
            if self.now - self.reaped_at >= C.REAPED_AT_EVERY_MS:
                self.reaped_at = self.now
                self.meta_dirty = True
            rows = await self.s.query_all("SELECT id, ttl, expiry FROM kv_lease WHERE expiry <= ? "
                                          f"ORDER BY expiry LIMIT {C.REAP_LIMIT}", [self.now],
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
            while i < len(self.log) and len(rows) < C.ROWS_PER_INSERT and size < C.MAX_STMT_BYTES:
                row = self.log[i]
                rows.append("(" + ",".join(map(literal, row)) + ")")
                size += len(row[2]) + len(row[3])
                i += 1
            out.append(f"INSERT INTO kv_log ({S.LOG_COLUMNS}) VALUES " + ",".join(rows))
        ins = [f"({lid},{ttl},{exp})" for lid, (ttl, exp) in self.lease_ins.items()
               if lid not in self.lease_del]
        for j in range(0, len(ins), C.ROWS_PER_INSERT):
            out.append("INSERT INTO kv_lease (id, ttl, expiry) VALUES "
                       + ",".join(ins[j:j + C.ROWS_PER_INSERT]))
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
