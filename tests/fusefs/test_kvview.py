"""`--view kv`: the kvstore namespace as files, on the cowsql and etcd backends."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import kvstore
from cowsqlpy.testing import Cluster
from kvstore.testing import EtcdCluster, etcd_available

from .conftest import Mount


@pytest.fixture(params=["cowsql", "etcd"])
def kv_url(request: pytest.FixtureRequest, fuse_available: None, tmp_path: Path) -> Iterator[str]:
    if request.param == "cowsql":
        cluster: Cluster = request.getfixturevalue("fs_cluster")
        yield f"cowsql://{','.join(cluster.addresses)}/kv"
        return
    if not etcd_available():
        pytest.skip("etcd server binary not installed (Debian package etcd-server)")
    etcd = EtcdCluster(tmp_path / "etcd", 1).start()
    try:
        yield etcd.url
    finally:
        etcd.stop()


def test_kv_namespace_as_files(kv_url: str, mount_factory: Callable[..., Mount]) -> None:
    kv = kvstore.open(kv_url)
    try:
        kv.put("config/a", b"1")
        kv.put("config/sub/b", b"22")
        kv.put("top", b"t")
        m = mount_factory([], "fs", "--view", "kv", "--kv-url", kv_url).path
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
    finally:
        kv.close()
