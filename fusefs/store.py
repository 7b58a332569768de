"""Connections to the filesystem's database: a pool for FUSE's worker threads and the
one-transaction-per-operation runner."""

from __future__ import annotations

import contextlib
import errno
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import cowsqlpy
from cowsqlpy.tls import TLSConfig

from .errors import FsError, as_fs_error

log = logging.getLogger("fusefs.store")
T = TypeVar("T")
# what a leader change does to a request; a read (changing nothing) may always run again
TRANSIENT = (
    cowsqlpy.OutcomeUnknownError,
    cowsqlpy.NoLeaderError,
    cowsqlpy.NotLeaderError,
    cowsqlpy.ConnectionLostError,
    cowsqlpy.TransactionLostError,
)


MAX_BATCH = 64  # transactions sharing one engine transaction
# A procedure's batch waits up to this long (s) for as many rows as showed up during the
# batch before it (that batch's and those queued while it ran): at 8 threads, 7 rows a
# commit instead of 3, and less CPU per create over the daemon and the nodes
# (bench/probe_fusefs_creates.py); one thread's rows never wait.
GATHER_WINDOW = 0.01


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


@dataclass
class _Queued:
    """Work waiting to join a batch: a transaction's function, or a procedure's row."""

    work: Any
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None
    lead: bool = False  # woken to run the next batch, not because this one is done


class _Batcher:
    """Group commit for a mount's threads: a caller that finds nobody running a batch
    runs one of everything queued (up to MAX_BATCH; with a `window`, after waiting that
    long at most for as many items as showed up during the batch before) and hands the
    next to the first
    item still queued, whose thread wakes up to run it; the others wait for theirs."""

    def __init__(self, run: Callable[[list[_Queued]], None], window: float = 0.0) -> None:
        self._run = run
        self._window = window
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._queued: list[_Queued] = []
        self._leading = False
        self._expected = 1  # rows the next batch waits for (see GATHER_WINDOW)

    def submit(self, work: Any) -> Any:
        item = _Queued(work)
        with self._lock:
            self._queued.append(item)
            lead = not self._leading
            self._leading = True
            if self._window:
                self._arrived.notify()
        while True:
            if lead:
                self._lead()
            item.done.wait()
            if not item.lead:
                break
            item.done.clear()
            item.lead, lead = False, True
        if item.error is not None:
            raise item.error
        return item.result

    def _gather(self) -> None:
        """Wait up to the window until as many items are queued as showed up last time."""
        deadline = time.monotonic() + self._window
        while len(self._queued) < self._expected:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._arrived.wait(left)

    def _lead(self) -> None:
        with self._lock:
            if self._window:
                self._gather()
            todo, self._queued = self._queued[:MAX_BATCH], self._queued[MAX_BATCH:]
        try:
            self._run(todo)
        except BaseException as exc:
            for item in todo:
                if item.error is None and item.result is None:
                    item.error = exc
            raise
        finally:
            with self._lock:
                self._expected = min(MAX_BATCH, len(todo) + len(self._queued))
                if self._queued:
                    self._queued[0].lead = True  # its thread runs the next batch
                    self._queued[0].done.set()
                else:
                    self._leading = False
            for item in todo:
                item.done.set()


class Store:
    """A pool of DB-API connections (one per concurrent operation: connections are
    not thread-safe) to one database of the cluster.

    Reads are serializable (served by the leader from what it applied, one round
    trip) unless asked `linearizable` (a read barrier first: open() uses it, so a file
    closed on another mount is read as closed even across a leader change).

    :param servers: cluster addresses.
    :param database: the database that holds the filesystem.
    :param io_timeout: seconds an operation may wait for the cluster before EIO.
    :param tls: mutual TLS with the cluster (`cowsqlpy.tls.TLSConfig`), or None.
    """

    def __init__(
        self,
        servers: Iterable[str],
        database: str,
        io_timeout: float = 30.0,
        tls: TLSConfig | None = None,
    ) -> None:
        self.servers = [s.strip() for s in servers if s.strip()]
        if not self.servers:
            raise ValueError("no cluster address given")
        self.database = database
        self.io_timeout = io_timeout
        self.tls = tls
        self.policy = io_policy(io_timeout)
        # by (linearizable reads, group commit): see connection()
        self._idle: dict[tuple[bool, bool], queue.LifoQueue[Any]] = {
            (False, True): queue.LifoQueue(),
            (True, True): queue.LifoQueue(),
            (False, False): queue.LifoQueue(),
        }
        self._all: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False
        self._tx_batches = _Batcher(self._run_batch)
        self._row_batches: dict[str, _Batcher] = {}
        self.batches = 0  # transactions committed for several operations (tests, benchmarks)
        self.commits = 0  # transactions committed through this store (not procedure rows)

    def _new(self, linearizable: bool, group_commit: bool) -> Any:
        # autocommit=True: BEGIN/COMMIT are ours, and executescript runs inside them
        conn = cowsqlpy.connect(
            self.servers,
            database=self.database,
            policy=self.policy,
            autocommit=True,
            group_commit=group_commit,
            read_consistency="linearizable" if linearizable else "serializable",
            tls=self.tls,
        )
        with self._lock:
            self._all.append(conn)
        return conn

    @contextlib.contextmanager
    def connection(self, linearizable: bool = False, group_commit: bool = True) -> Iterator[Any]:
        """A pooled connection. Without `group_commit`, a write statement outside a
        transaction is one request of its own (the engine's autocommit: no BEGIN, no
        commit marker, no COMMIT to compile and run), and a lost reply is the caller's
        to resolve (OutcomeUnknownError)."""
        if self._closed:
            raise FsError(errno.EIO, "filesystem store closed")
        idle = self._idle[linearizable, group_commit]
        try:
            conn = idle.get_nowait()
        except queue.Empty:
            conn = self._new(linearizable, group_commit)
        try:
            yield conn
        finally:
            if conn.in_transaction:
                with contextlib.suppress(Exception):
                    conn.execute("ROLLBACK")
            idle.put(conn)

    def read(self, fn: Callable[[Any], T], *, linearizable: bool = False) -> T:
        """Run `fn(conn)` outside a transaction (reads on the leader); errors become FsError.

        A read cut by a leader change is run again until the I/O deadline (reads change nothing).
        """
        deadline = time.monotonic() + self.io_timeout
        while True:
            with self.connection(linearizable) as conn:
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
                    conn.execute("COMMIT")
                    self.commits += 1
                    return result
                except cowsqlpy.TransactionLostError as exc:
                    if time.monotonic() >= deadline:
                        raise as_fs_error(exc) from exc
                except FsError:
                    with contextlib.suppress(Exception):
                        conn.execute("ROLLBACK")
                    raise
                except Exception as exc:
                    with contextlib.suppress(Exception):
                        conn.execute("ROLLBACK")
                    raise as_fs_error(exc) from exc
            time.sleep(0.05)

    def batched(self, fn: Callable[[Any], T]) -> T:
        """`transaction(fn)`, but sharing one engine transaction (one Raft commit) with
        the batched transactions of other threads queued meanwhile.

        `fn` must raise FsError, if at all, before its first write: a batch runs
        each `fn` in turn and keeps the writes of those that return. When the batch
        cannot commit as a whole, each `fn` runs again in a transaction of its own.
        """
        result: T = self._tx_batches.submit(fn)
        return result

    def _run_batch(self, todo: list[_Queued]) -> None:
        if len(todo) > 1:

            def tx(conn: Any) -> list[tuple[Any, FsError | None]]:
                out: list[tuple[Any, FsError | None]] = []
                for item in todo:
                    try:
                        out.append((item.work(conn), None))
                    except FsError as exc:  # before its first write: nothing of it to undo
                        out.append((None, exc))
                return out

            try:
                outcomes = self.transaction(tx)
            except FsError as exc:
                if exc.errno == errno.EIO:  # cluster trouble (maybe committed): as if alone
                    for item in todo:
                        item.error = exc
                    return
                # a statement failed (ENOSPC, EEXIST): each runs alone below for its own outcome
            else:
                self.batches += 1
                for item, (result, error) in zip(todo, outcomes, strict=True):
                    item.result, item.error = result, error
                return
        for item in todo:
            try:
                item.result = self.transaction(item.work)
            except BaseException as exc:
                item.error = exc

    def inserted(self, view: str, row: tuple[Any, ...], committed: Callable[[], bool]) -> bool:
        """Insert `row` into `view` (a procedure: its INSTEAD OF trigger does the
        operation, see schema.PROCEDURES) as one statement in the engine's autocommit
        (one request, one round trip), sharing it with the rows other threads queued
        meanwhile: one INSERT of several rows, one commit, all or none.

        :param committed: after a lost reply, tells whether the row's operation committed
            (a linearizable read of what it wrote).
        :returns: True when it committed; False when a row of the batch failed (the
            engine stops there, nothing of the batch is kept): the caller runs its
            operation again its own way (for its precise errno).
        :raises FsError: EIO when the cluster cannot tell.
        """
        with self._lock:
            batcher = self._row_batches.get(view)
            if batcher is None:
                batcher = self._row_batches[view] = _Batcher(
                    lambda todo: self._run_rows(view, todo), GATHER_WINDOW
                )
        done: bool = batcher.submit((row, committed))
        return done

    def _run_rows(self, view: str, todo: list[_Queued]) -> None:
        width = len(todo[0].work[0])
        values = ", ".join(["(" + ", ".join("?" * width) + ")"] * len(todo))
        sql = f"INSERT INTO {view} VALUES {values}"  # one text per batch size: checked once
        params = [v for item in todo for v in item.work[0]]
        self._one_request(todo, lambda conn: conn.execute(sql, params))

    def _one_request(self, todo: list[_Queued], send: Callable[[Any], object]) -> None:
        """Send the batch `todo` (items: (work, committed)) as one request outside a
        transaction; each item's result: True committed, False a statement failed."""
        deadline = time.monotonic() + self.io_timeout
        while True:
            with self.connection(group_commit=False) as conn:
                try:
                    send(conn)
                except (cowsqlpy.NoLeaderError, cowsqlpy.NotLeaderError) as exc:
                    if time.monotonic() < deadline:  # refused before it ran
                        time.sleep(0.05)
                        continue
                    raise as_fs_error(exc) from exc
                except (cowsqlpy.IntegrityError, cowsqlpy.BusyError, cowsqlpy.ProgrammingError):
                    for item in todo:  # a statement failed: nothing of the batch is kept
                        item.result = False
                    return
                except cowsqlpy.Error:  # the reply is lost, or the commit failed: which?
                    for item in todo:
                        try:
                            item.result = bool(item.work[1]())
                        except FsError as exc:
                            item.error = exc
                    return
            self.batches += len(todo) > 1
            log.debug("committed %d operations in one request", len(todo))
            for item in todo:
                item.result = True
            return

    def close(self) -> None:
        self._closed = True
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()
