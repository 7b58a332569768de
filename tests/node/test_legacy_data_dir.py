"""A libdqlite 1.11.1 data dir (written by Canonical's dqlite-demo) opened by a cowsql 1.15 node:
the rows, the Raft log and a snapshot are read, and the node goes on writing."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

import cowsqlpy
from cowsqlpy.node import Node
from cowsqlpy.testing import wait_for

from ..app.conftest import free_port

DQLITE_DEMO = shutil.which("dqlite-demo")
pytestmark = pytest.mark.skipif(DQLITE_DEMO is None, reason="dqlite-demo (Debian go-dqlite) not installed")

ROWS = 1100  # past the engine's default snapshot threshold (1,024 entries)


def _put(api: str, key: str, value: str) -> None:
    req = urllib.request.Request(f"http://{api}/{key}", data=value.encode(), method="PUT")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.read().strip() == b"done"


def test_cowsql_opens_a_dqlite_1_11_data_dir(tmp_path: Path) -> None:
    api, db = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    assert DQLITE_DEMO is not None
    proc = subprocess.Popen([DQLITE_DEMO, "--api", api, "--db", db, "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _put(api, "k0", "v0") is None, 30, "dqlite-demo up")
        for i in range(1, ROWS):
            _put(api, f"k{i}", f"v{i}")
    finally:
        proc.terminate()
        proc.wait(30)
    data_dir = tmp_path / db
    assert any(p.name.startswith("snapshot-") for p in data_dir.iterdir()), sorted(p.name for p in data_dir.iterdir())
    node_id = int(next(line.split(":", 1)[1] for line in (data_dir / "info.yaml").read_text().splitlines()
                       if line.startswith("ID:")))

    def open_node() -> Node:
        node = Node(node_id, db, data_dir, network_latency=0.02)
        node.start()
        return node

    node = open_node()
    try:
        conn = cowsqlpy.connect([db], database="demo", autocommit=True)
        rows = wait_for(lambda: conn.execute("SELECT key, value FROM model").fetchall(), 20, "the old rows")
        assert dict(rows) == {f"k{i}": f"v{i}" for i in range(ROWS)}
        conn.execute("INSERT INTO model (key, value) VALUES ('cowsql', 'yes')")
        conn.close()
    finally:
        node.close()
    time.sleep(0.1)
    node = open_node()  # and what cowsql wrote beside the old log reads back too
    try:
        conn = cowsqlpy.connect([db], database="demo", autocommit=True)
        count = wait_for(lambda: conn.execute("SELECT count(*) FROM model").fetchone(), 20, "rows after restart")
        assert count == (ROWS + 1,)
        conn.close()
    finally:
        node.close()
