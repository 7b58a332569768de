from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cowsqlpy.node import Node
from cowsqlpy.testing import form_cluster

# Short timeouts so elections take well under a second on loopback.
LATENCY = 0.02


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    """Factory of nodes in per-test dirs on OS-chosen ports, closed in the finalizer."""
    made: list[Node] = []

    def make(node_id: int, name: str | None = None, **options: object) -> Node:
        options.setdefault("network_latency", LATENCY)
        node = Node(node_id, "127.0.0.1:0", tmp_path / (name or f"node{node_id}"), **options)  # type: ignore[arg-type]
        made.append(node)
        return node

    yield make
    for node in made:
        node.close()


@pytest.fixture
def cluster3(make_node: Callable[..., Node]) -> list[Node]:
    nodes = [make_node(i) for i in (1, 2, 3)]
    for n in nodes:
        n.start()
    form_cluster(nodes)
    return nodes
