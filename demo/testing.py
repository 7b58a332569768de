"""A cluster of ``python -m demo`` processes on OS-chosen ports, for tests and benchmarks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cowsqlpy.testing import wait_for
from cowsqlpy.tls import TLSConfig, make_client_context
from kvstore.testing import free_ports

from .__main__ import READY_PREFIX

ROOT = Path(__file__).resolve().parents[1]


def node_command(api: str, db: str, data_dir: str | Path, join: str | None = None,
                 options: tuple[str, ...] | list[str] = ()) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of one `python -m demo` node process."""
    cmd = [sys.executable, "-m", "demo", "--api", api, "--db", db, "--dir", str(data_dir), *options]
    if join:
        cmd += ["--join", join]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    return cmd, env


def request(method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None
            = None, timeout: float = 10.0, tls: TLSConfig | None = None
            ) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request: (status, headers, body); HTTP error statuses are returned,
    not raised. ``tls``: HTTPS with the cluster certificate (nodes started with
    ``--cert/--key`` ask clients for one). :raises OSError: no answer (connection
    refused, reset, timeout, TLS handshake refused)."""
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    context = None if tls is None else make_client_context(tls)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()
    except urllib.error.URLError as e:
        raise OSError(f"{method} {url}: {e.reason}") from e


class DemoProcess:
    """One ``python -m demo`` node: data in ``base/node<index>``, log beside it.

    `own_session`: start it in a process group of its own, so a terminal's Ctrl-C
    reaches only the launcher, which then stops the nodes (`demo.local`)."""

    def __init__(self, index: int, base: Path, api: str, db: str, join: str | None,
                 options: list[str] | None = None, *, own_session: bool = False,
                 tls: TLSConfig | None = None) -> None:
        self.index, self.api, self.db, self.join = index, api, db, join
        self.tls = tls
        self.dir = base / f"node{index}"
        self.log = base / f"node{index}.log"
        self.options = list(options or [])
        if tls is not None:
            self.options += ["--cert", os.fspath(tls.cert), "--key", os.fspath(tls.key),
                             "--ca", tls.ca_path]
        self.own_session = own_session
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'http' if self.tls is None else 'https'}://{self.api}"

    def request(self, method: str, path: str, data: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 10.0
                ) -> tuple[int, dict[str, str], bytes]:
        """`request` on this node's API (``path`` starts with ``/``)."""
        return request(method, self.url + path, data, headers, timeout, self.tls)

    def start(self) -> None:
        if self.running:  # a second process would be left running, unowned
            raise RuntimeError(f"demo node {self.index} is already running")
        cmd, env = node_command(self.api, self.db, self.dir, self.join, self.options)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, cwd=ROOT,
                                         start_new_session=self.own_session)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self) -> bool:
        try:
            return self.request("GET", "/_health", timeout=2.0)[0] == 200
        except OSError:
            return False

    def served(self) -> bool:
        """Its log says the node is up (the line `python -m demo` prints when ready)."""
        return self.log.exists() and READY_PREFIX.encode() in self.log.read_bytes()

    def kill(self) -> None:
        """SIGKILL, and reap."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM (hand-over); the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)


class DemoCluster:
    """``n`` demo node processes in ``base`` (one dir and log file per node)."""

    def __init__(self, base: Path, n: int = 3, *, network_latency: float = 0.025,
                 request_timeout: float = 5.0, extra: list[str] | None = None,
                 tls: TLSConfig | None = None) -> None:
        self.base = Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        ports = free_ports(2 * n)
        options = ["--network-latency", str(network_latency), "--request-timeout",
                   str(request_timeout), "--log-level", "INFO", *(extra or [])]
        first_db = f"127.0.0.1:{ports[n]}"
        self.nodes = [DemoProcess(i, self.base, f"127.0.0.1:{ports[i]}",
                                  f"127.0.0.1:{ports[n + i]}", None if i == 0 else first_db,
                                  options, tls=tls) for i in range(n)]

    def start(self, timeout: float = 60.0) -> DemoCluster:
        self.nodes[0].start()
        wait_for(self.nodes[0].healthy, timeout, "demo node 0 serving")
        for node in self.nodes[1:]:
            node.start()
        for node in self.nodes:
            wait_for(node.healthy, timeout, f"demo node {node.index} serving")
        wait_for(lambda: self.voters() == len(self.nodes) if len(self.nodes) <= 3 else True,
                 timeout, "every node a voter")
        return self

    def cluster(self, via: int | None = None) -> dict[str, Any] | None:
        for node in ([self.nodes[via]] if via is not None else self.nodes):
            if not node.running:
                continue
            try:
                status, _, body = node.request("GET", "/_cluster", timeout=5.0)
            except OSError:
                continue
            if status == 200:
                data: dict[str, Any] = json.loads(body)
                return data
        return None

    def voters(self) -> int:
        c = self.cluster()
        return 0 if c is None else sum(1 for n in c["nodes"] if n["role"] == "voter")

    def leader_index(self) -> int | None:
        c = self.cluster()
        if c is None or c["leader"] is None:
            return None
        return next((i for i, n in enumerate(self.nodes) if n.db == c["leader"]), None)

    def wait_leader(self, timeout: float = 30.0, exclude: int | None = None) -> int:
        def check() -> int | None:
            i = self.leader_index()
            return None if i is None or i == exclude else i + 1
        return int(wait_for(check, timeout, "a demo leader")) - 1

    def logs(self, tail: int = 60) -> str:
        out = []
        for node in self.nodes:
            try:
                lines = node.log.read_text(errors="replace").splitlines()[-tail:]
            except OSError:
                lines = []
            out.append(f"--- demo node {node.index} ({node.api}, db {node.db}) ---\n"
                       + "\n".join(lines))
        return "\n".join(out)

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __enter__(self) -> DemoCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

