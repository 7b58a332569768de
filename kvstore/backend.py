"""What a backend implements: the async primitives under :class:`~kvstore.AsyncKV`.

A backend module (see :mod:`kvstore.backends`) exposes ``async def open_backend(url)
-> Backend``; the backend is created on the running event loop and its coroutines
run there (``etcd://`` and ``cowsql://`` are asyncio clients bound to it). The
arguments arrive validated and normalised (bytes keys, etcd-convention range ends,
int lease ids, typed transaction ops); :class:`~kvstore.AsyncKV` builds everything
else (version checks, recipes, sessions) on these, once for every backend.

Backends without an async client (``mem:``, ``raft://``) subclass
:class:`BlockingBackend`: blocking primitives, run inline when they never wait
(``mem:``) or in a worker thread (``raft://`` waits for the Raft log).
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import functools
from collections.abc import Callable, Sequence
from typing import ParamSpec, TypeVar

from .types import Compare, DeleteResult, LeaseInfo, Op, PutResult, RangeResult, TxnResult
from .watch import WatchStream

P = ParamSpec("P")
T = TypeVar("T")


class Backend(abc.ABC):
    """The async primitives of one store connection."""

    #: URL scheme (set by subclasses).
    scheme = ""
    #: TTL of the handle's session lease (the URL's ``session_ttl``; None: the default).
    session_ttl: int | None = None
    #: The loop the coroutines must run on (asyncio clients: the one they were opened
    #: on); None: any loop.
    loop: asyncio.AbstractEventLoop | None = None

    @abc.abstractmethod
    async def put(self, key: bytes, value: bytes, lease: int, prev_kv: bool) -> PutResult: ...

    @abc.abstractmethod
    async def range(self, start: bytes, end: bytes, limit: int, revision: int, keys_only: bool,
                    count_only: bool) -> RangeResult: ...

    @abc.abstractmethod
    async def delete(self, start: bytes, end: bytes, prev_kv: bool) -> DeleteResult: ...

    @abc.abstractmethod
    async def txn(self, compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op]
                  ) -> TxnResult: ...

    @abc.abstractmethod
    async def compact(self, revision: int) -> None: ...

    @abc.abstractmethod
    async def grant(self, ttl: int) -> tuple[int, int]:
        """A new lease: ``(id, granted ttl)``."""

    @abc.abstractmethod
    async def revoke(self, lease: int) -> None: ...

    @abc.abstractmethod
    async def keepalive(self, lease: int) -> int: ...

    @abc.abstractmethod
    async def lease_info(self, lease: int) -> LeaseInfo: ...

    @abc.abstractmethod
    async def watch(self, start: bytes, end: bytes, start_revision: int) -> WatchStream:
        """Events in ``(start, end)`` from ``start_revision`` (0: from the next
        revision), ordered, gap-free; registered before this returns."""

    async def revision(self) -> int:
        return (await self.range(b"\x00", b"", 0, 0, False, True)).revision

    @abc.abstractmethod
    async def close(self) -> None: ...


class BlockingBackend(Backend):
    """A backend written with blocking primitives (the ``b_``-prefixed methods):
    run inline when ``inline`` (they never wait), else in worker threads of the
    backend's own pool (``max_threads`` of them: asyncio's default pool has
    cpu + 4, too few for 32 callers who each wait for a Raft commit)."""

    inline = False
    max_threads = 64
    _pool: concurrent.futures.ThreadPoolExecutor | None = None

    async def _do(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self.inline:
            return fn(*args, **kwargs)
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                self.max_threads, thread_name_prefix=f"kvstore-{self.scheme}")
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, functools.partial(fn, *args, **kwargs))

    @abc.abstractmethod
    def b_put(self, key: bytes, value: bytes, lease: int, prev_kv: bool) -> PutResult: ...

    @abc.abstractmethod
    def b_range(self, start: bytes, end: bytes, limit: int, revision: int, keys_only: bool,
                count_only: bool) -> RangeResult: ...

    @abc.abstractmethod
    def b_delete(self, start: bytes, end: bytes, prev_kv: bool) -> DeleteResult: ...

    @abc.abstractmethod
    def b_txn(self, compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op]
              ) -> TxnResult: ...

    @abc.abstractmethod
    def b_compact(self, revision: int) -> None: ...

    @abc.abstractmethod
    def b_grant(self, ttl: int) -> tuple[int, int]: ...

    @abc.abstractmethod
    def b_revoke(self, lease: int) -> None: ...

    @abc.abstractmethod
    def b_keepalive(self, lease: int) -> int: ...

    @abc.abstractmethod
    def b_lease_info(self, lease: int) -> LeaseInfo: ...

    @abc.abstractmethod
    def b_watch(self, start: bytes, end: bytes, start_revision: int) -> WatchStream: ...

    @abc.abstractmethod
    def b_revision(self) -> int: ...

    @abc.abstractmethod
    def b_close(self) -> None: ...

    async def put(self, key: bytes, value: bytes, lease: int, prev_kv: bool) -> PutResult:
        return await self._do(self.b_put, key, value, lease, prev_kv)

    async def range(self, start: bytes, end: bytes, limit: int, revision: int, keys_only: bool,
                    count_only: bool) -> RangeResult:
        return await self._do(self.b_range, start, end, limit, revision, keys_only, count_only)

    async def delete(self, start: bytes, end: bytes, prev_kv: bool) -> DeleteResult:
        return await self._do(self.b_delete, start, end, prev_kv)

    async def txn(self, compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op]
                  ) -> TxnResult:
        return await self._do(self.b_txn, compare, success, failure)

    async def compact(self, revision: int) -> None:
        await self._do(self.b_compact, revision)

    async def grant(self, ttl: int) -> tuple[int, int]:
        return await self._do(self.b_grant, ttl)

    async def revoke(self, lease: int) -> None:
        await self._do(self.b_revoke, lease)

    async def keepalive(self, lease: int) -> int:
        return await self._do(self.b_keepalive, lease)

    async def lease_info(self, lease: int) -> LeaseInfo:
        return await self._do(self.b_lease_info, lease)

    async def watch(self, start: bytes, end: bytes, start_revision: int) -> WatchStream:
        return await self._do(self.b_watch, start, end, start_revision)

    async def revision(self) -> int:
        return await self._do(self.b_revision)

    async def close(self) -> None:
        await self._do(self.b_close)
        if self._pool is not None:
            self._pool.shutdown(wait=False)


__all__ = ["Backend", "BlockingBackend"]
