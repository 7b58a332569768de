"""The stall watchdog: a write stuck on a leader that another node has replaced.

A frozen leader (SIGSTOP, a stalled VM) keeps its TCP connections open and never
answers, so a write in flight on it would wait its whole attempt timeout
(`RetryPolicy.attempt_timeout`, 10 s by default) although the other nodes elected
a new leader long before. After `RetryPolicy.stall_grace` without a byte from the
node, the watchdog asks the other nodes of the store who leads. Only when another
node answers that *it* leads (asked itself: a follower's word carries no term) is
the stuck connection closed; its owner then sees a lost reply and resolves the
write's outcome on the new leader exactly as after a kill (`Database._resolve`:
an acknowledged write is never lost and never applied twice).

A reply timeout alone is no such evidence: a long statement blocks the engine's
thread, and the followers keep naming that node as leader, so it is left alone.
(A statement that blocks it past the election timeout deposes it; such a write
could not commit there anyway.)

Why 0.25 s by default: no node can replace a frozen leader before its followers'
election timeout has passed (15 x `network_latency` in an App, 375 ms at the
default 25 ms; 3 s in a bare engine), so asking sooner finds nothing; a healthy
commit takes a Raft round trip and an fsync, single milliseconds (p99 30-45 ms
under a loaded benchmark), so a write silent for 0.25 s is already suspect; and
asking costs one LEADER round trip per other node, repeated every half grace
while the write stays stuck, so a false alarm costs microseconds of the nodes'
time. The watchdog then notices a new leader at most half a grace after it is
elected.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable

from .client import LeaderTracker, Session, claimed_leader
from .errors import ReplyTimeoutError
from .retry import RetryPolicy

log = logging.getLogger("cowsqlpy.watchdog")


class StallWatchdog:
    """Watches the sessions of one database that carry writes (`watch` / `unwatch`);
    one task per event loop runs while any is watched. `on_abandon(address)` is
    called after the sessions to `address` were abandoned (to drop pooled ones).

    :raises ValueError: `policy.stall_grace` is neither None nor positive and finite.
    """

    def __init__(
        self,
        tracker: LeaderTracker,
        policy: RetryPolicy,
        on_abandon: Callable[[str], None] | None = None,
    ) -> None:
        self.tracker = tracker
        self.policy = policy
        if policy.stall_grace is not None and not 0 < policy.stall_grace < math.inf:
            raise ValueError(
                f"RetryPolicy.stall_grace must be a positive, finite number of seconds or None, "
                f"got {policy.stall_grace!r}"
            )
        self.grace = policy.stall_grace
        self.on_abandon = on_abandon
        self._watched: set[Session] = set()
        self._task: asyncio.Task[None] | None = None
        self.checks = 0  # times the other nodes were asked (tests, metrics)
        self.abandoned = 0  # sessions closed because another node led

    def watch(self, session: Session) -> None:
        if self.grace is None:
            return
        self._watched.add(session)
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run(self.grace))

    def unwatch(self, session: Session) -> None:
        self._watched.discard(session)

    async def _run(self, grace: float) -> None:
        while self._watched:
            await asyncio.sleep(grace / 2)
            stalled: dict[str, list[Session]] = {}
            for session in list(self._watched):
                if session.closed:
                    self._watched.discard(session)
                elif session.conn.stalled_for() >= grace:
                    stalled.setdefault(session.address, []).append(session)
            for address, sessions in stalled.items():
                await self._check(address, sessions, grace)

    async def _check(self, address: str, sessions: list[Session], grace: float) -> None:
        self.checks += 1
        others = [n.address for n in self.tracker.store.get() if n.address != address]
        leader = await claimed_leader(
            others, self.policy, exclude=address, timeout=grace, tls=self.tracker.tls
        )
        if leader is None:
            return  # the others name it (a long statement), or nobody yet: keep waiting
        stuck = [s for s in sessions if s.conn.stalled_for() >= grace]  # no reply meanwhile
        if not stuck:
            return
        log.warning(
            "%s has not answered for %.2fs and %s leads: abandoning %d request(s) there",
            address,
            grace,
            leader,
            len(stuck),
        )
        for session in stuck:
            self.abandoned += 1
            self._watched.discard(session)
            session.conn.close(
                ReplyTimeoutError(
                    f"{address}: no reply for {grace}s while {leader} leads (request abandoned)"
                )
            )
        if self.tracker.last_leader == address:
            self.tracker.last_leader = leader
        if self.on_abandon is not None:
            self.on_abandon(address)

    def close(self) -> None:
        self._watched.clear()
        if self._task is not None:
            self._task.cancel()
            self._task = None
