"""Requests one loop iteration makes on a connection go out in one send, in order, and
each still gets its own reply; against a real node, on uvloop and stock asyncio. The
sends are counted on the transport the connection is handed (`connection_made`)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvloop

from cowsqlpy import protocol
from cowsqlpy.errors import ConnectionLostError
from cowsqlpy.wire import WireConnection
from tests.client.conftest import InProcessCluster

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


class _CountingTransport:
    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self._inner.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class CountingWire(WireConnection):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.counted = _CountingTransport(transport)
        super().connection_made(self.counted)  # type: ignore[arg-type]


async def _connect(address: str) -> CountingWire:
    conn = await CountingWire.connect(address)
    assert isinstance(conn, CountingWire)
    return conn


def _run(loop: str, coro: Any) -> Any:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        return runner.run(coro)


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_one_iteration_s_requests_share_one_send(cluster: InProcessCluster, loop: str) -> None:
    leader = cluster.addresses[cluster.wait_leader()]

    async def main() -> tuple[list[Any], list[bytes], list[Any], list[bytes]]:
        conn = await _connect(leader)
        try:
            await conn.request(protocol.LEADER)  # the handshake and a first request are out
            before = len(conn.counted.writes)
            pending = [conn.submit(protocol.LEADER) for _ in range(10)]
            together = [await p for p in pending]
            burst = conn.counted.writes[before:]
            before = len(conn.counted.writes)
            apart = [await conn.request(protocol.LEADER) for _ in range(3)]
            return together, burst, apart, conn.counted.writes[before:]
        finally:
            conn.close()

    together, burst, apart, singles = _run(loop, main())
    assert len(burst) == 1 and len(burst[0]) == 10 * 16  # ten 16-byte LEADER frames
    assert together == apart[:1] * 10 and len(set(map(tuple, apart))) == 1
    assert len(singles) == 3  # awaited one by one: a send each


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_requests_queued_on_a_connection_closed_before_the_send_fail(
    cluster: InProcessCluster, loop: str
) -> None:
    leader = cluster.addresses[cluster.wait_leader()]

    async def main() -> tuple[int, int]:
        conn = await _connect(leader)
        await conn.request(protocol.LEADER)
        before = len(conn.counted.writes)
        pending = [conn.submit(protocol.LEADER) for _ in range(3)]
        conn.close()
        failed = 0
        for p in pending:
            try:
                await p
            except ConnectionLostError:
                failed += 1
        await asyncio.sleep(0)  # the iteration where the send would have happened
        return failed, len(conn.counted.writes) - before

    assert _run(loop, main()) == (3, 0)
