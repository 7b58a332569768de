"""Coordination recipes built only on the primitives (txn, range, watch, leases),
written once as coroutines over :class:`~kvstore.AsyncKV`, so every backend and
both faces get them: the session lease and its keeper, temporary keys, the
distributed lock with a fencing token, ZooKeeper sequence/ephemeral create, and
the optimistic update loop. (The hmetcd-style callback watcher, :class:`WatchHandle`,
belongs to the blocking face: it calls back from a thread.)

Internal keys live under ``__kvstore/`` in the user's key space (as etcd's
concurrency package uses the user's key space for its locks).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .errors import (
    ClosedError,
    KeyExists,
    KVError,
    LeaseNotFound,
    LockTimeout,
    RetriesExhausted,
    WatchOverflow,
)
from .types import (
    CreateRevision,
    Delete,
    EventType,
    LeaseId,
    ModRevision,
    Put,
    Range,
    RangeResult,
    Version,
    prefix_end,
    to_value,
)

if TYPE_CHECKING:
    from .aio import AsyncKV
    from .api import KV

log = logging.getLogger("kvstore.recipes")

LOCK_PREFIX = b"__kvstore/lock/"
SEQ_PREFIX = b"__kvstore/seq/"

_jitter = random.Random()  # our own, so an application's seeded `random` is left alone


class LeaseKeeper:
    """Keeps one lease alive (a keepalive every ttl/3) until stopped or lost: a task
    on the backend's event loop. ``renew``, if given, replaces a lost lease (it
    returns the new lease id) instead of giving up."""

    def __init__(self, kv: AsyncKV, lease: int, ttl: int,
                 renew: Callable[[], Awaitable[int]] | None = None) -> None:
        self.kv, self.lease, self.ttl = kv, lease, ttl
        self.lost = False
        self._renew = renew
        self._task = kv.spawn(self._run())

    async def _run(self) -> None:
        period = max(0.2, self.ttl / 3.0)
        while True:
            await asyncio.sleep(period)
            try:
                await self.kv.keepalive(self.lease)
            except LeaseNotFound:
                log.warning("lease %#x expired before its keepalive", self.lease)
                if self._renew is None:
                    self.lost = True
                    return
                try:
                    self.lease = await self._renew()
                except ClosedError:
                    return
                except KVError as exc:
                    log.warning("renewing lease %#x failed (%r); retrying", self.lease, exc)
            except ClosedError:
                return
            except KVError:
                log.warning("keepalive of lease %#x failed; retrying", self.lease, exc_info=True)

    def stop(self) -> None:
        self._task.cancel()


class SessionLease:
    """The per-handle lease behind temp keys, ephemeral creates and locks
    (etcd's concurrency.Session, ZooKeeper's session)."""

    def __init__(self, kv: AsyncKV) -> None:
        self._kv = kv
        self._keeper: LeaseKeeper | None = None

    async def lease(self) -> int:
        k = self._keeper
        if k is None or k.lost:
            granted = await self._kv.grant(self._kv.session_ttl)
            k = self._keeper
            if k is None or k.lost:
                k = self._keeper = LeaseKeeper(self._kv, granted.id, granted.ttl)
            else:   # a concurrent first user granted one meanwhile: keep one lease
                await self._kv.revoke(granted)
        return k.lease

    async def close(self) -> None:
        k, self._keeper = self._keeper, None
        if k is not None:
            k.stop()
            if not k.lost:
                try:
                    await self._kv.revoke(k.lease)
                except LeaseNotFound:
                    pass


class AsyncTempKey:
    """A key that lives while this handle keeps its lease alive (hmetcd TempKey).
    ``await release()`` or ``async with``."""

    def __init__(self, kv: AsyncKV, key: bytes, value: bytes, lease: int) -> None:
        self.kv, self.key, self.value, self._lease = kv, key, value, lease
        self._keeper: LeaseKeeper | None = None

    @property
    def lease(self) -> int:
        return self._keeper.lease if self._keeper is not None else self._lease

    @classmethod
    async def create(cls, kv: AsyncKV, key: bytes, value: bytes, ttl: int | None,
                     renew: bool = False) -> AsyncTempKey:
        if ttl is None:
            tk = cls(kv, key, value, await kv.session.lease())
            await kv.put(key, value, lease=tk.lease)
            return tk
        tk = cls(kv, key, value, 0)
        lid = await tk._put_on_new_lease(ttl)
        tk._keeper = LeaseKeeper(kv, lid, ttl, (lambda: tk._put_on_new_lease(ttl)) if renew
                                 else None)
        return tk

    async def _put_on_new_lease(self, ttl: int) -> int:
        granted = await self.kv.grant(ttl)
        await self.kv.put(self.key, self.value, lease=granted.id)
        return granted.id

    async def release(self) -> None:
        """Delete the key now (and revoke its own lease, if it has one)."""
        if self._keeper is not None:
            self._keeper.stop()
            try:
                await self.kv.revoke(self.lease)
            except LeaseNotFound:
                pass
        else:
            await self.kv.txn([ModRevision(self.key) > 0, LeaseId(self.key) == self.lease],
                              [Delete(self.key)])

    async def __aenter__(self) -> AsyncTempKey:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


class AsyncLock:
    """A held distributed lock (etcd concurrency.Mutex algorithm).

    Each acquirer creates ``__kvstore/lock/<name>/<unique>`` on its session
    lease; the owner is the key with the lowest create revision, and waiters
    watch only their predecessor (no herd). ``fencing_token`` is the owner
    key's create revision: it strictly increases across acquisitions, so a
    resource can reject writes carrying an older token.
    """

    def __init__(self, kv: AsyncKV, name: bytes, key: bytes, token: int) -> None:
        self.kv, self.name, self.key = kv, name, key
        self.fencing_token = token
        self._held = True

    @classmethod
    async def acquire_new(cls, kv: AsyncKV, name: bytes, timeout: float | None) -> AsyncLock:
        deadline = None if timeout is None else time.monotonic() + timeout
        lease = await kv.session.lease()
        prefix = LOCK_PREFIX + name + b"/"
        key = prefix + f"{lease:016x}-{os.getpid()}-{uuid.uuid4().hex[:12]}".encode()
        r = await kv.txn([CreateRevision(key) == 0], [Put(key, b"", lease)], [])
        my_rev = r.revision
        try:
            while True:
                rr = await kv.get_range(prefix, prefix_end(prefix))
                mine = [x for x in rr if x.key == key]
                if not mine:
                    raise LeaseNotFound("the session lease expired while waiting for the lock")
                my_rev = mine[0].create_revision
                preds = [x for x in rr if x.create_revision < my_rev]
                if not preds:
                    return cls(kv, name, key, my_rev)
                pred = max(preds, key=lambda x: x.create_revision)
                async with await kv.watch_key(pred.key, start_revision=rr.revision + 1) as w:
                    while True:
                        left = None if deadline is None else deadline - time.monotonic()
                        if left is not None and left <= 0:
                            raise LockTimeout(f"lock {name!r} not acquired within {timeout}s")
                        ev = await w.aget(timeout=left if left is not None else 5.0)
                        if ev is not None and ev.type is EventType.DELETE:
                            break
                        if ev is None and left is None:
                            break  # periodic re-check of the queue (session loss)
        except BaseException:
            try:
                await asyncio.shield(kv.delete(key))
            except KVError:
                log.warning("could not remove lock key %r after failure", key, exc_info=True)
            raise

    async def is_held(self) -> bool:
        """Whether the lock key still exists (False after release or session loss)."""
        return self._held and await self.kv.get_kv(self.key) is not None

    async def release(self) -> None:
        """Release the lock (hmetcd DistUnlock). Idempotent."""
        if self._held:
            self._held = False
            await self.kv.delete(self.key)

    async def __aenter__(self) -> AsyncLock:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()

    def __repr__(self) -> str:
        return f"Lock(name={self.name!r}, fencing_token={self.fencing_token})"


class WatchHandle:
    """A running :meth:`KV.watch_callback` watcher (hmetcd WatchCBHandle)."""

    def __init__(self, kv: KV, key: bytes, op: EventType | None,
                 callback: Callable[..., bool], userdata: Any) -> None:
        self.kv, self.key, self.op = kv, key, op
        self.callback, self.userdata = callback, userdata
        self._stream = kv.watch_key(key)
        self._thread = threading.Thread(target=self._run, name="kvstore-watch-cb", daemon=True)
        self._cancelled = False
        self.done = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._follow():
                # a slow callback let the stream overflow: carry on from where it stopped
                resume = self._stream.next_revision
                self._stream.cancel()
                if self._cancelled:
                    break
                self._stream = self.kv.watch_key(self.key, start_revision=resume)
                if self._cancelled:   # cancel() ran while the old stream was replaced
                    self._stream.cancel()
        except KVError:
            log.warning("watch on %r ended with an error", self.key, exc_info=True)
        finally:
            self._stream.cancel()
            self.done.set()

    def _follow(self) -> bool:
        """Run callbacks for the stream's events; False if it overflowed."""
        try:
            for ev in self._stream:
                if self.op is None or ev.type is self.op:
                    try:
                        keep = self.callback(ev.key, ev.value, ev.type, self.userdata)
                    except Exception:  # a user callback must not kill the loop silently
                        log.exception("watch callback for %r raised; stopping it", self.key)
                        keep = False
                    if keep is False:
                        return True
                if ev.type is EventType.DELETE:
                    return True
        except WatchOverflow:
            return False
        return True

    def cancel(self) -> None:
        self._cancelled = True
        self._stream.cancel()
        if threading.current_thread() is not self._thread and self._thread.is_alive():
            self._thread.join(timeout=5.0)

    @property
    def active(self) -> bool:
        return not self.done.is_set()


async def create(kv: AsyncKV, key: bytes, value: bytes, sequence: bool, ephemeral: bool,
                 lease: int) -> bytes:
    if ephemeral and not lease:
        lease = await kv.session.lease()
    if not sequence:
        r = await kv.txn([CreateRevision(key) == 0], [Put(key, value, lease)], [])
        if not r.succeeded:
            raise KeyExists(f"key {key!r} already exists")
        return key
    counter = SEQ_PREFIX + key
    for attempt in range(1000):
        cur = await kv.get_kv(counter)
        n = cur.version if cur is not None else 0
        new_key = key + b"%010d" % n
        r = await kv.txn([Version(counter) == n, CreateRevision(new_key) == 0],
                         [Put(counter, b""), Put(new_key, value, lease)],
                         [Range(counter)])
        if r.succeeded:
            return new_key
        rr = r.responses[0]
        now_n = rr[0].version if isinstance(rr, RangeResult) and len(rr) else 0
        if now_n == n:
            # the counter did not move, so new_key was taken by a plain put: skip it
            await kv.txn([Version(counter) == n], [Put(counter, b"")], [])
        await _backoff(attempt)
    raise RetriesExhausted(f"create({key!r}, sequence=True) lost 1000 races")


async def update(kv: AsyncKV, key: bytes, fn: Callable[[bytes | None], Any], max_retries: int
                 ) -> int:
    for attempt in range(max_retries):
        cur = await kv.get_kv(key)
        new = to_value(fn(None if cur is None else cur.value))
        cond = CreateRevision(key) == 0 if cur is None else ModRevision(key) == cur.mod_revision
        lease = cur.lease if cur is not None else 0
        r = await kv.txn([cond], [Put(key, new, lease)], [])
        if r.succeeded:
            return r.revision
        await _backoff(attempt)
    raise RetriesExhausted(f"update({key!r}) lost {max_retries} races")


async def _backoff(attempt: int) -> None:
    if attempt:
        await asyncio.sleep(_jitter.uniform(0, min(0.05, 0.001 * (2 ** min(attempt, 6)))))
