"""Connections to the filesystem's database: a pool for FUSE's worker threads and the
one-transaction-per-operation runner."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import cowsqlpy

from .errors import FsError, as_fs_error

T = TypeVar("T")
# what a leader change does to a request; a read (changing nothing) may always run again
TRANSIENT = (
    cowsqlpy.OutcomeUnknownError,
    cowsqlpy.NoLeaderError,
    cowsqlpy.NotLeaderError,
    cowsqlpy.ConnectionLostError,
    cowsqlpy.TransactionLostError,
)


def io_policy(io_timeout: float) -> cowsqlpy.RetryPolicy:
    """The retry policy that bounds how long an operation waits for a quorum."""
    attempt = max(0.5, min(10.0, io_timeout / 2))
    return cowsqlpy.RetryPolicy(
        max_tries=1000,
        deadline=io_timeout,
        attempt_timeout=attempt,
        connect_timeout=min(5.0, attempt),
        busy_timeout=io_timeout,
    )


class Store:
    """A pool of DB-API connections (one per concurrent operation: connections are
    not thread-safe) to one database of the cluster.

    :param servers: cluster addresses.
    :param database: the database that holds the filesystem.
    :param io_timeout: seconds an operation may wait for the cluster before EIO.
    """

    def __init__(self, servers: Iterable[str], database: str, io_timeout: float = 30.0) -> None:
        self.servers = [s.strip() for s in servers if s.strip()]
        if not self.servers:
            raise ValueError("no cluster address given")
        self.database = database
        self.io_timeout = io_timeout
        self.policy = io_policy(io_timeout)
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False

    def _new(self) -> Any:
        conn = cowsqlpy.connect(self.servers, database=self.database, policy=self.policy)
        with self._lock:
            self._all.append(conn)
        return conn

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        if self._closed:
            raise FsError(5, "filesystem store closed")
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = self._new()
        try:
            yield conn
        finally:
            if conn.in_transaction:
                with contextlib.suppress(Exception):
                    conn.rollback()
            self._idle.put(conn)

    def read(self, fn: Callable[[Any], T]) -> T:
        """Run `fn(conn)` outside a transaction (reads on the leader); errors become FsError.

        A read cut by a leader change is run again until the I/O deadline (reads change nothing).
        """
        deadline = time.monotonic() + self.io_timeout
        while True:
            with self.connection() as conn:
                try:
                    return fn(conn)
                except TRANSIENT as exc:
                    if time.monotonic() >= deadline:
                        raise as_fs_error(exc) from exc
                except Exception as exc:
                    raise as_fs_error(exc) from exc
            time.sleep(0.05)

    def transaction(self, fn: Callable[[Any], T]) -> T:
        """Run `fn(conn)` inside BEGIN IMMEDIATE ... COMMIT: one engine transaction.

        A transaction lost with a leader change (nothing committed) runs again until
        the I/O deadline; an FsError raised by `fn` rolls back and propagates; any
        other failure becomes FsError (EIO for cluster trouble, see errors.to_errno).
        """
        deadline = time.monotonic() + self.io_timeout
        while True:
            with self.connection() as conn:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    result = fn(conn)
                    conn.commit()
                    return result
                except cowsqlpy.TransactionLostError as exc:
                    if time.monotonic() >= deadline:
                        raise as_fs_error(exc) from exc
                except FsError:
                    with contextlib.suppress(Exception):
                        conn.rollback()
                    raise
                except Exception as exc:
                    with contextlib.suppress(Exception):
                        conn.rollback()
                    raise as_fs_error(exc) from exc
            time.sleep(0.05)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()
