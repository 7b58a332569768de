"""``mem:`` backend: the MVCC state machine in this process.

``mem:`` opens a private store; ``mem:NAME`` (or ``mem://NAME``) opens the
store called NAME shared by every handle in this process that names it (it is
dropped when its last handle closes). Thread-safe; watches, leases (expired
by a reaper thread) and locks really work between threads.

Options: ``?session_ttl=SECONDS``.
"""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Sequence

from .. import mvcc
from ..api import KV
from ..errors import InvalidArgument
from ..replica import Replica, delete_result, put_result, raise_if_error, txn_result
from ..types import (
    Compare,
    DeleteResult,
    LeaseInfo,
    Op,
    PutResult,
    RangeResult,
    TxnResult,
)
from ..watch import WatchStream

REAP_PERIOD = 0.1


class MemStore:
    """One in-process store: a replica plus the lease reaper."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name
        self.replica = Replica()
        self.refs = 0
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name="kvstore-mem-reaper",
                                        daemon=True)
        self._reaper.start()

    def apply(self, cmd: list[object]) -> object:
        return self.replica.apply(mvcc.encode(cmd))

    def _reap(self) -> None:
        while not self._stop.wait(REAP_PERIOD):
            ids = self.replica.expired_leases()
            if ids:
                self.apply(["expire", ids])

    def stop(self) -> None:
        self._stop.set()
        self.replica.close()


_named: dict[str, MemStore] = {}
_named_lock = threading.Lock()


class MemKV(KV):
    scheme = "mem"

    def __init__(self, name: str | None = None, *, session_ttl: int | None = None) -> None:
        super().__init__(**({} if session_ttl is None else {"session_ttl": session_ttl}))
        with _named_lock:
            if name:
                store = _named.get(name)
                if store is None:
                    store = _named[name] = MemStore(name)
            else:
                store = MemStore()
            store.refs += 1
        self.store = store
        self._r = store.replica

    def _apply(self, cmd: list[object]) -> object:
        return raise_if_error(self.store.apply(cmd))

    def _put(self, key: bytes, value: bytes, lease: int, prev_kv: bool) -> PutResult:
        return put_result(self._apply(["put", key, value, lease, prev_kv]))

    def _range(self, start: bytes, end: bytes, limit: int, revision: int, keys_only: bool,
               count_only: bool) -> RangeResult:
        return self._r.range(start, end, limit, revision, keys_only, count_only)

    def _delete(self, start: bytes, end: bytes, prev_kv: bool) -> DeleteResult:
        return delete_result(self._apply(["del", start, end, prev_kv]))

    def _txn(self, compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op]
             ) -> TxnResult:
        return txn_result(self._apply(["txn", [c.to_list() for c in compare],
                                       [o.to_list() for o in success],
                                       [o.to_list() for o in failure]]))

    def _compact(self, revision: int) -> None:
        self._apply(["compact", revision])

    def _grant(self, ttl: int) -> tuple[int, int]:
        r = self._apply(["grant", 0, ttl])
        return r[1], r[2]  # type: ignore[index]

    def _revoke(self, lease: int) -> None:
        self._apply(["revoke", lease])

    def _keepalive(self, lease: int) -> int:
        return self._apply(["keepalive", lease])[1]  # type: ignore[index]

    def _lease_info(self, lease: int) -> LeaseInfo:
        return self._r.lease_info(lease)

    def _watch(self, start: bytes, end: bytes, start_revision: int) -> WatchStream:
        return self._r.watch(start, end, start_revision)

    def revision(self) -> int:
        self._check()
        return self._r.revision

    def _close(self) -> None:
        with _named_lock:
            self.store.refs -= 1
            if self.store.refs <= 0:
                if self.store.name is not None:
                    _named.pop(self.store.name, None)
                self.store.stop()


def open_url(url: str) -> MemKV:
    u = urllib.parse.urlsplit(url)
    name = (u.netloc or u.path).strip("/") or None
    q = dict(urllib.parse.parse_qsl(u.query))
    unknown = set(q) - {"session_ttl"}
    if unknown:
        raise InvalidArgument(f"mem: unknown options {sorted(unknown)}")
    ttl = int(q["session_ttl"]) if "session_ttl" in q else None
    return MemKV(name, session_ttl=ttl)
