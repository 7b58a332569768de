from __future__ import annotations

import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cowsqlpy.testing import wait_for

LATENCY = 0.025  # elections in well under a second on loopback


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Demo:
    """One go-cowsql `cowsql-demo` process (go-cowsql 1.22's app package), or Canonical's
    `dqlite-demo` (go-dqlite 1.11.5) with ``binary="dqlite-demo"``."""

    def __init__(self, base: Path, join: list[str] | None = None, binary: str = "cowsql-demo") -> None:
        self.binary = binary
        self.api = f"127.0.0.1:{free_port()}"
        self.db = f"127.0.0.1:{free_port()}"
        self.dir = base
        self.log_path = base.parent / f"{base.name}.log"
        cmd = [binary, "--api", self.api, "--db", self.db, "--dir", str(base), "--verbose"]
        if join:
            cmd += ["--join", ",".join(join)]
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def request(self, method: str, key: str, value: str | None = None, timeout: float = 10.0) -> str:
        data = value.encode() if value is not None else None
        req = urllib.request.Request(f"http://{self.api}/{key}", data=data, method=method)
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.read().decode().rstrip("\n")

    def put(self, key: str, value: str) -> None:
        reply = self.request("PUT", key, value)
        if reply != "done":
            raise AssertionError(f"{self.binary} PUT {key}: {reply}")

    def get(self, key: str) -> str:
        return self.request("GET", key)

    def wait_up(self, timeout: float = 30.0) -> None:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.binary} exited {self.proc.returncode}:\n{self.log_path.read_text()[-2000:]}")
            try:
                self.get("__probe__")
                return True
            except (urllib.error.URLError, OSError):
                return False

        wait_for(up, timeout, f"{self.binary} API on {self.api}")

    def kill(self) -> None:
        """SIGKILL: no hand-over."""
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(70)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


@pytest.fixture
def demo_factory(tmp_path: Path) -> Iterator[Callable[..., Demo]]:
    made: list[Demo] = []

    def make(join: list[str] | None = None, binary: str = "cowsql-demo") -> Demo:
        d = Demo(tmp_path / f"demo{len(made)}", join, binary)
        made.append(d)
        return d

    yield make
    for d in reversed(made):
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait(10)
        d.log.close()


@pytest.fixture
def app_factory(tmp_path: Path) -> Iterator[Callable[..., object]]:
    """Build in-process Apps in per-test dirs; closed (no hand-over) in the finalizer."""
    from cowsqlpy.app import App

    made: list[App] = []

    def make(name: str, address: str | None = "127.0.0.1:0", **options: object) -> App:
        options.setdefault("network_latency", LATENCY)
        options.setdefault("roles_adjustment_frequency", 0.5)
        app = App(tmp_path / name, address, **options)  # type: ignore[arg-type]
        made.append(app)
        return app

    yield make
    for app in reversed(made):
        app.close(handover=False)
