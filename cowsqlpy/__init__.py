"""cowsqlpy: replicated SQLite (the cowsql engine) embedded in Python.

`import cowsqlpy` needs no engine library: the client, the DB-API and asyncio drivers
and the node stores work anywhere; only `cowsqlpy.node.Node` loads libcowsql.
"""

from .client import Client, NodeMetadata, SyncClient
from .dbapi import (
    BINARY,
    DATETIME,
    LEGACY_TRANSACTION_CONTROL,
    NUMBER,
    ROWID,
    STRING,
    Binary,
    Connection,
    Cursor,
    Date,
    DateFromTicks,
    Time,
    TimeFromTicks,
    Timestamp,
    TimestampFromTicks,
    apilevel,
    connect,
    paramstyle,
    threadsafety,
)
from .errors import (
    AccessDeniedError,
    BusyError,
    ConnectionLostError,
    DatabaseError,
    DataError,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    LeadershipLostError,
    NoLeaderError,
    NotLeaderError,
    NotSupportedError,
    OperationalError,
    OutcomeUnknownError,
    ProgrammingError,
    QueryOfDeathError,
    ReplyTimeoutError,
    TransactionLostError,
    Warning,  # noqa: A004 - PEP 249 requires the name
)
from .protocol import SPARE, STANDBY, VOTER, NodeInfo
from .retry import RetryPolicy
from .store import MemoryNodeStore, NodeStore, NotANodeStoreError, SqliteNodeStore


def __getattr__(name: str) -> object:
    # The engine-backed names load libcowsql only when asked for.
    if name in ("Node", "BOOTSTRAP_ID", "generate_id", "reconfigure_membership", "engine_version"):
        from . import node

        return getattr(node, name)
    if name == "App":
        from .app import App

        return App
    raise AttributeError(f"module 'cowsqlpy' has no attribute {name!r}")


__all__ = [
    "App", "Node", "BOOTSTRAP_ID", "generate_id", "reconfigure_membership", "engine_version",
    "Client", "SyncClient", "NodeMetadata", "NodeInfo", "VOTER", "STANDBY", "SPARE",
    "connect", "Connection", "Cursor", "apilevel", "paramstyle", "threadsafety",
    "Binary", "Date", "Time", "Timestamp", "DateFromTicks", "TimeFromTicks", "TimestampFromTicks",
    "STRING", "BINARY", "NUMBER", "DATETIME", "ROWID",
    "RetryPolicy", "NodeStore", "MemoryNodeStore", "SqliteNodeStore", "NotANodeStoreError",
    "LEGACY_TRANSACTION_CONTROL",
    "Warning", "Error", "InterfaceError", "DatabaseError", "DataError", "OperationalError",
    "IntegrityError", "InternalError", "ProgrammingError", "NotSupportedError",
    "AccessDeniedError", "BusyError", "ConnectionLostError", "LeadershipLostError", "NoLeaderError", "NotLeaderError",
    "OutcomeUnknownError", "QueryOfDeathError", "ReplyTimeoutError", "TransactionLostError",
]
