"""Raft pipes without TLS leave the front's event loop: `relay_sockets` (C, no GIL) moves
their bytes. The relay on socket pairs (every byte in order both ways, an end closes both,
`stop` ends it) and a 3-node cluster whose Raft runs through plain fronts."""

from __future__ import annotations

import os
import secrets
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cowsqlpy
from cowsqlpy import protocol as P
from cowsqlpy.client import SyncClient
from cowsqlpy.front import Front
from cowsqlpy.node import Node, relay_sockets
from cowsqlpy.testing import transfer_leadership, wait_for

from .conftest import fronted_cluster


class Relay:
    """`relay_sockets` between two socket pairs on a thread: `left` and `right` are the
    outer ends, the inner ends belong to the relay."""

    def __init__(self) -> None:
        self.left, inner_left = socket.socketpair()
        self.right, inner_right = socket.socketpair()
        self.stop_r, self.stop_w = os.pipe()
        self.result: list[int] = []
        self.thread = threading.Thread(
            target=lambda: self.result.append(
                relay_sockets(inner_left.detach(), inner_right.detach(), self.stop_r)
            ),
            daemon=True,
        )
        self.thread.start()

    def close(self) -> None:
        os.write(self.stop_w, b"x")
        self.thread.join(5.0)
        for s in (self.left, self.right):
            s.close()
        os.close(self.stop_r)
        os.close(self.stop_w)


@pytest.fixture
def relay() -> Iterator[Relay]:
    r = Relay()
    yield r
    r.close()


def _receive(sock: socket.socket, size: int) -> bytes:
    got = bytearray()
    while len(got) < size:
        chunk = sock.recv(size - len(got))
        assert chunk, f"closed after {len(got)} of {size} bytes"
        got += chunk
    return bytes(got)


@settings(max_examples=15, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(min_value=1, max_value=600_000)),
        min_size=1,
        max_size=6,
    )
)
def test_every_byte_arrives_in_order_both_ways(sends: list[tuple[bool, int]]) -> None:
    r = Relay()
    try:
        for to_right, size in sends:
            data = secrets.token_bytes(size)
            src, dst = (r.left, r.right) if to_right else (r.right, r.left)
            # Sizes past the socket buffers: the relay must hold what it cannot write yet.
            sender = threading.Thread(target=src.sendall, args=(data,))
            sender.start()
            assert _receive(dst, size) == data
            sender.join()
    finally:
        r.close()
    assert r.result == [0]


@pytest.mark.parametrize("closing", ["left", "right"])
def test_an_end_that_closes_closes_the_other(relay: Relay, closing: str) -> None:
    gone, other = (relay.left, relay.right) if closing == "left" else (relay.right, relay.left)
    gone.sendall(b"last words")
    gone.shutdown(socket.SHUT_RDWR)
    assert _receive(other, 10) == b"last words"
    assert other.recv(1) == b""  # end of stream, not a hang
    relay.thread.join(5.0)
    assert relay.result == [0]


def test_stop_ends_an_idle_relay(relay: Relay) -> None:
    os.write(relay.stop_w, b"x")
    relay.thread.join(5.0)
    assert not relay.thread.is_alive() and relay.result == [0]
    assert relay.left.recv(1) == b"" and relay.right.recv(1) == b""


@pytest.fixture(params=[True, False], ids=["native", "loop"])
def plain_cluster(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[list[tuple[Node, Front]]]:
    def internal(i: int) -> str:
        return f"@cowsqlpy-relay-test-{os.getpid()}-{i}-{secrets.token_hex(4)}"

    with fronted_cluster(tmp_path, internal, native_relay=request.param) as made:
        yield made


def test_raft_runs_through_plain_fronts(
    plain_cluster: list[tuple[Node, Front]], request: pytest.FixtureRequest
) -> None:
    """With the C relay (the default) and with `native_relay=False` (the loop's pipes)."""
    addresses = [front.address for _, front in plain_cluster]
    with SyncClient(addresses) as client:
        wait_for(lambda: client.leader() is not None, 10.0, "a leader")
        for node, front in plain_cluster[1:]:
            client.add(node.id, front.address, P.VOTER)
        conn = cowsqlpy.connect(addresses, database="relay", autocommit=True)
        try:
            cur = conn.cursor()
            cur.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, v BLOB)")
            # Rows past the relay's buffer too, so an append is more than one read.
            cur.executemany("INSERT INTO t VALUES (?, ?)", [(n, bytes(300_000)) for n in range(5)])
            # The target may still be catching up: the engine refuses until it has.
            transfer_leadership(client, plain_cluster[2][0].id)
            wait_for(
                lambda: (
                    (leader := client.leader()) is not None and leader.id == plain_cluster[2][0].id
                ),
                10.0,
                "the new leader",
            )
            cur.execute("INSERT INTO t VALUES (5, x'00')")  # through the new leader's Raft
            cur.execute("SELECT count(*) FROM t")
            assert cur.fetchone() == (6,)
        finally:
            conn.close()
    fronts = [front for _, front in plain_cluster]
    assert all(f.stats.pipes >= 1 for f in fronts)
    native = request.node.callspec.params["plain_cluster"]
    assert all(f.stats.native_pipes == (f.stats.pipes if native else 0) for f in fronts)
    assert bool(_relay_threads()) == native  # the pipes are still up
    for front in fronts:
        front.stop()
    assert _relay_threads() == []  # stop() ended and joined them
    assert all(f.stats.open == 0 for f in fronts)


def _relay_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "cowsqlpy-relay"]
