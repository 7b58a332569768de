"""The public KV API: one base class that validates arguments, applies the size
limits and builds every helper (hmetcd's TAS/Transaction/Watch/TempKey/locks,
ZooKeeper's sequence/ephemeral create and version checks, an optimistic
update loop) from a small set of primitives.

A backend subclasses :class:`KV` and implements only the ``_``-prefixed
primitives: ``_put``, ``_range``, ``_delete``, ``_txn``, ``_compact``,
``_grant``, ``_revoke``, ``_keepalive``, ``_lease_info``, ``_watch`` and
``_close``. Their arguments arrive validated and normalised (bytes keys,
etcd-convention range ends, int lease ids, typed transaction ops).

Go hmetcd -> Python: Store -> put, Get -> get, GetRange -> get_range,
Delete -> delete, TAS -> tas, Transaction -> transaction, Watch -> watch,
WatchWithCB -> watch_callback, WatchCBCancel -> cancel, TempKey -> temp_key,
DistLock / DistTimedLock / DistUnlock -> lock() / lock(timeout=) / Lock.release,
Close -> close.
"""

from __future__ import annotations

import abc
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from . import recipes
from .errors import ClosedError, InvalidArgument, InvalidType, VersionMismatch
from .types import (
    COMPARE_OPS,
    Compare,
    DeleteRange,
    DeleteResult,
    Event,
    EventType,
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

#: Default TTL (seconds) of the per-handle session lease behind temp_key,
#: ephemeral create and lock.
DEFAULT_SESSION_TTL = 10

WatchCallback = Callable[[bytes, "bytes | None", EventType, Any], bool]


def _rev(revision: int | None) -> int:
    return 0 if revision is None else to_int(revision, "revision", 1)


class KV(abc.ABC):
    """A handle on a key/value store. Thread-safe; a context manager.

    Keys and values are ``bytes`` (``str`` is UTF-8 encoded). Reads of an
    absent key return ``None``; deleting an absent key is not an error.
    """

    #: URL scheme of the backend (set by subclasses).
    scheme = ""

    def __init__(self, *, session_ttl: int = DEFAULT_SESSION_TTL) -> None:
        self.session_ttl = to_int(session_ttl, "session_ttl", 1)
        self._closed = False
        self._session = recipes.Session(self)
        self._callbacks: set[recipes.WatchHandle] = set()
        self._cb_lock = threading.Lock()

    # ================================================================ primitives
    @abc.abstractmethod
    def _put(self, key: bytes, value: bytes, lease: int, prev_kv: bool) -> PutResult: ...

    @abc.abstractmethod
    def _range(self, start: bytes, end: bytes, limit: int, revision: int, keys_only: bool,
               count_only: bool) -> RangeResult: ...

    @abc.abstractmethod
    def _delete(self, start: bytes, end: bytes, prev_kv: bool) -> DeleteResult: ...

    @abc.abstractmethod
    def _txn(self, compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op]
             ) -> TxnResult: ...

    @abc.abstractmethod
    def _compact(self, revision: int) -> None: ...

    @abc.abstractmethod
    def _grant(self, ttl: int) -> tuple[int, int]: ...

    @abc.abstractmethod
    def _revoke(self, lease: int) -> None: ...

    @abc.abstractmethod
    def _keepalive(self, lease: int) -> int: ...

    @abc.abstractmethod
    def _lease_info(self, lease: int) -> LeaseInfo: ...

    @abc.abstractmethod
    def _watch(self, start: bytes, end: bytes, start_revision: int) -> WatchStream:
        """Events in ``(start, end)`` from ``start_revision`` (0: from the next
        revision), ordered, gap-free."""

    @abc.abstractmethod
    def _close(self) -> None: ...

    def _check(self) -> None:
        if self._closed:
            raise ClosedError(f"{self.scheme}: KV handle is closed")

    # ================================================================ basic ops
    def put(self, key: KeyLike, value: ValueLike, *, lease: int | Lease | None = None,
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
        self._check()
        k, v, lid = to_key(key), to_value(value), lease_id(lease)
        if expected_version is None:
            return self._put(k, v, lid, bool(prev_kv))
        ev = to_int(expected_version, "expected_version")
        r = self._txn([Version(k) == ev], [Put(k, v, lid, prev_kv)], [Range(k)])
        if not r.succeeded:
            cur = r.responses[0]
            actual = cur[0].version if isinstance(cur, RangeResult) and len(cur) else 0
            raise VersionMismatch(f"{k!r}: expected version {ev}, found {actual}", ev, actual)
        res = r.responses[0]
        assert isinstance(res, PutResult)
        return res

    def get(self, key: KeyLike, *, revision: int | None = None) -> bytes | None:
        """The value of ``key`` (hmetcd Get); ``None`` when absent, ``b""`` for an
        empty value. ``revision`` reads the key as it was at that revision.

        :raises CompactedError: ``revision`` was compacted.
        :raises FutureRevisionError: ``revision`` is newer than the store.
        """
        kv = self.get_kv(key, revision=revision)
        return None if kv is None else kv.value

    def get_kv(self, key: KeyLike, *, revision: int | None = None) -> KeyValue | None:
        """Like :meth:`get` but returns the :class:`KeyValue` with revisions,
        version and lease; ``None`` when absent."""
        self._check()
        r = self._range(to_key(key), b"", 0, _rev(revision), False, False)
        return r.kvs[0] if r.kvs else None

    def get_range(self, start: KeyLike, end: KeyLike | None = None, *, limit: int = 0,
                  revision: int | None = None, keys_only: bool = False,
                  count_only: bool = False) -> RangeResult:
        """Keys in ``[start, end)`` sorted by key (hmetcd GetRange); ``end=None``
        means to the end of the key space.

        ``limit`` (0 = none) caps the result (``.more`` tells if it cut);
        ``revision`` reads a past revision; ``keys_only`` leaves values empty;
        ``count_only`` returns no kvs, only ``.count``.
        """
        self._check()
        return self._range(to_key(start, "start"), range_end(end), to_int(limit, "limit"),
                           _rev(revision), bool(keys_only), bool(count_only))

    def get_prefix(self, prefix: KeyLike, *, limit: int = 0, revision: int | None = None,
                   keys_only: bool = False, count_only: bool = False) -> RangeResult:
        """Keys starting with ``prefix``, sorted; same options as :meth:`get_range`."""
        self._check()
        p, e = prefix_range(prefix)
        return self._range(p, e, to_int(limit, "limit"), _rev(revision),
                           bool(keys_only), bool(count_only))

    def delete(self, key: KeyLike) -> bool:
        """Delete ``key`` (hmetcd Delete). Returns whether it existed; an absent
        key is not an error."""
        self._check()
        return self._delete(to_key(key), b"", False).deleted > 0

    def delete_range(self, start: KeyLike, end: KeyLike | None = None, *,
                     prev_kv: bool = False) -> DeleteResult:
        """Delete every key in ``[start, end)`` (``end=None``: to the end) in one
        revision."""
        self._check()
        return self._delete(to_key(start, "start"), range_end(end), bool(prev_kv))

    def delete_prefix(self, prefix: KeyLike, *, prev_kv: bool = False) -> DeleteResult:
        """Delete every key starting with ``prefix`` in one revision."""
        self._check()
        p, e = prefix_range(prefix)
        return self._delete(p, e, bool(prev_kv))

    def revision(self) -> int:
        """The store's current revision."""
        self._check()
        return self._range(b"\x00", b"", 0, 0, False, True).revision

    def compact(self, revision: int) -> None:
        """Discard history older than ``revision``: reads and watches at a lower
        revision then raise :class:`CompactedError`.

        :raises CompactedError: already compacted at or past ``revision``.
        :raises FutureRevisionError: ``revision`` is newer than the store.
        """
        self._check()
        self._compact(to_int(revision, "revision", 1))

    # ================================================================ transactions
    def txn(self, compare: Sequence[Compare] = (), success: Sequence[Op] = (),
            failure: Sequence[Op] = ()) -> TxnResult:
        """Atomic if/then/else over several keys (etcd Txn): if every
        :class:`Compare` holds, run ``success`` else ``failure``; ops are
        :class:`Put`, :class:`Range` (``Get``/``GetRange``) and ``Delete``.

        :raises InvalidTxn: too many ops, a key written twice in a branch.
        :raises LeaseNotFound: a put names an unknown lease (nothing applied).
        """
        self._check()
        compare, success, failure = list(compare), list(success), list(failure)
        validate_txn(compare, success, failure)
        return self._txn(compare, success, failure)

    def tas(self, key: KeyLike, test_value: ValueLike, set_value: ValueLike) -> bool:
        """Test-and-set (hmetcd TAS): if ``key``'s value equals ``test_value``,
        set it to ``set_value``. Returns False (nothing written) when the key is
        absent or differs."""
        self._check()
        k = to_key(key)
        r = self._txn([compare(k, "=", test_value)], [Put(k, set_value)], [])
        return r.succeeded

    def transaction(self, key: KeyLike, op: str, value: ValueLike,
                    then_key: KeyLike | None, then_value: ValueLike | None,
                    else_key: KeyLike | None = None, else_value: ValueLike | None = None
                    ) -> bool:
        """hmetcd Transaction: ``if value(key) op value then put(then_key,
        then_value) else put(else_key, else_value)``; ``op`` is one of
        ``= != < >`` (byte-wise comparison). A value comparison on an absent key
        is false. A ``None`` branch key writes nothing. Returns whether the
        condition held."""
        self._check()
        if op not in COMPARE_OPS:
            raise InvalidArgument(f"op must be one of {COMPARE_OPS}, got {op!r}")
        succ: list[Op] = [] if then_key is None else [Put(then_key, _req(then_value))]
        fail: list[Op] = [] if else_key is None else [Put(else_key, _req(else_value))]
        return self.txn([compare(key, op, value)], succ, fail).succeeded

    # ================================================================ watches
    def watch_range(self, start: KeyLike, end: KeyLike | None = None, *,
                    start_revision: int | None = None) -> WatchStream:
        """Stream of events on ``[start, end)`` (``end=None``: to the end), from
        ``start_revision`` (inclusive; default: the next change). Ordered,
        unique, gap-free, atomic per revision; resumable from
        ``stream.next_revision``. A compacted ``start_revision`` makes the first
        read raise :class:`CompactedError`."""
        self._check()
        return self._watch(to_key(start, "start"), range_end(end), _rev(start_revision))

    def watch_prefix(self, prefix: KeyLike, start_revision: int | None = None) -> WatchStream:
        """Stream of events on keys starting with ``prefix`` (see :meth:`watch_range`)."""
        self._check()
        p, e = prefix_range(prefix)
        return self._watch(p, e, _rev(start_revision))

    def watch_key(self, key: KeyLike, start_revision: int | None = None) -> WatchStream:
        """Stream of events on one key (see :meth:`watch_range`)."""
        self._check()
        return self._watch(to_key(key), b"", _rev(start_revision))

    def watch(self, key: KeyLike, timeout: float | None = None) -> Event | None:
        """Block until ``key`` changes or is deleted (hmetcd Watch); returns the
        :class:`Event` (``.type`` is PUT or DELETE, ``.value`` the new value),
        or ``None`` if ``timeout`` seconds pass first."""
        with self.watch_key(key) as stream:
            return stream.get(timeout)

    def watch_callback(self, key: KeyLike, op: EventType | int | None,
                       callback: WatchCallback, userdata: Any = None) -> recipes.WatchHandle:
        """hmetcd WatchWithCB: call ``callback(key, value, op, userdata)`` on
        changes of ``key`` whose type is ``op`` (PUT or DELETE; None for both)
        from a background thread. Runs until the key is deleted, the callback
        returns False, or :meth:`cancel`. Returns the handle."""
        self._check()
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

    # ================================================================ leases
    def grant(self, ttl: int) -> Lease:
        """A new lease of ``ttl`` seconds; keys put with it are deleted when it
        expires or is revoked."""
        self._check()
        lid, granted = self._grant(to_int(ttl, "ttl", 1))
        return Lease(self, lid, granted)

    def keepalive(self, lease: int | Lease) -> int:
        """Refresh a lease to its full TTL; returns the TTL.

        :raises LeaseNotFound: expired or revoked."""
        self._check()
        return self._keepalive(lease_id(lease))

    def revoke(self, lease: int | Lease) -> None:
        """Revoke a lease, deleting its keys in one revision.

        :raises LeaseNotFound: expired or revoked."""
        self._check()
        self._revoke(lease_id(lease))

    def ttl(self, lease: int | Lease) -> LeaseInfo:
        """Remaining TTL, granted TTL and attached keys of a lease.

        :raises LeaseNotFound: expired or revoked."""
        self._check()
        return self._lease_info(lease_id(lease))

    # ================================================================ recipes
    def temp_key(self, key: KeyLike, value: ValueLike = b"", *, ttl: int | None = None
                 ) -> recipes.TempKey:
        """hmetcd TempKey: put ``key`` on a lease kept alive by this handle; it
        vanishes within the TTL after this process dies, at once on
        ``release()``/``close()``. ``ttl=None`` uses the handle's session lease
        (``session_ttl``)."""
        self._check()
        return recipes.TempKey.create(self, to_key(key), to_value(value), ttl)

    def lock(self, name: str | bytes = "hbtd_dist_lock", timeout: float | None = None
             ) -> recipes.Lock:
        """Acquire the distributed lock ``name`` (hmetcd DistLock /
        DistTimedLock); returns the held :class:`~kvstore.recipes.Lock`, a
        context manager whose exit (or ``release()``, hmetcd DistUnlock) frees
        it. ``lock.fencing_token`` strictly increases with every acquisition.
        The lock is held by this handle's session lease: if the process dies
        the lock frees itself within ``session_ttl``.

        :raises LockTimeout: not acquired within ``timeout`` seconds.
        """
        self._check()
        return recipes.Lock.acquire_new(self, to_key(name, "lock name"), timeout)

    def create(self, key: KeyLike, value: ValueLike = b"", *, sequence: bool = False,
               ephemeral: bool = False, lease: int | Lease | None = None) -> bytes:
        """ZooKeeper create: write ``key`` only if absent and return the key.

        ``sequence=True`` appends a 10-digit counter (``key + b"0000000007"``),
        unique per ``key``; ``ephemeral=True`` attaches the session lease.

        :raises KeyExists: the key already exists (non-sequence create).
        """
        self._check()
        return recipes.create(self, to_key(key), to_value(value), bool(sequence),
                              bool(ephemeral), lease_id(lease))

    def update(self, key: KeyLike, fn: Callable[[bytes | None], ValueLike], *,
               max_retries: int = 1000) -> int:
        """Optimistic read-modify-write (ZooKeeper RetryChange): call
        ``fn(current_value_or_None)`` and write its result if the key did not
        change meanwhile, else retry. Returns the revision of the write.

        :raises RetriesExhausted: lost ``max_retries`` races.
        """
        self._check()
        return recipes.update(self, to_key(key), fn, to_int(max_retries, "max_retries", 1))

    # ================================================================ lifecycle
    def close(self) -> None:
        """Stop callback watchers, revoke the session lease (temp keys, locks
        and ephemeral keys vanish), close the backend. Idempotent."""
        if self._closed:
            return
        with self._cb_lock:
            handles = list(self._callbacks)
            self._callbacks.clear()
        for h in handles:
            h.cancel()
        try:
            self._session.close()
        except Exception:  # best effort on close; leases expire anyway
            log.debug("revoking the session lease on close failed", exc_info=True)
        self._closed = True
        self._close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> KV:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            log.debug("KV handle garbage-collected without close()")


def _req(v: ValueLike | None) -> ValueLike:
    if v is None:
        raise InvalidType("a branch key needs a value")
    return v


__all__ = ["KV", "DEFAULT_SESSION_TTL", "DeleteRange", "WatchCallback"]
