"""A/B benchmark of the demo: another tree's ``python -m demo`` (a git worktree of an
older commit) against this one's, both 3-node clusters up at once, wrk alternating
between them cell by cell, so both see the same machine. Reports each side's median
and the per-pair ratios (this tree / the other).

    git worktree add /tmp/old <commit> && cp cowsqlpy/*.so /tmp/old/cowsqlpy/
    .venv/bin/python bench/bench_demo_ab.py --other /tmp/old [--repeat 3] [--duration 3]

(the compiled modules are copied when the native code did not change between the two;
otherwise build the other tree in place.)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cowsqlpy.testing import wait_for
from demo.testing import request
from kvstore.testing import free_ports

ROOT = str(Path(__file__).resolve().parents[1])
KEYS = 1000
LUA = {"GET": 'request = function() return wrk.format("GET", "/k" .. math.random(0,999)) end',
       "PUT": 'request = function() return wrk.format("PUT", "/k" .. math.random(0,999), nil, '
              'string.rep("v", 128)) end'}


def start(tree: str, base: Path, n: int = 3) -> tuple[list[subprocess.Popen[bytes]], str]:
    """``n`` demo nodes of ``tree``; returns them and the leader's API address."""
    base.mkdir(parents=True)
    ports = free_ports(2 * n)
    apis = [f"127.0.0.1:{p}" for p in ports[:n]]
    procs = []
    for i in range(n):
        cmd = [sys.executable, "-m", "demo", "--api", apis[i], "--db", f"127.0.0.1:{ports[n + i]}",
               "--dir", str(base / f"n{i}")]
        if i:
            cmd += ["--join", f"127.0.0.1:{ports[n]}"]
        with open(base / f"n{i}.log", "wb") as log:
            procs.append(subprocess.Popen(cmd, cwd=tree, env=dict(os.environ, PYTHONPATH=tree),
                                          stdout=log, stderr=subprocess.STDOUT))

        def up(api: str = apis[i]) -> bool:
            try:
                return request("GET", f"http://{api}/_health", timeout=2)[0] == 200
            except OSError:
                return False
        wait_for(up, 60, f"{tree} node {i}")

    def cluster() -> dict[str, object]:
        return json.loads(request("GET", f"http://{apis[0]}/_cluster")[2])

    wait_for(lambda: sum(nd["role"] == "voter" for nd in cluster()["nodes"]) == n,  # type: ignore[attr-defined]
             60, "voters")
    leader = wait_for(lambda: next((nd["api"] for nd in cluster()["nodes"] if nd["leader"]), None),  # type: ignore[attr-defined]
                      30, "a leader")
    for k in range(KEYS):
        request("PUT", f"http://{leader}/k{k}", b"v" * 128)
    return procs, str(leader)


def wrk(api: str, method: str, conns: int, duration: int, base: Path) -> float:
    lua = base / f"{method}.lua"
    lua.write_text(LUA[method])
    out = subprocess.run(["wrk", "-t", str(min(conns, 2)), "-c", str(conns), "-d", f"{duration}s",
                          "-s", str(lua), f"http://{api}"], capture_output=True, text=True,
                         timeout=duration + 60).stdout
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        raise RuntimeError(f"{m.group(1)} failed requests: {out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--other", required=True, help="the other tree (a worktree with its build)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--duration", type=int, default=3)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-demo-ab-"))
    sides = {}
    try:
        sides["other"] = start(os.path.abspath(args.other), base / "other")
        sides["this"] = start(ROOT, base / "this")
        print(f"load average at start: {os.getloadavg()}", flush=True)
        print("| op | conns | other ok/s | this ok/s | this / other | per-pair ratios |")
        print("|---|---|---|---|---|---|")
        for method in ("GET", "PUT"):
            for conns in (1, 8, 32):
                runs: dict[str, list[float]] = {"other": [], "this": []}
                for r in range(args.repeat):
                    for side in (("other", "this") if r % 2 == 0 else ("this", "other")):
                        runs[side].append(wrk(sides[side][1], method, conns, args.duration, base))
                a, b = statistics.median(runs["other"]), statistics.median(runs["this"])
                pairs = " ".join(f"{y / x:.2f}" for x, y in zip(runs["other"], runs["this"], strict=True))
                print(f"| {method} | {conns} | {a:,.0f} | {b:,.0f} | {b / a:.2f} | {pairs} |", flush=True)
        print(f"load average at end: {os.getloadavg()}", flush=True)
    finally:
        for procs, _ in sides.values():
            for p in procs:
                p.kill()
                p.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
