"""The one place where failures become errno values."""

from __future__ import annotations

import errno
import logging

import cowsqlpy
import kvstore

log = logging.getLogger("fusefs.errors")

SQLITE_FULL = 13


class FsError(OSError):
    """A filesystem operation failed with `errno` (what the caller of the syscall sees)."""

    def __init__(self, code: int, detail: str | None = None) -> None:
        super().__init__(code, detail or errno.errorcode.get(code, str(code)))


def to_errno(exc: BaseException) -> int:
    """The errno for any exception an operation can raise.

    Cluster trouble (no quorum after the bounded wait, an outcome nobody can tell,
    a lost connection) is EIO: the operation did not happen, or cannot be known to
    have happened, and a filesystem has no better word for it.
    """
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    if isinstance(exc, cowsqlpy.DatabaseError) and getattr(exc, "code", None) == SQLITE_FULL:
        return errno.ENOSPC
    if isinstance(exc, cowsqlpy.IntegrityError):
        return errno.EEXIST  # a name that another mount created between our check and insert
    if isinstance(exc, kvstore.ValueTooLarge):
        return errno.EFBIG
    if isinstance(exc, kvstore.InvalidKey):
        return errno.ENAMETOOLONG
    if isinstance(exc, kvstore.KeyExists):
        return errno.EEXIST
    if isinstance(exc, cowsqlpy.Error | kvstore.KVError):
        log.warning("cluster error, answering EIO: %r", exc)
        return errno.EIO
    log.error("unexpected error, answering EIO", exc_info=exc)
    return errno.EIO


def as_fs_error(exc: BaseException) -> FsError:
    if isinstance(exc, FsError):
        return exc
    return FsError(to_errno(exc), str(exc))
