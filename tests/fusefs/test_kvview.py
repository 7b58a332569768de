"""`--view kv`: the kvstore namespace as files, on every kvstore backend."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import kvstore
from cowsqlpy.testing import Cluster
from kvstore.testing import EtcdCluster, RaftCluster, etcd_available

from .conftest import Mount


@pytest.fixture(params=["cowsql", "etcd", "raft"])
def kv_url(
    request: pytest.FixtureRequest, fuse_available: None, tmp_path: Path
) -> Iterator[tuple[str, kvstore.KV]]:
    """(the URL the mount opens, a handle on the same store for the test)."""
    if request.param == "cowsql":
        cluster: Cluster = request.getfixturevalue("fs_cluster")
        url = f"cowsql://{','.join(cluster.addresses)}/kv"
        kv = kvstore.open(url)
        try:
            yield url, kv
        finally:
            kv.close()
        return
    if request.param == "raft":
        # two members here, the mount daemon is the third (a quorum without it too)
        raft = RaftCluster(tmp_path / "raft", 2, spares=1).start()
        try:
            yield raft.url(2), raft.handles[0]
        finally:
            raft.stop()
        return
    if not etcd_available():
        pytest.skip("etcd server binary not installed (Debian package etcd-server)")
    etcd = EtcdCluster(tmp_path / "etcd", 1).start()
    try:
        kv = kvstore.open(etcd.url)
        try:
            yield etcd.url, kv
        finally:
            kv.close()
    finally:
        etcd.stop()


def test_kv_namespace_as_files(
    kv_url: tuple[str, kvstore.KV], mount_factory: Callable[..., Mount]
) -> None:
    url, kv = kv_url
    kv.put("config/a", b"1")
    kv.put("config/sub/b", b"22")
    kv.put("top", b"t")
    m = mount_factory([], "fs", "--view", "kv", "--kv-url", url).path
    assert sorted(os.listdir(m)) == ["config", "top"]
    assert sorted(os.listdir(m / "config")) == ["a", "sub"]
    assert (m / "config" / "sub" / "b").read_bytes() == b"22"
    assert os.stat(m / "config" / "a").st_size == 1
    (m / "config" / "new").write_bytes(b"written on close")
    assert kv.get("config/new") == b"written on close"
    with open(m / "config" / "a", "ab") as f:
        f.write(b"+")
        assert kv.get("config/a") == b"1"  # not before close
    assert kv.get("config/a") == b"1+"
    rev = kv.get_kv("top").mod_revision
    os.rename(m / "top", m / "config" / "moved")
    assert kv.get("top") is None and kv.get("config/moved") == b"t"
    assert kv.get_kv("config/moved").mod_revision > rev
    os.rename(m / "config" / "sub", m / "other")
    assert kv.get("other/b") == b"22" and kv.get("config/sub/b") is None
    os.unlink(m / "config" / "a")
    assert kv.get("config/a") is None
    kv.put("config/fromkv", b"seen")
    assert (m / "config" / "fromkv").read_bytes() == b"seen"  # close-to-open: read at open
    (m / "empty").mkdir()
    assert (m / "empty").is_dir()
    (m / "empty").rmdir()
    with pytest.raises(OSError) as info:
        os.rmdir(m / "config")
    assert info.value.errno == errno.ENOTEMPTY
    with pytest.raises(OSError) as info:
        with open(m / "huge", "wb") as f:
            f.write(b"x" * (kvstore.MAX_VALUE_BYTES + 1))
    assert info.value.errno == errno.EFBIG
    with pytest.raises(OSError) as info:
        os.symlink("a", m / "link")
    assert info.value.errno == errno.EPERM


def test_kv_view_on_the_memory_backend(
    fuse_available: None, mount_factory: Callable[..., Mount]
) -> None:
    """`mem:` lives in the mount's process: everything is checked through the mount."""
    m = mount_factory([], "fs", "--view", "kv", "--kv-url", "mem:").path
    assert os.listdir(m) == []
    (m / "a").mkdir()
    (m / "a" / "k").write_bytes(b"value")
    (m / "top").write_bytes(b"t")
    assert sorted(os.listdir(m)) == ["a", "top"]
    assert (m / "a" / "k").read_bytes() == b"value"
    assert os.stat(m / "a" / "k").st_size == 5
    with open(m / "top", "ab") as f:
        f.write(b"+")
        assert (m / "top").read_bytes() == b"t"  # put on close
    assert (m / "top").read_bytes() == b"t+"
    os.rename(m / "top", m / "a" / "moved")
    assert sorted(os.listdir(m / "a")) == ["k", "moved"]
    assert not (m / "top").exists()
    os.rename(m / "a", m / "b")
    assert (m / "b" / "moved").read_bytes() == b"t+"
    os.unlink(m / "b" / "k")
    os.unlink(m / "b" / "moved")
    assert os.listdir(m) == []  # the directory went with its last key
    with pytest.raises(OSError) as info:
        with open(m / "huge", "wb") as f:
            f.write(b"x" * (kvstore.MAX_VALUE_BYTES + 1))
    assert info.value.errno == errno.EFBIG
