"""Interoperability with the Go shells: go-cowsql's `cowsql` (Debian go-cowsql 1.22) and
Canonical's `dqlite` (Debian go-dqlite 1.11.5)."""

from __future__ import annotations

import os
import subprocess

import pytest

import cowsqlpy
from tests.client.conftest import InProcessCluster

# Our own console script is also called `cowsql`: the Go one is the system's.
SHELLS = {"cowsql": "/usr/bin/cowsql", "dqlite": "/usr/bin/dqlite"}


@pytest.fixture(params=sorted(SHELLS))
def go_shell(request: pytest.FixtureRequest) -> str:
    path = SHELLS[request.param]
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} not installed (Debian go-cowsql from bookworm-backports / go-dqlite)")
    return path


def run_shell(shell: str, servers: list[str], database: str, script: str) -> str:
    proc = subprocess.run(
        [shell, "-s", ",".join(servers), database], input=script, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "Error" not in proc.stdout, proc.stdout
    return proc.stdout


def test_written_by_cowsqlpy_read_by_go_shell_and_back(cluster: InProcessCluster, go_shell: str) -> None:
    database = "interop-" + os.path.basename(go_shell)  # the cluster is shared by the module
    conn = cowsqlpy.connect(cluster.addresses, database=database, autocommit=True)
    conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER, b BLOB)")
    conn.executemany("INSERT INTO t VALUES (?, ?, ?)", [(f"py-{i}", i, bytes([i])) for i in range(5)])

    out = run_shell(go_shell, cluster.addresses, database, "SELECT k, v FROM t ORDER BY v;\n")
    prompt = os.path.basename(go_shell) + "> "
    assert [line.split("|")[-2:] for line in out.replace(prompt, "").split() if "|" in line] == [
        [f"py-{i}", str(i)] for i in range(5)
    ]

    run_shell(
        go_shell,
        [cluster.nodes[2].address],  # the Go client finds the leader from a follower too
        database,
        "INSERT INTO t (k, v) VALUES ('go-1', 100);\nUPDATE t SET v = v + 1000 WHERE k = 'py-0';\n",
    )
    rows = conn.execute("SELECT k, v FROM t WHERE v >= 100 ORDER BY k").fetchall()
    assert rows == [("go-1", 100), ("py-0", 1000)]
    conn.close()
