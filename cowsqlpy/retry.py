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

    def delay(self, attempt: int) -> float:
        """Back-off before try `attempt` + 1 (attempt counts from 1), with jitter."""
        base = min(self.backoff_cap, self.backoff * (2 ** (attempt - 1)))
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
    tries = 0
    while True:
        tries += 1
        try:
            return await attempt()
        except Error as exc:
            now = time.monotonic()
            if exc.retry == "never":
                raise
            if isinstance(exc, BusyError):
                if now >= busy_until:
                    raise
            elif tries >= policy.max_tries or now - start >= policy.deadline:
                raise
            delay = min(policy.delay(tries), max(0.0, start + policy.deadline - now))
            log.debug("%s: %r; retry %d in %.3fs", what, exc, tries, delay)
            await asyncio.sleep(delay)
            if exc.retry == "reconnect" and on_reconnect is not None:
                await on_reconnect()
