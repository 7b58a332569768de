"""A pure, deterministic MVCC key/value state machine (a small etcd).

Used by the ``mem:`` backend directly and by every ``raft://`` replica, so the
two cannot diverge. The machine holds:

* a revision counter (starts at 1, every write transaction adds one),
* per key: the live :class:`~kvstore.types.KeyValue` and its history
  (for reads at a past revision) until compaction,
* a global event log (for watches from a revision) until compaction,
* the lease table (id -> granted TTL, attached keys).

Commands are plain lists of msgpack-native values (see ``encode``/``decode``)
and :meth:`MVCC.apply` never raises on a bad command: it returns an
``("error", code, message, compact_revision)`` tuple so a replica applying the
log cannot crash or diverge. Snapshots (:meth:`MVCC.dump`/``load``) are msgpack
bytes. Time never enters the machine: lease expiry is decided outside (by the
mem store's reaper or the raft leader) and arrives as an ``expire`` command.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from typing import Any

import msgpack

from .types import (
    RANGE_ALL,
    CompareTarget,
    Event,
    EventType,
    KeyValue,
)

SNAPSHOT_FORMAT = 1

Result = Any  # ("ok", ...) | ("error", code, message, compact_revision)


def encode(cmd: Sequence[Any]) -> bytes:
    return msgpack.packb(cmd, use_bin_type=True)


def decode(data: bytes) -> list[Any]:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def _err(code: str, message: str, compact_revision: int = 0) -> Result:
    return ("error", code, message, compact_revision)


class _TxnAbort(Exception):
    def __init__(self, result: Result) -> None:
        self.result = result


class MVCC:
    """The state machine. Not thread-safe: callers serialise access."""

    def __init__(self) -> None:
        self.revision = 1
        self.compact_revision = 0
        self.next_lease_id = 1
        self._keys: list[bytes] = []                 # sorted, every key with history
        self._live: dict[bytes, KeyValue] = {}
        self._hrevs: dict[bytes, list[int]] = {}     # per key: revisions of entries
        self._hvals: dict[bytes, list[KeyValue | None]] = {}  # None = tombstone
        self._events: list[Event] = []
        self._event_revs: list[int] = []
        self.leases: dict[int, int] = {}             # id -> granted ttl
        self._lease_keys: dict[int, set[bytes]] = {}

    # ------------------------------------------------------------ commands
    def apply(self, cmd: Sequence[Any]) -> tuple[Result, list[Event]]:
        """Apply one command; returns (result, events produced)."""
        try:
            kind = cmd[0]
            events: list[Event] = []
            if kind == "put":
                res = self._cmd_txn([], [["put", cmd[1], cmd[2], cmd[3], cmd[4]]], [], events)
                if res[0] == "error":
                    return res, []
                return ("ok", res[2][0][1], res[2][0][2]), events
            if kind == "del":
                res = self._cmd_txn([], [["del", cmd[1], cmd[2], cmd[3]]], [], events)
                if res[0] == "error":
                    return res, []
                return ("ok", res[2][0][1], res[2][0][2], res[2][0][3]), events
            if kind == "txn":
                return self._cmd_txn(cmd[1], cmd[2], cmd[3], events), events
            if kind == "compact":
                return self._cmd_compact(int(cmd[1])), events
            if kind == "grant":
                return self._cmd_grant(int(cmd[1]), int(cmd[2])), events
            if kind == "revoke":
                return self._cmd_revoke(int(cmd[1]), events), events
            if kind == "keepalive":
                lid = int(cmd[1])
                if lid not in self.leases:
                    return _err("lease_not_found", f"lease {lid:#x} not found"), events
                return ("ok", self.leases[lid]), events
            if kind == "expire":
                for lid in cmd[1]:
                    if int(lid) in self.leases:
                        self._cmd_revoke(int(lid), events)
                return ("ok",), events
            if kind == "noop":
                return ("ok", self.revision), events
            return _err("invalid_txn", f"unknown command {kind!r}"), events
        except _TxnAbort as e:
            return e.result, []
        except (IndexError, TypeError, ValueError) as e:
            return _err("invalid_txn", f"malformed command: {e}"), []

    # ------------------------------------------------------------ reads
    def check_revision(self, revision: int) -> Result | None:
        if revision <= 0:
            return None
        if revision < self.compact_revision:
            return _err("compacted", f"required revision {revision} has been compacted "
                        f"(compacted at {self.compact_revision})", self.compact_revision)
        if revision > self.revision:
            return _err("future_rev", f"required revision {revision} is a future revision "
                        f"(current {self.revision})")
        return None

    def _iter_keys(self, start: bytes, end: bytes) -> Iterable[bytes]:
        if not end:
            if start in self._hrevs:
                yield start
            return
        i = bisect.bisect_left(self._keys, start)
        keys = self._keys
        if end == RANGE_ALL:
            yield from keys[i:]
            return
        j = bisect.bisect_left(keys, end, i)
        yield from keys[i:j]

    def get_at(self, key: bytes, revision: int) -> KeyValue | None:
        if revision <= 0 or revision >= self.revision:
            return self._live.get(key)
        revs = self._hrevs.get(key)
        if not revs:
            return None
        i = bisect.bisect_right(revs, revision) - 1
        return self._hvals[key][i] if i >= 0 else None

    def range(self, start: bytes, end: bytes, limit: int = 0, revision: int = 0,
              keys_only: bool = False, count_only: bool = False) -> Result:
        """Read ``(start, end)``; returns ("ok", kvs, count, more, revision)."""
        bad = self.check_revision(revision)
        if bad is not None:
            return bad
        current = revision <= 0 or revision >= self.revision
        if not end:
            kv = self._live.get(start) if current else self.get_at(start, revision)
            kvs = [kv] if kv is not None else []
        elif current:
            live = self._live
            kvs = [live[k] for k in self._iter_keys(start, end) if k in live]
        else:
            kvs = []
            for k in self._iter_keys(start, end):
                kv = self.get_at(k, revision)
                if kv is not None:
                    kvs.append(kv)
        count = len(kvs)
        if count_only:
            return ("ok", [], count, False, self.revision)
        more = False
        if limit and count > limit:
            kvs = kvs[:limit]
            more = True
        if keys_only:
            kvs = [KeyValue(kv.key, b"", kv.create_revision, kv.mod_revision, kv.version,
                            kv.lease) for kv in kvs]
        return ("ok", kvs, count, more, self.revision)

    def events_since(self, revision: int) -> list[Event] | Result:
        """Events with revision >= ``revision`` (a list), or an error result."""
        if revision < self.compact_revision:
            return _err("compacted", f"watch revision {revision} has been compacted "
                        f"(compacted at {self.compact_revision})", self.compact_revision)
        i = bisect.bisect_left(self._event_revs, revision)
        return self._events[i:]

    # ------------------------------------------------------------ writes
    def _record(self, key: bytes, kv: KeyValue | None, rev: int) -> None:
        revs = self._hrevs.get(key)
        if revs is None:
            revs = self._hrevs[key] = []
            self._hvals[key] = []
            bisect.insort(self._keys, key)
        revs.append(rev)
        self._hvals[key].append(kv)

    def _do_put(self, key: bytes, value: bytes, lease: int, rev: int,
                events: list[Event]) -> KeyValue | None:
        prev = self._live.get(key)
        if prev is None:
            kv = KeyValue(key, value, rev, rev, 1, lease)
        else:
            kv = KeyValue(key, value, prev.create_revision, rev, prev.version + 1, lease)
            if prev.lease and prev.lease != lease:
                self._lease_keys.get(prev.lease, set()).discard(key)
        if lease:
            self._lease_keys.setdefault(lease, set()).add(key)
        self._live[key] = kv
        self._record(key, kv, rev)
        events.append(Event(EventType.PUT, kv, prev))
        return prev

    def _do_delete(self, start: bytes, end: bytes, rev: int, events: list[Event]
                   ) -> list[KeyValue]:
        if not end:
            keys = [start] if start in self._live else []
        else:
            keys = [k for k in self._iter_keys(start, end) if k in self._live]
        deleted = []
        for k in keys:
            prev = self._live.pop(k)
            if prev.lease:
                self._lease_keys.get(prev.lease, set()).discard(k)
            self._record(k, None, rev)
            events.append(Event(EventType.DELETE, KeyValue(k, b"", 0, rev, 0, 0), prev))
            deleted.append(prev)
        return deleted

    def _compare(self, c: Sequence[Any]) -> bool:
        key, target, op, value, rend = bytes(c[0]), int(c[1]), c[2], c[3], bytes(c[4] or b"")
        if rend:
            kvs = [self._live[k] for k in self._iter_keys(key, rend) if k in self._live]
        else:
            kv = self._live.get(key)
            kvs = [kv] if kv is not None else []
        if not kvs:
            if target == CompareTarget.VALUE:
                return False
            kvs = [KeyValue(key, b"", 0, 0, 0, 0)]
        for kv in kvs:
            if target == CompareTarget.VALUE:
                a: Any = kv.value
                b: Any = bytes(value)
            else:
                a = (kv.version, kv.create_revision, kv.mod_revision, 0, kv.lease)[target]
                b = int(value)
            if op == "=":
                ok = a == b
            elif op == "!=":
                ok = a != b
            elif op == "<":
                ok = a < b
            elif op == ">":
                ok = a > b
            else:
                raise _TxnAbort(_err("invalid_txn", f"bad compare op {op!r}"))
            if not ok:
                return False
        return True

    def _cmd_txn(self, compares: Sequence[Any], success: Sequence[Any], failure: Sequence[Any],
                 events: list[Event]) -> Result:
        ok = all(self._compare(c) for c in compares)
        ops = success if ok else failure
        writes = False
        for op in ops:
            if op[0] == "put":
                writes = True
                if op[3] and int(op[3]) not in self.leases:
                    return _err("lease_not_found", f"lease {int(op[3]):#x} not found")
            elif op[0] == "del":
                writes = True
            elif op[0] != "range":
                return _err("invalid_txn", f"unknown op {op[0]!r}")
        rev = self.revision + 1 if writes else self.revision
        responses: list[Any] = []
        changed = False
        for op in ops:
            kind = op[0]
            if kind == "put":
                prev = self._do_put(bytes(op[1]), bytes(op[2]), int(op[3]), rev, events)
                changed = True
                responses.append(("put", rev, prev if op[4] else None))
            elif kind == "del":
                n = len(events)
                deleted = self._do_delete(bytes(op[1]), bytes(op[2]), rev, events)
                changed = changed or len(events) > n
                responses.append(("del", len(deleted), rev, deleted if op[3] else []))
            else:
                r = self.range(bytes(op[1]), bytes(op[2]), int(op[3]), 0, bool(op[4]),
                               bool(op[5]))
                responses.append(("range",) + tuple(r[1:]))
        if changed:
            self.revision = rev
            self._events.extend(events)
            self._event_revs.extend([rev] * len(events))
        else:
            # a delete of nothing does not create a revision (as etcd)
            rev = self.revision
            responses = [(r[0], rev) + tuple(r[2:]) if r[0] == "put" else
                         (("del", r[1], rev, r[3]) if r[0] == "del" else r)
                         for r in responses]
        return ("ok", ok, responses, self.revision)

    def _cmd_compact(self, revision: int) -> Result:
        if revision <= self.compact_revision:
            return _err("compacted", f"revision {revision} has already been compacted "
                        f"(compacted at {self.compact_revision})", self.compact_revision)
        if revision > self.revision:
            return _err("future_rev", f"cannot compact future revision {revision} "
                        f"(current {self.revision})")
        drop = []
        for key, revs in self._hrevs.items():
            i = bisect.bisect_right(revs, revision) - 1
            if i < 0:
                continue
            vals = self._hvals[key]
            keep_from = i if vals[i] is not None else i + 1
            if keep_from:
                del revs[:keep_from]
                del vals[:keep_from]
            if not revs:
                drop.append(key)
        for key in drop:
            del self._hrevs[key]
            del self._hvals[key]
        if drop:
            dropped = set(drop)
            self._keys = [k for k in self._keys if k not in dropped]
        j = bisect.bisect_left(self._event_revs, revision)
        del self._events[:j]
        del self._event_revs[:j]
        self.compact_revision = revision
        return ("ok", revision)

    def _cmd_grant(self, lease_id: int, ttl: int) -> Result:
        if ttl <= 0:
            return _err("invalid_txn", "lease ttl must be positive")
        if lease_id == 0:
            while self.next_lease_id in self.leases:
                self.next_lease_id += 1
            lease_id = self.next_lease_id
            self.next_lease_id += 1
        elif lease_id in self.leases:
            return _err("invalid_txn", f"lease {lease_id:#x} already exists")
        self.leases[lease_id] = ttl
        self._lease_keys[lease_id] = set()
        return ("ok", lease_id, ttl)

    def _cmd_revoke(self, lease_id: int, events: list[Event]) -> Result:
        if lease_id not in self.leases:
            return _err("lease_not_found", f"lease {lease_id:#x} not found")
        keys = sorted(self._lease_keys.pop(lease_id, set()))
        del self.leases[lease_id]
        if keys:
            rev = self.revision + 1
            mine: list[Event] = []
            for k in keys:
                self._do_delete(k, b"", rev, mine)
            self.revision = rev
            self._events.extend(mine)
            self._event_revs.extend([rev] * len(mine))
            events.extend(mine)
        return ("ok", self.revision)

    def lease_keys(self, lease_id: int) -> list[bytes]:
        return sorted(self._lease_keys.get(lease_id, ()))

    # ------------------------------------------------------------ snapshots
    def dump(self) -> bytes:
        """The whole state as msgpack bytes."""
        hist = []
        for key in self._keys:
            hist.append([key, self._hrevs[key],
                         [kv.to_tuple() if kv is not None else None for kv in self._hvals[key]]])
        events = [[int(e.type), e.kv.to_tuple(), e.prev_kv.to_tuple() if e.prev_kv else None]
                  for e in self._events]
        return msgpack.packb({
            "format": SNAPSHOT_FORMAT, "revision": self.revision,
            "compact_revision": self.compact_revision, "next_lease_id": self.next_lease_id,
            "leases": [[k, v] for k, v in self.leases.items()],
            "hist": hist, "events": events,
        }, use_bin_type=True)

    @classmethod
    def load(cls, data: bytes) -> MVCC:
        d = msgpack.unpackb(data, raw=False, strict_map_key=False)
        if d.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"unsupported kvstore snapshot format {d.get('format')!r}")
        m = cls()
        m.revision = d["revision"]
        m.compact_revision = d["compact_revision"]
        m.next_lease_id = d["next_lease_id"]
        for lid, ttl in d["leases"]:
            m.leases[lid] = ttl
            m._lease_keys[lid] = set()
        for key, revs, vals in d["hist"]:
            m._keys.append(key)
            m._hrevs[key] = list(revs)
            kvs = [KeyValue.from_tuple(v) if v is not None else None for v in vals]
            m._hvals[key] = kvs
            if kvs and kvs[-1] is not None:
                kv = kvs[-1]
                m._live[key] = kv
                if kv.lease:
                    m._lease_keys.setdefault(kv.lease, set()).add(key)
        m._keys.sort()
        for t, kv, prev in d["events"]:
            e = Event(EventType(t), KeyValue.from_tuple(kv),
                      KeyValue.from_tuple(prev) if prev else None)
            m._events.append(e)
            m._event_revs.append(e.kv.mod_revision)
        return m

    def state_digest(self) -> tuple[Any, ...]:
        """A comparable summary (tests use it to check replicas agree)."""
        return (self.revision, self.compact_revision, tuple(sorted(self.leases.items())),
                tuple(kv.to_tuple() for _, kv in sorted(self._live.items())))
