"""`python -m cowsqlpy node --cert --key --ca --rights`: a real App node process whose
front gives a read-only certificate reads only; the node's own certificate (a peer)
runs its App and writes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import cowsqlpy
from cowsqlpy.cli import READY_PREFIX
from cowsqlpy.errors import AccessDeniedError
from cowsqlpy.tls import TLSConfig

from .pki import make_pki


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, TLSConfig]:
    base = tmp_path / "pki"
    base.mkdir()
    return make_pki(base, ("node", "reader"))


def _runner(tmp_path: Path, node: TLSConfig, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cowsqlpy", "node", "--address", "127.0.0.1:0",
         "--dir", str(tmp_path / "node"), "--network-latency", "0.02", "--log-level", "WARNING",
         "--cert", str(node.cert), "--key", str(node.key), "--ca", str(node.ca), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.fixture
def runner(tmp_path: Path, pki: dict[str, TLSConfig]) -> Iterator[str]:
    proc = _runner(tmp_path, pki["node"], "--rights", "node=peer,reader=read")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith(READY_PREFIX):
            raise AssertionError(
                f"node did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}"
            )
        yield line.split("address=")[1].split()[0]
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_the_runners_rights(runner: str, pki: dict[str, TLSConfig]) -> None:
    owner = cowsqlpy.connect(runner, database="r", autocommit=True, tls=pki["node"])
    owner.execute("CREATE TABLE t (v TEXT)")
    owner.execute("INSERT INTO t VALUES ('x')")
    owner.close()
    reader = cowsqlpy.connect(runner, database="r", autocommit=True, tls=pki["reader"])
    assert reader.execute("SELECT v FROM t").fetchall() == [("x",)]
    with pytest.raises(AccessDeniedError):
        reader.execute("INSERT INTO t VALUES ('y')")
    reader.close()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--rights", "node=root"], "unknown access level"),
        (["--rights", "node"], "not CN=level"),
    ],
)
def test_bad_rights_are_refused_at_start(
    tmp_path: Path, pki: dict[str, TLSConfig], extra: list[str], message: str
) -> None:
    proc = _runner(tmp_path, pki["node"], *extra)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and message in err, err


def test_rights_without_a_certificate_are_refused(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cowsqlpy", "node", "--address", "127.0.0.1:0",
         "--dir", str(tmp_path / "node"), "--rights", "app=read"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and "--rights needs --cert" in proc.stderr, proc.stderr


def test_the_cert_tool_runs_from_the_package_cli(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "cowsqlpy", "tls"]
    made = subprocess.run(
        [*run, "make-ca", "--out", str(tmp_path / "ca")], capture_output=True, text=True, timeout=60
    )
    assert made.returncode == 0 and made.stderr == "", made.stderr
    cert = subprocess.run(
        [*run, "make-cert", "--out", str(tmp_path), "--ca", str(tmp_path / "ca"), "--cn", "app"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert cert.returncode == 0 and (tmp_path / "app.crt").exists(), cert.stderr
