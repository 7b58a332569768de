from __future__ import annotations

import os

import pytest

# The cowsqlpy.testing fixtures (cluster_factory, cluster3, ...) and the node-log dump on failure.
pytest_plugins = ["cowsqlpy.pytest_plugin"]

# CI sets COWSQLPY_REQUIRE_CYTHON=1 so a broken native build cannot pass silently.


def pytest_report_header(config: pytest.Config) -> list[str]:
    from cowsqlpy import codec

    return [f"cowsqlpy codec: {codec.IMPLEMENTATION} (COWSQLPY_PUREPYTHON={os.environ.get('COWSQLPY_PUREPYTHON', '')})"]
