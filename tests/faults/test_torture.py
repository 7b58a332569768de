"""The torture entry point runs, summarises, and exits 0 when nothing was found."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_torture_runs_and_summarises(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cowsqlpy.testing.torture", "--minutes", "0.01", "--run-seconds", "2",
         "--seed", "3", "--scenario", "sql-register", "--save-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "first seed 3" in proc.stdout
    assert "sql-register seed=3:" in proc.stdout and "=== torture summary ===" in proc.stdout
    assert "no anomaly" in proc.stdout


def test_torture_rejects_bad_arguments() -> None:
    proc = subprocess.run([sys.executable, "-m", "cowsqlpy.testing.torture", "--minutes", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "must be positive" in proc.stderr
