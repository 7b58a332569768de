"""Crash durability of the demo's HTTP API: SIGKILL during heavy writes, restart on the
same data dir, and no acknowledged PUT lost.

Two kinds of cycle, each during a steady load of PUTs of unique keys through every
node (``WRITERS`` threads):

* ``kill``: SIGKILL one node (the leader or, as the seed draws, a follower), let the
  others take writes, start it again on its dir and wait until it serves;
* ``power``: the nodes' dirs live on a `LazyMount`; SIGKILL every node, then drop
  what the filesystem had not fsynced (`LazyMount.crash`), start them all again.

At the end every acknowledged key is read back through every node. Run from pytest
(tests/faults/test_crash_durability.py, a few cycles) or for long:

    python -m tests.faults.crash_durability --cycles 20 [--seed N] [--power-loss] [--dir D]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cowsqlpy.testing import wait_for
from cowsqlpy.testing.lazyfs import LazyMount
from demo.testing import DemoCluster, request

WRITERS = 4
BEFORE_CRASH = 40  # PUTs acknowledged in a cycle before its crash: the crash hits a loaded cluster
AFTER_RESTART = 20  # ... and after the restart, before the next cycle


class PutLoad:
    """Writer threads that PUT ``key -> key`` (unique keys) round-robin over the running nodes."""

    def __init__(self, demo: DemoCluster, prefix: str = "c") -> None:
        self.demo, self.prefix = demo, prefix
        self.acked: list[str] = []
        self.answers: Counter[str] = Counter()  # HTTP status or "no answer"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(w,), daemon=True) for w in range(WRITERS)
        ]
        for t in self._threads:
            t.start()

    def _run(self, w: int) -> None:
        seq = 0
        while not self._stop.is_set():
            seq += 1
            key = f"{self.prefix}/{w}/{seq:07d}"
            up = [n for n in self.demo.nodes if n.running]
            if not up:
                time.sleep(0.01)
                continue
            node = up[seq % len(up)]
            try:
                status, _, _ = request("PUT", f"{node.url}/{key}", key.encode(), timeout=15)
            except OSError:
                status = 0
            with self._lock:
                self.answers["no answer" if status == 0 else str(status)] += 1
                if status in (200, 201):
                    self.acked.append(key)
            if status not in (200, 201):
                time.sleep(0.01)  # a node down or no leader: do not spin

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def wait_more(self, n: int, what: str, timeout: float = 60.0) -> None:
        target = self.count() + n
        wait_for(lambda: self.count() >= target, timeout, what)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)


@dataclass
class Report:
    seed: int
    mode: str
    cycles: list[dict[str, Any]] = field(default_factory=list)
    acked: int = 0
    answers: dict[str, int] = field(default_factory=dict)
    lost: dict[int, list[str]] = field(default_factory=dict)  # by node read through
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not any(self.lost.values())

    def summary(self) -> str:
        lost = {i: len(keys) for i, keys in self.lost.items()}
        return (
            f"crash durability ({self.mode}) seed={self.seed}: {len(self.cycles)} cycles, "
            f"{self.acked} acknowledged PUTs, lost per node read through {lost}, "
            f"answers {self.answers}, {self.seconds:.1f} s"
        )


def _listing(demo: DemoCluster, i: int, prefix: str) -> dict[str, str]:
    # the half-open range [prefix/, prefix0): '0' follows '/'
    status, _, body = request(
        "GET", f"{demo.nodes[i].url}/?start={prefix}/&end={prefix}0", timeout=60
    )
    if status != 200:
        raise AssertionError(f"node {i} answered the final listing with {status}: {body[:300]!r}")
    data = json.loads(body)
    assert not data["more"], "the listing was cut"
    return {kv["key"]: kv["value"] for kv in data["kvs"]}


def _restart(demo: DemoCluster, indexes: list[int]) -> float:
    """Start the nodes again on their dirs; seconds until every one serves."""
    t0 = time.monotonic()
    for i in indexes:
        demo.nodes[i].start()
    for i in indexes:
        wait_for(demo.nodes[i].healthy, 90, f"demo node {i} to reopen its dir and serve")
    return time.monotonic() - t0


def run(
    base: Path, cycles: int, seed: int, *, disk: LazyMount | None = None, log: Any = print
) -> Report:
    """`cycles` crash cycles on a fresh 3-node demo cluster in `base` (power losses when
    `disk`, the LazyMount `base` is under, is given); the cluster is closed on return."""
    rng = random.Random(seed)
    report = Report(seed, "power loss" if disk else "SIGKILL")
    t_start = time.monotonic()
    demo = DemoCluster(base, 3)
    load: PutLoad | None = None
    try:
        demo.start()
        load = PutLoad(demo)
        for cycle in range(cycles):
            load.wait_more(BEFORE_CRASH, f"PUTs before crash {cycle}")
            before = load.count()
            entry: dict[str, Any] = {"cycle": cycle}
            if disk is None:
                leader = demo.wait_leader()
                victim = (
                    leader
                    if rng.random() < 0.5
                    else rng.choice([i for i in range(3) if i != leader])
                )
                demo.nodes[victim].kill()
                entry.update(victim=victim, was_leader=victim == leader)
                load.wait_more(AFTER_RESTART, f"PUTs without node {victim}")
                entry["restart_s"] = round(_restart(demo, [victim]), 2)
            else:
                for node in demo.nodes:
                    node.kill()
                dropped = disk.crash()
                entry["dropped_unsynced_bytes"] = dropped["unsynced_pages_bytes"]
                entry["dropped_files"] = sorted(dropped["unsynced_files"])
                entry["restart_s"] = round(_restart(demo, [0, 1, 2]), 2)
            load.wait_more(AFTER_RESTART, f"PUTs after restart {cycle}")
            entry["acked_in_cycle"] = load.count() - before
            report.cycles.append(entry)
            log(f"  cycle {cycle}: {entry}")
        load.stop()
        demo.wait_leader()
        report.acked = load.count()
        report.answers = dict(load.answers)
        for i in range(3):
            present = _listing(demo, i, load.prefix)
            report.lost[i] = [k for k in load.acked if present.get(k) != k]
    finally:
        if load is not None:
            load.stop()
        demo.close()
    report.seconds = time.monotonic() - t_start
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.faults.crash_durability", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None, help="default: random, printed")
    parser.add_argument(
        "--power-loss", action="store_true", help="every cycle a whole-cluster power loss on LazyFS"
    )
    parser.add_argument("--dir", default=None, help="where the cluster goes (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.cycles < 1:
        parser.error("--cycles must be positive")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 2**31)
    base = Path(args.dir or tempfile.mkdtemp(prefix="cowsqlpy-crash-"))
    print(f"crash durability: seed {seed}, {args.cycles} cycles, in {base}", flush=True)
    try:
        if args.power_loss:
            with LazyMount(base / "backing", base / "mnt") as disk:
                report = run(base / "mnt" / "demo", args.cycles, seed, disk=disk)
        else:
            report = run(base / "demo", args.cycles, seed)
    finally:
        if args.dir is None:  # a temp dir of our own
            shutil.rmtree(base, ignore_errors=True)
    print(report.summary(), flush=True)
    for i, keys in report.lost.items():
        if keys:
            print(f"  lost through node {i}: {keys[:10]}", flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
