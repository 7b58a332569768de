"""The one retry policy: max tries, exponential back-off, total deadline,
per-attempt timeout; permanent errors are never retried."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from .errors import BusyError, Error

log = logging.getLogger("cowsqlpy.retry")
_jitter = random.Random()  # our own: never disturb (or depend on) an application's seeded `random`
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    max_tries: int = 20
    backoff: float = 0.05  # first delay, seconds
    backoff_cap: float = 1.0
    deadline: float = 30.0  # total time for all tries, seconds
    attempt_timeout: float = 10.0  # one request's time limit (socket deadline)
    connect_timeout: float = 5.0  # dial + handshake of one node
    busy_timeout: float = 5.0  # how long SQLITE_BUSY is retried on the same leader
    # first delay after SQLITE_BUSY: another process's write transaction holds the
    # lock for a millisecond or two, so poll soon (as SQLite's own busy handler does)
    busy_backoff: float = 0.001
    # how long a write may wait for its reply before the other nodes are asked whether
    # one of them now leads (None: never ask; it waits `attempt_timeout`): see
    # cowsqlpy.watchdog, which also says why 0.25 s
    stall_grace: float | None = 0.25

    def delay(self, attempt: int, busy: bool = False) -> float:
        """Back-off before try `attempt` + 1 (attempt counts from 1), with jitter;
        `busy`: after SQLITE_BUSY (starts at `busy_backoff`)."""
        first = self.busy_backoff if busy else self.backoff
        base = min(self.backoff_cap, first * (2 ** (attempt - 1)))
        return base * (0.5 + _jitter.random() / 2)


DEFAULT_POLICY = RetryPolicy()


async def retrying(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    on_reconnect: Callable[[], Awaitable[None]] | None = None,
    what: str = "request",
) -> T:
    """Run `attempt` until it succeeds or fails permanently.

    Errors whose class says ``retry == "reconnect"`` call `on_reconnect` and try
    again; BusyError (``"same_leader"``) is retried for `policy.busy_timeout`;
    any other error is raised at once. The last error is raised when tries or
    the deadline run out.
    """
    start = time.monotonic()
    busy_until = start + policy.busy_timeout
    tries = busy_tries = 0
    while True:
        tries += 1
        try:
            return await attempt()
        except Error as exc:
            now = time.monotonic()
            if exc.retry == "never":
                raise
            busy = isinstance(exc, BusyError)
            if busy:
                if now >= busy_until:
                    raise
                busy_tries += 1
            elif tries >= policy.max_tries or now - start >= policy.deadline:
                raise
            pause = policy.delay(busy_tries, busy=True) if busy else policy.delay(tries)
            delay = min(pause, max(0.0, start + policy.deadline - now))
            log.debug("%s: %r; retry %d in %.3fs", what, exc, tries, delay)
            await asyncio.sleep(delay)
            if exc.retry == "reconnect" and on_reconnect is not None:
                await on_reconnect()
