"""The cost of the guard and of TLS: DB-API kvwrite / kvreadwrite through a 3-node cluster
whose nodes run (one process each) without a front ("direct"), behind a plain guarded
front ("front") and behind a mutual-TLS front with Raft through TLS too ("tls").

    .venv/bin/python bench/bench_security.py [--duration 5] [--repeat 3] [--workers 1,8,32] [--modes direct,front,tls] [--nodes 3]
    .venv/bin/python bench/bench_security.py --other /tmp/base --modes direct,front,other   # A/B of the front

The mode "tls-asyncio" is "tls" with the nodes on stock asyncio (its SSL) instead of
uvloop; "front-loop" is "front" with its Raft pipes on the front's event loop
(``Front(native_relay=False)``) instead of the C relay; "tls-loop" is "tls" with the
dialled Raft pipes' TLS on the front's event loop (``Front(native_tls=False)``) instead of
OpenSSL in C (``--modes front,tls,tls-loop --no-demo``: the A/B of the C side with the
plain cells beside it). ``--other TREE`` adds the mode "other": the front of another tree (e.g. ``git archive
<commit> | tar -x -C /tmp/base`` plus the compiled modules copied), so a change to the
front is measured against its base in alternating runs on the same machine.

The workloads are go-cowsql's (as bench/bench_client.py: 32-byte keys, 1 KiB values).
cowsql-benchmark has no TLS option, so the go-cowsql TLS anchor is the demo's: after the
DB-API cells the run measures the HTTP demo with ``bench/bench_demo.py --tls`` (GET/PUT at
1 / 8 / 32 connections, HTTPS against HTTP and against ``cowsql-demo --cert``; ``--no-demo``
skips it). Reported: median ok ops/s per cell and the ratios front/direct and tls/front.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cowsqlpy
from bench.bench_client import SCHEMA, Tally, cowsqlpy_worker, free_port
from cowsqlpy import protocol
from cowsqlpy.tls import TLSConfig, make_cert

NODE_IDS = (0x2DC171858C3155BE, 2002, 2003)  # the first bootstraps


def node_main(argv: list[str]) -> None:
    """Child: one engine node, behind a front unless mode is direct; runs until SIGTERM."""
    from cowsqlpy.front import Front
    from cowsqlpy.node import Node, engine_features

    mode, node_id, public, data_dir, busy_poll = (
        argv[0],
        int(argv[1]),
        argv[2],
        argv[3],
        float(argv[4]),
    )
    tls = TLSConfig(argv[5], argv[6]) if mode in ("tls", "tls-loop") else None
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    front = None
    if mode == "direct":
        node = Node(node_id, public, data_dir, network_latency=0.02)
    else:
        # An abstract socket: cowsql serves it to this process (the front) only.
        internal = f"@cowsqlpy-bench-{os.getpid()}"
        front = Front(
            public,
            internal,
            engine_features(),
            tls=tls,
            busy_poll=busy_poll,
            native_relay=mode != "front-loop",
            native_tls=mode != "tls-loop",
        )
        front.start()
        node = Node(
            node_id,
            public,
            data_dir,
            bind_address=internal,
            network_latency=0.02,
            dial=front.dial if tls else None,
        )
    node.start()
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM})
    node.close()
    if front is not None:
        front.stop()


class BenchCluster:
    def __init__(
        self,
        mode: str,
        base: Path,
        tls: TLSConfig | None,
        nodes: int = 3,
        busy_poll: float = 0.0,
        tree: str | None = None,
    ) -> None:
        self.tls = tls
        ids = NODE_IDS[:nodes]
        self.addresses = [f"127.0.0.1:{free_port()}" for _ in ids]
        self.procs: list[subprocess.Popen[bytes]] = []
        for i, (node_id, address) in enumerate(zip(ids, self.addresses, strict=True)):
            cmd = [
                sys.executable,
                __file__ if tree is None else str(Path(tree) / "bench" / "bench_security.py"),
                "node",
                {"other": "front", "tls-asyncio": "tls"}.get(mode, mode),
                str(node_id),
                address,
                str(base / f"n{i}"),
                str(busy_poll),
            ]
            if tls is not None:
                cmd += [str(tls.cert), str(tls.key)]
            env = dict(os.environ, COWSQLPY_LOOP="asyncio") if mode == "tls-asyncio" else None
            p = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=tree, env=env
            )
            assert p.stdout is not None and b"ready" in p.stdout.readline()
            self.procs.append(p)
        with cowsqlpy.SyncClient(self.addresses[:1], tls=tls) as admin:
            deadline = time.monotonic() + 30
            while admin.leader() is None:
                if time.monotonic() > deadline:
                    raise RuntimeError("no leader")
                time.sleep(0.1)
            for node_id, address in zip(ids[1:], self.addresses[1:], strict=True):
                admin.add(node_id, address, protocol.VOTER)
        setup = cowsqlpy.connect(self.addresses, database="bench", autocommit=True, tls=tls)
        setup.cursor().execute(SCHEMA)
        setup.close()

    def close(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def _cpu_seconds(procs: list[subprocess.Popen[bytes]]) -> float:
    """User + system CPU of the node processes (engine and front threads together)."""
    ticks = 0
    for p in procs:
        with open(f"/proc/{p.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def run(
    cluster: BenchCluster, workload: str, workers: int, duration: float, consistency: str
) -> tuple[float, float, float, float]:
    """(writes/s, reads/s, failed attempts/s, node CPU us per op) of `workers` DB-API
    threads (bench_client's)."""
    cpu_before = _cpu_seconds(cluster.procs)
    stop_at = time.monotonic() + duration
    tallies = [Tally() for _ in range(workers)]
    threads = [
        threading.Thread(
            target=cowsqlpy_worker,
            args=(cluster.addresses, workload, stop_at, i, tallies[i], consistency, cluster.tls),
        )
        for i in range(workers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + 60)
    total = Tally()
    for tally in tallies:
        total.merge(tally)
    errors = sum(total.errors.values())
    ops = len(total.latencies["exec"]) + len(total.latencies["query"])
    return (
        len(total.latencies["exec"]) / duration,
        len(total.latencies["query"]) / duration,
        errors / duration,
        (_cpu_seconds(cluster.procs) - cpu_before) / max(ops, 1) * 1e6,
    )


def _ratio(cells: dict[str, float], a: str, b: str) -> str:
    return f"{cells[a] / cells[b]:.2f}" if a in cells and b in cells and cells[b] else "-"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "node":
        node_main(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--workers", default="1,8,32")
    ap.add_argument("--workloads", default="kvwrite,kvreadwrite")
    ap.add_argument("--modes", default="direct,front,tls")
    ap.add_argument(
        "--front-busy-poll",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="Front(busy_poll=) of the fronted modes (default 0: off)",
    )
    ap.add_argument(
        "--nodes",
        type=int,
        default=3,
        choices=(1, 3),
        help="1: no Raft traffic, only the client path through the front",
    )
    ap.add_argument(
        "--read-consistency",
        default="serializable",
        choices=("serializable", "linearizable"),
        help="of the kvreadwrite reads (serializable: one round trip, as go-cowsql's)",
    )
    ap.add_argument(
        "--repeat", type=int, default=3, help="runs per cell and mode (medians reported)"
    )
    ap.add_argument(
        "--other", metavar="TREE", help="another tree whose front is the mode 'other' (A/B)"
    )
    ap.add_argument(
        "--no-demo", action="store_true", help="skip the demo cells (bench_demo.py --tls)"
    )
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-sec-"))
    tls = make_cert(base / "cert")
    modes = args.modes.split(",")
    samples: dict[tuple[str, str, int], list[tuple[float, float, float, float]]] = {}
    clusters: dict[str, BenchCluster] = {}
    try:
        # Every cluster stays up; each cell runs the modes back to back in rotating order,
        # --repeat times, so disk and CPU drift spread over all modes alike.
        for mode in modes:
            clusters[mode] = BenchCluster(
                mode,
                base / mode,
                tls if mode.startswith("tls") else None,
                args.nodes,
                args.front_busy_poll,
                args.other if mode == "other" else None,
            )
        turn = 0
        for workload in args.workloads.split(","):
            for workers in (int(w) for w in args.workers.split(",")):
                for _ in range(args.repeat):
                    for mode in modes[turn % len(modes) :] + modes[: turn % len(modes)]:
                        got = run(
                            clusters[mode], workload, workers, args.duration, args.read_consistency
                        )
                        samples.setdefault((mode, workload, workers), []).append(got)
                        print(f"{mode} {workload} {workers}: {got}", file=sys.stderr, flush=True)
                    turn += 1
    finally:
        for cluster in clusters.values():
            cluster.close()
        shutil.rmtree(base, ignore_errors=True)
    results = {
        key: tuple(statistics.median(v[k] for v in values) for k in range(4))
        for key, values in samples.items()
    }
    print(
        f"# DB-API through {args.nodes} node process(es), {args.duration:g} s per run, median of {args.repeat}, "
        f"{args.read_consistency} reads, {os.cpu_count()} cores, load average at the end "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}\n"
        "# ratio of the medians, then (in brackets) the median of the per-round ratios\n"
    )
    ratios = [
        ("front", "direct"),
        ("tls", "front"),
        ("other", "direct"),
        ("front", "other"),
        ("front", "front-loop"),
        ("tls-asyncio", "tls"),
        ("tls-loop", "front"),
        ("tls", "tls-loop"),
    ]
    ratios = [(a, b) for a, b in ratios if a in modes and b in modes]
    print(
        "| workload | workers | op | "
        + " | ".join(f"{m} ok/s" for m in modes)
        + "".join(f" | {a}/{b}" for a, b in ratios)
        + " |"
    )
    print("|---|---|---|" + "---|" * (len(modes) + len(ratios)))
    for workload in args.workloads.split(","):
        for workers in (int(w) for w in args.workers.split(",")):
            for op, k in (("write", 0), ("read", 1)):
                if workload == "kvwrite" and op == "read":
                    continue
                cells = {m: results[m, workload, workers][k] for m in modes}
                pairs = [
                    statistics.median(
                        x[k] / y[k]
                        for x, y in zip(
                            samples[a, workload, workers],
                            samples[b, workload, workers],
                            strict=True,
                        )
                        if y[k]
                    )
                    for a, b in ratios
                ]
                print(
                    f"| {workload} | {workers} | {op} | "
                    + " | ".join(f"{cells[m]:,.0f}" for m in modes)
                    + "".join(
                        f" | {_ratio(cells, a, b)} ({pair:.2f})"
                        for (a, b), pair in zip(ratios, pairs, strict=True)
                    )
                    + " |"
                )
    # CPU is steadier than throughput on a shared machine: what each mode costs the nodes.
    print(
        "\nNode processes' CPU per operation (us, median of the runs; engine and front together):\n"
    )
    print("| workload | workers | " + " | ".join(modes) + " |")
    print("|---|---|" + "---|" * len(modes))
    for workload in args.workloads.split(","):
        for workers in (int(w) for w in args.workers.split(",")):
            print(
                f"| {workload} | {workers} | "
                + " | ".join(f"{results[m, workload, workers][3]:,.0f}" for m in modes)
                + " |"
            )
    if not args.no_demo:
        # The demo over HTTPS against HTTP and against cowsql-demo --cert (the Go TLS anchor).
        print("\nThe HTTP demo (bench/bench_demo.py --tls):", flush=True)
        demo = Path(__file__).with_name("bench_demo.py")
        seconds = str(max(1, round(args.duration)))
        cmd = [sys.executable, str(demo), "--tls", "--failover-runs", "0"]
        subprocess.run([*cmd, "--duration", seconds, "--repeat", str(args.repeat)], check=True)


if __name__ == "__main__":
    main()
