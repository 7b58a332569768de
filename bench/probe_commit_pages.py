"""What a write transaction's COMMIT costs, by the pages it dirties and the driver's marker.

    .venv/bin/python bench/probe_commit_pages.py [--blocks 12] [--block 50]

One 3-node cluster (nodes in child processes), the async core (`Database`) on uvloop.
Four kinds of transaction, run in blocks of --block transactions, the kinds taking
turns block by block (the order rotated each turn):

- ``seq32``: 32 prepared INSERTs of 100-byte rows with consecutive keys (one or two
  b-tree leaves), pipelined, then COMMIT with the driver's marker row;
- ``scat32``: the same with each row in a key range of its own (32 leaves: the layout
  of bench_sqlalchemy's 32 writers, one range each);
- ``one``: one INSERT, COMMIT with the marker (the driver's single-row transaction);
- ``one_bare``: one INSERT, a bare COMMIT (what the marker row costs).

Per kind, medians: the statements' time (send to last reply), the COMMIT's, and the
nodes' CPU (all three processes, /proc) per transaction.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cowsqlpy.database import Database
from cowsqlpy.retry import DEFAULT_POLICY
from cowsqlpy.store import MemoryNodeStore
from cowsqlpy.testing import Cluster

INSERT = "INSERT INTO kv (k, v) VALUES (?, ?)"
KINDS = ("seq32", "scat32", "one", "one_bare")
_TICK = os.sysconf("SC_CLK_TCK")


def nodes_cpu(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / _TICK


async def run(addresses: list[str], pids: list[int], blocks: int, block: int) -> None:
    db = Database(MemoryNodeStore(addresses), "commit_pages", DEFAULT_POLICY)
    s = await db.begin()
    await s.exec_sql("CREATE TABLE IF NOT EXISTS kv (k INTEGER PRIMARY KEY, v TEXT)")
    await db.commit(s)
    nxt = {"seq32": 0, "scat32": 0, "one": 10**12, "one_bare": 2 * 10**12}
    stmts: dict[str, list[float]] = {k: [] for k in KINDS}
    commits: dict[str, list[float]] = {k: [] for k in KINDS}
    cpu: dict[str, list[float]] = {k: [] for k in KINDS}

    async def one_tx(kind: str) -> None:
        session = await db.begin()
        stmt = await session.cached_statement(INSERT) or await session.cached_statement(INSERT)
        assert stmt is not None
        n = 32 if kind.endswith("32") else 1
        base = nxt[kind]
        nxt[kind] += n
        if kind == "scat32":
            keys = [3 * 10**12 + i * 10**9 + base // 32 for i in range(n)]
        else:
            keys = [base + i for i in range(n)]
        t0 = time.perf_counter()
        for reply in [session.send_exec(stmt, (k, "x" * 100)) for k in keys]:
            await reply
        t1 = time.perf_counter()
        if kind == "one_bare":
            await session.exec_sql("COMMIT")
            db.release(session)
            db.write_lock.release()
        else:
            await db.commit(session)
        stmts[kind].append(t1 - t0)
        commits[kind].append(time.perf_counter() - t1)

    for kind in KINDS:  # warm-up
        for _ in range(5):
            await one_tx(kind)
    for k in KINDS:
        stmts[k].clear()
        commits[k].clear()
    for b in range(blocks):
        order = KINDS[b % len(KINDS):] + KINDS[: b % len(KINDS)]
        for kind in order:
            before = nodes_cpu(pids)
            for _ in range(block):
                await one_tx(kind)
            cpu[kind].append((nodes_cpu(pids) - before) / block)
    await db.close()
    print(f"{blocks} blocks of {block} transactions a kind, taking turns; medians, ms per transaction")
    for kind in KINDS:
        print(
            f"{kind:<9} statements {statistics.median(stmts[kind]) * 1e3:6.3f}"
            f"  COMMIT {statistics.median(commits[kind]) * 1e3:6.3f}"
            f"  nodes' CPU {statistics.median(cpu[kind]) * 1e3:6.3f}"
        )
    c = {k: statistics.median(commits[k]) for k in KINDS}
    print(f"scat32/seq32 COMMIT {c['scat32'] / c['seq32']:.2f}x; one/one_bare COMMIT {c['one'] / c['one_bare']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blocks", type=int, default=12)
    ap.add_argument("--block", type=int, default=50)
    args = ap.parse_args()
    with Cluster(3, processes=True) as cluster:
        pids = [pid for i in range(3) if (pid := cluster.pid(i)) is not None]
        uvloop.run(run(cluster.addresses, pids, args.blocks, args.block))


if __name__ == "__main__":
    main()
