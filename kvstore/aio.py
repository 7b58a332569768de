"""The key/value API as coroutines: :class:`AsyncKV`, the core of every handle.

    kv = await kvstore.open_async("cowsql://127.0.0.1:9001/app")
    await kv.put("a", b"1")
    async with await kv.lock("deploy", timeout=5):
        ...
    async with await kv.watch_prefix("cfg/") as events:
        async for event in events:
            ...
    await kv.close()

:class:`AsyncKV` validates arguments, applies the size limits and builds every
helper (hmetcd's TAS/Transaction/TempKey/locks, ZooKeeper's sequence/ephemeral
create and version checks, an optimistic update loop) on a backend's async
primitives (:class:`~kvstore.backend.Backend`). ``cowsql://`` and ``etcd://`` are
asyncio clients: ``open_async`` starts them on the caller's loop, no thread in
between. ``mem:`` runs inline; ``raft://`` waits for pysyncobj in worker threads.
The blocking :class:`~kvstore.KV` is a thin face over an AsyncKV on cowsqlpy's
background loop; its ``kv.aio`` may be awaited from any loop (each call hops to
the backend's loop).

Go hmetcd -> Python: Store -> put, Get -> get, GetRange -> get_range,
Delete -> delete, TAS -> tas, Transaction -> transaction, Watch -> watch,
TempKey -> temp_key, DistLock / DistTimedLock / DistUnlock -> lock() /
lock(timeout=) / release(), Close -> close.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from . import recipes
from .backend import Backend
from .errors import ClosedError, InvalidArgument, InvalidType, VersionMismatch
from .types import (
    COMPARE_OPS,
    Compare,
    DeleteResult,
    Event,
    KeyLike,
    KeyValue,
    Lease,
    LeaseInfo,
    Op,
    Put,
    PutResult,
    Range,
    RangeResult,
    TxnResult,
    ValueLike,
    Version,
    compare,
    lease_id,
    prefix_range,
    range_end,
    to_int,
    to_key,
    to_value,
    validate_txn,
)
from .watch import WatchStream

log = logging.getLogger("kvstore")
T = TypeVar("T")

#: Default TTL (seconds) of the per-handle session lease behind temp_key,
#: ephemeral create and lock.
DEFAULT_SESSION_TTL = 10


def _rev(revision: int | None) -> int:
    return 0 if revision is None else to_int(revision, "revision", 1)


class AsyncKV:
    """A handle on a key/value store, every call a coroutine; an async context
    manager. Keys and values are ``bytes`` (``str`` is UTF-8 encoded). Reads of
    an absent key return ``None``; deleting an absent key is not an error."""

    def __init__(self, backend: Backend, *, session_ttl: int | None = None) -> None:
        self.backend = backend
        ttl = session_ttl if session_ttl is not None else backend.session_ttl
        self.session_ttl = to_int(DEFAULT_SESSION_TTL if ttl is None else ttl, "session_ttl", 1)
        self.scheme = backend.scheme
        #: the loop the backend's coroutines and the session keeper run on
        self.loop: asyncio.AbstractEventLoop = backend.loop or asyncio.get_running_loop()
        self._bound = backend.loop is not None
        self.session = recipes.SessionLease(self)
        self._closed = False

    # ------------------------------------------------------------ plumbing
    async def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a backend coroutine: here, or on its own loop when it is bound to another."""
        if self._closed:
            coro.close()
            raise ClosedError(f"{self.scheme}: KV handle is closed")
        return await self._hop(coro)

    async def _hop(self, coro: Coroutine[Any, Any, T]) -> T:
        if not self._bound or asyncio.get_running_loop() is self.loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Future[None] | concurrent.futures.Future[None]:
        """Start a background job of this handle (a lease keeper) on its loop."""
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is self.loop:
            return asyncio.ensure_future(coro)
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    # ------------------------------------------------------------ basic ops
    async def put(self, key: KeyLike, value: ValueLike, *, lease: int | Lease | None = None,
                  prev_kv: bool = False, expected_version: int | None = None) -> PutResult:
        """Store ``value`` under ``key`` (hmetcd Store).

        ``lease`` attaches the key to a lease; ``prev_kv`` returns the previous
        key-value; ``expected_version`` makes the put conditional on the key's
        current version (0 = the key must not exist), ZooKeeper's ``set(version=)``.

        :returns: :class:`PutResult` (new revision, previous kv if asked).
        :raises VersionMismatch: ``expected_version`` did not match.
        :raises LeaseNotFound: the lease does not exist.
        :raises InvalidKey, ValueTooLarge, InvalidType: bad arguments.
        """
        k, v, lid = to_key(key), to_value(value), lease_id(lease)
        if expected_version is None:
            return await self._call(self.backend.put(k, v, lid, bool(prev_kv)))
        ev = to_int(expected_version, "expected_version")
        r = await self._call(self.backend.txn([Version(k) == ev], [Put(k, v, lid, prev_kv)],
                                              [Range(k)]))
        if not r.succeeded:
            cur = r.responses[0]
            actual = cur[0].version if isinstance(cur, RangeResult) and len(cur) else 0
            raise VersionMismatch(f"{k!r}: expected version {ev}, found {actual}", ev, actual)
        res = r.responses[0]
        assert isinstance(res, PutResult)
        return res

    async def get(self, key: KeyLike, *, revision: int | None = None) -> bytes | None:
        """The value of ``key`` (hmetcd Get); ``None`` when absent, ``b""`` for an
        empty value. ``revision`` reads the key as it was at that revision.

        :raises CompactedError: ``revision`` was compacted.
        :raises FutureRevisionError: ``revision`` is newer than the store.
        """
        kv = await self.get_kv(key, revision=revision)
        return None if kv is None else kv.value

    async def get_kv(self, key: KeyLike, *, revision: int | None = None) -> KeyValue | None:
        """Like :meth:`get` but returns the :class:`KeyValue` with revisions,
        version and lease; ``None`` when absent."""
        r = await self._call(self.backend.range(to_key(key), b"", 0, _rev(revision), False, False))
        return r.kvs[0] if r.kvs else None

    async def get_range(self, start: KeyLike, end: KeyLike | None = None, *, limit: int = 0,
                        revision: int | None = None, keys_only: bool = False,
                        count_only: bool = False) -> RangeResult:
        """Keys in ``[start, end)`` sorted by key (hmetcd GetRange); ``end=None``
        means to the end of the key space.

        ``limit`` (0 = none) caps the result (``.more`` tells if it cut);
        ``revision`` reads a past revision; ``keys_only`` leaves values empty;
        ``count_only`` returns no kvs, only ``.count``.
        """
        return await self._call(self.backend.range(
            to_key(start, "start"), range_end(end), to_int(limit, "limit"), _rev(revision),
            bool(keys_only), bool(count_only)))

    async def get_prefix(self, prefix: KeyLike, *, limit: int = 0, revision: int | None = None,
                         keys_only: bool = False, count_only: bool = False) -> RangeResult:
        """Keys starting with ``prefix``, sorted; same options as :meth:`get_range`."""
        p, e = prefix_range(prefix)
        return await self._call(self.backend.range(p, e, to_int(limit, "limit"), _rev(revision),
                                                   bool(keys_only), bool(count_only)))

    async def range(self, op: Range, *, revision: int | None = None) -> RangeResult:
        """etcd's Range request as one value: ``Get(key)`` (one key, with the
        store's revision even when the key is absent) or ``GetRange(...)``."""
        if not isinstance(op, Range):
            raise InvalidType(f"range() takes a Range (Get/GetRange), not {type(op).__name__}")
        end = op.end if op.end == b"" else to_key(op.end, "end")
        return await self._call(self.backend.range(
            to_key(op.key), end, to_int(op.limit, "limit"), _rev(revision), bool(op.keys_only),
            bool(op.count_only)))

    async def delete(self, key: KeyLike) -> bool:
        """Delete ``key`` (hmetcd Delete). Returns whether it existed; an absent
        key is not an error."""
        return (await self._call(self.backend.delete(to_key(key), b"", False))).deleted > 0

    async def delete_range(self, start: KeyLike, end: KeyLike | None = None, *,
                           prev_kv: bool = False) -> DeleteResult:
        """Delete every key in ``[start, end)`` (``end=None``: to the end) in one
        revision."""
        return await self._call(self.backend.delete(to_key(start, "start"), range_end(end),
                                                    bool(prev_kv)))

    async def delete_prefix(self, prefix: KeyLike, *, prev_kv: bool = False) -> DeleteResult:
        """Delete every key starting with ``prefix`` in one revision."""
        p, e = prefix_range(prefix)
        return await self._call(self.backend.delete(p, e, bool(prev_kv)))

    async def revision(self) -> int:
        """The store's current revision."""
        return await self._call(self.backend.revision())

    async def compact(self, revision: int) -> None:
        """Discard history older than ``revision``: reads and watches at a lower
        revision then raise :class:`CompactedError`.

        :raises CompactedError: already compacted at or past ``revision``.
        :raises FutureRevisionError: ``revision`` is newer than the store.
        """
        await self._call(self.backend.compact(to_int(revision, "revision", 1)))

    # ------------------------------------------------------------ transactions
    async def txn(self, compare: Sequence[Compare] = (), success: Sequence[Op] = (),
                  failure: Sequence[Op] = ()) -> TxnResult:
        """Atomic if/then/else over several keys (etcd Txn): if every
        :class:`Compare` holds, run ``success`` else ``failure``; ops are
        :class:`Put`, :class:`Range` (``Get``/``GetRange``) and ``Delete``.

        :raises InvalidTxn: too many ops, a key written twice in a branch.
        :raises LeaseNotFound: a put names an unknown lease (nothing applied).
        """
        compare, success, failure = list(compare), list(success), list(failure)
        validate_txn(compare, success, failure)
        return await self._call(self.backend.txn(compare, success, failure))

    async def tas(self, key: KeyLike, test_value: ValueLike, set_value: ValueLike) -> bool:
        """Test-and-set (hmetcd TAS): if ``key``'s value equals ``test_value``,
        set it to ``set_value``. Returns False (nothing written) when the key is
        absent or differs."""
        k = to_key(key)
        return (await self.txn([compare(k, "=", test_value)], [Put(k, set_value)], [])).succeeded

    async def transaction(self, key: KeyLike, op: str, value: ValueLike,
                          then_key: KeyLike | None, then_value: ValueLike | None,
                          else_key: KeyLike | None = None, else_value: ValueLike | None = None
                          ) -> bool:
        """hmetcd Transaction: ``if value(key) op value then put(then_key,
        then_value) else put(else_key, else_value)``; ``op`` is one of
        ``= != < >`` (byte-wise comparison). A value comparison on an absent key
        is false. A ``None`` branch key writes nothing. Returns whether the
        condition held."""
        if op not in COMPARE_OPS:
            raise InvalidArgument(f"op must be one of {COMPARE_OPS}, got {op!r}")
        succ: list[Op] = [] if then_key is None else [Put(then_key, _req(then_value))]
        fail: list[Op] = [] if else_key is None else [Put(else_key, _req(else_value))]
        return (await self.txn([compare(key, op, value)], succ, fail)).succeeded

    # ------------------------------------------------------------ watches
    async def watch_range(self, start: KeyLike, end: KeyLike | None = None, *,
                          start_revision: int | None = None) -> WatchStream:
        """Stream of events on ``[start, end)`` (``end=None``: to the end), from
        ``start_revision`` (inclusive; default: the next change). Ordered,
        unique, gap-free, atomic per revision; resumable from
        ``stream.next_revision``. A compacted ``start_revision`` makes the first
        read raise :class:`CompactedError`. Read it with ``async for``,
        ``await stream.aget(timeout)`` or ``await stream.batch(timeout)``."""
        return await self._call(self.backend.watch(to_key(start, "start"), range_end(end),
                                                   _rev(start_revision)))

    async def watch_prefix(self, prefix: KeyLike, start_revision: int | None = None
                           ) -> WatchStream:
        """Stream of events on keys starting with ``prefix`` (see :meth:`watch_range`)."""
        p, e = prefix_range(prefix)
        return await self._call(self.backend.watch(p, e, _rev(start_revision)))

    async def watch_key(self, key: KeyLike, start_revision: int | None = None) -> WatchStream:
        """Stream of events on one key (see :meth:`watch_range`)."""
        return await self._call(self.backend.watch(to_key(key), b"", _rev(start_revision)))

    async def watch(self, key: KeyLike, timeout: float | None = None) -> Event | None:
        """Wait until ``key`` changes or is deleted (hmetcd Watch); returns the
        :class:`Event` (``.type`` is PUT or DELETE, ``.value`` the new value),
        or ``None`` if ``timeout`` seconds pass first."""
        async with await self.watch_key(key) as stream:
            return await stream.aget(timeout)

    # ------------------------------------------------------------ leases
    async def grant(self, ttl: int) -> Lease:
        """A new lease of ``ttl`` seconds; keys put with it are deleted when it
        expires or is revoked."""
        lid, granted = await self._call(self.backend.grant(to_int(ttl, "ttl", 1)))
        return Lease(self, lid, granted)

    async def keepalive(self, lease: int | Lease) -> int:
        """Refresh a lease to its full TTL; returns the TTL.

        :raises LeaseNotFound: expired or revoked."""
        return await self._call(self.backend.keepalive(lease_id(lease)))

    async def revoke(self, lease: int | Lease) -> None:
        """Revoke a lease, deleting its keys in one revision.

        :raises LeaseNotFound: expired or revoked."""
        await self._call(self.backend.revoke(lease_id(lease)))

    async def ttl(self, lease: int | Lease) -> LeaseInfo:
        """Remaining TTL, granted TTL and attached keys of a lease.

        :raises LeaseNotFound: expired or revoked."""
        return await self._call(self.backend.lease_info(lease_id(lease)))

    # ------------------------------------------------------------ recipes
    async def temp_key(self, key: KeyLike, value: ValueLike = b"", *, ttl: int | None = None,
                       renew: bool = False) -> recipes.AsyncTempKey:
        """hmetcd TempKey: put ``key`` on a lease kept alive by this handle; it
        vanishes within the TTL after this process dies, at once on
        ``release()``/``close()``. ``ttl=None`` uses the handle's session lease
        (``session_ttl``). ``renew=True`` (with a ``ttl``) puts the key again on a
        new lease when its lease was lost (an outage longer than the TTL): a
        registration that comes back by itself."""
        if renew and ttl is None:
            raise InvalidArgument("renew=True needs the key's own lease: pass ttl=")
        return await recipes.AsyncTempKey.create(
            self, to_key(key), to_value(value), None if ttl is None else to_int(ttl, "ttl", 1),
            bool(renew))

    async def lock(self, name: str | bytes = "hbtd_dist_lock", timeout: float | None = None
                   ) -> recipes.AsyncLock:
        """Acquire the distributed lock ``name`` (hmetcd DistLock /
        DistTimedLock); returns the held :class:`~kvstore.AsyncLock`, whose
        ``release()`` (or ``async with`` exit; hmetcd DistUnlock) frees it.
        ``lock.fencing_token`` strictly increases with every acquisition. The
        lock is held by this handle's session lease: if the process dies the
        lock frees itself within ``session_ttl``.

        :raises LockTimeout: not acquired within ``timeout`` seconds.
        """
        return await recipes.AsyncLock.acquire_new(self, to_key(name, "lock name"), timeout)

    async def create(self, key: KeyLike, value: ValueLike = b"", *, sequence: bool = False,
                     ephemeral: bool = False, lease: int | Lease | None = None) -> bytes:
        """ZooKeeper create: write ``key`` only if absent and return the key.

        ``sequence=True`` appends a 10-digit counter (``key + b"0000000007"``),
        unique per ``key``; ``ephemeral=True`` attaches the session lease.

        :raises KeyExists: the key already exists (non-sequence create).
        """
        return await recipes.create(self, to_key(key), to_value(value), bool(sequence),
                                    bool(ephemeral), lease_id(lease))

    async def update(self, key: KeyLike, fn: Callable[[bytes | None], ValueLike], *,
                     max_retries: int = 1000) -> int:
        """Optimistic read-modify-write (ZooKeeper RetryChange): call
        ``fn(current_value_or_None)`` and write its result if the key did not
        change meanwhile, else retry. Returns the revision of the write.

        :raises RetriesExhausted: lost ``max_retries`` races.
        """
        return await recipes.update(self, to_key(key), fn, to_int(max_retries, "max_retries", 1))

    # ------------------------------------------------------------ lifecycle
    async def close_session(self) -> None:
        """Revoke the session lease now: this handle's temp keys, locks and
        ephemeral keys vanish; the next recipe that needs one grants a new lease."""
        await self.session.close()

    async def close(self) -> None:
        """Revoke the session lease (temp keys, locks and ephemeral keys vanish)
        and close the backend. Idempotent."""
        if self._closed:
            return
        try:
            await self.session.close()
        except Exception:  # best effort on close; leases expire anyway
            log.debug("revoking the session lease on close failed", exc_info=True)
        self._closed = True
        await self._hop(self.backend.close())

    @property
    def closed(self) -> bool:
        return self._closed

    async def __aenter__(self) -> AsyncKV:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _req(v: ValueLike | None) -> ValueLike:
    if v is None:
        raise InvalidType("a branch key needs a value")
    return v


async def open_async(url: str, *, store: Any = None) -> AsyncKV:
    """Open a handle for ``url`` on the running event loop; the scheme picks the
    backend (see :func:`kvstore.open`). ``store``: for ``cowsql://``, a
    :class:`cowsqlpy.store.NodeStore` that names the cluster's nodes (it follows
    membership changes; the URL's host list may then be empty: ``cowsql:///DB``).

    :raises UnsupportedScheme: no backend registered for the scheme.
    :raises BackendUnavailable: the backend's module cannot be imported.
    """
    from .backends import open_backend

    return AsyncKV(await open_backend(url, store=store))


__all__ = ["AsyncKV", "DEFAULT_SESSION_TTL", "open_async"]
