"""The version table's row for the embedded engine, proven against a real node.

Each case sends one guarded input to a fresh node in a child process
(``python -m cowsqlpy node``), then checks whether the node survived (it still
answers and still writes). The row in `cowsqlpy.versions` says what to expect;
a guard the engine no longer needs, or a crash the row does not know of, fails
here, so the table cannot drift from the engine.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cowsqlpy import codec, protocol
from cowsqlpy.cli import READY_PREFIX
from cowsqlpy.node import engine_features
from cowsqlpy.versions import EngineFeatures

from .. import rawwire

FEATURES = engine_features()


class ChildNode:
    def __init__(self, tmp: Path, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cowsqlpy", "node", "--address", "127.0.0.1:0", "--dir", str(tmp / "node"),
             "--network-latency", "0.02", "--log-level", "WARNING", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith(READY_PREFIX):
            self.proc.kill()
            raise AssertionError(f"node did not start: {line!r} {self.proc.stderr.read() if self.proc.stderr else ''}")
        self.address = line.split("address=")[1].split()[0]

    def session(self) -> rawwire.Session:
        s = rawwire.Session(self.address, timeout=3.0)
        s.must(protocol.OPEN, "guards")
        return s

    def alive(self) -> bool:
        """Still running, and it answers a write and a read on a new connection."""
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with self.session() as s:
                    s.must(protocol.EXEC_SQL, 0, "CREATE TABLE IF NOT EXISTS alive (x)", [])
                    s.must(protocol.EXEC_SQL, 0, "INSERT INTO alive VALUES (1)", [])
                    return True
            except (OSError, EOFError, AssertionError):
                time.sleep(0.1)
        return False

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ChildNode]:
    n = ChildNode(tmp_path)
    yield n
    n.close()


def _raw(sock: socket.socket, rtype: int, body: bytes, words: int | None = None) -> None:
    sock.sendall(struct.pack("<IBBH", len(body) // 8 if words is None else words, rtype, 0, 0) + body)


def _reply_within(sock: socket.socket, seconds: float) -> bytes | None:
    """The first bytes the node sends back, b'' at EOF, None if it stays silent."""
    sock.settimeout(seconds)
    try:
        return sock.recv(65536)
    except TimeoutError:
        return None
    except ConnectionResetError:
        return b""


def _raw_socket(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=3.0)
    sock.sendall(codec.handshake())
    return sock


def _returning(node: ChildNode, how: str) -> None:
    with node.session() as s:
        s.must(protocol.EXEC_SQL, 0, "CREATE TABLE t (id INTEGER PRIMARY KEY, v)", [])
        sql = "INSERT INTO t (v) VALUES (1) RETURNING id"
        if how == "exec_sql":
            s.request(protocol.EXEC_SQL, 0, sql, [])
        elif how == "query_sql":
            s.request(protocol.QUERY_SQL, 0, sql, [])
        elif how == "query_sql_in_tx":
            s.must(protocol.EXEC_SQL, 0, "BEGIN", [])
            s.request(protocol.QUERY_SQL, 0, sql, [])
            s.request(protocol.EXEC_SQL, 0, "COMMIT", [])
        elif how == "prepared_query":
            _, stmt, _ = s.must(protocol.PREPARE, 0, sql)  # type: ignore[misc]
            s.request(protocol.QUERY, 0, stmt, [])
        # the 1.11.1 crash comes with the next write
        s.request(protocol.EXEC_SQL, 0, "INSERT INTO t (v) VALUES (2)", [])


@pytest.mark.parametrize("how", ["exec_sql", "query_sql", "query_sql_in_tx", "prepared_query"])
def test_returning(node: ChildNode, how: str) -> None:
    try:
        _returning(node, how)
    except (OSError, EOFError):
        pass
    # in a transaction the node survives on both engines (the statement fails or is refused)
    assert node.alive() == (FEATURES.returning or how.endswith("_in_tx"))


def test_returning_in_a_transaction_gives_no_rows(node: ChildNode) -> None:
    """Inside BEGIN ... COMMIT the node survives RETURNING, but only 1.15.1+ style engines that
    stream a modifying query's rows could serve it: this row says whether the rows arrive."""
    with node.session() as s:
        s.must(protocol.EXEC_SQL, 0, "CREATE TABLE t (id INTEGER PRIMARY KEY, v)", [])
        s.must(protocol.EXEC_SQL, 0, "BEGIN", [])
        ftype, reply = s.request(protocol.QUERY_SQL, 0, "INSERT INTO t (v) VALUES ('a') RETURNING id, v", [])
        s.request(protocol.EXEC_SQL, 0, "ROLLBACK", [])
    assert (ftype == protocol.ROWS) == FEATURES.returning, reply
    assert node.alive()


@pytest.mark.parametrize("fmt", [1, 2, 255])
def test_describe_formats(node: ChildNode, fmt: int) -> None:
    with _raw_socket(node.address) as sock:
        _raw(sock, protocol.DESCRIBE, struct.pack("<Q", fmt))
        _reply_within(sock, 1.0)
    assert node.alive() == (fmt in FEATURES.describe_formats)


def test_heartbeat(node: ChildNode) -> None:
    """Answered (FAILURE "unrecognized request type") on cowsql, silent on 1.11."""
    with _raw_socket(node.address) as sock:
        _raw(sock, protocol.HEARTBEAT, struct.pack("<Q", 0))
        answered = bool(_reply_within(sock, 1.0))
    assert answered == FEATURES.heartbeat
    assert node.alive()


@pytest.mark.parametrize("rtype", [11 + 100, 99, 255])
def test_unknown_request_type(node: ChildNode, rtype: int) -> None:
    with _raw_socket(node.address) as sock:
        _raw(sock, rtype, struct.pack("<Q", 0))
        reply = _reply_within(sock, 1.0)
    failed = bool(reply) and reply[4] == protocol.FAILURE  # type: ignore[index]
    assert failed == FEATURES.unknown_request_fails
    assert node.alive()


def test_cluster_format_probe(node: ChildNode) -> None:
    """CLUSTER format 2 tells the engines apart without harm: 1.11 answers it as format 1."""
    with _raw_socket(node.address) as sock:
        _raw(sock, protocol.CLUSTER, struct.pack("<Q", 2))
        reply = _reply_within(sock, 1.0)
    assert reply, "no reply"
    assert (reply[4] == protocol.FAILURE) == FEATURES.unknown_cluster_format_fails
    assert node.alive()


def test_finalize_twice(node: ChildNode) -> None:
    try:
        with node.session() as s:
            _, low, _ = s.must(protocol.PREPARE, 0, "SELECT 1")  # type: ignore[misc]
            s.must(protocol.PREPARE, 0, "SELECT 2")  # a higher id stays live
            s.must(protocol.FINALIZE, 0, low)
            s.request(protocol.FINALIZE, 0, low)
    except (OSError, EOFError):
        pass
    assert node.alive() == FEATURES.finalize_twice_safe


def _fatal(name: str, value: str | None) -> bool:
    value = "" if value is None else value
    for pragma, values in FEATURES.fatal_pragmas:
        if pragma == name and (not values or value in values):
            return True
    return False


@pytest.mark.parametrize(("name", "value"), [
    ("journal_mode", "delete"), ("journal_mode", "memory"), ("journal_mode", "wal"), ("page_size", "512"),
    ("synchronous", "full"), ("synchronous", "extra"), ("synchronous", "normal"), ("synchronous", "off"),
    ("wal_checkpoint", None), ("cache_size", "10"), ("foreign_keys", "0"), ("user_version", "3"),
])
def test_pragmas(node: ChildNode, name: str, value: str | None) -> None:
    try:
        with node.session() as s:
            s.must(protocol.EXEC_SQL, 0, "CREATE TABLE t (x)", [])
            s.request(protocol.EXEC_SQL, 0, f"PRAGMA {name}" if value is None else f"PRAGMA {name}={value}", [])
            s.request(protocol.EXEC_SQL, 0, "INSERT INTO t VALUES (1)", [])
    except (OSError, EOFError):
        pass
    assert node.alive() == (not _fatal(name, value))


BAD_FRAMES: dict[str, Callable[[socket.socket], None]] = {
    "huge body claimed": lambda s: _raw(s, protocol.WEIGHT, b"\0" * 8, words=0x100D0A07),
    "zero-word body": lambda s: _raw(s, protocol.EXEC_SQL, b"", words=0),
    "random bytes": lambda s: s.sendall(bytes(range(7, 250, 3)) * 4),
}


@pytest.mark.parametrize("case", sorted(BAD_FRAMES))
def test_bad_frames(node: ChildNode, case: str) -> None:
    try:
        with _raw_socket(node.address) as sock:
            BAD_FRAMES[case](sock)
            _reply_within(sock, 1.0)
    except OSError:
        pass
    expected = {"huge body claimed": FEATURES.huge_frame_safe, "zero-word body": FEATURES.empty_body_safe,
                # its first word claims a 2 GiB body too
                "random bytes": FEATURES.huge_frame_safe}
    assert node.alive() == expected[case]


def test_the_row_is_for_this_engine() -> None:
    assert isinstance(FEATURES, EngineFeatures)
    assert FEATURES.name.startswith("cowsql 1.15")


# -- the same inputs to a node run with --guard: it survives every one -----------------------


@pytest.fixture
def guarded_node(tmp_path: Path) -> Iterator[ChildNode]:
    n = ChildNode(tmp_path, "--guard")
    yield n
    n.close()


FATAL_INPUTS: dict[str, Callable[[ChildNode], object]] = {
    "returning in autocommit": lambda n: _returning(n, "exec_sql"),
    "describe format 1": lambda n: _send_raw(n, lambda s: _raw(s, protocol.DESCRIBE, struct.pack("<Q", 1))),
    "a ~2 GiB frame header": lambda n: _send_raw(
        n, lambda s: _raw(s, protocol.WEIGHT, b"\0" * 8, words=0x100D0A07)),
    "random bytes": lambda n: _send_raw(n, BAD_FRAMES["random bytes"]),
    "finalize twice": lambda n: _finalize_twice(n),
    "pragma synchronous=full": lambda n: _pragma(n, "PRAGMA synchronous=full"),
    "bare pragma wal_checkpoint": lambda n: _pragma(n, "PRAGMA wal_checkpoint"),
}


def _send_raw(node: ChildNode, send: Callable[[socket.socket], None]) -> None:
    with _raw_socket(node.address) as sock:
        send(sock)
        _reply_within(sock, 1.0)


def _finalize_twice(node: ChildNode) -> None:
    with node.session() as s:
        _, low, _ = s.must(protocol.PREPARE, 0, "SELECT 1")  # type: ignore[misc]
        s.must(protocol.PREPARE, 0, "SELECT 2")
        s.must(protocol.FINALIZE, 0, low)
        s.request(protocol.FINALIZE, 0, low)


def _pragma(node: ChildNode, sql: str) -> None:
    with node.session() as s:
        s.must(protocol.EXEC_SQL, 0, "CREATE TABLE IF NOT EXISTS t (x)", [])
        s.request(protocol.EXEC_SQL, 0, sql, [])
        s.request(protocol.EXEC_SQL, 0, "INSERT INTO t VALUES (1)", [])


@pytest.mark.parametrize("case", sorted(FATAL_INPUTS))
def test_a_guarded_node_survives(guarded_node: ChildNode, case: str) -> None:
    """`python -m cowsqlpy node --guard`: the front before the engine refuses what the
    version table says this engine cannot take; the node keeps serving."""
    try:
        FATAL_INPUTS[case](guarded_node)
    except (OSError, EOFError):
        pass  # the front may close a connection it will not serve
    assert guarded_node.alive()
