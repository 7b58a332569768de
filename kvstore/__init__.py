"""kvstore: an etcd/ZooKeeper-style key/value API with pluggable backends.

    import kvstore
    with kvstore.open("mem:") as kv:
        kv.put("a", b"1")
        assert kv.get("a") == b"1"

Backends (``kvstore.open(url)`` dispatches on the scheme, see
:mod:`kvstore.backends`): ``mem:``, ``raft://HOST:PORT?peers=...``,
``etcd://HOST:PORT[,...]``, ``cowsql://HOST:PORT[,...]/DATABASE``.
See ``docs/kvstore.md``.
"""

from __future__ import annotations

import logging

from .api import DEFAULT_SESSION_TTL, KV
from .backends import BACKENDS, register
from .backends import open_url as _open_url
from .errors import (
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
    RetriesExhausted,
    RevisionError,
    UnsupportedScheme,
    ValueTooLarge,
    VersionMismatch,
    WatchOverflow,
)
from .recipes import Lock, TempKey, WatchHandle
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
    return _open_url(url)


from .aio import AsyncKV, AsyncWatchStream, open_async  # noqa: E402 - needs `open` above

__all__ = [
    "open", "open_async", "AsyncKV", "AsyncWatchStream", "register", "BACKENDS", "KV", "DEFAULT_SESSION_TTL",
    "MAX_KEY_BYTES", "MAX_VALUE_BYTES", "MAX_TXN_OPS", "MAX_TXN_BYTES",
    "KeyValue", "Event", "EventType", "Lease", "LeaseInfo", "RangeResult", "PutResult",
    "DeleteResult", "TxnResult", "Compare", "CompareTarget", "Value", "Version",
    "CreateRevision", "ModRevision", "LeaseId", "compare", "Put", "Get", "GetRange", "Range",
    "Delete", "DeleteRange", "prefix_end", "WatchStream", "WatchHandle", "Lock", "TempKey",
    "KVError", "InvalidArgument", "InvalidKey", "InvalidType", "InvalidTxn", "ValueTooLarge",
    "UnsupportedScheme", "BackendUnavailable", "ConfigurationError", "RevisionError",
    "CompactedError", "FutureRevisionError", "LeaseNotFound", "KeyExists", "VersionMismatch",
    "LockTimeout", "OperationTimeout", "OutcomeUnknownError", "RetriesExhausted", "ClosedError", "BackendError",
    "WatchOverflow",
]
