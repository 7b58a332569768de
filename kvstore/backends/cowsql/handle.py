"""The blocking ``cowsql://`` handle (`CowsqlKV`) and its URL."""

from __future__ import annotations

import logging
import threading
import urllib.parse
from collections.abc import Coroutine
from typing import Any, TypeVar

from cowsqlpy.errors import Error as EngineError
from cowsqlpy.runtime import run_sync

from ...errors import ClosedError, InvalidArgument
from ...watch import WatchStream
from ..core_kv import CoreBackedKV
from . import tuning as C
from .core import CowsqlCore
from .errors import kv_error

log = logging.getLogger("kvstore.cowsql")
T = TypeVar("T")

# One core per (servers, database, options) in this process, shared by its handles.
_cores: dict[tuple[Any, ...], tuple[CowsqlCore, list[int]]] = {}
_cores_lock = threading.Lock()


class CowsqlKV(CoreBackedKV):
    """A ``cowsql://`` handle. Handles of one process that name the same servers
    and database share one :class:`CowsqlCore` (one connection pool, one group
    committer, one watch poller) unless opened with ``private=1``. The async API
    is ``kv.core`` (coroutines to run on ``kv.loop``)."""

    scheme = "cowsql"

    def __init__(self, servers: list[str], database: str, *, timeout: float = C.DEFAULT_TIMEOUT,
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
            raise kv_error(exc) from exc

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
        except Exception:  # closing; the engine cleans up on its side
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
    return CowsqlKV(servers, database, timeout=float(q.get("timeout", C.DEFAULT_TIMEOUT)),
                    linearizable=read == "linearizable",
                    session_ttl=int(q["session_ttl"]) if "session_ttl" in q else None,
                    private=q.get("private", "0").lower() in ("1", "true", "yes"),
                    auto_compact=int(auto_compact))
