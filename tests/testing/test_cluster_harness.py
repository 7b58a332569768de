"""The cowsqlpy.testing harness itself: clusters form, faults act, logs are kept."""

from __future__ import annotations

import os
import socket

import pytest

from cowsqlpy import ConnectionLostError, RetryPolicy, SyncClient, protocol
from cowsqlpy.testing import Cluster, FaultProxy, HarnessError, wait_for


def test_cluster3_fixture_serves_sql(cluster3: Cluster) -> None:
    assert len(cluster3.addresses) == 3
    conn = cluster3.connect("h", autocommit=True)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]
    roles = sorted(n.role for n in cluster3.cluster_nodes())
    assert roles == [protocol.VOTER] * 3


def test_bare_nodes_cluster(cluster_factory) -> None:
    c = cluster_factory(3, app=False)
    assert [n.id for n in c.cluster_nodes()] == [1, 2, 3]
    assert c.leader_index() == 0


def test_in_process_kill_and_restart(cluster3: Cluster) -> None:
    conn = cluster3.connect("h", autocommit=True)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    leader = cluster3.wait_leader()
    cluster3.kill(leader)
    assert not cluster3.running(leader)
    assert cluster3.wait_leader(exclude=leader) != leader
    conn.execute("INSERT INTO t VALUES (2)")
    cluster3.restart(leader)
    assert cluster3.running(leader)
    assert conn.execute("SELECT count(*) FROM t").fetchall() == [(2,)]


def test_pause_needs_processes(cluster3: Cluster) -> None:
    with pytest.raises(HarnessError, match="processes=True"):
        cluster3.pause(0)


def test_logs_are_kept_per_node(cluster3: Cluster) -> None:
    logs = cluster3.logs()
    assert set(logs) == {0, 1, 2}
    assert "ready" in logs[1]
    assert "node1" in cluster3.format_logs()


def test_fault_proxy_as_client_address(cluster3: Cluster, fault_proxy_factory) -> None:
    leader = cluster3.wait_leader()
    proxy = fault_proxy_factory(cluster3.addresses[leader])

    policy = RetryPolicy(deadline=1.0, attempt_timeout=0.5, connect_timeout=0.5, max_tries=2)
    # Through the proxy the leader answers, but it names its real address, so
    # ask a lower-level question: DESCRIBE at the proxy's address.
    with SyncClient([proxy.address], policy=policy) as c:
        assert c.describe(proxy.address).weight == 0
        proxy.drop()
        with pytest.raises(ConnectionLostError):
            c.describe(proxy.address)
        proxy.heal()
        proxy.refuse()
        with pytest.raises(ConnectionLostError):
            c.describe(proxy.address)
        proxy.heal()
        assert c.describe(proxy.address).failure_domain == 0
    assert proxy.accepted >= 3


def test_fault_proxy_cut_closes_live_connections() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    target = f"127.0.0.1:{server.getsockname()[1]}"
    with FaultProxy(target) as proxy:
        host, port = proxy.address.rsplit(":", 1)
        client = socket.create_connection((host, int(port)), timeout=5)
        peer, _ = server.accept()
        peer.settimeout(5)
        client.sendall(b"ping")
        assert peer.recv(4) == b"ping"
        proxy.delay(0.05)
        client.sendall(b"late")
        assert peer.recv(4) == b"late"
        wait_for(lambda: proxy.connections == 1, 5, "one link")
        assert proxy.cut() == 1
        assert peer.recv(4) == b""
        client.close()
        peer.close()
    server.close()


def test_isolate_partitions_raft_and_heal_recovers(cluster_factory) -> None:
    c = cluster_factory(3, fault_proxies=True)
    conn = c.connect("h", autocommit=True)
    conn.execute("CREATE TABLE t (x)")
    leader = c.wait_leader()
    c.isolate(leader)
    # The two others elect a leader among themselves while the old one is cut off.
    new = c.wait_leader(exclude=leader, timeout=20)
    assert new != leader

    def old_stepped_down() -> bool:
        policy = RetryPolicy(deadline=0.2, attempt_timeout=0.5, connect_timeout=0.5, max_tries=1)
        with SyncClient([c.addresses[leader]], policy=policy) as one:
            return one.leader() is None

    # Until it notices, the cut-off leader still accepts writes it can never commit
    # (they fail as in doubt); once it stepped down the pooled session gets not-leader.
    wait_for(old_stepped_down, 20, "the isolated leader to step down")
    conn.execute("INSERT INTO t VALUES (1)")
    c.heal()
    wait_for(lambda: all(p.connections for p in c.proxies if p is not None), 20, "links re-established")
    assert conn.execute("SELECT count(*) FROM t").fetchall() == [(1,)]


def _state(pid: int | None, tid: str) -> str:
    with open(f"/proc/{pid}/task/{tid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0]


def test_process_cluster_pause_resume_kill(cluster3_processes: Cluster) -> None:
    c = cluster3_processes
    assert all(c.pid(i) for i in range(3))
    conn = c.connect("h", autocommit=True)
    conn.execute("CREATE TABLE t (x)")
    leader = c.wait_leader()
    c.pause(leader)
    # pause() returns once the node is stopped, not merely signalled: no thread of it
    # runs (a frozen node that still answered would make a pause test pass for nothing)
    tasks = os.listdir(f"/proc/{c.pid(leader)}/task")
    assert len(tasks) > 1 and all(_state(c.pid(leader), t) in "TtD" for t in tasks)
    new = c.wait_leader(exclude=leader, timeout=20)
    # `conn`'s pooled session still points at the frozen node, where a write would be
    # in doubt (no reply): write through a fresh pool (a distinct policy = own pool).
    fresh = c.connect("h", autocommit=True, policy=RetryPolicy(attempt_timeout=5.0))
    fresh.execute("INSERT INTO t VALUES (1)")
    c.resume(leader)
    c.kill(new)
    assert c.pid(new) is None
    c.wait_leader(exclude=new, timeout=20)
    conn.execute("INSERT INTO t VALUES (2)")
    c.restart(new)
    assert conn.execute("SELECT count(*) FROM t").fetchall() == [(2,)]
    assert c.stop(0) == 0  # SIGTERM: hand-over, exit 0


def test_failed_cluster_start_carries_logs(tmp_path) -> None:
    (tmp_path / "node0").mkdir()
    (tmp_path / "node0" / "metadata1").write_bytes(b"not ours")
    with pytest.raises(HarnessError, match="engine data"):
        Cluster(1, processes=True, base_dir=tmp_path, ready_timeout=10)
