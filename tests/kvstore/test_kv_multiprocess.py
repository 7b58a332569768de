"""Multi-process behaviour: lock mutual exclusion across 4 processes, temp keys
vanishing after SIGKILL of their owner, cross-process watchers.

raft: this test process is one member and every child is another member
(a raft:// handle is a member), so the cluster keeps its quorum while
children come and go. etcd: children are plain clients of the test server.
cowsql: children are clients of the 3 engine nodes running in this process,
all on one fresh database (so they also race to create its schema).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

import kvstore
from kvstore.testing import RaftCluster, etcd_available, wait_until

WORKER = os.path.join(os.path.dirname(__file__), "kv_worker.py")
SESSION_TTL = 2


class Child:
    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen([sys.executable, WORKER, *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def wait_line(self, prefix: str, timeout: float = 120) -> str:
        def found() -> str | None:
            for ln in self.lines:
                if ln.startswith(prefix):
                    return ln
            if self.proc.poll() is not None and not self._t.is_alive():
                raise AssertionError(f"worker exited ({self.proc.returncode}): {self.lines}")
            return None
        return wait_until(found, timeout, what=f"worker line {prefix!r}")  # type: ignore[no-any-return]

    def finish(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (subprocess.TimeoutExpired, OSError):
                self.proc.kill()
                self.proc.wait(timeout=10)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


@dataclass
class World:
    """``kv``: the test's own handle; ``url(i)``: URL for child number i."""

    backend: str
    kv: kvstore.KV
    urls: list[str]
    children: list[Child] = field(default_factory=list)

    def spawn(self, i: int, *args: str) -> Child:
        c = Child([args[0], self.urls[i], *args[1:]])
        self.children.append(c)
        return c


@pytest.fixture(params=["raft", "etcd", "cowsql"])
def make_world(request, tmp_path) -> Iterator[Callable[[int], World]]:
    """``make_world(children)``: for raft, a cluster of this process plus
    ``children`` member slots."""
    made: list[World] = []

    def make(children: int) -> World:
        if request.param == "etcd":
            if not etcd_available():
                pytest.skip("etcd server binary not installed")
            cluster = request.getfixturevalue("etcd_cluster")
            url = f"{cluster.url}?session_ttl={SESSION_TTL}"
            w = World("etcd", kvstore.open(url), [url] * children)
        elif request.param == "cowsql":
            # the engine nodes run in this process; every child is a client of them
            cluster = request.getfixturevalue("cowsql_cluster")
            url = (f"cowsql://{','.join(cluster.addresses)}/mp-{uuid.uuid4().hex[:10]}"
                   f"?session_ttl={SESSION_TTL}")
            w = World("cowsql", kvstore.open(url), [url] * children)
        else:
            rc = RaftCluster(tmp_path, children + 1, options=f"session_ttl={SESSION_TTL}")
            w = World("raft", kvstore.open(rc.url(0)),
                      [rc.url(i) for i in range(1, children + 1)])
        made.append(w)
        return w
    yield make
    for w in made:
        for c in w.children:
            c.finish()
        for c in w.children:
            c.kill()
        w.kv.close()


def test_lock_counter_four_processes(make_world):
    world = make_world(4)
    name, counter = f"mp-{uuid.uuid4().hex[:6]}", f"mp-counter-{uuid.uuid4().hex[:6]}"
    n = 10
    kids = [world.spawn(i, "lock", name, counter, str(n)) for i in range(4)]
    for k in kids:
        k.wait_line("DONE", timeout=240)
    assert world.kv.get(counter) == str(4 * n).encode()
    tokens = sorted(int(ln.split()[1]) for k in kids for ln in k.lines if ln.startswith("TOKEN"))
    assert len(tokens) == 4 * n and len(set(tokens)) == 4 * n


def test_temp_key_vanishes_after_sigkill(make_world):
    world = make_world(2)
    key = f"mp-temp-{uuid.uuid4().hex[:6]}"
    if world.backend == "raft":
        world.spawn(1, "member").wait_line("READY")  # keep a majority after the kill
    owner = world.spawn(0, "temp", key)
    owner.wait_line("HELD")
    assert world.kv.get(key) == b"owner-%d" % owner.proc.pid
    owner.kill()
    wait_until(lambda: world.kv.get(key) is None, timeout=10 * SESSION_TTL + 10,
               what="temp key expiry after SIGKILL")


def test_watcher_in_other_process_sees_every_event(make_world):
    world = make_world(2)
    prefix = f"mp-w-{uuid.uuid4().hex[:6]}/"
    if world.backend == "raft":
        world.spawn(1, "member").wait_line("READY")
    start = world.kv.revision() + 1
    puts, distinct = 50, 7
    n = puts + distinct + 1
    watcher = world.spawn(0, "watch", prefix, str(start), str(n))
    watcher.wait_line("READY")
    expected = []
    for i in range(puts):
        r = world.kv.put(f"{prefix}{i % distinct}", str(i))
        expected.append(f"EVENT PUT {r.revision} {prefix}{i % distinct} {i}")
    d = world.kv.delete_prefix(prefix)
    assert d.deleted == distinct
    keys = sorted(f"{prefix}{i}" for i in range(distinct))
    expected += [f"EVENT DELETE {d.revision} {k}" for k in keys]
    r = world.kv.put(f"{prefix}x", "last")
    expected.append(f"EVENT PUT {r.revision} {prefix}x last")
    watcher.wait_line("DONE", timeout=120)
    got = [ln.strip() for ln in watcher.lines if ln.startswith("EVENT")]
    assert got == expected
