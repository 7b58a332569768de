"""Run a scenario in tests/faults/child.py and return its report (a dict)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_isolated(module: str, args: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`python -m module *args` from the repository root; an engine crash (death by a
    signal) fails the calling test with the child's output and faulthandler dump."""
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode == -signal.SIGSEGV:
        # A finding, not a flaw of the test: libraft 0.22.1 segfaults now and then in an
        # engine thread when a follower's own snapshot completes while it holds back an
        # InstallSnapshot (src/legacy.c takeSnapshotCb reads snapshot_pending after
        # clearing it; docs/consistency.md; reproducer: tests/faults/libraft_snapshot_crash.py).
        steps = [line for line in proc.stderr.splitlines() if "cowsqlpy.testing.nemesis" in line][-5:]
        print(proc.stdout[-8000:], proc.stderr[-20000:], sep="\n")
        pytest.xfail(f"engine SIGSEGV (libraft 0.22.1, snapshot install on restart) in {module} {args}; "
                     f"last nemesis steps: {steps}")
    if proc.returncode < 0:
        pytest.fail(f"the engine process died of signal {-proc.returncode} ({module} {args}):\n"
                    f"{proc.stdout[-8000:]}\n{proc.stderr[-20000:]}", pytrace=False)
    return proc


def run_scenario(tmp_path: Any, **spec: Any) -> dict[str, Any]:
    out = os.path.join(str(tmp_path), "report.json")
    spec.setdefault("save_dir", str(tmp_path))
    proc = run_isolated("tests.faults.child", [json.dumps(spec), out])
    assert proc.returncode == 0 and os.path.exists(out), proc.stdout[-8000:] + proc.stderr[-20000:]
    with open(out) as f:
        report: dict[str, Any] = json.load(f)
    print(report["summary"])
    return report
