"""The retry policy's back-off schedule: SQLITE_BUSY is polled from busy_backoff,
other retryable errors back off from backoff; permanent errors are not retried."""

from __future__ import annotations

import asyncio

import pytest

from cowsqlpy import retry
from cowsqlpy.errors import BusyError, NotLeaderError, ProgrammingError
from cowsqlpy.retry import RetryPolicy, retrying


def test_delays_double_from_their_first_value_up_to_the_cap() -> None:
    p = RetryPolicy(backoff=0.05, busy_backoff=0.001, backoff_cap=0.1)
    for attempt, base in [(1, 0.05), (2, 0.1), (3, 0.1)]:
        assert base / 2 <= p.delay(attempt) <= base
    for attempt, base in [(1, 0.001), (2, 0.002), (5, 0.016), (20, 0.1)]:
        assert base / 2 <= p.delay(attempt, busy=True) <= base


def test_retrying_uses_the_busy_schedule_for_busy_only(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(retry.asyncio, "sleep", sleep)
    errors = [BusyError("locked", 5), BusyError("locked", 5), NotLeaderError("not leader", 10250)]

    async def attempt() -> str:
        if errors:
            raise errors.pop(0)
        return "done"

    policy = RetryPolicy(backoff=0.05, busy_backoff=0.001)
    assert asyncio.run(retrying(attempt, policy)) == "done"
    assert len(slept) == 3
    assert 0.0005 <= slept[0] <= 0.001 and 0.001 <= slept[1] <= 0.002  # BUSY: 1 ms, 2 ms
    assert 0.1 <= slept[2] <= 0.2  # the third try overall: backoff * 2**2, halved at most

    async def broken() -> None:
        raise ProgrammingError("no such table: t", 1)

    slept.clear()
    with pytest.raises(ProgrammingError):
        asyncio.run(retrying(broken, policy))
    assert slept == []
