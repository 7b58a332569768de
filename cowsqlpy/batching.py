"""Group commit, the queue half: callers queue items and await their futures; one
committer task (started when the first item arrives, gone when the queue is empty)
takes what is queued in batches and hands each to the owner's ``run_batch``.

Used by the SQL driver (`cowsqlpy.database.Database`: autocommit statements sharing a
transaction) and by kvstore's ``cowsql://`` store (key/value ops sharing one). What a
batch *means* (SQL, evaluation, commit markers) stays with its owner: ``run_batch``
must settle every item's future it can; the ones it leaves pending when it raises get
its error.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar


class Item(Protocol):
    @property
    def future(self) -> asyncio.Future[Any]: ...  # pragma: no cover - a protocol


T = TypeVar("T", bound=Item)


class GroupCommitter(Generic[T]):
    """Batches of at most ``max_items`` items (and, with ``size``, of about ``max_bytes``:
    a batch always takes its first item). ``gather``, awaited before each batch, may
    wait for more items; ``map_error`` turns the error of a failed batch into the one
    its waiting items get."""

    def __init__(self, run_batch: Callable[[list[T]], Awaitable[None]], *, max_items: int,
                 max_bytes: int = 0, size: Callable[[T], int] | None = None,
                 gather: Callable[[], Awaitable[None]] | None = None,
                 map_error: Callable[[BaseException], BaseException] = lambda e: e) -> None:
        self.pending: collections.deque[T] = collections.deque()
        self._run_batch = run_batch
        self._max_items, self._max_bytes, self._size = max_items, max_bytes, size
        self._gather, self._map_error = gather, map_error
        self._task: asyncio.Task[None] | None = None
        self.batches = 0   # batches run (tests, benchmarks)

    def submit(self, item: T) -> None:
        self.pending.append(item)
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._loop())

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The committer while it runs (to wait for it on close)."""
        return self._task

    def _take(self) -> list[T]:
        batch: list[T] = []
        size = 0
        while self.pending and len(batch) < self._max_items and (
                not batch or not self._max_bytes or size < self._max_bytes):
            item = self.pending.popleft()
            batch.append(item)
            if self._size is not None:
                size += self._size(item)
        return batch

    async def _loop(self) -> None:
        while self.pending:
            if self._gather is not None:
                await self._gather()
            batch = self._take()
            self.batches += 1
            try:
                await self._run_batch(batch)
            except BaseException as exc:
                err = self._map_error(exc)
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(err)
                if not isinstance(exc, Exception):
                    raise


__all__ = ["GroupCommitter"]
