"""Mounts on several nodes, node failures, daemon crashes, quorum loss."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cowsqlpy.testing import Cluster, wait_for

from .conftest import Mount, check_fs, make_fs, unmount


def test_two_mounts_on_two_nodes(
    fs_cluster: Cluster, mount_factory: Callable[..., Mount], tmp_path: Path
) -> None:
    servers = fs_cluster.addresses
    make_fs(servers)
    a = mount_factory([servers[1]], name="a")
    # the second mount embeds its own node, which joins the cluster (and snapshots the
    # whole database every 64 entries: the file below is taken over snapshots)
    b = mount_factory(
        [],
        "fs",
        "--embed-node",
        "--address",
        "127.0.0.1:0",
        "--dir",
        str(tmp_path / "embedded"),
        "--join",
        ",".join(servers),
        "--snapshot-params",
        "64,128",
        name="b",
    )
    data = os.urandom(3 << 20)
    (a.path / "f").write_bytes(data)
    assert (b.path / "f").read_bytes() == data  # closed on one mount: read whole on the other
    assert (b.path / "f").read_bytes() == data  # again (page cache kept: unchanged)
    changed = bytearray(data)
    changed[100:104] = (
        b"XXXX"  # same size, new bytes: the other mount must not serve its cached pages
    )
    with open(a.path / "f", "r+b") as f:
        f.seek(100)
        f.write(b"XXXX")
    assert (b.path / "f").read_bytes() == bytes(changed)
    os.rename(a.path / "f", a.path / "g")
    assert not (b.path / "f").exists() and (b.path / "g").read_bytes() == bytes(changed)
    (b.path / "d").mkdir()
    (b.path / "d" / "x").write_bytes(b"x")
    os.unlink(b.path / "g")
    assert sorted(os.listdir(a.path)) == ["d"] and os.listdir(a.path / "d") == ["x"]
    unmount(a)
    unmount(b)
    assert check_fs(servers) == []


def _writer(path: Path, blocks: int, block: bytes, out: dict[str, object]) -> None:
    try:
        with open(path, "wb") as f:
            for _ in range(blocks):
                f.write(block)
                out["written"] = int(out.get("written", 0)) + len(block)  # type: ignore[call-overload]
            f.flush()
            os.fsync(f.fileno())
        out["done"] = True
    except OSError as exc:
        out["error"] = exc.errno


@pytest.mark.slow
def test_leader_killed_during_a_large_write(
    fuse_available: None,
    cluster_factory: Callable[..., Cluster],
    mount_factory: Callable[..., Mount],
) -> None:
    cluster = cluster_factory(3, processes=True)
    make_fs(cluster.addresses)
    leader = cluster.wait_leader()
    others = [a for i, a in enumerate(cluster.addresses) if i != leader]
    m = mount_factory(others + [cluster.addresses[leader]], "fs", "--io-timeout", "20")
    block = os.urandom(256 << 10)
    blocks = 48  # 12 MiB
    out: dict[str, object] = {}
    t = threading.Thread(target=_writer, args=(m.path / "big", blocks, block, out))
    t.start()
    wait_for(lambda: int(out.get("written", 0)) >= 2 << 20 or "error" in out, 60, "2 MiB written")  # type: ignore[call-overload]
    cluster.kill(leader)
    t.join(120)
    assert not t.is_alive()
    assert out.get("done") or out.get("error") == errno.EIO, out
    if out.get("done"):
        assert (m.path / "big").read_bytes() == block * blocks
    unmount(m)
    assert check_fs(cluster.addresses) == []


def test_daemon_killed_mid_write_keeps_fsynced_bytes(
    fs_cluster: Cluster, mount_factory: Callable[..., Mount]
) -> None:
    servers = fs_cluster.addresses
    make_fs(servers)
    m = mount_factory(servers, name="m")
    synced = os.urandom(300_000)
    f = open(m.path / "f", "wb")
    f.write(synced)
    f.flush()
    os.fsync(f.fileno())
    f.write(os.urandom(100_000))  # buffered, never synced
    f.flush()
    kept = open(m.path / "orphan", "wb")
    kept.write(b"o" * 70_000)
    kept.flush()
    os.fsync(kept.fileno())
    os.unlink(m.path / "orphan")  # open-unlinked when the daemon dies
    m.kill()
    for handle in (f, kept):
        try:
            handle.close()
        except OSError:
            pass
    again = mount_factory(servers, name="m")  # reclaims the dead mount's orphan
    data = (again.path / "f").read_bytes()
    assert data[: len(synced)] == synced
    assert os.listdir(again.path) == ["f"]
    assert check_fs(servers) == []
    unmount(again)
    assert check_fs(servers) == []


@pytest.mark.slow
def test_no_quorum_gives_eio_then_recovers(
    fuse_available: None,
    cluster_factory: Callable[..., Cluster],
    mount_factory: Callable[..., Mount],
) -> None:
    cluster = cluster_factory(3, processes=True)
    make_fs(cluster.addresses)
    m = mount_factory(cluster.addresses, "fs", "--io-timeout", "3")
    (m.path / "before").write_bytes(b"b")
    cluster.kill(1)
    cluster.kill(2)
    start = time.monotonic()
    with pytest.raises(OSError) as info:
        (m.path / "during").write_bytes(b"d")
    assert info.value.errno == errno.EIO
    assert time.monotonic() - start < 60  # bounded, not for ever
    cluster.start(1)
    cluster.start(2)
    cluster.wait_leader(timeout=60)

    def works() -> bool:
        try:
            (m.path / "after").write_bytes(b"a")
            return True
        except OSError:
            return False

    wait_for(works, 60, "the mount works again")
    assert (m.path / "before").read_bytes() == b"b" and (m.path / "after").read_bytes() == b"a"
    unmount(m)
    assert check_fs(cluster.addresses) == []
