"""pytest fixtures and a failure hook for `cowsqlpy.testing`.

Enable it in a project's root conftest.py::

    pytest_plugins = ["cowsqlpy.pytest_plugin"]

Fixtures (each cluster is closed in the fixture's finalizer):

* ``cluster_factory``: ``cluster_factory(n, **options)`` builds `Cluster`\\ s.
* ``cluster3``: three in-process App nodes.
* ``cluster3_processes``: three ``python -m cowsqlpy node`` processes.
* ``fault_proxy_factory``: ``fault_proxy_factory(target=None)`` builds `FaultProxy`\\ s.

When a test fails, the log tail of every cluster still running is attached to
its report (section "cowsqlpy node logs").
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from .testing import Cluster, FaultProxy, live_clusters


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call"):
        clusters = live_clusters()
        for n, cluster in enumerate(clusters):
            report.sections.append((f"cowsqlpy node logs ({n + 1}/{len(clusters)}: {cluster!r})", cluster.format_logs()))


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(n: int = 3, **options: Any) -> Cluster:
        options.setdefault("base_dir", tmp_path / f"cluster{len(made)}")
        c = Cluster(n, **options)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def cluster3(cluster_factory: Callable[..., Cluster]) -> Cluster:
    return cluster_factory(3)


@pytest.fixture
def cluster3_processes(cluster_factory: Callable[..., Cluster]) -> Cluster:
    return cluster_factory(3, processes=True)


@pytest.fixture
def fault_proxy_factory() -> Iterator[Callable[..., FaultProxy]]:
    made: list[FaultProxy] = []

    def make(target: str | None = None, **options: Any) -> FaultProxy:
        p = FaultProxy(target, **options)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()
