"""Read barriers: what makes a read on this engine linearizable.

The engine serves a query on whichever node believes it leads and has no
read-index, so a leader that was deposed and has not noticed yet can serve a
stale read. A barrier commits a write that really changes a page (a no-op write
makes no WAL frame and skips Raft) after the read began; once its commit is
acknowledged, the node that committed it has applied every entry before it, so a
read that node then serves sees every write acknowledged before the read began.
(A new leader applies its whole log before its first query, so the read may also
follow the leader; a node that did not commit the barrier may not serve it.)

The barrier writes go to a database of their own (`BARRIER_DATABASE`): Raft
orders the entries of every database of a node in one log, and the engine's
write lock is per database, so barriers never wait for, or deadlock with, an
application's open write transaction. Reads that arrive while a barrier is in
flight share the next one, as etcd batches ReadIndex requests.

A round is not started while the reads the last one let through are still on
their way to the engine (`reading`, at most `READ_GATE`): a leader that has a log
entry in flight (the next barrier) makes every query it receives wait for a Raft
barrier entry of its own (`needsBarrier` in the engine's src/leader.c: last
applied < last index), so a barrier sent under the previous round's queries costs
each of them a Raft round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .client import LeaderTracker, Session
from .errors import ConnectionLostError, LeadershipLostError, NoDatabaseError, NotLeaderError
from .retry import RetryPolicy, retrying

if TYPE_CHECKING:
    from .watchdog import StallWatchdog

log = logging.getLogger("cowsqlpy.barrier")

BARRIER_DATABASE = "cowsqlpy-read-barrier"
BARRIER_SCHEMA = "CREATE TABLE IF NOT EXISTS barrier (id INTEGER PRIMARY KEY CHECK (id = 0), n INTEGER NOT NULL)"
BARRIER_WRITE = "INSERT INTO barrier (id, n) VALUES (0, 1) ON CONFLICT (id) DO UPDATE SET n = n + 1"

_GONE = (NotLeaderError, ConnectionLostError, NoDatabaseError, LeadershipLostError)
#: longest a round waits for the previous round's reads to reach the engine (a slow
#: query must not hold every other linearizable read back)
READ_GATE = 0.005


class ReadBarrier:
    """Batched read barriers for one cluster, seen from one event loop."""

    def __init__(self, tracker: LeaderTracker, policy: RetryPolicy, watchdog: StallWatchdog | None = None) -> None:
        self.tracker = tracker
        self.policy = policy
        self.watchdog = watchdog  # abandons a barrier stuck on a frozen leader
        self.rounds = 0  # barriers committed (tests, metrics)
        self._session: Session | None = None
        self._running: asyncio.Future[str] | None = None  # the round in flight
        self._next: asyncio.Future[str] | None = None  # the round that starts after it
        self._reading = 0  # reads let through by a round whose query has no reply yet
        self._reads_sent: asyncio.Event | None = None  # set when _reading falls to 0

    async def wait(self) -> str:
        """Return once a barrier that started after this call has committed; the
        address of the node it committed on.

        :raises OperationalError: no leader could commit one within the retry policy.
        """
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            if self._running is None:
                asyncio.ensure_future(self._run_rounds())
        return await asyncio.shield(self._next)

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Around a read sent after `wait()`, until its query's first reply (or error):
        the next round waits for it (see the module's doc)."""
        self._reading += 1
        try:
            yield
        finally:
            self._reading -= 1
            if self._reading == 0 and self._reads_sent is not None:
                self._reads_sent.set()

    async def _reads_reached_engine(self) -> None:
        if self._reading:
            self._reads_sent = asyncio.Event()
            try:
                async with asyncio.timeout(READ_GATE):
                    await self._reads_sent.wait()
            except TimeoutError:
                pass
            finally:
                self._reads_sent = None

    async def _run_rounds(self) -> None:
        while self._next is not None:
            await self._reads_reached_engine()
            self._running, self._next = self._next, None
            try:
                address = await retrying(self._commit_one, self.policy, on_reconnect=self._reconnect,
                                         what="read barrier")
            except Exception as exc:  # handed to every waiter of the round
                self._running.set_exception(exc)
            except BaseException:
                self._running.cancel()
                raise
            else:
                self.rounds += 1
                self._running.set_result(address)
            finally:
                self._running = None

    async def _commit_one(self) -> str:
        session = self._session
        if session is None or session.closed:
            session = Session(await self.tracker.connect(), self.policy)
            try:
                await session.open(BARRIER_DATABASE)
                await session.exec_sql(BARRIER_SCHEMA)
            except BaseException:
                session.close()
                raise
            self._session = session
        if self.watchdog is not None:
            self.watchdog.watch(session)
        try:
            await session.exec_sql(BARRIER_WRITE)
        except (ConnectionLostError, LeadershipLostError) as exc:
            # the write's outcome is unknown; another round decides (a barrier is idempotent)
            await self._reconnect()
            raise NotLeaderError(f"read barrier reply lost: {exc.message}") from exc
        except _GONE:
            await self._reconnect()
            raise
        finally:
            if self.watchdog is not None:
                self.watchdog.unwatch(session)
        return session.address

    def drop_node(self, address: str) -> None:
        """Another node leads: the next barrier must not go to `address`."""
        if self._session is not None and self._session.address == address:
            self.close()

    async def _reconnect(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
        self.tracker.forget()

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
