"""Engine errors as kvstore errors, for the cowsql:// backend."""

from __future__ import annotations

from cowsqlpy.errors import Error as EngineError
from cowsqlpy.errors import OutcomeUnknownError as EngineOutcomeUnknown

from ...errors import BackendError, KVError, OperationTimeout, OutcomeUnknownError


def unknown_outcome(exc: EngineOutcomeUnknown) -> OutcomeUnknownError:
    return OutcomeUnknownError("cowsql: leadership was lost during COMMIT and no leader could say "
                          f"within the deadline whether it committed ({exc})")


def kv_error(exc: EngineError) -> KVError:
    """The kvstore error for an engine error that survived the retry policy."""
    if isinstance(exc, EngineOutcomeUnknown):
        return OutcomeUnknownError(f"cowsql: {exc}")
    if exc.retry in ("reconnect", "same_leader"):
        return OperationTimeout(f"cowsql: no usable leader within the retry deadline: {exc}")
    return BackendError(f"cowsql: {exc}", exc.code)
