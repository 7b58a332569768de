"""Where a fronted node's CPU goes, thread by thread: bench_security's cluster in one mode,
one workload cell, and each node thread's user and system CPU per operation (from
/proc/PID/task/TID/stat before and after the run). In a fronted node the front's loop
thread has the lowest tid after the main thread (it starts before the engine's), the
engine's thread is the busiest; threads with system time only are the engine's disk
workers and (mode front, 3 nodes) the C relays of Raft pipes.

    .venv/bin/python bench/probe_security_threads.py --mode front --workload kvwrite --workers 8
    .venv/bin/python bench/probe_security_threads.py --mode front-loop   # pipes on the loop
    .venv/bin/python bench/probe_security_threads.py --mode tls --nodes 1
    .venv/bin/python bench/probe_security_threads.py --mode tls-loop   # TLS dials on the loop
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_security import BenchCluster, run
from cowsqlpy.tls import make_cert


def thread_ticks(cluster: BenchCluster) -> dict[tuple[int, int], tuple[int, int]]:
    """(node index, tid) -> (user ticks, system ticks) of every node thread."""
    out = {}
    for i, p in enumerate(cluster.procs):
        for tid in os.listdir(f"/proc/{p.pid}/task"):
            try:
                with open(f"/proc/{p.pid}/task/{tid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except FileNotFoundError:  # the thread ended meanwhile
                continue
            out[i, int(tid)] = (int(fields[11]), int(fields[12]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--mode", default="front", choices=("direct", "front", "front-loop", "tls", "tls-loop")
    )
    ap.add_argument("--workload", default="kvwrite", choices=("kvwrite", "kvreadwrite"))
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--nodes", type=int, default=3, choices=(1, 3))
    ap.add_argument("--min-us", type=float, default=10.0, help="hide threads below this")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="probe-sec-"))
    cluster = None
    try:
        tls = make_cert(base / "cert") if args.mode.startswith("tls") else None
        cluster = BenchCluster(args.mode, base / args.mode, tls, args.nodes)
        run(cluster, args.workload, args.workers, 1.0, "serializable")  # warm up
        before = thread_ticks(cluster)
        writes, reads, _, cpu = run(
            cluster, args.workload, args.workers, args.duration, "serializable"
        )
        after = thread_ticks(cluster)
    finally:
        if cluster is not None:
            cluster.close()
        shutil.rmtree(base, ignore_errors=True)
    ops = (writes + reads) * args.duration
    us = 1e6 / os.sysconf("SC_CLK_TCK") / max(ops, 1)
    print(
        f"{args.mode} {args.workload}/{args.workers}, {args.nodes} node(s): "
        f"{writes + reads:,.0f} ops/s, node CPU {cpu:,.0f} us/op, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    for (node, tid), (user, system) in sorted(after.items()):
        user0, system0 = before.get((node, tid), (0, 0))
        if ((user - user0) + (system - system0)) * us >= args.min_us:
            print(
                f"  node {node} tid {tid}: user {(user - user0) * us:,.0f}"
                f" sys {(system - system0) * us:,.0f} us/op"
            )


if __name__ == "__main__":
    main()
