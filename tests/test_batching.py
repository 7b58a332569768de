"""cowsqlpy.batching.GroupCommitter: batches by count and size, one committer at a time,
errors reach exactly the items a failed batch left unsettled."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from cowsqlpy.batching import GroupCommitter


@dataclass(eq=False)
class Job:
    n: int
    size: int = 1
    future: asyncio.Future[object] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())


def test_batches_follow_the_limits_and_errors_reach_unsettled_items() -> None:
    async def scenario() -> tuple[list[list[int]], list[object]]:
        seen: list[list[int]] = []

        async def run(batch: list[Job]) -> None:
            seen.append([j.n for j in batch])
            await asyncio.sleep(0)
            for j in batch:
                if j.n == 7:
                    raise RuntimeError("boom")      # 7 and later ones stay unsettled
                j.future.set_result(j.n * 10)

        gc = GroupCommitter(run, max_items=3, max_bytes=5, size=lambda j: j.size,
                            map_error=lambda e: ValueError(f"mapped {e}"))
        jobs = [Job(i, size=4 if i == 4 else 1) for i in range(9)]
        for j in jobs:
            gc.submit(j)
        out = await asyncio.gather(*(j.future for j in jobs), return_exceptions=True)
        assert gc.task is not None
        await gc.task
        assert gc.batches == len(seen)
        return seen, out

    seen, out = asyncio.run(scenario())
    # 3 at most; a batch stops once its size reaches 5 (it always takes its first item)
    assert seen == [[0, 1, 2], [3, 4], [5, 6, 7], [8]]
    assert out[:7] == [0, 10, 20, 30, 40, 50, 60]
    assert isinstance(out[7], ValueError) and str(out[7]) == "mapped boom"
    assert out[8] == 80


def test_a_cancelled_committer_fails_its_batch() -> None:
    async def scenario() -> None:
        async def run(batch: list[Job]) -> None:
            raise asyncio.CancelledError

        gc = GroupCommitter(run, max_items=8)
        j = Job(1)
        gc.submit(j)
        with pytest.raises(asyncio.CancelledError):
            await j.future

    asyncio.run(scenario())
