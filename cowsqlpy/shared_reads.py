"""Concurrent autocommit reads pipelined over a few shared sessions.

The engine takes requests back to back on one connection and answers them in
order, so concurrent point reads need not hold one connection each: up to
`READ_DEPTH` queries ride one session, sent in one write (`cowsqlpy.wire`
flushes a loop iteration's requests together) and read from one socket, and 32
readers cost the node and the client a few connections' worth of wake-ups and
system calls instead of 32.

What keeps this safe:

* replies are matched in order per connection and each query has its own
  waiter, so a failing query fails only its caller;
* a session whose result set is arriving (`WireConnection.mid_stream`: its
  first page came, its last has not) takes no new query: a query queued behind
  a large result waits for the rest of it, and a task that reads another query
  before finishing a large one would wait on itself. The few sent before that
  first page arrived get their replies because the wire layer stops applying
  back-pressure to a stream that has replies queued behind it (that stream is
  then read into memory);
* a cancelled caller leaves its stream to be discarded as it arrives
  (`WireConnection.query`), so the connection stays in step;
* a session that reported a lost leader or connection takes no new query and
  goes back to the pool, with that error (which drops it), once its last query
  ended; `retire_all` does the same when the leader is forgotten.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from .client import Session

#: queries in flight on one shared session before another one is used
READ_DEPTH = 8


class SharedReads:
    """Leases sessions to autocommit queries, several queries a session.

    `acquire` gives a session to the leader (the pool's), `release(session, error)`
    takes it back; `gone` says whether an error means the session is unusable;
    `take` gives a pooled session at once when one needs no check (else None).
    """

    def __init__(
        self,
        acquire: Callable[[], Awaitable[Session]],
        release: Callable[[Session, BaseException | None], None],
        gone: Callable[[BaseException], bool],
        take: Callable[[], Session | None] = lambda: None,
        depth: int = READ_DEPTH,
    ) -> None:
        self._acquire = acquire
        self._take = take
        self._release = release
        self._gone = gone
        self.depth = depth
        self._loads: dict[Session, int] = {}  # sessions carrying queries -> queries in flight
        self._retired: dict[Session, BaseException | None] = {}  # take no new query
        # sessions on their way from the pool (maybe dialled) -> the queries waiting for each
        self._opening: dict[asyncio.Future[Session], int] = {}

    @property
    def sessions(self) -> int:
        """Sessions carrying queries now (tests, metrics)."""
        return len(self._loads)

    async def lease(self) -> Session:
        """A session to run one query on: the busiest one that still has room,
        else one from the pool."""
        best: Session | None = None
        best_load = -1
        for session, load in self._loads.items():
            if (
                best_load < load < self.depth
                and session not in self._retired
                and self._open(session)
            ):
                best, best_load = session, load
        if best is not None:
            self._loads[best] += 1
            return best
        if not self._opening and (pooled := self._take()) is not None:
            self._loads[pooled] = 1  # the common case of a lone reader: no task, no wait
            return pooled
        # Every session is full: wait for one from the pool, sharing it with the queries
        # that arrive meanwhile (not one dial per query while the first one is under way).
        opening = next((f for f, n in self._opening.items() if n < self.depth), None)
        if opening is None:
            opening = asyncio.ensure_future(self._acquire())
            self._opening[opening] = 0
            opening.add_done_callback(self._opened)
        self._opening[opening] += 1
        try:
            return await asyncio.shield(opening)  # a failure reaches each waiter; each retries
        except asyncio.CancelledError:
            if opening in self._opening:
                self._opening[opening] -= 1
            elif not opening.cancelled() and opening.exception() is None:
                self.release(opening.result())
            raise

    def _opened(self, opening: asyncio.Future[Session]) -> None:
        load = self._opening.pop(opening)
        if opening.cancelled() or opening.exception() is not None:
            return
        session = opening.result()
        if load:
            self._loads[session] = self._loads.get(session, 0) + load
        else:  # every query that waited for it was cancelled
            self._release(session, None)

    @staticmethod
    def _open(session: Session) -> bool:
        return not session.closed and not session.conn.mid_stream

    def release(self, session: Session, error: BaseException | None = None) -> None:
        """One query on `session` ended (with `error` if it failed)."""
        if session.closed or (error is not None and self._gone(error)):
            self._retired.setdefault(session, error)
        load = self._loads[session] - 1
        if load:
            self._loads[session] = load
            return
        del self._loads[session]
        self._release(session, self._retired.pop(session, None))

    def retire_all(self, address: str | None = None) -> None:
        """No new query on the sessions carrying queries (to `address`, or any)."""
        for session in self._loads:
            if address is None or session.address == address:
                self._retired.setdefault(session, None)
