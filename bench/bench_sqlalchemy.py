"""SQLAlchemy through our dialect against sqlalchemy-dqlite, and the async driver
against the sync driver, on one 3-node cluster (nodes in child processes).

ORM cells (same models, same statements, explicit primary keys so neither side
needs RETURNING; --orm-repeat runs a side in alternating order, medians): a bulk INSERT of --rows rows (``session.execute(insert(Item),
rows)``), --commits single-row ORM commits, --gets ``session.get()`` reads by
primary key. sqlalchemy-dqlite needs Python >= 3.13: it runs this same file
with ``--orm-worker`` under --peer-python (a venv with sqlalchemy-dqlite).

Driver cells: --concurrency writers (autocommit INSERTs) and readers (point
SELECTs), each with its own connection, for --duration seconds: threads on the
sync driver, tasks on one uvloop loop with the async driver; --repeat runs a
cell, the two drivers alternating, medians reported (this machine's load drifts).
--keys: each writer inserts into a key range of its own (``ranges``, the default,
as in every recorded run: a group commit of n writers' rows dirties about n b-tree
leaves) or all writers take the next key of one counter (``shared``, as an
autoincrement id: a group commit's rows share a leaf or two).

    .venv/bin/python bench/bench_sqlalchemy.py [--peer-python /tmp/venv313/bin/python]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

ROOT = Path(__file__).resolve().parents[1]
WHEN = dt.datetime(2026, 1, 2, 3, 4, 5)


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(sa.String(40))
    qty: Mapped[int]
    at: Mapped[dt.datetime] = mapped_column(sa.DateTime)
    done: Mapped[bool] = mapped_column(sa.Boolean)


def row(i: int) -> dict[str, Any]:
    return {"id": i, "name": f"item-{i}", "qty": i, "at": WHEN, "done": i % 2 == 0}


# -- ORM cells (also run by the peer's Python) ------------------------------------------------


def orm_cells(engine: sa.Engine, rows: int, commits: int, gets: int) -> dict[str, float]:
    """Seconds per cell; raises on any error."""
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    out: dict[str, float] = {}
    start = time.perf_counter()
    with Session(engine) as s:
        s.execute(sa.insert(Item), [row(i) for i in range(rows)])
        s.commit()
    out["bulk_insert"] = time.perf_counter() - start

    start = time.perf_counter()
    with Session(engine) as s:
        for i in range(rows, rows + commits):
            s.add(Item(**row(i)))
            s.commit()
    out["single_commits"] = time.perf_counter() - start

    keys = random.Random(7).sample(range(rows), min(gets, rows))
    start = time.perf_counter()
    with Session(engine) as s:
        for k in keys:
            item = s.get(Item, k)
            if item is None or item.qty != k:
                raise AssertionError(f"session.get({k}) gave {item!r}")
    out["gets"] = time.perf_counter() - start
    with engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(Item)).scalar_one()
    if total != rows + commits:
        raise AssertionError(f"{total} rows, expected {rows + commits}")
    return out


def orm_worker(args: argparse.Namespace) -> None:
    engine = sa.create_engine(args.url)
    try:
        print(json.dumps(orm_cells(engine, args.rows, args.commits, args.gets)))
    finally:
        engine.dispose()


# -- driver cells ------------------------------------------------------------------------------------


_cells = iter(range(1, 1_000_000))
WARM_UP = "SELECT v FROM kv WHERE k = 0"


#: set from --keys: all writers of a cell take their keys from one counter
SHARED_KEYS = False


def key_counter() -> itertools.count[int] | None:
    """One cell's shared write keys (None: each writer its own range, `fresh_keys`)."""
    return itertools.count(fresh_keys(0)) if SHARED_KEYS else None


def fresh_keys(worker: int) -> int:
    """The first key of `worker`'s own range in a new cell (writes never collide)."""
    return (next(_cells) * 1_000 + worker) * 1_000_000


def sync_cell(
    addresses: list[str], db: str, kind: str, workers: int, duration: float, keys: int
) -> tuple[int, int]:
    import cowsqlpy

    conns = [cowsqlpy.connect(addresses, database=db, autocommit=True) for _ in range(workers)]
    counts = [0] * workers
    errors = [0] * workers
    barrier = threading.Barrier(workers + 1)
    stop = threading.Event()

    starts = [fresh_keys(w) for w in range(workers)]
    shared = key_counter()

    def work(w: int) -> None:
        conn, rng, n = conns[w], random.Random(w), starts[w]
        cur = conn.cursor()
        cur.execute(
            WARM_UP
        ).fetchall()  # sessions and the read barrier set up before the clock starts
        barrier.wait()
        while not stop.is_set():
            try:
                if kind == "write":
                    cur.execute("INSERT INTO kv (k, v) VALUES (?, ?)", (n if shared is None else next(shared), "x" * 100))
                else:
                    cur.execute("SELECT v FROM kv WHERE k = ?", (rng.randrange(keys),))
                    cur.fetchone()
                counts[w] += 1
            except cowsqlpy.Error:
                errors[w] += 1
            n += 1

    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    barrier.wait()
    time.sleep(duration)
    stop.set()
    for t in threads:
        t.join()
    for c in conns:
        c.close()
    return sum(counts), sum(errors)


async def async_cell(
    addresses: list[str], db: str, kind: str, workers: int, duration: float, keys: int
) -> tuple[int, int]:
    import cowsqlpy
    import cowsqlpy.aio

    conns = [
        await cowsqlpy.aio.connect(addresses, database=db, autocommit=True) for _ in range(workers)
    ]
    counts = [0] * workers
    errors = [0] * workers
    for c in conns:  # sessions and the read barrier set up before the clock starts
        await (await c.execute(WARM_UP)).fetchall()
    deadline = time.monotonic() + duration

    starts = [fresh_keys(w) for w in range(workers)]
    shared = key_counter()

    async def work(w: int) -> None:
        conn, rng, n = conns[w], random.Random(w), starts[w]
        cur = conn.cursor()
        while time.monotonic() < deadline:
            try:
                if kind == "write":
                    await cur.execute("INSERT INTO kv (k, v) VALUES (?, ?)", (n if shared is None else next(shared), "x" * 100))
                else:
                    await cur.execute("SELECT v FROM kv WHERE k = ?", (rng.randrange(keys),))
                    await cur.fetchone()
                counts[w] += 1
            except cowsqlpy.Error:
                errors[w] += 1
            n += 1

    await asyncio.gather(*(work(w) for w in range(workers)))
    for c in conns:
        await c.close()
    return sum(counts), sum(errors)


# -- main -----------------------------------------------------------------------------------------------


def timed_peer(args: argparse.Namespace, address: str) -> dict[str, float]:
    cmd = [
        args.peer_python,
        __file__,
        "--orm-worker",
        "--url",
        f"dqlite://{address}/bench_peer",
        "--rows",
        str(args.rows),
        "--commits",
        str(args.commits),
        "--gets",
        str(args.gets),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError("sqlalchemy-dqlite run failed: " + proc.stderr[-2000:])
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--commits", type=int, default=1_000)
    parser.add_argument("--gets", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per driver cell")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument(
        "--orm-repeat", type=int, default=2, help="ORM runs a side (alternating order)"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs a driver cell (sync and async alternating)"
    )
    parser.add_argument(
        "--peer-python", help="a Python >= 3.13 with sqlalchemy-dqlite (skipped if absent)"
    )
    parser.add_argument("--keys", choices=("ranges", "shared"), default="ranges",
                        help="driver write keys: a range a writer, or one counter for all")
    parser.add_argument("--orm-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.orm_worker:
        orm_worker(args)
        return

    global SHARED_KEYS
    SHARED_KEYS = args.keys == "shared"
    sys.path.insert(0, str(ROOT))
    import uvloop

    import cowsqlpy
    from cowsqlpy.sqlalchemy import create_engine
    from cowsqlpy.testing import Cluster

    levels = [int(x) for x in args.concurrency.split(",")]
    print(
        f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, SQLAlchemy {sa.__version__}"
    )
    with Cluster(3, processes=True) as cluster:
        addresses = cluster.addresses
        print(f"cluster: 3 nodes in child processes {addresses}")

        leader = cluster.leader_index()
        sides = ["linearizable", "serializable"] + (
            ["sqlalchemy-dqlite"] if args.peer_python else []
        )

        def orm_run(side: str) -> dict[str, float]:
            if side == "sqlalchemy-dqlite":
                return timed_peer(args, addresses[leader if leader is not None else 0])
            url = f"cowsql://{','.join(addresses)}/bench_{side}?read_consistency={side}"
            engine = create_engine(url)
            try:
                return orm_cells(engine, args.rows, args.commits, args.gets)
            finally:
                engine.dispose()

        ops = {
            "bulk_insert": args.rows,
            "single_commits": args.commits,
            "gets": min(args.gets, args.rows),
        }
        rates: dict[str, dict[str, list[float]]] = {
            side: {cell: [] for cell in ops} for side in sides
        }
        for r in range(args.orm_repeat):
            for side in sides if r % 2 == 0 else sides[::-1]:
                seconds = orm_run(side)
                for cell, n in ops.items():
                    rates[side][cell].append(n / seconds[cell])
        print(
            f"\nORM rows/s ({args.orm_repeat} runs a side, alternating; medians; ratios against sqlalchemy-dqlite)"
        )
        print(
            "cell             cowsql linearizable   cowsql serializable   sqlalchemy-dqlite   lin/peer  ser/peer"
        )
        for cell in ops:
            med = {side: statistics.median(rates[side][cell]) for side in sides}
            line = f"{cell:<16} {med['linearizable']:>19,.0f} {med['serializable']:>21,.0f}"
            if args.peer_python:
                peer = med["sqlalchemy-dqlite"]
                line += f" {peer:>19,.0f}   {med['linearizable'] / peer:6.2f}x  {med['serializable'] / peer:6.2f}x"
            print(line)
        for side in sides:
            print(
                f"  {side}: "
                + "; ".join(f"{c} " + " ".join(f"{v:,.0f}" for v in rates[side][c]) for c in ops)
            )

        setup = cowsqlpy.connect(addresses, database="bench_drivers", autocommit=True)
        setup.execute("CREATE TABLE IF NOT EXISTS kv (k INTEGER PRIMARY KEY, v TEXT)")
        keys = 10_000
        setup.executemany(
            "INSERT OR IGNORE INTO kv (k, v) VALUES (?, ?)", [(k, "x" * 100) for k in range(keys)]
        )
        setup.close()
        print(
            f"\ndrivers ({args.duration:g} s a run, {args.repeat} runs a cell, alternating; medians;"
            f" write keys: {args.keys})"
        )
        print(
            "cell       sync ops/s   async ops/s   async/sync: median (pairs)   errors sync/async"
        )
        for kind in ("write", "read"):
            for n in levels:
                sync_rates: list[float] = []
                async_rates: list[float] = []
                errors = [0, 0]
                for r in range(args.repeat):
                    for side in ("sync", "async") if r % 2 == 0 else ("async", "sync"):
                        if side == "sync":
                            done, failed = sync_cell(
                                addresses, "bench_drivers", kind, n, args.duration, keys
                            )
                            sync_rates.append(done / args.duration)
                            errors[0] += failed
                        else:
                            run: Callable[..., Any] = uvloop.run
                            done, failed = run(
                                async_cell(addresses, "bench_drivers", kind, n, args.duration, keys)
                            )
                            async_rates.append(done / args.duration)
                            errors[1] += failed
                pairs = [a / s for a, s in zip(async_rates, sync_rates, strict=True)]
                print(
                    f"{kind:>5} x{n:<3} {statistics.median(sync_rates):>11,.0f} {statistics.median(async_rates):>13,.0f}"
                    f"   {statistics.median(pairs):5.2f}x ({' '.join(f'{p:.2f}' for p in pairs)})"
                    f"   {errors[0]}/{errors[1]}"
                )


if __name__ == "__main__":
    main()
