from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The suite never runs on a silent fallback: without the Cython codec it fails, unless
# the pure-Python twin is asked for explicitly (COWSQLPY_PUREPYTHON=1).
os.environ.setdefault("COWSQLPY_REQUIRE_CYTHON", "1")

# The cowsqlpy.testing fixtures (cluster_factory, cluster3, ...) and the node-log dump on failure.
pytest_plugins = ["cowsqlpy.pytest_plugin"]


def pytest_report_header(config: pytest.Config) -> list[str]:
    from cowsqlpy import codec
    from cowsqlpy.runtime import new_event_loop

    loop = new_event_loop()
    kind = type(loop).__module__.split(".")[0]
    loop.close()
    return [f"cowsqlpy codec: {codec.IMPLEMENTATION} (COWSQLPY_PUREPYTHON={os.environ.get('COWSQLPY_PUREPYTHON', '')}), "
            f"event loop: {kind} (COWSQLPY_LOOP={os.environ.get('COWSQLPY_LOOP', '')})"]


@pytest.fixture
def dqlite_demo(tmp_path: Path) -> Iterator[Any]:
    """One Canonical dqlite-demo node (Debian go-dqlite on libdqlite 1.11.1): a real 1.11
    server for the client's wire and version-table tests."""
    from tests.app.conftest import Demo

    if shutil.which("dqlite-demo") is None:
        pytest.skip("dqlite-demo (Debian go-dqlite) not installed")
    demo = Demo(tmp_path / "demo", binary="dqlite-demo")
    try:
        demo.wait_up()
        yield demo
    finally:
        demo.stop()
