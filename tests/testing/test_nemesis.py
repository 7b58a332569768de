"""The nemesis and the fault plumbing it adds to the harness."""

from __future__ import annotations

import socket
import time

import pytest

from cowsqlpy.testing import Cluster, FaultProxy, wait_for
from cowsqlpy.testing.faults import dial_via
from cowsqlpy.testing.nemesis import NETWORK_FAULTS, Nemesis


def test_reset_aborts_with_rst_and_heal_resets_holed_links() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    target = f"127.0.0.1:{server.getsockname()[1]}"
    with FaultProxy(target) as proxy:
        host, port = proxy.address.rsplit(":", 1)
        client = socket.create_connection((host, int(port)), timeout=5)
        peer, _ = server.accept()
        peer.settimeout(5)
        wait_for(lambda: proxy.connections == 1, 5, "one link")
        assert proxy.reset() == 1
        with pytest.raises(ConnectionResetError):
            peer.recv(4)
        client.close()
        peer.close()
        # a link that swallowed bytes is reset on heal; an untouched one stays
        clean = socket.create_connection((host, int(port)), timeout=5)
        clean_peer, _ = server.accept()
        wait_for(lambda: proxy.connections == 1, 5, "the clean link")
        proxy.drop()
        holed = socket.create_connection((host, int(port)), timeout=5)
        holed_peer, _ = server.accept()
        holed_peer.settimeout(5)
        wait_for(lambda: proxy.connections == 2, 5, "two links")
        holed.sendall(b"lost")
        wait_for(lambda: proxy.dropped_bytes == 4, 5, "the bytes to be swallowed")
        proxy.heal()
        with pytest.raises(ConnectionResetError):
            holed_peer.recv(4)
        clean.sendall(b"kept")
        clean_peer.settimeout(5)
        assert clean_peer.recv(4) == b"kept"
        for s in (clean, clean_peer, holed, holed_peer):
            s.close()
    server.close()


def test_nemesis_refuses_what_the_cluster_cannot_do(cluster3: Cluster) -> None:
    with pytest.raises(ValueError, match="unknown faults"):
        Nemesis(cluster3, 1, faults=["meteor"])
    nemesis = Nemesis(cluster3, 1)  # in-process, no proxies: no pause, no network faults
    assert "pause" not in nemesis.faults and not set(NETWORK_FAULTS) & set(nemesis.faults)
    with pytest.raises(ValueError, match="not one of"):
        nemesis.inject("bridge")


def test_partition_bridge_and_heal(cluster_factory) -> None:
    c = cluster_factory(3, fault_proxies=True)
    conn = c.connect("n", autocommit=True)
    conn.execute("CREATE TABLE t (x)")
    nemesis = Nemesis(c, 5, faults=list(NETWORK_FAULTS))
    step = nemesis.inject("partition-leader-minority")
    assert step is not None and nemesis.network_fault == "partition-leader-minority"
    assert nemesis.inject("bridge") is None  # one network fault at a time
    old = int(step.detail.split("]")[0].strip("["))
    assert c.wait_leader(exclude=old, timeout=20) != old
    nemesis.heal_all()
    conn.execute("INSERT INTO t VALUES (1)")
    assert conn.execute("SELECT count(*) FROM t").fetchall() == [(1,)]
    assert [s.action for s in nemesis.log] == ["partition-leader-minority", "heal-all"]
    assert "seed=5" in nemesis.format_log()


def test_random_steps_then_heal_all_converge(cluster_factory) -> None:
    c = cluster_factory(3, fault_proxies=True)
    conn = c.connect("n", autocommit=True)
    conn.execute("CREATE TABLE t (x)")
    nemesis = Nemesis(c, 9)
    deadline = time.monotonic() + 30
    with nemesis.running(interval=0.3, steps=6):
        while len(nemesis.log) < 6 and time.monotonic() < deadline:
            try:
                conn.execute("INSERT INTO t VALUES (1)")
            except Exception:
                pass  # under faults a write may fail; only the end state counts here
    nemesis.heal_all()
    assert len(nemesis.log) == 7, nemesis.format_log()
    conn.execute("INSERT INTO t VALUES (100)")
    assert conn.execute("SELECT max(x) FROM t").fetchall() == [(100,)]


def test_relay_forwards_to_the_named_target_and_refuses_clearly() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    target = f"127.0.0.1:{server.getsockname()[1]}"
    with FaultProxy(relay=True) as relay:
        dial = dial_via(relay.address)
        sock = dial(target)
        peer, _ = server.accept()
        sock.sendall(b"ping")
        peer.settimeout(5)
        assert peer.recv(4) == b"ping"  # no header byte leaks into the stream
        relay.drop(address=target)
        sock.sendall(b"lost")
        wait_for(lambda: relay.dropped_bytes == 4, 5, "the bytes to be swallowed")
        relay.heal()
        relay.refuse(address=target)
        with pytest.raises(ConnectionRefusedError, match="refused"):
            dial(target)
        relay.heal()
        with pytest.raises(ConnectionRefusedError):  # a bad header gets EOF, not a hang
            dial("no-port")
        for s in (sock, peer):
            s.close()
    server.close()
    with pytest.raises(ValueError, match="host:port"):
        dial_via("nowhere")
    with pytest.raises(ValueError, match="no target"):
        FaultProxy(target, relay=True)


def test_faults_together_always_leave_a_quorum(cluster_factory) -> None:
    """A partition and a kill are drawn one at a time; the nemesis refuses the one
    that, with the other, would leave no node reaching a majority."""
    c = cluster_factory(3, fault_proxies=True)
    nemesis = Nemesis(c, 3, faults=["kill", *NETWORK_FAULTS])
    step = nemesis.inject("partition-leader-minority")
    assert step is not None
    isolated = int(step.detail.split("]")[0].strip("["))
    killed = None
    for _ in range(30):  # only the isolated node may die now
        if (kill := nemesis.inject("kill")) is not None:
            killed = int(kill.target.removeprefix("node"))
            break
    assert killed == isolated, nemesis.format_log()
    assert c.wait_leader(timeout=30) != isolated  # the other two still form a quorum
    nemesis.heal_all()
    assert nemesis.inject("kill") is not None and len(nemesis.down) == 1
    c.wait_leader(timeout=30, exclude=next(iter(nemesis.down)))
    # isolating the (live) leader now would leave the last two nodes unable to meet
    assert nemesis.inject("partition-leader-minority") is None, nemesis.format_log()
    nemesis.heal_all()
