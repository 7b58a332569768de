"""The engine behind the front on an abstract Unix socket ('@name'), as go-cowsql binds it:
the front (same process) gets through, while cowsql refuses connections to that socket
from any other process, so the unguarded engine is out of reach of local users too."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import cowsqlpy
from cowsqlpy.front import Front
from cowsqlpy.node import BOOTSTRAP_ID, Node, engine_features


@pytest.fixture
def abstract_node(tmp_path: Path) -> Iterator[tuple[Node, Front]]:
    internal = f"@cowsqlpy-internal-{os.getpid()}-{tmp_path.name}"
    front = Front("127.0.0.1:0", internal, engine_features())
    front.start()
    node = Node(
        BOOTSTRAP_ID, front.address, tmp_path / "n", bind_address=internal, network_latency=0.02
    )
    try:
        node.start()
        yield node, front
    finally:
        node.close()
        front.stop()


def test_the_front_reaches_an_abstract_engine_socket_other_processes_do_not(
    abstract_node: tuple[Node, Front],
) -> None:
    node, front = abstract_node
    conn = cowsqlpy.connect(front.address, database="abs", autocommit=True)
    try:
        assert conn.cursor().execute("SELECT 40 + 2").fetchall() == [(42,)]
    finally:
        conn.close()
    probe = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        f"s.connect({chr(0) + node.bind_address[1:]!r})\n"
        "s.settimeout(5)\n"
        "try:\n"
        "    s.sendall((1).to_bytes(8, 'little') + bytes([1, 0, 0, 0, 0, 0, 0, 0]) + bytes(8))\n"
        "    sys.exit(0 if s.recv(100) else 3)\n"
        "except OSError:\n"
        "    sys.exit(3)\n"
    )
    assert subprocess.run([sys.executable, "-c", probe], timeout=30).returncode == 3
