"""Three node processes, each with its own TLS front (Raft through TLS), as deployed: a
DB-API client over TLS keeps writing through a SIGKILL of the leader's process, and every
acknowledged write is there afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import cowsqlpy
from cowsqlpy import protocol as P
from cowsqlpy.client import SyncClient
from cowsqlpy.node import BOOTSTRAP_ID
from cowsqlpy.testing import wait_for
from cowsqlpy.tls import TLSConfig

from .conftest import _ROOT, _free_port

IDS = (BOOTSTRAP_ID, 7002, 7003)


class Proc:
    def __init__(self, base: Path, node_id: int, tls: TLSConfig) -> None:
        self.id = node_id
        self.address = f"127.0.0.1:{_free_port()}"
        self.log = base / f"{node_id}.log"
        env = dict(os.environ, PYTHONPATH=str(_ROOT), PYTHONUNBUFFERED="1")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.security.engine_child",
                    self.address,
                    f"127.0.0.1:{_free_port()}",
                    str(base / f"n{node_id}"),
                    "--id",
                    str(node_id),
                    "--front",
                    "--cert",
                    str(tls.cert),
                    "--key",
                    str(tls.key),
                ],
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                cwd=str(base),
            )
        assert self.proc.stdout is not None and b"ready" in self.proc.stdout.readline(), (
            self.log.read_text()
        )

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def tls_processes(tmp_path: Path, cluster_cert: TLSConfig) -> Iterator[list[Proc]]:
    procs: list[Proc] = []
    try:
        for node_id in IDS:
            procs.append(Proc(tmp_path, node_id, cluster_cert))
        with SyncClient([procs[0].address], tls=cluster_cert) as admin:
            wait_for(lambda: admin.leader() is not None, 15.0, "a leader")
            for p in procs[1:]:
                admin.add(p.id, p.address, P.VOTER)
        yield procs
    finally:
        for p in procs:
            p.close()


def test_writes_survive_a_leader_kill_through_tls_fronts(
    tls_processes: list[Proc], cluster_cert: TLSConfig
) -> None:
    addresses = [p.address for p in tls_processes]
    conn = cowsqlpy.connect(
        addresses,
        database="ha",
        autocommit=True,
        tls=cluster_cert,
        policy=cowsqlpy.RetryPolicy(deadline=30.0),
    )
    try:
        cur = conn.cursor()
        cur.execute("CREATE TABLE w (n INTEGER PRIMARY KEY)")
        for n in range(50):
            cur.execute("INSERT INTO w (n) VALUES (?)", (n,))
        with SyncClient(addresses, tls=cluster_cert) as admin:
            leader = admin.leader()
            assert leader is not None
        victim = next(p for p in tls_processes if p.address == leader.address)
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        for n in range(50, 100):
            cur.execute("INSERT INTO w (n) VALUES (?)", (n,))
        cur.execute("SELECT count(*), min(n), max(n) FROM w")
        assert cur.fetchone() == (100, 0, 99)
    finally:
        conn.close()
