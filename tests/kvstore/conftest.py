"""Backend fixtures for the kvstore contract suite.

Every contract test takes the ``env`` fixture and runs once per backend in
``BACKENDS`` (mem, raft, etcd, cowsql). To add one: write a fixture returning an
``Env`` named ``<backend>_env`` below and append the name to ``BACKENDS``.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import kvstore
from kvstore.testing import EtcdCluster, RaftCluster, etcd_available

#: Backends the contract suite runs against (fixture ``<name>_env`` each).
BACKENDS = ["mem", "raft", "etcd", "cowsql"]

#: Session TTL used by test handles so lease-expiry tests stay short.
TEST_SESSION_TTL = 2


@dataclass
class Env:
    """What a contract test gets: ``kv`` and ``other`` are two handles on the
    same store (for raft: two different members); ``fresh()`` opens a handle
    the test may close; ``ns`` is a key prefix unique to the test;
    ``exclusive`` says no one else writes to the store (exact revision
    arithmetic can be asserted)."""

    name: str
    kv: kvstore.KV
    other: kvstore.KV
    opener: Callable[[], kvstore.KV]
    exclusive: bool
    ns: bytes = field(default_factory=lambda: f"t/{uuid.uuid4().hex[:10]}/".encode())
    _opened: list[kvstore.KV] = field(default_factory=list)
    url: str = ""

    def fresh(self) -> kvstore.KV:
        h = self.opener()
        self._opened.append(h)
        return h

    def k(self, s: str | bytes) -> bytes:
        return self.ns + (s.encode() if isinstance(s, str) else s)

    def close(self) -> None:
        for h in self._opened:
            h.close()


_mem_ids = itertools.count()


@pytest.fixture
def mem_env() -> Iterator[Env]:
    name = f"test{next(_mem_ids)}-{uuid.uuid4().hex[:6]}"
    url = f"mem:{name}?session_ttl={TEST_SESSION_TTL}"
    kv, other = kvstore.open(url), kvstore.open(url)
    env = Env("mem", kv, other, lambda: kvstore.open(url), True, url=url)
    yield env
    env.close()
    other.close()
    kv.close()


@pytest.fixture(scope="session")
def raft_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RaftCluster]:
    c = RaftCluster(tmp_path_factory.mktemp("raft"), 3, durable=True, spares=2,
                    options=f"session_ttl={TEST_SESSION_TTL}")
    c.start()
    yield c
    c.stop()


@pytest.fixture
def raft_env(raft_cluster: RaftCluster) -> Iterator[Env]:
    env = Env("raft", raft_cluster.handles[0], raft_cluster.handles[1], raft_cluster.open_spare,
              False,
              url=raft_cluster.url(0))
    yield env
    env.close()


@pytest.fixture(scope="session")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    if not etcd_available():
        pytest.skip("etcd server binary not installed (Debian package etcd-server)")
    c = EtcdCluster(tmp_path_factory.mktemp("etcd"), 1)
    c.start()
    yield c
    c.stop()


@pytest.fixture
def etcd_env(etcd_cluster: EtcdCluster) -> Iterator[Env]:
    url = f"{etcd_cluster.url}?session_ttl={TEST_SESSION_TTL}"
    kv, other = kvstore.open(url), kvstore.open(url)
    env = Env("etcd", kv, other, lambda: kvstore.open(url), False, url=url)
    yield env
    env.close()
    other.close()
    kv.close()


@pytest.fixture(scope="session")
def cowsql_cluster() -> Iterator[Any]:
    """Three real engine nodes in this process (ids 1-3, voters, OS-chosen ports)."""
    from cowsqlpy.testing import Cluster
    c = Cluster(3, app=False, network_latency=0.02)
    yield c
    c.close()


def cowsql_url(cluster: Any, database: str, **options: object) -> str:
    q = "&".join(f"{k}={v}" for k, v in {"session_ttl": TEST_SESSION_TTL, **options}.items())
    return f"cowsql://{','.join(cluster.addresses)}/{database}?{q}"


@pytest.fixture
def cowsql_env(cowsql_cluster: Any) -> Iterator[Env]:
    """A database of the test's own (so revision arithmetic is exact); ``kv`` and
    ``other`` have separate cores (pools, committers, watch pollers), so the
    suite exercises cross-handle polling and engine-level write contention."""
    url = cowsql_url(cowsql_cluster, f"kv-{uuid.uuid4().hex[:12]}")
    kv = kvstore.open(url)
    other = kvstore.open(url + "&private=1")
    env = Env("cowsql", kv, other, lambda: kvstore.open(url + "&private=1"), True, url=url)
    yield env
    env.close()
    other.close()
    kv.close()


@pytest.fixture(params=BACKENDS)
def env(request: pytest.FixtureRequest) -> Env:
    return request.getfixturevalue(f"{request.param}_env")  # type: ignore[no-any-return]

