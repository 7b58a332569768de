"""The driver's behaviour tests run a second time on the pure-Python codec twin
(msgpack-python runs its whole suite under both implementations the same way)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_client_suite_on_the_pure_python_codec(tmp_path: Path) -> None:
    env = {**os.environ, "COWSQLPY_PUREPYTHON": "1", "COWSQLPY_REQUIRE_CYTHON": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "t"),
         "tests/client"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "cowsqlpy codec: python" in proc.stdout  # the report header names the twin
