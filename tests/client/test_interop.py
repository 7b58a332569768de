"""Interoperability with Canonical's Go tools (Debian go-dqlite): the `dqlite` shell."""

from __future__ import annotations

import shutil
import subprocess

import pytest

import cowsqlpy
from tests.client.conftest import InProcessCluster

DQLITE = shutil.which("dqlite")
pytestmark = pytest.mark.skipif(DQLITE is None, reason="Debian package go-dqlite (dqlite shell) not installed")


def dqlite_shell(servers: list[str], database: str, script: str) -> str:
    proc = subprocess.run(
        [DQLITE, "-s", ",".join(servers), database], input=script, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "Error" not in proc.stdout, proc.stdout
    return proc.stdout


def test_written_by_cowsqlpy_read_by_go_shell_and_back(cluster: InProcessCluster) -> None:
    conn = cowsqlpy.connect(cluster.addresses, database="interop", autocommit=True)
    conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER, b BLOB)")
    conn.executemany("INSERT INTO t VALUES (?, ?, ?)", [(f"py-{i}", i, bytes([i])) for i in range(5)])

    out = dqlite_shell(cluster.addresses, "interop", "SELECT k, v FROM t ORDER BY v;\n")
    assert [line.split("|")[-2:] for line in out.replace("dqlite> ", "").split() if "|" in line] == [
        [f"py-{i}", str(i)] for i in range(5)
    ]

    dqlite_shell(
        [cluster.nodes[2].address],  # the Go client finds the leader from a follower too
        "interop",
        "INSERT INTO t (k, v) VALUES ('go-1', 100);\nUPDATE t SET v = v + 1000 WHERE k = 'py-0';\n",
    )
    rows = conn.execute("SELECT k, v FROM t WHERE v >= 100 ORDER BY k").fetchall()
    assert rows == [("go-1", 100), ("py-0", 1000)]
    conn.close()
