"""The blocking key/value API: :class:`KV`, a thin face over :class:`~kvstore.AsyncKV`.

Every method runs the AsyncKV coroutine of the same name on cowsqlpy's
background loop (``cowsqlpy.runtime.run_sync``) and returns its result; the
arguments, results, errors and documentation are the AsyncKV ones. What only a
blocking caller has: held locks and temporary keys as ``with`` blocks, and the
hmetcd callback watcher (:meth:`KV.watch_callback`), which calls back from a thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

from cowsqlpy.runtime import run_sync

from . import recipes
from .aio import DEFAULT_SESSION_TTL, AsyncKV
from .backend import Backend
from .errors import InvalidArgument, InvalidType
from .types import DeleteRange, EventType, KeyLike, Lease, ValueLike, to_key

log = logging.getLogger("kvstore")
P = ParamSpec("P")
T = TypeVar("T")

WatchCallback = Callable[[bytes, "bytes | None", EventType, Any], bool]


def _blocking(method: Callable[Concatenate[AsyncKV, P], Coroutine[Any, Any, T]]
              ) -> Callable[Concatenate[KV, P], T]:
    """``AsyncKV.<name>`` as a blocking method of KV."""
    name = method.__name__

    def call(self: KV, *args: P.args, **kwargs: P.kwargs) -> T:
        return run_sync(getattr(self.aio, name)(*args, **kwargs))

    call.__name__ = name
    call.__qualname__ = f"KV.{name}"
    call.__doc__ = method.__doc__
    return call


class KV:
    """A handle on a key/value store (see :class:`~kvstore.AsyncKV` for every
    method). Thread-safe; a context manager. ``kv.aio`` is the async handle it
    runs on, ``kv.backend`` the backend (its own extras: ``raft://`` readiness
    and leadership, ``cowsql://`` lease expiry...)."""

    def __init__(self, aio: AsyncKV) -> None:
        self.aio = aio
        self.scheme = aio.scheme
        self._callbacks: set[recipes.WatchHandle] = set()
        self._cb_lock = threading.Lock()

    @property
    def backend(self) -> Backend:
        return self.aio.backend

    @property
    def session_ttl(self) -> int:
        return self.aio.session_ttl

    put = _blocking(AsyncKV.put)
    get = _blocking(AsyncKV.get)
    get_kv = _blocking(AsyncKV.get_kv)
    get_range = _blocking(AsyncKV.get_range)
    get_prefix = _blocking(AsyncKV.get_prefix)
    range = _blocking(AsyncKV.range)
    delete = _blocking(AsyncKV.delete)
    delete_range = _blocking(AsyncKV.delete_range)
    delete_prefix = _blocking(AsyncKV.delete_prefix)
    revision = _blocking(AsyncKV.revision)
    compact = _blocking(AsyncKV.compact)
    txn = _blocking(AsyncKV.txn)
    tas = _blocking(AsyncKV.tas)
    transaction = _blocking(AsyncKV.transaction)
    watch_range = _blocking(AsyncKV.watch_range)
    watch_prefix = _blocking(AsyncKV.watch_prefix)
    watch_key = _blocking(AsyncKV.watch_key)
    watch = _blocking(AsyncKV.watch)
    keepalive = _blocking(AsyncKV.keepalive)
    revoke = _blocking(AsyncKV.revoke)
    ttl = _blocking(AsyncKV.ttl)
    create = _blocking(AsyncKV.create)
    update = _blocking(AsyncKV.update)
    close_session = _blocking(AsyncKV.close_session)

    def grant(self, ttl: int) -> Lease:
        """:meth:`AsyncKV.grant`; the lease's methods block."""
        granted = run_sync(self.aio.grant(ttl))
        return Lease(self, granted.id, granted.ttl)

    def temp_key(self, key: KeyLike, value: ValueLike = b"", *, ttl: int | None = None,
                 renew: bool = False) -> TempKey:
        """:meth:`AsyncKV.temp_key`; a ``with`` block releases it."""
        return TempKey(run_sync(self.aio.temp_key(key, value, ttl=ttl, renew=renew)))

    def lock(self, name: str | bytes = "hbtd_dist_lock", timeout: float | None = None) -> Lock:
        """:meth:`AsyncKV.lock`; a ``with`` block releases it."""
        return Lock(run_sync(self.aio.lock(name, timeout)))

    # ------------------------------------------------------------ callback watches
    def watch_callback(self, key: KeyLike, op: EventType | int | None,
                       callback: WatchCallback, userdata: Any = None) -> recipes.WatchHandle:
        """hmetcd WatchWithCB: call ``callback(key, value, op, userdata)`` on
        changes of ``key`` whose type is ``op`` (PUT or DELETE; None for both)
        from a background thread. Runs until the key is deleted, the callback
        returns False, or :meth:`cancel`. Returns the handle."""
        k = to_key(key)
        if op is not None and op not in (EventType.PUT, EventType.DELETE):
            raise InvalidArgument(f"op must be EventType.PUT, EventType.DELETE or None, not {op!r}")
        if not callable(callback):
            raise InvalidType("callback must be callable")
        h = recipes.WatchHandle(self, k, None if op is None else EventType(op), callback,
                                userdata)
        with self._cb_lock:
            self._callbacks.add(h)
        h.start()
        return h

    def cancel(self, handle: recipes.WatchHandle) -> None:
        """hmetcd WatchCBCancel: stop a :meth:`watch_callback` watcher (idempotent)."""
        handle.cancel()
        with self._cb_lock:
            self._callbacks.discard(handle)

    # ------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Stop callback watchers, then :meth:`AsyncKV.close`. Idempotent."""
        if self.aio.closed:
            return
        with self._cb_lock:
            handles = list(self._callbacks)
            self._callbacks.clear()
        for h in handles:
            h.cancel()
        run_sync(self.aio.close())

    @property
    def closed(self) -> bool:
        return self.aio.closed

    def __enter__(self) -> KV:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(getattr(self, "aio", None), "closed", True):
            log.debug("KV handle garbage-collected without close()")


class TempKey:
    """A held temporary key (:meth:`KV.temp_key`); ``release()`` or a ``with`` block."""

    def __init__(self, held: recipes.AsyncTempKey) -> None:
        self.held = held
        self.key = held.key

    @property
    def lease(self) -> int:
        return self.held.lease

    def release(self) -> None:
        """Delete the key now (and revoke its own lease, if it has one)."""
        run_sync(self.held.release())

    def __enter__(self) -> TempKey:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Lock:
    """A held distributed lock (:meth:`KV.lock`, :class:`~kvstore.AsyncLock`'s
    algorithm); ``release()`` (hmetcd DistUnlock) or a ``with`` block."""

    def __init__(self, held: recipes.AsyncLock) -> None:
        self.held = held
        self.name, self.key, self.fencing_token = held.name, held.key, held.fencing_token

    def is_held(self) -> bool:
        """Whether the lock key still exists (False after release or session loss)."""
        return run_sync(self.held.is_held())

    def release(self) -> None:
        """Release the lock. Idempotent."""
        run_sync(self.held.release())

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return repr(self.held)


def open_blocking(url: str) -> KV:
    """:func:`kvstore.open`: the backend on cowsqlpy's background loop."""
    from .aio import open_async

    return KV(run_sync(open_async(url)))


__all__ = ["KV", "Lock", "TempKey", "DEFAULT_SESSION_TTL", "DeleteRange", "WatchCallback",
           "open_blocking"]
