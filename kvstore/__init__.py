"""kvstore: an etcd/ZooKeeper-style key/value API with pluggable backends.

    import kvstore
    with kvstore.open("mem:") as kv:
        kv.put("a", b"1")
        assert kv.get("a") == b"1"

    kv = await kvstore.open_async("cowsql://127.0.0.1:9001/app")   # the async face

The async face (:class:`AsyncKV`) is the core; the blocking :class:`KV` runs it on
cowsqlpy's background loop.

Backends (``kvstore.open(url)`` dispatches on the scheme, see
:mod:`kvstore.backends`): ``mem:``, ``raft://HOST:PORT?peers=...``,
``etcd://HOST:PORT[,...]``, ``cowsql://HOST:PORT[,...]/DATABASE``.
See ``docs/kvstore.md``.
"""

from __future__ import annotations

import logging

from .aio import DEFAULT_SESSION_TTL, AsyncKV, open_async
from .api import KV, Lock, TempKey, open_blocking
from .backend import Backend, BlockingBackend
from .backends import BACKENDS, register
from .errors import (
    AuthenticationError,
    BackendError,
    BackendUnavailable,
    ClosedError,
    CompactedError,
    ConfigurationError,
    FutureRevisionError,
    InvalidArgument,
    InvalidKey,
    InvalidTxn,
    InvalidType,
    KeyExists,
    KVError,
    LeaseNotFound,
    LockTimeout,
    OperationTimeout,
    OutcomeUnknownError,
    PermissionDenied,
    RetriesExhausted,
    RevisionError,
    UnsupportedScheme,
    ValueTooLarge,
    VersionMismatch,
    WatchOverflow,
)
from .recipes import AsyncLock, AsyncTempKey, WatchHandle
from .types import (
    MAX_KEY_BYTES,
    MAX_TXN_BYTES,
    MAX_TXN_OPS,
    MAX_VALUE_BYTES,
    Compare,
    CompareTarget,
    CreateRevision,
    Delete,
    DeleteRange,
    DeleteResult,
    Event,
    EventType,
    Get,
    GetRange,
    KeyValue,
    Lease,
    LeaseId,
    LeaseInfo,
    ModRevision,
    Put,
    PutResult,
    Range,
    RangeResult,
    TxnResult,
    Value,
    Version,
    compare,
    prefix_end,
)
from .watch import WatchStream

logging.getLogger("kvstore").addHandler(logging.NullHandler())


def open(url: str) -> KV:  # noqa: A001 - the package's entry point, like io.open
    """Open a KV handle for ``url``; the scheme picks the backend.

    :raises UnsupportedScheme: no backend registered for the scheme.
    :raises BackendUnavailable: the backend's module cannot be imported.
    """
    return open_blocking(url)


__all__ = [
    "open", "open_async", "AsyncKV", "register", "BACKENDS", "KV", "DEFAULT_SESSION_TTL",
    "Backend", "BlockingBackend", "AsyncLock", "AsyncTempKey",
    "MAX_KEY_BYTES", "MAX_VALUE_BYTES", "MAX_TXN_OPS", "MAX_TXN_BYTES",
    "KeyValue", "Event", "EventType", "Lease", "LeaseInfo", "RangeResult", "PutResult",
    "DeleteResult", "TxnResult", "Compare", "CompareTarget", "Value", "Version",
    "CreateRevision", "ModRevision", "LeaseId", "compare", "Put", "Get", "GetRange", "Range",
    "Delete", "DeleteRange", "prefix_end", "WatchStream", "WatchHandle", "Lock", "TempKey",
    "KVError", "InvalidArgument", "InvalidKey", "InvalidType", "InvalidTxn", "ValueTooLarge",
    "UnsupportedScheme", "BackendUnavailable", "ConfigurationError", "RevisionError",
    "CompactedError", "FutureRevisionError", "LeaseNotFound", "KeyExists", "VersionMismatch",
    "LockTimeout", "OperationTimeout", "OutcomeUnknownError", "RetriesExhausted", "ClosedError", "BackendError",
    "AuthenticationError", "PermissionDenied",
    "WatchOverflow",
]
