"""The KV state machine under faults (tests/faults/kv_machine.py), in a child process."""

from __future__ import annotations

import pytest

from .isolated import run_isolated

pytestmark = pytest.mark.slow


def test_kv_state_machine_under_faults() -> None:
    proc = run_isolated("tests.faults.kv_machine", [], timeout=600)
    print(proc.stdout[-4000:])
    assert proc.returncode == 0, proc.stdout[-20000:] + proc.stderr[-20000:]
