"""``python -m demo.local`` (the README's main job): three nodes come up, the printed
commands work, Ctrl-C stops every node cleanly; with ``--tls`` everything is TLS."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cowsqlpy.tls import TLSConfig
from demo.testing import ROOT, request


def _free_run(n: int) -> int:
    """A port p with p .. p+n-1 all free on loopback (the launcher takes consecutive ports),
    below the kernel's ephemeral range, so no outgoing connection takes one meanwhile."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(10_000, low - n)
        socks = []
        try:
            for p in range(base, base + n):
                t = socket.socket()
                socks.append(t)
                t.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for t in socks:
                t.close()
    raise RuntimeError("no run of free ports")


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_demo_local_runs_a_cluster_and_stops_it(tmp_path: Path, tls: bool) -> None:
    api = _free_run(6)
    db = api + 3
    cmd = [sys.executable, "-m", "demo.local", "--dir", str(tmp_path / "data"),
           "--api-port", str(api), "--db-port", str(db), *(["--tls"] if tls else [])]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            cwd=tmp_path, text=True)
    out: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            out.append(line)
            if line.startswith("Press Ctrl-C"):
                break
        text = "".join(out)
        assert "The cluster is up: 3 nodes" in text, text
        cert = TLSConfig(tmp_path / "data" / "cert" / "cluster.crt",
                         tmp_path / "data" / "cert" / "cluster.key") if tls else None
        scheme = "https" if tls else "http"
        assert f"{scheme}://127.0.0.1:{api}/my-key" in text
        status, _, _ = request("PUT", f"{scheme}://127.0.0.1:{api}/k", b"v", tls=cert)
        assert status == 201
        assert request("GET", f"{scheme}://127.0.0.1:{api + 2}/k", tls=cert)[2] == b"v"
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, text + rest
        assert rest.count("stopped, exit code 0") == 3, rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
