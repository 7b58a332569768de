"""fusefs creates and unlinks against the engine's single-row autocommit inserts,
alternating in rounds on one cluster and one mount (the shared machine's load moves
during a long run; alternating keeps each ratio's two sides in the same minutes).

    .venv/bin/python bench/probe_fusefs_creates.py [--rounds 6] [--files 200] [--tree DIR ...]
        [--count]

Each round: N inserts, then N creates from 1 thread and 2N from 8 (each thread in a
directory of its own), and their unlinks. Prints medians and ratios to the inserts, how
many operations each engine transaction of the mount carried (group commit: the driver's
commit-marker table counts the daemon's transactions, the daemon's debug log the
requests that committed operations without a transaction: with `--count` only, as the
daemon's debug logging costs CPU), and the CPU time per operation of this probe's child
processes (the mount daemon and the three nodes, less
what they use idle, measured first): a figure the machine's other load moves much less
than the rates.

With `--tree DIR` (repeatable), each DIR holds a `fusefs/` package (e.g. `git archive
COMMIT fusefs | tar -x -C DIR`) run by a mount of its own on the same cluster and
filesystem, cowsqlpy from this checkout; every round runs the inserts and then each
tree in turn (the order reversed every other round), so the trees' figures come from
the same minutes (an A/B of the code).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

import cowsqlpy  # noqa: E402
from cowsqlpy.testing import Cluster, wait_for  # noqa: E402
from fusefs import mkfs  # noqa: E402
from fusefs.testing import mount_command  # noqa: E402


def timed(workers: int, jobs: list[list[Path]], fn: Callable[[Path], object]) -> float:
    """Seconds to run `fn` on every path, each job's paths in order in a thread of its own."""
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda paths: [fn(p) for p in paths], jobs))
    return time.perf_counter() - start


def transactions(conn: cowsqlpy.Connection) -> int:
    """Write transactions committed so far by the clients of the filesystem's database."""
    row = conn.execute("SELECT coalesce(sum(seq), 0) FROM cowsqlpy_commit_markers").fetchone()
    return int(row[0]) if row is not None else 0


def children_cpu() -> float:
    """CPU seconds used so far by this process's children (the nodes and the daemon)."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == os.getpid():
            total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return total


def one_requests(log: Path) -> int:
    """Requests the daemon logged as committing operations without a transaction."""
    with open(log, errors="replace") as f:
        return sum(1 for line in f if "operations in one request" in line)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument(
        "--tree", action="append", default=[], help="a directory holding a fusefs/ to run"
    )
    ap.add_argument(
        "--count",
        action="store_true",
        help="operations per engine transaction (the daemons log at debug level: slower)",
    )
    args = ap.parse_args()
    trees = [os.path.abspath(t) for t in args.tree] or [ROOT]
    work = Path(tempfile.mkdtemp(prefix="probe-fusefs-"))
    cluster = Cluster(3, processes=True, base_dir=work / "cluster", network_latency=0.1)
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        servers = cluster.addresses
        conn = cowsqlpy.connect(servers, database="fs")
        mkfs(conn, capacity=1 << 30)
        auto = cowsqlpy.connect(servers, database="raw", autocommit=True)
        auto.execute("CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY, v TEXT)")
        mounts: list[tuple[str, Path, Path]] = []  # (label, mountpoint, its log)
        for t, tree in enumerate(trees):
            mnt, log = work / f"mnt{t}", work / f"mount{t}.log"
            mnt.mkdir()
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    mount_command(
                        servers, mnt, *(["-vv"] if args.count else []), "--log-file", str(log)
                    ),
                    env=dict(os.environ, PYTHONPATH=os.pathsep.join(dict.fromkeys([tree, ROOT]))),
                    cwd=tree,  # `python -m` puts the working directory first on the path
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            procs.append((proc, mnt))
            wait_for(lambda mnt=mnt: os.path.ismount(mnt), 60, "mount")  # type: ignore[misc]
            label = "" if len(trees) == 1 else f"[{os.path.basename(tree.rstrip('/'))}] "
            mounts.append((label, mnt, log))
        cpu, start = children_cpu(), time.perf_counter()
        time.sleep(2)
        idle = (children_cpu() - cpu) / (time.perf_counter() - start)  # CPU s per s, idle
        n = args.files
        figures: dict[str, list[float]] = {}
        per_tx: dict[str, list[float]] = {}
        cpu_ms: dict[str, list[float]] = {}
        for r in range(args.rounds):
            start = time.perf_counter()
            for _ in range(n):
                auto.execute("INSERT INTO rows (v) VALUES ('x')")
            figures.setdefault("insert", []).append(n / (time.perf_counter() - start))
            order = list(enumerate(mounts))  # one filesystem: a tree each, in turn
            for m, (label, mnt, log) in order[::-1] if r % 2 else order:  # A B, B A, ...
                for workers in (1, 8):
                    count = n * (2 if workers > 1 else 1)
                    dirs = [mnt / f"m{m}r{r}w{workers}" / f"t{t}" for t in range(workers)]
                    for d in dirs:
                        d.mkdir(parents=True)
                    jobs = [[d / f"f{i:06d}" for i in range(count // workers)] for d in dirs]

                    def create(p: Path) -> None:
                        os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644))

                    for what, fn in (("create", create), ("unlink", os.unlink)):
                        name = f"{label}{what} {workers} w"
                        before, cpu = transactions(conn) + one_requests(log), children_cpu()
                        took = timed(workers, jobs, fn)
                        figures.setdefault(name, []).append(count / took)
                        busy = children_cpu() - cpu - idle * took
                        cpu_ms.setdefault(name, []).append(1000 * busy / count)
                        commits = transactions(conn) + one_requests(log) - before
                        per_tx.setdefault(name, []).append(count / max(1, commits))
        inserts = statistics.median(figures["insert"])
        print(
            f"load {os.getloadavg()[0]:.1f}, {args.rounds} rounds of {n};"
            f" children idle {1000 * idle:.0f} ms CPU/s"
        )
        for name, values in figures.items():
            m = statistics.median(values)
            batched = (
                (f"  {statistics.median(per_tx[name]):.1f} per engine tx," if args.count else "")
                + f" {statistics.median(cpu_ms[name]):.2f} ms CPU each"
                if name in per_tx
                else ""
            )
            print(
                f"{name:20s} median {m:7.1f}/s  ratio {m / inserts:.2f}  {[round(v) for v in values]}{batched}"
            )
        for label, _, _ in mounts[1:]:  # each tree against the first, round by round
            first = mounts[0][0]
            for name in [k for k in figures if k.startswith(label)]:
                paired = [
                    b / a
                    for a, b in zip(figures[first + name[len(label) :]], figures[name], strict=True)
                ]
                print(
                    f"{name:20s} / {first}: median {statistics.median(paired):.2f}"
                    f" ({min(paired):.2f}-{max(paired):.2f} over the rounds)"
                )
        auto.close()
        conn.close()
    finally:
        for proc, mnt in procs:
            subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
            proc.wait(30)
        cluster.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
