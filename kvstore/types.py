"""Value types shared by every backend: key-values, events, comparisons,
transaction operations and results, size limits and argument validation.

Range convention (etcd's, used internally and by every backend): a range is
``(key, end)`` with ``end == b""`` meaning the single key ``key`` and
``end == b"\\0"`` meaning every key ``>= key``; otherwise the half-open
interval ``[key, end)``. Public methods take ``end=None`` for "to the end of
the key space" and convert with :func:`range_end`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidArgument, InvalidKey, InvalidTxn, InvalidType, ValueTooLarge

#: Largest value accepted by ``put`` (1.5 MiB, etcd's default request limit).
MAX_VALUE_BYTES = 1536 * 1024
#: Largest key accepted.
MAX_KEY_BYTES = 4096
#: Most operations in one transaction branch (etcd's ``--max-txn-ops`` default).
MAX_TXN_OPS = 128
#: Most key+value bytes written by one transaction (both branches counted).
MAX_TXN_BYTES = 4 * 1024 * 1024

KeyLike = bytes | bytearray | memoryview | str
ValueLike = bytes | bytearray | memoryview | str

#: Range end meaning "to the end of the key space".
RANGE_ALL = b"\x00"


def _as_bytes(x: object, what: str) -> bytes:
    """bytes as they are, ``str`` UTF-8 encoded, other bytes-likes copied.

    :raises InvalidType: anything else.
    """
    if isinstance(x, bytes):
        return x
    if isinstance(x, str):
        return x.encode("utf-8")
    if isinstance(x, (bytearray, memoryview)):
        return bytes(x)
    raise InvalidType(f"{what} must be bytes or str, not {type(x).__name__}")


def to_key(key: object, what: str = "key") -> bytes:
    """Validate and encode a key; ``str`` is UTF-8 encoded.

    :raises InvalidType: not bytes-like or str.
    :raises InvalidKey: empty or longer than :data:`MAX_KEY_BYTES`.
    """
    b = _as_bytes(key, what)
    if not b:
        raise InvalidKey(f"{what} must not be empty")
    if len(b) > MAX_KEY_BYTES:
        raise InvalidKey(f"{what} is {len(b)} bytes, the limit is {MAX_KEY_BYTES}")
    return b


def to_value(value: object) -> bytes:
    """Validate and encode a value; ``str`` is UTF-8 encoded; ``b""`` is valid.

    :raises InvalidType: not bytes-like or str.
    :raises ValueTooLarge: longer than :data:`MAX_VALUE_BYTES`.
    """
    b = _as_bytes(value, "value")
    if len(b) > MAX_VALUE_BYTES:
        raise ValueTooLarge(f"value is {len(b)} bytes, the limit is {MAX_VALUE_BYTES}")
    return b


def to_int(v: object, what: str, minimum: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise InvalidType(f"{what} must be an int, not {type(v).__name__}")
    if v < minimum:
        raise InvalidArgument(f"{what} must be >= {minimum}, got {v}")
    return v


def range_end(end: object | None) -> bytes:
    """Public ``end`` (None = to the end of the key space) -> internal range end."""
    if end is None:
        return RANGE_ALL
    return to_key(end, "end")


def prefix_end(prefix: bytes) -> bytes:
    """The range end covering every key that starts with ``prefix``."""
    b = bytearray(prefix)
    while b:
        if b[-1] < 0xFF:
            b[-1] += 1
            return bytes(b)
        b.pop()
    return RANGE_ALL


def prefix_range(prefix: object) -> tuple[bytes, bytes]:
    """``(start, end)`` covering every key starting with ``prefix``; an empty
    prefix covers the whole key space."""
    if isinstance(prefix, (bytes, str)) and not prefix:
        return b"\x00", RANGE_ALL
    p = to_key(prefix, "prefix")
    return p, prefix_end(p)


def in_range(key: bytes, start: bytes, end: bytes) -> bool:
    """Whether ``key`` falls in the (etcd-convention) range ``(start, end)``."""
    if not end:
        return key == start
    if end == RANGE_ALL:
        return key >= start
    return start <= key < end


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key at one revision, with etcd's metadata.

    ``create_revision``: revision of the put that created the key (since its
    last delete); ``mod_revision``: revision of its last modification;
    ``version``: number of puts since creation (1 after creation); ``lease``:
    attached lease id or 0.
    """

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0

    def to_tuple(self) -> tuple[bytes, bytes, int, int, int, int]:
        return (self.key, self.value, self.create_revision, self.mod_revision,
                self.version, self.lease)

    @classmethod
    def from_tuple(cls, t: Sequence[Any]) -> KeyValue:
        return cls(bytes(t[0]), bytes(t[1]), int(t[2]), int(t[3]), int(t[4]), int(t[5]))


class EventType(enum.IntEnum):
    """Kind of change; the values are hmetcd's ``KVC_KEYCHANGE_PUT``/``_DELETE``."""

    PUT = 1
    DELETE = 2


@dataclass(frozen=True, slots=True)
class Event:
    """One change. For a delete, ``kv.value`` is empty and ``kv.mod_revision``
    is the revision of the delete. ``prev_kv`` is the key before the change
    (None if it did not exist or the backend did not report it)."""

    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None = None

    @property
    def key(self) -> bytes:
        return self.kv.key

    @property
    def value(self) -> bytes | None:
        return self.kv.value if self.type is EventType.PUT else None

    @property
    def revision(self) -> int:
        return self.kv.mod_revision


# ---------------------------------------------------------------- comparisons

class CompareTarget(enum.IntEnum):
    VERSION = 0
    CREATE = 1
    MOD = 2
    VALUE = 3
    LEASE = 4


COMPARE_OPS = ("=", "!=", "<", ">")


@dataclass(frozen=True, slots=True)
class Compare:
    """``target(key) op value`` evaluated atomically in :meth:`KV.txn`.

    Build with the helpers: ``Value(k) == b"x"``, ``Version(k) > 2``,
    ``CreateRevision(k) == 0``, ``ModRevision(k) < 10``, ``LeaseId(k) != 0``.
    With ``range_end`` set, every key in the range must satisfy it. As in etcd,
    a value comparison on an absent key is false whatever the operator; the
    other targets compare an absent key as 0.
    """

    key: bytes
    target: CompareTarget
    op: str
    value: bytes | int
    range_end: bytes = b""

    def to_list(self) -> list[Any]:
        return [self.key, int(self.target), self.op, self.value, self.range_end]

    @classmethod
    def from_list(cls, v: Sequence[Any]) -> Compare:
        return cls(v[0], CompareTarget(v[1]), v[2], v[3], v[4])


class _Target:
    target: CompareTarget

    def __init__(self, key: KeyLike, *, range_end: KeyLike | None = None) -> None:
        self.key = to_key(key)
        self.range_end = b"" if range_end is None else to_key(range_end, "range_end")

    def _cmp(self, op: str, other: object) -> Compare:
        if self.target is CompareTarget.VALUE:
            v: bytes | int = to_value(other)
        else:
            v = to_int(other, self.target.name.lower())
        return Compare(self.key, self.target, op, v, self.range_end)

    def __eq__(self, other: object) -> Compare:  # type: ignore[override]
        return self._cmp("=", other)

    def __ne__(self, other: object) -> Compare:  # type: ignore[override]
        return self._cmp("!=", other)

    def __lt__(self, other: object) -> Compare:
        return self._cmp("<", other)

    def __gt__(self, other: object) -> Compare:
        return self._cmp(">", other)

    __hash__ = None  # type: ignore[assignment]


class Value(_Target):
    target = CompareTarget.VALUE


class Version(_Target):
    target = CompareTarget.VERSION


class CreateRevision(_Target):
    target = CompareTarget.CREATE


class ModRevision(_Target):
    target = CompareTarget.MOD


class LeaseId(_Target):
    target = CompareTarget.LEASE


def compare(key: KeyLike, op: str, value: ValueLike, target: CompareTarget = CompareTarget.VALUE
            ) -> Compare:
    """Functional form of the comparison helpers; ``op`` is one of ``= != < >``."""
    if op not in COMPARE_OPS:
        raise InvalidArgument(f"compare op must be one of {COMPARE_OPS}, got {op!r}")
    cls = {CompareTarget.VALUE: Value, CompareTarget.VERSION: Version,
           CompareTarget.CREATE: CreateRevision, CompareTarget.MOD: ModRevision,
           CompareTarget.LEASE: LeaseId}[target]
    return cls(key)._cmp(op, value)


# --------------------------------------------------------- transaction ops

@dataclass(frozen=True, slots=True)
class Put:
    """Transaction op: write ``key``."""

    key: bytes
    value: bytes
    lease: int = 0
    prev_kv: bool = False

    def __init__(self, key: KeyLike, value: ValueLike, lease: int | Lease | None = 0,
                 prev_kv: bool = False) -> None:
        object.__setattr__(self, "key", to_key(key))
        object.__setattr__(self, "value", to_value(value))
        object.__setattr__(self, "lease", lease_id(lease))
        object.__setattr__(self, "prev_kv", bool(prev_kv))

    def to_list(self) -> list[Any]:
        return ["put", self.key, self.value, self.lease, self.prev_kv]


@dataclass(frozen=True, slots=True)
class Range:
    """Transaction op: read ``key`` (``end=b""``) or a range (etcd convention)."""

    key: bytes
    end: bytes = b""
    limit: int = 0
    keys_only: bool = False
    count_only: bool = False

    def to_list(self) -> list[Any]:
        return ["range", self.key, self.end, self.limit, self.keys_only, self.count_only]


def Get(key: KeyLike) -> Range:
    """Transaction op: read one key."""
    return Range(to_key(key))


def GetRange(start: KeyLike, end: KeyLike | None = None, *, limit: int = 0,
             keys_only: bool = False, count_only: bool = False) -> Range:
    """Transaction op: read ``[start, end)`` (``end=None``: to the end)."""
    return Range(to_key(start, "start"), range_end(end), to_int(limit, "limit"),
                 bool(keys_only), bool(count_only))


@dataclass(frozen=True, slots=True)
class DeleteRange:
    """Transaction op: delete one key (``end=b""``) or a range (etcd convention)."""

    key: bytes
    end: bytes = b""
    prev_kv: bool = False

    def to_list(self) -> list[Any]:
        return ["del", self.key, self.end, self.prev_kv]


def Delete(key: KeyLike, *, prev_kv: bool = False) -> DeleteRange:
    """Transaction op: delete one key."""
    return DeleteRange(to_key(key), b"", bool(prev_kv))


Op = Put | Range | DeleteRange


def op_from_list(v: Sequence[Any]) -> Op:
    kind = v[0]
    if kind == "put":
        return Put(v[1], v[2], v[3], v[4])
    if kind == "range":
        return Range(v[1], v[2], v[3], v[4], v[5])
    if kind == "del":
        return DeleteRange(v[1], v[2], v[3])
    raise InvalidTxn(f"unknown op {kind!r}")


def validate_txn(compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op]
                 ) -> None:
    """Shared transaction validation, so every backend rejects the same txns.

    :raises InvalidType: an item is not a Compare / Put / Range / DeleteRange.
    :raises InvalidTxn: too many ops; a key written twice in one branch, or a
        put inside a range deleted by the same branch (etcd's rule).
    :raises ValueTooLarge: more than :data:`MAX_TXN_BYTES` written.
    """
    for c in compare:
        if not isinstance(c, Compare):
            raise InvalidType(f"compare items must be Compare, not {type(c).__name__}")
        if c.op not in COMPARE_OPS:
            raise InvalidArgument(f"compare op must be one of {COMPARE_OPS}")
    total = 0
    for branch in (success, failure):
        if len(branch) > MAX_TXN_OPS:
            raise InvalidTxn(f"{len(branch)} ops in one branch, the limit is {MAX_TXN_OPS}")
        puts: set[bytes] = set()
        dels: list[DeleteRange] = []
        for op in branch:
            if isinstance(op, Put):
                if op.key in puts:
                    raise InvalidTxn(f"key {op.key!r} is put twice in one transaction")
                puts.add(op.key)
                total += len(op.key) + len(op.value)
            elif isinstance(op, DeleteRange):
                dels.append(op)
            elif not isinstance(op, Range):
                raise InvalidType(f"txn ops must be Put/Range/DeleteRange, not {type(op).__name__}")
        for d in dels:
            for k in puts:
                if in_range(k, d.key, d.end):
                    raise InvalidTxn(f"key {k!r} is both put and deleted in one transaction")
    if len(compare) > MAX_TXN_OPS:
        raise InvalidTxn(f"{len(compare)} comparisons, the limit is {MAX_TXN_OPS}")
    if total > MAX_TXN_BYTES:
        raise ValueTooLarge(f"transaction writes {total} bytes, the limit is {MAX_TXN_BYTES}")


# ------------------------------------------------------------------ results

@dataclass(frozen=True, slots=True)
class RangeResult:
    """Result of a range read: a sorted sequence of :class:`KeyValue`.

    ``count`` is the number of keys in the range (regardless of ``limit``),
    ``more`` whether ``limit`` cut the result, ``revision`` the store revision
    the read was served at.
    """

    kvs: tuple[KeyValue, ...]
    count: int
    more: bool
    revision: int

    def __len__(self) -> int:
        return len(self.kvs)

    def __getitem__(self, i: Any) -> Any:
        return self.kvs[i]

    def __iter__(self) -> Iterator[KeyValue]:
        return iter(self.kvs)

    def keys(self) -> list[bytes]:
        return [kv.key for kv in self.kvs]

    def items(self) -> list[tuple[bytes, bytes]]:
        return [(kv.key, kv.value) for kv in self.kvs]


@dataclass(frozen=True, slots=True)
class PutResult:
    revision: int
    prev_kv: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class DeleteResult:
    deleted: int
    revision: int
    prev_kvs: tuple[KeyValue, ...] = ()


@dataclass(frozen=True, slots=True)
class TxnResult:
    """``succeeded``: whether all comparisons held; ``responses``: one result
    per op of the branch that ran (RangeResult / PutResult / DeleteResult);
    ``revision``: store revision after the transaction."""

    succeeded: bool
    responses: tuple[RangeResult | PutResult | DeleteResult, ...]
    revision: int


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    id: int
    ttl: int            # remaining seconds
    granted_ttl: int
    keys: tuple[bytes, ...] = field(default=())


class Lease:
    """A granted lease. ``id`` is what ``put(..., lease=)`` takes (the object
    itself is accepted too). Its methods call the handle that granted it: on an
    :class:`~kvstore.AsyncKV` they return coroutines to await."""

    def __init__(self, kv: Any, lease_id: int, ttl: int) -> None:
        self._kv = kv
        self.id = lease_id
        self.ttl = ttl

    def keepalive(self) -> Any:
        return self._kv.keepalive(self.id)

    def revoke(self) -> Any:
        return self._kv.revoke(self.id)

    def remaining(self) -> Any:
        return self._kv.ttl(self.id)

    def __repr__(self) -> str:
        return f"Lease(id={self.id:#x}, ttl={self.ttl})"


def lease_id(lease: int | Lease | None) -> int:
    if lease is None:
        return 0
    if isinstance(lease, Lease):
        return lease.id
    return to_int(lease, "lease")
