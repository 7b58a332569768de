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

from .. import mvcc
from ..errors import InvalidArgument
from ..replica import Replica, raise_if_error
from .replica_kv import ReplicaBackend

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


class MemBackend(ReplicaBackend):
    scheme = "mem"
    inline = True   # every primitive is a local, non-blocking apply

    def __init__(self, name: str | None = None, *, session_ttl: int | None = None) -> None:
        self.session_ttl = session_ttl
        with _named_lock:
            if name:
                store = _named.get(name)
                if store is None:
                    store = _named[name] = MemStore(name)
            else:
                store = MemStore()
            store.refs += 1
        self.store = store
        self.replica = store.replica

    def _apply(self, cmd: list[object]) -> object:
        return raise_if_error(self.store.apply(cmd))

    def b_close(self) -> None:
        with _named_lock:
            self.store.refs -= 1
            if self.store.refs <= 0:
                if self.store.name is not None:
                    _named.pop(self.store.name, None)
                self.store.stop()


async def open_backend(url: str) -> MemBackend:
    u = urllib.parse.urlsplit(url)
    name = (u.netloc or u.path).strip("/") or None
    q = dict(urllib.parse.parse_qsl(u.query))
    unknown = set(q) - {"session_ttl"}
    if unknown:
        raise InvalidArgument(f"mem: unknown options {sorted(unknown)}")
    ttl = int(q["session_ttl"]) if "session_ttl" in q else None
    return MemBackend(name, session_ttl=ttl)
