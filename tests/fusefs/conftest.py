"""Real mounts: a cowsqlpy cluster, mkfs, and `python -m fusefs mount` daemons on
tmp_path mountpoints, unmounted in the finalisers."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import cowsqlpy
from cowsqlpy.testing import Cluster, wait_for
from fusefs import mkfs
from fusefs.fsck import fsck
from fusefs.testing import mount_command

ROOT = str(Path(__file__).resolve().parents[2])


def _fuse_unusable() -> str | None:
    if shutil.which("fusermount3") is None:
        return "fusermount3 not installed (Debian fuse3)"
    try:
        fd = os.open("/dev/fuse", os.O_RDWR)
    except OSError as exc:
        return f"/dev/fuse unusable: {exc}"
    os.close(fd)
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"mfusepy/libfuse3 unavailable: {exc}"
    return None


@pytest.fixture(scope="session")
def fuse_available() -> None:
    reason = _fuse_unusable()
    if reason:
        pytest.skip(reason)


@dataclass
class Mount:
    path: Path
    proc: subprocess.Popen[bytes]
    log: Path
    servers: list[str]
    database: str

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL the daemon (a crash): the kernel mount stays until `umount -l`."""
        self.proc.kill()
        self.proc.wait(10)
        lazy_unmount(self.path)


def _mounted(path: Path) -> bool:
    """Whether anything is mounted at `path` (a dead FUSE mount fails stat, so ask the table)."""
    target = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == target for line in f)


def lazy_unmount(path: Path) -> None:
    if _mounted(path):
        subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True)
    if _mounted(path):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def unmount(m: Mount) -> None:
    """SIGTERM (the daemon flushes and unmounts), then harder means."""
    if m.proc.poll() is None:
        m.proc.send_signal(signal.SIGTERM)
        try:
            m.proc.wait(30)
        except subprocess.TimeoutExpired:
            m.proc.kill()
            m.proc.wait(10)
    lazy_unmount(m.path)


@pytest.fixture
def fs_cluster(fuse_available: None, cluster_factory: Callable[..., Cluster]) -> Cluster:
    # elections at ~1.5 s: on a loaded 2-core machine a shorter timeout deposes leaders at random
    return cluster_factory(3, network_latency=0.1)


def make_fs(servers: list[str], database: str = "fs", **options: Any) -> None:
    conn = cowsqlpy.connect(servers, database=database)
    try:
        mkfs(conn, **options)
    finally:
        conn.close()


def check_fs(servers: list[str], database: str = "fs") -> list[str]:
    conn = cowsqlpy.connect(servers, database=database)
    try:
        return fsck(conn)
    finally:
        conn.close()


@pytest.fixture
def mount_factory(fuse_available: None, tmp_path: Path) -> Iterator[Callable[..., Mount]]:
    made: list[Mount] = []

    def mount(
        servers: list[str], database: str = "fs", *extra: str, name: str | None = None
    ) -> Mount:
        path = tmp_path / (name or f"mnt{len(made)}")
        path.mkdir(exist_ok=True)
        log = tmp_path / f"{path.name}.log"
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p),
        )
        cmd = mount_command(servers, path, "--log-file", str(log), "-v", *extra, database=database)
        with open(tmp_path / f"{path.name}.out", "ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        m = Mount(path, proc, log, servers, database)
        made.append(m)

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"mount exited with {proc.returncode}:\n{m.log_text()}")
            return os.path.ismount(path)

        wait_for(up, 60, f"mount at {path}")
        return m

    yield mount
    for m in reversed(made):
        unmount(m)


@pytest.fixture
def fs_mount(fs_cluster: Cluster, mount_factory: Callable[..., Mount]) -> Iterator[Mount]:
    """A filesystem on a 3-node cluster, mounted; fsck must be clean after the test."""
    make_fs(fs_cluster.addresses, capacity=256 << 20)
    m = mount_factory(fs_cluster.addresses)
    yield m
    unmount(m)
    problems = check_fs(fs_cluster.addresses)
    assert problems == [], problems


def wait_gone(path: Path, timeout: float = 10.0) -> None:
    def gone() -> bool:
        try:
            os.stat(path)
        except OSError as exc:
            return exc.errno == errno.ENOENT
        return False

    wait_for(gone, timeout, f"{path} gone")


@contextlib.contextmanager
def chdir(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def run(
    *cmd: str, cwd: Path | None = None, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(cmd, cwd=cwd, input=stdin, capture_output=True, timeout=120)
    assert proc.returncode == 0, (
        f"{cmd}: {proc.returncode}\n{proc.stdout.decode()}\n{proc.stderr.decode()}"
    )
    return proc
