"""COWSQLPY_TRACE=client logs every request and response of the wire layer."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.client.conftest import InProcessCluster

SCRIPT = """
import logging, sys
logging.basicConfig(level=logging.DEBUG, stream=sys.stdout, format="%(name)s %(message)s")
import cowsqlpy
conn = cowsqlpy.connect(sys.argv[1].split(","), database="traced", autocommit=True)
conn.execute("SELECT 40 + 2").fetchone()
conn.close()
"""


def run(addresses: list[str], trace: str) -> str:
    env = {**os.environ, "COWSQLPY_TRACE": trace}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, ",".join(addresses)], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_trace_client_logs_requests_and_responses(cluster: InProcessCluster) -> None:
    out = run(cluster.addresses, "client")
    assert "cowsqlpy.wire" in out
    assert "-> QUERY_SQL" in out and "SELECT 40 + 2" in out
    assert "<- ROWS" in out
    assert "-> QUERY_SQL" not in run(cluster.addresses, "")
