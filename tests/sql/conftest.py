"""Fixtures for the SQL ecosystem tests: one real 3-node cluster per module, event
loops of both kinds (uvloop and stock asyncio), a database name per test."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
import uvloop

from cowsqlpy.testing import Cluster

T = TypeVar("T")
_names = itertools.count()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(3, app=False, base_dir=tmp_path_factory.mktemp("sql"))
    yield c
    c.close()


@pytest.fixture
def dbname(request: pytest.FixtureRequest) -> str:
    """A database of this test's own on the module's cluster."""
    return f"{request.node.name[:40]}-{next(_names)}"


LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Iterator[Callable[[Coroutine[Any, Any, T]], T]]:
    """``run(coro)`` on a fresh event loop of each kind (the test runs twice)."""
    with asyncio.Runner(loop_factory=LOOPS[request.param]) as runner:
        yield runner.run
