"""The async form of the key/value API, for every backend.

    kv = await kvstore.open_async("cowsql://127.0.0.1:9001/app")
    await kv.put("a", b"1")
    async with kv.lock("deploy", timeout=5) as lock:
        ...
    async with kv.watch_prefix("cfg/") as events:
        async for event in events:
            ...
    await kv.close()

:class:`AsyncKV` wraps a :class:`~kvstore.KV` handle: every call has the same
arguments, results and errors as the blocking one and runs it in a worker thread
(``asyncio.to_thread``), so the caller's event loop never waits on the network,
a lock or a watch. (The ``etcd://`` and ``cowsql://`` backends also have a
native async core, ``kv.core`` on ``kv.loop``: faster, but its coroutines must
run on that loop.) Watch streams come back as :class:`AsyncWatchStream`, held
locks and temporary keys as async context managers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine, Generator
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from . import recipes
from .api import KV
from .types import Event
from .watch import WatchStream

P = ParamSpec("P")
T = TypeVar("T")
Held = TypeVar("Held", recipes.Lock, recipes.TempKey)


def _threaded(method: Callable[Concatenate[KV, P], T]) -> Callable[Concatenate[AsyncKV, P], Coroutine[Any, Any, T]]:
    """``KV.<name>`` as a coroutine method of AsyncKV, run in a worker thread."""
    name = method.__name__

    async def call(self: AsyncKV, *args: P.args, **kwargs: P.kwargs) -> T:
        result: T = await asyncio.to_thread(getattr(self.kv, name), *args, **kwargs)
        return result

    call.__name__ = name
    call.__qualname__ = f"AsyncKV.{name}"
    call.__doc__ = method.__doc__
    return call


def _watching(method: Callable[Concatenate[KV, P], WatchStream]
              ) -> Callable[Concatenate[AsyncKV, P], AsyncWatchOpen]:
    """``KV.watch_*`` returning an AsyncWatchStream (awaitable or ``async with``)."""
    name = method.__name__

    def call(self: AsyncKV, *args: P.args, **kwargs: P.kwargs) -> AsyncWatchOpen:
        return AsyncWatchOpen(lambda: getattr(self.kv, name)(*args, **kwargs))

    call.__name__ = name
    call.__qualname__ = f"AsyncKV.{name}"
    call.__doc__ = method.__doc__
    return call


class AsyncWatchStream:
    """A :class:`~kvstore.watch.WatchStream` read without blocking the loop:
    ``async for event in stream``, ``await stream.get(timeout)``; same order,
    errors and ``next_revision`` as the stream it wraps."""

    def __init__(self, stream: WatchStream) -> None:
        self.stream = stream

    @property
    def next_revision(self) -> int:
        return self.stream.next_revision

    async def get(self, timeout: float | None = None) -> Event | None:
        """The next event; None after ``timeout`` seconds or once cancelled."""
        if (ready := self.stream.get(0)) is not None:   # already queued: no thread hop
            return ready
        if timeout == 0:
            return None
        return await asyncio.to_thread(self.stream.get, timeout)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        while True:
            # bounded waits, so a cancelled task never leaves a thread blocked for long
            event = await self.get(1.0)
            if event is not None:
                return event
            if self.stream.cancelled:
                raise StopAsyncIteration

    def cancel(self) -> None:
        self.stream.cancel()

    async def __aenter__(self) -> AsyncWatchStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()


class AsyncWatchOpen:
    """``await kv.watch_prefix(...)`` or ``async with kv.watch_prefix(...) as s``."""

    def __init__(self, start: Callable[[], WatchStream]) -> None:
        self._start = start
        self._stream: AsyncWatchStream | None = None

    async def _open(self) -> AsyncWatchStream:
        self._stream = AsyncWatchStream(await asyncio.to_thread(self._start))
        return self._stream

    def __await__(self) -> Generator[Any, None, AsyncWatchStream]:
        return self._open().__await__()

    async def __aenter__(self) -> AsyncWatchStream:
        return await self._open()

    async def __aexit__(self, *exc: object) -> None:
        if self._stream is not None:
            self._stream.cancel()


class AsyncHold(Generic[Held]):
    """A lock or temporary key being acquired: ``await`` it for the held object
    (release it with ``await hold.release()``), or ``async with`` it to release
    on exit."""

    def __init__(self, acquire: Callable[[], Held]) -> None:
        self._acquire: Callable[[], Held] = acquire
        self.held: Held | None = None

    async def _get(self) -> AsyncHold[Held]:
        self.held = await asyncio.to_thread(self._acquire)
        return self

    def __await__(self) -> Generator[Any, None, AsyncHold[Held]]:
        return self._get().__await__()

    async def release(self) -> None:
        if self.held is not None:
            await asyncio.to_thread(self.held.release)

    async def __aenter__(self) -> Held:
        await self._get()
        assert self.held is not None
        return self.held

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


class AsyncKV:
    """Every :class:`~kvstore.KV` call as a coroutine (see the module notes)."""

    def __init__(self, kv: KV) -> None:
        self.kv = kv

    put = _threaded(KV.put)
    get = _threaded(KV.get)
    get_kv = _threaded(KV.get_kv)
    get_range = _threaded(KV.get_range)
    get_prefix = _threaded(KV.get_prefix)
    delete = _threaded(KV.delete)
    delete_range = _threaded(KV.delete_range)
    delete_prefix = _threaded(KV.delete_prefix)
    revision = _threaded(KV.revision)
    compact = _threaded(KV.compact)
    txn = _threaded(KV.txn)
    tas = _threaded(KV.tas)
    transaction = _threaded(KV.transaction)
    watch = _threaded(KV.watch)
    watch_callback = _threaded(KV.watch_callback)
    cancel = _threaded(KV.cancel)
    grant = _threaded(KV.grant)
    keepalive = _threaded(KV.keepalive)
    revoke = _threaded(KV.revoke)
    ttl = _threaded(KV.ttl)
    create = _threaded(KV.create)
    update = _threaded(KV.update)
    close = _threaded(KV.close)

    watch_key = _watching(KV.watch_key)
    watch_prefix = _watching(KV.watch_prefix)
    watch_range = _watching(KV.watch_range)

    def lock(self, name: str | bytes = "hbtd_dist_lock", timeout: float | None = None
             ) -> AsyncHold[recipes.Lock]:
        """:meth:`KV.lock`: ``async with kv.lock(name, timeout) as lock`` (released
        on exit), or ``hold = await kv.lock(...)`` then ``await hold.release()``."""
        return AsyncHold(lambda: self.kv.lock(name, timeout))

    def temp_key(self, key: str | bytes, value: str | bytes = b"", *, ttl: int | None = None
                 ) -> AsyncHold[recipes.TempKey]:
        """:meth:`KV.temp_key` as :meth:`lock` does it (released on exit)."""
        return AsyncHold(lambda: self.kv.temp_key(key, value, ttl=ttl))

    @property
    def closed(self) -> bool:
        return self.kv.closed

    async def __aenter__(self) -> AsyncKV:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def open_async(url: str) -> AsyncKV:
    """:func:`kvstore.open` without blocking the event loop."""
    from . import open as open_kv  # the package imports this module

    return AsyncKV(await asyncio.to_thread(open_kv, url))
