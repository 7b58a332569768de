"""Everyday tools inside a real mount."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from .conftest import ROOT, Mount, run

SOURCE = Path(ROOT) / "kvstore"  # a small source tree


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed")
    return path


def test_cp_diff_tar_rsync_find_du(fs_mount: Mount, tmp_path: Path) -> None:
    mnt = fs_mount.path
    run("cp", "-a", str(SOURCE), str(mnt / "src"))
    run("diff", "-r", str(SOURCE), str(mnt / "src"))
    run(tool("tar"), "-cf", str(mnt / "src.tar"), "-C", str(mnt), "src")
    (mnt / "x").mkdir()
    run("tar", "-xf", str(mnt / "src.tar"), "-C", str(mnt / "x"))
    run("diff", "-r", str(SOURCE), str(mnt / "x" / "src"))
    run(tool("rsync"), "-a", f"{SOURCE}/", str(mnt / "rs"))
    run("diff", "-r", str(SOURCE), str(mnt / "rs"))
    run("rsync", "-a", "--delete", f"{mnt / 'rs'}/", str(tmp_path / "back"))  # and out again
    run("diff", "-r", str(SOURCE), str(tmp_path / "back"))
    found = run("find", str(mnt / "src"), "-name", "*.py").stdout.decode().split()
    expected = [str(p) for p in SOURCE.rglob("*.py")]
    assert sorted(f.replace(str(mnt / "src"), str(SOURCE)) for f in found) == sorted(expected)
    du = int(run("du", "-sk", str(mnt / "src")).stdout.split()[0])
    assert du >= sum(p.stat().st_size for p in SOURCE.rglob("*") if p.is_file()) // 1024 // 2
    # tar keeps modes and mtimes: the copies match the source's
    for p in SOURCE.rglob("*"):
        copy = mnt / "x" / "src" / p.relative_to(SOURCE)
        s, c = p.lstat(), copy.lstat()
        assert (stat.S_IMODE(s.st_mode), int(s.st_mtime)) == (
            stat.S_IMODE(c.st_mode),
            int(c.st_mtime),
        ), p


def test_links_and_fifo(fs_mount: Mount) -> None:
    mnt = fs_mount.path
    (mnt / "a").write_bytes(b"data")
    run("ln", str(mnt / "a"), str(mnt / "b"))
    run("ln", "-s", "a", str(mnt / "c"))
    assert os.readlink(mnt / "c") == "a"
    assert (mnt / "c").read_bytes() == b"data"
    assert (
        os.stat(mnt / "a").st_nlink == 2 and os.stat(mnt / "a").st_ino == os.stat(mnt / "b").st_ino
    )
    (mnt / "a").unlink()
    assert os.stat(mnt / "b").st_nlink == 1
    assert not (mnt / "c").exists()  # dangling now
    run("mkfifo", str(mnt / "fifo"))
    assert stat.S_ISFIFO(os.stat(mnt / "fifo").st_mode)
    # a FIFO on the mount works as one (the kernel serves it)
    reader = subprocess.Popen(["cat", str(mnt / "fifo")], stdout=subprocess.PIPE)
    with open(mnt / "fifo", "wb") as w:
        w.write(b"through the pipe")
    assert reader.communicate(timeout=30)[0] == b"through the pipe"


def test_git(fs_mount: Mount) -> None:
    git = tool("git")
    repo = fs_mount.path / "repo"
    shutil.copytree(SOURCE, repo)
    env = ["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"]
    run(git, *env, "init", "-q", cwd=repo)
    run(git, *env, "add", "-A", cwd=repo)
    run(git, *env, "commit", "-qm", "first", cwd=repo)
    (repo / "api.py").write_text("changed\n")
    run(git, *env, "commit", "-qam", "second", cwd=repo)
    run(git, "fsck", "--strict", cwd=repo)
    assert run(git, "log", "--oneline", cwd=repo).stdout.count(b"\n") == 2
    run(git, "gc", "-q", cwd=repo)
    run(git, "fsck", "--strict", cwd=repo)


def test_sqlite3(fs_mount: Mount) -> None:
    sqlite = tool("sqlite3")
    db = str(fs_mount.path / "app.db")
    rows = [b"INSERT INTO t (v) VALUES ('row %d');" % i for i in range(500)]
    # 20 transactions of their own (journal, fsync, lock each), then one of 480 rows
    script = (
        b"CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT);"
        + b"".join(rows[:20])
        + b"BEGIN;"
        + b"".join(rows[20:])
        + b"COMMIT;"
    )
    run(sqlite, db, stdin=script)
    run(
        sqlite,
        db,
        stdin=b"BEGIN; UPDATE t SET v = v || '!'; COMMIT; PRAGMA journal_mode=WAL; INSERT INTO t (v) VALUES ('wal');",
    )
    out = (
        run(sqlite, db, "SELECT count(*), sum(length(v)) FROM t; PRAGMA integrity_check;")
        .stdout.decode()
        .split()
    )
    assert out == [f"501|{sum(len(f'row {i}!') for i in range(500)) + 3}", "ok"]
