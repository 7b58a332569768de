"""Fixtures of the fault-injection suite: seeds and real clusters.

Every test runs with the fixed seeds below plus one random seed per session
(printed in the test id; ``COWSQLPY_FAULT_SEED=N`` replays it).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest

from cowsqlpy.testing import Cluster

RANDOM_SEED = int(os.environ.get("COWSQLPY_FAULT_SEED") or random.SystemRandom().randrange(1, 2**31))
FIXED_SEEDS = [11]
SEEDS = [*FIXED_SEEDS, RANDOM_SEED]


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"fault-injection random seed: {RANDOM_SEED} (replay: COWSQLPY_FAULT_SEED={RANDOM_SEED})"]


@pytest.fixture
def net_cluster() -> Iterator[Cluster]:
    """Three in-process App nodes whose Raft links run through fault proxies."""
    with Cluster(3, fault_proxies=True) as c:
        yield c


@pytest.fixture
def proc_cluster() -> Iterator[Cluster]:
    """Three node processes (SIGKILL and SIGSTOP are real)."""
    with Cluster(3, processes=True) as c:
        yield c


@pytest.fixture
def proc_net_cluster() -> Iterator[Cluster]:
    """Three node processes whose Raft links run through relays (``--dial-via``)."""
    with Cluster(3, processes=True, fault_proxies=True) as c:
        yield c
