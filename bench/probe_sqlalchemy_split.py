"""Where a point read and a single-row commit spend their time: the DB-API driver alone
and through the ORM, ours and sqlalchemy-dqlite's, wall and CPU (diagnostic for issue 17).

    .venv/bin/python bench/probe_sqlalchemy_split.py --peer-python /tmp/venv313/bin/python [--rounds 4]

One 3-node cluster (nodes in child processes); the sides alternate, `--rounds` times
each, medians reported. Cells: a primary-key SELECT through the DB-API driver
(`dqlitedbapi` for the peer), ``session.get()``, a single-row INSERT + commit through the
DB-API (the peer's driver runs it in autocommit: one request; ours opens BEGIN IMMEDIATE
as sqlite3 does), and an ORM ``add`` + ``commit``. CPU is the process's own (all its
threads): the ORM's share is what the ORM cell costs above the DB-API one.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_sqlalchemy as common  # the main benchmark's models and rows
import sqlalchemy as sa
from sqlalchemy.orm import Session

POINT = "SELECT id, name, qty, at, done FROM items WHERE id = ?"
INSERT = "INSERT INTO items (id, name, qty, at, done) VALUES (?, ?, ?, ?, ?)"
CELLS = ("dbapi_get", "orm_get", "dbapi_commit", "orm_commit")


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(n: int, step: Any) -> tuple[float, float]:
    """(wall ms, CPU ms) per call of `step(i)` over `n` calls."""
    t, c = time.perf_counter(), cpu()
    for i in range(n):
        step(i)
    return (time.perf_counter() - t) / n * 1e3, (cpu() - c) / n * 1e3


def run_cells(conn: Any, engine: sa.Engine, gets: int, commits: int, base: int) -> dict[str, tuple[float, float]]:
    cur = conn.cursor()
    cur.execute(POINT, (0,))
    cur.fetchall()
    out = {"dbapi_get": timed(gets, lambda k: (cur.execute(POINT, (k,)), cur.fetchall()))}

    def commit(i: int) -> None:
        cur.execute(INSERT, (base + i, "x", 1, "2026-01-01 00:00:00", 1))
        conn.commit()

    out["dbapi_commit"] = timed(commits, commit)
    conn.close()
    with Session(engine) as s:
        s.get(common.Item, 0)
        out["orm_get"] = timed(gets, lambda k: s.get(common.Item, k))

        def orm_commit(i: int) -> None:
            s.add(common.Item(**common.row(base + commits + i)))
            s.commit()

        out["orm_commit"] = timed(commits, orm_commit)
    engine.dispose()
    return out


def peer_worker(args: argparse.Namespace) -> None:
    import dqlitedbapi  # type: ignore[import-not-found]

    conn = dqlitedbapi.connect(args.address, database=args.database)
    engine = sa.create_engine(f"dqlite://{args.address}/{args.database}")
    print(json.dumps(run_cells(conn, engine, args.gets, args.commits, args.base)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer-python", required=False)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--gets", type=int, default=2000)
    ap.add_argument("--commits", type=int, default=300)
    ap.add_argument("--peer-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--address", help=argparse.SUPPRESS)
    ap.add_argument("--database", help=argparse.SUPPRESS)
    ap.add_argument("--base", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peer_worker:
        peer_worker(args)
        return

    sys.path.insert(0, str(common.ROOT))
    import cowsqlpy
    from cowsqlpy.sqlalchemy import create_engine
    from cowsqlpy.testing import Cluster

    sides = ["cowsqlpy"] + (["sqlalchemy-dqlite"] if args.peer_python else [])
    with Cluster(3, processes=True) as cluster:
        leader = cluster.addresses[cluster.leader_index() or 0]
        url = f"cowsql://{','.join(cluster.addresses)}/split?read_consistency=serializable"
        setup = create_engine(url)
        common.Base.metadata.create_all(setup)
        with Session(setup) as s:
            s.execute(sa.insert(common.Item), [common.row(i) for i in range(args.gets)])
            s.commit()
        setup.dispose()
        results: dict[str, dict[str, list[tuple[float, float]]]] = {side: {c: [] for c in CELLS} for side in sides}
        base = 1_000_000
        for r in range(args.rounds):
            for side in sides if r % 2 == 0 else sides[::-1]:
                base += 1_000_000
                if side == "cowsqlpy":
                    conn = cowsqlpy.connect(cluster.addresses, database="split", read_consistency="serializable")
                    cells = run_cells(conn, create_engine(url), args.gets, args.commits, base)
                else:
                    cmd = [args.peer_python, __file__, "--peer-worker", "--address", leader, "--database", "split",
                           "--gets", str(args.gets), "--commits", str(args.commits), "--base", str(base)]
                    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
                    if proc.returncode:
                        sys.exit("peer failed: " + proc.stderr[-2000:])
                    cells = {k: tuple(v) for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}
                for cell, value in cells.items():
                    results[side][cell].append(value)
    print(f"{'cell':<13}" + "".join(f"{s + ' wall/cpu ms':>34}" for s in sides))
    for cell in CELLS:
        line = f"{cell:<13}"
        for side in sides:
            runs = results[side][cell]
            line += f"{statistics.median(w for w, _ in runs):>24.3f} / {statistics.median(c for _, c in runs):.3f}"
        print(line)


if __name__ == "__main__":
    main()
