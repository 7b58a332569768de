"""The mount against a local directory (ext4 here): the same random operations on both
must give the same results, the same errno values and the same trees."""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from .conftest import Mount, check_fs
from .posix import RENAME_EXCHANGE, RENAME_NOREPLACE, renameat2

DIRS = ["", "", "p", "p/q"]  # each case starts with p/q, r and a few files
NAMES = ["a", "b", "c", "q", "r"]
ANY_PATH = st.builds(
    lambda d, n: f"{d}/{n}" if d else n, st.sampled_from(DIRS), st.sampled_from(NAMES)
)
PATHS = (
    st.sampled_from(["a", "p/b"]) | ANY_PATH
)  # half of the draws name a file that exists at the start
DATA = st.binary(max_size=2000) | st.builds(
    lambda n, b: bytes([b]) * n, st.integers(0, 150_000), st.integers(0, 255)
)
OFFSETS = st.sampled_from([0, 1, 4095, 65535, 65536, 100_000, 200_000])
MODES = st.sampled_from([0o644, 0o600, 0o755, 0o4755, 0o2750, 0o1777])
XATTR = st.sampled_from(["user.one", "user.two", "trusted.t"])

ROOTS: dict[
    str, Any
] = {}  # set by the test: "mount" and "local" parents of each case's directories


def outcome(fn: Callable[[Path], Any], root: Path) -> tuple[str, Any]:
    try:
        return "ok", fn(root)
    except OSError as exc:
        return "error", errno.errorcode.get(exc.errno or 0, exc.errno)


def tree(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            s = p.lstat()
            if stat.S_ISLNK(s.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(s.st_mode):
                out[rel] = ("dir", stat.S_IMODE(s.st_mode), s.st_nlink)
            else:
                out[rel] = (
                    "file",
                    stat.S_IMODE(s.st_mode),
                    s.st_nlink,
                    s.st_size,
                    p.read_bytes(),
                    sorted((k, os.getxattr(p, k)) for k in os.listxattr(p)),
                )
    return out


class SameAsLocal(RuleBasedStateMachine):
    cases = 0

    @initialize()
    def start(self) -> None:
        SameAsLocal.cases += 1
        self.roots = [ROOTS["mount"] / f"case{self.cases}", ROOTS["local"] / f"case{self.cases}"]
        for r in self.roots:
            r.mkdir()
            (r / "p" / "q").mkdir(parents=True)
            (r / "r").mkdir()
            (r / "a").write_bytes(b"A" * 70_000)
            (r / "p" / "b").write_bytes(b"B" * 10)
        self.kept: list[tuple[int, int]] = []  # (mount fd, local fd) of open files

    def both(self, fn: Callable[[Path], Any]) -> Any:
        got, want = (outcome(fn, r) for r in self.roots)
        assert got == want, f"mount gave {got}, local {want}"
        return got

    @rule(path=PATHS, data=DATA)
    def create(self, path: str, data: bytes) -> None:
        def op(r: Path) -> int:
            fd = os.open(r / path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            try:
                return os.write(fd, data)
            finally:
                os.close(fd)

        self.both(op)

    @rule(path=PATHS, offset=OFFSETS, data=DATA, append=st.booleans())
    def write_at(self, path: str, offset: int, data: bytes, append: bool) -> None:
        def op(r: Path) -> int:
            fd = os.open(r / path, os.O_WRONLY | (os.O_APPEND if append else 0))
            try:
                return os.pwrite(fd, data, offset) if not append else os.write(fd, data)
            finally:
                os.close(fd)

        self.both(op)

    @rule(path=PATHS, offset=OFFSETS, size=st.sampled_from([1, 4096, 70_000, 1 << 20]))
    def read(self, path: str, offset: int, size: int) -> None:
        def op(r: Path) -> bytes:
            fd = os.open(r / path, os.O_RDONLY)
            try:
                return os.pread(fd, size, offset)
            finally:
                os.close(fd)

        self.both(op)

    @rule(path=PATHS, size=OFFSETS)
    def truncate(self, path: str, size: int) -> None:
        self.both(lambda r: os.truncate(r / path, size))

    @rule(src=PATHS, dst=PATHS, flags=st.sampled_from([0, 0, RENAME_NOREPLACE, RENAME_EXCHANGE]))
    def rename(self, src: str, dst: str, flags: int) -> None:
        self.both(lambda r: renameat2(r / src, r / dst, flags))

    @rule(src=PATHS, dst=PATHS)
    def link(self, src: str, dst: str) -> None:
        self.both(lambda r: os.link(r / src, r / dst, follow_symlinks=False))

    @rule(path=PATHS)
    def unlink(self, path: str) -> None:
        self.both(lambda r: os.unlink(r / path))

    @rule(path=PATHS)
    def mkdir(self, path: str) -> None:
        self.both(lambda r: os.mkdir(r / path, 0o755))

    @rule(path=PATHS)
    def rmdir(self, path: str) -> None:
        self.both(lambda r: os.rmdir(r / path))

    @rule(path=PATHS, mode=MODES)
    def chmod(self, path: str, mode: int) -> None:
        self.both(lambda r: os.chmod(r / path, mode))

    @rule(path=PATHS, to=st.sampled_from(["a", "../b", "p/q", "nowhere", "/etc/hostname"]))
    def symlink(self, path: str, to: str) -> None:
        self.both(lambda r: os.symlink(to, r / path))

    @rule(path=PATHS)
    def readlink(self, path: str) -> None:
        self.both(lambda r: os.readlink(r / path))

    @rule(
        path=PATHS,
        name=XATTR,
        value=st.binary(max_size=100),
        flags=st.sampled_from([0, os.XATTR_CREATE, os.XATTR_REPLACE]),
    )
    def setxattr(self, path: str, name: str, value: bytes, flags: int) -> None:
        self.both(lambda r: os.setxattr(r / path, name, value, flags, follow_symlinks=False))

    @rule(path=PATHS, name=XATTR)
    def getxattr(self, path: str, name: str) -> None:
        self.both(lambda r: os.getxattr(r / path, name, follow_symlinks=False))

    @rule(path=PATHS, name=XATTR)
    def removexattr(self, path: str, name: str) -> None:
        self.both(lambda r: os.removexattr(r / path, name, follow_symlinks=False))

    @rule(path=st.sampled_from(DIRS))
    def readdir(self, path: str) -> None:
        self.both(lambda r: sorted(os.listdir(r / path)))

    @rule(path=PATHS)
    def stat(self, path: str) -> None:
        def op(r: Path) -> tuple[int, ...]:
            s = os.lstat(r / path)
            size = (
                0 if stat.S_ISDIR(s.st_mode) else s.st_size
            )  # directory sizes are the fs's own business
            return s.st_mode, s.st_nlink, size

        self.both(op)

    @precondition(lambda self: len(self.kept) < 3)
    @rule(path=PATHS)
    def open_and_keep(self, path: str) -> None:
        got = self.both(lambda r: os.close(os.open(r / path, os.O_RDWR)))
        if got[0] == "ok":
            fds = [os.open(r / path, os.O_RDWR) for r in self.roots]
            self.kept.append((fds[0], fds[1]))

    @precondition(lambda self: bool(self.kept))
    @rule(data=st.data(), write=DATA, offset=OFFSETS)
    def use_kept(self, data: st.DataObject, write: bytes, offset: int) -> None:
        """Reads and writes through a handle opened earlier (its file may be unlinked or renamed over since)."""
        fds = data.draw(st.sampled_from(self.kept))
        got = [os.pwrite(fd, write, offset) for fd in fds]
        assert got[0] == got[1]
        reads = [os.pread(fd, 300_000, 0) for fd in fds]
        assert reads[0] == reads[1]
        stats = [os.fstat(fd) for fd in fds]
        assert [(s.st_nlink, s.st_size, s.st_mode) for s in stats] == [
            (stats[1].st_nlink, stats[1].st_size, stats[1].st_mode)
        ] * 2

    @precondition(lambda self: bool(self.kept))
    @rule()
    def close_kept(self) -> None:
        for fd in self.kept.pop():
            os.close(fd)

    @invariant()
    def no_stray_handles(self) -> None:
        assert len(self.kept) <= 3

    def teardown(self) -> None:
        for fds in self.kept:
            for fd in fds:
                os.close(fd)
        if hasattr(self, "roots"):
            assert tree(self.roots[0]) == tree(self.roots[1])
            assert check_fs(ROOTS["servers"]) == []  # before the case's files are gone
            for r in self.roots:
                shutil.rmtree(r)


def test_mount_behaves_as_a_local_filesystem(fs_mount: Mount, tmp_path: Path) -> None:
    local = tmp_path / "local"
    local.mkdir()
    ROOTS.update(mount=fs_mount.path, local=local, servers=fs_mount.servers)
    run_state_machine_as_test(
        SameAsLocal,
        settings=settings(
            max_examples=20,
            stateful_step_count=30,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
    assert check_fs(fs_mount.servers) == []
