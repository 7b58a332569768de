"""The command: mkfs, fsck, background mount, umount, signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import cowsqlpy
from cowsqlpy.app import App
from cowsqlpy.testing import Cluster, wait_for
from cowsqlpy.tls import make_cert
from fusefs.cli import main

from .conftest import ROOT, Mount, _mounted, check_fs, lazy_unmount, unmount


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run(
        [sys.executable, "-m", "fusefs", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_mkfs_creates_checks_and_refuses_other_databases(fs_cluster: Cluster) -> None:
    servers = ",".join(fs_cluster.addresses)
    first = cli("mkfs", "--cluster", servers, "--capacity", "64M", "--chunk-size", "32K")
    assert (
        first.returncode == 0
        and "created" in first.stdout
        and "chunk 32768 B, capacity 67108864 B" in first.stdout
    )
    again = cli("mkfs", "--cluster", servers)
    assert again.returncode == 0 and "found" in again.stdout
    conn = fs_cluster.connect("app", autocommit=True)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY)")
    refused = cli("mkfs", "--cluster", servers, "--database", "app")
    assert refused.returncode == 1 and "not a filesystem" in refused.stderr
    bad = cli("mkfs", "--cluster", servers, "--database", "x", "--chunk-size", "1000")
    assert bad.returncode == 1 and "power of two" in bad.stderr
    assert cli("fsck", "--cluster", servers).returncode == 0


# what each older format lacked: format 2 no unlink procedure, format 1 no procedures
# (in this order, each DROP checks that the upgrade before made what it drops)
OLDER_FORMATS = {
    2: ("fs_unlink_op_run", "fs_unlink_op"),
    1: ("fs_create_op_run", "fs_create_op", "fs_unlink_op_run", "fs_unlink_op"),
}


def test_older_formats_are_refused_until_upgraded(fs_cluster: Cluster) -> None:
    servers = ",".join(fs_cluster.addresses)
    assert cli("mkfs", "--cluster", servers).returncode == 0
    conn = cowsqlpy.connect(fs_cluster.addresses, database="fs", autocommit=True)
    try:
        for old, missing in OLDER_FORMATS.items():
            for name in missing:
                kind = "TRIGGER" if name.endswith("_run") else "VIEW"
                conn.execute(f"DROP {kind} {name}")
            conn.execute("UPDATE fs_superblock SET format = ?", (old,))
            refused = cli("mkfs" if old == 1 else "fsck", "--cluster", servers)  # one check each
            assert refused.returncode == 1
            want = f"format {old}, this fusefs reads format 3: run mkfs --upgrade"
            assert want in refused.stderr
            upgraded = cli("mkfs", "--upgrade", "--cluster", servers)
            assert upgraded.returncode == 0 and "format 3" in upgraded.stdout, upgraded.stderr
        assert cli("fsck", "--cluster", servers).returncode == 0
        conn.execute("DROP TRIGGER fs_unlink_op_run")
        damaged = cli("fsck", "--cluster", servers)
        assert damaged.returncode == 1 and "procedure missing" in damaged.stdout
        assert "fs_unlink_op_run" in damaged.stdout
        conn.execute("UPDATE fs_superblock SET format = 4")
        newer = cli("mkfs", "--upgrade", "--cluster", servers)
        assert newer.returncode == 1 and "a newer fusefs wrote it" in newer.stderr
    finally:
        conn.close()


@pytest.mark.parametrize("value", ["x", "64", "128,64", "0,8", "1,2,3"])
def test_mount_refuses_bad_snapshot_params(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["mount", "--embed-node", "--snapshot-params", value, str(tmp_path)])
    assert exited.value.code == 2
    assert "--snapshot-params" in capsys.readouterr().err


def test_fsck_finds_planted_damage(fs_cluster: Cluster) -> None:
    servers = ",".join(fs_cluster.addresses)
    assert cli("mkfs", "--cluster", servers).returncode == 0
    conn = cowsqlpy.connect(fs_cluster.addresses, database="fs", autocommit=True)
    try:
        conn.execute(
            "INSERT INTO fs_edge (parent, name, ino) VALUES (1, X'6c6f7374', 999)"
        )  # entry to nowhere
        conn.execute(
            "INSERT INTO fs_chunk (ino, idx, data) VALUES (998, 0, X'00')"
        )  # chunk of no inode
    finally:
        conn.close()
    result = cli("fsck", "--cluster", servers)
    assert result.returncode == 1
    assert (
        "entry pointing at no inode" in result.stdout and "chunk without an inode" in result.stdout
    )
    assert "used_bytes differs" not in result.stdout


def test_background_mount_flushes_on_sigterm(fs_cluster: Cluster, tmp_path: Path) -> None:
    servers = ",".join(fs_cluster.addresses)
    assert cli("mkfs", "--cluster", servers).returncode == 0
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        up = cli("mount", "--cluster", servers, "--log-file", str(tmp_path / "log"), str(mnt))
        assert up.returncode == 0, up.stderr
        pid = int(up.stdout.split("pid ")[1].split(",")[0])
        assert _mounted(mnt)
        fd = os.open(mnt / "f", os.O_CREAT | os.O_WRONLY)
        os.write(
            fd, b"buffered until close"
        )  # in the daemon's write-back buffer, not yet in the database
        os.kill(pid, signal.SIGTERM)  # libfuse unmounts, destroy flushes every open file
        wait_for(lambda: not _mounted(mnt), 30, "unmounted")
        try:
            os.close(fd)
        except OSError:
            pass
        wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 30, "daemon exited")
        assert check_fs(fs_cluster.addresses) == []
        up = cli("mount", "--cluster", servers, "--log-file", str(tmp_path / "log"), str(mnt))
        assert up.returncode == 0, up.stderr
        assert (mnt / "f").read_bytes() == b"buffered until close"  # flushed by the unmount
        down = cli("umount", str(mnt))
        assert down.returncode == 0, down.stderr
        wait_for(lambda: not _mounted(mnt), 30, "unmounted")
    finally:
        lazy_unmount(mnt)
    assert check_fs(fs_cluster.addresses) == []


def test_mkfs_and_mount_over_mutual_tls(
    mount_factory: Callable[..., Mount], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cluster whose nodes run with TLS: mkfs and the mount take --cert/--key; without
    them the command says it could not reach the cluster (one line, no traceback)."""
    cert = make_cert(tmp_path / "cert")
    app = App(tmp_path / "node", "127.0.0.1:0", tls=cert)
    try:
        app.ready(timeout=30)
        tls_args = ("--cert", str(cert.cert), "--key", str(cert.key))
        made = cli("mkfs", "--cluster", app.address, "--io-timeout", "5", *tls_args)
        assert made.returncode == 0, made.stderr
        plain = cli("fsck", "--cluster", app.address, "--io-timeout", "2")
        assert plain.returncode == 1 and "cowsqlfs: cluster error" in plain.stderr
        assert "Traceback" not in plain.stderr
        assert main(["fsck", "--cluster", app.address, "--cert", str(cert.cert)]) == 1
        assert "--cert and --key go together" in capsys.readouterr().err
        mnt = mount_factory([app.address], "fs", *tls_args)
        (mnt.path / "d").mkdir()
        (mnt.path / "d" / "f").write_bytes(b"over TLS")
        assert (mnt.path / "d" / "f").read_bytes() == b"over TLS"
        unmount(mnt)
        checked = cli("fsck", "--cluster", app.address, *tls_args)
        assert checked.returncode == 0 and "fsck: clean" in checked.stdout, checked.stdout
    finally:
        app.close()
