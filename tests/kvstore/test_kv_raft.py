"""raft:// specifics: durability across a full restart, snapshots, the
non-loopback/password rule, replicas agreeing."""

from __future__ import annotations

import pytest

import kvstore
from kvstore.backends.raft import RaftConfig
from kvstore.testing import RaftCluster, free_ports, wait_until


def test_restart_with_dir_keeps_all_data(tmp_path):
    c = RaftCluster(tmp_path, 3, durable=True)
    c.start()
    kv = c.handles[0]
    revs = [kv.put(f"k{i}", f"v{i}").revision for i in range(50)]
    kv.put("big", b"x" * 200_000)
    kv.delete("k0")
    lease = kv.grant(300)
    kv.put("leased", b"l", lease=lease)
    c.handles[1].backend.force_snapshot()  # one member restarts from dump + journal tail
    wait_until(lambda: (tmp_path / "raft-1" / "raft.dump").exists(), what="snapshot dump")
    kv.put("after-snapshot", b"1")
    digest = c.handles[0].backend.replica.state.state_digest()
    c.stop()

    c2 = RaftCluster(tmp_path, 3, durable=True)
    c2.ports = c.ports
    c2.start()
    try:
        for h in c2.handles:
            assert h.get("k1") == b"v1"
            assert h.get("k0") is None
            assert h.get("k0", revision=revs[0]) == b"v0"
            assert h.get("after-snapshot") == b"1"
            assert len(h.get("big")) == 200_000
        assert c2.handles[0].ttl(lease).granted_ttl == 300
        assert c2.handles[0].get_kv("leased").lease == lease.id
        wait_until(lambda: all(h.backend.replica.state.state_digest() == digest for h in c2.handles),
                   what="all replicas equal to the pre-restart state")
        c2.handles[2].put("new", b"n")
        assert c2.handles[0].get("new") == b"n"
    finally:
        c2.stop()


def test_replicas_agree(raft_cluster):
    a, b, c = raft_cluster.handles
    for i in range(20):
        [a, b, c][i % 3].put(f"agree/{i}", str(i))
    target = a.revision()
    wait_until(lambda: all(h.backend.replica.revision >= target for h in (a, b, c)), what="catch-up")
    for h in (a, b, c):  # each handle reads its own replica
        assert [h.get(f"agree/{i}") for i in range(20)] == [str(i).encode() for i in range(20)]
    wait_until(lambda: len({h.backend.replica.state.state_digest() for h in (a, b, c)}) == 1,
               what="identical replicas")


def test_non_loopback_without_password_is_refused():
    p = free_ports(1)[0]
    with pytest.raises(kvstore.ConfigurationError, match="password"):
        kvstore.open(f"raft://127.0.0.1:{p}?bind=0.0.0.0")
    with pytest.raises(kvstore.ConfigurationError):
        RaftConfig(f"raft://10.1.2.3:{p}?peers=10.1.2.4:{p}")
    with pytest.raises(kvstore.ConfigurationError):
        RaftConfig(f"raft://0.0.0.0:{p}")
    assert RaftConfig(f"raft://localhost:{p}").password is None
    assert RaftConfig(f"raft://s3cret@10.1.2.3:{p}").password == "s3cret"


def test_password_cluster_on_all_interfaces(tmp_path):
    c = RaftCluster(tmp_path, 3, options="bind=0.0.0.0&password=correct-horse")
    c.start()
    try:
        c.handles[0].put("secure", b"yes")
        assert c.handles[2].get("secure") == b"yes"
    finally:
        c.stop()
    # members with different passwords cannot form a cluster
    ports = free_ports(2)
    a, b = (f"127.0.0.1:{p}" for p in ports)
    k1 = kvstore.open(f"raft://{a}?peers={b}&password=one&timeout=1")
    k2 = kvstore.open(f"raft://{b}?peers={a}&password=two&timeout=1")
    try:
        with pytest.raises(kvstore.OperationTimeout):
            k1.backend.wait_ready(timeout=3)
    finally:
        for k in (k1, k2):
            k.close()


def test_commands_and_snapshots_are_msgpack_bytes(raft_cluster):
    kv = raft_cluster.handles[0]
    kv.put("pickle-bomb", b"cos\nsystem\n(S'echo pwned'\ntR.")
    snap = kv.backend._machine._serialize()
    assert list(snap) == ["kvstore_snapshot"] and isinstance(snap["kvstore_snapshot"], bytes)
    restored = kvstore.mvcc.MVCC.load(snap["kvstore_snapshot"])
    assert restored.get_at(b"pickle-bomb", 0).value.startswith(b"cos\nsystem")
