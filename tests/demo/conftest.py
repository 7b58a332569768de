"""Fixtures: clusters of real ``python -m demo`` processes on OS-chosen ports."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from demo.testing import DemoCluster

_live: list[DemoCluster] = []


@pytest.fixture
def demo_cluster_factory(tmp_path_factory: pytest.TempPathFactory
                         ) -> Iterator[Callable[..., DemoCluster]]:
    """Start a DemoCluster (closed, i.e. every process killed, in the finalizer)."""
    made: list[DemoCluster] = []

    def make(n: int = 3, **options: Any) -> DemoCluster:
        c = DemoCluster(tmp_path_factory.mktemp("demo"), n, **options)
        made.append(c)
        _live.append(c)
        return c.start()

    yield make
    for c in made:
        c.close()
        _live.remove(c)


@pytest.fixture(scope="module")
def demo3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoCluster]:
    """One 3-node demo cluster shared by a module's tests."""
    c = DemoCluster(tmp_path_factory.mktemp("demo3"), 3)
    _live.append(c)
    try:
        yield c.start()
    finally:
        c.close()
        _live.remove(c)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and _live:
        for c in _live:
            report.sections.append((f"demo cluster logs ({c.base})", c.logs()))


def artifacts_dir(tmp_path: Path) -> Path:
    """Where a test leaves files for people to look at: under pytest's temp dir
    (never the working tree), or $COWSQLPY_ARTIFACTS when set."""
    root = os.environ.get("COWSQLPY_ARTIFACTS")
    d = Path(root) / "demo" if root else tmp_path / "artifacts"
    d.mkdir(parents=True, exist_ok=True)
    return d
