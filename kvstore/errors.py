"""Exception classes of the kvstore package.

Every error raised on purpose by kvstore derives from :class:`KVError`. Where a
built-in category fits, the class also derives from it (``ValueError``,
``TypeError``, ``TimeoutError``) so generic handlers keep working, but no class
reuses a built-in's name.

"Not found" is never an exception for plain reads: ``get``/``get_kv`` return
``None`` for an absent key. Exceptions are reserved for broken preconditions:
an explicit expected version (:class:`VersionMismatch`), ``create`` of an
existing key (:class:`KeyExists`), an unknown lease (:class:`LeaseNotFound`).
"""

from __future__ import annotations


class KVError(Exception):
    """Root of every kvstore error."""


class InvalidArgument(KVError, ValueError):
    """An argument has the right type but an invalid value."""


class InvalidKey(InvalidArgument):
    """The key is empty or longer than :data:`kvstore.api.MAX_KEY_BYTES`."""


class ValueTooLarge(InvalidArgument):
    """A value (or a whole transaction) exceeds the documented size limits."""


class InvalidType(KVError, TypeError):
    """A key or value is not ``bytes``/``bytearray``/``memoryview``/``str``."""


class InvalidTxn(InvalidArgument):
    """A transaction is malformed (too many ops, the same key written twice)."""


class UnsupportedScheme(InvalidArgument):
    """``kvstore.open`` was given a URL whose scheme has no backend."""


class BackendUnavailable(KVError):
    """The backend for a registered scheme cannot be imported (not written yet,
    or a dependency is missing)."""


class ConfigurationError(InvalidArgument):
    """A backend refused an unsafe or inconsistent configuration (for example
    a ``raft://`` node listening on a non-loopback address without a password)."""


class RevisionError(KVError):
    """Base for reads/watches at a revision that cannot be served."""


class CompactedError(RevisionError):
    """The requested revision was compacted away.

    ``compact_revision`` is the oldest revision still available (0 if unknown).
    """

    def __init__(self, message: str = "required revision has been compacted",
                 compact_revision: int = 0) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision


class WatchOverflow(KVError):
    """A watch stream's reader fell behind: more events were waiting than the
    stream buffers (:data:`kvstore.watch.MAX_BUFFERED_EVENTS` events or
    :data:`kvstore.watch.MAX_BUFFERED_BYTES`). The events before the overflow
    were delivered, whole revisions; resume with a new watch from the stream's
    ``next_revision`` (history permitting)."""

    def __init__(self, message: str, next_revision: int) -> None:
        super().__init__(message)
        self.next_revision = next_revision


class FutureRevisionError(RevisionError):
    """The requested revision is newer than the store's current revision."""


class LeaseNotFound(KVError):
    """The lease does not exist (never granted, revoked or expired)."""


class KeyExists(KVError):
    """``create`` found the key already present."""


class VersionMismatch(KVError):
    """``put(..., expected_version=N)`` found another version.

    ``actual`` is the version found (0 when the key is absent).
    """

    def __init__(self, message: str, expected: int, actual: int) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class LockTimeout(KVError, TimeoutError):
    """``lock(..., timeout=...)`` did not acquire the lock in time."""


class OperationTimeout(KVError, TimeoutError):
    """A backend did not answer within its operation timeout (no quorum,
    server down)."""


class RetriesExhausted(KVError):
    """``update`` or ``create(sequence=True)`` lost every optimistic retry."""


class AuthenticationError(KVError, PermissionError):
    """The server refused our credentials (user/password, certificate)."""


class PermissionDenied(KVError, PermissionError):
    """The authenticated user has no right to this operation."""


class ClosedError(KVError):
    """The KV handle (or the watch) was used after ``close()``."""


class BackendError(KVError):
    """An unexpected error reported by the backend; ``code`` holds the
    backend's own code (gRPC status name, pysyncobj fail reason) when known."""

    def __init__(self, message: str, code: object = None) -> None:
        super().__init__(message)
        self.code = code


class OutcomeUnknownError(BackendError):
    """Leadership or the connection was lost while a write was being committed and
    the backend could not find out in time whether it committed (the counterpart of
    `cowsqlpy.OutcomeUnknownError`). The write may or may not be applied; re-read
    before retrying. ``code`` is ``"outcome_unknown"``."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "outcome_unknown")


#: Stable error codes used inside replicated state machines (``kvstore.mvcc``)
#: to report deterministic failures; one table, no string matching.
ERROR_CODES: dict[str, type[KVError]] = {}


def _register(code: str, cls: type[KVError]) -> None:
    if code in ERROR_CODES:
        raise ValueError(f"kvstore error code {code!r} already maps to {ERROR_CODES[code].__name__}")
    ERROR_CODES[code] = cls


_register("compacted", CompactedError)
_register("future_rev", FutureRevisionError)
_register("lease_not_found", LeaseNotFound)
_register("invalid_txn", InvalidTxn)


def from_code(code: str, message: str, compact_revision: int = 0) -> KVError:
    """Build the exception for a state-machine error code."""
    cls = ERROR_CODES.get(code)
    if cls is None:
        return BackendError(message, code)
    if cls is CompactedError:
        return CompactedError(message, compact_revision)
    return cls(message)
