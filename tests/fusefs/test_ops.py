"""The operations layer without FUSE (runs where /dev/fuse is missing): errno values,
write-back, sessions and orphans, against a real cluster."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

import cowsqlpy
from cowsqlpy.testing import Cluster
from fusefs import FileSystem, FsError, NotAFilesystemError, Store, mkfs
from fusefs.fsck import fsck


@pytest.fixture
def servers(cluster_factory: Callable[..., Cluster]) -> list[str]:
    cluster = cluster_factory(3, network_latency=0.1)
    conn = cowsqlpy.connect(cluster.addresses, database="fs")
    try:
        mkfs(conn, capacity=2 << 20)
    finally:
        conn.close()
    return list(cluster.addresses)


@contextlib.contextmanager
def operations(servers: list[str], mountpoint: str) -> Iterator[FileSystem]:
    """A mount's operations (no FUSE), closed with their store."""
    store = Store(servers, "fs", io_timeout=10)
    filesystem = FileSystem(store, mountpoint)
    try:
        yield filesystem
    finally:
        filesystem.close()
        store.close()


@pytest.fixture
def fs(servers: list[str]) -> Iterator[FileSystem]:
    with operations(servers, "/test") as filesystem:
        yield filesystem
    conn = cowsqlpy.connect(servers, database="fs")
    try:
        assert fsck(conn) == []
    finally:
        conn.close()


def code(fn: Callable[..., object], *args: object) -> int | None:
    with pytest.raises(FsError) as info:
        fn(*args)
    return info.value.errno


def test_errno_values(fs: FileSystem) -> None:
    fs.mkdir("/d", 0o755, 0, 0)
    fs.mknod("/d/f", 0o100644, 0, 0, 0)
    assert code(fs.getattr, "/nope") == errno.ENOENT
    assert code(fs.mkdir, "/d", 0o755, 0, 0) == errno.EEXIST
    assert code(fs.rmdir, "/d") == errno.ENOTEMPTY
    assert code(fs.unlink, "/d") == errno.EISDIR
    assert code(fs.rmdir, "/d/f") == errno.ENOTDIR
    assert code(fs.mkdir, "/d/f/x", 0o755, 0, 0) == errno.ENOTDIR
    assert code(fs.mkdir, "/" + "x" * 256, 0o755, 0, 0) == errno.ENAMETOOLONG
    assert code(fs.rename, "/d", "/d/sub", 0) == errno.EINVAL
    assert code(fs.rename, "/d/f", "/d", 0) == errno.EISDIR
    assert code(fs.rename, "/d/f", "/d/g", 3) == errno.EINVAL  # NOREPLACE | EXCHANGE
    assert code(fs.link, "/d/l", "/d") == errno.EPERM
    assert code(fs.readlink, "/d/f") == errno.EINVAL
    assert code(fs.truncate, "/d/f", 1 << 50) == errno.EFBIG
    assert code(fs.getxattr, "/d/f", "user.x") == errno.ENODATA
    assert code(fs.setxattr, "/d/f", "system.posix_acl_access", b"", 0) == errno.EOPNOTSUPP
    fs.setxattr("/d/f", "user.x", b"1", 1)
    assert code(fs.setxattr, "/d/f", "user.x", b"1", 1) == errno.EEXIST
    assert code(fs.setxattr, "/d/f", "user.y", b"1", 2) == errno.ENODATA


def test_write_back_and_capacity(fs: FileSystem) -> None:
    fh = fs.create("/f", 0o644, os.O_WRONLY, 0, 0)
    fs.write(fh, b"a" * 100_000, 0)
    assert fs.getattr("/f")["st_size"] == 100_000  # the buffered size, before any flush
    assert fs.read(fh, 10, 99_995) == b"aaaaa"
    fs.write(fh, b"z", 3 << 20 if False else 500_000)  # a hole in between
    fs.release(fh)
    fh, keep = fs.open("/f", os.O_RDONLY)
    assert keep  # this mount wrote it last: the page cache may stay
    assert fs.read(fh, 8, 499_996) == b"\0\0\0\0z"
    fs.release(fh)
    big = fs.create("/big", 0o644, os.O_WRONLY, 0, 0)
    with pytest.raises(FsError) as info:
        for i in range(40):
            fs.write(big, os.urandom(64 << 10), i << 16)
    assert info.value.errno == errno.ENOSPC
    fs.release(big)
    fs.unlink("/big")
    assert fs.statfs()["f_bavail"] * 4096 >= (2 << 20) - 200_000


def test_unlinked_open_file_is_kept_then_freed(fs: FileSystem, servers: list[str]) -> None:
    fh = fs.create("/o", 0o644, os.O_RDWR, 0, 0)
    fs.write(fh, b"orphan", 0)
    fs.unlink("/o")
    assert code(fs.getattr, "/o") == errno.ENOENT
    assert fs.read(fh, 6, 0) == b"orphan"
    conn = cowsqlpy.connect(servers, database="fs")
    try:
        assert conn.execute("SELECT count(*) FROM fs_sustained").fetchone() == (1,)
        fs.release(fh)
        assert conn.execute("SELECT count(*) FROM fs_sustained").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM fs_node WHERE nlink = 0").fetchone() == (0,)
    finally:
        conn.close()


def test_refuses_a_database_without_filesystem(cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(3, network_latency=0.1)
    store = Store(cluster.addresses, "empty", io_timeout=5)
    try:
        with pytest.raises(NotAFilesystemError):
            FileSystem(store)
    finally:
        store.close()


def test_a_failed_flush_leaks_no_reservation(fs: FileSystem, servers: list[str]) -> None:
    other_store = Store(servers, "fs", io_timeout=10)
    other = FileSystem(
        other_store, "/other"
    )  # a second mount: fs does not see its usage until it asks
    try:
        fh = fs.create("/mine", 0o644, os.O_WRONLY, 0, 0)
        fs.write(fh, os.urandom(900 << 10), 0)  # fits by what fs knows; buffered
        theirs = other.create("/theirs", 0o644, os.O_WRONLY, 0, 0)
        other.write(theirs, os.urandom(1400 << 10), 0)
        other.release(theirs)
        assert code(fs.release, fh) == errno.ENOSPC  # the flush is the authority
        other.unlink("/theirs")
        fh = fs.create("/again", 0o644, os.O_WRONLY, 0, 0)
        fs.write(fh, os.urandom(1200 << 10), 0)  # refused if the failed 900 KiB were still counted
        fs.release(fh)
    finally:
        other.close()
        other_store.close()


def test_concurrent_creates_share_transactions(fs: FileSystem) -> None:
    """Creates of many threads go in shared engine transactions; a name two threads
    create at once exists once (O_EXCL: the other gets EEXIST)."""
    for d in range(4):
        fs.mkdir(f"/d{d}", 0o2775, 0, 7)  # setgid: the group is inherited
    before = fs.store.batches
    barrier = threading.Barrier(16)

    def create(i: int) -> int | str:
        barrier.wait()
        path = "/d0/same" if i % 4 == 0 else f"/d{i % 4}/f{i}"
        try:
            fh = fs.create(path, 0o640, os.O_WRONLY | os.O_EXCL, 0, 0)
        except FsError as exc:
            return errno.errorcode[exc.errno or 0]
        fs.release(fh)
        return fs.getattr(path)["st_gid"]

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(create, range(16)))
    same = sorted(str(r) for i, r in enumerate(results) if i % 4 == 0)
    assert same == ["7", "EEXIST", "EEXIST", "EEXIST"]
    assert all(r == 7 for i, r in enumerate(results) if i % 4)
    assert sorted(name for name, _ in fs.readdir("/d1"))[2:] == [f"f{i}" for i in (1, 13, 5, 9)]
    assert fs.store.batches > before
    assert fs.statfs()["f_files"] - fs.statfs()["f_ffree"] == 1 + 4 + 13


def test_read_ahead_never_serves_stale_data(fs: FileSystem) -> None:
    cs = fs.chunk_size
    fh = fs.create("/r", 0o644, os.O_RDWR, 0, 0)
    for i in range(24):
        fs.write(fh, bytes([i]) * cs, i * cs)
    fs.flush(fh)
    fs.release(fh)
    fh, _ = fs.open("/r", os.O_RDWR)
    got = bytearray(fs.read(fh, 2 * cs, 0))
    got += fs.read(fh, 2 * cs, 2 * cs)  # sequential: the next window is being fetched
    fs.write(fh, b"new", 20 * cs)  # lands in that window
    while len(got) < 24 * cs:
        got += fs.read(fh, 2 * cs, len(got))
    want = bytearray(b"".join(bytes([i]) * cs for i in range(24)))
    want[20 * cs : 20 * cs + 3] = b"new"
    assert got == want
    fs.release(fh)


def test_a_background_flush_error_reaches_the_next_call(fs: FileSystem, servers: list[str]) -> None:
    other_store = Store(servers, "fs", io_timeout=10)
    other = FileSystem(other_store, "/other")
    try:
        fh = fs.create("/mine", 0o644, os.O_WRONLY, 0, 0)
        fs.write(fh, os.urandom(900 << 10), 0)  # buffered: the buffer is not full yet
        theirs = other.create("/theirs", 0o644, os.O_WRONLY, 0, 0)
        other.write(theirs, os.urandom(1400 << 10), 0)
        other.release(theirs)
        fs.write(fh, os.urandom(200 << 10), 900 << 10)  # fills the buffer: flushed behind
        with pytest.raises(FsError) as info:
            fs.write(fh, b"more", 1100 << 10)
            fs.fsync(fh)
        assert info.value.errno == errno.ENOSPC
        assert code(fs.release, fh) == errno.ENOSPC  # the data is still there, still too big
        other.unlink("/theirs")
        fh = fs.create("/again", 0o644, os.O_WRONLY, 0, 0)
        fs.write(fh, os.urandom(1200 << 10), 0)  # nothing of the failed flush is still counted
        fs.release(fh)
    finally:
        other.close()
        other_store.close()


def lookup_then_create(fs: FileSystem, path: str, flags: int = os.O_WRONLY) -> int:
    """What the kernel sends for open(O_CREAT) of a new name: LOOKUP (a miss), CREATE."""
    assert code(fs.getattr, path) == errno.ENOENT
    return fs.create(path, 0o640, flags, 0, 0)


def test_creates_after_a_lookup_share_one_statement(fs: FileSystem) -> None:
    """A create right after the lookup that missed is one request of the create
    procedure, shared by the threads' creates (no transaction of its own)."""
    for d in range(4):
        fs.mkdir(f"/d{d}", 0o2775, 0, 7)  # setgid: the group is inherited
    assert code(fs.getattr, "/d0/sub") == errno.ENOENT
    fs.mkdir("/d0/sub", 0o755, 0, 0)  # the procedure too: reserves this mount's inode numbers
    before, commits = fs.store.batches, fs.store.commits
    barrier = threading.Barrier(16)

    def create(i: int) -> int:
        path = f"/d{i % 4}/f{i}"
        barrier.wait()
        fs.release(lookup_then_create(fs, path))
        return fs.getattr(path)["st_gid"]

    with ThreadPoolExecutor(16) as pool:
        assert list(pool.map(create, range(16))) == [7] * 16
    assert fs.store.commits == commits  # none fell back to a transaction
    assert fs.store.batches > before  # several creates in one statement
    assert sorted(name for name, _ in fs.readdir("/d1"))[2:] == [f"f{i}" for i in (1, 13, 5, 9)]
    assert fs.statfs()["f_files"] - fs.statfs()["f_ffree"] == 1 + 5 + 16
    assert fs.getattr("/d0")["st_nlink"] == 3 and fs.getattr("/d1")["st_nlink"] == 2


@pytest.fixture
def other(servers: list[str]) -> Iterator[FileSystem]:
    """A second mount's operations on the same filesystem."""
    with operations(servers, "/other") as filesystem:
        yield filesystem


def test_a_create_sees_what_another_mount_did_since_its_lookup(
    fs: FileSystem, other: FileSystem
) -> None:
    fs.mkdir("/d", 0o755, 0, 0)
    assert code(fs.getattr, "/d/x") == errno.ENOENT
    other.chown("/d", -1, 7)
    other.chmod("/d", 0o2755)  # setgid since the lookup: the new file takes group 7
    fs.release(fs.create("/d/x", 0o644, os.O_WRONLY, 0, 0))
    assert fs.getattr("/d/x")["st_gid"] == 7
    mkdir_gid = [0]
    assert code(fs.getattr, "/d/sub") == errno.ENOENT
    fs.mkdir("/d/sub", 0o755, 0, 0)
    mkdir_gid[0] = fs.getattr("/d/sub")["st_gid"]
    assert mkdir_gid == [7] and fs.getattr("/d/sub")["st_mode"] & 0o2000
    assert code(fs.getattr, "/d/y") == errno.ENOENT
    other.release(other.create("/d/y", 0o600, os.O_WRONLY, 0, 0))  # the name taken since
    with pytest.raises(FsError) as info:
        fs.create("/d/y", 0o644, os.O_WRONLY | os.O_EXCL, 0, 0)
    assert info.value.errno == errno.EEXIST
    fs.release(fs.create("/d/y", 0o644, os.O_WRONLY, 0, 0))  # without O_EXCL: opens it
    assert fs.getattr("/d/y")["st_mode"] & 0o777 == 0o600
    assert code(fs.getattr, "/e/x") == errno.ENOENT
    fs.mkdir("/e", 0o755, 0, 0)
    assert code(fs.getattr, "/e/x") == errno.ENOENT
    other.rmdir("/e")  # the directory gone since the lookup
    assert code(fs.create, "/e/x", 0o644, os.O_WRONLY, 0, 0) == errno.ENOENT
    assert code(fs.getattr, "/e") == errno.ENOENT


def test_concurrent_unlinks_share_one_statement_each_with_its_outcome(
    fs: FileSystem, other: FileSystem
) -> None:
    """Unlinks of many threads are rows of the unlink procedure in shared statements
    (no transaction of their own); each frees, keeps (open) or unlinks one of several
    names as a lone unlink would, and one raced by another mount gets its own ENOENT."""
    for d in range(4):
        fs.mkdir(f"/d{d}", 0o755, 0, 0)
    for i in range(16):
        fh = fs.create(f"/d{i % 4}/f{i}", 0o644, os.O_WRONLY, 0, 0)
        fs.write(fh, b"x" * 1000, 0)
        fs.release(fh)
    fs.link("/d0/kept-name", "/d1/f1")  # f1 has two names: unlinking one keeps the inode
    fs.setxattr("/d2/f2", "user.k", b"v" * 100, 0)  # freed with its inode (fsck: the space)
    still_open = fs.open("/d3/f3", os.O_RDONLY)[0]
    used = fs.statfs()["f_bfree"]
    barrier = threading.Barrier(16)

    def unlink(i: int) -> str:
        path = f"/d{i % 4}/f{i}"
        fs.getattr(path)  # each read before another mount's unlink of f15
        barrier.wait()
        if i == 15:
            other.unlink(path)
        try:
            fs.unlink(path)
        except FsError as exc:
            return errno.errorcode[exc.errno or 0]
        return "ok"

    before, commits = fs.store.batches, fs.store.commits
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(unlink, range(16)))
    assert results == ["ok"] * 15 + ["ENOENT"]
    assert fs.store.batches > before  # several unlinks in one statement
    assert fs.store.commits - commits <= 1  # only the raced one fell back to a transaction
    assert all(len(fs.readdir(f"/d{d}")) == 2 for d in (1, 2, 3))
    assert fs.getattr("/d0/kept-name")["st_nlink"] == 1
    assert fs.read(still_open, 10, 0) == b"x" * 10  # kept while open
    assert fs.statfs()["f_bfree"] > used and fs.statfs()["f_files"] - fs.statfs()["f_ffree"] == 7
    fs.release(still_open)
    assert fs.statfs()["f_files"] - fs.statfs()["f_ffree"] == 6  # root, 4 dirs, kept-name


def test_the_unlink_procedure_refuses_an_entry_changed_since_it_was_read(
    fs: FileSystem, servers: list[str]
) -> None:
    fs.release(fs.create("/f", 0o644, os.O_WRONLY, 0, 0))
    fs.mkdir("/d", 0o755, 0, 0)
    f, d = fs.getattr("/f")["st_ino"], fs.getattr("/d")["st_ino"]
    conn = cowsqlpy.connect(servers, database="fs", autocommit=True)
    try:
        for row in (
            (1, b"f", f, 2, None, 1),  # another link count than the entry's inode has
            (1, b"f", f + 100, 1, None, 1),  # the name holds another inode
            (1, b"d", d, 2, None, 1),  # a directory
        ):
            with pytest.raises(cowsqlpy.IntegrityError, match="fs_unlink_op: entry changed"):
                conn.execute("INSERT INTO fs_unlink_op VALUES (?, ?, ?, ?, ?, ?)", row)
    finally:
        conn.close()
    assert fs.getattr("/f")["st_nlink"] == 1 and fs.getattr("/d")["st_nlink"] == 2


def test_a_flush_of_more_chunks_than_one_statement_takes(
    cluster_factory: Callable[..., Cluster],
) -> None:
    from fusefs.writeback import ROWS_PER_STATEMENT

    cluster = cluster_factory(1)
    conn = cowsqlpy.connect(cluster.addresses, database="fs")
    try:
        mkfs(conn, capacity=8 << 20, chunk_size=4096)
    finally:
        conn.close()
    chunks = 2 * ROWS_PER_STATEMENT + 5  # three statements of chunks in one flush
    data = bytearray(os.urandom(chunks * 4096))
    with operations(list(cluster.addresses), "/test") as fs:
        fh = fs.create("/f", 0o644, os.O_RDWR, 0, 0)
        fs.write(fh, bytes(data), 0)
        fs.fsync(fh)
        zeroed = range(1, 2 * ROWS_PER_STATEMENT + 2)  # stored chunks dropped: a statement each 64
        for i in zeroed:
            data[i * 4096 : (i + 1) * 4096] = bytes(4096)
            fs.write(fh, bytes(4096), i * 4096)
        fs.release(fh)
        fh, _ = fs.open("/f", os.O_RDONLY)
        fs.release(fh)  # a fresh handle reads what is stored, not the buffers
        fh, _ = fs.open("/f", os.O_RDONLY)
        assert fs.read(fh, len(data), 0) == bytes(data)
        attrs = fs.getattr("/f")
        assert attrs["st_size"] == len(data)
        assert attrs["st_blocks"] * 512 == (chunks - len(zeroed)) * 4096
        fs.release(fh)
    conn = cowsqlpy.connect(cluster.addresses, database="fs")
    try:
        assert fsck(conn) == []
        stored = conn.execute("SELECT count(*) FROM fs_chunk").fetchone()[0]
        assert stored == chunks - len(zeroed)
    finally:
        conn.close()


def test_an_unlink_of_a_file_just_made_reads_nothing_unless_refused(
    fs: FileSystem, other: FileSystem
) -> None:
    """A file this mount just created is unlinked with one statement and no read (what
    the create left is known); when another mount changed it since (a second name), the
    procedure refuses and the unlink reads the entry and goes on as a lone one would."""
    fs.mkdir("/d", 0o755, 0, 0)
    fs.getattr("/d")  # libfuse's, right after the mkdir
    assert code(fs.getattr, "/d/w") == errno.ENOENT
    fs.release(fs.create("/d/w", 0o644, os.O_WRONLY, 0, 0))  # reserves inode numbers
    fs.getattr("/d")  # the kernel's, before a lookup below it: the directory is read
    commits, reads = fs.store.commits, [0]
    read = fs.store.read

    def counted(fn: Callable[..., object], **kwargs: object) -> object:
        reads[0] += 1
        return read(fn, **kwargs)  # type: ignore[arg-type]

    for name in ("a", "b"):  # as through the kernel: the lookup that misses, the create
        assert code(fs.getattr, f"/d/{name}") == errno.ENOENT
        fs.release(fs.create(f"/d/{name}", 0o644, os.O_WRONLY, 0, 0))
    assert fs.store.commits == commits  # one statement each, no transaction
    other.link("/d/b2", "/d/b")  # b has two names since this mount made it
    fs.store.read = counted  # type: ignore[method-assign]
    try:
        fs.unlink("/d/a")
        assert reads[0] == 0
        fs.unlink("/d/b")  # refused (nlink 2, not 1): read, then one statement
        assert reads[0] >= 1
    finally:
        fs.store.read = read  # type: ignore[method-assign]
    assert [name for name, _ in fs.readdir("/d")][2:] == ["b2", "w"]
    assert other.getattr("/d/b2")["st_nlink"] == 1
    assert code(other.getattr, "/d/a") == errno.ENOENT
