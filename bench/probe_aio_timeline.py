"""Where a lone autocommit INSERT's wall time goes, sync driver against async driver
(diagnostic for issue 17, item 1).

    .venv/bin/python bench/probe_aio_timeline.py [--rounds 4] [--ops 300]

One 3-node cluster (nodes in child processes); the two drivers alternate, `--ops`
INSERTs a round, one at a time. Each operation is timed from the caller's `execute` to
its return, with timestamps (microseconds from the start, medians) where the driver
hands the write to group commit (`submit`), the committer task starts the batch
(`batch`), its requests leave in one send (`flush`), the first and last reply arrive,
and the write is settled (`deliver`). The stamps come from wrapping the driver's own
functions in this process (a diagnostic, not an API).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cowsqlpy
import cowsqlpy.aio
from cowsqlpy import batching, database, wire
from cowsqlpy.testing import Cluster

SQL = "INSERT INTO kv (k, v) VALUES (?, ?)"
STAGES = ("submit", "batch", "flush", "first_reply", "last_reply", "deliver", "done")
stamps: dict[str, float] = {}


def stamp_before(owner: Any, name: str, stage: str, first_only: bool = False) -> None:
    """Record `stage` each time owner.name is called (the first call only: `first_only`)."""
    original: Callable[..., Any] = getattr(owner, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not first_only or stage not in stamps:
            stamps[stage] = time.perf_counter()
        return original(*args, **kwargs)

    setattr(owner, name, wrapped)


stamp_before(batching.GroupCommitter, "submit", "submit")
stamp_before(database.Database, "_run_batch", "batch")
stamp_before(wire.WireConnection, "_flush", "flush", first_only=True)
stamp_before(wire.WireConnection, "data_received", "first_reply", first_only=True)
stamp_before(wire.WireConnection, "data_received", "last_reply")
stamp_before(database, "_deliver", "deliver")


def timeline(rows: list[dict[str, float]], start: float) -> None:
    rows.append(
        {k: (v - start) * 1e6 for k, v in stamps.items()}
        | {"done": (time.perf_counter() - start) * 1e6}
    )


def sync_side(addresses: list[str], ops: int, base: int) -> list[dict[str, float]]:
    conn = cowsqlpy.connect(addresses, database="timeline", autocommit=True)
    cur = conn.cursor()
    cur.execute(SQL, (base, "x"))  # session and markers set up
    rows: list[dict[str, float]] = []
    for i in range(1, ops):
        stamps.clear()
        start = time.perf_counter()
        cur.execute(SQL, (base + i, "x" * 100))
        timeline(rows, start)
    conn.close()
    return rows


async def async_side(addresses: list[str], ops: int, base: int) -> list[dict[str, float]]:
    conn = await cowsqlpy.aio.connect(addresses, database="timeline", autocommit=True)
    cur = conn.cursor()
    await cur.execute(SQL, (base, "x"))
    rows: list[dict[str, float]] = []
    for i in range(1, ops):
        stamps.clear()
        start = time.perf_counter()
        await cur.execute(SQL, (base + i, "x" * 100))
        timeline(rows, start)
    await conn.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--ops", type=int, default=300)
    args = parser.parse_args()
    with Cluster(3, processes=True) as cluster:
        setup = cowsqlpy.connect(cluster.addresses, database="timeline", autocommit=True)
        setup.execute("CREATE TABLE IF NOT EXISTS kv (k INTEGER PRIMARY KEY, v TEXT)")
        setup.close()
        print("us from execute(), medians:", "  ".join(STAGES))
        base = 0
        for r in range(args.rounds):
            for side in ("sync", "async") if r % 2 == 0 else ("async", "sync"):
                base += 1_000_000
                if side == "sync":
                    rows = sync_side(cluster.addresses, args.ops, base)
                else:
                    rows = uvloop.run(async_side(cluster.addresses, args.ops, base))
                medians = [statistics.median(row[s] for row in rows if s in row) for s in STAGES]
                print(
                    f"{side:>5}: "
                    + "  ".join(f"{s} {m:,.0f}" for s, m in zip(STAGES, medians, strict=True))
                )


if __name__ == "__main__":
    main()
