"""POSIX semantics and errno values through a real mount."""

from __future__ import annotations

import errno
import os
import stat
import time
from pathlib import Path

import pytest

import cowsqlpy
from fusefs.schema import LINK_MAX

from .conftest import Mount, check_fs, make_fs, unmount
from .posix import RENAME_EXCHANGE, RENAME_NOREPLACE, UTIME_NOW, UTIME_OMIT, renameat2, utimensat


def err(fn, *args) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(OSError) as info:
        fn(*args)
    return info.value.errno  # type: ignore[no-any-return]


def test_errors_a_local_fs_gives(fs_mount: Mount) -> None:
    m = fs_mount.path
    (m / "d").mkdir()
    (m / "d" / "f").write_bytes(b"x")
    (m / "file").write_bytes(b"y")
    assert err(os.stat, m / "missing") == errno.ENOENT
    assert err(os.mkdir, m / "d") == errno.EEXIST
    assert err(os.rmdir, m / "d") == errno.ENOTEMPTY
    assert err(os.unlink, m / "d") == errno.EISDIR
    assert err(os.rmdir, m / "file") == errno.ENOTDIR
    assert err(os.stat, m / "file" / "x") == errno.ENOTDIR
    assert err(open, m / "d", "w") == errno.EISDIR
    assert err(os.mkdir, m / ("n" * 256)) == errno.ENAMETOOLONG
    (m / ("n" * 255)).write_bytes(b"")  # 255 bytes is allowed
    assert err(os.rename, m / "d", m / "d" / "sub") == errno.EINVAL
    assert err(os.rename, m / "d", m / "file") == errno.ENOTDIR
    assert err(os.rename, m / "file", m / "d") == errno.EISDIR
    assert err(os.readlink, m / "file") == errno.EINVAL
    assert err(os.link, m / "d", m / "dlink") == errno.EPERM
    os.symlink("loop2", m / "loop1")
    os.symlink("loop1", m / "loop2")
    assert err(os.stat, m / "loop1") == errno.ELOOP
    assert err(os.rename, m / "file", "/tmp/elsewhere-on-another-fs") == errno.EXDEV
    assert err(os.truncate, m / "file", 1 << 50) == errno.EFBIG
    assert err(os.getxattr, m / "file", "user.none") == errno.ENODATA


def test_rename_replaces_atomically_and_takes_flags(fs_mount: Mount) -> None:
    m = fs_mount.path
    (m / "a").write_bytes(b"A")
    (m / "b").write_bytes(b"B")
    ino_a = os.stat(m / "a").st_ino
    assert err(renameat2, m / "a", m / "b", RENAME_NOREPLACE) == errno.EEXIST
    assert (m / "b").read_bytes() == b"B"
    renameat2(m / "a", m / "b", RENAME_EXCHANGE)
    assert ((m / "a").read_bytes(), (m / "b").read_bytes()) == (b"B", b"A")
    assert err(renameat2, m / "a", m / "none", RENAME_EXCHANGE) == errno.ENOENT
    renameat2(m / "a", m / "c", RENAME_NOREPLACE)
    os.rename(m / "b", m / "c")  # replaces c
    assert (m / "c").read_bytes() == b"A" and os.stat(m / "c").st_ino == ino_a
    assert sorted(os.listdir(m)) == ["c"]
    # a directory replaces an empty directory, not a full one; exchange across parents fixes nlink
    (m / "d1").mkdir()
    (m / "d2").mkdir()
    (m / "d2" / "x").write_bytes(b"")
    assert err(os.rename, m / "d1", m / "d2") == errno.ENOTEMPTY
    (m / "d3").mkdir()
    os.rename(m / "d1", m / "d3")
    renameat2(m / "d3", m / "d2" / "x", RENAME_EXCHANGE)
    assert stat.S_ISDIR(os.stat(m / "d2" / "x").st_mode) and stat.S_ISREG(os.stat(m / "d3").st_mode)
    assert os.stat(m / "d2").st_nlink == 3 and os.stat(m).st_nlink == 3


def test_unlinked_open_file_keeps_its_data(fs_mount: Mount) -> None:
    m = fs_mount.path
    with open(m / "f", "w+b") as f:
        f.write(b"kept" * 50_000)
        f.flush()
        os.unlink(m / "f")
        assert not (m / "f").exists()
        f.write(b"more")
        f.seek(0)
        assert f.read() == b"kept" * 50_000 + b"more"
        st = os.fstat(f.fileno())
        assert (st.st_nlink, st.st_size) == (0, 200_004)
        os.fchmod(f.fileno(), 0o600)
        os.setxattr(f.fileno(), "user.k", b"v")
        assert os.getxattr(f.fileno(), "user.k") == b"v"
        assert stat.S_IMODE(os.fstat(f.fileno()).st_mode) == 0o600
        assert os.listdir(m) == []  # no .fuse_hidden* name shows
        assert check_fs(fs_mount.servers) == []  # an orphan kept by a live mount is fine
    with open(m / "g", "wb") as g:
        g.write(b"old")
    (m / "h").write_bytes(b"new")
    with open(m / "g", "rb") as g:
        os.rename(m / "h", m / "g")  # rename over an open file
        assert g.read() == b"old"
        assert os.fstat(g.fileno()).st_nlink == 0
    assert (m / "g").read_bytes() == b"new"
    (m / "d").mkdir()
    (m / "d" / "x").write_bytes(b"x")
    os.link(m / "d" / "x", m / "y")
    with open(m / "d" / "x", "rb") as x:
        os.unlink(m / "d" / "x")
        assert os.fstat(x.fileno()).st_nlink == 1  # the other name is left
        os.unlink(m / "y")
        assert os.fstat(x.fileno()).st_nlink == 0
        os.rmdir(m / "d")  # the open file does not keep its old directory busy
        assert x.read() == b"x"  # (fstat now gives ESTALE: docs/fusefs.md)
    assert os.listdir(m) == ["g"]


def test_sparse_truncate_append_fallocate(fs_mount: Mount) -> None:
    m = fs_mount.path
    big = 5 << 30  # 5 GiB of logical size
    with open(m / "sparse", "wb") as f:
        f.seek(big)
        f.write(b"end")
    st = os.stat(m / "sparse")
    assert st.st_size == big + 3 and st.st_blocks * 512 < 1 << 20
    with open(m / "sparse", "rb") as f:
        f.seek(big - 4)
        assert f.read() == b"\0\0\0\0end"
        f.seek(1 << 30)
        assert f.read(10) == b"\0" * 10
    os.truncate(m / "sparse", 10)
    assert (m / "sparse").read_bytes() == b"\0" * 10
    with open(m / "log", "ab") as f:
        f.write(b"one ")
    with open(m / "log", "ab") as f:
        f.write(b"two")
    assert (m / "log").read_bytes() == b"one two"
    with open(m / "log", "r+b") as f:
        os.ftruncate(f.fileno(), 3)
        assert os.fstat(f.fileno()).st_size == 3
        os.ftruncate(f.fileno(), 6)
        assert f.read() == b"one\0\0\0"
    with open(m / "log", "wb") as f:  # O_TRUNC
        pass
    assert os.stat(m / "log").st_size == 0
    fd = os.open(m / "alloc", os.O_CREAT | os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, 100_000)
        assert os.fstat(fd).st_size == 100_000
        os.write(fd, b"abc")
        os.fsync(fd)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    data = (m / "alloc").read_bytes()
    assert data[:3] == b"abc" and data[3:] == b"\0" * (100_000 - 3)


def test_times_modes_owners_xattrs(fs_mount: Mount) -> None:
    m = fs_mount.path
    f = m / "f"
    f.write_bytes(b"x")
    utimensat(f, (1_000_000, 5), (2_000_000, 7))
    st = os.stat(f)
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000 * 10**9 + 5, 2_000_000 * 10**9 + 7)
    utimensat(f, (0, UTIME_OMIT), (0, UTIME_NOW))
    st2 = os.stat(f)
    assert st2.st_atime_ns == st.st_atime_ns and st2.st_mtime_ns > time.time_ns() - 60 * 10**9
    os.chmod(f, 0o6755)
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o6755
    os.chown(
        f, 1234, 5678
    )  # a change of owner drops set-user-ID (and set-group-ID with group exec)
    st = os.stat(f)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o755)
    os.setxattr(f, "user.k", b"v1", os.XATTR_CREATE)
    assert err(os.setxattr, f, "user.k", b"v2", os.XATTR_CREATE) == errno.EEXIST
    assert err(os.setxattr, f, "user.other", b"v", os.XATTR_REPLACE) == errno.ENODATA
    os.setxattr(f, "user.k", b"v2", os.XATTR_REPLACE)
    os.setxattr(f, "trusted.t", b"\0\1")
    assert os.getxattr(f, "user.k") == b"v2" and os.getxattr(f, "trusted.t") == b"\0\1"
    assert sorted(os.listxattr(f)) == ["trusted.t", "user.k"]
    os.removexattr(f, "user.k")
    assert os.listxattr(f) == ["trusted.t"]
    # setgid directories hand their group (and, to subdirectories, the bit) down
    d = m / "shared"
    d.mkdir()
    os.chown(d, 0, 4321)
    os.chmod(d, 0o2775)
    (d / "file").write_bytes(b"")
    (d / "sub").mkdir()
    assert os.stat(d / "file").st_gid == 4321
    assert os.stat(d / "sub").st_gid == 4321 and os.stat(d / "sub").st_mode & stat.S_ISGID
    os.mknod(m / "fifo", stat.S_IFIFO | 0o600)
    assert stat.S_ISFIFO(os.stat(m / "fifo").st_mode)


def test_permissions_enforced_by_the_kernel(fs_cluster, mount_factory) -> None:  # type: ignore[no-untyped-def]
    make_fs(fs_cluster.addresses)
    mnt = mount_factory(
        fs_cluster.addresses, "fs", "--allow-other"
    )  # else the kernel refuses other users outright
    m = mnt.path
    secret = m / "secret"
    secret.write_bytes(b"s")
    os.chmod(secret, 0o600)
    os.chmod(m, 0o755)
    pid = os.fork()
    if pid == 0:  # as an unprivileged user
        code = 0
        try:
            os.chdir(m)  # tmp_path's parents are 0700: work below them
            secret, m = Path("secret"), Path(".")
            os.setgid(65534)
            os.setuid(65534)
            for fn, args, want in (
                (open, (secret,), errno.EACCES),
                (os.chmod, (secret, 0o777), errno.EPERM),
                (os.mkdir, (m / "x",), errno.EACCES),
                (os.chown, (secret, 65534, 65534), errno.EPERM),
            ):
                try:
                    fn(*args)
                    code = 1
                except OSError as exc:
                    if exc.errno != want:
                        print(fn, exc)
                        code = 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    unmount(mnt)
    assert check_fs(fs_cluster.addresses) == []


def test_statfs_and_direct_io(fs_mount: Mount) -> None:
    m = fs_mount.path
    before = os.statvfs(m)
    assert before.f_blocks * before.f_frsize == 256 << 20 and before.f_namemax == 255
    (m / "blob").write_bytes(os.urandom(1 << 20))
    after = os.statvfs(m)
    assert before.f_bfree - after.f_bfree == (1 << 20) // after.f_frsize
    assert after.f_ffree == before.f_ffree - 1
    fd = os.open(m / "blob", os.O_RDONLY | os.O_DIRECT)
    try:
        assert len(os.pread(fd, 4096, 8192)) == 4096
    finally:
        os.close(fd)


def test_capacity_gives_enospc_and_deleting_frees(fs_cluster, mount_factory) -> None:  # type: ignore[no-untyped-def]
    make_fs(fs_cluster.addresses, capacity=4 << 20)
    mnt = mount_factory(fs_cluster.addresses)
    m = mnt.path
    keep = os.urandom(1 << 20)
    (m / "keep").write_bytes(keep)
    chunk = os.urandom(256 << 10)
    written = 0
    with pytest.raises(OSError) as info:
        with open(m / "fill", "wb") as f:
            for _ in range(64):
                f.write(chunk)
                f.flush()
                written += len(chunk)
            os.fsync(f.fileno())
    assert info.value.errno == errno.ENOSPC
    assert written < 4 << 20
    assert (m / "keep").read_bytes() == keep
    assert os.statvfs(m).f_bavail < (1 << 20) // 4096
    os.unlink(m / "fill")
    assert os.statvfs(m).f_bavail * 4096 >= 2 << 20
    (m / "again").write_bytes(chunk)  # space is back
    unmount(mnt)
    assert check_fs(fs_cluster.addresses) == []


def test_link_limit_gives_emlink(fs_mount: Mount) -> None:
    m = fs_mount.path
    (m / "many").mkdir()
    (m / "f").write_bytes(b"x")
    ino, parent = os.stat(m / "f").st_ino, os.stat(m / "many").st_ino
    # LINK_MAX - 2 more names planted in one transaction (65,000 link() calls take minutes)
    conn = cowsqlpy.connect(fs_mount.servers, database=fs_mount.database)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO fs_edge (parent, name, ino) VALUES (?, ?, ?)",
            [(parent, b"l%05d" % i, ino) for i in range(LINK_MAX - 2)],
        )
        conn.execute("UPDATE fs_node SET nlink = ? WHERE ino = ?", (LINK_MAX - 1, ino))
        conn.commit()
    finally:
        conn.close()
    os.link(m / "f", m / "last")
    assert os.stat(m / "last").st_nlink == LINK_MAX
    # a listing of 64,998 entries: READDIRPLUS in hundreds of requests, resumed by offset
    assert sorted(os.listdir(m / "many")) == [f"l{i:05d}" for i in range(LINK_MAX - 2)]
    assert os.stat(m / "many" / "l04321").st_nlink == LINK_MAX
    assert err(os.link, m / "f", m / "over") == errno.EMLINK
    assert not (m / "over").exists()
    os.unlink(m / "last")
    os.link(m / "f", m / "again")  # one below the limit again


def test_read_ahead_is_raised_for_whole_mib_reads(fs_cluster, mount_factory) -> None:  # type: ignore[no-untyped-def]
    """The mount's read-ahead is what --read-ahead says (sysfs, as root, from the first
    open on), and reads through the larger window return the file's bytes."""
    if os.geteuid() != 0:
        pytest.skip("setting a mount's read-ahead (sysfs) needs root")
    from fusefs.binding import bdi_read_ahead  # mfusepy: present where mounts run

    make_fs(fs_cluster.addresses, capacity=64 << 20)
    default = mount_factory(fs_cluster.addresses, name="default")
    chosen = mount_factory(fs_cluster.addresses, "fs", "--read-ahead", "256", name="chosen")

    def read_ahead(m: Mount) -> str:
        with open(bdi_read_ahead(str(m.path))) as f:
            return f.read().strip()

    data = os.urandom(5 << 20 | 12345)
    (default.path / "f").write_bytes(data)  # set at the first open or create
    assert (chosen.path / "f").read_bytes() == data  # cold on this mount
    assert read_ahead(default) == "1024" and read_ahead(chosen) == "256"
    with open(chosen.path / "f", "rb") as f:
        f.seek(3 << 20)
        assert f.read(1 << 20) == data[3 << 20 : 4 << 20]
    unmount(default)
    unmount(chosen)
    assert check_fs(fs_cluster.addresses) == []
