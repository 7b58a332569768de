"""Failover time: SIGKILL (or SIGSTOP) of the leader's process until a write succeeds through another node.

Two 3-process clusters in the same run:

* cowsqlpy: ``python -m cowsqlpy node`` processes (App), written to through the
  DB-API driver (leader-following, prompt retry policy);
* cowsql-demo (Debian go-cowsql 1.22; ``--anchor dqlite-demo`` for go-dqlite 1.11.5):
  written to through the HTTP API of a
  surviving node (PUT /key), as its users would.

Each run: kill -9 the leader's process, then write until a write is acknowledged
(the time is measured from the kill); restart the killed node and wait until it
is back in the cluster. Every acknowledged write of the whole run is checked at
the end: lost acknowledged writes must be 0.

``--fault pause`` stops the leader with SIGSTOP instead (a frozen process keeps its
sockets open: TCP connects succeed, nothing answers) and resumes it after the
write; ``--fault both`` measures kill and pause of cowsqlpy in the same run (the
Go demo is measured after a kill only; ``--our-demo`` adds ``python -m demo``,
written to over HTTP as the issue's probe did). For cowsqlpy the engine's own failover
time is measured beside the write: from the fault until a surviving node answers
LEADER with its own address (polled every 5 ms on raw wire connections).

    .venv/bin/python bench/bench_failover.py [--runs 10] [--latency 0.025] [--anchor cowsql-demo] [--fault kill|pause|both]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cowsqlpy import RetryPolicy, SyncClient, connect, protocol
from cowsqlpy.errors import Error, OutcomeUnknownError
from cowsqlpy.protocol import VOTER
from cowsqlpy.testing import Cluster, wait_for
from cowsqlpy.wire import WireConnection


@dataclass
class Result:
    name: str
    times: list[float] = field(default_factory=list)
    acked: int = 0
    lost: int = 0
    in_doubt: int = 0
    failed_attempts: int = 0
    elections: list[float] = field(default_factory=list)  # fault -> a survivor leads (engine only)


# -- cowsqlpy -----------------------------------------------------------------------


class ElectionWatch:
    """From `start()`, poll the survivors' LEADER until one names itself: the engine's
    own failover time, without any client's leader discovery in it."""

    def __init__(self, survivors: list[str]) -> None:
        self.survivors = survivors
        self.elected_after: float | None = None
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._poll()), daemon=True)

    def start(self, t0: float) -> None:
        self._t0 = t0
        self._thread.start()

    async def _poll(self) -> None:
        conns: dict[str, WireConnection] = {}
        deadline = self._t0 + 60
        try:
            while time.monotonic() < deadline:
                for address in self.survivors:
                    try:
                        if address not in conns:
                            conns[address] = await WireConnection.connect(address, timeout=0.5)
                        _, leader = await conns[address].request(protocol.LEADER, timeout=0.5)
                    except Error:
                        conns.pop(address, None)
                        continue
                    if leader == address:
                        self.elected_after = time.monotonic() - self._t0
                        return
                await asyncio.sleep(0.005)
        finally:
            for conn in conns.values():
                conn.close()

    def join(self) -> float:
        self._thread.join(70)
        if self.elected_after is None:
            raise RuntimeError(f"no survivor of {self.survivors} led within 60 s")
        return self.elected_after


DEFAULT_POLICY = RetryPolicy()


def bench_cowsqlpy(runs: int, latency: float, fault: str = "kill",
                   attempt_timeout: float = DEFAULT_POLICY.attempt_timeout,
                   stall_grace: float | None = DEFAULT_POLICY.stall_grace) -> Result:
    res = Result(f"cowsqlpy App (network_latency={latency}s, attempt_timeout={attempt_timeout}s, "
                 f"stall_grace={stall_grace}), {fault}")
    policy = RetryPolicy(max_tries=10_000, backoff=0.01, backoff_cap=0.05, deadline=30.0,
                         attempt_timeout=attempt_timeout, connect_timeout=0.5, stall_grace=stall_grace)
    with Cluster(3, processes=True, network_latency=latency, roles_adjustment_frequency=5.0) as c:
        conn = connect(c.addresses, database="bench", autocommit=True, policy=policy)
        conn.execute("CREATE TABLE IF NOT EXISTS kv (k INTEGER PRIMARY KEY, v TEXT)")
        acked: list[int] = []
        seq = 0

        def write() -> bool:
            nonlocal seq
            seq += 1
            try:
                conn.execute("INSERT INTO kv (k, v) VALUES (?, ?)", (seq, f"v{seq}"))
            except OutcomeUnknownError:
                res.in_doubt += 1
                return False
            except Error:
                res.failed_attempts += 1
                return False
            acked.append(seq)
            return True

        for _ in range(50):
            write()
        for run in range(runs):
            leader = c.wait_leader()
            watch = ElectionWatch([a for i, a in enumerate(c.addresses) if i != leader])
            t0 = time.monotonic()
            c.kill(leader) if fault == "kill" else c.pause(leader)
            watch.start(t0)
            while not write():
                time.sleep(0.005)
            res.times.append(time.monotonic() - t0)
            res.elections.append(watch.join())
            for _ in range(20):
                write()
            if fault == "kill":
                c.restart(leader)
            else:
                c.resume(leader)
            c.wait_roles(voters=3, standbys=0)
            print(f"  cowsqlpy {fault} run {run + 1}: write after {res.times[-1]:.3f} s, "
                  f"engine leader after {res.elections[-1]:.3f} s", file=sys.stderr, flush=True)
        present = {k for (k,) in conn.execute("SELECT k FROM kv").fetchall()}
        res.acked = len(acked)
        res.lost = sum(1 for k in acked if k not in present)
        conn.close()
    return res


# -- our demo (python -m demo, kvstore cowsql:// underneath) ---------------------------


def bench_our_demo(runs: int, fault: str) -> Result:
    """PUTs through a surviving node of a 3-node `demo.testing` cluster, as an operator
    would try it (the issue's probe); its default --request-timeout is 5 s."""
    from demo.testing import DemoCluster, request

    res = Result(f"cowsqlpy demo over HTTP (request timeout 5 s), {fault}")
    base = Path(tempfile.mkdtemp(prefix="bench-failover-ourdemo-"))
    acked: list[str] = []
    try:
        with DemoCluster(base, 3) as demo:
            seq = 0

            def put(via: str) -> bool:
                nonlocal seq
                seq += 1
                try:
                    status, _, _ = request("PUT", f"{via}/k{seq}", f"v{seq}".encode(), timeout=30)
                except OSError:
                    res.in_doubt += 1
                    return False
                if status not in (200, 201):
                    res.failed_attempts += 1
                    return False
                acked.append(f"k{seq}")
                return True

            for run in range(runs):
                li = demo.wait_leader()
                via = demo.nodes[(li + 1) % 3]
                for _ in range(20):
                    put(via.url)
                victim = demo.nodes[li]
                assert victim.proc is not None
                watch = ElectionWatch([n.db for i, n in enumerate(demo.nodes) if i != li])
                t0 = time.monotonic()
                victim.kill() if fault == "kill" else os.kill(victim.proc.pid, signal.SIGSTOP)
                watch.start(t0)
                while not put(via.url):
                    time.sleep(0.005)
                res.times.append(time.monotonic() - t0)
                res.elections.append(watch.join())
                if fault == "kill":
                    victim.start()
                else:
                    os.kill(victim.proc.pid, signal.SIGCONT)
                wait_for(victim.healthy, 60, "the demo node back")
                wait_for(lambda: demo.voters() == 3, 60, "3 demo voters")
                print(f"  our demo {fault} run {run + 1}: write after {res.times[-1]:.3f} s, "
                      f"engine leader after {res.elections[-1]:.3f} s", file=sys.stderr, flush=True)
            reader = demo.nodes[demo.wait_leader()]
            res.acked = len(acked)
            res.lost = sum(1 for k in acked if request("GET", f"{reader.url}/{k}")[2] != f"v{k[1:]}".encode())
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return res


# -- the Go demo ----------------------------------------------------------------------

GO_DEMO = "cowsql-demo"  # --anchor


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DemoNode:
    def __init__(self, base: Path, index: int, join: list[str]) -> None:
        self.api = f"127.0.0.1:{_free_port()}"
        self.db = f"127.0.0.1:{_free_port()}"
        self.dir = base / f"demo{index}"
        self.log_path = base / f"demo{index}.log"
        self.join = join
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [GO_DEMO, "--api", self.api, "--db", self.db, "--dir", str(self.dir)]
        if self.join:
            cmd += ["--join", ",".join(self.join)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def request(self, method: str, key: str, value: str | None = None, timeout: float = 10.0) -> str:
        req = urllib.request.Request(f"http://{self.api}/{key}", data=value.encode() if value is not None else None, method=method)
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.read().decode().rstrip("\n")

    def up(self) -> bool:
        try:
            self.request("GET", "__probe__", timeout=2.0)
            return True
        except (urllib.error.URLError, OSError):
            return False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def bench_demo(runs: int) -> Result:
    res = Result(f"{GO_DEMO} (Go app package, engine default timeouts)")
    base = Path(tempfile.mkdtemp(prefix="bench-failover-demo-"))
    nodes: list[DemoNode] = []
    try:
        first = DemoNode(base, 0, [])
        nodes.append(first)
        first.start()
        wait_for(first.up, 30, f"{GO_DEMO} 0")
        for i in (1, 2):
            nodes.append(DemoNode(base, i, [first.db]))
            nodes[-1].start()
        for n in nodes:
            wait_for(n.up, 30, f"{GO_DEMO} {n.api}")
        admin_policy = RetryPolicy(deadline=2.0, attempt_timeout=1.0, connect_timeout=0.5)

        def cluster_roles() -> list[int | None]:
            with SyncClient([n.db for n in nodes], policy=admin_policy) as c:
                return sorted(n.role for n in c.cluster())

        wait_for(lambda: cluster_roles() == [VOTER] * 3, 60, f"3 {GO_DEMO} voters")

        def leader_index() -> int | None:
            with SyncClient([n.db for n in nodes], policy=admin_policy) as c:
                leader = c.leader()
            return next((i for i, n in enumerate(nodes) if leader and n.db == leader.address), None)

        acked: list[str] = []
        seq = 0

        def write(via: DemoNode) -> bool:
            nonlocal seq
            seq += 1
            key = f"k{seq}"
            try:
                reply = via.request("PUT", key, f"v{seq}")
            except (urllib.error.URLError, OSError):
                res.in_doubt += 1  # no reply: we cannot tell
                return False
            if reply != "done":
                res.failed_attempts += 1
                return False
            acked.append(key)
            return True

        for run in range(runs):
            li = wait_for(lambda: (lambda i: None if i is None else i + 1)(leader_index()), 60, "a demo leader") - 1
            via = nodes[(li + 1) % 3]
            t0 = time.monotonic()
            nodes[li].kill()
            while not write(via):
                time.sleep(0.005)
            res.times.append(time.monotonic() - t0)
            for _ in range(20):
                write(via)
            nodes[li].start()
            wait_for(nodes[li].up, 60, f"restarted {GO_DEMO}")
            wait_for(lambda: cluster_roles() == [VOTER] * 3, 60, f"3 {GO_DEMO} voters")
            print(f"  {GO_DEMO} run {run + 1}: {res.times[-1]:.3f} s", file=sys.stderr, flush=True)
        reader = nodes[0]
        res.acked = len(acked)
        res.lost = 0
        for key in acked:
            value = reader.request("GET", key)
            if value != f"v{key[1:]}":
                res.lost += 1
    finally:
        for n in nodes:
            n.close()
        shutil.rmtree(base, ignore_errors=True)
    return res


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--latency", type=float, default=0.025, help="cowsqlpy nodes' network latency (s)")
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--anchor", default="cowsql-demo", choices=("cowsql-demo", "dqlite-demo"))
    parser.add_argument("--fault", default="kill", choices=("kill", "pause", "both"),
                        help="SIGKILL or SIGSTOP of the leader (both: each, same run)")
    parser.add_argument("--our-demo", action="store_true", help="also measure python -m demo (HTTP PUTs)")
    parser.add_argument("--attempt-timeout", type=float, default=DEFAULT_POLICY.attempt_timeout,
                        help="the DB-API policy's per-request time limit (s; default: RetryPolicy's)")
    parser.add_argument("--stall-grace", default=str(DEFAULT_POLICY.stall_grace),
                        help="the DB-API policy's stall_grace (s), 'none' turns the watchdog off: "
                             "then a write in flight on a frozen leader waits the attempt timeout")
    args = parser.parse_args()
    global GO_DEMO
    GO_DEMO = args.anchor
    faults = ["kill", "pause"] if args.fault == "both" else [args.fault]
    stall_grace = None if args.stall_grace.lower() == "none" else float(args.stall_grace)
    results = [bench_cowsqlpy(args.runs, args.latency, fault, args.attempt_timeout, stall_grace) for fault in faults]
    if args.our_demo:
        results += [bench_our_demo(args.runs, fault) for fault in faults]
    if not args.skip_demo and "kill" in faults:
        if shutil.which(GO_DEMO) is None:
            print(f"{GO_DEMO} not installed (Debian go-cowsql / go-dqlite): skipped", file=sys.stderr)
        else:
            results.append(bench_demo(args.runs))
    print(f"\nload average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"\nFailover after {' / '.join(faults)} of the leader's process, 3 node processes, {args.runs} runs "
          f"({os.cpu_count()} CPUs)\n")
    print("| cluster | median (s) | min (s) | max (s) | engine's new leader, median (s) | write / engine | acknowledged writes | lost | in doubt (no reply) | failed attempts while no leader |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        engine = f"{statistics.median(r.elections):.3f}" if r.elections else "-"
        ratio = f"{statistics.median(r.times) / statistics.median(r.elections):.2f}" if r.elections else "-"
        print(f"| {r.name} | {statistics.median(r.times):.3f} | {min(r.times):.3f} | {max(r.times):.3f} "
              f"| {engine} | {ratio} | {r.acked} | {r.lost} | {r.in_doubt} | {r.failed_attempts} |")
    if len(faults) == 2:
        pairs = [results[:2], results[2:4]] if args.our_demo else [results[:2]]
        for kill_res, pause_res in pairs:
            kill, pause = (statistics.median(r.times) for r in (kill_res, pause_res))
            print(f"\n{pause_res.name}: pause / kill (median write resumption) {pause / kill:.2f}, "
                  f"pause / engine {pause / statistics.median(pause_res.elections):.2f} (target <= 1.5)")
    return 1 if any(r.lost for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
