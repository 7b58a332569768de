"""One local copy of the :mod:`kvstore.mvcc` state machine with what a live
process adds around it: a lock, the watch hub, lease deadlines on the local
monotonic clock, and conversion of raw results to typed ones.

Both the ``mem:`` store and each ``raft://`` node own one ``Replica``; they
differ only in how a command reaches :meth:`Replica.apply` (directly, or
through the Raft log).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from . import mvcc
from .errors import KVError, from_code
from .types import (
    DeleteResult,
    Event,
    KeyValue,
    LeaseInfo,
    PutResult,
    RangeResult,
    TxnResult,
)
from .watch import WatchHub, WatchStream


def raise_if_error(res: Any) -> Any:
    if res[0] == "error":
        raise from_code(res[1], res[2], res[3])
    return res


def range_result(r: Any) -> RangeResult:
    return RangeResult(tuple(r[1]), r[2], r[3], r[4])


def txn_result(r: Any) -> TxnResult:
    out: list[Any] = []
    for resp in r[2]:
        if resp[0] == "put":
            out.append(PutResult(resp[1], resp[2]))
        elif resp[0] == "del":
            out.append(DeleteResult(resp[1], resp[2], tuple(resp[3])))
        else:
            out.append(RangeResult(tuple(resp[1]), resp[2], resp[3], resp[4]))
    return TxnResult(bool(r[1]), tuple(out), r[3])


class Replica:
    def __init__(self, state: mvcc.MVCC | None = None) -> None:
        self.state = state or mvcc.MVCC()
        self.lock = threading.RLock()
        self.hub = WatchHub()
        self._deadlines: dict[int, float] = {}
        self._reset_deadlines()

    def _reset_deadlines(self) -> None:
        now = time.monotonic()
        self._deadlines = {lid: now + ttl for lid, ttl in self.state.leases.items()}

    # ------------------------------------------------------------ apply
    def apply(self, data: bytes) -> Any:
        """Apply an encoded command; returns the raw result tuple. Never raises
        for a bad command (the log must keep applying)."""
        try:
            cmd = mvcc.decode(data)
        except Exception as e:  # corrupt command: report, don't crash
            return ("error", "invalid_txn", f"undecodable command: {e}", 0)
        with self.lock:
            res, events = self.state.apply(cmd)
            if res[0] == "ok":
                kind = cmd[0]
                now = time.monotonic()
                if kind == "grant":
                    self._deadlines[res[1]] = now + res[2]
                elif kind == "keepalive":
                    self._deadlines[int(cmd[1])] = now + res[1]
                elif kind in ("revoke", "expire"):
                    ids = [cmd[1]] if kind == "revoke" else cmd[1]
                    for lid in ids:
                        self._deadlines.pop(int(lid), None)
            if events:
                self.hub.publish(events)
        return res

    def restore(self, state: mvcc.MVCC) -> None:
        """Replace the state with a snapshot (a lagging raft member catching up).
        Live watchers receive the events between the old and the new state from
        the snapshot's event log, or an error when that part was compacted."""
        with self.lock:
            old_rev = self.state.revision
            self.state = state
            self._reset_deadlines()
            if state.revision > old_rev:
                missed = state.events_since(old_rev + 1)
                if isinstance(missed, tuple):
                    self.hub.close(from_code(missed[1], "watch lost: this replica was restored "
                                             "from a snapshot past compacted history", missed[3]))
                else:
                    self.hub.publish(list(missed))

    # ------------------------------------------------------------ leases
    def expired_leases(self, now: float | None = None) -> list[int]:
        now = time.monotonic() if now is None else now
        with self.lock:
            return sorted(lid for lid, d in self._deadlines.items() if d <= now)

    def promote(self) -> None:
        """A new leader extends every lease by its full TTL (as etcd does)."""
        with self.lock:
            self._reset_deadlines()

    def lease_info(self, lease_id: int) -> LeaseInfo:
        with self.lock:
            ttl = self.state.leases.get(lease_id)
            if ttl is None:
                raise from_code("lease_not_found", f"lease {lease_id:#x} not found")
            left = self._deadlines.get(lease_id, time.monotonic()) - time.monotonic()
            return LeaseInfo(lease_id, max(0, int(left + 0.999)), ttl,
                             tuple(self.state.lease_keys(lease_id)))

    def leases(self) -> list[int]:
        with self.lock:
            return sorted(self.state.leases)

    # ------------------------------------------------------------ reads
    def range(self, start: bytes, end: bytes, limit: int, revision: int, keys_only: bool,
              count_only: bool) -> RangeResult:
        with self.lock:
            r = self.state.range(start, end, limit, revision, keys_only, count_only)
        return range_result(raise_if_error(r))

    def get(self, key: bytes) -> KeyValue | None:
        with self.lock:
            return self.state.get_at(key, 0)

    @property
    def revision(self) -> int:
        return self.state.revision

    def watch(self, start: bytes, end: bytes, start_revision: int) -> WatchStream:
        stream = WatchStream(start, end, self.hub.remove)
        with self.lock:
            rev = start_revision if start_revision > 0 else self.state.revision + 1
            backlog = self.state.events_since(rev)
            if isinstance(backlog, tuple):
                stream._fail(from_code(backlog[1], backlog[2], backlog[3]))
                return stream
            self.hub.add(stream, list(backlog))
        return stream

    def close(self, exc: KVError | None = None) -> None:
        self.hub.close(exc)


def put_result(r: Any) -> PutResult:
    return PutResult(r[1], r[2])


def delete_result(r: Any) -> DeleteResult:
    return DeleteResult(r[1], r[2], tuple(r[3]))


__all__ = ["Replica", "raise_if_error", "range_result", "txn_result", "put_result",
           "delete_result", "Event"]
