"""Reproducer of the libraft 0.22.1 SIGSEGV seen around node restarts (docs/consistency.md).

Three nodes with a snapshot every 64 entries (``snapshot_params=(64, 128)``), two
writer threads, and one node killed and started again on its data dir per cycle.
The restarted node catches up, is sent an InstallSnapshot by the leader (its log is
trimmed past the follower's) and, in the same moments, reaches its own snapshot
threshold; it dies of SIGSEGV in an engine thread right after libraft reports
``new snapshot (N^T), 128 trailing entries`` (run with ``LIBRAFT_TRACE=1`` to see it).
The cause (docs/consistency.md): ``takeSnapshotCb`` in src/legacy.c clears
``r->legacy.snapshot_pending`` before it reads the held-back install from it, then
passes NULL to ``legacyPersistSnapshotStart``. ``LD_LIBRARY_PATH`` pointing at a
libraft built with those two lines swapped makes every run here pass.

    python -m tests.faults.libraft_snapshot_crash [--processes] [--cycles 15] [--seed 1]
        [--snapshot 64,128 | --snapshot default]

Exit status: 0 no crash, 3 a node (process) died of a signal, a crash of this
process itself (in-process nodes) is its own SIGSEGV (status 139 from a shell).
"""

from __future__ import annotations

import argparse
import faulthandler
import random
import sys
import threading
import time

from cowsqlpy.errors import Error
from cowsqlpy.testing import Cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", action="store_true", help="node processes (SIGKILL) instead of in-process Apps")
    parser.add_argument("--cycles", type=int, default=15)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--snapshot", default="64,128", help="THRESHOLD,TRAILING or 'default'")
    args = parser.parse_args(argv)
    faulthandler.enable()
    snapshot = None if args.snapshot == "default" else tuple(int(x) for x in args.snapshot.split(","))
    rng = random.Random(args.seed)
    with Cluster(3, processes=args.processes, snapshot_params=snapshot) as c:  # type: ignore[arg-type]
        c.connect("s", autocommit=True).execute("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT)")
        stop = threading.Event()
        writes = [0]

        def load() -> None:
            conn = c.connect("s", autocommit=True)
            while not stop.is_set():
                try:
                    conn.execute("INSERT INTO t (v) VALUES (?)", ("x" * 100,))
                    writes[0] += 1
                except Error:
                    time.sleep(0.01)

        threads = [threading.Thread(target=load, daemon=True) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            for cycle in range(args.cycles):
                i = rng.randrange(3)
                print(f"cycle {cycle}: kill and start node{i} ({writes[0]} writes so far)", flush=True)
                c.kill(i)
                dead = [(j, c.members[j].proc.returncode) for j in range(3)  # type: ignore[union-attr]
                        if j != i and c.members[j].proc is not None and not c.running(j)]
                if dead:
                    print(f"node(s) died: {dead} (index, exit status)\n{c.format_logs([j for j, _ in dead], 30)}")
                    return 3
                time.sleep(rng.uniform(0, 0.5))
                c.start(i)
                time.sleep(rng.uniform(0, 0.5))
        except Exception as exc:  # a restarted node that died before it was ready
            print(f"harness: {exc}")
            return 3
        finally:
            stop.set()
            for t in threads:
                t.join(30)
    print(f"no crash: {args.cycles} cycles, {writes[0]} writes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
