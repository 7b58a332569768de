"""Does the WAL checkpoint threshold still shape commit time on this engine? (diagnostic)

    .venv/bin/python bench/probe_checkpoint.py [--commits 2500]

A 3-node in-process cluster (bare `Node`s, 25 ms network latency) per setting:
`checkpoint_threshold=100` (cowsqlpy's default) and `None` (the engine's 1,000 frames).
One-row autocommit INSERTs from one client; the p50 commit time of each block of 250
commits is printed, so a cost that grows with the WAL's length shows as a saw-tooth.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import cowsqlpy
from cowsqlpy.node import BOOTSTRAP_ID, Node, engine_version
from cowsqlpy.testing import wait_for

BLOCK = 250


def run(threshold: int | None, commits: int) -> list[float]:
    base = tempfile.mkdtemp(prefix="probe-ckpt-")
    nodes = [Node(BOOTSTRAP_ID if i == 0 else i + 1, "127.0.0.1:0", os.path.join(base, f"n{i}"),
                  network_latency=0.025, checkpoint_threshold=threshold) for i in range(3)]
    try:
        for n in nodes:
            n.start()
        admin = cowsqlpy.SyncClient([nodes[0].address])
        wait_for(lambda: admin.leader() is not None, 20, "leader")
        for n in nodes[1:]:
            admin.add(n.id, n.address)
            admin.assign(n.id, cowsqlpy.VOTER)
        conn = cowsqlpy.connect([n.address for n in nodes], database="probe", autocommit=True)
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
        times = []
        payload = os.urandom(100)
        for _ in range(commits):
            t0 = time.perf_counter()
            conn.execute("INSERT INTO t (v) VALUES (?)", (payload,))
            times.append(time.perf_counter() - t0)
        conn.close()
        admin.close()
        return times
    finally:
        for n in nodes:
            n.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--commits", type=int, default=2500)
    args = ap.parse_args()
    print(f"# engine {engine_version()}, {os.cpu_count()} CPUs, p50 commit ms per block of {BLOCK}\n")
    print("| threshold | " + " | ".join(f"{i * BLOCK}-" for i in range(args.commits // BLOCK)) + " | overall p50 |")
    print("|---" * (args.commits // BLOCK + 2) + "|")
    for threshold in (100, None):
        times = run(threshold, args.commits)
        blocks = [statistics.median(times[i:i + BLOCK]) * 1000 for i in range(0, len(times) - BLOCK + 1, BLOCK)]
        label = "100" if threshold else "engine default (1,000)"
        print(f"| {label} | " + " | ".join(f"{b:.2f}" for b in blocks)
              + f" | {statistics.median(times) * 1000:.2f} |", flush=True)


if __name__ == "__main__":
    main()
