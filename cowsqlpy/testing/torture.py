"""Long randomized runs of every scenario under the nemesis, with a summary.

    python -m cowsqlpy.testing.torture --minutes 30 [--seed 1] [--save-dir DIR]
        [--scenario sql-register --scenario kv-cowsql ...] [--processes]

Each run builds a fresh 3-node cluster (in-process with fault proxies; with
``--processes`` every other run uses node processes for SIGKILL/SIGSTOP, with
the same network faults through relays),
runs one scenario for ``--run-seconds`` under a nemesis seeded with the run's
seed, checks it, and prints one line. Every anomaly is printed with its seed,
the checker's shrunk counter-example and the path of the saved history
(``History.load(path)`` and the checkers re-check it). Exit status 1 if any
run found an anomaly, 2 if a run could not complete (harness error).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from .cluster import Cluster
from .nemesis import NETWORK_FAULTS, PROCESS_FAULTS, Nemesis
from .scenarios import RunReport, kv_workload, sql_bank, sql_list_append, sql_register

__all__ = ["SCENARIOS", "main"]


def _kv(cluster: Cluster, seed: int, **kw: Any) -> RunReport:
    import kvstore

    def open_client(i: int) -> Any:
        addresses = cluster.addresses
        k = i % len(addresses)
        rotated = addresses[k:] + addresses[:k]
        return kvstore.open(f"cowsql://{','.join(rotated)}/kv{seed}?private=1&timeout=6")

    return kv_workload(open_client, seed, name="kv-cowsql", **kw)


SCENARIOS: dict[str, Callable[..., RunReport]] = {
    "sql-register": sql_register,
    "sql-bank": sql_bank,
    "sql-list-append": sql_list_append,
    "kv-cowsql": _kv,
}


def _one(name: str, seed: int, processes: bool, run_seconds: float, save_dir: str) -> RunReport:
    with Cluster(3, processes=processes, fault_proxies=True) as cluster:
        faults = [*NETWORK_FAULTS, *PROCESS_FAULTS, "transfer", "demote"] if processes else None
        nemesis = Nemesis(cluster, seed, faults=faults or [*NETWORK_FAULTS, "kill", "restart", "stop", "transfer", "demote"])
        report = SCENARIOS[name](cluster, seed, duration=run_seconds, nemesis=nemesis, save_dir=save_dir)
        report.name += " (processes)" if processes else ""
        return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cowsqlpy.testing.torture", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, required=True, help="stop starting runs after this long")
    parser.add_argument("--seed", type=int, default=None, help="first run's seed (default: random, printed)")
    parser.add_argument("--run-seconds", type=float, default=20.0, help="workload time per run")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), help="repeatable; default: all")
    parser.add_argument("--processes", action="store_true", help="alternate with node-process clusters (SIGKILL/SIGSTOP)")
    parser.add_argument("--save-dir", default=None, help="where failing histories go (default: a temp dir)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.run_seconds <= 0:
        parser.error("--minutes and --run-seconds must be positive")
    if args.verbose:
        logging.basicConfig(level=logging.INFO)
    else:  # node logs stay in the clusters' log files; keep the terminal to the summary
        logging.getLogger().addHandler(logging.NullHandler())
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big") >> 1
    save_dir = args.save_dir or tempfile.mkdtemp(prefix="cowsqlpy-torture-")
    names = args.scenario or sorted(SCENARIOS)
    print(f"torture: first seed {seed}, {args.minutes} min, scenarios {names}, histories of failures in {save_dir}", flush=True)
    deadline = time.monotonic() + args.minutes * 60
    reports: list[RunReport] = []
    broken: list[str] = []
    run = 0
    while time.monotonic() < deadline:
        name = names[run % len(names)]
        processes = args.processes and (run // len(names)) % 2 == 1
        run_seed = seed + run
        run += 1
        try:
            report = _one(name, run_seed, processes, args.run_seconds, save_dir)
        except Exception:
            broken.append(f"{name} seed={run_seed}: {traceback.format_exc()}")
            print(f"[{run}] {name} seed={run_seed}: HARNESS ERROR\n{traceback.format_exc()}", flush=True)
            continue
        reports.append(report)
        verdict = "ok" if report.ok else "ANOMALY " + ",".join(report.failed)
        print(f"[{run}] {report.name} seed={run_seed}: {report.operations} ops {report.stats} {verdict}", flush=True)
        if not report.ok:
            print(report.summary(), flush=True)
    print(_summary(reports, broken), flush=True)
    return 1 if any(not r.ok for r in reports) else 2 if broken else 0


def _summary(reports: list[RunReport], broken: list[str]) -> str:
    lines = ["", "=== torture summary ==="]
    by_name: dict[str, list[RunReport]] = {}
    for r in reports:
        by_name.setdefault(r.name, []).append(r)
    for name, rs in sorted(by_name.items()):
        bad = [r for r in rs if not r.ok]
        lines.append(f"{name}: {len(rs)} runs, {sum(r.operations for r in rs)} ops, {len(bad)} with anomalies")
    anomalies = [r for r in reports if not r.ok]
    if anomalies:
        lines.append("anomalies (replay: --seed SEED --scenario NAME --minutes 0.1):")
        for r in anomalies:
            lines.append(f"  {r.name} seed={r.seed}: {', '.join(r.failed)}; history {r.history_path}")
    if broken:
        lines.append(f"{len(broken)} runs did not complete (harness errors):")
        lines += ["  " + b.splitlines()[0] for b in broken]
    if not anomalies and not broken:
        lines.append("no anomaly")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
