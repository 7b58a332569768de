"""The ceiling of the single-row ORM commit cell (issue 17): what is left to cut on our side.

    .venv/bin/python bench/probe_orm_commit_ceiling.py --peer-python /tmp/venv313/bin/python \
        [--ops 1000] [--rounds 3]

One 3-node cluster (nodes in child processes); every round runs each cell once, the
order rotated from round to round; per cell the medians of wall and client CPU per
commit of the same row (bench_sqlalchemy's model):

- ``orm``: ``session.add`` + ``session.commit`` through our dialect (serializable);
- ``peer_orm``: the same through sqlalchemy-dqlite (its own Python, pointed at the leader);
- ``tx``: the bare driver (serializable, as the ORM cell: no read barrier), the ORM's INSERT and ``commit()`` (BEGIN IMMEDIATE, INSERT,
  COMMIT with the marker row: the ORM's three requests, no ORM);
- ``auto``: an autocommit INSERT (group commit of one: BEGIN, INSERT, COMMIT with the
  marker in one send);
- ``auto_plain``: an autocommit INSERT with group commit off (one EXEC_SQL request:
  the Raft commit and one round trip, the floor of any write);
- ``orm_cpu`` / ``peer_orm_cpu``: the ORM's own work, ``add`` + ``commit`` on an
  in-memory SQLite (pysqlite) in each side's Python (the engine's CPU is a few us);
- ``orm_cpu_slept``: the same with the thread asleep for --pause seconds where a
  network driver waits (before each statement and at the commit: two waits a commit),
  as ours does for its replies: the ORM's Python costs more on a thread that just woke.

The ceilings print peer_orm over each driver cell plus the ORM's CPU (awake and after
sleeping): our side with a driver that costs nothing beyond that cell.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_sqlalchemy as common  # the main benchmark's model and rows
import sqlalchemy as sa
from sqlalchemy.orm import Session

INSERT = "INSERT INTO items (id, name, qty, at, done) VALUES (?, ?, ?, ?, ?)"


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(ops: int, one: Callable[[int], None], base: int) -> dict[str, float]:
    """Wall and CPU ms per call of `one(key)` over `ops` fresh keys (one warm-up call first)."""
    one(base - 1)
    t, c = time.perf_counter(), cpu()
    for i in range(ops):
        one(base + i)
    return {"wall": (time.perf_counter() - t) / ops * 1e3, "cpu": (cpu() - c) / ops * 1e3}


def orm_commits(engine: sa.Engine, ops: int, base: int) -> dict[str, float]:
    common.Base.metadata.create_all(engine)
    with Session(engine) as s:

        def one(key: int) -> None:
            s.add(common.Item(**common.row(key)))
            s.commit()

        out = timed(ops, one, base)
    engine.dispose()
    return out


def memory_engine(pause: float = 0.0) -> sa.Engine:
    """In-memory SQLite; `pause`: sleep that long before each statement and at commit."""
    engine = sa.create_engine("sqlite://")
    if pause:

        def wait(*_: Any) -> None:
            time.sleep(pause)

        sa.event.listen(engine, "before_cursor_execute", wait)
        sa.event.listen(engine, "commit", wait)
    return engine


def peer_worker(args: argparse.Namespace) -> None:
    engine = (
        memory_engine()
        if args.cell == "peer_orm_cpu"
        else sa.create_engine(f"dqlite://{args.address}/ceiling_peer")
    )
    print(json.dumps(orm_commits(engine, args.ops, args.base)))


def driver_commits(addresses: list[str], ops: int, base: int, **options: Any) -> dict[str, float]:
    """The ORM's INSERT through the bare driver; `options` to `cowsqlpy.connect`."""
    import cowsqlpy

    conn = cowsqlpy.connect(
        addresses, database="ceiling_driver", read_consistency="serializable", **options
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name VARCHAR(40), qty INTEGER, at DATETIME, done BOOLEAN)"
    )
    cur = conn.cursor()

    def one(key: int) -> None:
        r = common.row(key)
        cur.execute(INSERT, (r["id"], r["name"], r["qty"], r["at"].isoformat(" "), int(r["done"])))
        conn.commit()

    try:
        return timed(ops, one, base)
    finally:
        conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--peer-python")
    ap.add_argument("--ops", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pause", type=float, default=0.0007, help="orm_cpu_slept's waits (s)")
    ap.add_argument("--peer-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cell", help=argparse.SUPPRESS)
    ap.add_argument("--address", help=argparse.SUPPRESS)
    ap.add_argument("--base", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peer_worker:
        peer_worker(args)
        return
    sys.path.insert(0, str(common.ROOT))
    from cowsqlpy.sqlalchemy import create_engine
    from cowsqlpy.testing import Cluster

    with Cluster(3, processes=True) as cluster:
        addresses = cluster.addresses
        leader = addresses[cluster.leader_index() or 0]
        url = f"cowsql://{','.join(addresses)}/ceiling_orm?read_consistency=serializable"

        def peer(cell: str, base: int) -> dict[str, float]:
            cmd = [
                args.peer_python,
                __file__,
                "--peer-worker",
                "--cell",
                cell,
                "--address",
                leader,
                "--ops",
                str(args.ops),
                "--base",
                str(base),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            if proc.returncode:
                sys.exit(f"peer {cell} failed: " + proc.stderr[-2000:])
            result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
            return result

        cells: dict[str, Callable[[int], dict[str, float]]] = {
            "orm": lambda base: orm_commits(create_engine(url), args.ops, base),
            "tx": lambda base: driver_commits(addresses, args.ops, base),
            "auto": lambda base: driver_commits(addresses, args.ops, base, autocommit=True),
            "auto_plain": lambda base: driver_commits(
                addresses, args.ops, base, autocommit=True, group_commit=False
            ),
            "orm_cpu": lambda base: orm_commits(memory_engine(), args.ops, base),
            "orm_cpu_slept": lambda base: orm_commits(memory_engine(args.pause), args.ops, base),
        }
        if args.peer_python:
            cells["peer_orm"] = lambda base: peer("peer_orm", base)
            cells["peer_orm_cpu"] = lambda base: peer("peer_orm_cpu", base)
        names = list(cells)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                base = (r + 1) * 10_000_000 + names.index(name) * 1_000_000
                runs[name].append(cells[name](base))
        print(
            f"{args.ops} commits a cell, {args.rounds} rounds (order rotated); medians, ms per commit"
        )
        med = {
            n: {k: statistics.median(x[k] for x in runs[n]) for k in ("wall", "cpu")} for n in names
        }
        for n in names:
            each = " ".join(f"{x['wall']:.3f}" for x in runs[n])
            print(f"{n:<13} wall {med[n]['wall']:6.3f}  cpu {med[n]['cpu']:6.3f}   (walls {each})")
        if args.peer_python:
            peer_wall = med["peer_orm"]["wall"]
            print(f"ratio now: peer_orm / orm = {peer_wall / med['orm']['wall']:.2f}x")
            for floor in ("tx", "auto", "auto_plain"):
                awake, slept = (
                    peer_wall / (med[floor]["wall"] + med[c]["cpu"])
                    for c in ("orm_cpu", "orm_cpu_slept")
                )
                print(
                    f"ceiling with the driver at {floor} + the ORM's CPU: {awake:.2f}x awake, {slept:.2f}x after sleeping"
                )


if __name__ == "__main__":
    main()
