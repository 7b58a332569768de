"""Where the async driver's time goes against the sync driver's (diagnostic for issue 17).

    .venv/bin/python bench/probe_aio_split.py [--rounds 6] [--ops 400] [--workers 1]
        [--kind write|read] [--keys ranges|shared] [--profile DIR]

One 3-node cluster (nodes in child processes). Each round runs `--ops` operations a
worker on each driver, the two alternating (sync first in even rounds): autocommit
INSERTs (``write``) or point SELECTs (``read``), the bench_sqlalchemy driver cells'
statements. Per operation: wall time, and CPU of this process (every thread: the sync
driver's caller threads and its loop thread; the async driver's one loop), so a
difference in CPU is the client's own; the nodes' CPU (all three processes) is
printed beside it, and the statements each group commit carried, and how often per operation this process was preempted (on a busy
2-core machine, mostly by the node a send wakes); the rest is waiting (Raft, the CPU
scheduler). Medians of the rounds. ``--keys``: each writer inserts into a key range of
its own (``ranges``, bench_sqlalchemy's layout: a group commit of n writers' rows
dirties about n b-tree leaves) or all take the next key of one counter (``shared``, as
an autoincrement id: a group commit's rows share a leaf or two). `--profile DIR` writes one cProfile dump a side
(the last round; the sync side profiles its loop thread, where the driver runs).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import itertools
import os
import random
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cowsqlpy  # noqa: E402
import cowsqlpy.aio  # noqa: E402
from cowsqlpy.testing import Cluster  # noqa: E402

INSERT = "INSERT INTO kv (k, v) VALUES (?, ?)"
POINT = "SELECT v FROM kv WHERE k = ?"
KEYS = 2_000
_ranges = itertools.count(1)


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def involuntary_switches() -> int:
    """Times this process's threads were preempted so far (a woken node taking the CPU)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw


_TICK = os.sysconf("SC_CLK_TCK")


def nodes_cpu(pids: list[int]) -> float:
    """CPU seconds the node processes used so far (/proc/PID/stat utime + stime)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / _TICK


def batch_counts(db: Any) -> tuple[int, int]:
    """(group commits, statements they carried) so far on a driver's shared Database."""
    return db.batches, db.batched_statements


#: per side, the group commits and statements of its last run (set by the sides)
BATCHES: dict[str, tuple[int, int]] = {}


class Keys:
    """The write keys of one side's run: a range a worker (`first(w) + i`), or one
    counter for all (``shared``: `next_key` ignores the worker's own count)."""

    def __init__(self, shared: bool) -> None:
        self.shared = shared
        self.counter = itertools.count(next(_ranges) * 10_000_000)

    def first(self) -> int:
        return next(_ranges) * 10_000_000

    def key(self, own: int) -> int:
        return next(self.counter) if self.shared else own


def statement(kind: str, rng: random.Random, n: int) -> tuple[str, tuple[Any, ...]]:
    if kind == "write":
        return INSERT, (n, "x" * 100)
    return POINT, (rng.randrange(KEYS),)


def sync_side(
    addresses: list[str], args: argparse.Namespace, profile: cProfile.Profile | None
) -> tuple[float, float]:
    conns = [
        cowsqlpy.connect(addresses, database="probe", autocommit=True) for _ in range(args.workers)
    ]
    for c in conns:
        c.execute(POINT, (0,)).fetchall()
    db = conns[0]._core._db
    counted = batch_counts(db)
    if profile is not None:  # the driver's work happens on the loop thread
        cowsqlpy.dbapi.run_sync(_enable(profile))
    start = threading.Barrier(args.workers + 1)
    keys = Keys(args.keys == "shared")

    def work(w: int) -> None:
        cur, rng, n = conns[w].cursor(), random.Random(w), keys.first()
        start.wait()
        for i in range(args.ops):
            sql, params = statement(args.kind, rng, keys.key(n + i))
            cur.execute(sql, params)
            if args.kind == "read":
                cur.fetchone()

    threads = [threading.Thread(target=work, args=(w,)) for w in range(args.workers)]
    for t in threads:
        t.start()
    start.wait()
    t0, c0 = time.perf_counter(), cpu()
    for t in threads:
        t.join()
    wall, used = time.perf_counter() - t0, cpu() - c0
    BATCHES["sync"] = tuple(b - a for a, b in zip(counted, batch_counts(db), strict=True))  # type: ignore[assignment]
    if profile is not None:
        cowsqlpy.dbapi.run_sync(_disable(profile))
    for c in conns:
        c.close()
    return wall, used


async def _enable(profile: cProfile.Profile) -> None:
    profile.enable()


async def _disable(profile: cProfile.Profile) -> None:
    profile.disable()


async def async_side(
    addresses: list[str], args: argparse.Namespace, profile: cProfile.Profile | None
) -> tuple[float, float]:
    conns = [
        await cowsqlpy.aio.connect(addresses, database="probe", autocommit=True)
        for _ in range(args.workers)
    ]
    for c in conns:
        await (await c.execute(POINT, (0,))).fetchall()
    db = conns[0]._db
    counted = batch_counts(db)

    keys = Keys(args.keys == "shared")

    async def work(w: int) -> None:
        cur, rng, n = conns[w].cursor(), random.Random(w), keys.first()
        for i in range(args.ops):
            sql, params = statement(args.kind, rng, keys.key(n + i))
            await cur.execute(sql, params)
            if args.kind == "read":
                await cur.fetchone()

    if profile is not None:
        profile.enable()
    t0, c0 = time.perf_counter(), cpu()
    await asyncio.gather(*(work(w) for w in range(args.workers)))
    wall, used = time.perf_counter() - t0, cpu() - c0
    BATCHES["async"] = tuple(b - a for a, b in zip(counted, batch_counts(db), strict=True))  # type: ignore[assignment]
    if profile is not None:
        profile.disable()
    for c in conns:
        await c.close()
    return wall, used


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--ops", type=int, default=400, help="operations a worker a round")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--kind", choices=("write", "read"), default="write")
    parser.add_argument("--keys", choices=("ranges", "shared"), default="ranges",
                        help="write keys: a range a worker, or one counter for all")
    parser.add_argument("--profile", type=Path, help="a directory for one cProfile dump a side")
    args = parser.parse_args()
    with Cluster(3, processes=True) as cluster:
        addresses = cluster.addresses
        setup = cowsqlpy.connect(addresses, database="probe", autocommit=True)
        setup.execute("CREATE TABLE IF NOT EXISTS kv (k INTEGER PRIMARY KEY, v TEXT)")
        setup.executemany(
            "INSERT OR IGNORE INTO kv (k, v) VALUES (?, ?)", [(k, "x" * 100) for k in range(KEYS)]
        )
        setup.close()
        sides: dict[str, Callable[[cProfile.Profile | None], tuple[float, float]]] = {
            "sync": lambda p: sync_side(addresses, args, p),
            "async": lambda p: uvloop.run(async_side(addresses, args, p)),
        }
        pids = [pid for i in range(3) if (pid := cluster.pid(i)) is not None]
        results: dict[str, list[tuple[float, float]]] = {"sync": [], "async": []}
        node_cpu: dict[str, list[float]] = {"sync": [], "async": []}
        preempted: dict[str, list[float]] = {"sync": [], "async": []}
        per_batch: dict[str, list[float]] = {"sync": [], "async": []}
        total = args.ops * args.workers
        for r in range(args.rounds):
            for side in ("sync", "async") if r % 2 == 0 else ("async", "sync"):
                profile = cProfile.Profile() if args.profile and r == args.rounds - 1 else None
                before, switched = nodes_cpu(pids), involuntary_switches()
                wall, used = sides[side](profile)
                node_cpu[side].append((nodes_cpu(pids) - before) / total * 1e6)
                preempted[side].append((involuntary_switches() - switched) / total)
                results[side].append((wall / total * 1e6, used / total * 1e6))
                batches, statements = BATCHES[side]
                per_batch[side].append(statements / batches if batches else 0.0)
                if profile is not None:
                    args.profile.mkdir(parents=True, exist_ok=True)
                    profile.dump_stats(args.profile / f"{side}.prof")
        print(
            f"{args.kind} x{args.workers} (keys: {args.keys}), {args.ops} ops a worker, {args.rounds} rounds;"
            " us per op, medians"
        )
        for side, rows in results.items():
            walls, cpus = [w for w, _ in rows], [c for _, c in rows]
            print(
                f"  {side:>5}: wall {statistics.median(walls):8.1f}  cpu {statistics.median(cpus):7.1f}"
                f"  nodes' cpu {statistics.median(node_cpu[side]):7.1f}"
                f"  preempted {statistics.median(preempted[side]):5.2f}"
                f"  statements/group commit {statistics.median(per_batch[side]):5.1f}"
                f"   walls {' '.join(f'{w:.0f}' for w in walls)}"
            )
        pairs = [s[0] / a[0] for s, a in zip(results["sync"], results["async"], strict=True)]
        print(
            f"  async/sync throughput: {statistics.median(pairs):.2f}x ({' '.join(f'{p:.2f}' for p in pairs)})"
        )


if __name__ == "__main__":
    main()
