"""Watch streams (shared by every backend) and the local watch hub used by the
backends built on :mod:`kvstore.mvcc` (mem, raft).

A :class:`WatchStream` is a thread-safe queue of :class:`~kvstore.types.Event`
filled by a backend and consumed by the user, in revision order, without gaps
or duplicates (etcd's watch guarantees). It is read blocking (``get``, ``for``)
or awaited (``aget``, ``batch``, ``async for``) from any event loop.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from .errors import ClosedError, KVError, WatchOverflow
from .types import Event, in_range

#: events, and bytes of keys and values, a stream holds for a reader that is
#: behind; beyond either the stream fails with WatchOverflow (memory stays bounded)
MAX_BUFFERED_EVENTS = 100_000
MAX_BUFFERED_BYTES = 64 << 20


def _size(e: Event) -> int:
    return len(e.kv.key) + len(e.kv.value) + (len(e.prev_kv.value) if e.prev_kv else 0)


class WatchStream:
    """Events of one watch, oldest first.

    Iterate it (blocks for the next event, ends after :meth:`cancel`), or call
    :meth:`get` with a timeout. An error (e.g. :class:`~kvstore.CompactedError`
    when the start revision was compacted) is raised by the next read after
    the events received before it. Use as a context manager to cancel on exit.
    """

    def __init__(self, start: bytes, end: bytes, cancel_fn: Callable[[WatchStream], None]
                 | None = None) -> None:
        self.start = start
        self.end = end
        self._cancel_fn = cancel_fn
        self._q: collections.deque[Event] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._error: BaseException | None = None
        self._bytes = 0
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        #: Revision of the next event this stream can deliver (resume point).
        self.next_revision = 0

    # backend side
    def _push(self, events: list[Event]) -> None:
        with self._cond:
            if self._closed or self._error is not None:
                return
            for e in events:
                if not in_range(e.kv.key, self.start, self.end):
                    continue
                if len(self._q) >= MAX_BUFFERED_EVENTS or self._bytes + _size(e) > MAX_BUFFERED_BYTES:
                    self._overflow(e.revision)
                    break
                self._q.append(e)
                self._bytes += _size(e)
            self._notify()

    def _overflow(self, revision: int) -> None:
        """Drop the part of ``revision`` already queued (revisions stay whole) and
        fail the stream after the events before it."""
        while self._q and self._q[-1].revision == revision:
            self._bytes -= _size(self._q.pop())
        self._error = WatchOverflow(
            f"watch reader fell behind: over {MAX_BUFFERED_EVENTS} events or "
            f"{MAX_BUFFERED_BYTES >> 20} MiB waiting; resume from revision {revision}", revision)

    def _fail(self, exc: BaseException) -> None:
        with self._cond:
            if self._error is None and not self._closed:
                self._error = exc
            self._notify()

    def _finish(self) -> None:
        with self._cond:
            self._closed = True
            self._notify()

    def _notify(self) -> None:
        """Wake blocked readers and awaiting ones (called under ``_cond``)."""
        self._cond.notify_all()
        for loop, fut in self._waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_wake, fut)
        self._waiters.clear()

    # user side
    def get(self, timeout: float | None = None) -> Event | None:
        """The next event, or ``None`` when ``timeout`` seconds pass without one
        or the stream was cancelled.

        :raises CompactedError: the requested start revision was compacted.
        :raises KVError: the backend lost the watch.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._q:
                    e = self._q.popleft()
                    self._bytes -= _size(e)
                    self.next_revision = e.revision + 1 if not self._q or \
                        self._q[0].revision != e.revision else e.revision
                    return e
                if self._error is not None:
                    raise self._error
                if self._closed:
                    return None
                if deadline is None:
                    self._cond.wait(1.0)
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    self._cond.wait(left)

    async def aget(self, timeout: float | None = None) -> Event | None:
        """:meth:`get` for coroutines: waits without blocking the event loop."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            with self._cond:
                if not (self._q or self._error is not None or self._closed):
                    left = None if deadline is None else deadline - loop.time()
                    if left is not None and left <= 0:
                        return None
                    fut: asyncio.Future[None] = loop.create_future()
                    self._waiters.append((loop, fut))
                else:
                    return self.get(0)
            try:
                async with asyncio.timeout(left):
                    await fut
            except TimeoutError:
                pass
            finally:
                with self._cond:
                    if (loop, fut) in self._waiters:
                        self._waiters.remove((loop, fut))

    async def batch(self, timeout: float | None = None, max_events: int = 1000
                    ) -> list[Event] | None:
        """The events queued now, whole revisions, at least one and about
        ``max_events`` at most, waiting up to ``timeout`` for the first:
        ``[]`` on timeout, None once cancelled.

        :raises KVError: the watch failed (e.g. compacted)."""
        first = await self.aget(timeout)
        if first is None:
            return None if self._closed else []
        out = [first]
        while len(out) < max_events or self.next_revision == out[-1].revision:
            nxt = self.get(0)
            if nxt is None:
                break
            out.append(nxt)
        return out

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        e = await self.aget()
        if e is None:
            raise StopAsyncIteration
        return e

    async def __aenter__(self) -> WatchStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        e = self.get()
        if e is None:
            raise StopIteration
        return e

    @property
    def cancelled(self) -> bool:
        return self._closed

    def cancel(self) -> None:
        """Stop the watch; pending events can still be read, then iteration ends."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._notify()
        if self._cancel_fn is not None:
            self._cancel_fn(self)

    close = cancel

    def __enter__(self) -> WatchStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cancel()


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class WatchHub:
    """Local fan-out of applied events to watch streams.

    ``register`` and ``publish`` must be called under the same lock as the
    state machine's apply, which makes "backlog from the log, then live events"
    gap-free and duplicate-free.
    """

    def __init__(self) -> None:
        self._streams: set[WatchStream] = set()
        self._lock = threading.Lock()

    def add(self, stream: WatchStream, backlog: list[Event]) -> None:
        if backlog:
            stream._push(backlog)
        with self._lock:
            self._streams.add(stream)

    def remove(self, stream: WatchStream) -> None:
        with self._lock:
            self._streams.discard(stream)

    def publish(self, events: list[Event]) -> None:
        if not events:
            return
        with self._lock:
            streams = list(self._streams)
        for s in streams:
            s._push(events)

    def close(self, exc: KVError | None = None) -> None:
        with self._lock:
            streams = list(self._streams)
            self._streams.clear()
        for s in streams:
            s._fail(exc or ClosedError("the KV handle was closed"))
            s._finish()
