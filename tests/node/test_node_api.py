"""Node options, lifecycle, dial callback, resource use and bad input."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import cowsqlpy
from cowsqlpy import protocol
from cowsqlpy.errors import NodeError, NodeStateError
from cowsqlpy.node import (
    DEFAULT_CHECKPOINT_THRESHOLD,
    Node,
    SnapshotParams,
    default_dial,
    engine_version,
    generate_id,
)
from cowsqlpy.testing import form_cluster, wait_for
from tests import rawwire


def test_engine_version_and_ids() -> None:
    assert engine_version() >= 11000
    ids = {generate_id("127.0.0.1:9001") for _ in range(20)}
    assert len(ids) == 20 and all(0 < i < 1 << 64 for i in ids)


def test_abstract_socket_bind_address_read_back(make_node: Callable[..., Node], tmp_path: Path) -> None:
    node = Node(1, f"@cowsqlpy-test-{os.getpid()}", tmp_path / "abs", bind_address="@", network_latency=0.02)
    try:
        node.start()
        bound = node.bind_address
        assert bound.startswith("@") and len(bound) > 1
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect("\0" + bound[1:])
            s.sendall(b"\1" + b"\0" * 7 + rawwire.codec.encode_request(protocol.LEADER))
            reader = rawwire.codec.FrameReader()
            while (frame := reader.next_frame()) is None:
                reader.feed(s.recv(4096))
            assert rawwire.codec.decode_response(*frame)[0] in (0, 1)
    finally:
        node.close()


def test_port_zero_is_resolved(make_node: Callable[..., Node]) -> None:
    node = make_node(1)
    assert not node.address.endswith(":0")
    node.start()
    assert node.bind_address == node.address


def test_options_are_applied_and_frozen_while_running(make_node: Callable[..., Node]) -> None:
    node = make_node(1, failure_domain=7, snapshot_params=SnapshotParams(64, 128))
    node.start()
    wait_for(lambda: rawwire.leader(node.address)[0] == 1)
    assert rawwire.must(node.address, protocol.DESCRIBE, 0) == (7, 0)
    for name, value in [
        ("bind_address", "127.0.0.1:1"),
        ("network_latency", 0.1),
        ("failure_domain", 1),
        ("snapshot_params", (1, 2)),
        ("checkpoint_threshold", 50),
        ("dial", default_dial()),
    ]:
        with pytest.raises(NodeStateError, match=name):
            setattr(node, name, value)
    node.stop()
    node.failure_domain = 9  # allowed again once stopped
    node.start()
    wait_for(lambda: rawwire.leader(node.address)[0] == 1)
    assert rawwire.must(node.address, protocol.DESCRIBE, 0) == (9, 0)


def _wal_frames(node: Node, database: str, commits: int) -> int:
    """Frames in the node's WAL after ``commits`` one-row commits (from a DUMP)."""
    conn = cowsqlpy.connect([node.address], database=database, autocommit=True)
    try:
        conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
        for i in range(commits):
            conn.execute("INSERT OR REPLACE INTO t VALUES (?, randomblob(100))", (i % 10,))
    finally:
        conn.close()
    admin = cowsqlpy.SyncClient([node.address])
    try:
        wal = admin.dump(database)[database + "-wal"]
    finally:
        admin.close()
    return (len(wal) - 32) // (24 + 4096) if wal else 0


def test_checkpoint_threshold_keeps_the_wal_short(make_node: Callable[..., Node]) -> None:
    short = make_node(1, "short", checkpoint_threshold=16)
    default = make_node(1, "default", checkpoint_threshold=None)
    assert make_node(2).checkpoint_threshold == DEFAULT_CHECKPOINT_THRESHOLD
    for node in (short, default):
        node.start()
        wait_for(lambda n=node: rawwire.leader(n.address)[0] == 1)
    assert short.checkpoint_threshold_applied and not default.checkpoint_threshold_applied
    # each commit adds one or two frames: 16 (+ one commit's) at most vs all of them
    assert 0 < _wal_frames(short, "short", 60) <= 18
    assert _wal_frames(default, "default", 60) >= 60


def test_checkpoint_threshold_is_written_only_over_the_known_layout(tmp_path: Path) -> None:
    """The helper writes into the engine's private config only when every field
    around it holds what cowsql_node_create put there (here: a node never started)."""
    from cowsqlpy.node import _engine

    ffi, lib = _engine().ffi, _engine().lib
    out = ffi.new("cowsql_node **")
    assert lib.cowsql_node_create(5, b"127.0.0.1:9", str(tmp_path).encode(), out) == 0
    try:
        assert lib.cowsqlpy_set_checkpoint_threshold(out[0], 6, b"127.0.0.1:9", 7) == 1  # wrong id
        assert lib.cowsqlpy_set_checkpoint_threshold(out[0], 5, b"127.0.0.1:8", 7) == 1  # wrong address
        assert lib.cowsqlpy_set_checkpoint_threshold(out[0], 5, b"127.0.0.1:9", 7) == 0
        assert lib.cowsqlpy_set_checkpoint_threshold(out[0], 5, b"127.0.0.1:9", 100) == 0
    finally:
        lib.cowsql_node_destroy(out[0])


def test_dial_is_used_for_raft_and_failures_are_survived(make_node: Callable[..., Node]) -> None:
    dial_ok = default_dial()
    state = {"mode": "ok", "calls": 0}
    lock = threading.Lock()

    def dial(address: str) -> socket.socket:
        with lock:
            state["calls"] += 1
            mode = state["mode"]
        if mode == "raise":
            raise OSError("injected dial failure")
        if mode == "garbage":
            return "not a socket"  # type: ignore[return-value]
        return dial_ok(address)

    nodes = [make_node(i, dial=dial) for i in (1, 2, 3)]
    for n in nodes:
        n.start()
    form_cluster(nodes)
    assert sum(n.dial_calls for n in nodes) >= 2  # the leader dialled both followers

    for mode in ("raise", "garbage"):
        state["mode"] = mode
        before = state["calls"]
        nodes[0].stop()  # forces the others to dial each other for an election
        wait_for(lambda b=before: state["calls"] > b + 2, what=f"dial attempts in mode {mode}")
        # No crash; the survivors are up and answer requests.
        for n in nodes[1:]:
            assert rawwire.leader(n.address) is not None
        state["mode"] = "ok"
        new = wait_for(lambda: rawwire.leader(nodes[1].address)[0], what="election after dial recovers")
        assert new in (2, 3)
        nodes[0].start()
        wait_for(lambda: rawwire.leader(nodes[0].address)[0] in (2, 3), what="old leader rejoins")


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_start_stop_cycles_do_not_leak(make_node: Callable[..., Node]) -> None:
    node = make_node(1)
    node.start()  # warm-up: the engine's shared thread pool is created once per process
    node.stop()
    fds, threads = _fd_count(), threading.active_count()
    native_threads = len(os.listdir("/proc/self/task"))
    for _ in range(50):
        node.start()
        node.stop()
    assert _fd_count() == fds
    assert threading.active_count() == threads
    assert len(os.listdir("/proc/self/task")) == native_threads


@pytest.mark.parametrize("bad_id", [0, -1, 1 << 64])
def test_bad_id(bad_id: int, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="node id"):
        Node(bad_id, "127.0.0.1:9001", tmp_path)


def test_id_wrong_type(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        Node("1", "127.0.0.1:9001", tmp_path)  # type: ignore[arg-type]


@pytest.mark.parametrize("address", ["", "localhost", "127.0.0.1:", "127.0.0.1:99999", "a b:1", "@", "host:port"])
def test_bad_address(address: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="address|socket"):
        Node(1, address, tmp_path)


def test_data_dir_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError):
        Node(1, "127.0.0.1:9001", blocker / "sub")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into a read-only dir")
def test_data_dir_not_writable(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(PermissionError):
        Node(1, "127.0.0.1:9001", ro)


def test_address_in_use(make_node: Callable[..., Node]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        node = make_node(1)
        node.bind_address = f"127.0.0.1:{port}"
        with pytest.raises(NodeError, match="bind|start"):
            node.start()
        assert not node.running
    node.start()  # works once the port is free (same object, same options)
    assert node.running


@pytest.mark.parametrize(
    "option,value,exc",
    [
        ("network_latency", 0, ValueError),
        ("network_latency", "1s", TypeError),
        ("failure_domain", -1, ValueError),
        ("snapshot_params", (0, 10), ValueError),
        ("snapshot_params", (100, 10), ValueError),
        ("checkpoint_threshold", 0, ValueError),
        ("checkpoint_threshold", 2.5, ValueError),
        ("dial", 42, TypeError),
        ("bind_address", "nonsense", ValueError),
    ],
)
def test_bad_options(option: str, value: object, exc: type[Exception], tmp_path: Path) -> None:
    with pytest.raises(exc):
        Node(1, "127.0.0.1:9001", tmp_path, **{option: value})  # type: ignore[arg-type]


def test_lifecycle_errors(make_node: Callable[..., Node]) -> None:
    node = make_node(1)
    with pytest.raises(NodeStateError):
        node.stop()
    node.start()
    with pytest.raises(NodeStateError):
        node.start()
    node.close()
    node.close()
    with pytest.raises(NodeStateError):
        node.start()
    with pytest.raises(NodeStateError):
        node.stop()


def test_context_manager(tmp_path: Path) -> None:
    with Node(1, "127.0.0.1:0", tmp_path, network_latency=0.02) as node:
        assert node.running
        wait_for(lambda: rawwire.leader(node.address)[0] == 1)
    assert not node.running


CLIENT_SIDE_IMPORTS = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "cowsqlpy._engine":
            raise ImportError("libcowsql.so.0: cannot open shared object file (simulated)")
sys.meta_path.insert(0, Block())
import cowsqlpy, cowsqlpy.errors, cowsqlpy.codec, cowsqlpy.protocol, cowsqlpy.versions
for optional in ("cowsqlpy.client", "cowsqlpy.dbapi", "cowsqlpy.store", "kvstore"):
    try:
        importlib = __import__("importlib")
        importlib.import_module(optional)
    except ModuleNotFoundError as e:
        if e.name != optional:
            raise
assert "cowsqlpy._engine" not in sys.modules
from cowsqlpy.node import Node
from cowsqlpy.errors import EngineUnavailableError
try:
    Node(1, "127.0.0.1:9001", sys.argv[1]).start()
except EngineUnavailableError as e:
    assert "libcowsql-dev" in str(e) and "bookworm-backports" in str(e), e
    print("OK")
"""


def test_client_side_imports_without_engine(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CLIENT_SIDE_IMPORTS, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "OK"
