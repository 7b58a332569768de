"""One table from engine and protocol codes to exception classes.

PEP 249 classes are the roots. Engine failures carry `.code` (the SQLite
extended result code or dqlite protocol code the server sent) and `.message`
(the server's text). Classes are chosen by code only, never by message text.

Each class also says how a client may react, through `retry`:

* ``"never"``: surface to the caller.
* ``"reconnect"``: nothing was applied; drop the connection, find the leader
  and run the request again.
* ``"same_leader"``: transient on the same leader (SQLITE_BUSY); back off and
  try again.
"""

from __future__ import annotations

from typing import ClassVar, Literal

Retry = Literal["never", "reconnect", "same_leader"]


class Warning(Exception):  # noqa: A001 - PEP 249 requires this name
    """PEP 249 warning (never raised by cowsqlpy itself)."""


class Error(Exception):
    """Root of every cowsqlpy error (PEP 249)."""

    retry: ClassVar[Retry] = "never"

    def __init__(self, message: str = "", code: int | None = None) -> None:
        super().__init__(message if code is None else f"{message} (code {code})")
        self.message = message
        self.code = code


class InterfaceError(Error):
    """Misuse of the client, or the client and server disagree on the protocol."""


class DatabaseError(Error):
    """An error reported by, or about, the database."""


class DataError(DatabaseError):
    """A value cannot be encoded or is too big."""


class OperationalError(DatabaseError):
    """Something outside the program's control: the cluster, the network, a lock."""


class IntegrityError(DatabaseError):
    """A constraint failed."""


class InternalError(DatabaseError):
    """The engine's internal state is inconsistent."""


class ProgrammingError(DatabaseError):
    """Bad SQL, wrong parameters, use of a closed object."""


class NotSupportedError(DatabaseError):
    """The engine cannot do this (or cannot do it safely, see the guardrails)."""


# -- Protocol and transport ---------------------------------------------------


class ProtocolError(InterfaceError):
    """Bytes from the server do not decode: truncated, malformed or oversized."""


class EngineProtocolError(InterfaceError):
    """The server could not parse what the client sent (DQLITE_PARSE / DQLITE_PROTO)."""


class ConnectionLostError(OperationalError):
    """The connection to a node dropped (EOF, reset, timeout) before a reply.

    Raised for requests whose effect is known not to have happened, or that do
    not write; writes in doubt raise `OutcomeUnknownError` instead.
    """

    retry = "reconnect"


class ReplyTimeoutError(ConnectionLostError):
    """No reply within the attempt timeout; the client closed the connection.

    No evidence that the node died: its engine thread may be busy (a long query
    blocks it). Retried as a lost connection, never counted as a node death.
    """


class NoLeaderError(OperationalError):
    """No node of the store answered as leader within the retry policy."""

    retry = "reconnect"


class NotLeaderError(OperationalError):
    """The node is not the leader (10250 / legacy 8202): nothing was applied."""

    retry = "reconnect"


class RaftNotLeaderError(NotLeaderError):
    """Code 7 from a write: libdqlite 1.11.1 passes raft_apply()'s own RAFT_NOTLEADER (7)
    through as the FAILURE code (it collides with SQLITE_NOMEM), e.g. while leadership is
    being transferred. The frames were aborted, so nothing was applied (a real NOMEM
    applies nothing either): reconnect and retry."""


class OutcomeUnknownError(OperationalError):
    """A write may or may not have been committed; it is never retried blindly."""


class QueryOfDeathError(OutcomeUnknownError):
    """A second node died while serving the same statement: the driver sends it no
    more (it may be what kills them: a third try could cost the quorum). Nothing
    tells whether a write committed; a query wrote nothing."""


class LeadershipLostError(OutcomeUnknownError):
    """Leadership was lost while a write was replicating (10506 / legacy 8458)."""


class AccessDeniedError(OperationalError, PermissionError):
    """The node's front refused a request this connection's certificate has no right to
    (SQLITE_AUTH_USER, 279: a read-only certificate writing, a non-admin one changing the
    cluster; see `cowsqlpy.rights`). Nothing was applied; never retried."""

    errno = 13  # EACCES, for callers that handle it as a PermissionError


class TransactionLostError(OperationalError):
    """The open transaction died (leader change, lost connection); nothing of it was
    committed. Retry the whole transaction, not the statement."""


class NoDatabaseError(OperationalError):
    """The connection's database handle is gone (code 12, after a leader change)."""

    retry = "reconnect"


class BusyError(OperationalError):
    """The database is locked by another writer (SQLITE_BUSY); the engine fails at once."""

    retry = "same_leader"


class NodeError(OperationalError):
    """The embedded engine node failed to start, stop or recover."""


class NodeStateError(NodeError):
    """A node call made in the wrong state (stop before start, option change while running)."""


class NodeIdentityError(NodeError):
    """An App's data dir does not match what it was asked to run: another address,
    files of another program, or a node of another cluster."""


class ClusterMismatchError(NodeIdentityError):
    """The data dir belongs to a node of a different cluster than the one reached."""


class EngineUnavailableError(ImportError):
    """The engine binding (libdqlite) is not installed; only `Node` needs it."""


# -- The code table -----------------------------------------------------------

# Primary SQLite result codes (code & 0xff) to classes, as Python's sqlite3 does.
_PRIMARY: dict[int, type[Error]] = {}
# Exact codes (extended SQLite codes and dqlite's own) that need their own class.
_EXACT: dict[int, type[Error]] = {}


def register(code: int, cls: type[Error], *, exact: bool = True) -> None:
    """Map an engine code to a class. A code can be registered once only."""
    table = _EXACT if exact else _PRIMARY
    if code in table:
        raise ValueError(f"code {code} already maps to {table[code].__name__}")
    table[code] = cls


for _code, _cls in {
    1: OperationalError,  # SQLITE_ERROR: SQL error or raft error text
    2: InternalError,  # SQLITE_INTERNAL
    3: OperationalError,  # SQLITE_PERM
    4: OperationalError,  # SQLITE_ABORT
    5: BusyError,  # SQLITE_BUSY (and BUSY_RECOVERY 261, BUSY_SNAPSHOT 517)
    6: BusyError,  # SQLITE_LOCKED
    7: OperationalError,  # SQLITE_NOMEM
    8: OperationalError,  # SQLITE_READONLY
    9: OperationalError,  # SQLITE_INTERRUPT
    10: OperationalError,  # SQLITE_IOERR
    11: DatabaseError,  # SQLITE_CORRUPT
    12: NoDatabaseError,  # SQLITE_NOTFOUND: "no database opened"
    13: OperationalError,  # SQLITE_FULL
    14: OperationalError,  # SQLITE_CANTOPEN
    15: OperationalError,  # SQLITE_PROTOCOL
    17: OperationalError,  # SQLITE_SCHEMA
    18: DataError,  # SQLITE_TOOBIG
    19: IntegrityError,  # SQLITE_CONSTRAINT
    20: IntegrityError,  # SQLITE_MISMATCH
    21: InterfaceError,  # SQLITE_MISUSE
    23: OperationalError,  # SQLITE_AUTH
    25: ProgrammingError,  # SQLITE_RANGE: more params than placeholders
    26: DatabaseError,  # SQLITE_NOTADB
    100: ProgrammingError,  # SQLITE_ROW: a row-returning statement was EXECuted
}.items():
    register(_code, _cls, exact=False)

for _code, _cls in {
    0: ProgrammingError,  # "empty statement"
    7: RaftNotLeaderError,  # raw RAFT_NOTLEADER from raft_apply (leader.c), == SQLITE_NOMEM
    10250: NotLeaderError,  # SQLITE_IOERR_NOT_LEADER
    8202: NotLeaderError,  # legacy NOT_LEADER
    10506: LeadershipLostError,  # SQLITE_IOERR_LEADERSHIP_LOST
    8458: LeadershipLostError,  # legacy LEADERSHIP_LOST
    1001: EngineProtocolError,  # DQLITE_PROTO
    1005: EngineProtocolError,  # DQLITE_PARSE
    279: AccessDeniedError,  # SQLITE_AUTH_USER: the front's rights (cowsqlpy.rights)
}.items():
    register(_code, _cls)


def error_for(code: int, message: str) -> Error:
    """The exception for a FAILURE(code, message) from the engine.

    An unknown code gives a `DatabaseError` that still carries `.code`.
    """
    cls = _EXACT.get(code) or _PRIMARY.get(code & 0xFF, DatabaseError)
    return cls(message, code)


__all__ = [
    "Warning",
    "Error",
    "InterfaceError",
    "DatabaseError",
    "DataError",
    "OperationalError",
    "IntegrityError",
    "InternalError",
    "ProgrammingError",
    "NotSupportedError",
    "ProtocolError",
    "EngineProtocolError",
    "ConnectionLostError",
    "ReplyTimeoutError",
    "AccessDeniedError",
    "NoLeaderError",
    "NotLeaderError",
    "RaftNotLeaderError",
    "OutcomeUnknownError",
    "QueryOfDeathError",
    "LeadershipLostError",
    "NoDatabaseError",
    "TransactionLostError",
    "BusyError",
    "NodeError",
    "NodeStateError",
    "NodeIdentityError",
    "ClusterMismatchError",
    "EngineUnavailableError",
    "register",
    "error_for",
]
