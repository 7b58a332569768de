"""Busy polling (cowsqlpy.runtime.BusyPoll): the loop keeps polling after network
activity, serves everything else meanwhile, and stops by itself."""

from __future__ import annotations

import asyncio
import socket

import pytest

from cowsqlpy.client import Session
from cowsqlpy.runtime import busy_poll_of, enable_busy_poll, new_event_loop
from tests.client.conftest import InProcessCluster


def test_spins_after_a_touch_and_stops_by_itself() -> None:
    loop = new_event_loop()
    try:
        poller = enable_busy_poll(loop, 0.005)
        assert poller is not None and busy_poll_of(loop) is poller

        async def scenario() -> tuple[int, bool, bytes, int]:
            a, b = socket.socketpair()
            reader, writer = await asyncio.open_connection(sock=a)
            poller.touch()
            b.sendall(b"ping")   # I/O still gets served while the loop spins
            got = await asyncio.wait_for(reader.readexactly(4), 5)
            spinning_then = poller.spinning
            await asyncio.sleep(0.1)   # 20 windows without activity
            spins = poller.spins
            await asyncio.sleep(0.05)
            writer.close()
            b.close()
            return spins, spinning_then, got, poller.spins - spins

        spins, spinning_then, got, later = loop.run_until_complete(scenario())
        assert got == b"ping"
        assert spinning_then and spins > 0
        assert not poller.spinning and later == 0
    finally:
        enable_busy_poll(loop, 0)
        loop.close()


def test_engine_requests_and_replies_keep_the_loop_polling(cluster: InProcessCluster) -> None:
    loop = new_event_loop()
    try:
        poller = enable_busy_poll(loop, 0.001)
        assert poller is not None

        async def query() -> list[tuple[object, ...]]:
            session = await Session.connect(cluster.leader().address)
            try:
                await session.open("busy-poll")
                return await session.query_all("SELECT 40 + 2")
            finally:
                session.close()

        assert loop.run_until_complete(query()) == [(42,)]
        assert poller.spins > 0   # nothing but the wire connection touched it
        enable_busy_poll(loop, 0)
        assert busy_poll_of(loop) is None
    finally:
        loop.close()


@pytest.mark.parametrize("window", [-0.001, 0.02, True, "1"])
def test_window_out_of_range_is_refused(window: object) -> None:
    loop = new_event_loop()
    try:
        with pytest.raises(ValueError, match="busy-poll window"):
            enable_busy_poll(loop, window)  # type: ignore[arg-type]
        assert busy_poll_of(loop) is None
    finally:
        loop.close()
