"""Why the engine's insert rate falls during bench_fusefs: the insert rate (and the nodes'
snapshots, database pages, memory) at each stage of the bench's life on one cluster:
empty, after a big file written through the mount, after it is deleted, and after a
metadata run of creates and unlinks.

    .venv/bin/python bench/probe_fusefs_growth.py [--size 256] [--files 2000]
        [--snapshot-params 1024,8192]

Prints one line per stage: inserts/s, the snapshot files each node holds (count, MiB),
snapshots taken during the stage, the fs database's page and freelist counts, the nodes'
resident memory.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

import cowsqlpy  # noqa: E402
from cowsqlpy.testing import Cluster, wait_for  # noqa: E402
from fusefs import mkfs  # noqa: E402
from fusefs.testing import mount_command  # noqa: E402

MiB = 1 << 20


def snapshots(node_dirs: list[Path]) -> list[tuple[int, float, set[str]]]:
    """(count, MiB, names) of the snapshot files in each node's data dir."""
    out = []
    for d in node_dirs:
        files = {
            p.name: p.stat().st_size for p in d.rglob("snapshot-*") if not p.name.endswith(".meta")
        }
        out.append((len(files), sum(files.values()) / MiB, set(files)))
    return out


def rss_mib(pids: list[int | None]) -> list[int]:
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                out.append(next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS")) // 1024)
        except (OSError, StopIteration):
            out.append(-1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256, help="MiB of the big file")
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--inserts", type=int, default=300)
    ap.add_argument(
        "--snapshot-params", default="", help="threshold,trailing (default: the engine's)"
    )
    args = ap.parse_args()
    params = (
        tuple(int(x) for x in args.snapshot_params.split(",")) if args.snapshot_params else None
    )
    work = Path(tempfile.mkdtemp(prefix="probe-growth-"))
    mnt = work / "mnt"
    mnt.mkdir()
    cluster = Cluster(
        3,
        processes=True,
        base_dir=work / "cluster",
        network_latency=0.1,
        snapshot_params=params,  # type: ignore[arg-type]
    )
    proc = None
    node_dirs = [work / "cluster" / f"node{i}" for i in range(3)]
    try:
        servers = cluster.addresses
        conn = cowsqlpy.connect(servers, database="fs")
        mkfs(conn, capacity=(4 * args.size + 256) * MiB)
        auto = cowsqlpy.connect(servers, database="raw", autocommit=True)
        auto.execute("CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY, v TEXT)")
        with open(work / "mount.log", "wb") as log:
            proc = subprocess.Popen(
                mount_command(servers, mnt),
                env=dict(os.environ, PYTHONPATH=ROOT),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(lambda: os.path.ismount(mnt), 60, "mount")
        seen: list[set[str]] = [set() for _ in node_dirs]

        def stage(name: str, took: float | None = None) -> None:
            start = time.perf_counter()
            for _ in range(args.inserts):
                auto.execute("INSERT INTO rows (v) VALUES ('x')")
            rate = args.inserts / (time.perf_counter() - start)
            snaps = snapshots(node_dirs)
            new = [len(names - s) for (_, _, names), s in zip(snaps, seen, strict=True)]
            for (_, _, names), s in zip(snaps, seen, strict=True):
                s |= names
            pages = conn.execute("PRAGMA page_count").fetchone()
            free = conn.execute("PRAGMA freelist_count").fetchone()
            psize = conn.execute("PRAGMA page_size").fetchone()
            conn.rollback()
            fs_mib = pages[0] * psize[0] / MiB if pages and psize else -1
            print(
                f"{name:28s} insert/s {rate:7.1f}"
                + (f"  stage {took:6.1f} s" if took is not None else "")
                + f"  snapshots/node {[c for c, _, _ in snaps]} {[round(m) for _, m, _ in snaps]} MiB"
                f" new {new}  fs db {fs_mib:.0f} MiB, free pages {free[0] if free else -1}"
                f"  rss {rss_mib([cluster.pid(i) for i in range(3)])} MiB  load {os.getloadavg()[0]:.1f}",
                flush=True,
            )

        stage("empty")
        start = time.perf_counter()
        block = os.urandom(MiB)
        with open(mnt / "big", "wb") as f:
            for _ in range(args.size):
                f.write(block)
            os.fsync(f.fileno())
        stage(f"after writing {args.size} MiB", time.perf_counter() - start)
        stage("again (nothing between)")
        start = time.perf_counter()
        os.unlink(mnt / "big")
        stage("after deleting it", time.perf_counter() - start)
        for workers in (1, 8):
            dirs = [mnt / f"w{workers}" / f"t{t}" for t in range(workers)]
            for d in dirs:
                d.mkdir(parents=True)
            jobs = [[d / f"f{i:06d}" for i in range(args.files // workers)] for d in dirs]
            start = time.perf_counter()
            with ThreadPoolExecutor(workers) as pool:
                list(
                    pool.map(
                        lambda ps: [
                            os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)) for p in ps
                        ],
                        jobs,
                    )
                )
            took = time.perf_counter() - start
            stage(f"after {args.files} creates {workers} w ({args.files / took:.0f}/s)", took)
            start = time.perf_counter()
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(lambda ps: [os.unlink(p) for p in ps], jobs))
            took = time.perf_counter() - start
            stage(f"after unlinks {workers} w ({args.files / took:.0f}/s)", took)
        auto.close()
        conn.close()
    finally:
        if proc is not None:
            subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
            proc.wait(30)
        cluster.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
