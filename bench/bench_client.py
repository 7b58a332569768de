"""cowsqlpy's client against go-cowsql's Go client (cowsql-benchmark) on the same workloads.

Both sides run a 3-node cluster on loopback and the kvwrite / kvreadwrite workloads of
go-cowsql's benchmark (the same as go-dqlite's) (32-byte keys, 1 KiB values, `INSERT OR REPLACE INTO model`,
`SELECT value FROM model WHERE key = ?`) with the same number of workers for the same
duration. Reported: successful ops/s, failed attempts/s, p50/p99 latency, and the
cowsqlpy/Go ratio of successful ops/s.

    .venv/bin/python bench/bench_client.py [--duration 10] [--workers 1,8,32] [--anchor cowsql-benchmark]

``--anchor dqlite-benchmark`` runs Canonical's tool (libdqlite 1.11.1) instead, for history.
cowsqlpy's reads run serializable, as the Go client's do; kvreadwrite runs once more with
linearizable reads (cowsqlpy's default, a shared read barrier) to show their cost.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cowsqlpy
from cowsqlpy import codec
from cowsqlpy.tls import TLSConfig

KEY_SIZE, VALUE_SIZE = 32, 1024
SCHEMA = "CREATE TABLE IF NOT EXISTS model (key TEXT, value TEXT, UNIQUE(key))"
WRITE = "INSERT OR REPLACE INTO model(key, value) VALUES(?, ?)"
READ = "SELECT value FROM model WHERE key = ?"
LETTERS = string.ascii_letters


def rand_seq(n: int, rng: random.Random) -> str:
    return "".join(rng.choices(LETTERS, k=n))


def rand_value(rng: random.Random) -> str:
    # As go-cowsql: half one repeated letter, half random letters.
    return rng.choice(LETTERS) * (VALUE_SIZE // 2) + rand_seq(VALUE_SIZE // 2, rng)


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"exec": [], "query": []})
    errors: dict[str, int] = field(default_factory=lambda: {"exec": 0, "query": 0})
    error_kinds: dict[str, int] = field(default_factory=dict)

    def merge(self, other: Tally) -> None:
        for k in self.latencies:
            self.latencies[k] += other.latencies[k]
            self.errors[k] += other.errors[k]
        for k, v in other.error_kinds.items():
            self.error_kinds[k] = self.error_kinds.get(k, 0) + v


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- Go: cowsql-benchmark (or dqlite-benchmark) -------------------------------------

ANCHOR = "cowsql-benchmark"


def run_go(workload: str, workers: int, duration: int) -> Tally:
    base = Path(tempfile.mkdtemp(prefix="bench-go-"))
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    common = ["--workload", workload, "--workers", str(workers), "--duration", str(duration)]
    followers = [
        subprocess.Popen(
            [ANCHOR, "--db", a, "--join", addrs[0], "--dir", str(base / f"n{i}")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for i, a in enumerate(addrs[1:], 1)
    ]
    try:
        subprocess.run(
            [ANCHOR, "--db", addrs[0], "--driver", "--cluster", ",".join(addrs), "--dir", str(base / "n0"), *common],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=duration + 180, check=True,
        )
    finally:
        for p in followers:
            p.terminate()
        for p in followers:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    tally = Tally()
    for f in (base / "n0" / addrs[0] / "results").iterdir():  # nested per address
        kind = f.name.split("-")[1]
        lines = f.read_text().splitlines()
        section = None
        for line in lines:
            if line.startswith("n_err "):
                tally.errors[kind] += int(line.split()[1])
            elif line.startswith("measurements"):
                section = "m"
            elif line == "errors":
                section = "e"
            elif section == "m" and line.strip():
                tally.latencies[kind].append(float(line.split()[1]) / 1000)
            elif section == "e" and line.strip():
                msg = line.split(" ", 1)[1]
                tally.error_kinds[msg] = tally.error_kinds.get(msg, 0) + 1
    shutil.rmtree(base, ignore_errors=True)
    return tally


# -- cowsqlpy ------------------------------------------------------------------------


def cowsqlpy_worker(addresses: list[str], workload: str, deadline: float, seed: int, out: Tally,
                    consistency: str, tls: TLSConfig | None = None) -> None:
    rng = random.Random(seed)
    keys: list[str] = []
    conn = cowsqlpy.connect(addresses, database="bench", autocommit=True, read_consistency=consistency,
                            tls=tls)
    cur = conn.cursor()
    try:
        while time.monotonic() < deadline:
            read = workload == "kvreadwrite" and keys and rng.random() < 0.5
            kind = "query" if read else "exec"
            start = time.perf_counter()
            try:
                if read:
                    cur.execute(READ, (rng.choice(keys),))
                    cur.fetchone()
                else:
                    key = rand_seq(KEY_SIZE, rng)
                    cur.execute(WRITE, (key, rand_value(rng)))
                    keys.append(key)
            except cowsqlpy.Error as exc:
                out.errors[kind] += 1
                name = type(exc).__name__
                out.error_kinds[name] = out.error_kinds.get(name, 0) + 1
                continue
            out.latencies[kind].append(time.perf_counter() - start)
    finally:
        conn.close()


def run_cowsqlpy(workload: str, workers: int, duration: int, consistency: str) -> Tally:
    """The same shape as cowsql-benchmark's run: the driver process embeds the first
    node (it bootstraps, so it leads), two more nodes run as their own processes."""
    base = Path(tempfile.mkdtemp(prefix="bench-py-"))
    app = cowsqlpy.App(base / "n0", "127.0.0.1:0", roles_adjustment_frequency=0.5)
    followers = []
    try:
        app.ready(30)
        for i in (1, 2):
            followers.append(subprocess.Popen(
                [sys.executable, "-m", "cowsqlpy", "node", "--address", f"127.0.0.1:{free_port()}",
                 "--dir", str(base / f"n{i}"), "--join", app.address, "--roles-adjustment-frequency", "0.5"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        admin = app.client()
        deadline = time.monotonic() + 60
        while sum(n.role == cowsqlpy.VOTER for n in admin.cluster()) < 3:
            if time.monotonic() > deadline:
                raise RuntimeError("cluster did not reach 3 voters")
            time.sleep(0.2)
        addresses = [n.address for n in admin.cluster()]
        setup = cowsqlpy.connect(addresses, database="bench", autocommit=True)
        setup.execute(SCHEMA)
        setup.close()
        stop_at = time.monotonic() + duration
        tallies = [Tally() for _ in range(workers)]
        threads = [
            threading.Thread(target=cowsqlpy_worker, args=(addresses, workload, stop_at, i, tallies[i], consistency))
            for i in range(workers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(duration + 60)
    finally:
        for p in followers:
            p.terminate()
        for p in followers:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        app.close(handover=False)
        shutil.rmtree(base, ignore_errors=True)
    total = Tally()
    for t in tallies:
        total.merge(t)
    return total


# -- report --------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--workers", default="1,8,32")
    ap.add_argument("--workloads", default="kvwrite,kvreadwrite")
    ap.add_argument("--anchor", default="cowsql-benchmark", choices=("cowsql-benchmark", "dqlite-benchmark"))
    args = ap.parse_args()
    global ANCHOR
    ANCHOR = args.anchor
    if shutil.which(ANCHOR) is None:
        sys.exit(f"{ANCHOR} not found: apt-get install -t bookworm-backports go-cowsql (or go-dqlite)")
    from cowsqlpy.node import ENGINE_NAME, engine_version
    from cowsqlpy.versions import describe_engine

    print(f"# cowsqlpy client on {describe_engine(ENGINE_NAME, engine_version())} vs {ANCHOR}, {args.duration} s per run, "
          f"{os.cpu_count()} cores, codec={codec.IMPLEMENTATION}\n")
    print("cowsqlpy reads serializable (as the Go client's); the last three columns rerun "
          "kvreadwrite with linearizable reads (cowsqlpy's default).\n")
    print("| workload | workers | op | Go ok/s | Go failed/s | Go p50/p99 ms | cowsqlpy ok/s | cowsqlpy failed/s "
          "| cowsqlpy p50/p99 ms | ratio | linearizable ok/s | linearizable p50/p99 ms | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    notes = []
    for workload in args.workloads.split(","):
        for workers in (int(w) for w in args.workers.split(",")):
            go = run_go(workload, workers, args.duration)
            py = run_cowsqlpy(workload, workers, args.duration, "serializable")
            lin = run_cowsqlpy(workload, workers, args.duration, "linearizable") if workload == "kvreadwrite" else None
            for op in ("exec", "query"):
                if not go.latencies[op] and not py.latencies[op]:
                    continue
                g_ok, p_ok = len(go.latencies[op]) / args.duration, len(py.latencies[op]) / args.duration
                ratio = p_ok / g_ok if g_ok else float("inf")
                lin_cells = "| - | - | - |"
                if lin is not None:
                    l_ok = len(lin.latencies[op]) / args.duration
                    lin_cells = (f"| {l_ok:,.0f} | {pct(lin.latencies[op], .5):.2f} / {pct(lin.latencies[op], .99):.2f} "
                                 f"| {l_ok / g_ok if g_ok else float('inf'):.2f} |")
                print(
                    f"| {workload} | {workers} | {'write' if op == 'exec' else 'read'} "
                    f"| {g_ok:,.0f} | {go.errors[op] / args.duration:,.0f} | {pct(go.latencies[op], .5):.2f} / {pct(go.latencies[op], .99):.2f} "
                    f"| {p_ok:,.0f} | {py.errors[op] / args.duration:,.0f} | {pct(py.latencies[op], .5):.2f} / {pct(py.latencies[op], .99):.2f} "
                    f"| {ratio:.2f} " + lin_cells,
                    flush=True,
                )
            for side, tally in (("Go", go), ("cowsqlpy", py), ("cowsqlpy linearizable", lin)):
                if tally is None:
                    continue
                if tally.error_kinds:
                    top = sorted(tally.error_kinds.items(), key=lambda kv: -kv[1])[:2]
                    notes.append(f"{workload}/{workers} {side} errors: " + "; ".join(f"{n}x {m}" for m, n in top))
    if notes:
        print()
        for n in notes:
            print(f"- {n}")


if __name__ == "__main__":
    main()
