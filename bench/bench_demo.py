"""HTTP benchmark: this demo vs go-cowsql's cowsql-demo, with wrk, in one run.

Two 3-node clusters on loopback: ``python -m demo`` processes and ``cowsql-demo``
(Debian go-cowsql 1.22; ``--anchor dqlite-demo`` for Canonical's go-dqlite), both up for the throughput part (the one not measured sits
idle). 1,000 keys of 128 bytes are loaded into each; then wrk drives each leader
node's HTTP API with GET and PUT (random keys of the 1,000, Lua script) at 1, 8
and 32 connections, every cell ``--repeat`` times per cluster, back to back in
alternating order. Reported per cell: the median run of each (successful
requests/s = wrk's total minus non-2xx and minus the Go demo's "200 Error: ..."
answers, counted by the Lua script; errors; p50/p99 latency), the ratio of the
medians and the ratios of the back-to-back pairs. Then failover, one fresh
cluster at a time: SIGKILL of the leader's process, time until a PUT through
another node succeeds, and every acknowledged PUT checked afterwards.

    .venv/bin/python bench/bench_demo.py [--duration 5] [--repeat 3] [--failover-runs 3] [--anchor cowsql-demo]

``--tls`` (issue 16): two more clusters in the same run, each with a cluster certificate:
the demo with ``--cert/--key --api-tls server`` (Raft and the kvstore client over mutual
TLS, the API over HTTPS; server-only HTTPS because wrk cannot show a client certificate,
and with keep-alive connections a client certificate changes only the handshake) and
``cowsql-demo --cert --key`` (its Raft and client side over TLS; its HTTP API has no TLS
option). Ratios: demo-tls / demo (HTTPS vs HTTP) and demo-tls / the Go demo with TLS.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cowsqlpy import SyncClient
from cowsqlpy.retry import RetryPolicy
from cowsqlpy.testing import wait_for
from cowsqlpy.tls import TLSConfig, make_cert
from demo.testing import DemoCluster, request
from kvstore.testing import free_ports

KEYS = 1000
# The Go demos answer a failed PUT with "200 Error: ..."; count those as errors (only for
# PUT: a Lua response() hook makes wrk hand every body to Lua, which costs GET throughput)
RESPONSE = """response = function(status, headers, rbody)
  if status == 200 and rbody and string.sub(rbody, 1, 6) == "Error:" then bad = bad + 1 end
end"""
VALUE = b"v" * 128
CONNS = (1, 8, 32)

LUA = r"""
local method = "%(method)s"
local body = string.rep("v", 128)
bad = 0
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end
request = function()
  local path = "/k" .. math.random(0, %(keys)d - 1)
  if method == "PUT" then return wrk.format("PUT", path, nil, body) end
  return wrk.format("GET", path)
end
%(response)s
function done(summary, latency, requests)
  local b = 0
  for _, t in ipairs(threads) do b = b + (t:get("bad") or 0) end
  io.write(string.format("JSON {\"p50\": %%f, \"p99\": %%f, \"bad200\": %%d}\n",
    latency:percentile(50) / 1000.0, latency:percentile(99) / 1000.0, b))
end
"""


@dataclass
class WrkResult:
    rps: float          # successful requests/s
    errors: int         # non-2xx + "200 Error:" + socket errors
    p50: float          # ms
    p99: float          # ms
    total: int


def run_wrk(url: str, method: str, conns: int, duration: float, workdir: Path) -> WrkResult:
    script = workdir / f"{method.lower()}.lua"
    script.write_text(LUA % {"method": method, "keys": KEYS,
                             "response": RESPONSE if method == "PUT" else ""})
    proc = subprocess.run(["wrk", "-t", str(min(conns, 2)), "-c", str(conns), "-d",
                           f"{int(duration)}s", "--timeout", "10s", "-s", str(script), url],
                          capture_output=True, text=True, timeout=duration + 60)
    out = proc.stdout
    if " requests in " not in out:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {out} {proc.stderr}")
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    secs = float(re.search(r"requests in ([\d.]+)(m?s)", out).group(1))  # type: ignore[union-attr]
    if re.search(r"requests in [\d.]+ms", out):
        secs /= 1000
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    sock = sum(int(x) for x in m.groups()) if (m := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)) else 0
    # per-thread "bad" counters are not shared with done(); count them in the thread VMs
    j = json.loads(out.split("JSON ", 1)[1].splitlines()[0])
    errors = non2xx + sock + int(j["bad200"])
    return WrkResult((total - non2xx - int(j["bad200"])) / secs, errors, j["p50"], j["p99"],
                     total)


# ------------------------------------------------------------------ the Go demo
GO_DEMO = "cowsql-demo"  # --anchor

class GoDemo:
    def __init__(self, base: Path, tls: TLSConfig | None = None) -> None:
        self.base = base
        self.tls = tls
        base.mkdir(parents=True, exist_ok=True)
        ports = free_ports(6)
        self.apis = [f"127.0.0.1:{p}" for p in ports[:3]]
        self.dbs = [f"127.0.0.1:{p}" for p in ports[3:]]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * 3

    def start(self, i: int) -> None:
        cmd = [GO_DEMO, "--api", self.apis[i], "--db", self.dbs[i],
               "--dir", str(self.base / f"dq{i}")]
        if self.tls is not None:
            cmd += ["--cert", str(self.tls.cert), "--key", str(self.tls.key)]
        if i:
            cmd += ["--join", self.dbs[0]]
        with open(self.base / f"dq{i}.log", "ab") as log:
            self.procs[i] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL)

    def up(self, i: int) -> bool:
        try:
            return request("GET", f"http://{self.apis[i]}/probe", timeout=2)[0] == 200
        except OSError:
            return False

    def admin(self) -> SyncClient:
        return SyncClient(self.dbs, policy=RetryPolicy(deadline=2.0, attempt_timeout=1.0,
                                                       connect_timeout=0.5), tls=self.tls)

    def leader_index(self) -> int | None:
        try:
            with self.admin() as c:
                leader = c.leader()
        except Exception:  # no leader yet
            return None
        return None if leader is None else self.dbs.index(leader.address)

    def voters(self) -> int:
        try:
            with self.admin() as c:
                return sum(1 for n in c.cluster() if n.role == 0)
        except Exception:
            return 0

    def __enter__(self) -> GoDemo:
        self.start(0)
        wait_for(lambda: self.up(0), 30, f"{GO_DEMO} 0")
        for i in (1, 2):
            self.start(i)
        for i in range(3):
            wait_for(lambda i=i: self.up(i), 30, f"{GO_DEMO} {i}")
        wait_for(lambda: self.voters() == 3, 60, f"3 {GO_DEMO} voters")
        return self

    def kill(self, i: int) -> None:
        p = self.procs[i]
        assert p is not None
        p.send_signal(signal.SIGKILL)
        p.wait(10)

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)


# ------------------------------------------------------------------ the runs
@dataclass
class Failover:
    times: list[float] = field(default_factory=list)
    acked: int = 0
    lost: int = 0


def _ok(name: str, status: int, body: bytes) -> bool:
    return 200 <= status < 300 and not body.startswith(b"Error")


def failover_run(apis: list[str], leader: int, kill: Any, res: Failover, tag: str) -> None:
    """Writers on the two survivors; SIGKILL the leader; time to the first acknowledged
    PUT after the kill; then every acknowledged PUT is read back."""
    survivors = [apis[i] for i in range(3) if i != leader]
    acked: list[str] = []
    stop = threading.Event()
    first_after: list[float] = []
    t_kill: list[float] = []

    def writer(w: int) -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            key = f"fo-{tag}-{w}-{seq}"
            sent = time.monotonic()
            try:
                status, _, body = request("PUT", f"http://{survivors[w % 2]}/{key}",
                                          key.encode(), timeout=15)
            except OSError:
                time.sleep(0.005)
                continue
            if _ok(key, status, body):
                acked.append(key)
                if t_kill and sent >= t_kill[0] and not first_after:
                    first_after.append(time.monotonic())
            else:
                time.sleep(0.005)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) >= 20, 30, "writes before the kill")
    # measure from the kill to the first PUT *sent after the kill* that succeeds
    t_kill.append(time.monotonic())
    kill(leader)
    acked_at_kill = len(acked)
    wait_for(lambda: first_after and len(acked) > acked_at_kill + 20, 60, "writes after the kill")
    stop.set()
    for t in threads:
        t.join(30)
    # a PUT in flight at the kill may have been acknowledged just after it: the
    # failover time is when a request sent after the kill first succeeded
    res.times.append(first_after[0] - t_kill[0])
    res.acked += len(acked)
    for key in acked:
        status, _, body = request("GET", f"http://{survivors[0]}/{key}", timeout=15)
        if status != 200 or body.rstrip(b"\n") != key.encode():   # the Go demo adds "\n"
            res.lost += 1


def load_keys(url: str, tls: TLSConfig | None) -> None:
    for i in range(KEYS):
        status, _, body = request("PUT", f"{url}/k{i}", VALUE, tls=tls)
        assert _ok("load", status, body), (status, body[:100])


def go_leader(d: GoDemo) -> int:
    return wait_for(lambda: (lambda i: None if i is None else i + 1)(d.leader_index()), 30,
                    f"{GO_DEMO} leader") - 1


def throughput(targets: dict[str, str], duration: float, repeat: int, workdir: Path,
               tls: TLSConfig | None = None) -> dict[tuple[str, int], dict[str, list[WrkResult]]]:
    """Every (method, connections) cell ``repeat`` times on each cluster (``targets``:
    name -> base URL), back to back and in alternating order, so all see the same
    machine (disk speed here drifts by up to 1.6x within an hour)."""
    for url in targets.values():
        load_keys(url, tls if url.startswith("https:") else None)
    out: dict[tuple[str, int], dict[str, list[WrkResult]]] = {}
    for method in ("GET", "PUT"):
        for c in CONNS:
            cell = out[method, c] = {name: [] for name in targets}
            for r in range(repeat):
                for name in (list(targets) if r % 2 == 0 else list(targets)[::-1]):
                    res = run_wrk(targets[name], method, c, duration, workdir)
                    cell[name].append(res)
                    print(f"  {name:12s} {method} c={c:2d}: {res.rps:8.0f} ok/s  errors "
                          f"{res.errors:6d}  p50 {res.p50:7.2f} ms  p99 {res.p99:7.2f} ms",
                          file=sys.stderr, flush=True)
    return out


def median_run(runs: list[WrkResult]) -> WrkResult:
    return sorted(runs, key=lambda r: r.rps)[len(runs) // 2]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--repeat", type=int, default=3, help="wrk runs per cell and cluster")
    ap.add_argument("--failover-runs", type=int, default=3)
    ap.add_argument("--network-latency", type=float, default=0.025)
    ap.add_argument("--demo-option", action="append", default=[], metavar="ARG",
                    help="extra argument for every demo node, e.g. --demo-option=--busy-poll=0")
    ap.add_argument("--anchor", default="cowsql-demo", choices=("cowsql-demo", "dqlite-demo"))
    ap.add_argument("--tls", action="store_true",
                    help="also measure both demos with a cluster certificate (see the module notes)")
    args = ap.parse_args()
    global GO_DEMO
    GO_DEMO = args.anchor
    if args.repeat < 1 or args.failover_runs < 0 or args.duration < 1:
        ap.error("--duration and --repeat must be >= 1, --failover-runs >= 0")
    for tool in ("wrk", GO_DEMO):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (Debian packages wrk, go-cowsql from bookworm-backports)", file=sys.stderr)
            return 2
    base = Path(tempfile.mkdtemp(prefix="bench-demo-"))
    fo: dict[str, Failover] = {"demo": Failover(), GO_DEMO: Failover()}
    try:
        # throughput: both clusters up (the one not measured is idle), cells interleaved
        tls = make_cert(base / "cert") if args.tls else None
        with contextlib.ExitStack() as stack:
            c = stack.enter_context(DemoCluster(base / "demo", 3, network_latency=args.network_latency,
                                                extra=args.demo_option))
            d = stack.enter_context(GoDemo(base / "dq"))
            targets = {"demo": c.nodes[c.wait_leader()].url, GO_DEMO: f"http://{d.apis[go_leader(d)]}"}
            if tls is not None:
                ct = stack.enter_context(DemoCluster(
                    base / "demo-tls", 3, network_latency=args.network_latency, tls=tls,
                    extra=[*args.demo_option, "--api-tls", "server"]))
                dt = stack.enter_context(GoDemo(base / "dq-tls", tls))
                targets["demo-tls"] = ct.nodes[ct.wait_leader()].url
                targets[GO_DEMO + "-tls"] = f"http://{dt.apis[go_leader(dt)]}"
            results = throughput(targets, args.duration, args.repeat, base, tls)
        # failover: one cluster at a time, a fresh one per run
        for run in range(args.failover_runs):
            with DemoCluster(base / f"demo{run}", 3, network_latency=args.network_latency,
                             extra=args.demo_option) as c:
                failover_run([n.api for n in c.nodes], c.wait_leader(),
                             lambda i, c=c: c.nodes[i].kill(), fo["demo"], f"d{run}")
            with GoDemo(base / f"dq{run}") as d:
                failover_run(d.apis, go_leader(d), d.kill, fo[GO_DEMO], f"q{run}")
            print(f"  failover run {run + 1}: demo {fo['demo'].times[-1]:.3f} s, {GO_DEMO} "
                  f"{fo[GO_DEMO].times[-1]:.3f} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    pairs = [("demo", GO_DEMO)]
    if args.tls:
        pairs += [("demo-tls", "demo"), ("demo-tls", GO_DEMO + "-tls"), (GO_DEMO + "-tls", GO_DEMO)]
    print(f"\nMedian of {args.repeat} runs per cell (by ok/s); a ratio is one median over "
          "the other; per-run ratios pair the back-to-back runs.\n")
    print("| op | conns | cluster | ok/s | errors | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for method in ("GET", "PUT"):
        for conns in CONNS:
            for name, runs in results[method, conns].items():
                m = median_run(runs)
                print(f"| {method} | {conns} | {name} | {m.rps:,.0f} | {m.errors} | "
                      f"{m.p50:.2f} | {m.p99:.2f} |")
    print("\n| op | conns | " + " | ".join(f"{a} / {b}" for a, b in pairs) + " |")
    print("|---|---|" + "---|" * len(pairs))
    for method in ("GET", "PUT"):
        for conns in CONNS:
            cell = results[method, conns]
            out = []
            for a, b in pairs:
                x, y = median_run(cell[a]), median_run(cell[b])
                per = " ".join(f"{p.rps / q.rps:.2f}" if q.rps else "inf"
                               for p, q in zip(cell[a], cell[b], strict=True))
                out.append(f"{x.rps / y.rps if y.rps else float('inf'):.2f} ({per})")
            print(f"| {method} | {conns} | " + " | ".join(out) + " |")
    if not args.failover_runs:
        return 0
    print("\n| cluster | failover median s | min s | max s | runs | acknowledged PUTs | lost |")
    print("|---|---|---|---|---|---|---|")
    for name, f in fo.items():
        print(f"| {name} | {statistics.median(f.times):.3f} | {min(f.times):.3f} | "
              f"{max(f.times):.3f} | {len(f.times)} | {f.acked} | {f.lost} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
