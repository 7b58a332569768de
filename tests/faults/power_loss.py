"""raft:// (pysyncobj) under a whole-machine power loss: three members in a child process
(tests/faults/raft_power_child.py) with their journals on a `LazyMount`, PUTs until
SIGKILL, the unsynced data dropped, the members reopened and read back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cowsqlpy.testing.lazyfs import LazyMount
from kvstore.testing import free_ports

ROOT = Path(__file__).resolve().parents[2]
CHILD = "tests.faults.raft_power_child"


@dataclass
class RaftPowerLoss:
    acked: int
    survived: int
    lost: int
    write_seconds: float
    dropped_bytes: int
    reopen_error: str  # "" when every member reopened its journal


def raft_power_loss(
    base: Path, *, seconds: float = 3.0, flush: bool = False, disk: LazyMount | None = None
) -> RaftPowerLoss:
    """PUT for `seconds`, SIGKILL, crash `disk` (if given; else `base` is a plain dir:
    a process crash only), reopen and count the acknowledged keys that survived."""
    ports = ",".join(str(p) for p in free_ports(3))
    acked_path = str(base.parent / f"{base.name}.acked")  # beside the mount, never on it
    extra = ["--flush"] if flush else []
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
    )
    writer = subprocess.Popen(
        [sys.executable, "-m", CHILD, "write", str(base), ports, acked_path, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    try:
        assert writer.stdout is not None
        line = writer.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(
                f"raft writer did not start: {line}{writer.stderr.read() if writer.stderr else ''}"
            )
        t0 = time.monotonic()
        time.sleep(seconds)
    finally:
        writer.kill()
        writer.wait(30)
    write_seconds = time.monotonic() - t0
    with open(acked_path) as f:
        acked = set(f.read().split())
    dropped = disk.crash()["unsynced_pages_bytes"] if disk is not None else 0
    reader = subprocess.run(
        [sys.executable, "-m", CHILD, "read", str(base), ports, acked_path, *extra],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    if reader.returncode != 0:
        error = (reader.stderr.strip().splitlines() or ["?"])[-1]
        return RaftPowerLoss(len(acked), 0, len(acked), write_seconds, dropped, error)
    survived = set(json.loads(reader.stdout.splitlines()[-1]))
    return RaftPowerLoss(
        len(acked), len(acked & survived), len(acked - survived), write_seconds, dropped, ""
    )
