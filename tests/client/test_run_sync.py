"""`cowsqlpy.runtime.run_sync`, the hop every synchronous call makes onto the loop:
results, exceptions and timeouts (the coroutine is cancelled, not left running)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from cowsqlpy.runtime import background_loop, run_sync


async def _double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


async def _fail() -> None:
    raise KeyError("boom")


def test_result_and_exception() -> None:
    assert [run_sync(_double(i)) for i in range(100)] == [2 * i for i in range(100)]
    with pytest.raises(KeyError, match="boom"):
        run_sync(_fail())


def test_timeout_cancels_the_coroutine() -> None:
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TimeoutError):
        run_sync(forever(), timeout=0.05)
    assert cancelled.wait(10)
    assert run_sync(_double(21)) == 42  # the loop serves the next call


def test_calls_from_many_threads() -> None:
    results: dict[int, int] = {}

    def work(i: int) -> None:
        results[i] = run_sync(_double(i))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {i: 2 * i for i in range(16)}


def test_refused_on_the_loop_thread() -> None:
    async def nested() -> None:
        run_sync(_double(1))

    with pytest.raises(RuntimeError, match="inside its own event loop"):
        asyncio.run_coroutine_threadsafe(nested(), background_loop()).result(10)
