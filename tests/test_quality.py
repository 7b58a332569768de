"""Lint, type check and the compiled codec's stub run in the suite and can fail it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


def test_ruff() -> None:
    proc = run("ruff", "check", "cowsqlpy", "kvstore", "demo", "fusefs", "tests", "bench")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy() -> None:
    proc = run("mypy")  # packages and settings from pyproject.toml
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cython_stub_matches_module() -> None:
    proc = run("mypy.stubtest", "cowsqlpy._ccodec")
    assert proc.returncode == 0, proc.stdout + proc.stderr
