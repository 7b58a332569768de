"""Where the kvstore ``cowsql`` backend's write time goes (diagnostic, not a ratio benchmark).

    .venv/bin/python bench/probe_kv_write.py [--seconds 3] [--commits 200]

1. phases: puts through the backend's async core at concurrency 1, 8 and 32 on a
   3-node in-process cluster (1,000 keys of 100 bytes); ops/s, ops per batch, and
   the p50 of each phase of a batch (BEGIN with the state read, COMMIT with the
   writes, the whole batch).
2. commit: the commit request alone, on copies of the schema, for 1, 8 and 32 puts:
   a meta-row-only commit, the log rows without the ``kv_live`` trigger, with it
   (what a batch of puts commits since schema 3), and schema 2's request (the meta
   row and the driver's commit marker too).

Every loop is bounded by ``--seconds`` or ``--commits``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import kvstore
from cowsqlpy.client import Session
from cowsqlpy.database import MARKERS_SCHEMA
from cowsqlpy.sqltext import literal
from cowsqlpy.testing import Cluster
from kvstore.backends import cowsql as C

KEYS = 1000
VALUE = b"v" * 100


def p50(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2] * 1000 if xs else float("nan")


def phases(url: str, seconds: float) -> None:
    kv = kvstore.open(url + "phases")
    for i in range(KEYS):
        kv.put(b"bench/%d" % i, VALUE)
    core = kv.backend
    times: dict[str, list[float]] = collections.defaultdict(list)

    def timed(obj: Any, name: str, label: str) -> None:
        inner = getattr(obj, name)

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return await inner(*args, **kwargs)
            finally:
                times[label].append(time.perf_counter() - t)
        setattr(obj, name, wrapper)

    timed(core.db, "begin_reading", "begin+read")
    timed(core.db, "commit", "commit")
    timed(core, "_run_batch", "batch")

    async def load(conc: int) -> str:
        stop = time.monotonic() + seconds
        done = 0

        async def worker(w: int) -> None:
            nonlocal done
            i = 0
            while time.monotonic() < stop:
                await core.put(b"bench/%d" % ((w * 7919 + i) % KEYS), VALUE)
                i += 1
                done += 1
        b0, o0 = core.batches, core.batched_ops
        t = time.monotonic()
        await asyncio.gather(*(worker(w) for w in range(conc)))
        rate = done / (time.monotonic() - t)
        per = (core.batched_ops - o0) / max(1, core.batches - b0)
        return f"c={conc:2d} {rate:7.0f} ops/s  {per:5.1f} ops/batch"

    for conc in (1, 8, 32):
        times.clear()
        head = asyncio.run_coroutine_threadsafe(load(conc), core.loop).result(seconds + 120)
        print(head + "".join(f"  {k} p50 {p50(v):.2f} ms" for k, v in times.items()), flush=True)
    kv.close()


async def commit_costs(addresses: list[str], commits: int) -> None:
    async def leader_session(db: str) -> Session:
        for address in addresses:
            s = await Session.connect(address)
            await s.open(db)
            try:
                await s.exec_sql("BEGIN IMMEDIATE")
                await s.exec_sql("ROLLBACK")
                return s
            except Exception:  # not the leader: try the next node
                s.close()
        raise RuntimeError("no leader")

    full, bare = await leader_session("probe-full"), await leader_session("probe-bare")
    await full.exec_sql(MARKERS_SCHEMA)
    await bare.exec_sql("DROP TRIGGER kv_log_apply")
    rev = collections.Counter({"full": 10**6, "bare": 10**6})

    def log_insert(which: str, n: int) -> str:
        rows = []
        for _ in range(n):
            rev[which] += 1
            key = literal(b"bench/%d" % random.randrange(KEYS))
            rows.append(f"({rev[which]},0,{key},{literal(VALUE)},1,2,0,0,{rev[which] - 1},NULL)")
        return "INSERT INTO kv_log VALUES " + ",".join(rows)

    variants: dict[str, tuple[Session, Callable[[int], list[str]]]] = {
        "meta row only": (full, lambda n: [f"UPDATE kv_meta SET reaped_at = {random.randrange(10**9)} WHERE id = 1"]),
        "log rows, no kv_live": (bare, lambda n: [log_insert("bare", n)]),
        "log rows + kv_live (a put batch)": (full, lambda n: [log_insert("full", n)]),
        "schema 2's (+ meta row, marker)": (full, lambda n: [
            f"INSERT OR REPLACE INTO cowsqlpy_commit_markers (client, seq, at) VALUES (1, {rev['full']}, 0)",
            log_insert("full", n), f"UPDATE kv_meta SET revision = {rev['full']} WHERE id = 1"]),
    }
    for n in (1, 8, 32):
        for name, (session, make) in variants.items():
            lat = []
            for _ in range(commits):
                await session.exec_sql("BEGIN IMMEDIATE")
                sql = "; ".join([*make(n), "COMMIT"])
                t = time.perf_counter()
                await session.exec_sql(sql)
                lat.append(time.perf_counter() - t)
            print(f"{n:2d} puts  {name:22s} commit p50 {p50(lat):.2f} ms", flush=True)
    full.close()
    bare.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0, help="load per concurrency (phases)")
    ap.add_argument("--commits", type=int, default=200, help="commits per variant (commit)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as base:
        cluster = Cluster(3, app=False, network_latency=0.02, base_dir=base)
        try:
            url = f"cowsql://{','.join(cluster.addresses)}/"
            print("# phases (the backend's async core)")
            phases(url, args.seconds)
            for db in ("probe-full", "probe-bare"):
                kv = kvstore.open(url + db)
                for i in range(KEYS):
                    kv.put(b"bench/%d" % i, VALUE)
                kv.close()
            print("# commit request alone")
            asyncio.run(commit_costs(cluster.addresses, args.commits))
        finally:
            cluster.close()
    print(f"(batch gather wait {C.GATHER_WAIT * 1000:.0f} ms)")


if __name__ == "__main__":
    main()
